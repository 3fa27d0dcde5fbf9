use super::*;
use weir_policy::{compile, lower};

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

const ALLOW_FROM_B: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{podSelector: {matchLabels: {pod: b}}}]
"#;

/// A sync that read `kernel` from the map at start, with the view
/// `synced` or not, and endpoint 1 (x/a) identified or not.
fn restarted(
    kernel: &BTreeMap<LpmKey, PolicyEntry>,
    synced: bool,
    a_identified: bool,
) -> PolicySync {
    let mut sync = PolicySync::default();
    sync.take_over(kernel.iter().map(|(k, e)| (*k, *e)).collect());
    sync.synced = synced;
    if !a_identified {
        sync.unidentified.insert(1);
    }
    sync
}

#[test]
fn a_restart_with_nothing_changed_writes_nothing() {
    let desired = encode_state(&lower(&compiled_from(
        ALLOW_FROM_B,
        &[(300, X_A), (301, X_B)],
    )));
    assert!(!desired.is_empty());
    let mut sync = restarted(&desired, true, true);
    sync.desired = desired;
    assert!(sync.pending_endpoints().is_empty());
    assert!(upserts(&sync.desired, &sync.written, &sync.held()).is_empty());
    assert!(removals(&sync.desired, &sync.written, &sync.adopted, &sync.held()).is_empty());
}

#[test]
fn entries_of_a_policy_deleted_while_down_are_removed_once_the_view_synced() {
    let kernel = encode_state(&lower(&compiled_from(
        ALLOW_FROM_B,
        &[(300, X_A), (301, X_B)],
    )));
    // The policy is gone: nothing desired.
    let unsynced = restarted(&kernel, false, true);
    assert_eq!(unsynced.held(), BTreeSet::from([1]));
    assert!(unsynced.pending_endpoints().is_empty(), "held until synced");
    assert!(removals(
        &unsynced.desired,
        &unsynced.written,
        &unsynced.adopted,
        &unsynced.held()
    )
    .is_empty());
    let synced = restarted(&kernel, true, true);
    assert!(synced.held().is_empty());
    assert_eq!(synced.pending_endpoints(), BTreeSet::from([1]));
    let removed = removals(
        &synced.desired,
        &synced.written,
        &synced.adopted,
        &synced.held(),
    );
    assert_eq!(removed, kernel.keys().copied().collect::<Vec<_>>());
}

#[test]
fn an_endpoint_without_identity_keeps_its_adopted_entries() {
    let kernel = encode_state(&lower(&compiled_from(
        ALLOW_FROM_B,
        &[(300, X_A), (301, X_B)],
    )));
    let sync = restarted(&kernel, true, false);
    assert_eq!(sync.held(), BTreeSet::from([1]));
    assert!(removals(&sync.desired, &sync.written, &sync.adopted, &sync.held()).is_empty());
}

#[test]
fn entries_this_agent_wrote_are_removed_as_before_even_unsynced() {
    let mut sync = PolicySync {
        written: encode_state(&lower(&compiled_from(
            ALLOW_FROM_B,
            &[(300, X_A), (301, X_B)],
        ))),
        ..PolicySync::default()
    };
    sync.unidentified.insert(1);
    assert!(sync.held().is_empty(), "nothing adopted, nothing held");
    assert_eq!(
        removals(&sync.desired, &sync.written, &sync.adopted, &sync.held()).len(),
        sync.written.len()
    );
}

#[test]
fn an_undecodable_entry_is_removed_on_the_first_pass_whatever_the_view() {
    let kernel = encode_state(&lower(&compiled_from(
        ALLOW_FROM_B,
        &[(300, X_A), (301, X_B)],
    )));
    let (key, entry) = kernel.iter().next().map(|(k, e)| (*k, *e)).unwrap();
    let mut bad_key = key;
    bad_key.key.direction = 7;
    let mut bad_entry = entry;
    bad_entry.verdict = 9;
    let mut other = key;
    other.key.identity = 999;
    let mut left = kernel.clone();
    left.insert(bad_key, entry);
    left.insert(other, bad_entry);
    let sync = restarted(&left, false, false);
    assert!(!sync.adopted.contains(&bad_key) && !sync.adopted.contains(&other));
    let removed = removals(&sync.desired, &sync.written, &sync.adopted, &sync.held());
    assert_eq!(
        BTreeSet::from_iter(removed),
        BTreeSet::from([bad_key, other])
    );
}

#[test]
fn adopted_entries_become_the_agents_once_a_pass_handled_them() {
    let kernel = encode_state(&lower(&compiled_from(
        ALLOW_FROM_B,
        &[(300, X_A), (301, X_B)],
    )));
    let mut unsynced = restarted(&kernel, false, true);
    unsynced.forget_handled(&unsynced.held());
    assert_eq!(unsynced.adopted.len(), kernel.len(), "held: still adopted");
    let mut synced = restarted(&kernel, true, true);
    synced.desired = kernel;
    synced.forget_handled(&synced.held());
    assert!(synced.adopted.is_empty());
}

#[test]
fn desired_entries_kept_per_changed_endpoint_equal_a_full_lowering() {
    let yaml = |from: &str| {
        format!(
            r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: p, namespace: x}}
spec:
  podSelector: {{matchLabels: {{pod: a}}}}
  ingress:
  - from: [{{podSelector: {{matchLabels: {{pod: {from}}}}}}}]
    ports: [{{protocol: TCP, port: 80}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: q, namespace: x}}
spec:
  podSelector: {{matchLabels: {{pod: b}}}}
  policyTypes: [Ingress, Egress]
  egress:
  - to: [{{podSelector: {{}}}}]
"#
        )
    };
    // Endpoint 1 (x/a) and 2 (x/b); identities come and go, labels and
    // policies change: after each compile the kept entries are exactly a
    // full lowering of a compile from scratch.
    type Identities<'a> = &'a [(u32, &'a [(&'a str, &'a str)])];
    let steps: [(&str, Identities); 4] = [
        ("b", &[(300, X_A), (301, X_B)]),
        ("c", &[(300, X_A), (301, X_B)]),
        ("b", &[(300, X_A), (301, X_B), (302, X_B)]),
        ("b", &[(300, X_B), (301, X_A)]),
    ];
    let mut sync = PolicySync::default();
    for (step, (from, identities)) in steps.into_iter().enumerate() {
        let mut view = view_of(identities);
        view.add_endpoint(weir_policy::Endpoint {
            id: 2,
            identity: 301,
            named_ports: NamedPorts::new(),
        });
        let policies = policies_of(&yaml(from));
        sync.compile(view.clone(), policies.clone());
        let scratch = compile(&view, &policies, &mut LocalIdentities::default());
        assert_eq!(sync.desired, encode_state(&lower(&scratch)), "step {step}");
        assert!(!sync.desired.is_empty(), "step {step}");
    }
}
