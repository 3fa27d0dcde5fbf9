//! The agent's reconcile loop: from the cluster's desired state (manifests)
//! and shared state (the store) to this node's datapath maps.
//!
//! One reconciler per concern, each with its own state and only writing
//! what changed: [`services`] (Services and EndpointSlices to the LB maps,
//! see [`lb_sync`]), [`identities`] (an identity per local endpoint, and
//! its endpoint record published), [`ipcache`] (every address in the
//! cluster to its identity), [`endpoints_map`] and [`policy`] (compiled per
//! local endpoint, see [`snapshot`] for what it publishes). [`Reconciler`]
//! orders them in one pass.

pub mod endpoints_map;
pub mod identities;
pub mod ipcache;
pub mod lb_sync;
pub mod metrics;
pub mod policy;
pub mod services;
pub mod snapshot;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing::warn;

use crate::cluster::kvstore::SharedView;
use crate::cluster::manifest_dir::{ClusterManifests, ManifestDir};
use crate::datapath::SharedDatapath;
use crate::endpoint::manager::EndpointManager;
use crate::endpoint::registry::Endpoint;
use endpoints_map::EndpointMapSync;
use identities::IdentitySync;
use ipcache::{DesiredIpcache, IpcacheSync};
use metrics::{PropagationClock, ReconcileMetrics};
use policy::PolicySync;
use services::ServiceSync;
use snapshot::SharedSnapshot;

pub struct Reconciler {
    node_name: String,
    node_ip: IpAddr,
    endpoints: Arc<EndpointManager<SharedDatapath>>,
    datapath: SharedDatapath,
    view: Arc<Mutex<SharedView>>,
    manifests: Option<ManifestDir>,
    cluster: ClusterManifests,
    /// Bumped whenever a changed manifest directory was read into `cluster`.
    cluster_generation: u64,
    reported_rejections: BTreeMap<PathBuf, String>,
    identities: IdentitySync,
    ipcache: IpcacheSync,
    endpoints_map: EndpointMapSync,
    policy: PolicySync,
    services: ServiceSync,
    snapshot: SharedSnapshot,
    metrics: Option<ReconcileMetrics>,
    propagation: PropagationClock,
}

impl Reconciler {
    pub fn new(
        identities: IdentitySync,
        endpoints: Arc<EndpointManager<SharedDatapath>>,
        datapath: SharedDatapath,
        view: Arc<Mutex<SharedView>>,
        manifests: Option<ManifestDir>,
        snapshot: SharedSnapshot,
        services: ServiceSync,
    ) -> Reconciler {
        let (node_name, node_ip) = (identities.node_name().to_string(), identities.node_ip());
        Reconciler {
            node_name,
            node_ip,
            endpoints,
            datapath,
            view,
            manifests,
            cluster: ClusterManifests::default(),
            cluster_generation: 0,
            reported_rejections: BTreeMap::new(),
            identities,
            ipcache: IpcacheSync::default(),
            endpoints_map: EndpointMapSync::default(),
            policy: PolicySync::default(),
            services,
            snapshot,
            metrics: None,
            propagation: PropagationClock::default(),
        }
    }

    /// Observe regeneration and propagation times into `metrics`.
    pub fn with_metrics(mut self, metrics: ReconcileMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// One pass: read the manifests if they changed, then every reconciler
    /// in order.
    pub async fn tick(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        self.read_manifests(started)?;
        // Services depend on nothing below: programmed first, so a slow
        // identity allocation never delays them.
        self.services
            .sync(&self.cluster, self.cluster_generation, &self.datapath)?;
        let endpoints = self.endpoints.endpoints();
        self.identities.sync(&self.cluster, &endpoints).await?;
        self.identities.publish(&endpoints).await?;
        let view = self.view.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let identities = self.identities.by_attachment();
        self.policy
            .update(&self.cluster, &view, &endpoints, &identities);
        let desired = self.desired_ipcache(&view);
        self.ipcache
            .sync(self.datapath.lock().ebpf_mut(), &desired, view.synced())?;
        let mut regenerated = self.policy.pending_endpoints();
        // Allows first, then enforcement flags, then removals: a policy
        // change never opens a window of default deny for allowed traffic.
        self.policy.apply_upserts(&mut self.datapath.lock())?;
        regenerated.extend(self.endpoints_map.sync(
            self.datapath.lock().ebpf_mut(),
            &endpoints,
            |endpoint| self.identities.of(&endpoint.attachment),
            |id| self.policy.enforcement_flags(id),
        )?);
        self.policy.apply_removals(&mut self.datapath.lock())?;
        self.observe(started, &regenerated, &endpoints);
        let snapshot = self.policy.snapshot(&endpoints, &identities);
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
        Ok(())
    }

    /// Reads the manifest directory if it changed; logs each rejected file
    /// once.
    fn read_manifests(&mut self, now: Instant) -> anyhow::Result<()> {
        let Some(dir) = &mut self.manifests else {
            return Ok(());
        };
        let Some(manifests) = dir.read_if_changed()? else {
            return Ok(());
        };
        if manifests.policies != self.cluster.policies {
            self.propagation.changed(now);
        }
        for (path, reason) in &manifests.rejected {
            if self.reported_rejections.get(path) != Some(reason) {
                warn!(file = %path.display(), %reason, "manifest rejected");
            }
        }
        self.reported_rejections = manifests.rejected.clone();
        self.cluster = manifests;
        self.cluster_generation += 1;
        Ok(())
    }

    /// The ipcache the cluster asks for: every endpoint record (ours before
    /// the watch echoes them back), every node, and the policy CIDRs.
    fn desired_ipcache(&self, view: &SharedView) -> DesiredIpcache {
        let mut desired = DesiredIpcache::default();
        for (ip, record) in view.endpoints.iter().chain(self.identities.published()) {
            desired.set_endpoint(*ip, record.identity, record.node_ip);
        }
        for node in view.nodes.values() {
            desired.set_node(node.ip, node.name == self.node_name);
        }
        desired.set_node(self.node_ip, true);
        desired.set_cidrs(self.policy.cidr_identities());
        desired
    }

    /// Regeneration of the local endpoints whose policy or flags this pass
    /// wrote, and propagation of a policy change now in the maps.
    fn observe(&mut self, started: Instant, regenerated: &BTreeSet<u16>, endpoints: &[Endpoint]) {
        let now = Instant::now();
        let propagated = self.propagation.written(now);
        let Some(metrics) = &self.metrics else {
            return;
        };
        for _ in endpoints.iter().filter(|e| regenerated.contains(&e.id)) {
            metrics.endpoint_regenerated(now.saturating_duration_since(started));
        }
        if let Some(took) = propagated {
            metrics.policy_propagated(took);
        }
    }
}
