use super::*;

fn service(yaml_spec: &str) -> Service {
    let yaml =
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop}}\nspec:\n{yaml_spec}");
    let document: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).unwrap();
    Service::from_document(&document).unwrap()
}

fn pod(name: &str, ip: u8, ports: &[(&str, u16)]) -> PodInfo {
    PodInfo {
        namespace: "shop".into(),
        name: name.into(),
        labels: BTreeMap::from([("app".into(), "web".into()), ("pod".into(), name.into())]),
        node: "n1".into(),
        ip: Some(Ipv4Addr::new(10, 0, 0, ip)),
        ipv6: Some(Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, ip.into())),
        ready: true,
        terminating: false,
        ports: ports
            .iter()
            .map(|(name, port)| NamedPort {
                name: Some(name.to_string()),
                port: *port,
                protocol: Protocol::Tcp,
            })
            .collect(),
    }
}

fn names(slice: &EndpointSlice) -> Vec<&str> {
    slice
        .endpoints
        .iter()
        .map(|e| e.target_ref.as_ref().unwrap().name.as_str())
        .collect()
}

const WEB: &str =
    "  clusterIP: 10.96.0.10\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n";

#[test]
fn selected_pods_become_endpoints_of_one_slice() {
    let mut other_namespace = pod("c", 3, &[]);
    other_namespace.namespace = "other".into();
    let mut other_app = pod("d", 4, &[]);
    other_app.labels.insert("app".into(), "db".into());
    let mut no_ip = pod("e", 5, &[]);
    no_ip.ip = None;
    let pods = vec![
        pod("b", 2, &[]),
        pod("a", 1, &[]),
        other_namespace,
        other_app,
        no_ip,
    ];
    let slices = derive_endpoint_slices(&[service(WEB)], &pods);
    assert_eq!(slices.len(), 1);
    let slice = &slices[0];
    assert_eq!(slice.namespace, "shop");
    assert_eq!(slice.service_name, "web");
    assert_eq!(slice.labels[SERVICE_NAME_LABEL], "web");
    assert_eq!(slice.labels[MANAGED_BY_LABEL], MANAGED_BY);
    assert!(slice.name.starts_with("web-") && slice.name.len() == "web-".len() + 8);
    assert_eq!(names(slice), ["a", "b"], "sorted by pod name");
    assert_eq!(
        slice.ports,
        vec![EndpointPort {
            name: None,
            protocol: Protocol::Tcp,
            port: Some(8080)
        }]
    );
    let endpoint = &slice.endpoints[0];
    assert_eq!(endpoint.addresses, vec![Ipv4Addr::new(10, 0, 0, 1)]);
    assert_eq!(endpoint.node_name.as_deref(), Some("n1"));
    assert_eq!(
        endpoint.target_ref,
        Some(ObjectRef {
            kind: "Pod".into(),
            namespace: Some("shop".into()),
            name: "a".into()
        })
    );
    assert_eq!(
        endpoint.conditions,
        EndpointConditions {
            ready: Some(true),
            serving: Some(true),
            terminating: Some(false)
        }
    );
}

#[test]
fn services_without_selector_get_no_slices() {
    let no_selector = service("  clusterIP: 10.96.0.10\n  ports: [{port: 80}]\n");
    assert!(derive_endpoint_slices(&[no_selector], &[pod("a", 1, &[])]).is_empty());
}

#[test]
fn no_matching_pods_leaves_a_placeholder_slice() {
    let slices = derive_endpoint_slices(&[service(WEB)], &[]);
    assert_eq!(slices.len(), 1);
    assert!(slices[0].endpoints.is_empty());
    assert!(
        slices[0].ports.is_empty(),
        "the controller's placeholder has no ports"
    );
    assert_eq!(slices[0].labels[SERVICE_NAME_LABEL], "web");
}

#[test]
fn a_named_target_port_with_two_mappings_gives_two_slices() {
    let svc = service(
        "  clusterIP: 10.96.0.10\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: web}]\n",
    );
    let pods = vec![
        pod("a", 1, &[("web", 8080)]),
        pod("b", 2, &[("web", 9090)]),
        pod("c", 3, &[("web", 8080), ("metrics", 9100)]),
    ];
    let slices = derive_endpoint_slices(&[svc], &pods);
    assert_eq!(slices.len(), 2);
    let by_port: BTreeMap<u16, Vec<&str>> = slices
        .iter()
        .map(|s| (s.ports[0].port.unwrap(), names(s)))
        .collect();
    assert_eq!(by_port[&8080], ["a", "c"]);
    assert_eq!(by_port[&9090], ["b"]);
    assert!(slices
        .iter()
        .all(|s| s.ports[0].name.as_deref() == Some("http")));
    assert_ne!(slices[0].name, slices[1].name);
}

#[test]
fn a_named_port_must_match_the_protocol_too() {
    let svc = service(
        "  clusterIP: 10.96.0.10\n  selector: {app: web}\n  ports: [{name: dns, port: 53, protocol: UDP, targetPort: dns}]\n",
    );
    let mut udp = pod("udp", 1, &[]);
    udp.ports = vec![NamedPort {
        name: Some("dns".into()),
        port: 5353,
        protocol: Protocol::Udp,
    }];
    let tcp_only = pod("tcp", 2, &[("dns", 5353)]);
    let slices = derive_endpoint_slices(&[svc], &[udp, tcp_only]);
    let with_port: Vec<_> = slices.iter().filter(|s| !s.ports.is_empty()).collect();
    assert_eq!(with_port.len(), 1);
    assert_eq!(names(with_port[0]), ["udp"]);
    assert_eq!(with_port[0].ports[0].port, Some(5353));
}

#[test]
fn a_pod_lacking_a_named_port_keeps_its_other_ports() {
    // The controller leaves out the port the pod cannot serve, not the pod.
    let svc = service(
        "  clusterIP: 10.96.0.10\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: web}\n  - {name: admin, port: 9000, targetPort: 9000}\n",
    );
    let slices = derive_endpoint_slices(&[svc], &[pod("a", 1, &[("web", 8080)]), pod("b", 2, &[])]);
    assert_eq!(slices.len(), 2);
    let a = slices.iter().find(|s| names(s) == ["a"]).unwrap();
    let b = slices.iter().find(|s| names(s) == ["b"]).unwrap();
    let ports = |s: &EndpointSlice| -> Vec<(Option<String>, Option<u16>)> {
        s.ports.iter().map(|p| (p.name.clone(), p.port)).collect()
    };
    assert_eq!(
        ports(a),
        vec![
            (Some("http".into()), Some(8080)),
            (Some("admin".into()), Some(9000))
        ]
    );
    assert_eq!(ports(b), vec![(Some("admin".into()), Some(9000))]);
}

#[test]
fn conditions_follow_the_controller() {
    let mut not_ready = pod("not-ready", 1, &[]);
    not_ready.ready = false;
    let mut terminating = pod("terminating", 2, &[]);
    terminating.terminating = true;
    let mut terminating_unready = pod("terminating-unready", 3, &[]);
    terminating_unready.terminating = true;
    terminating_unready.ready = false;
    let pods = vec![
        not_ready,
        terminating,
        terminating_unready,
        pod("ready", 4, &[]),
    ];

    let conditions = |svc: Service| -> BTreeMap<String, (bool, bool, bool)> {
        let slices = derive_endpoint_slices(&[svc], &pods);
        slices[0]
            .endpoints
            .iter()
            .map(|e| {
                let c = e.conditions;
                (
                    e.target_ref.as_ref().unwrap().name.clone(),
                    (c.ready.unwrap(), c.serving.unwrap(), c.terminating.unwrap()),
                )
            })
            .collect()
    };
    let plain = conditions(service(WEB));
    // (ready, serving, terminating)
    assert_eq!(plain["ready"], (true, true, false));
    assert_eq!(plain["not-ready"], (false, false, false));
    assert_eq!(plain["terminating"], (false, true, true));
    assert_eq!(plain["terminating-unready"], (false, false, true));

    let publish = conditions(service(&format!("{WEB}  publishNotReadyAddresses: true\n")));
    assert_eq!(publish["not-ready"], (true, false, false));
    assert_eq!(publish["terminating"], (true, true, true));
}

#[test]
fn headless_services_get_slices_too() {
    let svc = service("  clusterIP: None\n  selector: {app: web}\n");
    let slices = derive_endpoint_slices(&[svc], &[pod("a", 1, &[])]);
    assert_eq!(slices.len(), 1);
    assert_eq!(names(&slices[0]), ["a"]);
    assert!(slices[0].ports.is_empty());
}

#[test]
fn large_services_are_split_into_slices_of_at_most_100() {
    let pods: Vec<PodInfo> = (0..250)
        .map(|i| {
            let mut p = pod(&format!("p{i:03}"), 1, &[]);
            p.ip = Some(Ipv4Addr::new(10, 0, (i / 200) as u8, (i % 200) as u8 + 1));
            p
        })
        .collect();
    let slices = derive_endpoint_slices(&[service(WEB)], &pods);
    let mut sizes: Vec<usize> = slices.iter().map(|s| s.endpoints.len()).collect();
    sizes.sort();
    assert_eq!(sizes, [50, 100, 100]);
    let mut slice_names: Vec<&str> = slices.iter().map(|s| s.name.as_str()).collect();
    slice_names.dedup();
    assert_eq!(slice_names.len(), 3, "distinct names");
}

#[test]
fn derivation_is_deterministic() {
    let svc2 = {
        let mut s = service(WEB);
        s.name = "api".into();
        s
    };
    let pods = vec![pod("a", 1, &[]), pod("b", 2, &[]), pod("c", 3, &[])];
    let first = derive_endpoint_slices(&[service(WEB), svc2.clone()], &pods);
    let mut reversed_pods = pods.clone();
    reversed_pods.reverse();
    let second = derive_endpoint_slices(&[svc2, service(WEB)], &reversed_pods);
    assert_eq!(first, second);
    assert_eq!(
        first
            .iter()
            .map(|s| s.service_name.as_str())
            .collect::<Vec<_>>(),
        ["api", "web"]
    );
    // Pinned: every node must name the same slice the same way.
    assert_eq!(first[1].name, "web-7510749d");
}

#[test]
fn ipv6_slices_for_services_with_an_ipv6_cluster_ip() {
    let pods = [pod("a", 1, &[]), pod("b", 2, &[])];
    let dual = service(
        "  ipFamilyPolicy: PreferDualStack\n  clusterIPs: [10.96.0.10, fd00:96::10]\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n",
    );
    let v6_only = service(
        "  ipFamilies: [IPv6]\n  clusterIPs: [fd00:96::11]\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n",
    );
    let v4_only = service(WEB);
    // IPv4 slices: every service but the IPv6-only one.
    assert_eq!(
        derive_endpoint_slices(&[dual.clone(), v6_only.clone(), v4_only.clone()], &pods).len(),
        2
    );
    assert!(derive_endpoint_slices(std::slice::from_ref(&v6_only), &pods).is_empty());
    // IPv6 slices: the services with an IPv6 cluster IP, the pods' IPv6 addresses.
    assert!(derive_endpoint_slices_v6(std::slice::from_ref(&v4_only), &pods).is_empty());
    let v6 = derive_endpoint_slices_v6(std::slice::from_ref(&dual), &pods);
    assert_eq!(v6.len(), 1);
    let addresses: Vec<Ipv6Addr> = v6[0].endpoints.iter().map(|e| e.addresses[0]).collect();
    assert_eq!(
        addresses,
        [
            "fd00:10::1".parse::<Ipv6Addr>().unwrap(),
            "fd00:10::2".parse().unwrap()
        ]
    );
    // The two families' slices of one service do not share a name.
    let v4 = derive_endpoint_slices(std::slice::from_ref(&dual), &pods);
    assert_ne!(v4[0].name, v6[0].name);
    assert_eq!(v6[0].service_name, "web");
    // A pod without an IPv6 address is no IPv6 endpoint.
    let mut single = pod("c", 3, &[]);
    single.ipv6 = None;
    let v6 = derive_endpoint_slices_v6(std::slice::from_ref(&dual), &[single]);
    assert!(v6[0].endpoints.is_empty());
}
