//! Reconcile steps are independent: with the shared store refusing every
//! identity allocation (an etcd outage), policy for an endpoint that
//! already has an identity is still written and revoked, the failure is
//! counted and `/readyz` says which step fails. A real datapath (pins of
//! its own), a real endpoint on a veth in a namespace of its own, the
//! in-memory store behind a switch that makes allocations fail.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use weir_agent::datapath::{maps, SharedDatapath};
use weir_agent::metrics::readiness;
use weir_agent::reconcile::metrics::StepMetrics;
use weir_agent::reconcile::status::SharedReconcileStatus;
use weir_agent::reconcile::Reconciler;
use weir_identity::{
    EndpointEvent, EndpointRecord, EventStream, IdentityEvent, LabelSet, MemoryStore, NodeEvent,
    NodeRecord, SharedStore, StoreError,
};
use weir_tests::local_agent::{LocalAgent, NodeFixture, NodePaths, NODE};
use weir_tests::require_root;
use weir_types::NamespacedName;

const POD: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {ns: x}}\n---\n\
apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {pod: a}}\n";
/// New labels for x/a: its identity must be allocated again.
const POD_RELABELLED: &str =
    "apiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {ns: x}}\n---\n\
apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {pod: a, tier: web}}\n";
const INGRESS: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
metadata: {name: in, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  \
ingress:\n  - from: [{podSelector: {matchLabels: {pod: b}}}]\n";
/// DNS to anywhere: entries for x/a whatever identities exist.
const EGRESS: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
metadata: {name: out, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  \
egress:\n  - ports: [{port: 53, protocol: UDP}]\n";

/// The in-memory store, with identity allocation failing while `down`.
struct FlakyStore {
    inner: MemoryStore,
    down: AtomicBool,
}

#[async_trait]
impl SharedStore for FlakyStore {
    fn node_name(&self) -> &str {
        self.inner.node_name()
    }
    async fn allocate_identity(&self, labels: &LabelSet) -> weir_identity::Result<u32> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Config(
                "injected: the store is unreachable".into(),
            ));
        }
        self.inner.allocate_identity(labels).await
    }
    async fn release_identity(&self, id: u32) -> weir_identity::Result<bool> {
        self.inner.release_identity(id).await
    }
    async fn lookup_identity(&self, id: u32) -> weir_identity::Result<Option<LabelSet>> {
        self.inner.lookup_identity(id).await
    }
    async fn list_identities(&self) -> weir_identity::Result<BTreeMap<u32, LabelSet>> {
        self.inner.list_identities().await
    }
    async fn watch_identities(&self) -> weir_identity::Result<EventStream<IdentityEvent>> {
        self.inner.watch_identities().await
    }
    async fn unreferenced_identities(&self) -> weir_identity::Result<Vec<u32>> {
        self.inner.unreferenced_identities().await
    }
    async fn upsert_endpoint(
        &self,
        ip: IpAddr,
        record: &EndpointRecord,
    ) -> weir_identity::Result<()> {
        self.inner.upsert_endpoint(ip, record).await
    }
    async fn delete_endpoint(&self, ip: IpAddr) -> weir_identity::Result<bool> {
        self.inner.delete_endpoint(ip).await
    }
    async fn list_endpoints(&self) -> weir_identity::Result<BTreeMap<IpAddr, EndpointRecord>> {
        self.inner.list_endpoints().await
    }
    async fn watch_endpoints(&self) -> weir_identity::Result<EventStream<EndpointEvent>> {
        self.inner.watch_endpoints().await
    }
    async fn upsert_node(&self, node: &NodeRecord) -> weir_identity::Result<()> {
        self.inner.upsert_node(node).await
    }
    async fn delete_node(&self, name: &str) -> weir_identity::Result<bool> {
        self.inner.delete_node(name).await
    }
    async fn list_nodes(&self) -> weir_identity::Result<BTreeMap<String, NodeRecord>> {
        self.inner.list_nodes().await
    }
    async fn watch_nodes(&self) -> weir_identity::Result<EventStream<NodeEvent>> {
        self.inner.watch_nodes().await
    }
}

/// What the test saw at each stage.
#[derive(Debug)]
struct Seen {
    /// Policy map entries: settled, with the egress policy added during the
    /// outage, after it was deleted during the outage, after recovery.
    entries: [usize; 4],
    errors_during: u64,
    readyz_during: (u16, String),
    readyz_after: (u16, String),
}

fn policy_entries(datapath: &SharedDatapath) -> usize {
    maps::policy::policy_entries(datapath.lock().ebpf_mut())
        .unwrap()
        .len()
}

/// Ticks 30 times, 10 ms apart: the watches echo, the loop settles.
async fn settle(reconciler: &mut Reconciler) {
    for _ in 0..30 {
        let _ = reconciler.tick().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Ticks (10 ms apart, so backoffs elapse) until `done` or 3 s.
async fn tick_until(reconciler: &mut Reconciler, mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..300 {
        let _ = reconciler.tick().await;
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

fn run(paths: NodePaths) -> Seen {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let agent = LocalAgent::load(&paths);
        agent.add_pod(&paths, NamespacedName::new("x", "a"));
        let datapath = agent.datapath.clone();
        let flaky = Arc::new(FlakyStore {
            inner: MemoryStore::new(NODE),
            down: AtomicBool::new(false),
        });
        let metrics = StepMetrics::new(&prometheus::Registry::new(), &Reconciler::STEPS);
        let status = SharedReconcileStatus::default();
        let (reconciler, _view) = agent.reconciler(flaky.clone(), &paths).await;
        let mut reconciler = reconciler
            .with_step_metrics(metrics.clone())
            .with_status(status.clone());
        let ready = |status: &SharedReconcileStatus| readiness(status).0.as_u16() == 200;

        assert!(
            tick_until(&mut reconciler, || ready(&status)).await,
            "never ready: {:?}",
            readiness(&status)
        );
        settle(&mut reconciler).await;
        let settled = policy_entries(&datapath);

        // The store goes down and x/a needs a new identity: allocation
        // fails, x/a keeps the one it has.
        flaky.down.store(true, Ordering::SeqCst);
        std::fs::write(paths.manifests.join("pod.yaml"), POD_RELABELLED).unwrap();
        std::fs::write(paths.manifests.join("egress.yaml"), EGRESS).unwrap();
        assert!(
            tick_until(&mut reconciler, || policy_entries(&datapath) > settled).await,
            "the egress policy was never written"
        );
        let added = policy_entries(&datapath);
        std::fs::remove_file(paths.manifests.join("egress.yaml")).unwrap();
        assert!(
            tick_until(&mut reconciler, || policy_entries(&datapath) == settled).await,
            "the egress policy was never revoked"
        );
        let revoked = policy_entries(&datapath);
        let errors_during = metrics.errors("identities");
        let readyz_during = readiness(&status);

        // The store is back: the new identity is allocated, ready again.
        flaky.down.store(false, Ordering::SeqCst);
        assert!(
            tick_until(&mut reconciler, || ready(&status)).await,
            "never ready again: {:?}",
            readiness(&status)
        );
        settle(&mut reconciler).await;
        let after = policy_entries(&datapath);
        let readyz_after = readiness(&status);
        Seen {
            entries: [settled, added, revoked, after],
            errors_during,
            readyz_during: (readyz_during.0.as_u16(), readyz_during.1),
            readyz_after: (readyz_after.0.as_u16(), readyz_after.1),
        }
    })
}

#[test]
fn policy_is_written_and_revoked_while_identity_allocation_fails() {
    require_root();
    let node = NodeFixture::new();
    node.write("pod.yaml", POD);
    node.write("ingress.yaml", INGRESS);
    let seen = node.run(run);

    let [settled, added, revoked, after] = seen.entries;
    assert!(added > settled, "{seen:?}");
    assert_eq!(revoked, settled, "{seen:?}");
    assert_eq!(after, settled, "{seen:?}");
    assert!(seen.errors_during >= 1, "{seen:?}");
    let (code, body) = &seen.readyz_during;
    assert_eq!(*code, 503, "{seen:?}");
    assert!(
        body.contains("identities: failing")
            && body.contains("injected: the store is unreachable")
            && body.contains("policy: ok"),
        "{body}"
    );
    let (code, body) = &seen.readyz_after;
    assert_eq!(*code, 200, "{seen:?}");
    assert!(!body.contains("failing"), "{body}");
    println!(
        "reconcile steps: policy entries {settled} -> {added} -> {revoked} during a store outage, \
         {} identity errors counted",
        seen.errors_during
    );
}
