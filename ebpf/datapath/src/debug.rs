//! Debug events: aya-log messages at the points that explain a verdict
//! (conntrack state, the policy lookup and its outcome, service backend
//! selection), compiled in and off by default. The agent switches them on
//! at run time, for the whole node or per endpoint, by writing
//! `weir_debug` (no reload); aya-log's user-space side reads them from its
//! ring buffer into the agent's log and `weir monitor --type debug`.
//!
//! Disabled, a log point costs the check in [`enabled`] (two array
//! lookups the verifier inlines). Each message is written by a global
//! function (`weir_debug_*`: its own symbol, not mangled) taking plain
//! scalars: the verifier checks a global function once, on its own,
//! instead of on every path of the caller that reaches it. aya-log's
//! formatting code inlined into the pod path (or in static functions)
//! took the pod programs past the verifier's million instructions.

use aya_ebpf::macros::map;
use aya_ebpf::maps::Array;
use aya_log_ebpf::debug;
use weir_abi::ipcache::FAMILY_IPV4;
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

fn direction_name(direction: u32) -> &'static str {
    if direction == TrafficDirection::Egress as u32 {
        "egress"
    } else {
        "ingress"
    }
}

fn ct_name(ct_state: u32) -> &'static str {
    match ct_state as u8 {
        weir_abi::events::CT_NEW => "new",
        weir_abi::events::CT_ESTABLISHED => "established",
        weir_abi::events::CT_REPLY => "reply",
        weir_abi::events::CT_RELATED => "related",
        _ => "untracked",
    }
}

/// The first four bytes of an address, as one number (IPv4).
fn ipv4(addr: &[u8]) -> u32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&addr[..4]);
    u32::from_be_bytes(bytes)
}

/// Packs four bytes into one scalar argument.
const fn pack(a: u8, b: u8, c: u8, d: u8) -> u32 {
    u32::from_le_bytes([a, b, c, d])
}

/// Byte `n` (0 lowest) of `packed`.
const fn byte(packed: u32, n: u32) -> u32 {
    (packed >> (8 * n)) & 0xff
}

/// The conntrack state of a pod's packet: "ep 7 egress: ct new proto 6
/// 10.244.1.5:40000 -> 10.244.2.9:80" (IPv6: ports only).
#[inline(always)]
pub fn conntrack(report: &Report, direction: TrafficDirection) {
    let flow: &Flow = &report.flow;
    let ports =
        u32::from(u16::from_be_bytes(flow.sport)) << 16 | u32::from(u16::from_be_bytes(flow.dport));
    weir_debug_conntrack(
        u32::from(report.endpoint_id),
        pack(direction as u8, report.ct_state, flow.protocol, flow.family),
        ports,
        ipv4(&flow.saddr),
        ipv4(&flow.daddr),
    );
}

#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn weir_debug_conntrack(
    endpoint_id: u32,
    what: u32,
    ports: u32,
    saddr: u32,
    daddr: u32,
) -> i32 {
    let (direction, ct, protocol) = (
        direction_name(byte(what, 0)),
        ct_name(byte(what, 1)),
        byte(what, 2),
    );
    if byte(what, 3) == u32::from(FAMILY_IPV4) {
        debug!(
            &(),
            "ep {} {}: ct {} proto {} {:i}:{} -> {:i}:{}",
            endpoint_id,
            direction,
            ct,
            protocol,
            saddr,
            ports >> 16,
            daddr,
            ports & 0xffff
        );
    } else {
        debug!(
            &(),
            "ep {} {}: ct {} proto {} ipv6 sport {} dport {}",
            endpoint_id,
            direction,
            ct,
            protocol,
            ports >> 16,
            ports & 0xffff
        );
    }
    0
}

/// A policy lookup and its outcome: "ep 7 egress: policy peer identity
/// 40012 address identity 0 proto 6 port 80: allowed (match 2)", or
/// "dropped, reason 133".
#[inline(always)]
pub fn policy(report: &Report, direction: TrafficDirection, address: u32, drop_reason: u8) {
    weir_debug_policy(
        u32::from(report.endpoint_id),
        pack(
            direction as u8,
            report.flow.protocol,
            drop_reason,
            report.match_type,
        ),
        report.peer_identity,
        address,
        u32::from(u16::from_be_bytes(report.flow.dport)),
    );
}

#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn weir_debug_policy(
    endpoint_id: u32,
    what: u32,
    peer: u32,
    address: u32,
    port: u32,
) -> i32 {
    let (direction, protocol, reason, match_type) = (
        direction_name(byte(what, 0)),
        byte(what, 1),
        byte(what, 2),
        byte(what, 3),
    );
    if reason == 0 {
        debug!(
            &(),
            "ep {} {}: policy peer identity {} address identity {} proto {} port {}: allowed (match {})",
            endpoint_id,
            direction,
            peer,
            address,
            protocol,
            port,
            match_type
        );
    } else {
        debug!(
            &(),
            "ep {} {}: policy peer identity {} address identity {} proto {} port {}: dropped, reason {} (match {})",
            endpoint_id,
            direction,
            peer,
            address,
            protocol,
            port,
            reason,
            match_type
        );
    }
    0
}

/// A service connection of a pod sent to a backend: "ep 7 egress: service
/// 10.96.0.10:53 proto 17 -> backend 10.244.2.9:53 (new)".
#[inline(always)]
pub fn service(endpoint_id: u16, frontend: &Flow, backend: [u8; 4], port: [u8; 2], new: bool) {
    let ports =
        u32::from(u16::from_be_bytes(frontend.dport)) << 16 | u32::from(u16::from_be_bytes(port));
    weir_debug_service(
        u32::from(endpoint_id),
        pack(frontend.protocol, u8::from(new), 0, 0),
        ipv4(&frontend.daddr),
        u32::from_be_bytes(backend),
        ports,
    );
}

#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn weir_debug_service(
    endpoint_id: u32,
    what: u32,
    frontend: u32,
    backend: u32,
    ports: u32,
) -> i32 {
    debug!(
        &(),
        "ep {} egress: service {:i}:{} proto {} -> backend {:i}:{} ({})",
        endpoint_id,
        frontend,
        ports >> 16,
        byte(what, 0),
        backend,
        ports & 0xffff,
        if byte(what, 1) != 0 {
            "new"
        } else {
            "established"
        }
    );
    0
}
