//! Header parsing: Ethernet (untagged), IPv4, IPv6 with extension headers,
//! and the L4 headers policy will look at (TCP, UDP, ICMP, ICMPv6, SCTP).
//!
//! The parser validates that every header it would read is present and
//! self-consistent. It never reads past the packet: every
//! read goes through [`Packet`], and every length used as an offset is
//! bounded first.

use weir_abi::Reason;

use crate::packet::{Packet, MAX_HEADER_OFFSET};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;

const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
/// Fragment offset bits of the IPv4 flags/fragment field.
const IPV4_FRAG_OFFSET_MASK: u16 = 0x1fff;
/// Fragment offset bits of the IPv6 fragment header's offset field.
const IPV6_FRAG_OFFSET_MASK: u16 = 0xfff8;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_DSTOPTS: u8 = 60;
const IPPROTO_SCTP: u8 = 132;

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

pub fn parse(ctx: &aya_ebpf::programs::TcContext) -> Result<(), Reason> {
    let packet = Packet::new(ctx);
    let ethertype = packet
        .read::<[u8; 2]>(12)
        .map(u16::from_be_bytes)
        .ok_or(Reason::DropInvalid)?;
    match ethertype {
        ETH_P_IP => parse_ipv4(&packet, ETH_HLEN),
        ETH_P_IPV6 => parse_ipv6(&packet, ETH_HLEN),
        // Not IP (ARP, LLDP, ...): nothing to check at L3.
        _ => Ok(()),
    }
}

#[inline(always)]
fn parse_ipv4(packet: &Packet, l3: usize) -> Result<(), Reason> {
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
    let fragment_offset = u16::from_be_bytes([header[6], header[7]]) & IPV4_FRAG_OFFSET_MASK;
    if fragment_offset != 0 {
        // Later fragments carry no L4 header.
        return Ok(());
    }
    let l3_end = l3 + total_len;
    check_l4(packet, l3 + header_len, l3_end, protocol, IPPROTO_ICMP)
}

#[inline(always)]
fn parse_ipv6(packet: &Packet, l3: usize) -> Result<(), Reason> {
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

    let mut next_header = header[6];
    let mut offset = l3 + IPV6_HLEN;
    for _ in 0..IPV6_MAX_EXT_HEADERS {
        let header_len = match next_header {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let ext = packet
                    .read::<[u8; 2]>(offset)
                    .ok_or(Reason::DropInvalidExthdr)?;
                next_header = ext[0];
                (ext[1] as usize + 1) * 8
            }
            IPPROTO_AH => {
                let ext = packet
                    .read::<[u8; 2]>(offset)
                    .ok_or(Reason::DropInvalidExthdr)?;
                next_header = ext[0];
                (ext[1] as usize + 2) * 4
            }
            IPPROTO_FRAGMENT => {
                let ext = packet
                    .read::<[u8; 8]>(offset)
                    .ok_or(Reason::DropInvalidExthdr)?;
                let fragment_offset = u16::from_be_bytes([ext[2], ext[3]]) & IPV6_FRAG_OFFSET_MASK;
                if fragment_offset != 0 {
                    return Ok(());
                }
                next_header = ext[0];
                8
            }
            _ => return check_l4(packet, offset, l3_end, next_header, IPPROTO_ICMPV6),
        };
        offset += header_len;
        if offset > l3_end || offset > MAX_HEADER_OFFSET {
            return Err(Reason::DropInvalidExthdr);
        }
    }
    Err(Reason::DropInvalidExthdr)
}

/// Checks that the L4 header of `protocol` at `l4` is complete and lies
/// within the L3 datagram (which ends at `l3_end`; Ethernet padding after it
/// does not count). `icmp` is the ICMP flavour valid for this IP version.
#[inline(always)]
fn check_l4(
    packet: &Packet,
    l4: usize,
    l3_end: usize,
    protocol: u8,
    icmp: u8,
) -> Result<(), Reason> {
    let min_len = match protocol {
        IPPROTO_TCP => TCP_MIN_HLEN,
        IPPROTO_UDP => UDP_HLEN,
        IPPROTO_SCTP => SCTP_HLEN,
        p if p == icmp => ICMP_HLEN,
        _ => return Ok(()),
    };
    if l4 + min_len > l3_end {
        return Err(Reason::DropCtInvalidHdr);
    }
    let present = match protocol {
        IPPROTO_TCP => {
            let tcp = packet
                .read::<[u8; TCP_MIN_HLEN]>(l4)
                .ok_or(Reason::DropCtInvalidHdr)?;
            let header_len = (tcp[12] >> 4) as usize * 4;
            if header_len < TCP_MIN_HLEN || l4 + header_len > l3_end {
                return Err(Reason::DropCtInvalidHdr);
            }
            true
        }
        IPPROTO_SCTP => packet.read::<[u8; SCTP_HLEN]>(l4).is_some(),
        // UDP and both ICMPs have 8-byte headers.
        _ => packet.read::<[u8; UDP_HLEN]>(l4).is_some(),
    };
    if !present {
        return Err(Reason::DropCtInvalidHdr);
    }
    Ok(())
}
