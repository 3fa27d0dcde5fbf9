//! The preview on a compiled state built as the reconciler builds it:
//! x/a (endpoint 1) and z/b (endpoint 2) on this node, y/a on another.

use std::net::IpAddr;

use weir_observer::event::message_type;
use weir_observer::proto::flow::{
    layer4, CiliumEventType, Endpoint as FlowEndpoint, Ip, Layer4, Tcp, TraceReason,
    Verdict as FlowVerdict,
};
use weir_policy::{
    pod_security_labels, ClusterView, Endpoint, Identity, LabelFilter, LocalIdentities,
};

use super::*;
use crate::reconcile::snapshot::{KnownPod, LocalPod};

const X_A: u32 = 300;
const Y_A: u32 = 301;
const Z_B: u32 = 302;

fn pods() -> [(&'static str, &'static str, u32, &'static str); 3] {
    [
        ("x", "a", X_A, "10.244.1.10"),
        ("y", "a", Y_A, "10.244.2.10"),
        ("z", "b", Z_B, "10.244.1.11"),
    ]
}

/// The snapshot of an agent with `policies` in force.
fn snapshot(policies: Vec<Policy>) -> PolicySnapshot {
    let mut snapshot = PolicySnapshot::default();
    let mut view = ClusterView::new();
    for (ns, pod, id, address) in pods() {
        let labels = pod_security_labels(
            ns,
            [("ns", ns), ("kubernetes.io/metadata.name", ns)],
            [("pod", pod)],
            &LabelFilter::default(),
        );
        view.add_identity(Identity {
            id,
            labels,
            named_ports: Default::default(),
        });
        let key = NamespacedName::new(ns, pod);
        snapshot.pods.insert(
            key.clone(),
            KnownPod {
                identity: id,
                named_ports: Default::default(),
                address: Some(address.parse().unwrap()),
            },
        );
        let endpoint = match pod_key(ns, pod) {
            "x/a" => 1,
            "z/b" => 2,
            _ => continue,
        };
        view.add_endpoint(Endpoint {
            id: endpoint,
            identity: id,
            named_ports: Default::default(),
        });
        snapshot.local.insert(
            key,
            LocalPod {
                endpoint,
                identity: id,
            },
        );
    }
    let mut cidrs = LocalIdentities::new();
    snapshot.compiled = compile(&view, &policies, &mut cidrs);
    snapshot.view = view;
    snapshot.cidrs = cidrs;
    snapshot.policies = policies;
    snapshot
}

fn pod_key(ns: &str, pod: &str) -> &'static str {
    match (ns, pod) {
        ("x", "a") => "x/a",
        ("z", "b") => "z/b",
        _ => "other",
    }
}

/// x/a admits namespace y on TCP 80, and 203.0.113.0/24 when `world`.
fn web_policy(world: bool) -> String {
    let world = if world {
        "\n  - from: [{ipBlock: {cidr: 203.0.113.0/24}}]\n    ports: [{port: 80, protocol: TCP}]"
    } else {
        ""
    };
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: web, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}}}]\n    ports: [{{port: 80, protocol: TCP}}]{world}\n"
    )
}

fn endpoint_of(peer: &str) -> Option<FlowEndpoint> {
    let (ns, pod) = peer.split_once('/')?;
    Some(FlowEndpoint {
        namespace: ns.into(),
        pod_name: pod.into(),
        ..Default::default()
    })
}

fn address_of(peer: &str) -> String {
    pods()
        .iter()
        .find(|(ns, pod, _, _)| format!("{ns}/{pod}") == peer)
        .map(|p| p.3.to_string())
        .unwrap_or_else(|| {
            if peer.contains('/') {
                "10.244.9.9".into() // a pod the snapshot does not know
            } else {
                peer.to_string()
            }
        })
}

/// A flow of kind `kind` (policy verdict 5, trace 4, drop 1) from
/// `source:sport` to `destination:port` over TCP; a peer that is not
/// `ns/pod` is an address recorded as world.
fn flow(kind: i32, source: &str, sport: u32, destination: &str, port: u32) -> Flow {
    let outside = || FlowEndpoint {
        identity: identity::WORLD,
        ..Default::default()
    };
    Flow {
        verdict: FlowVerdict::Forwarded as i32,
        event_type: Some(CiliumEventType {
            r#type: kind,
            sub_type: 0,
        }),
        trace_reason: TraceReason::New as i32,
        is_reply: Some(false),
        ip: Some(Ip {
            source: address_of(source),
            destination: address_of(destination),
            ..Default::default()
        }),
        l4: Some(Layer4 {
            protocol: Some(layer4::Protocol::Tcp(Tcp {
                source_port: sport,
                destination_port: port,
                flags: None,
            })),
        }),
        source: endpoint_of(source).or_else(|| Some(outside())),
        destination: endpoint_of(destination).or_else(|| Some(outside())),
        ..Default::default()
    }
}

fn recorded() -> Vec<Flow> {
    vec![
        // y/a → x/a:80 twice (two connections; the second seen twice).
        flow(message_type::TRACE, "y/a", 40_000, "x/a", 80),
        flow(message_type::TRACE, "y/a", 40_001, "x/a", 80),
        flow(message_type::POLICY_VERDICT, "y/a", 40_001, "x/a", 80),
        // z/b → x/a on 80 and 81, one connection each.
        flow(message_type::TRACE, "z/b", 41_000, "x/a", 80),
        flow(message_type::TRACE, "z/b", 41_001, "x/a", 81),
        // The world → x/a:80.
        flow(message_type::TRACE, "203.0.113.9", 42_000, "x/a", 80),
        // A reply and an established packet are no connection of their own.
        Flow {
            is_reply: Some(true),
            ..flow(message_type::TRACE, "x/a", 80, "y/a", 40_000)
        },
        Flow {
            trace_reason: TraceReason::Established as i32,
            ..flow(message_type::TRACE, "z/b", 41_000, "x/a", 80)
        },
    ]
}

fn pod(key: &str) -> Peer {
    Peer::Pod(key.parse().unwrap())
}

fn world(ip: &str) -> Peer {
    Peer::Address {
        ip: ip.parse::<IpAddr>().unwrap(),
        identity: identity::WORLD,
    }
}

fn tcp(source: Peer, destination: Peer, port: u16) -> ConnectionKey {
    ConnectionKey {
        source,
        destination,
        protocol: Protocol::Tcp,
        port,
    }
}

#[test]
fn connections_are_counted_once_by_their_five_tuple() {
    let groups = connections(&recorded());
    assert_eq!(
        groups,
        BTreeMap::from([
            (tcp(pod("y/a"), pod("x/a"), 80), 2),
            (tcp(pod("z/b"), pod("x/a"), 80), 1),
            (tcp(pod("z/b"), pod("x/a"), 81), 1),
            (tcp(world("203.0.113.9"), pod("x/a"), 80), 1),
        ])
    );
}

#[test]
fn a_new_policy_lists_the_connections_it_would_deny_with_the_deciding_rule() {
    let snapshot = snapshot(Vec::new());
    let candidate = Candidate::parse(&web_policy(false), &[]).unwrap();
    let preview = preview(&snapshot, &candidate, &connections(&recorded())).unwrap();
    assert_eq!(preview.groups, 4);
    assert!(preview.unknown.is_empty());
    let changed: Vec<(ConnectionKey, u64, Verdict, Verdict)> = preview
        .changes
        .iter()
        .map(|c| (c.connection.clone(), c.count, c.before, c.after))
        .collect();
    assert_eq!(
        changed,
        [
            (
                tcp(pod("z/b"), pod("x/a"), 80),
                1,
                Verdict::Allow,
                Verdict::Deny
            ),
            (
                tcp(pod("z/b"), pod("x/a"), 81),
                1,
                Verdict::Allow,
                Verdict::Deny
            ),
            (
                tcp(world("203.0.113.9"), pod("x/a"), 80),
                1,
                Verdict::Allow,
                Verdict::Deny
            ),
        ],
        "y/a stays allowed"
    );
    assert!(
        preview.changes[0].decided_by.contains("default deny"),
        "{:?}",
        preview.changes[0]
    );
}

#[test]
fn an_ip_block_is_judged_by_the_cidr_identity_the_candidate_gives_the_address() {
    let snapshot = snapshot(Vec::new());
    let candidate = Candidate::parse(&web_policy(true), &[]).unwrap();
    let preview = preview(&snapshot, &candidate, &connections(&recorded())).unwrap();
    let denied: Vec<&ConnectionKey> = preview.changes.iter().map(|c| &c.connection).collect();
    assert_eq!(
        denied,
        [
            &tcp(pod("z/b"), pod("x/a"), 80),
            &tcp(pod("z/b"), pod("x/a"), 81)
        ],
        "203.0.113.9 is inside the new ipBlock"
    );
}

#[test]
fn deleting_and_replacing_policies_previews_what_they_would_allow() {
    let in_force = Candidate::parse(&web_policy(false), &[]).unwrap().upserts;
    let snapshot = snapshot(in_force);
    let groups = connections(&recorded());
    // Deleting it allows everything again.
    let deletion = Candidate::parse("", &["NetworkPolicy/x/web".into()]).unwrap();
    let deleted = preview(&snapshot, &deletion, &groups).unwrap();
    assert_eq!(deleted.changes.len(), 3);
    assert!(deleted
        .changes
        .iter()
        .all(|c| (c.before, c.after) == (Verdict::Deny, Verdict::Allow)));
    assert!(deleted.changes[0].decided_by.contains("no policy selects"));
    // Replacing it with the ipBlock version allows the world's connection.
    let replaced = Candidate::parse(&web_policy(true), &[]).unwrap();
    let replacement = preview(&snapshot, &replaced, &groups).unwrap();
    assert_eq!(replacement.changes.len(), 1);
    assert_eq!(
        replacement.changes[0].connection,
        tcp(world("203.0.113.9"), pod("x/a"), 80)
    );
    assert!(
        replacement.changes[0]
            .decided_by
            .contains("NetworkPolicy x/web"),
        "{:?}",
        replacement.changes[0]
    );
    // A deletion of what is not in force is refused.
    let typo = Candidate::parse("", &["NetworkPolicy/x/wbe".into()]).unwrap();
    let err = preview(&snapshot, &typo, &groups).unwrap_err();
    assert!(err.contains("NetworkPolicy/x/wbe"), "{err}");
}

#[test]
fn a_candidate_that_is_not_valid_policy_is_refused_with_every_reason() {
    let bad = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: bad, namespace: x}\nspec:\n  podSelector: {}\n  ingress:\n  - ports: [{port: 80, endPort: 79}]\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: q}\n";
    let err = Candidate::parse(bad, &[]).unwrap_err();
    assert!(err.contains("endPort"), "{err}");
    assert!(err.contains("Namespace/q: not a policy"), "{err}");
}

#[test]
fn a_pod_the_agent_no_longer_knows_is_left_out_and_named() {
    let snapshot = snapshot(Vec::new());
    let mut flows = recorded();
    flows.push(flow(message_type::TRACE, "q/gone", 43_000, "x/a", 80));
    let candidate = Candidate::parse(&web_policy(false), &[]).unwrap();
    let preview = preview(&snapshot, &candidate, &connections(&flows)).unwrap();
    assert_eq!(preview.unknown, [tcp(pod("q/gone"), pod("x/a"), 80)]);
}
