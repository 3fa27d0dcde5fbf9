//! What an agent costs while nothing changes: the CPU time each lab agent
//! uses over a quiet interval, first with the example cluster only, then
//! with one NetworkPolicy of many ipBlock peers in force, then with 1,000
//! NetworkPolicies over 10,000 identities (allocated in the lab's etcd, as
//! other nodes' pods would be) in force.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use weir_lab::manifest;
use weir_lab::testing::TestLab;

/// How long each quiet interval is measured.
const QUIET: Duration = Duration::from_secs(5);
/// Time for a change to settle before measuring.
const SETTLE: Duration = Duration::from_secs(3);

/// User + system CPU time of a process so far, from /proc/<pid>/stat.
pub(crate) fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat: 12 and 13 after the name.
    let ticks: u64 = fields
        .get(11..13)
        .context("short stat")?
        .iter()
        .map(|f| f.parse::<u64>())
        .sum::<Result<u64, _>>()?;
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as u64;
    Ok(Duration::from_millis(ticks * 1000 / per_second))
}

/// Each node's agent CPU over one quiet interval, printed.
fn measure(lab: &TestLab, what: &str) -> Result<()> {
    measure_agents(&agents(lab), what)
}

/// (node, agent pid) of every node.
pub(crate) fn agents(lab: &TestLab) -> Vec<(String, u32)> {
    lab.state()
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.agent_pid))
        .collect()
}

/// The CPU of `pids` over one quiet interval after settling, printed as
/// CPU seconds per wall second.
fn measure_agents(pids: &[(String, u32)], what: &str) -> Result<()> {
    std::thread::sleep(SETTLE);
    let before: Vec<Duration> = pids
        .iter()
        .map(|(_, pid)| cpu_time(*pid))
        .collect::<Result<_>>()?;
    let start = Instant::now();
    std::thread::sleep(QUIET);
    let wall = start.elapsed();
    for ((node, pid), before) in pids.iter().zip(before) {
        let used = cpu_time(*pid)? - before;
        println!(
            "{what}: agent on {node}: {:.2} s of CPU in {:.1} s ({:.3} CPU s per wall s)",
            used.as_secs_f64(),
            wall.as_secs_f64(),
            used.as_secs_f64() / wall.as_secs_f64()
        );
    }
    Ok(())
}

/// A NetworkPolicy selecting x/a with `peers` ipBlock peers (/32s in
/// 198.18.0.0/15, a benchmarking range) on ingress.
fn ip_block_policy(peers: u32) -> String {
    let mut yaml = String::from(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: many-blocks, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n",
    );
    for i in 0..peers.min(1 << 17) {
        let address = std::net::Ipv4Addr::from(0xC612_0000u32 + i);
        yaml.push_str(&format!("    - ipBlock: {{cidr: {address}/32}}\n"));
    }
    yaml
}

/// `count` NetworkPolicies over the example pods: policy `j` selects pod
/// a, b or c of namespace x, y or z and takes port 80 from one of 500 apps
/// of its namespace.
pub(crate) fn policies(count: u32) -> String {
    let mut yaml = String::new();
    for j in 0..count {
        let namespace = ["x", "y", "z"][j as usize % 3];
        let pod = ["a", "b", "c"][(j as usize / 3) % 3];
        yaml.push_str(&format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: scale-{j}, namespace: {namespace}}}\nspec:\n  podSelector: {{matchLabels: {{pod: {pod}}}}}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - podSelector: {{matchLabels: {{app: bench-{}}}}}\n    ports:\n    - {{protocol: TCP, port: 80}}\n",
            j % 500
        ));
    }
    yaml
}

/// The labels of remote pod `i` of the 10,000: app bench-(i % 500) in
/// namespace x, y or z.
fn remote_pod(i: u32) -> weir_identity::LabelSet {
    weir_identity::LabelSet::new()
        .with("k8s:app", format!("bench-{}", i % 500))
        .with(
            "k8s:io.kubernetes.pod.namespace",
            ["x", "y", "z"][i as usize % 3],
        )
        .with("k8s:pod-template-hash", format!("h{}", i / 500))
}

/// Allocates `count` identities in the lab's etcd (as one more node would
/// for its pods), then measures the agents while they hold them.
fn measure_with_identities(lab: &TestLab, count: u32, what: String) -> Result<()> {
    let pids = agents(lab);
    let before: Vec<Duration> = pids
        .iter()
        .map(|(_, pid)| cpu_time(*pid))
        .collect::<Result<_>>()?;
    let _identities = RemoteIdentities::allocate(lab, count)?;
    std::thread::sleep(SETTLE);
    // The work of taking them in, so the quiet figure below is not a
    // quiet agent that never saw them.
    for ((node, pid), before) in pids.iter().zip(before) {
        let used = cpu_time(*pid)? - before;
        println!(
            "taking in {count} identities under the policies: agent on {node}: {:.2} s of CPU",
            used.as_secs_f64()
        );
    }
    measure_agents(&pids, &what)
}

/// Identities of remote pods allocated in the lab's etcd, as one more
/// node would for its pods (the lab must run in kvstore mode). They live as
/// long as this handle's lease: it is renewed by the handle's runtime and
/// revoked on drop, when etcd deletes them.
pub(crate) struct RemoteIdentities {
    runtime: tokio::runtime::Runtime,
    store: Option<weir_identity::EtcdStore>,
}

impl RemoteIdentities {
    /// Allocates `count` of them (the labels of [`remote_pod`]).
    pub(crate) fn allocate(lab: &TestLab, count: u32) -> Result<RemoteIdentities> {
        use weir_identity::{EtcdStore, SharedStore};
        let config = lab.etcd_config("bench-idle")?;
        lab.in_etcd_netns(move || -> Result<RemoteIdentities> {
            // A worker thread renews the lease while the caller measures
            // (it is made here, so it is in etcd's namespace too).
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            let store = runtime.block_on(EtcdStore::connect(config))?;
            let start = Instant::now();
            runtime.block_on(async {
                for i in 0..count {
                    store.allocate_identity(&remote_pod(i)).await?;
                }
                anyhow::Ok(())
            })?;
            eprintln!(
                "{count} identities allocated in {:.1} s",
                start.elapsed().as_secs_f64()
            );
            Ok(RemoteIdentities {
                runtime,
                store: Some(store),
            })
        })?
    }
}

impl Drop for RemoteIdentities {
    fn drop(&mut self) {
        if let Some(store) = self.store.take() {
            if let Err(e) = self.runtime.block_on(store.close()) {
                eprintln!("closing the bench's etcd handle: {e:#}");
            }
        }
    }
}

pub fn run(peers: u32) -> Result<()> {
    weir_tests::require_root();
    let mut lab = TestLab::up_kvstore(2)?;
    lab.apply(&manifest::parse(&weir_lab::testing::netpol_cluster_yaml())?)?;
    println!(
        "agent CPU while nothing changes ({} s measured after {} s to settle; the lab runs {} binaries)",
        QUIET.as_secs(),
        SETTLE.as_secs(),
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
    measure(&lab, "9 pods, no policy")?;
    lab.apply(&manifest::parse(&ip_block_policy(peers))?)?;
    measure(
        &lab,
        &format!("9 pods, one policy of {peers} ipBlock peers"),
    )?;
    lab.apply(&manifest::parse(&policies(1000))?)?;
    measure_with_identities(
        &lab,
        10_000,
        "9 pods, 1,000 more NetworkPolicies, 10,000 identities".into(),
    )?;
    Ok(())
}
