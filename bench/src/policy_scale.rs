//! The policy engine at scale, in process: 1,000 policies over 10,000
//! identities compiled from scratch (time and peak memory), then one more
//! policy, one more identity and one more local pod applied on top
//! incrementally (time each, lowering the endpoints that changed
//! included), and a compile pass with nothing changed (what an idle agent
//! pays when woken).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use weir_policy::incremental::IncrementalCompiler;
use weir_policy::rule::{PortMatch, PortRef, Rule, RuleSet};
use weir_policy::selector::Requirement;
use weir_policy::{
    ClusterView, CompileOptions, Direction, Endpoint, Identity, LabelSet, LocalIdentities,
    NamedPorts, Policy, PolicyId, PolicyKind, Protocol, Selector, Verdict,
};

/// Distinct apps and namespaces the identities spread over.
const APPS: usize = 500;
const NAMESPACES: usize = 20;
/// Local endpoints (the node's pods).
const LOCAL: u32 = 100;
/// The first cluster identity number.
const FIRST: u32 = 256;

/// Identity `i` is a pod of app `i % APPS` (one of 20 per app), in the
/// app's namespace.
fn labels(i: usize) -> LabelSet {
    let app = i % APPS;
    LabelSet::new()
        .with("k8s:app", format!("app-{app}"))
        .with(
            "k8s:io.kubernetes.pod.namespace",
            format!("ns-{}", app % NAMESPACES),
        )
        .with("k8s:pod-template-hash", format!("h{}", i / APPS))
}

fn identity(i: usize) -> Identity {
    Identity {
        id: FIRST + i as u32,
        labels: labels(i),
        named_ports: NamedPorts::new(),
    }
}

fn app(namespace: usize, app: usize) -> Selector {
    Selector::all()
        .with(Requirement::equals(
            "k8s:io.kubernetes.pod.namespace",
            &format!("ns-{namespace}"),
        ))
        .with(Requirement::equals("k8s:app", &format!("app-{app}")))
}

/// Policy `j` (two per app): its app's pods take TCP 8080 from another app
/// of their namespace and may reach a third on TCP 5432.
fn policy(j: usize) -> Policy {
    let subject = j % APPS;
    let namespace = subject % NAMESPACES;
    let peer_app = |k: usize| (k % (APPS / NAMESPACES)) * NAMESPACES + namespace;
    let rule = |direction, peer: Selector, port| Rule {
        path: format!("spec.{direction}[0]"),
        direction,
        verdict: Verdict::Allow,
        peers: vec![weir_policy::rule::Peer::Endpoints(peer)],
        ports: vec![PortMatch {
            protocol: Some(Protocol::Tcp),
            port: PortRef::Range(port, port),
        }],
    };
    Policy {
        id: PolicyId {
            kind: PolicyKind::NetworkPolicy,
            namespace: Some(format!("ns-{namespace}")),
            name: format!("p{j}"),
        },
        rule_sets: vec![RuleSet {
            subject: app(namespace, subject),
            enforces_ingress: true,
            enforces_egress: true,
            rules: vec![
                rule(
                    Direction::Ingress,
                    app(namespace, peer_app(j * 7 + 1)),
                    8080,
                ),
                rule(
                    Direction::Egress,
                    app(namespace, peer_app(j * 13 + 2)),
                    5432,
                ),
            ],
        }],
    }
}

/// Peak resident memory of this process so far (VmHWM), in MB.
fn peak_rss_mb() -> Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmHWM in /proc/self/status")?;
    Ok(kb / 1024.0)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Flushes and lowers the endpoints that changed; the time of both.
fn apply(engine: &mut IncrementalCompiler, ids: &mut LocalIdentities) -> (Duration, usize) {
    let start = Instant::now();
    let flushed = engine.flush(ids);
    ids.release_all(flushed.released);
    let mut entries = weir_policy::MapState::new();
    for id in &flushed.endpoints {
        if let Some(policy) = engine.compiled().endpoints.get(id) {
            weir_policy::lower::lower_endpoint(*id, policy, &mut entries);
        }
    }
    (start.elapsed(), flushed.endpoints.len())
}

pub fn run(policies: usize, identities: usize) -> Result<()> {
    let before = peak_rss_mb()?;
    let mut view = ClusterView::new();
    for i in 0..identities {
        view.add_identity(identity(i));
    }
    for id in 1..=LOCAL {
        view.add_endpoint(Endpoint {
            id,
            identity: FIRST + id,
            named_ports: NamedPorts::new(),
        });
    }
    let set: Vec<Policy> = (0..policies).map(policy).collect();
    eprintln!("{policies} policies and {identities} identities built; compiling");

    let start = Instant::now();
    let mut engine = IncrementalCompiler::new(CompileOptions::default());
    let mut ids = LocalIdentities::new();
    engine.sync(&view, &set);
    let flushed = engine.flush(&mut ids);
    let compiled = start.elapsed();
    let lowered = weir_policy::lower(engine.compiled());
    let from_scratch = start.elapsed();
    let entries: usize = engine
        .compiled()
        .endpoints
        .values()
        .map(|p| p.ingress.entries.len() + p.egress.entries.len())
        .sum();
    println!(
        "from scratch: {policies} policies x {identities} identities, {LOCAL} local endpoints: \
         compiled in {}, lowered in {} ({} endpoints, {entries} entries, {} map entries); \
         peak RSS {:.0} MB ({:.0} MB before)",
        ms(compiled),
        ms(from_scratch - compiled),
        flushed.endpoints.len(),
        lowered.len(),
        peak_rss_mb()?,
        before,
    );

    // What a woken agent pays when nothing changed: the diff of the inputs.
    let start = Instant::now();
    engine.sync(&view, &set);
    let _ = engine.flush(&mut ids);
    println!(
        "a pass with nothing changed (inputs diffed, nothing recompiled): {}",
        ms(start.elapsed())
    );

    let (took, changed) = {
        engine.upsert_policy(policy(policies + 3));
        apply(&mut engine, &mut ids)
    };
    println!(
        "one more policy: {} ({changed} endpoints recomputed)",
        ms(took)
    );
    let (took, changed) = {
        engine.upsert_identity(identity(identities + 1));
        apply(&mut engine, &mut ids)
    };
    println!(
        "one more identity (a remote pod): {} ({changed} endpoints recomputed)",
        ms(took)
    );
    let (took, changed) = {
        let new = identity(identities + 2);
        let id = new.id;
        engine.upsert_identity(new);
        engine.upsert_endpoint(Endpoint {
            id: LOCAL + 1,
            identity: id,
            named_ports: NamedPorts::new(),
        });
        apply(&mut engine, &mut ids)
    };
    println!(
        "one more local pod (new identity and endpoint): {} ({changed} endpoints recomputed)",
        ms(took)
    );

    let start = Instant::now();
    let scratch = weir_policy::compile(&view, &set, &mut LocalIdentities::new());
    println!(
        "for comparison, weir_policy::compile of the same from scratch: {} ({} endpoints)",
        ms(start.elapsed()),
        scratch.endpoints.len()
    );
    Ok(())
}
