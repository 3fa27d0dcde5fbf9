//! A clean reject for a new connection to a service without backends, on
//! the per-packet path: the packet is turned into an ICMP (ICMPv6 for
//! IPv6) port unreachable to its sender and sent back out of the device it
//! came in on. A TCP client's connect() then fails at once with
//! ECONNREFUSED instead of timing out (socket LB refuses such connections
//! in connect() itself).

use aya_ebpf::helpers::generated::{bpf_redirect, bpf_skb_change_tail};
use aya_ebpf::programs::TcContext;
use aya_ebpf::EbpfContext;
use weir_abi::ip_proto;

use crate::packet::Packet;

const ETH_HLEN: usize = 14;
const IPV4_HLEN: usize = 20;
const ICMP_HLEN: usize = 8;
/// What ICMP quotes of the offending packet: its IP header and the first
/// 8 bytes of its payload (RFC 792).
const QUOTE_LEN: usize = IPV4_HLEN + 8;
const REPLY_IP_LEN: usize = IPV4_HLEN + ICMP_HLEN + QUOTE_LEN;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_PORT_UNREACH: u8 = 3;
const ETH_P_IPV6: [u8; 2] = [0x86, 0xdd];
const IPV6_HLEN: usize = 40;
/// What ICMPv6 quotes here: the IPv6 header and the first 8 bytes of the
/// payload, as for IPv4 (RFC 4443 allows up to the minimum MTU).
const QUOTE6_LEN: usize = IPV6_HLEN + 8;
const REPLY6_LEN: usize = IPV6_HLEN + ICMP_HLEN + QUOTE6_LEN;
const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_PORT_UNREACH: u8 = 4;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// The Internet checksum (one's complement of the one's-complement sum of
/// the big-endian 16-bit words) of `bytes`, its checksum field zero.
#[inline(always)]
fn checksum<const N: usize>(bytes: &[u8; N]) -> [u8; 2] {
    fold(sum(bytes, 0, 0))
}

/// `acc` plus the big-endian 16-bit words of `bytes` from `start` (even).
#[inline(always)]
fn sum<const N: usize>(bytes: &[u8; N], start: usize, acc: u32) -> u32 {
    let mut sum = acc;
    let mut i = start;
    while i + 1 < N {
        sum += u32::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    sum
}

/// The checksum of a one's-complement sum.
#[inline(always)]
fn fold(mut sum: u32) -> [u8; 2] {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    (!(sum as u16)).to_be_bytes()
}

/// Whether the L4 header at `l4` of a `protocol` packet opens a connection
/// (a UDP datagram, a TCP SYN without ACK).
#[inline(always)]
fn opens(packet: &Packet, protocol: u8, l4: usize) -> Option<bool> {
    Some(match protocol {
        ip_proto::UDP => true,
        ip_proto::TCP => {
            let flags: u8 = packet.read(l4 + 13)?;
            flags & (TCP_SYN | TCP_ACK) == TCP_SYN
        }
        _ => false,
    })
}

/// The Ethernet header of a frame sent back to `eth`'s sender.
#[inline(always)]
fn reversed(eth: &[u8; ETH_HLEN]) -> [u8; ETH_HLEN] {
    let mut new_eth = [0u8; ETH_HLEN];
    new_eth[..6].copy_from_slice(&eth[6..12]);
    new_eth[6..12].copy_from_slice(&eth[..6]);
    new_eth[12..].copy_from_slice(&eth[12..]);
    new_eth
}

/// Rewrites the packet into an ICMP port unreachable and redirects it out
/// of the device it arrived on; the TC action, or `None` when the packet
/// does not open a connection (a TCP segment other than a SYN, IP options)
/// and is simply dropped.
#[inline(always)]
pub fn port_unreachable(ctx: &TcContext) -> Option<i32> {
    let ethertype: [u8; 2] = Packet::new(ctx).read(12)?;
    if ethertype == ETH_P_IPV6 {
        port_unreachable6(ctx)
    } else {
        port_unreachable4(ctx)
    }
}

/// [`port_unreachable`] for IPv4. Each family's is a function of its own
/// (a BPF-to-BPF call) for the stack.
#[inline(never)]
fn port_unreachable4(ctx: &TcContext) -> Option<i32> {
    let packet = Packet::new(ctx);
    let eth: [u8; ETH_HLEN] = packet.read(0)?;
    let quote: [u8; QUOTE_LEN] = packet.read(ETH_HLEN)?;
    if quote[0] != 0x45 {
        return None;
    }
    if !opens(&packet, quote[9], ETH_HLEN + IPV4_HLEN)? {
        return None;
    }
    let mut reply = [0u8; REPLY_IP_LEN];
    // IPv4 header: back to the sender, from the address it tried.
    reply[0] = 0x45;
    reply[2..4].copy_from_slice(&(REPLY_IP_LEN as u16).to_be_bytes());
    reply[8] = 64;
    reply[9] = ip_proto::ICMP;
    reply[12..16].copy_from_slice(&quote[16..20]);
    reply[16..20].copy_from_slice(&quote[12..16]);
    let mut ip_header = [0u8; IPV4_HLEN];
    ip_header.copy_from_slice(&reply[..IPV4_HLEN]);
    let ip_csum = checksum(&ip_header);
    reply[10..12].copy_from_slice(&ip_csum);
    // ICMP: destination unreachable / port unreachable, quoting the packet.
    let mut icmp = [0u8; ICMP_HLEN + QUOTE_LEN];
    icmp[0] = ICMP_DEST_UNREACH;
    icmp[1] = ICMP_PORT_UNREACH;
    icmp[ICMP_HLEN..].copy_from_slice(&quote);
    let icmp_csum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&icmp_csum);
    reply[IPV4_HLEN..].copy_from_slice(&icmp);
    send_back(ctx, &reversed(&eth), &reply)
}

/// [`port_unreachable`] for IPv6: an ICMPv6 destination unreachable (port
/// unreachable) quoting the IPv6 header and 8 bytes of TCP/UDP. Packets
/// with extension headers are dropped without an answer.
#[inline(never)]
fn port_unreachable6(ctx: &TcContext) -> Option<i32> {
    let packet = Packet::new(ctx);
    let eth: [u8; ETH_HLEN] = packet.read(0)?;
    let quote: [u8; QUOTE6_LEN] = packet.read(ETH_HLEN)?;
    if quote[0] >> 4 != 6 || !opens(&packet, quote[6], ETH_HLEN + IPV6_HLEN)? {
        return None;
    }
    let mut reply = [0u8; REPLY6_LEN];
    // IPv6 header: back to the sender, from the address it tried.
    reply[0] = 0x60;
    reply[4..6].copy_from_slice(&((ICMP_HLEN + QUOTE6_LEN) as u16).to_be_bytes());
    reply[6] = ip_proto::ICMPV6;
    reply[7] = 64;
    reply[8..24].copy_from_slice(&quote[24..40]);
    reply[24..40].copy_from_slice(&quote[8..24]);
    // ICMPv6, its checksum over the pseudo header (both addresses, the
    // length, the next header) and the message.
    reply[IPV6_HLEN] = ICMPV6_DEST_UNREACH;
    reply[IPV6_HLEN + 1] = ICMPV6_PORT_UNREACH;
    reply[IPV6_HLEN + ICMP_HLEN..].copy_from_slice(&quote);
    // The addresses (bytes 8..40) and the message (40..) are contiguous.
    let pseudo = (ICMP_HLEN + QUOTE6_LEN) as u32 + u32::from(ip_proto::ICMPV6);
    let csum = fold(sum(&reply, 8, pseudo));
    reply[IPV6_HLEN + 2..IPV6_HLEN + 4].copy_from_slice(&csum);
    send_back(ctx, &reversed(&eth), &reply)
}

/// Replaces the packet with `eth` and `ip` and redirects it out of the
/// device it arrived on.
#[inline(always)]
fn send_back<const N: usize>(ctx: &TcContext, eth: &[u8; ETH_HLEN], ip: &[u8; N]) -> Option<i32> {
    // SAFETY: the context pointer of this program; the helper resizes the
    // packet (invalidating earlier packet pointers, none of which is kept).
    if unsafe { bpf_skb_change_tail(ctx.as_ptr().cast(), (ETH_HLEN + N) as u32, 0) } != 0 {
        return None;
    }
    ctx.store(0, eth, 0).ok()?;
    ctx.store(ETH_HLEN, ip, 0).ok()?;
    // SAFETY: redirecting to the egress of the receiving device.
    Some(unsafe { bpf_redirect(crate::ifindex(ctx), 0) } as i32)
}
