//! The service over real sockets, driven by the generated Hubble client.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use super::*;
use crate::proto::flow::{FlowFilter, Verdict};
use crate::proto::observer::observer_client::ObserverClient;
use crate::testutil::{flow, src_port};

/// A running server; `stop` shuts it down and waits for it.
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Running {
    fn start(ring: Arc<FlowRing>, listener: Listener) -> Self {
        Self::start_with(ring, listener, Readiness::new(true))
    }

    fn start_with(ring: Arc<FlowRing>, listener: Listener, readiness: Readiness) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let service = ObserverService::new(
            ring,
            NodeInfo {
                name: "test-node".into(),
                version: "weir-test".into(),
                address: "local".into(),
            },
        );
        let task = tokio::spawn(serve(service, listener, readiness, async {
            let _ = stopped.await;
        }));
        Self { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

async fn tcp_server(ring: Arc<FlowRing>) -> (Running, ObserverClient<Channel>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let running = Running::start(ring, Listener::Tcp(listener));
    let client = ObserverClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    (running, client)
}

/// Ring with flows at seconds 1..=n, src port = second, even ones dropped.
fn ring_with(n: u64) -> Arc<FlowRing> {
    let ring = Arc::new(FlowRing::new(100));
    for i in 1..=n {
        ring.push(flow(i, i as u16, i % 2 == 0));
    }
    ring
}

async fn collect(client: &mut ObserverClient<Channel>, req: GetFlowsRequest) -> Vec<u32> {
    let mut stream = client.get_flows(req).await.unwrap().into_inner();
    let mut ports = Vec::new();
    while let Some(msg) = stream.message().await.unwrap() {
        match msg.response_types {
            Some(get_flows_response::ResponseTypes::Flow(f)) => {
                assert_eq!(msg.node_name, "test-node");
                assert_eq!(msg.time, f.time);
                ports.push(src_port(&f));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    ports
}

fn ts(secs: i64) -> Option<crate::proto::Timestamp> {
    Some(crate::proto::Timestamp {
        seconds: secs,
        nanos: 0,
    })
}

#[tokio::test]
async fn get_flows_number_and_first() {
    let (server, mut client) = tcp_server(ring_with(10)).await;
    let last = GetFlowsRequest {
        number: 3,
        ..Default::default()
    };
    assert_eq!(collect(&mut client, last).await, vec![8, 9, 10]);
    let first = GetFlowsRequest {
        number: 2,
        first: true,
        ..Default::default()
    };
    assert_eq!(collect(&mut client, first).await, vec![1, 2]);
    server.stop().await;
}

#[tokio::test]
async fn get_flows_since_until() {
    let (server, mut client) = tcp_server(ring_with(10)).await;
    let req = GetFlowsRequest {
        since: ts(4),
        until: ts(6),
        ..Default::default()
    };
    assert_eq!(collect(&mut client, req).await, vec![4, 5, 6]);
    server.stop().await;
}

#[tokio::test]
async fn get_flows_whitelist_blacklist() {
    let (server, mut client) = tcp_server(ring_with(10)).await;
    let dropped = FlowFilter {
        verdict: vec![Verdict::Dropped as i32],
        ..Default::default()
    };
    let port = |p: &str| FlowFilter {
        source_port: vec![p.to_string()],
        ..Default::default()
    };
    let req = GetFlowsRequest {
        whitelist: vec![dropped.clone(), port("3")],
        blacklist: vec![port("4"), port("10")],
        ..Default::default()
    };
    assert_eq!(collect(&mut client, req).await, vec![2, 3, 6, 8]);
    let bad = GetFlowsRequest {
        whitelist: vec![FlowFilter {
            source_ip: vec!["not-an-ip".into()],
            ..Default::default()
        }],
        ..Default::default()
    };
    let status = client.get_flows(bad).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    server.stop().await;
}

#[tokio::test]
async fn get_flows_follow_receives_new_flows() {
    let ring = ring_with(5);
    let (server, mut client) = tcp_server(ring.clone()).await;
    let req = GetFlowsRequest {
        number: 1,
        follow: true,
        whitelist: vec![FlowFilter {
            verdict: vec![Verdict::Dropped as i32],
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut stream = client.get_flows(req).await.unwrap().into_inner();
    let port_of = |msg: GetFlowsResponse| match msg.response_types {
        Some(get_flows_response::ResponseTypes::Flow(f)) => src_port(&f),
        other => panic!("unexpected {other:?}"),
    };
    // The history arrives first, so the server is subscribed by now.
    assert_eq!(port_of(stream.message().await.unwrap().unwrap()), 4);
    ring.push(flow(41, 41, false)); // filtered out
    ring.push(flow(42, 42, true));
    let next = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("followed flow within 5s")
        .unwrap()
        .unwrap();
    assert_eq!(port_of(next), 42);
    drop(stream);
    server.stop().await;
}

#[tokio::test]
async fn server_status_and_nodes() {
    let ring = Arc::new(FlowRing::new(4));
    for i in 1..=6 {
        ring.push(flow(i, i as u16, false));
    }
    let (server, mut client) = tcp_server(ring).await;
    let s = client
        .server_status(ServerStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((s.num_flows, s.max_flows, s.seen_flows), (4, 4, 6));
    assert!(s.uptime_ns > 0);
    assert_eq!(s.num_connected_nodes, Some(1));
    assert_eq!(s.version, "weir-test");
    let nodes = client
        .get_nodes(GetNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].name, "test-node");
    assert_eq!((nodes[0].num_flows, nodes[0].seen_flows), (4, 6));
    server.stop().await;
}

/// Removes the socket file even if the test fails.
struct SocketPath(PathBuf);

impl Drop for SocketPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test]
async fn serves_on_a_unix_socket() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let path = SocketPath(std::env::temp_dir().join(format!(
        "weir-observer-test-{}-{nanos}.sock",
        std::process::id()
    )));
    // A stale file from an earlier run must not stop the bind.
    std::fs::write(&path.0, b"stale").unwrap();
    let listener = bind_unix(&path.0).unwrap();
    let server = Running::start(ring_with(3), Listener::Unix(listener));

    let socket = path.0.clone();
    let channel = Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .unwrap();
    let mut client = ObserverClient::new(channel);
    let ports = collect(
        &mut client,
        GetFlowsRequest {
            number: 2,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ports, vec![2, 3]);
    server.stop().await;
}

#[tokio::test]
async fn follow_streams_are_bounded_and_all_served() {
    const MAX: usize = 100;
    let ring = ring_with(0);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let service = ObserverService::new(
        ring.clone(),
        NodeInfo {
            name: "test-node".into(),
            ..Default::default()
        },
    )
    .with_max_followers(MAX);
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
    let follow = || GetFlowsRequest {
        follow: true,
        ..Default::default()
    };
    let mut streams = Vec::new();
    for _ in 0..MAX {
        let stream = client
            .clone()
            .get_flows(follow())
            .await
            .unwrap()
            .into_inner();
        streams.push(stream);
    }
    // One more is refused, with a reason, and costs nothing.
    let refused = client.clone().get_flows(follow()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
    // Every follower gets the next flow: the reader is not stalled.
    ring.push(flow(7, 7, false));
    for stream in &mut streams {
        let message = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("a followed flow")
            .unwrap()
            .expect("a message");
        assert!(matches!(
            message.response_types,
            Some(get_flows_response::ResponseTypes::Flow(_))
        ));
    }
    // A closed stream frees its place (its task notices on the next flow).
    drop(streams.pop());
    ring.push(flow(8, 8, false));
    let mut admitted = None;
    for _ in 0..50 {
        match client.clone().get_flows(follow()).await {
            Ok(stream) => {
                admitted = Some(stream);
                break;
            }
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert!(admitted.is_some(), "the freed place was not given again");
    drop(streams);
    drop(admitted);
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

/// The standard health service, through the client generated from the
/// upstream `grpc.health.v1` protos: what `hubble status` and Hubble Relay
/// ask first. It follows the pipeline's readiness for the server as a
/// whole and for Hubble's service name, and knows no other service.
#[tokio::test]
async fn health_service_follows_the_pipeline() {
    use tonic_health::pb::health_check_response::ServingStatus as Status;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let readiness = Readiness::new(false);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let server = Running::start_with(ring_with(0), Listener::Tcp(listener), readiness.clone());
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let check = |service: &str| HealthCheckRequest {
        service: service.to_string(),
    };
    let status_of = |response: tonic_health::pb::HealthCheckResponse| {
        Status::try_from(response.status).unwrap()
    };

    for name in health::SERVICE_NAMES {
        let answer = client.check(check(name)).await.unwrap().into_inner();
        assert_eq!(
            status_of(answer),
            Status::NotServing,
            "{name:?} before the pipeline is up"
        );
    }
    let mut watch = client
        .watch(check("hubble.server.Observer"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status_of(watch.message().await.unwrap().unwrap()),
        Status::NotServing
    );

    readiness.set(true);
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("a watcher hears the change")
        .unwrap()
        .unwrap();
    assert_eq!(status_of(next), Status::Serving);
    for name in health::SERVICE_NAMES {
        let answer = client.check(check(name)).await.unwrap().into_inner();
        assert_eq!(status_of(answer), Status::Serving, "{name:?} once it is up");
    }

    readiness.set(false);
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("a watcher hears the change")
        .unwrap()
        .unwrap();
    assert_eq!(status_of(next), Status::NotServing);

    let unknown = client.check(check("no.such.Service")).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown}");
    drop(watch);
    server.stop().await;
}
