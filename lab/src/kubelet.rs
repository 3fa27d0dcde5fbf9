//! The kubelet's part on the control plane. Each node runs a kubelet
//! daemon ([`daemon`], `weir-lab kubelet --node NAME`) that watches the
//! pods bound to its node, runs their sandboxes and reports their status
//! and the node's heartbeats ([`heartbeat`]) as that node's kubelet
//! (`system:node:<name>`, under the Node authorizer). This side is what
//! the lab's own calls need: `lab apply` creates pods through the API and
//! waits until they are Running and Ready, as `kubectl apply` followed by
//! `kubectl wait` would; deletion is the API's graceful delete, which the
//! daemon ends (endpoints terminating, sandbox gone, final delete).
//!
//! Pods a test runs itself ([`Lab::begin_pod`], manifests without a
//! sandbox) carry [`daemon::EXTERNAL_SANDBOX`]; for them the lab plays the
//! kubelet's part synchronously, as before the daemons.

mod daemon;
mod heartbeat;

pub use daemon::run as run_daemon;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod as ApiPod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use crate::api::{self, resource, ApiAccess};
use crate::manifest::Pod;
use crate::server_apply::{self, POD_IMAGE};
use crate::state::{NodeRecord, PodRecord, Sandbox};
use crate::Lab;

/// The kubelet's field manager for pod status.
const FIELD_MANAGER: &str = "weir-lab-kubelet";
const BIND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `lab apply` waits for a new pod to run (bound, sandbox
/// started by its node's kubelet, Ready), and `lab delete` for a deleted
/// one to be gone.
const POD_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the EndpointSlice controller may take to mark a deleted pod's
/// endpoints terminating.
const TERMINATING_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a deleted pod that backs a service stays terminating (and
/// serving) before it stops: time for the agents to act on the slice
/// (manifest-directory mode too, where the lab publishes it terminating).
pub(crate) const TERMINATION_GRACE: Duration = Duration::from_millis(300);
const POLL: Duration = Duration::from_millis(50);
/// How long a started kubelet daemon may take to join: its node's Lease
/// renewed and its Ready condition posted.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

impl Lab {
    /// Access to the API server as the lab's kubelet, in control-plane mode.
    pub(crate) fn api_access(&self) -> Option<ApiAccess> {
        self.state.control_plane.as_ref().map(ApiAccess::admin)
    }

    /// Creates (or updates) the Pod object of `pod` through the API, as a
    /// user's `kubectl apply` would, once its namespace can take pods;
    /// marked so that no kubelet daemon runs it (its sandbox is the
    /// caller's, or none).
    pub(crate) fn publish_pod(&self, access: &ApiAccess, pod: &Pod) -> Result<()> {
        let mut value = server_apply::pod_document(pod);
        value["metadata"]["annotations"] = json!({daemon::EXTERNAL_SANDBOX: "external"});
        let document = server_apply::Document {
            what: format!("pod/{}", pod.namespaced_name()),
            value,
        };
        let namespace = pod.namespace.clone();
        access.run(move |client| async move {
            server_apply::wait_default_service_account(&client, &namespace).await?;
            server_apply::apply(&client, &[document]).await.map(drop)
        })
    }

    /// Removes the Pod object `namespace/name` at once (grace period 0):
    /// for pods whose sandbox a test runs itself.
    pub(crate) fn unpublish_pod(
        &self,
        access: &ApiAccess,
        namespace: &str,
        name: &str,
    ) -> Result<()> {
        self.final_delete(access, namespace, name)
    }

    /// Waits until the Pod of `pod` is bound to a node; that node.
    pub(crate) fn wait_bound(&self, access: &ApiAccess, pod: &Pod) -> Result<NodeRecord> {
        access.run(|client| async move { self.bound_node(&client, pod).await })
    }

    async fn bound_node(&self, client: &Client, pod: &Pod) -> Result<NodeRecord> {
        let node = bound(client, &pod.namespace, &pod.name)
            .await
            .map_err(|e| {
                let log = self
                    .state
                    .control_plane
                    .as_ref()
                    .map(|cp| cp.log("kube-scheduler"))
                    .unwrap_or_default();
                e.context(format!("kube-scheduler's log:\n{log}"))
            })?;
        self.state
            .node(&node)
            .cloned()
            .with_context(|| format!("pod {}: bound to {node:?}, not a lab node", pod.name))
    }

    /// Reports a running pod through the status subresource (see
    /// [`report_status`]), as its node's kubelet.
    pub(crate) fn report_running(&self, record: &PodRecord) -> Result<()> {
        let host_ip = self.node(&record.node)?.underlay_ip;
        let cp = self.control_plane()?;
        ApiAccess::kubelet(cp, &record.node)
            .run(|kubelet| async move { report_status(&kubelet, record, host_ip).await })
    }

    /// A client as `node`'s kubelet (`system:node:<node>`: the Node
    /// authorizer lets it write the status of pods and delete them).
    async fn kubelet_client(&self, node: &str) -> Result<Client> {
        api::client(&self.control_plane()?.kubelet_kubeconfig(node)).await
    }

    /// Waits until the kubelet daemons run `pods` (created through the
    /// API): each Ready with its address, and recorded by its daemon.
    pub(crate) async fn wait_running(&mut self, client: &Client, pods: &[Pod]) -> Result<()> {
        let started = Instant::now();
        for pod in pods {
            let api: Api<ApiPod> = Api::namespaced(client.clone(), &pod.namespace);
            let key = pod.namespaced_name().to_string();
            loop {
                let current = api
                    .get(&pod.name)
                    .await
                    .with_context(|| format!("get pod {key}"))?;
                if is_ready(&current) {
                    // Real nodes' pods have no lab record.
                    self.state.reload_kubelet_pods(&self.dir)?;
                    if self.state.real_nodes || self.state.pod(&key).is_some() {
                        break;
                    }
                }
                if started.elapsed() > POD_TIMEOUT {
                    bail!(
                        "pod {key} not running after {POD_TIMEOUT:?}: {}{}",
                        not_ready_reason(&current),
                        self.kubelet_log_tail(&current)
                    );
                }
                tokio::time::sleep(POLL).await;
            }
        }
        Ok(())
    }

    /// Waits until the kubelet daemon of `node`, started at `since`, has
    /// renewed the node's Lease and reported it Ready, as a joining node
    /// does: `lab up` returns with Ready nodes, and a restarted daemon's
    /// first heartbeat is in before the caller goes on.
    pub(crate) fn wait_joined(&self, node: &str, since: Timestamp) -> Result<()> {
        let access = self.api_access().context("no control plane")?;
        let joined = access.run(|client| async move {
            let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
            let nodes: Api<Node> = Api::all(client);
            let deadline = Instant::now() + JOIN_TIMEOUT;
            while Instant::now() < deadline {
                let renewed = leases
                    .get_opt(node)
                    .await?
                    .and_then(|l| l.spec)
                    .is_some_and(|s| {
                        s.holder_identity.as_deref() == Some(node)
                            && s.renew_time.is_some_and(|t| t.0 >= since)
                    });
                let ready = nodes
                    .get_opt(node)
                    .await?
                    .and_then(|n| n.status)
                    .is_some_and(|s| {
                        s.conditions
                            .iter()
                            .flatten()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                    });
                if renewed && ready {
                    return Ok(true);
                }
                tokio::time::sleep(POLL).await;
            }
            Ok(false)
        })?;
        if !joined {
            bail!(
                "node {node}: no Lease renewal and Ready status within {JOIN_TIMEOUT:?}{}",
                self.kubelet_log_tail_of(node)
            );
        }
        Ok(())
    }

    /// The end of the log of the kubelet daemon of `pod`'s node.
    fn kubelet_log_tail(&self, pod: &ApiPod) -> String {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
            return "; not bound to a node".into();
        };
        self.kubelet_log_tail_of(node)
    }

    /// The end of the log of `node`'s kubelet daemon.
    fn kubelet_log_tail_of(&self, node: &str) -> String {
        let log =
            std::fs::read_to_string(self.dir.join(node).join("kubelet.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("; kubelet {node}'s log ends:\n{}", tail.join("\n"))
    }

    /// Deletes the pod `key` as kubelet does; false if the lab runs no such
    /// pod and the API holds none.
    pub(crate) fn kubelet_delete(&mut self, access: &ApiAccess, key: &str) -> Result<bool> {
        access.run(|client| async move { self.kubelet_delete_with(&client, key).await })
    }

    pub(crate) async fn kubelet_delete_with(&mut self, client: &Client, key: &str) -> Result<bool> {
        let (namespace, name) = key.split_once('/').context("pod key namespace/name")?;
        let pods: Api<ApiPod> = Api::namespaced(client.clone(), namespace);
        let uid = match pods.delete(name, &DeleteParams::default()).await {
            Ok(either) => either.left().and_then(|p| p.metadata.uid),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                self.state.reload_kubelet_pods(&self.dir)?;
                return Ok(false);
            }
            Err(e) => return Err(e).context(format!("delete pod {key}")),
        };
        let external = self
            .state
            .pods
            .iter()
            .position(|p| p.key() == key && p.sandbox == Sandbox::Lab);
        let Some(index) = external else {
            // Its node's kubelet daemon ends it (or the API server did at
            // once: an unbound pod).
            wait_gone(&pods, name, uid.as_deref()).await?;
            self.state.reload_kubelet_pods(&self.dir)?;
            return Ok(true);
        };
        if wait_endpoints_terminating(client, namespace, name).await? {
            tokio::time::sleep(TERMINATION_GRACE).await;
        }
        let pod = self.state.pods[index].clone();
        self.stop_sandbox(&pod)?;
        self.state.pods.remove(index);
        self.state.save(&self.dir)?;
        final_delete(&self.kubelet_client(&pod.node).await?, namespace, name).await?;
        Ok(true)
    }

    /// Removes the Pod object at once (grace period 0).
    fn final_delete(&self, access: &ApiAccess, namespace: &str, name: &str) -> Result<()> {
        access.run(|client| async move { final_delete(&client, namespace, name).await })
    }
}

/// Waits until the Pod `namespace/name` is bound; its node's name.
async fn bound(client: &Client, namespace: &str, name: &str) -> Result<String> {
    let pods: Api<ApiPod> = Api::namespaced(client.clone(), namespace);
    let started = Instant::now();
    loop {
        let bound = pods
            .get(name)
            .await
            .with_context(|| format!("get pod {namespace}/{name}"))?
            .spec
            .and_then(|s| s.node_name);
        if let Some(node) = bound {
            return Ok(node);
        }
        if started.elapsed() > BIND_TIMEOUT {
            bail!("pod {namespace}/{name} not bound to a node after {BIND_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the Pod `name` (of `uid`) is gone from the API.
async fn wait_gone(pods: &Api<ApiPod>, name: &str, uid: Option<&str>) -> Result<()> {
    let started = Instant::now();
    loop {
        match pods.get_opt(name).await? {
            None => return Ok(()),
            Some(pod) if uid.is_some() && pod.metadata.uid.as_deref() != uid => return Ok(()),
            Some(pod) if started.elapsed() > POD_TIMEOUT => bail!(
                "pod {name} still there {POD_TIMEOUT:?} after its delete (its kubelet: {})",
                pod.spec
                    .and_then(|s| s.node_name)
                    .unwrap_or_else(|| "none".into())
            ),
            Some(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// Whether the pod is Ready with an address, as kubelet reports it.
fn is_ready(pod: &ApiPod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    status.pod_ip.is_some()
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Why a pod is not Ready, from its status.
fn not_ready_reason(pod: &ApiPod) -> String {
    let status = pod.status.as_ref();
    let phase = status
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("no phase");
    let why = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.message.clone())
        .unwrap_or_default();
    format!("{phase} {why}")
}

/// A running pod's status, as kubelet reports it: its addresses, phase
/// Running and Ready (it serves: `start_pod_server` waited for that).
async fn report_status(client: &Client, record: &PodRecord, host_ip: Ipv4Addr) -> Result<()> {
    let condition = |kind: &str| json!({"type": kind, "status": "True"});
    let ip = record.ip.to_string();
    // IPv4 first, as kubelet orders a dual-stack pod's addresses.
    let pod_ips: Vec<serde_json::Value> = std::iter::once(ip.clone())
        .chain(record.ipv6.map(|v6| v6.to_string()))
        .map(|ip| json!({ "ip": ip }))
        .collect();
    let status = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "status": {
            "phase": "Running",
            "hostIP": host_ip.to_string(),
            "podIP": ip,
            "podIPs": pod_ips,
            "conditions": [
                condition("Initialized"),
                condition("Ready"),
                condition("ContainersReady"),
                condition("PodScheduled"),
            ],
            "containerStatuses": [{
                "name": "main",
                "image": POD_IMAGE,
                "imageID": "",
                "ready": true,
                "started": true,
                "restartCount": 0,
                "state": {"running": {}},
            }],
        },
    });
    Api::<ApiPod>::namespaced(client.clone(), &record.namespace)
        .patch_status(
            &record.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&status),
        )
        .await
        .with_context(|| format!("status of pod {}", record.key()))?;
    Ok(())
}

/// The kubelet's last word on a pod: delete with grace period 0.
async fn final_delete(client: &Client, namespace: &str, name: &str) -> Result<()> {
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    match Api::<ApiPod>::namespaced(client.clone(), namespace)
        .delete(name, &now)
        .await
    {
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        done => done
            .map(drop)
            .with_context(|| format!("final delete of pod {namespace}/{name}")),
    }
}

/// Waits until no EndpointSlice in `namespace` lists pod `name` other than
/// as terminating; whether any slice listed it at all.
async fn wait_endpoints_terminating(client: &Client, namespace: &str, name: &str) -> Result<bool> {
    // v1 (1.21+) or v1beta1 (1.20): the fields read here are the same.
    let found = match resource(client, "discovery.k8s.io/v1", "EndpointSlice").await {
        Ok(found) => found,
        Err(_) => resource(client, "discovery.k8s.io/v1beta1", "EndpointSlice").await?,
    };
    let slices: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &found.0);
    let started = Instant::now();
    loop {
        let mut listed = false;
        let mut live = false;
        for slice in slices.list(&ListParams::default()).await?.items {
            let endpoints = slice.data["endpoints"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for endpoint in endpoints {
                if endpoint["targetRef"]["name"].as_str() != Some(name) {
                    continue;
                }
                listed = true;
                live |= endpoint["conditions"]["terminating"] != true;
            }
        }
        if !live {
            return Ok(listed);
        }
        if started.elapsed() > TERMINATING_TIMEOUT {
            bail!(
                "pod {namespace}/{name}: its endpoints not marked terminating after \
                 {TERMINATING_TIMEOUT:?} (is the EndpointSliceTerminatingCondition gate on?)"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}
