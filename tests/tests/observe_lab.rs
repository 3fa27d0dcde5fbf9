//! Flows in the lab: datapath events decoded, enriched and served by each
//! agent's Observer API, read with `weir observe`.

use std::time::{Duration, Instant};

use weir_lab::probe::{probe_with_timeout, Target};
use weir_lab::testing::{netpol_cluster_yaml, TestLab};
use weir_types::NamespacedName;

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
    lab.apply_yaml(ONLY_Y_A).unwrap();
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
    // And a ping (ICMP is allowed too: the policy names no ports).
    assert!(
        probe_with_timeout(
            lab.pod("y/a").unwrap(),
            lab.pod("x/a").unwrap(),
            Target::Icmp,
            Duration::from_secs(1)
        )
        .connected
    );

    // The denied connection: a drop with both pods named and the reason.
    let drops = lab.observe(
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
    let flows = lab.observe(
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
    let replies = lab.observe(
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
    // (the flow metrics follow the event pipeline: give them a moment),
    // the Hubble ones with the context labels the lab asks for
    // (`weir_lab::HUBBLE_METRICS`): drops and verdicts name the pods, the
    // allowed connection's port its destination pod.
    let needles = [
        "weir_drop_count_total{direction=\"ingress\",reason=\"Policy denied\"}",
        "hubble_drop_total{destination=\"x/a\",protocol=\"TCP\",reason=\"POLICY_DENIED\",source=\"z/b\"}",
        "hubble_policy_verdicts_total{action=\"dropped\",destination=\"x/a\",",
        "hubble_flows_processed_total{protocol=\"TCP\",subtype=\"\",type=\"Drop\",verdict=\"DROPPED\"}",
        "hubble_port_distribution_total{destination=\"x/a\",port=\"80\",protocol=\"TCP\"}",
        "hubble_tcp_flags_total{family=\"IPv4\",flag=\"SYN\"}",
        "hubble_icmp_total{family=\"IPv4\",type=\"EchoRequest\"}",
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
    for needle in needles {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("{needle} missing:\n{metrics}"));
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(value >= 1.0, "{line}");
    }
    // The policy verdict's source is z/b's namespace; nothing overflowed.
    assert!(
        metrics.lines().any(|l| l
            .starts_with("hubble_policy_verdicts_total{action=\"dropped\",destination=\"x/a\"")
            && l.contains("source=\"z\"")),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l
                == "weir_hubble_metrics_context_overflow_total{metric=\"hubble_drop_total\"} 0"),
        "{metrics}"
    );
    // For docs/observability.md: the Hubble families as scraped.
    println!("hubble metrics of n1:");
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("hubble_") || l.starts_with("weir_hubble_"))
    {
        println!("{line}");
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
    assert!(lab
        .observe("n1", &["--from-pod", "x/c", "--to-pod", "z/a"])
        .is_empty());
    // Every flow of a namespace filter involves that namespace.
    let in_y = lab.observe("n1", &["--namespace", "y", "--last", "200"]);
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

    // While ONLY_Y_A is in force (the agent events below delete it).
    debug_messages_explain_a_connection_once_switched_on(&lab);
    agent_events_follow_policies_pods_and_services(&mut lab);
}

const ONLY_Y_A: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: only-y-a, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: a}}}]\n";

const WEB_SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: x}\nspec:\n  clusterIP: 10.96.0.77\n  selector: {pod: a}\n  ports:\n  - {port: 80, targetPort: 80}\n";

/// Issue 18 item 3: `weir debug enable` on n1, a connection from y/a into
/// x/a (allowed) and one from z/b (denied): `weir observe debug-events`
/// on n1's Observer API shows x/a's conntrack and policy messages for
/// both, with x/a's endpoint as source; switched off, nothing more.
fn debug_messages_explain_a_connection_once_switched_on(lab: &TestLab) {
    let weir = |args: &[&str]| {
        let out = lab.weir("n1", args).unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let status = weir(&["debug", "enable"]);
    assert_eq!(status.trim(), "debug messages: node on, endpoints: none");
    let (x_a, y_a, z_b) = (
        lab.pod("x/a").unwrap(),
        lab.pod("y/a").unwrap(),
        lab.pod("z/b").unwrap(),
    );
    assert!(probe_with_timeout(y_a, x_a, Target::Tcp(80), Duration::from_secs(1)).connected);
    assert!(!probe_with_timeout(z_b, x_a, Target::Tcp(80), Duration::from_millis(300)).connected);
    let server = weir_lab::hubble_socket(lab.state().node("n1").unwrap());
    let server = server.to_str().unwrap();
    let read = || -> Vec<serde_json::Value> {
        weir(&[
            "-o",
            "json",
            "observe",
            "debug-events",
            "--server",
            server,
            "--last",
            "4095",
        ])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
    };
    let messages = read();
    let texts: Vec<&str> = messages
        .iter()
        .filter_map(|m| m["debug_event"]["message"].as_str())
        .collect();
    let ct_new = |from: std::net::Ipv4Addr| {
        texts.iter().any(|t| {
            t.contains(" ingress: ct new proto 6 ")
                && t.contains(&format!(" {from}:"))
                && t.ends_with(&format!("-> {}:80", x_a.ip))
        })
    };
    assert!(ct_new(y_a.ip) && ct_new(z_b.ip), "{texts:#?}");
    assert!(
        texts
            .iter()
            .any(|t| t.contains(" ingress: policy ") && t.contains("port 80: allowed")),
        "{texts:#?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains(" ingress: policy ") && t.contains("port 80: dropped, reason 133")),
        "{texts:#?}"
    );
    let from_x_a = messages.iter().find(|m| {
        m["debug_event"]["message"]
            .as_str()
            .is_some_and(|t| t.contains("dropped, reason 133"))
    });
    let source = &from_x_a.unwrap()["debug_event"]["source"]["ID"];
    assert!(source.as_u64().is_some_and(|id| id > 0), "{from_x_a:?}");
    assert_eq!(from_x_a.unwrap()["node_name"], "n1");

    weir(&["debug", "disable"]);
    // What was written before the switch has been read by then.
    std::thread::sleep(Duration::from_millis(500));
    let before = read().last().cloned();
    assert!(probe_with_timeout(y_a, x_a, Target::Tcp(80), Duration::from_secs(1)).connected);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        read().last().cloned(),
        before,
        "switched off: no more messages"
    );
}

/// Every agent event `node` keeps, through the client generated from the
/// upstream protos on the agent's Observer socket.
fn agent_events(
    lab: &TestLab,
    node: &str,
) -> Vec<weir_observer::proto::observer::GetAgentEventsResponse> {
    let socket = weir_lab::hubble_socket(lab.state().node(node).unwrap());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = weir_observer::Target::Unix(socket)
            .connect(Duration::from_secs(5))
            .await
            .unwrap();
        let mut stream = client
            .get_agent_events(weir_observer::proto::observer::GetAgentEventsRequest::default())
            .await
            .unwrap()
            .into_inner();
        let mut events = Vec::new();
        while let Some(event) = stream.message().await.unwrap() {
            events.push(event);
        }
        events
    })
}

/// Hubble's type name of each event, with its notification's debug text.
fn described(
    events: &[weir_observer::proto::observer::GetAgentEventsResponse],
) -> Vec<(String, String)> {
    use weir_observer::proto::flow::AgentEventType;
    events
        .iter()
        .map(|r| {
            let e = r.agent_event.clone().unwrap_or_default();
            let kind = AgentEventType::try_from(e.r#type)
                .unwrap_or(AgentEventType::AgentEventUnknown)
                .as_str_name()
                .to_string();
            (kind, format!("{:?}", e.notification))
        })
        .collect()
}

/// Waits (10 s at most) until `node`'s agent events satisfy `done`.
fn wait_for_agent_events(
    lab: &TestLab,
    node: &str,
    what: &str,
    done: impl Fn(&[(String, String)]) -> bool,
) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = described(&agent_events(lab, node));
        if done(&events) {
            return events;
        }
        assert!(Instant::now() < deadline, "no {what} in {events:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// GetAgentEvents on an agent's Observer socket (issue 18): its start, the
/// policy applied above with Cilium's labels, its pods' endpoints, a
/// service; deleting the policy is announced; `weir observe agent-events`
/// prints them.
fn agent_events_follow_policies_pods_and_services(lab: &mut TestLab) {
    lab.apply_yaml(WEB_SERVICE).unwrap();
    let has = |events: &[(String, String)], kind: &str, needles: &[&str]| {
        events
            .iter()
            .any(|(k, text)| k == kind && needles.iter().all(|n| text.contains(n)))
    };
    let policy_labels = [
        "k8s:io.cilium.k8s.policy.derived-from=NetworkPolicy",
        "k8s:io.cilium.k8s.policy.name=only-y-a",
        "k8s:io.cilium.k8s.policy.namespace=x",
    ];
    // Upserted once without backends, then with x/a when its slice comes.
    let backend = format!("ip: \"{}\", port: 80", lab.pod("x/a").unwrap().ip);
    let events = wait_for_agent_events(lab, "n1", "service upsert of x/web", |events| {
        has(
            events,
            "SERVICE_UPSERTED",
            &["name: \"web\"", "10.96.0.77", backend.as_str()],
        )
    });
    assert_eq!(events[0].0, "AGENT_STARTED", "{events:#?}");
    assert!(
        has(&events, "POLICY_UPDATED", &policy_labels),
        "{events:#?}"
    );
    // x/a runs on n1: its endpoint, with its pod and identity labels.
    assert!(
        has(
            &events,
            "ENDPOINT_CREATED",
            &["pod_name: \"a\"", "namespace: \"x\"", "k8s:pod=a"]
        ),
        "{events:#?}"
    );
    assert!(
        has(&events, "ENDPOINT_REGENERATE_SUCCESS", &[]),
        "{events:#?}"
    );
    let x_a = format!("{}/32", lab.pod("x/a").unwrap().ip);
    assert!(
        has(
            &events,
            "IPCACHE_UPSERTED",
            &[x_a.as_str(), "pod_name: \"a\""]
        ),
        "{events:#?}"
    );
    // The service's backend is x/a.
    assert!(
        has(
            &events,
            "SERVICE_UPSERTED",
            &["name: \"web\"", backend.as_str()]
        ),
        "{events:#?}"
    );

    lab.delete_yaml(ONLY_Y_A).unwrap();
    let events = wait_for_agent_events(lab, "n1", "policy deletion", |events| {
        has(events, "POLICY_DELETED", &policy_labels)
    });
    // Each change has its own revision, later than the update's.
    let revision = |kind: &str| {
        events
            .iter()
            .filter(|(k, text)| k == kind && text.contains("only-y-a"))
            .filter_map(|(_, text)| {
                let rest = text.split("revision: ").nth(1)?;
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .max()
            .unwrap()
    };
    assert!(revision("POLICY_DELETED") > revision("POLICY_UPDATED"));

    // The node CLI prints the same, as `hubble observe agent-events` would.
    let server = weir_lab::hubble_socket(lab.state().node("n1").unwrap());
    let out = lab
        .weir(
            "n1",
            &[
                "-o",
                "json",
                "observe",
                "agent-events",
                "--server",
                server.to_str().unwrap(),
                "--last",
                "1000",
            ],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["agent_event"]["type"] == "POLICY_DELETED"
                && l["agent_event"]["policy_update"]["labels"]
                    .as_array()
                    .is_some_and(|a| a
                        .iter()
                        .any(|v| v == "k8s:io.cilium.k8s.policy.name=only-y-a"))),
        "{lines:#?}"
    );
    assert!(lines.iter().all(|l| l["node_name"] == "n1"));
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
