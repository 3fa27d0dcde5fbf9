use super::*;

#[test]
fn port_blocks_cover_ranges_exactly() {
    assert_eq!(port_blocks(80, 80), vec![(80, 16)]);
    assert_eq!(port_blocks(80, 95), vec![(80, 12)]);
    assert_eq!(port_blocks(0, 65_535), vec![(0, 0)]);
    // 80..=90: 80-87 (8 ports), 88-89, 90.
    assert_eq!(port_blocks(80, 90), vec![(80, 13), (88, 15), (90, 16)]);
    assert_eq!(port_blocks(65_535, 65_535), vec![(65_535, 16)]);
    // Exactness over many ranges: every port inside, none outside.
    for (lo, hi) in [(1, 1000), (1024, 65_535), (8080, 8090), (3, 17)] {
        let blocks = port_blocks(lo, hi);
        let mut covered = 0u32;
        for (start, bits) in &blocks {
            let size = 1u32 << (16 - bits);
            assert_eq!(u32::from(*start) % size, 0, "aligned");
            covered += size;
        }
        assert_eq!(covered, u32::from(hi) - u32::from(lo) + 1, "{lo}-{hi}");
    }
}

fn key(prefix_len: u32, protocol: u8, port: u16) -> LpmKey {
    LpmKey {
        prefix_len,
        key: PolicyKey {
            endpoint_id: 1,
            direction: 1,
            pad0: 0,
            identity: 300,
            protocol,
            pad1: 0,
            port: port.to_be_bytes(),
        },
    }
}

#[test]
fn coverage_follows_prefixes() {
    let any = key(POLICY_PREFIX_ANY_PROTOCOL, 0, 0);
    let tcp = key(POLICY_PREFIX_ANY_PORT, 6, 0);
    let tcp_80_95 = key(POLICY_PREFIX_ANY_PORT + 12, 6, 80);
    let tcp_85 = key(POLICY_PREFIX_FULL, 6, 85);
    let tcp_96 = key(POLICY_PREFIX_FULL, 6, 96);
    let udp_85 = key(POLICY_PREFIX_FULL, 17, 85);
    assert!(covers(&any, &udp_85));
    assert!(covers(&tcp, &tcp_85));
    assert!(!covers(&tcp, &udp_85));
    assert!(covers(&tcp_80_95, &tcp_85));
    assert!(!covers(&tcp_80_95, &tcp_96));
    assert!(!covers(&tcp_85, &tcp_80_95));
}

fn compiled_from(yaml: &str, identity_labels: &[(u32, &[(&str, &str)])]) -> Compiled {
    let mut view = ClusterView::new();
    for (id, labels) in identity_labels {
        let set = labels.iter().copied().collect();
        view.add_identity(weir_policy::Identity {
            id: *id,
            labels: set,
            named_ports: NamedPorts::new(),
        });
    }
    view.add_endpoint(weir_policy::Endpoint {
        id: 1,
        identity: 300,
        named_ports: NamedPorts::new(),
    });
    let policies: Vec<Policy> = weir_policy::parse_policies(yaml)
        .into_iter()
        .map(|p| p.unwrap())
        .collect();
    compile(&view, &policies, &mut LocalCidrAllocator::default())
}

const X_A: &[(&str, &str)] = &[
    ("k8s:pod", "a"),
    ("k8s:io.kubernetes.pod.namespace", "x"),
    ("k8s:io.cilium.k8s.namespace.labels.ns", "x"),
];
const X_B: &[(&str, &str)] = &[
    ("k8s:pod", "b"),
    ("k8s:io.kubernetes.pod.namespace", "x"),
    ("k8s:io.cilium.k8s.namespace.labels.ns", "x"),
];

#[test]
fn allows_covered_by_a_deny_of_the_same_peer_are_stored_as_deny() {
    let yaml = r#"
apiVersion: weir.io/v1
kind: WeirNetworkPolicy
metadata: {name: p, namespace: x}
spec:
  endpointSelector: {matchLabels: {pod: a}}
  ingress:
  - fromEndpoints: [{matchLabels: {pod: b}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {pod: b}}]
"#;
    let compiled = compiled_from(yaml, &[(300, X_A), (301, X_B)]);
    let entries = lower(&compiled);
    let for_b: Vec<(&LpmKey, &PolicyEntry)> = entries
        .iter()
        .filter(|(k, _)| k.key.identity == 301)
        .collect();
    assert!(!for_b.is_empty());
    assert!(
        for_b.iter().all(|(_, e)| e.verdict == POLICY_DENY),
        "the port-80 allow is covered by the any-port deny: {for_b:?}"
    );
}

#[test]
fn named_and_ranged_ports_lower_to_blocks() {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{podSelector: {matchLabels: {pod: b}}}]
    ports: [{port: 80, endPort: 95, protocol: UDP}]
"#;
    let compiled = compiled_from(yaml, &[(300, X_A), (301, X_B)]);
    let entries = lower(&compiled);
    let udp: Vec<&LpmKey> = entries
        .keys()
        .filter(|k| k.key.identity == 301 && k.key.protocol == 17)
        .collect();
    assert_eq!(udp.len(), 1);
    assert_eq!(udp[0].prefix_len, POLICY_PREFIX_ANY_PORT + 12);
    assert_eq!(u16::from_be_bytes(udp[0].key.port), 80);
    assert_eq!(udp[0].key.direction, TrafficDirection::Ingress as u8);
}

#[test]
fn pending_endpoints_are_those_whose_entries_are_not_written_yet() {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{podSelector: {matchLabels: {pod: b}}}]
"#;
    let mut sync = PolicySync::default();
    assert!(sync.pending_endpoints().is_empty());
    sync.desired = lower(&compiled_from(yaml, &[(300, X_A), (301, X_B)]));
    assert_eq!(sync.pending_endpoints(), BTreeSet::from([1]));
    sync.written = sync.desired.clone();
    assert!(sync.pending_endpoints().is_empty());
    // Endpoint 2 still has an entry that is no longer desired.
    let (key, entry) = sync.written.iter().next().map(|(k, e)| (*k, *e)).unwrap();
    let mut stale = key;
    stale.key.endpoint_id = 2;
    sync.written.insert(stale, entry);
    assert_eq!(sync.pending_endpoints(), BTreeSet::from([2]));
}
