//! End to end: two network namespaces joined by a veth pair, the pod
//! programs attached (TCX, pinned) to one end, real TCP and UDP traffic over
//! IPv4 and IPv6, and malformed frames injected on the wire. The counters
//! must agree exactly with the kernel's own interface statistics.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::thread::sleep;
use std::time::Duration;

use weir_abi::{MetricsValue, Reason, TrafficDirection};
use weir_agent::datapath::{Datapath, Hook, MetricsSnapshot};
use weir_tests::datapath::{open_endpoint_v6, PinDir};
use weir_tests::netns::{LinkStats, VethPair};
use weir_tests::{names, packets, require_root, traffic};

/// Loads the datapath and attaches the pod hook to the `a` end of the pair
/// (from inside namespace `a`, where the interface lives), with the
/// endpoint of the "pod" behind it (namespace `b`) ready and unenforced.
fn load_and_attach(pair: &VethPair, pins: &PinDir) -> Datapath {
    let pin_dir: PathBuf = pins.path().to_path_buf();
    let dev = pair.dev_a.clone();
    let pod_ip: std::net::Ipv4Addr = VethPair::ADDR_B.parse().unwrap();
    let pod_ip6: std::net::Ipv6Addr = VethPair::ADDR6_B.parse().unwrap();
    // The pod's link-local address (its neighbour discovery and MLD come
    // from it) is the EUI-64 of its MAC address.
    let link_local = weir_abi::endpoint::eui64_interface_id(pair.b.mac(&pair.dev_b).unwrap());
    pair.a
        .run(move || -> anyhow::Result<Datapath> {
            let mut datapath = Datapath::load(&pin_dir)?;
            let ifindex = nix::net::if_::if_nametoindex(dev.as_str())?;
            open_endpoint_v6(
                &mut datapath,
                ifindex,
                pod_ip.octets(),
                pod_ip6.octets(),
                link_local,
            )?;
            datapath.attach(&dev, Hook::Pod)?;
            Ok(datapath)
        })
        .unwrap()
        .expect("load and attach")
}

/// What the programs on dev_a counted, as (from-pod = packets dev_a
/// received, to-pod = packets dev_a sent), forwarded and dropped.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Seen {
    received: MetricsValue,
    sent: MetricsValue,
}

fn seen(metrics: &MetricsSnapshot) -> Seen {
    let sum = |direction| {
        Reason::ALL
            .iter()
            .map(|&r| metrics.get(r, direction))
            .fold(MetricsValue::default(), MetricsValue::saturating_add)
    };
    Seen {
        received: sum(TrafficDirection::Egress),
        sent: sum(TrafficDirection::Ingress),
    }
}

fn stats_delta(now: LinkStats, base: LinkStats) -> Seen {
    Seen {
        received: MetricsValue {
            packets: now.rx_packets - base.rx_packets,
            bytes: now.rx_bytes - base.rx_bytes,
        },
        sent: MetricsValue {
            packets: now.tx_packets - base.tx_packets,
            bytes: now.tx_bytes - base.tx_bytes,
        },
    }
}

/// The counters and the interface statistics read at one moment: no
/// packet (the kernel's own IPv6 multicast reports come at random times
/// after link-up) passed between the two reads, or one side would count it
/// and the other not, for good.
fn stable_base(
    pair: &VethPair,
    read: &dyn Fn() -> MetricsSnapshot,
) -> (MetricsSnapshot, LinkStats) {
    for _ in 0..100 {
        let before = pair.a.link_stats(&pair.dev_a).unwrap();
        let metrics = read();
        let after = pair.a.link_stats(&pair.dev_a).unwrap();
        if before == after {
            return (metrics, after);
        }
        sleep(Duration::from_millis(10));
    }
    panic!("the interface never stayed quiet for a read of the counters");
}

/// Asserts that what the programs counted since `base` equals what the
/// kernel counted on the interface since `base_stats`. Packets still in
/// flight can make the two differ for a moment, so this re-reads for up to
/// two seconds before failing.
fn assert_counters_match_link_stats(
    pair: &VethPair,
    read: &dyn Fn() -> MetricsSnapshot,
    base: &MetricsSnapshot,
    base_stats: LinkStats,
) -> MetricsSnapshot {
    let mut last = None;
    for _ in 0..100 {
        let before = pair.a.link_stats(&pair.dev_a).unwrap();
        let metrics = read();
        let after = pair.a.link_stats(&pair.dev_a).unwrap();
        let counted = seen(&metrics.since(base));
        let kernel = stats_delta(after, base_stats);
        if before == after && counted == kernel {
            return metrics.since(base);
        }
        last = Some((counted, kernel));
        sleep(Duration::from_millis(20));
    }
    let (counted, kernel) = last.unwrap();
    panic!("datapath counters {counted:?} never matched the interface statistics {kernel:?}");
}

#[test]
fn real_tcp_and_udp_traffic_is_counted_exactly() {
    require_root();
    let pair = VethPair::new(&names::unique()).unwrap();
    let pins = PinDir::new();
    let datapath = load_and_attach(&pair, &pins);
    let read = || datapath.metrics().unwrap();
    let (base, base_stats) = stable_base(&pair, &read);

    let v4: SocketAddr = format!("{}:5201", VethPair::ADDR_A).parse().unwrap();
    let v6: SocketAddr = format!("[{}]:5201", VethPair::ADDR6_A).parse().unwrap();
    traffic::tcp_transfer(&pair.a, &pair.b, v4, 1 << 20).expect("TCP over IPv4");
    traffic::tcp_transfer(&pair.a, &pair.b, v6, 1 << 20).expect("TCP over IPv6");
    let udp_count = 50;
    let udp_size = 200;
    for server in [v4, v6] {
        let got = traffic::udp_datagrams(&pair.a, &pair.b, server, udp_count, udp_size).unwrap();
        assert_eq!(got, udp_count, "UDP datagrams to {server} arrived");
    }

    let delta = assert_counters_match_link_stats(&pair, &read, &base, base_stats);
    let from_pod = delta.get(Reason::Forwarded, TrafficDirection::Egress);
    let to_pod = delta.get(Reason::Forwarded, TrafficDirection::Ingress);
    // 2 MiB of TCP payload and 100 datagrams came in; the TCP replies (ACKs
    // and counts) and nothing else went out.
    assert!(from_pod.bytes > 2 << 20, "from-pod bytes {from_pod:?}");
    assert!(
        from_pod.packets >= 2 * udp_count as u64 + 6,
        "from-pod packets {from_pod:?}"
    );
    assert!(
        to_pod.packets >= 6,
        "to-pod packets (handshakes, ACKs) {to_pod:?}"
    );
    for reason in Reason::ALL.into_iter().filter(|r| r.is_drop()) {
        for direction in TrafficDirection::ALL {
            assert_eq!(
                delta.get(reason, direction),
                MetricsValue::default(),
                "{reason:?} {direction:?}"
            );
        }
    }

    datapath.detach(&pair.dev_a, Hook::Pod).unwrap();
    datapath.unpin_all().unwrap();
}

#[test]
fn malformed_frames_on_the_wire_are_dropped_and_counted() {
    require_root();
    let pair = VethPair::new(&names::unique()).unwrap();
    let pins = PinDir::new();
    let datapath = load_and_attach(&pair, &pins);
    let read = || datapath.metrics().unwrap();
    let (base, base_stats) = stable_base(&pair, &read);

    // Headers cut short below the minimum IP header: BPF_PROG_TEST_RUN
    // refuses such frames, so they are tested here, on the wire.
    let frames = vec![
        packets::ipv4_truncated_l3(),
        packets::ipv6_truncated_l3(),
        packets::ipv4_tcp_truncated_l4(),
    ];
    let bytes =
        |range: std::ops::Range<usize>| frames[range].iter().map(|f| f.len() as u64).sum::<u64>();
    let (l3_bytes, l4_bytes) = (bytes(0..2), bytes(2..3));
    traffic::inject_frames(&pair.b, &pair.dev_b, frames).unwrap();

    let delta = assert_counters_match_link_stats(&pair, &read, &base, base_stats);
    assert_eq!(
        delta.get(Reason::DropInvalid, TrafficDirection::Egress),
        MetricsValue {
            packets: 2,
            bytes: l3_bytes
        }
    );
    assert_eq!(
        delta.get(Reason::DropCtInvalidHdr, TrafficDirection::Egress),
        MetricsValue {
            packets: 1,
            bytes: l4_bytes
        }
    );
    datapath.detach(&pair.dev_a, Hook::Pod).unwrap();
}

#[test]
fn attachment_outlives_the_agent_and_detach_removes_it() {
    require_root();
    let pair = VethPair::new(&names::unique()).unwrap();
    let pins = PinDir::new();
    let server: SocketAddr = format!("{}:5301", VethPair::ADDR_A).parse().unwrap();

    // The agent attaches and exits: the pinned links keep the programs attached.
    drop(load_and_attach(&pair, &pins));
    let links = std::fs::read_dir(pins.path().join("links"))
        .unwrap()
        .count();
    assert_eq!(links, 2, "one pinned link per direction");
    assert_eq!(
        traffic::udp_datagrams(&pair.a, &pair.b, server, 10, 100).unwrap(),
        10
    );

    // A new agent finds the counters of the traffic that passed meanwhile,
    // and re-attaching replaces the programs in the pinned links.
    let reloaded = load_and_attach(&pair, &pins);
    let counted = reloaded
        .metrics()
        .unwrap()
        .get(Reason::Forwarded, TrafficDirection::Egress);
    assert!(
        counted.packets >= 10,
        "counted while no agent ran: {counted:?}"
    );

    // Detached: links gone, traffic still flows, and nothing counts it.
    reloaded.detach(&pair.dev_a, Hook::Pod).unwrap();
    assert_eq!(
        std::fs::read_dir(pins.path().join("links"))
            .unwrap()
            .count(),
        0
    );
    let before = reloaded.metrics().unwrap();
    assert_eq!(
        traffic::udp_datagrams(&pair.a, &pair.b, server, 10, 100).unwrap(),
        10
    );
    sleep(Duration::from_millis(100));
    let after = reloaded.metrics().unwrap();
    assert_eq!(
        after, before,
        "no program runs on the interface after detach"
    );
}
