//! Per-packet service NAT of IPv6 NodePorts in the node-device programs
//! through BPF_PROG_TEST_RUN (issue 19 item 2): a client from outside
//! reaching `[node]:nodePort` is sent to a local backend with its own
//! source kept, or to a remote one from the node's address and a SNAT port;
//! the replies get the frontend back; every TCP/UDP checksum stays right.

use std::net::Ipv6Addr;

use weir_abi::ip_proto;
use weir_abi::lb::{
    Lb4Backend, Lb4Service, Lb6Backend, Lb6Key, LbNatKey, LB_SCOPE_EXTERNAL, SNAT_PORT_MAX,
    SNAT_PORT_MIN,
};
use weir_agent::datapath::maps::lb;
use weir_agent::datapath::{Datapath, LoadOptions, ProgramKind};
use weir_tests::datapath::{test_run_out, PinDir};
use weir_tests::{packets, require_root};

const NODE: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 0x11);
const CLIENT: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1);
const LOCAL_BACKEND: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 1, 0, 0, 0, 5);
const REMOTE_BACKEND: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 2, 0, 0, 0, 7);
const NODE_PORT: u16 = 30080;
const TARGET_PORT: u16 = 8080;
const TC_ACT_SHOT: i32 = 2;
const TC_ACT_REDIRECT: i32 = 7;

fn setup() -> (PinDir, Datapath) {
    require_root();
    let pins = PinDir::new();
    let options = LoadOptions {
        node_ipv6: Some(NODE),
        ..LoadOptions::default()
    };
    let datapath = Datapath::load_with(pins.path(), &options).unwrap();
    (pins, datapath)
}

/// `[NODE]:NODE_PORT` over `protocol`, external scope, with one backend.
fn node_port(datapath: &mut Datapath, protocol: u8, backend: Ipv6Addr, local: bool) {
    let ebpf = datapath.ebpf_mut();
    let id = 1;
    lb::set_backend6(
        ebpf,
        id,
        Lb6Backend {
            address: backend.octets(),
            port: TARGET_PORT.to_be_bytes(),
            protocol,
            state: Lb4Backend::STATE_ACTIVE,
            flags: if local { Lb4Backend::FLAG_LOCAL } else { 0 },
            pad: [0; 3],
        },
    )
    .unwrap();
    let key = |slot: u16| Lb6Key {
        address: NODE.octets(),
        port: NODE_PORT.to_be_bytes(),
        backend_slot: slot,
        protocol,
        scope: LB_SCOPE_EXTERNAL,
        pad: [0; 2],
    };
    let slot = Lb4Service {
        backend_id: id,
        ..Lb4Service::default()
    };
    lb::set_service6(ebpf, key(1), slot).unwrap();
    let service = Lb4Service {
        count: 1,
        rev_nat_id: 1,
        flags: Lb4Service::FLAG_NODE_PORT,
        ..Lb4Service::default()
    };
    lb::set_service6(ebpf, key(0), service).unwrap();
}

fn segment(protocol: u8, from: (Ipv6Addr, u16), to: (Ipv6Addr, u16), first: bool) -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ethernet2(packets::MAC_A, packets::MAC_B).ipv6(
        from.0.octets(),
        to.0.octets(),
        64,
    );
    let mut out = Vec::new();
    if protocol == ip_proto::TCP {
        let tcp = builder.tcp(from.1, to.1, 1, 65535);
        let tcp = if first { tcp.syn() } else { tcp.ack(1) };
        tcp.write(&mut out, b"nodeport6").unwrap();
    } else {
        builder
            .udp(from.1, to.1)
            .write(&mut out, b"nodeport6")
            .unwrap();
    }
    out
}

/// (source, source port, destination, destination port) of a frame.
fn tuple(frame: &[u8]) -> ((Ipv6Addr, u16), (Ipv6Addr, u16)) {
    let ip = packets::ETH_HLEN;
    let l4 = ip + packets::IPV6_HLEN;
    let addr = |at: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&frame[at..at + 16]).unwrap());
    let port = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
    ((addr(ip + 8), port(l4)), (addr(ip + 24), port(l4 + 2)))
}

/// Whether the TCP/UDP checksum of an IPv6 frame is right (the pseudo
/// header of RFC 8200 section 8.1 and the segment).
fn l4_checksum_ok(frame: &[u8]) -> bool {
    let ip = packets::ETH_HLEN;
    let l4 = &frame[ip + packets::IPV6_HLEN..];
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&frame[ip + 8..ip + 40]);
    pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, frame[ip + 6]]);
    pseudo.extend_from_slice(l4);
    packets::internet_checksum(&pseudo) == 0
}

fn run(datapath: &mut Datapath, program: ProgramKind, frame: &[u8]) -> (i32, Vec<u8>) {
    assert!(l4_checksum_ok(frame), "the crafted frame's checksum");
    let (verdict, out) = test_run_out(datapath, program, frame).unwrap();
    assert_ne!(verdict, TC_ACT_SHOT, "not dropped");
    assert!(l4_checksum_ok(&out), "L4 checksum right after NAT");
    (verdict, out)
}

#[test]
fn a_local_backend_gets_the_clients_own_source_and_replies_come_from_the_node_port() {
    for protocol in [ip_proto::TCP, ip_proto::UDP] {
        let (_pins, mut datapath) = setup();
        node_port(&mut datapath, protocol, LOCAL_BACKEND, true);
        let client = (CLIENT, 40000);
        let frontend = (NODE, NODE_PORT);
        let request = segment(protocol, client, frontend, true);
        let (_, forward) = run(&mut datapath, ProgramKind::FromNetdev, &request);
        assert_eq!(
            tuple(&forward),
            (client, (LOCAL_BACKEND, TARGET_PORT)),
            "protocol {protocol}: to the backend, the client's source kept"
        );
        // The backend's reply leaves through the node device as the node port's.
        let reply = segment(protocol, (LOCAL_BACKEND, TARGET_PORT), client, false);
        let (_, back) = run(&mut datapath, ProgramKind::ToNetdev, &reply);
        assert_eq!(tuple(&back), (frontend, client), "protocol {protocol}");
        // The connection's next packet takes the same backend.
        let next = segment(protocol, client, frontend, false);
        let (_, again) = run(&mut datapath, ProgramKind::FromNetdev, &next);
        assert_eq!(tuple(&again).1, (LOCAL_BACKEND, TARGET_PORT));
        let mappings = lb::nat6_entries_live(datapath.ebpf_mut()).unwrap();
        assert_eq!(mappings.len(), 2, "forward and reply: {mappings:?}");
    }
}

#[test]
fn a_remote_backend_is_reached_from_the_nodes_address_and_its_replies_return_to_the_client() {
    let (_pins, mut datapath) = setup();
    node_port(&mut datapath, ip_proto::TCP, REMOTE_BACKEND, false);
    let client = (CLIENT, 40001);
    let frontend = (NODE, NODE_PORT);
    let (_, forward) = run(
        &mut datapath,
        ProgramKind::FromNetdev,
        &segment(ip_proto::TCP, client, frontend, true),
    );
    let ((source, snat_port), destination) = tuple(&forward);
    assert_eq!(source, NODE, "SNAT to the node's IPv6 address");
    assert!(
        (SNAT_PORT_MIN..=SNAT_PORT_MAX).contains(&snat_port),
        "{snat_port}"
    );
    assert_eq!(destination, (REMOTE_BACKEND, TARGET_PORT));
    let mappings = lb::nat6_entries_live(datapath.ebpf_mut()).unwrap();
    let reply_key = mappings
        .iter()
        .find(|(key, _)| key.direction == LbNatKey::<[u32; 4]>::REPLY)
        .map(|(key, _)| *key)
        .expect("a reply mapping");
    assert_eq!(reply_key.daddr, weir_abi::lb::ipv6_words(&NODE.octets()));
    assert_eq!(u16::from_be_bytes(reply_key.dport), snat_port);

    // The backend answers the node's address and port: back to the client,
    // from the node port.
    let reply = segment(
        ip_proto::TCP,
        (REMOTE_BACKEND, TARGET_PORT),
        (NODE, snat_port),
        false,
    );
    let (_, back) = run(&mut datapath, ProgramKind::FromNetdev, &reply);
    assert_eq!(tuple(&back), (frontend, client));
}

#[test]
fn packets_for_other_ports_or_without_a_node_address_are_left_alone() {
    let (_pins, mut datapath) = setup();
    node_port(&mut datapath, ip_proto::TCP, LOCAL_BACKEND, true);
    let other = segment(ip_proto::TCP, (CLIENT, 40002), (NODE, 22), true);
    let (_, out) = run(&mut datapath, ProgramKind::FromNetdev, &other);
    assert_eq!(out, other, "not a frontend: untouched");
    assert!(lb::nat6_entries_live(datapath.ebpf_mut())
        .unwrap()
        .is_empty());

    // Without --node-ipv6 a remote backend cannot be reached per packet:
    // the connection is refused as one without backends (a counted drop,
    // answered with ICMPv6 port unreachable).
    require_root();
    let pins = PinDir::new();
    let mut datapath = Datapath::load_with(pins.path(), &LoadOptions::default()).unwrap();
    node_port(&mut datapath, ip_proto::TCP, REMOTE_BACKEND, false);
    let request = segment(ip_proto::TCP, (CLIENT, 40003), (NODE, NODE_PORT), true);
    let (verdict, out) = test_run_out(&mut datapath, ProgramKind::FromNetdev, &request).unwrap();
    assert_eq!(verdict, TC_ACT_REDIRECT, "refused: sent back out");
    assert_eq!(out[packets::ETH_HLEN + 6], ip_proto::ICMPV6);
    assert!(lb::nat6_entries_live(datapath.ebpf_mut())
        .unwrap()
        .is_empty());
}

#[test]
fn a_node_port_without_backends_answers_icmpv6_port_unreachable() {
    let (_pins, mut datapath) = setup();
    let key = Lb6Key {
        address: NODE.octets(),
        port: NODE_PORT.to_be_bytes(),
        backend_slot: 0,
        protocol: ip_proto::TCP,
        scope: LB_SCOPE_EXTERNAL,
        pad: [0; 2],
    };
    let service = Lb4Service {
        count: 0,
        rev_nat_id: 1,
        flags: Lb4Service::FLAG_NODE_PORT,
        ..Lb4Service::default()
    };
    lb::set_service6(datapath.ebpf_mut(), key, service).unwrap();
    let syn = segment(ip_proto::TCP, (CLIENT, 40004), (NODE, NODE_PORT), true);
    let (verdict, out) = test_run_out(&mut datapath, ProgramKind::FromNetdev, &syn).unwrap();
    assert_eq!(verdict, TC_ACT_REDIRECT, "sent back out");
    let ip = packets::ETH_HLEN;
    let icmp = ip + packets::IPV6_HLEN;
    assert_eq!(out.len(), icmp + 8 + 48, "ICMPv6 quoting 48 bytes");
    assert_eq!(out[ip + 6], ip_proto::ICMPV6);
    let addr = |at: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&out[at..at + 16]).unwrap());
    assert_eq!((addr(ip + 8), addr(ip + 24)), (NODE, CLIENT));
    assert_eq!(
        (out[icmp], out[icmp + 1]),
        (1, 4),
        "destination/port unreachable"
    );
    assert!(l4_checksum_ok(&out), "ICMPv6 checksum");
    assert_eq!(&out[icmp + 8..], &syn[ip..ip + 48], "the quote");
    assert_eq!(&out[..6], &syn[6..12], "to the sender's MAC address");
    // A segment that opens nothing is dropped without an answer.
    let ack = segment(ip_proto::TCP, (CLIENT, 40004), (NODE, NODE_PORT), false);
    let (verdict, _) = test_run_out(&mut datapath, ProgramKind::FromNetdev, &ack).unwrap();
    assert_eq!(verdict, TC_ACT_SHOT);
}
