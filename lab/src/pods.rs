//! Pods, played as kubelet plays them: scheduled to a node, their manifest
//! published before the sandbox exists (the agents learn the labels first),
//! a network namespace wired by `weir-cni` ADD, a server on every declared
//! port, ready once it serves; deleted with a grace period, CNI DEL and the
//! namespace removed.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::apply::Applied;
use crate::manifest::Pod;
use crate::state::{NodeRecord, PodRecord, Sandbox};
use crate::topology::pod_netns;
use crate::{cni, process, Lab};
use weir_tests::netns;

/// The pod's interface, as kubelet names it.
pub(crate) const POD_IFNAME: &str = "eth0";
const POD_READY_TIMEOUT: Duration = Duration::from_secs(10);

impl Lab {
    pub(crate) fn apply_pod(&mut self, pod: &Pod) -> Result<Applied> {
        let key = pod.namespaced_name().to_string();
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

    pub(crate) fn write_pod_manifest(&self, pod: &Pod, node: &str) -> Result<()> {
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
                "metadata": crate::apply::annotated(
                    serde_json::json!({
                        "name": pod.name,
                        "namespace": pod.namespace,
                        "labels": pod.labels,
                    }),
                    pod.policy_audit_mode,
                ),
                "spec": {"nodeName": node, "containers": [{"name": "main", "ports": ports}]},
            }),
        )
    }

    /// The pod's nodeName, or the node with the fewest pods.
    pub(crate) fn schedule(&self, pod: &Pod) -> Result<NodeRecord> {
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

    /// The pod's sandbox on `node`: network namespace, CNI ADD, servers.
    pub(crate) fn create_pod(&self, pod: &Pod, node: &NodeRecord) -> Result<PodRecord> {
        let netns_name = pod_netns(&self.state.name, &pod.namespace, &pod.name);
        let container_id = new_container_id()?;
        netns::delete(&netns_name)?; // a leftover of a crash
        netns::add(&netns_name)?;
        let config: serde_json::Value = serde_json::from_slice(&std::fs::read(&node.cni_config)?)?;
        let config = cni::with_port_mappings(config, &pod.ports);
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
        let addresses = match cni::add(&call) {
            Ok(addresses) => addresses,
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
                ip: addresses.ipv4,
                ipv6: addresses.ipv6,
                ports: pod.ports.clone(),
                server_pid,
                cgroup,
                sandbox: Sandbox::Lab,
                uid: String::new(),
            }),
            Err(e) => {
                let _ = weir_tests::cgroup::remove_tree(&cgroup);
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
    pub(crate) fn start_pod_server(
        &self,
        pod: &Pod,
        netns_name: &str,
        cgroup: &Path,
    ) -> Result<u32> {
        let mut args = pod_server_args(pod);
        if self.state.dual_stack {
            // One socket per port for both families (IPv4-mapped).
            args.extend(["--bind".into(), "::".into()]);
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

    /// Deletes one pod the way kubelet does: stop it, CNI DEL, remove its
    /// network namespace. Returns false if there was no such pod.
    pub fn delete_pod(&mut self, key: &str) -> Result<bool> {
        if let Some(access) = self.api_access() {
            return self.kubelet_delete(&access, key);
        }
        let Some(index) = self.state.pods.iter().position(|p| p.key() == key) else {
            return Ok(false);
        };
        let pod = self.state.pods[index].clone();
        // As the endpoint-slice controller does on a deletion timestamp:
        // publish the pod terminating (no new connections), give the
        // agents time to act on it, then stop it.
        if self.sync_endpoint_slices(&BTreeSet::from([pod.key()]))? {
            std::thread::sleep(crate::kubelet::TERMINATION_GRACE);
        }
        self.stop_sandbox(&pod)?;
        self.remove_manifest(&format!("pods/{}/{}.yaml", pod.namespace, pod.name))?;
        self.state.pods.remove(index);
        self.state.save(&self.dir)?;
        self.sync_endpoint_slices(&BTreeSet::new())?;
        Ok(true)
    }

    /// Ends a pod's sandbox: its server stopped, CNI DEL, its network
    /// namespace and cgroup removed.
    pub(crate) fn stop_sandbox(&self, pod: &PodRecord) -> Result<()> {
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
        weir_tests::cgroup::remove_tree(&pod.cgroup)
    }
}

/// The pod server's arguments: its identity and a server on each declared
/// port (also the container's `args` on a real node).
pub(crate) fn pod_server_args(pod: &Pod) -> Vec<String> {
    let mut args = vec!["--identity".to_string(), pod.namespaced_name().to_string()];
    for port in &pod.ports {
        args.push(format!("--{}", port.protocol.name().to_ascii_lowercase()));
        args.push(port.port.to_string());
    }
    args
}

/// 64 hex characters, like a container runtime's ids.
pub(crate) fn new_container_id() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("read /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
