//! Numeric identity ranges and the reserved identities (REFERENCE §3.1).
//!
//! The numbers match Cilium's so that identities seen on the wire (VXLAN VNI)
//! and in flows mean the same thing to tools that know Cilium.

/// Unknown / invalid; in a policy map key it is the wildcard "any identity".
pub const IDENTITY_UNKNOWN: u32 = 0;
/// The local node, including host-network pods.
pub const IDENTITY_HOST: u32 = 1;
/// Anything outside the cluster.
pub const IDENTITY_WORLD: u32 = 2;
/// Pods this data plane does not manage.
pub const IDENTITY_UNMANAGED: u32 = 3;
/// The health-check endpoint.
pub const IDENTITY_HEALTH: u32 = 4;
/// An endpoint whose labels are not known yet.
pub const IDENTITY_INIT: u32 = 5;
/// Every other node of the cluster.
pub const IDENTITY_REMOTE_NODE: u32 = 6;
/// Nodes and addresses backing the kube-apiserver.
pub const IDENTITY_KUBE_APISERVER: u32 = 7;
/// The source address of the ingress proxy.
pub const IDENTITY_INGRESS: u32 = 8;

/// Reserved identities with the label that names each (`reserved:<name>`).
pub const RESERVED_IDENTITIES: [(u32, &str); 9] = [
    (IDENTITY_UNKNOWN, "reserved:unknown"),
    (IDENTITY_HOST, "reserved:host"),
    (IDENTITY_WORLD, "reserved:world"),
    (IDENTITY_UNMANAGED, "reserved:unmanaged"),
    (IDENTITY_HEALTH, "reserved:health"),
    (IDENTITY_INIT, "reserved:init"),
    (IDENTITY_REMOTE_NODE, "reserved:remote-node"),
    (IDENTITY_KUBE_APISERVER, "reserved:kube-apiserver"),
    (IDENTITY_INGRESS, "reserved:ingress"),
];

/// Everything below this is reserved (fixed, never allocated).
pub const MIN_CLUSTER_IDENTITY: u32 = 256;
/// Highest cluster-scope identity (cluster id 0: 16 bits).
pub const MAX_CLUSTER_IDENTITY: u32 = 65535;

/// Scope bits of an identity (bits 24..32).
pub const IDENTITY_SCOPE_MASK: u32 = 0xFF00_0000;
/// Scope of node-local identities (CIDR, FQDN): `1 << 24 | n`.
pub const LOCAL_IDENTITY_SCOPE: u32 = 1 << 24;
/// Lowest local identity (`n` starts at 1).
pub const MIN_LOCAL_IDENTITY: u32 = LOCAL_IDENTITY_SCOPE | 1;
/// Highest local identity.
pub const MAX_LOCAL_IDENTITY: u32 = LOCAL_IDENTITY_SCOPE | 0x00FF_FFFF;

/// The label name of a reserved identity.
pub fn reserved_name(id: u32) -> Option<&'static str> {
    RESERVED_IDENTITIES
        .iter()
        .find(|(n, _)| *n == id)
        .map(|(_, name)| *name)
}

/// The reserved identity named by a label (`reserved:host` → 1).
pub fn reserved_by_name(name: &str) -> Option<u32> {
    RESERVED_IDENTITIES
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(id, _)| *id)
}

/// Below the cluster range: fixed meaning, never allocated.
pub fn is_reserved(id: u32) -> bool {
    id < MIN_CLUSTER_IDENTITY
}

/// Allocated cluster-wide through the shared store.
pub fn is_cluster(id: u32) -> bool {
    (MIN_CLUSTER_IDENTITY..=MAX_CLUSTER_IDENTITY).contains(&id)
}

/// Node-local (CIDR) identity: never stored in the shared store, may differ
/// between nodes, never sent on the wire.
pub fn is_local(id: u32) -> bool {
    id & IDENTITY_SCOPE_MASK == LOCAL_IDENTITY_SCOPE && id != LOCAL_IDENTITY_SCOPE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_do_not_overlap() {
        assert!(is_reserved(IDENTITY_INGRESS) && !is_cluster(IDENTITY_INGRESS));
        assert!(is_reserved(255) && !is_reserved(256));
        assert!(is_cluster(256) && is_cluster(65535) && !is_cluster(65536));
        assert!(!is_local(65535) && !is_local(LOCAL_IDENTITY_SCOPE));
        assert!(is_local(MIN_LOCAL_IDENTITY) && is_local(MAX_LOCAL_IDENTITY));
        assert!(!is_local(MAX_LOCAL_IDENTITY + 1));
        assert_eq!(MIN_LOCAL_IDENTITY, 16_777_217);
        assert_eq!(MAX_LOCAL_IDENTITY, 33_554_431);
    }

    #[test]
    fn names_map_both_ways() {
        for (id, name) in RESERVED_IDENTITIES {
            assert_eq!(reserved_name(id), Some(name));
            assert_eq!(reserved_by_name(name), Some(id));
        }
        assert_eq!(reserved_by_name("reserved:remote-node"), Some(6));
        assert_eq!(reserved_name(9), None);
    }
}
