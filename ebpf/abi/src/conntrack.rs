//! Connection tracking (`weir_conntrack`): an LRU hash of flows seen by the
//! pod programs, so replies of allowed connections pass.
//!
//! Entries are scoped: the from-pod program creates [`CT_SCOPE_EGRESS`]
//! entries (connections a local pod opened) and the to-pod program
//! [`CT_SCOPE_INGRESS`] entries (connections a local pod accepted), so two
//! pods on one node each get their own policy check for the same flow.

/// Scope of a conntrack entry.
pub const CT_SCOPE_EGRESS: u8 = 1;
pub const CT_SCOPE_INGRESS: u8 = 2;

/// Timeouts (nanoseconds of `bpf_ktime_get_ns`), as Cilium's defaults.
pub const CT_TIMEOUT_TCP_SYN_NS: u64 = 60 * 1_000_000_000;
pub const CT_TIMEOUT_TCP_ESTABLISHED_NS: u64 = 21_600 * 1_000_000_000;
pub const CT_TIMEOUT_TCP_CLOSE_NS: u64 = 10 * 1_000_000_000;
pub const CT_TIMEOUT_OTHER_NS: u64 = 60 * 1_000_000_000;

/// Key of `weir_conntrack`: the flow in the direction it was opened.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Network byte order. ICMP echo: the identifier as source port, 0 as
    /// destination port (replies are looked up reversed).
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub protocol: u8,
    /// `FAMILY_IPV4` or `FAMILY_IPV6`.
    pub family: u8,
    /// [`CT_SCOPE_EGRESS`] or [`CT_SCOPE_INGRESS`].
    pub scope: u8,
    pub pad: u8,
}

/// Value of `weir_conntrack`.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    /// When the entry expires (`bpf_ktime_get_ns` time).
    pub expires_ns: u64,
    /// Packets seen in the opening direction and in reply.
    pub packets_forward: u64,
    pub packets_reply: u64,
    /// TCP flags seen in either direction (OR of the flag bytes).
    pub tcp_flags: u8,
    pub pad: [u8; 7],
}

impl CtEntry {
    pub const TCP_FIN: u8 = 0x01;
    pub const TCP_SYN: u8 = 0x02;
    pub const TCP_RST: u8 = 0x04;
    pub const TCP_ACK: u8 = 0x10;
}

const _: () = assert!(size_of::<CtKey>() == 40);
const _: () = assert!(size_of::<CtEntry>() == 32);

// SAFETY: repr(C), integers only, no implicit padding (sizes pinned above).
#[cfg(feature = "user")]
unsafe impl aya::Pod for CtKey {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for CtEntry {}
