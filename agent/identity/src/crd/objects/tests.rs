use super::*;

fn web() -> LabelSet {
    LabelSet::new()
        .with("k8s:app", "web")
        .with("k8s:io.kubernetes.pod.namespace", "shop")
}

fn record(node: &str) -> EndpointRecord {
    EndpointRecord {
        identity: 300,
        node: node.into(),
        node_ip: "192.168.50.2".parse().unwrap(),
        namespace: "shop".into(),
        pod: "web-0".into(),
    }
}

#[test]
fn the_labels_hash_is_stable_and_tells_sets_apart() {
    // Fixed: every agent of every build must compute the same value.
    assert_eq!(labels_hash(&web()), labels_hash(&web()));
    assert_eq!(labels_hash(&LabelSet::new()), "cbf29ce484222325");
    assert_ne!(
        labels_hash(&web()),
        labels_hash(&web().with("k8s:app", "db"))
    );
    let object = identity(300, &web());
    assert_eq!(object.metadata.name.as_deref(), Some("300"));
    assert_eq!(
        object.metadata.labels.as_ref().unwrap()[LABELS_HASH],
        labels_hash(&web())
    );
    assert_eq!(identity_record(&object), Some((300, web())));
    // Not a cluster identity: never one an agent wrote.
    assert_eq!(identity_record(&identity(1, &web())), None);
}

#[test]
fn an_endpoint_keeps_its_other_family_and_takes_a_new_writer_afresh() {
    let v4: IpAddr = "10.0.1.7".parse().unwrap();
    let v6: IpAddr = "fd00::7".parse().unwrap();
    let first = endpoint_spec(v4, &record("node-a"), None);
    let both = endpoint_spec(v6, &record("node-a"), Some(&first));
    assert_eq!(addresses(&both), vec![v4, v6]);
    let moved = endpoint_spec(v6, &record("node-b"), Some(&both));
    assert_eq!(addresses(&moved), vec![v6]);
    assert_eq!(moved.node_name, "node-b");

    assert_eq!(
        without_address(&both, v4).map(|s| addresses(&s)),
        Some(vec![v6])
    );
    assert_eq!(without_address(&first, v4), None);

    let mut object = WeirEndpoint::new("web-0", both.clone());
    object.metadata.namespace = Some("shop".into());
    label_addresses(&mut object.metadata, &both);
    let labels = object.metadata.labels.clone().unwrap();
    assert_eq!(labels[IPV4_LABEL], "10.0.1.7");
    assert_eq!(labels[IPV6_LABEL], "fd000000000000000000000000000007");
    assert_eq!(address_selector(v4), "weir.io/ipv4=10.0.1.7");
    assert_eq!(
        endpoint_records(&object),
        vec![(v4, record("node-a")), (v6, record("node-a"))]
    );
    // Without a node address it is not an agent's record.
    object.spec.node_ip = None;
    assert!(endpoint_records(&object).is_empty());
}

#[test]
fn a_node_round_trips_and_one_without_a_cidr_is_not_a_record() {
    let node = NodeRecord {
        name: "node-a".into(),
        ip: "192.168.50.2".parse().unwrap(),
        pod_cidr: "10.0.1.0/24".parse().unwrap(),
        pod_cidr_v6: None,
        ipv6: None,
    };
    let mut object = WeirNode::new("node-a", node_spec(&node));
    assert_eq!(node_record(&object), Some(node));
    assert!(!written_by(&object, "node-a"));
    object
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(WRITER.into(), "node-a".into());
    assert!(written_by(&object, "node-a"));
    object.spec.pod_cidrs.clear();
    assert_eq!(node_record(&object), None);
}

#[test]
fn a_dual_stack_node_round_trips_with_both_ranges_and_addresses() {
    let node = NodeRecord {
        name: "node-a".into(),
        ip: "192.168.50.2".parse().unwrap(),
        pod_cidr: "10.0.1.0/24".parse().unwrap(),
        pod_cidr_v6: Some("fd00:10:244:1::/112".parse().unwrap()),
        ipv6: Some("fd00:77::2".parse().unwrap()),
    };
    let object = WeirNode::new("node-a", node_spec(&node));
    assert_eq!(object.spec.pod_cidrs.len(), 2);
    assert_eq!(object.spec.addresses.len(), 2);
    assert_eq!(node_record(&object), Some(node.clone()));
    let routes: Vec<String> = node
        .pod_routes()
        .map(|(cidr, via)| format!("{cidr} via {via}"))
        .collect();
    assert_eq!(
        routes,
        [
            "10.0.1.0/24 via 192.168.50.2",
            "fd00:10:244:1::/112 via fd00:77::2"
        ]
    );
}
