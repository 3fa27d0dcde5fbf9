//! `Diff` (`weir policy diff`): the connections to replay come from this
//! agent's flow ring, or from the request (every node's, which the CLI
//! read through a relay); either way they are judged here, with this
//! agent's view of the whole cluster.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use tonic::{Response, Status};
use weir_agent_api::v1;
use weir_observer::ring::Query;
use weir_observer::FlowRing;
use weir_types::NamespacedName;

use super::wire;
use crate::policy_preview::{self, Candidate, ConnectionKey, Peer};
use crate::reconcile::snapshot::PolicySnapshot;

/// The most groups a request may carry: a relay's rings hold a few
/// thousand flows per node, far fewer groups; the bound keeps one request
/// from making the agent compile and trace without end.
pub const MAX_RECORDED_GROUPS: usize = 100_000;

/// Connections to replay, and where they were read.
struct Replay {
    groups: BTreeMap<ConnectionKey, u64>,
    flows: u64,
    oldest_flow_seconds: u64,
}

pub async fn answer(
    request: v1::DiffRequest,
    ring: Option<&FlowRing>,
    snapshot: PolicySnapshot,
) -> Result<Response<v1::DiffResponse>, Status> {
    let candidate = Candidate::parse(&request.candidate_yaml, &request.delete)
        .map_err(Status::invalid_argument)?;
    let replay = match request.recorded {
        Some(recorded) => from_request(recorded)?,
        None => from_ring(
            ring.ok_or_else(|| Status::unavailable("this agent records no flows"))?,
            request.since_seconds,
        ),
    };
    let groups = replay.groups;
    // Compiling twice is CPU work: off the async workers.
    let preview = tokio::task::spawn_blocking(move || {
        policy_preview::preview(&snapshot, &candidate, &groups)
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))?
    .map_err(Status::invalid_argument)?;
    let connection = |c: &ConnectionKey| {
        format!(
            "{} -> {} {}/{}",
            c.source,
            c.destination,
            c.protocol.name(),
            c.port
        )
    };
    Ok(Response::new(v1::DiffResponse {
        changes: preview
            .changes
            .iter()
            .map(|c| v1::DiffChange {
                source: c.connection.source.to_string(),
                destination: c.connection.destination.to_string(),
                protocol: wire::l4_protocol(Some(c.connection.protocol)),
                port: u32::from(c.connection.port),
                count: c.count,
                before: wire::verdict(c.before).into(),
                after: wire::verdict(c.after).into(),
                decided_by: c.decided_by.clone(),
            })
            .collect(),
        groups: preview.groups as u64,
        flows: replay.flows,
        oldest_flow_seconds: replay.oldest_flow_seconds,
        unknown: preview.unknown.iter().map(connection).collect(),
    }))
}

/// The connections this agent's observer recorded in the last
/// `since_seconds` (0: all it holds).
fn from_ring(ring: &FlowRing, since_seconds: u64) -> Replay {
    let now = SystemTime::now();
    let since = (since_seconds > 0)
        .then(|| now.checked_sub(Duration::from_secs(since_seconds)))
        .flatten()
        .map(|t| {
            let t = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
            (t.as_secs() as i64, t.subsec_nanos() as i32)
        });
    let (flows, _) = ring.query(Query {
        since,
        ..Query::default()
    });
    let oldest_flow_seconds = flows
        .first()
        .and_then(|f| f.time)
        .map_or(0, |t| (now_seconds(now) - t.seconds).max(0) as u64);
    Replay {
        groups: policy_preview::connections(flows.iter().map(|f| f.as_ref())),
        flows: flows.len() as u64,
        oldest_flow_seconds,
    }
}

/// The connections the request carries, each checked: a group that names
/// no peer, a protocol policy does not know, port 0 or no connection is
/// refused with its index, and nothing is judged.
fn from_request(recorded: v1::RecordedConnections) -> Result<Replay, Status> {
    if recorded.groups.len() > MAX_RECORDED_GROUPS {
        return Err(Status::invalid_argument(format!(
            "{} groups of recorded connections; at most {MAX_RECORDED_GROUPS} are judged at once (narrow the window)",
            recorded.groups.len()
        )));
    }
    let mut groups = BTreeMap::new();
    for (index, group) in recorded.groups.into_iter().enumerate() {
        let (key, count) = group_key(group)
            .map_err(|why| Status::invalid_argument(format!("recorded group {index}: {why}")))?;
        *groups.entry(key).or_insert(0) += count;
    }
    Ok(Replay {
        groups,
        flows: recorded.flows,
        oldest_flow_seconds: recorded.oldest_flow_seconds,
    })
}

fn group_key(group: v1::ConnectionGroup) -> Result<(ConnectionKey, u64), String> {
    let protocol = wire::trace_protocol(group.protocol)
        .ok_or_else(|| format!("protocol {} is not TCP, UDP or SCTP", group.protocol))?;
    let port = u16::try_from(group.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("port {} is not 1-65535", group.port))?;
    if group.count == 0 {
        return Err("no connection counted".into());
    }
    let key = ConnectionKey {
        source: peer(group.source).map_err(|why| format!("source: {why}"))?,
        destination: peer(group.destination).map_err(|why| format!("destination: {why}"))?,
        protocol,
        port,
    };
    Ok((key, group.count))
}

fn peer(peer: Option<v1::DiffPeer>) -> Result<Peer, String> {
    match peer.and_then(|p| p.peer) {
        Some(v1::diff_peer::Peer::Pod(pod)) => {
            if pod.namespace.is_empty() || pod.name.is_empty() {
                return Err("a pod needs its namespace and name".into());
            }
            Ok(Peer::Pod(NamespacedName::new(pod.namespace, pod.name)))
        }
        Some(v1::diff_peer::Peer::Address(address)) => {
            let ip: IpAddr = address
                .ip
                .parse()
                .map_err(|_| format!("{:?} is not an IP address", address.ip))?;
            Ok(Peer::Address {
                ip,
                identity: address.identity,
            })
        }
        None => Err("missing".into()),
    }
}

fn now_seconds(now: SystemTime) -> i64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str) -> Option<v1::DiffPeer> {
        Some(v1::DiffPeer {
            peer: Some(v1::diff_peer::Peer::Pod(v1::PolicyPodRef {
                namespace: ns.into(),
                name: name.into(),
            })),
        })
    }

    fn group(port: u32, count: u64) -> v1::ConnectionGroup {
        v1::ConnectionGroup {
            source: pod("y", "a"),
            destination: pod("x", "a"),
            protocol: v1::L4Protocol::Tcp as i32,
            port,
            count,
        }
    }

    fn recorded(groups: Vec<v1::ConnectionGroup>) -> v1::RecordedConnections {
        v1::RecordedConnections {
            groups,
            flows: 7,
            oldest_flow_seconds: 3,
        }
    }

    #[test]
    fn recorded_groups_become_the_connections_replayed() {
        let address = v1::ConnectionGroup {
            source: Some(v1::DiffPeer {
                peer: Some(v1::diff_peer::Peer::Address(v1::DiffAddress {
                    ip: "203.0.113.9".into(),
                    identity: 2,
                })),
            }),
            ..group(80, 1)
        };
        let replay = from_request(recorded(vec![group(80, 2), group(81, 1), address])).unwrap();
        let x_a = || Peer::Pod(NamespacedName::new("x", "a"));
        let key = |source: Peer, port: u16| ConnectionKey {
            source,
            destination: x_a(),
            protocol: weir_policy::Protocol::Tcp,
            port,
        };
        let y_a = || Peer::Pod(NamespacedName::new("y", "a"));
        let world = Peer::Address {
            ip: "203.0.113.9".parse().unwrap(),
            identity: 2,
        };
        assert_eq!(
            replay.groups,
            BTreeMap::from([
                (key(y_a(), 80), 2),
                (key(y_a(), 81), 1),
                (key(world, 80), 1)
            ])
        );
        assert_eq!((replay.flows, replay.oldest_flow_seconds), (7, 3));
    }

    #[test]
    fn a_malformed_group_is_refused_with_its_index_and_why() {
        let cases = [
            (
                v1::ConnectionGroup {
                    protocol: v1::L4Protocol::Any as i32,
                    ..group(80, 1)
                },
                "protocol 0 is not TCP, UDP or SCTP",
            ),
            (group(0, 1), "port 0 is not 1-65535"),
            (group(70_000, 1), "port 70000 is not 1-65535"),
            (group(80, 0), "no connection counted"),
            (
                v1::ConnectionGroup {
                    source: None,
                    ..group(80, 1)
                },
                "source: missing",
            ),
            (
                v1::ConnectionGroup {
                    destination: pod("x", ""),
                    ..group(80, 1)
                },
                "destination: a pod needs its namespace and name",
            ),
            (
                v1::ConnectionGroup {
                    source: Some(v1::DiffPeer {
                        peer: Some(v1::diff_peer::Peer::Address(v1::DiffAddress {
                            ip: "pod-a".into(),
                            identity: 2,
                        })),
                    }),
                    ..group(80, 1)
                },
                "source: \"pod-a\" is not an IP address",
            ),
        ];
        for (bad, why) in cases {
            let error = from_request(recorded(vec![group(80, 1), bad]))
                .err()
                .unwrap();
            assert_eq!(error.code(), tonic::Code::InvalidArgument);
            assert_eq!(error.message(), format!("recorded group 1: {why}"));
        }
    }

    #[test]
    fn too_many_groups_are_refused_before_any_is_read() {
        let many = vec![group(80, 1); MAX_RECORDED_GROUPS + 1];
        let error = from_request(recorded(many)).err().unwrap();
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
        assert!(error.message().contains("at most 100000"), "{error}");
    }
}
