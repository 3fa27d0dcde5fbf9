use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::build;
use super::*;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// A ring holding endpoint-created events with ids 1..=n at seconds 1..=n.
fn ring_with(capacity: usize, n: u64) -> AgentEventRing {
    let ring = AgentEventRing::new(capacity, "n1");
    for i in 1..=n {
        ring.publish_at(build::endpoint(false, i, vec![], "x", "a"), at(i));
    }
    ring
}

fn ids(events: &[Arc<GetAgentEventsResponse>]) -> Vec<u64> {
    events
        .iter()
        .map(|e| match &e.agent_event.as_ref().unwrap().notification {
            Some(agent_event::Notification::EndpointUpdate(u)) => u.id,
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

#[test]
fn bounded_oldest_evicted_first() {
    let ring = ring_with(3, 5);
    assert_eq!(ring.len(), 3);
    let (all, follower) = ring.query(AgentEventQuery::default());
    assert!(follower.is_none());
    assert_eq!(ids(&all), [3, 4, 5]);
    assert_eq!(all[0].node_name, "n1");
    assert_eq!(all[0].time.unwrap().seconds, 3);
}

#[test]
fn number_first_since_until() {
    let ring = ring_with(100, 10);
    let q = |number, first, since: Option<i64>, until: Option<i64>| AgentEventQuery {
        number,
        first,
        follow: false,
        since: since.map(|s| (s, 0)),
        until: until.map(|u| (u, 0)),
    };
    assert_eq!(ids(&ring.query(q(3, false, None, None)).0), [8, 9, 10]);
    assert_eq!(ids(&ring.query(q(3, true, None, None)).0), [1, 2, 3]);
    assert_eq!(ids(&ring.query(q(0, false, Some(4), Some(6))).0), [4, 5, 6]);
    assert_eq!(ids(&ring.query(q(2, true, Some(4), None)).0), [4, 5]);
}

#[tokio::test]
async fn follow_sees_only_new_events_then_until_ends() {
    let ring = ring_with(100, 3);
    // follow without number or since: only new events.
    let (history, follower) = ring.query(AgentEventQuery {
        follow: true,
        until: Some((5, 0)),
        ..Default::default()
    });
    assert!(history.is_empty());
    let mut follower = follower.unwrap();
    ring.publish_at(build::endpoint(false, 4, vec![], "x", "a"), at(4));
    ring.publish_at(build::endpoint(false, 6, vec![], "x", "a"), at(6));
    match follower.next().await {
        FollowedAgentEvent::Event(e) => assert_eq!(ids(&[e]), [4]),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(follower.next().await, FollowedAgentEvent::Done);
}

#[tokio::test]
async fn a_slow_follower_is_told_what_it_lost_and_never_blocks_publishing() {
    let ring = AgentEventRing::new(10, "n1");
    let (_, follower) = ring.query(AgentEventQuery {
        follow: true,
        ..Default::default()
    });
    let mut follower = follower.unwrap();
    // The feed holds 64: publishing 100 does not wait for the follower.
    for i in 0..100 {
        ring.publish_at(build::endpoint(false, i, vec![], "x", "a"), at(i));
    }
    assert_eq!(follower.next().await, FollowedAgentEvent::Lost(36));
    match follower.next().await {
        FollowedAgentEvent::Event(e) => assert_eq!(ids(&[e]), [36]),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(ring.len(), 10);
}

#[test]
fn builders_use_hubble_types() {
    let e = build::policy(true, vec!["k8s:a=b".into()], 7, 2);
    assert_eq!(e.r#type, AgentEventType::PolicyDeleted as i32);
    let e = build::endpoint_regenerated(3, vec![], Some("map full".into()));
    assert_eq!(e.r#type, AgentEventType::EndpointRegenerateFailure as i32);
    let e = build::ipcache(
        false,
        build::IpcacheChange {
            cidr: "10.0.0.1/32".into(),
            identity: 300,
            ..Default::default()
        },
    );
    assert_eq!(e.r#type, AgentEventType::IpcacheUpserted as i32);
    assert_eq!(
        build::service_deleted(4).r#type,
        AgentEventType::ServiceDeleted as i32
    );
    assert_eq!(
        build::agent_started(at(1)).r#type,
        AgentEventType::AgentStarted as i32
    );
}
