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
    /// The policy revision (`weir_policy_revision`) at which the opening
    /// direction was last allowed: while the revision has not moved, the
    /// verdict holds and established packets skip the ipcache and policy
    /// lookups; once it moves, the next packet is checked again (and
    /// dropped if the new policy no longer allows it).
    pub policy_revision: u64,
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

/// Value of `weir_ct_budget` (an array indexed by endpoint id): the state
/// of the endpoint's budget of new entries as a generic cell rate algorithm
/// (GCRA, a token bucket kept as one time): each entry the endpoint's
/// packets insert moves `tat_ns` one interval (1 s / rate) ahead of
/// `max(tat_ns, now)`; an insertion that would put it more than the burst
/// tolerance (burst × interval) ahead of now is refused
/// ([`crate::Reason::DropRateLimited`]). Interval and tolerance are the
/// load-time globals `WEIR_CT_NEW_INTERVAL_NS` and
/// `WEIR_CT_NEW_TOLERANCE_NS`; an interval of 0 switches the budget off.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct CtBudget {
    /// The theoretical arrival time of the next entry (`bpf_ktime_get_ns`).
    pub tat_ns: u64,
}

/// The budget's two globals for a rate (entries per second, 0: no budget)
/// and a burst (entries), as (interval, tolerance) in nanoseconds.
pub const fn ct_budget_globals(rate_per_s: u32, burst: u32) -> (u64, u64) {
    if rate_per_s == 0 {
        return (0, 0);
    }
    let interval = 1_000_000_000 / rate_per_s as u64;
    let interval = if interval == 0 { 1 } else { interval };
    (interval, interval * burst as u64)
}

const _: () = assert!(size_of::<CtBudget>() == 8);
const _: () = assert!(size_of::<CtKey>() == 40);
const _: () = assert!(size_of::<CtEntry>() == 40);

// SAFETY: repr(C), integers only, no implicit padding (sizes pinned above).
#[cfg(feature = "user")]
unsafe impl aya::Pod for CtKey {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for CtEntry {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for CtBudget {}
