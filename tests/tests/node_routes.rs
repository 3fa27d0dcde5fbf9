//! `--auto-direct-node-routes` on the real kernel: in a network namespace
//! of the test's own, the agent's route sync installs a route to each other
//! node's pod CIDR through its address (tagged `proto 87`), corrects one
//! whose node moved, removes the one of a node that left only once the
//! node list is complete, adopts what an earlier run left, and never
//! touches a route it did not make. Each node address routed through gets a
//! managed neighbour entry of the same protocol (the node devices'
//! anti-spoofing needs its MAC address), following the routes.

use std::net::Ipv4Addr;

use weir_agent::datapath::node_routes::{NodeRouteSet, NodeRoutes, RouteVia, ROUTE_PROTOCOL};
use weir_tests::netns::{self, NetNs};
use weir_tests::{names, require_root};

fn set(routes: &[(&str, [u8; 4])]) -> NodeRouteSet {
    routes
        .iter()
        .map(|(cidr, gw)| (cidr.parse().expect("cidr"), Ipv4Addr::from(*gw).into()))
        .collect()
}

/// `ip route show` lines of `proto`.
fn shown(ns: &NetNs, proto: &str) -> Vec<String> {
    shown_family(ns, "-4", proto)
}

/// [`shown`] of one family (`-4`, `-6`).
fn shown_family(ns: &NetNs, family: &str, proto: &str) -> Vec<String> {
    ns.ip(&[family, "route", "show", "proto", proto])
        .expect("ip route")
        .lines()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .collect()
}

/// The addresses of the managed neighbour entries of `proto`, sorted.
fn managed(ns: &NetNs, proto: &str) -> Vec<String> {
    let mut nodes: Vec<String> = ns
        .ip(&["-d", "neigh", "show", "proto", proto])
        .expect("ip neigh")
        .lines()
        .filter(|l| l.contains("managed") && l.contains("extern_learn"))
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect();
    nodes.sort();
    nodes
}

/// Runs one async step inside the namespace.
fn in_ns<T: Send + 'static>(
    ns: &NetNs,
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>> + Send + 'static,
) -> T {
    netns::run_in(ns.name(), move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f())
    })
    .expect("in netns")
}

#[test]
fn node_routes_follow_the_node_records_and_touch_only_their_own() {
    require_root();
    let ns = NetNs::new(&names::unique()).unwrap();
    // A veth pair (no dummy driver on every kernel), both ends up.
    ns.ip(&[
        "link", "add", "underlay", "type", "veth", "peer", "name", "peer",
    ])
    .unwrap();
    ns.ip(&["link", "set", "peer", "up"]).unwrap();
    ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "underlay"])
        .unwrap();
    ns.ip(&["link", "set", "underlay", "up"]).unwrap();
    // Someone else's route and neighbour entry.
    ns.ip(&["route", "add", "198.51.100.0/24", "via", "192.0.2.254"])
        .unwrap();
    ns.ip(&[
        "neigh",
        "add",
        "192.0.2.254",
        "lladdr",
        "02:00:00:00:00:fe",
        "dev",
        "underlay",
        "nud",
        "permanent",
    ])
    .unwrap();
    let proto = ROUTE_PROTOCOL.to_string();

    let before = shown(&ns, "boot");
    in_ns(&ns, || {
        Box::pin(async {
            let mut routes = NodeRoutes::open(RouteVia::Native).await.expect("open");
            assert!(routes.installed().is_empty());
            let two = set(&[
                ("10.244.1.0/24", [192, 0, 2, 2]),
                ("10.244.2.0/24", [192, 0, 2, 3]),
            ]);
            routes.sync(&two, true).await.expect("sync");
        })
    });
    assert_eq!(
        shown(&ns, &proto),
        vec!["10.244.1.0/24 via 192.0.2.2", "10.244.2.0/24 via 192.0.2.3"]
    );
    assert_eq!(managed(&ns, &proto), ["192.0.2.2", "192.0.2.3"]);

    // A new run adopts them; n2 moved to .4; n1 left, but the list is not
    // complete yet: nothing is removed.
    in_ns(&ns, || {
        Box::pin(async {
            let mut routes = NodeRoutes::open(RouteVia::Native).await.expect("open");
            assert_eq!(
                routes.installed().len(),
                2,
                "adopted {:?}",
                routes.installed()
            );
            assert_eq!(routes.neighbours().len(), 2, "{:?}", routes.neighbours());
            let partial = set(&[("10.244.2.0/24", [192, 0, 2, 4])]);
            routes.sync(&partial, false).await.expect("partial sync");
        })
    });
    assert_eq!(
        shown(&ns, &proto),
        vec!["10.244.1.0/24 via 192.0.2.2", "10.244.2.0/24 via 192.0.2.4"]
    );
    assert_eq!(
        managed(&ns, &proto),
        ["192.0.2.2", "192.0.2.3", "192.0.2.4"]
    );

    // Complete: n1's route goes. A route removed by hand is no error.
    ns.ip(&["route", "del", "10.244.2.0/24"]).unwrap();
    in_ns(&ns, || {
        Box::pin(async {
            let mut routes = NodeRoutes::open(RouteVia::Native).await.expect("open");
            routes
                .sync(&NodeRouteSet::new(), true)
                .await
                .expect("final sync");
        })
    });
    assert!(shown(&ns, &proto).is_empty(), "{:?}", shown(&ns, &proto));
    assert!(
        managed(&ns, &proto).is_empty(),
        "{:?}",
        managed(&ns, &proto)
    );
    assert!(
        ns.ip(&["neigh", "show", "192.0.2.254"])
            .unwrap()
            .contains("PERMANENT"),
        "a neighbour entry Weir did not make changed"
    );
    assert_eq!(
        shown(&ns, "boot"),
        before,
        "a route Weir did not make changed"
    );
    assert!(ns
        .ip(&["route", "show", "198.51.100.0/24"])
        .unwrap()
        .contains("via 192.0.2.254"));
}

/// A dual-stack node's IPv6 pod CIDR goes through its IPv6 address, beside
/// the IPv4 route, with a managed IPv6 neighbour entry; both go with it.
#[test]
fn ipv6_pod_cidrs_are_routed_through_ipv6_node_addresses() {
    require_root();
    let ns = NetNs::new(&names::unique()).unwrap();
    ns.ip(&[
        "link", "add", "underlay", "type", "veth", "peer", "name", "peer",
    ])
    .unwrap();
    ns.ip(&["link", "set", "peer", "up"]).unwrap();
    ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "underlay"])
        .unwrap();
    ns.ip(&["addr", "add", "fd00:77::1/64", "dev", "underlay", "nodad"])
        .unwrap();
    ns.ip(&["link", "set", "underlay", "up"]).unwrap();
    let proto = ROUTE_PROTOCOL.to_string();
    let dual: NodeRouteSet = [
        ("10.244.2.0/24", "192.0.2.2"),
        ("fd00:10:244:2::/112", "fd00:77::2"),
    ]
    .iter()
    .map(|(cidr, via)| (cidr.parse().unwrap(), via.parse().unwrap()))
    .collect();
    in_ns(&ns, move || {
        Box::pin(async move {
            let mut routes = NodeRoutes::open(RouteVia::Native).await.expect("open");
            routes.sync(&dual, true).await.expect("sync");
        })
    });
    assert_eq!(shown(&ns, &proto), ["10.244.2.0/24 via 192.0.2.2"]);
    assert_eq!(
        shown_family(&ns, "-6", &proto),
        ["fd00:10:244:2::/112 via fd00:77::2"]
    );
    assert_eq!(managed(&ns, &proto), ["192.0.2.2", "fd00:77::2"]);
    // A new run adopts both families, and removes both when the node goes.
    in_ns(&ns, || {
        Box::pin(async {
            let mut routes = NodeRoutes::open(RouteVia::Native).await.expect("open");
            assert_eq!(routes.installed().len(), 2, "{:?}", routes.installed());
            assert_eq!(routes.neighbours().len(), 2, "{:?}", routes.neighbours());
            routes.sync(&NodeRouteSet::new(), true).await.expect("sync");
        })
    });
    assert!(shown_family(&ns, "-6", &proto).is_empty());
    assert!(
        managed(&ns, &proto).is_empty(),
        "{:?}",
        managed(&ns, &proto)
    );
}
