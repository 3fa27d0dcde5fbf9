//! One pod flooding new flows must not evict another pod's connections from
//! the shared conntrack maps (issue 16 item 6), on the real kernel with
//! real sockets.
//!
//! Namespace `n` is the node, `v` (the victim) and `f` (the flooder) are
//! pods, each behind a veth whose node end carries the pod programs. The
//! victim's ingress is enforced with no rule, so what reaches it from its
//! TCP server passes only as the reply of its own connection's conntrack
//! entry: once that entry is evicted, the established connection is dead.
//! Both conntrack maps hold 1,024 entries. The flooder opens 20,000 flows,
//! one per source port: TCP SYNs (each answered by a reset), or UDP (two
//! datagrams each). Without a budget (the datapath before it, here the
//! budget switched off) the TCP flood evicts the victim's entry and its
//! connection breaks, while the UDP flood, in the other protocols' map,
//! does not; with a per-endpoint budget (here 200 at once, 100 a second)
//! the TCP flood is cut at its budget, counted as "Rate limited", and the
//! victim's connection carries on.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use weir_abi::{map_names, EndpointInfo, Reason, TrafficDirection};
use weir_agent::datapath::{maps, Datapath, Hook, LoadOptions};
use weir_tests::datapath::PinDir;
use weir_tests::netns::{self, NetNs};
use weir_tests::{names, require_root};

const CONNTRACK_ENTRIES: u32 = 1_024;
const FLOWS: u16 = 20_000;
const SERVER_PORT: u16 = 5401;
const SINK_PORT: u16 = 5402;

/// A pod namespace behind a veth whose node end is `host` in `node`.
struct Pod {
    ns: NetNs,
    host: String,
    address: Ipv4Addr,
    gateway: Ipv4Addr,
}

fn pod(node: &NetNs, name: &str, subnet: u8) -> Pod {
    let ns = NetNs::new(&format!("{}{name}", node.name())).unwrap();
    let host = format!("{}{name}h", node.name());
    let inner = format!("{}{name}p", node.name());
    netns::run(std::process::Command::new("ip").args([
        "link",
        "add",
        &host,
        "netns",
        node.name(),
        "type",
        "veth",
        "peer",
        "name",
        &inner,
        "netns",
        ns.name(),
    ]))
    .unwrap();
    let address = Ipv4Addr::new(10, 99, subnet, 2);
    let gateway = Ipv4Addr::new(10, 99, subnet, 1);
    node.ip(&["addr", "add", &format!("{gateway}/24"), "dev", &host])
        .unwrap();
    node.ip(&["link", "set", &host, "up"]).unwrap();
    ns.ip(&["addr", "add", &format!("{address}/24"), "dev", &inner])
        .unwrap();
    ns.ip(&["link", "set", &inner, "up"]).unwrap();
    Pod {
        ns,
        host,
        address,
        gateway,
    }
}

/// Pins the calling thread to CPU 0. A veth delivers what a thread sends on
/// that thread's CPU, so the victim's entry and the flood's are inserted
/// from one CPU: the kernel's LRU keeps new entries on per-CPU lists until
/// that CPU needs room, and an entry parked on another CPU's list would
/// escape eviction by chance rather than by the budget.
fn on_cpu_0() {
    let mut cpus = nix::sched::CpuSet::new();
    cpus.set(0).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus).unwrap();
}

#[derive(Copy, Clone, Debug)]
enum Flood {
    /// Two datagrams per flow.
    Udp,
    /// A SYN per flow, answered by a reset (nothing listens): the reset is
    /// the entry's reply, which marks it referenced.
    Tcp,
}

/// Sends one SYN from `source` to `target` without waiting for an answer
/// (a non-blocking connect, the socket closed at once).
fn tcp_syn(source: SocketAddrV4, target: SocketAddrV4) {
    use nix::sys::socket::{
        bind, connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK,
        None,
    )
    .unwrap();
    setsockopt(&fd, sockopt::ReuseAddr, &true).unwrap();
    bind(fd.as_raw_fd(), &SockaddrIn::from(source)).unwrap();
    let _ = connect(fd.as_raw_fd(), &SockaddrIn::from(target));
}

/// Runs the scenario with the given flood and budget; returns whether the
/// victim's connection still carried data after the flood, and the flood's
/// drops counted as rate limited.
fn victim_survives_flood(flood: Flood, rate: u32, burst: u32) -> (bool, u64) {
    let node = NetNs::new(&names::unique()).unwrap();
    let victim = pod(&node, "v", 1);
    let flooder = pod(&node, "f", 2);
    let pins = PinDir::new();
    let pin_dir: PathBuf = pins.path().to_path_buf();
    let hosts = [
        (
            victim.host.clone(),
            1u16,
            victim.address,
            EndpointInfo::INGRESS_ENFORCED,
        ),
        (flooder.host.clone(), 2u16, flooder.address, 0),
    ];
    let mut datapath = node
        .run(move || -> anyhow::Result<Datapath> {
            let options = LoadOptions {
                max_entries: vec![
                    (map_names::CONNTRACK, CONNTRACK_ENTRIES),
                    (map_names::CONNTRACK_ANY, CONNTRACK_ENTRIES),
                ],
                ct_new_rate: rate,
                ct_new_burst: burst,
                ..LoadOptions::default()
            };
            let mut datapath = Datapath::load_with(&pin_dir, &options)?;
            for (host, id, address, flags) in hosts {
                let ifindex = nix::net::if_::if_nametoindex(host.as_str())?;
                let entry = EndpointInfo {
                    id,
                    flags,
                    pad: 0,
                    identity: 30_000 + u32::from(id),
                    ipv4: address.octets(),
                    ..EndpointInfo::default()
                };
                maps::set_endpoint(datapath.ebpf_mut(), ifindex, entry)?;
                datapath.attach(&host, Hook::Pod)?;
            }
            Ok(datapath)
        })
        .unwrap()
        .expect("load and attach");

    // The victim's connection to a server on the node.
    let server_address = SocketAddrV4::new(victim.gateway, SERVER_PORT);
    let listener = node
        .run(move || TcpListener::bind(server_address).unwrap())
        .unwrap();
    let mut client = victim
        .ns
        .run(move || {
            on_cpu_0();
            TcpStream::connect_timeout(&server_address.into(), Duration::from_secs(2))
        })
        .unwrap()
        .expect("the victim connects");
    let (mut server, _) = listener.accept().unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut buf = [0u8; 4];
    server.write_all(b"ping").unwrap();
    client.read_exact(&mut buf).expect("data before the flood");

    // The flood: one flow from each of FLOWS source ports.
    let limited = datapath
        .metrics()
        .unwrap()
        .get(Reason::DropRateLimited, TrafficDirection::Egress)
        .packets;
    let sink = SocketAddrV4::new(flooder.gateway, SINK_PORT);
    let from = flooder.address;
    let started = Instant::now();
    flooder
        .ns
        .run(move || {
            on_cpu_0();
            for port in 0..FLOWS {
                let source = SocketAddrV4::new(from, 20_000 + port);
                match flood {
                    Flood::Udp => {
                        let socket = UdpSocket::bind(source).unwrap();
                        // Twice: the second datagram finds the entry, which
                        // marks it referenced; the kernel's LRU evicts
                        // unreferenced entries first, so a flood of single
                        // packets mostly evicts itself.
                        let _ = socket.send_to(b"flood", sink);
                        let _ = socket.send_to(b"flood", sink);
                    }
                    Flood::Tcp => tcp_syn(source, sink),
                }
            }
        })
        .unwrap();
    let took = started.elapsed();
    let limited = datapath
        .metrics()
        .unwrap()
        .get(Reason::DropRateLimited, TrafficDirection::Egress)
        .packets
        - limited;
    let entries = maps::conntrack(datapath.ebpf_mut()).map_or(0, |c| c.len());
    eprintln!(
        "{flood:?} flood, budget {rate}/s burst {burst}: {FLOWS} flows in {took:?}, {limited} rate limited, \
         {entries} conntrack entries"
    );

    // The established connection after the flood.
    server.write_all(b"pong").unwrap();
    let survived = client.read_exact(&mut buf).is_ok() && &buf == b"pong";
    (survived, limited)
}

#[test]
fn a_pod_flooding_new_flows_does_not_evict_another_pods_connection() {
    require_root();
    // The datapath without a budget: a TCP flood evicts the victim's entry.
    let (survived, limited) = victim_survives_flood(Flood::Tcp, 0, 1);
    assert_eq!(limited, 0);
    assert!(
        !survived,
        "without a budget, {FLOWS} new TCP flows in a {CONNTRACK_ENTRIES}-entry map should \
         evict the victim's connection (the test would prove nothing)"
    );
    // Without a budget, a UDP flood fills the other protocols' map only.
    let (survived, _) = victim_survives_flood(Flood::Udp, 0, 1);
    assert!(
        survived,
        "a UDP flood does not evict a TCP connection (separate conntrack maps)"
    );
    // With the budget, the TCP flood is cut and the victim's connection lives.
    let (survived, limited) = victim_survives_flood(Flood::Tcp, 100, 200);
    assert!(
        limited >= u64::from(FLOWS) - 1_000,
        "the flood beyond the budget is counted as rate limited: {limited}"
    );
    assert!(
        survived,
        "the victim's established connection survives the flood"
    );
    weir_tests::figure!(
        "conntrack flood: {FLOWS} new TCP flows from one pod into a {CONNTRACK_ENTRIES}-entry \
         map: without a budget the other pod's connection was evicted, with 100/s burst 200 \
         {limited} SYNs were dropped as rate limited and it survived; {FLOWS} UDP flows \
         without a budget did not evict it (separate map)"
    );
}
