//! Crafted Ethernet frames for `BPF_PROG_TEST_RUN`: well-formed ones built
//! with etherparse (correct lengths and checksums), and deliberately broken
//! ones derived from them.

use etherparse::{Icmpv4Type, Icmpv6Type, PacketBuilder};
use weir_abi::ip_proto;

pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
pub const IP4_A: [u8; 4] = [10, 99, 0, 1];
pub const IP4_B: [u8; 4] = [10, 99, 0, 2];
pub const IP6_A: [u8; 16] = [0xfd, 0, 0, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const IP6_B: [u8; 16] = [0xfd, 0, 0, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

pub const ETH_HLEN: usize = 14;
pub const IPV4_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;

const PAYLOAD: &[u8] = b"weir test payload";

fn finish(builder_write: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut frame = Vec::new();
    builder_write(&mut frame);
    frame
}

pub fn ipv4_tcp_syn() -> Vec<u8> {
    finish(|out| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(IP4_A, IP4_B, 64)
            .tcp(40000, 80, 1, 65535)
            .syn()
            .write(out, &[])
            .expect("build")
    })
}

pub fn ipv4_udp() -> Vec<u8> {
    ipv4_udp_from(IP4_A)
}

/// [`ipv4_udp`] from another source address.
pub fn ipv4_udp_from(source: [u8; 4]) -> Vec<u8> {
    finish(|out| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(source, IP4_B, 64)
            .udp(40000, 53)
            .write(out, PAYLOAD)
            .expect("build")
    })
}

pub fn ipv4_icmp_echo() -> Vec<u8> {
    finish(|out| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(IP4_A, IP4_B, 64)
            .icmpv4_echo_request(7, 1)
            .write(out, PAYLOAD)
            .expect("build")
    })
}

pub fn ipv6_tcp_syn() -> Vec<u8> {
    finish(|out| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv6(IP6_A, IP6_B, 64)
            .tcp(40000, 80, 1, 65535)
            .syn()
            .write(out, &[])
            .expect("build")
    })
}

pub fn ipv6_udp() -> Vec<u8> {
    finish(|out| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv6(IP6_A, IP6_B, 64)
            .udp(40000, 53)
            .write(out, PAYLOAD)
            .expect("build")
    })
}

/// [`ipv6_udp`] from another source address.
pub fn ipv6_udp_from(source: [u8; 16]) -> Vec<u8> {
    finish(|out| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv6(source, IP6_B, 64)
            .udp(40000, 53)
            .write(out, PAYLOAD)
            .expect("build")
    })
}

pub fn ipv6_icmp_echo() -> Vec<u8> {
    finish(|out| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv6(IP6_A, IP6_B, 64)
            .icmpv6_echo_request(7, 1)
            .write(out, PAYLOAD)
            .expect("build")
    })
}

/// An ARP request (ethertype 0x0806): not IP.
pub fn arp_request() -> Vec<u8> {
    let mut frame = eth_header(0x0806);
    frame.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]); // Ethernet/IPv4, request
    frame.extend_from_slice(&MAC_A);
    frame.extend_from_slice(&IP4_A);
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&IP4_B);
    frame
}

/// An IPv4 SCTP packet (this kernel has no SCTP sockets; the datapath still
/// parses SCTP for policy): common header plus an INIT-sized chunk.
pub fn ipv4_sctp() -> Vec<u8> {
    let mut sctp = vec![0u8; 12 + 20];
    sctp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    sctp[2..4].copy_from_slice(&9999u16.to_be_bytes());
    ipv4_with_payload(ip_proto::SCTP, &sctp)
}

/// IPv6 UDP behind a hop-by-hop options header (8 bytes, PadN).
pub fn ipv6_hop_by_hop_udp() -> Vec<u8> {
    let udp = ipv6_udp()[ETH_HLEN + IPV6_HLEN..].to_vec();
    let mut payload = vec![ip_proto::UDP, 0, 1, 4, 0, 0, 0, 0]; // next=UDP, len=0 (8 bytes), PadN(4)
    payload.extend_from_slice(&udp);
    ipv6_with_payload(ip_proto::HOPOPTS, &payload)
}

/// A non-first IPv4 fragment: it carries no L4 header, so even a few bytes
/// of payload are well-formed.
pub fn ipv4_later_fragment() -> Vec<u8> {
    let mut frame = ipv4_with_payload(ip_proto::TCP, &[0xab; 8]);
    // Fragment offset 185 (x8 bytes), no more fragments.
    frame[ETH_HLEN + 6..ETH_HLEN + 8].copy_from_slice(&185u16.to_be_bytes());
    fix_ipv4_checksum(&mut frame);
    frame
}

/// The two fragments of an IPv4 UDP datagram from `from` (port 40000) to
/// `to` (`port`) of `payload` (with a correct UDP checksum over the whole
/// datagram), IP id `id`: the first holds the UDP header and the first
/// `first_len - 8` payload bytes (`first_len` a multiple of 8) with "more
/// fragments" set, the second the rest at that offset.
pub fn ipv4_udp_fragments(
    from: [u8; 4],
    to: [u8; 4],
    port: u16,
    payload: &[u8],
    first_len: usize,
    id: u16,
) -> (Vec<u8>, Vec<u8>) {
    assert_eq!(first_len % 8, 0, "fragment offsets count 8-byte units");
    let whole = finish(|out| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(from, to, 64)
            .udp(40000, port)
            .write(out, payload)
            .expect("build")
    });
    let udp = &whole[ETH_HLEN + IPV4_HLEN..];
    let fragment = |bytes: &[u8], offset: usize, more: bool| {
        let mut frame = ipv4_between(from, to, ip_proto::UDP, bytes);
        frame[ETH_HLEN + 4..ETH_HLEN + 6].copy_from_slice(&id.to_be_bytes());
        let field = (offset / 8) as u16 | if more { 0x2000 } else { 0 };
        frame[ETH_HLEN + 6..ETH_HLEN + 8].copy_from_slice(&field.to_be_bytes());
        fix_ipv4_checksum(&mut frame);
        frame
    };
    (
        fragment(&udp[..first_len], 0, true),
        fragment(&udp[first_len..], first_len, false),
    )
}

/// An ICMP "fragmentation needed" (type 3 code 4, next-hop MTU `mtu`) from
/// `from` to `to`, quoting the first 28 bytes of the IPv4 datagram in
/// `quoted` (an Ethernet frame), as a router sends it.
pub fn ipv4_frag_needed(from: [u8; 4], to: [u8; 4], mtu: u16, quoted: &[u8]) -> Vec<u8> {
    let quote = &quoted[ETH_HLEN..ETH_HLEN + IPV4_HLEN + 8];
    finish(|out| {
        PacketBuilder::ethernet2(MAC_B, MAC_A)
            .ipv4(from, to, 64)
            .icmpv4(Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                    next_hop_mtu: mtu,
                },
            ))
            .write(out, quote)
            .expect("build")
    })
}

/// An ICMPv6 "packet too big" (MTU `mtu`) from `from` to `to`, quoting the
/// IPv6 header and first 8 payload bytes of `quoted` (an Ethernet frame).
pub fn ipv6_packet_too_big(from: [u8; 16], to: [u8; 16], mtu: u32, quoted: &[u8]) -> Vec<u8> {
    let quote = &quoted[ETH_HLEN..ETH_HLEN + IPV6_HLEN + 8];
    finish(|out| {
        PacketBuilder::ethernet2(MAC_B, MAC_A)
            .ipv6(from, to, 64)
            .icmpv6(Icmpv6Type::PacketTooBig { mtu })
            .write(out, quote)
            .expect("build")
    })
}

/// Whether the IPv4 header checksum of `frame` is right.
pub fn ipv4_checksum_ok(frame: &[u8]) -> bool {
    internet_checksum(&frame[ETH_HLEN..ETH_HLEN + IPV4_HLEN]) == 0
}

/// The one's-complement sum of `bytes` folded and inverted: 0 when
/// `bytes` holds its own correct checksum.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet header followed by only 10 bytes of an IPv4 header.
pub fn ipv4_truncated_l3() -> Vec<u8> {
    let mut frame = ipv4_udp();
    frame.truncate(ETH_HLEN + 10);
    frame
}

/// An IPv4 header claiming more bytes than the frame holds.
pub fn ipv4_total_length_beyond_frame() -> Vec<u8> {
    let mut frame = ipv4_udp();
    frame[ETH_HLEN + 2..ETH_HLEN + 4].copy_from_slice(&1400u16.to_be_bytes());
    fix_ipv4_checksum(&mut frame);
    frame
}

/// An IPv4 header with IHL 3 (12 bytes), below the minimum of 5.
pub fn ipv4_bad_ihl() -> Vec<u8> {
    let mut frame = ipv4_udp();
    frame[ETH_HLEN] = 0x43;
    frame
}

/// A well-formed IPv4 header whose datagram holds only 8 of TCP's 20 header bytes.
pub fn ipv4_tcp_truncated_l4() -> Vec<u8> {
    let tcp = &ipv4_tcp_syn()[ETH_HLEN + IPV4_HLEN..];
    ipv4_with_payload(ip_proto::TCP, &tcp[..8])
}

/// IPv4 UDP with only 4 of UDP's 8 header bytes.
pub fn ipv4_udp_truncated_l4() -> Vec<u8> {
    let udp = &ipv4_udp()[ETH_HLEN + IPV4_HLEN..];
    ipv4_with_payload(ip_proto::UDP, &udp[..4])
}

/// IPv4 ICMP with only 4 of the 8 header bytes.
pub fn ipv4_icmp_truncated_l4() -> Vec<u8> {
    ipv4_with_payload(ip_proto::ICMP, &[8, 0, 0, 0])
}

/// A TCP header whose data offset says 4 words (16 bytes), below the minimum.
pub fn ipv4_tcp_bad_data_offset() -> Vec<u8> {
    let mut frame = ipv4_tcp_syn();
    frame[ETH_HLEN + IPV4_HLEN + 12] = 0x40;
    frame
}

/// IPv6 TCP with only 8 of TCP's 20 header bytes.
pub fn ipv6_tcp_truncated_l4() -> Vec<u8> {
    let tcp = &ipv6_tcp_syn()[ETH_HLEN + IPV6_HLEN..];
    ipv6_with_payload(ip_proto::TCP, &tcp[..8])
}

/// An IPv6 header cut short at 24 of its 40 bytes.
pub fn ipv6_truncated_l3() -> Vec<u8> {
    let mut frame = ipv6_udp();
    frame.truncate(ETH_HLEN + 24);
    frame
}

/// A hop-by-hop header whose length field points past the end of the packet.
pub fn ipv6_exthdr_beyond_packet() -> Vec<u8> {
    ipv6_with_payload(ip_proto::HOPOPTS, &[ip_proto::UDP, 200, 1, 4, 0, 0, 0, 0])
}

/// Five destination-options headers in a row: more than the datapath walks.
pub fn ipv6_too_many_exthdrs() -> Vec<u8> {
    let mut payload = Vec::new();
    for i in 0..5 {
        let next = if i == 4 { 59 } else { ip_proto::DSTOPTS }; // ...then "no next header"
        payload.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    ipv6_with_payload(ip_proto::DSTOPTS, &payload)
}

/// A minimum-size Ethernet frame: a short IPv4 UDP datagram padded to 60
/// bytes. The padding is not part of the datagram and must not confuse the
/// length checks.
pub fn ipv4_udp_padded() -> Vec<u8> {
    let mut frame = finish(|out| {
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(IP4_A, IP4_B, 64)
            .udp(40000, 53)
            .write(out, b"hi")
            .expect("build")
    });
    frame.resize(60, 0);
    frame
}

fn eth_header(ethertype: u16) -> Vec<u8> {
    let mut frame = Vec::with_capacity(128);
    frame.extend_from_slice(&MAC_B);
    frame.extend_from_slice(&MAC_A);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame
}

/// Ethernet + a correct 20-byte IPv4 header for `payload` of `protocol`.
pub fn ipv4_with_payload(protocol: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_between(IP4_A, IP4_B, protocol, payload)
}

/// [`ipv4_with_payload`] from `from` to `to`.
pub fn ipv4_between(from: [u8; 4], to: [u8; 4], protocol: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = eth_header(0x0800);
    let total = (IPV4_HLEN + payload.len()) as u16;
    frame.extend_from_slice(&[0x45, 0]);
    frame.extend_from_slice(&total.to_be_bytes());
    frame.extend_from_slice(&[0, 1, 0x40, 0, 64, protocol, 0, 0]);
    frame.extend_from_slice(&from);
    frame.extend_from_slice(&to);
    frame.extend_from_slice(payload);
    fix_ipv4_checksum(&mut frame);
    frame
}

/// Ethernet + a 40-byte IPv6 header for `payload` starting with `next_header`.
pub fn ipv6_with_payload(next_header: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = eth_header(0x86DD);
    frame.extend_from_slice(&[0x60, 0, 0, 0]);
    frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    frame.extend_from_slice(&[next_header, 64]);
    frame.extend_from_slice(&IP6_A);
    frame.extend_from_slice(&IP6_B);
    frame.extend_from_slice(payload);
    frame
}

/// Rewrites the IPv4 header checksum of `frame` to match its header.
pub fn fix_ipv4_checksum(frame: &mut [u8]) {
    let header = &mut frame[ETH_HLEN..ETH_HLEN + IPV4_HLEN];
    header[10] = 0;
    header[11] = 0;
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    header[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}
