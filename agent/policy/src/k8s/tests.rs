use super::*;

fn policy(yaml: &str) -> Result<Policy, Vec<String>> {
    let np = NetworkPolicy::from_yaml(yaml).expect("yaml");
    np.to_policy().map_err(|e| match e {
        PolicyError::Invalid { errors, .. } => errors.messages(),
        other => vec![other.to_string()],
    })
}

const HEAD: &str =
    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\n";

fn with_spec(spec: &str) -> String {
    format!("{HEAD}spec:\n{spec}")
}

#[test]
fn policy_types_default_to_ingress_plus_egress_if_egress_rules() {
    let p = policy(&with_spec("  podSelector: {}\n")).unwrap();
    assert!(p.rule_sets[0].enforces_ingress);
    assert!(!p.rule_sets[0].enforces_egress);

    let p = policy(&with_spec("  podSelector: {}\n  egress: [{}]\n")).unwrap();
    assert!(p.rule_sets[0].enforces_ingress && p.rule_sets[0].enforces_egress);

    // Kubernetes defaulting checks len(egress): an empty list adds nothing.
    let p = policy(&with_spec("  podSelector: {}\n  egress: []\n")).unwrap();
    assert!(!p.rule_sets[0].enforces_egress);

    let p = policy(&with_spec("  podSelector: {}\n  policyTypes: [Egress]\n")).unwrap();
    assert!(!p.rule_sets[0].enforces_ingress && p.rule_sets[0].enforces_egress);
}

#[test]
fn rules_of_unlisted_direction_are_ignored() {
    let p = policy(&with_spec(
        "  podSelector: {}\n  policyTypes: [Egress]\n  ingress: [{}]\n  egress: [{}]\n",
    ))
    .unwrap();
    let dirs: Vec<Direction> = p.rule_sets[0].rules.iter().map(|r| r.direction).collect();
    assert_eq!(dirs, vec![Direction::Egress]);
}

#[test]
fn subject_is_restricted_to_the_namespace() {
    let p = policy(&with_spec("  podSelector: {matchLabels: {app: web}}\n")).unwrap();
    assert_eq!(
        p.rule_sets[0].subject.to_string(),
        "{k8s:app=web, k8s:io.kubernetes.pod.namespace=x}"
    );
    assert_eq!(p.id.to_string(), "NetworkPolicy x/p");
}

#[test]
fn missing_namespace_is_default() {
    let p = policy("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {podSelector: {}}\n").unwrap();
    assert_eq!(p.id.namespace.as_deref(), Some("default"));
}

#[test]
fn empty_or_missing_from_means_all_peers() {
    for rule in ["[{}]", "[{from: []}]"] {
        let p = policy(&with_spec(&format!(
            "  podSelector: {{}}\n  ingress: {rule}\n"
        )))
        .unwrap();
        assert_eq!(p.rule_sets[0].rules[0].peers, vec![Peer::Any], "{rule}");
        assert!(p.rule_sets[0].rules[0].ports.is_empty());
    }
    let p = policy(&with_spec("  podSelector: {}\n  ingress: []\n")).unwrap();
    assert!(p.rule_sets[0].rules.is_empty());
    assert!(p.rule_sets[0].enforces_ingress);
}

#[test]
fn peers_translate_like_cilium() {
    let p = policy(&with_spec(
        r#"  podSelector: {}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: a}}
    - namespaceSelector: {matchLabels: {team: t}}
    - namespaceSelector: {}
      podSelector: {matchLabels: {app: b}}
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
"#,
    ))
    .unwrap();
    let peers: Vec<String> = p.rule_sets[0].rules[0]
        .peers
        .iter()
        .map(|peer| match peer {
            Peer::Endpoints(s) => s.to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        peers,
        vec![
            "{k8s:app=a, k8s:io.kubernetes.pod.namespace=x}".to_string(),
            "{k8s:io.cilium.k8s.namespace.labels.team=t, k8s:io.kubernetes.pod.namespace}".to_string(),
            "{k8s:app=b, k8s:io.kubernetes.pod.namespace}".to_string(),
            "Cidr { cidr: V4(Ipv4Network { addr: 10.0.0.0, prefix: 8 }), except: [V4(Ipv4Network { addr: 10.1.0.0, prefix: 16 })], scope: Addresses }".to_string(),
        ]
    );
}

#[test]
fn ports_default_to_tcp() {
    let p = policy(&with_spec(
        "  podSelector: {}\n  ingress:\n  - ports: [{port: 80}, {protocol: UDP}, {port: http, protocol: SCTP}, {port: 1000, endPort: 2000}]\n",
    ))
    .unwrap();
    assert_eq!(
        p.rule_sets[0].rules[0].ports,
        vec![
            PortMatch {
                protocol: Some(Protocol::Tcp),
                port: crate::rule::PortRef::Range(80, 80)
            },
            PortMatch {
                protocol: Some(Protocol::Udp),
                port: crate::rule::PortRef::Any
            },
            PortMatch {
                protocol: Some(Protocol::Sctp),
                port: crate::rule::PortRef::Named("http".into())
            },
            PortMatch {
                protocol: Some(Protocol::Tcp),
                port: crate::rule::PortRef::Range(1000, 2000)
            },
        ]
    );
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let errs = policy(&with_spec(
        r#"  podSelector:
    matchExpressions:
    - {key: app, operator: Includes, values: [a]}
  policyTypes: [Ingress, Sideways, Ingress]
  ingress:
  - from:
    - ipBlock: {cidr: 10.0.0.0/33}
    - {}
    - ipBlock: {cidr: 10.0.0.0/8}
      podSelector: {}
    ports:
    - {port: 80}
    - {port: 80, endPort: 79}
    - {port: 0}
    - {port: 80, protocol: ICMP}
  egress:
  - to:
    - ipBlock: {cidr: 10.0.0.0/8, except: [192.168.0.0/16]}
    ports:
    - {port: "Not_A_Name"}
    - {endPort: 90}
"#,
    ))
    .unwrap_err();
    assert_eq!(
        errs,
        vec![
            r#"spec.podSelector.matchExpressions[0].operator: unknown operator "Includes""#,
            r#"spec.policyTypes[1]: unsupported value "Sideways": must be "Ingress" or "Egress""#,
            r#"spec.policyTypes[2]: duplicate value "Ingress""#,
            r#"spec.ingress[0].from[0].ipBlock.cidr: invalid CIDR "10.0.0.0/33": must be a CIDR such as 10.0.0.0/8 or fd00::/64"#,
            "spec.ingress[0].from[1]: must specify a peer: podSelector, namespaceSelector or ipBlock",
            "spec.ingress[0].from[2].ipBlock: may not be combined with podSelector or namespaceSelector",
            "spec.ingress[0].ports[1].endPort: 79 is below port 80",
            "spec.ingress[0].ports[2].port: port 0 is out of range 1-65535",
            r#"spec.ingress[0].ports[3].protocol: unsupported protocol "ICMP": must be "TCP", "UDP" or "SCTP""#,
            "spec.egress[0].to[0].ipBlock.except[0]: 192.168.0.0/16 is not a strict subnet of cidr 10.0.0.0/8",
            r#"spec.egress[0].ports[0].port: invalid port "Not_A_Name": must be a number 1-65535 or a port name (at most 15 lowercase letters, digits and '-', with at least one letter)"#,
            "spec.egress[0].ports[1].endPort: endPort requires a numeric port",
        ]
    );
}

#[test]
fn name_is_required_and_colon_keys_rejected() {
    let errs = policy(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {namespace: x}\nspec:\n  podSelector: {matchLabels: {'reserved:host': ''}}\n",
    )
    .unwrap_err();
    assert_eq!(
        errs,
        vec![
            "metadata.name: name is required",
            r#"spec.podSelector.matchLabels[reserved:host]: invalid label key "reserved:host": ':' is not allowed"#,
        ]
    );
}

#[test]
fn unknown_fields_are_ignored() {
    let p = policy(&with_spec("  podSelector: {}\n  somethingNew: 1\n  ingress: [{from: [{podSelector: {}, extra: true}]}]\n"));
    assert!(p.is_ok());
}
