//! The pod programs' path: identify the endpoint behind the interface, then
//! conntrack and policy for IP packets.
//!
//! An interface without a ready endpoint drops every IP packet: a pod gets
//! no traffic before its policy is in the maps.
//!
//! From-pod (the pod's egress): the source must be the pod's own address
//! (IPv6: its link-local address or its IPv6 address, see
//! [`source_allowed`]);
//! the peer is the destination. To-pod (the pod's ingress): the peer is the
//! source. A connection's verdict is cached in its conntrack entry with the
//! policy revision it was taken at; packets in the opening direction are
//! checked against policy again whenever the revision has moved (so a
//! policy change also stops established connections it no longer allows);
//! replies of tracked connections pass. An endpoint in policy audit mode
//! ([`EndpointInfo::AUDIT`]) reports what policy would drop and passes it.

use weir_abi::conntrack::{CT_SCOPE_EGRESS, CT_SCOPE_INGRESS};
use weir_abi::ip_proto;
use weir_abi::ipcache::FAMILY_IPV4;
use weir_abi::{identity, EndpointInfo, EndpointKey, Reason, TrafficDirection};

use crate::budget;
use crate::conntrack::{self, CtState};
use crate::debug;
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

/// Whether a packet the pod sent carries a source it owns: IPv4 its
/// address; IPv6 its link-local address (derived from the MAC address Weir
/// gave it), its IPv6 address if it has one, or `::` for ICMPv6 (duplicate
/// address detection, MLD). Anything else is forged.
#[inline(always)]
fn source_allowed(endpoint: &EndpointInfo, flow: &Flow) -> bool {
    if flow.family == FAMILY_IPV4 {
        flow.saddr[..4] == endpoint.ipv4
    } else {
        endpoint.ipv6_source_allowed(&flow.saddr, flow.protocol == ip_proto::ICMPV6)
    }
}

/// The endpoint behind the interface the program runs on (null when there
/// is none): looked up once per packet, read by [`admit`] and [`handle`].
#[inline(always)]
pub fn lookup(ifindex: u32) -> *const EndpointInfo {
    ENDPOINTS
        .get_ptr(EndpointKey { ifindex })
        .unwrap_or(core::ptr::null())
}

/// What the pod sent, before anything else looks at it (service NAT
/// inserts entries into shared maps): the endpoint (from [`lookup`]) and
/// the source check, as [`handle`] does them. `Forwarded` when the packet
/// may go on; the endpoint's id is in `report`. A function of its own (a
/// BPF-to-BPF call), so its frame is gone when service NAT runs.
#[inline(never)]
pub fn admit(endpoint: *const EndpointInfo, report: &mut Report) -> Reason {
    match endpoint_of(endpoint, TrafficDirection::Egress, report) {
        Ok(Some(endpoint)) if !endpoint.is_ready() && !is_icmpv6_link_control(&report.flow) => {
            Reason::DropEpNotReady
        }
        Ok(_) => Reason::Forwarded,
        Err(reason) => reason,
    }
}

/// What the path after the source check reads of the endpoint: its id and
/// flags. Not a copy of the whole entry (36 bytes with the IPv6 addresses):
/// [`handle`]'s frame and its caller's must fit together in 512 bytes.
#[derive(Clone, Copy)]
struct Gate {
    id: u16,
    flags: u8,
}

impl Gate {
    const fn is_ready(self) -> bool {
        self.flags & EndpointInfo::NOT_READY == 0
    }

    const fn enforced(self, direction: TrafficDirection) -> bool {
        let flag = match direction {
            TrafficDirection::Egress => EndpointInfo::EGRESS_ENFORCED,
            TrafficDirection::Ingress => EndpointInfo::INGRESS_ENFORCED,
        };
        self.flags & flag != 0
    }

    const fn audits(self) -> bool {
        self.flags & EndpointInfo::AUDIT != 0
    }
}

/// Audit mode: a drop policy decided is recorded in `report` (the verdict
/// event says AUDIT and names it) and the packet passes. Everything else,
/// and every verdict of an endpoint not in audit mode, stands.
#[inline(always)]
fn audit(endpoint: Gate, outcome: Result<(), Reason>, report: &mut Report) -> Result<(), Reason> {
    match outcome {
        Err(
            reason @ (Reason::DropPolicyDenied | Reason::DropPolicyDeny | Reason::DropFragNotFound),
        ) if endpoint.audits() => {
            report.audited = reason as u8;
            Ok(())
        }
        other => other,
    }
}

/// The endpoint of the interface, once the packet passed the checks that
/// come before conntrack: `None` for what passes without one (frames that
/// are not IP, ICMPv6 link control); the router-message ban and, from the
/// pod, the source check.
#[inline(always)]
fn endpoint_of(
    endpoint: *const EndpointInfo,
    direction: TrafficDirection,
    report: &mut Report,
) -> Result<Option<Gate>, Reason> {
    let flow = &report.flow;
    if direction == TrafficDirection::Egress && is_icmpv6_router_message(flow) {
        return Err(Reason::DropForbiddenIcmp6);
    }
    if !flow.is_ip() {
        return Ok(None);
    }
    let link_control = is_icmpv6_link_control(flow);
    // The pod programs run only on interfaces Weir attached to a pod: one
    // without an entry is a pod not set up yet (or being torn down), and
    // nothing passes before its policy (but neighbour discovery).
    if endpoint.is_null() {
        return if link_control {
            Ok(None)
        } else {
            Err(Reason::DropEpNotReady)
        };
    }
    // SAFETY: not null, so a pointer from a successful lookup of
    // `weir_endpoints` ([`lookup`]), valid for the program's run.
    let endpoint: &EndpointInfo = unsafe { &*endpoint };
    report.endpoint_id = endpoint.id;
    report.endpoint_identity = endpoint.identity;
    // The source check comes before the link-control exemption: neighbour
    // discovery from a forged source would teach the node a false owner.
    if direction == TrafficDirection::Egress && !source_allowed(endpoint, flow) {
        return Err(Reason::DropInvalidSourceIp);
    }
    if link_control {
        return Ok(None);
    }
    Ok(Some(Gate {
        id: endpoint.id,
        flags: endpoint.flags,
    }))
}

/// A function of its own (a BPF-to-BPF call), a sibling of service NAT in
/// the caller: inlined, both frames would not fit in the 512-byte stack.
#[inline(never)]
pub fn handle(
    endpoint: *const EndpointInfo,
    direction: TrafficDirection,
    related: bool,
    report: &mut Report,
) -> Result<(), Reason> {
    let Some(endpoint) = endpoint_of(endpoint, direction, report)? else {
        return Ok(());
    };
    let enforced = endpoint.enforced(direction);
    let (scope, reply_scope) = match direction {
        TrafficDirection::Egress => (CT_SCOPE_EGRESS, CT_SCOPE_INGRESS),
        TrafficDirection::Ingress => (CT_SCOPE_INGRESS, CT_SCOPE_EGRESS),
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
    if report.flow.fragment == FRAGMENT_UNKNOWN {
        if enforced {
            let outcome = check_policy(endpoint.id, direction, report).map_err(|reason| {
                if reason == Reason::DropPolicyDenied {
                    Reason::DropFragNotFound
                } else {
                    reason
                }
            });
            audit(endpoint, outcome, report)?;
        }
        return Ok(());
    }
    // Read before any policy lookup, so a verdict is never stamped with a
    // revision newer than the maps it was decided on: a change landing
    // during the lookups moves the revision past the stamp.
    let revision = policy::revision();
    let tracked = conntrack::lookup(&report.flow, scope, reply_scope);
    let state = tracked.state;
    report.ct_state = match state {
        CtState::New => weir_abi::events::CT_NEW,
        CtState::Established => weir_abi::events::CT_ESTABLISHED,
        CtState::Reply => weir_abi::events::CT_REPLY,
    };
    if debug::enabled(endpoint.id) {
        debug::conntrack(report, direction);
    }
    if state == CtState::Reply {
        return Ok(());
    }
    // An established connection allowed at the current revision keeps its
    // verdict: one conntrack lookup, no ipcache or policy lookups. Once
    // the revision moves, its next packet is checked again (and dropped
    // if the policy no longer allows it; the stamp stays old, so every
    // packet after it is checked too).
    if enforced && !tracked.verdict_current(revision) {
        let outcome = check_policy(endpoint.id, direction, report);
        audit(endpoint, outcome, report)?;
        tracked.stamp(revision);
    }
    if state == CtState::New {
        // What the pod's own packets insert is bounded per endpoint; the
        // ingress entry of a flow between two local pods follows the
        // sender's egress entry, which was charged.
        if direction == TrafficDirection::Egress && !budget::take(endpoint.id) {
            return Err(Reason::DropRateLimited);
        }
        conntrack::create(&report.flow, scope, revision)?;
    }
    Ok(())
}

/// The policy verdict for `report.flow` of endpoint `endpoint_id`,
/// recorded in `report`. The peer is the destination of what the pod sends
/// and the source of what it receives.
#[inline(always)]
fn check_policy(
    endpoint_id: u16,
    direction: TrafficDirection,
    report: &mut Report,
) -> Result<(), Reason> {
    let flow = &report.flow;
    let peer_addr = match direction {
        TrafficDirection::Egress => &flow.daddr,
        TrafficDirection::Ingress => &flow.saddr,
    };
    let (mut peer, address) = policy::peer_of(flow.family, peer_addr);
    // Tunnel mode: the identity the sender's node put in the tunnel header
    // is the sender's (the ipcache still gives the address identity, and
    // `world` is resolved here: CIDR identities are this node's own).
    let tunnelled = report.peer_identity;
    if direction == TrafficDirection::Ingress && tunnelled != 0 && tunnelled != identity::WORLD {
        peer = tunnelled;
    }
    report.peer_identity = peer;
    let (match_type, outcome) = policy::decide(endpoint_id, direction, peer, address, flow);
    report.policy_checked = true;
    report.match_type = match_type;
    if debug::enabled(endpoint_id) {
        let drop_reason = match outcome {
            Ok(()) => 0,
            Err(reason) => reason as u8,
        };
        debug::policy(report, direction, address, drop_reason);
    }
    outcome
}
