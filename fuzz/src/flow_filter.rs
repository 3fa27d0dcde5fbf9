//! Hubble `FlowFilter`s, as a client of the Observer API sends them:
//! compiled into [`FlowFilters`] and evaluated against flows that the real
//! parser made from datapath events.
//!
//! The input drives a generator: two lists of filters (words Hubble knows
//! or anything), a few flows, and a few node-name pattern/name pairs. The
//! raw input is also decoded as a protobuf `FlowFilter` (the wire form).
//!
//! What must hold for any input:
//! - nothing panics; a refusal says why; what compiles stays within the
//!   documented bounds (64 filters per list, 16 KiB per filter);
//! - the documented semantics: a flow passes when the whitelist is empty
//!   or any of its filters matches, and no blacklist filter matches (each
//!   filter compiled on its own); a filter on the blacklist passes exactly
//!   the flows it does not match on the whitelist;
//! - the `node_name` glob agrees with a plain reference matcher (`*` is
//!   any run of characters, all else literal). Its cost is linear by
//!   construction; libFuzzer's per-input timeout reports any input that
//!   takes long.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use arbitrary::Unstructured;
use prost::Message;
use weir_observer::filter::{MAX_FILTERS, MAX_FILTER_BYTES};
use weir_observer::parser::{NoEnrichment, Parser, WallClock};
use weir_observer::proto::flow::{Endpoint, Flow, FlowFilter, Service, TcpFlags};
use weir_observer::{DatapathEvent, EventKind, FlowFilters, PolicyDirection};

use crate::structured::{list, text, words};

const CIDRS: &[&str] = &[
    "10.0.0.1",
    "10.0.0.0/8",
    "10.0.0.2/32",
    "0.0.0.0/0",
    "fd00::1",
    "fd00::/8",
    "::/0",
    "10.0.0.0/33",
    "300.1.1.1",
    "",
];
const PODS: &[&str] = &[
    "shop/",
    "shop/web",
    "web",
    "billing/ledger-0",
    "/",
    "",
    "kube-system/coredns",
];
const LABELS: &[&str] = &[
    "app=web",
    "k8s:app=web",
    "app",
    "!app",
    "app!=db",
    "app==web,tier=front",
    "app in (web)",
    ",",
    "=x",
    "reserved:world",
    "k8s:io.kubernetes.pod.namespace=shop",
];
const PORTS: &[&str] = &["80", "0", "65535", "65536", "-1", "http", ""];
const PROTOCOLS: &[&str] = &[
    "tcp", "UDP", "sctp", "icmp", "ICMPv4", "icmpv6", "http", "dns", "kafka", "gre",
];
const NODE_PATTERNS: &[&str] = &[
    "*",
    "",
    "n1",
    "n*",
    "*1",
    "n*1",
    "**",
    "a*b*c",
    "*n*",
    "node-*-east",
    "***x**",
];
const NODE_NAMES: &[&str] = &["n1", "n2", "", "node-1-east", "abc", "aXbYc", "x", "n11"];
const NAMESPACES: &[&str] = &["shop", "billing", "kube-system", ""];
const POD_NAMES: &[&str] = &["web", "web-0", "ledger-0", "coredns", ""];
const FLOW_LABELS: &[&str] = &[
    "k8s:app=web",
    "k8s:tier=front",
    "k8s:app=db",
    "reserved:world",
    "k8s:io.kubernetes.pod.namespace=shop",
    "app",
];

pub fn fuzz(data: &[u8]) {
    let wire = FlowFilter::decode(data).ok();
    let mut u = Unstructured::new(data);
    let mut whitelist = list(&mut u, 4, filter);
    let blacklist = list(&mut u, 3, filter);
    if let Some(wire) = wire {
        whitelist.push(wire);
    }
    let flows = list(&mut u, 4, flow);
    let node_pairs = list(&mut u, 4, |u| {
        (text(u, NODE_PATTERNS, 48), text(u, NODE_NAMES, 48))
    });

    check_lists(&whitelist, &blacklist, &flows);
    for (pattern, name) in &node_pairs {
        check_node_name(pattern, name);
    }
}

fn check_lists(whitelist: &[FlowFilter], blacklist: &[FlowFilter], flows: &[Flow]) {
    let compiled = match FlowFilters::new(whitelist, blacklist) {
        Ok(compiled) => compiled,
        Err(error) => {
            assert!(
                !error.to_string().trim().is_empty(),
                "a refusal without a reason"
            );
            return;
        }
    };
    for list in [whitelist, blacklist] {
        assert!(list.len() <= MAX_FILTERS, "{} filters accepted", list.len());
        for filter in list {
            assert!(
                filter.encoded_len() <= MAX_FILTER_BYTES,
                "a large filter accepted"
            );
        }
    }
    let alone = |f: &FlowFilter| {
        FlowFilters::new(std::slice::from_ref(f), &[]).expect("compiled in the list")
    };
    let white: Vec<FlowFilters> = whitelist.iter().map(alone).collect();
    let black: Vec<FlowFilters> = blacklist.iter().map(alone).collect();
    for flow in flows {
        let white_hits: Vec<bool> = white.iter().map(|f| f.matches(flow)).collect();
        let black_hits: Vec<bool> = black.iter().map(|f| f.matches(flow)).collect();
        let expected =
            (white_hits.is_empty() || white_hits.contains(&true)) && !black_hits.contains(&true);
        assert_eq!(
            compiled.matches(flow),
            expected,
            "the lists disagree with their filters (whitelist hits {white_hits:?}, blacklist hits {black_hits:?})"
        );
        for (filter, hit) in blacklist.iter().zip(&black_hits) {
            let only_black = FlowFilters::new(&[], std::slice::from_ref(filter)).expect("compiled");
            assert_eq!(
                only_black.matches(flow),
                !hit,
                "a blacklist filter is not the complement of the same whitelist filter"
            );
        }
    }
}

/// A `node_name` filter against a flow on node `name` agrees with
/// [`reference_glob`].
fn check_node_name(pattern: &str, name: &str) {
    let filter = FlowFilter {
        node_name: vec![pattern.to_string()],
        ..FlowFilter::default()
    };
    let compiled = FlowFilters::new(&[filter], &[]).expect("a node_name filter compiles");
    let flow = Flow {
        node_name: name.to_string(),
        ..Flow::default()
    };
    assert_eq!(
        compiled.matches(&flow),
        reference_glob(pattern, name),
        "node_name pattern {pattern:?} on node {name:?}"
    );
}

/// `*` matches any run of characters, everything else itself: the textbook
/// dynamic programme over (pattern prefix, name prefix).
pub fn reference_glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = name.chars().collect();
    // row[j]: does the pattern prefix so far match s[..j]?
    let mut row = vec![false; s.len() + 1];
    row[0] = true;
    for &pc in &p {
        let mut next = vec![false; s.len() + 1];
        if pc == '*' {
            let mut any = false;
            for j in 0..=s.len() {
                any |= row[j];
                next[j] = any;
            }
        } else {
            for j in 1..=s.len() {
                next[j] = row[j - 1] && s[j - 1] == pc;
            }
        }
        row = next;
    }
    row[s.len()]
}

fn filter(u: &mut Unstructured<'_>) -> FlowFilter {
    let mut f = FlowFilter::default();
    // Each field is set with probability about one in four.
    let set = |u: &mut Unstructured<'_>| u.ratio(1, 4).unwrap_or(false);
    if set(u) {
        f.source_ip = words(u, CIDRS, 3);
    }
    if set(u) {
        f.destination_ip = words(u, CIDRS, 3);
    }
    if set(u) {
        f.source_ip_xlated = words(u, CIDRS, 2);
    }
    if set(u) {
        f.source_pod = words(u, PODS, 3);
    }
    if set(u) {
        f.destination_pod = words(u, PODS, 3);
    }
    if set(u) {
        f.source_service = words(u, PODS, 2);
    }
    if set(u) {
        f.destination_service = words(u, PODS, 2);
    }
    if set(u) {
        f.source_label = words(u, LABELS, 3);
    }
    if set(u) {
        f.destination_label = words(u, LABELS, 3);
    }
    if set(u) {
        f.node_labels = words(u, LABELS, 2);
    }
    if set(u) {
        f.source_port = words(u, PORTS, 2);
    }
    if set(u) {
        f.destination_port = words(u, PORTS, 2);
    }
    if set(u) {
        f.protocol = words(u, PROTOCOLS, 2);
    }
    if set(u) {
        f.node_name = words(u, NODE_PATTERNS, 2);
    }
    if set(u) {
        f.verdict = list(u, 2, |u| u.int_in_range(0..=6).unwrap_or(0));
    }
    if set(u) {
        f.traffic_direction = list(u, 2, |u| u.int_in_range(0..=2).unwrap_or(0));
    }
    if set(u) {
        f.source_identity = list(u, 2, |u| u.int_in_range(0..=3).unwrap_or(0) * 100);
    }
    if set(u) {
        f.reply = list(u, 2, |u| u.arbitrary().unwrap_or(false));
    }
    if set(u) {
        f.ip_version = list(u, 2, |u| u.int_in_range(0..=2).unwrap_or(0));
    }
    if set(u) {
        f.tcp_flags = list(u, 2, |u| TcpFlags {
            syn: u.arbitrary().unwrap_or(false),
            ack: u.arbitrary().unwrap_or(false),
            fin: u.arbitrary().unwrap_or(false),
            rst: u.arbitrary().unwrap_or(false),
            ..TcpFlags::default()
        });
    }
    if u.ratio(1, 16).unwrap_or(false) {
        f.http_method = words(u, &["GET"], 1);
    }
    f
}

/// A flow the parser makes from an event, with endpoint names, labels,
/// services and the node name the generator chose.
fn flow(u: &mut Unstructured<'_>) -> Flow {
    let ipv4 = |u: &mut Unstructured<'_>| {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, u.int_in_range(0..=3).unwrap_or(1)))
    };
    let v6: bool = u.ratio(1, 4).unwrap_or(false);
    let address = |u: &mut Unstructured<'_>| {
        if v6 {
            IpAddr::V6(Ipv6Addr::new(
                0xfd00,
                0,
                0,
                0,
                0,
                0,
                0,
                u.int_in_range(0..=3).unwrap_or(1),
            ))
        } else {
            ipv4(u)
        }
    };
    let kind = match u.int_in_range(0..=2).unwrap_or(0) {
        0 => EventKind::Drop {
            reason: *u.choose(&[133u8, 134, 181, 203, 7]).unwrap_or(&133),
        },
        1 => EventKind::Trace {
            observation_point: u.int_in_range(0..=10).unwrap_or(0),
            reason: u.arbitrary().unwrap_or(0),
        },
        _ => EventKind::PolicyVerdict {
            allowed: u.arbitrary().unwrap_or(true),
            audited: u.arbitrary().unwrap_or(false),
            direction: if u.arbitrary().unwrap_or(false) {
                PolicyDirection::Ingress
            } else {
                PolicyDirection::Egress
            },
            match_type: u.int_in_range(0..=6).unwrap_or(0),
            reason: u.arbitrary().unwrap_or(0),
        },
    };
    let event = DatapathEvent {
        kind,
        timestamp_ns: u.arbitrary().unwrap_or(0),
        ifindex: u.int_in_range(0..=3).unwrap_or(2),
        endpoint_id: u.int_in_range(0..=2).unwrap_or(1),
        src_ip: address(u),
        dst_ip: address(u),
        protocol: *u.choose(&[6u8, 17, 1, 58, 132, 47]).unwrap_or(&6),
        src_port: *u.choose(&[80u16, 40000, 0, 53]).unwrap_or(&80),
        dst_port: *u.choose(&[80u16, 443, 0, 53]).unwrap_or(&80),
        tcp_flags: u.arbitrary().unwrap_or(0),
        icmp_type: u.arbitrary().unwrap_or(0),
        icmp_code: u.arbitrary().unwrap_or(0),
        src_identity: u.int_in_range(0..=3).unwrap_or(1) * 100,
        dst_identity: u.int_in_range(0..=3).unwrap_or(2) * 100,
        is_reply: u.arbitrary().unwrap_or(None),
        packet_len: u.arbitrary().unwrap_or(60),
    };
    let node = text(u, NODE_NAMES, 32);
    let parser = Parser::new(node, Arc::new(NoEnrichment), WallClock::from_offset_ns(0));
    let mut flow = parser.parse(&event);
    for endpoint in [&mut flow.source, &mut flow.destination] {
        let endpoint = endpoint.get_or_insert_with(Endpoint::default);
        endpoint.namespace = text(u, NAMESPACES, 16);
        endpoint.pod_name = text(u, POD_NAMES, 16);
        endpoint.labels = words(u, FLOW_LABELS, 3);
    }
    if u.ratio(1, 3).unwrap_or(false) {
        flow.destination_service = Some(Service {
            name: text(u, POD_NAMES, 16),
            namespace: text(u, NAMESPACES, 16),
        });
    }
    flow.node_labels = words(u, FLOW_LABELS, 2);
    flow
}
