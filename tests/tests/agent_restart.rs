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
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use weir_abi::{EndpointInfo, PolicyEntry};
use weir_agent::cluster::kvstore::{self, SharedView};
use weir_agent::cluster::manifest_dir::ManifestDir;
use weir_agent::datapath::maps::{self, policy::LpmKey};
use weir_agent::datapath::{Datapath, SharedDatapath};
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

/// A policy allowing TCP `port` into x/a from anywhere.
fn allow_port(port: u16) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {{name: p{port}, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  \
         ingress:\n  - ports: [{{port: {port}, protocol: TCP}}]\n"
    )
}

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
            .filter(|key| key.key.protocol == 6)
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

/// Ticks until the loop has nothing left to write (the store's watches
/// deliver between ticks), then twice more.
async fn settle(reconciler: &mut Reconciler, metrics: &ReconcileMetrics) {
    let mut last = u64::MAX;
    let mut stable = 0;
    for _ in 0..100 {
        reconciler.tick().await.unwrap();
        tokio::task::yield_now().await;
        let now = metrics.regenerations();
        stable = if now == last { stable + 1 } else { 0 };
        last = now;
        if stable == 3 {
            return;
        }
    }
    panic!("the loop kept writing");
}

/// One agent life: load the datapath over `pins`, restore (or, the first
/// time, create) x/a's endpoint, reconcile until settled.
fn life(pins: &Path, manifests: &Path, state: &Path, host_if: &str) -> Life {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let datapath = SharedDatapath::new(Datapath::load(pins).unwrap());
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
        assert!(agent.restore().is_empty(), "restored endpoints re-attach");
        if agent.endpoints().is_empty() {
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
        }
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
            datapath.clone(),
            view.clone(),
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

        // The watches have not run yet: the first pass sees a partial view.
        reconciler.tick().await.unwrap();
        let unsynced = !view.lock().unwrap().synced();
        let first_unsynced = unsynced.then(|| Maps::read(&datapath));
        settle(&mut reconciler, &metrics).await;
        Life {
            first_unsynced,
            settled: Maps::read(&datapath),
            regenerations: metrics.regenerations(),
        }
    })
}

#[test]
fn a_policy_deleted_while_the_agent_was_down_stops_allowing_after_restart() {
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
    let state = temp_dir("state");
    std::fs::write(manifests.0.join("pod.yaml"), POD).unwrap();
    std::fs::write(manifests.0.join("p80.yaml"), allow_port(80)).unwrap();
    std::fs::write(manifests.0.join("p443.yaml"), allow_port(443)).unwrap();
    let run = |ns: &NetNs| {
        let (pins, manifests, state, host_if) = (
            pins.path().to_path_buf(),
            manifests.0.clone(),
            state.0.clone(),
            host_if.clone(),
        );
        ns.run(move || life(&pins, &manifests, &state, &host_if))
            .unwrap()
    };

    let first = run(&ns);
    assert_eq!(first.settled.ports(), [80, 443]);
    assert_eq!(first.settled.flags(), [EndpointInfo::INGRESS_ENFORCED]);

    // Restarted with nothing changed: nothing written, nothing regenerated.
    let same = run(&ns);
    assert_eq!(same.settled, first.settled);
    assert_eq!(same.regenerations, 0, "a restart with nothing changed");

    // p443 is deleted while the agent is down.
    std::fs::remove_file(manifests.0.join("p443.yaml")).unwrap();
    let restarted = run(&ns);
    if let Some(partial) = &restarted.first_unsynced {
        assert_eq!(
            partial, &first.settled,
            "nothing adopted is touched on a partial view"
        );
    }
    assert_eq!(restarted.settled.ports(), [80], "443 no longer allowed");
    assert_eq!(
        restarted.settled.flags(),
        [EndpointInfo::INGRESS_ENFORCED],
        "x/a stays enforced by p80"
    );
    assert_eq!(restarted.regenerations, 1, "x/a regenerated once");

    // The last policy is deleted while the agent is down: x/a unenforced,
    // no entry left.
    std::fs::remove_file(manifests.0.join("p80.yaml")).unwrap();
    let open = run(&ns);
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
