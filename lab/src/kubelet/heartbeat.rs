//! The node's heartbeats, as kubelet sends them: its Lease in
//! `kube-node-lease` renewed every [`LEASE_RENEW`] (what the node lifecycle
//! controller watches) and its Ready condition posted at start and every
//! [`STATUS_REPORT`]. A node whose daemon stops is marked Unknown by
//! kube-controller-manager once `--node-monitor-grace-period` passes.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

/// kubelet's defaults (`nodeLeaseDurationSeconds` 40, renewed at a quarter).
const LEASE_DURATION_S: i32 = 40;
const LEASE_RENEW: Duration = Duration::from_secs(10);
const STATUS_REPORT: Duration = Duration::from_secs(60);
const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Renews `node`'s Lease and Ready condition until aborted; failures are
/// logged and retried at the next beat.
pub async fn run(client: Client, node: String) {
    let mut lease = tokio::time::interval(LEASE_RENEW);
    let mut status = tokio::time::interval(STATUS_REPORT);
    loop {
        tokio::select! {
            _ = lease.tick() => {
                if let Err(e) = renew_lease(&client, &node).await {
                    eprintln!("kubelet {node}: lease: {e:#}");
                }
            }
            _ = status.tick() => {
                if let Err(e) = post_ready(&client, &node).await {
                    eprintln!("kubelet {node}: node status: {e:#}");
                }
            }
        }
    }
}

/// Creates the node's Lease (owned by its Node, so it goes with it) or
/// renews it.
async fn renew_lease(client: &Client, node: &str) -> Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let now = MicroTime(Timestamp::now());
    let Some(_) = leases.get_opt(node).await? else {
        let owner = Api::<Node>::all(client.clone())
            .get(node)
            .await
            .with_context(|| format!("node {node}"))?;
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(node.to_string()),
                namespace: Some(LEASE_NAMESPACE.into()),
                owner_references: Some(vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: node.to_string(),
                    uid: owner.metadata.uid.unwrap_or_default(),
                    ..OwnerReference::default()
                }]),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(node.to_string()),
                lease_duration_seconds: Some(LEASE_DURATION_S),
                renew_time: Some(now),
                ..LeaseSpec::default()
            }),
        };
        leases.create(&PostParams::default(), &lease).await?;
        return Ok(());
    };
    let renew = json!({"spec": {"renewTime": now}});
    leases
        .patch(node, &PatchParams::default(), &Patch::Merge(&renew))
        .await?;
    Ok(())
}

/// Posts the Ready condition with a fresh heartbeat (its transition time
/// moves only when it was not Ready).
async fn post_ready(client: &Client, node: &str) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let current = nodes.get(node).await?;
    let was_ready = current
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .filter(|c| c.status == "True");
    let now = Time(Timestamp::now());
    let transition = was_ready
        .and_then(|c| c.last_transition_time)
        .unwrap_or_else(|| now.clone());
    let status = json!({"status": {"conditions": [{
        "type": "Ready",
        "status": "True",
        "reason": "KubeletReady",
        "message": "weir-lab kubelet is posting ready status",
        "lastHeartbeatTime": now,
        "lastTransitionTime": transition,
    }]}});
    nodes
        .patch_status(node, &PatchParams::default(), &Patch::Strategic(&status))
        .await?;
    Ok(())
}
