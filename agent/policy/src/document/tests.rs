use super::*;
use crate::rule::PolicyKind;

#[test]
fn dispatches_on_kind() {
    let docs = parse_policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a, namespace: x}
spec: {podSelector: {}}
---
apiVersion: weir.io/v1
kind: WeirNetworkPolicy
metadata: {name: b, namespace: x}
spec: {endpointSelector: {}}
---
---
apiVersion: weir.io/v1
kind: WeirClusterwideNetworkPolicy
metadata: {name: c}
spec: {endpointSelector: {}}
"#,
    );
    let kinds: Vec<PolicyKind> = docs.into_iter().map(|d| d.unwrap().id.kind).collect();
    assert_eq!(
        kinds,
        vec![
            PolicyKind::NetworkPolicy,
            PolicyKind::WeirNetworkPolicy,
            PolicyKind::WeirClusterwideNetworkPolicy
        ]
    );
}

#[test]
fn unsupported_kind_and_bad_yaml() {
    let e = parse_policy("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "unsupported policy kind cilium.io/v2/CiliumNetworkPolicy"
    );
    let e = parse_policy(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nspec: {podSelector: 5}\n",
    )
    .unwrap_err();
    assert!(matches!(e, PolicyError::Yaml { .. }), "{e}");
}

#[test]
fn invalid_policy_yields_no_rules_and_names_every_problem() {
    let results = parse_policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad, namespace: x}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: 80}, {port: 80, endPort: 79}]
  - ports: [{port: 99999}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: good, namespace: x}
spec: {podSelector: {}}
"#,
    );
    assert_eq!(results.len(), 2);
    let err = results[0].as_ref().unwrap_err();
    assert_eq!(
        err.to_string(),
        "NetworkPolicy x/bad is invalid: spec.ingress[0].ports[1].endPort: 79 is below port 80; spec.ingress[1].ports[0].port: port 99999 is out of range 1-65535"
    );
    assert!(results[1].is_ok());
}
