//! The incremental result equals a compile from scratch after every change
//! of random (seeded, bounded) sequences of identity, endpoint and policy
//! changes; CIDR identities come from the allocator the agent uses, each
//! side with its own.

use super::*;
use crate::compile::compile;
use crate::identity::NamedPorts;
use crate::local_identities::LocalIdentities;
use crate::rule::{
    CidrScope, Entity, Peer, PolicyKind, PortMatch, Protocol, Rule, RuleSet, Verdict,
};
use crate::selector::{Requirement, Selector};

const APPS: [&str; 3] = ["a", "b", "c"];
const NAMESPACES: [&str; 2] = ["ns1", "ns2"];

fn pick<T: Copy>(rng: &mut fastrand::Rng, items: &[T]) -> T {
    items[rng.usize(..items.len())]
}

fn labels(rng: &mut fastrand::Rng) -> LabelSet {
    let mut labels = LabelSet::new()
        .with("k8s:app", pick(rng, &APPS))
        .with("k8s:io.kubernetes.pod.namespace", pick(rng, &NAMESPACES));
    if rng.bool() {
        labels.insert("k8s:tier", if rng.bool() { "web" } else { "db" });
    }
    labels
}

fn named_ports(rng: &mut fastrand::Rng) -> NamedPorts {
    let mut ports = NamedPorts::new();
    if rng.bool() {
        let port = pick(rng, &[80u16, 8080]);
        ports
            .entry("http".into())
            .or_default()
            .insert((Protocol::Tcp, port));
    }
    ports
}

fn selector(rng: &mut fastrand::Rng) -> Selector {
    match rng.u8(..4) {
        0 => Selector::all(),
        1 => Selector::all().with(Requirement::equals("k8s:app", pick(rng, &APPS))),
        2 => Selector::all().with(Requirement::equals("k8s:tier", "web")),
        _ => Selector::all()
            .with(Requirement::equals(
                "k8s:io.kubernetes.pod.namespace",
                pick(rng, &NAMESPACES),
            ))
            .with(Requirement::equals("k8s:app", pick(rng, &APPS))),
    }
}

fn scope(rng: &mut fastrand::Rng) -> CidrScope {
    if rng.bool() {
        CidrScope::Addresses
    } else {
        CidrScope::OutsideCluster
    }
}

fn peer(rng: &mut fastrand::Rng) -> Peer {
    let net = |s: &str| s.parse().expect("a CIDR");
    match rng.u8(..9) {
        0 => Peer::Any,
        1..=3 => Peer::Endpoints(selector(rng)),
        4 => Peer::Cidr {
            cidr: net("10.0.0.0/8"),
            except: vec![net("10.1.0.0/16")],
            scope: scope(rng),
        },
        5 => Peer::Cidr {
            cidr: net(pick(rng, &["10.1.2.0/24", "10.1.0.0/16", "192.168.0.0/16"])),
            except: Vec::new(),
            scope: scope(rng),
        },
        6 => Peer::Cidr {
            cidr: net("0.0.0.0/0"),
            except: Vec::new(),
            scope: scope(rng),
        },
        _ => Peer::Entity(pick(
            rng,
            &[Entity::World, Entity::Cluster, Entity::Host, Entity::All],
        )),
    }
}

fn rule(rng: &mut fastrand::Rng, index: usize) -> Rule {
    let direction = pick(rng, &Direction::BOTH);
    let ports = match rng.u8(..3) {
        0 => Vec::new(),
        1 => vec![PortMatch {
            protocol: Some(Protocol::Tcp),
            port: PortRef::Range(80, 80),
        }],
        _ => vec![PortMatch {
            protocol: None,
            port: PortRef::Named("http".into()),
        }],
    };
    Rule {
        path: format!("spec.rules[{index}]"),
        direction,
        verdict: if rng.u8(..4) == 0 {
            Verdict::Deny
        } else {
            Verdict::Allow
        },
        peers: (0..rng.usize(1..3)).map(|_| peer(rng)).collect(),
        ports,
    }
}

fn policy(rng: &mut fastrand::Rng, name: usize) -> Policy {
    Policy {
        id: PolicyId {
            kind: PolicyKind::WeirNetworkPolicy,
            namespace: Some("ns1".into()),
            name: format!("p{name}"),
        },
        rule_sets: (0..rng.usize(1..3))
            .map(|_| RuleSet {
                subject: selector(rng),
                enforces_ingress: rng.bool(),
                enforces_egress: rng.bool(),
                rules: (0..rng.usize(0..4)).map(|i| rule(rng, i)).collect(),
            })
            .collect(),
    }
}

/// The inputs as a compile from scratch sees them.
struct Inputs {
    view: ClusterView,
    policies: BTreeMap<PolicyId, Policy>,
}

/// One random change, applied to both the inputs and the compiler.
fn change(rng: &mut fastrand::Rng, inputs: &mut Inputs, incremental: &mut IncrementalCompiler) {
    match rng.u8(..6) {
        0 => {
            let identity = Identity {
                id: 256 + rng.u32(..12),
                labels: labels(rng),
                named_ports: named_ports(rng),
            };
            inputs.view.add_identity(identity.clone());
            incremental.upsert_identity(identity);
        }
        1 => {
            let id = 256 + rng.u32(..12);
            inputs.view.identities.remove(&id);
            incremental.remove_identity(id);
        }
        2 => {
            let endpoint = Endpoint {
                id: rng.u32(1..6),
                identity: 256 + rng.u32(..12),
                named_ports: named_ports(rng),
            };
            inputs.view.add_endpoint(endpoint.clone());
            incremental.upsert_endpoint(endpoint);
        }
        3 => {
            let id = rng.u32(1..6);
            inputs.view.endpoints.remove(&id);
            incremental.remove_endpoint(id);
        }
        4 => {
            let name = rng.usize(..6);
            let policy = policy(rng, name);
            inputs.policies.insert(policy.id.clone(), policy.clone());
            incremental.upsert_policy(policy);
        }
        _ => {
            let Some(id) = inputs.policies.keys().nth(rng.usize(..6)).cloned() else {
                return;
            };
            inputs.policies.remove(&id);
            incremental.remove_policy(&id);
        }
    }
}

#[test]
fn incremental_equals_a_compile_from_scratch_after_every_change() {
    for seed in 0..60u64 {
        let mut rng = fastrand::Rng::with_seed(0x1c4e_0000 + seed);
        let mut inputs = Inputs {
            view: ClusterView::new(),
            policies: BTreeMap::new(),
        };
        let mut incremental = IncrementalCompiler::new(CompileOptions::default());
        incremental.sync(&inputs.view, &[]);
        let (mut scratch_ids, mut incremental_ids) =
            (LocalIdentities::new(), LocalIdentities::new());
        let mut previous = Compiled::default();
        for step in 0..80 {
            // Sometimes several changes between flushes.
            for _ in 0..rng.usize(1..4) {
                change(&mut rng, &mut inputs, &mut incremental);
            }
            let policies: Vec<Policy> = inputs.policies.values().cloned().collect();
            let scratch = compile(&inputs.view, &policies, &mut scratch_ids);
            scratch_ids.release_all(
                std::mem::replace(&mut previous, scratch.clone())
                    .cidrs
                    .into_keys(),
            );
            let flushed = incremental.flush(&mut incremental_ids);
            incremental_ids.release_all(flushed.released);
            assert_eq!(
                incremental.compiled(),
                &scratch,
                "seed {seed}, step {step}: incremental and scratch differ"
            );
        }
    }
}

#[test]
fn sync_applies_only_differences_and_matches_a_compile() {
    let mut rng = fastrand::Rng::with_seed(0x5eed_0005);
    let mut incremental = IncrementalCompiler::new(CompileOptions::default());
    let mut ids = LocalIdentities::new();
    for round in 0..40 {
        let mut view = ClusterView::new();
        for id in 256..256 + rng.u32(0..12) {
            view.add_identity(Identity {
                id,
                labels: labels(&mut rng),
                named_ports: named_ports(&mut rng),
            });
        }
        for id in 1..rng.u32(1..6) {
            view.add_endpoint(Endpoint {
                id,
                identity: 256 + rng.u32(..12),
                named_ports: named_ports(&mut rng),
            });
        }
        let policies: Vec<Policy> = (0..rng.usize(0..6)).map(|i| policy(&mut rng, i)).collect();
        incremental.sync(&view, &policies);
        let flushed = incremental.flush(&mut ids);
        ids.release_all(flushed.released);
        let mut fresh = LocalIdentities::new();
        let scratch = compile(&view, &policies, &mut fresh);
        // Numbers of CIDR identities depend on history: compare the prefixes.
        assert_eq!(
            incremental.compiled().cidrs.keys().collect::<Vec<_>>(),
            scratch.cidrs.keys().collect::<Vec<_>>(),
            "round {round}"
        );
        if scratch.cidrs.is_empty() {
            assert_eq!(incremental.compiled(), &scratch, "round {round}");
        }
        // A second flush with nothing changed does nothing.
        incremental.sync(&view, &policies);
        assert_eq!(
            incremental.flush(&mut ids),
            Flushed::default(),
            "round {round}"
        );
    }
}

#[test]
fn one_new_identity_recomputes_only_the_endpoints_it_concerns() {
    let selected = |app: &str| Selector::all().with(Requirement::equals("k8s:app", app));
    let allow_from = |name: &str, subject: &str, peer: &str| Policy {
        id: PolicyId {
            kind: PolicyKind::NetworkPolicy,
            namespace: Some("ns1".into()),
            name: name.into(),
        },
        rule_sets: vec![RuleSet {
            subject: selected(subject),
            enforces_ingress: true,
            enforces_egress: false,
            rules: vec![Rule {
                path: "spec.ingress[0]".into(),
                direction: Direction::Ingress,
                verdict: Verdict::Allow,
                peers: vec![Peer::Endpoints(selected(peer))],
                ports: Vec::new(),
            }],
        }],
    };
    let mut incremental = IncrementalCompiler::new(CompileOptions::default());
    let mut ids = LocalIdentities::new();
    for (id, app) in [(300, "server"), (301, "db")] {
        incremental.upsert_identity(Identity {
            id,
            labels: LabelSet::new().with("k8s:app", app),
            named_ports: NamedPorts::new(),
        });
    }
    incremental.upsert_endpoint(Endpoint {
        id: 1,
        identity: 300,
        named_ports: NamedPorts::new(),
    });
    incremental.upsert_endpoint(Endpoint {
        id: 2,
        identity: 301,
        named_ports: NamedPorts::new(),
    });
    incremental.upsert_policy(allow_from("server", "server", "client"));
    incremental.upsert_policy(allow_from("db", "db", "server"));
    incremental.flush(&mut ids);
    // A client: only the server's policy selects it as a peer.
    incremental.upsert_identity(Identity {
        id: 302,
        labels: LabelSet::new().with("k8s:app", "client"),
        named_ports: NamedPorts::new(),
    });
    let flushed = incremental.flush(&mut ids);
    assert_eq!(flushed.endpoints, BTreeSet::from([1]));
    // An identity no selector picks recomputes nothing.
    incremental.upsert_identity(Identity {
        id: 303,
        labels: LabelSet::new().with("k8s:app", "batch"),
        named_ports: NamedPorts::new(),
    });
    assert!(incremental.flush(&mut ids).endpoints.is_empty());
}

#[test]
fn many_identity_changes_at_once_match_a_compile_from_scratch() {
    let mut rng = fastrand::Rng::with_seed(0xb01c_0001);
    let mut incremental = IncrementalCompiler::new(CompileOptions::default());
    let (mut scratch_ids, mut incremental_ids) = (LocalIdentities::new(), LocalIdentities::new());
    let mut previous = Compiled::default();
    let policies: Vec<Policy> = (0..6).map(|i| policy(&mut rng, i)).collect();
    for round in 0..6 {
        // Hundreds of identities appear, change or go at once (a relist).
        let mut view = ClusterView::new();
        for id in 256..256 + rng.u32(300..600) {
            view.add_identity(Identity {
                id,
                labels: labels(&mut rng),
                named_ports: named_ports(&mut rng),
            });
        }
        for id in 1..6 {
            view.add_endpoint(Endpoint {
                id,
                identity: 256 + rng.u32(..300),
                named_ports: NamedPorts::new(),
            });
        }
        incremental.sync(&view, &policies[..round]);
        let flushed = incremental.flush(&mut incremental_ids);
        incremental_ids.release_all(flushed.released);
        let scratch = compile(&view, &policies[..round], &mut scratch_ids);
        scratch_ids.release_all(
            std::mem::replace(&mut previous, scratch.clone())
                .cidrs
                .into_keys(),
        );
        assert_eq!(incremental.compiled(), &scratch, "round {round}");
    }
}
