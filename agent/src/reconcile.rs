//! The agent's reconcile loop: from the cluster's desired state (manifests)
//! and shared state (the store) to this node's datapath maps.
//!
//! Each tick: (1) read the manifest directory if it changed, and when its
//! Services or EndpointSlices changed, compile this node's load-balancer
//! state and apply the difference (see `lb_sync`); (2) give every
//! local endpoint the identity of its security labels (allocated in the
//! shared store, so every node agrees) and publish its endpoint record; (3)
//! bring the ipcache to the cluster's endpoints and nodes; (4) bring the
//! endpoints map to the local endpoints; (5) compile policy for the local
//! endpoints and apply the difference (see `policy_sync`). Every step
//! writes only what changed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing::{info, warn};
use weir_abi::EndpointInfo;
use weir_identity::{EndpointRecord, SecurityLabels, SharedStore};
use weir_policy::labels::{pod_security_labels, LabelFilter};

use crate::agent::Agent;
use crate::datapath::{tables, SharedDatapath};
use crate::endpoints::Endpoint;
use crate::ipam::AttachmentKey;
use crate::ipcache::DesiredIpcache;
use crate::lb_sync::LbSync;
use crate::policy_api::SharedSnapshot;
use crate::policy_sync::PolicySync;
use crate::reconcile_metrics::{PropagationClock, ReconcileMetrics};
use crate::shared::SharedView;
use crate::source::{ClusterManifests, ManifestDir};

pub struct Reconciler {
    pub node_name: String,
    pub node_ip: IpAddr,
    store: Arc<dyn SharedStore>,
    agent: Arc<Agent<SharedDatapath>>,
    datapath: SharedDatapath,
    view: Arc<Mutex<SharedView>>,
    manifests: Option<ManifestDir>,
    cluster: ClusterManifests,
    /// Bumped whenever a changed manifest directory was read into `cluster`.
    cluster_generation: u64,
    filter: LabelFilter,
    /// Identity held per local endpoint, with the labels it was allocated for.
    identities: BTreeMap<AttachmentKey, (SecurityLabels, u32)>,
    /// Endpoint records this node published.
    published: BTreeMap<IpAddr, EndpointRecord>,
    /// What the endpoints map holds, by ifindex.
    endpoint_entries: BTreeMap<u32, EndpointInfo>,
    /// What the ipcache map holds: read from the kernel once (an earlier
    /// agent's entries), then kept as this loop writes it, so a tick does
    /// not walk the LPM map.
    ipcache_entries: Option<BTreeMap<ipnetwork::IpNetwork, weir_abi::IpcacheValue>>,
    policy: PolicySync,
    reported_rejections: BTreeMap<std::path::PathBuf, String>,
    snapshot: SharedSnapshot,
    services: ServiceSync,
    metrics: Option<ReconcileMetrics>,
    propagation: PropagationClock,
}

/// Services: fed to the incremental compiler when the cluster's Services
/// or EndpointSlices were read again (or the last write failed); only the
/// frontends that changed are written.
pub struct ServiceSync {
    compiler: weir_lb::LbCompiler,
    sync: LbSync,
    /// The problems last reported, so each is logged once.
    problems: Vec<weir_lb::ServiceProblem>,
    /// The cluster generation of the last pass.
    seen_generation: Option<u64>,
    failed: bool,
    metrics: Option<crate::lb_sync::LbMetrics>,
}

impl ServiceSync {
    pub fn new(
        node: weir_lb::NodeContext,
        options: weir_lb::LbOptions,
        sync: LbSync,
    ) -> ServiceSync {
        ServiceSync {
            compiler: weir_lb::LbCompiler::new(node, options),
            sync,
            problems: Vec::new(),
            seen_generation: None,
            failed: false,
            metrics: None,
        }
    }

    /// Also report each pass to Prometheus.
    pub fn with_metrics(mut self, metrics: crate::lb_sync::LbMetrics) -> ServiceSync {
        self.metrics = Some(metrics);
        self
    }
}

impl Reconciler {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node_name: String,
        node_ip: IpAddr,
        store: Arc<dyn SharedStore>,
        agent: Arc<Agent<SharedDatapath>>,
        datapath: SharedDatapath,
        view: Arc<Mutex<SharedView>>,
        manifests: Option<ManifestDir>,
        snapshot: SharedSnapshot,
        filter: LabelFilter,
        services: ServiceSync,
    ) -> Reconciler {
        Reconciler {
            node_name,
            node_ip,
            store,
            agent,
            datapath,
            view,
            manifests,
            cluster: ClusterManifests::default(),
            cluster_generation: 0,
            filter,
            identities: BTreeMap::new(),
            published: BTreeMap::new(),
            endpoint_entries: BTreeMap::new(),
            ipcache_entries: None,
            policy: PolicySync::default(),
            reported_rejections: BTreeMap::new(),
            snapshot,
            services,
            metrics: None,
            propagation: PropagationClock::default(),
        }
    }

    /// Observe regeneration and propagation times into `metrics`.
    pub fn with_metrics(mut self, metrics: ReconcileMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The security labels of a local endpoint: from its Pod and Namespace
    /// manifests, or `reserved:init` while they are not known.
    fn labels_of(&self, endpoint: &Endpoint) -> SecurityLabels {
        let key = format!("{}/{}", endpoint.pod.namespace, endpoint.pod.name);
        let Some(pod) = self.cluster.pods.get(&key) else {
            return weir_identity::store::reserved_labels(weir_abi::identity::INIT)
                .expect("init is reserved");
        };
        let namespace_labels = self
            .cluster
            .namespaces
            .get(&pod.namespace)
            .map(|ns| ns.labels.clone())
            .unwrap_or_default();
        let set = pod_security_labels(
            &pod.namespace,
            namespace_labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
            pod.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &self.filter,
        );
        set.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub async fn tick(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        if let Some(dir) = &mut self.manifests {
            if let Some(manifests) = dir.read_if_changed()? {
                if manifests.policies != self.cluster.policies {
                    self.propagation.changed(started);
                }
                for (path, reason) in &manifests.rejected {
                    if self.reported_rejections.get(path) != Some(reason) {
                        warn!(file = %path.display(), %reason, "manifest rejected");
                    }
                }
                self.reported_rejections = manifests.rejected.clone();
                self.cluster = manifests;
                self.cluster_generation += 1;
            }
        }
        // Services depend on nothing below: programmed first, so a slow
        // identity allocation never delays them.
        self.sync_services()?;
        let endpoints = self.agent.endpoints();
        self.sync_identities(&endpoints).await?;
        self.publish_endpoints(&endpoints).await?;
        let view = self.view.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.policy.update(
            &self.cluster,
            &view,
            &endpoints,
            &self.identities_by_attachment(),
        );
        self.sync_ipcache(&view)?;
        let mut regenerated = self.policy.pending_endpoints();
        // Allows first, then enforcement flags, then removals: a policy
        // change never opens a window of default deny for allowed traffic.
        self.policy.apply_upserts(&mut self.datapath.lock())?;
        regenerated.extend(self.sync_endpoint_map(&endpoints)?);
        self.policy.apply_removals(&mut self.datapath.lock())?;
        self.observe(started, &regenerated, &endpoints);
        let snapshot = self
            .policy
            .snapshot(&endpoints, &self.identities_by_attachment());
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
        Ok(())
    }

    fn sync_services(&mut self) -> anyhow::Result<()> {
        let sync = &mut self.services;
        // Nothing read since the last pass: nothing to compare (comparing
        // 20,000 objects every tick is not free).
        if !sync.failed && sync.seen_generation == Some(self.cluster_generation) {
            return Ok(());
        }
        sync.seen_generation = Some(self.cluster_generation);
        let started = Instant::now();
        let changed = sync.compiler.update(
            self.cluster.services.values(),
            self.cluster.endpoint_slices.values(),
        );
        let problems = sync.compiler.problems();
        for problem in problems.iter().filter(|p| !sync.problems.contains(p)) {
            warn!(service = %problem.service, problem = %problem.message, "service");
        }
        if changed.is_empty() && !sync.failed && problems == sync.problems {
            return Ok(());
        }
        let result = sync.sync.apply(
            self.datapath.lock().ebpf_mut(),
            sync.compiler.frontends(),
            &changed,
            &problems,
        );
        sync.failed = result.is_err();
        if let Some(metrics) = &sync.metrics {
            metrics.observe(&crate::lb_sync::PassReport {
                frontends: sync.sync.frontends_written(),
                backends: sync.sync.backends_written(),
                problems: problems.len(),
                failed: sync.failed,
                operations: sync.sync.map_operations(),
                took: started.elapsed(),
            });
        }
        sync.problems = problems;
        if result.is_ok() && !changed.is_empty() {
            info!(
                services = sync.compiler.services(),
                frontends = sync.compiler.frontends().len(),
                changed = changed.len(),
                "services programmed"
            );
        }
        Ok(result?)
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

    fn identities_by_attachment(&self) -> BTreeMap<AttachmentKey, u32> {
        self.identities
            .iter()
            .map(|(k, (_, id))| (k.clone(), *id))
            .collect()
    }

    async fn sync_identities(&mut self, endpoints: &[Endpoint]) -> anyhow::Result<()> {
        for endpoint in endpoints {
            let labels = self.labels_of(endpoint);
            if self.identities.get(&endpoint.attachment).map(|(l, _)| l) == Some(&labels) {
                continue;
            }
            let id = self.store.allocate_identity(&labels).await?;
            info!(endpoint = endpoint.id, pod = %format!("{}/{}", endpoint.pod.namespace, endpoint.pod.name), identity = id, "endpoint identity");
            if let Some((_, old)) = self
                .identities
                .insert(endpoint.attachment.clone(), (labels, id))
            {
                self.store.release_identity(old).await?;
            }
        }
        let gone: Vec<AttachmentKey> = self
            .identities
            .keys()
            .filter(|k| !endpoints.iter().any(|e| &e.attachment == *k))
            .cloned()
            .collect();
        for key in gone {
            if let Some((_, id)) = self.identities.remove(&key) {
                self.store.release_identity(id).await?;
            }
        }
        Ok(())
    }

    async fn publish_endpoints(&mut self, endpoints: &[Endpoint]) -> anyhow::Result<()> {
        let mut wanted = BTreeMap::new();
        for endpoint in endpoints {
            let Some((_, identity)) = self.identities.get(&endpoint.attachment) else {
                continue;
            };
            wanted.insert(
                IpAddr::V4(endpoint.ipv4),
                EndpointRecord {
                    identity: *identity,
                    node: self.node_name.clone(),
                    node_ip: self.node_ip,
                    namespace: endpoint.pod.namespace.clone(),
                    pod: endpoint.pod.name.clone(),
                },
            );
        }
        for (ip, record) in &wanted {
            if self.published.get(ip) != Some(record) {
                self.store.upsert_endpoint(*ip, record).await?;
            }
        }
        for ip in self.published.keys().filter(|ip| !wanted.contains_key(ip)) {
            self.store.delete_endpoint(*ip).await?;
        }
        self.published = wanted;
        Ok(())
    }

    fn sync_ipcache(&mut self, view: &SharedView) -> anyhow::Result<()> {
        let mut desired = DesiredIpcache::default();
        for (ip, record) in &view.endpoints {
            desired.set_endpoint(*ip, record.identity, record.node_ip);
        }
        // Our own endpoints before the watch echoes them back.
        for (ip, record) in &self.published {
            desired.set_endpoint(*ip, record.identity, record.node_ip);
        }
        for node in view.nodes.values() {
            desired.set_node(node.ip, node.name == self.node_name);
        }
        desired.set_node(self.node_ip, true);
        desired.set_cidrs(self.policy.cidr_identities());
        let mut datapath = self.datapath.lock();
        let ebpf = datapath.ebpf_mut();
        let current = match self.ipcache_entries.take() {
            Some(current) => current,
            None => tables::ipcache_entries(ebpf)?,
        };
        let diff = desired.diff(&current, view.synced());
        let mut next = current;
        // On a failed write, forget what we know: the next tick re-reads.
        tables::apply_ipcache_diff(ebpf, &diff)?;
        for (prefix, value) in diff.upserts {
            next.insert(prefix, value);
        }
        for prefix in diff.removals {
            next.remove(&prefix);
        }
        self.ipcache_entries = Some(next);
        Ok(())
    }

    /// Brings the endpoints map to `endpoints`; returns the ids of the
    /// endpoints whose entry (identity, enforcement flags) was written.
    fn sync_endpoint_map(&mut self, endpoints: &[Endpoint]) -> anyhow::Result<BTreeSet<u16>> {
        let mut wanted = BTreeMap::new();
        for endpoint in endpoints {
            let Some((_, identity)) = self.identities.get(&endpoint.attachment) else {
                continue;
            };
            wanted.insert(
                endpoint.host_ifindex,
                EndpointInfo {
                    id: endpoint.id,
                    flags: self.policy.enforcement_flags(endpoint.id),
                    pad: 0,
                    identity: *identity,
                    ipv4: endpoint.ipv4.octets(),
                },
            );
        }
        let mut datapath = self.datapath.lock();
        let ebpf = datapath.ebpf_mut();
        let mut written = BTreeSet::new();
        for (ifindex, info) in &wanted {
            if self.endpoint_entries.get(ifindex) != Some(info) {
                tables::set_endpoint(ebpf, *ifindex, *info)?;
                written.insert(info.id);
            }
        }
        for ifindex in self
            .endpoint_entries
            .keys()
            .filter(|i| !wanted.contains_key(i))
        {
            tables::remove_endpoint(ebpf, *ifindex)?;
        }
        self.endpoint_entries = wanted;
        Ok(written)
    }
}
