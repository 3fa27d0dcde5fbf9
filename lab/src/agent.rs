//! The node agents: starting one (and waiting until its API serves),
//! restarting it over its state and pins, and talking to it the way a user
//! does (the `weir` CLI) or a monitoring system does (its /metrics).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::state::{Identities, NodeRecord};
use crate::topology::{
    flow_export_file, hubble_socket, CLUSTER_CIDR, HUBBLE_METRICS, METRICS_PORT, NODE_DEVICE,
    SERVICE_EXTERNAL_PREFIX,
};
use crate::{etcd, process, Lab};
use weir_tests::netns;

const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(20);

/// When set (`bpf` or `legacy`), the agents start with `--host-routing`
/// and that value (the pod-to-pod benchmark compares both); else with the
/// agent's default.
pub const HOST_ROUTING_ENV: &str = "WEIR_LAB_HOST_ROUTING";

/// `native` or `tunnel`: the lab's routing mode (`--routing-mode` of its
/// agents), read when a lab comes up; native when unset. The suites of the
/// connectivity matrix, NetworkPolicy and services run in both.
pub const ROUTING_MODE_ENV: &str = "WEIR_LAB_ROUTING_MODE";

/// The underlay links' MTU (default 1500), read when a lab comes up: the
/// tunnel suite lowers it to check the pods' MTU and large transfers.
pub const UNDERLAY_MTU_ENV: &str = "WEIR_LAB_UNDERLAY_MTU";

/// `on`, or a comma-separated list of non-masquerade prefixes: the agents
/// masquerade pods' connections out of the cluster
/// (`--enable-ipv4-masquerade`, `--non-masquerade-cidr`); read when a lab
/// comes up. Off when unset.
pub const MASQUERADE_ENV: &str = "WEIR_LAB_MASQUERADE";

/// `on`: a dual-stack lab (IPv6 underlay addresses, an IPv6 pod CIDR per
/// node, every pod with an IPv4 and an IPv6 address); read when a lab
/// comes up. IPv4 only when unset.
pub const DUAL_STACK_ENV: &str = "WEIR_LAB_DUAL_STACK";

/// When set to `off`, the agents start without the flow export file (as
/// the DaemonSet in deploy/ runs them): the pod-to-pod benchmark's
/// `--flow-export off` measures the agents a user deploys.
pub const FLOW_EXPORT_ENV: &str = "WEIR_LAB_FLOW_EXPORT";

impl Lab {
    /// Starts `node`'s agent and waits until its API socket accepts
    /// connections; returns its pid.
    pub(crate) fn start_agent(&self, node: &NodeRecord) -> Result<u32> {
        let mut args = vec![
            "--node-name".to_string(),
            node.name.clone(),
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
            "--hubble-socket".into(),
            hubble_socket(node).display().to_string(),
            "--prometheus-address".into(),
            format!("{}:{METRICS_PORT}", node.underlay_ip),
            "--hubble-metrics".into(),
            HUBBLE_METRICS.into(),
            "--socket-lb-cgroup".into(),
            node.cgroup.display().to_string(),
            "--cluster-cidr".into(),
            CLUSTER_CIDR.into(),
            "--external-ip-cidr".into(),
            SERVICE_EXTERNAL_PREFIX.into(),
        ];
        if std::env::var_os(FLOW_EXPORT_ENV).is_none_or(|v| v != "off") {
            // Every flow, as JSON lines, as a log shipper would take them.
            args.push("--hubble-export-file-path".into());
            args.push(flow_export_file(node).display().to_string());
        }
        if let Some(non_masquerade) = &self.state.masquerade {
            args.push("--enable-ipv4-masquerade".into());
            for cidr in non_masquerade {
                args.extend(["--non-masquerade-cidr".into(), cidr.clone()]);
            }
        }
        if self.state.routing == crate::state::Routing::Tunnel {
            args.extend(["--routing-mode".into(), "tunnel".into()]);
        }
        if let Some(routing) = std::env::var_os(HOST_ROUTING_ENV) {
            args.push("--host-routing".into());
            args.push(routing.to_string_lossy().into_owned());
        }
        // The lab's etcd, over TLS with its client certificate, in kvstore
        // mode (CRD mode shares nothing through it).
        if self.state.identities == Identities::Kvstore {
            args.extend(["--etcd-endpoints".into(), etcd::endpoint()]);
            args.extend(self.etcd_pki().agent_args());
        }
        match &self.state.control_plane {
            // Its own kubeconfig (the agents' ServiceAccount identity);
            // identities as the lab was brought up (kvstore by default).
            Some(cp) => {
                let kubeconfig = self.dir.join(&node.name).join("kubeconfig");
                std::fs::copy(cp.agent_kubeconfig(), &kubeconfig)
                    .with_context(|| format!("write {}", kubeconfig.display()))?;
                args.extend(["--k8s".into(), "--kubeconfig".into()]);
                args.push(kubeconfig.display().to_string());
                args.extend([
                    "--identity-allocation-mode".into(),
                    self.state.identities.flag().into(),
                ]);
                // The pod CIDR weir-operator assigned (the lab waited for
                // it), and routes to the other nodes' pod CIDRs from their
                // node records.
                args.extend([
                    "--ipam".into(),
                    "cluster-pool".into(),
                    // For the relay.
                    "--hubble-address".into(),
                    format!("{}:{}", node.underlay_ip, crate::operator::HUBBLE_PORT),
                ]);
                if self.state.routing == crate::state::Routing::Native {
                    args.push("--auto-direct-node-routes".into());
                }
            }
            None => {
                args.extend(["--pod-cidr".into(), node.pod_cidr.clone()]);
                if !node.pod_cidr_v6.is_empty() {
                    args.extend(["--pod-cidr-v6".into(), node.pod_cidr_v6.clone()]);
                }
                args.push("--manifests-dir".into());
                args.push(self.manifests_dir().display().to_string());
            }
        }
        if let Some(ipv6) = node.underlay_ipv6 {
            args.extend(["--node-ipv6".into(), ipv6.to_string()]);
        }
        if self.state.dual_stack {
            args.extend([
                "--service-cidr-v6".into(),
                crate::topology::SERVICE_CIDR_V6.into(),
                "--cluster-cidr-v6".into(),
                crate::topology::CLUSTER_CIDR_V6.into(),
                "--external-ip-cidr-v6".into(),
                crate::topology::SERVICE_EXTERNAL_PREFIX_V6.into(),
            ]);
        }
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

    /// Kills `node`'s agent with SIGKILL (no shutdown path runs, as in a
    /// crash or an OOM kill) and waits until it is gone. The pinned maps and
    /// program attachments stay; `revive_agent` starts it again.
    pub fn kill_agent(&mut self, node: &str) -> Result<()> {
        let index = self.node_index(node)?;
        process::kill_now(self.state.nodes[index].agent_pid)?;
        self.state.nodes[index].agent_pid = 0;
        self.state.save(&self.dir)
    }

    /// Starts `node`'s agent again (same state, same pins) after
    /// `kill_agent`, returning once its API socket accepts connections.
    pub fn revive_agent(&mut self, node: &str) -> Result<()> {
        let index = self.node_index(node)?;
        if process::alive(self.state.nodes[index].agent_pid) {
            bail!("the agent of {node} is running");
        }
        let pid = self.start_agent(&self.state.nodes[index])?;
        self.state.nodes[index].agent_pid = pid;
        self.state.save(&self.dir)
    }

    pub(crate) fn node_index(&self, node: &str) -> Result<usize> {
        self.state
            .nodes
            .iter()
            .position(|n| n.name == node)
            .with_context(|| format!("no node {node}"))
    }

    /// Runs the `weir` CLI (built beside the agent) against `node`'s agent:
    /// `weir --socket <its API socket> ARGS`. `observe` takes the node's
    /// Observer socket with `--server` ([`hubble_socket`]).
    pub fn weir(&self, node: &str, args: &[&str]) -> Result<std::process::Output> {
        let node = self.node(node)?;
        std::process::Command::new(self.binaries.weir())
            .arg("--socket")
            .arg(&node.api_socket)
            .args(args)
            .output()
            .context("run weir")
    }

    /// GET /metrics of `node`'s agent (from inside the node's namespace).
    pub fn scrape_metrics(&self, node: &str) -> Result<String> {
        self.agent_http_get(node, "/metrics")
    }

    /// True if `node`'s agent answers /readyz with 200 (every reconcile
    /// step ok); false if it answers otherwise or not at all.
    pub fn agent_ready(&self, node: &str) -> bool {
        self.agent_http_get(node, "/readyz")
            .is_ok_and(|response| response.starts_with("HTTP/1.1 200"))
    }

    /// The whole HTTP response of GET `path` from `node`'s agent (its
    /// metrics address, from inside the node's namespace).
    fn agent_http_get(&self, node: &str, path: &str) -> Result<String> {
        use std::io::{Read, Write};
        let node = self.node(node)?;
        let address = std::net::SocketAddr::from((node.underlay_ip, METRICS_PORT));
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        netns::run_in(&node.netns, move || -> Result<String> {
            let mut stream =
                std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            stream.write_all(request.as_bytes())?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok(response)
        })?
    }
}
