//! Anti-spoofing on node devices (issue 16 item 2): a host on the underlay
//! sending with a pod's source address must not be classified with that
//! pod's identity. Packets from the network whose source is in the
//! receiving node's pod CIDR are dropped, and a source in another node's
//! pod CIDR passes only from that node; both under "Unknown sender" (172),
//! counted and reported as a flow.
//!
//! First the program on crafted frames (BPF_PROG_TEST_RUN), then a 3-node
//! lab: real sockets in the outside world's namespace and in other nodes'
//! namespaces send with spoofed pod sources to a pod on n1, and the pod
//! receives none of them while real cross-node and outside traffic still
//! arrives.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use ipnetwork::Ipv4Network;
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
use weir_abi::{Reason, TrafficDirection};
use weir_agent::datapath::maps::{self, PodCidrOwner};
use weir_agent::datapath::{Datapath, ProgramKind};
use weir_lab::testing::{namespace_yaml, pod_yaml, wait_until, TestLab};
use weir_tests::datapath::{load, test_run, test_run_on, PinDir};
use weir_tests::netns::{NetNs, VethPair};
use weir_tests::{names, packets, require_root};

const TC_ACT_OK: i32 = 0;
const TC_ACT_SHOT: i32 = 2;

/// Runs `frame` through `program` in the namespace `netns`, arriving on
/// its interface `ifindex` (loopback: 1), and returns the verdict and the
/// (reason, direction) counters that moved.
fn run_in(
    netns: &NetNs,
    ifindex: u32,
    datapath: &mut Datapath,
    program: ProgramKind,
    frame: &[u8],
) -> (i32, Vec<(u8, u8)>) {
    let before = datapath.metrics().expect("read metrics");
    let file = std::fs::File::open(weir_tests::netns::path(netns.name())).expect("netns");
    let verdict = std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            match ifindex {
                1 => test_run(datapath, program, frame, 1),
                _ => test_run_on(datapath, program, frame, 1, ifindex),
            }
            .expect("BPF_PROG_TEST_RUN")
        })
        .join()
        .expect("test run thread")
    })
    .verdict;
    let delta = datapath.metrics().expect("read metrics").since(&before);
    (verdict, delta.iter().map(|(r, d, _)| (r, d)).collect())
}

/// `frame` with another Ethernet source address.
fn from_mac(mut frame: Vec<u8>, mac: [u8; 6]) -> Vec<u8> {
    frame[6..12].copy_from_slice(&mac);
    frame
}

#[test]
fn the_netdev_program_accepts_pod_sources_only_from_their_next_hop() {
    require_root();
    // Namespace a stands for the receiving node: its device reaches the
    // other node (10.99.0.2, whose MAC address the crafted frames carry,
    // packets::MAC_A) and routes that node's pod CIDR through it.
    let pair = VethPair::new(&names::unique()).expect("veth pair");
    let node = &pair.a;
    node.sysctl("net.ipv4.conf.all.forwarding", "1").unwrap();
    // The FIB lookup helper answers IPv6 only with forwarding on.
    node.sysctl("net.ipv6.conf.all.forwarding", "1").unwrap();
    let mac_a = packets::MAC_A.map(|b| format!("{b:02x}")).join(":");
    for args in [
        vec!["route", "add", "10.244.2.0/24", "via", VethPair::ADDR_B],
        vec![
            "neigh",
            "replace",
            VethPair::ADDR_B,
            "lladdr",
            &mac_a,
            "dev",
            &pair.dev_a,
            "nud",
            "permanent",
        ],
        // A node whose MAC address is not known (yet).
        vec!["route", "add", "10.244.4.0/24", "via", "10.99.0.4"],
        // The other node is dual stack: its IPv6 pod CIDR through its IPv6
        // address, the same MAC address.
        vec![
            "-6",
            "route",
            "add",
            "fd00:10:244:2::/112",
            "via",
            VethPair::ADDR6_B,
        ],
        vec![
            "-6",
            "neigh",
            "replace",
            VethPair::ADDR6_B,
            "lladdr",
            &mac_a,
            "dev",
            &pair.dev_a,
            "nud",
            "permanent",
        ],
    ] {
        node.ip(&args).unwrap();
    }
    let dev_a = pair.dev_a.clone();
    let device = node
        .run(move || nix::net::if_::if_nametoindex(dev_a.as_str()))
        .unwrap()
        .expect("ifindex");

    let pins = PinDir::new();
    let mut datapath = load(&pins).expect("load");
    let own: Ipv4Network = "10.244.1.0/24".parse().unwrap();
    let ebpf = datapath.ebpf_mut();
    let owner = |ip, local| PodCidrOwner {
        node_ip: Ipv4Addr::new(10, 99, 0, ip),
        local,
    };
    maps::set_pod_cidr(ebpf, own.into(), owner(1, true)).unwrap();
    for (cidr, ip) in [
        ("10.244.2.0/24", 2),
        ("10.244.3.0/24", 3),
        ("10.244.4.0/24", 4),
    ] {
        maps::set_pod_cidr(ebpf, cidr.parse().unwrap(), owner(ip, false)).unwrap();
    }
    // IPv6 pod CIDRs: this node's, node 2's (routed), node 3's (no route).
    let own6: ipnetwork::Ipv6Network = "fd00:10:244:1::/112".parse().unwrap();
    maps::set_pod_cidr(ebpf, own6.into(), owner(1, true)).unwrap();
    for (cidr, ip) in [("fd00:10:244:2::/112", 2), ("fd00:10:244:3::/112", 3)] {
        maps::set_pod_cidr(ebpf, cidr.parse().unwrap(), owner(ip, false)).unwrap();
    }
    let pod6 = |node: u16| std::net::Ipv6Addr::new(0xfd00, 0x10, 0x244, node, 0, 0, 0, 7).octets();

    let ingress = TrafficDirection::Ingress as u8;
    let dropped = (
        TC_ACT_SHOT,
        vec![(Reason::DropUnknownSender as u8, ingress)],
    );
    let passed = (TC_ACT_OK, vec![(Reason::Forwarded as u8, ingress)]);
    let mut from_network = |ifindex, frame: &[u8]| {
        run_in(node, ifindex, &mut datapath, ProgramKind::FromNetdev, frame)
    };
    let remote = packets::ipv4_udp_from([10, 244, 2, 7]);
    let cases = [
        // This node's own pod: never from the network.
        (
            "own pod CIDR",
            device,
            packets::ipv4_udp_from([10, 244, 1, 7]),
            &dropped,
        ),
        // Another node's pod from that node: its MAC, on the route's device.
        ("remote pod from its node", device, remote.clone(), &passed),
        // ... from anyone else on the segment.
        (
            "remote pod, other sender",
            device,
            from_mac(remote.clone(), packets::MAC_B),
            &dropped,
        ),
        // ... from the right MAC on another interface (loopback).
        ("remote pod, other interface", 1, remote.clone(), &dropped),
        // A pod CIDR this node has no route to, and one whose next hop's
        // MAC address is not resolved: nothing vouches for the sender.
        (
            "no route back",
            device,
            packets::ipv4_udp_from([10, 244, 3, 7]),
            &dropped,
        ),
        (
            "next hop unresolved",
            device,
            packets::ipv4_udp_from([10, 244, 4, 7]),
            &dropped,
        ),
        // Not a pod address: not checked.
        (
            "outside address",
            device,
            packets::ipv4_udp_from([203, 0, 113, 10]),
            &passed,
        ),
        // The same over IPv6 (weir_pod_cidrs6).
        (
            "own IPv6 pod CIDR",
            device,
            packets::ipv6_udp_from(pod6(1)),
            &dropped,
        ),
        (
            "remote IPv6 pod from its node",
            device,
            packets::ipv6_udp_from(pod6(2)),
            &passed,
        ),
        (
            "remote IPv6 pod, other sender",
            device,
            from_mac(packets::ipv6_udp_from(pod6(2)), packets::MAC_B),
            &dropped,
        ),
        (
            "remote IPv6 pod, other interface",
            1,
            packets::ipv6_udp_from(pod6(2)),
            &dropped,
        ),
        (
            "IPv6, no route back",
            device,
            packets::ipv6_udp_from(pod6(3)),
            &dropped,
        ),
        ("IPv6 outside address", device, packets::ipv6_udp(), &passed),
    ];
    for (case, ifindex, frame, expected) in &cases {
        assert_eq!(&from_network(*ifindex, frame), *expected, "{case}");
    }
    // The node's own pods' packets leaving it are not the check's business.
    let frame = packets::ipv4_udp_from([10, 244, 1, 7]);
    assert_eq!(
        run_in(node, device, &mut datapath, ProgramKind::ToNetdev, &frame),
        (
            TC_ACT_OK,
            vec![(Reason::Forwarded as u8, TrafficDirection::Egress as u8)]
        ),
        "own pod leaving"
    );
    // A CIDR removed from the map is no longer checked.
    maps::remove_pod_cidr(datapath.ebpf_mut(), own.into()).unwrap();
    assert_eq!(
        run_in(node, device, &mut datapath, ProgramKind::FromNetdev, &frame),
        passed,
        "after removal"
    );
}

/// The port the target pod receives on (a socket of the test's own).
const PORT: u16 = 7777;

/// A UDP socket in `netns` bound to `source`, which need not be an address
/// of the namespace (`IP_TRANSPARENT`): what a host forging a source does.
fn socket_in(netns: &str, source: SocketAddrV4) -> UdpSocket {
    weir_tests::netns::run_in(netns, move || -> nix::Result<UdpSocket> {
        let fd = socket::socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        socket::setsockopt(&fd, sockopt::IpTransparent, &true)?;
        socket::bind(fd.as_raw_fd(), &SockaddrIn::from(source))?;
        Ok(UdpSocket::from(fd))
    })
    .expect("thread in netns")
    .unwrap_or_else(|e| panic!("socket in {netns} bound to {source}: {e}"))
}

/// One sender: where it sends from, and the source it puts on the packet.
struct Sender {
    name: &'static str,
    netns: String,
    source: SocketAddrV4,
    spoofed: bool,
}

/// Sends `name` three times from each sender to `target`.
fn send_all(senders: &[Sender], target: SocketAddrV4) {
    for round in 0..3 {
        for sender in senders {
            let socket = socket_in(&sender.netns, sender.source);
            socket
                .send_to(sender.name.as_bytes(), target)
                .unwrap_or_else(|e| panic!("{} round {round}: {e}", sender.name));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What `receiver` got (payload, source) until `expected` all arrived and
/// then for `linger` more (so late spoofed packets would be seen too), or
/// until `limit`.
fn receive(
    receiver: &UdpSocket,
    expected: &[&str],
    linger: Duration,
    limit: Duration,
) -> BTreeSet<(String, SocketAddrV4)> {
    receiver
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut got = BTreeSet::new();
    let mut complete_at: Option<Instant> = None;
    let mut buf = [0u8; 256];
    while Instant::now() < deadline && complete_at.is_none_or(|at| at.elapsed() < linger) {
        if let Ok((n, std::net::SocketAddr::V4(from))) = receiver.recv_from(&mut buf) {
            got.insert((String::from_utf8_lossy(&buf[..n]).into_owned(), from));
        }
        let names: BTreeSet<&str> = got.iter().map(|(name, _)| name.as_str()).collect();
        if complete_at.is_none() && expected.iter().all(|e| names.contains(e)) {
            complete_at = Some(Instant::now());
        }
    }
    got
}

/// The content of a node's pinned `weir_pod_cidrs`.
fn pinned_pod_cidrs(bpffs_dir: &std::path::Path) -> BTreeMap<Ipv4Network, PodCidrOwner> {
    let pin = aya::maps::MapData::from_pin(bpffs_dir.join(weir_abi::map_names::POD_CIDRS))
        .expect("pinned weir_pod_cidrs");
    let map: aya::maps::LpmTrie<_, weir_abi::PodCidrKey, weir_abi::PodCidrInfo> =
        aya::maps::LpmTrie::try_from(aya::maps::Map::LpmTrie(pin)).expect("an LPM trie");
    map.iter()
        .map(|entry| {
            let (key, value) = entry.expect("an entry");
            (
                maps::pod_cidrs::decode_key(&key).expect("a prefix"),
                maps::pod_cidrs::decode_value(&value),
            )
        })
        .collect()
}

/// The packets counted under "Unknown sender" on `node`'s devices.
fn unknown_sender_drops(lab: &TestLab, node: &str) -> u64 {
    let needle = "weir_drop_count_total{direction=\"ingress\",reason=\"Unknown sender\"} ";
    lab.scrape_metrics(node)
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix(needle))
        .map_or(0, |n| n.trim().parse::<f64>().unwrap() as u64)
}

#[test]
fn spoofed_pod_sources_from_the_world_and_other_nodes_are_dropped() {
    let mut lab = TestLab::up(3).unwrap();
    let mut yaml = namespace_yaml("x");
    // The target, a pod beside it on the receiving node, and a pod on n2.
    yaml.push_str(&pod_yaml("x", "target", "n1", &[80]));
    yaml.push_str(&pod_yaml("x", "local", "n1", &[80]));
    yaml.push_str(&pod_yaml("x", "remote", "n2", &[80]));
    lab.apply_yaml(&yaml).unwrap();
    let target = lab.pod("x/target").unwrap().clone();
    let local = lab.pod("x/local").unwrap().clone();
    let remote = lab.pod("x/remote").unwrap().clone();
    let node = |name: &str| lab.state().node(name).unwrap().clone();
    let (n1, n2, n3) = (node("n1"), node("n2"), node("n3"));
    let world = lab.world_target(weir_lab::WORLD_ADDRESSES[0]);
    let at = |ip: Ipv4Addr, port: u16| SocketAddrV4::new(ip, port);

    // n1's agent has its own pod CIDR (local) and the other nodes' (from
    // their node records) in the pinned map.
    let expected: BTreeMap<Ipv4Network, PodCidrOwner> = lab
        .state()
        .nodes
        .iter()
        .map(|node| {
            let owner = PodCidrOwner {
                node_ip: node.underlay_ip,
                local: node.name == "n1",
            };
            (node.pod_cidr.parse().expect("pod CIDR"), owner)
        })
        .collect();
    assert_eq!(expected.len(), 3);
    assert!(expected
        .iter()
        .any(|(cidr, o)| o.local && cidr.contains(target.ip)));
    wait_until("n1's weir_pod_cidrs", Duration::from_secs(10), || {
        pinned_pod_cidrs(&n1.bpffs_dir) == expected
    });

    let receiver = weir_tests::netns::run_in(&target.netns, || {
        UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT))
    })
    .unwrap()
    .expect("bind in the target pod");
    let destination = at(target.ip, PORT);
    let legitimate = |name: &'static str| match name {
        "pod-on-n2" => Sender {
            name,
            netns: remote.netns.clone(),
            source: at(remote.ip, 40001),
            spoofed: false,
        },
        _ => Sender {
            name,
            netns: world.netns.clone(),
            source: at(world.ip, 40002),
            spoofed: false,
        },
    };

    // Real traffic first: from a pod of n2 (n1 learns n2's MAC address
    // from its ARP request on the way) and from the outside world.
    let before = [legitimate("pod-on-n2"), legitimate("world")];
    send_all(&before, destination);
    let got = receive(
        &receiver,
        &["pod-on-n2", "world"],
        Duration::ZERO,
        Duration::from_secs(10),
    );
    assert_eq!(
        got.iter().map(|(n, _)| n.as_str()).collect::<BTreeSet<_>>(),
        BTreeSet::from(["pod-on-n2", "world"]),
        "real traffic before the spoofing: {got:?}"
    );
    let neighbour = NetNs::existing(&n1.netns)
        .ip(&["neigh", "show", &n2.underlay_ip.to_string()])
        .unwrap();
    assert!(
        neighbour.contains("lladdr"),
        "n1 knows n2's MAC address, so the check compares addresses: {neighbour}"
    );
    let drops_before = unknown_sender_drops(&lab, "n1");

    // Each spoofed sender from its own source port, so its drop flows can
    // be told apart.
    let spoofed = |name, netns: &str, source: Ipv4Addr, port| Sender {
        name,
        netns: netns.to_string(),
        source: at(source, port),
        spoofed: true,
    };
    let senders = [
        // (a) The world, as a pod of the receiving node.
        spoofed("world-as-n1-pod", &world.netns, local.ip, 41001),
        // (b) The world, as a pod of another node.
        spoofed("world-as-n2-pod", &world.netns, remote.ip, 41002),
        // (c) Another node, as a pod of a third node and of the receiver.
        spoofed("n3-as-n2-pod", &n3.netns, remote.ip, 41003),
        spoofed("n2-as-n1-pod", &n2.netns, local.ip, 41004),
        // (d) Another node, as an unused address of a third node's range.
        spoofed(
            "n3-as-n2-unused",
            &n3.netns,
            Ipv4Addr::from(u32::from(remote.ip) + 100),
            41005,
        ),
        // Real traffic alongside keeps passing.
        legitimate("pod-on-n2"),
        legitimate("world"),
    ];
    send_all(&senders, destination);
    let got = receive(
        &receiver,
        &["pod-on-n2", "world"],
        Duration::from_secs(1),
        Duration::from_secs(10),
    );
    let arrived: BTreeSet<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    let leaked: Vec<&str> = senders
        .iter()
        .filter(|s| s.spoofed && arrived.contains(s.name))
        .map(|s| s.name)
        .collect();
    assert!(
        leaked.is_empty(),
        "spoofed packets reached the pod: {leaked:?} (all received: {got:?})"
    );
    assert!(
        arrived.contains("pod-on-n2") && arrived.contains("world"),
        "real traffic while spoofing: {got:?}"
    );

    // Every spoofed packet was counted (3 per sender) ...
    let spoofers = senders.iter().filter(|s| s.spoofed).count() as u64;
    let drops = unknown_sender_drops(&lab, "n1") - drops_before;
    assert!(
        drops >= 3 * spoofers,
        "{drops} drops counted as Unknown sender, expected {}",
        3 * spoofers
    );
    // ... and reported as a drop flow with its reason, at the node device.
    let flows = lab.observe(
        "n1",
        &["--verdict", "DROPPED", "--type", "drop", "--last", "1000"],
    );
    for sender in senders.iter().filter(|s| s.spoofed) {
        let found = flows.iter().any(|f| {
            f["drop_reason_desc"] == "UNKNOWN_SENDER"
                && f["IP"]["source"] == sender.source.ip().to_string()
                && f["source_port"] == sender.source.port()
                && f["IP"]["destination"] == target.ip.to_string()
                && f["destination_port"] == PORT
                && f["node_name"] == "n1"
        });
        assert!(
            found,
            "no UNKNOWN_SENDER drop flow for {}: {flows:#?}",
            sender.name
        );
    }
}
