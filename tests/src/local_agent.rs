//! One node's agent run in the test's own process, for suites that drive the
//! real reconcile loop against a real datapath: a network namespace with a
//! pod's host-side veth, pins, a manifest directory and a state directory
//! of their own ([`NodeFixture`]), and the agent's parts built over them
//! ([`LocalAgent`]) the way `weir-agent` builds them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use weir_agent::cluster::kvstore::{self, SharedView};
use weir_agent::cluster::manifest_dir::ManifestDir;
use weir_agent::datapath::{Datapath, LoadOptions, SharedDatapath};
use weir_agent::endpoint::ipam::{AttachmentKey, Ipam};
use weir_agent::endpoint::manager::{EndpointManager, NewEndpoint};
use weir_agent::endpoint::state::StateStore;
use weir_agent::reconcile::identities::IdentitySync;
use weir_agent::reconcile::lb_sync::LbSync;
use weir_agent::reconcile::services::ServiceSync;
use weir_agent::reconcile::snapshot::SharedSnapshot;
use weir_agent::reconcile::Reconciler;
use weir_identity::SharedStore;
use weir_policy::LabelFilter;
use weir_types::NamespacedName;

use crate::datapath::PinDir;
use crate::names;
use crate::netns::NetNs;

/// The node's name, pod CIDR and address in these suites.
pub const NODE: &str = "n1";
const POD_CIDR: &str = "10.244.7.0/24";
const NODE_IP: &str = "192.0.2.1";

/// A directory removed (with its content) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new directory under the system's temporary directory, named
    /// uniquely for this run.
    pub fn new(what: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("{}-{what}", names::unique()));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What one test's node needs from the kernel and the file system, all of
/// it removed on drop.
pub struct NodeFixture {
    pub ns: NetNs,
    /// The host side of a pod's veth pair, up, in `ns`.
    pub host_if: String,
    pub pins: PinDir,
    pub manifests: TempDir,
    pub state: TempDir,
}

/// The fixture's paths, for a closure run inside its namespace.
#[derive(Clone)]
pub struct NodePaths {
    pub pins: PathBuf,
    pub manifests: PathBuf,
    pub state: PathBuf,
    pub host_if: String,
}

impl NodeFixture {
    pub fn new() -> NodeFixture {
        let ns = NetNs::new(&names::unique()).expect("create the node's namespace");
        let host_if = format!("{}h", names::unique());
        ns.ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "podside",
        ])
        .expect("create the pod's veth pair");
        ns.ip(&["link", "set", &host_if, "up"])
            .expect("set the host side up");
        NodeFixture {
            ns,
            host_if,
            pins: PinDir::new(),
            manifests: TempDir::new("manifests"),
            state: TempDir::new("state"),
        }
    }

    /// Writes (or replaces) a manifest file.
    pub fn write(&self, file: &str, yaml: &str) {
        std::fs::write(self.manifests.path().join(file), yaml).expect("write a manifest");
    }

    /// Removes a manifest file.
    pub fn remove(&self, file: &str) {
        std::fs::remove_file(self.manifests.path().join(file)).expect("remove a manifest");
    }

    pub fn paths(&self) -> NodePaths {
        NodePaths {
            pins: self.pins.path().to_path_buf(),
            manifests: self.manifests.path().to_path_buf(),
            state: self.state.path().to_path_buf(),
            host_if: self.host_if.clone(),
        }
    }

    /// Runs `f` with the fixture's paths on a thread inside its namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce(NodePaths) -> T + Send + 'static) -> T {
        let paths = self.paths();
        self.ns
            .run(move || f(paths))
            .expect("run in the node's namespace")
    }
}

impl Default for NodeFixture {
    fn default() -> Self {
        NodeFixture::new()
    }
}

/// The agent's parts over a fixture's paths: the datapath loaded over its
/// pins, and the endpoint manager over its state directory (restoring what
/// an earlier life persisted).
pub struct LocalAgent {
    pub datapath: SharedDatapath,
    pub endpoints: Arc<EndpointManager<SharedDatapath>>,
}

impl LocalAgent {
    pub fn load(paths: &NodePaths) -> LocalAgent {
        LocalAgent::load_with(paths, &LoadOptions::default())
    }

    /// [`LocalAgent::load`] with the datapath loaded with `options` (e.g.
    /// small maps to fill).
    pub fn load_with(paths: &NodePaths, options: &LoadOptions) -> LocalAgent {
        let datapath = SharedDatapath::new(
            Datapath::load_with(&paths.pins, options).expect("load the datapath"),
        );
        let store = StateStore::new(&paths.state).expect("open the state directory");
        let ipam = Ipam::new(POD_CIDR.parse().expect("a CIDR")).expect("the pod CIDR");
        let state = store.load_or(ipam, None).expect("load the node's state");
        let endpoints = Arc::new(EndpointManager::new(
            NODE.into(),
            1500,
            store,
            state,
            datapath.clone(),
        ));
        LocalAgent {
            datapath,
            endpoints,
        }
    }

    /// Creates `pod`'s endpoint on the fixture's host interface.
    pub fn add_pod(&self, paths: &NodePaths, pod: NamespacedName) {
        let attachment = AttachmentKey {
            container_id: pod.name.clone(),
            ifname: "eth0".into(),
        };
        let address = self
            .endpoints
            .allocate(&attachment)
            .expect("allocate an address")
            .address;
        self.endpoints
            .create_endpoint(NewEndpoint {
                attachment,
                pod,
                netns: String::new(),
                host_ifname: paths.host_if.clone(),
                host_ifindex: nix::net::if_::if_nametoindex(paths.host_if.as_str())
                    .expect("the host interface exists"),
                ipv4: address,
                ipv6: None,
                mac: "02:00:00:00:00:02".into(),
                netns_cookie: 0,
                port_mappings: Vec::new(),
            })
            .expect("create the endpoint");
    }

    /// Starts the shared store's watches into a new view and builds the
    /// node's reconciler over the fixture's manifest directory, as
    /// `weir-agent` does in kvstore mode (services with default options).
    pub async fn reconciler(
        &self,
        store: Arc<dyn SharedStore>,
        paths: &NodePaths,
    ) -> (Reconciler, Arc<Mutex<SharedView>>) {
        let view = Arc::new(Mutex::new(SharedView::default()));
        kvstore::start_watches(store.clone(), view.clone(), &prometheus::Registry::new())
            .await
            .expect("watch the shared store");
        let identities = IdentitySync::new(
            NODE.into(),
            NODE_IP.parse().expect("an address"),
            store,
            LabelFilter::default(),
        );
        let services = ServiceSync::new(
            weir_lb::NodeContext {
                name: NODE.into(),
                addresses: Vec::new(),
                addresses_v6: Vec::new(),
            },
            weir_lb::LbOptions::default(),
            LbSync::new(NODE.into(), 1021, 256, Default::default()),
        );
        let reconciler = Reconciler::new(
            identities,
            self.endpoints.clone(),
            self.datapath.clone(),
            view.clone(),
            Some(ManifestDir::new(&paths.manifests)),
            SharedSnapshot::default(),
            services,
        );
        (reconciler, view)
    }
}

/// Ticks until the loop has nothing left to write (the store's watches
/// deliver between ticks), then twice more; returns (regenerations,
/// propagations) as `metrics` counts them. Panics if it never settles.
pub async fn settle(
    reconciler: &mut Reconciler,
    metrics: &weir_agent::reconcile::metrics::ReconcileMetrics,
) -> (u64, u64) {
    let mut last = (u64::MAX, u64::MAX);
    let mut stable = 0;
    for _ in 0..100 {
        reconciler.tick().await.expect("a reconcile pass");
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
