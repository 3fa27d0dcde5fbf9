//! Datapath events: one `FlowEvent` per reported packet into the
//! `weir_events` ring buffer, lost events counted in `weir_event_loss`.
//!
//! What is reported depends on the monitor aggregation level (a global the
//! agent sets at load time): with `AGGREGATION_NONE` every packet; otherwise
//! (default) every drop, new connections, TCP SYN/FIN/RST and policy
//! verdicts of new connections — an established connection does not emit an
//! event per packet.

use aya_ebpf::helpers::generated::bpf_ktime_get_ns;
use aya_ebpf::macros::map;
use aya_ebpf::maps::{PerCpuArray, RingBuf};
use weir_abi::events::*;
use weir_abi::{FlowEvent, Reason, TrafficDirection};

use crate::parse::Flow;
use crate::policy;

/// 1 MiB: about 13,000 events of backlog for the agent.
const EVENTS_BYTES: u32 = 1 << 20;

#[map(name = "weir_events")]
static EVENTS: RingBuf = RingBuf::pinned(EVENTS_BYTES, 0);

#[map(name = "weir_event_loss")]
static EVENT_LOSS: PerCpuArray<u64> = PerCpuArray::pinned(1, 0);

/// Monitor aggregation level; set by the loader (`EbpfLoader::set_global`).
#[unsafe(no_mangle)]
static WEIR_MONITOR_AGGREGATION: u8 = AGGREGATION_MEDIUM;

const TCP_SYN_FIN_RST: u8 = 0x01 | 0x02 | 0x04;
/// Not a `FlowEvent::ct_state` value: the packet bypassed conntrack.
const CT_UNTRACKED: u8 = 0xff;

/// What the program learned about a packet, for reporting.
#[derive(Copy, Clone)]
pub struct Report {
    pub flow: Flow,
    pub endpoint_id: u16,
    /// The local endpoint's identity (0 when none).
    pub endpoint_identity: u32,
    pub ct_state: u8,
    /// The peer's identity: before policy, what the tunnel header said of
    /// the sender of a packet into a pod (tunnel mode, handed on in the mark
    /// by `weir_from_overlay`); after, the identity policy decided by. 0
    /// when neither.
    pub peer_identity: u32,
    /// A policy decision was taken for this packet's new connection.
    pub policy_checked: bool,
    pub match_type: u8,
    /// The policy drop (a reason code) audit mode let pass; 0 if none.
    pub audited: u8,
}

impl Report {
    /// A report for a packet conntrack has not seen (no endpoint, not IP):
    /// only a drop makes it reported.
    pub const fn new() -> Report {
        Report {
            flow: Flow::empty(),
            endpoint_id: 0,
            endpoint_identity: 0,
            ct_state: CT_UNTRACKED,
            peer_identity: 0,
            policy_checked: false,
            match_type: MATCH_NONE,
            audited: 0,
        }
    }
}

fn aggregation() -> u8 {
    // SAFETY: reading a global of this object; volatile so the loader's
    // value is read instead of the compile-time initialiser.
    unsafe { core::ptr::read_volatile(&WEIR_MONITOR_AGGREGATION) }
}

/// What every event of one packet shares; [`emit`] adds its kind.
struct Common {
    endpoint_id: u16,
    ifindex: u32,
    len: u32,
    src_identity: u32,
    dst_identity: u32,
    flags: u8,
    ct_state: u8,
    match_type: u8,
}

/// Writes one event straight into the ring buffer (reserve, fill,
/// submit): the 80-byte record is never built on the stack, which the pod
/// programs need for their own state. A full ring counts a lost event.
#[inline(always)]
fn emit(flow: &Flow, common: &Common, kind: u8, subtype: u8, verdict_reason: u8) {
    let Some(mut entry) = EVENTS.reserve::<FlowEvent>(0) else {
        if let Some(lost) = EVENT_LOSS.get_ptr_mut(0) {
            // SAFETY: per-CPU slot of this CPU, from a successful lookup.
            unsafe { *lost += 1 };
        }
        return;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points at a reserved, exclusively owned record of
    // `size_of::<FlowEvent>()` bytes; zeroed first (padding included), so
    // the reference below is to an initialised integers-only struct.
    unsafe {
        record.write_bytes(0, 1);
        let event = &mut *record;
        event.kind = kind;
        event.subtype = subtype;
        event.endpoint_id = common.endpoint_id;
        event.ifindex = common.ifindex;
        event.timestamp_ns = bpf_ktime_get_ns();
        event.len = common.len;
        event.src_identity = common.src_identity;
        event.dst_identity = common.dst_identity;
        event.family = flow.family;
        event.protocol = flow.protocol;
        event.tcp_flags = flow.tcp_flags;
        event.icmp_type = flow.icmp_type;
        event.flags = common.flags;
        event.ct_state = common.ct_state;
        event.match_type = common.match_type;
        event.verdict_reason = verdict_reason;
        event.saddr = flow.saddr;
        event.daddr = flow.daddr;
        event.sport = flow.sport;
        event.dport = flow.dport;
    }
    entry.submit(0);
}

/// Reports the packet as the aggregation level asks. `pod` is true for the
/// pod programs (observation points to/from endpoint) and false for node
/// devices (from/to network).
#[inline(always)]
pub fn report(
    report: &Report,
    reason: Reason,
    direction: TrafficDirection,
    pod: bool,
    ifindex: u32,
    len: u32,
) {
    let flow = &report.flow;
    let dropped = reason.is_drop();
    let tracked = report.ct_state != CT_UNTRACKED;
    let new_or_flags =
        tracked && (report.ct_state == CT_NEW || flow.tcp_flags & TCP_SYN_FIN_RST != 0);
    let verdict = report.policy_checked && report.ct_state == CT_NEW;
    if !dropped && !verdict && !new_or_flags && aggregation() != AGGREGATION_NONE {
        return;
    }
    let ingress = direction == TrafficDirection::Ingress;
    // The endpoint's identity is on its side; the peer's comes from the
    // ipcache (looked up only here, for packets that are reported).
    let (src_identity, dst_identity) = if !flow.is_ip() {
        (0, 0)
    } else if pod && ingress {
        (
            policy::identity_of(flow.family, &flow.saddr),
            report.endpoint_identity,
        )
    } else if pod {
        (
            report.endpoint_identity,
            policy::identity_of(flow.family, &flow.daddr),
        )
    } else {
        (
            policy::identity_of(flow.family, &flow.saddr),
            policy::identity_of(flow.family, &flow.daddr),
        )
    };
    let mut flags = 0;
    if report.ct_state == CT_REPLY {
        flags |= FlowEvent::FLAG_REPLY;
    }
    if ingress {
        flags |= FlowEvent::FLAG_INGRESS;
    }
    if report.audited != 0 {
        flags |= FlowEvent::FLAG_AUDIT;
    }
    let common = Common {
        endpoint_id: report.endpoint_id,
        ifindex,
        len,
        src_identity,
        dst_identity,
        flags,
        // Untracked packets are reported as established (no connection).
        ct_state: if tracked {
            report.ct_state
        } else {
            CT_ESTABLISHED
        },
        match_type: report.match_type,
    };
    if verdict {
        let verdict_reason = if dropped {
            reason as u8
        } else {
            report.audited
        };
        emit(flow, &common, EVENT_POLICY_VERDICT, 0, verdict_reason);
    }
    if dropped {
        emit(flow, &common, EVENT_DROP, reason as u8, 0);
    } else if new_or_flags || aggregation() == AGGREGATION_NONE {
        let point = match (pod, ingress) {
            (true, true) => OBS_TO_ENDPOINT,
            (true, false) => OBS_FROM_ENDPOINT,
            (false, true) => OBS_FROM_NETWORK,
            (false, false) => OBS_TO_NETWORK,
        };
        emit(flow, &common, EVENT_TRACE, point, 0);
    }
}
