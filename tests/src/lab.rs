//! The lab: a small Kubernetes-like cluster on one machine.
//!
//! Nodes are network namespaces joined by an underlay bridge (in a namespace
//! of its own), each running a real `weir-agent` with its own pod CIDR,
//! bpffs pin directory and state directory. Pods are network namespaces
//! created from Pod manifests by invoking `weir-cni` exactly as a container
//! runtime would, each running a small server on its declared container
//! ports that answers with its `namespace/name`. Cross-node pod traffic is
//! natively routed over the underlay (each node has a route to every other
//! node's pod CIDR). Nothing in the lab routes to the machine's own network.
//!
//! State lives in `/run/weir-lab/<lab>/lab.json`; `down` also works from
//! names alone, after a crash.

pub mod client;
pub use client::ClientResult;
mod cni;
pub mod probe;
pub mod process;
pub mod services;
pub mod state;
pub mod testing;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::netns;
use manifest::{Namespace, Object, Pod};
use state::{LabState, NodeRecord, PodRecord};
pub use weir_agent::cluster::manifest;

/// Where labs keep their state.
pub const LAB_ROOT: &str = "/run/weir-lab";
/// Every node's pod CIDR is 10.244.<node index>.0/24.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
const UNDERLAY_PREFIX: [u8; 3] = [10, 77, 0];
/// The lab's etcd listens here, on the underlay bridge (reachable from every
/// node namespace and from nothing else).
const ETCD_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const ETCD_CLIENT_PORT: u16 = 2379;
/// Each agent serves /metrics on its node's underlay address at this port.
pub const METRICS_PORT: u16 = 9962;
const ETCD_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// The lab's "outside world": a namespace on the underlay at this address,
/// serving on WORLD_ADDRESSES (documentation prefixes, never routed beyond
/// the lab), reached from the nodes through a route for WORLD_PREFIX.
const WORLD_UNDERLAY_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 200);
pub const WORLD_PREFIX: &str = "203.0.113.0/24";
pub const WORLD_ADDRESSES: [Ipv4Addr; 2] = [
    Ipv4Addr::new(203, 0, 113, 10),
    Ipv4Addr::new(203, 0, 113, 20),
];
const POD_IFNAME: &str = "eth0";
const NODE_DEVICE: &str = "eth0";
const MTU: u32 = 1500;
const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(20);
const POD_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a deleted pod that backs a service is published terminating
/// before it stops: a few reconcile ticks of the agents.
const TERMINATION_GRACE: Duration = Duration::from_millis(300);

/// The programs the lab runs.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub agent: PathBuf,
    pub cni: PathBuf,
    pub pod_server: PathBuf,
    /// `weir-lab-client`: runs inside a pod's netns and cgroup.
    pub client: PathBuf,
}

impl Binaries {
    /// The workspace's binaries next to the running executable (a test binary
    /// in target/*/deps or a binary in target/*).
    pub fn locate() -> Result<Binaries> {
        let exe = std::env::current_exe()?;
        let mut dir = exe
            .parent()
            .context("executable has a directory")?
            .to_path_buf();
        if dir.ends_with("deps") {
            dir.pop();
        }
        let find = |name: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            if !path.is_file() {
                bail!(
                    "{} not found: build the workspace first (cargo xtask build)",
                    path.display()
                );
            }
            Ok(path)
        };
        Ok(Binaries {
            agent: find("weir-agent")?,
            cni: find("weir-cni")?,
            pod_server: find("weir-lab-pod")?,
            client: find("weir-lab-client")?,
        })
    }
}

/// A running lab.
pub struct Lab {
    dir: PathBuf,
    state: LabState,
    binaries: Binaries,
}

/// What `apply` did to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Created(String),
    Configured(String),
    Unchanged(String),
}

impl std::fmt::Display for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Applied::Created(what) => write!(f, "{what} created"),
            Applied::Configured(what) => write!(f, "{what} configured"),
            Applied::Unchanged(what) => write!(f, "{what} unchanged"),
        }
    }
}

/// A node's Observer API socket (beside its agent API socket).
pub fn hubble_socket(node: &NodeRecord) -> PathBuf {
    node.api_socket.with_file_name("hubble.sock")
}

pub fn lab_dir(name: &str) -> PathBuf {
    Path::new(LAB_ROOT).join(name)
}

/// The lab's cgroup: `<cgroup v2 root>/weir-lab/<lab>`, a directory per
/// node below it (socket LB attachment), a directory per pod below that.
pub fn lab_cgroup(name: &str) -> Result<PathBuf> {
    Ok(crate::cgroup::cgroup2_root()?.join("weir-lab").join(name))
}

fn underlay_netns(lab: &str) -> String {
    format!("{lab}-ul")
}

fn node_ip(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        UNDERLAY_PREFIX[0],
        UNDERLAY_PREFIX[1],
        UNDERLAY_PREFIX[2],
        10 + index as u8,
    )
}

fn pod_cidr(index: usize) -> String {
    format!("10.244.{index}.0/24")
}

fn sh(args: &[&str]) -> Result<String> {
    netns::run(std::process::Command::new("ip").args(args))
}

impl Lab {
    /// Brings up `nodes` nodes. Fails if a lab of that name exists.
    pub fn up(
        name: &str,
        nodes: usize,
        binaries: Binaries,
        progress: &dyn Fn(&str),
    ) -> Result<Lab> {
        if !(1..=200).contains(&nodes) {
            bail!("a lab has 1 to 200 nodes, not {nodes}");
        }
        let dir = lab_dir(name);
        if LabState::file(&dir).exists() {
            bail!("lab {name} is already up (run `lab down` first)");
        }
        std::fs::create_dir_all(&dir)?;
        let mut lab = Lab {
            dir,
            state: LabState {
                name: name.to_string(),
                ..LabState::default()
            },
            binaries,
        };
        match lab.build(nodes, progress) {
            Ok(()) => Ok(lab),
            Err(e) => {
                let _ = Lab::down(name);
                Err(e)
            }
        }
    }

    fn build(&mut self, nodes: usize, progress: &dyn Fn(&str)) -> Result<()> {
        let name = self.state.name.clone();
        let underlay = underlay_netns(&name);
        progress(&format!("underlay {underlay}"));
        netns::add(&underlay)?;
        sh(&["-n", &underlay, "link", "add", "br0", "type", "bridge"])?;
        sh(&["-n", &underlay, "link", "set", "br0", "up"])?;
        sh(&[
            "-n",
            &underlay,
            "addr",
            "add",
            &format!("{ETCD_IP}/24"),
            "dev",
            "br0",
        ])?;
        progress(&format!("etcd on {ETCD_IP}:{ETCD_CLIENT_PORT}"));
        self.state.etcd_pid = self.start_etcd(&underlay)?;
        std::fs::create_dir_all(self.manifests_dir())?;
        self.state.save(&self.dir)?;
        self.build_world(&underlay, nodes, progress)?;

        for index in 1..=nodes {
            let node = format!("n{index}");
            let ns = format!("{name}-{node}");
            progress(&format!(
                "node {node}: namespace {ns}, underlay {}",
                node_ip(index)
            ));
            netns::add(&ns)?;
            sh(&[
                "-n",
                &underlay,
                "link",
                "add",
                &node,
                "type",
                "veth",
                "peer",
                "name",
                NODE_DEVICE,
                "netns",
                &ns,
            ])?;
            sh(&["-n", &underlay, "link", "set", &node, "master", "br0", "up"])?;
            sh(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", node_ip(index)),
                "dev",
                NODE_DEVICE,
            ])?;
            sh(&["-n", &ns, "link", "set", NODE_DEVICE, "up"])?;
            sh(&[
                "-n",
                &ns,
                "route",
                "add",
                WORLD_PREFIX,
                "via",
                &WORLD_UNDERLAY_IP.to_string(),
                "dev",
                NODE_DEVICE,
            ])?;
            for other in (1..=nodes).filter(|o| *o != index) {
                sh(&[
                    "-n",
                    &ns,
                    "route",
                    "add",
                    &pod_cidr(other),
                    "via",
                    &node_ip(other).to_string(),
                    "dev",
                    NODE_DEVICE,
                ])?;
            }
            let node_dir = self.dir.join(&node);
            std::fs::create_dir_all(&node_dir)?;
            let cgroup = lab_cgroup(&name)?.join(&node);
            std::fs::create_dir_all(cgroup.join("host"))
                .with_context(|| format!("create cgroup {}", cgroup.display()))?;
            let api_socket = node_dir.join("agent.sock");
            let cni_config = node_dir.join("cni.json");
            std::fs::write(
                &cni_config,
                serde_json::to_vec_pretty(&cni::network_config(&api_socket, MTU))?,
            )?;
            let mut record = NodeRecord {
                name: node.clone(),
                netns: ns,
                underlay_ip: node_ip(index),
                pod_cidr: pod_cidr(index),
                agent_pid: 0,
                api_socket,
                bpffs_dir: PathBuf::from(format!("/sys/fs/bpf/{name}-{node}")),
                state_dir: node_dir.join("state"),
                cni_config,
                cgroup,
            };
            progress(&format!(
                "node {node}: starting weir-agent (pod CIDR {})",
                record.pod_cidr
            ));
            record.agent_pid = self.start_agent(&record)?;
            self.state.nodes.push(record);
            self.state.save(&self.dir)?;
        }
        Ok(())
    }

    /// A namespace outside the cluster on the underlay, holding the world
    /// addresses with a server on port 80 (TCP and UDP) that answers
    /// `world/<address>`; it routes the pod CIDRs back to their nodes.
    fn build_world(&mut self, underlay: &str, nodes: usize, progress: &dyn Fn(&str)) -> Result<()> {
        let world = format!("{}-world", self.state.name);
        progress(&format!("outside world {world}: {WORLD_PREFIX}"));
        netns::add(&world)?;
        sh(&[
            "-n", underlay, "link", "add", "world", "type", "veth", "peer", "name", "eth0",
            "netns", &world,
        ])?;
        sh(&[
            "-n", underlay, "link", "set", "world", "master", "br0", "up",
        ])?;
        sh(&[
            "-n",
            &world,
            "addr",
            "add",
            &format!("{WORLD_UNDERLAY_IP}/24"),
            "dev",
            "eth0",
        ])?;
        for address in WORLD_ADDRESSES {
            sh(&[
                "-n",
                &world,
                "addr",
                "add",
                &format!("{address}/32"),
                "dev",
                "lo",
            ])?;
        }
        sh(&["-n", &world, "link", "set", "eth0", "up"])?;
        for index in 1..=nodes {
            sh(&[
                "-n",
                &world,
                "route",
                "add",
                &pod_cidr(index),
                "via",
                &node_ip(index).to_string(),
            ])?;
        }
        for address in WORLD_ADDRESSES {
            let args = vec![
                "--identity".to_string(),
                format!("world/{address}"),
                "--bind".into(),
                address.to_string(),
                "--tcp".into(),
                "80".into(),
                "--udp".into(),
                "80".into(),
            ];
            let log = self.dir.join(format!("world-{address}.log"));
            process::spawn_detached(&world, &self.binaries.pod_server, &args, &log)?;
        }
        Ok(())
    }

    /// A probe target standing for the outside-world server at `address`.
    pub fn world_target(&self, address: Ipv4Addr) -> PodRecord {
        PodRecord {
            namespace: "world".into(),
            name: address.to_string(),
            labels: Default::default(),
            node: String::new(),
            netns: format!("{}-world", self.state.name),
            container_id: String::new(),
            ip: address,
            ports: Vec::new(),
            server_pid: 0,
            cgroup: PathBuf::new(),
        }
    }

    /// Runs `weir-lab-client` inside a pod (its network namespace and
    /// cgroup, so socket LB applies as to the pod's own clients).
    pub fn pod_client(&self, pod: &str, target: &str, count: u32) -> Result<Vec<ClientResult>> {
        let pod = self.pod(pod)?;
        client::run(
            &self.binaries.client,
            &pod.netns,
            Some(&pod.cgroup),
            target,
            count,
        )
    }

    /// Runs `weir-lab-client` as a host process of `node` (its network
    /// namespace, a cgroup below the node's).
    pub fn node_client(&self, node: &str, target: &str, count: u32) -> Result<Vec<ClientResult>> {
        let node = self
            .state
            .node(node)
            .with_context(|| format!("no node {node}"))?;
        client::run(
            &self.binaries.client,
            &node.netns,
            Some(&node.cgroup.join("host")),
            target,
            count,
        )
    }

    /// Runs `weir-lab-client` in the outside world (no socket LB: its
    /// packets reach the nodes as any external client's do).
    pub fn world_client(&self, target: &str, count: u32) -> Result<Vec<ClientResult>> {
        let world = format!("{}-world", self.state.name);
        client::run(&self.binaries.client, &world, None, target, count)
    }

    /// Runs the `weir` CLI (built beside the agent) against `node`'s agent:
    /// `weir --socket <its API socket> ARGS`. `observe` takes the node's
    /// Observer socket with `--server` ([`hubble_socket`]).
    pub fn weir(&self, node: &str, args: &[&str]) -> Result<std::process::Output> {
        let node = self
            .state
            .node(node)
            .with_context(|| format!("no node {node}"))?;
        std::process::Command::new(self.binaries.agent.with_file_name("weir"))
            .arg("--socket")
            .arg(&node.api_socket)
            .args(args)
            .output()
            .context("run weir")
    }

    /// GET /metrics of `node`'s agent (from inside the node's namespace).
    pub fn scrape_metrics(&self, node: &str) -> Result<String> {
        use std::io::{Read, Write};
        let node = self
            .state
            .node(node)
            .with_context(|| format!("no node {node}"))?;
        let address = std::net::SocketAddr::from((node.underlay_ip, METRICS_PORT));
        netns::run_in(&node.netns, move || -> Result<String> {
            let mut stream =
                std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok(response)
        })?
    }

    /// Routes `prefix` from the outside world to `node`, as an upstream
    /// router does for an external or load-balancer IP announced by a node.
    pub fn route_from_world(&self, prefix: &str, node: &str) -> Result<()> {
        let node = self
            .state
            .node(node)
            .with_context(|| format!("no node {node}"))?;
        let world = format!("{}-world", self.state.name);
        sh(&[
            "-n",
            &world,
            "route",
            "replace",
            prefix,
            "via",
            &node.underlay_ip.to_string(),
        ])?;
        Ok(())
    }

    /// The directory of manifests every agent reads (the lab's "API server").
    pub fn manifests_dir(&self) -> PathBuf {
        self.dir.join("manifests")
    }

    fn start_etcd(&self, underlay: &str) -> Result<u32> {
        let name = format!("{}-etcd", self.state.name);
        let client = format!("http://{ETCD_IP}:{ETCD_CLIENT_PORT}");
        let peer = "http://127.0.0.1:2380".to_string();
        let args = vec![
            "--name".to_string(),
            name.clone(),
            "--data-dir".into(),
            self.dir.join("etcd").display().to_string(),
            "--listen-client-urls".into(),
            client.clone(),
            "--advertise-client-urls".into(),
            client,
            "--listen-peer-urls".into(),
            peer.clone(),
            "--initial-advertise-peer-urls".into(),
            peer.clone(),
            "--initial-cluster".into(),
            format!("{name}={peer}"),
        ];
        let log = self.dir.join("etcd.log");
        let etcd = std::path::Path::new("/usr/bin/etcd");
        let pid = process::spawn_detached(underlay, etcd, &args, &log)?;
        let deadline = Instant::now() + ETCD_READY_TIMEOUT;
        while Instant::now() < deadline {
            let up = netns::run_in(underlay, || {
                std::net::TcpStream::connect_timeout(
                    &std::net::SocketAddr::from((ETCD_IP, ETCD_CLIENT_PORT)),
                    Duration::from_millis(200),
                )
                .is_ok()
            })?;
            if up {
                return Ok(pid);
            }
            if !process::alive(pid) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        process::stop(pid, Duration::from_secs(1));
        bail!(
            "etcd did not start; its log ({}):\n{}",
            log.display(),
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    }

    fn start_agent(&self, node: &NodeRecord) -> Result<u32> {
        let args = vec![
            "--node-name".to_string(),
            node.name.clone(),
            "--pod-cidr".into(),
            node.pod_cidr.clone(),
            "--state-dir".into(),
            node.state_dir.display().to_string(),
            "--bpffs-dir".into(),
            node.bpffs_dir.display().to_string(),
            "--api-socket".into(),
            node.api_socket.display().to_string(),
            "--device".into(),
            NODE_DEVICE.into(),
            "--node-ip".into(),
            node.underlay_ip.to_string(),
            "--etcd-endpoints".into(),
            format!("http://{ETCD_IP}:{ETCD_CLIENT_PORT}"),
            "--manifests-dir".into(),
            self.manifests_dir().display().to_string(),
            "--hubble-socket".into(),
            hubble_socket(node).display().to_string(),
            "--prometheus-address".into(),
            format!("{}:{METRICS_PORT}", node.underlay_ip),
            "--socket-lb-cgroup".into(),
            node.cgroup.display().to_string(),
        ];
        let _ = std::fs::remove_file(&node.api_socket);
        let log = self.dir.join(&node.name).join("agent.log");
        let pid = process::spawn_detached(&node.netns, &self.binaries.agent, &args, &log)?;
        let deadline = Instant::now() + AGENT_READY_TIMEOUT;
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&node.api_socket).is_ok() {
                return Ok(pid);
            }
            if !process::alive(pid) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let tail = std::fs::read_to_string(&log).unwrap_or_default();
        process::stop(pid, Duration::from_secs(1));
        bail!(
            "weir-agent on {} did not become ready; its log ({}):\n{}",
            node.name,
            log.display(),
            tail.lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        )
    }

    /// Opens a lab brought up earlier.
    pub fn open(name: &str, binaries: Binaries) -> Result<Lab> {
        let dir = lab_dir(name);
        let state = LabState::load(&dir)?;
        Ok(Lab {
            dir,
            state,
            binaries,
        })
    }

    pub fn state(&self) -> &LabState {
        &self.state
    }

    pub fn pods(&self) -> &[PodRecord] {
        &self.state.pods
    }

    pub fn pod(&self, key: &str) -> Result<&PodRecord> {
        self.state
            .pod(key)
            .with_context(|| format!("no pod {key} in lab {}", self.state.name))
    }

    /// Stops the agent of `node` and starts it again (same state, same pins).
    pub fn restart_agent(&mut self, node: &str) -> Result<()> {
        let index = self
            .state
            .nodes
            .iter()
            .position(|n| n.name == node)
            .with_context(|| format!("no node {node}"))?;
        process::stop(self.state.nodes[index].agent_pid, Duration::from_secs(5));
        let pid = self.start_agent(&self.state.nodes[index])?;
        self.state.nodes[index].agent_pid = pid;
        self.state.save(&self.dir)
    }

    /// Applies manifests: namespaces first, then pods, in file order.
    pub fn apply(&mut self, objects: &[Object]) -> Result<Vec<Applied>> {
        validate_policies(objects)?;
        let mut report = Vec::new();
        for object in objects {
            if let Object::Namespace(ns) = object {
                report.push(self.apply_namespace(ns)?);
            }
        }
        for object in objects {
            if let Object::Pod(pod) = object {
                report.push(self.apply_pod(pod)?);
            }
        }
        for object in objects {
            if let Object::Policy(policy) = object {
                report.push(self.apply_policy(policy)?);
            }
        }
        for object in objects {
            match object {
                Object::Service(service) => report.push(self.apply_document(
                    &format!(
                        "services/{}/{}.yaml",
                        service.object.namespace, service.object.name
                    ),
                    format!(
                        "service/{}/{}",
                        service.object.namespace, service.object.name
                    ),
                    &service.document,
                )?),
                Object::EndpointSlice(slice) => report.push(self.apply_document(
                    &user_slice_file(&slice.object),
                    format!(
                        "endpointslice/{}/{}",
                        slice.object.namespace, slice.object.name
                    ),
                    &slice.document,
                )?),
                _ => {}
            }
        }
        self.sync_endpoint_slices(&BTreeSet::new())?;
        Ok(report)
    }

    /// Writes an object's document as the agents' source.
    fn apply_document(
        &self,
        file: &str,
        what: String,
        document: &serde_yaml_ng::Value,
    ) -> Result<Applied> {
        let document: serde_json::Value = serde_json::to_value(document)?;
        let path = self.manifests_dir().join(file);
        let existed = path.exists();
        let unchanged = existed
            && std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_yaml_ng::from_str::<serde_json::Value>(&t).ok())
                .as_ref()
                == Some(&document);
        if unchanged {
            return Ok(Applied::Unchanged(what));
        }
        self.write_manifest(file, &document)?;
        Ok(if existed {
            Applied::Configured(what)
        } else {
            Applied::Created(what)
        })
    }

    /// Brings the derived EndpointSlices to the lab's Services and pods
    /// (`terminating` pods are published as terminating). Returns whether
    /// anything changed.
    pub fn sync_endpoint_slices(&self, terminating: &BTreeSet<String>) -> Result<bool> {
        let source = weir_agent::cluster::manifest_dir::ManifestDir::new(&self.manifests_dir());
        let manifests = source.read()?;
        let services: Vec<weir_lb::Service> = manifests.services.into_values().collect();
        let pods = services::pod_infos(&self.state, terminating);
        let slices = weir_lb::derive_endpoint_slices(&services, &pods);
        let mut changed = false;
        let mut wanted = BTreeSet::new();
        for slice in &slices {
            let file = services::slice_file(slice);
            let document = services::slice_document(slice);
            let path = self.manifests_dir().join(&file);
            let current = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_yaml_ng::from_str::<serde_json::Value>(&t).ok());
            if current.as_ref() != Some(&document) {
                self.write_manifest(&file, &document)?;
                changed = true;
            }
            wanted.insert(self.manifests_dir().join(file));
        }
        let derived = self.manifests_dir().join(services::DERIVED_DIR);
        for file in yaml_files(&derived) {
            if !wanted.contains(&file) {
                std::fs::remove_file(&file)?;
                changed = true;
            }
        }
        Ok(changed)
    }

    fn write_manifest(&self, relative: &str, document: &serde_json::Value) -> Result<()> {
        let path = self.manifests_dir().join(relative);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Atomic: agents never read half a file.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_yaml_ng::to_string(document)?)?;
        std::fs::rename(&tmp, &path).with_context(|| format!("write {}", path.display()))
    }

    fn remove_manifest(&self, relative: &str) -> Result<()> {
        match std::fs::remove_file(self.manifests_dir().join(relative)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    fn apply_namespace(&mut self, ns: &Namespace) -> Result<Applied> {
        // Kubernetes labels every namespace with its name (since 1.21).
        let mut ns = ns.clone();
        ns.labels
            .insert("kubernetes.io/metadata.name".into(), ns.name.clone());
        let ns = &ns;
        self.write_manifest(
            &format!("namespaces/{}.yaml", ns.name),
            &serde_json::json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ns.name, "labels": ns.labels},
            }),
        )?;
        let what = format!("namespace/{}", ns.name);
        let result = match self.state.namespaces.iter_mut().find(|n| n.name == ns.name) {
            Some(existing) if existing == ns => Applied::Unchanged(what),
            Some(existing) => {
                *existing = ns.clone();
                Applied::Configured(what)
            }
            None => {
                self.state.namespaces.push(ns.clone());
                Applied::Created(what)
            }
        };
        self.state.save(&self.dir)?;
        Ok(result)
    }

    fn apply_pod(&mut self, pod: &Pod) -> Result<Applied> {
        let key = format!("{}/{}", pod.namespace, pod.name);
        let what = format!("pod/{key}");
        if pod.namespace != "default"
            && !self
                .state
                .namespaces
                .iter()
                .any(|n| n.name == pod.namespace)
        {
            bail!(
                "{what}: namespace {:?} not found (apply it first)",
                pod.namespace
            );
        }
        if let Some(existing) = self.state.pods.iter().find(|p| p.key() == key).cloned() {
            if pod.node.as_ref().is_some_and(|n| *n != existing.node) || pod.ports != existing.ports
            {
                bail!("{what}: nodeName and ports cannot change on a running pod; delete it first");
            }
            if existing.labels == pod.labels {
                return Ok(Applied::Unchanged(what));
            }
            self.write_pod_manifest(pod, &existing.node)?;
            if let Some(record) = self.state.pods.iter_mut().find(|p| p.key() == key) {
                record.labels = pod.labels.clone();
            }
            self.state.save(&self.dir)?;
            return Ok(Applied::Configured(what));
        }
        let node = self.schedule(pod)?;
        // The agents learn the pod's labels before its endpoint appears.
        self.write_pod_manifest(pod, &node.name)?;
        let record = match self.create_pod(pod, &node) {
            Ok(record) => record,
            Err(e) => {
                let _ = self.remove_manifest(&format!("pods/{}/{}.yaml", pod.namespace, pod.name));
                return Err(e);
            }
        };
        let created = format!("{what} on {} ({})", record.node, record.ip);
        self.state.pods.push(record);
        self.state.save(&self.dir)?;
        Ok(Applied::Created(created))
    }

    fn apply_policy(&mut self, policy: &manifest::PolicyDocument) -> Result<Applied> {
        self.apply_document(&policy_file(policy), policy.key(), &policy.document)
    }

    fn write_pod_manifest(&self, pod: &Pod, node: &str) -> Result<()> {
        let ports: Vec<serde_json::Value> = pod
            .ports
            .iter()
            .map(|p| {
                let mut port = serde_json::json!({
                    "containerPort": p.port,
                    "protocol": p.protocol.name(),
                });
                if let Some(name) = &p.name {
                    port["name"] = name.clone().into();
                }
                port
            })
            .collect();
        self.write_manifest(
            &format!("pods/{}/{}.yaml", pod.namespace, pod.name),
            &serde_json::json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod.name, "namespace": pod.namespace, "labels": pod.labels},
                "spec": {"nodeName": node, "containers": [{"name": "main", "ports": ports}]},
            }),
        )
    }

    /// The pod's nodeName, or the node with the fewest pods.
    fn schedule(&self, pod: &Pod) -> Result<NodeRecord> {
        if let Some(name) = &pod.node {
            return self.state.node(name).cloned().with_context(|| {
                format!(
                    "pod {}/{}: node {name:?} does not exist",
                    pod.namespace, pod.name
                )
            });
        }
        self.state
            .nodes
            .iter()
            .min_by_key(|n| self.state.pods.iter().filter(|p| p.node == n.name).count())
            .cloned()
            .context("the lab has no nodes")
    }

    fn pod_netns(&self, namespace: &str, name: &str) -> String {
        format!("{}-p-{namespace}-{name}", self.state.name)
    }

    fn create_pod(&self, pod: &Pod, node: &NodeRecord) -> Result<PodRecord> {
        let netns_name = self.pod_netns(&pod.namespace, &pod.name);
        netns::delete(&netns_name)?; // a leftover of a crash
        netns::add(&netns_name)?;
        let container_id = new_container_id();
        let config: serde_json::Value = serde_json::from_slice(&std::fs::read(&node.cni_config)?)?;
        let pod_netns_path = netns::path(&netns_name).display().to_string();
        let call = cni::Invocation {
            plugin: &self.binaries.cni,
            node_netns: &node.netns,
            command: "ADD",
            container_id: &container_id,
            pod_netns: &pod_netns_path,
            ifname: POD_IFNAME,
            pod_namespace: &pod.namespace,
            pod_name: &pod.name,
            config: &config,
        };
        let ip = match cni::add(&call) {
            Ok(ip) => ip,
            Err(e) => {
                let _ = netns::delete(&netns_name);
                return Err(e);
            }
        };
        let cgroup = node
            .cgroup
            .join(format!("pod-{}-{}", pod.namespace, pod.name));
        let started = std::fs::create_dir_all(&cgroup)
            .with_context(|| format!("create cgroup {}", cgroup.display()))
            .and_then(|()| self.start_pod_server(pod, &netns_name, &cgroup));
        match started {
            Ok(server_pid) => Ok(PodRecord {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                labels: pod.labels.clone(),
                node: node.name.clone(),
                netns: netns_name,
                container_id,
                ip,
                ports: pod.ports.clone(),
                server_pid,
                cgroup,
            }),
            Err(e) => {
                let _ = crate::cgroup::remove_tree(&cgroup);
                // Undo the sandbox as kubelet would: DEL, then the netns.
                let _ = cni::del(&cni::Invocation {
                    command: "DEL",
                    ..call
                });
                let _ = netns::delete(&netns_name);
                Err(e)
            }
        }
    }

    /// Starts the pod's server and waits until it serves (like a readiness
    /// probe), returning its pid.
    fn start_pod_server(&self, pod: &Pod, netns_name: &str, cgroup: &Path) -> Result<u32> {
        let mut args = vec![
            "--identity".to_string(),
            format!("{}/{}", pod.namespace, pod.name),
        ];
        for port in &pod.ports {
            args.push(format!("--{}", port.protocol.name().to_ascii_lowercase()));
            args.push(port.port.to_string());
        }
        let logs = self.dir.join("pods");
        std::fs::create_dir_all(&logs)?;
        let log = logs.join(format!("{}-{}.log", pod.namespace, pod.name));
        let ready = logs.join(format!("{}-{}.ready", pod.namespace, pod.name));
        let _ = std::fs::remove_file(&ready);
        args.push("--ready-file".into());
        args.push(ready.display().to_string());
        let server_pid = process::spawn_detached_in(
            netns_name,
            Some(cgroup),
            &self.binaries.pod_server,
            &args,
            &log,
        )?;
        // Like a readiness probe: the pod counts as created once it serves.
        let deadline = Instant::now() + POD_READY_TIMEOUT;
        while !ready.exists() {
            if Instant::now() > deadline || !process::alive(server_pid) {
                process::stop(server_pid, Duration::from_secs(1));
                bail!(
                    "pod {}/{}: server not ready: {}",
                    pod.namespace,
                    pod.name,
                    std::fs::read_to_string(&log).unwrap_or_default().trim()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(server_pid)
    }

    /// Deletes the objects named in the manifests (pods of a deleted
    /// namespace go with it).
    pub fn delete(&mut self, objects: &[Object]) -> Result<Vec<String>> {
        let mut deleted = Vec::new();
        for object in objects {
            let (file, what) = match object {
                Object::Policy(policy) => (policy_file(policy), policy.key()),
                Object::Service(service) => (
                    format!(
                        "services/{}/{}.yaml",
                        service.object.namespace, service.object.name
                    ),
                    format!(
                        "service/{}/{}",
                        service.object.namespace, service.object.name
                    ),
                ),
                Object::EndpointSlice(slice) => (
                    user_slice_file(&slice.object),
                    format!(
                        "endpointslice/{}/{}",
                        slice.object.namespace, slice.object.name
                    ),
                ),
                _ => continue,
            };
            if std::fs::remove_file(self.manifests_dir().join(file)).is_ok() {
                deleted.push(format!("{what} deleted"));
            }
        }
        for object in objects {
            let keys: Vec<String> = match object {
                Object::Pod(pod) => vec![format!("{}/{}", pod.namespace, pod.name)],
                Object::Policy(_) | Object::Service(_) | Object::EndpointSlice(_) => Vec::new(),
                Object::Namespace(ns) => self
                    .state
                    .pods
                    .iter()
                    .filter(|p| p.namespace == ns.name)
                    .map(|p| p.key())
                    .collect(),
            };
            for key in keys {
                if self.delete_pod(&key)? {
                    deleted.push(format!("pod/{key} deleted"));
                }
            }
            if let Object::Namespace(ns) = object {
                let before = self.state.namespaces.len();
                self.remove_manifest(&format!("namespaces/{}.yaml", ns.name))?;
                self.state.namespaces.retain(|n| n.name != ns.name);
                if self.state.namespaces.len() != before {
                    deleted.push(format!("namespace/{} deleted", ns.name));
                }
                self.state.save(&self.dir)?;
            }
        }
        self.sync_endpoint_slices(&BTreeSet::new())?;
        Ok(deleted)
    }

    /// Deletes one pod the way kubelet does: stop it, CNI DEL, remove its
    /// network namespace. Returns false if there was no such pod.
    pub fn delete_pod(&mut self, key: &str) -> Result<bool> {
        let Some(index) = self.state.pods.iter().position(|p| p.key() == key) else {
            return Ok(false);
        };
        let pod = self.state.pods[index].clone();
        // As the endpoint-slice controller does on a deletion timestamp:
        // publish the pod terminating (no new connections), give the
        // agents time to act on it, then stop it.
        if self.sync_endpoint_slices(&BTreeSet::from([pod.key()]))? {
            std::thread::sleep(TERMINATION_GRACE);
        }
        process::stop(pod.server_pid, Duration::from_secs(2));
        let node = self.state.node(&pod.node).context("pod's node")?.clone();
        let config: serde_json::Value = serde_json::from_slice(&std::fs::read(&node.cni_config)?)?;
        let pod_netns_path = netns::path(&pod.netns).display().to_string();
        cni::del(&cni::Invocation {
            plugin: &self.binaries.cni,
            node_netns: &node.netns,
            command: "DEL",
            container_id: &pod.container_id,
            pod_netns: &pod_netns_path,
            ifname: POD_IFNAME,
            pod_namespace: &pod.namespace,
            pod_name: &pod.name,
            config: &config,
        })?;
        netns::delete(&pod.netns)?;
        crate::cgroup::remove_tree(&pod.cgroup)?;
        self.remove_manifest(&format!("pods/{}/{}.yaml", pod.namespace, pod.name))?;
        self.state.pods.remove(index);
        self.state.save(&self.dir)?;
        self.sync_endpoint_slices(&BTreeSet::new())?;
        Ok(true)
    }

    /// Removes everything of lab `name`: processes, namespaces (and the
    /// links in them), pinned maps and links, the state directory. Works
    /// without (or with a corrupt) state file.
    pub fn down(name: &str) -> Result<()> {
        let dir = lab_dir(name);
        if let Ok(state) = LabState::load(&dir) {
            for pod in &state.pods {
                process::stop(pod.server_pid, Duration::from_secs(1));
            }
            for node in &state.nodes {
                process::stop(node.agent_pid, Duration::from_secs(3));
            }
            process::stop(state.etcd_pid, Duration::from_secs(3));
        }
        // Every pod server and client of the lab lives in its cgroup tree.
        if let Ok(cgroup) = lab_cgroup(name) {
            crate::cgroup::remove_tree(&cgroup)?;
            // The shared `weir-lab` directory goes with the last lab (this
            // fails, harmlessly, while another lab still has its tree there).
            if let Some(parent) = cgroup.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
        let prefix = format!("{name}-");
        for ns in netns::list_with_prefix(&prefix) {
            for pid in process::pids_in_netns(&ns) {
                process::stop(pid, Duration::from_secs(1));
            }
        }
        // Pods first: deleting a pod namespace removes its veth pair.
        let mut namespaces = netns::list_with_prefix(&prefix);
        namespaces.sort_by_key(|n| !n.starts_with(&format!("{name}-p-")));
        for ns in namespaces {
            netns::delete(&ns)?;
        }
        if let Ok(entries) = std::fs::read_dir("/sys/fs/bpf") {
            for entry in entries.filter_map(Result::ok) {
                if entry.file_name().to_string_lossy().starts_with(&prefix) {
                    std::fs::remove_dir_all(entry.path())?;
                }
            }
        }
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

/// Where a user-written EndpointSlice (for a Service without selector) goes.
fn user_slice_file(slice: &weir_lb::EndpointSlice) -> String {
    format!(
        "endpointslices/user/{}/{}.yaml",
        slice.namespace, slice.name
    )
}

/// Every .yaml file below `dir` (none if it does not exist).
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    files
}

/// Validates every policy with the engine the agents use, before anything
/// of the file is applied: an invalid policy is refused with its reasons.
fn validate_policies(objects: &[Object]) -> Result<()> {
    let mut problems = Vec::new();
    for object in objects {
        if let Object::Policy(policy) = object {
            let parsed = weir_policy::PolicyDocument::from_value(policy.document.clone())
                .and_then(|doc| doc.to_policy());
            if let Err(error) = parsed {
                problems.push(format!("{}: {error}", policy.key()));
            }
        }
    }
    if !problems.is_empty() {
        bail!("invalid policy, nothing applied:\n{}", problems.join("\n"));
    }
    Ok(())
}

/// Where a policy's manifest lives in the manifest directory.
fn policy_file(policy: &manifest::PolicyDocument) -> String {
    format!(
        "policies/{}/{}/{}.yaml",
        policy.kind,
        policy.namespace.as_deref().unwrap_or("_cluster"),
        policy.name
    )
}

/// 64 hex characters, like a container runtime's ids.
fn new_container_id() -> String {
    let mut bytes = [0u8; 32];
    getrandom(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .expect("read /dev/urandom");
}
