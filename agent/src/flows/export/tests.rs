use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weir_observer::proto::flow::Verdict;
use weir_observer::testutil::{flow_on, src_port};

use super::*;

fn metrics() -> (Registry, ExportMetrics) {
    let registry = Registry::new();
    let metrics = ExportMetrics::new(&registry);
    (registry, metrics)
}

fn outcome(metrics: &ExportMetrics, outcome: &str) -> u64 {
    metrics.0.with_label_values(&[outcome]).get()
}

fn wait_written(metrics: &ExportMetrics, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while outcome(metrics, "written") < n {
        assert!(Instant::now() < deadline, "{n} flows written in 10 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "weir-export-test-{}-{what}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn lines(path: &Path) -> Vec<GetFlowsResponse> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn port_of(response: &GetFlowsResponse) -> u32 {
    match &response.response_types {
        Some(ResponseTypes::Flow(flow)) => src_port(flow),
        other => panic!("not a flow: {other:?}"),
    }
}

#[test]
fn filter_lists_take_objects_separated_by_commas_or_spaces() {
    assert!(parse_filter_list("").unwrap().is_empty());
    assert!(parse_filter_list("  ").unwrap().is_empty());
    let filters = parse_filter_list(
        r#"{"verdict":["DROPPED","ERROR"]},{"source_pod":["kube-system/"]} {"destination_port":["53"]}"#,
    )
    .unwrap();
    assert_eq!(filters.len(), 3);
    assert_eq!(
        filters[0].verdict,
        [Verdict::Dropped as i32, Verdict::Error as i32]
    );
    assert_eq!(filters[1].source_pod, ["kube-system/"]);
    assert_eq!(filters[2].destination_port, ["53"]);
    let error = parse_filter_list(r#"{"verdict":["NOPE"]}"#).unwrap_err();
    assert!(error.contains("FlowFilter"), "{error}");
    assert!(parse_filter_list(r#"{"verdict":"#).is_err());
}

#[test]
fn a_line_is_hubbles_json_of_the_flow() {
    let flow = flow_on("n1", 7, 1234, true);
    let line = json_line(flow.clone(), "n1");
    assert_eq!(line.last(), Some(&b'\n'));
    let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
    // GetFlowsResponse's keys, then the flow's under the protos' own names
    // (`IP`, `node_name`), enums by name, the time in RFC 3339.
    assert_eq!(value["node_name"], "n1");
    assert_eq!(value["time"], "1970-01-01T00:00:07Z");
    assert_eq!(value["flow"]["verdict"], "DROPPED");
    assert_eq!(value["flow"]["node_name"], "n1");
    assert!(value["flow"]["IP"]["source"].is_string(), "{value}");
    let back: GetFlowsResponse = serde_json::from_slice(&line).unwrap();
    assert_eq!(back.response_types, Some(ResponseTypes::Flow(flow)));
}

#[test]
fn the_file_rotates_by_size_keeping_the_newest_backups() {
    let dir = TempDir::new("rotate");
    let path = dir.0.join("flows/export.log");
    let one_line = json_line(flow_on("n1", 1, 1000, false), "n1").len() as u64;
    let (_registry, metrics) = metrics();
    let exporter = Exporter::start(
        ExportConfig {
            path: path.clone(),
            max_size_bytes: 3 * one_line + 1,
            max_backups: 2,
            queue: 1024,
            allow: vec![],
            deny: vec![],
        },
        "n1".into(),
        metrics.clone(),
    )
    .unwrap();
    for n in 0..20u16 {
        exporter.offer(&flow_on("n1", 1, 1000 + n, false));
    }
    wait_written(&metrics, 20);
    drop(exporter);

    let backup = |n: usize| PathBuf::from(format!("{}.{n}", path.display()));
    // 20 lines of 3 per file: the current file has the last 2, .1 and .2
    // the 3 before each; older ones are gone.
    let ports: Vec<u32> = [backup(2), backup(1), path.clone()]
        .iter()
        .flat_map(|p| lines(p))
        .map(|r| port_of(&r))
        .collect();
    assert_eq!(ports, (1012..1020).collect::<Vec<_>>());
    assert!(!backup(3).exists());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(outcome(&metrics, "failed"), 0);
}

#[test]
fn allow_and_deny_lists_choose_the_flows() {
    let dir = TempDir::new("filters");
    let path = dir.0.join("export.log");
    let (_registry, metrics) = metrics();
    let exporter = Exporter::start(
        ExportConfig {
            path: path.clone(),
            max_size_bytes: 1 << 20,
            max_backups: 1,
            queue: 1024,
            allow: parse_filter_list(r#"{"verdict":["DROPPED"]}"#).unwrap(),
            deny: parse_filter_list(r#"{"source_port":["1003"]}"#).unwrap(),
        },
        "n1".into(),
        metrics.clone(),
    )
    .unwrap();
    for port in 1000..1006u16 {
        exporter.offer(&flow_on("n1", 1, port, port % 2 == 1));
    }
    wait_written(&metrics, 2);
    drop(exporter);
    let ports: Vec<u32> = lines(&path).iter().map(port_of).collect();
    assert_eq!(ports, [1001, 1005], "dropped ones, but not port 1003");
    assert_eq!(outcome(&metrics, "filtered"), 4);
}

/// A disk that does not answer until released.
struct StuckDisk {
    release: Arc<Mutex<()>>,
    written: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Sink for StuckDisk {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let _wait = self.release.lock().unwrap();
        self.written.lock().unwrap().push(line.to_vec());
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_slow_disk_drops_flows_instead_of_holding_the_reader() {
    let release = Arc::new(Mutex::new(()));
    let written = Arc::new(Mutex::new(Vec::new()));
    let stuck = release.lock().unwrap();
    let (_registry, metrics) = metrics();
    let exporter = Exporter::with_sink(
        FlowFilters::new(&[], &[]).unwrap(),
        StuckDisk {
            release: release.clone(),
            written: written.clone(),
        },
        4,
        "n1".into(),
        metrics.clone(),
    );
    // The reader's side: 100 offers while the disk is stuck all return.
    let (done, offered) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for n in 0..100u16 {
            exporter.offer(&flow_on("n1", 1, n, false));
        }
        done.send(()).unwrap();
        exporter
    });
    offered
        .recv_timeout(Duration::from_secs(30))
        .expect("offers return while the disk is stuck");
    let exporter = reader.join().unwrap();
    let dropped = outcome(&metrics, "dropped");
    // At most the queue (4) and the one flow the writer holds got through.
    assert!(dropped >= 95, "dropped {dropped}");
    drop(stuck);
    wait_written(&metrics, 100 - dropped);
    assert_eq!(written.lock().unwrap().len() as u64, 100 - dropped);
    drop(exporter);
}
