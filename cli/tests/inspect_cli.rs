//! `weir endpoint|identity get`, `weir status` and `weir monitor` (the real
//! binary) against the agent's real local API: a real datapath loaded into
//! a pin directory of its own (nothing attached), a real agent and the
//! same server the agent runs, on a socket of its own. Needs root.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use weir_agent::api::inspect::InspectService;
use weir_agent::api::metrics::ApiMetricsLayer;
use weir_agent::api::monitor::MonitorService;
use weir_agent::api::services::ServicesService;
use weir_agent::api::{self, LocalApi};
use weir_agent::cluster::kvstore::SharedView;
use weir_agent::datapath::{Datapath, SharedDatapath};
use weir_agent::endpoint::ipam::Ipam;
use weir_agent::endpoint::manager::EndpointManager;
use weir_agent::endpoint::state::StateStore;
use weir_agent::flows::feed::MonitorFeed;
use weir_agent::reconcile::snapshot::SharedSnapshot;
use weir_identity::LabelSet;
use weir_observer::parser::WallClock;
use weir_observer::testutil::event;

/// A directory (bpffs pins or state) unique to this run, removed on drop.
struct Scratch {
    path: PathBuf,
    pins: bool,
}

impl Scratch {
    fn new(root: &str, what: &str, pins: bool) -> Self {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path = PathBuf::from(root).join(format!(
            "weir-cli-test-{}-{what}-{nanos}",
            std::process::id()
        ));
        Scratch { path, pins }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.pins {
            let _ = weir_agent::datapath::remove_pins(&self.path);
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The `weir` binary: another package's (weir-cli), so not in
/// `CARGO_BIN_EXE_*`; it sits in target/<profile>, above this test's `deps/`.
fn weir(socket: &std::path::Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: Output) -> String {
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn inspection_commands_against_the_agent_api() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test loads the datapath into bpffs: run it as root (cargo xtask test does)"
    );
    let pins = Scratch::new("/sys/fs/bpf", "pins", true);
    let state_dir = Scratch::new(&std::env::temp_dir().display().to_string(), "state", false);
    let socket_dir = Scratch::new(&std::env::temp_dir().display().to_string(), "sock", false);
    let socket = socket_dir.path.join("agent.sock");

    let datapath = SharedDatapath::new(Datapath::load(&pins.path).unwrap());
    let store = StateStore::new(&state_dir.path).unwrap();
    let state = store
        .load_or(Ipam::new("10.244.9.0/24".parse().unwrap()).unwrap(), None)
        .unwrap();
    let agent = Arc::new(EndpointManager::new(
        "n1".into(),
        1500,
        store,
        state,
        datapath.clone(),
    ));
    let mut shared = SharedView::default();
    shared
        .identities
        .insert(300, LabelSet::new().with("k8s:app", "web"));
    let view = Arc::new(Mutex::new(shared));
    let snapshot = SharedSnapshot::default();
    let feed = MonitorFeed::default();
    let debug_feed = weir_agent::datapath::debug::DebugFeed::default();
    let registry = prometheus::Registry::new();
    let metrics = ApiMetricsLayer::new(&registry);
    let api = LocalApi {
        agent: agent.clone(),
        node_ip: None,
        readiness: None,
        policy: api::policy::PolicyService::new(snapshot.clone()),
        inspect: InspectService {
            node_name: "n1".into(),
            agent,
            datapath: datapath.clone(),
            policy: snapshot,
            view,
            reconcile: Default::default(),
        },
        services: ServicesService {
            datapath: datapath.clone(),
            status: Default::default(),
            maglev_table_size: 1021,
        },
        monitor: MonitorService::new(feed.clone(), WallClock::from_offset_ns(0), "n1".into())
            .with_debug(debug_feed.clone(), datapath.clone()),
        metrics: metrics.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = {
        let socket = socket.clone();
        runtime.spawn(async move {
            api::serve(api, &socket, async {
                let _ = stopped.await;
            })
            .await
        })
    };
    // Wait for the server to be listening (not a measurement).
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "the API never came up");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Unknown ids: a clear message and a failing exit status.
    let err = failed(weir(&socket, &["endpoint", "get", "42"]));
    assert!(err.contains("no local endpoint 42"), "{err}");
    assert!(!err.contains("status:"), "no gRPC noise: {err}");
    let err = failed(weir(&socket, &["identity", "get", "4242"]));
    assert!(
        err.contains("identity 4242 is not known to this agent"),
        "{err}"
    );

    // Known identities: reserved, and one from the shared view.
    let host = ok(weir(&socket, &["identity", "get", "1"]));
    assert!(
        host.contains("reserved:host") && host.contains("reserved"),
        "{host}"
    );
    let web: serde_json::Value = serde_json::from_str(&ok(weir(
        &socket,
        &["-o", "json", "identity", "get", "300"],
    )))
    .unwrap();
    assert_eq!(web["labels"], serde_json::json!(["k8s:app=web"]));
    assert_eq!(web["scope"], "cluster");
    let list = ok(weir(&socket, &["-o", "table", "identity", "list"]));
    assert!(
        list.starts_with("ID ") && list.contains("k8s:app=web"),
        "{list}"
    );
    let status = ok(weir(&socket, &["status"]));
    assert!(status.contains("map weir_ipcache"), "{status}");

    // The monitor streams the events published after it subscribed.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("--socket")
        .arg(&socket)
        .args(["-o", "json", "monitor", "--type", "drop"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    assert!(banner.starts_with("Listening"), "{banner}");
    feed.publish(&event(7, 1007, false));
    feed.publish(&event(8, 1008, true));
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let drop: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(drop["kind"], "drop");
    assert_eq!(drop["src_port"], 1008);
    assert_eq!(drop["reason_name"], "Policy denied");

    // Debug messages: switched per endpoint and for the node, read back.
    let off = ok(weir(&socket, &["debug", "status"]));
    assert_eq!(off.trim(), "debug messages: node off, endpoints: none");
    let on = ok(weir(&socket, &["debug", "enable", "--endpoint", "7"]));
    assert_eq!(on.trim(), "debug messages: node off, endpoints: 7");
    let on = ok(weir(&socket, &["-o", "json", "debug", "enable"]));
    assert_eq!(on.trim(), r#"{"endpoint_ids":[7],"node":true}"#);
    let off = ok(weir(&socket, &["debug", "disable"]));
    assert_eq!(off.trim(), "debug messages: node off, endpoints: 7");
    // ... and streamed by `monitor --type debug`, nothing else.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("--socket")
        .arg(&socket)
        .args(["monitor", "--type", "debug"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    assert!(banner.starts_with("Listening"), "{banner}");
    feed.publish(&event(7, 1007, false));
    debug_feed.publish(weir_agent::datapath::debug::DebugMessage::parse(
        "ep 7 egress: ct new proto 6 10.244.9.2:1007 -> 10.244.9.3:80".into(),
    ));
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        first.ends_with(
            "[n1] debug: ep 7 egress: ct new proto 6 10.244.9.2:1007 -> 10.244.9.3:80\n"
        ),
        "{first}"
    );

    // Every call was timed under its method.
    let count = |method: &str| {
        metrics
            .histogram()
            .with_label_values(&[method])
            .get_sample_count()
    };
    assert_eq!(count("weir.agent.v1.Inspect/GetEndpoint"), 1);
    assert_eq!(count("weir.agent.v1.Inspect/GetIdentity"), 3);
    assert_eq!(count("weir.agent.v1.Inspect/Status"), 1);
    assert_eq!(count("weir.agent.v1.Monitor/Events"), 2);
    assert_eq!(count("weir.agent.v1.Monitor/SetDebug"), 3);

    let _ = stop.send(());
    runtime.block_on(server).unwrap().unwrap();
}
