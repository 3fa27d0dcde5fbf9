//! Datapath events (`weir_events`, a ring buffer): one fixed-size record per
//! reported packet, decoded by the observer into flows.
//!
//! Kinds and numbers follow Cilium's monitor (drop 1, trace 4, policy
//! verdict 5; observation points; drop reasons are [`crate::Reason`]
//! codes) so the observer maps them to Hubble's enums one to one.

/// [`FlowEvent::kind`]: a packet was dropped; `subtype` is the reason.
pub const EVENT_DROP: u8 = 1;
/// A packet was forwarded; `subtype` is the observation point.
pub const EVENT_TRACE: u8 = 4;
/// A policy decision on a new connection; `subtype` is 0.
pub const EVENT_POLICY_VERDICT: u8 = 5;

/// Observation points (Cilium's `TRACE_*`, `bpf/lib/trace.h`). The
/// datapath reports the endpoint and network ones; the observer names all.
pub const OBS_TO_ENDPOINT: u8 = 0;
pub const OBS_TO_PROXY: u8 = 1;
pub const OBS_TO_HOST: u8 = 2;
pub const OBS_TO_STACK: u8 = 3;
pub const OBS_TO_OVERLAY: u8 = 4;
pub const OBS_FROM_ENDPOINT: u8 = 5;
pub const OBS_FROM_PROXY: u8 = 6;
pub const OBS_FROM_HOST: u8 = 7;
pub const OBS_FROM_STACK: u8 = 8;
pub const OBS_FROM_OVERLAY: u8 = 9;
pub const OBS_FROM_NETWORK: u8 = 10;
pub const OBS_TO_NETWORK: u8 = 11;

/// Policy match types (Hubble's `policy_match_type`). The datapath reports
/// none to all; the last two are Cilium's protocol-only rules.
pub const MATCH_NONE: u8 = 0;
pub const MATCH_L3_ONLY: u8 = 1;
pub const MATCH_L3_L4: u8 = 2;
pub const MATCH_L4_ONLY: u8 = 3;
pub const MATCH_ALL: u8 = 4;
pub const MATCH_L3_PROTO: u8 = 5;
pub const MATCH_PROTO_ONLY: u8 = 6;

/// A policy match type as Cilium's `PolicyMatchType` prints it (the
/// `match` label of `hubble_policy_verdicts_total`, `weir monitor`); unknown
/// values are "none".
pub fn match_type_name(value: u8) -> &'static str {
    match value {
        MATCH_L3_ONLY => "l3-only",
        MATCH_L3_L4 => "l3-l4",
        MATCH_L4_ONLY => "l4-only",
        MATCH_ALL => "all",
        MATCH_L3_PROTO => "l3-proto",
        MATCH_PROTO_ONLY => "proto-only",
        _ => "none",
    }
}

/// [`FlowEvent::ct_state`] codes.
pub const CT_NEW: u8 = 0;
pub const CT_ESTABLISHED: u8 = 1;
pub const CT_REPLY: u8 = 2;
/// An ICMP/ICMPv6 error whose quoted header belongs to a tracked
/// connection: it passes without policy.
pub const CT_RELATED: u8 = 3;

/// Monitor aggregation (global `WEIR_MONITOR_AGGREGATION` of the object):
/// report every packet...
pub const AGGREGATION_NONE: u8 = 0;
/// ...or only new connections, TCP SYN/FIN/RST, and every drop (default).
pub const AGGREGATION_MEDIUM: u8 = 3;

/// One event record. Fields not meaningful for a kind are zero.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    /// [`EVENT_DROP`], [`EVENT_TRACE`] or [`EVENT_POLICY_VERDICT`].
    pub kind: u8,
    /// Drop: reason code. Trace: observation point. Verdict: 0.
    pub subtype: u8,
    /// The local endpoint the program ran for (0 on node devices).
    pub endpoint_id: u16,
    pub ifindex: u32,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC).
    pub timestamp_ns: u64,
    /// Length of the whole packet.
    pub len: u32,
    pub src_identity: u32,
    pub dst_identity: u32,
    /// 0 when not IP, else 4 or 6.
    pub family: u8,
    pub protocol: u8,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    /// [`FlowEvent::FLAG_REPLY`] | [`FlowEvent::FLAG_INGRESS`] |
    /// [`FlowEvent::FLAG_AUDIT`].
    pub flags: u8,
    /// [`CT_NEW`], [`CT_ESTABLISHED`], [`CT_REPLY`] or [`CT_RELATED`].
    pub ct_state: u8,
    /// Policy verdict events: [`MATCH_NONE`]..[`MATCH_ALL`].
    pub match_type: u8,
    /// Policy verdict events: 0 if allowed, else the drop reason.
    pub verdict_reason: u8,
    pub pad0: [u8; 4],
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Network byte order.
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub pad1: [u8; 4],
}

impl FlowEvent {
    /// The packet belongs to the reply direction of a tracked connection.
    pub const FLAG_REPLY: u8 = 1;
    /// The packet travels toward the endpoint (its ingress).
    pub const FLAG_INGRESS: u8 = 2;
    /// Policy verdict events: the endpoint is in audit mode, so the drop
    /// named by `verdict_reason` was not made (Hubble's verdict AUDIT).
    pub const FLAG_AUDIT: u8 = 4;
}

const _: () = assert!(size_of::<FlowEvent>() == 80);
const _: () = assert!(align_of::<FlowEvent>() == 8);

// SAFETY: repr(C), integers only, explicit padding (size pinned above).
#[cfg(feature = "user")]
unsafe impl aya::Pod for FlowEvent {}
