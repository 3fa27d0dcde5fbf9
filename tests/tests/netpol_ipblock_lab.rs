//! NetworkPolicy `ipBlock` matching pod addresses (issue 15), over real
//! sockets in a 2-node lab with the upstream e2e model's pods (x, y, z ×
//! a, b, c; TCP and UDP on 80 and 81): the Kubernetes API defines an
//! `ipBlock` by address, so a CIDR covering a pod's address matches that
//! pod, with `except` carving out sub-ranges, for ingress and egress, ORed
//! with the rule's other peers and combined with its ports. The policies
//! are built from the pods' addresses once the pods exist. Then pod churn
//! inside a covered range (a pod deleted, a new one with another identity
//! taking its address) and a pod reached through a ClusterIP. WeirNetwork-
//! Policy `toCIDR` keeps Cilium's meaning (outside the cluster only).

use std::time::{Duration, Instant};

use weir_lab::probe::{matrix_with_timeout, probe_with_timeout, render_table, ProbeResult, Target};
use weir_lab::state::PodRecord;
use weir_lab::testing::{namespace_yaml, netpol_cluster_yaml, pod_yaml, TestLab};

const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(15);

const ALL_TARGETS: [Target; 4] = [
    Target::Tcp(80),
    Target::Tcp(81),
    Target::Udp(80),
    Target::Udp(81),
];

/// Expected connectivity: (source key, destination key, target).
type Expect = Box<dyn Fn(&str, &str, Target) -> bool>;

/// Waits until the lab's truth tables for every target equal `expect` (a
/// pod always reaches itself) or the timeout passes; returns the mismatch
/// report, if any.
fn converge(lab: &TestLab, expect: &Expect) -> Option<String> {
    let names: Vec<String> = lab.pods().iter().map(|p| p.key()).collect();
    let expected = |r: &ProbeResult| r.from == r.to || expect(&r.from, &r.to, r.target);
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let results = matrix_with_timeout(lab.pods(), &ALL_TARGETS, PROBE_TIMEOUT);
        if results.iter().all(|r| r.connected == expected(r)) {
            return None;
        }
        if Instant::now() > deadline {
            let mut report = String::new();
            for target in ALL_TARGETS {
                let want: Vec<ProbeResult> = results
                    .iter()
                    .filter(|r| r.target == target)
                    .map(|r| ProbeResult {
                        connected: expected(r),
                        ..r.clone()
                    })
                    .collect();
                report.push_str(&format!(
                    "expected:\n{}actual:\n{}\n",
                    render_table(&names, &want, target),
                    render_table(&names, &results, target)
                ));
            }
            return Some(report);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ip(lab: &TestLab, key: &str) -> String {
    lab.pod(key).unwrap().ip.to_string()
}

fn network_policy(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}---\n"
    )
}

struct Scenario {
    name: &'static str,
    yaml: String,
    expect: Expect,
}

/// The examples of issue 15 (upstream e2e cases and the API reference's),
/// with the pods' addresses filled in.
fn scenarios(lab: &TestLab) -> Vec<Scenario> {
    let (xb, yb, yc) = (ip(lab, "x/b"), ip(lab, "y/b"), ip(lab, "y/c"));
    vec![
        Scenario {
            // upstream: should allow egress access to server in CIDR block
            name: "egress to a pod's /32",
            yaml: network_policy(
                "x",
                "to-yb",
                &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{{ipBlock: {{cidr: {yb}/32}}}}]\n"),
            ),
            expect: Box::new(|s, d, _| s != "x/a" || d == "y/b"),
        },
        Scenario {
            // upstream: should enforce except clause while egress access to
            // server in CIDR block
            name: "egress to 0.0.0.0/0 except a pod",
            yaml: network_policy(
                "x",
                "all-but-xb",
                &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{{ipBlock: {{cidr: 0.0.0.0/0, except: [{xb}/32]}}}}]\n"),
            ),
            expect: Box::new(|s, d, _| s != "x/a" || d != "x/b"),
        },
        Scenario {
            // upstream: should ensure an IP overlapping both IPBlock.CIDR and
            // IPBlock.Except is allowed (by a later, more specific policy)
            name: "an excepted pod allowed by another policy's /32",
            yaml: format!(
                "{}{}",
                network_policy(
                    "x",
                    "all-but-xb",
                    &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{{ipBlock: {{cidr: 0.0.0.0/0, except: [{xb}/32]}}}}]\n"),
                ),
                network_policy(
                    "x",
                    "to-xb",
                    &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{{ipBlock: {{cidr: {xb}/32}}}}]\n"),
                ),
            ),
            expect: Box::new(|_, _, _| true),
        },
        Scenario {
            name: "ingress from 0.0.0.0/0 except a pod",
            yaml: network_policy(
                "x",
                "from-all-but-yb",
                &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Ingress]\n  ingress:\n  - from: [{{ipBlock: {{cidr: 0.0.0.0/0, except: [{yb}/32]}}}}]\n"),
            ),
            expect: Box::new(|s, d, _| d != "x/a" || s != "y/b"),
        },
        Scenario {
            name: "egress: an ipBlock rule (any port) beside a podSelector rule with a port",
            yaml: network_policy(
                "x",
                "two-rules",
                &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{{ipBlock: {{cidr: {yb}/32}}}}]\n  - to: [{{podSelector: {{matchLabels: {{pod: c}}}}}}]\n    ports: [{{port: 80, protocol: TCP}}]\n"),
            ),
            expect: Box::new(|s, d, t| {
                s != "x/a" || d == "y/b" || (d == "x/c" && t == Target::Tcp(80))
            }),
        },
        Scenario {
            name: "ingress: an ipBlock ORed with a podSelector in one rule, on UDP 81",
            yaml: network_policy(
                "x",
                "udp81",
                &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Ingress]\n  ingress:\n  - from: [{{ipBlock: {{cidr: {yc}/32}}}}, {{podSelector: {{matchLabels: {{pod: b}}}}}}]\n    ports: [{{port: 81, protocol: UDP}}]\n"),
            ),
            expect: Box::new(|s, d, t| {
                d != "x/a" || ((s == "y/c" || s == "x/b") && t == Target::Udp(81))
            }),
        },
        Scenario {
            // Weir's own CIDR peers keep Cilium's meaning: outside the
            // cluster only, so x/a reaches no pod.
            name: "WeirNetworkPolicy toCIDR of a pod's /32 matches no pod",
            yaml: format!(
                "apiVersion: weir.io/v1\nkind: WeirNetworkPolicy\nmetadata: {{name: to-cidr, namespace: x}}\nspec:\n  endpointSelector: {{matchLabels: {{pod: a}}}}\n  egress:\n  - toCIDR: [{yb}/32]\n---\n"
            ),
            expect: Box::new(|s, _, _| s != "x/a"),
        },
    ]
}

#[test]
fn ip_blocks_match_pod_addresses_over_real_sockets() {
    let mut lab = TestLab::up(2).unwrap();
    lab.apply_yaml(&netpol_cluster_yaml()).unwrap();
    let everything: Expect = Box::new(|_, _, _| true);
    if let Some(report) = converge(&lab, &everything) {
        panic!("no policy: all allowed\n{report}");
    }
    let mut failures = Vec::new();
    for scenario in scenarios(&lab) {
        let started = Instant::now();
        lab.apply_yaml(&scenario.yaml).unwrap();
        match converge(&lab, &scenario.expect) {
            None => eprintln!(
                "ok   {} ({} ms)",
                scenario.name,
                started.elapsed().as_millis()
            ),
            Some(report) => failures.push(format!("FAIL {}\n{report}", scenario.name)),
        }
        lab.delete_yaml(&scenario.yaml).unwrap();
        if let Some(report) = converge(&lab, &everything) {
            failures.push(format!("FAIL after deleting {}\n{report}", scenario.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Probes each `(source, destination, target, expected)` until all hold
/// or the timeout passes; returns what did not hold.
fn settle(lab: &TestLab, checks: &[(&str, &str, Target, bool)]) -> Vec<String> {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let wrong: Vec<String> = checks
            .iter()
            .filter(|(src, dst, target, want)| {
                let reached = probe_with_timeout(
                    lab.pod(src).unwrap(),
                    lab.pod(dst).unwrap(),
                    *target,
                    PROBE_TIMEOUT,
                )
                .connected;
                reached != *want
            })
            .map(|(src, dst, target, want)| {
                format!("{src} -> {dst} {target:?}: expected connected={want}")
            })
            .collect();
        if wrong.is_empty() || Instant::now() > deadline {
            return wrong;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `weir policy trace --src SRC --dst DST --port PORT` on `node`:
/// (allowed, output).
fn trace(lab: &TestLab, node: &str, src: &str, dst: &str, port: &str) -> (bool, String) {
    let out = lab
        .weir(
            node,
            &[
                "policy", "trace", "--src", src, "--dst", dst, "--port", port,
            ],
        )
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Pod churn inside a covered range: the range is the pod CIDR of y/b's
/// node, which x/a may reach (egress ipBlock) and which x/c excepts from
/// everything it admits (ingress ipBlock with except). y/b is deleted and a
/// pod with labels no policy names is created on each node: the one inside
/// the range is reachable from x/a and refused by x/c as soon as it is up,
/// the one outside the other way round, with no policy changed.
#[test]
fn pod_churn_inside_a_covered_range_takes_effect() {
    let mut lab = TestLab::up(2).unwrap();
    lab.apply_yaml(&netpol_cluster_yaml()).unwrap();
    let old: PodRecord = lab.pod("y/b").unwrap().clone();
    let inside_node = old.node.clone();
    let outside_node = if inside_node == "n1" { "n2" } else { "n1" };
    let range: ipnetwork::Ipv4Network = lab
        .state()
        .node(&inside_node)
        .unwrap()
        .pod_cidr
        .parse()
        .unwrap();
    let outside_pod = lab
        .pods()
        .iter()
        .find(|p| p.node == outside_node && !["x/a", "x/c"].contains(&p.key().as_str()))
        .unwrap()
        .key();
    let policies = format!(
        "{}{}",
        network_policy(
            "x",
            "to-range",
            &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{{ipBlock: {{cidr: {range}}}}}]\n"),
        ),
        network_policy(
            "x",
            "from-all-but-range",
            &format!("  podSelector: {{matchLabels: {{pod: c}}}}\n  policyTypes: [Ingress]\n  ingress:\n  - from: [{{ipBlock: {{cidr: 0.0.0.0/0, except: [{range}]}}}}]\n"),
        ),
    );
    lab.apply_yaml(&policies).unwrap();
    let mut checks = Vec::new();
    for target in [Target::Tcp(80), Target::Udp(81)] {
        checks.extend([
            ("x/a", "y/b", target, true),
            ("x/a", outside_pod.as_str(), target, false),
            ("y/b", "x/c", target, false),
            (outside_pod.as_str(), "x/c", target, true),
        ]);
    }
    let wrong = settle(&lab, &checks);
    assert!(wrong.is_empty(), "before the churn: {wrong:#?}");
    // `weir policy trace` on either node names the block and the except.
    let yb = old.ip;
    for node in ["n1", "n2"] {
        let (allowed, text) = trace(&lab, node, "x/a", "y/b", "80/tcp");
        assert!(allowed, "{node}: {text}");
        assert!(
            text.contains("allowed by NetworkPolicy x/to-range (spec.egress[0])")
                && text.contains(&format!(
                    "ipBlock {range} of NetworkPolicy x/to-range (spec.egress[0]) covers {yb}"
                )),
            "{node}: {text}"
        );
        let (allowed, text) = trace(&lab, node, "y/b", "x/c", "81/udp");
        assert!(!allowed, "{node}: {text}");
        assert!(
            text.contains("default deny")
                && text.contains(&format!(
                    "ipBlock 0.0.0.0/0 of NetworkPolicy x/from-all-but-range (spec.ingress[0]) contains {yb} but its except {range} leaves it out"
                )),
            "{node}: {text}"
        );
    }

    lab.delete_yaml(&pod_yaml("y", "b", &inside_node, &[80, 81]))
        .unwrap();
    let mut yaml = pod_yaml("y", "d", &inside_node, &[80, 81]);
    yaml.push_str(&pod_yaml("z", "d", outside_node, &[80, 81]));
    lab.apply_yaml(&yaml).unwrap();
    assert!(range.contains(lab.pod("y/d").unwrap().ip));
    assert!(!range.contains(lab.pod("z/d").unwrap().ip));
    let mut checks = Vec::new();
    for target in [Target::Tcp(80), Target::Udp(81)] {
        checks.extend([
            ("x/a", "y/d", target, true),
            ("x/a", "z/d", target, false),
            ("y/d", "x/c", target, false),
            ("z/d", "x/c", target, true),
        ]);
    }
    let wrong = settle(&lab, &checks);
    assert!(wrong.is_empty(), "after the churn: {wrong:#?}");
    // Every node's ipcache gives the new pods the address identity of the
    // most specific block around them: the range for y/d, 0.0.0.0/0 for z/d.
    for node in ["n1", "n2"] {
        let y_d = address_identity(&lab, node, &ip(&lab, "y/d"));
        let z_d = address_identity(&lab, node, &ip(&lab, "z/d"));
        assert!(y_d != 0 && z_d != 0 && y_d != z_d, "{node}: {y_d} {z_d}");
    }
}

/// The address identity `node`'s ipcache holds for the pod address `ip`
/// (`weir bpf ipcache list -o json`).
fn address_identity(lab: &TestLab, node: &str, ip: &str) -> u64 {
    let out = lab
        .weir(node, &["-o", "json", "bpf", "ipcache", "list"])
        .unwrap();
    assert!(out.status.success());
    let prefix = format!("{ip}/32");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|entry| entry["prefix"] == prefix.as_str())
        .and_then(|entry| entry["address_identity"].as_u64())
        .unwrap_or_else(|| panic!("{node}: no ipcache entry for {prefix}"))
}

/// Egress is decided after service translation: a pod reached through a
/// ClusterIP matches an ipBlock of its own address.
#[test]
fn a_pod_behind_a_cluster_ip_matches_an_ip_block_of_its_address() {
    const CLUSTER_IP: &str = "10.96.0.20";
    let mut lab = TestLab::up(2).unwrap();
    let mut yaml = namespace_yaml("svc");
    yaml.push_str("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: svc\n  labels: {app: web}\nspec:\n  nodeName: n2\n  containers:\n  - name: c\n    ports:\n    - {name: http, containerPort: 8080, protocol: TCP}\n    - {name: dns-ish, containerPort: 8080, protocol: UDP}\n---\n");
    yaml.push_str("apiVersion: v1\nkind: Pod\nmetadata:\n  name: client\n  namespace: svc\n  labels: {app: client}\nspec:\n  nodeName: n1\n  containers:\n  - name: c\n---\n");
    yaml.push_str(&format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: svc\nspec:\n  clusterIP: {CLUSTER_IP}\n  selector: {{app: web}}\n  ports:\n  - {{name: http, port: 80, targetPort: http, protocol: TCP}}\n  - {{name: dns, port: 53, targetPort: dns-ish, protocol: UDP}}\n---\n"));
    lab.apply_yaml(&yaml).unwrap();
    let web = ip(&lab, "svc/web");
    let tcp = format!("tcp:{CLUSTER_IP}:80");
    let udp = format!("udp:{CLUSTER_IP}:53");
    let all_ok = |lab: &TestLab, target: &str, want: bool| {
        let deadline = Instant::now() + CONVERGE_TIMEOUT;
        loop {
            let results = lab.pod_client("svc/client", target, 3).unwrap();
            if results.iter().all(|r| r.ok == want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{target}: expected ok={want}: {results:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    all_ok(&lab, &tcp, true);
    all_ok(&lab, &udp, true);
    // The client may only reach the backend's address: through the service
    // too (the policy sees the backend, not the ClusterIP).
    let to_web = network_policy(
        "svc",
        "to-web",
        &format!("  podSelector: {{matchLabels: {{app: client}}}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{{ipBlock: {{cidr: {web}/32}}}}]\n"),
    );
    lab.apply_yaml(&to_web).unwrap();
    all_ok(&lab, &tcp, true);
    all_ok(&lab, &udp, true);
    // Excepting the backend's address closes the service to the client.
    lab.apply_yaml(&network_policy(
        "svc",
        "to-web",
        &format!("  podSelector: {{matchLabels: {{app: client}}}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{{ipBlock: {{cidr: 0.0.0.0/0, except: [{web}/32]}}}}]\n"),
    ))
    .unwrap();
    all_ok(&lab, &tcp, false);
    all_ok(&lab, &udp, false);
}
