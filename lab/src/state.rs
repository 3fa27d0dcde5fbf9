//! The lab's record of what it made, kept as JSON in the lab directory so
//! that every `weir-lab` invocation (and `lab down` after a crash) knows
//! the nodes, pods and processes. `--output json` prints these shapes.

use std::net::Ipv4Addr;
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
    pub pod_cidr: String,
    pub agent_pid: u32,
    pub api_socket: PathBuf,
    pub bpffs_dir: PathBuf,
    pub state_dir: PathBuf,
    pub cni_config: PathBuf,
    /// The node's cgroup (socket LB is attached here; its pods' and host
    /// clients' processes live below it).
    #[serde(default)]
    pub cgroup: PathBuf,
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
    pub ports: Vec<ContainerPort>,
    pub server_pid: u32,
    /// The pod's cgroup, below its node's.
    #[serde(default)]
    pub cgroup: PathBuf,
}

impl PodRecord {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        NamespacedName::new(&self.namespace, &self.name).to_string()
    }
}

impl LabState {
    pub fn file(dir: &Path) -> PathBuf {
        dir.join("lab.json")
    }

    pub fn load(dir: &Path) -> Result<LabState> {
        let path = Self::file(dir);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("no lab at {} (run `lab up` first)", dir.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is corrupt", path.display()))
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = Self::file(dir);
        let tmp = dir.join("lab.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }

    pub fn node(&self, name: &str) -> Option<&NodeRecord> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn pod(&self, key: &str) -> Option<&PodRecord> {
        self.pods.iter().find(|p| p.key() == key)
    }
}
