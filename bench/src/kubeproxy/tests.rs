use std::net::Ipv4Addr;
use std::time::Duration;

use super::apply::chain_names;
use super::chains::{self, hash16};
use super::incremental::render_incremental;
use super::render::{render, render_sync, RenderOptions};
use super::topology;
use super::*;

fn svc(ns: &str, name: &str, ip: [u8; 4], port: u16, backends: &[([u8; 4], u16)]) -> BenchService {
    BenchService {
        namespace: ns.to_string(),
        name: name.to_string(),
        cluster_ip: Ipv4Addr::from(ip),
        port,
        protocol: Protocol::Tcp,
        backends: backends
            .iter()
            .map(|&(ip, port)| (Ipv4Addr::from(ip), port))
            .collect(),
    }
}

fn options(cidr: &str) -> RenderOptions {
    RenderOptions {
        cluster_cidr: Some(cidr.to_string()),
    }
}

/// Chain names that appear in kube-proxy's own tests and on real clusters.
#[test]
fn chain_hashes_match_kube_proxy() {
    assert_eq!(hash16("ns1/svc1:p80tcp"), "XPGD46QRK7WJZT7O");
    assert_eq!(hash16("ns3/svc3:p80tcp"), "X27LE4BHSL4DOUIK");
    assert_eq!(hash16("default/kubernetes:httpstcp"), "NPX46M4PTMTKRN6Y");
    assert_eq!(hash16("kube-system/kube-dns:dnsudp"), "TCOU7JCQXEZGVUNU");
    let s1 = svc("ns1", "svc1", [172, 30, 0, 41], 80, &[]);
    assert_eq!(chains::service(&s1), "KUBE-SVC-XPGD46QRK7WJZT7O");
    assert_eq!(
        chains::endpoint(&s1, "10.180.0.1:80"),
        "KUBE-SEP-SXIVWICOYRO3J4NJ"
    );
    assert_eq!(
        chains::endpoint(&s1, "10.180.2.1:80"),
        "KUBE-SEP-ZX7GRIZKSNUQ3LAJ"
    );
    let s3 = svc("ns3", "svc3", [172, 30, 0, 43], 80, &[]);
    assert_eq!(
        chains::endpoint(&s3, "10.180.0.3:80"),
        "KUBE-SEP-OYPFS5VJICHGATKP"
    );
    // Chain names stay within iptables' 28 characters.
    assert_eq!(chains::service(&s1).len(), 25);
}

#[test]
fn probabilities_are_one_over_remaining_with_ten_decimals() {
    assert_eq!(chains::probability(2), "0.5000000000");
    assert_eq!(chains::probability(3), "0.3333333333");
    assert_eq!(chains::probability(4), "0.2500000000");
    assert_eq!(chains::probability(7), "0.1428571429");
    let three = svc(
        "ns",
        "s",
        [10, 96, 0, 1],
        80,
        &[
            ([10, 1, 0, 1], 8080),
            ([10, 1, 0, 2], 8080),
            ([10, 1, 0, 3], 8080),
        ],
    );
    let text = render(std::slice::from_ref(&three), &options("10.1.0.0/16")).text;
    let svc_chain = chains::service(&three);
    let jumps: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("-A {svc_chain}")) && l.contains("-j KUBE-SEP-"))
        .collect();
    assert_eq!(jumps.len(), 3);
    assert!(jumps[0].contains("--probability 0.3333333333 "));
    assert!(jumps[1].contains("--probability 0.5000000000 "));
    assert!(
        !jumps[2].contains("statistic"),
        "the last endpoint always matches"
    );
}

/// One service with two endpoints, the whole input, as kube-proxy writes it.
#[test]
fn one_service_renders_exactly_as_kube_proxy() {
    let s1 = svc(
        "ns1",
        "svc1",
        [172, 30, 0, 41],
        80,
        &[([10, 180, 0, 1], 80), ([10, 180, 2, 1], 80)],
    );
    let rendered = render(&[s1], &options("10.0.0.0/8"));
    let expected = r#"*filter
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-FIREWALL - [0:0]
-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
:KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]
:KUBE-SEP-ZX7GRIZKSNUQ3LAJ - [0:0]
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-SXIVWICOYRO3J4NJ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.2.1:80" -j KUBE-SEP-ZX7GRIZKSNUQ3LAJ
-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ
-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80
-A KUBE-SEP-ZX7GRIZKSNUQ3LAJ -m comment --comment ns1/svc1:p80 -s 10.180.2.1 -j KUBE-MARK-MASQ
-A KUBE-SEP-ZX7GRIZKSNUQ3LAJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.2.1:80
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
COMMIT
"#;
    assert_eq!(rendered.text, expected);
    assert!(!rendered.large_cluster);
}

/// N services x M endpoints: 4 + N + N*M NAT chains, 5 + 2N + 3NM NAT
/// rules (KUBE-SERVICES jump, masquerade check and M endpoint jumps per
/// service, two rules per endpoint, plus the fixed ones); the filter table
/// stays at its fixed 6 chains and 4 rules.
#[test]
fn counts_for_n_services_by_m_endpoints() {
    for (n, m) in [(1, 1), (50, 2), (100, 2), (1000, 2), (10_000, 2), (20, 5)] {
        let services = topology::services(n, m.min(topology::MAX_BACKENDS));
        let services: Vec<BenchService> = if m > topology::MAX_BACKENDS {
            (0..n)
                .map(|i| {
                    let mut s = topology::service(i, 1);
                    s.backends = (0..m)
                        .map(|b| (Ipv4Addr::new(10, 150, b as u8, i as u8), 8080))
                        .collect();
                    s
                })
                .collect()
        } else {
            services
        };
        let r = render(&services, &topology::render_options());
        assert_eq!(r.nat_chains, 4 + n + n * m, "{n}x{m}");
        assert_eq!(r.nat_rules, 5 + 2 * n + 3 * n * m, "{n}x{m}");
        assert_eq!((r.filter_chains, r.filter_rules), (6, 4), "{n}x{m}");
        let text_rules = r.text.lines().filter(|l| l.starts_with("-A ")).count();
        assert_eq!(text_rules, r.nat_rules + r.filter_rules);
        assert_eq!(
            r.text
                .lines()
                .filter(|l| l.starts_with("-A KUBE-SERVICES "))
                .count(),
            n + 1
        );
        assert_eq!(r.active_nat_chains.len(), n + n * m);
        // Chain names are unique.
        let declared = chain_names(&r.text);
        let unique: std::collections::BTreeSet<_> = declared.iter().collect();
        assert_eq!(
            unique.len(),
            declared.len() - 2,
            "{n}x{m}: only KUBE-SERVICES/NODEPORTS repeat across tables"
        );
    }
}

#[test]
fn large_cluster_mode_drops_endpoint_comments_above_1000_endpoints() {
    let at = render(&topology::services(500, 2), &topology::render_options());
    assert!(!at.large_cluster);
    assert!(at.text.contains("-m comment --comment bench/svc-0:p80 -s "));
    let above = render(&topology::services(501, 2), &topology::render_options());
    assert!(above.large_cluster);
    let sep_rules: Vec<&str> = above
        .text
        .lines()
        .filter(|l| {
            l.starts_with("-A KUBE-SEP-")
                || (l.starts_with("-A KUBE-SVC-") && l.contains("-j KUBE-SEP-"))
        })
        .collect();
    assert_eq!(sep_rules.len(), 501 * 2 * 3);
    assert!(sep_rules.iter().all(|l| !l.contains("comment")));
    // The KUBE-SERVICES jumps and the masquerade checks keep theirs.
    assert!(above
        .text
        .contains("--comment \"bench/svc-500:p80 cluster IP\" -m tcp -p tcp -d 10.201.1.245 --dport 80 -j KUBE-SVC-"));
}

#[test]
fn a_service_without_endpoints_is_rejected_in_filter_and_has_no_nat_chains() {
    let empty = svc("ns", "empty", [10, 96, 0, 9], 53, &[]);
    let r = render(std::slice::from_ref(&empty), &options("10.0.0.0/8"));
    assert!(r.text.contains(
        "-A KUBE-SERVICES -m comment --comment \"ns/empty:p53 has no endpoints\" -m tcp -p tcp -d 10.96.0.9 --dport 53 -j REJECT\n"
    ));
    assert_eq!((r.nat_chains, r.nat_rules), (4, 5));
    assert_eq!(r.filter_rules, 5);
    assert!(!r.text.contains(&chains::service(&empty)));
}

#[test]
fn udp_services_match_udp() {
    let mut dns = svc(
        "kube-system",
        "kube-dns",
        [10, 96, 0, 10],
        53,
        &[([10, 244, 0, 5], 53)],
    );
    dns.protocol = Protocol::Udp;
    let r = render(&[dns], &options("10.244.0.0/16"));
    assert!(r
        .text
        .contains("-m udp -p udp -d 10.96.0.10 --dport 53 -j KUBE-SVC-"));
    assert!(r
        .text
        .contains("-m udp -p udp -j DNAT --to-destination 10.244.0.5:53"));
}

#[test]
fn without_a_cluster_cidr_there_is_no_masquerade_check() {
    let s = svc("ns", "s", [10, 96, 0, 1], 80, &[([10, 1, 0, 1], 80)]);
    let r = render(&[s], &RenderOptions { cluster_cidr: None });
    assert!(!r
        .text
        .lines()
        .any(|l| l.starts_with("-A KUBE-SVC-") && l.contains("KUBE-MARK-MASQ")));
    assert_eq!(r.nat_rules, 5 + 1 + 1 + 2);
}

/// Adding one service rewrites every KUBE-SERVICES jump and the filter
/// table, but declares and fills only the new service's own chains.
#[test]
fn incremental_add_writes_kube_services_whole_and_only_the_new_chains() {
    let all = topology::services(11, 2);
    let (existing, new) = all.split_at(10);
    let new = &new[0];
    let r = render_incremental(existing, new, &topology::render_options());
    let full = render(&all, &topology::render_options());
    assert_eq!(
        r.text
            .lines()
            .filter(|l| l.starts_with("-A KUBE-SERVICES "))
            .count(),
        12
    );
    let declared = chain_names(&r.text);
    let service_chains: Vec<&String> = declared
        .iter()
        .filter(|c| chains::is_service_chain(c))
        .collect();
    assert_eq!(service_chains.len(), 3);
    assert_eq!(service_chains[0], &chains::service(new));
    for s in existing {
        assert!(!r.text.contains(&format!("-A {}", chains::service(s))));
    }
    // The KUBE-SERVICES jumps, in order, and the new service's chains are
    // exactly those of a full sync of the larger set.
    let pick = |text: &str, prefix: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        pick(&r.text, "-A KUBE-SERVICES "),
        pick(&full.text, "-A KUBE-SERVICES ")
    );
    assert_eq!(
        pick(&r.text, "-A KUBE-SVC-"),
        pick(&full.text, &format!("-A {}", chains::service(new)))
    );
    assert_eq!(r.filter_rules, full.filter_rules);
    assert_eq!(r.nat_chains, 4 + 1 + 2);
    assert_eq!(r.nat_rules, 5 + 11 + 1 + 2 + 4);
    assert_eq!(r.active_nat_chains, full.active_nat_chains);
}

#[test]
fn stale_service_chains_are_flushed_and_deleted_others_kept() {
    let services = topology::services(2, 1);
    let existing: Vec<String> = [
        "PREROUTING",
        "KUBE-SERVICES",
        "KUBE-SVC-AAAAAAAAAAAAAAAA",
        "KUBE-SEP-BBBBBBBBBBBBBBBB",
        "SOMEONE-ELSES",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([chains::service(&services[0])])
    .collect();
    let r = render_sync(&services, 0..2, &existing, &topology::render_options());
    for stale in ["KUBE-SVC-AAAAAAAAAAAAAAAA", "KUBE-SEP-BBBBBBBBBBBBBBBB"] {
        assert!(r.text.contains(&format!(":{stale} - [0:0]\n")));
        assert!(r.text.contains(&format!("-X {stale}\n")));
    }
    assert!(!r.text.contains("SOMEONE-ELSES"));
    assert!(!r.text.contains("-X KUBE-SVC-") || r.text.matches("-X ").count() == 2);
    assert!(!r
        .text
        .contains(&format!("-X {}", chains::service(&services[0]))));
    // The NodePort jump stays the last rule of the table.
    let nat_rules: Vec<&str> = r.text.lines().filter(|l| l.starts_with('-')).collect();
    assert!(nat_rules.last().unwrap().contains("-j KUBE-NODEPORTS"));
}

#[test]
fn chain_names_parse_iptables_save() {
    let save = "# Generated\n*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SVC-X - [0:0]\n-A KUBE-SVC-X -j KUBE-SEP-Y\nCOMMIT\n";
    assert_eq!(chain_names(save), ["PREROUTING", "KUBE-SVC-X"]);
}

#[test]
fn percentiles_by_nearest_rank() {
    let samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
    assert_eq!(percentile(&samples, 50.0), Duration::from_millis(50));
    assert_eq!(percentile(&samples, 99.0), Duration::from_millis(99));
    assert_eq!(percentile(&samples, 100.0), Duration::from_millis(100));
    let p = Percentiles::of(&samples);
    assert_eq!(p.min, Duration::from_millis(1));
    assert_eq!(p.max, Duration::from_millis(100));
    assert_eq!(
        percentile(&[Duration::from_micros(7)], 99.0),
        Duration::from_micros(7)
    );
    assert_eq!(percentile(&[], 50.0), Duration::ZERO);
}

#[test]
fn topology_addresses_stay_in_their_ranges() {
    assert_eq!(topology::service_ip(0), Ipv4Addr::new(10, 201, 0, 1));
    assert_eq!(topology::service_ip(9_999), Ipv4Addr::new(10, 201, 39, 16));
    assert_eq!(topology::endpoint_ip(0, 0), Ipv4Addr::new(10, 200, 64, 1));
    let last = topology::MAX_SERVICES - 1;
    assert_eq!(
        topology::endpoint_ip(0, last),
        Ipv4Addr::new(10, 200, 127, 255)
    );
    assert_eq!(
        topology::endpoint_ip(1, last),
        Ipv4Addr::new(10, 200, 191, 255)
    );
    assert_eq!(
        topology::endpoint_ip(2, last),
        Ipv4Addr::new(10, 200, 255, 255)
    );
}
