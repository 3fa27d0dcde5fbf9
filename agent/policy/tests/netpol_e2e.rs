//! The upstream Kubernetes network-policy e2e model as a table-driven test.
//!
//! Namespaces x, y, z (labelled `ns=<name>` and
//! `kubernetes.io/metadata.name=<name>`), pods a, b, c in each (labelled
//! `pod=<name>`), each serving ports 80 and 81 on TCP and UDP under the
//! upstream names `serve-80-tcp`, `serve-80-udp`, ... Every scenario compiles
//! a set of policies and compares the 9x9 reachability table (source egress
//! verdict AND destination ingress verdict) with the expected one.
//!
//! CIDR peers follow Cilium: they never select pods (REFERENCE §4.4, upstream
//! e2e ipBlock tests are skipped for Cilium for this reason), so the ipBlock
//! scenario checks that pods are not matched and checks CIDR identities
//! directly.

use std::collections::BTreeMap;

use weir_policy::{
    compile, parse_policies, pod_security_labels, reserved, trace_flow, ClusterView, Compiled,
    Direction, Endpoint, FlowSide, Identity, LabelFilter, LocalIdentities, NamedPorts, Policy,
    Protocol, Reason, Verdict,
};

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Pod {
    ns: &'static str,
    pod: &'static str,
    index: usize,
}

impl Pod {
    fn identity(self) -> u32 {
        1000 + self.index as u32
    }
    fn endpoint(self) -> u32 {
        100 + self.index as u32
    }
    fn name(self) -> String {
        format!("{}/{}", self.ns, self.pod)
    }
}

fn pods() -> Vec<Pod> {
    let mut out = Vec::new();
    for ns in NAMESPACES {
        for pod in PODS {
            let index = out.len();
            out.push(Pod { ns, pod, index });
        }
    }
    out
}

fn named_ports() -> NamedPorts {
    let mut np = NamedPorts::new();
    for port in [80u16, 81] {
        for (proto, name) in [(Protocol::Tcp, "tcp"), (Protocol::Udp, "udp")] {
            np.entry(format!("serve-{port}-{name}"))
                .or_default()
                .insert((proto, port));
        }
    }
    np
}

fn view() -> ClusterView {
    let mut view = ClusterView::new();
    let filter = LabelFilter::default();
    for p in pods() {
        let labels = pod_security_labels(
            p.ns,
            [("ns", p.ns), ("kubernetes.io/metadata.name", p.ns)],
            [("pod", p.pod), ("pod-template-hash", "5d8f7b")],
            &filter,
        );
        view.add_identity(Identity {
            id: p.identity(),
            labels,
            named_ports: named_ports(),
        });
        view.add_endpoint(Endpoint {
            id: p.endpoint(),
            identity: p.identity(),
            named_ports: named_ports(),
        });
    }
    view
}

fn policies(yaml: &str) -> Vec<Policy> {
    parse_policies(yaml)
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("policy does not validate: {e}")))
        .collect()
}

type Table = BTreeMap<(usize, usize), bool>;

fn actual(compiled: &Compiled, protocol: Protocol, port: u16) -> Table {
    let mut t = Table::new();
    for s in pods() {
        for d in pods() {
            let tr = trace_flow(
                compiled,
                FlowSide::Endpoint(s.endpoint()),
                FlowSide::Endpoint(d.endpoint()),
                protocol,
                port,
            )
            .expect("endpoints exist");
            t.insert((s.index, d.index), tr.verdict() == Verdict::Allow);
        }
    }
    t
}

fn expected(f: impl Fn(Pod, Pod) -> bool) -> Table {
    let mut t = Table::new();
    for s in pods() {
        for d in pods() {
            t.insert((s.index, d.index), f(s, d));
        }
    }
    t
}

fn render(t: &Table) -> String {
    let ps = pods();
    let mut out = String::from("src\\dst");
    for d in &ps {
        out.push_str(&format!("\t{}", d.name()));
    }
    out.push('\n');
    for s in &ps {
        out.push_str(&s.name());
        for d in &ps {
            out.push_str(if t[&(s.index, d.index)] { "\t." } else { "\tX" });
        }
        out.push('\n');
    }
    out
}

fn check(
    name: &str,
    yaml: &str,
    probes: &[(Protocol, u16)],
    f: impl Fn(Protocol, u16, Pod, Pod) -> bool,
) {
    let view = view();
    let compiled = compile(&view, &policies(yaml), &mut LocalIdentities::default());
    for &(proto, port) in probes {
        let want = expected(|s, d| f(proto, port, s, d));
        let got = actual(&compiled, proto, port);
        if want != got {
            panic!(
                "scenario {name:?} probe {proto}/{port}: reachability mismatch (. = allowed, X = denied)\nexpected:\n{}\nactual:\n{}",
                render(&want),
                render(&got)
            );
        }
    }
}

const TCP80: (Protocol, u16) = (Protocol::Tcp, 80);
const ALL_PROBES: [(Protocol, u16); 4] = [
    (Protocol::Tcp, 80),
    (Protocol::Tcp, 81),
    (Protocol::Udp, 80),
    (Protocol::Udp, 81),
];

#[test]
fn no_policy_allows_everything() {
    check("no policy", "", &ALL_PROBES, |_, _, _, _| true);
}

#[test]
fn default_deny_ingress() {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress]
"#;
    check("default-deny ingress", yaml, &ALL_PROBES, |_, _, _, d| {
        d.ns != "x"
    });
}

#[test]
fn default_deny_ingress_without_policy_types() {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: x}
spec:
  podSelector: {}
"#;
    check(
        "default-deny ingress (defaulted policyTypes)",
        yaml,
        &[TCP80],
        |_, _, _, d| d.ns != "x",
    );
}

#[test]
fn default_deny_egress() {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-egress, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Egress]
"#;
    check("default-deny egress", yaml, &ALL_PROBES, |_, _, s, _| {
        s.ns != "x"
    });
}

#[test]
fn deny_all_both_directions() {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
"#;
    check("deny-all", yaml, &ALL_PROBES, |_, _, s, d| {
        s.ns != "x" && d.ns != "x"
    });
}

#[test]
fn allow_from_same_namespace() {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: same-ns, namespace: x}
spec:
  podSelector: {}
  ingress:
  - from:
    - podSelector: {}
"#;
    check("allow same namespace", yaml, &ALL_PROBES, |_, _, s, d| {
        d.ns != "x" || s.ns == "x"
    });
}

#[test]
fn allow_from_namespace_selector() {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-y, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: a}
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {ns: y}
"#;
    check("namespaceSelector", yaml, &ALL_PROBES, |_, _, s, d| {
        !(d.ns == "x" && d.pod == "a") || s.ns == "y"
    });
}

#[test]
fn pod_and_namespace_selector_in_one_peer_is_and() {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: and, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: a}
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {ns: y}
      podSelector:
        matchLabels: {pod: b}
"#;
    check(
        "podSelector AND namespaceSelector",
        yaml,
        &[TCP80],
        |_, _, s, d| !(d.ns == "x" && d.pod == "a") || (s.ns == "y" && s.pod == "b"),
    );
}

#[test]
fn two_peers_are_or() {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: or, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: a}
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {ns: y}
    - podSelector:
        matchLabels: {pod: b}
"#;
    check("two peers OR", yaml, &[TCP80], |_, _, s, d| {
        !(d.ns == "x" && d.pod == "a") || s.ns == "y" || (s.ns == "x" && s.pod == "b")
    });
}

#[test]
fn match_expressions() {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: not-x, namespace: x}
spec:
  podSelector:
    matchExpressions:
    - {key: pod, operator: In, values: [a, b]}
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions:
        - {key: ns, operator: NotIn, values: [x]}
      podSelector:
        matchExpressions:
        - {key: pod, operator: Exists}
        - {key: tier, operator: DoesNotExist}
"#;
    check("matchExpressions", yaml, &[TCP80], |_, _, s, d| {
        !(d.ns == "x" && d.pod != "c") || s.ns != "x"
    });
}

#[test]
fn ip_block_with_except() {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: cidr, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: a}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock:
        cidr: 0.0.0.0/0
        except: [10.0.0.0/8]
"#;
    // CIDR peers do not select pods: x/a's egress to pods is denied.
    check("ipBlock except (pods)", yaml, &[TCP80], |_, _, s, _| {
        !(s.ns == "x" && s.pod == "a")
    });

    let view = view();
    let mut alloc = LocalIdentities::default();
    let compiled = compile(&view, &policies(yaml), &mut alloc);
    let all = compiled.cidrs[&"0.0.0.0/0".parse().unwrap()];
    let except = compiled.cidrs[&"10.0.0.0/8".parse().unwrap()];
    let xa = &compiled.endpoints[&pods()[0].endpoint()];
    let v = |id| {
        xa.verdict(Direction::Egress, id, Protocol::Tcp, 443)
            .verdict
    };
    assert_eq!(v(all), Verdict::Allow);
    assert_eq!(v(reserved::WORLD), Verdict::Allow);
    assert_eq!(
        v(except),
        Verdict::Deny,
        "the except prefix has its own identity and is not allowed"
    );
}

#[test]
fn named_ports_resolve_per_destination() {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: named-ingress, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: a}
  ingress:
  - ports:
    - port: serve-81-tcp
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: named-egress, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: b}
  policyTypes: [Egress]
  egress:
  - ports:
    - port: serve-80-udp
      protocol: UDP
"#;
    check("named ports", yaml, &ALL_PROBES, |proto, port, s, d| {
        let into_xa = d.ns == "x" && d.pod == "a";
        let from_xb = s.ns == "x" && s.pod == "b";
        let ingress_ok = !into_xa || (proto == Protocol::Tcp && port == 81);
        let egress_ok = !from_xb || (proto == Protocol::Udp && port == 80);
        ingress_ok && egress_ok
    });
}

#[test]
fn end_port_range() {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: range, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: a}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: y}}
    ports:
    - port: 81
      endPort: 90
"#;
    check("endPort", yaml, &ALL_PROBES, |proto, port, s, d| {
        !(d.ns == "x" && d.pod == "a") || (s.ns == "y" && proto == Protocol::Tcp && port == 81)
    });
}

#[test]
fn multiple_policies_add_up() {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-b, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: a}
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: b}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-z, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: a}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: z}}
"#;
    check("additive", yaml, &[TCP80], |_, _, s, d| {
        !(d.ns == "x" && d.pod == "a") || (s.ns == "x" && s.pod == "b") || s.ns == "z"
    });
}

#[test]
fn ingress_and_egress_on_same_pod() {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: both, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: a}
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: b}}
  egress:
  - to:
    - namespaceSelector: {matchLabels: {ns: y}}
"#;
    check("ingress+egress", yaml, &[TCP80], |_, _, s, d| {
        let ingress_ok = !(d.ns == "x" && d.pod == "a") || (s.ns == "x" && s.pod == "b");
        let egress_ok = !(s.ns == "x" && s.pod == "a") || d.ns == "y";
        ingress_ok && egress_ok
    });
}

#[test]
fn udp_only_rule() {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: udp, namespace: x}
spec:
  podSelector: {}
  ingress:
  - ports:
    - protocol: UDP
      port: 80
"#;
    check("UDP only", yaml, &ALL_PROBES, |proto, port, _, d| {
        d.ns != "x" || (proto == Protocol::Udp && port == 80)
    });
}

#[test]
fn weir_deny_overrides_allow() {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - {}
---
apiVersion: weir.io/v1
kind: WeirNetworkPolicy
metadata: {name: deny-b, namespace: x}
spec:
  endpointSelector: {matchLabels: {pod: a}}
  ingressDeny:
  - fromEndpoints:
    - matchLabels: {pod: b}
---
apiVersion: weir.io/v1
kind: WeirClusterwideNetworkPolicy
metadata: {name: deny-z-80}
spec:
  endpointSelector: {matchLabels: {pod: a, "k8s:io.kubernetes.pod.namespace": x}}
  ingressDeny:
  - fromEndpoints:
    - matchLabels: {"k8s:io.kubernetes.pod.namespace": z}
    toPorts:
    - ports:
      - {port: "80", protocol: TCP}
"#;
    check(
        "Weir deny beats allow",
        yaml,
        &ALL_PROBES,
        |proto, port, s, d| {
            if !(d.ns == "x" && d.pod == "a") {
                return true;
            }
            let denied_b = s.ns == "x" && s.pod == "b";
            let denied_z = s.ns == "z" && proto == Protocol::Tcp && port == 80;
            !denied_b && !denied_z
        },
    );
}

#[test]
fn entities() {
    let yaml = r#"
apiVersion: weir.io/v1
kind: WeirClusterwideNetworkPolicy
metadata: {name: z-to-cluster}
spec:
  endpointSelector: {matchLabels: {"k8s:io.kubernetes.pod.namespace": z}}
  egress:
  - toEntities: [cluster]
---
apiVersion: weir.io/v1
kind: WeirNetworkPolicy
metadata: {name: y-from-world, namespace: y}
spec:
  endpointSelector: {}
  ingress:
  - fromEntities: [world]
"#;
    check("entities", yaml, &ALL_PROBES, |_, _, _, d| d.ns != "y");
    let view = view();
    let compiled = compile(&view, &policies(yaml), &mut LocalIdentities::default());
    let za = &compiled.endpoints[&pods()[6].endpoint()];
    let ya = &compiled.endpoints[&pods()[3].endpoint()];
    assert_eq!(
        za.verdict(Direction::Egress, reserved::WORLD, Protocol::Tcp, 443)
            .verdict,
        Verdict::Deny
    );
    assert_eq!(
        za.verdict(Direction::Egress, reserved::HOST, Protocol::Tcp, 443)
            .verdict,
        Verdict::Allow
    );
    assert_eq!(
        za.verdict(
            Direction::Egress,
            reserved::KUBE_APISERVER,
            Protocol::Tcp,
            443
        )
        .verdict,
        Verdict::Allow
    );
    let world_in = ya.verdict(Direction::Ingress, reserved::WORLD, Protocol::Tcp, 80);
    assert_eq!(world_in.verdict, Verdict::Allow);
    assert_eq!(world_in.matched[0].rule, "spec.ingress[0]");
    let pod_in = ya.verdict(Direction::Ingress, pods()[0].identity(), Protocol::Tcp, 80);
    assert_eq!(pod_in.reason, Reason::DefaultDeny);
}
