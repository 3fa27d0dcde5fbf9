use super::*;

#[test]
fn an_endpoint_round_trips() {
    let yaml = r#"
apiVersion: weir.io/v1
kind: WeirEndpoint
metadata: {name: web-0, namespace: shop}
spec:
  identity: 1234
  nodeName: node-1
  nodeIP: 192.168.50.2
  addresses: {ipv4: 10.42.1.7, ipv6: "fd00::7"}
  namedPorts:
  - {name: http, port: 80, protocol: TCP}
status:
  state: Ready
  enforcement: {ingress: true, egress: false}
  policyRevision: 12
"#;
    let endpoint: WeirEndpoint = serde_yaml_ng::from_str(yaml).unwrap();
    crate::test_util::assert_stored_as_is::<WeirEndpoint>(yaml);
    assert_eq!(
        endpoint.spec.named_ports[0].protocol,
        weir_policy::Protocol::Tcp
    );
    assert_eq!(
        endpoint.status.as_ref().map(|s| s.state),
        Some(EndpointState::Ready)
    );
    assert_eq!(
        serde_yaml_ng::to_value(&endpoint).unwrap(),
        serde_yaml_ng::from_str::<serde_yaml_ng::Value>(yaml).unwrap()
    );
}

#[test]
fn a_bad_address_is_refused() {
    let yaml =
        "metadata: {name: p}\nspec: {identity: 1, nodeName: n, addresses: {ipv4: 10.0.0.300}}\n";
    assert!(serde_yaml_ng::from_str::<WeirEndpoint>(yaml).is_err());
}

#[test]
fn an_endpoint_for_a_pod_is_owned_by_it() {
    let endpoint = WeirEndpoint::for_pod("shop", "web-0", "uid-1", WeirEndpointSpec::default());
    assert_eq!(endpoint.metadata.name.as_deref(), Some("web-0"));
    assert_eq!(endpoint.metadata.namespace.as_deref(), Some("shop"));
    let owners = endpoint.metadata.owner_references.unwrap();
    assert_eq!(owners.len(), 1);
    let owner = &owners[0];
    assert_eq!(
        (
            owner.api_version.as_str(),
            owner.kind.as_str(),
            owner.name.as_str(),
            owner.uid.as_str()
        ),
        ("v1", "Pod", "web-0", "uid-1")
    );
}
