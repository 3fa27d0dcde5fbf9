//! eBPF host routing (issue 17 item 1), on the real kernel with real
//! sockets: a pod's packet to another pod is redirected by `weir_from_pod`
//! to the device the FIB routes it through, skipping the node's IP stack,
//! while the destination's own program (`weir_to_pod`, its ingress policy,
//! conntrack and reverse service NAT) still runs.
//!
//! ```text
//! node 1 (n1):  a 10.98.1.2 ---(a's gateway 10.98.1.1)
//!               b 10.98.1.18 --(b's gateway 10.98.1.17)   pod CIDR 10.98.1.0/24
//!               underlay 10.98.100.1 ---+
//!                                 bridge in u
//! node 2 (n2):  underlay 10.98.100.2 ---+
//!               c 10.98.2.2 ---(c's gateway 10.98.2.1)   pod CIDR 10.98.2.0/24
//! ```
//!
//! The pod programs run on n1's ends of a's and b's veths (n2 is a plain
//! router). Which path a packet took is read from n1's netfilter: a
//! counter in the `forward` hook sees every packet the stack routes
//! between two of n1's interfaces, and one in the `input` hook every
//! packet for n1 itself. With `--host-routing bpf` the forward counter of
//! a's packets to another pod stays at 0 (the same traffic counts there
//! with `legacy`, so the counter does observe the stack's path).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use weir_abi::lb::*;
use weir_abi::{ip_proto, EndpointInfo, Reason, TrafficDirection};
use weir_agent::datapath::maps::{self, lb, PodCidrOwner};
use weir_agent::datapath::{Datapath, Hook, HostRouting, LoadOptions};
use weir_tests::datapath::PinDir;
use weir_tests::netns::{self, NetNs};
use weir_tests::{names, require_root};

const A: Ipv4Addr = Ipv4Addr::new(10, 98, 1, 2);
const B: Ipv4Addr = Ipv4Addr::new(10, 98, 1, 18);
const C: Ipv4Addr = Ipv4Addr::new(10, 98, 2, 2);
/// a's and b's IPv6 addresses (n1's IPv6 pod CIDR fd00:98:1::/64).
const A6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x98, 1, 0, 0, 0, 0, 0x2);
const B6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x98, 1, 0, 0, 0, 0, 0x12);
const N1_GATEWAY_A: Ipv4Addr = Ipv4Addr::new(10, 98, 1, 1);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const VIP_PORT: u16 = 80;
const PORT: u16 = 5480;
/// Bytes each echo sends and reads back: enough for full-sized segments
/// (GSO packets on the veths) after the handshake.
const ECHO_BYTES: usize = 1 << 20;

struct Lab {
    // Dropped in order: the datapaths (their links) before the namespaces.
    datapath: Datapath,
    _pins: PinDir,
    /// n2's, when it runs Weir too (c's endpoint and the node device).
    n2_datapath: Option<(Datapath, PinDir)>,
    a: NetNs,
    b: NetNs,
    c: NetNs,
    n1: NetNs,
    n2: NetNs,
    _u: NetNs,
}

fn veth(a: (&NetNs, &str), b: (&NetNs, &str)) {
    netns::run(Command::new("ip").args([
        "link",
        "add",
        a.1,
        "netns",
        a.0.name(),
        "type",
        "veth",
        "peer",
        "name",
        b.1,
        "netns",
        b.0.name(),
    ]))
    .unwrap();
}

/// Gives the pod `ns` behind `host` (in `node`) the IPv6 `address` in a
/// /124 whose first address, on `host`, is its default gateway.
fn pod_ipv6(node: &NetNs, host: &str, ns: &NetNs, address: Ipv6Addr) {
    let gateway = Ipv6Addr::from(u128::from(address) & !0xf | 1);
    for (netns, dev, address) in [(node, host, gateway), (ns, "eth0", address)] {
        netns
            .ip(&[
                "-6",
                "addr",
                "add",
                &format!("{address}/124"),
                "dev",
                dev,
                "nodad",
            ])
            .unwrap();
    }
    ns.ip(&["-6", "route", "add", "default", "via", &gateway.to_string()])
        .unwrap();
}

/// A pod namespace behind a veth whose node end `host` in `node` carries
/// the gateway; the pod's default route leads to it.
fn pod(node: &NetNs, name: &str, address: Ipv4Addr, gateway: Ipv4Addr) -> (NetNs, String) {
    let ns = NetNs::new(&format!("{}{name}", node.name())).unwrap();
    let host = format!("{}{name}h", node.name());
    veth((node, &host), (&ns, "eth0"));
    node.ip(&["addr", "add", &format!("{gateway}/28"), "dev", &host])
        .unwrap();
    node.ip(&["link", "set", &host, "up"]).unwrap();
    ns.ip(&["addr", "add", &format!("{address}/28"), "dev", "eth0"])
        .unwrap();
    ns.ip(&["link", "set", "eth0", "up"]).unwrap();
    ns.ip(&["link", "set", "lo", "up"]).unwrap();
    ns.ip(&["route", "add", "default", "via", &gateway.to_string()])
        .unwrap();
    (ns, host)
}

fn router(node: &NetNs) {
    node.sysctl("net.ipv4.ip_forward", "1").unwrap();
    node.sysctl("net.ipv6.conf.all.forwarding", "1").unwrap();
    for scope in ["all", "default"] {
        node.sysctl(&format!("net.ipv4.conf.{scope}.send_redirects"), "0")
            .unwrap();
    }
}

/// The two nodes, a and b on n1 with the pod programs (b's endpoint with
/// `b_flags`), c on n2 (a plain router), and the netfilter counters.
fn lab(routing: HostRouting, b_flags: u8) -> Lab {
    build(routing, b_flags, None)
}

/// Installs `rules` (an nftables ruleset) in `node`.
fn nft(node: &NetNs, rules: &str) {
    let file = std::env::temp_dir().join(format!("{}.nft", node.name()));
    std::fs::write(&file, rules).unwrap();
    node.exec("nft", &["-f", file.to_str().unwrap()]).unwrap();
    let _ = std::fs::remove_file(&file);
}

/// Loads a datapath in `node` with every node's pod CIDR (`local` names
/// this node's), the pod programs on `endpoints` (host interface, id,
/// address, flags) and, with `netdev`, the node-device programs on
/// `under`.
fn load_node(
    node: &NetNs,
    routing: HostRouting,
    local: u8,
    endpoints: Vec<(String, u16, Ipv4Addr, Option<Ipv6Addr>, u8)>,
    netdev: bool,
) -> (Datapath, PinDir) {
    let pins = PinDir::new();
    let pin_dir: PathBuf = pins.path().to_path_buf();
    let datapath = node
        .run(move || -> anyhow::Result<Datapath> {
            let options = LoadOptions {
                host_routing: routing,
                ..LoadOptions::default()
            };
            let mut datapath = Datapath::load_with(&pin_dir, &options)?;
            let ebpf = datapath.ebpf_mut();
            // Every node's pod CIDR, as the agent writes them.
            for index in [1u8, 2] {
                let owner = PodCidrOwner {
                    node_ip: Ipv4Addr::new(10, 98, 100, index),
                    local: index == local,
                };
                maps::set_pod_cidr(ebpf, format!("10.98.{index}.0/24").parse()?, owner)?;
                maps::set_pod_cidr(ebpf, format!("fd00:98:{index}::/64").parse()?, owner)?;
            }
            for (host, id, address, ipv6, flags) in endpoints {
                let ifindex = nix::net::if_::if_nametoindex(host.as_str())?;
                let entry = EndpointInfo {
                    id,
                    flags,
                    pad: 0,
                    identity: 30_000 + u32::from(id),
                    ipv4: address.octets(),
                    ipv6: ipv6.map(|a| a.octets()).unwrap_or_default(),
                    ..EndpointInfo::default()
                };
                maps::set_endpoint(datapath.ebpf_mut(), ifindex, entry)?;
                datapath.attach(&host, Hook::Pod)?;
            }
            if netdev {
                datapath.attach("under", Hook::Netdev)?;
            }
            Ok(datapath)
        })
        .unwrap()
        .expect("load and attach");
    (datapath, pins)
}

/// The lab; with `c_flags`, n2 runs Weir too (c's endpoint with those
/// flags) and both nodes have the node-device programs on `under`.
fn build(routing: HostRouting, b_flags: u8, c_flags: Option<u8>) -> Lab {
    let prefix = names::unique();
    let n1 = NetNs::new(&format!("{prefix}n")).unwrap();
    let n2 = NetNs::new(&format!("{prefix}m")).unwrap();
    let u = NetNs::new(&format!("{prefix}u")).unwrap();
    router(&n1);
    router(&n2);
    u.ip(&["link", "add", "br0", "type", "bridge"]).unwrap();
    u.ip(&["link", "set", "br0", "up"]).unwrap();
    for (index, node) in [(1u8, &n1), (2, &n2)] {
        let port = format!("{prefix}u{index}");
        veth((&u, &port), (node, "under"));
        u.ip(&["link", "set", &port, "master", "br0", "up"])
            .unwrap();
        node.ip(&[
            "addr",
            "add",
            &format!("10.98.100.{index}/24"),
            "dev",
            "under",
        ])
        .unwrap();
        node.ip(&["link", "set", "under", "up"]).unwrap();
        let other = 3 - index;
        node.ip(&[
            "route",
            "add",
            &format!("10.98.{other}.0/24"),
            "via",
            &format!("10.98.100.{other}"),
        ])
        .unwrap();
    }
    let (a, a_host) = pod(&n1, "a", A, N1_GATEWAY_A);
    let (b, b_host) = pod(&n1, "b", B, Ipv4Addr::new(10, 98, 1, 17));
    let (c, c_host) = pod(&n2, "c", C, Ipv4Addr::new(10, 98, 2, 1));
    pod_ipv6(&n1, &a_host, &a, A6);
    pod_ipv6(&n1, &b_host, &b, B6);

    // The netfilter counters: on n1, a's packets routed by the stack
    // (forward hook), packets to a routed by it, a's packets delivered to
    // n1 (input hook); on n2, a's packets routed by its stack.
    nft(
        &n1,
        &format!(
            "table ip weirtest {{\n\
             chain routed {{ type filter hook forward priority 0; policy accept; ip saddr {A} counter; }}\n\
             chain returned {{ type filter hook forward priority 0; policy accept; ip daddr {A} counter; }}\n\
             chain delivered {{ type filter hook input priority 0; policy accept; ip saddr {A} counter; }}\n\
             }}\n\
             table ip6 weirtest {{\n\
             chain routed {{ type filter hook forward priority 0; policy accept; ip6 saddr {A6} counter; }}\n\
             }}\n"
        ),
    );
    nft(
        &n2,
        &format!(
            "table ip weirtest {{\n\
             chain routed {{ type filter hook forward priority 0; policy accept; ip saddr {A} counter; }}\n\
             }}\n"
        ),
    );

    let endpoints = vec![
        (a_host, 1u16, A, Some(A6), 0u8),
        (b_host, 2u16, B, Some(B6), b_flags),
    ];
    let (datapath, pins) = load_node(&n1, routing, 1, endpoints, c_flags.is_some());
    let n2_datapath =
        c_flags.map(|flags| load_node(&n2, routing, 2, vec![(c_host, 3u16, C, None, flags)], true));
    Lab {
        datapath,
        _pins: pins,
        n2_datapath,
        a,
        b,
        c,
        n1,
        n2,
        _u: u,
    }
}

impl Lab {
    /// The packets counted by n1's `chain` (see [`build`]).
    fn counted(&self, chain: &str) -> u64 {
        counted(&self.n1, chain)
    }

    /// The IPv6 packets of a that n1's stack routed.
    fn routed_ipv6(&self) -> u64 {
        counted_in(&self.n1, "ip6", "routed")
    }

    fn metric(&self, reason: Reason, direction: TrafficDirection) -> u64 {
        self.datapath
            .metrics()
            .unwrap()
            .get(reason, direction)
            .packets
    }

    /// A ClusterIP `VIP:VIP_PORT` (TCP) with the one backend
    /// `backend:PORT`, in the maps as the agent writes them.
    fn cluster_ip(&mut self, backend: Ipv4Addr) {
        let ebpf = self.datapath.ebpf_mut();
        lb::set_backend(
            ebpf,
            1,
            Lb4Backend {
                address: backend.octets(),
                port: PORT.to_be_bytes(),
                protocol: ip_proto::TCP,
                state: Lb4Backend::STATE_ACTIVE,
                flags: 0,
                pad: [0; 3],
            },
        )
        .unwrap();
        let key = |slot| Lb4Key {
            address: VIP.octets(),
            port: VIP_PORT.to_be_bytes(),
            backend_slot: slot,
            protocol: ip_proto::TCP,
            scope: LB_SCOPE_INTERNAL,
            pad: [0; 2],
        };
        let slot = Lb4Service {
            backend_id: 1,
            ..Default::default()
        };
        lb::set_service(ebpf, key(1), slot).unwrap();
        let service = Lb4Service {
            backend_id: 0,
            count: 1,
            rev_nat_id: 1,
            flags: Lb4Service::FLAG_CLUSTER_IP,
            pad: 0,
            affinity_timeout_s: 0,
            maglev_table: 0,
        };
        lb::set_service(ebpf, key(0), service).unwrap();
    }
}

/// The packets counted by `node`'s `chain`.
fn counted(node: &NetNs, chain: &str) -> u64 {
    counted_in(node, "ip", chain)
}

/// The packets counted by `chain` of `node`'s `weirtest` table of `family`.
fn counted_in(node: &NetNs, family: &str, chain: &str) -> u64 {
    let out = node
        .exec("nft", &["list", "chain", family, "weirtest", chain])
        .unwrap();
    let at = out.find("counter packets ").expect("a counter") + "counter packets ".len();
    out[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A TCP server in `server` on `listen` that echoes what it reads, and a
/// client in `client` that connects to `target`, sends [`ECHO_BYTES`] and
/// reads them back. Returns the address the client's socket has as peer,
/// or the error of the first step that failed.
fn echo(
    server: &NetNs,
    listen: impl Into<SocketAddr>,
    client: &NetNs,
    target: impl Into<SocketAddr>,
) -> std::io::Result<SocketAddr> {
    let (listen, target): (SocketAddr, SocketAddr) = (listen.into(), target.into());
    let listener = server.run(move || TcpListener::bind(listen)).unwrap()?;
    let serving = std::thread::spawn(move || -> std::io::Result<()> {
        listener.set_nonblocking(false)?;
        let (mut stream, _) = listener.accept()?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            stream.write_all(&buf[..n])?;
        }
    });
    let result = client
        .run(move || -> std::io::Result<SocketAddr> {
            let mut stream = TcpStream::connect_timeout(&target, Duration::from_millis(1500))?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            let peer = stream.peer_addr()?;
            let data: Vec<u8> = (0..ECHO_BYTES).map(|i| (i % 251) as u8).collect();
            let mut writer = stream.try_clone()?;
            let sent = data.clone();
            let writing = std::thread::spawn(move || writer.write_all(&sent));
            let mut back = vec![0u8; ECHO_BYTES];
            stream.read_exact(&mut back)?;
            writing.join().unwrap()?;
            assert!(back == data, "the echo differs from what was sent");
            Ok(peer)
        })
        .unwrap();
    if result.is_ok() {
        serving.join().unwrap()?;
    }
    result
}

/// The TTL (hop limit) of the reply to one ping from `from` to `to`.
fn ping_ttl(from: &NetNs, to: impl Into<std::net::IpAddr>) -> u8 {
    let to = to.into();
    let out = from
        .exec("ping", &["-c", "1", "-W", "2", &to.to_string()])
        .unwrap();
    let at = out.find("ttl=").expect("a reply") + 4;
    out[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn same_node_pods_are_redirected_past_the_stack() {
    require_root();
    let lab = lab(HostRouting::Bpf, 0);
    let ingress = lab.metric(Reason::Forwarded, TrafficDirection::Ingress);
    let peer = echo(
        &lab.b,
        SocketAddrV4::new(B, PORT),
        &lab.a,
        SocketAddrV4::new(B, PORT),
    )
    .expect("a reaches b");
    assert_eq!(peer, SocketAddr::from((B, PORT)));
    assert_eq!(
        lab.counted("routed"),
        0,
        "no packet of a was routed by n1's stack"
    );
    // The destination's program ran on every redirected packet.
    let seen = lab.metric(Reason::Forwarded, TrafficDirection::Ingress) - ingress;
    assert!(seen >= 3, "weir_to_pod saw the redirected packets: {seen}");
    // Both directions forwarded once (b's replies are redirected too):
    // the TTL went down by one as through the stack.
    assert_eq!(ping_ttl(&lab.a, B), 63);
    assert_eq!(lab.counted("routed"), 0);
}

#[test]
fn same_node_ipv6_pods_are_redirected_past_the_stack() {
    require_root();
    let lab = lab(HostRouting::Bpf, 0);
    let ingress = lab.metric(Reason::Forwarded, TrafficDirection::Ingress);
    let (listen, target) = (SocketAddr::from((B6, PORT)), SocketAddr::from((B6, PORT)));
    let peer = echo(&lab.b, listen, &lab.a, target).expect("a reaches b over IPv6");
    assert_eq!(peer, target);
    assert_eq!(
        lab.routed_ipv6(),
        0,
        "no IPv6 packet of a was routed by n1's stack"
    );
    let seen = lab.metric(Reason::Forwarded, TrafficDirection::Ingress) - ingress;
    assert!(seen >= 3, "weir_to_pod saw the redirected packets: {seen}");
    // The hop limit went down by one, as through the stack.
    assert_eq!(ping_ttl(&lab.a, B6), 63);
    assert_eq!(lab.routed_ipv6(), 0);

    // The counter does see the stack's path: with legacy routing the same
    // traffic is counted there.
    let legacy = self::lab(HostRouting::Legacy, 0);
    echo(&legacy.b, listen, &legacy.a, target).expect("a reaches b over IPv6");
    assert!(
        legacy.routed_ipv6() > 0,
        "legacy: a's IPv6 packets routed by n1"
    );
}

#[test]
fn legacy_routing_goes_through_the_stack() {
    require_root();
    let lab = lab(HostRouting::Legacy, 0);
    echo(
        &lab.b,
        SocketAddrV4::new(B, PORT),
        &lab.a,
        SocketAddrV4::new(B, PORT),
    )
    .expect("a reaches b");
    // Packets as the stack sees them: GSO packets of up to 64 KiB each.
    let routed = lab.counted("routed");
    assert!(
        routed >= 3,
        "with legacy routing the stack forwards a's packets (the counter observes that path): {routed}"
    );
    assert_eq!(ping_ttl(&lab.a, B), 63);
}

#[test]
fn the_destinations_ingress_policy_still_applies_to_redirected_packets() {
    require_root();
    // b enforces its ingress with no rule: nothing new reaches it.
    let lab = lab(HostRouting::Bpf, EndpointInfo::INGRESS_ENFORCED);
    let denied = lab.metric(Reason::DropPolicyDenied, TrafficDirection::Ingress);
    let result = echo(
        &lab.b,
        SocketAddrV4::new(B, PORT),
        &lab.a,
        SocketAddrV4::new(B, PORT),
    );
    assert!(result.is_err(), "b's ingress policy refuses a: {result:?}");
    let denied = lab.metric(Reason::DropPolicyDenied, TrafficDirection::Ingress) - denied;
    assert!(denied >= 1, "the SYNs were dropped by b's ingress policy");
    assert_eq!(
        lab.counted("routed"),
        0,
        "the SYNs were redirected (not routed by the stack) and still denied"
    );
}

#[test]
fn cross_node_pods_are_redirected_to_the_node_device() {
    require_root();
    let lab = lab(HostRouting::Bpf, 0);
    // The first packets find no neighbour entry for n2 (redirect_neigh
    // resolves it), the later ones one (the MACs written by the program).
    let peer = echo(
        &lab.c,
        SocketAddrV4::new(C, PORT),
        &lab.a,
        SocketAddrV4::new(C, PORT),
    )
    .expect("a reaches c on the other node");
    assert_eq!(peer, SocketAddr::from((C, PORT)));
    assert_eq!(
        lab.counted("routed"),
        0,
        "n1's stack routed none of a's packets"
    );
    assert_eq!(
        ping_ttl(&lab.c, A),
        62,
        "two hops, each decrementing the TTL"
    );
}

#[test]
fn packets_to_the_node_take_the_stack() {
    require_root();
    let lab = lab(HostRouting::Bpf, 0);
    let peer = echo(
        &lab.n1,
        SocketAddrV4::new(N1_GATEWAY_A, PORT),
        &lab.a,
        SocketAddrV4::new(N1_GATEWAY_A, PORT),
    )
    .expect("a reaches its node");
    assert_eq!(peer, SocketAddr::from((N1_GATEWAY_A, PORT)));
    let delivered = lab.counted("delivered");
    assert!(delivered >= 3, "delivered by n1's stack: {delivered}");
    // n1's underlay address: not a pod CIDR, the stack too.
    let underlay = Ipv4Addr::new(10, 98, 100, 1);
    echo(
        &lab.n1,
        SocketAddrV4::new(underlay, PORT + 1),
        &lab.a,
        SocketAddrV4::new(underlay, PORT + 1),
    )
    .expect("a reaches its node's underlay address");
    assert_eq!(lab.counted("routed"), 0);
}

#[test]
fn a_cluster_ip_reaches_backends_on_both_nodes_through_redirects() {
    require_root();
    for (backend, ns) in [(B, "b"), (C, "c")] {
        let mut lab = lab(HostRouting::Bpf, 0);
        lab.cluster_ip(backend);
        let server = if ns == "b" { &lab.b } else { &lab.c };
        // The client's socket is connected to the ClusterIP: the handshake
        // completes only if the backend's replies come back from it (reverse
        // NAT in weir_to_pod on a's interface).
        echo(
            server,
            SocketAddrV4::new(backend, PORT),
            &lab.a,
            SocketAddrV4::new(VIP, VIP_PORT),
        )
        .unwrap_or_else(|e| panic!("a reaches the ClusterIP's backend {backend}: {e}"));
        assert_eq!(
            lab.counted("routed"),
            0,
            "a's packets to backend {backend} were redirected after service NAT"
        );
    }
}

#[test]
fn from_the_network_packets_are_redirected_to_the_local_pod() {
    require_root();
    // Both nodes run Weir with the node-device programs: n1 redirects a's
    // packets to n1's node device, n2 redirects them from its node device
    // to c's interface, and c's replies the same way back.
    let lab = build(HostRouting::Bpf, 0, Some(0));
    echo(
        &lab.c,
        SocketAddrV4::new(C, PORT),
        &lab.a,
        SocketAddrV4::new(C, PORT),
    )
    .expect("a reaches c on the other node");
    assert_eq!(
        lab.counted("routed"),
        0,
        "n1's stack routed none of a's packets"
    );
    assert_eq!(
        lab.counted("returned"),
        0,
        "n1's stack routed none of c's replies"
    );
    assert_eq!(
        counted(&lab.n2, "routed"),
        0,
        "n2's stack routed none of a's packets"
    );
    let (n2, _) = lab.n2_datapath.as_ref().unwrap();
    let seen = n2
        .metrics()
        .unwrap()
        .get(Reason::Forwarded, TrafficDirection::Ingress)
        .packets;
    assert!(
        seen >= 3,
        "n2's weir_to_pod saw the redirected packets: {seen}"
    );
    assert_eq!(
        ping_ttl(&lab.c, A),
        62,
        "two hops, each decrementing the TTL"
    );
    assert_eq!(ping_ttl(&lab.a, C), 62);
}

#[test]
fn from_the_network_the_destinations_ingress_policy_still_applies() {
    require_root();
    let lab = build(HostRouting::Bpf, 0, Some(EndpointInfo::INGRESS_ENFORCED));
    let result = echo(
        &lab.c,
        SocketAddrV4::new(C, PORT),
        &lab.a,
        SocketAddrV4::new(C, PORT),
    );
    assert!(result.is_err(), "c's ingress policy refuses a: {result:?}");
    let (n2, _) = lab.n2_datapath.as_ref().unwrap();
    let denied = n2
        .metrics()
        .unwrap()
        .get(Reason::DropPolicyDenied, TrafficDirection::Ingress)
        .packets;
    assert!(denied >= 1, "n2 dropped the SYNs by c's ingress policy");
    assert_eq!(
        counted(&lab.n2, "routed"),
        0,
        "the SYNs were redirected on n2 (not routed by its stack) and still denied"
    );
}

#[test]
fn legacy_routing_across_nodes_goes_through_both_stacks() {
    require_root();
    let lab = build(HostRouting::Legacy, 0, Some(0));
    echo(
        &lab.c,
        SocketAddrV4::new(C, PORT),
        &lab.a,
        SocketAddrV4::new(C, PORT),
    )
    .expect("a reaches c on the other node");
    assert!(lab.counted("routed") >= 3);
    assert!(lab.counted("returned") >= 3);
    assert!(counted(&lab.n2, "routed") >= 3);
}
