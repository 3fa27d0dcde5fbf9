//! Weir's kernel programs: TC classifiers for a pod's host-side veth and for
//! a node's network device.
//!
//! Every program parses the packet (Ethernet, IPv4/IPv6 with extension
//! headers, TCP/UDP/ICMP/ICMPv6/SCTP) and counts it into the per-CPU metrics
//! map under (reason, direction). Packets with a truncated or inconsistent
//! L3/L4 header are dropped with their own reason: a header the datapath
//! cannot read is a header that policy could not be enforced on. The pod
//! programs then apply conntrack and identity-based policy (`pod.rs`); the
//! netdev programs drop pod sources that cannot come from where they did
//! (`antispoof.rs`) and balance services (`nodeport.rs`).
#![no_std]
#![no_main]

mod antispoof;
mod budget;
mod conntrack;
mod debug;
mod events;
mod fragments;
mod icmp_error;
mod lb;
mod maps;
mod masquerade;
mod metrics;
mod nodeport;
mod overlay;
mod packet;
mod parse;
mod pod;
mod policy;
mod redirect;
mod reject;
mod scratch;
mod sock;

use aya_ebpf::bindings::{TC_ACT_OK, TC_ACT_SHOT};
use aya_ebpf::macros::{cgroup_sock_addr, classifier};
use aya_ebpf::programs::{SockAddrContext, TcContext};
use events::Report;
use weir_abi::ipcache::{FAMILY_IPV4, FAMILY_IPV6};
use weir_abi::{Reason, TrafficDirection};

/// Host-side veth ingress: what the pod sent (the pod's egress).
#[classifier]
pub fn weir_from_pod(ctx: TcContext) -> i32 {
    handle_pod(&ctx, TrafficDirection::Egress)
}

/// Host-side veth egress: what is about to enter the pod (its ingress).
#[classifier]
pub fn weir_to_pod(ctx: TcContext) -> i32 {
    handle_pod(&ctx, TrafficDirection::Ingress)
}

/// Node device ingress: what arrives at the node from the network.
#[classifier]
pub fn weir_from_netdev(ctx: TcContext) -> i32 {
    handle(&ctx, TrafficDirection::Ingress)
}

/// Node device egress: what leaves the node for the network.
#[classifier]
pub fn weir_to_netdev(ctx: TcContext) -> i32 {
    handle(&ctx, TrafficDirection::Egress)
}

/// Tunnel device ingress: what other nodes sent through the tunnel.
#[classifier]
pub fn weir_from_overlay(ctx: TcContext) -> i32 {
    handle_overlay(&ctx, TrafficDirection::Ingress)
}

/// Tunnel device egress: what this node sends through the tunnel.
#[classifier]
pub fn weir_to_overlay(ctx: TcContext) -> i32 {
    handle_overlay(&ctx, TrafficDirection::Egress)
}

/// Socket LB: a connecting socket is sent to a backend of the service.
#[cgroup_sock_addr(connect4)]
pub fn weir_sock_connect4(ctx: SockAddrContext) -> i32 {
    sock::translate(&ctx)
}

/// Socket LB for unconnected UDP: each datagram to a frontend.
#[cgroup_sock_addr(sendmsg4)]
pub fn weir_sock_sendmsg4(ctx: SockAddrContext) -> i32 {
    sock::translate(&ctx)
}

/// Datagrams from a backend appear to come from the frontend.
#[cgroup_sock_addr(recvmsg4)]
pub fn weir_sock_recvmsg4(ctx: SockAddrContext) -> i32 {
    sock::reverse(&ctx)
}

/// A translated socket's peer is the frontend it connected to.
#[cgroup_sock_addr(getpeername4)]
pub fn weir_sock_getpeername4(ctx: SockAddrContext) -> i32 {
    sock::reverse(&ctx)
}

/// Socket LB for IPv6: a connecting socket is sent to a backend.
#[cgroup_sock_addr(connect6)]
pub fn weir_sock_connect6(ctx: SockAddrContext) -> i32 {
    sock::translate6(&ctx)
}

/// Socket LB for unconnected IPv6 UDP: each datagram to a frontend.
#[cgroup_sock_addr(sendmsg6)]
pub fn weir_sock_sendmsg6(ctx: SockAddrContext) -> i32 {
    sock::translate6(&ctx)
}

/// IPv6 datagrams from a backend appear to come from the frontend.
#[cgroup_sock_addr(recvmsg6)]
pub fn weir_sock_recvmsg6(ctx: SockAddrContext) -> i32 {
    sock::reverse6(&ctx)
}

/// A translated IPv6 socket's peer is the frontend it connected to.
#[cgroup_sock_addr(getpeername6)]
pub fn weir_sock_getpeername6(ctx: SockAddrContext) -> i32 {
    sock::reverse6(&ctx)
}

#[inline(always)]
fn handle(ctx: &TcContext, direction: TrafficDirection) -> i32 {
    let parsed = parse::parse(ctx);
    let outcome = match &parsed {
        // Anti-spoofing first: it judges the source as it arrived, before
        // service NAT rewrites anything.
        Ok(flow) if direction == TrafficDirection::Ingress => {
            match antispoof::from_network(ctx, flow) {
                checked if checked.drop_reason().is_some() => checked,
                _ => nodeport::handle(ctx, flow, direction),
            }
        }
        Ok(flow) => nodeport::handle(ctx, flow, direction),
        Err(_) => nodeport::Outcome::CONTINUE,
    };
    let action = netdev_verdict(ctx, direction, &parsed, outcome);
    // Counted and reported as a drop (no backend) above; a new connection
    // is also answered, so the client fails at once.
    if outcome.drop_reason() == Some(Reason::DropNoService) {
        if let Some(action) = reject::port_unreachable(ctx) {
            return action;
        }
    }
    if let Some(action) = outcome.redirect() {
        return action;
    }
    to_local_pod(ctx, direction, &parsed, action)
}

/// eBPF host routing from a node or tunnel device: a packet from the
/// network for one of this node's pods that passed goes straight to the
/// pod's interface (redirect.rs), where `weir_to_pod` runs as usual.
/// Decided on the destination as it arrived: what service NAT rewrote
/// (NodePort to a local backend) takes the stack.
#[inline(always)]
fn to_local_pod(
    ctx: &TcContext,
    direction: TrafficDirection,
    parsed: &Result<parse::Flow, Reason>,
    action: i32,
) -> i32 {
    if let Ok(flow) = parsed {
        if direction == TrafficDirection::Ingress && action == TC_ACT_OK && redirect::enabled() {
            let daddr = &flow.daddr;
            if flow.family == FAMILY_IPV4 {
                return redirect::route(
                    ctx,
                    u32::from_ne_bytes([daddr[0], daddr[1], daddr[2], daddr[3]]),
                    true,
                );
            }
            if flow.family == FAMILY_IPV6 {
                return redirect::route6(ctx, *daddr, true);
            }
        }
    }
    action
}

/// The tunnel device's packets (`overlay.rs`): the tunnel key on the way
/// out, the sender's check and identity on the way in; counted and reported
/// as a node device's.
#[inline(always)]
fn handle_overlay(ctx: &TcContext, direction: TrafficDirection) -> i32 {
    let parsed = parse::parse(ctx);
    let reason = match (&parsed, direction) {
        (Ok(flow), TrafficDirection::Ingress) => overlay::from_overlay(ctx, flow),
        (Ok(flow), TrafficDirection::Egress) => overlay::to_overlay(ctx, flow),
        (Err(reason), _) => *reason,
    };
    let outcome = if reason.is_drop() {
        nodeport::Outcome::drop(reason)
    } else {
        nodeport::Outcome::CONTINUE
    };
    let action = netdev_verdict(ctx, direction, &parsed, outcome);
    to_local_pod(ctx, direction, &parsed, action)
}

/// Counts and reports a node-device packet. A function of its own (a
/// BPF-to-BPF call) so that its frame and service NAT's are never on the
/// stack together (the report and the event themselves are in per-CPU
/// scratch and the ring buffer).
#[inline(never)]
fn netdev_verdict(
    ctx: &TcContext,
    direction: TrafficDirection,
    parsed: &Result<parse::Flow, Reason>,
    outcome: nodeport::Outcome,
) -> i32 {
    let Some(report) = scratch::report() else {
        return TC_ACT_SHOT;
    };
    let reason = match parsed {
        Ok(flow) => {
            report.flow = *flow;
            outcome.drop_reason().unwrap_or(Reason::Forwarded)
        }
        Err(reason) => *reason,
    };
    // On a node device nothing is tracked: only drops are reported (with
    // aggregation off, every packet).
    verdict(ctx, direction, reason, report, false)
}

#[inline(always)]
fn handle_pod(ctx: &TcContext, direction: TrafficDirection) -> i32 {
    // The packet's state lives in per-CPU scratch, not on the stack.
    let Some(report) = scratch::report() else {
        return TC_ACT_SHOT;
    };
    let reason = match parse::parse(ctx) {
        Err(reason) => reason,
        Ok(flow) => {
            report.flow = flow;
            pod_path(ctx, direction, report)
        }
    };
    let action = verdict(ctx, direction, reason, report, true);
    // eBPF host routing: a from-pod packet that passed goes straight to the
    // device the node routes it through (redirect.rs), after it was counted
    // and reported like any other.
    if direction == TrafficDirection::Egress && action == TC_ACT_OK && redirect::enabled() {
        let daddr = &report.flow.daddr;
        if report.flow.family == FAMILY_IPV4 {
            return redirect::route(
                ctx,
                u32::from_ne_bytes([daddr[0], daddr[1], daddr[2], daddr[3]]),
                false,
            );
        }
        if report.flow.family == FAMILY_IPV6 {
            return redirect::route6(ctx, *daddr, false);
        }
    }
    action
}

/// Service NAT, conntrack and policy for a parsed packet of a pod
/// interface; `report.flow` is the packet (translated in place).
#[inline(always)]
fn pod_path(ctx: &TcContext, direction: TrafficDirection, report: &mut Report) -> Reason {
    let egress = direction == TrafficDirection::Egress;
    // One endpoint lookup per packet, for both calls below.
    let endpoint = if report.flow.is_ip() {
        pod::lookup(ifindex(ctx))
    } else {
        core::ptr::null()
    };
    // The pod's source and endpoint first: nothing it sends from an address
    // it does not own, or before it is ready, reaches service NAT (which
    // inserts entries into shared maps).
    let admitted = if egress {
        pod::admit(endpoint, report)
    } else {
        // Tunnel mode: the sender's identity, from the tunnel header.
        // SAFETY: reading a field of the context the kernel passed in.
        let mark = unsafe { (*ctx.skb.skb).mark };
        report.peer_identity = weir_abi::overlay::mark_identity(mark).unwrap_or(0);
        Reason::Forwarded
    };
    // Service NAT and the pod path are sibling calls of this function (not
    // nested): nested, their frames exceed the 512-byte stack. Services
    // first (policy must see the backend) ...
    let lb = if admitted.is_drop() {
        nodeport::Outcome::drop(admitted)
    } else if egress {
        nodeport::pod_egress(ctx, &mut report.flow, report.endpoint_id)
    } else {
        nodeport::Outcome::CONTINUE
    };
    if let Some(reason) = lb.drop_reason() {
        return reason;
    }
    // ICMP errors: whether the packet they quote is tracked (a sibling call
    // too: below the pod path there is no room).
    let related =
        icmp_error::is_error(&report.flow) && icmp_error::related(ctx, &report.flow, direction);
    match pod::handle(endpoint, direction, related, report) {
        Err(reason) => reason,
        // ... replies translated back last (conntrack and policy saw the
        // backend's packet).
        Ok(()) if !egress && report.ct_state == weir_abi::events::CT_REPLY => {
            nodeport::pod_ingress(ctx, &report.flow)
                .drop_reason()
                .unwrap_or(Reason::Forwarded)
        }
        // ... as are the quotes of errors about them.
        Ok(()) if !egress && report.ct_state == weir_abi::events::CT_RELATED => {
            icmp_error::to_pod(ctx, &report.flow)
                .drop_reason()
                .unwrap_or(Reason::Forwarded)
        }
        Ok(()) => Reason::Forwarded,
    }
}

#[inline(always)]
fn verdict(
    ctx: &TcContext,
    direction: TrafficDirection,
    reason: Reason,
    report: &Report,
    pod: bool,
) -> i32 {
    metrics::account(direction, reason, ctx.len());
    events::report(report, reason, direction, pod, ifindex(ctx), ctx.len());
    if reason.is_drop() {
        TC_ACT_SHOT
    } else {
        TC_ACT_OK
    }
}

/// The interface the program runs on.
#[inline(always)]
fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: reading a field of the context the kernel passed in.
    unsafe { (*ctx.skb.skb).ifindex }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach a panic, so this is
    // never executed; it exists because no_std requires a handler.
    loop {}
}

/// The license the kernel checks before allowing GPL-only helpers: the
/// kernel's spelling (include/linux/module.h) of this crate's
/// `MIT OR GPL-2.0-only`, GPL v2 or MIT at the user's choice.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
