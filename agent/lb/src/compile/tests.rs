use super::*;
use crate::endpointslice::{Endpoint, EndpointConditions, EndpointPort, ObjectRef};
use std::collections::BTreeSet;

fn ip(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

/// A Service from YAML: `name` may be `namespace/name`.
fn service(name: &str, spec: &str) -> Service {
    let (namespace, name) = name.split_once('/').unwrap_or(("shop", name));
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}"
    );
    Service::from_document(&serde_yaml_ng::from_str(&yaml).unwrap()).unwrap()
}

fn with_status(mut svc: Service, ips: &[&str]) -> Service {
    svc.load_balancer_ips = ips.iter().map(|s| ip(s)).collect();
    svc
}

/// A ready endpoint of pod `pod` on `node`.
fn ep(address: &str, node: &str, pod: &str) -> Endpoint {
    Endpoint {
        addresses: vec![ip(address)],
        conditions: EndpointConditions {
            ready: Some(true),
            serving: Some(true),
            terminating: Some(false),
        },
        node_name: Some(node.to_string()),
        target_ref: Some(ObjectRef {
            kind: "Pod".into(),
            namespace: Some("shop".into()),
            name: pod.into(),
        }),
    }
}

fn conditions(
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
) -> EndpointConditions {
    EndpointConditions {
        ready,
        serving,
        terminating,
    }
}

fn port(name: Option<&str>, protocol: Protocol, number: u16) -> EndpointPort {
    EndpointPort {
        name: name.map(str::to_string),
        protocol,
        port: Some(number),
    }
}

fn slice(
    service: &str,
    name: &str,
    ports: Vec<EndpointPort>,
    endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    let (namespace, service) = service.split_once('/').unwrap_or(("shop", service));
    EndpointSlice {
        namespace: namespace.into(),
        name: name.into(),
        service_name: service.into(),
        labels: Default::default(),
        endpoints,
        ports,
    }
}

fn node() -> NodeContext {
    NodeContext {
        name: "n1".into(),
        addresses: vec![ip("192.168.0.1"), ip("192.168.1.1")],
        addresses_v6: vec![ip6("fd00:77::11")],
    }
}

fn run(services: &[Service], slices: &[EndpointSlice]) -> LbState {
    compile(services, slices, &node(), &LbOptions::default())
}

fn addresses(frontend: &Frontend) -> Vec<String> {
    frontend
        .backends
        .iter()
        .map(|b| format!("{}:{}", b.address, b.port))
        .collect()
}

fn key(address: &str, port: u16, protocol: Protocol, scope: Scope) -> FrontendKey {
    FrontendKey {
        address: ip(address),
        port,
        protocol,
        scope,
    }
}

const WEB: &str =
    "  clusterIP: 10.96.0.10\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n";

fn web_slice() -> EndpointSlice {
    slice(
        "web",
        "web-1",
        vec![port(None, Protocol::Tcp, 8080)],
        vec![ep("10.0.2.7", "n2", "b"), ep("10.0.1.5", "n1", "a")],
    )
}

#[test]
fn a_cluster_ip_is_an_internal_frontend_with_every_backend() {
    let state = run(&[service("web", WEB)], &[web_slice()]);
    assert!(state.problems.is_empty(), "{:?}", state.problems);
    assert_eq!(state.frontends.len(), 1);
    let f = &state.frontends[0];
    assert_eq!(f.service, NamespacedName::new("shop", "web"));
    assert_eq!(
        (f.kind, f.scope),
        (FrontendKind::ClusterIp, Scope::Internal)
    );
    assert_eq!(
        (f.address, f.port, f.protocol),
        (ip("10.96.0.10"), 80, Protocol::Tcp)
    );
    assert_eq!(f.port_name, None);
    assert_eq!(addresses(f), ["10.0.1.5:8080", "10.0.2.7:8080"], "sorted");
    assert_eq!(f.backends[0].node.as_deref(), Some("n1"));
    assert_eq!(f.backends[0].pod, Some(NamespacedName::new("shop", "a")));
    assert_eq!(f.backends[0].state, BackendState::Active);
    assert_eq!(f.algorithm, Algorithm::Random);
    assert_eq!(f.affinity_timeout, None);
    // Not reachable from outside.
    assert!(state
        .lookup(ip("10.96.0.10"), 80, Protocol::Tcp, Scope::External)
        .is_none());
    assert_eq!(
        state.lookup(ip("10.96.0.10"), 80, Protocol::Tcp, Scope::Internal),
        Some(f)
    );
    assert!(state
        .lookup(ip("10.96.0.10"), 80, Protocol::Udp, Scope::Internal)
        .is_none());
}

#[test]
fn backends_match_the_service_port_by_name_and_protocol() {
    let svc = service(
        "dns",
        "  clusterIP: 10.96.0.53\n  ports:\n  - {name: dns, port: 53, protocol: UDP}\n  - {name: dns-tcp, port: 53}\n  - {name: metrics, port: 9153}\n",
    );
    let slices = [slice(
        "dns",
        "dns-1",
        vec![
            port(Some("dns"), Protocol::Udp, 5353),
            port(Some("dns-tcp"), Protocol::Tcp, 5354),
            // Same name, other protocol: not the metrics port.
            port(Some("metrics"), Protocol::Udp, 9999),
            EndpointPort {
                name: Some("spare".into()),
                protocol: Protocol::Tcp,
                port: None,
            },
        ],
        vec![ep("10.0.1.5", "n1", "a")],
    )];
    let state = run(&[svc], &slices);
    let backends = |port: u16, protocol: Protocol| {
        addresses(
            state
                .get(&key("10.96.0.53", port, protocol, Scope::Internal))
                .unwrap(),
        )
    };
    assert_eq!(backends(53, Protocol::Udp), ["10.0.1.5:5353"]);
    assert_eq!(backends(53, Protocol::Tcp), ["10.0.1.5:5354"]);
    assert!(backends(9153, Protocol::Tcp).is_empty());
    let f = state
        .get(&key("10.96.0.53", 53, Protocol::Udp, Scope::Internal))
        .unwrap();
    assert_eq!(f.port_name.as_deref(), Some("dns"));
}

#[test]
fn unnamed_matches_only_unnamed() {
    let named_slice = slice(
        "web",
        "web-2",
        vec![port(Some("http"), Protocol::Tcp, 9090)],
        vec![ep("10.0.3.3", "n1", "c")],
    );
    let state = run(&[service("web", WEB)], &[web_slice(), named_slice]);
    assert_eq!(
        addresses(&state.frontends[0]),
        ["10.0.1.5:8080", "10.0.2.7:8080"]
    );
}

#[test]
fn only_the_services_own_slices_count() {
    let foreign = slice(
        "other/web",
        "web-x",
        vec![port(None, Protocol::Tcp, 8080)],
        vec![ep("10.9.9.9", "n1", "x")],
    );
    let other_service = slice(
        "api",
        "api-x",
        vec![port(None, Protocol::Tcp, 8080)],
        vec![ep("10.8.8.8", "n1", "y")],
    );
    let state = run(
        &[service("web", WEB)],
        &[web_slice(), foreign, other_service],
    );
    assert_eq!(
        addresses(&state.frontends[0]),
        ["10.0.1.5:8080", "10.0.2.7:8080"]
    );
}

#[test]
fn endpoint_conditions_decide_backend_state() {
    let mut endpoints = Vec::new();
    let cases = [
        ("10.0.0.1", conditions(Some(true), Some(true), Some(false))), // ready
        ("10.0.0.2", conditions(None, None, None)),                    // unknown = ready
        ("10.0.0.3", conditions(Some(false), Some(true), Some(true))), // terminating, serving
        ("10.0.0.4", conditions(Some(false), None, Some(true))),       // serving unknown = true
        ("10.0.0.5", conditions(Some(false), Some(false), Some(true))), // terminating, not serving
        (
            "10.0.0.6",
            conditions(Some(false), Some(false), Some(false)),
        ), // not ready
        ("10.0.0.7", conditions(Some(false), Some(true), Some(false))), // serving, not terminating, not ready
        ("10.0.0.8", conditions(Some(true), Some(true), Some(true))),   // publishNotReadyAddresses
    ];
    for (address, c) in cases {
        let mut e = ep(address, "n1", address);
        e.conditions = c;
        endpoints.push(e);
    }
    let slices = [slice(
        "web",
        "web-1",
        vec![port(None, Protocol::Tcp, 8080)],
        endpoints,
    )];
    let state = run(&[service("web", WEB)], &slices);
    let states: Vec<(String, BackendState)> = state.frontends[0]
        .backends
        .iter()
        .map(|b| (b.address.to_string(), b.state))
        .collect();
    use BackendState::*;
    assert_eq!(
        states,
        vec![
            ("10.0.0.1".into(), Active),
            ("10.0.0.2".into(), Active),
            ("10.0.0.3".into(), Terminating),
            ("10.0.0.4".into(), Terminating),
            ("10.0.0.8".into(), Active),
        ]
    );
    let active: Vec<String> = state.frontends[0]
        .active_backends()
        .map(|b| b.address.to_string())
        .collect();
    assert_eq!(active, ["10.0.0.1", "10.0.0.2", "10.0.0.8"]);
}

#[test]
fn an_address_in_two_slices_is_one_backend_in_its_best_state() {
    let mut old = ep("10.0.1.5", "n1", "a");
    old.conditions = conditions(Some(false), Some(true), Some(true));
    let slices = [
        slice(
            "web",
            "web-1",
            vec![port(None, Protocol::Tcp, 8080)],
            vec![old],
        ),
        web_slice(),
    ];
    let state = run(&[service("web", WEB)], &slices);
    let f = &state.frontends[0];
    assert_eq!(addresses(f), ["10.0.1.5:8080", "10.0.2.7:8080"]);
    assert!(f.backends.iter().all(|b| b.state == BackendState::Active));
    // Only the first address of an endpoint is used (they are fungible).
    let mut two = ep("10.0.4.1", "n1", "d");
    two.addresses.push(ip("10.0.4.2"));
    let slices = [slice(
        "web",
        "web-1",
        vec![port(None, Protocol::Tcp, 8080)],
        vec![two],
    )];
    let state = run(&[service("web", WEB)], &slices);
    assert_eq!(addresses(&state.frontends[0]), ["10.0.4.1:8080"]);
}

#[test]
fn a_service_without_endpoints_still_has_its_frontend() {
    let state = run(&[service("web", WEB)], &[]);
    assert_eq!(state.frontends.len(), 1);
    assert!(state.frontends[0].backends.is_empty());
    assert!(state.problems.is_empty());
}

const NODE_PORT: &str = "  type: NodePort\n  clusterIP: 10.96.0.10\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]\n";

fn http_slice() -> EndpointSlice {
    let mut s = web_slice();
    s.ports = vec![port(Some("http"), Protocol::Tcp, 8080)];
    s
}

#[test]
fn node_ports_listen_on_every_node_address_at_both_scopes() {
    let state = run(&[service("web", NODE_PORT)], &[http_slice()]);
    assert!(state.problems.is_empty(), "{:?}", state.problems);
    let keys: Vec<(String, u16, FrontendKind, Scope)> = state
        .frontends
        .iter()
        .map(|f| (f.address.to_string(), f.port, f.kind, f.scope))
        .collect();
    use FrontendKind::*;
    use Scope::*;
    assert_eq!(
        keys,
        vec![
            ("10.96.0.10".into(), 80, ClusterIp, Internal),
            ("192.168.0.1".into(), 30080, NodePort, External),
            ("192.168.0.1".into(), 30080, NodePort, Internal),
            ("192.168.1.1".into(), 30080, NodePort, External),
            ("192.168.1.1".into(), 30080, NodePort, Internal),
        ]
    );
    // externalTrafficPolicy Cluster: every backend at both scopes.
    for f in &state.frontends {
        assert_eq!(addresses(f), ["10.0.1.5:8080", "10.0.2.7:8080"]);
        assert_eq!(f.port_name.as_deref(), Some("http"));
    }
}

#[test]
fn node_ports_outside_the_range_or_unset_are_problems() {
    let outside = service(
        "web",
        "  type: NodePort\n  clusterIP: 10.96.0.10\n  ports: [{name: http, port: 80, nodePort: 8080}]\n",
    );
    let state = run(&[outside], &[]);
    assert_eq!(state.frontends.len(), 1, "the ClusterIP stays");
    assert_eq!(
        state.problems,
        vec![ServiceProblem {
            service: NamespacedName::new("shop", "web"),
            message: "port http (80/TCP): nodePort 8080 is outside the node port range 30000-32767: no NodePort frontend".into()
        }]
    );
    let options = LbOptions {
        node_port_range: 8000..=9000,
        ..LbOptions::default()
    };
    let outside = service(
        "web",
        "  type: NodePort\n  clusterIP: 10.96.0.10\n  ports: [{name: http, port: 80, nodePort: 8080}]\n",
    );
    let state = compile(&[outside], &[], &node(), &options);
    assert!(state.problems.is_empty());
    assert_eq!(state.frontends.len(), 5);

    let unset = service(
        "web",
        "  type: NodePort\n  clusterIP: 10.96.0.10\n  ports: [{port: 80}]\n",
    );
    let state = run(&[unset], &[]);
    assert_eq!(state.frontends.len(), 1);
    assert_eq!(
        state.problems[0].message,
        "port 80/TCP: nodePort is not set and Weir does not allocate node ports: no NodePort frontend"
    );

    // A LoadBalancer may do without node ports.
    let no_node_ports = with_status(
        service(
            "web",
            "  type: LoadBalancer\n  allocateLoadBalancerNodePorts: false\n  clusterIP: 10.96.0.10\n  ports: [{port: 80}]\n",
        ),
        &["203.0.113.7"],
    );
    let state = run(&[no_node_ports], &[]);
    assert!(state.problems.is_empty(), "{:?}", state.problems);
    let kinds: BTreeSet<FrontendKind> = state.frontends.iter().map(|f| f.kind).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([FrontendKind::ClusterIp, FrontendKind::LoadBalancer])
    );
}

#[test]
fn external_traffic_policy_local_narrows_only_external_clients() {
    let svc = service(
        "web",
        &format!("{NODE_PORT}  externalTrafficPolicy: Local\n"),
    );
    let state = run(&[svc], &[http_slice()]);
    let external = state
        .get(&key("192.168.0.1", 30080, Protocol::Tcp, Scope::External))
        .unwrap();
    assert_eq!(
        addresses(external),
        ["10.0.1.5:8080"],
        "this node's backend only"
    );
    let internal = state
        .get(&key("192.168.0.1", 30080, Protocol::Tcp, Scope::Internal))
        .unwrap();
    assert_eq!(addresses(internal), ["10.0.1.5:8080", "10.0.2.7:8080"]);
    let cluster_ip = state
        .get(&key("10.96.0.10", 80, Protocol::Tcp, Scope::Internal))
        .unwrap();
    assert_eq!(addresses(cluster_ip), ["10.0.1.5:8080", "10.0.2.7:8080"]);

    // On a node without local backends, external clients get none.
    let other_node = NodeContext {
        name: "n3".into(),
        addresses: vec![ip("192.168.3.1")],
        addresses_v6: Vec::new(),
    };
    let svc = service(
        "web",
        &format!("{NODE_PORT}  externalTrafficPolicy: Local\n"),
    );
    let state = compile(&[svc], &[http_slice()], &other_node, &LbOptions::default());
    let external = state
        .get(&key("192.168.3.1", 30080, Protocol::Tcp, Scope::External))
        .unwrap();
    assert!(external.backends.is_empty());
}

#[test]
fn internal_traffic_policy_local_narrows_only_cluster_ips() {
    let svc = service(
        "web",
        &format!("{NODE_PORT}  internalTrafficPolicy: Local\n"),
    );
    let state = run(&[svc], &[http_slice()]);
    let cluster_ip = state
        .get(&key("10.96.0.10", 80, Protocol::Tcp, Scope::Internal))
        .unwrap();
    assert_eq!(addresses(cluster_ip), ["10.0.1.5:8080"]);
    for scope in [Scope::External, Scope::Internal] {
        let node_port = state
            .get(&key("192.168.1.1", 30080, Protocol::Tcp, scope))
            .unwrap();
        assert_eq!(
            addresses(node_port),
            ["10.0.1.5:8080", "10.0.2.7:8080"],
            "{scope:?}"
        );
    }
}

#[test]
fn external_ips_and_load_balancer_ingress_are_frontends() {
    let svc = with_status(
        service(
            "web",
            "  type: LoadBalancer\n  clusterIP: 10.96.0.10\n  externalIPs: [192.0.2.10]\n  externalTrafficPolicy: Local\n  ports: [{name: http, port: 80, nodePort: 30080}]\n",
        ),
        &["203.0.113.7"],
    );
    let state = run(&[svc], &[http_slice()]);
    assert!(state.problems.is_empty(), "{:?}", state.problems);
    for (address, kind) in [
        ("192.0.2.10", FrontendKind::ExternalIp),
        ("203.0.113.7", FrontendKind::LoadBalancer),
    ] {
        let external = state
            .get(&key(address, 80, Protocol::Tcp, Scope::External))
            .unwrap();
        assert_eq!(external.kind, kind);
        assert_eq!(addresses(external), ["10.0.1.5:8080"]);
        let internal = state
            .get(&key(address, 80, Protocol::Tcp, Scope::Internal))
            .unwrap();
        assert_eq!(addresses(internal).len(), 2);
    }
    assert_eq!(state.frontends.len(), 1 + 4 + 2 + 2);

    // Ingress IPs of a service that is not a LoadBalancer are not used.
    let plain = with_status(service("web", WEB), &["203.0.113.7"]);
    let state = run(&[plain], &[]);
    assert_eq!(state.frontends.len(), 1);
    // externalIPs work on a ClusterIP service.
    let state = run(
        &[service(
            "web",
            &format!("{WEB}  externalIPs: [192.0.2.10]\n"),
        )],
        &[],
    );
    assert_eq!(state.frontends.len(), 3);
}

#[test]
fn session_affinity_and_algorithm() {
    let svc = service(
        "web",
        &format!("{WEB}  sessionAffinity: ClientIP\n  sessionAffinityConfig: {{clientIP: {{timeoutSeconds: 600}}}}\n"),
    );
    let state = run(&[svc], &[]);
    assert_eq!(state.frontends[0].affinity_timeout, Some(600));
    let svc = service("web", &format!("{WEB}  sessionAffinity: ClientIP\n"));
    assert_eq!(run(&[svc], &[]).frontends[0].affinity_timeout, Some(10800));

    let maglev_default = LbOptions {
        default_algorithm: Algorithm::Maglev,
        ..LbOptions::default()
    };
    let state = compile(&[service("web", WEB)], &[], &node(), &maglev_default);
    assert_eq!(state.frontends[0].algorithm, Algorithm::Maglev);
    let mut annotated = service("web", WEB);
    annotated.algorithm = Some(Algorithm::Random);
    let state = compile(&[annotated], &[], &node(), &maglev_default);
    assert_eq!(
        state.frontends[0].algorithm,
        Algorithm::Random,
        "the annotation wins"
    );
}

#[test]
fn headless_services_have_no_frontends_and_unallocated_ones_a_problem() {
    let headless = service(
        "db",
        "  clusterIP: None\n  selector: {app: db}\n  ports: [{port: 5432}]\n",
    );
    let unallocated = service("web", "  ports: [{port: 80}]\n");
    let state = run(&[headless, unallocated], &[]);
    assert!(state.frontends.is_empty());
    assert_eq!(state.problems.len(), 1);
    assert_eq!(
        state.problems[0].service,
        NamespacedName::new("shop", "web")
    );
    assert!(state.problems[0].message.contains("clusterIP is not set"));
}

#[test]
fn the_first_service_by_namespace_and_name_keeps_a_contested_frontend() {
    let a = service("alpha/web", WEB);
    let b = service("beta/web", WEB);
    let udp = service(
        "beta/dns",
        "  clusterIP: 10.96.0.10\n  ports: [{port: 80, protocol: UDP}]\n",
    );
    for services in [vec![a.clone(), b.clone(), udp.clone()], vec![udp, b, a]] {
        let state = run(&services, &[]);
        let owners: Vec<String> = state
            .frontends
            .iter()
            .map(|f| f.service.to_string())
            .collect();
        assert_eq!(owners, ["alpha/web", "beta/dns"], "UDP is another frontend");
        assert_eq!(
            state.problems,
            vec![ServiceProblem {
                service: NamespacedName::new("beta", "web"),
                message: "ClusterIp frontend 10.96.0.10:80/TCP is already alpha/web's ClusterIp frontend: not installed".into(),
            }]
        );
    }
}

#[test]
fn a_service_claiming_one_frontend_twice_keeps_the_first() {
    // The ingress IP is also listed as an external IP.
    let svc = with_status(
        service(
            "web",
            "  type: LoadBalancer\n  clusterIP: 10.96.0.10\n  externalIPs: [203.0.113.7]\n  allocateLoadBalancerNodePorts: false\n  ports: [{port: 80}]\n",
        ),
        &["203.0.113.7"],
    );
    let state = run(&[svc], &[]);
    let f = state
        .get(&key("203.0.113.7", 80, Protocol::Tcp, Scope::External))
        .unwrap();
    assert_eq!(f.kind, FrontendKind::ExternalIp);
    assert_eq!(state.frontends.len(), 3);
    assert_eq!(
        state.problems[0].message,
        "LoadBalancer frontend 203.0.113.7:80/TCP is also this service's ExternalIp frontend (port (unnamed)): the first is kept"
    );
}

#[test]
fn a_service_defined_twice_is_used_once() {
    let state = run(&[service("web", WEB), service("web", WEB)], &[]);
    assert_eq!(state.frontends.len(), 1);
    assert_eq!(
        state.problems[0].message,
        "defined more than once: the first definition is used"
    );
}

#[test]
fn the_state_is_sorted_and_independent_of_input_order() {
    let services = vec![
        service("web", NODE_PORT),
        service(
            "api",
            "  clusterIP: 10.96.0.5\n  ports: [{name: a, port: 443}, {name: b, port: 80}]\n",
        ),
        service("beta/web", WEB),
    ];
    let slices = vec![
        http_slice(),
        slice(
            "api",
            "api-1",
            vec![port(Some("a"), Protocol::Tcp, 8443)],
            vec![ep("10.0.9.9", "n2", "z")],
        ),
    ];
    let mut node_shuffled = node();
    node_shuffled.addresses.reverse();
    node_shuffled.addresses.push(ip("192.168.0.1"));
    let first = run(&services, &slices);
    let mut services_reversed = services.clone();
    services_reversed.reverse();
    let mut slices_reversed = slices.clone();
    slices_reversed.reverse();
    let second = compile(
        &services_reversed,
        &slices_reversed,
        &node_shuffled,
        &LbOptions::default(),
    );
    assert_eq!(first, second);
    let keys: Vec<FrontendKey> = first.frontends.iter().map(Frontend::key).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(keys, sorted, "sorted, unique");
    for f in &first.frontends {
        assert_eq!(first.get(&f.key()), Some(f));
    }
    assert_eq!(
        first.get(&key("10.96.0.99", 80, Protocol::Tcp, Scope::Internal)),
        None
    );
}

#[test]
fn maglev_table_of_a_frontend_indexes_its_active_backends() {
    let mut terminating = ep("10.0.0.2", "n1", "t");
    terminating.conditions = conditions(Some(false), Some(true), Some(true));
    let slices = [slice(
        "web",
        "web-1",
        vec![port(None, Protocol::Tcp, 8080)],
        vec![
            ep("10.0.0.1", "n1", "a"),
            terminating,
            ep("10.0.0.3", "n2", "c"),
        ],
    )];
    let state = run(&[service("web", WEB)], &slices);
    let f = &state.frontends[0];
    let table = f.maglev_table(251).unwrap();
    let used: BTreeSet<u32> = table.slots().iter().copied().collect();
    assert_eq!(used, BTreeSet::from([0, 2]), "index 1 is terminating");
    // Same table as built from the active keys directly.
    let direct = Table::build(&[f.backends[0].key(), f.backends[2].key()], 251).unwrap();
    let mapped: Vec<u32> = direct.slots().iter().map(|&s| [0, 2][s as usize]).collect();
    assert_eq!(table.slots(), mapped.as_slice());

    let empty = run(&[service("web", WEB)], &[]);
    assert_eq!(
        empty.frontends[0].maglev_table(251),
        Err(MaglevError::NoBackends)
    );
    assert_eq!(f.maglev_table(1000), Err(MaglevError::SizeNotAllowed(1000)));
}

#[test]
fn options_defaults_and_validation() {
    let options = LbOptions::default();
    assert_eq!(options.node_port_range, 30000..=32767);
    assert_eq!(options.default_algorithm, Algorithm::Random);
    assert_eq!(options.maglev_table_size, 1021);
    assert_eq!(options.validate(), Ok(()));
    let bad_size = LbOptions {
        maglev_table_size: 1024,
        ..LbOptions::default()
    };
    assert_eq!(
        bad_size.validate(),
        Err(OptionsError::MaglevTableSize(MaglevError::SizeNotAllowed(
            1024
        )))
    );
    let (start, end) = (40000, 30000);
    let empty_range = LbOptions {
        node_port_range: start..=end,
        ..LbOptions::default()
    };
    assert_eq!(
        empty_range.validate(),
        Err(OptionsError::NodePortRange {
            start: 40000,
            end: 30000
        })
    );
}

fn cidr(text: &str) -> ipnetwork::Ipv4Network {
    text.parse().unwrap()
}

/// The agent's defaults: Kubernetes' service range, no external IPs; pods
/// in 10.244.0.0/16, the node at 192.0.2.1, etcd at 192.0.2.100.
fn guarded() -> LbOptions {
    LbOptions {
        addresses: FrontendAddresses {
            service_cidrs: Some(vec![cidr("10.96.0.0/12")]),
            external_ip_cidrs: Some(Vec::new()),
            reserved: vec![
                cidr("10.244.0.0/16"),
                cidr("192.0.2.1/32"),
                cidr("192.0.2.100/32"),
            ],
        },
        ..LbOptions::default()
    }
}

fn refusals(spec: &str, options: &LbOptions) -> (usize, Vec<String>) {
    let state = compile(&[service("grab", spec)], &[], &node(), options);
    (
        state.frontends.len(),
        state.problems.into_iter().map(|p| p.message).collect(),
    )
}

#[test]
fn a_service_cannot_claim_addresses_outside_its_ranges_or_of_pods_nodes_and_the_kvstore() {
    let options = guarded();
    // A clusterIP outside the service range: e.g. the API server's address.
    let (frontends, problems) =
        refusals("  clusterIP: 10.0.0.1\n  ports: [{port: 443}]\n", &options);
    assert_eq!(frontends, 0);
    assert_eq!(
        problems,
        ["ClusterIp frontend 10.0.0.1:443/TCP refused: 10.0.0.1 is outside the service CIDRs (10.96.0.0/12)"]
    );
    // externalIPs: none allowed unless configured.
    let spec = "  clusterIP: 10.96.0.10\n  externalIPs: [198.51.100.7]\n  ports: [{port: 80}]\n";
    let (frontends, problems) = refusals(spec, &options);
    assert_eq!(frontends, 1, "the clusterIP stays");
    assert_eq!(
        problems,
        ["ExternalIp frontend 198.51.100.7:80/TCP refused: 198.51.100.7 is outside the allowed external IP CIDRs (none)"]
    );
    let mut allowed = guarded();
    allowed.addresses.external_ip_cidrs = Some(vec![cidr("198.51.100.0/24")]);
    let (frontends, problems) = refusals(spec, &allowed);
    assert_eq!((frontends, problems.len()), (3, 0), "{problems:?}");
    // A pod's address, the node's and etcd's, whatever the kind, even
    // where the ranges would allow it.
    allowed.addresses.external_ip_cidrs = Some(vec![cidr("0.0.0.0/0")]);
    for stolen in ["10.244.3.9", "192.0.2.1", "192.0.2.100"] {
        let spec = format!(
            "  clusterIP: 10.96.0.10\n  externalIPs: [{stolen}]\n  ports: [{{port: 80}}]\n"
        );
        let (_, problems) = refusals(&spec, &allowed);
        assert_eq!(problems.len(), 1, "{stolen}: {problems:?}");
        assert!(
            problems[0].contains("reserved for pods, nodes or the kvstore"),
            "{problems:?}"
        );
        let lb = with_status(
            service("grab", "  type: LoadBalancer\n  clusterIP: 10.96.0.10\n  allocateLoadBalancerNodePorts: false\n  ports: [{port: 80}]\n"),
            &[stolen],
        );
        let state = compile(&[lb], &[], &node(), &allowed);
        assert!(
            state
                .problems
                .iter()
                .any(|p| p.message.starts_with("LoadBalancer frontend")),
            "{stolen}: {:?}",
            state.problems
        );
    }
    // NodePorts live on the node's own address, which is reserved for
    // every other kind.
    let mut node_addressed = guarded();
    node_addressed
        .addresses
        .reserved
        .push(cidr("192.168.0.0/16"));
    let (frontends, problems) = refusals(
        "  type: NodePort\n  clusterIP: 10.96.0.10\n  ports: [{port: 80, nodePort: 30080}]\n",
        &node_addressed,
    );
    assert!(
        problems.iter().all(|p| !p.starts_with("NodePort")),
        "{problems:?}"
    );
    assert!(frontends >= 2, "NodePort frontends kept: {frontends}");
    // The library's default accepts any address (tests, benchmarks).
    let (frontends, problems) = refusals(
        "  clusterIP: 10.0.0.1\n  ports: [{port: 443}]\n",
        &LbOptions::default(),
    );
    assert_eq!((frontends, problems.len()), (1, 0));
}

// IPv6 and dual stack.

fn ip6(text: &str) -> Ipv6Addr {
    text.parse().unwrap()
}

/// A ready IPv6 endpoint of pod `pod` on `node`.
fn ep6(address: &str, node: &str, pod: &str) -> Endpoint<Ipv6Addr> {
    let v4 = ep("10.0.0.1", node, pod);
    Endpoint {
        addresses: vec![ip6(address)],
        conditions: v4.conditions,
        node_name: v4.node_name,
        target_ref: v4.target_ref,
    }
}

fn slice6(
    service: &str,
    name: &str,
    ports: Vec<EndpointPort>,
    endpoints: Vec<Endpoint<Ipv6Addr>>,
) -> crate::AnyEndpointSlice {
    let (namespace, service) = service.split_once('/').unwrap_or(("shop", service));
    crate::AnyEndpointSlice::V6(EndpointSlice {
        namespace: namespace.into(),
        name: name.into(),
        service_name: service.into(),
        labels: Default::default(),
        endpoints,
        ports,
    })
}

fn ipv6_on() -> Ipv6Options {
    Ipv6Options {
        enabled: true,
        ..Ipv6Options::default()
    }
}

fn run_dual(
    services: &[Service],
    slices: &[crate::AnyEndpointSlice],
    ipv6: &Ipv6Options,
) -> LbState {
    compile_dual_stack(services, slices, &node(), &LbOptions::default(), ipv6)
}

const DUAL: &str = "  clusterIPs: [10.96.0.10, \"fd00:96::10\"]\n  ipFamilyPolicy: PreferDualStack\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: 8080}]\n";

fn dual_slices() -> Vec<crate::AnyEndpointSlice> {
    let http = || vec![port(Some("http"), Protocol::Tcp, 8080)];
    vec![
        crate::AnyEndpointSlice::V4(slice(
            "web",
            "web-v4",
            http(),
            vec![ep("10.0.1.5", "n1", "web-1"), ep("10.0.2.7", "n2", "web-2")],
        )),
        slice6(
            "web",
            "web-v6",
            http(),
            vec![
                ep6("fd00:10:244:1::5", "n1", "web-1"),
                ep6("fd00:10:244:2::7", "n2", "web-2"),
            ],
        ),
    ]
}

#[test]
fn an_ipv6_cluster_ip_is_an_internal_frontend_with_the_ipv6_backends() {
    let svc = service(
        "web",
        "  clusterIP: \"fd00:96::10\"\n  ipFamilies: [IPv6]\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: 8080}]\n",
    );
    let state = run_dual(&[svc], &dual_slices(), &ipv6_on());
    assert!(state.frontends.is_empty(), "{:?}", state.frontends);
    assert_eq!(state.problems, vec![]);
    let [frontend] = state.frontends_v6.as_slice() else {
        panic!("one IPv6 frontend: {:?}", state.frontends_v6);
    };
    assert_eq!(
        frontend.key(),
        FrontendKey {
            address: ip6("fd00:96::10"),
            port: 80,
            protocol: Protocol::Tcp,
            scope: Scope::Internal,
        }
    );
    assert_eq!(frontend.kind, FrontendKind::ClusterIp);
    let backends: Vec<String> = frontend
        .backends
        .iter()
        .map(|b| format!("[{}]:{}", b.address, b.port))
        .collect();
    assert_eq!(
        backends,
        ["[fd00:10:244:1::5]:8080", "[fd00:10:244:2::7]:8080"]
    );
    assert!(state.get_v6(&frontend.key()).is_some());
}

#[test]
fn a_dual_stack_service_has_one_frontend_per_family_each_with_its_familys_backends() {
    let state = run_dual(&[service("web", DUAL)], &dual_slices(), &ipv6_on());
    assert_eq!(state.problems, vec![]);
    let [v4] = state.frontends.as_slice() else {
        panic!("one IPv4 frontend: {:?}", state.frontends);
    };
    let [v6] = state.frontends_v6.as_slice() else {
        panic!("one IPv6 frontend: {:?}", state.frontends_v6);
    };
    assert_eq!(v4.address, ip("10.96.0.10"));
    assert_eq!(addresses(v4), ["10.0.1.5:8080", "10.0.2.7:8080"]);
    assert_eq!(v6.address, ip6("fd00:96::10"));
    assert_eq!(v6.backends.len(), 2);
    assert!(v6
        .backends
        .iter()
        .all(|b| b.address.segments()[0] == 0xfd00));
    // The IPv4 frontend is exactly what the IPv4-only compile gives.
    let v4_only: Vec<EndpointSlice> = dual_slices()
        .into_iter()
        .filter_map(|s| match s {
            crate::AnyEndpointSlice::V4(s) => Some(s),
            crate::AnyEndpointSlice::V6(_) => None,
        })
        .collect();
    assert_eq!(
        run(&[service("web", DUAL)], &v4_only).frontends,
        state.frontends
    );
}

#[test]
fn ipv6_frontends_are_a_problem_when_the_agent_has_ipv6_off() {
    let state = run_dual(
        &[service("web", DUAL)],
        &dual_slices(),
        &Ipv6Options::default(),
    );
    assert_eq!(state.frontends.len(), 1, "IPv4 is installed as before");
    assert!(state.frontends_v6.is_empty());
    assert_eq!(
        state.problems,
        vec![ServiceProblem {
            service: NamespacedName::new("shop", "web"),
            message: "ClusterIp frontend [fd00:96::10]:80/TCP refused: IPv6 services are not enabled on this agent (it programs IPv4 frontends only)".into(),
        }]
    );
    // compile() (IPv4 slices, IPv6 off) says the same.
    assert_eq!(run(&[service("web", DUAL)], &[]).problems, state.problems);
}

#[test]
fn ipv6_external_and_load_balancer_ips_are_frontends_in_both_scopes() {
    let svc = with_status(
        service(
            "web",
            "  type: LoadBalancer\n  clusterIPs: [10.96.0.10, \"fd00:96::10\"]\n  ipFamilyPolicy: RequireDualStack\n  externalIPs: [\"2001:db8::2\"]\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]\n",
        ),
        &["192.0.2.7"],
    );
    let mut svc = svc;
    svc.load_balancer_ips_v6 = vec![ip6("2001:db8::1")];
    let state = run_dual(&[svc], &dual_slices(), &ipv6_on());
    assert_eq!(state.problems, vec![]);
    let mut v6: Vec<(FrontendKind, Ipv6Addr, u16, Scope)> = state
        .frontends_v6
        .iter()
        .map(|f| (f.kind, f.address, f.port, f.scope))
        .collect();
    v6.sort_by_key(|f| (f.0 as u8, f.1, f.3 as u8));
    let kinds: BTreeSet<FrontendKind> = v6.iter().map(|f| f.0).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            FrontendKind::ClusterIp,
            FrontendKind::NodePort,
            FrontendKind::ExternalIp,
            FrontendKind::LoadBalancer
        ])
    );
    for (kind, address, port) in [
        (FrontendKind::ExternalIp, ip6("2001:db8::2"), 80),
        (FrontendKind::LoadBalancer, ip6("2001:db8::1"), 80),
        (FrontendKind::NodePort, ip6("fd00:77::11"), 30080),
    ] {
        let scopes: Vec<Scope> = v6
            .iter()
            .filter(|f| f.0 == kind && f.1 == address && f.2 == port)
            .map(|f| f.3)
            .collect();
        assert_eq!(scopes.len(), 2, "{kind:?} in both scopes: {v6:?}");
    }
    // IPv4 keeps every frontend.
    let kinds: BTreeSet<FrontendKind> = state.frontends.iter().map(|f| f.kind).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            FrontendKind::ClusterIp,
            FrontendKind::NodePort,
            FrontendKind::LoadBalancer
        ])
    );
}

#[test]
fn ipv6_external_ips_are_held_to_their_cidrs_and_never_pod_addresses() {
    let ipv6 = Ipv6Options {
        enabled: true,
        external_ip_cidrs: Some(vec!["2001:db8::/64".parse().unwrap()]),
        reserved: vec!["fd00:10:244::/56".parse().unwrap()],
        ..Ipv6Options::default()
    };
    let svc = service(
        "web",
        "  clusterIP: \"fd00:96::10\"\n  externalIPs: [\"2001:db8::2\", \"2001:db9::2\", \"fd00:10:244:1::5\"]\n  selector: {app: web}\n  ports: [{port: 80}]\n",
    );
    let state = run_dual(&[svc], &dual_slices(), &ipv6);
    let external: Vec<Ipv6Addr> = state
        .frontends_v6
        .iter()
        .filter(|f| f.kind == FrontendKind::ExternalIp)
        .map(|f| f.address)
        .collect();
    assert_eq!(external, [ip6("2001:db8::2"), ip6("2001:db8::2")]);
    let messages: Vec<&str> = state.problems.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "ExternalIp frontend [2001:db9::2]:80/TCP refused: 2001:db9::2 is outside the allowed IPv6 external IP CIDRs (2001:db8::/64)",
            "ExternalIp frontend [fd00:10:244:1::5]:80/TCP refused: fd00:10:244:1::5 is inside fd00:10:244::/56, reserved for pods or nodes",
        ]
    );
}

/// The IPv6 NodePort frontends of a service (address, port, scope).
fn node_ports_v6(state: &LbState) -> Vec<(Ipv6Addr, u16, Scope, usize)> {
    state
        .frontends_v6
        .iter()
        .filter(|f| f.kind == FrontendKind::NodePort)
        .map(|f| (f.address, f.port, f.scope, f.backends.len()))
        .collect()
}

#[test]
fn an_ipv6_only_node_port_service_opens_its_node_port_on_the_nodes_ipv6_address_only() {
    let svc = service(
        "web",
        "  type: NodePort\n  clusterIP: \"fd00:96::10\"\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]\n",
    );
    let state = run_dual(&[svc], &dual_slices(), &ipv6_on());
    assert!(state.frontends.is_empty(), "{:?}", state.frontends);
    assert_eq!(state.problems, vec![]);
    // Both scopes, as IPv4 NodePorts: externalTrafficPolicy Cluster, so
    // the external one holds every backend too.
    let mut found = node_ports_v6(&state);
    found.sort_by_key(|f| f.2 as u8);
    assert_eq!(
        found,
        [
            (ip6("fd00:77::11"), 30080, Scope::External, 2),
            (ip6("fd00:77::11"), 30080, Scope::Internal, 2),
        ]
    );
}

#[test]
fn external_traffic_policy_local_keeps_the_ipv6_node_port_on_local_backends() {
    let svc = service(
        "web",
        "  type: NodePort\n  clusterIPs: [10.96.0.10, \"fd00:96::10\"]\n  ipFamilyPolicy: RequireDualStack\n  externalTrafficPolicy: Local\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]\n",
    );
    let state = run_dual(&[svc], &dual_slices(), &ipv6_on());
    let external: Vec<_> = node_ports_v6(&state)
        .into_iter()
        .filter(|f| f.2 == Scope::External)
        .collect();
    // dual_slices has one backend on this node (n1) and one elsewhere.
    assert_eq!(external, [(ip6("fd00:77::11"), 30080, Scope::External, 1)]);
}

#[test]
fn an_ipv6_node_port_needs_ipv6_on_and_a_node_ipv6_address() {
    let svc = || {
        service(
            "web",
            "  type: NodePort\n  clusterIP: \"fd00:96::10\"\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]\n",
        )
    };
    let off = run_dual(&[svc()], &dual_slices(), &Ipv6Options::default());
    assert!(off.frontends_v6.is_empty());
    let messages: Vec<&str> = off.problems.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "ClusterIp frontend [fd00:96::10]:80/TCP refused: IPv6 services are not enabled on this agent (it programs IPv4 frontends only)",
            "NodePort frontend [fd00:77::11]:30080/TCP refused: IPv6 services are not enabled on this agent (it programs IPv4 frontends only)",
        ]
    );
    let without_address = NodeContext {
        addresses_v6: Vec::new(),
        ..node()
    };
    let state = compile_dual_stack(
        &[svc()],
        &dual_slices(),
        &without_address,
        &LbOptions::default(),
        &ipv6_on(),
    );
    assert_eq!(state.frontends_v6.len(), 1, "the ClusterIP only");
    assert_eq!(
        state.problems[0].message,
        "port http (80/TCP): no IPv6 NodePort frontend: the node has no IPv6 address (--node-ipv6)"
    );
}

#[test]
fn ipv6_cluster_ips_are_held_to_the_ipv6_service_cidrs() {
    let ipv6 = Ipv6Options {
        enabled: true,
        service_cidrs: Some(vec!["fd00:96::/108".parse().unwrap()]),
        reserved: vec!["fd00:10:244::/56".parse().unwrap()],
        ..Ipv6Options::default()
    };
    let outside = service(
        "out",
        "  clusterIP: \"fd00:97::10\"\n  ports: [{port: 80}]\n",
    );
    let pods = service(
        "pods",
        "  clusterIP: \"fd00:10:244:1::9\"\n  ports: [{port: 80}]\n",
    );
    let inside = service(
        "in",
        "  clusterIP: \"fd00:96::10\"\n  ports: [{port: 80}]\n",
    );
    let state = run_dual(&[outside, pods, inside], &[], &ipv6);
    assert_eq!(state.frontends_v6.len(), 1);
    assert_eq!(
        state.frontends_v6[0].service,
        NamespacedName::new("shop", "in")
    );
    let messages: Vec<&str> = state.problems.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "ClusterIp frontend [fd00:97::10]:80/TCP refused: fd00:97::10 is outside the IPv6 service CIDRs (fd00:96::/108)",
            "ClusterIp frontend [fd00:10:244:1::9]:80/TCP refused: fd00:10:244:1::9 is inside fd00:10:244::/56, reserved for pods or nodes",
        ]
    );
}

#[test]
fn two_services_contesting_an_ipv6_frontend_settle_as_ipv4_ones_do() {
    let first = service("a", "  clusterIP: \"fd00:96::10\"\n  ports: [{port: 80}]\n");
    let second = service("b", "  clusterIP: \"fd00:96::10\"\n  ports: [{port: 80}]\n");
    let state = run_dual(&[second.clone(), first.clone()], &[], &ipv6_on());
    assert_eq!(state.frontends_v6.len(), 1);
    assert_eq!(
        state.frontends_v6[0].service,
        NamespacedName::new("shop", "a")
    );
    assert_eq!(
        state.problems,
        vec![ServiceProblem {
            service: NamespacedName::new("shop", "b"),
            message: "ClusterIp frontend [fd00:96::10]:80/TCP is already shop/a's ClusterIp frontend: not installed".into(),
        }]
    );

    // Incrementally: removing the holder hands the frontend on, and only
    // that IPv6 frontend is reported changed.
    let mut compiler = crate::LbCompiler::new(node(), LbOptions::default()).with_ipv6(ipv6_on());
    let changed = compiler.update_any([&first, &second], &[]);
    assert!(changed.v4.is_empty());
    assert_eq!(changed.v6.len(), 1);
    let changed = compiler.update_any([&second], &[]);
    assert_eq!(changed.v6.len(), 1);
    assert_eq!(
        compiler.frontends_v6().values().next().unwrap().service,
        NamespacedName::new("shop", "b")
    );
    assert!(compiler.update_any([&second], &[]).v6.is_empty());
}

#[test]
fn ipv6_frontends_keep_affinity_and_build_maglev_tables() {
    let svc = service("web", &format!("{DUAL}  sessionAffinity: ClientIP\n"));
    let state = run_dual(&[svc], &dual_slices(), &ipv6_on());
    let v6 = &state.frontends_v6[0];
    assert!(v6.affinity_timeout.is_some());
    let table = v6.maglev_table(251).unwrap();
    let used: BTreeSet<u32> = table.slots().iter().copied().collect();
    assert_eq!(used, BTreeSet::from([0, 1]));
}
