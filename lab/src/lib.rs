//! The lab: a small Kubernetes cluster on one machine.
//!
//! Nodes are network namespaces joined by an underlay bridge (in a namespace
//! of its own), each running a real `weir-agent` with its own pod CIDR,
//! bpffs pin directory and state directory. By default a real control plane
//! (kube-apiserver with its etcd, kube-controller-manager, kube-scheduler)
//! runs on the underlay and the agents watch it (`--k8s`); the lab plays
//! the kubelet, as a daemon per node that runs the pods bound to it. Pods
//! are network namespaces created by invoking `weir-cni` exactly as a
//! container runtime would, each running a small server on its declared
//! container ports that answers with its `namespace/name`.
//! On the control plane, weir-operator (two replicas, one Lease) gives
//! each node its pod CIDR (`--ipam cluster-pool`) and collects garbage.
//! Cross-node pod traffic is natively routed over the underlay (each node
//! has a route to every other node's pod CIDR: the agents install them
//! from each other's node records, `--auto-direct-node-routes`). Nothing in
//! the lab routes to the machine's own network. Without the control plane
//! (`--manifest-dir`) the agents read a directory of manifests the lab
//! writes, the lab gives the pod CIDRs and routes, schedules pods and
//! derives EndpointSlices.
//!
//! State lives in `/run/weir-lab/<lab>/lab.json`; `down` also works from
//! names alone, after a crash.
//!
//! The modules, in the order a lab comes up: [`topology`] (names and
//! addresses), `underlay` (bridge, node links, routes), `etcd`,
//! [`control_plane`] (kube-apiserver and its peers), [`operator`]
//! (weir-operator's replicas), `world` (the outside
//! world), `agent` (one per node), [`apply`] (manifests: through the API
//! server with [`api`] and [`server_apply`], or into the manifest
//! directory), `kubelet` (the kubelet daemons on the control plane, and
//! the lab's side of them), `pods` (a pod's sandbox) and [`services`] (the endpoint-slice controller's part
//! on the manifest directory); `lifecycle` brings a lab up and down.
//! [`probe`] and [`client`] reach into a running lab, [`testing`] makes a
//! lab for one test, [`rbac`] sets the audit log against deploy/'s roles.
//! [`load`] is traffic a fault must not disturb and
//! [`agent_kill`] the agent-kill fault, shared by its suite and benchmark.

mod agent;
pub mod agent_kill;
pub mod api;
pub mod apply;
mod binaries;
pub mod client;
pub mod cni;
pub mod control_plane;
pub mod dns;
pub mod e2e;
pub mod etcd;
mod kubelet;
mod lifecycle;
pub mod load;
pub mod operator;
pub mod pending_pod;
mod pods;
pub mod probe;
pub mod process;
pub mod rbac;
pub mod real_node;
pub mod sealed;
pub mod server_apply;
pub mod services;
pub mod state;
pub mod testing;
pub mod topology;
mod underlay;
mod world;

use std::path::PathBuf;

use anyhow::{Context, Result};

pub use agent::{
    DUAL_STACK_ENV, FLOW_EXPORT_ENV, HOST_ROUTING_ENV, MASQUERADE_ENV, ROUTING_MODE_ENV,
    UNDERLAY_MTU_ENV,
};
pub use apply::Applied;
pub use binaries::{Binaries, KubeBinaries, KUBE_BIN_ENV};
pub use client::ClientResult;
pub use kubelet::run_daemon as run_kubelet;
pub use lifecycle::{Options, Source};
pub use state::{Identities, IpFamily, Routing};
use state::{LabState, NodeRecord, PodRecord};
pub use topology::{
    flow_export_file, hubble_socket, lab_cgroup, lab_dir, CLUSTER_CIDR, HUBBLE_METRICS, LAB_ROOT,
    METRICS_PORT, WORLD_ADDRESSES, WORLD_PREFIX,
};
pub use weir_agent::cluster::manifest;

/// A running lab.
pub struct Lab {
    dir: PathBuf,
    state: LabState,
    binaries: Binaries,
}

impl Lab {
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

    /// The Kubernetes control plane, if the lab was brought up with one.
    pub fn control_plane(&self) -> Result<&control_plane::ControlPlane> {
        self.state.control_plane.as_ref().with_context(|| {
            format!(
                "lab {} runs no control plane (it was brought up with --manifest-dir)",
                self.state.name
            )
        })
    }

    /// Reads again the pods the kubelet daemons run (after pods were made
    /// or deleted behind the lab's back, e.g. with kubectl).
    pub fn reload_pods(&mut self) -> Result<()> {
        self.state.reload_kubelet_pods(&self.dir)
    }

    pub fn pods(&self) -> &[PodRecord] {
        &self.state.pods
    }

    pub fn pod(&self, key: &str) -> Result<&PodRecord> {
        self.state
            .pod(key)
            .with_context(|| format!("no pod {key} in lab {}", self.state.name))
    }

    /// The directory of manifests the agents read without a control plane
    /// (`--manifest-dir`).
    pub fn manifests_dir(&self) -> PathBuf {
        self.dir.join("manifests")
    }

    fn node(&self, name: &str) -> Result<&NodeRecord> {
        self.state
            .node(name)
            .with_context(|| format!("no node {name}"))
    }
}
