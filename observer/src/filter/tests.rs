use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use super::*;
use crate::event::{ip_proto, observation_point, tcp_flag, DatapathEvent, EventKind};
use crate::parser::{EndpointInfo, Enricher, Parser, ServiceInfo, WallClock, WorkloadInfo};
use crate::proto::flow::{DropReason, EventTypeFilter, IpVersion, TrafficDirection, Verdict};

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 1, 10));
const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 2, 20));

struct Table(HashMap<IpAddr, EndpointInfo>);

impl Enricher for Table {
    fn endpoint_by_ip(&self, ip: IpAddr) -> Option<EndpointInfo> {
        self.0.get(&ip).cloned()
    }
    fn service_by_frontend(&self, ip: IpAddr, port: u16, _: u8) -> Option<ServiceInfo> {
        (ip == SERVER && port == 80).then(|| ServiceInfo {
            name: "web-svc".into(),
            namespace: "prod".into(),
        })
    }
}

fn ep(
    id: u32,
    identity: u32,
    ns: &str,
    pod: &str,
    labels: &[&str],
    workload: &str,
) -> EndpointInfo {
    EndpointInfo {
        id,
        identity,
        namespace: ns.into(),
        pod_name: pod.into(),
        labels: labels.iter().map(|s| s.to_string()).collect(),
        workloads: vec![WorkloadInfo {
            name: workload.into(),
            kind: "Deployment".into(),
        }],
    }
}

/// A TCP SYN from client (prod/client-1) to server (prod/web-1), dropped by policy.
fn flow_with(edit: impl FnOnce(&mut DatapathEvent)) -> Flow {
    let mut table = HashMap::new();
    table.insert(
        CLIENT,
        ep(
            1,
            1001,
            "prod",
            "client-1",
            &["k8s:app=client", "k8s:tier=front"],
            "client",
        ),
    );
    table.insert(
        SERVER,
        ep(2, 1002, "prod", "web-1", &["k8s:app=web"], "web"),
    );
    let parser = Parser::new(
        "node-a",
        Arc::new(Table(table)),
        WallClock::from_offset_ns(0),
    );
    let mut ev = DatapathEvent {
        kind: EventKind::Drop { reason: 133 },
        timestamp_ns: 1,
        ifindex: 3,
        endpoint_id: 1,
        src_ip: CLIENT,
        dst_ip: SERVER,
        protocol: ip_proto::TCP,
        src_port: 40000,
        dst_port: 80,
        tcp_flags: tcp_flag::SYN,
        icmp_type: 0,
        icmp_code: 0,
        src_identity: 1001,
        dst_identity: 1002,
        is_reply: Some(false),
        packet_len: 60,
    };
    edit(&mut ev);
    parser.parse(&ev)
}

fn flow() -> Flow {
    flow_with(|_| {})
}

/// Whether a whitelist of exactly `f` admits `flow`.
fn admits(f: FlowFilter, flow: &Flow) -> bool {
    FlowFilters::new(&[f], &[]).unwrap().matches(flow)
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn empty_filter_set_matches_everything() {
    assert!(FlowFilters::default().matches(&flow()));
    assert!(admits(FlowFilter::default(), &flow()));
}

#[test]
fn source_and_destination_ip_exact_and_cidr() {
    let f = flow();
    assert!(admits(
        FlowFilter {
            source_ip: strings(&["10.0.1.10"]),
            ..Default::default()
        },
        &f
    ));
    assert!(admits(
        FlowFilter {
            source_ip: strings(&["10.0.1.0/24"]),
            ..Default::default()
        },
        &f
    ));
    assert!(!admits(
        FlowFilter {
            source_ip: strings(&["10.0.2.0/24"]),
            ..Default::default()
        },
        &f
    ));
    assert!(admits(
        FlowFilter {
            destination_ip: strings(&["1.1.1.1", "10.0.2.20"]),
            ..Default::default()
        },
        &f
    ));
    assert!(!admits(
        FlowFilter {
            destination_ip: strings(&["10.0.1.10"]),
            ..Default::default()
        },
        &f
    ));
    assert_eq!(
        FlowFilters::new(
            &[FlowFilter {
                source_ip: strings(&["nope"]),
                ..Default::default()
            }],
            &[]
        )
        .unwrap_err(),
        FilterError::Ip("nope".into())
    );
}

#[test]
fn pod_filters_with_namespace_prefixes() {
    let f = flow();
    let src = |p: &str| {
        admits(
            FlowFilter {
                source_pod: strings(&[p]),
                ..Default::default()
            },
            &f,
        )
    };
    assert!(src("client-"));
    assert!(src("prod/client"));
    assert!(src("prod/"));
    assert!(!src("kube-system/"));
    assert!(!src("other/client-1"));
    assert!(!src("web"));
    let dst = |p: &str| {
        admits(
            FlowFilter {
                destination_pod: strings(&[p]),
                ..Default::default()
            },
            &f,
        )
    };
    assert!(dst("prod/web-"));
    assert!(!dst("prod/client"));
}

#[test]
fn label_selectors() {
    let f = flow();
    let src = |s: &str| {
        admits(
            FlowFilter {
                source_label: strings(&[s]),
                ..Default::default()
            },
            &f,
        )
    };
    assert!(src("app=client"));
    assert!(src("k8s:app=client"));
    assert!(src("app==client"));
    assert!(src("app"));
    assert!(src("app=client,tier=front"));
    assert!(!src("app=client,tier=back"));
    assert!(!src("reserved:app=client"));
    assert!(src("!missing"));
    assert!(!src("!app"));
    assert!(src("app!=web"));
    assert!(!src("app!=client"));
    let dst = |s: &str| {
        admits(
            FlowFilter {
                destination_label: strings(&[s]),
                ..Default::default()
            },
            &f,
        )
    };
    assert!(dst("app=web"));
    assert!(!dst("app=client"));
    assert!(FlowFilters::new(
        &[FlowFilter {
            source_label: strings(&["app in (a,b)"]),
            ..Default::default()
        }],
        &[]
    )
    .is_err());
}

#[test]
fn identities() {
    let f = flow();
    assert!(admits(
        FlowFilter {
            source_identity: vec![5, 1001],
            ..Default::default()
        },
        &f
    ));
    assert!(!admits(
        FlowFilter {
            source_identity: vec![1002],
            ..Default::default()
        },
        &f
    ));
    assert!(admits(
        FlowFilter {
            destination_identity: vec![1002],
            ..Default::default()
        },
        &f
    ));
    assert!(!admits(
        FlowFilter {
            destination_identity: vec![1001],
            ..Default::default()
        },
        &f
    ));
}

#[test]
fn verdict_and_drop_reason() {
    let f = flow();
    assert!(admits(
        FlowFilter {
            verdict: vec![Verdict::Dropped as i32],
            ..Default::default()
        },
        &f
    ));
    assert!(!admits(
        FlowFilter {
            verdict: vec![Verdict::Forwarded as i32],
            ..Default::default()
        },
        &f
    ));
    assert!(admits(
        FlowFilter {
            drop_reason_desc: vec![DropReason::PolicyDenied as i32],
            ..Default::default()
        },
        &f
    ));
    assert!(!admits(
        FlowFilter {
            drop_reason_desc: vec![DropReason::PolicyDeny as i32],
            ..Default::default()
        },
        &f
    ));
}

#[test]
fn event_type_with_and_without_sub_type() {
    let f = flow();
    let et = |t, m, s| FlowFilter {
        event_type: vec![EventTypeFilter {
            r#type: t,
            match_sub_type: m,
            sub_type: s,
        }],
        ..Default::default()
    };
    assert!(admits(et(1, false, 0), &f));
    assert!(admits(et(1, true, 133), &f));
    assert!(!admits(et(1, true, 0), &f));
    assert!(!admits(et(4, false, 0), &f));
    let trace = flow_with(|e| {
        e.kind = EventKind::Trace {
            observation_point: observation_point::TO_LXC,
            reason: 0,
        }
    });
    // Subtype is the datapath's observation point (0), not Hubble's 101.
    assert!(admits(et(4, true, 0), &trace));
}

#[test]
fn protocol() {
    let tcp = flow();
    let udp = flow_with(|e| e.protocol = ip_proto::UDP);
    let icmp = flow_with(|e| e.protocol = ip_proto::ICMP);
    let p = |s: &str| FlowFilter {
        protocol: strings(&[s]),
        ..Default::default()
    };
    assert!(admits(p("tcp"), &tcp));
    assert!(admits(p("TCP"), &tcp));
    assert!(!admits(p("udp"), &tcp));
    assert!(admits(p("udp"), &udp));
    assert!(admits(p("icmp"), &icmp));
    assert!(admits(p("icmpv4"), &icmp));
    assert!(!admits(p("icmpv6"), &icmp));
    assert!(!admits(p("http"), &tcp));
    assert!(FlowFilters::new(&[p("gre")], &[]).is_err());
}

#[test]
fn ports() {
    let f = flow();
    assert!(admits(
        FlowFilter {
            source_port: strings(&["40000"]),
            ..Default::default()
        },
        &f
    ));
    assert!(!admits(
        FlowFilter {
            source_port: strings(&["80"]),
            ..Default::default()
        },
        &f
    ));
    assert!(admits(
        FlowFilter {
            destination_port: strings(&["443", "80"]),
            ..Default::default()
        },
        &f
    ));
    assert!(!admits(
        FlowFilter {
            destination_port: strings(&["443"]),
            ..Default::default()
        },
        &f
    ));
    let icmp = flow_with(|e| e.protocol = ip_proto::ICMP);
    assert!(!admits(
        FlowFilter {
            destination_port: strings(&["80"]),
            ..Default::default()
        },
        &icmp
    ));
    assert!(FlowFilters::new(
        &[FlowFilter {
            source_port: strings(&["70000"]),
            ..Default::default()
        }],
        &[]
    )
    .is_err());
}

#[test]
fn tcp_flags() {
    let syn = flow();
    let synack = flow_with(|e| e.tcp_flags = tcp_flag::SYN | tcp_flag::ACK);
    let want_syn = FlowFilter {
        tcp_flags: vec![TcpFlags {
            syn: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    let want_synack = FlowFilter {
        tcp_flags: vec![TcpFlags {
            syn: true,
            ack: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    let want_fin_or_ack = FlowFilter {
        tcp_flags: vec![
            TcpFlags {
                fin: true,
                ..Default::default()
            },
            TcpFlags {
                ack: true,
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    assert!(admits(want_syn.clone(), &syn));
    assert!(admits(want_syn, &synack));
    assert!(!admits(want_synack.clone(), &syn));
    assert!(admits(want_synack, &synack));
    assert!(!admits(want_fin_or_ack.clone(), &syn));
    assert!(admits(want_fin_or_ack, &synack));
}

#[test]
fn node_name_patterns() {
    let f = flow();
    let n = |s: &str| {
        admits(
            FlowFilter {
                node_name: strings(&[s]),
                ..Default::default()
            },
            &f,
        )
    };
    assert!(n("node-a"));
    assert!(n("node-*"));
    assert!(n("*"));
    assert!(n("*-a"));
    assert!(!n("node-b"));
    assert!(!n("worker*"));
}

#[test]
fn traffic_direction_reply_and_ip_version() {
    let f = flow();
    assert!(admits(
        FlowFilter {
            traffic_direction: vec![TrafficDirection::Egress as i32],
            ..Default::default()
        },
        &f
    ));
    assert!(!admits(
        FlowFilter {
            traffic_direction: vec![TrafficDirection::Ingress as i32],
            ..Default::default()
        },
        &f
    ));
    assert!(admits(
        FlowFilter {
            reply: vec![false],
            ..Default::default()
        },
        &f
    ));
    assert!(!admits(
        FlowFilter {
            reply: vec![true],
            ..Default::default()
        },
        &f
    ));
    let unknown = flow_with(|e| e.is_reply = None);
    assert!(!admits(
        FlowFilter {
            reply: vec![false],
            ..Default::default()
        },
        &unknown
    ));
    assert!(admits(
        FlowFilter {
            ip_version: vec![IpVersion::IPv4 as i32],
            ..Default::default()
        },
        &f
    ));
    assert!(!admits(
        FlowFilter {
            ip_version: vec![IpVersion::IPv6 as i32],
            ..Default::default()
        },
        &f
    ));
}

#[test]
fn services_and_workloads() {
    let f = flow();
    assert!(admits(
        FlowFilter {
            destination_service: strings(&["prod/web"]),
            ..Default::default()
        },
        &f
    ));
    assert!(!admits(
        FlowFilter {
            source_service: strings(&["prod/"]),
            ..Default::default()
        },
        &f
    ));
    let wl = |name: &str, kind: &str| Workload {
        name: name.into(),
        kind: kind.into(),
    };
    assert!(admits(
        FlowFilter {
            source_workload: vec![wl("client", "")],
            ..Default::default()
        },
        &f
    ));
    assert!(admits(
        FlowFilter {
            destination_workload: vec![wl("web", "Deployment")],
            ..Default::default()
        },
        &f
    ));
    assert!(!admits(
        FlowFilter {
            destination_workload: vec![wl("web", "DaemonSet")],
            ..Default::default()
        },
        &f
    ));
}

#[test]
fn l7_criteria_never_match_l3_l4_flows() {
    let f = flow();
    assert!(!admits(
        FlowFilter {
            http_status_code: strings(&["200"]),
            ..Default::default()
        },
        &f
    ));
    assert!(!admits(
        FlowFilter {
            dns_query: strings(&[".*"]),
            ..Default::default()
        },
        &f
    ));
}

#[test]
fn fields_are_anded_and_filters_ored() {
    let f = flow();
    let ok_ip = FlowFilter {
        source_ip: strings(&["10.0.1.10"]),
        ..Default::default()
    };
    let both = FlowFilter {
        destination_port: strings(&["443"]),
        ..ok_ip.clone()
    };
    assert!(admits(ok_ip.clone(), &f));
    assert!(!admits(both.clone(), &f));
    // Whitelist: any filter may match.
    assert!(FlowFilters::new(&[both.clone(), ok_ip.clone()], &[])
        .unwrap()
        .matches(&f));
    assert!(!FlowFilters::new(std::slice::from_ref(&both), &[])
        .unwrap()
        .matches(&f));
    // Blacklist excludes on any match, even if whitelisted.
    assert!(
        !FlowFilters::new(std::slice::from_ref(&ok_ip), &[both.clone(), ok_ip.clone()])
            .unwrap()
            .matches(&f)
    );
    assert!(FlowFilters::new(&[], &[both]).unwrap().matches(&f));
    assert!(!FlowFilters::new(&[], &[ok_ip]).unwrap().matches(&f));
}

#[test]
fn glob_edge_cases() {
    assert!(glob("a*b*c", "aXXbYc"));
    assert!(!glob("a*b*c", "aXXcYb"));
    assert!(glob("", ""));
    assert!(!glob("", "x"));
    assert!(glob("*", ""));
    assert!(glob("**", "abc"));
    assert!(glob("a*", "a"));
    assert!(
        !glob("a*a", "a"),
        "the prefix and the suffix may not overlap"
    );
    assert!(glob("a*a", "aa"));
    assert!(glob("*ab", "aab"));
    assert!(glob("n*-*-1", "node-x-y-1"));
    assert!(!glob("n*-*-1", "node-x-y-2"));
    assert!(glob("ä*ö", "äxyzö"));
}

#[test]
fn glob_agrees_with_a_reference_matcher() {
    /// The textbook backtracking matcher (exponential; fine on short input).
    fn reference(p: &[char], s: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('*', rest)) => (0..=s.len()).any(|i| reference(rest, &s[i..])),
            Some((c, rest)) => s.first() == Some(c) && reference(rest, &s[1..]),
        }
    }
    let alphabet = ['a', 'b', '*'];
    let mut seed = 0x2545_f491_u32;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for _ in 0..20_000 {
        let pattern: String = (0..next() % 7)
            .map(|_| alphabet[(next() % 3) as usize])
            .collect();
        let text: String = (0..next() % 8)
            .map(|_| alphabet[(next() % 2) as usize])
            .collect();
        let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
        assert_eq!(
            glob(&pattern, &text),
            reference(&p, &t),
            "{pattern:?} ~ {text:?}"
        );
    }
}

#[test]
fn a_pathological_pattern_is_answered_at_once() {
    // With the old recursive matcher this took exponential time (and a
    // stack frame per star): 2,000 stars against 8,000 characters.
    let pattern = "*a".repeat(2_000) + "b";
    let text = "a".repeat(8_000);
    assert!(!glob(&pattern, &text));
}

#[test]
fn the_work_a_request_can_ask_for_is_bounded() {
    let many = vec![FlowFilter::default(); MAX_FILTERS + 1];
    assert_eq!(
        FlowFilters::new(&many, &[]).err(),
        Some(FilterError::TooManyFilters(MAX_FILTERS + 1))
    );
    assert!(FlowFilters::new(&[], &many[..MAX_FILTERS]).is_ok());
    let huge = FlowFilter {
        source_pod: vec!["x".repeat(MAX_FILTER_BYTES)],
        ..Default::default()
    };
    assert!(matches!(
        FlowFilters::new(&[], &[huge]),
        Err(FilterError::FilterTooLarge(_))
    ));
}

#[test]
fn newer_hubble_criteria_are_evaluated_not_dropped() {
    use crate::proto::flow::{flow_filter::Experimental, HttpHeader, NetworkInterface};
    let mut f = flow();
    f.interface = Some(NetworkInterface {
        index: 7,
        name: "lxc1234".into(),
    });
    let admitted = |filter: FlowFilter, flow: &Flow| admits(filter, flow);
    let iface = |index: u32, name: &str| FlowFilter {
        interface: vec![NetworkInterface {
            index,
            name: name.into(),
        }],
        ..Default::default()
    };
    assert!(admitted(iface(7, ""), &f));
    assert!(admitted(iface(0, "lxc1234"), &f));
    assert!(!admitted(iface(8, ""), &f));
    assert!(!admitted(iface(7, "eth0"), &f));

    // Not encrypted, no translated source, and no node labels here.
    let encrypted = |e: bool| FlowFilter {
        encrypted: vec![e],
        ..Default::default()
    };
    assert!(admitted(encrypted(false), &f));
    assert!(!admitted(encrypted(true), &f));
    let xlated = FlowFilter {
        source_ip_xlated: strings(&["10.0.0.0/8"]),
        ..Default::default()
    };
    assert!(!admitted(xlated.clone(), &f));
    f.ip.as_mut().unwrap().source_xlated = "10.77.0.11".into();
    assert!(admitted(xlated, &f));
    let node_labels = |selector: &str| FlowFilter {
        node_labels: strings(&[selector]),
        ..Default::default()
    };
    assert!(!admitted(node_labels("zone=a"), &f));
    assert!(admitted(node_labels("!zone"), &f));
    f.node_labels = strings(&["zone=a"]);
    assert!(admitted(node_labels("zone=a"), &f));

    let cluster = |name: &str| FlowFilter {
        source_cluster_name: strings(&[name]),
        ..Default::default()
    };
    let src_cluster = f.source.as_ref().unwrap().cluster_name.clone();
    assert!(admitted(cluster(&src_cluster), &f));
    assert!(!admitted(cluster("elsewhere"), &f));

    // L7 and trace criteria: no L3/L4 flow has them.
    for filter in [
        FlowFilter {
            http_url: strings(&["/.*"]),
            ..Default::default()
        },
        FlowFilter {
            http_header: vec![HttpHeader {
                key: "x".into(),
                value: "y".into(),
            }],
            ..Default::default()
        },
        FlowFilter {
            ip_trace_id: vec![1],
            ..Default::default()
        },
    ] {
        assert!(!admitted(filter, &f));
    }

    // CEL is refused up front rather than ignored.
    let cel = FlowFilter {
        experimental: Some(Experimental {
            cel_expression: strings(&["_flow.verdict == 1"]),
        }),
        ..Default::default()
    };
    let error = FlowFilters::new(&[cel], &[]).unwrap_err();
    assert!(error.to_string().contains("not supported"), "{error}");
}
