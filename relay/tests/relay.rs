//! The relay over real sockets: two in-process node Observer servers on
//! unix sockets, each with a flow ring it answers from, the relay in front
//! of them (on a unix socket and on TCP), and the generated Hubble client.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use weir_observer::proto::flow::{FlowFilter, Verdict};
use weir_observer::proto::observer::observer_client::ObserverClient;
use weir_observer::proto::observer::{
    get_flows_response::ResponseTypes, GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest,
    GetNodesRequest, ServerStatusRequest,
};
use weir_observer::proto::relay::NodeState;
use weir_observer::testutil::{flow_on, src_port};
use weir_observer::{FlowRing, Listener, NodeInfo, ObserverService, Readiness, ServeError, Target};
use weir_relay::RelayMetrics;

/// A socket path unique to this process and call, removed on drop.
struct SocketPath(PathBuf);

impl SocketPath {
    fn new(what: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        SocketPath(std::env::temp_dir().join(format!(
            "weir-relay-test-{}-{what}-{n}.sock",
            std::process::id()
        )))
    }

    fn target(&self) -> Target {
        Target::Unix(self.0.clone())
    }
}

impl Drop for SocketPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A server running until `stop`.
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Running {
    /// A server whose health service says SERVING throughout.
    fn start<S: weir_observer::proto::observer::observer_server::Observer>(
        service: S,
        listener: Listener,
    ) -> Self {
        Self::start_with(service, listener, Readiness::new(true))
    }

    fn start_with<S: weir_observer::proto::observer::observer_server::Observer>(
        service: S,
        listener: Listener,
        readiness: Readiness,
    ) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(weir_observer::serve_with(
            service,
            listener,
            readiness,
            async {
                let _ = stopped.await;
            },
        ));
        Running { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// One node: its flow ring, served on its own unix socket.
struct Node {
    ring: Arc<FlowRing>,
    path: SocketPath,
    server: Running,
}

/// A node named `name` holding a flow at each of `seconds` (source port =
/// the second; dropped when the second is in `dropped`).
fn node(name: &str, capacity: usize, seconds: &[u64], dropped: &[u64]) -> Node {
    let ring = Arc::new(FlowRing::new(capacity));
    for s in seconds {
        ring.push(flow_on(name, *s, *s as u16, dropped.contains(s)));
    }
    let path = SocketPath::new(name);
    let listener = weir_observer::bind_unix(&path.0).unwrap();
    let service = ObserverService::new(
        ring.clone(),
        NodeInfo {
            name: name.into(),
            version: "weir-test".into(),
            address: path.0.display().to_string(),
        },
    );
    let server = Running::start(service, Listener::Unix(listener));
    Node { ring, path, server }
}

/// n1 holds flows at odd seconds, n2 at even ones; 3 and 4 were dropped.
fn two_nodes() -> (Node, Node) {
    (
        node("n1", 100, &[1, 3, 5, 7], &[3]),
        node("n2", 50, &[2, 4, 6, 8], &[4]),
    )
}

struct Relay {
    metrics: RelayMetrics,
    path: SocketPath,
    server: Running,
    client: ObserverClient<Channel>,
}

async fn relay(targets: Vec<Target>) -> Relay {
    let metrics = RelayMetrics::new();
    let service = weir_relay::relay(targets, Duration::from_secs(5), metrics.clone()).unwrap();
    let path = SocketPath::new("relay");
    let listener = weir_relay::listen_unix(&path.0).unwrap();
    let readiness = service.peers().readiness();
    let server = Running::start_with(service, Listener::Unix(listener), readiness);
    let client = path.target().connect(Duration::from_secs(5)).await.unwrap();
    Relay {
        metrics,
        path,
        server,
        client,
    }
}

/// A TCP address nothing listens on.
async fn closed_tcp_port() -> Target {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    Target::parse(&format!("http://{address}")).unwrap()
}

/// Flows as `node@port`, and the node status events, of a finished stream.
async fn collect(
    client: &mut ObserverClient<Channel>,
    request: GetFlowsRequest,
) -> (Vec<String>, Vec<(NodeState, Vec<String>)>) {
    let mut stream = client.get_flows(request).await.unwrap().into_inner();
    let (mut flows, mut statuses) = (Vec::new(), Vec::new());
    while let Some(response) = stream.message().await.unwrap() {
        classify(response, &mut flows, &mut statuses);
    }
    (flows, statuses)
}

fn classify(
    response: GetFlowsResponse,
    flows: &mut Vec<String>,
    statuses: &mut Vec<(NodeState, Vec<String>)>,
) {
    match response.response_types {
        Some(ResponseTypes::Flow(f)) => {
            assert_eq!(response.node_name, f.node_name);
            assert_eq!(response.time, f.time);
            flows.push(format!("{}@{}", f.node_name, src_port(&f)));
        }
        Some(ResponseTypes::NodeStatus(s)) => {
            let state = NodeState::try_from(s.state_change).unwrap();
            statuses.push((state, s.node_names));
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn last(number: u64) -> GetFlowsRequest {
    GetFlowsRequest {
        number,
        ..Default::default()
    }
}

#[tokio::test]
async fn merges_the_nodes_flows_by_time() {
    let (n1, n2) = two_nodes();
    let mut r = relay(vec![n1.path.target(), n2.path.target()]).await;

    let (flows, statuses) = collect(&mut r.client, last(3)).await;
    assert_eq!(flows, ["n2@6", "n1@7", "n2@8"]);
    assert_eq!(
        statuses,
        [(NodeState::NodeConnected, vec!["n1".into(), "n2".into()])]
    );
    let first = GetFlowsRequest {
        number: 3,
        first: true,
        ..Default::default()
    };
    assert_eq!(
        collect(&mut r.client, first).await.0,
        ["n1@1", "n2@2", "n1@3"]
    );
    let all = collect(&mut r.client, last(0)).await.0;
    assert_eq!(
        all,
        ["n1@1", "n2@2", "n1@3", "n2@4", "n1@5", "n2@6", "n1@7", "n2@8"]
    );
    // The time window is passed through too.
    let window = GetFlowsRequest {
        since: Some(weir_observer::proto::Timestamp {
            seconds: 4,
            nanos: 0,
        }),
        until: Some(weir_observer::proto::Timestamp {
            seconds: 6,
            nanos: 0,
        }),
        ..Default::default()
    };
    assert_eq!(
        collect(&mut r.client, window).await.0,
        ["n2@4", "n1@5", "n2@6"]
    );

    r.server.stop().await;
    n1.server.stop().await;
    n2.server.stop().await;
}

#[tokio::test]
async fn namespaces_are_the_union_of_the_nodes_of_the_last_hour() {
    let (n1, n2) = two_nodes();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let with_namespace = |node: &str, namespace: &str| {
        let mut flow = flow_on(node, now, 9, false);
        flow.source = Some(weir_observer::proto::flow::Endpoint {
            namespace: namespace.into(),
            ..Default::default()
        });
        flow
    };
    n1.ring.push(with_namespace("n1", "shop"));
    n1.ring.push(with_namespace("n1", "billing"));
    n2.ring.push(with_namespace("n2", "shop"));
    n2.ring.push(with_namespace("n2", "kube-system"));
    let mut r = relay(vec![n1.path.target(), n2.path.target()]).await;

    let answer = r
        .client
        .get_namespaces(GetNamespacesRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = answer
        .namespaces
        .iter()
        .map(|n| n.namespace.as_str())
        .collect();
    // The flows at seconds 1-8 after the epoch are older than an hour.
    assert_eq!(names, ["billing", "kube-system", "shop"]);
    let status = r
        .client
        .server_status(ServerStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.flows_rate > 0.0, "{}", status.flows_rate);

    r.server.stop().await;
    n1.server.stop().await;
    n2.server.stop().await;
}

#[tokio::test]
async fn serves_on_tcp_too() {
    let (n1, n2) = two_nodes();
    let service = weir_relay::relay(
        vec![n1.path.target(), n2.path.target()],
        Duration::from_secs(5),
        RelayMetrics::new(),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = Running::start(service, Listener::Tcp(listener));
    let mut client = Target::parse(&format!("http://{address}"))
        .unwrap()
        .connect(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(collect(&mut client, last(2)).await.0, ["n1@7", "n2@8"]);
    server.stop().await;
    n1.server.stop().await;
    n2.server.stop().await;
}

#[tokio::test]
async fn filters_reach_every_node() {
    let (n1, n2) = two_nodes();
    let mut r = relay(vec![n1.path.target(), n2.path.target()]).await;
    let dropped = GetFlowsRequest {
        whitelist: vec![FlowFilter {
            verdict: vec![Verdict::Dropped as i32],
            ..Default::default()
        }],
        ..Default::default()
    };
    assert_eq!(collect(&mut r.client, dropped).await.0, ["n1@3", "n2@4"]);
    let not_5_or_8 = GetFlowsRequest {
        number: 3,
        blacklist: vec![FlowFilter {
            source_port: vec!["5".into(), "8".into()],
            ..Default::default()
        }],
        ..Default::default()
    };
    assert_eq!(
        collect(&mut r.client, not_5_or_8).await.0,
        ["n2@4", "n2@6", "n1@7"]
    );
    let bad = GetFlowsRequest {
        whitelist: vec![FlowFilter {
            source_ip: vec!["not-an-ip".into()],
            ..Default::default()
        }],
        ..Default::default()
    };
    let status = r.client.get_flows(bad).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    r.server.stop().await;
    n1.server.stop().await;
    n2.server.stop().await;
}

#[tokio::test]
async fn follow_passes_new_flows_of_every_node() {
    let (n1, n2) = two_nodes();
    let mut r = relay(vec![n1.path.target(), n2.path.target()]).await;
    let request = GetFlowsRequest {
        number: 1,
        follow: true,
        ..Default::default()
    };
    let mut stream = r.client.get_flows(request).await.unwrap().into_inner();
    let (mut flows, mut statuses) = (Vec::new(), Vec::new());
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("a response within 10s")
            .unwrap()
            .expect("the stream goes on")
    };
    // Each node's history (its last flow) arrives once it is subscribed.
    while flows.len() < 2 {
        classify(next().await, &mut flows, &mut statuses);
    }
    assert_eq!(
        flows.iter().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from(["n1@7".to_string(), "n2@8".to_string()])
    );
    n1.ring.push(flow_on("n1", 20, 20, false));
    n2.ring.push(flow_on("n2", 21, 21, true));
    while flows.len() < 4 {
        classify(next().await, &mut flows, &mut statuses);
    }
    assert_eq!(
        flows[2..].iter().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from(["n1@20".to_string(), "n2@21".to_string()])
    );
    assert_eq!(
        statuses,
        [(NodeState::NodeConnected, vec!["n1".into(), "n2".into()])]
    );
    drop(stream);
    r.server.stop().await;
    n1.server.stop().await;
    n2.server.stop().await;
}

#[tokio::test]
async fn a_dead_peer_is_reported_not_fatal() {
    let (n1, n2) = two_nodes();
    let gone_socket = SocketPath::new("gone");
    let gone_tcp = closed_tcp_port().await;
    let mut r = relay(vec![
        n1.path.target(),
        gone_socket.target(),
        n2.path.target(),
        gone_tcp.clone(),
    ])
    .await;

    let (flows, statuses) = collect(&mut r.client, last(2)).await;
    assert_eq!(flows, ["n1@7", "n2@8"]);
    assert_eq!(
        statuses,
        [
            (NodeState::NodeConnected, vec!["n1".into(), "n2".into()]),
            (
                NodeState::NodeUnavailable,
                vec![gone_socket.target().to_string()]
            ),
            (NodeState::NodeUnavailable, vec![gone_tcp.to_string()]),
        ]
    );

    let status = r
        .client
        .server_status(ServerStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (status.num_flows, status.max_flows, status.seen_flows),
        (8, 150, 8)
    );
    assert_eq!(status.num_connected_nodes, Some(2));
    assert_eq!(status.num_unavailable_nodes, Some(2));
    assert_eq!(
        status.unavailable_nodes,
        [gone_socket.target().to_string(), gone_tcp.to_string()]
    );
    assert!(status.version.starts_with("weir-relay"));

    let nodes = r
        .client
        .get_nodes(GetNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    let summary: Vec<(String, String, NodeState, u64)> = nodes
        .iter()
        .map(|n| {
            (
                n.name.clone(),
                n.address.clone(),
                NodeState::try_from(n.state).unwrap(),
                n.num_flows,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "n1".to_string(),
                n1.path.target().to_string(),
                NodeState::NodeConnected,
                4
            ),
            (
                gone_socket.target().to_string(),
                gone_socket.target().to_string(),
                NodeState::NodeUnavailable,
                0
            ),
            (
                "n2".to_string(),
                n2.path.target().to_string(),
                NodeState::NodeConnected,
                4
            ),
            (
                gone_tcp.to_string(),
                gone_tcp.to_string(),
                NodeState::NodeUnavailable,
                0
            ),
        ]
    );

    // The peer comes up later: the relay reaches it without a restart.
    let late_ring = Arc::new(FlowRing::new(10));
    late_ring.push(flow_on("n3", 9, 9, false));
    let late = Running::start(
        ObserverService::new(late_ring, NodeInfo::default()),
        Listener::Unix(weir_observer::bind_unix(&gone_socket.0).unwrap()),
    );
    let (flows, _) = collect(&mut r.client, last(2)).await;
    assert_eq!(flows, ["n2@8", "n3@9"]);

    r.server.stop().await;
    late.stop().await;
    n1.server.stop().await;
    n2.server.stop().await;
}

#[tokio::test]
async fn metrics_count_requests_and_peers() {
    let (n1, n2) = two_nodes();
    let gone = SocketPath::new("gone");
    let mut r = relay(vec![n1.path.target(), n2.path.target(), gone.target()]).await;
    collect(&mut r.client, last(1)).await;
    r.client
        .server_status(ServerStatusRequest {})
        .await
        .unwrap();
    r.client.get_nodes(GetNodesRequest {}).await.unwrap();
    r.client.get_nodes(GetNodesRequest {}).await.unwrap();

    // Scraped over HTTP as Prometheus would.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let metrics_server = tokio::spawn(weir_relay::metrics::serve(listener, r.metrics.clone()));
    let text = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    })
    .await
    .unwrap();
    for line in [
        "weir_relay_requests_total{method=\"GetFlows\"} 1",
        "weir_relay_requests_total{method=\"ServerStatus\"} 1",
        "weir_relay_requests_total{method=\"GetNodes\"} 2",
        "weir_relay_peers{state=\"connected\"} 2",
        "weir_relay_peers{state=\"unavailable\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    metrics_server.abort();
    r.server.stop().await;
    n1.server.stop().await;
    n2.server.stop().await;
}

#[tokio::test]
async fn the_relay_socket_is_owner_only() {
    let r = relay(Vec::new()).await;
    let mode = std::fs::metadata(&r.path.0).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    r.server.stop().await;
}

/// The node names GetNodes lists.
async fn node_names(client: &mut ObserverClient<Channel>) -> Vec<String> {
    let nodes = client
        .get_nodes(GetNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    let mut names: Vec<String> = nodes.into_iter().map(|n| n.name).collect();
    names.sort();
    names
}

#[tokio::test]
async fn the_peer_set_changes_while_the_relay_serves() {
    let (n1, n2) = two_nodes();
    let metrics = RelayMetrics::new();
    let service =
        weir_relay::relay(vec![n1.path.target()], Duration::from_secs(5), metrics).unwrap();
    let peers = service.peers().clone();
    let path = SocketPath::new("relay-dynamic");
    let server = Running::start(
        service,
        Listener::Unix(weir_relay::listen_unix(&path.0).unwrap()),
    );
    let mut client = path.target().connect(Duration::from_secs(5)).await.unwrap();
    assert_eq!(node_names(&mut client).await, ["n1"]);

    // A node joins: its flows are merged in; the kept peer keeps its state.
    let kept = peers.list()[0].clone();
    peers
        .set_targets(vec![n1.path.target(), n2.path.target()])
        .unwrap();
    assert!(
        Arc::ptr_eq(&kept, &peers.list()[0]),
        "n1's peer was replaced"
    );
    assert_eq!(node_names(&mut client).await, ["n1", "n2"]);
    let (flows, _) = collect(&mut client, last(100)).await;
    assert_eq!(flows.len(), 8, "{flows:?}");

    // A node leaves: nothing of it is asked any more.
    peers.set_targets(vec![n2.path.target()]).unwrap();
    assert_eq!(node_names(&mut client).await, ["n2"]);
    let (flows, _) = collect(&mut client, last(100)).await;
    assert_eq!(flows.len(), 4, "{flows:?}");
    assert!(flows.iter().all(|f| f.starts_with("n2@")), "{flows:?}");

    server.stop().await;
    n1.server.stop().await;
    n2.server.stop().await;
}

#[tokio::test]
async fn follow_streams_through_the_relay_are_bounded() {
    let (n1, n2) = two_nodes();
    let service = weir_relay::relay(
        vec![n1.path.target(), n2.path.target()],
        Duration::from_secs(5),
        RelayMetrics::new(),
    )
    .unwrap()
    .with_max_followers(2);
    let path = SocketPath::new("relay-bounded");
    let server = Running::start(
        service,
        Listener::Unix(weir_relay::listen_unix(&path.0).unwrap()),
    );
    let client = path.target().connect(Duration::from_secs(5)).await.unwrap();
    let follow = || GetFlowsRequest {
        follow: true,
        ..Default::default()
    };
    let first = client.clone().get_flows(follow()).await.unwrap();
    let second = client.clone().get_flows(follow()).await.unwrap();
    let refused = client.clone().get_flows(follow()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
    // A request that does not follow is never refused for it.
    let (flows, _) = collect(&mut client.clone(), last(100)).await;
    assert_eq!(flows.len(), 8);
    drop((first, second));
    server.stop().await;
    n1.server.stop().await;
    n2.server.stop().await;
}

/// The relay's gRPC health service (what `hubble status` asks first),
/// through the client generated from the upstream `grpc.health.v1` protos:
/// NOT_SERVING while it reaches no node, SERVING once one answers, and
/// NOT_SERVING again when the last one is gone.
#[tokio::test]
async fn health_follows_the_peers() {
    use tonic_health::pb::health_check_response::ServingStatus as Status;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let gone = SocketPath::new("health-gone");
    let service = weir_relay::relay(
        vec![gone.target()],
        Duration::from_secs(5),
        RelayMetrics::new(),
    )
    .unwrap();
    let peers = service.peers().clone();
    let path = SocketPath::new("relay-health");
    let server = Running::start_with(
        service,
        Listener::Unix(weir_relay::listen_unix(&path.0).unwrap()),
        peers.readiness(),
    );
    let health = HealthClient::new(path.target().lazy_channel(Duration::from_secs(5)).unwrap());
    let status = || {
        let mut health = health.clone();
        async move {
            let answer = health
                .check(HealthCheckRequest {
                    service: "hubble.server.Observer".into(),
                })
                .await
                .unwrap()
                .into_inner();
            Status::try_from(answer.status).unwrap()
        }
    };

    assert_eq!(status().await, Status::NotServing, "no peer asked yet");
    peers.probe().await;
    assert_eq!(status().await, Status::NotServing, "the only peer is down");

    let n1 = node("n1", 10, &[1], &[]);
    peers
        .set_targets(vec![gone.target(), n1.path.target()])
        .unwrap();
    peers.probe().await;
    assert_eq!(status().await, Status::Serving, "n1 answers");

    n1.server.stop().await;
    peers.probe().await;
    assert_eq!(
        status().await,
        Status::NotServing,
        "no peer answers any more"
    );
    server.stop().await;
}

/// As Hubble Relay: agent events are a node's, asked of the node; the
/// relay answers Unimplemented and stays up.
#[tokio::test]
async fn get_agent_events_is_unimplemented_as_in_hubble_relay() {
    let (n1, n2) = two_nodes();
    let mut r = relay(vec![n1.path.target(), n2.path.target()]).await;
    let status = r
        .client
        .get_agent_events(weir_observer::proto::observer::GetAgentEventsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status}");
    assert_eq!(collect(&mut r.client, last(2)).await.0, ["n1@7", "n2@8"]);
    r.server.stop().await;
    n1.server.stop().await;
    n2.server.stop().await;
}
