//! The store's records as Weir's custom resources and back: what
//! [`super::CrdStore`] writes and what its watches read.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use kube::api::ObjectMeta;
use kube::ResourceExt;
use weir_abi::identity::is_cluster;
use weir_crds::{
    EndpointAddresses, NodeAddress, NodeAddressType, WeirEndpoint, WeirEndpointSpec, WeirIdentity,
    WeirNode, WeirNodeSpec,
};
use weir_types::LabelSet;

use crate::store::{EndpointRecord, NodeRecord};

/// Label on a `WeirIdentity`: a hash of its label set, so that an
/// allocator lists the (few) identities that may hold the same set.
pub const LABELS_HASH: &str = "weir.io/labels-hash";
/// Labels on a `WeirEndpoint`: its addresses, so that the endpoints
/// claiming one address are found by a label selector.
pub const IPV4_LABEL: &str = "weir.io/ipv4";
pub const IPV6_LABEL: &str = "weir.io/ipv6";
/// Annotation on a `WeirNode`: the node whose agent wrote it.
pub const WRITER: &str = "weir.io/writer";

/// FNV-1a (64 bit) of the canonical label string, in hex: stable across
/// builds and architectures (std's hashers promise neither). A collision
/// costs nothing but a longer list: the sets themselves are compared.
pub fn labels_hash(labels: &LabelSet) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in labels.canonical().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The label selector of the identities that may hold `labels`.
pub fn hash_selector(labels: &LabelSet) -> String {
    format!("{LABELS_HASH}={}", labels_hash(labels))
}

/// The `WeirIdentity` for `id`, labelled with its set's hash.
pub fn identity(id: u32, labels: &LabelSet) -> WeirIdentity {
    let mut object = WeirIdentity::for_labels(id, labels);
    object
        .metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(LABELS_HASH.to_string(), labels_hash(labels));
    object
}

/// The numeric id and labels of a `WeirIdentity`, when it is one an agent
/// could have written (numeric name in the cluster range) and is not
/// being deleted.
pub fn identity_record(object: &WeirIdentity) -> Option<(u32, LabelSet)> {
    if object.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let id = object.numeric_id().filter(|id| is_cluster(*id))?;
    Some((id, object.label_set()))
}

/// The order of writes to objects of one kind: the resourceVersion, which
/// kube-apiserver on etcd3 takes from etcd's revision, so a later write has
/// a higher one. Kubernetes asks clients not to rely on that; Weir does, in
/// two places only (the earliest identity of a label set wins, the latest
/// endpoint claiming an address wins), and only between objects that
/// nobody but the agents write.
pub fn rank(meta: &ObjectMeta) -> u64 {
    meta.resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The value of the address label for `ip`: IPv4 as written, IPv6 in hex
/// (a label value cannot hold ':').
pub fn address_label(ip: IpAddr) -> (&'static str, String) {
    match ip {
        IpAddr::V4(v4) => (IPV4_LABEL, v4.to_string()),
        IpAddr::V6(v6) => (
            IPV6_LABEL,
            v6.octets().iter().map(|b| format!("{b:02x}")).collect(),
        ),
    }
}

/// The label selector of the endpoints claiming `ip`.
pub fn address_selector(ip: IpAddr) -> String {
    let (key, value) = address_label(ip);
    format!("{key}={value}")
}

/// The addresses of an endpoint.
pub fn addresses(spec: &WeirEndpointSpec) -> Vec<IpAddr> {
    let v4 = spec.addresses.ipv4.map(IpAddr::V4);
    let v6 = spec.addresses.ipv6.map(IpAddr::V6);
    v4.into_iter().chain(v6).collect()
}

/// The spec that publishes `ip` for `record`: on top of what the node
/// wrote before for the same pod (its other address family, its named
/// ports), or afresh when another node wrote it.
pub fn endpoint_spec(
    ip: IpAddr,
    record: &EndpointRecord,
    before: Option<&WeirEndpointSpec>,
) -> WeirEndpointSpec {
    let mut spec = match before {
        Some(before) if before.node_name == record.node => before.clone(),
        _ => WeirEndpointSpec::default(),
    };
    spec.identity = record.identity;
    spec.node_name = record.node.clone();
    spec.node_ip = Some(record.node_ip);
    match ip {
        IpAddr::V4(v4) => spec.addresses.ipv4 = Some(v4),
        IpAddr::V6(v6) => spec.addresses.ipv6 = Some(v6),
    }
    spec
}

/// `spec` without `ip`: None when it was its only address.
pub fn without_address(spec: &WeirEndpointSpec, ip: IpAddr) -> Option<WeirEndpointSpec> {
    let mut spec = spec.clone();
    let addresses = &mut spec.addresses;
    match ip {
        IpAddr::V4(v4) if addresses.ipv4 == Some(v4) => addresses.ipv4 = None,
        IpAddr::V6(v6) if addresses.ipv6 == Some(v6) => addresses.ipv6 = None,
        _ => {}
    }
    (spec.addresses != EndpointAddresses::default()).then_some(spec)
}

/// Sets the address labels of `meta` to the addresses of `spec`.
pub fn label_addresses(meta: &mut ObjectMeta, spec: &WeirEndpointSpec) {
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    labels.remove(IPV4_LABEL);
    labels.remove(IPV6_LABEL);
    for ip in addresses(spec) {
        let (key, value) = address_label(ip);
        labels.insert(key.to_string(), value);
    }
}

/// The ipcache entries of an endpoint: one per address. None without a
/// node address (not written by an agent).
pub fn endpoint_records(object: &WeirEndpoint) -> Vec<(IpAddr, EndpointRecord)> {
    let Some(node_ip) = object.spec.node_ip else {
        return Vec::new();
    };
    let record = EndpointRecord {
        identity: object.spec.identity,
        node: object.spec.node_name.clone(),
        node_ip,
        namespace: object.namespace().unwrap_or_default(),
        pod: object.name_any(),
    };
    addresses(&object.spec)
        .into_iter()
        .map(|ip| (ip, record.clone()))
        .collect()
}

/// The `WeirNode` spec publishing `node`.
pub fn node_spec(node: &NodeRecord) -> WeirNodeSpec {
    WeirNodeSpec {
        addresses: node
            .addresses()
            .map(|ip| NodeAddress {
                address_type: NodeAddressType::InternalIP,
                ip,
            })
            .collect(),
        pod_cidrs: node.pod_cidrs().collect(),
    }
}

/// The node record of a `WeirNode`: its first internal address (else its
/// first), its first pod CIDR and, on a dual-stack node, its first IPv6 pod
/// CIDR and internal IPv6 address after those. None while it lacks either (the operator has not
/// assigned a CIDR yet).
pub fn node_record(object: &WeirNode) -> Option<NodeRecord> {
    let spec = &object.spec;
    let ip = spec
        .addresses
        .iter()
        .find(|a| a.address_type == NodeAddressType::InternalIP)
        .or_else(|| spec.addresses.first())?
        .ip;
    let pod_cidr = *spec.pod_cidrs.first()?;
    let pod_cidr_v6 = match pod_cidr {
        IpNetwork::V4(_) => spec.pod_cidrs.iter().copied().find(IpNetwork::is_ipv6),
        IpNetwork::V6(_) => None,
    };
    // A dual-stack node's IPv6 address: its first internal IPv6 one after
    // `ip` (an IPv4 one).
    let ipv6 = spec
        .addresses
        .iter()
        .filter(|a| a.address_type == NodeAddressType::InternalIP && ip.is_ipv4())
        .find_map(|a| match a.ip {
            IpAddr::V6(v6) => Some(v6),
            IpAddr::V4(_) => None,
        });
    Some(NodeRecord {
        name: object.name_any(),
        ip,
        pod_cidr,
        pod_cidr_v6,
        ipv6,
    })
}

/// Whether `object` was written by the agent of `node`.
pub fn written_by(object: &WeirNode, node: &str) -> bool {
    object.annotations().get(WRITER).map(String::as_str) == Some(node)
}

#[cfg(test)]
mod tests;
