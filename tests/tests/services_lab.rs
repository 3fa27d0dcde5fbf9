//! Services in the lab: Services and derived EndpointSlices applied like
//! any manifest, every agent programming its LB maps, real clients (pods,
//! node hosts, the outside world) connecting to service addresses that exist
//! only in those maps.

use std::collections::BTreeMap;
use std::time::Duration;

use weir_lab::testing::{namespace_yaml, TestLab};
use weir_lab::ClientResult;

const CLUSTER_IP: &str = "10.96.0.10";
const NODE_PORT: u16 = 30080;

/// A pod labelled `app: <app>` serving TCP and UDP on 8080 under the port
/// names `http` / `dns-ish`.
fn backend_yaml(name: &str, node: &str, app: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: svc\n  labels: {{app: {app}}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n    ports:\n    - {{name: http, containerPort: 8080, protocol: TCP}}\n    - {{name: dns-ish, containerPort: 8080, protocol: UDP}}\n---\n"
    )
}

fn client_yaml(node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: client-{node}\n  namespace: svc\n  labels: {{app: client}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n---\n"
    )
}

/// The `web` service: ClusterIP 10.96.0.10, port 80 → the named port
/// `http`, UDP 53 → `dns-ish`, NodePort 30080 for port 80.
fn web_service(extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: svc\nspec:\n  type: NodePort\n  clusterIP: {CLUSTER_IP}\n  selector: {{app: web}}\n  ports:\n  - {{name: http, port: 80, targetPort: http, protocol: TCP, nodePort: {NODE_PORT}}}\n  - {{name: dns, port: 53, targetPort: dns-ish, protocol: UDP}}\n{extra_spec}---\n"
    )
}

/// The `svc` namespace, three web backends (web-1 on n1, web-2 and web-3
/// on n2) and a client pod on n1.
fn web_pods_yaml() -> String {
    let mut yaml = namespace_yaml("svc");
    yaml.push_str(&backend_yaml("web-1", "n1", "web"));
    yaml.push_str(&backend_yaml("web-2", "n2", "web"));
    yaml.push_str(&backend_yaml("web-3", "n2", "web"));
    yaml.push_str(&client_yaml("n1"));
    yaml
}

/// [`web_pods_yaml`], a client on n2 too, and the `web` service.
fn lab_with_web(extra_spec: &str) -> TestLab {
    let mut lab = TestLab::up(2).expect("lab up");
    let mut yaml = web_pods_yaml();
    yaml.push_str(&client_yaml("n2"));
    yaml.push_str(&web_service(extra_spec));
    lab.apply_yaml(&yaml).expect("apply");
    lab
}

fn counts(results: &[ClientResult]) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for r in results {
        let key = match (&r.reply, &r.error) {
            (Some(reply), _) if r.ok => reply.clone(),
            (_, Some(error)) => format!("error: {error}"),
            _ => "?".into(),
        };
        *seen.entry(key).or_insert(0) += 1;
    }
    seen
}

/// [`weir_lab::testing::eventually`] within 20 s (the agents program the
/// maps within a few reconcile ticks).
fn eventually<T: std::fmt::Debug>(
    what: &str,
    attempt: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    weir_lab::testing::eventually(what, Duration::from_secs(20), attempt, done)
}

fn all_ok(results: &[ClientResult]) -> bool {
    !results.is_empty() && results.iter().all(|r| r.ok)
}

#[test]
fn cluster_ip_balances_tcp_and_udp_over_backends_on_both_nodes() {
    let lab = lab_with_web("");
    let target = format!("tcp:{CLUSTER_IP}:80");
    eventually(
        "the service answers",
        || lab.pod_client("svc/client-n1", &target, 1).unwrap(),
        |r| all_ok(r),
    );
    // 300 connections from one pod: every backend serves, none starved.
    let results = lab.pod_client("svc/client-n1", &target, 300).unwrap();
    let seen = counts(&results);
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        ["svc/web-1", "svc/web-2", "svc/web-3"],
        "{seen:?}"
    );
    assert!(seen.values().all(|n| *n >= 50), "balanced: {seen:?}");
    // The application sees the service as its peer.
    assert!(results
        .iter()
        .all(|r| r.peer.as_deref() == Some("10.96.0.10:80")));
    // UDP, to the named target port, replies from the service address.
    let results = eventually(
        "UDP through the service",
        || {
            lab.pod_client("svc/client-n2", &format!("udp:{CLUSTER_IP}:53"), 60)
                .unwrap()
        },
        |r| all_ok(r),
    );
    assert!(counts(&results).len() >= 2, "{:?}", counts(&results));
    assert!(results
        .iter()
        .all(|r| r.peer.as_deref() == Some("10.96.0.10:53")));
    // A node's host processes use the service too.
    let results = lab.node_client("n2", &target, 30).unwrap();
    assert!(all_ok(&results), "{:?}", counts(&results));
}

#[test]
fn an_agent_restart_adopts_the_lb_maps_and_keeps_serving_manifest_dir() {
    // Ids with a gap, unlike what a fresh allocation would hand out: a
    // service on other backend ports takes the first ids, then web comes,
    // then the first one goes.
    // On the manifest directory: the frontend counts below are the
    // services as written, while on a real API server (the control plane)
    // the API server's own default/kubernetes Service adds a frontend and
    // every port of a NodePort Service gets a nodePort (web's `dns` port
    // two more frontends), so the counts would have to change.
    let mut lab = TestLab::up_manifest_dir(2).expect("lab up");
    let mut yaml = web_pods_yaml();
    let early = "apiVersion: v1\nkind: Service\nmetadata: {name: early, namespace: svc}\nspec:\n  clusterIP: 10.96.0.5\n  selector: {app: web}\n  ports:\n  - {port: 80, targetPort: 9090}\n";
    yaml.push_str(early);
    lab.apply_yaml(&yaml).expect("apply");
    // n1's frontend addresses; none while its agent is not answering.
    let frontends = |lab: &TestLab| -> Vec<String> {
        lab.weir("n1", &["-o", "json", "service", "list"])
            .ok()
            .filter(|out| out.status.success())
            .and_then(|out| serde_json::from_slice::<serde_json::Value>(&out.stdout).ok())
            .and_then(|list| {
                list["frontends"].as_array().map(|f| {
                    f.iter()
                        .map(|f| f["address"].as_str().unwrap_or_default().to_string())
                        .collect()
                })
            })
            .unwrap_or_default()
    };
    eventually("early is programmed", || frontends(&lab), |f| f.len() == 1);
    lab.apply_yaml(&web_service("")).unwrap();
    eventually("web is programmed", || frontends(&lab), |f| f.len() == 5);
    lab.delete_yaml(early).unwrap();
    eventually("early is gone", || frontends(&lab), |f| f.len() == 4);
    let target = format!("tcp:{CLUSTER_IP}:80");
    eventually(
        "the service answers",
        || lab.pod_client("svc/client-n1", &target, 1).unwrap(),
        |r| all_ok(r),
    );
    let before = weir_json(&lab, "n1", &["bpf", "lb", "list"]);
    lab.restart_agent("n1").unwrap();
    // The new agent's first pass adopts the ids it finds in the pinned maps
    // and rewrites nothing: the maps read back the same, ids included.
    eventually(
        "the restarted agent has programmed its services",
        || frontends(&lab),
        |f| f.len() == 4,
    );
    assert_eq!(weir_json(&lab, "n1", &["bpf", "lb", "list"]), before);
    // Not a single write: the new agent's counters are all zero after its
    // first (full) pass.
    // (The pass reports to Prometheus once it is over.)
    let operations = eventually(
        "the pass is reported",
        || {
            let metrics = lab.scrape_metrics("n1").unwrap_or_default();
            metrics
                .lines()
                .filter(|l| l.starts_with("weir_services_map_operations_total{"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        },
        // update and delete of the four IPv4 maps and the two IPv6 ones
        // (weir_lb6_services, weir_lb6_backends).
        |lines| lines.len() == 12,
    );
    assert!(
        operations.iter().all(|l| l.ends_with(" 0")),
        "{operations:?}"
    );
    // Connections only once the agent says it is ready: in tunnel mode
    // that includes its route to n2's pod CIDR (web-2, web-3). The route
    // may be new to this agent: n2 publishes its record once etcd answers,
    // and the first agent (checking its routes every 500 ms) may have
    // stopped before it saw it. Until the new one has listed the nodes and
    // installed it, a SYN to n2 finds no route on n1 (ENETUNREACH).
    eventually(
        "the restarted agent is ready",
        || lab.agent_ready("n1"),
        |ready| *ready,
    );
    let results = lab.pod_client("svc/client-n1", &target, 60).unwrap();
    assert!(all_ok(&results), "{:?}", counts(&results));
    assert_eq!(counts(&results).len(), 3, "{:?}", counts(&results));
}

#[test]
fn pods_without_socket_lb_are_balanced_per_packet() {
    let lab = lab_with_web("");
    let target = format!("tcp:{CLUSTER_IP}:80");
    // The client runs in the pod's network namespace but outside the node's
    // cgroup: its connect() is not translated, so its packets reach the
    // pod's veth with the service address and are translated there.
    let pod = lab.pod("svc/client-n1").unwrap().clone();
    let client = weir_lab::Binaries::locate().unwrap().client;
    let run = |count| weir_lab::client::run(&client, &pod.netns, None, &target, count).unwrap();
    eventually("the service answers per packet", || run(1), |r| all_ok(r));
    let results = run(90);
    let seen = counts(&results);
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        ["svc/web-1", "svc/web-2", "svc/web-3"],
        "{seen:?}"
    );
    // Replies are translated back: the peer is the service.
    assert!(results
        .iter()
        .all(|r| r.peer.as_deref() == Some("10.96.0.10:80")));
    let udp = weir_lab::client::run(
        &client,
        &pod.netns,
        None,
        &format!("udp:{CLUSTER_IP}:53"),
        30,
    )
    .unwrap();
    assert!(all_ok(&udp), "{:?}", counts(&udp));
    assert!(udp
        .iter()
        .all(|r| r.peer.as_deref() == Some("10.96.0.10:53")));
}

#[test]
fn node_port_from_a_node_and_from_outside_the_cluster() {
    let lab = lab_with_web("");
    let n1 = lab.state().node("n1").unwrap().underlay_ip;
    let target = format!("tcp:{n1}:{NODE_PORT}");
    eventually(
        "NodePort from the node's own host",
        || lab.node_client("n1", &target, 1).unwrap(),
        |r| all_ok(r),
    );
    // From the outside world: per-packet NAT on n1's device; web-2 and
    // web-3 live on n2 (SNAT to n1, redirected), web-1 on n1 (client
    // source kept).
    let results = eventually(
        "NodePort from outside",
        || lab.world_client(&target, 60).unwrap(),
        |r| all_ok(r),
    );
    let seen = counts(&results);
    assert_eq!(
        seen.len(),
        3,
        "every backend reached from outside: {seen:?}"
    );
    assert!(results
        .iter()
        .all(|r| r.peer.as_deref() == Some(target.trim_start_matches("tcp:"))));

    // A NodePort without backends: the node answers an outside client's SYN
    // with ICMP port unreachable, so its connect() is refused at once.
    let mut lab = lab;
    lab.apply_yaml(
        "apiVersion: v1\nkind: Service\nmetadata: {name: empty, namespace: svc}\nspec:\n  type: NodePort\n  clusterIP: 10.96.0.98\n  selector: {app: nobody}\n  ports:\n  - {port: 80, targetPort: 8080, nodePort: 30099}\n",
    )
    .unwrap();
    // Programmed first (before that, n1's own stack would refuse too).
    eventually(
        "the empty NodePort is programmed on n1",
        || weir_json(&lab, "n1", &["service", "list"]),
        |list| {
            list["frontends"].as_array().is_some_and(|f| {
                f.iter()
                    .any(|f| f["address"] == format!("{n1}:30099") && f["scope"] == "external")
            })
        },
    );
    let results = lab.world_client(&format!("tcp:{n1}:30099"), 3).unwrap();
    for r in &results {
        let error = r.error.as_deref().unwrap_or_default();
        assert!(error.contains("refused"), "refused, not timed out: {r:?}");
    }
}

#[test]
fn external_and_load_balancer_ips_from_outside_and_from_pods() {
    let mut lab = TestLab::up(2).expect("lab up");
    let mut yaml = namespace_yaml("svc");
    yaml.push_str(&backend_yaml("web-1", "n1", "web"));
    yaml.push_str(&backend_yaml("web-2", "n2", "web"));
    yaml.push_str(&client_yaml("n1"));
    yaml.push_str(
        "apiVersion: v1\nkind: Service\nmetadata: {name: lb, namespace: svc}\nspec:\n  type: LoadBalancer\n  clusterIP: 10.96.0.40\n  externalIPs: [198.51.100.10]\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: http, nodePort: 30040}\nstatus:\n  loadBalancer:\n    ingress: [{ip: 198.51.100.20}]\n",
    );
    lab.apply_yaml(&yaml).unwrap();
    // The outside world's router sends the external IP to n1 and the
    // load-balancer IP to n2 (as announcements would).
    lab.route_from_world("198.51.100.10/32", "n1").unwrap();
    lab.route_from_world("198.51.100.20/32", "n2").unwrap();
    for address in ["198.51.100.10", "198.51.100.20"] {
        let target = format!("tcp:{address}:80");
        let results = eventually(
            "the address answers from outside",
            || lab.world_client(&target, 40).unwrap(),
            |r| all_ok(r),
        );
        assert_eq!(counts(&results).len(), 2, "{:?}", counts(&results));
        assert!(results
            .iter()
            .all(|r| r.peer.as_deref() == Some(&format!("{address}:80")[..])));
        // Pods reach it too (socket LB, internal scope).
        let results = lab.pod_client("svc/client-n1", &target, 20).unwrap();
        assert!(all_ok(&results), "{:?}", counts(&results));
    }
}

#[test]
fn external_traffic_policy_local_keeps_outside_clients_on_local_backends() {
    let lab = lab_with_web("  externalTrafficPolicy: Local\n");
    let n1 = lab.state().node("n1").unwrap().underlay_ip;
    let n2 = lab.state().node("n2").unwrap().underlay_ip;
    let results = eventually(
        "NodePort on n1 from outside",
        || {
            lab.world_client(&format!("tcp:{n1}:{NODE_PORT}"), 30)
                .unwrap()
        },
        |r| all_ok(r),
    );
    assert_eq!(
        counts(&results).keys().cloned().collect::<Vec<_>>(),
        ["svc/web-1"],
        "only n1's backend"
    );
    let results = eventually(
        "NodePort on n2 from outside",
        || {
            lab.world_client(&format!("tcp:{n2}:{NODE_PORT}"), 30)
                .unwrap()
        },
        |r| all_ok(r),
    );
    let seen = counts(&results);
    assert!(
        seen.keys().all(|k| k == "svc/web-2" || k == "svc/web-3"),
        "only n2's backends: {seen:?}"
    );
    // In-cluster clients still reach every backend through the NodePort.
    let results = lab
        .pod_client("svc/client-n1", &format!("tcp:{n1}:{NODE_PORT}"), 90)
        .unwrap();
    assert_eq!(counts(&results).len(), 3, "{:?}", counts(&results));
}

#[test]
fn session_affinity_backend_deletion_and_a_service_without_backends() {
    let mut lab = lab_with_web(
        "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n",
    );
    let target = format!("tcp:{CLUSTER_IP}:80");
    let results = eventually(
        "the service answers",
        || lab.pod_client("svc/client-n1", &target, 30).unwrap(),
        |r| all_ok(r),
    );
    assert_eq!(
        counts(&results).len(),
        1,
        "one backend per client: {:?}",
        counts(&results)
    );
    let sticky = results[0].reply.clone().unwrap();

    // Deleting the backend the client sticks to: it is published
    // terminating, then removed; new connections go elsewhere.
    assert!(lab.delete_pod(&sticky).unwrap());
    let results = eventually(
        "connections avoid the deleted backend",
        || lab.pod_client("svc/client-n1", &target, 30).unwrap(),
        |r| all_ok(r),
    );
    assert!(
        !counts(&results).contains_key(&sticky),
        "{sticky} still served: {:?}",
        counts(&results)
    );

    // A service whose selector matches nothing refuses at once.
    lab.apply_yaml(
        "apiVersion: v1\nkind: Service\nmetadata: {name: empty, namespace: svc}\nspec:\n  clusterIP: 10.96.0.99\n  selector: {app: nobody}\n  ports:\n  - {port: 80, targetPort: 8080}\n",
    )
    .unwrap();
    let results = eventually(
        "the empty service refuses",
        || {
            lab.pod_client("svc/client-n1", "tcp:10.96.0.99:80", 1)
                .unwrap()
        },
        |r| r[0].error.as_deref().is_some_and(|e| e.contains("refused")),
    );
    assert!(results[0].connect_us.is_none());
    // Counted: the refusals as drops with their reason, the services.
    let metrics = lab.scrape_metrics("n1").unwrap();
    let value = |prefix: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        value("weir_drop_count_total{direction=\"egress\",reason=\"Service backend not found\"}")
            >= 1.0,
        "{metrics}"
    );
    assert!(value("weir_services_frontends ") >= 4.0, "{metrics}");
    assert_eq!(value("weir_services_map_write_failures_total "), 0.0);
    // The refusal is in the flow log, named after the service.
    let server = weir_lab::hubble_socket(lab.state().node("n1").unwrap());
    let out = lab
        .weir(
            "n1",
            &[
                "-o",
                "json",
                "observe",
                "--server",
                server.to_str().unwrap(),
                "--type",
                "drop",
                "--last",
                "100",
            ],
        )
        .unwrap();
    let flows = String::from_utf8_lossy(&out.stdout);
    let refused = flows
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        // web's own refusals, while its backends were deleted, may come
        // first: the empty service's is the one to 10.96.0.99.
        .find(|f| {
            f["drop_reason_desc"] == "SERVICE_BACKEND_NOT_FOUND"
                && f["IP"]["destination"] == "10.96.0.99"
        })
        .unwrap_or_else(|| panic!("no refusal to 10.96.0.99 in the flow log: {flows}"));
    assert_eq!(refused["destination_service"]["name"], "empty", "{refused}");
    assert_eq!(refused["destination_service"]["namespace"], "svc");
    // ... and after the pod that connected (the socket's namespace names
    // it), with its address and identity.
    let client = lab.pod("svc/client-n1").unwrap();
    assert_eq!(refused["source"]["namespace"], "svc", "{refused}");
    assert_eq!(refused["source"]["pod_name"], "client-n1", "{refused}");
    assert_eq!(refused["IP"]["source"], client.ip.to_string(), "{refused}");
    assert!(
        refused["source"]["identity"].as_u64().unwrap_or(0) >= 256,
        "a pod identity, not reserved: {refused}"
    );
    // No flow of the node, of any kind, has a source nobody can name: a
    // lab pod's address always comes with the pod.
    let out = lab
        .weir(
            "n1",
            &[
                "-o",
                "json",
                "observe",
                "--server",
                server.to_str().unwrap(),
                "--last",
                "2000",
            ],
        )
        .unwrap();
    let flows = String::from_utf8_lossy(&out.stdout);
    for flow in flows
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
    {
        // Frames that are not IP (ARP) have no addresses at all.
        let Some(source) = flow["IP"]["source"].as_str() else {
            continue;
        };
        assert_ne!(source, "0.0.0.0", "a flow without a source: {flow}");
        if let Some(pod) = lab.pods().iter().find(|p| p.ip.to_string() == source) {
            assert_eq!(
                (
                    flow["source"]["namespace"].as_str(),
                    flow["source"]["pod_name"].as_str()
                ),
                (Some(pod.namespace.as_str()), Some(pod.name.as_str())),
                "{flow}"
            );
        }
    }
}

#[test]
fn network_policy_applies_to_the_backend_behind_a_service() {
    let mut lab = lab_with_web("");
    let target = format!("tcp:{CLUSTER_IP}:80");
    eventually(
        "the service answers",
        || lab.pod_client("svc/client-n2", &target, 1).unwrap(),
        |r| all_ok(r),
    );
    // Only web-1 admits the client on n2; the others admit nothing.
    lab.apply_yaml(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: svc}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Ingress]\n",
    )
    .unwrap();
    let results = eventually(
        "policy in force behind the service",
        || lab.pod_client("svc/client-n2", &target, 3).unwrap(),
        |r| r.iter().all(|x| !x.ok),
    );
    assert!(results.iter().all(|r| !r.ok));
}

/// `weir -o json ARGS` against `node`'s agent.
fn weir_json(lab: &TestLab, node: &str, args: &[&str]) -> serde_json::Value {
    let out = lab.weir(node, &[&["-o", "json"], args].concat()).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The backend address in each slot of the Maglev table of the ClusterIP
/// frontend, as n1's maps hold it.
fn maglev_slots(lab: &TestLab) -> Vec<String> {
    let maps = weir_json(lab, "n1", &["bpf", "lb", "list", "--maglev"]);
    let master = maps["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["frontend"] == format!("{CLUSTER_IP}:80") && s["slot"] == 0)
        .expect("the ClusterIP frontend is programmed")
        .clone();
    assert!(
        master["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "maglev"),
        "{master}"
    );
    let address_of: BTreeMap<u64, String> = maps["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["id"].as_u64().unwrap(),
                b["address"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let table = maps["maglev"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == master["maglev_table"].as_u64().unwrap_or(0))
        .expect("the table is listed")
        .clone();
    table["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| address_of[&id.as_u64().unwrap()].clone())
        .collect()
}

#[test]
fn maglev_remaps_about_one_in_n_when_a_backend_joins() {
    let mut lab = TestLab::up(2).expect("lab up");
    let mut yaml = web_pods_yaml();
    yaml.push_str(&web_service("").replace(
        "  name: web\n",
        "  name: web\n  annotations: {service.weir.io/lb-algorithm: maglev}\n",
    ));
    lab.apply_yaml(&yaml).unwrap();
    let target = format!("tcp:{CLUSTER_IP}:80");
    // All three backends: the EndpointSlice controller may list the last
    // one a moment after the pods are Ready.
    eventually(
        "the Maglev service answers from its 3 backends",
        || lab.pod_client("svc/client-n1", &target, 60).unwrap(),
        |r| all_ok(r) && counts(r).len() == 3,
    );

    // `weir service list` shows what was programmed.
    let services = weir_json(&lab, "n1", &["service", "list"]);
    let cluster_ip = services["frontends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["address"] == format!("{CLUSTER_IP}:80"))
        .expect("listed")
        .clone();
    assert_eq!(cluster_ip["service"], "svc/web");
    assert_eq!(cluster_ip["algorithm"], "maglev");
    assert_eq!(cluster_ip["backends"].as_array().unwrap().len(), 3);

    let before = eventually(
        "a full table over 3 backends",
        || maglev_slots(&lab),
        |slots| {
            slots
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                == 3
        },
    );
    lab.apply_yaml(&backend_yaml("web-4", "n1", "web")).unwrap();
    let after = eventually(
        "the table takes the 4th backend",
        || maglev_slots(&lab),
        |slots| {
            slots
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                == 4
        },
    );
    assert_eq!(before.len(), after.len());
    let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    let fraction = moved as f64 / before.len() as f64;
    // Ideal is 1/4 (every moved slot goes to the new backend).
    assert!(
        (0.15..=0.35).contains(&fraction),
        "{moved} of {} slots moved ({fraction:.3})",
        before.len()
    );
    let new_backend = after
        .iter()
        .find(|a| !before.contains(a))
        .expect("a new backend")
        .clone();
    let moved_elsewhere = before
        .iter()
        .zip(&after)
        .filter(|(a, b)| a != b && **b != new_backend)
        .count();
    assert!(
        moved_elsewhere * 50 <= before.len(),
        "slots moved between old backends: {moved_elsewhere}"
    );
}
