//! A pod whose sandbox exists while its CNI ADD has yet to succeed, as
//! kubelet holds a pod while the runtime retries ADD: the agent-kill fault
//! adds one while the node's agent is down. [`Lab::begin_pod`] publishes
//! the manifest and creates the network namespace, [`PendingPod::add`]
//! retries ADD (on any thread) while the plugin answers with the transient
//! code 11, and [`Lab::finish_pod`] starts the pod's server and records it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::manifest::Pod;
use crate::pods::{new_container_id, POD_IFNAME};
use crate::state::{NodeRecord, PodRecord, Sandbox};
use crate::topology::pod_netns;
use crate::{cni, Lab};
use weir_tests::netns;

/// The CNI error code for a transient condition (the agent unreachable):
/// the runtime retries ADD.
const CNI_TRY_AGAIN_LATER: u64 = 11;

pub struct PendingPod {
    pod: Pod,
    node: NodeRecord,
    netns: String,
    container_id: String,
    config: serde_json::Value,
    plugin: PathBuf,
}

/// How a retried ADD went.
#[derive(Clone, Debug)]
pub struct Added {
    pub addresses: cni::PodAddresses,
    /// ADDs that failed with the transient code before one succeeded.
    pub transient_failures: u32,
    /// When the successful ADD returned.
    pub at: Instant,
}

impl PendingPod {
    /// Invokes CNI ADD every `interval` while it fails with the transient
    /// code, for at most `limit`; any other failure ends it.
    pub fn add(&self, interval: Duration, limit: Duration) -> Result<Added> {
        let pod_netns_path = netns::path(&self.netns).display().to_string();
        let call = cni::Invocation {
            plugin: &self.plugin,
            node_netns: &self.node.netns,
            command: "ADD",
            container_id: &self.container_id,
            pod_netns: &pod_netns_path,
            ifname: POD_IFNAME,
            pod_namespace: &self.pod.namespace,
            pod_name: &self.pod.name,
            config: &self.config,
        };
        let deadline = Instant::now() + limit;
        let mut transient_failures = 0;
        loop {
            let outcome = cni::invoke(&call)?;
            if outcome.success {
                return Ok(Added {
                    addresses: cni::add_result_addresses(&outcome.stdout)?,
                    transient_failures,
                    at: Instant::now(),
                });
            }
            let code = serde_json::from_str::<serde_json::Value>(&outcome.stdout)
                .ok()
                .and_then(|error| error["code"].as_u64());
            if code != Some(CNI_TRY_AGAIN_LATER) || Instant::now() > deadline {
                bail!(
                    "CNI ADD for {}: {} {}",
                    self.pod.namespaced_name(),
                    outcome.stdout.trim(),
                    outcome.stderr.trim()
                );
            }
            transient_failures += 1;
            std::thread::sleep(interval);
        }
    }
}

impl Lab {
    /// Publishes `pod` (a new pod with a nodeName) and creates its
    /// sandbox; ADD is left to [`PendingPod::add`].
    pub fn begin_pod(&mut self, pod: &Pod) -> Result<PendingPod> {
        if self.state.pod(&pod.namespaced_name().to_string()).is_some() {
            bail!("pod {} exists", pod.namespaced_name());
        }
        let node = match self.api_access() {
            Some(access) => {
                self.publish_pod(&access, pod)?;
                self.wait_bound(&access, pod)?
            }
            None => {
                let node = self.schedule(pod)?;
                self.write_pod_manifest(pod, &node.name)?;
                node
            }
        };
        let netns_name = pod_netns(&self.state.name, &pod.namespace, &pod.name);
        netns::delete(&netns_name)?;
        netns::add(&netns_name)?;
        let config = serde_json::from_slice(&std::fs::read(&node.cni_config)?)
            .context("the node's CNI configuration")?;
        Ok(PendingPod {
            pod: pod.clone(),
            node,
            netns: netns_name,
            container_id: new_container_id()?,
            config,
            plugin: self.binaries.cni.clone(),
        })
    }

    /// Starts the server of a pod whose ADD succeeded and records it.
    pub fn finish_pod(&mut self, pending: PendingPod, added: &Added) -> Result<()> {
        let cgroup = pending.node.cgroup.join(format!(
            "pod-{}-{}",
            pending.pod.namespace, pending.pod.name
        ));
        std::fs::create_dir_all(&cgroup)
            .with_context(|| format!("create cgroup {}", cgroup.display()))?;
        let server_pid = self.start_pod_server(&pending.pod, &pending.netns, &cgroup)?;
        let record = PodRecord {
            namespace: pending.pod.namespace.clone(),
            name: pending.pod.name.clone(),
            labels: pending.pod.labels.clone(),
            node: pending.node.name.clone(),
            netns: pending.netns,
            container_id: pending.container_id,
            ip: added.addresses.ipv4,
            ipv6: added.addresses.ipv6,
            ports: pending.pod.ports.clone(),
            server_pid,
            cgroup,
            sandbox: Sandbox::Lab,
            uid: String::new(),
        };
        if self.api_access().is_some() {
            self.report_running(&record)?;
        }
        self.state.pods.push(record);
        self.state.save(&self.dir)
    }
}
