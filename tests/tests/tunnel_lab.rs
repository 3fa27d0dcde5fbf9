//! Tunnel mode in the lab (issue 19 item 1): agents with `--routing-mode
//! tunnel`, an underlay with no route to any pod CIDR, its links at MTU
//! 1400. Cross-node pod traffic is carried by the nodes' `weir_vxlan`
//! devices, the receiving node classifies it by the identity in the VXLAN
//! header, pods get the tunnel's MTU, and a large transfer survives an
//! underlay lowered under it.
//!
//! The connectivity matrix, NetworkPolicy and services suites run in tunnel
//! mode too (`cargo xtask test` runs them again with
//! `WEIR_LAB_ROUTING_MODE=tunnel`).

use std::net::SocketAddr;
use std::sync::Once;

use weir_lab::probe::{self, Target};
use weir_lab::testing::{namespace_yaml, pod_yaml, TestLab};
use weir_tests::netns::NetNs;

const UNDERLAY_MTU: u32 = 1400;

/// Every lab of this suite: tunnel mode over a 1400-byte underlay.
fn tunnel_lab(nodes: usize) -> TestLab {
    static ENV: Once = Once::new();
    ENV.call_once(|| {
        // SAFETY: set once, before any lab of this process reads them;
        // nothing else in this suite's process reads or writes them.
        unsafe {
            std::env::set_var(weir_lab::ROUTING_MODE_ENV, "tunnel");
            std::env::set_var(weir_lab::UNDERLAY_MTU_ENV, UNDERLAY_MTU.to_string());
        }
    });
    let lab = TestLab::up(nodes).unwrap();
    assert_eq!(lab.state().routing, weir_lab::Routing::Tunnel);
    lab
}

/// x/a and x/c on n1, x/b on n2.
fn pods(lab: &mut TestLab) {
    let mut yaml = namespace_yaml("x");
    yaml.push_str(&pod_yaml("x", "a", "n1", &[80]));
    yaml.push_str(&pod_yaml("x", "b", "n2", &[80]));
    yaml.push_str(&pod_yaml("x", "c", "n1", &[80]));
    lab.apply_yaml(&yaml).unwrap();
}

fn node_ns(lab: &TestLab, node: &str) -> String {
    lab.state().node(node).unwrap().netns.clone()
}

fn ip(args: &[&str]) -> String {
    weir_tests::netns::run(std::process::Command::new("ip").args(args)).unwrap()
}

/// Packets the node's tunnel device sent.
fn tunnel_tx_packets(lab: &TestLab, node: &str) -> u64 {
    NetNs::existing(&node_ns(lab, node))
        .link_stats(weir_abi::overlay::DEVICE)
        .unwrap()
        .tx_packets
}

fn connected(lab: &TestLab, from: &str, to: &str, target: Target) -> bool {
    probe::probe(lab.pod(from).unwrap(), lab.pod(to).unwrap(), target).connected
}

#[test]
fn pods_across_nodes_talk_through_the_tunnel_and_are_classified_by_its_header() {
    let mut lab = tunnel_lab(2);
    pods(&mut lab);
    let b_cidr = lab.state().node("n2").unwrap().pod_cidr.clone();
    // The only way to n2's pods is n1's tunnel device.
    let routes = ip(&["-n", &node_ns(&lab, "n1"), "route", "show", &b_cidr]);
    assert!(
        routes.contains("dev weir_vxlan") && routes.contains("onlink"),
        "n1 routes {b_cidr} into its tunnel: {routes}"
    );
    assert_eq!(routes.trim().lines().count(), 1, "one route: {routes}");

    let sent_before = tunnel_tx_packets(&lab, "n1");
    for target in [Target::Tcp(80), Target::Udp(80), Target::Icmp] {
        assert!(connected(&lab, "x/a", "x/b", target), "a -> b {target:?}");
        assert!(connected(&lab, "x/b", "x/a", target), "b -> a {target:?}");
    }
    assert!(
        tunnel_tx_packets(&lab, "n1") > sent_before,
        "n1's packets to n2's pod went through weir_vxlan"
    );

    // b admits a only (by its labels).
    lab.apply_yaml(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: only-a\n  namespace: x\nspec:\n  podSelector:\n    matchLabels: {pod: b}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - podSelector:\n        matchLabels: {pod: a}\n",
    )
    .unwrap();
    weir_lab::testing::wait_until(
        "b's ingress policy is enforced",
        std::time::Duration::from_secs(20),
        || !connected(&lab, "x/c", "x/b", Target::Tcp(80)),
    );
    assert!(connected(&lab, "x/a", "x/b", Target::Tcp(80)));

    // n2's ipcache now says a's address is world and c's is a's identity:
    // a node classifying by source address would admit c and refuse a.
    // Through the tunnel, the identities n1 put in the headers decide.
    let bpffs = lab.state().node("n2").unwrap().bpffs_dir.clone();
    let a_ip = lab.pod("x/a").unwrap().ip;
    let c_ip = lab.pod("x/c").unwrap().ip;
    let a_identity = ipcache_identity(&bpffs, a_ip);
    set_ipcache_identity(&bpffs, a_ip, weir_abi::identity::WORLD);
    set_ipcache_identity(&bpffs, c_ip, a_identity);
    assert!(
        connected(&lab, "x/a", "x/b", Target::Tcp(80)),
        "a's identity from the header is admitted, whatever n2's ipcache says"
    );
    assert!(
        !connected(&lab, "x/c", "x/b", Target::Tcp(80)),
        "c's identity from the header is refused, whatever n2's ipcache says"
    );
}

fn pinned_ipcache(
    bpffs_dir: &std::path::Path,
) -> aya::maps::LpmTrie<aya::maps::MapData, weir_abi::IpcacheKey, weir_abi::IpcacheValue> {
    let pin = aya::maps::MapData::from_pin(bpffs_dir.join(weir_abi::map_names::IPCACHE))
        .expect("pinned weir_ipcache");
    aya::maps::LpmTrie::try_from(aya::maps::Map::LpmTrie(pin)).expect("an LPM trie")
}

fn host_key(address: std::net::Ipv4Addr) -> aya::maps::lpm_trie::Key<weir_abi::IpcacheKey> {
    aya::maps::lpm_trie::Key::new(
        weir_abi::IpcacheKey::prefix_len(32),
        weir_abi::IpcacheKey::ipv4(address.octets()),
    )
}

/// The identity a node's pinned ipcache holds for `address`.
fn ipcache_identity(bpffs_dir: &std::path::Path, address: std::net::Ipv4Addr) -> u32 {
    let map = pinned_ipcache(bpffs_dir);
    map.get(&host_key(address), 0)
        .expect("the pod's ipcache entry")
        .identity
}

/// Writes `identity` for `address` into a node's pinned ipcache (behind
/// its agent's back: it puts the entry right on a later pass).
fn set_ipcache_identity(bpffs_dir: &std::path::Path, address: std::net::Ipv4Addr, identity: u32) {
    let mut map = pinned_ipcache(bpffs_dir);
    let key = host_key(address);
    let mut value = map.get(&key, 0).expect("the pod's ipcache entry");
    value.identity = identity;
    map.insert(&key, value, 0).expect("overwrite the entry");
}

#[test]
fn pods_get_the_tunnel_mtu_and_large_transfers_survive_a_lower_underlay() {
    let mut lab = tunnel_lab(2);
    pods(&mut lab);
    let pod_mtu = UNDERLAY_MTU - weir_abi::overlay::VXLAN_OVERHEAD;
    let a = lab.pod("x/a").unwrap().clone();
    let b = lab.pod("x/b").unwrap().clone();
    for (netns, device) in [(&a.netns, "eth0"), (&node_ns(&lab, "n1"), "weir_vxlan")] {
        let link = ip(&["-n", netns, "link", "show", device]);
        assert!(
            link.contains(&format!("mtu {pod_mtu} ")),
            "{device} in {netns} has MTU {pod_mtu}: {link}"
        );
    }

    // The underlay shrinks under the tunnel: full-size pod packets no
    // longer fit once encapsulated. The tunnel's outer header does not set
    // DF (VXLAN's default), so the node fragments the outer packets and
    // the transfer goes on without the pod having to learn anything.
    let lower = UNDERLAY_MTU - 100;
    let underlay = format!("{}-ul", lab.name());
    for node in ["n1", "n2"] {
        let mtu = lower.to_string();
        ip(&["-n", &underlay, "link", "set", node, "mtu", &mtu]);
        ip(&[
            "-n",
            &node_ns(&lab, node),
            "link",
            "set",
            "eth0",
            "mtu",
            &mtu,
        ]);
    }
    let server = SocketAddr::new(b.ip.into(), 9000);
    for _ in 0..2 {
        weir_tests::traffic::tcp_transfer(
            &NetNs::existing(&b.netns),
            &NetNs::existing(&a.netns),
            server,
            4 << 20,
        )
        .expect("4 MiB from a to b across the lowered underlay");
    }
}
