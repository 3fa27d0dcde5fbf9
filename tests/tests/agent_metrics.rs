//! The reconcile loop's timing histograms, observed by the real loop: a
//! real datapath (pins of its own), a real endpoint on a veth in a
//! namespace of its own, the in-memory shared store, and a manifest
//! directory whose policy changes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use weir_agent::cluster::kvstore::{self, SharedView};
use weir_agent::cluster::manifest_dir::ManifestDir;
use weir_agent::datapath::SharedDatapath;
use weir_agent::endpoint::ipam::{AttachmentKey, Ipam};
use weir_agent::endpoint::manager::{EndpointManager, NewEndpoint};
use weir_agent::endpoint::state::StateStore;
use weir_agent::reconcile::metrics::ReconcileMetrics;
use weir_agent::reconcile::snapshot::SharedSnapshot;
use weir_agent::reconcile::Reconciler;
use weir_identity::{MemoryStore, SharedStore};
use weir_policy::LabelFilter;
use weir_tests::datapath::PinDir;
use weir_tests::netns::NetNs;
use weir_tests::{names, require_root};
use weir_types::NamespacedName;

const POD: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {ns: x}}\n---\n\
apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {pod: a}}\n";
const INGRESS: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
metadata: {name: in, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  \
ingress:\n  - from: [{podSelector: {matchLabels: {pod: b}}}]\n";
const EGRESS: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
metadata: {name: out, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  \
egress:\n  - to: [{podSelector: {matchLabels: {pod: b}}}]\n";

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(what: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("{}-{what}", names::unique()));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// (regenerations, propagations) after each step.
type Counts = (u64, u64);

/// Ticks until the loop has nothing left to write (the store's watches
/// deliver between ticks), then twice more.
async fn settle(reconciler: &mut Reconciler, metrics: &ReconcileMetrics) -> Counts {
    let mut last = (u64::MAX, u64::MAX);
    let mut stable = 0;
    for _ in 0..100 {
        reconciler.tick().await.unwrap();
        tokio::task::yield_now().await;
        let now = (metrics.regenerations(), metrics.propagations());
        stable = if now == last { stable + 1 } else { 0 };
        last = now;
        if stable == 3 {
            return now;
        }
    }
    panic!("the loop kept writing: {last:?}");
}

fn run(pins: &Path, manifests: &Path, state: &Path, host_if: &str) -> (Counts, Counts, Counts) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let datapath = SharedDatapath::new(weir_agent::datapath::Datapath::load(pins).unwrap());
        let store = StateStore::new(state).unwrap();
        let ipam = Ipam::new("10.244.7.0/24".parse().unwrap()).unwrap();
        let node_state = store.load_or(ipam).unwrap();
        let agent = Arc::new(EndpointManager::new(
            "n1".into(),
            1500,
            store,
            node_state,
            datapath.clone(),
        ));
        let attachment = AttachmentKey {
            container_id: "a".into(),
            ifname: "eth0".into(),
        };
        let address = agent.allocate(&attachment).unwrap().address;
        agent
            .create_endpoint(NewEndpoint {
                attachment,
                pod: NamespacedName::new("x", "a"),
                netns: String::new(),
                host_ifname: host_if.into(),
                host_ifindex: nix::net::if_::if_nametoindex(host_if).unwrap(),
                ipv4: address,
                mac: "02:00:00:00:00:02".into(),
            })
            .unwrap();
        let shared: Arc<dyn SharedStore> = Arc::new(MemoryStore::new("n1"));
        let view = Arc::new(Mutex::new(SharedView::default()));
        kvstore::start_watches(shared.clone(), view.clone())
            .await
            .unwrap();
        let metrics = ReconcileMetrics::new(&prometheus::Registry::new());
        let identities = weir_agent::reconcile::identities::IdentitySync::new(
            "n1".into(),
            "192.0.2.1".parse().unwrap(),
            shared,
            LabelFilter::default(),
        );
        let mut reconciler = Reconciler::new(
            identities,
            agent,
            datapath,
            view,
            Some(ManifestDir::new(manifests)),
            SharedSnapshot::default(),
            weir_agent::reconcile::services::ServiceSync::new(
                weir_lb::NodeContext {
                    name: "n1".into(),
                    addresses: Vec::new(),
                },
                weir_lb::LbOptions::default(),
                weir_agent::reconcile::lb_sync::LbSync::new(
                    "n1".into(),
                    1021,
                    256,
                    Default::default(),
                ),
            ),
        )
        .with_metrics(metrics.clone());

        let first = settle(&mut reconciler, &metrics).await;
        // Nothing changes: nothing is observed.
        let quiet = settle(&mut reconciler, &metrics).await;
        // A second policy: egress becomes enforced for x/a.
        std::fs::write(manifests.join("egress.yaml"), EGRESS).unwrap();
        let changed = settle(&mut reconciler, &metrics).await;
        (first, quiet, changed)
    })
}

#[test]
fn regeneration_and_propagation_are_observed_when_policy_is_written() {
    require_root();
    let ns = NetNs::new(&names::unique()).unwrap();
    let host_if = format!("{}h", names::unique());
    ns.ip(&[
        "link", "add", &host_if, "type", "veth", "peer", "name", "podside",
    ])
    .unwrap();
    ns.ip(&["link", "set", &host_if, "up"]).unwrap();
    let pins = PinDir::new();
    let manifests = temp_dir("manifests");
    std::fs::write(manifests.0.join("pod.yaml"), POD).unwrap();
    std::fs::write(manifests.0.join("ingress.yaml"), INGRESS).unwrap();
    let state = temp_dir("state");

    let (pins_path, manifests_path, state_path) = (
        pins.path().to_path_buf(),
        manifests.0.clone(),
        state.0.clone(),
    );
    let (first, quiet, changed) = ns
        .run(move || run(&pins_path, &manifests_path, &state_path, &host_if))
        .unwrap();

    // The first policy set reached the maps once; x/a was regenerated.
    assert_eq!(first.1, 1, "{first:?}");
    assert!(first.0 >= 1, "{first:?}");
    assert_eq!(quiet, first, "nothing written, nothing observed");
    // The new policy: propagated once, x/a regenerated once more.
    assert_eq!(changed, (first.0 + 1, first.1 + 1));
}
