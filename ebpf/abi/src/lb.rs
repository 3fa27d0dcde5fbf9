//! Service load balancing: the maps the agent writes from Services and
//! EndpointSlices, and the maps the datapath keeps per connection.
//!
//! ```text
//! weir_lb4_services   (frontend, slot) ─▶ slot 0: the service (count, flags, rev-NAT id)
//!                                         slot n: backend id of the n-th active backend
//! weir_lb4_backends   backend id       ─▶ address, port, state
//! weir_lb4_revnat     rev-NAT id       ─▶ the frontend (address, port) replies come from
//! weir_lb4_maglev     table*M + h      ─▶ backend id (Maglev services only)
//! weir_lb4_affinity   (client, svc)    ─▶ backend id, last use (sessionAffinity ClientIP)
//! weir_lb4_sock_revnat (socket, backend) ─▶ frontend (socket LB: recvmsg/getpeername)
//! weir_lb4_nat        packet tuple     ─▶ the tuple to rewrite it to (per-packet NAT)
//! ```
//!
//! A frontend is looked up by (address, port, protocol, scope). Traffic from
//! outside the node (per-packet NAT at the node device) looks up
//! [`LB_SCOPE_EXTERNAL`]; traffic from pods and the host looks up
//! [`LB_SCOPE_INTERNAL`]. Every frontend has an internal entry (ClusterIPs
//! only that one); NodePort, externalIP and LoadBalancer frontends have both,
//! and with `externalTrafficPolicy: Local` the external one holds only the
//! node-local backends.
//!
//! Only active backends are in slots 1..=count, so new connections never pick
//! a terminating one; connections that already have a backend keep it as
//! long as the backend is in `weir_lb4_backends`.
//!
//! # IPv6 (socket LB)
//!
//! ```text
//! weir_lb6_services    (frontend, slot) ─▶ Lb6Service (= Lb4Service: same slot layout)
//! weir_lb6_backends    backend id       ─▶ address, port, state
//! weir_lb6_sock_revnat (socket, backend) ─▶ frontend (recvmsg6/getpeername6)
//! weir_lb6_nat         packet tuple     ─▶ the tuple to rewrite it to (IPv6 NodePort)
//! ```
//!
//! The IPv6 maps differ from the IPv4 ones only in the width of the
//! addresses: a frontend is looked up by (address, port, protocol, scope),
//! slot 0 is the service entry, slots 1..=count the active backends. The
//! Maglev tables (`weir_lb4_maglev`) and session affinity
//! (`weir_lb4_affinity`, keyed by network namespace cookie and rev-NAT id)
//! are shared by both families: their contents are family-independent as
//! long as the agent draws backend ids, rev-NAT ids and Maglev table numbers
//! from one pool per kind for both families, which it must.
//!
//! Per-packet NAT over IPv6 covers NodePorts reached from the network
//! (`weir_lb6_nat`, the same mappings as `weir_lb4_nat`); a pod's own
//! packets to an IPv6 frontend are translated by the socket hooks only.

/// Lookup scope of a frontend (see the module docs).
pub const LB_SCOPE_EXTERNAL: u8 = 0;
pub const LB_SCOPE_INTERNAL: u8 = 1;

/// Key of `weir_lb4_services`.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lb4Key {
    pub address: [u8; 4],
    /// Network byte order.
    pub port: [u8; 2],
    /// 0: the service entry; 1..=count: the active backends.
    pub backend_slot: u16,
    /// [`crate::ip_proto::TCP`] or [`crate::ip_proto::UDP`].
    pub protocol: u8,
    pub scope: u8,
    pub pad: [u8; 2],
}

/// Value of `weir_lb4_services`.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Lb4Service {
    /// Slots > 0: the backend this slot selects.
    pub backend_id: u32,
    /// Slot 0: number of active backends (slots 1..=count).
    pub count: u16,
    /// Slot 0: the frontend's reverse-NAT id (`weir_lb4_revnat`).
    pub rev_nat_id: u16,
    /// Slot 0: `FLAG_*`.
    pub flags: u16,
    pub pad: u16,
    /// Slot 0, with [`Lb4Service::FLAG_AFFINITY`]: sessionAffinity timeout.
    pub affinity_timeout_s: u32,
    /// Slot 0, with [`Lb4Service::FLAG_MAGLEV`]: index of the service's
    /// table in `weir_lb4_maglev`.
    pub maglev_table: u32,
}

impl Lb4Service {
    pub const FLAG_CLUSTER_IP: u16 = 1 << 0;
    pub const FLAG_NODE_PORT: u16 = 1 << 1;
    pub const FLAG_EXTERNAL_IP: u16 = 1 << 2;
    pub const FLAG_LOAD_BALANCER: u16 = 1 << 3;
    /// sessionAffinity: ClientIP.
    pub const FLAG_AFFINITY: u16 = 1 << 4;
    /// Backends are selected through the service's Maglev table.
    pub const FLAG_MAGLEV: u16 = 1 << 5;
    /// A pod's hostPort (CNI `portMappings`) on the node's address.
    pub const FLAG_HOST_PORT: u16 = 1 << 6;
}

/// Value of `weir_lb4_backends` (key: backend id, u32).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Lb4Backend {
    pub address: [u8; 4],
    /// Network byte order.
    pub port: [u8; 2],
    pub protocol: u8,
    /// `STATE_*`.
    pub state: u8,
    /// `FLAG_*`.
    pub flags: u8,
    pub pad: [u8; 3],
}

impl Lb4Backend {
    pub const STATE_ACTIVE: u8 = 0;
    /// Existing connections finish; no new ones are sent here.
    pub const STATE_TERMINATING: u8 = 1;
    /// The backend is a pod on this node: per-packet NAT hands the packet to
    /// the stack with the client's source; others are SNATed to the node.
    pub const FLAG_LOCAL: u8 = 1 << 0;
}

/// Value of `weir_lb4_revnat` (key: rev-NAT id, u16): the frontend replies
/// must appear to come from.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Lb4RevNat {
    pub address: [u8; 4],
    /// Network byte order.
    pub port: [u8; 2],
    pub pad: [u8; 2],
}

/// Key of `weir_lb4_affinity`.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Lb4AffinityKey {
    /// The client: a network namespace cookie (socket LB) or an IPv4
    /// address in the low 4 bytes (per-packet NAT), per `kind`.
    pub client: u64,
    pub rev_nat_id: u16,
    pub kind: u8,
    pub pad: [u8; 5],
}

impl Lb4AffinityKey {
    pub const KIND_NETNS: u8 = 1;
    pub const KIND_ADDRESS: u8 = 2;
    /// An IPv6 client address folded into `client` (per-packet NAT of
    /// IPv6): two clients that fold alike share their stickiness.
    pub const KIND_ADDRESS6: u8 = 3;
}

/// Value of `weir_lb4_affinity`.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Lb4AffinityValue {
    pub backend_id: u32,
    /// Monotonic seconds (`bpf_ktime_get_ns() / 1e9`) of the last selection.
    pub last_used_s: u32,
}

/// Key of `weir_lb4_sock_revnat`: a socket the connect/sendmsg hook
/// translated, and the backend it was sent to.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Lb4SockKey {
    pub cookie: u64,
    pub address: [u8; 4],
    /// Network byte order.
    pub port: [u8; 2],
    pub pad: [u8; 2],
}

/// Value of `weir_lb4_sock_revnat`: the frontend the application asked for.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Lb4SockRevNat {
    pub address: [u8; 4],
    /// Network byte order.
    pub port: [u8; 2],
    pub rev_nat_id: u16,
}

/// Key of `weir_lb4_nat` ([`Lb4NatKey`]) and `weir_lb6_nat` ([`Lb6NatKey`]):
/// a packet's tuple as it arrives. `A` is the address: `[u8; 4]`, or for
/// IPv6 `[u32; 4]`, the address's bytes in network order read as four
/// words (see [`Lb6NatKey`]).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LbNatKey<A> {
    pub saddr: A,
    pub daddr: A,
    /// Network byte order.
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub protocol: u8,
    /// [`LbNatKey::FORWARD`] (client to frontend) or
    /// [`LbNatKey::REPLY`] (backend back to the client or the node).
    pub direction: u8,
    pub pad: [u8; 2],
}

impl<A> LbNatKey<A> {
    pub const FORWARD: u8 = 1;
    pub const REPLY: u8 = 2;
}

/// Value of `weir_lb4_nat` / `weir_lb6_nat`: the tuple the packet is
/// rewritten to.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct LbNatEntry<A> {
    pub saddr: A,
    pub daddr: A,
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    /// The backend of the connection (forward entries): when it leaves
    /// the family's backends map the connection is balanced anew.
    pub backend_id: u32,
    pub rev_nat_id: u16,
    /// `FLAG_*`.
    pub flags: u8,
    pub pad: u8,
}

impl<A> LbNatEntry<A> {
    /// The source was rewritten to the node (backend on another node): the
    /// packet must be redirected out, not handed to the stack, which would
    /// drop a packet from its own address as a martian.
    pub const FLAG_SNAT: u8 = 1 << 0;
    /// A masquerading mapping (a pod's connection out of the cluster, its
    /// source rewritten to the node's address): no backend behind it.
    pub const FLAG_MASQUERADE: u8 = 1 << 1;
}

/// Key of `weir_lb4_nat`.
pub type Lb4NatKey = LbNatKey<[u8; 4]>;
/// Value of `weir_lb4_nat`.
pub type Lb4NatEntry = LbNatEntry<[u8; 4]>;
/// Key of `weir_lb6_nat` (per-packet NAT of IPv6 NodePorts). Addresses are
/// words, not bytes: the same 16 bytes in memory, but aligned, so the
/// datapath moves and compares them in four operations instead of sixteen
/// (which its 512-byte stack could not afford). [`ipv6_words`] and
/// [`ipv6_bytes`] convert.
pub type Lb6NatKey = LbNatKey<[u32; 4]>;
/// Value of `weir_lb6_nat`.
pub type Lb6NatEntry = LbNatEntry<[u32; 4]>;

/// An IPv6 address's network-order bytes as the words `weir_lb6_nat` holds.
#[inline(always)]
pub fn ipv6_words(bytes: &[u8; 16]) -> [u32; 4] {
    // SAFETY: same size, and every bit pattern is valid for both. A
    // transmute, not four `from_ne_bytes`: the datapath keeps the result
    // in four registers instead of sixteen.
    unsafe { core::mem::transmute::<[u8; 16], [u32; 4]>(*bytes) }
}

/// [`ipv6_words`] back to the bytes.
#[inline(always)]
pub fn ipv6_bytes(words: &[u32; 4]) -> [u8; 16] {
    // SAFETY: as in `ipv6_words`.
    unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(*words) }
}

/// Key of `weir_lb6_services`: [`Lb4Key`] with an IPv6 address. Aligned to
/// 4 (the layout is the same) so that the datapath moves its address as
/// words, not byte by byte.
#[repr(C, align(4))]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lb6Key {
    pub address: [u8; 16],
    /// Network byte order.
    pub port: [u8; 2],
    /// 0: the service entry; 1..=count: the active backends.
    pub backend_slot: u16,
    /// [`crate::ip_proto::TCP`] or [`crate::ip_proto::UDP`].
    pub protocol: u8,
    pub scope: u8,
    pub pad: [u8; 2],
}

/// Value of `weir_lb6_services`: the service entry and its slots do not
/// depend on the family.
pub type Lb6Service = Lb4Service;

/// Value of `weir_lb6_backends` (key: backend id, u32, from the same pool as
/// the IPv4 backends' ids): [`Lb4Backend`] with an IPv6 address. Aligned to
/// 4 as [`Lb6Key`].
#[repr(C, align(4))]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Lb6Backend {
    pub address: [u8; 16],
    /// Network byte order.
    pub port: [u8; 2],
    pub protocol: u8,
    /// [`Lb4Backend::STATE_ACTIVE`] or [`Lb4Backend::STATE_TERMINATING`].
    pub state: u8,
    /// [`Lb4Backend::FLAG_LOCAL`].
    pub flags: u8,
    pub pad: [u8; 3],
}

/// Key of `weir_lb6_sock_revnat`: a socket the connect6/sendmsg6 hook
/// translated, and the backend it was sent to.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Lb6SockKey {
    pub cookie: u64,
    pub address: [u8; 16],
    /// Network byte order.
    pub port: [u8; 2],
    pub pad: [u8; 6],
}

/// Value of `weir_lb6_sock_revnat`: the frontend the application asked for.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Lb6SockRevNat {
    pub address: [u8; 16],
    /// Network byte order.
    pub port: [u8; 2],
    pub rev_nat_id: u16,
}

/// The lowest and highest source port per-packet SNAT uses on a node
/// address (outside the NodePort range and the usual ephemeral ports).
pub const SNAT_PORT_MIN: u16 = 61_000;
pub const SNAT_PORT_MAX: u16 = 65_000;

const _: () = assert!(size_of::<Lb4Key>() == 12);
const _: () = assert!(size_of::<Lb4Service>() == 20);
const _: () = assert!(size_of::<Lb4Backend>() == 12);
const _: () = assert!(size_of::<Lb4RevNat>() == 8);
const _: () = assert!(size_of::<Lb4AffinityKey>() == 16);
const _: () = assert!(size_of::<Lb4AffinityValue>() == 8);
const _: () = assert!(size_of::<Lb4SockKey>() == 16);
const _: () = assert!(size_of::<Lb4SockRevNat>() == 8);
const _: () = assert!(size_of::<Lb4NatKey>() == 16);
const _: () = assert!(size_of::<Lb4NatEntry>() == 20);
const _: () = assert!(size_of::<Lb6Key>() == 24);
const _: () = assert!(size_of::<Lb6Backend>() == 24);
const _: () = assert!(size_of::<Lb6SockKey>() == 32);
const _: () = assert!(size_of::<Lb6SockRevNat>() == 20);
const _: () = assert!(size_of::<Lb6NatKey>() == 40);
const _: () = assert!(size_of::<Lb6NatEntry>() == 44);

/// Marks the layouts above as plain data for aya's map accessors.
macro_rules! user_pod {
    ($($t:ty),* $(,)?) => {$(
        // SAFETY: repr(C), integers and byte arrays only, no implicit padding
        // (sizes pinned above).
        #[cfg(feature = "user")]
        unsafe impl aya::Pod for $t {}
    )*};
}

user_pod!(
    Lb4Key,
    Lb4Service,
    Lb4Backend,
    Lb4RevNat,
    Lb4AffinityKey,
    Lb4AffinityValue,
    Lb4SockKey,
    Lb4SockRevNat,
    Lb4NatKey,
    Lb4NatEntry,
    Lb6Key,
    Lb6Backend,
    Lb6SockKey,
    Lb6SockRevNat,
    Lb6NatKey,
    Lb6NatEntry,
);
