use std::time::Duration;

use super::*;
use crate::proto::flow::{FlowFilter, Verdict};
use crate::testutil::{flow, src_port};

fn ring_with(n: u64, capacity: usize) -> FlowRing {
    let ring = FlowRing::new(capacity);
    for i in 1..=n {
        ring.push(flow(i, i as u16, i % 2 == 0));
    }
    ring
}

fn ports(flows: &[Arc<Flow>]) -> Vec<u32> {
    flows.iter().map(|f| src_port(f)).collect()
}

fn ts(secs: i64) -> Option<(i64, i32)> {
    Some((secs, 0))
}

#[test]
fn evicts_oldest_and_counts() {
    let ring = ring_with(10, 4);
    let s = ring.status();
    assert_eq!((s.num_flows, s.max_flows, s.seen_flows), (4, 4, 10));
    let (all, follower) = ring.query(Query::default());
    assert_eq!(ports(&all), vec![7, 8, 9, 10]);
    assert!(follower.is_none());
    assert_eq!(FlowRing::default().status().max_flows, 4095);
}

#[test]
fn number_last_and_first() {
    let ring = ring_with(10, 100);
    let q = |number, first| Query {
        number,
        first,
        ..Default::default()
    };
    assert_eq!(ports(&ring.query(q(3, false)).0), vec![8, 9, 10]);
    assert_eq!(ports(&ring.query(q(3, true)).0), vec![1, 2, 3]);
    assert_eq!(ring.query(q(50, false)).0.len(), 10);
}

#[test]
fn since_until_window() {
    let ring = ring_with(10, 100);
    let q = Query {
        since: ts(3),
        until: ts(6),
        ..Default::default()
    };
    assert_eq!(ports(&ring.query(q).0), vec![3, 4, 5, 6]);
    let q = Query {
        since: ts(8),
        number: 1,
        first: true,
        ..Default::default()
    };
    assert_eq!(ports(&ring.query(q).0), vec![8]);
}

#[test]
fn filters_apply_before_number() {
    let ring = ring_with(10, 100);
    let dropped = FlowFilter {
        verdict: vec![Verdict::Dropped as i32],
        ..Default::default()
    };
    let q = Query {
        number: 2,
        filters: FlowFilters::new(&[dropped], &[]).unwrap(),
        ..Default::default()
    };
    assert_eq!(ports(&ring.query(q).0), vec![8, 10]);
}

#[tokio::test]
async fn follow_without_number_sees_only_new_flows() {
    let ring = ring_with(3, 100);
    let (history, follower) = ring.query(Query {
        follow: true,
        ..Default::default()
    });
    assert!(history.is_empty());
    let mut follower = follower.unwrap();
    ring.push(flow(20, 20, false));
    match follower.next().await {
        Followed::Flow(f) => assert_eq!(src_port(&f), 20),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn follow_applies_filters_and_stops_after_until() {
    let ring = ring_with(2, 100);
    let dropped = FlowFilter {
        verdict: vec![Verdict::Dropped as i32],
        ..Default::default()
    };
    let (history, follower) = ring.query(Query {
        number: 5,
        follow: true,
        until: ts(30),
        filters: FlowFilters::new(&[dropped], &[]).unwrap(),
        ..Default::default()
    });
    assert_eq!(ports(&history), vec![2]);
    let mut follower = follower.unwrap();
    ring.push(flow(21, 21, false)); // filtered out
    ring.push(flow(22, 22, true));
    ring.push(flow(31, 31, true)); // past until
    assert!(matches!(follower.next().await, Followed::Flow(f) if src_port(&f) == 22));
    assert_eq!(follower.next().await, Followed::Done);
}

#[tokio::test]
async fn slow_follower_is_told_what_it_lost() {
    let ring = FlowRing::new(1);
    let (_, follower) = ring.query(Query {
        follow: true,
        ..Default::default()
    });
    let mut follower = follower.unwrap();
    for i in 0..100 {
        ring.push(flow(i, i as u16, false));
    }
    let next = tokio::time::timeout(Duration::from_secs(5), follower.next())
        .await
        .unwrap();
    assert_eq!(next, Followed::Lost(36));
}

#[test]
fn namespaces_of_the_last_hour_and_the_flow_rate() {
    use crate::proto::flow::Endpoint;
    let now = std::time::UNIX_EPOCH + Duration::from_secs(10_000);
    let ring = FlowRing::new(10);
    let with = |secs: u64, source: &str, destination: &str| {
        let mut f = flow(secs, 1, false);
        let endpoint = |namespace: &str| {
            Some(Endpoint {
                namespace: namespace.into(),
                ..Default::default()
            })
        };
        f.source = endpoint(source);
        f.destination = endpoint(destination);
        f
    };
    ring.push(with(1_000, "old", "old"));
    ring.push(with(9_000, "shop", ""));
    ring.push(with(9_500, "billing", "shop"));
    assert_eq!(
        ring.namespaces(now),
        [
            (String::new(), "billing".to_string()),
            (String::new(), "shop".to_string())
        ]
    );
    // Three flows within the first second: at most 3 per second.
    let rate = ring.status().flows_rate;
    assert!(rate > 0.0 && rate <= 3.0, "{rate}");
}
