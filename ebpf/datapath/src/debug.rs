//! Debug events: aya-log messages at the points that explain a verdict
//! (conntrack state, the policy lookup and its outcome, service backend
//! selection), compiled in and off by default. The agent switches them on
//! at run time, for the whole node or per endpoint, by writing
//! `weir_debug` (no reload); aya-log's user-space side reads them from its
//! ring buffer into the agent's log and GetDebugEvents.
//!
//! Disabled, a log point costs the check in [`enabled`] (two array
//! lookups the verifier inlines). The messages are written by functions of
//! their own (`#[inline(never)]`), so the formatting code is off the hot
//! path and out of its stack frame.

use aya_ebpf::macros::map;
use aya_ebpf::maps::Array;
use aya_log_ebpf::debug;
use weir_abi::TrafficDirection;

use crate::events::Report;
use crate::parse::Flow;

/// Index 0: the whole node (endpoint id 0 is never a pod's; it is what
/// the node-device programs run as); index N: endpoint N. Non-zero: on.
/// Not pinned: a new agent starts with debugging off.
#[map(name = "weir_debug")]
static DEBUG: Array<u8> = Array::with_max_entries(65_536, 0);

/// Whether debug events are on for `endpoint_id`.
#[inline(always)]
pub fn enabled(endpoint_id: u16) -> bool {
    let on = |index: u32| DEBUG.get(index).is_some_and(|flag| *flag != 0);
    on(0) || (endpoint_id != 0 && on(u32::from(endpoint_id)))
}

const fn direction_name(direction: TrafficDirection) -> &'static str {
    match direction {
        TrafficDirection::Egress => "egress",
        TrafficDirection::Ingress => "ingress",
    }
}

const fn ct_name(ct_state: u8) -> &'static str {
    match ct_state {
        weir_abi::events::CT_NEW => "new",
        weir_abi::events::CT_ESTABLISHED => "established",
        weir_abi::events::CT_REPLY => "reply",
        weir_abi::events::CT_RELATED => "related",
        _ => "untracked",
    }
}

fn ipv4(addr: &[u8; 16]) -> [u8; 4] {
    [addr[0], addr[1], addr[2], addr[3]]
}

/// The conntrack state of a pod's packet: "ep 7 egress: ct new proto 6
/// sport 40000 dport 80". Addresses are left out: each argument costs the
/// verifier, and this point is reached on every path of the pod programs
/// (with the addresses, the programs exceeded its million instructions).
#[inline(never)]
pub fn conntrack(report: &Report, direction: TrafficDirection) {
    let flow: &Flow = &report.flow;
    debug!(
        &(),
        "ep {} {}: ct {} proto {} sport {} dport {}",
        report.endpoint_id,
        direction_name(direction),
        ct_name(report.ct_state),
        flow.protocol,
        u16::from_be_bytes(flow.sport),
        u16::from_be_bytes(flow.dport)
    );
}

/// A policy lookup and its outcome: "ep 7 egress: policy peer identity
/// 40012 address identity 0 proto 6 port 80: allowed (match 2)", or the
/// drop reason's code.
#[inline(never)]
pub fn policy(report: &Report, direction: TrafficDirection, address: u32, drop_reason: u8) {
    let flow: &Flow = &report.flow;
    let (id, dir, peer, port) = (
        report.endpoint_id,
        direction_name(direction),
        report.peer_identity,
        u16::from_be_bytes(flow.dport),
    );
    if drop_reason == 0 {
        debug!(
            &(),
            "ep {} {}: policy peer identity {} address identity {} proto {} port {}: allowed (match {})",
            id,
            dir,
            peer,
            address,
            flow.protocol,
            port,
            report.match_type
        );
    } else {
        debug!(
            &(),
            "ep {} {}: policy peer identity {} address identity {} proto {} port {}: dropped, reason {} (match {})",
            id,
            dir,
            peer,
            address,
            flow.protocol,
            port,
            drop_reason,
            report.match_type
        );
    }
}

/// A service connection of a pod sent to a backend: "ep 7 egress: service
/// 10.96.0.10:53 proto 17 -> backend 10.244.2.9:53 (new)".
#[inline(never)]
pub fn service(endpoint_id: u16, frontend: &Flow, backend: [u8; 4], port: [u8; 2], new: bool) {
    debug!(
        &(),
        "ep {} egress: service {:i}:{} proto {} -> backend {:i}:{} ({})",
        endpoint_id,
        ipv4(&frontend.daddr),
        u16::from_be_bytes(frontend.dport),
        frontend.protocol,
        backend,
        u16::from_be_bytes(port),
        if new { "new" } else { "established" }
    );
}
