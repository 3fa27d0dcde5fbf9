use super::*;

fn view_of(identity_labels: &[(u32, &[(&str, &str)])]) -> ClusterView {
    let mut view = ClusterView::new();
    for (id, labels) in identity_labels {
        let set = labels.iter().copied().collect();
        view.add_identity(weir_policy::Identity {
            id: *id,
            labels: set,
            named_ports: NamedPorts::new(),
        });
    }
    view.add_endpoint(weir_policy::Endpoint {
        id: 1,
        identity: 300,
        named_ports: NamedPorts::new(),
    });
    view
}

fn policies_of(yaml: &str) -> Vec<Policy> {
    weir_policy::parse_policies(yaml)
        .into_iter()
        .map(|p| p.unwrap())
        .collect()
}

fn compiled_from(yaml: &str, identity_labels: &[(u32, &[(&str, &str)])]) -> Compiled {
    compile(
        &view_of(identity_labels),
        &policies_of(yaml),
        &mut LocalIdentities::default(),
    )
}

const X_A: &[(&str, &str)] = &[
    ("k8s:pod", "a"),
    ("k8s:io.kubernetes.pod.namespace", "x"),
    ("k8s:io.cilium.k8s.namespace.labels.ns", "x"),
];
const X_B: &[(&str, &str)] = &[
    ("k8s:pod", "b"),
    ("k8s:io.kubernetes.pod.namespace", "x"),
    ("k8s:io.cilium.k8s.namespace.labels.ns", "x"),
];

#[test]
fn pending_endpoints_are_those_whose_entries_are_not_written_yet() {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{podSelector: {matchLabels: {pod: b}}}]
"#;
    let mut sync = PolicySync::default();
    assert!(sync.pending_endpoints().is_empty());
    sync.desired = encode_state(&lower(&compiled_from(yaml, &[(300, X_A), (301, X_B)])));
    assert_eq!(sync.pending_endpoints(), BTreeSet::from([1]));
    sync.written = sync.desired.clone();
    assert!(sync.pending_endpoints().is_empty());
    // Endpoint 2 still has an entry that is no longer desired.
    let (key, entry) = sync.written.iter().next().map(|(k, e)| (*k, *e)).unwrap();
    let mut stale = key;
    stale.key.endpoint_id = 2;
    sync.written.insert(stale, entry);
    assert_eq!(sync.pending_endpoints(), BTreeSet::from([2]));
}

fn egress_to(cidrs: &str) -> String {
    format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: p, namespace: x}}
spec:
  podSelector: {{matchLabels: {{pod: a}}}}
  policyTypes: [Egress]
  egress:
  - to: [{cidrs}]
"#
    )
}

#[test]
fn a_cidr_no_policy_names_any_more_frees_its_identity() {
    let net = |s: &str| s.parse::<IpNetwork>().unwrap();
    let mut sync = PolicySync::default();
    let both = "{ipBlock: {cidr: 10.0.0.0/8}}, {ipBlock: {cidr: 192.0.2.0/24}}";
    sync.compile(view_of(&[(300, X_A)]), policies_of(&egress_to(both)));
    let kept = sync.cidr_identities()[&net("192.0.2.0/24")];
    let dropped = sync.cidr_identities()[&net("10.0.0.0/8")];
    let one = "{ipBlock: {cidr: 192.0.2.0/24}}";
    sync.compile(view_of(&[(300, X_A)]), policies_of(&egress_to(one)));
    assert_eq!(
        sync.cidr_identities().keys().collect::<Vec<_>>(),
        [&net("192.0.2.0/24")]
    );
    assert_eq!(
        sync.cidr_identities()[&net("192.0.2.0/24")],
        kept,
        "kept its id"
    );
    assert_eq!(sync.cidr_identities.get(net("10.0.0.0/8")), None);
    assert_eq!(sync.cidr_identities.lookup(dropped), None, "freed");
    assert_eq!(sync.cidr_identities.len(), 1);
    // The same inputs again change nothing; none at all hold nothing.
    sync.compile(view_of(&[(300, X_A)]), policies_of(&egress_to(one)));
    assert_eq!(sync.cidr_identities()[&net("192.0.2.0/24")], kept);
    assert_eq!(sync.cidr_identities.len(), 1);
    sync.compile(view_of(&[(300, X_A)]), Vec::new());
    assert!(sync.cidr_identities.is_empty());
}
