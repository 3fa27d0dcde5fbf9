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

/// The cluster as the manifest directory reads it: these policy manifests.
fn cluster_with(policies: &[&str]) -> ClusterManifests {
    let mut cluster = ClusterManifests::default();
    for yaml in policies {
        for object in crate::cluster::manifest::parse(yaml).unwrap() {
            if let crate::cluster::manifest::Object::Policy(policy) = object {
                cluster.policies.insert(policy.key(), policy);
            }
        }
    }
    cluster
}

fn deny_from_b(end_port: u16) -> String {
    format!(
        r#"
apiVersion: weir.io/v1
kind: WeirNetworkPolicy
metadata: {{name: deny, namespace: x}}
spec:
  endpointSelector: {{matchLabels: {{pod: a}}}}
  ingressDeny:
  - fromEndpoints: [{{matchLabels: {{pod: b}}}}]
    toPorts: [{{ports: [{{port: "80", endPort: {end_port}, protocol: TCP}}]}}]
"#
    )
}

const KEY: &str = "WeirNetworkPolicy/x/deny";

#[test]
fn an_invalid_edit_keeps_the_previous_policy_in_force_until_deleted() {
    let mut sync = PolicySync::default();
    let valid = sync.parse(&cluster_with(&[&deny_from_b(90)]));
    assert_eq!(valid.len(), 1);
    assert!(sync.rejected().is_empty() && sync.stale().is_empty());
    // endPort below port: invalid, the previous version stays, shown stale.
    let kept = sync.parse(&cluster_with(&[&deny_from_b(79)]));
    assert_eq!(kept, valid);
    assert!(
        sync.stale()[KEY][0].contains("endPort"),
        "{:?}",
        sync.stale()
    );
    assert_eq!(sync.rejected()[KEY], sync.stale()[KEY]);
    // Fixed: the new version replaces it.
    let fixed = sync.parse(&cluster_with(&[&deny_from_b(100)]));
    assert_eq!(fixed.len(), 1);
    assert_ne!(fixed, valid);
    assert!(sync.rejected().is_empty() && sync.stale().is_empty());
    // Invalid again, then deleted: nothing in force.
    assert_eq!(sync.parse(&cluster_with(&[&deny_from_b(79)])), fixed);
    assert!(sync.parse(&cluster_with(&[])).is_empty());
    assert!(sync.rejected().is_empty() && sync.stale().is_empty());
}

#[test]
fn a_policy_never_valid_contributes_nothing_and_is_not_stale() {
    let mut sync = PolicySync::default();
    assert!(sync.parse(&cluster_with(&[&deny_from_b(79)])).is_empty());
    assert!(sync.rejected().contains_key(KEY));
    assert!(sync.stale().is_empty());
}

#[test]
fn objects_of_files_that_no_longer_parse_are_shown_stale() {
    let mut sync = PolicySync::default();
    let mut cluster = cluster_with(&[]);
    cluster
        .stale
        .insert("Pod/x/a".into(), "pods/a.yaml: not valid YAML".into());
    sync.parse(&cluster);
    assert_eq!(sync.stale()["Pod/x/a"], ["pods/a.yaml: not valid YAML"]);
    assert!(sync.rejected().is_empty());
}
