//! The reconcile loop's timing histograms, observed by the real loop: a
//! real datapath (pins of its own), a real endpoint on a veth in a
//! namespace of its own, the in-memory shared store, and a manifest
//! directory whose policy changes.

use std::sync::Arc;

use weir_agent::reconcile::metrics::ReconcileMetrics;
use weir_identity::{MemoryStore, SharedStore};
use weir_tests::local_agent::{settle, LocalAgent, NodeFixture, NodePaths, NODE};
use weir_tests::require_root;
use weir_types::NamespacedName;

const POD: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {ns: x}}\n---\n\
apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {pod: a}}\n";
const INGRESS: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
metadata: {name: in, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  \
ingress:\n  - from: [{podSelector: {matchLabels: {pod: b}}}]\n";
const EGRESS: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
metadata: {name: out, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  \
egress:\n  - to: [{podSelector: {matchLabels: {pod: b}}}]\n";

/// (regenerations, propagations) after each step.
type Counts = (u64, u64);

fn run(paths: NodePaths) -> (Counts, Counts, Counts) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let agent = LocalAgent::load(&paths);
        agent.add_pod(&paths, NamespacedName::new("x", "a"));
        let store: Arc<dyn SharedStore> = Arc::new(MemoryStore::new(NODE));
        let metrics = ReconcileMetrics::new(&prometheus::Registry::new());
        let (reconciler, _view) = agent.reconciler(store, &paths).await;
        let mut reconciler = reconciler.with_metrics(metrics.clone());

        let first = settle(&mut reconciler, &metrics).await;
        // Nothing changes: nothing is observed.
        let quiet = settle(&mut reconciler, &metrics).await;
        // A second policy: egress becomes enforced for x/a.
        std::fs::write(paths.manifests.join("egress.yaml"), EGRESS).unwrap();
        let changed = settle(&mut reconciler, &metrics).await;
        (first, quiet, changed)
    })
}

#[test]
fn regeneration_and_propagation_are_observed_when_policy_is_written() {
    require_root();
    let node = NodeFixture::new();
    node.write("pod.yaml", POD);
    node.write("ingress.yaml", INGRESS);
    let (first, quiet, changed) = node.run(run);

    // The first policy set reached the maps once; x/a was regenerated.
    assert_eq!(first.1, 1, "{first:?}");
    assert!(first.0 >= 1, "{first:?}");
    assert_eq!(quiet, first, "nothing written, nothing observed");
    // The new policy: propagated once, x/a regenerated once more.
    assert_eq!(changed, (first.0 + 1, first.1 + 1));
}
