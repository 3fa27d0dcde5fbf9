//! The kube-proxy iptables peer over real sockets: a client namespace, a
//! "node" namespace holding the rules kube-proxy would write (forwarding
//! on), and backend namespaces whose servers answer with the address they
//! were reached at. Services are programmed with a full sync, reached
//! through their cluster IPs, extended by a partial sync, shrunk by a
//! resync that deletes stale chains, and flushed; every namespace goes
//! with the topology.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use weir_bench::kubeproxy::topology::{self, Topology, SERVICE_PORT};
use weir_bench::kubeproxy::{
    connect_latency, greeting, BenchService, KubeProxyIptables, Percentiles,
};
use weir_tests::{netns, require_root};

/// The backend addresses that answered `count` connections to `svc`; every
/// answer must be one of its endpoints.
fn backends_hit(topo: &Topology, svc: &BenchService, count: usize) -> BTreeSet<Ipv4Addr> {
    let endpoints: BTreeSet<Ipv4Addr> = svc.backends.iter().map(|(ip, _)| *ip).collect();
    let mut hit = BTreeSet::new();
    for i in 0..count {
        let answer = greeting(topo.client.name(), svc.cluster_ip, SERVICE_PORT)
            .unwrap_or_else(|e| panic!("{} connection {i}: {e:#}", svc.name));
        let ip: Ipv4Addr = answer
            .parse()
            .unwrap_or_else(|_| panic!("{}: answer {answer:?}", svc.name));
        assert!(
            endpoints.contains(&ip),
            "{}: {ip} is not one of its endpoints",
            svc.name
        );
        hit.insert(ip);
    }
    hit
}

fn assert_balanced(topo: &Topology, svc: &BenchService) {
    let hit = backends_hit(topo, svc, 100);
    assert_eq!(
        hit.len(),
        svc.backends.len(),
        "{}: every endpoint answers one of 100 connections",
        svc.name
    );
}

/// Nothing answers `svc` within 300 ms (its address leads nowhere without
/// rules, so a connection attempt times out).
fn unreachable(topo: &Topology, svc: &BenchService) -> bool {
    let target = SocketAddr::from((svc.cluster_ip, SERVICE_PORT));
    topo.client
        .run(move || TcpStream::connect_timeout(&target, Duration::from_millis(300)))
        .unwrap()
        .is_err()
}

fn kube_lines(kp: &KubeProxyIptables) -> Vec<String> {
    ["nat", "filter"]
        .iter()
        .flat_map(|t| {
            kp.save(t)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|l| l.contains("KUBE-"))
        .collect()
}

#[test]
fn fifty_services_balance_add_one_resync_and_flush() {
    require_root();
    let topo = Topology::new(2).expect("topology");
    let namespaces = topo.namespaces();
    let all = topology::services(51, 2);
    let (existing, new) = all.split_at(50);
    let new = &new[0];
    let mut kp = KubeProxyIptables::new(topo.node.name()).with_options(topology::render_options());
    eprintln!("backend: {}", kp.version().unwrap());

    let took = kp.program_all(existing).expect("full sync");
    eprintln!(
        "full sync of 50 services: {took:?} ({:?})",
        kp.last_timing().unwrap()
    );
    let nat = kp.save("nat").unwrap();
    assert_eq!(
        nat.lines()
            .filter(|l| l.starts_with("-A KUBE-SERVICES "))
            .count(),
        51
    );
    assert_eq!(
        nat.lines()
            .filter(|l| l.starts_with("-A KUBE-SEP-"))
            .count(),
        50 * 2 * 2
    );
    for jump in [
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING",
    ] {
        assert!(nat.lines().any(|l| l == jump), "missing {jump}");
    }
    assert_balanced(&topo, &existing[0]);
    assert_balanced(&topo, &existing[49]);
    assert!(unreachable(&topo, new), "no rule for the 51st service yet");

    // A full sync again is idempotent: no duplicated jumps.
    kp.program_all(existing).expect("second full sync");
    let nat = kp.save("nat").unwrap();
    assert_eq!(
        nat.lines()
            .filter(|l| l.starts_with("-A PREROUTING "))
            .count(),
        1
    );

    let took = kp.add_one(existing, new).expect("partial sync");
    eprintln!("add one to 50: {took:?} ({:?})", kp.last_timing().unwrap());
    assert_balanced(&topo, new);
    assert_balanced(&topo, &existing[0]);
    let nat = kp.save("nat").unwrap();
    assert_eq!(
        nat.lines()
            .filter(|l| l.starts_with("-A KUBE-SERVICES "))
            .count(),
        52
    );
    // The untouched services' chains are still there.
    assert_eq!(
        nat.lines()
            .filter(|l| l.starts_with("-A KUBE-SEP-"))
            .count(),
        51 * 2 * 2
    );

    // A full sync without the first service removes its chains.
    kp.program_all(&all[1..]).expect("resync");
    assert!(unreachable(&topo, &all[0]));
    let nat = kp.save("nat").unwrap();
    assert_eq!(
        nat.lines()
            .filter(|l| l.starts_with("-A KUBE-SEP-"))
            .count(),
        50 * 2 * 2
    );
    assert_eq!(
        nat.lines().filter(|l| l.starts_with(":KUBE-SVC-")).count(),
        50
    );
    assert_balanced(&topo, &all[50]);

    kp.flush().expect("flush");
    assert_eq!(
        kube_lines(&kp),
        Vec::<String>::new(),
        "flush leaves nothing of kube-proxy's"
    );
    assert!(unreachable(&topo, &all[1]));

    drop(topo);
    for ns in namespaces {
        assert!(!netns::path(&ns).exists(), "{ns} removed");
    }
}

#[test]
fn a_service_without_endpoints_is_refused_and_latency_is_measured() {
    require_root();
    let topo = Topology::new(1).expect("topology");
    let served = topology::service(0, 1);
    let mut empty = topology::service(1, 1);
    empty.backends.clear();
    let mut kp = KubeProxyIptables::new(topo.node.name()).with_options(topology::render_options());
    kp.program_all(&[served.clone(), empty.clone()])
        .expect("full sync");

    let err = greeting(topo.client.name(), empty.cluster_ip, SERVICE_PORT).unwrap_err();
    let refused = err
        .chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
    assert!(refused, "REJECT answers with port unreachable: {err:#}");

    let samples =
        connect_latency(topo.client.name(), served.cluster_ip, SERVICE_PORT, 50).expect("latency");
    assert_eq!(samples.len(), 50);
    eprintln!(
        "connect to a service, 2 services: {}",
        Percentiles::of(&samples)
    );
    kp.flush().expect("flush");
    assert_eq!(kube_lines(&kp), Vec::<String>::new());
}

/// Above 1,000 endpoints kube-proxy leaves the per-endpoint comments off;
/// the rules still balance, and a partial sync skips the read-back.
#[test]
fn a_thousand_services_in_large_cluster_mode() {
    require_root();
    let topo = Topology::new(2).expect("topology");
    let all = topology::services(1001, 2);
    let (existing, new) = all.split_at(1000);
    let mut kp = KubeProxyIptables::new(topo.node.name()).with_options(topology::render_options());
    let took = kp.program_all(existing).expect("full sync");
    eprintln!(
        "full sync of 1,000 services: {took:?} ({:?})",
        kp.last_timing().unwrap()
    );
    let nat = kp.save("nat").unwrap();
    assert!(nat
        .lines()
        .filter(|l| l.starts_with("-A KUBE-SEP-"))
        .all(|l| !l.contains("comment")));
    assert_balanced(&topo, &existing[999]);
    let took = kp.add_one(existing, &new[0]).expect("partial sync");
    let timing = kp.last_timing().unwrap();
    eprintln!("add one to 1,000: {took:?} ({timing:?})");
    assert_eq!(
        timing.save,
        Duration::ZERO,
        "large-cluster mode: no read-back within the sync period"
    );
    assert_balanced(&topo, &new[0]);
    kp.flush().expect("flush");
    assert_eq!(kube_lines(&kp), Vec::<String>::new());
}
