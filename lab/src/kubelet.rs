//! The kubelet's part on the control plane: for a Pod the API server holds,
//! wait until the scheduler binds it, run its sandbox on that node (CNI ADD,
//! the pod's servers: `pods`), and report it through the status
//! subresource (podIP(s), hostIP, phase Running, Ready once it serves) as
//! that node's kubelet (`system:node:<name>`, under the Node authorizer).
//! Deletion as kubelet does it: the API delete is graceful (the server sets
//! deletionTimestamp), the EndpointSlice controller marks the pod's
//! endpoints terminating and the agents act on it, then the sandbox goes
//! (server stopped, CNI DEL, namespace removed) and the final delete with
//! grace period 0 removes the object.
//!
//! It is driven by the lab's own calls (`apply`, `delete`, `begin_pod`),
//! synchronously, so `lab apply` returns once the pods serve; a kubelet
//! daemon per node watching `spec.nodeName` would replace it.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Pod as ApiPod;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use crate::api::{self, resource, ApiAccess};
use crate::manifest::Pod;
use crate::server_apply::{self, POD_IMAGE};
use crate::state::{NodeRecord, PodRecord};
use crate::Lab;

/// The kubelet's field manager for pod status.
const FIELD_MANAGER: &str = "weir-lab-kubelet";
const BIND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the EndpointSlice controller may take to mark a deleted pod's
/// endpoints terminating.
const TERMINATING_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a deleted pod that backs a service stays terminating (and
/// serving) before it stops: time for the agents to act on the slice.
const TERMINATION_GRACE: Duration = Duration::from_millis(300);
const POLL: Duration = Duration::from_millis(50);

impl Lab {
    /// Access to the API server as the lab's kubelet, in control-plane mode.
    pub(crate) fn api_access(&self) -> Option<ApiAccess> {
        self.state.control_plane.as_ref().map(ApiAccess::admin)
    }

    /// Creates (or updates) the Pod object of `pod` through the API, as a
    /// user's `kubectl apply` would, once its namespace can take pods.
    pub(crate) fn publish_pod(&self, access: &ApiAccess, pod: &Pod) -> Result<()> {
        let document = server_apply::Document {
            what: format!("pod/{}", pod.namespaced_name()),
            value: server_apply::pod_document(pod),
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

    /// Runs `pods` (already created through the API) as kubelet: bound,
    /// sandbox and servers, status (as the node's kubelet). The records are
    /// kept in the state.
    pub(crate) async fn kubelet_run(&mut self, client: &Client, pods: &[Pod]) -> Result<()> {
        let mut kubelets: HashMap<String, Client> = HashMap::new();
        for pod in pods {
            let node = self.bound_node(client, pod).await?;
            // Blocks this (the call's own) thread while the sandbox starts.
            let record = self.create_pod(pod, &node)?;
            self.state.pods.push(record.clone());
            self.state.save(&self.dir)?;
            if !kubelets.contains_key(&node.name) {
                let kubelet = self.kubelet_client(&node.name).await?;
                kubelets.insert(node.name.clone(), kubelet);
            }
            report_status(&kubelets[&node.name], &record, node.underlay_ip).await?;
        }
        Ok(())
    }

    /// Deletes the pod `key` as kubelet does; false if the lab runs no such
    /// pod and the API holds none.
    pub(crate) fn kubelet_delete(&mut self, access: &ApiAccess, key: &str) -> Result<bool> {
        access.run(|client| async move { self.kubelet_delete_with(&client, key).await })
    }

    pub(crate) async fn kubelet_delete_with(&mut self, client: &Client, key: &str) -> Result<bool> {
        let (namespace, name) = key.split_once('/').context("pod key namespace/name")?;
        let pods: Api<ApiPod> = Api::namespaced(client.clone(), namespace);
        let existed = match pods.delete(name, &DeleteParams::default()).await {
            Ok(_) => true,
            Err(kube::Error::Api(status)) if status.code == 404 => false,
            Err(e) => return Err(e).context(format!("delete pod {key}")),
        };
        if existed && wait_endpoints_terminating(client, namespace, name).await? {
            tokio::time::sleep(TERMINATION_GRACE).await;
        }
        let Some(index) = self.state.pods.iter().position(|p| p.key() == key) else {
            // An object no kubelet of the lab runs: removed as the admin.
            if existed {
                final_delete(client, namespace, name).await?;
            }
            return Ok(existed);
        };
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

/// A running pod's status, as kubelet reports it: its addresses, phase
/// Running and Ready (it serves: `start_pod_server` waited for that).
async fn report_status(client: &Client, record: &PodRecord, host_ip: Ipv4Addr) -> Result<()> {
    let condition = |kind: &str| json!({"type": kind, "status": "True"});
    let ip = record.ip.to_string();
    let status = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "status": {
            "phase": "Running",
            "hostIP": host_ip.to_string(),
            "podIP": ip,
            "podIPs": [{"ip": ip}],
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
