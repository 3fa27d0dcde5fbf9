//! Two real `weir-agent`s in CRD mode (`--k8s`, no etcd) on one real
//! kube-apiserver (v1.20.2, Weir's CRDs from deploy/crds): a pod with the
//! same labels on each node, attached through `weir-cni` as a runtime
//! does. Both agents end up with one `WeirIdentity` for the label set, each
//! publishes its pod as a `WeirEndpoint` and its node as a `WeirNode`, and
//! each has the other's pod in its ipcache (the kernel map, read with the
//! `weir` CLI) under that identity and the other node's address. `weir
//! status` names the store in use.
//!
//! Both agents and the API server share one sealed netns (loopback only);
//! each agent has its own pins, state and sockets. A missing binary fails
//! the test: it never skips.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use weir_lab::{cni, process, Binaries};
use weir_tests::datapath::PinDir;
use weir_tests::local_agent::TempDir;
use weir_tests::netns::{self, NetNs};
use weir_tests::{names, require_root};

use support::api_server::ApiServer;

const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(30);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

const OBJECTS: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: shop}}
---
# No controller-manager makes the namespace's ServiceAccount, which
# admission looks up.
apiVersion: v1
kind: ServiceAccount
metadata: {name: default, namespace: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: web-a, namespace: shop, labels: {app: web}}
spec:
  nodeName: node-a
  automountServiceAccountToken: false
  containers: [{name: web, image: weir.invalid/web}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-b, namespace: shop, labels: {app: web}}
spec:
  nodeName: node-b
  automountServiceAccountToken: false
  containers: [{name: web, image: weir.invalid/web}]
";

/// One node's agent, a process in the API server's netns; stopped, and
/// its files removed, when dropped.
struct Agent {
    name: &'static str,
    node_ip: &'static str,
    pid: u32,
    socket: PathBuf,
    dir: TempDir,
    _pins: PinDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        process::stop(self.pid, Duration::from_secs(5));
    }
}

impl Agent {
    fn start(
        bins: &Binaries,
        server: &ApiServer,
        name: &'static str,
        pod_cidr: &str,
        node_ip: &'static str,
    ) -> Result<Agent> {
        let dir = TempDir::new(name);
        let pins = PinDir::new();
        let socket = dir.path().join("agent.sock");
        let at = |file: &str| dir.path().join(file).display().to_string();
        let args: Vec<String> = vec![
            "--node-name".into(),
            name.into(),
            "--pod-cidr".into(),
            pod_cidr.into(),
            "--node-ip".into(),
            node_ip.into(),
            "--state-dir".into(),
            at("state"),
            "--bpffs-dir".into(),
            pins.path().display().to_string(),
            "--api-socket".into(),
            socket.display().to_string(),
            "--hubble-socket".into(),
            at("hubble.sock"),
            "--kubeconfig".into(),
            server.kubeconfig().display().to_string(),
        ];
        let log = dir.path().join("agent.log");
        let pid = process::spawn_detached(server.netns(), &bins.agent, &args, &log)?;
        let agent = Agent {
            name,
            node_ip,
            pid,
            socket,
            dir,
            _pins: pins,
        };
        let started = Instant::now();
        while started.elapsed() < AGENT_READY_TIMEOUT {
            if std::os::unix::net::UnixStream::connect(&agent.socket).is_ok() {
                return Ok(agent);
            }
            if !process::alive(pid) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "{name}'s agent did not serve its API; its log:\n{}",
            agent.log()
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// `weir -o json ARGS` against this agent: its JSON values (a document,
    /// or one per line).
    fn weir(&self, bins: &Binaries, args: &[&str]) -> Result<Vec<Value>> {
        let out = netns::run(
            Command::new(bins.weir())
                .arg("--socket")
                .arg(&self.socket)
                .args(["-o", "json"])
                .args(args),
        )?;
        serde_json::Deserializer::from_str(&out)
            .into_iter::<Value>()
            .map(|value| value.context("weir -o json output"))
            .collect()
    }

    /// The identity the ipcache holds for `ip`, and the node address.
    fn ipcache_entry(&self, bins: &Binaries, ip: &str) -> Result<Option<(u64, String)>> {
        let prefix = format!("{ip}/32");
        Ok(self
            .weir(bins, &["bpf", "ipcache", "list"])?
            .into_iter()
            .find(|entry| entry["prefix"] == prefix.as_str())
            .map(|entry| {
                (
                    entry["identity"].as_u64().unwrap_or_default(),
                    entry["node_ip"].as_str().unwrap_or_default().to_string(),
                )
            }))
    }
}

/// A pod's netns with its interface attached by `weir-cni` (ADD, which
/// returns once the agent has the pod's identity and policy in force).
struct Pod {
    ns: NetNs,
    container_id: String,
    ip: String,
}

fn add_pod(bins: &Binaries, server: &ApiServer, agent: &Agent, name: &str) -> Result<Pod> {
    let ns = NetNs::new(&names::unique())?;
    let container_id = names::unique();
    let config = cni::network_config(&agent.socket, 1500);
    let pod_netns = netns::path(ns.name()).display().to_string();
    let ip = cni::add(&cni::Invocation {
        plugin: &bins.cni,
        node_netns: server.netns(),
        command: "ADD",
        container_id: &container_id,
        pod_netns: &pod_netns,
        ifname: "eth0",
        pod_namespace: "shop",
        pod_name: name,
        config: &config,
    })
    .with_context(|| format!("{}'s agent log:\n{}", agent.name, agent.log()))?;
    Ok(Pod {
        ns,
        container_id,
        ip: ip.ipv4.to_string(),
    })
}

fn del_pod(bins: &Binaries, server: &ApiServer, agent: &Agent, name: &str, pod: &Pod) {
    let config = cni::network_config(&agent.socket, 1500);
    let pod_netns = netns::path(pod.ns.name()).display().to_string();
    let _ = cni::del(&cni::Invocation {
        plugin: &bins.cni,
        node_netns: server.netns(),
        command: "DEL",
        container_id: &pod.container_id,
        pod_netns: &pod_netns,
        ifname: "eth0",
        pod_namespace: "shop",
        pod_name: name,
        config: &config,
    });
}

/// Polls `check` until it gives a value (bounded); how long it took.
fn eventually<T>(
    what: &str,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<(T, Duration)> {
    let started = Instant::now();
    let mut last = String::from("nothing yet");
    while started.elapsed() < CONVERGE_TIMEOUT {
        match check() {
            Ok(Some(value)) => return Ok((value, started.elapsed())),
            Ok(None) => {}
            Err(error) => last = format!("{error:#}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{what}: not within {CONVERGE_TIMEOUT:?} (last error: {last})")
}

/// `kubectl get KIND -o json`'s items.
fn items(server: &ApiServer, args: &[&str]) -> Result<Vec<Value>> {
    let mut full = vec!["get"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["-o", "json"]);
    let list: Value = serde_json::from_str(&server.kubectl(&full)?)?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

fn exercise(bins: &Binaries, server: &ApiServer, a: &Agent, b: &Agent) -> Result<()> {
    let pod_a = add_pod(bins, server, a, "web-a")?;
    let pod_b = add_pod(bins, server, b, "web-b")?;
    let added = Instant::now();
    let result = check(bins, server, [(a, &pod_a), (b, &pod_b)], added);
    del_pod(bins, server, a, "web-a", &pod_a);
    del_pod(bins, server, b, "web-b", &pod_b);
    result.with_context(|| format!("node-a's log:\n{}\nnode-b's log:\n{}", a.log(), b.log()))
}

/// `added`: when the last CNI ADD returned.
fn check(
    bins: &Binaries,
    server: &ApiServer,
    nodes: [(&Agent, &Pod); 2],
    added: Instant,
) -> Result<()> {
    // First (timed): each agent's kernel ipcache gets the other's pod.
    let [(a, pod_a), (b, pod_b)] = nodes;
    let mut seen = Vec::new();
    for (agent, other, other_pod) in [(a, b, pod_b), (b, a, pod_a)] {
        let (entry, _) = eventually(
            &format!("{}'s ipcache entry of {}", agent.name, other_pod.ip),
            || agent.ipcache_entry(bins, &other_pod.ip),
        )?;
        seen.push((agent, other, entry, added.elapsed()));
    }

    // One identity for app=web in shop, and both endpoints carry it.
    let (id, _) = eventually("both WeirEndpoints", || {
        let endpoints = items(server, &["weirendpoints", "-n", "shop"])?;
        let ids: Vec<u64> = endpoints
            .iter()
            .filter_map(|e| e["spec"]["identity"].as_u64())
            .collect();
        Ok((ids.len() == 2).then_some(ids))
    })?;
    assert_eq!(
        id[0], id[1],
        "the two agents' pods have different identities"
    );
    let identities = items(server, &["weiridentities", "-l", "app=web"])?;
    let names: Vec<&str> = identities
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, [id[0].to_string()], "one WeirIdentity for app=web");
    assert_eq!(
        identities[0]["spec"]["securityLabels"]["k8s:io.kubernetes.pod.namespace"],
        "shop"
    );
    // Each endpoint is owned by its Pod, written by its node.
    for (agent, pod) in nodes {
        let name = format!("web-{}", &agent.name[5..]);
        let endpoint = &items(server, &["weirendpoints", "-n", "shop"])?
            .into_iter()
            .find(|e| e["metadata"]["name"] == name.as_str())
            .context("the endpoint")?;
        assert_eq!(endpoint["spec"]["nodeName"], agent.name);
        assert_eq!(endpoint["spec"]["nodeIP"], agent.node_ip);
        assert_eq!(endpoint["spec"]["addresses"]["ipv4"], pod.ip.as_str());
        assert_eq!(endpoint["metadata"]["ownerReferences"][0]["kind"], "Pod");
    }
    let nodes_published = items(server, &["weirnodes"])?;
    assert_eq!(nodes_published.len(), 2, "{nodes_published:#?}");

    // The ipcache entries carry that identity and the other node's
    // address; each agent names its store.
    for (agent, other, entry, took) in seen {
        assert_eq!(entry, (id[0], other.node_ip.to_string()));
        weir_tests::figure!(
            "crd identities: {}'s pod in {}'s ipcache {:.0} ms after the last CNI ADD returned \
             (two agents in CRD mode on kube-apiserver v1.20.2)",
            other.name,
            agent.name,
            took.as_secs_f64() * 1e3
        );
        let status = agent.weir(bins, &["status"])?;
        let connection = status[0]["kvstore_connection"].as_str().unwrap_or_default();
        assert!(connection.starts_with("connected (crd)"), "{connection}");
    }
    Ok(())
}

#[test]
fn two_agents_in_crd_mode_share_identities_and_endpoints_through_the_api_server() {
    require_root();
    let bins = Binaries::locate().expect("the workspace's binaries");
    let server = ApiServer::start().expect("kube-apiserver with Weir's CRDs");
    server.create(OBJECTS).unwrap();
    let a = Agent::start(&bins, &server, "node-a", "10.244.1.0/24", "192.0.2.1").unwrap();
    let b = Agent::start(&bins, &server, "node-b", "10.244.2.0/24", "192.0.2.2").unwrap();
    let outcome = exercise(&bins, &server, &a, &b);
    drop((a, b));
    outcome.unwrap();
}
