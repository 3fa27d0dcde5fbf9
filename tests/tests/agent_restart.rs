//! An agent restart over pinned maps, with the real reconcile loop: a real
//! datapath (pins of its own), a real endpoint on a veth in a namespace of
//! its own, the in-memory shared store (a fresh one per agent life, as an
//! agent's view is rebuilt at start), a manifest directory and a state
//! directory kept across lives.
//!
//! A policy deleted while the agent is down stops allowing after the
//! restart (its entries leave the policy map, the endpoint stays enforced
//! by the policy left); a restart with nothing changed writes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_abi::{ip_proto, EndpointInfo, PolicyEntry};
use weir_agent::datapath::maps::{self, policy::LpmKey};
use weir_agent::datapath::SharedDatapath;
use weir_agent::reconcile::metrics::ReconcileMetrics;
use weir_identity::{MemoryStore, SharedStore};
use weir_tests::local_agent::{settle, LocalAgent, NodeFixture, NodePaths, NODE};
use weir_tests::require_root;
use weir_types::NamespacedName;

const POD: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {ns: x}}\n---\n\
apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {pod: a}}\n";

/// A policy allowing TCP `port` into x/a from anywhere.
fn allow_port(port: u16) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {{name: p{port}, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  \
         ingress:\n  - ports: [{{port: {port}, protocol: TCP}}]\n"
    )
}

/// What the policy and endpoints maps hold.
#[derive(Clone, Debug, PartialEq)]
struct Maps {
    policy: BTreeMap<LpmKey, PolicyEntry>,
    endpoints: BTreeMap<u32, EndpointInfo>,
}

impl Maps {
    fn read(datapath: &SharedDatapath) -> Maps {
        let mut datapath = datapath.lock();
        Maps {
            policy: maps::policy_entries(datapath.ebpf_mut())
                .unwrap()
                .into_iter()
                .collect(),
            endpoints: maps::endpoint_entries(datapath.ebpf_mut()).unwrap(),
        }
    }

    /// The TCP ports x/a's policy entries allow (besides the host's
    /// L3 entry, which every enforced endpoint has).
    fn ports(&self) -> Vec<u16> {
        self.policy
            .keys()
            .filter(|key| key.key.protocol == ip_proto::TCP)
            .map(|key| u16::from_be_bytes(key.key.port))
            .collect()
    }

    fn flags(&self) -> Vec<u8> {
        self.endpoints.values().map(|info| info.flags).collect()
    }
}

/// What one agent life saw.
struct Life {
    /// The maps after the first pass, if the view had not synced by then.
    first_unsynced: Option<Maps>,
    /// The maps once the loop has nothing left to write.
    settled: Maps,
    regenerations: u64,
}

/// One agent life: load the datapath over `pins`, restore (or, the first
/// time, create) x/a's endpoint, reconcile until settled.
fn life(paths: NodePaths) -> Life {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let agent = LocalAgent::load(&paths);
        assert!(
            agent.endpoints.restore().is_empty(),
            "restored endpoints re-attach"
        );
        if agent.endpoints.endpoints().is_empty() {
            agent.add_pod(&paths, NamespacedName::new("x", "a"));
        }
        let store: Arc<dyn SharedStore> = Arc::new(MemoryStore::new(NODE));
        let metrics = ReconcileMetrics::new(&prometheus::Registry::new());
        let (reconciler, view) = agent.reconciler(store, &paths).await;
        let mut reconciler = reconciler.with_metrics(metrics.clone());

        // The watches have not run yet: the first pass sees a partial view.
        reconciler.tick().await.unwrap();
        let unsynced = !view.lock().unwrap().synced();
        let first_unsynced = unsynced.then(|| Maps::read(&agent.datapath));
        settle(&mut reconciler, &metrics).await;
        Life {
            first_unsynced,
            settled: Maps::read(&agent.datapath),
            regenerations: metrics.regenerations(),
        }
    })
}

#[test]
fn a_policy_deleted_while_the_agent_was_down_stops_allowing_after_restart() {
    require_root();
    let node = NodeFixture::new();
    node.write("pod.yaml", POD);
    node.write("p80.yaml", &allow_port(80));
    node.write("p443.yaml", &allow_port(443));
    let run = |node: &NodeFixture| node.run(life);

    let first = run(&node);
    assert_eq!(first.settled.ports(), [80, 443]);
    assert_eq!(first.settled.flags(), [EndpointInfo::INGRESS_ENFORCED]);

    // Restarted with nothing changed: nothing written, nothing regenerated.
    let same = run(&node);
    assert_eq!(same.settled, first.settled);
    assert_eq!(same.regenerations, 0, "a restart with nothing changed");

    // p443 is deleted while the agent is down.
    node.remove("p443.yaml");
    let restarted = run(&node);
    // On the current-thread runtime the watch tasks have not run before
    // the first tick, so the first pass always sees a partial view: the
    // check below must run, not be skipped.
    let partial = restarted
        .first_unsynced
        .as_ref()
        .expect("the first pass after the restart saw a partial view");
    assert_eq!(
        partial, &first.settled,
        "nothing adopted is touched on a partial view"
    );
    assert_eq!(restarted.settled.ports(), [80], "443 no longer allowed");
    assert_eq!(
        restarted.settled.flags(),
        [EndpointInfo::INGRESS_ENFORCED],
        "x/a stays enforced by p80"
    );
    assert_eq!(restarted.regenerations, 1, "x/a regenerated once");

    // The last policy is deleted while the agent is down: x/a unenforced,
    // no entry left.
    node.remove("p80.yaml");
    let open = run(&node);
    assert!(open.settled.policy.is_empty(), "{:?}", open.settled.policy);
    assert_eq!(open.settled.flags(), [0]);
    println!(
        "agent restart: first pass unsynced in {} of 4 lives; entries {} -> {} -> {}",
        [&first, &same, &restarted, &open]
            .iter()
            .filter(|l| l.first_unsynced.is_some())
            .count(),
        first.settled.policy.len(),
        restarted.settled.policy.len(),
        open.settled.policy.len()
    );
}
