//! The monitor stream over a real unix socket.

use std::time::Duration;

use weir_observer::testutil::event;

use super::*;
use crate::api::test_socket::Running;

fn server(feed: MonitorFeed) -> Running {
    let service = MonitorService::new(feed, WallClock::from_offset_ns(0), "n1".into());
    Running::start(
        "monitor",
        tonic::transport::Server::builder()
            .add_service(v1::monitor_server::MonitorServer::new(service)),
    )
}

async fn next(
    stream: &mut tonic::Streaming<v1::MonitorResponse>,
) -> v1::monitor_response::Response {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an event within 10s")
        .unwrap()
        .expect("the stream goes on")
        .response
        .unwrap()
}

#[test]
fn drop_events_carry_raw_fields_and_names() {
    let e = to_proto(&event(3, 4242, true), &WallClock::from_offset_ns(0), "n1");
    assert_eq!((e.kind.as_str(), e.kind_code), ("drop", 1));
    assert_eq!((e.reason, e.reason_name.as_str()), (133, "Policy denied"));
    assert_eq!((e.src_identity, e.dst_identity), (100, 200));
    assert_eq!(
        (e.src_ip.as_str(), e.src_port, e.dst_ip.as_str(), e.dst_port),
        ("10.0.0.1", 4242, "10.0.0.2", 80)
    );
    assert_eq!(
        (e.protocol_name.as_str(), e.tcp_flags.as_str()),
        ("TCP", "SYN")
    );
    assert_eq!((e.ifindex, e.endpoint_id, e.packet_len), (2, 1, 60));
    assert_eq!(e.time.unwrap().seconds, 3);
    assert_eq!(e.node_name, "n1");
}

#[test]
fn traces_and_verdicts_name_their_point_and_match() {
    let clock = WallClock::from_offset_ns(0);
    let t = to_proto(&event(1, 1, false), &clock, "n1");
    assert_eq!((t.kind.as_str(), t.kind_code), ("trace", 4));
    assert_eq!(
        (t.observation_point, t.observation_point_name.as_str()),
        (0, "to-endpoint")
    );
    assert_eq!(t.reason_name, "new");
    let mut verdict = event(1, 1, false);
    verdict.kind = EventKind::PolicyVerdict {
        allowed: false,
        audited: false,
        direction: PolicyDirection::Ingress,
        match_type: weir_abi::events::MATCH_L3_L4,
        reason: 181,
    };
    let v = to_proto(&verdict, &clock, "n1");
    assert_eq!((v.kind.as_str(), v.kind_code), ("policy-verdict", 5));
    assert_eq!(
        (v.direction(), v.verdict(), v.match_type.as_str()),
        (
            v1::TrafficDirection::Ingress,
            v1::PolicyVerdict::Deny,
            "l3-l4"
        )
    );
    assert_eq!(
        (v.reason, v.reason_name.as_str()),
        (181, "Policy denied by denylist")
    );
}

#[tokio::test]
async fn streams_published_events_of_the_requested_kinds() {
    let feed = MonitorFeed::default();
    let server = server(feed.clone());
    let mut client = weir_agent_api::connect_monitor(&server.socket.0)
        .await
        .unwrap();
    let mut stream = client
        .events(v1::MonitorRequest {
            types: vec!["drop".into()],
        })
        .await
        .unwrap()
        .into_inner();
    // Subscribed once the call has returned.
    feed.publish(&event(1, 1001, false));
    feed.publish(&event(2, 1002, true));
    match next(&mut stream).await {
        v1::monitor_response::Response::Event(e) => {
            assert_eq!((e.kind.as_str(), e.src_port), ("drop", 1002));
        }
        other => panic!("unexpected {other:?}"),
    }
    let bad = client
        .events(v1::MonitorRequest {
            types: vec!["capture".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    drop(stream);
    server.stop().await;
}

#[tokio::test]
async fn a_listener_that_falls_behind_is_told_how_many_it_lost() {
    let feed = MonitorFeed::new(2);
    let server = server(feed.clone());
    let mut client = weir_agent_api::connect_monitor(&server.socket.0)
        .await
        .unwrap();
    let mut stream = client
        .events(v1::MonitorRequest::default())
        .await
        .unwrap()
        .into_inner();
    // No await between the publishes: on this single-threaded runtime the
    // stream's task cannot read any of them before the last.
    for port in 1..=5 {
        feed.publish(&event(1, port, false));
    }
    assert_eq!(
        next(&mut stream).await,
        v1::monitor_response::Response::Lost(3)
    );
    for port in [4u16, 5] {
        match next(&mut stream).await {
            v1::monitor_response::Response::Event(e) => assert_eq!(e.src_port, u32::from(port)),
            other => panic!("unexpected {other:?}"),
        }
    }
    drop(stream);
    server.stop().await;
}
