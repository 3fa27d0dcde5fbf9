use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use crate::event::match_type;
use weir_abi::Reason;

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10));
const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 20));
const SVC: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1));

/// A table-backed enricher, as the agent's caches would answer.
struct Table {
    endpoints: HashMap<IpAddr, EndpointInfo>,
    identities: HashMap<u32, Vec<String>>,
}

impl Enricher for Table {
    fn endpoint_by_ip(&self, ip: IpAddr) -> Option<EndpointInfo> {
        self.endpoints.get(&ip).cloned()
    }
    fn identity_labels(&self, identity: u32) -> Vec<String> {
        self.identities.get(&identity).cloned().unwrap_or_default()
    }
    fn service_by_frontend(&self, ip: IpAddr, port: u16, _protocol: u8) -> Option<ServiceInfo> {
        (ip == SVC && port == 80).then(|| ServiceInfo {
            name: "web".into(),
            namespace: "prod".into(),
        })
    }
    fn interface_name(&self, ifindex: u32) -> Option<String> {
        (ifindex == 7).then(|| "lxc1234".to_string())
    }
}

fn parser() -> Parser {
    let mut endpoints = HashMap::new();
    endpoints.insert(
        CLIENT,
        EndpointInfo {
            id: 11,
            identity: 1001,
            namespace: "prod".into(),
            pod_name: "client-abc".into(),
            labels: vec!["k8s:app=client".into()],
            workloads: vec![WorkloadInfo {
                name: "client".into(),
                kind: "Deployment".into(),
            }],
        },
    );
    endpoints.insert(
        SERVER,
        EndpointInfo {
            id: 22,
            identity: 1002,
            namespace: "prod".into(),
            pod_name: "server-xyz".into(),
            labels: vec![],
            workloads: vec![],
        },
    );
    let mut identities = HashMap::new();
    identities.insert(
        1002,
        vec![
            "k8s:app=server".into(),
            "k8s:io.kubernetes.pod.namespace=prod".into(),
        ],
    );
    Parser::new(
        "node-a",
        Arc::new(Table {
            endpoints,
            identities,
        }),
        WallClock::from_offset_ns(1_700_000_000_000_000_000),
    )
}

fn tcp_event(kind: EventKind) -> DatapathEvent {
    DatapathEvent {
        kind,
        timestamp_ns: 5_500_000_000,
        ifindex: 7,
        endpoint_id: 11,
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
        is_reply: None,
        packet_len: 60,
    }
}

#[test]
fn drop_maps_to_dropped_with_reason() {
    let f = parser().parse(&tcp_event(EventKind::Drop {
        reason: Reason::DropPolicyDenied as u8,
    }));
    assert_eq!(f.verdict, Verdict::Dropped as i32);
    assert_eq!(f.drop_reason_desc, DropReason::PolicyDenied as i32);
    assert_eq!(f.drop_reason, 133);
    assert_eq!(
        f.event_type,
        Some(CiliumEventType {
            r#type: 1,
            sub_type: 133
        })
    );
    assert_eq!(f.r#type, FlowType::L3L4 as i32);
    // Emitted by the client's own program: egress.
    assert_eq!(f.traffic_direction, TrafficDirection::Egress as i32);
    assert_eq!(f.node_name, "node-a");
    assert_eq!(f.summary, "TCP Flags: SYN");
}

#[test]
fn drop_at_destination_is_ingress() {
    let mut ev = tcp_event(EventKind::Drop { reason: 133 });
    ev.endpoint_id = 22;
    assert_eq!(
        parser().parse(&ev).traffic_direction,
        TrafficDirection::Ingress as i32
    );
    ev.endpoint_id = 0;
    assert_eq!(
        parser().parse(&ev).traffic_direction,
        TrafficDirection::Unknown as i32
    );
}

#[test]
fn timestamps_become_wall_time() {
    let f = parser().parse(&tcp_event(EventKind::Drop { reason: 133 }));
    let t = f.time.unwrap();
    assert_eq!((t.seconds, t.nanos), (1_700_000_005, 500_000_000));
    let clock = WallClock::from_sample(
        2_000_000_000,
        UNIX_EPOCH + std::time::Duration::from_secs(100),
    );
    assert_eq!(clock.timestamp(3_000_000_000).seconds, 101);
}

#[test]
fn endpoints_are_enriched() {
    let f = parser().parse(&tcp_event(EventKind::Drop { reason: 133 }));
    let src = f.source.unwrap();
    assert_eq!(src.id, 11);
    assert_eq!(src.identity, 1001);
    assert_eq!(src.pod_name, "client-abc");
    assert_eq!(src.namespace, "prod");
    // No identity labels known for 1001: falls back to the pod's labels.
    assert_eq!(src.labels, vec!["k8s:app=client"]);
    assert_eq!(src.workloads[0].kind, "Deployment");
    let dst = f.destination.unwrap();
    assert_eq!(dst.labels[0], "k8s:app=server");
    assert_eq!(f.interface.unwrap().name, "lxc1234");
}

#[test]
fn unknown_addresses_keep_datapath_facts() {
    let mut ev = tcp_event(EventKind::Drop { reason: 133 });
    ev.src_ip = IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8));
    ev.src_identity = 2;
    let src = parser().parse(&ev).source.unwrap();
    assert_eq!((src.id, src.identity), (0, 2));
    assert!(src.pod_name.is_empty());
}

#[test]
fn trace_forwarded_with_observation_point_and_reply() {
    let f = parser().parse(&tcp_event(EventKind::Trace {
        observation_point: observation_point::TO_LXC,
        reason: trace_reason::POLICY,
    }));
    assert_eq!(f.verdict, Verdict::Forwarded as i32);
    assert_eq!(
        f.trace_observation_point,
        TraceObservationPoint::ToEndpoint as i32
    );
    assert_eq!(f.trace_reason, TraceReason::New as i32);
    assert_eq!(f.is_reply, Some(false));
    assert_eq!(f.traffic_direction, TrafficDirection::Egress as i32);

    // A reply leaving the client belongs to an ingress connection.
    let mut ev = tcp_event(EventKind::Trace {
        observation_point: observation_point::FROM_LXC,
        reason: trace_reason::CT_REPLY,
    });
    ev.tcp_flags = tcp_flag::SYN | tcp_flag::ACK;
    let f = parser().parse(&ev);
    assert_eq!(f.is_reply, Some(true));
    assert!(f.reply);
    assert_eq!(f.traffic_direction, TrafficDirection::Ingress as i32);
    assert_eq!(
        f.trace_observation_point,
        TraceObservationPoint::FromEndpoint as i32
    );
    assert_eq!(f.summary, "TCP Flags: SYN, ACK");
}

#[test]
fn trace_unknown_reason_leaves_reply_unset_and_flags_encryption() {
    let f = parser().parse(&tcp_event(EventKind::Trace {
        observation_point: observation_point::TO_STACK,
        reason: trace_reason::UNKNOWN | trace_reason::ENCRYPTED_MASK,
    }));
    assert_eq!(f.is_reply, None);
    assert_eq!(f.trace_reason, TraceReason::Unknown as i32);
    assert!(f.ip.unwrap().encrypted);
}

#[test]
fn policy_verdicts() {
    let verdict = |allowed, audited| {
        parser().parse(&tcp_event(EventKind::PolicyVerdict {
            allowed,
            audited,
            direction: PolicyDirection::Ingress,
            match_type: match_type::L3_L4,
            reason: if allowed {
                0
            } else {
                Reason::DropPolicyDenied as u8
            },
        }))
    };
    let f = verdict(true, false);
    assert_eq!(f.verdict, Verdict::Forwarded as i32);
    assert_eq!(f.policy_match_type, 2);
    assert_eq!(f.traffic_direction, TrafficDirection::Ingress as i32);
    assert_eq!(f.is_reply, Some(false));
    assert_eq!(f.event_type.unwrap().r#type, 5);
    let f = verdict(false, false);
    assert_eq!(f.verdict, Verdict::Dropped as i32);
    assert_eq!(f.drop_reason_desc, DropReason::PolicyDenied as i32);
    assert_eq!(verdict(false, true).verdict, Verdict::Audit as i32);
}

#[test]
fn services_by_frontend() {
    let mut ev = tcp_event(EventKind::Trace {
        observation_point: observation_point::FROM_LXC,
        reason: 0,
    });
    ev.dst_ip = SVC;
    let f = parser().parse(&ev);
    assert_eq!(f.destination_service.unwrap().name, "web");
    assert!(f.source_service.is_none());
}

#[test]
fn layer4_variants_and_summaries() {
    let mut ev = tcp_event(EventKind::Drop { reason: 133 });
    ev.protocol = ip_proto::UDP;
    let f = parser().parse(&ev);
    assert!(matches!(
        f.l4.unwrap().protocol,
        Some(layer4::Protocol::Udp(Udp {
            source_port: 40000,
            destination_port: 80
        }))
    ));
    assert_eq!(f.summary, "UDP");

    ev.protocol = ip_proto::ICMP;
    ev.icmp_type = 8;
    let f = parser().parse(&ev);
    assert!(matches!(
        f.l4.unwrap().protocol,
        Some(layer4::Protocol::IcmPv4(IcmPv4 { r#type: 8, code: 0 }))
    ));
    assert_eq!(f.summary, "ICMPv4 EchoRequest");

    ev.protocol = ip_proto::ICMPV6;
    ev.icmp_type = 128;
    ev.src_ip = IpAddr::V6(Ipv6Addr::LOCALHOST);
    ev.dst_ip = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let f = parser().parse(&ev);
    assert_eq!(f.summary, "ICMPv6 EchoRequest");
    assert_eq!(f.ip.unwrap().ip_version, IpVersion::IPv6 as i32);

    ev.protocol = ip_proto::SCTP;
    assert!(matches!(
        parser().parse(&ev).l4.unwrap().protocol,
        Some(layer4::Protocol::Sctp(_))
    ));

    let mut tcp = tcp_event(EventKind::Drop { reason: 133 });
    tcp.tcp_flags = tcp_flag::FIN | tcp_flag::NS;
    let Some(layer4::Protocol::Tcp(t)) = parser().parse(&tcp).l4.unwrap().protocol else {
        panic!("tcp expected");
    };
    let flags = t.flags.unwrap();
    assert!(flags.fin && flags.ns && !flags.syn);
}
