//! Header parsing: Ethernet (untagged), IPv4, IPv6 with extension headers,
//! and the L4 headers policy will look at (TCP, UDP, ICMP, ICMPv6, SCTP).
//!
//! The parser validates that every header it would read is present and
//! self-consistent, and fills in the [`Flow`] that conntrack and policy key
//! on. It never reads past the packet: every read goes through [`Packet`],
//! and every length used as an offset is bounded first.

use weir_abi::ip_proto;
use weir_abi::ipcache::{FAMILY_IPV4, FAMILY_IPV6};
use weir_abi::Reason;

use crate::packet::{Packet, MAX_HEADER_OFFSET};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;

const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
/// Fragment offset bits of the IPv4 flags/fragment field.
const IPV4_FRAG_OFFSET_MASK: u16 = 0x1fff;
/// "More fragments" bit of the IPv4 flags/fragment field.
const IPV4_MORE_FRAGMENTS: u16 = 0x2000;
/// Fragment offset bits of the IPv6 fragment header's offset field.
const IPV6_FRAG_OFFSET_MASK: u16 = 0xfff8;

/// More IPv6 extension headers than this is treated as malformed (Cilium
/// uses the same bound).
const IPV6_MAX_EXT_HEADERS: usize = 4;

const TCP_MIN_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
/// ICMP and ICMPv6: type, code, checksum and the 4-byte rest of header
/// (echo id/sequence, MTU, pointer...) that every message carries.
const ICMP_HLEN: usize = 8;
/// SCTP common header: ports, verification tag, checksum.
const SCTP_HLEN: usize = 12;

pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_ECHO_REPLY: u8 = 129;

/// [`Flow::fragment`]: not an IPv4 fragment (IPv6 fragments are not
/// tracked: their later fragments have port 0, as before tracking).
pub const FRAGMENT_NONE: u8 = 0;
/// The first fragment of an IPv4 datagram: its ports are recorded.
pub const FRAGMENT_FIRST: u8 = 1;
/// A later IPv4 fragment whose ports came from its first fragment.
pub const FRAGMENT_LATER: u8 = 2;
/// A later IPv4 fragment whose first fragment was not seen: no ports.
pub const FRAGMENT_UNKNOWN: u8 = 3;

/// What conntrack and policy need of a packet. Every field is always
/// written (zero when not applicable): the verifier rejects reads of
/// uninitialised stack.
#[derive(Copy, Clone)]
pub struct Flow {
    /// 0 for a frame that is not IP, else `FAMILY_IPV4` / `FAMILY_IPV6`.
    pub family: u8,
    pub protocol: u8,
    /// TCP flags byte (0 for other protocols).
    pub tcp_flags: u8,
    /// ICMP/ICMPv6 type (0 for other protocols).
    pub icmp_type: u8,
    /// Addresses; IPv4 in the first 4 bytes.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Ports in network order. ICMP echo: the identifier in `sport` for
    /// requests and in `dport` for replies, so a reply is its request
    /// reversed; 0 otherwise. Later IPv4 fragments get their first
    /// fragment's (see [`Flow::fragment`]).
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    /// [`FRAGMENT_NONE`], [`FRAGMENT_FIRST`], [`FRAGMENT_LATER`] or
    /// [`FRAGMENT_UNKNOWN`]: later fragments have no L4 header to rewrite.
    pub fragment: u8,
}

impl Flow {
    pub const fn empty() -> Flow {
        Flow {
            family: 0,
            protocol: 0,
            tcp_flags: 0,
            icmp_type: 0,
            saddr: [0; 16],
            daddr: [0; 16],
            sport: [0; 2],
            dport: [0; 2],
            fragment: FRAGMENT_NONE,
        }
    }

    /// A later fragment: the packet holds no L4 header.
    #[inline(always)]
    pub fn is_later_fragment(&self) -> bool {
        self.fragment >= FRAGMENT_LATER
    }

    pub fn is_ip(&self) -> bool {
        self.family != 0
    }
}

pub fn parse(ctx: &aya_ebpf::programs::TcContext) -> Result<Flow, Reason> {
    let packet = Packet::new(ctx);
    let ethertype = packet
        .read::<[u8; 2]>(12)
        .map(u16::from_be_bytes)
        .ok_or(Reason::DropInvalid)?;
    let mut flow = Flow::empty();
    match ethertype {
        ETH_P_IP => parse_ipv4(&packet, ETH_HLEN, &mut flow)?,
        ETH_P_IPV6 => parse_ipv6(&packet, ETH_HLEN, &mut flow)?,
        // Not IP (ARP, LLDP, ...): nothing to check at L3.
        _ => {}
    }
    Ok(flow)
}

#[inline(always)]
fn parse_ipv4(packet: &Packet, l3: usize, flow: &mut Flow) -> Result<(), Reason> {
    let header = packet
        .read::<[u8; IPV4_MIN_HLEN]>(l3)
        .ok_or(Reason::DropInvalid)?;
    if header[0] >> 4 != 4 {
        return Err(Reason::DropInvalid);
    }
    let header_len = ((header[0] & 0x0f) as usize) * 4;
    let total_len = u16::from_be_bytes([header[2], header[3]]) as usize;
    if header_len < IPV4_MIN_HLEN || total_len < header_len || l3 + total_len > packet.len() {
        return Err(Reason::DropInvalid);
    }
    let protocol = header[9];
    flow.family = FAMILY_IPV4;
    flow.protocol = protocol;
    flow.saddr[..4].copy_from_slice(&header[12..16]);
    flow.daddr[..4].copy_from_slice(&header[16..20]);
    let fragment = u16::from_be_bytes([header[6], header[7]]);
    let id = u16::from_be_bytes([header[4], header[5]]);
    if fragment & IPV4_FRAG_OFFSET_MASK != 0 {
        // Later fragments carry no L4 header: the first one's ports.
        flow.fragment = if crate::fragments::recall(flow, id) {
            FRAGMENT_LATER
        } else {
            FRAGMENT_UNKNOWN
        };
        return Ok(());
    }
    let l3_end = l3 + total_len;
    check_l4(packet, l3 + header_len, l3_end, ip_proto::ICMP, flow)?;
    if fragment & IPV4_MORE_FRAGMENTS != 0 {
        flow.fragment = FRAGMENT_FIRST;
        crate::fragments::record(flow, id);
    }
    Ok(())
}

#[inline(always)]
fn parse_ipv6(packet: &Packet, l3: usize, flow: &mut Flow) -> Result<(), Reason> {
    let header = packet
        .read::<[u8; IPV6_HLEN]>(l3)
        .ok_or(Reason::DropInvalid)?;
    if header[0] >> 4 != 6 {
        return Err(Reason::DropInvalid);
    }
    let payload_len = u16::from_be_bytes([header[4], header[5]]) as usize;
    // A zero payload length means a jumbogram whose real length sits in a
    // hop-by-hop option; the skb length bounds it then.
    let l3_end = if payload_len == 0 {
        packet.len()
    } else {
        l3 + IPV6_HLEN + payload_len
    };
    if l3_end > packet.len() {
        return Err(Reason::DropInvalid);
    }
    flow.family = FAMILY_IPV6;
    flow.saddr.copy_from_slice(&header[8..24]);
    flow.daddr.copy_from_slice(&header[24..40]);

    let mut next_header = header[6];
    let mut offset = l3 + IPV6_HLEN;
    for _ in 0..IPV6_MAX_EXT_HEADERS {
        let header_len = match next_header {
            ip_proto::HOPOPTS | ip_proto::ROUTING | ip_proto::DSTOPTS => {
                let ext = packet
                    .read::<[u8; 2]>(offset)
                    .ok_or(Reason::DropInvalidExthdr)?;
                next_header = ext[0];
                (ext[1] as usize + 1) * 8
            }
            ip_proto::AH => {
                let ext = packet
                    .read::<[u8; 2]>(offset)
                    .ok_or(Reason::DropInvalidExthdr)?;
                next_header = ext[0];
                (ext[1] as usize + 2) * 4
            }
            ip_proto::FRAGMENT => {
                let ext = packet
                    .read::<[u8; 8]>(offset)
                    .ok_or(Reason::DropInvalidExthdr)?;
                let fragment_offset = u16::from_be_bytes([ext[2], ext[3]]) & IPV6_FRAG_OFFSET_MASK;
                if fragment_offset != 0 {
                    // Not tracked (see docs/datapath.md): no ports, and
                    // policy sees port 0 as before.
                    flow.protocol = ext[0];
                    return Ok(());
                }
                next_header = ext[0];
                8
            }
            _ => {
                flow.protocol = next_header;
                return check_l4(packet, offset, l3_end, ip_proto::ICMPV6, flow);
            }
        };
        offset += header_len;
        if offset > l3_end || offset > MAX_HEADER_OFFSET {
            return Err(Reason::DropInvalidExthdr);
        }
    }
    Err(Reason::DropInvalidExthdr)
}

/// Checks that the L4 header of `flow.protocol` at `l4` is complete and
/// lies within the L3 datagram (which ends at `l3_end`; Ethernet padding
/// after it does not count), and records ports, TCP flags or ICMP type.
/// `icmp` is the ICMP flavour valid for this IP version.
#[inline(always)]
fn check_l4(
    packet: &Packet,
    l4: usize,
    l3_end: usize,
    icmp: u8,
    flow: &mut Flow,
) -> Result<(), Reason> {
    let protocol = flow.protocol;
    let min_len = match protocol {
        ip_proto::TCP => TCP_MIN_HLEN,
        ip_proto::UDP => UDP_HLEN,
        ip_proto::SCTP => SCTP_HLEN,
        p if p == icmp => ICMP_HLEN,
        _ => return Ok(()),
    };
    if l4 + min_len > l3_end {
        return Err(Reason::DropCtInvalidHdr);
    }
    match protocol {
        ip_proto::TCP => {
            let tcp = packet
                .read::<[u8; TCP_MIN_HLEN]>(l4)
                .ok_or(Reason::DropCtInvalidHdr)?;
            let header_len = (tcp[12] >> 4) as usize * 4;
            if header_len < TCP_MIN_HLEN || l4 + header_len > l3_end {
                return Err(Reason::DropCtInvalidHdr);
            }
            flow.sport = [tcp[0], tcp[1]];
            flow.dport = [tcp[2], tcp[3]];
            flow.tcp_flags = tcp[13];
        }
        ip_proto::SCTP => {
            let sctp = packet
                .read::<[u8; SCTP_HLEN]>(l4)
                .ok_or(Reason::DropCtInvalidHdr)?;
            flow.sport = [sctp[0], sctp[1]];
            flow.dport = [sctp[2], sctp[3]];
        }
        ip_proto::UDP => {
            let udp = packet
                .read::<[u8; UDP_HLEN]>(l4)
                .ok_or(Reason::DropCtInvalidHdr)?;
            flow.sport = [udp[0], udp[1]];
            flow.dport = [udp[2], udp[3]];
        }
        _ => {
            let icmp_header = packet
                .read::<[u8; ICMP_HLEN]>(l4)
                .ok_or(Reason::DropCtInvalidHdr)?;
            let icmp_type = icmp_header[0];
            flow.icmp_type = icmp_type;
            let id = [icmp_header[4], icmp_header[5]];
            if icmp_type == ICMP_ECHO_REQUEST || icmp_type == ICMPV6_ECHO_REQUEST {
                flow.sport = id;
            } else if icmp_type == ICMP_ECHO_REPLY || icmp_type == ICMPV6_ECHO_REPLY {
                flow.dport = id;
            }
        }
    }
    Ok(())
}
