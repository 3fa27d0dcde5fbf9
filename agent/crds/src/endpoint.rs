//! `WeirEndpoint`: one per pod, same name and namespace as the pod (owner
//! reference to it, so the garbage collector removes it with the pod), as
//! CiliumEndpoint. The agent of the pod's node writes it; every agent reads
//! all of them to build its ipcache (address to identity) and the named
//! ports of remote pods.
//!
//! `spec` is what the agent asserts about the pod (identity, addresses,
//! node, named ports); `status` is what it has done about it (state,
//! enforcement, the policy revision in force).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One pod as the agent of its node sees it.
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema,
)]
#[kube(
    group = "weir.io",
    version = "v1",
    kind = "WeirEndpoint",
    doc = "One pod's endpoint, written by the agent of its node.",
    namespaced,
    status = "WeirEndpointStatus",
    shortname = "wep",
    category = "weir",
    printcolumn = r#"{"name": "Identity", "type": "integer", "description": "Numeric security identity", "jsonPath": ".spec.identity"}"#,
    printcolumn = r#"{"name": "State", "type": "string", "jsonPath": ".status.state"}"#,
    printcolumn = r#"{"name": "Ingress", "type": "boolean", "description": "Ingress policy enforced", "jsonPath": ".status.enforcement.ingress"}"#,
    printcolumn = r#"{"name": "Egress", "type": "boolean", "description": "Egress policy enforced", "jsonPath": ".status.enforcement.egress"}"#,
    printcolumn = r#"{"name": "IPv4", "type": "string", "jsonPath": ".spec.addresses.ipv4"}"#,
    printcolumn = r#"{"name": "IPv6", "type": "string", "priority": 1, "jsonPath": ".spec.addresses.ipv6"}"#,
    printcolumn = r#"{"name": "Node", "type": "string", "jsonPath": ".spec.nodeName"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct WeirEndpointSpec {
    /// Numeric security identity of the pod's labels.
    pub identity: u32,
    /// The node the pod runs on (the writer).
    pub node_name: String,
    /// That node's underlay address (the tunnel endpoint), so an ipcache
    /// entry needs no node lookup.
    #[serde(default, rename = "nodeIP", skip_serializing_if = "Option::is_none")]
    pub node_ip: Option<IpAddr>,
    pub addresses: EndpointAddresses,
    /// The pod's named container ports, for policies that name a port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub named_ports: Vec<NamedPort>,
}

/// The pod's addresses, one per family at most.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointAddresses {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
}

/// One named container port (`ports[].name` in the pod).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamedPort {
    pub name: String,
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// `TCP`, `UDP` or `SCTP`.
    #[schemars(schema_with = "crate::schema::protocol")]
    pub protocol: weir_policy::Protocol,
}

/// What the agent has done for the endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WeirEndpointStatus {
    pub state: EndpointState,
    #[serde(default)]
    pub enforcement: PolicyEnforcement,
    /// The policy revision whose maps are in force for this endpoint.
    #[serde(default)]
    pub policy_revision: u64,
}

/// The endpoint's life cycle, as `kubectl get wep` shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum EndpointState {
    /// Address assigned, identity or policy not in force yet: its traffic
    /// is dropped (no traffic before policy).
    #[default]
    Creating,
    /// Identity and policy in force.
    Ready,
    /// Being removed.
    Disconnecting,
}

/// Whether policy is enforced in each direction (default deny in force
/// because some policy selects the endpoint).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct PolicyEnforcement {
    pub ingress: bool,
    pub egress: bool,
}

impl WeirEndpoint {
    /// The endpoint of pod `namespace/name` (whose uid is `pod_uid`): same
    /// name and namespace, owned by the pod so that Kubernetes' garbage
    /// collector deletes it with the pod even when no agent is left to.
    pub fn for_pod(namespace: &str, name: &str, pod_uid: &str, spec: WeirEndpointSpec) -> Self {
        let mut endpoint = Self::new(name, spec);
        endpoint.metadata.namespace = Some(namespace.to_string());
        endpoint.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: name.to_string(),
            uid: pod_uid.to_string(),
            ..Default::default()
        }]);
        endpoint
    }
}

#[cfg(test)]
mod tests;
