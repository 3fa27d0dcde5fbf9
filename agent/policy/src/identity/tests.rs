use super::*;

#[test]
fn reserved_numbers_match_cilium() {
    assert_eq!(reserved::ANY, 0);
    assert_eq!(reserved::HOST, 1);
    assert_eq!(reserved::WORLD, 2);
    assert_eq!(reserved::UNMANAGED, 3);
    assert_eq!(reserved::HEALTH, 4);
    assert_eq!(reserved::INIT, 5);
    assert_eq!(reserved::REMOTE_NODE, 6);
    assert_eq!(reserved::KUBE_APISERVER, 7);
    assert_eq!(reserved::INGRESS, 8);
    assert_eq!(reserved::WORLD_IPV4, 9);
    assert_eq!(reserved::WORLD_IPV6, 10);
    assert_eq!(reserved::CLUSTER_MIN, 256);
    assert_eq!(reserved::LOCAL_SCOPE, 16_777_216);
}

#[test]
fn reserved_labels_and_view() {
    assert_eq!(
        LabelSet::reserved(reserved::HOST).unwrap().to_string(),
        "reserved:host"
    );
    assert_eq!(
        LabelSet::reserved(reserved::KUBE_APISERVER)
            .unwrap()
            .to_string(),
        "reserved:kube-apiserver,reserved:remote-node"
    );
    assert!(LabelSet::reserved(300).is_none());
    let view = ClusterView::new();
    // Every reserved identity but 0 ("any" in policy state).
    assert_eq!(view.identities.len(), reserved::RESERVED.len() - 1);
    assert!(view.endpoints.is_empty());
    assert_eq!(
        view.labels_of(reserved::WORLD).unwrap().to_string(),
        "reserved:world"
    );
}
