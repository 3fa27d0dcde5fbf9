use super::*;

fn parse(yaml: &str) -> Result<Service, Vec<String>> {
    let document: Value = serde_yaml_ng::from_str(yaml).expect("yaml");
    Service::from_document(&document).map_err(|e| e.messages())
}

const HEAD: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n";

fn with_spec(spec: &str) -> String {
    format!("{HEAD}spec:\n{spec}")
}

fn errors(yaml: &str) -> Vec<String> {
    parse(yaml).expect_err("should be rejected")
}

fn assert_error(yaml: &str, expected: &str) {
    let errors = errors(yaml);
    assert!(
        errors.iter().any(|e| e.contains(expected)),
        "expected {expected:?} in {errors:#?}"
    );
}

#[test]
fn a_minimal_cluster_ip_service_gets_kubernetes_defaults() {
    let s = parse(&with_spec(
        "  clusterIP: 10.96.0.10\n  selector: {app: web}\n  ports: [{port: 80}]\n",
    ))
    .unwrap();
    assert_eq!(s.service_name().to_string(), "shop/web");
    assert_eq!(s.service_type, ServiceType::ClusterIp);
    assert_eq!(
        s.cluster_ips,
        ClusterIps::Allocated(vec![Ipv4Addr::new(10, 96, 0, 10)])
    );
    assert_eq!(
        s.ports,
        vec![ServicePort {
            name: None,
            protocol: Protocol::Tcp,
            port: 80,
            target_port: TargetPort::Number(80),
            node_port: None,
        }]
    );
    assert_eq!(
        s.selector,
        Some(BTreeMap::from([("app".into(), "web".into())]))
    );
    assert_eq!(s.external_traffic_policy, TrafficPolicy::Cluster);
    assert_eq!(s.internal_traffic_policy, TrafficPolicy::Cluster);
    assert_eq!(s.session_affinity, SessionAffinity::None);
    assert_eq!(s.algorithm, None);
    assert!(!s.publish_not_ready_addresses);
    assert!(!s.allocate_load_balancer_node_ports);
    assert!(!s.is_externally_accessible());
}

#[test]
fn missing_namespace_is_default_and_missing_cluster_ip_is_unallocated() {
    let s = parse(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n",
    )
    .unwrap();
    assert_eq!(s.namespace, "default");
    assert_eq!(s.cluster_ips, ClusterIps::Unallocated);
    assert_eq!(s.selector, None);
}

#[test]
fn a_full_load_balancer_service() {
    let s = parse(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: shop
  namespace: prod
  annotations:
    service.weir.io/lb-algorithm: maglev
    other: kept
spec:
  type: LoadBalancer
  clusterIP: 10.96.1.1
  clusterIPs: [10.96.1.1]
  selector: {app: shop, tier: front}
  ports:
  - {name: http, port: 80, targetPort: web, nodePort: 30080}
  - {name: dns, protocol: UDP, port: 53, targetPort: 5353, nodePort: 30053}
  externalIPs: [192.0.2.10, 192.0.2.10, 192.0.2.11]
  externalTrafficPolicy: Local
  internalTrafficPolicy: Local
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}
  publishNotReadyAddresses: true
  ipFamilies: [IPv4]
  ipFamilyPolicy: SingleStack
status:
  loadBalancer:
    ingress:
    - ip: 203.0.113.7
    - hostname: lb.example.com
"#,
    )
    .unwrap();
    assert_eq!(s.service_type, ServiceType::LoadBalancer);
    assert_eq!(s.algorithm, Some(Algorithm::Maglev));
    assert_eq!(s.annotations["other"], "kept");
    assert_eq!(s.ports[0].target_port, TargetPort::Name("web".into()));
    assert_eq!(s.ports[0].node_port, Some(30080));
    assert_eq!(s.ports[1].protocol, Protocol::Udp);
    assert_eq!(s.ports[1].target_port, TargetPort::Number(5353));
    assert_eq!(
        s.external_ips,
        vec![Ipv4Addr::new(192, 0, 2, 10), Ipv4Addr::new(192, 0, 2, 11)],
        "duplicates removed"
    );
    assert_eq!(s.load_balancer_ips, vec![Ipv4Addr::new(203, 0, 113, 7)]);
    assert_eq!(s.external_traffic_policy, TrafficPolicy::Local);
    assert_eq!(s.internal_traffic_policy, TrafficPolicy::Local);
    assert_eq!(
        s.session_affinity,
        SessionAffinity::ClientIp {
            timeout_seconds: 60
        }
    );
    assert!(s.publish_not_ready_addresses);
    assert!(
        s.allocate_load_balancer_node_ports,
        "default for LoadBalancer"
    );
    assert!(s.is_externally_accessible());
}

#[test]
fn headless_services_may_have_no_ports() {
    let s = parse(&with_spec("  clusterIP: None\n  selector: {app: db}\n")).unwrap();
    assert!(s.is_headless());
    assert!(s.ports.is_empty());
    let s = parse(&with_spec(
        "  clusterIPs: [None]\n  ports: [{port: 5432}]\n",
    ))
    .unwrap();
    assert!(s.is_headless());
}

#[test]
fn headless_cannot_be_node_port_or_load_balancer() {
    assert_error(
        &with_spec("  type: NodePort\n  clusterIP: None\n  ports: [{port: 80}]\n"),
        "spec.clusterIP: may not be \"None\" (headless) for NodePort services",
    );
    assert_error(
        &with_spec("  type: LoadBalancer\n  clusterIPs: [None]\n  ports: [{port: 80}]\n"),
        "spec.clusterIPs[0]: may not be \"None\" (headless) for LoadBalancer services",
    );
}

#[test]
fn cluster_ips_rules() {
    assert_error(
        &with_spec("  clusterIP: 10.96.0.1\n  clusterIPs: [10.96.0.2]\n  ports: [{port: 80}]\n"),
        "spec.clusterIPs[0]: \"10.96.0.2\" must be equal to clusterIP \"10.96.0.1\"",
    );
    assert_error(
        &with_spec("  clusterIPs: [None, 10.96.0.2]\n  ports: [{port: 80}]\n"),
        "spec.clusterIPs[0]: \"None\" must be the first and only value",
    );
    assert_error(
        &with_spec("  clusterIPs: [10.96.0.1, 10.96.0.2]\n  ports: [{port: 80}]\n"),
        "spec.clusterIPs[1]: must be of a different IP family",
    );
    assert_error(
        &with_spec("  clusterIPs: [\"fd00::1\", \"fd00::2\"]\n  ports: [{port: 80}]\n"),
        "spec.clusterIPs[1]: must be of a different IP family",
    );
    assert_error(
        &with_spec("  clusterIP: \"::ffff:10.96.0.1\"\n  ports: [{port: 80}]\n"),
        "spec.clusterIP: ::ffff:10.96.0.1: an IPv4-mapped IPv6 address",
    );
    assert_error(
        &with_spec("  clusterIP: 10.96.0.300\n  ports: [{port: 80}]\n"),
        "spec.clusterIP: \"10.96.0.300\" is not a valid IPv4 address",
    );
}

#[test]
fn unsupported_kinds_of_service_say_why() {
    let errors = errors(&with_spec(
        "  type: ExternalName\n  externalName: db.example.com\n",
    ));
    assert_eq!(
        errors,
        vec!["spec.type: ExternalName services are DNS aliases with nothing to load-balance: not supported by Weir"],
        "only the reason, no noise about the rest of the spec"
    );
    assert_error(
        &with_spec("  type: Magic\n  ports: [{port: 80}]\n"),
        "spec.type: unsupported value \"Magic\"",
    );
    assert_error(
        &with_spec("  ports: [{port: 80, protocol: SCTP}]\n"),
        "spec.ports[0].protocol: SCTP is not supported by Weir yet",
    );
    assert_error(
        &with_spec("  ports: [{port: 80, protocol: tcp}]\n"),
        "spec.ports[0].protocol: unsupported value \"tcp\"",
    );
    assert_error(
        &with_spec("  type: LoadBalancer\n  loadBalancerSourceRanges: [10.0.0.0/8]\n  ports: [{port: 80}]\n"),
        "spec.loadBalancerSourceRanges: not supported by Weir yet",
    );
    assert_error(
        &with_spec("  ipFamilies: [IPv6, IPv6]\n  ports: [{port: 80}]\n"),
        "spec.ipFamilies[1]: duplicate value \"IPv6\"",
    );
    assert_error(
        &with_spec("  ipFamilies: [IPv5]\n  ports: [{port: 80}]\n"),
        "spec.ipFamilies[0]: unsupported value \"IPv5\"",
    );
}

#[test]
fn port_rules() {
    assert_error(&with_spec("  ports: []\n"), "spec.ports: required");
    assert_error(
        &with_spec("  ports: [{port: 0}]\n"),
        "spec.ports[0].port: invalid value 0: must be between 1 and 65535",
    );
    assert_error(
        &with_spec("  ports: [{port: 65536}]\n"),
        "spec.ports[0].port: invalid value 65536",
    );
    assert_error(
        &with_spec("  ports: [{name: a}]\n"),
        "spec.ports[0].port: required",
    );
    assert_error(
        &with_spec("  ports: [{port: \"80\"}]\n"),
        "spec.ports[0].port: must be an integer, not a string",
    );
    assert_error(
        &with_spec("  ports: [{port: 80}, {name: b, port: 81}]\n"),
        "spec.ports[0].name: required when the service has more than one port",
    );
    assert_error(
        &with_spec("  ports: [{name: a, port: 80}, {name: a, port: 81}]\n"),
        "spec.ports[1].name: duplicate value \"a\"",
    );
    assert_error(
        &with_spec("  ports: [{name: a, port: 80}, {name: b, port: 80}]\n"),
        "spec.ports[1]: duplicate value: port 80 with protocol TCP",
    );
    // The same number over two protocols is fine.
    parse(&with_spec(
        "  ports: [{name: a, port: 53}, {name: b, port: 53, protocol: UDP}]\n",
    ))
    .unwrap();
    assert_error(
        &with_spec("  ports: [{name: Http, port: 80}]\n"),
        "spec.ports[0].name: invalid port name \"Http\"",
    );
}

#[test]
fn target_port_defaults_and_forms() {
    let target = |spec: &str| {
        parse(&with_spec(spec)).unwrap().ports[0]
            .target_port
            .clone()
    };
    assert_eq!(target("  ports: [{port: 80}]\n"), TargetPort::Number(80));
    assert_eq!(
        target("  ports: [{port: 80, targetPort: 0}]\n"),
        TargetPort::Number(80)
    );
    assert_eq!(
        target("  ports: [{port: 80, targetPort: \"\"}]\n"),
        TargetPort::Number(80)
    );
    assert_eq!(
        target("  ports: [{port: 80, targetPort: 8080}]\n"),
        TargetPort::Number(8080)
    );
    assert_eq!(
        target("  ports: [{port: 80, targetPort: http-alt}]\n"),
        TargetPort::Name("http-alt".into())
    );
    assert_error(
        &with_spec("  ports: [{port: 80, targetPort: \"8080\"}]\n"),
        "spec.ports[0].targetPort: invalid port name \"8080\"",
    );
    assert_error(
        &with_spec("  ports: [{port: 80, targetPort: a-very-long-port-name}]\n"),
        "spec.ports[0].targetPort: invalid port name",
    );
    assert_error(
        &with_spec("  ports: [{port: 80, targetPort: 70000}]\n"),
        "spec.ports[0].targetPort: invalid value 70000",
    );
    assert_error(
        &with_spec("  ports: [{port: 80, targetPort: [1]}]\n"),
        "spec.ports[0].targetPort: must be an integer or a string, not a list",
    );
}

#[test]
fn node_port_rules() {
    assert_error(
        &with_spec("  ports: [{port: 80, nodePort: 30080}]\n"),
        "spec.ports[0].nodePort: may not be used when `type` is 'ClusterIP'",
    );
    assert_error(
        &with_spec("  type: NodePort\n  ports: [{name: a, port: 80, nodePort: 30080}, {name: b, port: 81, nodePort: 30080}]\n"),
        "spec.ports[1].nodePort: duplicate value: nodePort 30080 with protocol TCP",
    );
    assert_error(
        &with_spec("  type: NodePort\n  ports: [{port: 80, nodePort: 70000}]\n"),
        "spec.ports[0].nodePort: invalid value 70000",
    );
    let s = parse(&with_spec(
        "  type: NodePort\n  ports: [{port: 80, nodePort: 0}]\n",
    ))
    .unwrap();
    assert_eq!(s.ports[0].node_port, None, "0 means unset");
    assert_error(
        &with_spec("  allocateLoadBalancerNodePorts: false\n  ports: [{port: 80}]\n"),
        "spec.allocateLoadBalancerNodePorts: may only be used when `type` is 'LoadBalancer'",
    );
    let s = parse(&with_spec(
        "  type: LoadBalancer\n  allocateLoadBalancerNodePorts: false\n  ports: [{port: 80}]\n",
    ))
    .unwrap();
    assert!(!s.allocate_load_balancer_node_ports);
}

#[test]
fn traffic_policies() {
    assert_error(
        &with_spec("  externalTrafficPolicy: Local\n  ports: [{port: 80}]\n"),
        "spec.externalTrafficPolicy: may only be set for externally-accessible services",
    );
    // externalIPs make a ClusterIP service externally accessible.
    let s = parse(&with_spec(
        "  externalTrafficPolicy: Local\n  externalIPs: [192.0.2.1]\n  ports: [{port: 80}]\n",
    ))
    .unwrap();
    assert_eq!(s.external_traffic_policy, TrafficPolicy::Local);
    assert_error(
        &with_spec("  type: NodePort\n  externalTrafficPolicy: local\n  ports: [{port: 80}]\n"),
        "spec.externalTrafficPolicy: unsupported value \"local\"",
    );
    assert_error(
        &with_spec("  internalTrafficPolicy: Nearby\n  ports: [{port: 80}]\n"),
        "spec.internalTrafficPolicy: unsupported value \"Nearby\"",
    );
}

#[test]
fn session_affinity() {
    let affinity = |spec: &str| parse(&with_spec(spec)).unwrap().session_affinity;
    assert_eq!(
        affinity("  sessionAffinity: ClientIP\n  ports: [{port: 80}]\n"),
        SessionAffinity::ClientIp {
            timeout_seconds: 10800
        }
    );
    assert_eq!(
        affinity("  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 86400}}\n  ports: [{port: 80}]\n"),
        SessionAffinity::ClientIp { timeout_seconds: 86400 }
    );
    assert_eq!(
        affinity("  sessionAffinity: None\n  ports: [{port: 80}]\n"),
        SessionAffinity::None
    );
    for bad in [0, 86401, -1] {
        assert_error(
            &with_spec(&format!("  sessionAffinity: ClientIP\n  sessionAffinityConfig: {{clientIP: {{timeoutSeconds: {bad}}}}}\n  ports: [{{port: 80}}]\n")),
            &format!("spec.sessionAffinityConfig.clientIP.timeoutSeconds: invalid value {bad}"),
        );
    }
    assert_error(
        &with_spec(
            "  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n  ports: [{port: 80}]\n",
        ),
        "spec.sessionAffinityConfig: must not be set when sessionAffinity is None",
    );
    assert_error(
        &with_spec("  sessionAffinity: Cookie\n  ports: [{port: 80}]\n"),
        "spec.sessionAffinity: unsupported value \"Cookie\"",
    );
}

#[test]
fn algorithm_annotation() {
    let algorithm = |value: &str| {
        parse(&format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  annotations: {{service.weir.io/lb-algorithm: {value}}}\nspec: {{ports: [{{port: 80}}]}}\n"
        ))
    };
    assert_eq!(
        algorithm("random").unwrap().algorithm,
        Some(Algorithm::Random)
    );
    assert_eq!(
        algorithm("maglev").unwrap().algorithm,
        Some(Algorithm::Maglev)
    );
    assert_eq!(
        algorithm("ring").unwrap_err(),
        vec!["metadata.annotations[service.weir.io/lb-algorithm]: unsupported value \"ring\": supported values: \"maglev\", \"random\""]
    );
}

#[test]
fn external_and_load_balancer_addresses_are_checked() {
    assert_error(
        &with_spec("  externalIPs: [127.0.0.1]\n  ports: [{port: 80}]\n"),
        "spec.externalIPs[0]: 127.0.0.1 may not be in the loopback range",
    );
    assert_error(
        &with_spec("  externalIPs: [0.0.0.0]\n  ports: [{port: 80}]\n"),
        "spec.externalIPs[0]: 0.0.0.0 may not be unspecified",
    );
    assert_error(
        &with_spec("  externalIPs: [169.254.1.1]\n  ports: [{port: 80}]\n"),
        "link-local",
    );
    assert_error(
        &with_spec("  externalIPs: [somewhere]\n  ports: [{port: 80}]\n"),
        "spec.externalIPs[0]: \"somewhere\" is not a valid IPv4 address",
    );
    assert_error(
        &with_spec("  externalIPs: [\"fe80::1\"]\n  ports: [{port: 80}]\n"),
        "spec.externalIPs[0]: fe80::1 may not be in the link-local range",
    );
    assert_error(
        &format!(
            "{}status: {{loadBalancer: {{ingress: [{{ip: nowhere}}]}}}}\n",
            with_spec("  type: LoadBalancer\n  ports: [{port: 80}]\n")
        ),
        "status.loadBalancer.ingress[0].ip: \"nowhere\" is not a valid IPv4 address",
    );
}

#[test]
fn selector_and_names_are_validated() {
    assert_error(
        &with_spec("  selector: {app: 1}\n  ports: [{port: 80}]\n"),
        "spec.selector[app]: must be a string, not a number",
    );
    assert_error(
        &with_spec("  selector: {app: \"bad value\"}\n  ports: [{port: 80}]\n"),
        "spec.selector[app]: invalid label value \"bad value\"",
    );
    assert_error(
        &with_spec("  selector: {\"-app\": x}\n  ports: [{port: 80}]\n"),
        "spec.selector[-app]: invalid label key",
    );
    let s = parse(&with_spec("  selector: {}\n  ports: [{port: 80}]\n")).unwrap();
    assert_eq!(s.selector, None, "an empty selector is no selector");
    assert_error(
        "apiVersion: v1\nkind: Service\nmetadata: {name: 1web}\nspec: {ports: [{port: 80}]}\n",
        "metadata.name: invalid name \"1web\": a DNS-1035 label",
    );
    assert_error(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: Shop}\nspec: {ports: [{port: 80}]}\n",
        "metadata.namespace: invalid namespace \"Shop\"",
    );
    assert_error(
        "apiVersion: v1\nkind: Service\nmetadata: {}\nspec: {ports: [{port: 80}]}\n",
        "metadata.name: required",
    );
}

#[test]
fn kind_and_shape_are_checked() {
    assert_eq!(
        errors("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n"),
        vec![
            "apiVersion: must be \"v1\", not \"apps/v1\"",
            "kind: must be \"Service\", not \"Deployment\"",
        ]
    );
    assert_eq!(
        errors("- a\n- b\n"),
        vec!["(document): must be a mapping (a Kubernetes object)"]
    );
    assert_error(
        &format!("{HEAD}spec: [1]\n"),
        "spec: must be a mapping, not a list",
    );
    assert_error(
        &with_spec("  ports: {port: 80}\n"),
        "spec.ports: must be a list, not a mapping",
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let errors = errors(&with_spec(
        "  type: NodePort\n  ports:\n  - {name: a, port: 0}\n  - {port: 81, protocol: SCTP}\n  sessionAffinity: Sticky\n  externalIPs: [\"::1\"]\n",
    ));
    let paths: Vec<&str> = errors
        .iter()
        .map(|e| e.split(':').next().unwrap())
        .collect();
    assert_eq!(
        paths,
        vec![
            "spec.ports[0].port",
            "spec.ports[1].name",
            "spec.ports[1].protocol",
            "spec.externalIPs[0]",
            "spec.sessionAffinity",
        ],
        "{errors:#?}"
    );
}

#[test]
fn unknown_fields_are_ignored() {
    parse(&with_spec(
        "  ports: [{port: 80, appProtocol: http}]\n  healthCheckNodePort: 0\n  trafficDistribution: PreferClose\n",
    ))
    .unwrap();
}

#[test]
fn ipv6_and_dual_stack_cluster_ips_are_read_per_family() {
    let v6: Ipv6Addr = "fd00:96::10".parse().unwrap();
    let single = parse(&with_spec(
        "  clusterIP: \"fd00:96::10\"\n  ipFamilies: [IPv6]\n  ipFamilyPolicy: SingleStack\n  ports: [{port: 80}]\n",
    ))
    .unwrap();
    assert_eq!(single.cluster_ips, ClusterIps::Allocated(Vec::new()));
    assert_eq!(single.cluster_ips_v6, vec![v6]);

    // Either family first; ipFamilies in the same order.
    for (ips, families) in [
        ("[10.96.0.10, \"fd00:96::10\"]", "[IPv4, IPv6]"),
        ("[\"fd00:96::10\", 10.96.0.10]", "[IPv6, IPv4]"),
    ] {
        let dual = parse(&with_spec(&format!(
            "  clusterIPs: {ips}\n  ipFamilies: {families}\n  ipFamilyPolicy: RequireDualStack\n  ports: [{{port: 80}}]\n"
        )))
        .unwrap();
        assert_eq!(
            dual.cluster_ips,
            ClusterIps::Allocated(vec![Ipv4Addr::new(10, 96, 0, 10)])
        );
        assert_eq!(dual.cluster_ips_v6, vec![v6]);
    }

    // IPv6 external and load-balancer IPs are kept apart (compile refuses
    // them per frontend).
    let lb = parse(&format!(
        "{}status: {{loadBalancer: {{ingress: [{{ip: 192.0.2.7}}, {{ip: \"2001:db8::1\"}}]}}}}\n",
        with_spec(
            "  type: LoadBalancer\n  clusterIPs: [10.96.0.10, \"fd00:96::10\"]\n  ipFamilyPolicy: PreferDualStack\n  externalIPs: [\"2001:db8::2\"]\n  ports: [{port: 80, nodePort: 30080}]\n"
        )
    ))
    .unwrap();
    assert_eq!(lb.load_balancer_ips, vec![Ipv4Addr::new(192, 0, 2, 7)]);
    assert_eq!(
        lb.load_balancer_ips_v6,
        vec!["2001:db8::1".parse::<Ipv6Addr>().unwrap()]
    );
    assert_eq!(
        lb.external_ips_v6,
        vec!["2001:db8::2".parse::<Ipv6Addr>().unwrap()]
    );
    assert!(lb.is_externally_accessible());
}

#[test]
fn ip_families_must_match_the_cluster_ips_and_the_policy() {
    assert_error(
        &with_spec("  clusterIP: 10.96.0.10\n  ipFamilies: [IPv6]\n  ports: [{port: 80}]\n"),
        "spec.ipFamilies[0]: IPv6 does not match the family of clusterIPs[0] (IPv4)",
    );
    assert_error(
        &with_spec(
            "  clusterIPs: [10.96.0.10, \"fd00:96::10\"]\n  ipFamilyPolicy: SingleStack\n  ports: [{port: 80}]\n",
        ),
        "spec.ipFamilyPolicy: must be RequireDualStack or PreferDualStack",
    );
    assert_error(
        &with_spec(
            "  ipFamilies: [IPv4, IPv6]\n  ipFamilyPolicy: SingleStack\n  ports: [{port: 80}]\n",
        ),
        "spec.ipFamilyPolicy: must be RequireDualStack or PreferDualStack",
    );
    assert_error(
        &with_spec("  ipFamilyPolicy: Sometimes\n  ports: [{port: 80}]\n"),
        "spec.ipFamilyPolicy: unsupported value \"Sometimes\"",
    );
}
