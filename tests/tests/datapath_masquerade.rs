//! BPF masquerading in the node-device programs through BPF_PROG_TEST_RUN
//! (issue 19 item 3): what `weir_to_netdev` rewrites, what it leaves
//! alone, and the reply `weir_from_netdev` translates back.

use std::net::Ipv4Addr;

use weir_abi::lb::{SNAT_PORT_MAX, SNAT_PORT_MIN};
use weir_abi::IpcacheValue;
use weir_agent::datapath::maps::{self, PodCidrOwner};
use weir_agent::datapath::{Datapath, LoadOptions, ProgramKind};
use weir_tests::datapath::{test_run_out, PinDir};
use weir_tests::{packets, require_root};

const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
const REMOTE_NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 12);
/// This node's pods (packets::IP4_A is one).
const POD_CIDR: &str = "10.99.0.0/24";
const REMOTE_POD_CIDR: &str = "10.98.0.0/24";
const WORLD: [u8; 4] = [203, 0, 113, 10];
const NON_MASQUERADE: [u8; 4] = [203, 0, 113, 20];

fn setup(masquerade: bool) -> (PinDir, Datapath) {
    require_root();
    let pins = PinDir::new();
    let options = LoadOptions {
        masquerade,
        node_ipv4: Some(NODE),
        ..LoadOptions::default()
    };
    let mut datapath = Datapath::load_with(pins.path(), &options).unwrap();
    let ebpf = datapath.ebpf_mut();
    for (cidr, node_ip, local) in [
        (POD_CIDR, NODE, true),
        (REMOTE_POD_CIDR, REMOTE_NODE, false),
    ] {
        maps::set_pod_cidr(ebpf, cidr.parse().unwrap(), PodCidrOwner { node_ip, local }).unwrap();
    }
    maps::set_ipcache(
        ebpf,
        format!("{REMOTE_NODE}/32").parse().unwrap(),
        IpcacheValue {
            identity: weir_abi::identity::REMOTE_NODE,
            node_ipv4: REMOTE_NODE.octets(),
            address_identity: 0,
        },
    )
    .unwrap();
    maps::set_non_masquerade(
        ebpf,
        &[format!("{}/32", Ipv4Addr::from(NON_MASQUERADE))
            .parse()
            .unwrap()],
    )
    .unwrap();
    (pins, datapath)
}

fn tcp(from: [u8; 4], sport: u16, to: [u8; 4], dport: u16, syn: bool) -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ethernet2(packets::MAC_A, packets::MAC_B)
        .ipv4(from, to, 64)
        .tcp(sport, dport, 1, 65535);
    let builder = if syn { builder.syn() } else { builder.ack(1) };
    let mut out = Vec::new();
    builder.write(&mut out, &[]).unwrap();
    out
}

/// (source, source port, destination, destination port) of a frame.
fn tuple(frame: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let ip = packets::ETH_HLEN;
    let l4 = ip + packets::IPV4_HLEN;
    let addr = |at: usize| Ipv4Addr::new(frame[at], frame[at + 1], frame[at + 2], frame[at + 3]);
    let port = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
    (addr(ip + 12), port(l4), addr(ip + 16), port(l4 + 2))
}

fn leaving(datapath: &mut Datapath, frame: &[u8]) -> Vec<u8> {
    let (verdict, out) = test_run_out(datapath, ProgramKind::ToNetdev, frame).unwrap();
    assert_eq!(verdict, 0, "passes");
    assert!(packets::ipv4_checksum_ok(&out), "IPv4 checksum still right");
    out
}

#[test]
fn a_pods_connection_out_of_the_cluster_leaves_from_the_node() {
    let (_pins, mut datapath) = setup(true);
    let out = leaving(&mut datapath, &tcp(packets::IP4_A, 40000, WORLD, 80, true));
    let (source, port, destination, dport) = tuple(&out);
    assert_eq!((source, destination, dport), (NODE, WORLD.into(), 80));
    assert!((SNAT_PORT_MIN..=SNAT_PORT_MAX).contains(&port), "{port}");
    // The connection keeps its port.
    let again = leaving(&mut datapath, &tcp(packets::IP4_A, 40000, WORLD, 80, false));
    assert_eq!(tuple(&again).1, port);
    // Another pod with the same source port gets another one.
    let other = leaving(&mut datapath, &tcp([10, 99, 0, 3], 40000, WORLD, 80, true));
    assert_eq!(tuple(&other).0, NODE);
    assert_ne!(tuple(&other).1, port, "a port of its own");

    // The server's reply to the node's port goes back to the pod.
    let reply = tcp(WORLD, 80, NODE.octets(), port, false);
    let (verdict, back) = test_run_out(&mut datapath, ProgramKind::FromNetdev, &reply).unwrap();
    assert_ne!(verdict, 2, "not dropped");
    assert_eq!(
        tuple(&back),
        (WORLD.into(), 80, Ipv4Addr::from(packets::IP4_A), 40000)
    );
    assert!(packets::ipv4_checksum_ok(&back));
}

#[test]
fn pods_nodes_non_masquerade_prefixes_and_the_node_itself_are_left_alone() {
    let (_pins, mut datapath) = setup(true);
    let cases = [
        (
            "to a non-masquerade prefix",
            tcp(packets::IP4_A, 40001, NON_MASQUERADE, 80, true),
        ),
        (
            "to another node's pod",
            tcp(packets::IP4_A, 40002, [10, 98, 0, 5], 80, true),
        ),
        (
            "to this node's pod",
            tcp(packets::IP4_A, 40003, packets::IP4_B, 80, true),
        ),
        (
            "to another node",
            tcp(packets::IP4_A, 40004, REMOTE_NODE.octets(), 80, true),
        ),
        ("from the node", tcp(NODE.octets(), 40005, WORLD, 80, true)),
    ];
    for (case, frame) in cases {
        assert_eq!(leaving(&mut datapath, &frame), frame, "{case}: unchanged");
    }
}

#[test]
fn nothing_is_masqueraded_unless_switched_on() {
    let (_pins, mut datapath) = setup(false);
    let frame = tcp(packets::IP4_A, 40000, WORLD, 80, true);
    assert_eq!(leaving(&mut datapath, &frame), frame);
}
