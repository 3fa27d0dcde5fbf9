use super::*;

fn policy(yaml: &str, clusterwide: bool) -> Result<Policy, Vec<String>> {
    let p = WeirPolicy::from_yaml(yaml).expect("yaml");
    p.to_policy(clusterwide).map_err(|e| match e {
        PolicyError::Invalid { errors, .. } => errors.messages(),
        other => vec![other.to_string()],
    })
}

fn wnp(spec: &str) -> String {
    format!("apiVersion: weir.io/v1\nkind: WeirNetworkPolicy\nmetadata: {{name: p, namespace: x}}\nspec:\n{spec}")
}

fn peer_strings(p: &Policy) -> Vec<String> {
    p.rule_sets[0].rules[0]
        .peers
        .iter()
        .map(|peer| match peer {
            Peer::Endpoints(s) => s.to_string(),
            Peer::Entity(e) => format!("entity:{}", e.name()),
            Peer::Cidr { cidr, except, .. } => format!("cidr:{cidr} except {except:?}"),
            Peer::Any => "any".into(),
        })
        .collect()
}

#[test]
fn namespaced_scoping() {
    let p = policy(
        &wnp(r#"  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints:
    - matchLabels: {app: a}
    - matchLabels: {"k8s:io.kubernetes.pod.namespace": other, app: b}
    - matchLabels: {"reserved:host": ""}
    - {}
"#),
        false,
    )
    .unwrap();
    assert_eq!(
        p.rule_sets[0].subject.to_string(),
        "{app=web, k8s:io.kubernetes.pod.namespace=x}"
    );
    assert_eq!(
        peer_strings(&p),
        vec![
            "{app=a, k8s:io.kubernetes.pod.namespace=x}",
            "{app=b, k8s:io.kubernetes.pod.namespace=other}",
            "{reserved:host=}",
            "{k8s:io.kubernetes.pod.namespace=x}",
        ]
    );
}

#[test]
fn clusterwide_scoping() {
    let p = policy(
        r#"apiVersion: weir.io/v1
kind: WeirClusterwideNetworkPolicy
metadata: {name: c}
spec:
  endpointSelector: {}
  egress:
  - toEndpoints: [{}, {matchLabels: {app: a}}, {matchLabels: {"io.kubernetes.pod.namespace": kube-system}}]
"#,
        true,
    )
    .unwrap();
    assert_eq!(p.id.to_string(), "WeirClusterwideNetworkPolicy c");
    assert!(p.rule_sets[0].subject.is_empty());
    assert_eq!(
        peer_strings(&p),
        vec![
            "{k8s:io.kubernetes.pod.namespace}",
            "{app=a, k8s:io.kubernetes.pod.namespace}",
            "{io.kubernetes.pod.namespace=kube-system}",
        ]
    );
}

#[test]
fn enforcement_follows_non_empty_sections() {
    let p = policy(
        &wnp("  endpointSelector: {}\n  ingressDeny: [{fromEntities: [world]}]\n  egress: []\n"),
        false,
    )
    .unwrap();
    assert!(p.rule_sets[0].enforces_ingress);
    assert!(!p.rule_sets[0].enforces_egress);
    assert_eq!(p.rule_sets[0].rules[0].verdict, Verdict::Deny);
}

#[test]
fn empty_rule_matches_nothing_but_ports_only_rule_matches_everyone() {
    let p = policy(&wnp("  endpointSelector: {}\n  ingress: [{}]\n"), false).unwrap();
    assert!(p.rule_sets[0].rules[0].peers.is_empty());
    let p = policy(
        &wnp("  endpointSelector: {}\n  ingress: [{toPorts: [{ports: [{port: \"80\"}]}]}]\n"),
        false,
    )
    .unwrap();
    assert_eq!(p.rule_sets[0].rules[0].peers, vec![Peer::Any]);
    assert_eq!(
        p.rule_sets[0].rules[0].ports,
        vec![PortMatch {
            protocol: None,
            port: crate::rule::PortRef::Range(80, 80)
        }]
    );
}

#[test]
fn cidrs_entities_and_specs_list() {
    let p = policy(
        r#"apiVersion: weir.io/v1
kind: WeirNetworkPolicy
metadata: {name: p, namespace: x}
specs:
- endpointSelector: {}
  egress:
  - toCIDR: [192.0.2.1, 198.51.100.0/24]
    toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.96.0.0/12]}]
    toEntities: [kube-apiserver, world]
- endpointSelector: {matchLabels: {app: b}}
  ingress: [{fromEntities: [all]}]
"#,
        false,
    )
    .unwrap();
    assert_eq!(p.rule_sets.len(), 2);
    assert_eq!(
        peer_strings(&p),
        vec![
            "cidr:192.0.2.1/32 except []",
            "cidr:198.51.100.0/24 except []",
            "cidr:10.0.0.0/8 except [V4(Ipv4Network { addr: 10.96.0.0, prefix: 12 })]",
            "entity:kube-apiserver",
            "entity:world",
        ]
    );
    assert_eq!(p.rule_sets[1].rules[0].path, "specs[1].ingress[0]");
}

#[test]
fn validation_reports_every_problem() {
    let errs = policy(
        &wnp(r#"  endpointSelector:
    matchLabels: {"k8s:io.kubernetes.pod.namespace": other}
  enableDefaultDeny: {ingress: false}
  ingress:
  - fromEndpoints: [{matchExpressions: [{key: a, operator: Exists, values: [x]}]}]
    fromCIDR: [300.0.0.0/8]
    fromEntities: [galaxy]
    toEndpoints: [{}]
    fromRequires: [{}]
    toPorts:
    - ports:
      - {port: "80", endPort: 79, protocol: TCP}
      - {port: "70000"}
      - {port: "443", protocol: ICMP}
      rules: {http: [{method: GET}]}
  egressDeny:
  - toFQDNs: [{matchName: example.com}]
    toCIDRSet: [{cidr: 10.0.0.0/8, except: [11.0.0.0/8]}, {cidrGroupRef: g}]
"#),
        false,
    )
    .unwrap_err();
    assert_eq!(
        errs,
        vec![
            r#"spec.enableDefaultDeny.ingress: false is not supported by Weir (rules always enable default deny)"#,
            r#"spec.endpointSelector: a namespaced policy selects endpoints only in its own namespace "x"; remove the requirement k8s:io.kubernetes.pod.namespace=other"#,
            "spec.ingress[0].toEndpoints: not allowed in a ingress rule (use fromEndpoints)",
            "spec.ingress[0].fromRequires: fromRequires is not supported by Weir",
            "spec.ingress[0].fromEndpoints[0].matchExpressions[0].values: must be empty when operator is Exists",
            r#"spec.ingress[0].fromCIDR[0]: invalid CIDR "300.0.0.0/8": must be an IP address or CIDR such as 10.0.0.0/8 or fd00::/64"#,
            r#"spec.ingress[0].fromEntities[0]: unknown entity "galaxy": must be one of all, world, world-ipv4, world-ipv6, cluster, host, remote-node, kube-apiserver, ingress, init, health, unmanaged, none"#,
            "spec.ingress[0].toPorts[0].rules: rules is not supported by Weir",
            "spec.ingress[0].toPorts[0].ports[0].endPort: 79 is below port 80",
            "spec.ingress[0].toPorts[0].ports[1].port: port 70000 is out of range 1-65535",
            r#"spec.ingress[0].toPorts[0].ports[2].protocol: unsupported protocol "ICMP": must be "TCP", "UDP", "SCTP" or "ANY""#,
            "spec.egressDeny[0].toFQDNs: toFQDNs is not supported by Weir",
            "spec.egressDeny[0].toCIDRSet[0].except[0]: 11.0.0.0/8 is not a strict subnet of cidr 10.0.0.0/8",
            "spec.egressDeny[0].toCIDRSet[1].cidrGroupRef: cidrGroupRef is not supported by Weir",
        ]
    );
}

#[test]
fn spec_and_selector_are_required() {
    let errs = policy(
        "apiVersion: weir.io/v1\nkind: WeirNetworkPolicy\nmetadata: {name: p}\n",
        false,
    )
    .unwrap_err();
    assert_eq!(errs, vec!["spec: spec or specs is required"]);
    let errs = policy(&wnp("  ingress: [{}]\n  nodeSelector: {}\n"), false).unwrap_err();
    assert_eq!(
        errs,
        vec![
            "spec.nodeSelector: nodeSelector (host policy) is not supported by Weir",
            "spec.endpointSelector: endpointSelector is required",
        ]
    );
}
