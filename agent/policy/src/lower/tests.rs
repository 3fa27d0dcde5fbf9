use std::collections::BTreeSet;

use super::*;
use crate::document::parse_policies;
use crate::identity::{ClusterView, Endpoint, Identity, NamedPorts, NumericIdentity};
use crate::labels::LabelSet;
use crate::local_identities::LocalIdentities;
use crate::mapstate::{EndpointPolicy, Entry, Provenance};
use crate::rule::{Policy, PolicyId, PolicyKind, Protocol};

fn block(port: u16, bits: u8) -> PortPrefix {
    PortPrefix::new(port, bits).unwrap()
}

#[test]
fn port_blocks_cover_ranges_exactly() {
    assert_eq!(port_blocks(80, 80), vec![block(80, 16)]);
    assert_eq!(port_blocks(80, 95), vec![block(80, 12)]);
    assert_eq!(port_blocks(0, 65_535), vec![block(0, 0)]);
    // 80..=90: 80-87 (8 ports), 88-89, 90.
    assert_eq!(
        port_blocks(80, 90),
        vec![block(80, 13), block(88, 15), block(90, 16)]
    );
    assert_eq!(port_blocks(65_535, 65_535), vec![block(65_535, 16)]);
    // Exactness over many ranges: every port inside, none outside.
    for (lo, hi) in [(1, 1000), (1024, 65_535), (8080, 8090), (3, 17)] {
        let blocks = port_blocks(lo, hi);
        let mut covered = 0u32;
        for prefix in &blocks {
            let size = 1u32 << (16 - prefix.bits());
            assert_eq!(u32::from(prefix.port()) % size, 0, "aligned");
            covered += size;
        }
        assert_eq!(covered, u32::from(hi) - u32::from(lo) + 1, "{lo}-{hi}");
    }
}

#[test]
fn port_prefixes_are_aligned_blocks() {
    assert_eq!(PortPrefix::new(80, 12), Some(block(80, 12)));
    assert_eq!(PortPrefix::new(81, 12), None, "not the first port");
    assert_eq!(PortPrefix::new(0, 17), None);
    assert_eq!(PortPrefix::new(0, 0), Some(PortPrefix::ANY));
    assert_eq!(PortPrefix::exact(8080), block(8080, 16));
    assert_eq!(block(80, 12).last(), 95);
    assert_eq!(PortPrefix::ANY.last(), 65_535);
    assert_eq!(PortPrefix::ANY.to_string(), "any");
    assert_eq!(block(80, 12).to_string(), "80-95");
    assert_eq!(block(53, 16).to_string(), "53");
}

fn tcp(ports: PortPrefix) -> L4Prefix {
    L4Prefix::Protocol { number: 6, ports }
}

#[test]
fn coverage_follows_prefixes() {
    let any = L4Prefix::Any;
    let tcp_any = tcp(PortPrefix::ANY);
    let tcp_80_95 = tcp(block(80, 12));
    let tcp_85 = tcp(block(85, 16));
    let tcp_96 = tcp(block(96, 16));
    let udp_85 = L4Prefix::Protocol {
        number: 17,
        ports: block(85, 16),
    };
    assert!(any.contains(udp_85));
    assert!(tcp_any.contains(tcp_85));
    assert!(!tcp_any.contains(udp_85));
    assert!(tcp_80_95.contains(tcp_85));
    assert!(!tcp_80_95.contains(tcp_96));
    assert!(!tcp_85.contains(tcp_80_95));
    assert!(!tcp_any.contains(any));
}

fn compiled_from(yaml: &str, identity_labels: &[(u32, &[(&str, &str)])]) -> Compiled {
    let mut view = ClusterView::new();
    for (id, labels) in identity_labels {
        let set: LabelSet = labels.iter().copied().collect();
        view.add_identity(Identity {
            id: *id,
            labels: set,
            named_ports: NamedPorts::new(),
        });
    }
    view.add_endpoint(Endpoint {
        id: 1,
        identity: 300,
        named_ports: NamedPorts::new(),
    });
    let policies: Vec<Policy> = parse_policies(yaml)
        .into_iter()
        .map(|p| p.unwrap())
        .collect();
    crate::compile(&view, &policies, &mut LocalIdentities::default())
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
    let for_b: Vec<(&MapKey, &MapEntry)> = entries
        .iter()
        .filter(|(k, _)| k.peer == PeerKey::Identity(301))
        .collect();
    assert!(!for_b.is_empty());
    assert!(
        for_b.iter().all(|(_, e)| e.verdict == Verdict::Deny),
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
    let udp: Vec<&MapKey> = entries
        .keys()
        .filter(|k| {
            k.peer == PeerKey::Identity(301)
                && matches!(k.l4, L4Prefix::Protocol { number: 17, .. })
        })
        .collect();
    assert_eq!(udp.len(), 1);
    assert_eq!(
        udp[0].l4,
        L4Prefix::Protocol {
            number: 17,
            ports: block(80, 12)
        }
    );
    assert_eq!(udp[0].direction, Direction::Ingress);
    assert_eq!(udp[0].match_kind(), MatchKind::L3L4);
}

#[test]
fn only_enforced_directions_have_entries_and_match_kinds_follow_the_key() {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{podSelector: {matchLabels: {pod: b}}}]
  - ports: [{port: 53, protocol: UDP}]
"#;
    let entries = lower(&compiled_from(yaml, &[(300, X_A), (301, X_B)]));
    assert!(entries.keys().all(|k| k.direction == Direction::Ingress));
    let kind_of = |peer: PeerKey| {
        entries
            .iter()
            .find(|(k, _)| k.peer == peer)
            .map(|(_, e)| e.match_kind)
    };
    assert_eq!(kind_of(PeerKey::Identity(301)), Some(MatchKind::L3Only));
    assert_eq!(kind_of(PeerKey::Any), Some(MatchKind::L4Only));
    let all = MapKey {
        endpoint: 1,
        direction: Direction::Egress,
        peer: PeerKey::Any,
        l4: L4Prefix::Any,
    };
    assert_eq!(all.match_kind(), MatchKind::All);
}

const PEERS: [NumericIdentity; 3] = [300, 301, 302];
const PROTOCOLS: [Protocol; 3] = Protocol::ALL;

/// Ports near a few block boundaries, so ranges overlap often.
fn random_port(rng: &mut fastrand::Rng) -> u16 {
    [0u16, 1, 79, 80, 95, 96, 1023, 1024, 8080, 65_535][rng.u64(..10) as usize]
        .saturating_add(rng.u64(..3) as u16)
}

fn random_entry(rng: &mut fastrand::Rng) -> Entry {
    let peer = match rng.u64(..4) {
        0 => PeerKey::Any,
        n => PeerKey::Identity(PEERS[n as usize - 1]),
    };
    let (protocol, ports) = match rng.u64(..4) {
        0 => (None, Ports::Any),
        1 => (Some(PROTOCOLS[rng.u64(..3) as usize]), Ports::Any),
        _ => {
            let (a, b) = (random_port(rng), random_port(rng));
            (
                Some(PROTOCOLS[rng.u64(..3) as usize]),
                Ports::Range(a.min(b), a.max(b)),
            )
        }
    };
    Entry {
        key: EntryKey {
            peer,
            protocol,
            ports,
        },
        verdict: if rng.u64(..3) == 0 {
            Verdict::Deny
        } else {
            Verdict::Allow
        },
        provenance: Provenance {
            policy: PolicyId {
                kind: PolicyKind::WeirNetworkPolicy,
                namespace: Some("x".into()),
                name: "p".into(),
            },
            rule: "spec.ingress[0]".into(),
        },
    }
}

/// Whether `l4` matches a packet of `protocol` to `port`, and how specific
/// it is (the prefix length the datapath compares).
fn matching(l4: L4Prefix, protocol: u8, port: u16) -> Option<u8> {
    match l4 {
        L4Prefix::Any => Some(0),
        L4Prefix::Protocol { number, ports } => (number == protocol
            && ports.contains(PortPrefix::exact(port)))
        .then_some(8 + ports.bits()),
    }
}

/// What the datapath decides from the map: the most specific entry of the
/// peer and of the any-peer; a deny from either wins, an allow from either
/// allows, no entry denies.
fn datapath_verdict(state: &MapState, peer: NumericIdentity, protocol: u8, port: u16) -> Verdict {
    datapath_verdict_at(state, peer, None, protocol, port)
}

/// The same for a cluster peer with an address identity: when neither
/// lookup found a verdict, the address identity's most specific entry
/// decides, if there is one (the pod programs' third lookup).
fn datapath_verdict_at(
    state: &MapState,
    peer: NumericIdentity,
    address: Option<NumericIdentity>,
    protocol: u8,
    port: u16,
) -> Verdict {
    let lookup = |wanted: PeerKey| {
        state
            .iter()
            .filter(|(k, _)| k.peer == wanted)
            .filter_map(|(k, e)| matching(k.l4, protocol, port).map(|len| (len, e.verdict)))
            .max_by_key(|(len, _)| *len)
            .map(|(_, verdict)| verdict)
    };
    let found = [lookup(PeerKey::Identity(peer)), lookup(PeerKey::Any)];
    if found.contains(&Some(Verdict::Deny)) {
        Verdict::Deny
    } else if found.contains(&Some(Verdict::Allow)) {
        Verdict::Allow
    } else {
        address
            .and_then(|a| lookup(PeerKey::Identity(a)))
            .unwrap_or(Verdict::Deny)
    }
}

#[test]
fn the_lowered_state_decides_every_packet_as_the_engine_does() {
    let mut rng = fastrand::Rng::with_seed(0x005e_ed0f_4a11);
    for case in 0..500 {
        let mut policy = EndpointPolicy::default();
        policy.ingress.enforced = true;
        policy.ingress.entries = (0..1 + rng.u64(..6))
            .map(|_| random_entry(&mut rng))
            .collect::<BTreeSet<_>>();
        let compiled = Compiled {
            endpoints: BTreeMap::from([(7, policy.clone())]),
            ..Compiled::default()
        };
        let state = lower(&compiled);
        assert!(state.keys().all(|k| k.endpoint == 7));
        for _ in 0..50 {
            let peer = PEERS[rng.u64(..3) as usize];
            let protocol = PROTOCOLS[rng.u64(..3) as usize];
            let port = random_port(&mut rng);
            let want = policy.ingress.verdict(peer, protocol, port).verdict;
            let got = datapath_verdict(&state, peer, protocol.number(), port);
            assert_eq!(
                got, want,
                "case {case}: peer {peer} {protocol}/{port}\nentries: {:#?}\nstate: {state:#?}",
                policy.ingress.entries
            );
            // The same packet from a cluster peer whose address has another
            // identity's entries (an ipBlock's address identity).
            let address = PEERS[rng.u64(..3) as usize];
            let want = (policy.ingress)
                .verdict_at(peer, Some(address), protocol, port)
                .verdict;
            let got = datapath_verdict_at(&state, peer, Some(address), protocol.number(), port);
            assert_eq!(
                got, want,
                "case {case}: peer {peer} address {address} {protocol}/{port}\nentries: {:#?}",
                policy.ingress.entries
            );
        }
    }
}
