//! The model of the upstream Kubernetes network-policy e2e suite, over real
//! sockets in a 2-node lab: namespaces x, y, z labelled `ns=<name>`, pods a,
//! b, c in each labelled `pod=<name>` and spread over both nodes, servers on
//! ports 80 and 81 for TCP and UDP. For each scenario the full 9x9 truth
//! table per port and protocol is compared with the expected one (waiting,
//! bounded, for the agents to converge); a mismatch prints both tables.
//! Traffic from a pod to itself never leaves the pod, so it is always
//! allowed, as upstream's "loopback" rule says.

use std::time::{Duration, Instant};

use weir_lab::probe::{matrix_family, matrix_with_timeout, render_table, ProbeResult, Target};
use weir_lab::testing::TestLab;
use weir_lab::IpFamily;
use weir_types::NamespacedName;

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
struct P {
    ns: &'static str,
    pod: &'static str,
}

impl P {
    fn parse(key: &str) -> P {
        let key: NamespacedName = key.parse().unwrap();
        let ns = NAMESPACES
            .into_iter()
            .find(|n| *n == key.namespace)
            .unwrap();
        let pod = PODS.into_iter().find(|p| *p == key.name).unwrap();
        P { ns, pod }
    }
    fn is(&self, key: &str) -> bool {
        NamespacedName::new(self.ns, self.pod).to_string() == key
    }
}

fn cluster_yaml() -> String {
    weir_lab::testing::netpol_cluster_yaml()
}

type Expect = fn(P, P, Target) -> bool;

const ALL_TARGETS: [Target; 4] = [
    Target::Tcp(80),
    Target::Tcp(81),
    Target::Udp(80),
    Target::Udp(81),
];

/// Waits until the lab's truth tables for `targets` equal `expect` (or the
/// timeout passes) and returns the mismatch report, if any.
fn converge(lab: &TestLab, targets: &[Target], expect: Expect) -> Option<String> {
    converge_over(lab, IpFamily::V4, targets, expect)
}

/// [`converge`] over the pods' addresses of `family`.
fn converge_over(
    lab: &TestLab,
    family: IpFamily,
    targets: &[Target],
    expect: Expect,
) -> Option<String> {
    let names: Vec<String> = lab.pods().iter().map(|p| p.key()).collect();
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let results = matrix_family(lab.pods(), targets, family, PROBE_TIMEOUT);
        let wrong: Vec<&ProbeResult> = results
            .iter()
            .filter(|r| {
                let (s, d) = (P::parse(&r.from), P::parse(&r.to));
                let expected = s == d || expect(s, d, r.target);
                r.connected != expected
            })
            .collect();
        if wrong.is_empty() {
            return None;
        }
        if Instant::now() > deadline {
            let mut report = String::new();
            for target in targets {
                let expected: Vec<ProbeResult> = results
                    .iter()
                    .filter(|r| r.target == *target)
                    .map(|r| {
                        let (s, d) = (P::parse(&r.from), P::parse(&r.to));
                        ProbeResult {
                            connected: s == d || expect(s, d, *target),
                            ..r.clone()
                        }
                    })
                    .collect();
                report.push_str(&format!(
                    "expected:\n{}actual:\n{}\n",
                    render_table(&names, &expected, *target),
                    render_table(&names, &results, *target)
                ));
            }
            return Some(report);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct Scenario {
    name: &'static str,
    yaml: &'static str,
    targets: &'static [Target],
    expect: Expect,
}

const TCP80: &[Target] = &[Target::Tcp(80)];

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "default-deny ingress in x",
            yaml: "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: x}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n",
            targets: &ALL_TARGETS,
            expect: |_, d, _| d.ns != "x",
        },
        Scenario {
            name: "default-deny egress in x",
            yaml: "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: x}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n",
            targets: &ALL_TARGETS,
            expect: |s, _, _| s.ns != "x",
        },
        Scenario {
            name: "deny all, both directions, in x",
            yaml: "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: x}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress, Egress]\n",
            targets: &ALL_TARGETS,
            expect: |s, d, _| s.ns != "x" && d.ns != "x",
        },
        Scenario {
            name: "allow from the same namespace",
            yaml: "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: same-ns, namespace: x}\nspec:\n  podSelector: {}\n  ingress:\n  - from: [{podSelector: {}}]\n",
            targets: &ALL_TARGETS,
            expect: |s, d, _| d.ns != "x" || s.ns == "x",
        },
        Scenario {
            name: "namespaceSelector",
            yaml: "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: from-y, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {ns: y}}}]\n",
            targets: &ALL_TARGETS,
            expect: |s, d, _| !d.is("x/a") || s.ns == "y",
        },
        Scenario {
            name: "podSelector AND namespaceSelector in one peer",
            yaml: "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: and, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchExpressions: [{key: ns, operator: In, values: [y, z]}]}\n      podSelector: {matchLabels: {pod: b}}\n",
            targets: &ALL_TARGETS,
            expect: |s, d, _| !d.is("x/a") || s.is("y/b") || s.is("z/b"),
        },
        Scenario {
            name: "two peers are ORed",
            yaml: "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: or, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n    - podSelector: {matchLabels: {pod: b}}\n",
            targets: &ALL_TARGETS,
            expect: |s, d, _| !d.is("x/a") || s.ns == "y" || s.is("x/b"),
        },
        Scenario {
            name: "matchExpressions NotIn",
            yaml: "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: not-y, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: NotIn, values: [y]}]}}]\n",
            targets: &ALL_TARGETS,
            expect: |s, d, _| !d.is("x/a") || s.ns != "y",
        },
        Scenario {
            name: "named port",
            yaml: "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: named, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports: [{port: serve-81-udp, protocol: UDP}]\n",
            targets: &ALL_TARGETS,
            expect: |_, d, t| !d.is("x/a") || t == Target::Udp(81),
        },
        Scenario {
            name: "endPort range",
            yaml: "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: range, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports: [{port: 80, endPort: 81, protocol: TCP}]\n",
            targets: &ALL_TARGETS,
            expect: |_, d, t| !d.is("x/a") || matches!(t, Target::Tcp(_)),
        },
        Scenario {
            name: "multiple policies add up",
            yaml: "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: from-y, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {ns: y}}}]\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: from-z, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {ns: z}}}]\n",
            targets: &ALL_TARGETS,
            expect: |s, d, _| !d.is("x/a") || s.ns != "x",
        },
        Scenario {
            name: "ingress and egress on the same pod",
            yaml: "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: both, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Ingress, Egress]\n  ingress:\n  - from: [{podSelector: {matchLabels: {pod: b}}}]\n  egress:\n  - to: [{namespaceSelector: {matchLabels: {ns: y}}}]\n",
            targets: &ALL_TARGETS,
            expect: |s, d, _| (!d.is("x/a") || s.is("x/b")) && (!s.is("x/a") || d.ns == "y"),
        },
        Scenario {
            name: "UDP-only rule",
            yaml: "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: udp, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports: [{port: 80, protocol: UDP}]\n",
            targets: &ALL_TARGETS,
            expect: |_, d, t| !d.is("x/a") || t == Target::Udp(80),
        },
        Scenario {
            name: "Weir deny overrides an allow",
            yaml: "apiVersion: weir.io/v1\nkind: WeirNetworkPolicy\nmetadata: {name: deny-b, namespace: x}\nspec:\n  endpointSelector: {matchLabels: {pod: a}}\n  ingress:\n  - fromEndpoints: [{}]\n  ingressDeny:\n  - fromEndpoints: [{matchLabels: {pod: b}}]\n",
            targets: &ALL_TARGETS,
            // Namespaced fromEndpoints select only pods of x.
            expect: |s, d, _| !d.is("x/a") || (s.ns == "x" && !s.is("x/b")),
        },
        Scenario {
            name: "entities: egress only to world",
            yaml: "apiVersion: weir.io/v1\nkind: WeirClusterwideNetworkPolicy\nmetadata: {name: world-only}\nspec:\n  endpointSelector: {matchLabels: {pod: c}}\n  egress:\n  - toEntities: [world]\n",
            targets: &ALL_TARGETS,
            expect: |s, _, _| s.pod != "c",
        },
    ]
}

/// The scenario whose policy the 1.20 API server cannot carry (it drops
/// NetworkPolicy `endPort`, added in 1.21): it runs on the manifest
/// directory.
const ENDPORT_SCENARIO: &str = "endPort range";

#[test]
fn network_policy_scenarios_over_real_sockets() {
    let scenarios = scenarios()
        .into_iter()
        .filter(|s| s.name != ENDPORT_SCENARIO)
        .collect();
    run_scenarios(TestLab::up(2).unwrap(), IpFamily::V4, scenarios);
}

/// The same scenarios over IPv6, in a dual-stack lab (issue 19 item 2):
/// peers are classified by their IPv6 ipcache entries.
#[test]
fn network_policy_scenarios_over_ipv6() {
    let scenarios = scenarios()
        .into_iter()
        .filter(|s| s.name != ENDPORT_SCENARIO)
        .collect();
    run_scenarios(TestLab::up_dual_stack(2).unwrap(), IpFamily::V6, scenarios);
}

#[test]
fn endport_range_scenario_on_the_manifest_directory() {
    let scenarios: Vec<Scenario> = scenarios()
        .into_iter()
        .filter(|s| s.name == ENDPORT_SCENARIO)
        .collect();
    assert_eq!(scenarios.len(), 1);
    run_scenarios(
        TestLab::up_manifest_dir(2).unwrap(),
        IpFamily::V4,
        scenarios,
    );
}

/// Applies each scenario, compares the truth tables over `family`, deletes
/// it again and checks everything is allowed once more.
fn run_scenarios(mut lab: TestLab, family: IpFamily, scenarios: Vec<Scenario>) {
    lab.apply_yaml(&cluster_yaml()).unwrap();
    let mut failures = Vec::new();
    let converge = |lab: &TestLab, targets: &[Target], expect: Expect| {
        converge_over(lab, family, targets, expect)
    };
    assert!(
        converge(&lab, TCP80, |_, _, _| true).is_none(),
        "no policy: all allowed"
    );
    for scenario in scenarios {
        let started = Instant::now();
        lab.apply_yaml(scenario.yaml).unwrap();
        match converge(&lab, scenario.targets, scenario.expect) {
            None => eprintln!(
                "ok   {} over {family:?} ({} ms)",
                scenario.name,
                started.elapsed().as_millis()
            ),
            Some(report) => failures.push(format!("FAIL {}\n{report}", scenario.name)),
        }
        lab.delete_yaml(scenario.yaml).unwrap();
        if let Some(report) = converge(&lab, TCP80, |_, _, _| true) {
            failures.push(format!("FAIL after deleting {}\n{report}", scenario.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn relabelling_pods_and_namespaces_updates_enforcement() {
    let mut lab = TestLab::up(2).unwrap();
    lab.apply_yaml(&cluster_yaml()).unwrap();
    let policy = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: from-b-in-y, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n      podSelector: {matchLabels: {pod: b}}\n";
    lab.apply_yaml(policy).unwrap();
    let report = converge(&lab, TCP80, |s, d, _| !d.is("x/a") || s.is("y/b"));
    assert!(report.is_none(), "{}", report.unwrap());
    // Relabel pod y/c to pod=b: it is now allowed too.
    lab.apply_yaml("apiVersion: v1\nkind: Pod\nmetadata: {name: c, namespace: y, labels: {pod: b}}\nspec:\n  nodeName: n2\n  containers:\n  - name: c\n    ports:\n    - {name: serve-80-tcp, containerPort: 80, protocol: TCP}\n    - {name: serve-80-udp, containerPort: 80, protocol: UDP}\n    - {name: serve-81-tcp, containerPort: 81, protocol: TCP}\n    - {name: serve-81-udp, containerPort: 81, protocol: UDP}\n").unwrap();
    let report = converge(&lab, TCP80, |s, d, _| {
        !d.is("x/a") || s.is("y/b") || s.is("y/c")
    });
    assert!(report.is_none(), "pod relabelled:\n{}", report.unwrap());
    // Relabel namespace y: its pods no longer match the namespaceSelector.
    lab.apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: y, labels: {ns: why}}\n")
        .unwrap();
    let report = converge(&lab, TCP80, |_, d, _| !d.is("x/a"));
    assert!(
        report.is_none(),
        "namespace relabelled:\n{}",
        report.unwrap()
    );
}

/// Issue 17 item 2: established connections keep their verdict in
/// conntrack, stamped with the policy revision; a policy change moves the
/// revision, and the connection it no longer allows stops on its next
/// packet, while the one it still allows carries on. Two long-lived echo
/// connections into x/a, from y/a and y/b; then the policy narrows to y/a.
#[test]
fn a_policy_change_ends_the_established_connections_it_no_longer_allows() {
    use weir_lab::load::Streams;
    const ECHO_INTERVAL: Duration = Duration::from_millis(20);
    let mut lab = TestLab::up(2).unwrap();
    lab.apply_yaml(&cluster_yaml()).unwrap();
    let policy = |from: &str| {
        format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: echo, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}{from}}}]\n    ports: [{{port: 80, protocol: TCP}}, {{port: 7000, protocol: TCP}}, {{port: 7001, protocol: TCP}}]\n")
    };
    lab.apply_yaml(&policy("")).unwrap();
    let report = converge(&lab, TCP80, |s, d, _| !d.is("x/a") || s.ns == "y");
    assert!(report.is_none(), "{}", report.unwrap());
    let server = lab.pod("x/a").unwrap().clone();
    let open = |client: &str, port: u16| {
        let client = lab.pod(client).unwrap().netns.clone();
        Streams::open(&client, &server.netns, server.ip, port, 1, ECHO_INTERVAL).unwrap()
    };
    let (kept, revoked) = (open("y/a", 7000), open("y/b", 7001));
    std::thread::sleep(Duration::from_secs(1));
    lab.apply_yaml(&policy(", podSelector: {matchLabels: {pod: a}}"))
        .unwrap();
    let report = converge(&lab, TCP80, |s, d, _| !d.is("x/a") || s.is("y/a"));
    assert!(report.is_none(), "policy narrowed:\n{}", report.unwrap());
    // Longer than a connection waits for an echo: y/b's next message has
    // gone unanswered for that long by now.
    std::thread::sleep(Duration::from_secs(7));
    let kept = kept.finish().remove(0);
    let revoked = revoked.finish().remove(0);
    assert!(
        kept.broken.is_none() && kept.round_trips > 10,
        "the connection the new policy still allows carries on: {kept:?}"
    );
    let broken = revoked.broken.as_deref().unwrap_or_default();
    assert!(
        broken.contains("read the echo"),
        "the connection the new policy no longer allows stops: {revoked:?}"
    );
}

#[test]
fn an_invalid_policy_is_refused_whole_and_leaves_enforcement_unchanged() {
    let mut lab = TestLab::up(1).unwrap();
    lab.apply_yaml(&cluster_yaml().replace("nodeName: n2", "nodeName: n1"))
        .unwrap();
    lab.apply_yaml("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: x}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n").unwrap();
    let bad = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: bad, namespace: y}\nspec:\n  podSelector: {matchExpressions: [{key: pod, operator: Includes, values: [a]}]}\n  ingress:\n  - ports: [{port: 80, endPort: 79}]\n";
    let err = format!("{:#}", lab.apply_yaml(bad).unwrap_err());
    assert!(
        err.contains("unknown operator") || err.contains("Includes"),
        "{err}"
    );
    assert!(err.contains("endPort"), "every problem is reported: {err}");
    let report = converge(&lab, TCP80, |_, d, _| d.ns != "x");
    assert!(
        report.is_none(),
        "the policy in force stays in force:\n{}",
        report.unwrap()
    );
}

/// Runs `weir --socket <node's socket> args...` and returns (success, stdout).
fn weir(lab: &TestLab, node: &str, args: &[&str]) -> (bool, String) {
    let out = lab.weir(node, args).unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// x/a admits namespace y on TCP 80 but denies y/b.
fn web_and_no_yb(lab: &mut TestLab) {
    lab.apply_yaml(&cluster_yaml()).unwrap();
    lab.apply_yaml("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {ns: y}}}]\n    ports: [{port: 80, protocol: TCP}]\n---\napiVersion: weir.io/v1\nkind: WeirNetworkPolicy\nmetadata: {name: no-yb, namespace: x}\nspec:\n  endpointSelector: {matchLabels: {pod: a}}\n  ingressDeny:\n  - fromEndpoints: [{matchLabels: {pod: b, k8s:io.kubernetes.pod.namespace: y}}]\n").unwrap();
    let report = converge(lab, TCP80, |s, d, _| {
        !d.is("x/a") || s.is("y/a") || s.is("y/c")
    });
    assert!(report.is_none(), "{}", report.unwrap());
}

#[test]
fn weir_policy_get_and_trace_name_the_deciding_rule() {
    let mut lab = TestLab::up(2).unwrap();
    web_and_no_yb(&mut lab);

    // x/a lives on n1; ask n2, which must compile x/a's side itself.
    for node in ["n1", "n2"] {
        let (allowed, text) = weir(
            &lab,
            node,
            &[
                "policy", "trace", "--src", "y/a", "--dst", "x/a", "--port", "80/tcp",
            ],
        );
        assert!(allowed, "{node}: {text}");
        assert!(
            text.contains("allowed by NetworkPolicy x/web (spec.ingress[0])"),
            "{node}: {text}"
        );
        let (allowed, text) = weir(
            &lab,
            node,
            &[
                "policy", "trace", "--src", "y/b", "--dst", "x/a", "--port", "80/tcp",
            ],
        );
        assert!(!allowed, "{node}: {text}");
        assert!(
            text.contains("denied by WeirNetworkPolicy x/no-yb (spec.ingressDeny[0])"),
            "{node}: {text}"
        );
        let (allowed, text) = weir(
            &lab,
            node,
            &[
                "policy", "trace", "--src", "y/a", "--dst", "x/a", "--port", "81/tcp",
            ],
        );
        assert!(!allowed && text.contains("default deny"), "{node}: {text}");
    }
    let (ok, text) = weir(&lab, "n1", &["policy", "get"]);
    assert!(ok);
    assert!(
        text.contains("x/a") && text.contains("ingress enforced"),
        "{text}"
    );
}

/// On the manifest directory: the API server refuses this NetworkPolicy
/// (its own validation of the port), so only a file can bring it to the
/// agents.
#[test]
fn an_invalid_policy_file_is_rejected_with_its_reasons_manifest_dir() {
    let mut lab = TestLab::up_manifest_dir(2).unwrap();
    web_and_no_yb(&mut lab);

    // A policy that reaches an agent invalid (written straight into the
    // manifest directory, past the lab's own check) is rejected with its
    // reasons; what is in force stays in force.
    std::fs::write(
        lab.manifests_dir().join("bad.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: bad, namespace: y}\nspec:\n  podSelector: {}\n  ingress:\n  - ports: [{port: 70000}]\n",
    )
    .unwrap();
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let (_, text) = weir(&lab, "n1", &["policy", "get"]);
        if text.contains("rejected NetworkPolicy/y/bad") {
            assert!(
                text.contains("70000"),
                "the reason names the bad port: {text}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "rejection never shown: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let report = converge(&lab, TCP80, |s, d, _| {
        !d.is("x/a") || s.is("y/a") || s.is("y/c")
    });
    assert!(report.is_none(), "{}", report.unwrap());
}

#[test]
fn ip_block_with_except_toward_the_outside_world() {
    use weir_lab::probe::probe_with_timeout;
    use weir_lab::WORLD_ADDRESSES;
    let mut lab = TestLab::up(2).unwrap();
    lab.apply_yaml(&cluster_yaml()).unwrap();
    let (inside, excepted) = (
        lab.world_target(WORLD_ADDRESSES[0]),
        lab.world_target(WORLD_ADDRESSES[1]),
    );
    let reach = |lab: &TestLab, src: &str, dst: &weir_lab::state::PodRecord, target: Target| {
        probe_with_timeout(lab.pod(src).unwrap(), dst, target, PROBE_TIMEOUT).connected
    };
    for target in [Target::Tcp(80), Target::Udp(80)] {
        assert!(
            reach(&lab, "x/a", &inside, target),
            "no policy: the world is reachable"
        );
        assert!(reach(&lab, "x/a", &excepted, target));
    }
    // x/a may talk to 203.0.113.0/24 except 203.0.113.16/28 (which holds .20).
    lab.apply_yaml("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: to-world, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{ipBlock: {cidr: 203.0.113.0/24, except: [203.0.113.16/28]}}]\n").unwrap();
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let now = [
            reach(&lab, "x/a", &inside, Target::Tcp(80)),
            reach(&lab, "x/a", &excepted, Target::Tcp(80)),
            reach(&lab, "x/a", &inside, Target::Udp(80)),
            reach(&lab, "x/a", &excepted, Target::Udp(80)),
            reach(&lab, "x/b", &excepted, Target::Tcp(80)),
            reach(&lab, "x/a", lab.pod("y/a").unwrap(), Target::Tcp(80)),
        ];
        // Allowed inside the block, denied in the except, other pods
        // unaffected, and a pod outside the block not reachable (pods
        // inside a block are: netpol_ipblock_lab).
        if now == [true, false, true, false, true, false] {
            break;
        }
        assert!(Instant::now() < deadline, "ipBlock not enforced: {now:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn entity_cluster_admits_pods_but_not_the_world() {
    use weir_lab::probe::probe_with_timeout;
    use weir_lab::WORLD_ADDRESSES;
    let mut lab = TestLab::up(2).unwrap();
    lab.apply_yaml(&cluster_yaml()).unwrap();
    let world = lab.world_target(WORLD_ADDRESSES[0]);
    let from_world = |lab: &TestLab| {
        probe_with_timeout(
            &world,
            lab.pod("x/c").unwrap(),
            Target::Tcp(80),
            PROBE_TIMEOUT,
        )
        .connected
    };
    assert!(from_world(&lab), "without policy the world reaches x/c");
    lab.apply_yaml("apiVersion: weir.io/v1\nkind: WeirClusterwideNetworkPolicy\nmetadata: {name: cluster-in}\nspec:\n  endpointSelector: {matchLabels: {pod: c}}\n  ingress:\n  - fromEntities: [cluster]\n").unwrap();
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    while from_world(&lab) {
        assert!(Instant::now() < deadline, "the world still reaches x/c");
        std::thread::sleep(Duration::from_millis(100));
    }
    let report = converge(&lab, &ALL_TARGETS, |_, _, _| true);
    assert!(
        report.is_none(),
        "every pod still reaches every pod:\n{}",
        report.unwrap()
    );
}

/// Writes `text` over a policy's manifest the way the lab's apply does
/// (aside, then renamed), past the lab's own validation: how an invalid edit
/// reaches the agents. On the control plane it is applied through the API
/// server, which no admission webhook guards.
fn write_policy_file(lab: &TestLab, kind: &str, namespace: &str, name: &str, text: &str) {
    if lab.control_plane().is_ok() {
        weir_lab::testing::apply_past_validation(lab, text).unwrap();
        return;
    }
    let path = lab
        .manifests_dir()
        .join(format!("policies/{kind}/{namespace}/{name}.yaml"));
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

/// Waits (bounded) until `weir policy get` on `node` lists `object` as stale
/// with an error containing `error`, in text and in `-o json`.
fn wait_until_stale(lab: &TestLab, node: &str, object: &str, error: &str) {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let (_, text) = weir(lab, node, &["policy", "get"]);
        if text.contains(&format!("stale {object} (previous version in force)")) {
            assert!(text.contains(error), "the error is shown: {text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{object} never shown stale: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, json) = weir(lab, node, &["policy", "get", "-o", "json"]);
    assert!(ok, "{json}");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let stale = json["stale"].as_array().expect("a stale list");
    assert!(
        stale.iter().any(|s| s["object"] == object),
        "{object} in -o json: {json}"
    );
}

#[test]
fn an_ingress_deny_policy_that_becomes_invalid_keeps_denying() {
    let mut lab = TestLab::up(1).unwrap();
    lab.apply_yaml(&cluster_yaml().replace("nodeName: n2", "nodeName: n1"))
        .unwrap();
    let web = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {ns: y}}}]\n    ports: [{port: 80, protocol: TCP}]\n";
    let deny = "apiVersion: weir.io/v1\nkind: WeirNetworkPolicy\nmetadata: {name: no-yb, namespace: x}\nspec:\n  endpointSelector: {matchLabels: {pod: a}}\n  ingressDeny:\n  - fromEndpoints: [{matchLabels: {pod: b, k8s:io.kubernetes.pod.namespace: y}}]\n";
    lab.apply_yaml(web).unwrap();
    lab.apply_yaml(deny).unwrap();
    let denied: Expect = |s, d, _| !d.is("x/a") || s.is("y/a") || s.is("y/c");
    let report = converge(&lab, TCP80, denied);
    assert!(report.is_none(), "{}", report.unwrap());

    // An invalid edit (endPort below port): y/b stays denied, although the
    // allow of namespace y would admit it without the deny.
    let invalid = format!("{deny}    toPorts: [{{ports: [{{port: \"80\", endPort: 79}}]}}]\n");
    write_policy_file(&lab, "WeirNetworkPolicy", "x", "no-yb", &invalid);
    wait_until_stale(&lab, "n1", "WeirNetworkPolicy/x/no-yb", "endPort");
    let metrics = lab.scrape_metrics("n1").unwrap();
    assert!(
        metrics.contains("weir_policy_stale{kind=\"WeirNetworkPolicy\"} 1"),
        "{metrics}"
    );
    let report = converge(&lab, TCP80, denied);
    assert!(
        report.is_none(),
        "the last valid deny stays in force:\n{}",
        report.unwrap()
    );

    // Deleting it removes it: y/b is admitted by the allow.
    lab.delete_yaml(deny).unwrap();
    let report = converge(&lab, TCP80, |s, d, _| !d.is("x/a") || s.ns == "y");
    assert!(report.is_none(), "deleted:\n{}", report.unwrap());
    let (_, text) = weir(&lab, "n1", &["policy", "get"]);
    assert!(!text.contains("stale"), "{text}");
    let metrics = lab.scrape_metrics("n1").unwrap();
    assert!(
        metrics.contains("weir_policy_stale{kind=\"WeirNetworkPolicy\"} 0"),
        "{metrics}"
    );
}

/// On the manifest directory: a file that does not parse is a condition of
/// that source only (the API server stores no unparseable object).
#[test]
fn the_only_policy_of_a_pod_that_becomes_unreadable_keeps_it_enforced_manifest_dir() {
    let mut lab = TestLab::up_manifest_dir(1).unwrap();
    lab.apply_yaml(&cluster_yaml().replace("nodeName: n2", "nodeName: n1"))
        .unwrap();
    let only = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: only-yb, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: b}}}]\n";
    lab.apply_yaml(only).unwrap();
    let enforced: Expect = |s, d, _| !d.is("x/a") || s.is("y/b");
    let report = converge(&lab, TCP80, enforced);
    assert!(report.is_none(), "{}", report.unwrap());

    // The file no longer parses (cut short): x/a stays enforced with the
    // old rules instead of dropping out of enforcement.
    write_policy_file(
        &lab,
        "NetworkPolicy",
        "x",
        "only-yb",
        &only.replace("{matchLabels: {pod: a}}", "{matchLabels: {pod: a"),
    );
    wait_until_stale(&lab, "n1", "NetworkPolicy/x/only-yb", "only-yb.yaml");
    let report = converge(&lab, TCP80, enforced);
    assert!(
        report.is_none(),
        "the pod stays enforced:\n{}",
        report.unwrap()
    );

    // Deleting it removes it: traffic opens.
    lab.delete_yaml(only).unwrap();
    let report = converge(&lab, TCP80, |_, _, _| true);
    assert!(report.is_none(), "deleted:\n{}", report.unwrap());
}

/// Every flow (up to the ring's 4,095) of the last `since` seconds that
/// `args` select, as [`TestLab::observe`] reads them.
fn observe_since(lab: &TestLab, node: &str, since: &str, args: &[&str]) -> Vec<serde_json::Value> {
    lab.observe(
        node,
        &[&["--last", "4095", "--since-seconds", since], args].concat(),
    )
}

/// Issue 19 item 5: policy audit mode. x/a admits namespace y on TCP 80
/// but denies y/b. With namespace x annotated for audit, every pod
/// connects, and the connections policy would have dropped show up as
/// flows with verdict AUDIT naming the drop; `weir endpoint list` says
/// `audit`. x/a's own annotation "false" overrides its namespace's and
/// enforcement is back.
#[test]
fn audit_mode_reports_would_be_drops_and_drops_nothing() {
    let mut lab = TestLab::up(2).unwrap();
    web_and_no_yb(&mut lab);
    let annotated = |yaml: &str, value: &str| {
        yaml.replacen(
            "  labels:",
            &format!("  annotations: {{policy.weir.io/audit-mode: \"{value}\"}}\n  labels:"),
            1,
        )
    };
    let namespace_x = weir_lab::testing::namespace_yaml("x");
    lab.apply_yaml(&annotated(&namespace_x, "true")).unwrap();
    let report = converge(&lab, TCP80, |_, _, _| true);
    assert!(
        report.is_none(),
        "audit mode drops nothing:\n{}",
        report.unwrap()
    );
    // One more round, after a mark that the flows are read from.
    let mark = Instant::now();
    std::thread::sleep(Duration::from_millis(1100));
    let round = matrix_with_timeout(lab.pods(), TCP80, PROBE_TIMEOUT);
    assert!(round.iter().all(|r| r.connected), "{round:?}");
    let since = mark.elapsed().as_secs().to_string();
    let node = lab.pod("x/a").unwrap().node.clone();
    let (ok, json) = weir(&lab, &node, &["-o", "json", "endpoint", "list"]);
    assert!(ok, "{json}");
    let endpoints: serde_json::Value = serde_json::from_str(&json).unwrap();
    let x_a = endpoints
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["pod"] == "x/a")
        .unwrap_or_else(|| panic!("x/a in {json}"));
    assert_eq!(
        (
            x_a["ingress_policy"].as_str(),
            x_a["egress_policy"].as_str()
        ),
        (Some("audit"), Some("allow-all")),
        "{json}"
    );
    let (_, table) = weir(&lab, &node, &["endpoint", "list"]);
    assert!(table.contains("POLICY (INGRESS)"), "{table}");
    // What policy would have dropped, each once per connection: from z/b
    // (no rule admits it) and from y/b (the deny rule).
    let audited = observe_since(&lab, &node, &since, &["--verdict", "AUDIT"]);
    let reason_from = |from: &str| {
        audited
            .iter()
            .filter(|f| {
                let source = NamespacedName::new(
                    f["source"]["namespace"].as_str().unwrap_or(""),
                    f["source"]["pod_name"].as_str().unwrap_or(""),
                )
                .to_string();
                source == from && f["destination"]["pod_name"] == "a"
            })
            .map(|f| f["drop_reason_desc"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    assert!(
        reason_from("z/b").contains(&"POLICY_DENIED".to_string()),
        "z/b's connection is audited as POLICY_DENIED: {audited:#?}"
    );
    assert!(
        reason_from("y/b").contains(&"POLICY_DENY".to_string()),
        "y/b's connection is audited as POLICY_DENY: {audited:#?}"
    );
    assert!(
        reason_from("y/a").is_empty(),
        "y/a is allowed, not audited: {audited:#?}"
    );
    assert!(
        lab.observe(
            &node,
            &[
                "--since-seconds",
                &since,
                "--verdict",
                "DROPPED",
                "--to-pod",
                "x/a"
            ]
        )
        .is_empty(),
        "nothing into x/a was dropped"
    );
    // The pod's own annotation wins over its namespace's.
    let pod_x_a = weir_lab::testing::pod_yaml("x", "a", &node, &[80, 81]);
    lab.apply_yaml(&annotated(&pod_x_a, "false")).unwrap();
    let report = converge(&lab, TCP80, |s, d, _| {
        !d.is("x/a") || s.is("y/a") || s.is("y/c")
    });
    assert!(report.is_none(), "enforced again:\n{}", report.unwrap());
}

/// (source pod, port) of every `weir policy diff -o json` line that says
/// `before` -> `after` into x/a.
fn previewed(
    lab: &TestLab,
    node: &str,
    args: &[&str],
    before: &str,
    after: &str,
) -> Vec<(String, u64)> {
    let mut rows: Vec<(String, u64)> = previewed_counts(lab, node, args, before, after)
        .into_iter()
        .map(|(source, port, _)| (source, port))
        .collect();
    rows.dedup();
    rows
}

/// [`previewed`] with each line's connection count.
fn previewed_counts(
    lab: &TestLab,
    node: &str,
    args: &[&str],
    before: &str,
    after: &str,
) -> Vec<(String, u64, u64)> {
    let out = lab
        .weir(node, &[&["-o", "json", "policy", "diff"], args].concat())
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() || out.status.code() == Some(1),
        "weir policy diff failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rows: Vec<(String, u64, u64)> = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|c| c["destination"] == "x/a" && c["before"] == before && c["after"] == after)
        .map(|c| {
            (
                c["source"].as_str().unwrap().to_string(),
                c["port"].as_u64().unwrap(),
                c["count"].as_u64().unwrap(),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// Issue 19 item 6: policy impact preview. Traffic flows among the pods
/// with no policy; `weir policy diff` predicts which of the recorded
/// connections into x/a a candidate policy would deny; the candidate is
/// applied, the same traffic runs again, and the drops into x/a are
/// exactly the predicted ones. Through the relay, the other node's agent
/// (which recorded only part of that traffic) predicts the same, each
/// connection counted once. Then deleting the policy is previewed: what
/// was dropped is predicted to be allowed again.
#[test]
fn a_policy_diff_predicts_exactly_the_drops_enforcement_then_makes() {
    let mut lab = TestLab::up(2).unwrap();
    lab.apply_yaml(&cluster_yaml()).unwrap();
    let targets = [Target::Tcp(80), Target::Tcp(81)];
    let report = converge(&lab, &targets, |_, _, _| true);
    assert!(report.is_none(), "{}", report.unwrap());
    let node = lab.pod("x/a").unwrap().node.clone();
    // Every window below starts at most 1 s before `start`: no probe of
    // the convergence falls in it.
    std::thread::sleep(Duration::from_millis(1100));
    let start = Instant::now();
    let round = matrix_with_timeout(lab.pods(), &targets, PROBE_TIMEOUT);
    assert!(round.iter().all(|r| r.connected), "{round:?}");
    let candidate = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {ns: y}}}]\n    ports: [{port: 80, protocol: TCP}]\n";
    let file = std::env::temp_dir().join(format!("weir-diff-{}.yaml", std::process::id()));
    std::fs::write(&file, candidate).unwrap();
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _remove = Remove(file.clone());
    let since = (start.elapsed().as_secs() + 1).to_string();
    let predicted = previewed(
        &lab,
        &node,
        &["-f", file.to_str().unwrap(), "--since-seconds", &since],
        "allow",
        "deny",
    );
    // Everyone but namespace y on 80, and everyone on 81 (x/a itself
    // aside: a pod's traffic to itself never leaves it).
    let mut expected: Vec<(String, u64)> = Vec::new();
    for ns in NAMESPACES {
        for pod in PODS {
            let from = format!("{ns}/{pod}");
            if from == "x/a" {
                continue;
            }
            if ns != "y" {
                expected.push((from.clone(), 80));
            }
            expected.push((from, 81));
        }
    }
    expected.sort();
    assert_eq!(predicted, expected, "the prediction");
    // The whole cluster's flows through the relay, judged on the other
    // node: the same groups and counts as x/a's node, which recorded
    // every connection into x/a; alone, the other node saw only those
    // from its own pods.
    let window = || (start.elapsed().as_secs() + 1).to_string();
    let other = lab
        .pods()
        .iter()
        .map(|p| p.node.clone())
        .find(|n| *n != node)
        .unwrap();
    let relay = format!(
        "unix://{}",
        lab.control_plane().unwrap().relay_socket().display()
    );
    let file_arg = file.to_str().unwrap();
    let on_x_a_node = previewed_counts(
        &lab,
        &node,
        &["-f", file_arg, "--since-seconds", &window()],
        "allow",
        "deny",
    );
    let through_relay = previewed_counts(
        &lab,
        &other,
        &[
            "-f",
            file_arg,
            "--since-seconds",
            &window(),
            "--server",
            &relay,
        ],
        "allow",
        "deny",
    );
    assert_eq!(
        through_relay, on_x_a_node,
        "the relay's flows, judged on {other}"
    );
    let other_alone = previewed(
        &lab,
        &other,
        &["-f", file_arg, "--since-seconds", &window()],
        "allow",
        "deny",
    );
    assert!(
        !other_alone.is_empty()
            && other_alone.len() < predicted.len()
            && other_alone.iter().all(|row| predicted.contains(row)),
        "{other} alone: {other_alone:?}"
    );
    assert!(
        previewed(
            &lab,
            &node,
            &["-f", file.to_str().unwrap()],
            "deny",
            "allow"
        )
        .is_empty(),
        "nothing is newly allowed"
    );
    // Enforcement agrees.
    lab.apply_yaml(candidate).unwrap();
    let report = converge(&lab, &targets, |s, d, t| {
        !d.is("x/a") || (s.ns == "y" && t == Target::Tcp(80))
    });
    assert!(report.is_none(), "{}", report.unwrap());
    let mark = Instant::now();
    std::thread::sleep(Duration::from_millis(1100));
    matrix_with_timeout(lab.pods(), &targets, PROBE_TIMEOUT);
    let since = mark.elapsed().as_secs().to_string();
    let mut dropped: Vec<(String, u64)> = observe_since(
        &lab,
        &node,
        &since,
        &["--verdict", "DROPPED", "--to-pod", "x/a"],
    )
    .iter()
    .map(|f| {
        (
            NamespacedName::new(
                f["source"]["namespace"].as_str().unwrap_or(""),
                f["source"]["pod_name"].as_str().unwrap_or(""),
            )
            .to_string(),
            f["destination_port"].as_u64().unwrap_or(0),
        )
    })
    .collect();
    dropped.sort();
    dropped.dedup();
    assert_eq!(
        dropped, predicted,
        "what enforcement dropped is what was predicted"
    );
    // Deleting the policy would allow exactly those again.
    let since = (start.elapsed().as_secs() + 1).to_string();
    let allowed_again = previewed(
        &lab,
        &node,
        &["--delete", "NetworkPolicy/x/web", "--since-seconds", &since],
        "deny",
        "allow",
    );
    assert_eq!(allowed_again, predicted);
}
