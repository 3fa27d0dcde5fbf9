use std::net::Ipv4Addr;

use weir_policy::EndpointPolicy;
use weir_types::{LabelSet, NamespacedName};

use super::*;
use crate::endpoint::ipam::AttachmentKey;
use crate::reconcile::snapshot::LocalPod;

fn endpoint(id: u16, namespace: &str, name: &str) -> Endpoint {
    Endpoint {
        id,
        attachment: AttachmentKey {
            container_id: format!("c{id}"),
            ifname: "eth0".into(),
        },
        pod: NamespacedName::new(namespace, name),
        netns: format!("/run/netns/{name}"),
        host_ifname: format!("lxc{id}"),
        host_ifindex: 40 + u32::from(id),
        ipv4: Ipv4Addr::new(10, 244, 1, id as u8),
        ipv6: None,
        mac: "02:00:00:00:00:01".into(),
        netns_cookie: 0,
        port_mappings: Vec::new(),
    }
}

/// x/a (endpoint 1) and x/b (endpoint 2) share identity 300, which
/// enforces ingress only; 10.0.0.0/8 is a policy CIDR.
fn state() -> (PolicySnapshot, SharedView) {
    let mut snapshot = PolicySnapshot::default();
    snapshot.local.insert(
        NamespacedName::new("x", "a"),
        LocalPod {
            endpoint: 1,
            identity: 300,
        },
    );
    snapshot.local.insert(
        NamespacedName::new("x", "b"),
        LocalPod {
            endpoint: 2,
            identity: 300,
        },
    );
    let mut policy = EndpointPolicy {
        identity: 300,
        ..Default::default()
    };
    policy.ingress.enforced = true;
    snapshot.compiled.endpoints.insert(1, policy);
    snapshot
        .compiled
        .cidrs
        .insert("10.0.0.0/8".parse().unwrap(), 16_777_217);
    let mut view = SharedView::default();
    view.identities.insert(
        300,
        LabelSet::new()
            .with("k8s:app", "web")
            .with("k8s:io.kubernetes.pod.namespace", "x"),
    );
    (snapshot, view)
}

#[test]
fn endpoint_detail_joins_registry_identity_and_policy() {
    let (snapshot, view) = state();
    let in_datapath = InDatapath {
        policy_map_entries: 7,
        audit: true,
    };
    let d = endpoint_detail(&endpoint(1, "x", "a"), &snapshot, &view, in_datapath);
    assert_eq!((d.id, d.namespace.as_str(), d.pod.as_str()), (1, "x", "a"));
    assert_eq!(d.identity, 300);
    assert_eq!(
        d.labels,
        ["k8s:app=web", "k8s:io.kubernetes.pod.namespace=x"]
    );
    assert_eq!(d.addresses, ["10.244.1.1"]);
    assert_eq!((d.ifindex, d.interface.as_str()), (41, "lxc1"));
    assert_eq!((d.ingress_enforced, d.egress_enforced), (true, false));
    assert_eq!(d.policy_map_entries, 7);
    assert!(d.policy_audit_mode);
    assert_eq!(d.container_id, "c1");
}

#[test]
fn an_endpoint_without_identity_yet_has_none() {
    let (snapshot, view) = state();
    let d = endpoint_detail(
        &endpoint(3, "x", "new"),
        &snapshot,
        &view,
        InDatapath::default(),
    );
    assert_eq!(d.identity, 0);
    assert!(d.labels.is_empty());
    assert!(!d.ingress_enforced && !d.egress_enforced);
    assert!(!d.policy_audit_mode);
}

#[test]
fn identity_detail_lists_its_local_endpoints() {
    let (snapshot, view) = state();
    let d = identity_detail(300, &snapshot, &view).unwrap();
    assert_eq!(d.scope, "cluster");
    assert_eq!(d.labels.len(), 2);
    let endpoints: Vec<(u32, String)> = d
        .endpoints
        .iter()
        .map(|e| (e.id, format!("{}/{}", e.namespace, e.pod)))
        .collect();
    assert_eq!(endpoints, [(1, "x/a".into()), (2, "x/b".into())]);
}

#[test]
fn reserved_and_cidr_identities_are_known_others_are_not() {
    let (snapshot, view) = state();
    let host = identity_detail(1, &snapshot, &view).unwrap();
    assert_eq!(
        (host.labels, host.scope),
        (vec!["reserved:host".to_string()], "reserved".to_string())
    );
    let cidr = identity_detail(16_777_217, &snapshot, &view).unwrap();
    assert_eq!(cidr.scope, "local");
    assert_eq!(cidr.labels, ["cidr:10.0.0.0/8", "reserved:world"]);
    assert!(cidr.endpoints.is_empty());
    assert!(identity_detail(4242, &snapshot, &view).is_none());
}
