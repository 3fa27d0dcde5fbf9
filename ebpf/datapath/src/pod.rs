//! The pod programs' path: identify the endpoint behind the interface, then
//! conntrack and policy for IP packets.
//!
//! An interface without a ready endpoint drops every IP packet: a pod gets
//! no traffic before its policy is in the maps.
//!
//! From-pod (the pod's egress): the source must be the pod's own address;
//! the peer is the destination. To-pod (the pod's ingress): the peer is the
//! source. Packets in the opening direction of a connection are checked
//! against policy every time (so a policy change also stops established
//! connections it no longer allows); replies of tracked connections pass.

use aya_ebpf::programs::TcContext;
use weir_abi::conntrack::{CT_SCOPE_EGRESS, CT_SCOPE_INGRESS};
use weir_abi::ip_proto;
use weir_abi::ipcache::FAMILY_IPV4;
use weir_abi::{EndpointInfo, EndpointKey, Reason, TrafficDirection};

use crate::conntrack::{self, CtState};
use crate::events::Report;
use crate::maps::ENDPOINTS;
use crate::parse::{Flow, FRAGMENT_UNKNOWN};
use crate::policy;

/// ICMPv6 neighbour discovery and multicast listener messages keep the link
/// working; they are never subject to policy (as in Cilium).
#[inline(always)]
fn is_icmpv6_link_control(flow: &Flow) -> bool {
    flow.protocol == ip_proto::ICMPV6 && matches!(flow.icmp_type, 130..=137 | 143)
}

/// ICMPv6 Router Advertisement (134) and Redirect (137): only routers send
/// them, so a pod that does is attacking its node's routing.
#[inline(always)]
fn is_icmpv6_router_message(flow: &Flow) -> bool {
    flow.protocol == ip_proto::ICMPV6 && matches!(flow.icmp_type, 134 | 137)
}

/// A function of its own (a BPF-to-BPF call), a sibling of service NAT in
/// the caller: inlined, both frames would not fit in the 512-byte stack.
#[inline(never)]
pub fn handle(
    ctx: &TcContext,
    flow: &Flow,
    direction: TrafficDirection,
    related: bool,
    report: &mut Report,
) -> Result<(), Reason> {
    if direction == TrafficDirection::Egress && is_icmpv6_router_message(flow) {
        return Err(Reason::DropForbiddenIcmp6);
    }
    if !flow.is_ip() || is_icmpv6_link_control(flow) {
        return Ok(());
    }
    // The pod programs run only on interfaces Weir attached to a pod: one
    // without an entry is a pod not set up yet (or being torn down), and
    // nothing passes before its policy.
    let ifindex = crate::ifindex(ctx);
    let Some(endpoint) = ENDPOINTS.get_ptr(EndpointKey { ifindex }) else {
        return Err(Reason::DropEpNotReady);
    };
    // SAFETY: a pointer from a successful lookup; EndpointInfo is Copy.
    let endpoint: EndpointInfo = unsafe { *endpoint };
    report.endpoint_id = endpoint.id;
    report.endpoint_identity = endpoint.identity;
    let (scope, reply_scope, enforced, peer_addr) = match direction {
        TrafficDirection::Egress => {
            if flow.family == FAMILY_IPV4 && flow.saddr[..4] != endpoint.ipv4 {
                return Err(Reason::DropInvalidSourceIp);
            }
            (
                CT_SCOPE_EGRESS,
                CT_SCOPE_INGRESS,
                endpoint.egress_enforced(),
                &flow.daddr,
            )
        }
        TrafficDirection::Ingress => (
            CT_SCOPE_INGRESS,
            CT_SCOPE_EGRESS,
            endpoint.ingress_enforced(),
            &flow.saddr,
        ),
    };
    if !endpoint.is_ready() {
        return Err(Reason::DropEpNotReady);
    }
    // An ICMP error about a tracked connection (fragmentation needed,
    // unreachable, time exceeded; `related`, found by the caller with
    // `icmp_error::related`) belongs to it: it passes without policy, and
    // is never tracked itself. Errors about nothing tracked are ordinary
    // packets below.
    if related {
        report.ct_state = weir_abi::events::CT_RELATED;
        return Ok(());
    }
    // A later fragment whose first fragment was not seen has no ports and
    // so no connection: policy decides it as port 0 (as before fragments
    // were tracked, so a rule for any port still admits it), a default
    // deny names the missing first fragment (a deny rule keeps its own
    // reason), and nothing is tracked.
    if flow.fragment == FRAGMENT_UNKNOWN {
        if enforced {
            check_policy(endpoint.id, direction, peer_addr, flow, report).map_err(|reason| {
                if reason == Reason::DropPolicyDenied {
                    Reason::DropFragNotFound
                } else {
                    reason
                }
            })?;
        }
        return Ok(());
    }
    let state = conntrack::lookup(flow, scope, reply_scope);
    report.ct_state = match state {
        CtState::New => weir_abi::events::CT_NEW,
        CtState::Established => weir_abi::events::CT_ESTABLISHED,
        CtState::Reply => weir_abi::events::CT_REPLY,
    };
    if state == CtState::Reply {
        return Ok(());
    }
    if enforced {
        check_policy(endpoint.id, direction, peer_addr, flow, report)?;
    }
    if state == CtState::New {
        conntrack::create(flow, scope)?;
    }
    Ok(())
}

/// The policy verdict for `flow` of endpoint `endpoint_id`, the peer at
/// `peer_addr`, recorded in `report`.
#[inline(always)]
fn check_policy(
    endpoint_id: u16,
    direction: TrafficDirection,
    peer_addr: &[u8; 16],
    flow: &Flow,
    report: &mut Report,
) -> Result<(), Reason> {
    let (peer, address) = policy::peer_of(flow.family, peer_addr);
    report.peer_identity = peer;
    let (match_type, outcome) = policy::decide(endpoint_id, direction, peer, address, flow);
    report.policy_checked = true;
    report.match_type = match_type;
    outcome
}
