//! Connections as recorded flows show them: each connection once, by the
//! flow of its first packet (its policy verdict, its new-connection trace,
//! or its drop by policy), grouped by source, destination, protocol and
//! destination port.
//!
//! A connection between pods on two nodes is recorded by both (the
//! source's egress, the destination's ingress); the 5-tuple makes it one,
//! so flows merged from many nodes (a relay's) count each connection once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::event::message_type;
use crate::proto::flow::{layer4, DropReason, Endpoint, Flow, TraceReason};

/// One side of a recorded connection.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    Pod {
        namespace: String,
        name: String,
    },
    /// Not a pod: its address and the identity it was recorded with.
    Address {
        ip: IpAddr,
        identity: u32,
    },
}

/// The transports a connection is judged on (policy names no others).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    Tcp,
    Udp,
    Sctp,
}

/// What a group of recorded connections shares.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Group {
    pub source: Peer,
    pub destination: Peer,
    pub transport: Transport,
    pub port: u16,
}

type FiveTuple = (IpAddr, u16, IpAddr, u16, Transport);

/// The recorded connections of `flows` by group, with how many
/// connections (distinct 5-tuples) each has.
pub fn groups<'a>(flows: impl IntoIterator<Item = &'a Flow>) -> BTreeMap<Group, u64> {
    let mut seen: BTreeSet<FiveTuple> = BTreeSet::new();
    let mut groups = BTreeMap::new();
    for flow in flows {
        if !opens_a_connection(flow) {
            continue;
        }
        let Some((group, tuple)) = connection_of(flow) else {
            continue;
        };
        if seen.insert(tuple) {
            *groups.entry(group).or_insert(0) += 1;
        }
    }
    groups
}

/// A flow that stands for a connection's first packet.
fn opens_a_connection(flow: &Flow) -> bool {
    if flow.is_reply == Some(true) {
        return false;
    }
    match flow.event_type.as_ref().map(|t| t.r#type) {
        Some(message_type::POLICY_VERDICT) => true,
        Some(message_type::TRACE) => flow.trace_reason == TraceReason::New as i32,
        Some(message_type::DROP) => [DropReason::PolicyDenied, DropReason::PolicyDeny]
            .iter()
            .any(|r| flow.drop_reason_desc == *r as i32),
        _ => false,
    }
}

fn connection_of(flow: &Flow) -> Option<(Group, FiveTuple)> {
    let ip = flow.ip.as_ref()?;
    let (src_ip, dst_ip): (IpAddr, IpAddr) =
        (ip.source.parse().ok()?, ip.destination.parse().ok()?);
    let (transport, sport, dport) = match flow.l4.as_ref()?.protocol.as_ref()? {
        layer4::Protocol::Tcp(t) => (Transport::Tcp, t.source_port, t.destination_port),
        layer4::Protocol::Udp(u) => (Transport::Udp, u.source_port, u.destination_port),
        layer4::Protocol::Sctp(s) => (Transport::Sctp, s.source_port, s.destination_port),
        _ => return None,
    };
    let (sport, dport) = (u16::try_from(sport).ok()?, u16::try_from(dport).ok()?);
    let peer = |endpoint: Option<&Endpoint>, ip: IpAddr| match endpoint {
        Some(e) if !e.pod_name.is_empty() => Peer::Pod {
            namespace: e.namespace.clone(),
            name: e.pod_name.clone(),
        },
        e => Peer::Address {
            ip,
            identity: e.map_or(0, |e| e.identity),
        },
    };
    let group = Group {
        source: peer(flow.source.as_ref(), src_ip),
        destination: peer(flow.destination.as_ref(), dst_ip),
        transport,
        port: dport,
    };
    Some((group, (src_ip, sport, dst_ip, dport, transport)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::flow::{CiliumEventType, Ip, Layer4, Tcp, Udp};

    fn pod(ns: &str, name: &str) -> Option<Endpoint> {
        Some(Endpoint {
            namespace: ns.into(),
            pod_name: name.into(),
            ..Default::default()
        })
    }

    fn flow(kind: i32, (src, sport): (&str, u32), (dst, dport): (&str, u32), node: &str) -> Flow {
        Flow {
            node_name: node.into(),
            event_type: Some(CiliumEventType {
                r#type: kind,
                sub_type: 0,
            }),
            trace_reason: TraceReason::New as i32,
            is_reply: Some(false),
            ip: Some(Ip {
                source: src.into(),
                destination: dst.into(),
                ..Default::default()
            }),
            l4: Some(Layer4 {
                protocol: Some(layer4::Protocol::Tcp(Tcp {
                    source_port: sport,
                    destination_port: dport,
                    flags: None,
                })),
            }),
            source: pod("y", "a"),
            destination: pod("x", "a"),
            ..Default::default()
        }
    }

    fn y_a_to_x_a(port: u16) -> Group {
        Group {
            source: Peer::Pod {
                namespace: "y".into(),
                name: "a".into(),
            },
            destination: Peer::Pod {
                namespace: "x".into(),
                name: "a".into(),
            },
            transport: Transport::Tcp,
            port,
        }
    }

    #[test]
    fn a_connection_both_nodes_recorded_counts_once() {
        let (a, b) = ("10.244.2.10", "10.244.1.10");
        let flows = [
            // The source's node (egress) and the destination's (ingress).
            flow(message_type::TRACE, (a, 40_000), (b, 80), "n2"),
            flow(message_type::POLICY_VERDICT, (a, 40_000), (b, 80), "n1"),
            flow(message_type::TRACE, (a, 40_001), (b, 80), "n1"),
            // A reply, an established packet, a drop that is no policy's.
            Flow {
                is_reply: Some(true),
                ..flow(message_type::TRACE, (a, 40_002), (b, 80), "n1")
            },
            Flow {
                trace_reason: TraceReason::Established as i32,
                ..flow(message_type::TRACE, (a, 40_003), (b, 80), "n1")
            },
            Flow {
                drop_reason_desc: DropReason::CtMapInsertionFailed as i32,
                ..flow(message_type::DROP, (a, 40_004), (b, 80), "n1")
            },
            Flow {
                drop_reason_desc: DropReason::PolicyDenied as i32,
                ..flow(message_type::DROP, (a, 40_005), (b, 81), "n1")
            },
        ];
        assert_eq!(
            groups(&flows),
            BTreeMap::from([(y_a_to_x_a(80), 2), (y_a_to_x_a(81), 1)])
        );
    }

    #[test]
    fn a_peer_that_is_no_pod_is_its_address_and_recorded_identity() {
        let flow = Flow {
            source: Some(Endpoint {
                identity: 2,
                ..Default::default()
            }),
            destination: None,
            l4: Some(Layer4 {
                protocol: Some(layer4::Protocol::Udp(Udp {
                    source_port: 5000,
                    destination_port: 53,
                })),
            }),
            ..flow(
                message_type::TRACE,
                ("203.0.113.9", 0),
                ("10.244.1.10", 0),
                "n1",
            )
        };
        let group = groups([&flow]).into_keys().next().unwrap();
        assert_eq!(
            group,
            Group {
                source: Peer::Address {
                    ip: "203.0.113.9".parse().unwrap(),
                    identity: 2
                },
                destination: Peer::Address {
                    ip: "10.244.1.10".parse().unwrap(),
                    identity: 0
                },
                transport: Transport::Udp,
                port: 53,
            }
        );
    }
}
