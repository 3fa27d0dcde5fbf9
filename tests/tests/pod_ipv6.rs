//! IPv6 from a pod that Weir gave no IPv6 address (issue 16 item 1), on the
//! real kernel with real sockets: namespace `a` is the node, `b` the pod,
//! the pod programs attached to the node's end of the veth pair.
//!
//! The pod owns only its link-local address (the EUI-64 of its MAC address)
//! and `::`; `fd00:99::2`, which the pod configured itself, and any other
//! link-local address are forged. The node's link-local addresses are the
//! `host` entity in the ipcache, so an egress policy that allows the world
//! but not the host keeps the pod away from a listener on `[::]` of the
//! node.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use weir_abi::endpoint::eui64_interface_id;
use weir_abi::policy::*;
use weir_abi::{identity, EndpointInfo, PolicyEntry, PolicyKey, Reason, TrafficDirection};
use weir_agent::datapath::{maps, Datapath, Hook};
use weir_agent::reconcile::ipcache::DesiredIpcache;
use weir_tests::datapath::PinDir;
use weir_tests::netns::{NetNs, VethPair};
use weir_tests::{names, require_root};

const ENDPOINT_ID: u16 = 7;
const PORT: u16 = 5301;

fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    octets[..8].copy_from_slice(&weir_abi::endpoint::LINK_LOCAL_PREFIX);
    octets[8..].copy_from_slice(&eui64_interface_id(mac));
    Ipv6Addr::from(octets)
}

fn allow_egress(datapath: &mut Datapath, peer: u32) {
    let key = PolicyKey {
        endpoint_id: ENDPOINT_ID,
        direction: TrafficDirection::Egress as u8,
        pad0: 0,
        identity: peer,
        protocol: PROTOCOL_ANY,
        pad1: 0,
        port: [0; 2],
    };
    let entry = PolicyEntry {
        verdict: POLICY_ALLOW,
        match_type: 0,
        pad: [0; 2],
        rule: 1,
    };
    maps::set_policy(datapath.ebpf_mut(), POLICY_PREFIX_ANY_PROTOCOL, key, entry).unwrap();
}

/// The node (`a`) with the pod programs on its end and the pod's endpoint
/// enforced for egress, as the agent writes it: IPv4 address, no IPv6
/// address, the link-local interface identifier of the pod's MAC.
fn node_and_pod(pair: &VethPair, pins: &PinDir) -> Datapath {
    let pin_dir: PathBuf = pins.path().to_path_buf();
    let dev = pair.dev_a.clone();
    let pod_mac = pair.b.mac(&pair.dev_b).unwrap();
    let entry = EndpointInfo {
        id: ENDPOINT_ID,
        flags: EndpointInfo::EGRESS_ENFORCED,
        pad: 0,
        identity: 30_000,
        ipv4: [10, 99, 0, 2],
        ..EndpointInfo::default()
    }
    .with_link_local(eui64_interface_id(pod_mac));
    pair.a
        .run(move || -> anyhow::Result<Datapath> {
            let mut datapath = Datapath::load(&pin_dir)?;
            let ifindex = nix::net::if_::if_nametoindex(dev.as_str())?;
            maps::set_endpoint(datapath.ebpf_mut(), ifindex, entry)?;
            datapath.attach(&dev, Hook::Pod)?;
            Ok(datapath)
        })
        .unwrap()
        .expect("load and attach")
}

/// Connects from the pod to `[address%dev_b]:PORT` over TCP.
fn connects(pod: &NetNs, dev_b: &str, address: Ipv6Addr) -> bool {
    let dev_b = dev_b.to_string();
    pod.run(move || {
        let scope = nix::net::if_::if_nametoindex(dev_b.as_str()).unwrap();
        let target = SocketAddr::V6(SocketAddrV6::new(address, PORT, 0, scope));
        TcpStream::connect_timeout(&target, Duration::from_millis(1500)).is_ok()
    })
    .unwrap()
}

/// Sends `count` UDP datagrams from the pod, from `source` to
/// `[target]:PORT` (both scoped to `dev_b` when link-local).
fn send_udp(pod: &NetNs, dev_b: &str, source: Ipv6Addr, target: Ipv6Addr, count: usize) {
    let dev_b = dev_b.to_string();
    pod.run(move || {
        let scope = nix::net::if_::if_nametoindex(dev_b.as_str()).unwrap();
        let scope_of = |a: Ipv6Addr| if a.is_unicast_link_local() { scope } else { 0 };
        let socket = UdpSocket::bind(SocketAddrV6::new(source, 0, 0, scope_of(source))).unwrap();
        for _ in 0..count {
            socket
                .send_to(
                    b"forged",
                    SocketAddrV6::new(target, PORT, 0, scope_of(target)),
                )
                .unwrap();
        }
    })
    .unwrap();
}

/// Waits until no address of `ns` is tentative (duplicate address
/// detection of the link-local addresses takes about a second after link-up).
fn wait_for_addresses(ns: &NetNs) {
    for _ in 0..100 {
        if ns
            .ip(&["-6", "addr", "show", "tentative"])
            .unwrap()
            .trim()
            .is_empty()
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("addresses of {} stay tentative", ns.name());
}

fn drops(datapath: &Datapath, reason: Reason) -> u64 {
    datapath
        .metrics()
        .unwrap()
        .get(reason, TrafficDirection::Egress)
        .packets
}

#[test]
fn a_pod_reaches_the_node_over_ipv6_only_as_its_policy_allows_the_host_and_only_from_its_own_address(
) {
    require_root();
    let pair = VethPair::new(&names::unique()).unwrap();
    let pins = PinDir::new();
    let mut datapath = node_and_pod(&pair, &pins);
    let node_ll = link_local(pair.a.mac(&pair.dev_a).unwrap());
    let node_mac = pair.a.mac(&pair.dev_a).unwrap();
    let node_mac = node_mac.map(|b| format!("{b:02x}")).join(":");

    // A node service on [::] (every address, link-local ones included).
    let listener = pair
        .a
        .run(|| TcpListener::bind(("::", PORT)).unwrap())
        .unwrap();
    let udp_sink = pair
        .a
        .run(|| UdpSocket::bind(("::", PORT)).unwrap())
        .unwrap();
    udp_sink
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();

    wait_for_addresses(&pair.a);
    wait_for_addresses(&pair.b);
    // The pod's egress policy allows the world, not the host.
    allow_egress(&mut datapath, identity::WORLD);

    // Without the node's link-local addresses in the ipcache (as the agent
    // had it before), the node's address is world and the pod gets in:
    // the hole this closes.
    let reached = connects(&pair.b, &pair.dev_b, node_ll);
    assert!(
        reached,
        "{:?}: without the host entry, [{node_ll}]:{PORT} counts as world and is reached",
        datapath.metrics().unwrap()
    );

    // The agent's ipcache: every link-local address is the host, and the
    // node's global IPv6 addresses (here the namespace's fd00:99::1).
    let mut desired = DesiredIpcache::default();
    desired.set_host_link_local();
    desired.set_node("fd00:99::1".parse().unwrap(), true);
    let current = maps::ipcache_entries(datapath.ebpf_mut()).unwrap();
    weir_agent::reconcile::ipcache::apply(datapath.ebpf_mut(), &desired.diff(&current, true))
        .unwrap();
    let denied = drops(&datapath, Reason::DropPolicyDenied);
    assert!(
        !connects(&pair.b, &pair.dev_b, node_ll),
        "policy without the host: [{node_ll}]:{PORT} must not be reached"
    );
    assert!(
        !connects(&pair.b, &pair.dev_b, "fd00:99::1".parse().unwrap()),
        "nor the node's global address (from the pod's link-local address or a forged one)"
    );
    assert!(
        drops(&datapath, Reason::DropPolicyDenied) > denied,
        "the refused SYNs are counted as policy denied"
    );

    // Forged sources: an address the pod gave itself and a link-local
    // address that is not its own. Static neighbour entries, so the
    // datagrams themselves go out (not only neighbour solicitations).
    let forged_ll: Ipv6Addr = "fe80::bad".parse().unwrap();
    pair.b
        .ip(&[
            "addr",
            "add",
            &format!("{forged_ll}/64"),
            "dev",
            &pair.dev_b,
            "nodad",
        ])
        .unwrap();
    for neighbour in [node_ll.to_string(), "fd00:99::1".to_string()] {
        pair.b
            .ip(&[
                "neigh",
                "replace",
                &neighbour,
                "lladdr",
                &node_mac,
                "dev",
                &pair.dev_b,
                "nud",
                "permanent",
            ])
            .unwrap();
    }
    // Everything allowed by policy now: only the source check stands.
    allow_egress(&mut datapath, identity::HOST);
    let invalid = drops(&datapath, Reason::DropInvalidSourceIp);
    let count = 5;
    send_udp(
        &pair.b,
        &pair.dev_b,
        "fd00:99::2".parse().unwrap(),
        "fd00:99::1".parse().unwrap(),
        count,
    );
    send_udp(&pair.b, &pair.dev_b, forged_ll, node_ll, count);
    let mut buf = [0u8; 64];
    assert!(
        udp_sink.recv_from(&mut buf).is_err(),
        "no datagram from a forged source arrives"
    );
    let counted = drops(&datapath, Reason::DropInvalidSourceIp) - invalid;
    assert!(
        counted >= 2 * count as u64,
        "{counted} drops counted as invalid source, expected at least {}",
        2 * count
    );
    pair.b
        .ip(&[
            "addr",
            "del",
            &format!("{forged_ll}/64"),
            "dev",
            &pair.dev_b,
        ])
        .unwrap();
    pair.b
        .ip(&["addr", "del", "fd00:99::2/64", "dev", &pair.dev_b])
        .unwrap();

    // With the host allowed, the pod's own link-local address works:
    // neighbour discovery from scratch, ICMPv6 echo and TCP to the node.
    pair.b.ip(&["neigh", "flush", "dev", &pair.dev_b]).unwrap();
    let invalid = drops(&datapath, Reason::DropInvalidSourceIp);
    pair.b
        .exec(
            "ping",
            &[
                "-6",
                "-c",
                "1",
                "-W",
                "2",
                &format!("{node_ll}%{}", pair.dev_b),
            ],
        )
        .expect("ping6 to the node's link-local address");
    assert!(connects(&pair.b, &pair.dev_b, node_ll));
    assert_eq!(
        drops(&datapath, Reason::DropInvalidSourceIp),
        invalid,
        "nothing the pod sent from its own addresses was dropped"
    );
    drop(listener);
}

/// Sends one raw ICMPv6 message (`body` from the type on; the kernel fills
/// in the checksum) from the pod to `target` on `dev_b`, with hop limit
/// 255 as neighbour discovery requires.
fn send_icmpv6(pod: &NetNs, dev_b: &str, target: Ipv6Addr, body: Vec<u8>) {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockProtocol, SockType};
    use std::os::fd::AsRawFd;
    let dev_b = dev_b.to_string();
    pod.run(move || {
        let scope = nix::net::if_::if_nametoindex(dev_b.as_str()).unwrap();
        let fd = socket(
            AddressFamily::Inet6,
            SockType::Raw,
            SockFlag::empty(),
            SockProtocol::IcmpV6,
        )
        .expect("raw ICMPv6 socket");
        let hops: libc::c_int = 255;
        for option in [libc::IPV6_MULTICAST_HOPS, libc::IPV6_UNICAST_HOPS] {
            // SAFETY: a valid socket and a c_int option value of its size.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::IPPROTO_IPV6,
                    option,
                    (&hops as *const libc::c_int).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0, "setsockopt hop limit");
        }
        let to = nix::sys::socket::SockaddrIn6::from(SocketAddrV6::new(target, 0, 0, scope));
        nix::sys::socket::sendto(
            fd.as_raw_fd(),
            &body,
            &to,
            nix::sys::socket::MsgFlags::empty(),
        )
        .expect("send ICMPv6");
    })
    .unwrap();
}

/// A Router Advertisement: default router for 1800 s, on-link and
/// autoconfiguration prefix 2001:db8:77::/64.
fn router_advertisement() -> Vec<u8> {
    let mut body = vec![134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
    // Prefix information (type 3, 4 × 8 bytes): /64, L and A, lifetimes.
    body.extend([3, 4, 64, 0xc0]);
    body.extend(3600u32.to_be_bytes());
    body.extend(1800u32.to_be_bytes());
    body.extend([0; 4]);
    body.extend("2001:db8:77::".parse::<Ipv6Addr>().unwrap().octets());
    body
}

/// A Redirect: "reach 2001:db8:99::1 through fe80::1234".
fn redirect() -> Vec<u8> {
    let mut body = vec![137, 0, 0, 0, 0, 0, 0, 0];
    body.extend("fe80::1234".parse::<Ipv6Addr>().unwrap().octets());
    body.extend("2001:db8:99::1".parse::<Ipv6Addr>().unwrap().octets());
    body
}

/// The node's IPv6 routes learnt from router advertisements.
fn ra_routes(node: &NetNs) -> String {
    node.ip(&["-6", "route", "show", "proto", "ra"]).unwrap()
}

#[test]
fn a_router_advertisement_and_a_redirect_from_a_pod_change_no_route_of_the_node() {
    require_root();
    let pair = VethPair::new(&names::unique()).unwrap();
    // The node's veth as permissive as a kernel can be: only the datapath
    // stands between the pod and the node's routing table.
    for (key, value) in [("accept_ra", "2"), ("accept_redirects", "1")] {
        pair.a
            .exec(
                "sysctl",
                &[
                    "-qw",
                    &format!("net.ipv6.conf.{}.{key}={value}", pair.dev_a),
                ],
            )
            .unwrap();
    }
    wait_for_addresses(&pair.a);
    wait_for_addresses(&pair.b);
    let node_ll = link_local(pair.a.mac(&pair.dev_a).unwrap());

    // Without the pod programs the advertisement is taken: a default route
    // through the pod (the test can see the attack work).
    send_icmpv6(
        &pair.b,
        &pair.dev_b,
        "ff02::1".parse().unwrap(),
        router_advertisement(),
    );
    let mut learnt = String::new();
    for _ in 0..40 {
        learnt = ra_routes(&pair.a);
        if learnt.contains("default") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        learnt.contains("default"),
        "without Weir the pod becomes the node's default router: {learnt:?}"
    );
    pair.a.ip(&["-6", "route", "flush", "proto", "ra"]).unwrap();
    assert_eq!(ra_routes(&pair.a).trim(), "");

    // With them, neither message reaches the node, and both are counted.
    let pins = PinDir::new();
    let datapath = node_and_pod(&pair, &pins);
    let before = drops(&datapath, Reason::DropForbiddenIcmp6);
    send_icmpv6(
        &pair.b,
        &pair.dev_b,
        "ff02::1".parse().unwrap(),
        router_advertisement(),
    );
    send_icmpv6(&pair.b, &pair.dev_b, node_ll, redirect());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        ra_routes(&pair.a).trim(),
        "",
        "the node's routes do not change"
    );
    let route = pair
        .a
        .ip(&["-6", "route", "get", "2001:db8:99::1"])
        .unwrap_or_default();
    assert!(
        !route.contains("fe80::1234"),
        "no redirect was taken: {route}"
    );
    assert_eq!(
        drops(&datapath, Reason::DropForbiddenIcmp6) - before,
        2,
        "the advertisement and the redirect are counted under their reason"
    );
}
