use super::*;

/// Parses YAML as `T` and writes it back: the result must equal the input
/// (as YAML values, so layout and key order do not matter).
fn round_trip<T: serde::de::DeserializeOwned + Serialize>(yaml: &str) -> T {
    let object: T = serde_yaml_ng::from_str(yaml).unwrap();
    let back = serde_yaml_ng::to_value(&object).unwrap();
    let input: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
    assert_eq!(back, input, "round trip changed the document");
    object
}

const NAMESPACED: &str = r#"
apiVersion: weir.io/v1
kind: WeirNetworkPolicy
metadata:
  name: web
  namespace: shop
spec:
  endpointSelector:
    matchLabels: {app: web}
    matchExpressions:
    - {key: tier, operator: In, values: [front]}
  ingress:
  - fromEndpoints:
    - matchLabels: {app: cart}
    toPorts:
    - ports:
      - {port: http, protocol: TCP}
      - {port: 8000, endPort: 8080}
  - fromCIDRSet:
    - {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
    fromEntities: [host]
  egressDeny:
  - toCIDR: [192.0.2.0/24]
specs:
- endpointSelector: {}
  egress:
  - toEndpoints: [{}]
status:
  conditions:
  - {type: Valid, status: "True"}
  nodes:
    n1: {ok: true, revision: 7}
"#;

#[test]
fn a_namespaced_policy_round_trips() {
    let policy: WeirNetworkPolicy = round_trip(NAMESPACED);
    crate::test_util::assert_stored_as_is::<WeirNetworkPolicy>(NAMESPACED);
    assert_eq!(policy.metadata.namespace.as_deref(), Some("shop"));
    assert_eq!(policy.specs.as_ref().map(Vec::len), Some(1));
    assert_eq!(policy.status.unwrap().nodes["n1"].revision, Some(7));
}

#[test]
fn a_clusterwide_policy_round_trips_with_unsupported_fields_kept() {
    // toFQDNs is refused by validation, and so must survive the trip.
    let yaml = "apiVersion: weir.io/v1\nkind: WeirClusterwideNetworkPolicy\nmetadata: {name: dns}\nspec:\n  endpointSelector: {}\n  egress:\n  - toFQDNs: [{matchName: example.com}]\n";
    let policy: WeirClusterwideNetworkPolicy = round_trip(yaml);
    crate::test_util::assert_stored_as_is::<WeirClusterwideNetworkPolicy>(yaml);
    let err = policy.to_policy().unwrap_err();
    assert!(
        err.to_string().contains("toFQDNs is not supported"),
        "{err}"
    );
}

#[test]
fn the_crd_types_translate_as_the_manifest_documents_do() {
    let policy: WeirNetworkPolicy = serde_yaml_ng::from_str(NAMESPACED).unwrap();
    assert_eq!(
        policy.to_policy().unwrap(),
        weir_policy::parse_policy(NAMESPACED).unwrap()
    );
}

#[test]
fn the_example_policies_parse_as_the_crd_types() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/lab/policies.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let mut weir = 0;
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let value = serde_yaml_ng::Value::deserialize(doc).unwrap();
        let yaml = serde_yaml_ng::to_string(&value).unwrap();
        let from_crd = match value["kind"].as_str() {
            Some("WeirNetworkPolicy") => {
                crate::test_util::assert_stored_as_is::<WeirNetworkPolicy>(&yaml);
                serde_yaml_ng::from_value::<WeirNetworkPolicy>(value)
                    .unwrap()
                    .to_policy()
            }
            Some("WeirClusterwideNetworkPolicy") => {
                crate::test_util::assert_stored_as_is::<WeirClusterwideNetworkPolicy>(&yaml);
                serde_yaml_ng::from_value::<WeirClusterwideNetworkPolicy>(value)
                    .unwrap()
                    .to_policy()
            }
            _ => continue,
        };
        assert_eq!(from_crd.unwrap(), weir_policy::parse_policy(&yaml).unwrap());
        weir += 1;
    }
    assert!(weir > 0, "{path} has no Weir policy");
}

#[test]
fn a_refusal_lists_every_problem_with_its_path() {
    let policy: WeirNetworkPolicy = serde_yaml_ng::from_str(
        "metadata: {name: bad, namespace: x}\nspec:\n  endpointSelector: {}\n  ingress:\n  - toPorts: [{ports: [{port: 70000}]}]\n    fromEntities: [moon]\n",
    )
    .unwrap();
    let status = NodePolicyStatus::refused(&policy.to_policy().unwrap_err());
    assert!(!status.ok);
    let paths: Vec<&str> = status.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.ingress[0].fromEntities[0]",
            "spec.ingress[0].toPorts[0].ports[0].port"
        ]
    );
    assert_eq!(
        status.errors[1].message,
        "port 70000 is out of range 1-65535"
    );
}

#[test]
fn the_valid_condition_follows_the_nodes() {
    let mut status = PolicyStatus::default();
    status.set_node("n1", NodePolicyStatus::accepted(3));
    assert_eq!(status.conditions[0].status, "True");
    let refused = NodePolicyStatus {
        ok: false,
        revision: None,
        errors: vec![FieldErrorStatus {
            path: "spec.x".into(),
            message: "no".into(),
        }],
    };
    status.set_node("n2", refused);
    assert_eq!(status.conditions.len(), 1);
    assert_eq!(status.conditions[0].status, "False");
    assert_eq!(
        status.conditions[0].message.as_deref(),
        Some("n2: spec.x: no")
    );
    status.set_node("n2", NodePolicyStatus::accepted(4));
    assert_eq!(status.conditions[0].status, "True");
}

#[test]
fn the_roots_name_their_kind_scope_and_group() {
    assert_eq!(WeirNetworkPolicy::kind(&()), "WeirNetworkPolicy");
    assert_eq!(WeirNetworkPolicy::api_version(&()), "weir.io/v1");
    assert_eq!(WeirNetworkPolicy::crd().spec.scope, "Namespaced");
    assert_eq!(WeirClusterwideNetworkPolicy::crd().spec.scope, "Cluster");
    assert_eq!(
        WeirClusterwideNetworkPolicy::crd_name(),
        WeirClusterwideNetworkPolicy::crd().metadata.name.unwrap()
    );
}

#[test]
fn a_misspelt_field_is_one_the_api_server_prunes() {
    // The parser ignores unknown fields as kubectl does; the schema check
    // shows what the API server would drop, so the tests above mean it.
    let crd = serde_json::to_value(WeirNetworkPolicy::crd()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let object = serde_json::json!({
        "spec": {"endpointSelector": {}, "ingres": [{}], "egress": [{"toPorts": [{"ports": [{"port": [80]}]}]}]}
    });
    assert_eq!(
        schema::object_problems(schema, &object),
        vec![
            ".spec.egress[0].toPorts[0].ports[0].port: [80] is neither an integer nor a string",
            ".spec.ingres: not in the schema (pruned)",
        ]
    );
}
