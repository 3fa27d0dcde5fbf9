//! Weir's rows: a two-node lab (release agents beside the release
//! weir-bench, kvstore mode so that remote identities can be loaded into
//! its etcd), with the upstream network-policy cluster's nine pods and three
//! of the benchmark's own in namespace `p2p`: `client` and `server` on n1,
//! `remote` on n2. The lab goes through three states: no policy; an
//! ingress policy on the servers and an egress policy on the client,
//! allowing only the benchmark's ports; and that with 1,000 more
//! NetworkPolicies and 10,000 remote identities loaded.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use weir_lab::manifest;
use weir_lab::testing::{namespace_yaml, netpol_cluster_yaml, TestLab};

use super::measure::{self, Path, ECHO_PORT, IPERF_PORT};
use crate::idle::{self, RemoteIdentities};

pub const NAMESPACE: &str = "p2p";

pub struct WeirLab {
    // Dropped first: the identities' lease is revoked while etcd runs.
    identities: Option<RemoteIdentities>,
    pub lab: TestLab,
}

/// A pod of the benchmark labelled `role: <role>`.
fn pod(name: &str, role: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\n  labels: {{pod: {name}, role: {role}}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n    ports:\n    - {{name: serve-80-tcp, containerPort: 80, protocol: TCP}}\n---\n"
    )
}

/// The enforced policies: the servers take the benchmark's ports from the
/// client only; the client sends only to the servers on those ports.
pub fn policies_yaml() -> String {
    let ports = format!(
        "    ports:\n    - {{protocol: TCP, port: {IPERF_PORT}}}\n    - {{protocol: TCP, port: {ECHO_PORT}}}\n"
    );
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: servers, namespace: {NAMESPACE}}}\nspec:\n  podSelector: {{matchLabels: {{role: server}}}}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - podSelector: {{matchLabels: {{role: client}}}}\n{ports}---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: client, namespace: {NAMESPACE}}}\nspec:\n  podSelector: {{matchLabels: {{role: client}}}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - podSelector: {{matchLabels: {{role: server}}}}\n{ports}"
    )
}

impl WeirLab {
    /// `dual_stack`: every pod also has an IPv6 address ([`Self::same_node_v6`]).
    pub fn up(dual_stack: bool) -> Result<WeirLab> {
        let mut lab = match dual_stack {
            true => TestLab::up_kvstore_dual_stack(2)?,
            false => TestLab::up_kvstore(2)?,
        };
        let mut yaml = netpol_cluster_yaml();
        yaml.push_str(&namespace_yaml(NAMESPACE));
        yaml.push_str(&pod("client", "client", "n1"));
        yaml.push_str(&pod("server", "server", "n1"));
        yaml.push_str(&pod("remote", "server", "n2"));
        lab.apply(&manifest::parse(&yaml)?)?;
        lab.reload_pods()?;
        Ok(WeirLab {
            identities: None,
            lab,
        })
    }

    fn path_to(&self, server: &str, ipv6: bool) -> Result<Path> {
        let client = self.lab.pod(&format!("{NAMESPACE}/client"))?;
        let server = self.lab.pod(&format!("{NAMESPACE}/{server}"))?;
        let server_ip = match ipv6 {
            true => server
                .ipv6
                .with_context(|| format!("{} has no IPv6 address", server.key()))?
                .into(),
            false => server.ip.into(),
        };
        Ok(Path {
            client: client.netns.clone(),
            server: server.netns.clone(),
            server_ip,
        })
    }

    /// Client to the server on its node.
    pub fn same_node(&self) -> Result<Path> {
        self.path_to("server", false)
    }

    /// [`Self::same_node`] over IPv6 (a dual-stack lab).
    pub fn same_node_v6(&self) -> Result<Path> {
        self.path_to("server", true)
    }

    /// [`Self::cross_node`] over IPv6 (a dual-stack lab).
    pub fn cross_node_v6(&self) -> Result<Path> {
        self.path_to("remote", true)
    }

    /// Client to the server on the other node.
    pub fn cross_node(&self) -> Result<Path> {
        self.path_to("remote", false)
    }

    /// The processes whose CPU is shown beside each row: each node's agent
    /// (named by its node), then the rest of the lab ("rest": etcd, the
    /// control plane, the operators, the kubelet daemons).
    pub fn watched(&self) -> Vec<(String, Vec<u32>)> {
        let state = self.lab.state();
        let mut groups: Vec<(String, Vec<u32>)> = state
            .nodes
            .iter()
            .map(|n| (n.name.clone(), vec![n.agent_pid]))
            .collect();
        let mut rest = vec![state.etcd_pid];
        rest.extend(state.nodes.iter().map(|n| n.kubelet_pid));
        if let Some(cp) = &state.control_plane {
            rest.extend([
                cp.etcd_pid,
                cp.apiserver_pid,
                cp.controller_manager_pid,
                cp.scheduler_pid,
                cp.relay_pid,
            ]);
            rest.extend(&cp.operator_pids);
        }
        rest.retain(|pid| *pid != 0);
        groups.push(("rest".into(), rest));
        groups
    }

    /// Applies the enforced policies and waits until the datapath enforces
    /// them: a pod they do not allow (x/a) is refused by the server while
    /// the client still connects. `path` is the same-node path, whose
    /// servers run.
    pub fn enforce(&mut self, path: &Path) -> Result<()> {
        self.lab.apply(&manifest::parse(&policies_yaml())?)?;
        let outsider = self.lab.pod("x/a")?.netns.clone();
        let target = SocketAddr::from((path.server_ip, ECHO_PORT));
        let start = Instant::now();
        for _ in 0..60 {
            let denied = !measure::connects(&outsider, target, Duration::from_millis(500))?;
            let allowed = measure::connects(&path.client, target, Duration::from_secs(2))?;
            if denied && allowed {
                eprintln!(
                    "policies in force after {:.1} s (x/a refused, the client allowed)",
                    start.elapsed().as_secs_f64()
                );
                return Ok(());
            }
        }
        bail!(
            "the policies were not in force within {:?}",
            start.elapsed()
        )
    }

    /// Applies 1,000 more NetworkPolicies (over the upstream cluster's
    /// pods) and allocates 10,000 remote identities in etcd, then waits
    /// for the agents to settle.
    pub fn load_scale(&mut self, policies: u32, identities: u32) -> Result<()> {
        let start = Instant::now();
        self.lab
            .apply(&manifest::parse(&idle::policies(policies))?)
            .context("applying the 1,000 policies")?;
        eprintln!(
            "{policies} policies applied in {:.1} s",
            start.elapsed().as_secs_f64()
        );
        self.identities = Some(RemoteIdentities::allocate(&self.lab, identities)?);
        let agents: Vec<_> = self
            .watched()
            .into_iter()
            .filter(|(name, _)| name != "rest")
            .collect();
        settle(&agents)
    }
}

/// Waits (at most 120 s) until every agent uses under a fifth of a core
/// over a second, so a row measures the datapath with agents that took the
/// change in, not agents still compiling it. Prints what it saw.
fn settle(agents: &[(String, Vec<u32>)]) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        let cpu = agent_cpu_over(agents, Duration::from_secs(1))?;
        if cpu.iter().all(|(_, c)| *c < 0.2) {
            eprintln!(
                "agents settled after {:.0} s",
                start.elapsed().as_secs_f64()
            );
            return Ok(());
        }
    }
    eprintln!("agents still busy after 120 s: measuring anyway (their CPU is in the table)");
    Ok(())
}

/// Each agent's CPU seconds per wall second over `interval`.
fn agent_cpu_over(agents: &[(String, Vec<u32>)], interval: Duration) -> Result<Vec<(String, f64)>> {
    let before = cpu_times(agents);
    let start = Instant::now();
    std::thread::sleep(interval);
    let after = cpu_times(agents);
    let wall = start.elapsed().as_secs_f64();
    Ok(agents
        .iter()
        .zip(before.iter().zip(after))
        .map(|((node, _), (b, a))| (node.clone(), (a - *b).as_secs_f64() / wall))
        .collect())
}

/// Each group's CPU time so far (a process that is gone counts nothing).
pub fn cpu_times(groups: &[(String, Vec<u32>)]) -> Vec<Duration> {
    groups
        .iter()
        .map(|(_, pids)| {
            pids.iter()
                .filter_map(|pid| idle::cpu_time(*pid).ok())
                .sum()
        })
        .collect()
}
