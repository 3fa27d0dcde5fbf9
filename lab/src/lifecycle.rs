//! Bringing a lab up (underlay, etcd, optionally kube-apiserver, outside
//! world, then node by node, then the rest of the control plane) and
//! taking it down, also after a crash: `down` finds everything by name.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::control_plane::{ControlPlane, API_PORT};
use crate::state::{Identities, LabState, NodeRecord};
use crate::topology::{
    lab_cgroup, lab_dir, node_ip, node_ipv6, node_netns, pod_cidr, pod_cidr_v6, pod_netns_prefix,
    underlay_netns, ETCD_CLIENT_PORT, ETCD_IP,
};
use crate::{cni, process, underlay, Binaries, KubeBinaries, Lab};
use weir_tests::netns;

/// The control plane's own etcd (the agents' kvstore is the lab's etcd on
/// the same address, port 2379).
const KUBE_ETCD_CLIENT_PORT: u16 = 2381;
const KUBE_ETCD_PEER_PORT: u16 = 2382;

/// The MTU the CNI plugin gives pod interfaces.
pub(crate) const MTU: u32 = 1500;

/// Where a lab's agents read cluster state from.
pub enum Source {
    /// A directory of manifests the lab writes (`--manifests-dir`).
    ManifestDir,
    /// A Kubernetes control plane built from `kube` (`--k8s`), identities
    /// shared as `identities` says.
    ControlPlane {
        kube: KubeBinaries,
        identities: Identities,
        /// Real nodes (kubelet, containerd, runc) instead of the lab's
        /// kubelet daemons.
        real_nodes: bool,
    },
}

/// What a lab is asked for beyond its nodes and source of cluster state.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Dual stack (as `WEIR_LAB_DUAL_STACK=on`).
    pub dual_stack: bool,
}

/// Masquerading as `WEIR_LAB_MASQUERADE` asks for it: `on` (no
/// non-masquerade prefix) or the prefixes, comma-separated; None when
/// unset.
fn masquerade_from_env() -> Result<Option<Vec<String>>> {
    match std::env::var(crate::MASQUERADE_ENV) {
        Err(_) => Ok(None),
        Ok(value) if value == "on" => Ok(Some(Vec::new())),
        Ok(value) => {
            let cidrs: Vec<String> = value.split(',').map(|c| c.trim().to_string()).collect();
            for cidr in &cidrs {
                cidr.parse::<ipnetwork::Ipv4Network>().with_context(|| {
                    format!("{}: {cidr:?} is not an IPv4 prefix", crate::MASQUERADE_ENV)
                })?;
            }
            Ok(Some(cidrs))
        }
    }
}

/// Whether `WEIR_LAB_DUAL_STACK` asks for a dual-stack lab.
fn dual_stack_from_env() -> Result<bool> {
    match std::env::var(crate::DUAL_STACK_ENV) {
        Err(_) => Ok(false),
        Ok(value) if value == "on" => Ok(true),
        Ok(value) if value == "off" => Ok(false),
        Ok(value) => bail!("{}={value:?}: expected on or off", crate::DUAL_STACK_ENV),
    }
}

/// The underlay MTU `WEIR_LAB_UNDERLAY_MTU` asks for, if any.
fn underlay_mtu_from_env() -> Result<Option<u32>> {
    match std::env::var(crate::UNDERLAY_MTU_ENV) {
        Err(_) => Ok(None),
        Ok(value) => match value.parse::<u32>() {
            Ok(mtu) if (1280..=9000).contains(&mtu) => Ok(Some(mtu)),
            _ => bail!(
                "{}={value:?}: expected an MTU from 1280 to 9000",
                crate::UNDERLAY_MTU_ENV
            ),
        },
    }
}

impl Lab {
    /// Brings up `nodes` nodes. Fails if a lab of that name exists.
    pub fn up(
        name: &str,
        nodes: usize,
        binaries: Binaries,
        progress: &dyn Fn(&str),
    ) -> Result<Lab> {
        Lab::up_with(name, nodes, binaries, Source::ManifestDir, progress)
    }

    /// [`Lab::up`] on the given source of cluster state. On a control
    /// plane, kube-apiserver starts before the nodes are built (it takes
    /// seconds to serve), the controller-manager and scheduler once it
    /// serves, then every node is registered as a Ready Node and
    /// weir-operator gives it a pod CIDR.
    pub fn up_with(
        name: &str,
        nodes: usize,
        binaries: Binaries,
        source: Source,
        progress: &dyn Fn(&str),
    ) -> Result<Lab> {
        Lab::up_with_options(name, nodes, binaries, source, Options::default(), progress)
    }

    /// [`Lab::up_with`] with `options` (the `WEIR_LAB_*` variables add to
    /// them).
    pub fn up_with_options(
        name: &str,
        nodes: usize,
        binaries: Binaries,
        source: Source,
        options: Options,
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
                identities: match &source {
                    Source::ControlPlane { identities, .. } => *identities,
                    Source::ManifestDir => Identities::Kvstore,
                },
                real_nodes: matches!(
                    source,
                    Source::ControlPlane {
                        real_nodes: true,
                        ..
                    }
                ),
                routing: crate::state::Routing::from_env()?,
                underlay_mtu: underlay_mtu_from_env()?,
                masquerade: masquerade_from_env()?,
                dual_stack: options.dual_stack || dual_stack_from_env()?,
                ..LabState::default()
            },
            binaries,
        };
        let kube = match &source {
            Source::ControlPlane { kube, .. } => Some(kube),
            Source::ManifestDir => None,
        };
        match lab.build(nodes, kube, progress) {
            Ok(()) => Ok(lab),
            Err(e) => {
                let _ = Lab::down(name);
                Err(e)
            }
        }
    }

    fn build(
        &mut self,
        nodes: usize,
        kube: Option<&KubeBinaries>,
        progress: &dyn Fn(&str),
    ) -> Result<()> {
        let name = self.state.name.clone();
        progress(&format!("underlay {}", underlay_netns(&name)));
        let underlay = underlay::add(&name)?;
        progress(&format!("etcd on {ETCD_IP}:{ETCD_CLIENT_PORT}"));
        self.state.etcd_pid = self.start_etcd(&underlay)?;
        std::fs::create_dir_all(self.manifests_dir())?;
        self.state.save(&self.dir)?;
        let apiserver_started = Instant::now();
        if let Some(kube) = kube {
            progress(&format!(
                "kube-apiserver on {ETCD_IP}:{API_PORT}, its etcd on {ETCD_IP}:{KUBE_ETCD_CLIENT_PORT}"
            ));
            self.start_apiserver(&underlay, nodes, kube)?;
        }
        self.build_world(&underlay, progress)?;
        for index in 1..=nodes {
            self.add_node(index, nodes, progress)?;
        }
        // Agents in Kubernetes mode start once the API server serves Weir's
        // CRDs and their role (they list everything at start) and the
        // operator has given their nodes pod CIDRs.
        if let Some(kube) = kube {
            self.finish_control_plane(kube, apiserver_started, progress)?;
            self.start_operators(progress)?;
        }
        self.route_world_to_pods()?;
        // The lab routes IPv6 pod CIDRs where it routes IPv4 ones: without
        // a control plane in native routing (elsewhere the agents do).
        let lab_routes = self.state.control_plane.is_none()
            && self.state.routing == crate::state::Routing::Native;
        if self.state.dual_stack && lab_routes {
            self.route_pod_cidrs_v6()?;
        }
        for index in 0..self.state.nodes.len() {
            self.start_node_agent(index, progress)?;
        }
        if self.state.control_plane.is_some() {
            for index in 0..self.state.nodes.len() {
                if self.state.real_nodes {
                    self.start_real_node(index, progress)?;
                } else {
                    self.start_kubelet(index, progress)?;
                }
            }
            self.start_relay(progress)?;
        }
        Ok(())
    }

    /// Stops `node`'s kubelet daemon; its pods keep running (a fault, or
    /// an upgrade's restart).
    pub fn stop_kubelet(&mut self, node: &str) -> Result<()> {
        let index = self.node_index(node)?;
        process::stop(self.state.nodes[index].kubelet_pid, Duration::from_secs(3));
        self.state.nodes[index].kubelet_pid = 0;
        self.state.save(&self.dir)
    }

    /// Starts `node`'s kubelet daemon (again): it adopts the pods it ran
    /// and catches up with the API.
    pub fn start_kubelet_of(&mut self, node: &str) -> Result<()> {
        self.control_plane()?;
        let index = self.node_index(node)?;
        if process::alive(self.state.nodes[index].kubelet_pid) {
            bail!("node {node}'s kubelet runs");
        }
        self.start_kubelet(index, &|_| {})
    }

    /// Starts the kubelet daemon of the `index`th node (in its network
    /// namespace, as the node's kubelet), recorded in the state.
    fn start_kubelet(&mut self, index: usize, progress: &dyn Fn(&str)) -> Result<()> {
        let node = &self.state.nodes[index];
        let log = self.dir.join(&node.name).join("kubelet.log");
        let args = vec![
            "--name".to_string(),
            self.state.name.clone(),
            "kubelet".into(),
            "--node".into(),
            node.name.clone(),
        ];
        let name = node.name.clone();
        let since = k8s_openapi::jiff::Timestamp::now();
        let pid = process::spawn_detached(&node.netns, &self.binaries.lab(), &args, &log)?;
        progress(&format!(
            "node {name}: kubelet daemon (pid {pid}, log {})",
            log.display()
        ));
        self.state.nodes[index].kubelet_pid = pid;
        self.state.save(&self.dir)?;
        self.wait_joined(&name, since)
    }

    /// Starts weir-relay over the agents' Observer APIs.
    fn start_relay(&mut self, progress: &dyn Fn(&str)) -> Result<()> {
        let mut cp = self
            .state
            .control_plane
            .take()
            .context("the control plane was started")?;
        let discover = self.state.identities == Identities::Crd;
        let peers: Vec<_> = self.state.nodes.iter().map(|n| n.underlay_ip).collect();
        let started = cp.start_relay(&self.binaries.relay(), discover, &peers);
        self.state.control_plane = Some(cp.clone());
        self.state.save(&self.dir)?;
        started?;
        progress(&format!(
            "weir-relay on {}:{} and {} (peers {})",
            cp.address,
            crate::operator::RELAY_PORT,
            cp.relay_socket().display(),
            if discover {
                "from the WeirNodes"
            } else {
                "given"
            }
        ));
        Ok(())
    }

    /// Writes the control plane's credentials and starts kube-apiserver,
    /// recorded in the state (so `down` stops it) before it serves.
    fn start_apiserver(&mut self, underlay: &str, nodes: usize, kube: &KubeBinaries) -> Result<()> {
        let mut cp = ControlPlane::new(
            underlay,
            &self.dir.join("kube"),
            ETCD_IP,
            &format!("http://{ETCD_IP}:{KUBE_ETCD_CLIENT_PORT}"),
            &kube.kubectl,
        )?;
        cp.dual_stack = self.state.dual_stack;
        cp.write_credentials()?;
        let nodes: Vec<String> = (1..=nodes).map(|index| format!("n{index}")).collect();
        cp.write_kubelet_credentials(&nodes)?;
        // Recorded before it runs, so `down` stops what did start.
        self.state.control_plane = Some(cp.clone());
        let started = cp.start_etcd(KUBE_ETCD_CLIENT_PORT, KUBE_ETCD_PEER_PORT);
        self.state.control_plane = Some(cp.clone());
        started?;
        cp.start_apiserver(&kube.apiserver)?;
        self.state.control_plane = Some(cp);
        self.state.save(&self.dir)
    }

    /// Once kube-apiserver serves: the controller-manager and scheduler,
    /// and a Ready Node per lab node.
    fn finish_control_plane(
        &mut self,
        kube: &KubeBinaries,
        apiserver_started: Instant,
        progress: &dyn Fn(&str),
    ) -> Result<()> {
        let mut cp = self
            .state
            .control_plane
            .take()
            .context("kube-apiserver was started")?;
        let started = cp.start_components(kube);
        // Recorded whatever happened, so `down` stops what did start.
        self.state.control_plane = Some(cp.clone());
        self.state.save(&self.dir)?;
        let waited = started?;
        progress(&format!(
            "kube-apiserver ready {:.1} s after its start ({:.1} s waited for after the nodes), \
             kube-controller-manager and kube-scheduler started",
            apiserver_started.elapsed().as_secs_f64(),
            waited.as_secs_f64()
        ));
        let nodes: Vec<(&str, std::net::Ipv4Addr)> = self
            .state
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.underlay_ip))
            .collect();
        cp.register_nodes(&nodes)?;
        cp.apply_deploy()?;
        progress("Weir's namespace and the RBAC of agent, operator and relay (deploy/) applied");
        progress(&format!(
            "nodes registered; kubeconfig {}",
            cp.admin_kubeconfig().display()
        ));
        Ok(())
    }

    /// Starts weir-operator's replicas and waits until the leader has
    /// installed the CRDs and given every node a pod CIDR, which the nodes'
    /// records take.
    fn start_operators(&mut self, progress: &dyn Fn(&str)) -> Result<()> {
        let mut cp = self
            .state
            .control_plane
            .take()
            .context("the control plane was started")?;
        let started = Instant::now();
        let spawned = cp.start_operators(&self.binaries.operator(), self.state.dual_stack);
        // Recorded whatever happened, so `down` stops what did start.
        self.state.control_plane = Some(cp.clone());
        self.state.save(&self.dir)?;
        spawned?;
        let names: Vec<&str> = self.state.nodes.iter().map(|n| n.name.as_str()).collect();
        let assigned = cp.wait_pod_cidrs(&names, self.state.dual_stack)?;
        for node in &mut self.state.nodes {
            let cidrs = &assigned[&node.name];
            node.pod_cidr = cidrs[0].clone();
            if self.state.dual_stack {
                node.pod_cidr_v6 = cidrs[1].clone();
            }
        }
        progress(&format!(
            "weir-operator ({} replicas): CRDs installed and pod CIDRs assigned in {:.1} s ({})",
            crate::operator::REPLICAS,
            started.elapsed().as_secs_f64(),
            self.state
                .nodes
                .iter()
                .map(|n| format!("{} {} {}", n.name, n.pod_cidr, n.pod_cidr_v6)
                    .trim_end()
                    .to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        self.state.save(&self.dir)
    }

    /// Node `index` of `nodes`: its network, directories, cgroup and CNI
    /// configuration (its agent starts later: [`Self::start_node_agent`]).
    fn add_node(&mut self, index: usize, nodes: usize, progress: &dyn Fn(&str)) -> Result<()> {
        let name = self.state.name.clone();
        let node = format!("n{index}");
        progress(&format!(
            "node {node}: namespace {}, underlay {}",
            node_netns(&name, &node),
            node_ip(index)
        ));
        // The lab routes pod CIDRs only without a control plane (the agents
        // do on one) and only in native routing (in tunnel mode the
        // agents route them into their tunnels).
        let lab_routes = self.state.control_plane.is_none()
            && self.state.routing == crate::state::Routing::Native;
        let links = underlay::NodeLinks {
            nodes,
            static_pod_routes: lab_routes,
            mtu: self.state.underlay_mtu,
            dual_stack: self.state.dual_stack,
        };
        let ns = underlay::add_node(&name, &node, index, &links)?;
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
        let record = NodeRecord {
            name: node.clone(),
            netns: ns,
            underlay_ip: node_ip(index),
            underlay_ipv6: self.state.dual_stack.then(|| node_ipv6(index)),
            // On the control plane, the operator's assignment
            // ([`Self::start_operators`]).
            pod_cidr: if self.state.control_plane.is_some() {
                String::new()
            } else {
                pod_cidr(index)
            },
            pod_cidr_v6: if self.state.dual_stack && self.state.control_plane.is_none() {
                pod_cidr_v6(index)
            } else {
                String::new()
            },
            agent_pid: 0,
            api_socket,
            bpffs_dir: PathBuf::from(format!("/sys/fs/bpf/{name}-{node}")),
            state_dir: node_dir.join("state"),
            cni_config,
            cgroup,
            kubelet_pid: 0,
            containerd_pid: 0,
            dns_pid: 0,
        };
        self.state.nodes.push(record);
        self.state.save(&self.dir)
    }

    /// Routes the nodes' IPv6 pod CIDRs between them (dual stack), once
    /// every node has its CIDRs.
    fn route_pod_cidrs_v6(&self) -> Result<()> {
        let cidrs: Vec<(usize, String)> = (1..)
            .zip(&self.state.nodes)
            .map(|(index, node)| (index, node.pod_cidr_v6.clone()))
            .collect();
        if let Some((_, node)) = cidrs
            .iter()
            .zip(&self.state.nodes)
            .find(|((_, c), _)| c.is_empty())
        {
            bail!(
                "node {} has no IPv6 pod CIDR in a dual-stack lab",
                node.name
            );
        }
        for ((index, _), node) in cidrs.iter().zip(&self.state.nodes) {
            underlay::route_pod_cidrs_v6(&node.netns, *index, &cidrs)?;
        }
        Ok(())
    }

    /// Starts the agent of the `index`th node, recorded in the state.
    fn start_node_agent(&mut self, index: usize, progress: &dyn Fn(&str)) -> Result<()> {
        let record = &self.state.nodes[index];
        progress(&format!(
            "node {}: starting weir-agent (pod CIDR {}{})",
            record.name,
            record.pod_cidr,
            if self.state.control_plane.is_some() {
                ", Kubernetes mode"
            } else {
                ""
            }
        ));
        let pid = self.start_agent(record)?;
        self.state.nodes[index].agent_pid = pid;
        self.state.save(&self.dir)
    }

    /// Removes everything of lab `name`: processes, namespaces (and the
    /// links in them), pinned maps and links, the state directory. Works
    /// without (or with a corrupt) state file.
    pub fn down(name: &str) -> Result<()> {
        let dir = lab_dir(name);
        if let Ok(state) = LabState::load(&dir) {
            // The kubelets first, so that none starts a pod meanwhile.
            for node in &state.nodes {
                if state.real_nodes {
                    crate::real_node::stop(&dir, node);
                } else {
                    process::stop(node.kubelet_pid, Duration::from_secs(3));
                }
            }
            for pod in &state.pods {
                process::stop(pod.server_pid, Duration::from_secs(1));
            }
            for node in &state.nodes {
                process::stop(node.agent_pid, Duration::from_secs(3));
            }
            // A paused etcd (a fault test's outage) must run to exit.
            // It stops while the control plane does.
            if state.etcd_pid != 0 {
                let pid = nix::unistd::Pid::from_raw(state.etcd_pid as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            }
            if let Some(cp) = &state.control_plane {
                cp.stop();
            }
            process::stop(state.etcd_pid, Duration::from_secs(3));
        }
        // Every pod server and client of the lab lives in its cgroup tree.
        if let Ok(cgroup) = lab_cgroup(name) {
            weir_tests::cgroup::remove_tree(&cgroup)?;
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
        let pods = pod_netns_prefix(name);
        namespaces.sort_by_key(|n| !n.starts_with(&pods));
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
        crate::real_node::unmount_leftovers(&dir);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}
