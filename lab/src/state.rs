//! The lab's record of what it made, kept as JSON in the lab directory so
//! that every `weir-lab` invocation (and `lab down` after a crash) knows
//! the nodes, pods and processes. `--output json` prints these shapes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::control_plane::ControlPlane;
use weir_agent::cluster::manifest::{ContainerPort, Labels, Namespace};
use weir_types::NamespacedName;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LabState {
    pub name: String,
    /// The lab's etcd (in the underlay namespace); 0 if not started.
    #[serde(default)]
    pub etcd_pid: u32,
    /// The Kubernetes control plane beside etcd, if the lab was brought up
    /// with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<ControlPlane>,
    /// How the agents share identities (on the manifest directory always
    /// through the lab's etcd).
    #[serde(default)]
    pub identities: Identities,
    /// Whether the nodes are real (kubelet, containerd, runc) rather than
    /// run by the lab's kubelet daemons.
    #[serde(default)]
    pub real_nodes: bool,
    /// How pod traffic crosses between nodes (`--routing-mode`).
    #[serde(default)]
    pub routing: Routing,
    /// BPF masquerading on the agents (`--enable-ipv4-masquerade`), with
    /// these non-masquerade prefixes; None: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masquerade: Option<Vec<String>>,
    /// The underlay links' MTU when it is not 1500.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay_mtu: Option<u32>,
    /// Dual stack (`WEIR_LAB_DUAL_STACK`): nodes with IPv6 underlay
    /// addresses and IPv6 pod CIDRs, pods with both addresses.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dual_stack: bool,
    pub nodes: Vec<NodeRecord>,
    pub namespaces: Vec<Namespace>,
    pub pods: Vec<PodRecord>,
}

/// Where the agents allocate and share identities
/// (`--identity-allocation-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Identities {
    /// In the lab's etcd (kvstore mode; the kvstore fault suites need it).
    #[default]
    Kvstore,
    /// As WeirIdentity, WeirEndpoint and WeirNode objects (CRD mode, the
    /// default of an installation); only on the control plane.
    Crd,
}

/// How the agents carry pod traffic between nodes (`--routing-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Routing {
    /// Routed on the underlay: the lab (manifest directory) or the agents
    /// (`--auto-direct-node-routes`) route each node's pod CIDR through
    /// its address.
    #[default]
    Native,
    /// VXLAN between the nodes' `weir_vxlan` devices; the underlay has no
    /// route to any pod CIDR but through a node's own tunnel.
    Tunnel,
}

impl Routing {
    /// The agent's `--routing-mode` value.
    pub fn flag(self) -> &'static str {
        match self {
            Routing::Native => "native",
            Routing::Tunnel => "tunnel",
        }
    }

    /// The mode `WEIR_LAB_ROUTING_MODE` asks for (`native` or `tunnel`),
    /// else native.
    pub fn from_env() -> Result<Routing> {
        match std::env::var(crate::ROUTING_MODE_ENV) {
            Err(_) => Ok(Routing::Native),
            Ok(value) => <Routing as clap::ValueEnum>::from_str(&value, true).map_err(|_| {
                anyhow::anyhow!(
                    "{}={value:?}: expected native or tunnel",
                    crate::ROUTING_MODE_ENV
                )
            }),
        }
    }
}

impl Identities {
    /// The agent's `--identity-allocation-mode` value.
    pub fn flag(self) -> &'static str {
        match self {
            Identities::Kvstore => "kvstore",
            Identities::Crd => "crd",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    /// Network namespace of the node.
    pub netns: String,
    /// Address on the underlay.
    pub underlay_ip: Ipv4Addr,
    /// IPv6 address on the underlay (dual stack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay_ipv6: Option<Ipv6Addr>,
    pub pod_cidr: String,
    /// Its IPv6 pod CIDR in a dual-stack lab (else empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod_cidr_v6: String,
    pub agent_pid: u32,
    pub api_socket: PathBuf,
    pub bpffs_dir: PathBuf,
    pub state_dir: PathBuf,
    pub cni_config: PathBuf,
    /// The node's cgroup (socket LB is attached here; its pods' and host
    /// clients' processes live below it).
    #[serde(default)]
    pub cgroup: PathBuf,
    /// The node's kubelet (the lab's daemon, or a real kubelet on a real
    /// node), on the control plane (0: none).
    #[serde(default)]
    pub kubelet_pid: u32,
    /// A real node's containerd (0: not a real node).
    #[serde(default)]
    pub containerd_pid: u32,
    /// A real node's cluster DNS server (`weir-lab dns`; 0: none).
    #[serde(default)]
    pub dns_pid: u32,
}

impl NodeRecord {
    /// Where the node's kubelet daemon keeps the records of the pods it
    /// runs (only it writes there; [`LabState::load`] reads them).
    pub fn kubelet_records(&self, lab_dir: &Path) -> PathBuf {
        lab_dir.join(&self.name).join("kubelet-pods.json")
    }
}

/// An IP family, for what a dual-stack lab does over either.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpFamily {
    V4,
    V6,
}

/// Who runs a pod's sandbox, and so keeps its record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sandbox {
    /// The lab's own call (every pod on the manifest directory; on the
    /// control plane, pods a test runs itself): recorded in `lab.json`.
    #[default]
    Lab,
    /// The node's kubelet daemon, which watches the pods bound to its
    /// node: recorded in its node's file ([`NodeRecord::kubelet_records`]).
    Kubelet,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PodRecord {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub node: String,
    pub netns: String,
    pub container_id: String,
    pub ip: Ipv4Addr,
    /// Its IPv6 address in a dual-stack lab.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
    pub ports: Vec<ContainerPort>,
    pub server_pid: u32,
    /// The pod's cgroup, below its node's.
    #[serde(default)]
    pub cgroup: PathBuf,
    #[serde(default)]
    pub sandbox: Sandbox,
    /// The Pod object's uid, on the control plane (a pod deleted and made
    /// again under its name is another pod).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

impl PodRecord {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        NamespacedName::new(&self.namespace, &self.name).to_string()
    }

    /// Its address of `family`, if it has one.
    pub fn address(&self, family: IpFamily) -> Option<IpAddr> {
        match family {
            IpFamily::V4 => Some(IpAddr::V4(self.ip)),
            IpFamily::V6 => self.ipv6.map(IpAddr::V6),
        }
    }
}

impl LabState {
    pub fn file(dir: &Path) -> PathBuf {
        dir.join("lab.json")
    }

    /// The lab's record, with the pods its kubelet daemons run.
    pub fn load(dir: &Path) -> Result<LabState> {
        let path = Self::file(dir);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("no lab at {} (run `lab up` first)", dir.display()))?;
        let mut state: LabState = serde_json::from_str(&text)
            .with_context(|| format!("{} is corrupt", path.display()))?;
        state.reload_kubelet_pods(dir)?;
        Ok(state)
    }

    /// Reads again what the kubelet daemons run (they write their files
    /// while the lab waits for a pod's status).
    pub fn reload_kubelet_pods(&mut self, dir: &Path) -> Result<()> {
        self.pods.retain(|p| p.sandbox == Sandbox::Lab);
        for node in &self.nodes {
            self.pods
                .extend(load_pod_records(&node.kubelet_records(dir))?);
        }
        // One order whoever runs them (namespace/name).
        self.pods.sort_by_key(PodRecord::key);
        Ok(())
    }

    /// Writes `lab.json` (without the kubelet daemons' pods: theirs).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut own = self.clone();
        own.pods.retain(|p| p.sandbox == Sandbox::Lab);
        write_atomically(&Self::file(dir), &serde_json::to_vec_pretty(&own)?)
    }

    pub fn node(&self, name: &str) -> Option<&NodeRecord> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn pod(&self, key: &str) -> Option<&PodRecord> {
        self.pods.iter().find(|p| p.key() == key)
    }
}

/// Pod records from `path` (none if it does not exist yet).
pub fn load_pod_records(path: &Path) -> Result<Vec<PodRecord>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).with_context(|| format!("{} is corrupt", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// Writes pod records to `path`, atomically.
pub fn save_pod_records(path: &Path, pods: &[PodRecord]) -> Result<()> {
    write_atomically(path, &serde_json::to_vec_pretty(pods)?)
}

/// Readers see the old file or the new one, never a part.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}
