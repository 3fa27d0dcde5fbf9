//! `weir policy diff --server`: the connections recorded by the nodes an
//! Observer API serves (a relay's: every node's), read as flows and
//! grouped here (each connection once, however many nodes recorded it),
//! for this node's agent to judge.

use std::collections::BTreeSet;
use std::time::SystemTime;

use anyhow::Result;
use weir_agent_api::v1;
use weir_observer::connections::{self, Group, Peer, Transport};
use weir_observer::proto::flow::Flow;
use weir_observer::proto::observer::{get_flows_response, GetFlowsRequest};

use crate::args::TlsArgs;
use crate::observe;

/// What was read: the groups to judge, and whose flows they came from.
pub struct Recorded {
    pub connections: v1::RecordedConnections,
    /// The nodes whose flows were read.
    pub nodes: BTreeSet<String>,
    /// Nodes the server could not read (relay node status events).
    pub unavailable: Vec<String>,
}

/// Every flow `server` holds from the last `since_seconds` (all when
/// none), grouped into connections.
pub async fn read(server: &str, tls: &TlsArgs, since_seconds: Option<u64>) -> Result<Recorded> {
    let now = SystemTime::now();
    let since = since_seconds.map(observe::seconds_ago);
    let mut client = observe::connect_to(server, tls).await?;
    let mut stream = client
        .get_flows(GetFlowsRequest {
            // Every flow the rings hold (from `since`), then the end.
            number: 0,
            follow: false,
            since,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut flows: Vec<Flow> = Vec::new();
    let mut unavailable = Vec::new();
    while let Some(response) = stream.message().await? {
        match response.response_types {
            Some(get_flows_response::ResponseTypes::Flow(flow)) => flows.push(flow),
            Some(get_flows_response::ResponseTypes::NodeStatus(event)) => {
                if let Some(text) = observe::node_status(&event) {
                    unavailable.push(text);
                }
            }
            Some(get_flows_response::ResponseTypes::LostEvents(_)) | None => {}
        }
    }
    let now_seconds = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let oldest_flow_seconds = flows
        .iter()
        .filter_map(|f| f.time.map(|t| t.seconds))
        .min()
        .map_or(0, |t| (now_seconds - t).max(0) as u64);
    let nodes = flows.iter().map(|f| f.node_name.clone()).collect();
    let groups = connections::groups(&flows)
        .into_iter()
        .map(|(group, count)| to_proto(group, count))
        .collect();
    Ok(Recorded {
        connections: v1::RecordedConnections {
            groups,
            flows: flows.len() as u64,
            oldest_flow_seconds,
        },
        nodes,
        unavailable,
    })
}

fn to_proto(group: Group, count: u64) -> v1::ConnectionGroup {
    v1::ConnectionGroup {
        source: Some(peer(group.source)),
        destination: Some(peer(group.destination)),
        protocol: match group.transport {
            Transport::Tcp => v1::L4Protocol::Tcp,
            Transport::Udp => v1::L4Protocol::Udp,
            Transport::Sctp => v1::L4Protocol::Sctp,
        } as i32,
        port: u32::from(group.port),
        count,
    }
}

fn peer(peer: Peer) -> v1::DiffPeer {
    let peer = match peer {
        Peer::Pod { namespace, name } => {
            v1::diff_peer::Peer::Pod(v1::PolicyPodRef { namespace, name })
        }
        Peer::Address { ip, identity } => v1::diff_peer::Peer::Address(v1::DiffAddress {
            ip: ip.to_string(),
            identity,
        }),
    };
    v1::DiffPeer { peer: Some(peer) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_go_to_the_agent_as_pods_and_addresses() {
        let group = Group {
            source: Peer::Address {
                ip: "203.0.113.9".parse().unwrap(),
                identity: 2,
            },
            destination: Peer::Pod {
                namespace: "x".into(),
                name: "a".into(),
            },
            transport: Transport::Sctp,
            port: 9000,
        };
        let wire = to_proto(group, 3);
        assert_eq!(wire.protocol, v1::L4Protocol::Sctp as i32);
        assert_eq!((wire.port, wire.count), (9000, 3));
        assert_eq!(
            wire.source.unwrap().peer,
            Some(v1::diff_peer::Peer::Address(v1::DiffAddress {
                ip: "203.0.113.9".into(),
                identity: 2
            }))
        );
        assert_eq!(
            wire.destination.unwrap().peer,
            Some(v1::diff_peer::Peer::Pod(v1::PolicyPodRef {
                namespace: "x".into(),
                name: "a".into()
            }))
        );
    }
}
