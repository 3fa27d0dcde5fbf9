//! A clean reject for a new connection to a service without backends, on
//! the per-packet path: the packet is turned into an ICMP port unreachable
//! to its sender and sent back out of the device it came in on. A TCP
//! client's connect() then fails at once with ECONNREFUSED instead of
//! timing out (socket LB refuses such connections in connect() itself).

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
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// The Internet checksum (one's complement of the one's-complement sum of
/// the big-endian 16-bit words) of `bytes`, its checksum field zero.
#[inline(always)]
fn checksum<const N: usize>(bytes: &[u8; N]) -> [u8; 2] {
    let mut sum: u32 = 0;
    let mut i = 0;
    while i + 1 < N {
        sum += u32::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    (!(sum as u16)).to_be_bytes()
}

/// Rewrites the packet into an ICMP port unreachable and redirects it out
/// of the device it arrived on; the TC action, or `None` when the packet
/// does not open a connection (a TCP segment other than a SYN, IP options)
/// and is simply dropped.
#[inline(never)]
pub fn port_unreachable(ctx: &TcContext) -> Option<i32> {
    let packet = Packet::new(ctx);
    let eth: [u8; ETH_HLEN] = packet.read(0)?;
    let quote: [u8; QUOTE_LEN] = packet.read(ETH_HLEN)?;
    if quote[0] != 0x45 {
        return None;
    }
    let protocol = quote[9];
    let opens = match protocol {
        ip_proto::UDP => true,
        ip_proto::TCP => {
            let flags: u8 = packet.read(ETH_HLEN + IPV4_HLEN + 13)?;
            flags & (TCP_SYN | TCP_ACK) == TCP_SYN
        }
        _ => false,
    };
    if !opens {
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
    let mut new_eth = [0u8; ETH_HLEN];
    new_eth[..6].copy_from_slice(&eth[6..12]);
    new_eth[6..12].copy_from_slice(&eth[..6]);
    new_eth[12..].copy_from_slice(&eth[12..]);
    // SAFETY: the context pointer of this program; the helper resizes the
    // packet (invalidating earlier packet pointers, none of which is kept).
    if unsafe { bpf_skb_change_tail(ctx.as_ptr().cast(), (ETH_HLEN + REPLY_IP_LEN) as u32, 0) } != 0
    {
        return None;
    }
    ctx.store(0, &new_eth, 0).ok()?;
    ctx.store(ETH_HLEN, &reply, 0).ok()?;
    // SAFETY: redirecting to the egress of the receiving device.
    Some(unsafe { bpf_redirect(crate::ifindex(ctx), 0) } as i32)
}
