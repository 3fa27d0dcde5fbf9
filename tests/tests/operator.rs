//! weir-operator against a real kube-apiserver (v1.20.2, with Debian's
//! etcd, sealed in a netns of its own): two replicas, one leader.
//!
//! - Both install the CRDs; exactly one holds the `weir-operator` Lease.
//! - Cluster-pool IPAM: every Node gets a distinct pod CIDR in its WeirNode.
//! - The leader is SIGKILLed while a Node is being registered: the other
//!   replica takes over within the lease duration, restores the pool from
//!   the WeirNodes and assigns the new Node a block nobody holds.
//! - An exhausted pool is an Event on the Node; a deleted Node frees its
//!   block (and its WeirNode goes), which the waiting Node then gets.
//! - Garbage collection: a WeirEndpoint whose Pod is gone and a WeirIdentity
//!   no endpoint uses go; the identity an existing pod's endpoint uses stays;
//!   1,000 stale identities are collected (figure).
//! - A leader stopped with SIGTERM releases the lease: the follower leads
//!   at once.
//! - Four replicas started together race for a free lease: exactly one
//!   leads, three rounds in a row.
//!
//! A missing binary fails the test: it never skips.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use weir_lab::sealed::SealedControlPlane;
use weir_lab::{process, Binaries, KubeBinaries};
use weir_tests::{netns, require_root};

const LEASE_DURATION_S: u64 = 4;
/// The pool holds four /24 blocks.
const POOL: &str = "10.244.0.0/22";
const GRACE: Duration = Duration::from_secs(5);
/// Two usable addresses for LoadBalancer Services.
const LB_POOL: &str = "198.51.100.0/30";

/// One operator replica: its process, metrics port and log.
struct Replica {
    name: String,
    pid: u32,
    port: u16,
}

fn start_replica(
    cp: &SealedControlPlane,
    operator: &Path,
    name: &str,
    port: u16,
) -> Result<Replica> {
    let args: Vec<String> = [
        "--kubeconfig",
        &cp.cp.admin_kubeconfig().display().to_string(),
        "--identity",
        name,
        "--cluster-pool-ipv4-cidr",
        POOL,
        "--cluster-pool-ipv4-mask-size",
        "24",
        "--metrics-address",
        &format!("127.0.0.1:{port}"),
        "--lease-duration-s",
        &LEASE_DURATION_S.to_string(),
        "--lease-renew-before-s",
        "2",
        "--gc-interval-s",
        "1",
        "--identity-gc-grace-s",
        "2",
        "--lb-ipam-pool",
        LB_POOL,
    ]
    .map(String::from)
    .to_vec();
    let pid = process::spawn_detached(
        cp.netns(),
        operator,
        &args,
        &cp.dir().join(format!("{name}.log")),
    )?;
    Ok(Replica {
        name: name.to_string(),
        pid,
        port,
    })
}

fn log(cp: &SealedControlPlane, replica: &str) -> String {
    std::fs::read_to_string(cp.dir().join(format!("{replica}.log"))).unwrap_or_default()
}

fn holder(cp: &SealedControlPlane) -> Option<String> {
    cp.kubectl(&[
        "get",
        "lease",
        "weir-operator",
        "-n",
        "kube-system",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
    .ok()
    .filter(|h| !h.is_empty())
}

fn scrape(cp: &SealedControlPlane, replica: &Replica, path: &str) -> Option<String> {
    let mut curl = std::process::Command::new("curl");
    curl.args([
        "-sf",
        "--max-time",
        "2",
        &format!("http://127.0.0.1:{}{path}", replica.port),
    ]);
    netns::command_in(&mut curl, cp.netns()).ok()?;
    netns::run(&mut curl).ok()
}

/// WeirNode name → first pod CIDR.
fn cidrs(cp: &SealedControlPlane) -> Vec<(String, String)> {
    cp.kubectl(&[
        "get",
        "weirnodes",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.spec.podCIDRs[0]} {end}",
    ])
    .unwrap_or_default()
    .split_whitespace()
    .filter_map(|pair| pair.split_once('='))
    .filter(|(_, cidr)| !cidr.is_empty())
    .map(|(n, c)| (n.to_string(), c.to_string()))
    .collect()
}

fn cidr_of(cp: &SealedControlPlane, node: &str) -> Option<String> {
    cidrs(cp)
        .into_iter()
        .find(|(n, _)| n == node)
        .map(|(_, c)| c)
}

fn exists(cp: &SealedControlPlane, args: &[&str]) -> bool {
    cp.kubectl(&[&["get"], args, &["-o", "name"]].concat())
        .is_ok_and(|out| !out.trim().is_empty())
}

fn register(cp: &SealedControlPlane, names: &[&str]) -> Result<()> {
    let nodes: Vec<(&str, Ipv4Addr)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, Ipv4Addr::new(192, 0, 2, 10 + i as u8)))
        .collect();
    cp.cp.register_nodes(&nodes)
}

/// What the agent of `node` does at start with `--ipam cluster-pool` and
/// no `--node-ip`: waits for its WeirNode's pod CIDR, reads its address
/// from its Node (in the control plane's netns, on its own thread).
fn agent_waits_for_pod_cidr(
    cp: &SealedControlPlane,
    node: &str,
) -> std::thread::JoinHandle<Result<(ipnetwork::Ipv4Network, std::net::IpAddr)>> {
    use weir_agent::cluster::{kubernetes, node_ipam};
    let kubeconfig = cp.cp.admin_kubeconfig();
    let netns_name = cp.netns().to_string();
    let node = node.to_string();
    std::thread::spawn(move || {
        netns::run_in(&netns_name, move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(async {
                    let client = kubernetes::client(Some(&kubeconfig)).await?;
                    let cidr = tokio::time::timeout(
                        Duration::from_secs(60),
                        node_ipam::pod_cidrs(
                            node_ipam::IpamMode::ClusterPool,
                            (None, None),
                            Some(&client),
                            &node,
                        ),
                    )
                    .await
                    .context("no pod CIDR within 60 s")??
                    .v4;
                    let (address, _) = node_ipam::node_ips(&client, &node).await?;
                    Ok((cidr, address))
                })
        })?
    })
}

/// A sealed kube-apiserver, ready, and the operator binary to run
/// against it.
fn api_server_and_operator() -> (SealedControlPlane, PathBuf) {
    require_root();
    let kube = KubeBinaries::locate().expect("the control plane's binaries");
    let operator = Binaries::locate()
        .expect("the workspace's binaries")
        .operator();
    assert!(operator.is_file(), "{} not built", operator.display());
    let mut cp = SealedControlPlane::new(&kube.kubectl).unwrap();
    cp.cp.start_apiserver(&kube.apiserver).unwrap();
    cp.cp.wait_ready().unwrap();
    (cp, operator)
}

#[test]
fn two_replicas_elect_one_leader_assign_distinct_pod_cidrs_across_a_failover_and_collect_garbage() {
    let (cp, operator) = api_server_and_operator();
    let started = Instant::now();
    let mut replicas = vec![
        start_replica(&cp, &operator, "op-a", 9963).unwrap(),
        start_replica(&cp, &operator, "op-b", 9964).unwrap(),
    ];
    let result = run(&cp, &operator, &mut replicas, started);
    for replica in &replicas {
        process::stop(replica.pid, Duration::from_secs(5));
    }
    if let Err(error) = result {
        let logs: String = ["op-a", "op-b", "op-a2", "op-b2"]
            .iter()
            .map(|name| format!("\n{name} log:\n{}", weir_lab::sealed::tail(&log(&cp, name))))
            .collect();
        panic!("{error:#}{logs}");
    }
}

/// Replicas started together race for a free lease: exactly one leads,
/// round after round (the lease released by SIGTERM in between), and took
/// it as a field manager of its own. Two replicas sharing one
/// server-side-apply field manager both "won" such a race once (CI,
/// 2026-12-04).
#[test]
fn replicas_racing_for_a_free_lease_elect_exactly_one() {
    let (cp, operator) = api_server_and_operator();
    let mut result = Ok(());
    for round in 0..RACE_ROUNDS {
        let replicas: Vec<Replica> = (0..RACERS)
            .map(|i| {
                let name = format!("race{round}-{i}");
                start_replica(&cp, &operator, &name, 9971 + i as u16).unwrap()
            })
            .collect();
        result = race_round(&cp, &replicas);
        for replica in &replicas {
            process::stop(replica.pid, Duration::from_secs(5));
        }
        if result.is_err() {
            break;
        }
    }
    if let Err(error) = result {
        panic!("{error:#}");
    }
}

const RACERS: usize = 4;
const RACE_ROUNDS: usize = 3;

/// One round: a leader appears; after a lease duration, the holder is the
/// only replica that ever started its controllers.
fn race_round(cp: &SealedControlPlane, replicas: &[Replica]) -> Result<()> {
    cp.eventually("a leader", |cp| {
        holder(cp).is_some_and(|h| replicas.iter().any(|r| r.name == h))
    })?;
    std::thread::sleep(Duration::from_secs(LEASE_DURATION_S));
    let holder = holder(cp).context("holder")?;
    let led: Vec<&str> = replicas
        .iter()
        .filter(|r| log(cp, &r.name).contains("leading: starting the controllers"))
        .map(|r| r.name.as_str())
        .collect();
    anyhow::ensure!(
        led == [holder.as_str()],
        "holder {holder}, but these replicas led: {led:?}"
    );
    // What makes the race safe: each replica applies holderIdentity as a
    // field manager of its own, so the API server refuses (409) a second
    // replica's take of a lease the first has just taken. Checked directly,
    // since a race rarely falls within the few milliseconds that matter.
    let appliers = cp.kubectl(&[
        "get",
        "lease",
        "weir-operator",
        "-n",
        "kube-system",
        "-o",
        "jsonpath={.metadata.managedFields[?(@.operation==\"Apply\")].manager}",
    ])?;
    anyhow::ensure!(
        appliers == format!("weir-operator-{holder}"),
        "the lease was taken by field manager(s) {appliers:?}, not one of the holder's own"
    );
    Ok(())
}

fn run(
    cp: &SealedControlPlane,
    operator: &Path,
    replicas: &mut [Replica],
    started: Instant,
) -> Result<()> {
    // Both replicas install the CRDs and become ready; one leads.
    cp.eventually("both replicas ready", |_| {
        replicas.iter().all(|r| scrape(cp, r, "/readyz").is_some())
    })?;
    for kind in [
        "weirnodes",
        "weiridentities",
        "weirendpoints",
        "weirnetworkpolicies",
    ] {
        let established = cp.kubectl(&[
            "get",
            "crd",
            &format!("{kind}.weir.io"),
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
        ])?;
        anyhow::ensure!(
            established == "True",
            "CRD {kind}: Established={established}"
        );
    }
    cp.eventually("a leader", |cp| holder(cp).is_some())?;
    let elected = started.elapsed();
    let leader_name = holder(cp).context("holder")?;
    let first = replicas
        .iter()
        .position(|r| r.name == leader_name)
        .context("the holder is one of the replicas")?;
    let second = 1 - first;
    let leading = |r: &Replica| {
        scrape(cp, r, "/metrics").is_some_and(|m| m.lines().any(|l| l == "weir_operator_leader 1"))
    };
    cp.eventually("the holder reports itself leader", |_| {
        leading(&replicas[first])
    })?;
    anyhow::ensure!(
        !leading(&replicas[second]),
        "the follower reports itself leader too"
    );

    // IPAM: three nodes, three distinct blocks.
    let assigning = Instant::now();
    register(cp, &["n1", "n2", "n3"])?;
    cp.eventually("n1..n3 have pod CIDRs", |cp| cidrs(cp).len() == 3)?;
    let per_node = assigning.elapsed() / 3;
    let blocks: BTreeSet<String> = cidrs(cp).into_iter().map(|(_, c)| c).collect();
    anyhow::ensure!(blocks.len() == 3, "blocks given twice: {:?}", cidrs(cp));

    // SIGKILL the leader while n4 registers: the follower takes over.
    let killed = Instant::now();
    process::kill_now(replicas[first].pid)?;
    register(cp, &["n4"])?;
    let follower_name = replicas[second].name.clone();
    cp.eventually("the follower holds the lease", |cp| {
        holder(cp).as_deref() == Some(follower_name.as_str())
    })?;
    let failover = killed.elapsed();
    cp.eventually("n4 has a pod CIDR", |cp| cidr_of(cp, "n4").is_some())?;
    let after_failover = killed.elapsed();
    let all = cidrs(cp);
    let blocks: BTreeSet<&String> = all.iter().map(|(_, c)| c).collect();
    anyhow::ensure!(
        all.len() == 4 && blocks.len() == 4,
        "after failover: {all:?}"
    );
    // The killed replica comes back as a follower.
    let restarted = format!("{}2", replicas[first].name);
    replicas[first] = start_replica(cp, operator, &restarted, replicas[first].port)?;

    // The pool (4 blocks) is exhausted: n5 waits, with an Event saying so.
    register(cp, &["n5"])?;
    cp.eventually("an exhausted-pool event for n5", |cp| {
        cp.kubectl(&[
            "get",
            "events",
            "-A",
            "--field-selector",
            "reason=PodCIDRPoolExhausted",
            "-o",
            "jsonpath={.items[*].regarding.name}{.items[*].involvedObject.name}",
        ])
        .is_ok_and(|names| names.contains("n5"))
    })?;
    anyhow::ensure!(
        cidr_of(cp, "n5").is_none(),
        "n5 got a block from a full pool"
    );
    // Deleting n2 frees its block (its WeirNode goes); n5 gets it, and
    // n5's agent (`--ipam cluster-pool`), waiting meanwhile, takes it.
    let n2_block = cidr_of(cp, "n2").context("n2's block")?;
    let n5_agent = agent_waits_for_pod_cidr(cp, "n5");
    cp.kubectl(&["delete", "node", "n2"])?;
    cp.eventually("n2's WeirNode removed", |cp| {
        !exists(cp, &["weirnode", "n2"])
    })?;
    cp.eventually("n5 gets n2's block", |cp| {
        cidr_of(cp, "n5").as_deref() == Some(n2_block.as_str())
    })?;
    let (taken, address) = n5_agent
        .join()
        .map_err(|_| anyhow::anyhow!("agent thread panicked"))??;
    anyhow::ensure!(
        taken.to_string() == n2_block,
        "n5's agent took {taken}, the operator assigned {n2_block}"
    );
    anyhow::ensure!(
        address.to_string() == "192.0.2.10",
        "n5's address from its Node: {address}"
    );

    // Garbage collection.
    cp.kubectl_create(GC_OBJECTS)?;
    cp.eventually("the orphaned WeirEndpoint collected", |cp| {
        !exists(cp, &["weirendpoint", "gone", "-n", "gc"])
    })?;
    cp.eventually("the unused WeirIdentity collected", |cp| {
        !exists(cp, &["weiridentity", "70002"])
    })?;
    anyhow::ensure!(
        exists(cp, &["weiridentity", "70001"]) && exists(cp, &["weirendpoint", "kept", "-n", "gc"]),
        "the identity of an existing pod's endpoint was collected"
    );
    let stale: String = (0..1000)
        .map(|i| {
            format!(
                "apiVersion: weir.io/v1\nkind: WeirIdentity\nmetadata:\n  name: \"{}\"\n\
                 spec:\n  securityLabels:\n    \"k8s:app\": stale-{i}\n---\n",
                80000 + i
            )
        })
        .collect();
    cp.kubectl_create(&stale)?;
    let collecting = Instant::now();
    cp.eventually("1,000 stale identities collected", |cp| {
        cp.kubectl(&["get", "weiridentities", "-o", "name"])
            .is_ok_and(|out| !out.contains("weiridentity.weir.io/8"))
    })?;
    let gc_1000 = collecting.elapsed();
    let metrics = scrape(cp, &replicas[second], "/metrics").context("leader metrics")?;
    anyhow::ensure!(
        metrics.contains("weir_operator_gc_deleted_total{kind=\"WeirIdentity\"}")
            && metrics.contains("weir_operator_ipam_exhausted_total")
            && metrics.contains("weir_operator_ipam_blocks{state=\"assigned\"} 4"),
        "leader metrics:\n{metrics}"
    );

    // LB IPAM: two LoadBalancer Services get the pool's two addresses; a
    // third waits (with an Event) until one is deleted and takes its address.
    cp.kubectl_create(&lb_services(&["lb1", "lb2", "lb3"]))?;
    cp.eventually("lb1 and lb2 get addresses", |cp| {
        lb_ip(cp, "lb1").is_some() && lb_ip(cp, "lb2").is_some()
    })?;
    let lb1 = lb_ip(cp, "lb1").context("lb1")?;
    anyhow::ensure!(
        lb1 != lb_ip(cp, "lb2").context("lb2")? && lb1.starts_with("198.51.100."),
        "LB addresses: lb1 {lb1}, lb2 {:?}",
        lb_ip(cp, "lb2")
    );
    cp.eventually("an unavailable-address event for lb3", |cp| {
        cp.kubectl(&[
            "get",
            "events",
            "-n",
            "lb",
            "--field-selector",
            "reason=LoadBalancerIPUnavailable",
            "-o",
            "jsonpath={.items[*].involvedObject.name}",
        ])
        .is_ok_and(|names| names.contains("lb3"))
    })?;
    anyhow::ensure!(
        lb_ip(cp, "lb3").is_none(),
        "lb3 got an address from a full pool"
    );
    cp.kubectl(&["delete", "service", "lb1", "-n", "lb"])?;
    cp.eventually("lb3 gets lb1's address", |cp| {
        lb_ip(cp, "lb3").as_deref() == Some(lb1.as_str())
    })?;

    // A leader stopped with SIGTERM releases the lease: the follower leads.
    cp.eventually("the restarted replica ready", |_| {
        scrape(cp, &replicas[first], "/readyz").is_some()
    })?;
    let stopping = Instant::now();
    process::stop(replicas[second].pid, GRACE);
    cp.eventually("the follower leads after a graceful stop", |cp| {
        holder(cp).as_deref() == Some(restarted.as_str())
    })?;
    let handover = stopping.elapsed();
    weir_tests::figure!(
        "operator: leader elected {:.1} s after start; pod CIDR per node {:.0} ms; failover after \
         SIGKILL {:.1} s (lease {LEASE_DURATION_S} s), new node assigned {:.1} s after the kill; \
         handover after SIGTERM {:.2} s; GC of 1,000 stale identities {:.1} s (grace 2 s, pass 1 s)",
        elected.as_secs_f64(),
        per_node.as_secs_f64() * 1000.0,
        failover.as_secs_f64(),
        after_failover.as_secs_f64(),
        handover.as_secs_f64(),
        gc_1000.as_secs_f64()
    );
    Ok(())
}

/// A namespace `lb` with a LoadBalancer Service of each name.
fn lb_services(names: &[&str]) -> String {
    let mut yaml = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: lb\n---\n".to_string();
    for name in names {
        yaml += &format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: lb\n\
             spec:\n  type: LoadBalancer\n  selector: {{app: {name}}}\n  \
             ports:\n  - {{port: 80, protocol: TCP}}\n---\n"
        );
    }
    yaml
}

/// The Service's LoadBalancer ingress address.
fn lb_ip(cp: &SealedControlPlane, name: &str) -> Option<String> {
    cp.kubectl(&[
        "get",
        "service",
        name,
        "-n",
        "lb",
        "-o",
        "jsonpath={.status.loadBalancer.ingress[0].ip}",
    ])
    .ok()
    .filter(|ip| !ip.is_empty())
}

const GC_OBJECTS: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: gc
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: default
  namespace: gc
automountServiceAccountToken: false
---
apiVersion: v1
kind: Pod
metadata:
  name: kept
  namespace: gc
spec:
  automountServiceAccountToken: false
  containers:
  - name: main
    image: weir.invalid/idle
---
apiVersion: weir.io/v1
kind: WeirIdentity
metadata:
  name: \"70001\"
spec:
  securityLabels:
    \"k8s:app\": kept
---
apiVersion: weir.io/v1
kind: WeirIdentity
metadata:
  name: \"70002\"
spec:
  securityLabels:
    \"k8s:app\": unused
---
apiVersion: weir.io/v1
kind: WeirEndpoint
metadata:
  name: kept
  namespace: gc
spec:
  identity: 70001
  nodeName: n1
  addresses: {ipv4: 10.244.0.10}
---
apiVersion: weir.io/v1
kind: WeirEndpoint
metadata:
  name: gone
  namespace: gc
spec:
  identity: 70001
  nodeName: n1
  addresses: {ipv4: 10.244.0.11}
";
