//! ICMP and ICMPv6 errors matched to the connection they are about.
//!
//! An error (IPv4 destination unreachable, including fragmentation needed,
//! time exceeded, parameter problem; ICMPv6 destination unreachable, packet
//! too big, time exceeded, parameter problem) quotes the IP header and the
//! first 8 bytes of the L4 header of the packet that caused it. When that
//! quoted packet belongs to a tracked connection the error is *related*: it
//! passes without policy, as Cilium's `CT_RELATED` does, so path-MTU
//! discovery and fast failure work under enforcement. The error must be
//! addressed to the quoted packet's source (where errors go). An error
//! that quotes nothing tracked stays an ordinary packet (policy decides).
//!
//! An error reaching a pod about its packets to a service backend that
//! per-packet service NAT translated quotes the backend; the quote is
//! translated back to the frontend the pod's socket addressed
//! ([`to_pod`]), or the pod's stack would match it to no socket.
//!
//! Stack: the pod programs' own frame leaves no room for a call below
//! the pod path (`pod::handle`), so [`related`] and [`to_pod`] are its
//! siblings, called by the program itself, and each parses the quote
//! again (a few bounded reads) instead of passing it down.

use aya_ebpf::programs::TcContext;
use weir_abi::conntrack::{CT_SCOPE_EGRESS, CT_SCOPE_INGRESS};
use weir_abi::ip_proto;
use weir_abi::ipcache::{FAMILY_IPV4, FAMILY_IPV6};
use weir_abi::TrafficDirection;

use crate::conntrack;
use crate::nodeport::{self, Outcome};
use crate::packet::Packet;
use crate::parse::{
    Flow, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST,
};

const ETH_HLEN: usize = 14;
const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const ICMP_HLEN: usize = 8;
/// The IPv4 fragment offset bits.
const IPV4_FRAG_OFFSET_MASK: u16 = 0x1fff;

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETER_PROBLEM: u8 = 12;
const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_PARAMETER_PROBLEM: u8 = 4;

/// An ICMP/ICMPv6 error message (the kinds that quote a packet).
#[inline(always)]
pub fn is_error(flow: &Flow) -> bool {
    match flow.protocol {
        ip_proto::ICMP => matches!(
            flow.icmp_type,
            ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM
        ),
        ip_proto::ICMPV6 => {
            (ICMPV6_DEST_UNREACH..=ICMPV6_PARAMETER_PROBLEM).contains(&flow.icmp_type)
        }
        _ => false,
    }
}

/// Whether the error `flow` (see [`is_error`]), seen by a pod program
/// in `direction`, quotes a packet of a connection tracked by the pod
/// programs (see [`conntrack::related`]). A function of its own (a
/// BPF-to-BPF call) so that the quoted flow and the conntrack keys stay
/// off the program's frame.
#[inline(never)]
pub fn related(ctx: &TcContext, flow: &Flow, direction: TrafficDirection) -> bool {
    let (scope, reply_scope) = match direction {
        TrafficDirection::Egress => (CT_SCOPE_EGRESS, CT_SCOPE_INGRESS),
        TrafficDirection::Ingress => (CT_SCOPE_INGRESS, CT_SCOPE_EGRESS),
    };
    let mut inner = Flow::empty();
    quote(ctx, flow, &mut inner).is_some() && conntrack::related(&inner, scope, reply_scope)
}

/// A related IPv4 error on its way into a pod: its quote translated back
/// from a service backend to the frontend the pod addressed, when
/// per-packet service NAT translated the quoted connection (see
/// `nodeport::icmp_error_to_pod`): a drop (134) if the rewrite failed
/// halfway. The outcome is a value the caller uses on purpose: LLVM drops
/// an unused result of a private function, and the function then leaves
/// whatever R0 held (a stack pointer, which the verifier refuses).
#[inline(never)]
pub fn to_pod(ctx: &TcContext, flow: &Flow) -> Outcome {
    if flow.family != FAMILY_IPV4 {
        return Outcome::CONTINUE;
    }
    let mut inner = Flow::empty();
    match quote(ctx, flow, &mut inner) {
        Some(offset) => nodeport::icmp_error_to_pod(ctx, flow, &inner, offset),
        None => Outcome::CONTINUE,
    }
}

/// The packet the error `flow` quotes, into `inner`; the offset of the
/// quoted IP header. `None` unless the error is addressed to the quoted
/// packet's source: errors go back to the sender, and one sent anywhere
/// else is not about that connection (it would carry a pod's data past
/// its policy to any address).
#[inline(always)]
fn quote(ctx: &TcContext, flow: &Flow, inner: &mut Flow) -> Option<usize> {
    let packet = Packet::new(ctx);
    if flow.family == FAMILY_IPV4 {
        quoted_ipv4(&packet, &flow.daddr, inner)
    } else {
        quoted_ipv6(&packet, &flow.daddr, inner)
    }
}

/// The IPv4 packet an ICMP error quotes, into `inner`; the offset of the
/// quoted IP header. `None` when the quote is cut short, a later fragment
/// (no ports), or of a protocol conntrack does not key by ports.
#[inline(always)]
fn quoted_ipv4(packet: &Packet, to: &[u8; 16], inner: &mut Flow) -> Option<usize> {
    let version_ihl: u8 = packet.read(ETH_HLEN)?;
    let quote = ETH_HLEN + ((version_ihl & 0x0f) as usize) * 4 + ICMP_HLEN;
    let header = packet.read::<[u8; IPV4_MIN_HLEN]>(quote)?;
    let header_len = ((header[0] & 0x0f) as usize) * 4;
    if header[0] >> 4 != 4 || header_len < IPV4_MIN_HLEN {
        return None;
    }
    if u16::from_be_bytes([header[6], header[7]]) & IPV4_FRAG_OFFSET_MASK != 0
        || header[12..16] != to[..4]
    {
        return None;
    }
    inner.family = FAMILY_IPV4;
    inner.protocol = header[9];
    inner.saddr[..4].copy_from_slice(&header[12..16]);
    inner.daddr[..4].copy_from_slice(&header[16..20]);
    quoted_ports(packet, quote + header_len, ip_proto::ICMP, inner)?;
    Some(quote)
}

/// As [`quoted_ipv4`] for ICMPv6 (an error without extension headers
/// before it, quoting a packet without extension headers: what routers
/// send).
#[inline(always)]
fn quoted_ipv6(packet: &Packet, to: &[u8; 16], inner: &mut Flow) -> Option<usize> {
    let next_header: u8 = packet.read(ETH_HLEN + 6)?;
    if next_header != ip_proto::ICMPV6 {
        return None;
    }
    let quote = ETH_HLEN + IPV6_HLEN + ICMP_HLEN;
    let header = packet.read::<[u8; IPV6_HLEN]>(quote)?;
    if header[0] >> 4 != 6 || header[8..24] != to[..] {
        return None;
    }
    inner.family = FAMILY_IPV6;
    inner.protocol = header[6];
    inner.saddr.copy_from_slice(&header[8..24]);
    inner.daddr.copy_from_slice(&header[24..40]);
    quoted_ports(packet, quote + IPV6_HLEN, ip_proto::ICMPV6, inner)?;
    Some(quote)
}

/// The quoted L4 header's ports as conntrack keys them (the first 8
/// bytes are always quoted): TCP, UDP, SCTP ports; an ICMP echo's
/// identifier.
#[inline(always)]
fn quoted_ports(packet: &Packet, l4: usize, icmp: u8, inner: &mut Flow) -> Option<()> {
    let l4_header = packet.read::<[u8; 8]>(l4)?;
    match inner.protocol {
        ip_proto::TCP | ip_proto::UDP | ip_proto::SCTP => {
            inner.sport = [l4_header[0], l4_header[1]];
            inner.dport = [l4_header[2], l4_header[3]];
        }
        p if p == icmp => {
            let id = [l4_header[4], l4_header[5]];
            match l4_header[0] {
                ICMP_ECHO_REQUEST | ICMPV6_ECHO_REQUEST => inner.sport = id,
                ICMP_ECHO_REPLY | ICMPV6_ECHO_REPLY => inner.dport = id,
                _ => return None,
            }
        }
        _ => return None,
    }
    Some(())
}
