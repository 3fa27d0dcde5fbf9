//! GetAgentEvents and GetDebugEvents over a real socket, through the
//! generated Hubble client.

use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

use tokio::sync::oneshot;

use super::*;
use crate::agent_events::build;
use crate::proto::flow::AgentEventType;
use crate::proto::observer::observer_client::ObserverClient;

fn at(secs: u64) -> std::time::SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// Serves a flow ring and `events` (if any) on a TCP port with at most
/// `max` followers; returns the client and the stop handle.
async fn start(
    events: Option<Arc<AgentEventRing>>,
    max: usize,
) -> (
    ObserverClient<tonic::transport::Channel>,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), ServeError>>,
) {
    start_with(events, None, max).await
}

/// As [`start`], with the debug events of `debug` (if any) too.
async fn start_with(
    events: Option<Arc<AgentEventRing>>,
    debug: Option<Arc<DebugEventRing>>,
    max: usize,
) -> (
    ObserverClient<tonic::transport::Channel>,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), ServeError>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let mut service = ObserverService::new(
        Arc::new(FlowRing::new(10)),
        NodeInfo {
            name: "n1".into(),
            ..Default::default()
        },
    )
    .with_max_followers(max);
    if let Some(events) = events {
        service = service.with_agent_events(events);
    }
    if let Some(debug) = debug {
        service = service.with_debug_events(debug);
    }
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        service,
        Listener::Tcp(listener),
        Readiness::new(true),
        async {
            let _ = stopped.await;
        },
    ));
    let client = ObserverClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    (client, stop, task)
}

fn kinds(responses: &[GetAgentEventsResponse]) -> Vec<AgentEventType> {
    responses
        .iter()
        .map(|r| {
            AgentEventType::try_from(r.agent_event.as_ref().unwrap().r#type)
                .unwrap_or(AgentEventType::AgentEventUnknown)
        })
        .collect()
}

async fn collect(
    client: &mut ObserverClient<tonic::transport::Channel>,
    request: GetAgentEventsRequest,
) -> Vec<GetAgentEventsResponse> {
    let mut stream = client.get_agent_events(request).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        out.push(message);
    }
    out
}

fn ts(secs: i64) -> Option<crate::proto::Timestamp> {
    Some(crate::proto::Timestamp {
        seconds: secs,
        nanos: 0,
    })
}

#[tokio::test]
async fn get_agent_events_number_first_since_until_follow() {
    let ring = Arc::new(AgentEventRing::new(100, "n1"));
    ring.publish_at(build::agent_started(at(1)), at(1));
    ring.publish_at(
        build::policy(false, vec!["k8s:io.cilium.k8s.policy.name=p".into()], 1, 1),
        at(2),
    );
    ring.publish_at(build::endpoint(false, 3, vec![], "x", "a"), at(3));
    ring.publish_at(build::service_deleted(4), at(4));
    let (mut client, stop, task) = start(Some(ring.clone()), 8).await;

    let all = collect(&mut client, GetAgentEventsRequest::default()).await;
    assert_eq!(
        kinds(&all),
        [
            AgentEventType::AgentStarted,
            AgentEventType::PolicyUpdated,
            AgentEventType::EndpointCreated,
            AgentEventType::ServiceDeleted
        ]
    );
    assert_eq!(all[0].node_name, "n1");
    assert_eq!(all[1].time, ts(2));
    let last = collect(
        &mut client,
        GetAgentEventsRequest {
            number: 1,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(kinds(&last), [AgentEventType::ServiceDeleted]);
    let first = collect(
        &mut client,
        GetAgentEventsRequest {
            number: 1,
            first: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(kinds(&first), [AgentEventType::AgentStarted]);
    let window = collect(
        &mut client,
        GetAgentEventsRequest {
            since: ts(2),
            until: ts(3),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        kinds(&window),
        [
            AgentEventType::PolicyUpdated,
            AgentEventType::EndpointCreated
        ]
    );

    // follow: the last one, then what is published after.
    let mut stream = client
        .get_agent_events(GetAgentEventsRequest {
            number: 1,
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(kinds(&[first]), [AgentEventType::ServiceDeleted]);
    ring.publish(build::policy(true, vec![], 2, 0));
    let next = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a followed event")
        .unwrap()
        .unwrap();
    assert_eq!(kinds(&[next]), [AgentEventType::PolicyDeleted]);
    drop(stream);
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn agent_event_followers_share_the_follow_bound() {
    let ring = Arc::new(AgentEventRing::new(100, "n1"));
    let (client, stop, task) = start(Some(ring.clone()), 2).await;
    let follow = || GetAgentEventsRequest {
        follow: true,
        ..Default::default()
    };
    let a = client.clone().get_agent_events(follow()).await.unwrap();
    let b = client
        .clone()
        .get_flows(GetFlowsRequest {
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let refused = client.clone().get_agent_events(follow()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
    drop((a, b));
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn without_a_ring_get_agent_events_is_unimplemented() {
    let (client, stop, task) = start(None, 2).await;
    let status = client
        .clone()
        .get_agent_events(GetAgentEventsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

/// GetDebugEvents: the last N, the endpoint each is about, then following.
#[tokio::test]
async fn get_debug_events_last_n_then_follow() {
    use crate::debug_events::generic;
    let ring = Arc::new(DebugEventRing::new(100, "n1"));
    for i in 1..=3 {
        let text = format!("ep 7 egress: ct new {i}");
        ring.publish_at(generic(7, Some(300), text), at(i));
    }
    ring.publish_at(generic(0, None, "node".into()), at(4));
    let (mut client, stop, task) = start_with(None, Some(ring.clone()), 4).await;
    let request = GetDebugEventsRequest {
        number: 2,
        ..Default::default()
    };
    let mut stream = client.get_debug_events(request).await.unwrap().into_inner();
    let mut last = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        last.push(message);
    }
    let texts: Vec<_> = last
        .iter()
        .map(|r| r.debug_event.as_ref().unwrap().message.as_str())
        .collect();
    assert_eq!(texts, ["ep 7 egress: ct new 3", "node"]);
    let first = last[0].debug_event.as_ref().unwrap();
    assert_eq!(first.r#type, DebugEventType::DbgGeneric as i32);
    let source = first.source.as_ref().unwrap();
    assert_eq!((source.id, source.identity), (7, 300));
    assert!(last[1].debug_event.as_ref().unwrap().source.is_none());
    assert_eq!((last[0].node_name.as_str(), last[0].time), ("n1", ts(3)));

    let request = GetDebugEventsRequest {
        follow: true,
        ..Default::default()
    };
    let mut stream = client.get_debug_events(request).await.unwrap().into_inner();
    ring.publish(generic(7, None, "later".into()));
    let next = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.debug_event.unwrap().message, "later");
    drop(stream);

    let (client, stop2, task2) = start(None, 2).await;
    let status = client
        .clone()
        .get_debug_events(GetDebugEventsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    for (stop, task) in [(stop, task), (stop2, task2)] {
        let _ = stop.send(());
        task.await.unwrap().unwrap();
    }
}
