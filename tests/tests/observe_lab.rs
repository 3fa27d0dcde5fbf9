//! Flows in the lab: datapath events decoded, enriched and served by each
//! agent's Observer API, read with `weir observe`.

use std::time::{Duration, Instant};

use weir_lab::probe::{probe_with_timeout, Target};
use weir_lab::testing::{netpol_cluster_yaml, TestLab};
use weir_types::NamespacedName;

/// `weir observe ARGS` against `node`'s Observer API, as JSON lines.
fn observe(lab: &TestLab, node: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let server = weir_lab::hubble_socket(lab.state().node(node).unwrap());
    let server = server.to_str().unwrap();
    let out = lab
        .weir(
            node,
            &[&["-o", "json", "observe", "--server", server], args].concat(),
        )
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn pod(flow: &serde_json::Value, side: &str) -> String {
    NamespacedName::new(
        flow[side]["namespace"].as_str().unwrap_or(""),
        flow[side]["pod_name"].as_str().unwrap_or(""),
    )
    .to_string()
}

#[test]
fn denied_and_allowed_connections_show_up_as_flows() {
    let mut lab = TestLab::up(2).unwrap();
    lab.apply_yaml(&netpol_cluster_yaml()).unwrap();
    lab.apply_yaml("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: only-y-a, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: a}}}]\n").unwrap();
    // x/a lives on n1; wait until the policy is enforced there.
    let deadline = Instant::now() + Duration::from_secs(15);
    while probe_with_timeout(
        lab.pod("z/b").unwrap(),
        lab.pod("x/a").unwrap(),
        Target::Tcp(80),
        Duration::from_millis(300),
    )
    .connected
    {
        assert!(Instant::now() < deadline, "policy never enforced");
    }
    assert!(
        probe_with_timeout(
            lab.pod("y/a").unwrap(),
            lab.pod("x/a").unwrap(),
            Target::Tcp(80),
            Duration::from_secs(1)
        )
        .connected
    );

    // The denied connection: a drop with both pods named and the reason.
    let drops = observe(
        &lab,
        "n1",
        &[
            "--verdict",
            "DROPPED",
            "--to-pod",
            "x/a",
            "--type",
            "drop",
            "--last",
            "100",
        ],
    );
    let drop = drops
        .iter()
        .find(|f| pod(f, "source") == "z/b")
        .unwrap_or_else(|| panic!("no drop from z/b: {drops:?}"));
    assert_eq!(pod(drop, "destination"), "x/a");
    assert_eq!(drop["drop_reason_desc"], "POLICY_DENIED");
    assert_eq!(drop["destination_port"], 80);
    assert_eq!(drop["node_name"], "n1");

    // The same drop in n1's flow export file, as Hubble's exporter writes
    // it: a GetFlowsResponse per line, protobuf's JSON with the protos'
    // field names.
    let export = weir_lab::flow_export_file(lab.state().node("n1").unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exported = loop {
        let text = std::fs::read_to_string(&export).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let found = lines.into_iter().find(|l| {
            let f = &l["flow"];
            f["verdict"] == "DROPPED"
                && f["source"]["namespace"] == "z"
                && f["source"]["pod_name"] == "b"
                && f["destination"]["pod_name"] == "a"
        });
        if let Some(found) = found {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "no drop from z/b in {}",
            export.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(exported["node_name"], "n1");
    assert!(
        exported["time"].as_str().unwrap().ends_with('Z'),
        "{exported}"
    );
    let flow = &exported["flow"];
    assert_eq!(flow["destination"]["namespace"], "x");
    assert_eq!(flow["drop_reason_desc"], "POLICY_DENIED");
    assert_eq!(flow["l4"]["TCP"]["destination_port"], 80);
    assert_eq!(flow["IP"]["destination"], drop["IP"]["destination"]);
    assert_eq!(flow["traffic_direction"], "INGRESS");

    // The allowed one: forwarded flows both ways.
    let flows = observe(
        &lab,
        "n1",
        &[
            "--verdict",
            "FORWARDED",
            "--from-pod",
            "y/a",
            "--last",
            "100",
        ],
    );
    assert!(
        flows
            .iter()
            .any(|f| pod(f, "destination") == "x/a" && f["destination_port"] == 80),
        "{flows:?}"
    );
    let replies = observe(
        &lab,
        "n1",
        &[
            "--verdict",
            "FORWARDED",
            "--from-pod",
            "x/a",
            "--to-pod",
            "y/a",
            "--last",
            "100",
        ],
    );
    assert!(
        replies.iter().any(|f| f["source_port"] == 80),
        "reply flows: {replies:?}"
    );

    // The same drop moved the node's metrics, datapath and Hubble ones
    // (the flow metrics follow the event pipeline: give them a moment).
    let needles = [
        "weir_drop_count_total{direction=\"ingress\",reason=\"Policy denied\"}",
        "hubble_drop_total{protocol=\"TCP\",reason=\"POLICY_DENIED\"}",
        "hubble_policy_verdicts_total{action=\"dropped\"",
        "hubble_flows_processed_total{subtype=\"\",type=\"Drop\",verdict=\"DROPPED\"}",
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        let metrics = lab.scrape_metrics("n1").unwrap();
        let complete = needles
            .iter()
            .all(|n| metrics.lines().any(|l| l.starts_with(n)));
        if complete || Instant::now() > deadline {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for needle in [
        "weir_drop_count_total{direction=\"ingress\",reason=\"Policy denied\"}",
        "hubble_drop_total{protocol=\"TCP\",reason=\"POLICY_DENIED\"}",
        "hubble_policy_verdicts_total{action=\"dropped\"",
        "hubble_flows_processed_total{subtype=\"\",type=\"Drop\",verdict=\"DROPPED\"}",
    ] {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("{needle} missing:\n{metrics}"));
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(value >= 1.0, "{line}");
    }

    // The node CLI sees the same state.
    let weir = |args: &[&str]| -> String {
        let out = lab.weir("n1", args).unwrap();
        assert!(
            out.status.success(),
            "weir {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let status = weir(&["status"]);
    assert!(
        status.contains("datapath:    ok") && status.contains("kvstore:     synced"),
        "{status}"
    );
    assert!(status.contains("map weir_conntrack"), "{status}");
    let x_a = lab.pod("x/a").unwrap().ip.to_string();
    assert!(
        weir(&["bpf", "ct", "list"]).contains(&format!("{x_a}:80")),
        "the y/a -> x/a connection is tracked"
    );
    assert!(weir(&["bpf", "ipcache", "list"]).contains(&format!("{x_a}/32")));
    assert!(weir(&["endpoint", "list"]).contains("x/a"));
    assert!(weir(&["identity", "list"]).contains("k8s:pod=a"));
    // x/a is endpoint 1 on n1 (the first pod created there): its map entries.
    let entries = weir(&["bpf", "policy", "get", "1"]);
    assert!(
        entries
            .lines()
            .any(|l| l.starts_with("ingress") && l.contains("allow")),
        "{entries}"
    );

    // Filters select exactly: x/c never talked to z/a.
    assert!(observe(&lab, "n1", &["--from-pod", "x/c", "--to-pod", "z/a"]).is_empty());
    // Every flow of a namespace filter involves that namespace.
    let in_y = observe(&lab, "n1", &["--namespace", "y", "--last", "200"]);
    assert!(
        !in_y.is_empty(),
        "y/a talked to x/a on n1: there are flows of namespace y"
    );
    for f in in_y {
        assert!(
            pod(&f, "source").starts_with("y/") || pod(&f, "destination").starts_with("y/"),
            "{f}"
        );
    }
}

#[test]
fn follow_streams_new_flows() {
    let mut lab = TestLab::up(1).unwrap();
    lab.apply_yaml(&netpol_cluster_yaml().replace("nodeName: n2", "nodeName: n1"))
        .unwrap();
    let record = lab.state().node("n1").unwrap().clone();
    let binary = weir_lab::Binaries::locate()
        .unwrap()
        .agent
        .with_file_name("weir");
    let mut child = std::process::Command::new(binary)
        .args([
            "-o",
            "json",
            "observe",
            "--follow",
            "--from-pod",
            "z/c",
            "--server",
        ])
        .arg(weir_lab::hubble_socket(&record))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        probe_with_timeout(
            lab.pod("z/c").unwrap(),
            lab.pod("y/b").unwrap(),
            Target::Udp(81),
            Duration::from_secs(1)
        )
        .connected
    );
    // Read the first streamed line (bounded by killing the child after a while).
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .next()
            .and_then(Result::ok)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let line = reader.join().unwrap().expect("a streamed flow");
    let flow: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(pod(&flow, "source"), "z/c");
    assert_eq!(flow["destination_port"], 81);
}
