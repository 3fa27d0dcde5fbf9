use super::*;
use crate::compile::compile;
use crate::document::parse_policies;
use crate::identity::{ClusterView, Endpoint, Identity, LocalCidrAllocator};
use crate::labels::{pod_security_labels, LabelFilter};
use crate::rule::Policy;

fn view(endpoints: &[u32]) -> ClusterView {
    let mut v = ClusterView::new();
    for (i, pod) in ["a", "b"].iter().enumerate() {
        let id = 3001 + i as u32;
        v.add_identity(Identity {
            id,
            labels: pod_security_labels("x", [], [("pod", *pod)], &LabelFilter::default()),
            named_ports: Default::default(),
        });
        if endpoints.contains(&(i as u32 + 1)) {
            v.add_endpoint(Endpoint {
                id: i as u32 + 1,
                identity: id,
                named_ports: Default::default(),
            });
        }
    }
    v
}

fn policies(yaml: &str) -> Vec<Policy> {
    parse_policies(yaml)
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

const ALLOW_B: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}], ports: [{port: 80}]}]\n";

#[test]
fn identical_states_have_no_diff() {
    let v = view(&[1, 2]);
    let a = compile(&v, &policies(ALLOW_B), &mut LocalCidrAllocator::default());
    let b = compile(&v, &policies(ALLOW_B), &mut LocalCidrAllocator::default());
    assert!(diff(&a, &b).is_empty());
}

#[test]
fn adding_a_policy_flips_enforcement_and_adds_entries() {
    let v = view(&[1, 2]);
    let before = compile(&v, &[], &mut LocalCidrAllocator::default());
    let after = compile(&v, &policies(ALLOW_B), &mut LocalCidrAllocator::default());
    let changes: Vec<String> = diff(&before, &after)
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(
        changes,
        vec![
            "endpoint 1 ingress: enforced=true",
            "endpoint 1 ingress: + allow peer=1 proto=ANY ports=any from Implicit allow-localhost (allow-localhost)",
            "endpoint 1 ingress: + allow peer=3002 proto=TCP ports=80 from NetworkPolicy x/p (spec.ingress[0])",
        ]
    );
    // And back.
    let back: Vec<String> = diff(&after, &before)
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(
        back,
        vec![
            "endpoint 1 ingress: enforced=false",
            "endpoint 1 ingress: - allow peer=1 proto=ANY ports=any from Implicit allow-localhost (allow-localhost)",
            "endpoint 1 ingress: - allow peer=3002 proto=TCP ports=80 from NetworkPolicy x/p (spec.ingress[0])",
        ]
    );
}

#[test]
fn changed_rule_is_add_then_remove() {
    let v = view(&[1]);
    let a = compile(&v, &policies(ALLOW_B), &mut LocalCidrAllocator::default());
    let b = compile(
        &v,
        &policies(&ALLOW_B.replace("port: 80", "port: 81")),
        &mut LocalCidrAllocator::default(),
    );
    let changes = diff(&a, &b);
    assert_eq!(changes.len(), 2);
    assert!(
        matches!(&changes[0], Change::EntryAdded { entry, .. } if entry.key.ports == crate::mapstate::Ports::Range(81, 81))
    );
    assert!(
        matches!(&changes[1], Change::EntryRemoved { entry, .. } if entry.key.ports == crate::mapstate::Ports::Range(80, 80))
    );
}

#[test]
fn endpoints_added_and_removed() {
    let p = policies(ALLOW_B);
    let one = compile(&view(&[2]), &p, &mut LocalCidrAllocator::default());
    let two = compile(&view(&[1]), &p, &mut LocalCidrAllocator::default());
    let changes: Vec<String> = diff(&one, &two).iter().map(|c| c.to_string()).collect();
    assert_eq!(changes[0], "endpoint 1: added");
    assert_eq!(changes[1], "endpoint 1 ingress: enforced=true");
    assert_eq!(changes.last().unwrap(), "endpoint 2: removed");
    assert_eq!(changes.len(), 5);
}
