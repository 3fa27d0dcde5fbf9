//! The details behind `weir endpoint get` and `weir identity get`, composed
//! from the endpoint registry, the policy snapshot the reconcile loop
//! published and the shared view of identities.

use weir_abi::identity::reserved_by_id;
use weir_agent_api::v1;

use crate::cluster::kvstore::SharedView;
use crate::endpoint::registry::Endpoint;
use crate::reconcile::snapshot::PolicySnapshot;

/// `key=value`, or just `key` for a label without a value
/// (`reserved:host`, `cidr:10.0.0.0/8`).
pub fn label_text(key: &str, value: &str) -> String {
    if value.is_empty() {
        key.to_string()
    } else {
        format!("{key}={value}")
    }
}

fn labels_of(
    id: u32,
    snapshot: &PolicySnapshot,
    view: &SharedView,
) -> Option<(Vec<String>, &'static str)> {
    if let Some(reserved) = reserved_by_id(id) {
        return Some((reserved.labels().map(String::from).collect(), "reserved"));
    }
    if let Some(labels) = view.identities.get(&id) {
        let labels = labels.iter().map(|(k, v)| label_text(k, v)).collect();
        return Some((labels, "cluster"));
    }
    snapshot
        .compiled
        .cidrs
        .iter()
        .find(|(_, cidr_id)| **cidr_id == id)
        .map(|(cidr, _)| {
            let labels = weir_identity::local::cidr_labels(*cidr)
                .iter()
                .map(|(k, v)| label_text(k, v))
                .collect();
            (labels, "local")
        })
}

/// One local endpoint in full. `map_entries` is its entry count in the
/// policy map, read by the caller from the datapath.
/// What the datapath's maps hold of an endpoint.
#[derive(Clone, Copy, Debug, Default)]
pub struct InDatapath {
    pub policy_map_entries: u64,
    /// `EndpointInfo::AUDIT` is set in its entry.
    pub audit: bool,
}

pub fn endpoint_detail(
    endpoint: &Endpoint,
    snapshot: &PolicySnapshot,
    view: &SharedView,
    datapath: InDatapath,
) -> v1::EndpointDetail {
    let identity = snapshot
        .local
        .get(&endpoint.pod)
        .filter(|local| local.endpoint == u32::from(endpoint.id))
        .map_or(0, |local| local.identity);
    let labels = if identity == 0 {
        Vec::new()
    } else {
        labels_of(identity, snapshot, view).map_or_else(Vec::new, |(labels, _)| labels)
    };
    let policy = snapshot.compiled.endpoints.get(&u32::from(endpoint.id));
    v1::EndpointDetail {
        id: u32::from(endpoint.id),
        namespace: endpoint.pod.namespace.clone(),
        pod: endpoint.pod.name.clone(),
        labels,
        identity,
        addresses: endpoint.addresses().map(|a| a.to_string()).collect(),
        ifindex: endpoint.host_ifindex,
        interface: endpoint.host_ifname.clone(),
        mac: endpoint.mac.clone(),
        ingress_enforced: policy.is_some_and(|p| p.ingress.enforced),
        egress_enforced: policy.is_some_and(|p| p.egress.enforced),
        policy_map_entries: datapath.policy_map_entries,
        policy_audit_mode: datapath.audit,
        container_id: endpoint.attachment.container_id.clone(),
        netns: endpoint.netns.clone(),
    }
}

/// One identity: its labels, where it comes from, and the local endpoints
/// that have it; None when this agent does not know it.
pub fn identity_detail(
    id: u32,
    snapshot: &PolicySnapshot,
    view: &SharedView,
) -> Option<v1::IdentityDetail> {
    let (labels, scope) = labels_of(id, snapshot, view)?;
    let endpoints = snapshot
        .local
        .iter()
        .filter(|(_, local)| local.identity == id)
        .map(|(pod, local)| v1::LocalEndpointRef {
            id: local.endpoint,
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
        })
        .collect();
    Some(v1::IdentityDetail {
        id,
        labels,
        scope: scope.into(),
        endpoints,
    })
}

#[cfg(test)]
mod tests;
