use super::*;

fn parse(yaml: &str) -> Result<EndpointSlice, Vec<String>> {
    let document: Value = serde_yaml_ng::from_str(yaml).expect("yaml");
    EndpointSlice::from_document(&document).map_err(|e| e.messages())
}

const HEAD: &str = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-abc12\n  namespace: shop\n  labels: {kubernetes.io/service-name: web}\naddressType: IPv4\n";

fn assert_error(yaml: &str, expected: &str) {
    let errors = parse(yaml).expect_err("should be rejected");
    assert!(
        errors.iter().any(|e| e.contains(expected)),
        "expected {expected:?} in {errors:#?}"
    );
}

#[test]
fn a_controller_written_slice() {
    let slice = parse(&format!(
        r#"{HEAD}endpoints:
- addresses: [10.0.1.5]
  conditions: {{ready: true, serving: true, terminating: false}}
  nodeName: n1
  targetRef: {{kind: Pod, namespace: shop, name: web-1, uid: 1234}}
  zone: a
- addresses: [10.0.2.7, 10.0.2.8]
  conditions: {{ready: false, serving: true, terminating: true}}
  nodeName: n2
ports:
- {{name: http, protocol: TCP, port: 8080, appProtocol: http}}
- {{name: "", protocol: UDP, port: 53}}
"#
    ))
    .unwrap();
    assert_eq!(slice.service(), NamespacedName::new("shop", "web"));
    assert_eq!(slice.name, "web-abc12");
    assert_eq!(slice.endpoints.len(), 2);
    let first = &slice.endpoints[0];
    assert_eq!(first.addresses, vec![Ipv4Addr::new(10, 0, 1, 5)]);
    assert_eq!(first.node_name.as_deref(), Some("n1"));
    assert_eq!(
        first.target_ref,
        Some(ObjectRef {
            kind: "Pod".into(),
            namespace: Some("shop".into()),
            name: "web-1".into()
        })
    );
    let second = &slice.endpoints[1];
    assert!(!second.conditions.ready());
    assert!(second.conditions.serving() && second.conditions.terminating());
    assert_eq!(second.addresses.len(), 2);
    assert_eq!(
        slice.ports,
        vec![
            EndpointPort {
                name: Some("http".into()),
                protocol: Protocol::Tcp,
                port: Some(8080)
            },
            EndpointPort {
                name: None,
                protocol: Protocol::Udp,
                port: Some(53)
            },
        ]
    );
}

#[test]
fn absent_conditions_read_as_the_api_says() {
    let slice = parse(&format!(
        "{HEAD}endpoints:\n- addresses: [10.0.1.5]\n- addresses: [10.0.1.6]\n  conditions: {{ready: false}}\n"
    ))
    .unwrap();
    let unknown = slice.endpoints[0].conditions;
    assert_eq!(unknown, EndpointConditions::default());
    assert!(unknown.ready() && unknown.serving() && !unknown.terminating());
    let not_ready = slice.endpoints[1].conditions;
    assert!(!not_ready.ready() && not_ready.serving() && !not_ready.terminating());
}

#[test]
fn empty_slices_and_ports_without_numbers_are_valid() {
    let slice = parse(HEAD).unwrap();
    assert!(slice.endpoints.is_empty() && slice.ports.is_empty());
    let slice = parse(&format!("{HEAD}ports: [{{name: http}}]\n")).unwrap();
    assert_eq!(slice.ports[0].port, None);
    assert_eq!(slice.ports[0].protocol, Protocol::Tcp, "default TCP");
}

#[test]
fn the_service_name_label_is_required() {
    assert_error(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s}\naddressType: IPv4\n",
        "metadata.labels[kubernetes.io/service-name]: required",
    );
    assert_error(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, labels: {kubernetes.io/service-name: Web}}\naddressType: IPv4\n",
        "metadata.labels[kubernetes.io/service-name]: \"Web\" is not a valid Service name",
    );
    let slice = parse(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\n",
    )
    .unwrap();
    assert_eq!(slice.namespace, "default");
}

#[test]
fn ipv4_and_ipv6_address_types_are_supported_fqdn_is_not() {
    let slice = |address_type: &str| HEAD.replace("addressType: IPv4\n", address_type);
    // The IPv4 reader takes IPv4 slices; AnyEndpointSlice reads both.
    assert_error(
        &slice("addressType: IPv6\n"),
        "addressType: IPv6 where an IPv4 slice was expected",
    );
    assert_error(
        &slice("addressType: FQDN\n"),
        "addressType: FQDN is not supported",
    );
    assert_error(
        &slice("addressType: IPv5\n"),
        "addressType: unsupported value \"IPv5\"",
    );
    assert_error(&slice(""), "addressType: required");
}

#[test]
fn endpoint_rules() {
    assert_error(
        &format!("{HEAD}endpoints: [{{addresses: []}}]\n"),
        "endpoints[0].addresses: must contain at least 1 address",
    );
    assert_error(
        &format!("{HEAD}endpoints: [{{conditions: {{ready: true}}}}]\n"),
        "endpoints[0].addresses: must contain at least 1 address",
    );
    assert_error(
        &format!("{HEAD}endpoints: [{{addresses: [10.0.0.1, 127.0.0.1]}}]\n"),
        "endpoints[0].addresses[1]: 127.0.0.1 may not be in the loopback range",
    );
    assert_error(
        &format!("{HEAD}endpoints: [{{addresses: [\"fd00::1\"]}}]\n"),
        "endpoints[0].addresses[0]: fd00::1: not an IPv4 address",
    );
    assert_error(
        &format!(
            "{HEAD}endpoints: [{{addresses: [10.0.0.1], conditions: {{ready: yes please}}}}]\n"
        ),
        "endpoints[0].conditions.ready: must be true or false, not a string",
    );
    assert_error(
        &format!("{HEAD}endpoints: [{{addresses: [10.0.0.1], nodeName: N_1}}]\n"),
        "endpoints[0].nodeName: invalid node name \"N_1\"",
    );
    assert_error(
        &format!("{HEAD}endpoints: [{{addresses: [10.0.0.1], targetRef: {{kind: Pod}}}}]\n"),
        "endpoints[0].targetRef.name: required",
    );
    let many: Vec<String> = (0..101)
        .map(|i| format!("10.0.{}.{}", i / 200, i % 200 + 1))
        .collect();
    assert_error(
        &format!("{HEAD}endpoints: [{{addresses: [{}]}}]\n", many.join(", ")),
        "endpoints[0].addresses: must have at most 100 items",
    );
}

#[test]
fn port_rules() {
    assert_error(
        &format!("{HEAD}ports: [{{name: a, port: 80}}, {{name: a, port: 81}}]\n"),
        "ports[1].name: duplicate value \"a\"",
    );
    assert_error(
        &format!("{HEAD}ports: [{{port: 80}}, {{name: \"\", port: 81}}]\n"),
        "ports[1].name: duplicate value \"\"",
    );
    assert_error(
        &format!("{HEAD}ports: [{{name: a, port: 0}}]\n"),
        "ports[0].port: invalid value 0",
    );
    assert_error(
        &format!("{HEAD}ports: [{{name: a, port: 80, protocol: SCTP}}]\n"),
        "ports[0].protocol: SCTP is not supported",
    );
    assert_error(
        &format!("{HEAD}ports: [{{name: A_B, port: 80}}]\n"),
        "ports[0].name: invalid port name \"A_B\"",
    );
}

#[test]
fn kind_name_and_shape_are_checked() {
    assert_error(
        &HEAD.replace("kind: EndpointSlice", "kind: Endpoints"),
        "kind: must be \"EndpointSlice\", not \"Endpoints\"",
    );
    assert_error(
        &HEAD.replace("discovery.k8s.io/v1", "discovery.k8s.io/v1beta1"),
        "apiVersion: must be \"discovery.k8s.io/v1\"",
    );
    assert_error(
        &HEAD.replace("web-abc12", "Web_1"),
        "metadata.name: invalid name \"Web_1\"",
    );
    assert_error(
        &format!("{HEAD}endpoints: {{a: 1}}\n"),
        "endpoints: must be a list, not a mapping",
    );
    assert_error(
        &format!("{HEAD}endpoints: [1]\n"),
        "endpoints[0]: must be a mapping, not a number",
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let errors = parse(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s}\naddressType: IPv6\nendpoints: [{addresses: [x]}]\nports: [{port: 99999}]\n",
    )
    .unwrap_err();
    let paths: Vec<&str> = errors
        .iter()
        .map(|e| e.split(':').next().unwrap())
        .collect();
    assert_eq!(
        paths,
        vec![
            "metadata.labels[kubernetes.io/service-name]",
            "addressType",
            "endpoints[0].addresses[0]",
            "ports[0].port",
        ],
        "{errors:#?}"
    );
}

fn parse_any(yaml: &str) -> Result<AnyEndpointSlice, Vec<String>> {
    let document: Value = serde_yaml_ng::from_str(yaml).expect("yaml");
    AnyEndpointSlice::from_document(&document).map_err(|e| e.messages())
}

#[test]
fn an_ipv6_slice_is_read_with_its_addresses() {
    let head = HEAD.replace("addressType: IPv4", "addressType: IPv6");
    let slice = parse_any(&format!(
        "{head}endpoints:\n- addresses: [\"fd00:10:244:1::5\"]\n  nodeName: n1\nports: [{{name: http, port: 8080}}]\n"
    ))
    .unwrap();
    let AnyEndpointSlice::V6(slice) = slice else {
        panic!("an IPv6 slice: {slice:?}");
    };
    assert_eq!(slice.service(), NamespacedName::new("shop", "web"));
    assert_eq!(
        slice.endpoints[0].addresses,
        vec!["fd00:10:244:1::5".parse::<Ipv6Addr>().unwrap()]
    );
    // An IPv4 slice through the same reader stays IPv4.
    assert!(matches!(
        parse_any(&format!("{HEAD}endpoints: [{{addresses: [10.0.0.1]}}]\n")).unwrap(),
        AnyEndpointSlice::V4(_)
    ));
}

#[test]
fn ipv6_endpoint_addresses_are_checked() {
    let head = HEAD.replace("addressType: IPv4", "addressType: IPv6");
    let errors = |addresses: &str| {
        parse_any(&format!(
            "{head}endpoints: [{{addresses: [{addresses}]}}]\n"
        ))
        .expect_err("should be rejected")
    };
    let has = |errors: Vec<String>, expected: &str| {
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "expected {expected:?} in {errors:#?}"
        )
    };
    has(
        errors("\"::1\""),
        "endpoints[0].addresses[0]: ::1 may not be the loopback address",
    );
    has(errors("\"fe80::1\""), "in the link-local range (fe80::/10)");
    has(errors("\"::\""), "may not be unspecified");
    has(errors("\"::ffff:10.0.0.1\""), "an IPv4-mapped address");
    has(
        errors("10.0.0.1"),
        "endpoints[0].addresses[0]: 10.0.0.1: not an IPv6 address",
    );
}
