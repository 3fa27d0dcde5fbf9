//! Fault test: the lab's etcd frozen (SIGSTOP, as in a network partition:
//! connections stay open, nothing answers) for 30 s while a pod is deleted,
//! a policy changes and a pod is added, in a 2-node lab.
//!
//! - Existing enforcement does not change: two allowed and two denied
//!   flows (same node and across nodes) are probed with real TCP
//!   connections about once a second throughout the outage.
//! - Policy keeps working for endpoints that have an identity: a deny
//!   policy applied during the outage takes effect during the outage.
//! - A pod added during the outage stays closed: its CNI ADD does not
//!   return before etcd is back (it waits for the pod's first regeneration,
//!   which needs an identity).
//! - Within 2 s of etcd's return everything converges: the new pod's ADD
//!   has returned and its traffic follows the policy on both nodes (the
//!   other node learned its identity through etcd), each node's identity
//!   references in etcd are exactly those of its live pods (the deleted
//!   pod's is gone), and both agents report every step ok and the kvstore
//!   connected.
//! - No identity leaked (a reference of a node to an identity none of its
//!   pods has) or duplicated (one label set under two numbers). There is no
//!   identity garbage collector (an operator's job): an identity nobody
//!   references stays in etcd unreferenced, which is not a leak.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use weir_identity::{EtcdStore, LabelSet, SharedStore};
use weir_lab::manifest;
use weir_lab::probe::{probe_with_timeout, Target};
use weir_lab::state::PodRecord;
use weir_lab::testing::{namespace_yaml, TestLab};
use weir_lab::{Binaries, Lab};

const OUTAGE: Duration = Duration::from_secs(30);
/// When, into the outage, the new pod is added: late enough that its CNI
/// ADD (which waits up to the agent's 20 s regeneration timeout) is still
/// waiting when etcd returns.
const NEW_POD_AT: Duration = Duration::from_secs(20);
/// The bound for convergence after etcd returns.
const CONVERGE_BOUND: Duration = Duration::from_secs(2);
/// How long convergence is waited for before the test gives up (so a
/// slower convergence is measured and reported, not just failed).
const CONVERGE_WAIT: Duration = Duration::from_secs(20);
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

fn pod_yaml(name: &str, node: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: f\n  labels: {{pod: {name}{labels}}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n    ports:\n    - {{name: http, containerPort: 80, protocol: TCP}}\n---\n"
    )
}

/// Servers a (n1) and b (n2) admit TCP 80 from `role: client` pods only.
const ALLOW_CLIENTS: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-clients, namespace: f}\nspec:\n  podSelector: {matchLabels: {tier: server}}\n  policyTypes: [Ingress]\n  ingress:\n  - from: [{podSelector: {matchLabels: {role: client}}}]\n    ports: [{protocol: TCP, port: 80}]\n";
/// Applied during the outage: c admits nothing.
const DENY_C: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-c, namespace: f}\nspec:\n  podSelector: {matchLabels: {pod: c}}\n  policyTypes: [Ingress]\n";

/// The flows whose verdict must not change during the outage.
const STEADY: [(&str, &str, bool); 4] = [
    ("f/ok", "f/a", true),
    ("f/ok", "f/b", true),
    ("f/no", "f/a", false),
    ("f/no", "f/b", false),
];

fn pod(lab: &Lab, key: &str) -> Result<PodRecord> {
    lab.pod(key).cloned()
}

fn connects(src: &PodRecord, dst: &PodRecord) -> bool {
    probe_with_timeout(src, dst, Target::Tcp(80), PROBE_TIMEOUT).connected
}

/// Identities in etcd and, per node, the identities it references.
struct StoreState {
    identities: BTreeMap<u32, LabelSet>,
    refs: BTreeMap<String, BTreeSet<u32>>,
}

impl StoreState {
    fn read(lab: &Lab) -> Result<StoreState> {
        let config = lab.etcd_config("fault-test")?;
        lab.in_etcd_netns(|| -> Result<StoreState> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let store = EtcdStore::connect(config).await?;
                let identities = store.list_identities().await?;
                let mut refs = BTreeMap::new();
                for node in ["n1", "n2"] {
                    refs.insert(node.to_string(), store.referenced_by(node).await?);
                }
                store.close().await?;
                Ok(StoreState { identities, refs })
            })
        })?
    }

    /// The identity whose `pod` label is `pod` (every test pod has its
    /// own).
    fn of_pod(&self, pod: &str) -> Option<u32> {
        self.identities
            .iter()
            .find(|(_, labels)| labels.get("k8s:pod") == Some(pod))
            .map(|(id, _)| *id)
    }

    /// References of `node` to identities none of `pods` has.
    fn leaked(&self, node: &str, pods: &[&str]) -> BTreeSet<u32> {
        let wanted: BTreeSet<u32> = pods.iter().filter_map(|p| self.of_pod(p)).collect();
        self.refs[node].difference(&wanted).copied().collect()
    }

    /// Whether `node` references exactly the identities of `pods`.
    fn exact(&self, node: &str, pods: &[&str]) -> bool {
        let wanted: Option<BTreeSet<u32>> = pods.iter().map(|p| self.of_pod(p)).collect();
        wanted.as_ref() == Some(&self.refs[node])
    }

    /// Label sets stored under more than one number.
    fn duplicated(&self) -> usize {
        let mut by_labels: BTreeMap<String, usize> = BTreeMap::new();
        for labels in self.identities.values() {
            *by_labels.entry(labels.canonical()).or_default() += 1;
        }
        by_labels.values().filter(|n| **n > 1).count()
    }
}

/// Every reconcile step ok and the kvstore connected, per `weir status`.
fn agent_settled(lab: &Lab, node: &str) -> Result<bool> {
    let out = lab.weir(node, &["status", "-o", "json"])?;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("weir status: {}", String::from_utf8_lossy(&out.stderr)))?;
    let connected = status["kvstore_connection"]
        .as_str()
        .is_some_and(|c| c.starts_with("connected"));
    let steps_ok = status["reconcile_steps"]
        .as_array()
        .is_some_and(|steps| steps.iter().all(|s| s["state"] == "ok"));
    Ok(connected && steps_ok && status["kvstore_synced"] == true)
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn etcd_outage_keeps_enforcement_and_converges_after() -> Result<()> {
    let mut lab = TestLab::up_kvstore(2)?;
    let mut yaml = namespace_yaml("f");
    yaml.push_str(&pod_yaml("a", "n1", ", tier: server"));
    yaml.push_str(&pod_yaml("b", "n2", ", tier: server"));
    yaml.push_str(&pod_yaml("ok", "n1", ", role: client"));
    yaml.push_str(&pod_yaml("no", "n2", ""));
    yaml.push_str(&pod_yaml("c", "n1", ""));
    yaml.push_str(&pod_yaml("gone", "n1", ""));
    yaml.push_str("---\n");
    yaml.push_str(ALLOW_CLIENTS);
    lab.apply_yaml(&yaml)?;
    let (ok, c) = (pod(&lab, "f/ok")?, pod(&lab, "f/c")?);
    let steady: Vec<(PodRecord, PodRecord, bool)> = STEADY
        .iter()
        .map(|(s, d, allowed)| Ok((pod(&lab, s)?, pod(&lab, d)?, *allowed)))
        .collect::<Result<_>>()?;
    wait_until(
        "the policy enforced before the outage",
        SETUP_TIMEOUT,
        || {
            steady
                .iter()
                .all(|(s, d, allowed)| connects(s, d) == *allowed)
                && connects(&ok, &c)
        },
    );
    let before = StoreState::read(&lab)?;
    let gone_id = before.of_pod("gone").context("gone has an identity")?;
    assert!(
        before.refs["n1"].contains(&gone_id),
        "n1 references gone's identity before the outage"
    );

    // The outage.
    lab.pause_etcd()?;
    let outage = Instant::now();
    lab.delete_yaml(&pod_yaml("gone", "n1", ""))?;
    lab.apply_yaml(DENY_C)?;
    let policy_applied = Instant::now();
    let mut policy_took = None;
    let mut new_pod = None;
    let (mut rounds, mut probes, mut changed) = (0u32, 0u32, Vec::new());
    while outage.elapsed() < OUTAGE {
        rounds += 1;
        for (s, d, allowed) in &steady {
            probes += 1;
            if connects(s, d) != *allowed {
                changed.push(format!(
                    "{} -> {} at {:?}: {}",
                    s.key(),
                    d.key(),
                    outage.elapsed(),
                    if *allowed { "denied" } else { "allowed" }
                ));
            }
        }
        if policy_took.is_none() && !connects(&ok, &c) {
            policy_took = Some(policy_applied.elapsed());
        }
        if new_pod.is_none() && outage.elapsed() >= NEW_POD_AT {
            // Its own handle on the lab: the main one writes no state
            // until this thread is joined.
            let name = lab.name().to_string();
            let yaml = pod_yaml("new", "n1", ", role: client");
            new_pod = Some(std::thread::spawn(
                move || -> Result<(Instant, PodRecord)> {
                    let mut lab = Lab::open(&name, Binaries::locate()?)?;
                    lab.apply(&manifest::parse(&yaml)?)?;
                    Ok((Instant::now(), lab.pod("f/new")?.clone()))
                },
            ));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let new_pod = new_pod.context("the new pod was added")?;
    assert!(
        !new_pod.is_finished(),
        "CNI ADD of a pod added during the outage returned before etcd was back"
    );
    let policy_took =
        policy_took.context("a policy applied during the outage took effect during it")?;
    assert!(
        changed.is_empty(),
        "existing enforcement changed during the outage:\n{}",
        changed.join("\n")
    );

    // etcd returns.
    lab.resume_etcd()?;
    let resumed = Instant::now();
    let added = new_pod
        .join()
        .map_err(|_| anyhow::anyhow!("the pod-adding thread panicked"))??;
    let (added_at, new) = added;
    let (a, b) = (pod(&lab, "f/a")?, pod(&lab, "f/b")?);
    let (converged, store) = loop {
        let state = StoreState::read(&lab)?;
        // What converges; denied flows (each probe waits out its timeout)
        // are checked once after, so a round stays short.
        let done = state.exact("n1", &["a", "ok", "c", "new"])
            && state.exact("n2", &["b", "no"])
            && connects(&new, &a)
            && connects(&new, &b)
            && agent_settled(&lab, "n1")?
            && agent_settled(&lab, "n2")?;
        if done {
            break (Some(resumed.elapsed()), state);
        }
        if resumed.elapsed() > CONVERGE_WAIT {
            break (None, state);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let leaked =
        store.leaked("n1", &["a", "ok", "c", "new"]).len() + store.leaked("n2", &["b", "no"]).len();
    let duplicated = store.duplicated();
    let add_after = added_at.saturating_duration_since(resumed);
    weir_tests::figure!(
        "fault etcd: outage {} s (SIGSTOP), {} steady flows probed {rounds} times ({probes} probes, {} changed), \
         policy applied in the outage enforced in {} ms, pod added in the outage: CNI ADD returned {} ms after etcd, \
         converged in {}, identities leaked {leaked}, duplicated {duplicated}",
        OUTAGE.as_secs(),
        STEADY.len(),
        changed.len(),
        policy_took.as_millis(),
        add_after.as_millis(),
        converged.map_or("never (waited 20 s)".to_string(), |t| format!("{} ms", t.as_millis())),
    );
    assert!(!connects(&ok, &c), "ok -> c allowed after the outage");
    for (s, d, allowed) in &steady {
        assert_eq!(
            connects(s, d),
            *allowed,
            "{} -> {} after the outage",
            s.key(),
            d.key()
        );
    }
    assert!(
        added_at > resumed,
        "CNI ADD of the new pod returned before etcd was back"
    );
    assert!(
        !store.refs["n1"].contains(&gone_id),
        "n1 still references the identity of the pod deleted during the outage"
    );
    assert_eq!(leaked, 0, "identity references leaked");
    assert_eq!(duplicated, 0, "label sets under more than one identity");
    let converged = converged.context("never converged after etcd returned")?;
    assert!(
        converged <= CONVERGE_BOUND,
        "converged {} ms after etcd returned, over the issue's bound of {} ms",
        converged.as_millis(),
        CONVERGE_BOUND.as_millis()
    );
    Ok(())
}

/// The agent of n1 restarted while etcd is frozen: it starts (serves its
/// API), keeps enforcing what the pinned maps hold (the steady flows do not
/// change for 10 s) and converges once etcd is back.
#[test]
fn agent_restarted_without_etcd_starts_and_keeps_enforcing() -> Result<()> {
    let mut lab = TestLab::up_kvstore(2)?;
    let mut yaml = namespace_yaml("f");
    yaml.push_str(&pod_yaml("a", "n1", ", tier: server"));
    yaml.push_str(&pod_yaml("b", "n2", ", tier: server"));
    yaml.push_str(&pod_yaml("ok", "n1", ", role: client"));
    yaml.push_str(&pod_yaml("no", "n2", ""));
    yaml.push_str("---\n");
    yaml.push_str(ALLOW_CLIENTS);
    lab.apply_yaml(&yaml)?;
    let steady: Vec<(PodRecord, PodRecord, bool)> = STEADY
        .iter()
        .map(|(s, d, allowed)| Ok((pod(&lab, s)?, pod(&lab, d)?, *allowed)))
        .collect::<Result<_>>()?;
    wait_until(
        "the policy enforced before the outage",
        SETUP_TIMEOUT,
        || {
            steady
                .iter()
                .all(|(s, d, allowed)| connects(s, d) == *allowed)
        },
    );

    lab.pause_etcd()?;
    let outage = Instant::now();
    let restart = Instant::now();
    lab.restart_agent("n1")?;
    let restart_took = restart.elapsed();
    let (mut probes, mut changed) = (0u32, Vec::new());
    while outage.elapsed() < Duration::from_secs(10) {
        for (s, d, allowed) in &steady {
            probes += 1;
            if connects(s, d) != *allowed {
                changed.push(format!(
                    "{} -> {} at {:?}",
                    s.key(),
                    d.key(),
                    outage.elapsed()
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = lab.weir("n1", &["status", "-o", "json"])?;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let during = status["kvstore_connection"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    lab.resume_etcd()?;
    let resumed = Instant::now();
    let converged = loop {
        let state = StoreState::read(&lab)?;
        let done = state.exact("n1", &["a", "ok"])
            && state.exact("n2", &["b", "no"])
            && steady
                .iter()
                .filter(|(_, _, allowed)| *allowed)
                .all(|(s, d, _)| connects(s, d))
            && agent_settled(&lab, "n1")?
            && agent_settled(&lab, "n2")?;
        if done {
            break Some(resumed.elapsed());
        }
        if resumed.elapsed() > CONVERGE_WAIT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    weir_tests::figure!(
        "fault etcd (agent restart in the outage): agent up in {} ms without etcd, {probes} probes of {} steady flows, {} changed, \
         status during: {during:?}, converged in {}",
        restart_took.as_millis(),
        STEADY.len(),
        changed.len(),
        converged.map_or("never (waited 20 s)".to_string(), |t| format!("{} ms", t.as_millis())),
    );
    assert!(
        changed.is_empty(),
        "enforcement changed after an agent restart without etcd:\n{}",
        changed.join("\n")
    );
    for (s, d, allowed) in &steady {
        assert_eq!(
            connects(s, d),
            *allowed,
            "{} -> {} after the outage",
            s.key(),
            d.key()
        );
    }
    assert!(
        during.starts_with("connecting"),
        "weir status during the outage says {during:?}"
    );
    let converged = converged.context("never converged after etcd returned")?;
    assert!(
        converged <= CONVERGE_BOUND,
        "converged {} ms after etcd returned, over the issue's bound of {} ms",
        converged.as_millis(),
        CONVERGE_BOUND.as_millis()
    );
    Ok(())
}

/// etcd killed (connections reset, new ones refused) for 10 s while a pod
/// is deleted, then started again over its data: the steady flows do not
/// change and the agents reconnect and converge within 2 s of etcd serving
/// again (a restarted single member takes a second or two after it accepts
/// connections to elect itself and answer; that is etcd's, not counted).
#[test]
fn etcd_killed_and_restarted_reconnects() -> Result<()> {
    let mut lab = TestLab::up_kvstore(2)?;
    let mut yaml = namespace_yaml("f");
    yaml.push_str(&pod_yaml("a", "n1", ", tier: server"));
    yaml.push_str(&pod_yaml("b", "n2", ", tier: server"));
    yaml.push_str(&pod_yaml("ok", "n1", ", role: client"));
    yaml.push_str(&pod_yaml("no", "n2", ""));
    yaml.push_str(&pod_yaml("gone", "n2", ""));
    yaml.push_str("---\n");
    yaml.push_str(ALLOW_CLIENTS);
    lab.apply_yaml(&yaml)?;
    let steady: Vec<(PodRecord, PodRecord, bool)> = STEADY
        .iter()
        .map(|(s, d, allowed)| Ok((pod(&lab, s)?, pod(&lab, d)?, *allowed)))
        .collect::<Result<_>>()?;
    wait_until(
        "the policy enforced before the outage",
        SETUP_TIMEOUT,
        || {
            steady
                .iter()
                .all(|(s, d, allowed)| connects(s, d) == *allowed)
        },
    );
    let gone_id = StoreState::read(&lab)?
        .of_pod("gone")
        .context("gone has an identity")?;

    lab.kill_etcd()?;
    let outage = Instant::now();
    lab.delete_yaml(&pod_yaml("gone", "n2", ""))?;
    let (mut probes, mut changed) = (0u32, Vec::new());
    while outage.elapsed() < Duration::from_secs(10) {
        for (s, d, allowed) in &steady {
            probes += 1;
            if connects(s, d) != *allowed {
                changed.push(format!(
                    "{} -> {} at {:?}",
                    s.key(),
                    d.key(),
                    outage.elapsed()
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    lab.restart_etcd()?;
    let back = Instant::now();
    let (converged, store) = loop {
        let state = StoreState::read(&lab)?;
        let done = state.exact("n1", &["a", "ok"])
            && state.exact("n2", &["b", "no"])
            && steady
                .iter()
                .filter(|(_, _, allowed)| *allowed)
                .all(|(s, d, _)| connects(s, d))
            && agent_settled(&lab, "n1")?
            && agent_settled(&lab, "n2")?;
        if done {
            break (Some(back.elapsed()), state);
        }
        if back.elapsed() > CONVERGE_WAIT {
            break (None, state);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    weir_tests::figure!(
        "fault etcd (killed, restarted over its data): outage 10 s, {probes} probes of {} steady flows, {} changed, \
         converged in {} after etcd served again, identities duplicated {}",
        STEADY.len(),
        changed.len(),
        converged.map_or("never (waited 20 s)".to_string(), |t| format!("{} ms", t.as_millis())),
        store.duplicated(),
    );
    assert!(
        changed.is_empty(),
        "enforcement changed while etcd was down:\n{}",
        changed.join("\n")
    );
    for (s, d, allowed) in &steady {
        assert_eq!(
            connects(s, d),
            *allowed,
            "{} -> {} after the outage",
            s.key(),
            d.key()
        );
    }
    assert!(
        !store.refs["n2"].contains(&gone_id),
        "n2 still references the identity of the pod deleted while etcd was down"
    );
    assert_eq!(
        store.duplicated(),
        0,
        "label sets under more than one identity"
    );
    let converged = converged.context("never converged after etcd returned")?;
    assert!(
        converged <= CONVERGE_BOUND,
        "converged {} ms after etcd returned, over the issue's bound of {} ms",
        converged.as_millis(),
        CONVERGE_BOUND.as_millis()
    );
    Ok(())
}
