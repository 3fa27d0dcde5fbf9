//! The binary interface between Weir's kernel programs and user space.
//!
//! Every type that crosses the kernel/user boundary (map keys, map values,
//! reason codes) is defined here exactly once, `#[repr(C)]` with explicit
//! padding, so the datapath (built for `bpfel-unknown-none`) and the agent
//! (built for the host) can never disagree about a layout. Sizes are pinned by
//! compile-time assertions below and by the unit tests in `tests.rs`.
#![cfg_attr(not(test), no_std)]

pub mod conntrack;
pub mod endpoint;
pub mod events;
pub mod fragments;
pub mod identity;
pub mod ip_proto;
pub mod ipcache;
pub mod lb;
pub mod metrics;
pub mod overlay;
pub mod pod_cidr;
pub mod policy;
pub mod reason;

pub use conntrack::{CtEntry, CtKey};
pub use endpoint::{EndpointInfo, EndpointKey};
pub use events::FlowEvent;
pub use fragments::{Frag4Key, Frag4Ports};
pub use ipcache::{IpcacheKey, IpcacheValue};
pub use metrics::{MetricsKey, MetricsValue, TrafficDirection};
pub use pod_cidr::{PodCidr6Key, PodCidrInfo, PodCidrKey};
pub use policy::{PolicyEntry, PolicyKey};
pub use reason::Reason;

/// The version of the pinned map layouts. Bump it whenever a pinned map's
/// key, value, type or size changes meaning (even when its byte sizes stay
/// the same): an agent finding pins of another version replaces them
/// (the agent's `datapath::pins`).
///
/// 2: `IpcacheValue` gained `address_identity` (NetworkPolicy `ipBlock`
/// matching cluster addresses).
/// 3: `EndpointInfo` gained `ipv6` and `ipv6_link_local` (IPv6 source
/// validation, issue 16 item 1); `weir_conntrack` holds TCP only, other
/// protocols are in `weir_conntrack_any`; `weir_ct_budget` (issue 16
/// item 6); `weir_netns_owners` (socket-LB drops name their pod, issue 18
/// item 4).
///
/// Not versioned, because no existing layout changed: the IPv6 socket LB
/// maps (`weir_lb6_services`, `weir_lb6_backends`, `weir_lb6_sock_revnat`)
/// are new maps; an earlier agent's pins of the IPv4 maps stay valid.
/// Likewise `weir_lb6_nat` (IPv6 NodePort).
///
/// Not versioned, because the sizes tell: `CtEntry` gained
/// `policy_revision` (32 to 40 bytes; the layout check replaces the
/// conntrack pins) and `weir_policy_revision` is a new map (issue 17
/// item 2).
pub const ABI_VERSION: u32 = 3;

/// Names of the maps the datapath object defines. User space opens maps by
/// these names; the kernel crate declares them with the same constants.
pub mod map_names {
    /// Per-CPU packet/byte counters keyed by [`crate::MetricsKey`].
    pub const METRICS: &str = "weir_metrics";
    /// Local endpoints by host ifindex ([`crate::EndpointKey`]).
    pub const ENDPOINTS: &str = "weir_endpoints";
    /// Address/prefix to identity (LPM, [`crate::IpcacheKey`]).
    pub const IPCACHE: &str = "weir_ipcache";
    /// Policy entries of every endpoint (LPM, [`crate::PolicyKey`]).
    pub const POLICY: &str = "weir_policy";
    /// Connection tracking of TCP ([`crate::CtKey`]).
    pub const CONNTRACK: &str = "weir_conntrack";
    /// Connection tracking of every other protocol ([`crate::CtKey`]): a
    /// map of its own, so floods of UDP or ICMP cannot evict TCP
    /// connections.
    pub const CONNTRACK_ANY: &str = "weir_conntrack_any";
    /// Both conntrack maps.
    pub const CONNTRACK_MAPS: [&str; 2] = [CONNTRACK, CONNTRACK_ANY];
    /// Ring buffer of [`crate::FlowEvent`] records.
    pub const EVENTS: &str = "weir_events";
    /// Per-CPU array, index 0: events lost because the ring was full.
    pub const EVENT_LOSS: &str = "weir_event_loss";
    /// Service frontends and their backend slots ([`crate::lb::Lb4Key`]).
    pub const LB4_SERVICES: &str = "weir_lb4_services";
    /// Backends by id ([`crate::lb::Lb4Backend`]).
    pub const LB4_BACKENDS: &str = "weir_lb4_backends";
    /// Frontends by reverse-NAT id ([`crate::lb::Lb4RevNat`]).
    pub const LB4_REVNAT: &str = "weir_lb4_revnat";
    /// Maglev lookup tables, one block of the table size per service.
    pub const LB4_MAGLEV: &str = "weir_lb4_maglev";
    /// Session affinity ([`crate::lb::Lb4AffinityKey`]).
    pub const LB4_AFFINITY: &str = "weir_lb4_affinity";
    /// Socket LB reverse translation ([`crate::lb::Lb4SockKey`]).
    pub const LB4_SOCK_REVNAT: &str = "weir_lb4_sock_revnat";
    /// Per-packet service NAT ([`crate::lb::Lb4NatKey`]).
    pub const LB4_NAT: &str = "weir_lb4_nat";
    /// IPv6 service frontends and their backend slots
    /// ([`crate::lb::Lb6Key`]).
    pub const LB6_SERVICES: &str = "weir_lb6_services";
    /// IPv6 backends by id ([`crate::lb::Lb6Backend`]).
    pub const LB6_BACKENDS: &str = "weir_lb6_backends";
    /// Socket LB reverse translation of IPv6 sockets
    /// ([`crate::lb::Lb6SockKey`]).
    pub const LB6_SOCK_REVNAT: &str = "weir_lb6_sock_revnat";
    /// Per-packet NAT of IPv6 NodePorts ([`crate::lb::Lb6NatKey`]).
    pub const LB6_NAT: &str = "weir_lb6_nat";
    /// Every node's pod CIDR, for anti-spoofing on node devices (LPM,
    /// [`crate::PodCidrKey`]).
    pub const POD_CIDRS: &str = "weir_pod_cidrs";
    /// Every dual-stack node's IPv6 pod CIDR, for the tunnel (LPM,
    /// [`crate::PodCidr6Key`]).
    pub const POD_CIDRS6: &str = "weir_pod_cidrs6";
    /// Destinations masquerading leaves alone (LPM, [`crate::PodCidrKey`]
    /// -> u8 1): ip-masq-agent's `nonMasqueradeCIDRs`.
    pub const NON_MASQUERADE: &str = "weir_nonmasq";
    /// The first fragment's ports of IPv4 datagrams in flight
    /// ([`crate::Frag4Key`]).
    pub const FRAGMENTS: &str = "weir_fragments";
    /// Per-endpoint budget of new conntrack and service NAT entries, by
    /// endpoint id ([`crate::conntrack::CtBudget`]).
    pub const CT_BUDGET: &str = "weir_ct_budget";
    /// Who owns a network namespace, by netns cookie
    /// ([`crate::endpoint::NetnsOwner`]): the cgroup hooks see a socket's
    /// namespace, not its interface, and name the pod (or the node) of
    /// what they refuse with it.
    pub const NETNS_OWNERS: &str = "weir_netns_owners";
    /// Array, index 0: the policy revision (u64), moved by the agent after
    /// every change of what decides a verdict (policy entries, the
    /// ipcache, enforcement flags). Conntrack entries stamped with an
    /// older one are checked against policy again.
    pub const POLICY_REVISION: &str = "weir_policy_revision";
}

/// Names of the TC programs in the datapath object.
pub mod program_names {
    /// Host-side veth ingress: packets the pod sent.
    pub const FROM_POD: &str = "weir_from_pod";
    /// Host-side veth egress: packets on their way into the pod.
    pub const TO_POD: &str = "weir_to_pod";
    /// Node device ingress: packets arriving at the node from the network.
    pub const FROM_NETDEV: &str = "weir_from_netdev";
    /// Node device egress: packets leaving the node for the network.
    pub const TO_NETDEV: &str = "weir_to_netdev";
    /// Tunnel device ingress: decapsulated packets from other nodes.
    pub const FROM_OVERLAY: &str = "weir_from_overlay";
    /// Tunnel device egress: packets about to be encapsulated.
    pub const TO_OVERLAY: &str = "weir_to_overlay";
    /// cgroup connect4: socket LB for connected sockets.
    pub const SOCK_CONNECT4: &str = "weir_sock_connect4";
    /// cgroup sendmsg4: socket LB for unconnected UDP.
    pub const SOCK_SENDMSG4: &str = "weir_sock_sendmsg4";
    /// cgroup recvmsg4: replies of unconnected UDP appear from the frontend.
    pub const SOCK_RECVMSG4: &str = "weir_sock_recvmsg4";
    /// cgroup getpeername4: a translated socket's peer is the frontend.
    pub const SOCK_GETPEERNAME4: &str = "weir_sock_getpeername4";
    /// cgroup connect6: socket LB for connected IPv6 sockets.
    pub const SOCK_CONNECT6: &str = "weir_sock_connect6";
    /// cgroup sendmsg6: socket LB for unconnected IPv6 UDP.
    pub const SOCK_SENDMSG6: &str = "weir_sock_sendmsg6";
    /// cgroup recvmsg6: IPv6 replies of unconnected UDP appear from the
    /// frontend.
    pub const SOCK_RECVMSG6: &str = "weir_sock_recvmsg6";
    /// cgroup getpeername6: a translated IPv6 socket's peer is the frontend.
    pub const SOCK_GETPEERNAME6: &str = "weir_sock_getpeername6";
}

#[cfg(test)]
mod tests;
