//! `WeirNode`: one per Kubernetes node, named after it, as CiliumNode. The
//! agent of the node publishes its addresses and health; its pod CIDRs are
//! assigned by the operator (or copied from `Node.spec.podCIDRs` with
//! `--ipam kubernetes`). Other agents route to those CIDRs and weir-relay
//! finds its peers here.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A node's addresses and pod CIDRs.
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema,
)]
#[kube(
    group = "weir.io",
    version = "v1",
    kind = "WeirNode",
    doc = "One node's addresses, pod CIDRs and agent health.",
    status = "WeirNodeStatus",
    shortname = "wn",
    category = "weir",
    printcolumn = r#"{"name": "InternalIP", "type": "string", "jsonPath": ".spec.addresses[?(@.type==\"InternalIP\")].ip"}"#,
    printcolumn = r#"{"name": "Pod CIDR", "type": "string", "description": "The first pod CIDR", "jsonPath": ".spec.podCIDRs[0]"}"#,
    printcolumn = r#"{"name": "Health", "type": "string", "jsonPath": ".status.health.state"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct WeirNodeSpec {
    /// The node's addresses, as `Node.status.addresses`.
    #[serde(default)]
    pub addresses: Vec<NodeAddress>,
    /// The CIDRs pod addresses on this node come from (at most one per
    /// family), as `Node.spec.podCIDRs`.
    #[serde(default, rename = "podCIDRs")]
    #[schemars(with = "Vec<String>")]
    pub pod_cidrs: Vec<IpNetwork>,
}

/// One address of the node.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct NodeAddress {
    #[serde(rename = "type")]
    pub address_type: NodeAddressType,
    pub ip: IpAddr,
}

/// Kubernetes' node address types that carry an IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum NodeAddressType {
    InternalIP,
    ExternalIP,
}

/// What the node's agent reports about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WeirNodeStatus {
    #[serde(default)]
    pub health: NodeHealth,
}

/// The agent's health, refreshed by its heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeHealth {
    pub state: HealthState,
    /// Why, when not healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// RFC 3339 time of the agent's last report; a reader treats a node
    /// whose heartbeat is old as unknown, whatever `state` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<String>,
}

/// The agent's own verdict on its node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum HealthState {
    #[default]
    Unknown,
    Healthy,
    /// The datapath is loaded but something is failing (see `message`).
    Degraded,
}

#[cfg(test)]
mod tests;
