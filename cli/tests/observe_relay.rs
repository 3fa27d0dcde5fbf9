//! `weir observe` (the real binary) against a real relay in front of two
//! real node Observer servers, over unix sockets and TCP.

use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use weir_observer::testutil::flow_on;
use weir_observer::{FlowRing, Listener, NodeInfo, ObserverService, Target};

struct SocketPath(PathBuf);

impl SocketPath {
    fn new(what: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        SocketPath(std::env::temp_dir().join(format!(
            "weir-cli-test-{}-{what}-{n}.sock",
            std::process::id()
        )))
    }

    fn url(&self) -> String {
        format!("unix://{}", self.0.display())
    }
}

impl Drop for SocketPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Serves `service` on `listener` until the returned sender is dropped.
fn serve<S: weir_observer::proto::observer::observer_server::Observer>(
    service: S,
    listener: Listener,
) -> oneshot::Sender<()> {
    let (stop, stopped) = oneshot::channel::<()>();
    let ready = weir_observer::Readiness::new(true);
    tokio::spawn(weir_observer::serve_with(service, listener, ready, async {
        let _ = stopped.await;
    }));
    stop
}

/// A node `name` with flows at `seconds` (source port = second; 3 and 4
/// dropped).
fn node(name: &str, seconds: &[u64]) -> (SocketPath, oneshot::Sender<()>) {
    let ring = Arc::new(FlowRing::new(100));
    for s in seconds {
        ring.push(flow_on(name, *s, *s as u16, matches!(s, 3 | 4)));
    }
    let path = SocketPath::new(name);
    let listener = weir_observer::bind_unix(&path.0).unwrap();
    let service = ObserverService::new(
        ring,
        NodeInfo {
            name: name.into(),
            ..Default::default()
        },
    );
    let stop = serve(service, Listener::Unix(listener));
    (path, stop)
}

/// `weir ARGS`, run off the async runtime.
async fn weir(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_through_a_relay() {
    let (n1, _n1) = node("n1", &[1, 3, 5]);
    let (n2, _n2) = node("n2", &[2, 4, 6]);
    let gone = SocketPath::new("gone");
    let relay = weir_relay::relay(
        vec![
            Target::Unix(n1.0.clone()),
            Target::Unix(n2.0.clone()),
            Target::Unix(gone.0.clone()),
        ],
        Duration::from_secs(5),
        weir_relay::RelayMetrics::new(),
    )
    .unwrap();
    let relay_socket = SocketPath::new("relay");
    let _relay_unix = serve(
        relay.clone(),
        Listener::Unix(weir_relay::listen_unix(&relay_socket.0).unwrap()),
    );
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_url = format!("http://{}", tcp.local_addr().unwrap());
    let _relay_tcp = serve(relay, Listener::Tcp(tcp));

    // JSON: the last 4 flows of both nodes, in time order, named by node.
    let out = weir(args(&[
        "-o",
        "json",
        "observe",
        "--server",
        &relay_socket.url(),
        "--last",
        "4",
    ]))
    .await;
    let flows: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seen: Vec<(String, u64)> = flows
        .iter()
        .map(|f| {
            (
                f["node_name"].as_str().unwrap().to_string(),
                f["source_port"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("n1".into(), 3),
            ("n2".into(), 4),
            ("n1".into(), 5),
            ("n2".into(), 6)
        ]
    );
    // The dead peer is reported on stderr, not fatal.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("node {} unavailable", gone.url())),
        "{stderr}"
    );

    // Filters reach every node; over TCP; compact lines.
    let text = stdout(
        &weir(args(&[
            "observe",
            "--server",
            &tcp_url,
            "--verdict",
            "DROPPED",
        ]))
        .await,
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains(
            "[n1]: 10.0.0.1:3 (ID:100) -> 10.0.0.2:80 (ID:200) drop (POLICY_DENIED) DROPPED"
        ),
        "{text}"
    );
    assert!(lines[1].contains("[n2]: 10.0.0.1:4 (ID:100)"), "{text}");

    // A table with a header and aligned columns.
    let table = stdout(
        &weir(args(&[
            "-o",
            "table",
            "observe",
            "--server",
            &relay_socket.url(),
            "--last",
            "2",
            "--print-node-name",
        ]))
        .await,
    );
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "{table}");
    for (column, name) in [
        "NODE",
        "SOURCE",
        "DESTINATION",
        "TYPE",
        "VERDICT",
        "SUMMARY",
    ]
    .iter()
    .enumerate()
    .map(|(i, n)| (i, *n))
    {
        let at = rows[0]
            .find(name)
            .unwrap_or_else(|| panic!("{name}: {table}"));
        // Every row has a cell starting where its header starts.
        for row in &rows[1..] {
            assert!(
                row[..at].ends_with("  ") && !row[at..].starts_with(' '),
                "column {column} ({name}) misaligned:\n{table}"
            );
        }
    }
    assert!(
        rows[1].contains("n1") && rows[1].contains("10.0.0.1:5"),
        "{table}"
    );
    assert!(
        rows[2].contains("n2") && rows[2].contains("TCP Flags: SYN"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_reports_an_unreachable_server() {
    let gone = SocketPath::new("nothing");
    let out = weir(args(&["observe", "--server", &gone.url()])).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot reach the Observer API at {}", gone.url())),
        "{stderr}"
    );
    let out = weir(args(&["observe", "--server", "ftp://x"])).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected unix:///PATH"));
}

/// `weir observe agent-events` and `weir monitor --type agent` (the real
/// binary) against a node Observer server keeping agent events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_events_from_a_node() {
    use weir_observer::agent_events::build;
    use weir_observer::AgentEventRing;

    let events = Arc::new(AgentEventRing::new(100, "n1"));
    let at = |s| std::time::UNIX_EPOCH + Duration::from_secs(s);
    events.publish_at(build::agent_started(at(1)), at(1));
    events.publish_at(
        build::policy(false, vec!["k8s:io.cilium.k8s.policy.name=p".into()], 1, 1),
        at(2),
    );
    events.publish_at(build::endpoint(false, 3, vec![], "x", "a"), at(3));
    let path = SocketPath::new("agent-events");
    let listener = weir_observer::bind_unix(&path.0).unwrap();
    let service = ObserverService::new(
        Arc::new(FlowRing::new(10)),
        NodeInfo {
            name: "n1".into(),
            ..Default::default()
        },
    )
    .with_agent_events(events.clone());
    let _stop = serve(service, Listener::Unix(listener));

    let out = weir(args(&["observe", "agent-events", "--server", &path.url()])).await;
    assert_eq!(
        stdout(&out),
        "00:00:01.000 [n1] AGENT_STARTED: started at 00:00:01.000\n\
         00:00:02.000 [n1] POLICY_UPDATED: labels=[k8s:io.cilium.k8s.policy.name=p], revision=1, rule_count=1\n\
         00:00:03.000 [n1] ENDPOINT_CREATED: id=3, pod=x/a, labels=[]\n"
    );
    let out = weir(args(&[
        "-o",
        "json",
        "observe",
        "agent-events",
        "--server",
        &path.url(),
        "--first",
        "1",
    ]))
    .await;
    let line: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(line["agent_event"]["type"], "AGENT_STARTED");
    assert_eq!(line["agent_event"]["agent_start"]["time"], "1.000000000");

    // monitor --type agent follows: only what comes after it subscribed.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["monitor", "--type", "agent", "--server", &path.url()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let listening = tokio::time::timeout(Duration::from_secs(10), stderr.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(listening, "Listening for agent events (Ctrl-C to quit)...");
    events.publish_at(build::service_deleted(7), at(4));
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), stdout.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(line, "00:00:04.000 [n1] SERVICE_DELETED: id=7");
    let _ = child.kill().await;
}
