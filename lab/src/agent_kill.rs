//! The agent-kill fault (issue 11): a node's agent killed with SIGKILL
//! while long-lived TCP connections carry traffic and new connections
//! arrive at a steady rate, then started again as the lab restarts agents.
//! The `fault_agent_kill` suite runs it once at a test's rate, `cargo xtask
//! bench reliability` several times at a higher rate; both read the
//! figures of a [`Report`].
//!
//! The scene, in namespace `kill`: pod `server` on n1 (whose agent is
//! killed), pods `client` and `blocked` on n2. A policy lets only `client`
//! into `server` (port 80, the pod's server, and the echo port). While the
//! agent is down, `blocked` probes `server` (it must stay as it was) and a
//! second policy is toggled (allowing `blocked`, or, on the next kill,
//! revoking that again) so that the restarted agent has a change to apply,
//! and a new pod is scheduled to n1: its CNI ADD is retried, as a runtime
//! does, while the plugin answers that the agent is unreachable (code 11),
//! and returns only once the restarted agent has regenerated it.
//!
//! Converged, precisely: the restarted agent answers `/readyz` with 200
//! (every reconcile step ok) and a real connection from `blocked` shows the
//! change made while it was down (connects if allowed, times out if
//! revoked). The time is counted from the moment the agent's process is
//! started again to the start of the check that saw both, so it includes
//! the agent's own start (loading the datapath, adopting the pinned maps,
//! the first passes). The reconcile loop starts before the agent's API
//! opens and its first pass usually ends first, so counted from the API
//! accepting connections (the agent "back" for the CNI plugin) it reads
//! close to 0.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::load::{self, Attempt, Dialer, StreamRecord, Streams};
use crate::manifest::{self, Object};
use crate::testing::{namespace_yaml, pod_yaml};
use crate::Lab;

/// The node whose agent is killed (the server's).
pub const NODE: &str = "n1";
const NAMESPACE: &str = "kill";
/// The pods' own server: answers its name and closes (new connections).
const SERVE_PORT: u16 = 80;
/// The echo server of the long-lived connections, in the server pod.
const ECHO_PORT: u16 = 7000;
/// Each long-lived connection sends a message this often.
const ECHO_INTERVAL: Duration = Duration::from_millis(50);
/// A probe that gets no answer in this long counts as not connected.
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);
/// How long a new connection may take before it counts as failed.
const DIAL_TIMEOUT: Duration = Duration::from_secs(1);
/// A pod's ADD is retried this often while the agent is unreachable (a
/// runtime backs off longer; this keeps the measure fine) ...
const ADD_RETRY: Duration = Duration::from_millis(50);
/// ... for at most this long.
const ADD_LIMIT: Duration = Duration::from_secs(60);
/// Bound on waiting for the scene's policy and for convergence.
const CONVERGE_LIMIT: Duration = Duration::from_secs(15);

#[derive(Clone, Debug)]
pub struct Options {
    /// Long-lived connections.
    pub connections: usize,
    /// New connections per second.
    pub rate: u32,
    /// How many times the agent is killed.
    pub kills: usize,
    /// How long the agent stays down (probing `blocked` the whole time).
    pub down: Duration,
    /// Traffic before the first kill and after each convergence.
    pub settle: Duration,
}

/// The figures of one kill.
#[derive(Clone, Debug, Default)]
pub struct KillFigures {
    /// From SIGKILL to the agent's API accepting connections again.
    pub gap: Duration,
    /// From starting the agent to its API accepting connections.
    pub startup: Duration,
    /// New connections started in the gap, and how many of them failed.
    pub new_in_gap: usize,
    pub failed_in_gap: usize,
    /// Probes from `blocked` in the gap, and how many did not match the
    /// policy in force before the kill.
    pub probes: usize,
    pub probes_wrong: usize,
    /// Whether `blocked` was allowed before this kill.
    pub blocked_allowed_before: bool,
    /// From the agent's process being started again to converged (see the
    /// module's doc).
    pub converged: Duration,
    /// A pod added on the node while its agent was down: ADDs that failed
    /// with the transient code (the runtime retries), and when the one that
    /// succeeded returned, counted from the agent's restart.
    pub new_pod_add_failures: u32,
    pub new_pod_added: Duration,
}

impl KillFigures {
    /// From the agent being back (its API accepting connections) to
    /// converged: the agent's own start ([`KillFigures::startup`]) aside.
    pub fn after_back(&self) -> Duration {
        self.converged.saturating_sub(self.startup)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub connections: usize,
    /// Round trips over all long-lived connections.
    pub round_trips: u64,
    /// The longest any long-lived connection waited for an echo.
    pub longest_wait: Duration,
    /// How each broken long-lived connection broke.
    pub broken: Vec<String>,
    pub new_connections: usize,
    /// Failed new connections over the whole run (in and out of gaps), a
    /// few of them with their errors.
    pub new_failed: usize,
    pub new_failures: Vec<String>,
    pub kills: Vec<KillFigures>,
}

impl Report {
    pub fn failed_in_gaps(&self) -> usize {
        self.kills.iter().map(|k| k.failed_in_gap).sum()
    }

    pub fn probes_wrong(&self) -> usize {
        self.kills.iter().map(|k| k.probes_wrong).sum()
    }

    pub fn slowest_convergence(&self) -> Duration {
        self.kills
            .iter()
            .map(|k| k.converged)
            .max()
            .unwrap_or_default()
    }

    /// The one line the fault suite prints.
    pub fn summary(&self) -> String {
        format!(
            "fault kill: {} connections, {} broken, {} new connections ({} failed during gap), \
             {}, converged in {} ms, new pod's ADD waited for the agent (done {} ms after its \
             restart)",
            self.connections,
            self.broken.len(),
            self.new_connections,
            self.failed_in_gaps(),
            if self.probes_wrong() == 0 {
                "denied stayed denied"
            } else {
                "POLICY CHANGED WHILE DOWN"
            },
            self.slowest_convergence().as_millis(),
            self.kills
                .iter()
                .map(|k| k.new_pod_added)
                .max()
                .unwrap_or_default()
                .as_millis()
        )
    }

    /// One line per kill, for the benchmark.
    pub fn kill_lines(&self) -> Vec<String> {
        self.kills
            .iter()
            .enumerate()
            .map(|(i, k)| {
                format!(
                    "kill {}: down {} ms (agent start {} ms), {} new connections in the gap, \
                     {} failed; {} probes of {} ({}), {} wrong; converged {} ms after the restart \
                     ({} ms after it was back); a pod added while down: {} ADDs refused as transient, ADD done {} ms after \
                     the restart",
                    i + 1,
                    k.gap.as_millis(),
                    k.startup.as_millis(),
                    k.new_in_gap,
                    k.failed_in_gap,
                    k.probes,
                    if k.blocked_allowed_before {
                        "an allowed flow"
                    } else {
                        "a denied flow"
                    },
                    if k.blocked_allowed_before {
                        "must connect"
                    } else {
                        "must not connect"
                    },
                    k.probes_wrong,
                    k.converged.as_millis(),
                    k.after_back().as_millis(),
                    k.new_pod_add_failures,
                    k.new_pod_added.as_millis()
                )
            })
            .collect()
    }
}

fn scene_yaml() -> String {
    let mut yaml = namespace_yaml(NAMESPACE);
    yaml.push_str(&pod_yaml(NAMESPACE, "server", NODE, &[SERVE_PORT]));
    yaml.push_str(&pod_yaml(NAMESPACE, "client", "n2", &[SERVE_PORT]));
    yaml.push_str(&pod_yaml(NAMESPACE, "blocked", "n2", &[SERVE_PORT]));
    yaml.push_str(&format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: server-from-client, namespace: {NAMESPACE}}}\nspec:\n  podSelector: {{matchLabels: {{pod: server}}}}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - podSelector: {{matchLabels: {{pod: client}}}}\n    ports:\n    - {{protocol: TCP, port: {SERVE_PORT}}}\n    - {{protocol: TCP, port: {ECHO_PORT}}}\n"
    ));
    yaml
}

/// The pod added while the agent is down, on its node.
fn new_pod(kill: usize) -> Result<manifest::Pod> {
    let objects = manifest::parse(&pod_yaml(
        NAMESPACE,
        &format!("new-{kill}"),
        NODE,
        &[SERVE_PORT],
    ))?;
    match objects.into_iter().next() {
        Some(Object::Pod(pod)) => Ok(pod),
        _ => bail!("the new pod's manifest holds no pod"),
    }
}

/// The change made while the agent is down: `blocked` allowed in.
fn toggle_policy() -> Result<Vec<Object>> {
    manifest::parse(&format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: server-from-blocked, namespace: {NAMESPACE}}}\nspec:\n  podSelector: {{matchLabels: {{pod: server}}}}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - podSelector: {{matchLabels: {{pod: blocked}}}}\n    ports:\n    - {{protocol: TCP, port: {SERVE_PORT}}}\n"
    ))
}

/// Where the traffic goes and what answers.
struct Scene {
    server: SocketAddr,
    server_name: String,
    client_netns: String,
    blocked_netns: String,
}

impl Scene {
    fn blocked_connects(&self) -> Result<bool> {
        load::connects(
            &self.blocked_netns,
            self.server,
            &self.server_name,
            PROBE_TIMEOUT,
        )
    }

    fn client_connects(&self) -> Result<bool> {
        load::connects(
            &self.client_netns,
            self.server,
            &self.server_name,
            PROBE_TIMEOUT,
        )
    }
}

/// Sets up the scene in `lab` (2 nodes, nothing of namespace `kill` in it
/// yet) and runs the fault.
pub fn run(lab: &mut Lab, options: &Options, progress: &dyn Fn(&str)) -> Result<Report> {
    if lab.state().nodes.len() < 2 {
        bail!("the agent-kill scene needs a lab of 2 nodes");
    }
    lab.apply(&manifest::parse(&scene_yaml())?)?;
    let server = lab.pod(&format!("{NAMESPACE}/server"))?.clone();
    let scene = Scene {
        server: SocketAddr::from((server.ip, SERVE_PORT)),
        server_name: server.key(),
        client_netns: lab.pod(&format!("{NAMESPACE}/client"))?.netns.clone(),
        blocked_netns: lab.pod(&format!("{NAMESPACE}/blocked"))?.netns.clone(),
    };
    let deadline = Instant::now() + CONVERGE_LIMIT;
    // In force: client connects, blocked does not.
    while !scene.client_connects()? || scene.blocked_connects()? {
        if Instant::now() > deadline {
            bail!("the scene's policy is not in force after {CONVERGE_LIMIT:?}");
        }
    }
    progress(&format!(
        "{} long-lived connections to {}:{ECHO_PORT}, {} new connections/s to {}",
        options.connections, server.ip, options.rate, scene.server
    ));
    let streams = Streams::open(
        &scene.client_netns,
        &server.netns,
        server.ip,
        ECHO_PORT,
        options.connections,
        ECHO_INTERVAL,
    )?;
    let dialer = Dialer::start(
        &scene.client_netns,
        scene.server,
        &scene.server_name,
        options.rate,
        DIAL_TIMEOUT,
    )?;
    let kills = kill_repeatedly(lab, &scene, &dialer, options, progress);
    let attempts = dialer.finish()?;
    let records = streams.finish();
    let mut kills = kills?;
    Ok(report(options, &records, &attempts, &mut kills))
}

/// When the agent went down and when it was back, on the dialer's clock.
struct Window {
    killed: Duration,
    back: Duration,
}

fn kill_repeatedly(
    lab: &mut Lab,
    scene: &Scene,
    dialer: &Dialer,
    options: &Options,
    progress: &dyn Fn(&str),
) -> Result<Vec<(Window, KillFigures)>> {
    let toggle = toggle_policy()?;
    let mut kills = Vec::new();
    std::thread::sleep(options.settle);
    for kill in 0..options.kills {
        let allowed_before = kill % 2 == 1;
        progress(&format!("kill {}: SIGKILL the agent of {NODE}", kill + 1));
        let killed = dialer.since_start();
        lab.kill_agent(NODE)?;
        let mut figures = KillFigures {
            blocked_allowed_before: allowed_before,
            ..KillFigures::default()
        };
        // A pod scheduled to the node now: its ADD waits for the agent.
        let pending = lab.begin_pod(&new_pod(kill + 1)?)?;
        let adder = std::thread::spawn(move || {
            let added = pending.add(ADD_RETRY, ADD_LIMIT);
            (pending, added)
        });
        // The agent is down: the datapath alone keeps what was in force.
        let down_until = Instant::now() + options.down;
        while Instant::now() < down_until {
            figures.probes += 1;
            if scene.blocked_connects()? != allowed_before {
                figures.probes_wrong += 1;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if allowed_before {
            lab.delete(&toggle)?;
        } else {
            lab.apply(&toggle)?;
        }
        let started = Instant::now();
        lab.revive_agent(NODE)?;
        figures.startup = started.elapsed();
        let back = dialer.since_start();
        figures.gap = back - killed;
        figures.converged = converge(lab, scene, !allowed_before, started)?;
        let (pending, added) = adder
            .join()
            .map_err(|_| anyhow::anyhow!("the thread adding a pod panicked"))?;
        let added = added?;
        figures.new_pod_add_failures = added.transient_failures;
        figures.new_pod_added = added.at.saturating_duration_since(started);
        lab.finish_pod(pending, &added)?;
        progress(&format!(
            "kill {}: back after {} ms, converged {} ms after the restart",
            kill + 1,
            figures.gap.as_millis(),
            figures.converged.as_millis()
        ));
        kills.push((Window { killed, back }, figures));
        std::thread::sleep(options.settle);
    }
    Ok(kills)
}

/// Waits (bounded) until `node` is ready and `blocked`'s access is
/// `allowed`; the time from `started` to the start of the check that saw it.
fn converge(lab: &Lab, scene: &Scene, allowed: bool, started: Instant) -> Result<Duration> {
    loop {
        let at = started.elapsed();
        if lab.agent_ready(NODE) && scene.blocked_connects()? == allowed {
            return Ok(at);
        }
        if at > CONVERGE_LIMIT {
            bail!(
                "not converged {CONVERGE_LIMIT:?} after the restart: ready {}, blocked {} \
                 (wanted {})",
                lab.agent_ready(NODE),
                if scene.blocked_connects()? {
                    "connects"
                } else {
                    "does not connect"
                },
                if allowed {
                    "connects"
                } else {
                    "does not connect"
                }
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn report(
    options: &Options,
    records: &[StreamRecord],
    attempts: &[Attempt],
    kills: &mut [(Window, KillFigures)],
) -> Report {
    for (window, figures) in kills.iter_mut() {
        let in_gap = attempts
            .iter()
            .filter(|a| a.at >= window.killed && a.at <= window.back);
        for attempt in in_gap {
            figures.new_in_gap += 1;
            if !attempt.ok {
                figures.failed_in_gap += 1;
            }
        }
    }
    let failed: Vec<&Attempt> = attempts.iter().filter(|a| !a.ok).collect();
    Report {
        connections: options.connections,
        round_trips: records.iter().map(|r| r.round_trips).sum(),
        longest_wait: records
            .iter()
            .map(|r| r.longest_wait)
            .max()
            .unwrap_or_default(),
        broken: records.iter().filter_map(|r| r.broken.clone()).collect(),
        new_connections: attempts.len(),
        new_failed: failed.len(),
        new_failures: failed
            .iter()
            .take(5)
            .map(|a| {
                format!(
                    "at {} ms: {}",
                    a.at.as_millis(),
                    a.error.as_deref().unwrap_or("?")
                )
            })
            .collect(),
        kills: kills.iter().map(|(_, f)| f.clone()).collect(),
    }
}
