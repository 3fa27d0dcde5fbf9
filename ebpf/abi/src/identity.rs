//! Security identities: the reserved ones with their labels, and the
//! numeric ranges (Cilium's numbers, REFERENCE §3.1), so identities seen on
//! the wire (VXLAN VNI) and in flows mean the same thing to tools that know
//! Cilium.
//!
//! This is the one table of reserved identities: the datapath, the identity
//! allocator, the policy engine and the agent's readers all use it.

/// Unknown / invalid. In a policy key it is the wildcard "any peer".
pub const UNKNOWN: u32 = 0;
/// In a policy key: any peer (the number of [`UNKNOWN`]).
pub const ANY: u32 = UNKNOWN;
/// The local node, including host-network pods.
pub const HOST: u32 = 1;
/// Anything outside the cluster.
pub const WORLD: u32 = 2;
/// Pods this data plane does not manage.
pub const UNMANAGED: u32 = 3;
/// The health-check endpoint.
pub const HEALTH: u32 = 4;
/// An endpoint whose labels are not known yet.
pub const INIT: u32 = 5;
/// Every other node of the cluster.
pub const REMOTE_NODE: u32 = 6;
/// Nodes and addresses backing the kube-apiserver.
pub const KUBE_APISERVER: u32 = 7;
/// The source address of the ingress proxy.
pub const INGRESS: u32 = 8;
/// IPv4 destinations outside the cluster (dual-stack `world`).
pub const WORLD_IPV4: u32 = 9;
/// IPv6 destinations outside the cluster (dual-stack `world`).
pub const WORLD_IPV6: u32 = 10;

/// First user-reserved identity.
pub const USER_RESERVED_MIN: u32 = 128;
/// First cluster-scope identity: everything below is reserved (fixed,
/// never allocated).
pub const CLUSTER_MIN: u32 = 256;
/// Last cluster-scope identity (cluster id 0: 16 bits).
pub const CLUSTER_MAX: u32 = 65535;

/// Scope bits of an identity (bits 24..32).
pub const SCOPE_MASK: u32 = 0xFF00_0000;
/// Scope of node-local identities (CIDR, FQDN): `1 << 24 | n`.
pub const LOCAL_SCOPE: u32 = 1 << 24;
/// First local identity (`n` starts at 1).
pub const LOCAL_MIN: u32 = LOCAL_SCOPE | 1;
/// Last local identity.
pub const LOCAL_MAX: u32 = LOCAL_SCOPE | 0x00FF_FFFF;
/// Bit of a local identity that makes it an *address identity*: CIDR
/// identities are numbered below it (up to [`LOCAL_CIDR_MAX`]), and the
/// prefix with CIDR identity `c` that a NetworkPolicy `ipBlock` names has
/// the address identity `c | LOCAL_ADDRESS_FLAG`, which the ipcache gives
/// the pod and node addresses inside it (see [`address_identity`]).
pub const LOCAL_ADDRESS_FLAG: u32 = 1 << 23;
/// Last CIDR identity: the local identities below [`LOCAL_ADDRESS_FLAG`].
pub const LOCAL_CIDR_MAX: u32 = LOCAL_SCOPE | (LOCAL_ADDRESS_FLAG - 1);

/// Source prefix of the labels of reserved identities (`reserved:host`).
pub const LABEL_SOURCE: &str = "reserved";

/// A reserved identity and the labels it stands for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Reserved {
    pub id: u32,
    /// The label that names it (`reserved:host`).
    pub label: &'static str,
    /// Further labels it carries: kube-apiserver nodes are remote nodes
    /// too, as in Cilium.
    pub also: &'static [&'static str],
}

impl Reserved {
    /// Its name: the label without the `reserved:` source (`host`).
    pub fn name(&self) -> &'static str {
        match self.label.split_once(':') {
            Some((_, name)) => name,
            None => self.label,
        }
    }

    /// Every label it stands for, the naming one first.
    pub fn labels(&self) -> impl Iterator<Item = &'static str> {
        core::iter::once(self.label).chain(self.also.iter().copied())
    }
}

const fn reserved(id: u32, label: &'static str) -> Reserved {
    Reserved {
        id,
        label,
        also: &[],
    }
}

/// Every reserved identity, by number.
pub const RESERVED: [Reserved; 11] = [
    reserved(UNKNOWN, "reserved:unknown"),
    reserved(HOST, "reserved:host"),
    reserved(WORLD, "reserved:world"),
    reserved(UNMANAGED, "reserved:unmanaged"),
    reserved(HEALTH, "reserved:health"),
    reserved(INIT, "reserved:init"),
    reserved(REMOTE_NODE, "reserved:remote-node"),
    Reserved {
        id: KUBE_APISERVER,
        label: "reserved:kube-apiserver",
        also: &["reserved:remote-node"],
    },
    reserved(INGRESS, "reserved:ingress"),
    reserved(WORLD_IPV4, "reserved:world-ipv4"),
    reserved(WORLD_IPV6, "reserved:world-ipv6"),
];

/// The reserved identity `id`, if it is one.
pub fn reserved_by_id(id: u32) -> Option<&'static Reserved> {
    RESERVED.iter().find(|r| r.id == id)
}

/// The reserved identity a label names (`reserved:host` → 1).
pub fn reserved_by_label(label: &str) -> Option<&'static Reserved> {
    RESERVED.iter().find(|r| r.label == label)
}

/// Below the cluster range: fixed meaning, never allocated.
pub fn is_reserved(id: u32) -> bool {
    id < CLUSTER_MIN
}

/// Allocated cluster-wide through the shared store.
pub fn is_cluster(id: u32) -> bool {
    (CLUSTER_MIN..=CLUSTER_MAX).contains(&id)
}

/// Node-local (CIDR) identity: never stored in the shared store, may differ
/// between nodes, never sent on the wire.
pub fn is_local(id: u32) -> bool {
    id & SCOPE_MASK == LOCAL_SCOPE && id != LOCAL_SCOPE
}

/// The address identity of the prefix whose CIDR identity is `cidr`: what
/// a pod or node address inside that prefix (and in no more specific one
/// a NetworkPolicy names) carries as `IpcacheValue::address_identity`.
pub const fn address_identity(cidr: u32) -> u32 {
    cidr | LOCAL_ADDRESS_FLAG
}

/// Whether `id` is an address identity (see [`address_identity`]).
pub fn is_address(id: u32) -> bool {
    is_local(id) && id & LOCAL_ADDRESS_FLAG != 0
}

/// The CIDR identity an address identity was derived from.
pub const fn cidr_of_address(id: u32) -> u32 {
    id & !LOCAL_ADDRESS_FLAG
}
