//! The agent's reconcile loop: from the cluster's desired state (manifests)
//! and shared state (the store) to this node's datapath maps.
//!
//! One reconciler per concern, each with its own state and only writing
//! what changed: [`services`] (Services and EndpointSlices to the LB maps,
//! see [`lb_sync`]), [`identities`] (an identity per local endpoint, and
//! its endpoint record published), [`ipcache`] (every address in the
//! cluster to its identity, and [`pod_cidrs`], every node's pod CIDR to
//! its owner), [`endpoints_map`] and [`policy`] (compiled per
//! local endpoint, see [`snapshot`] for what it publishes). [`Reconciler`]
//! orders them in one pass; each is a [`step`] with its own error state
//! and backoff, so one failing never stops the others (a step that needs
//! another's output uses its last good one), and publishes its state in
//! [`status`] for `/readyz` and `weir status`.

pub mod audit;
pub mod driver;
pub mod endpoints_map;
pub mod host_ports;
pub mod identities;
pub mod ipcache;
pub mod lb_sync;
pub mod metrics;
pub mod pod_cidrs;
pub mod policy;
pub mod services;
pub mod snapshot;
pub mod status;
pub mod step;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::anyhow;
use tracing::warn;
use weir_abi::EndpointInfo;
use weir_types::LabelSet;

use crate::cluster::kubernetes::KubernetesSource;
use crate::cluster::kvstore::SharedView;
use crate::cluster::manifest_dir::{ClusterManifests, ManifestDir};
use crate::datapath::maps;
use crate::datapath::maps::fill::FullMap;
use crate::datapath::SharedDatapath;
use crate::endpoint::ipam::AttachmentKey;
use crate::endpoint::manager::EndpointManager;
use crate::endpoint::readiness::EndpointReadiness;
use crate::endpoint::registry::Endpoint;
use crate::flows::agent_events::AgentEvents;
use endpoints_map::EndpointMapSync;
use identities::IdentitySync;
use ipcache::{DesiredIpcache, IpcacheSync};
use metrics::{PropagationClock, ReconcileMetrics, StepMetrics};
use pod_cidrs::PodCidrSync;
use policy::PolicySync;
use services::ServiceSync;
use snapshot::SharedSnapshot;
use status::SharedReconcileStatus;
use step::Step;

/// The steps of a pass, in order.
struct Steps {
    manifests: Step,
    services: Step,
    identities: Step,
    ipcache: Step,
    /// Policy map writes: upserts, and removals once the endpoints map is
    /// written.
    policy: Step,
    endpoints: Step,
}

impl Steps {
    fn new() -> Steps {
        let [manifests, services, identities, ipcache, policy, endpoints] =
            Reconciler::STEPS.map(Step::new);
        // The store fails at once while it does not answer: retrying often
        // costs nothing and catches its return within the outage bound.
        let identities = Step::with_backoff(
            identities.name(),
            step::Backoff {
                initial: std::time::Duration::from_millis(100),
                max: std::time::Duration::from_millis(200),
            },
        );
        Steps {
            manifests,
            services,
            identities,
            ipcache,
            policy,
            endpoints,
        }
    }

    /// The earliest time, after `now`, a step that is backing off may run
    /// again.
    fn next_retry(&self, now: Instant) -> Option<Instant> {
        self.all()
            .into_iter()
            .filter_map(Step::retry_at)
            .filter(|at| *at > now)
            .min()
    }

    fn all(&self) -> [&Step; 6] {
        [
            &self.manifests,
            &self.services,
            &self.identities,
            &self.ipcache,
            &self.policy,
            &self.endpoints,
        ]
    }
}

/// Everything the policy compile reads, besides the manifests (by their
/// generation) and the shared view (by the reconciler's count of its changes).
#[derive(PartialEq)]
struct PolicyInputs {
    cluster_generation: u64,
    view_generation: u64,
    endpoints: Vec<Endpoint>,
    identities: BTreeMap<AttachmentKey, u32>,
    local_labels: BTreeMap<u32, LabelSet>,
}

/// Where the desired state comes from.
enum Source {
    Directory(ManifestDir),
    Kubernetes(KubernetesSource),
}

pub struct Reconciler {
    node_name: String,
    node_ip: IpAddr,
    endpoints: Arc<EndpointManager<SharedDatapath>>,
    datapath: SharedDatapath,
    view: Arc<Mutex<SharedView>>,
    manifests: Option<Source>,
    cluster: ClusterManifests,
    /// `--policy-audit-mode`: the node-wide default of [`audit`].
    policy_audit_mode: bool,
    /// Bumped whenever a changed manifest directory was read into `cluster`.
    cluster_generation: u64,
    reported_rejections: BTreeMap<PathBuf, String>,
    identities: IdentitySync,
    ipcache: IpcacheSync,
    /// This node's pod CIDRs and address, for `weir_pod_cidrs` and
    /// `weir_pod_cidrs6` (none: the maps are not reconciled; see
    /// [`Reconciler::with_pod_cidrs`]).
    local_pod_cidr: Option<(crate::cluster::node_ipam::PodCidrs, std::net::Ipv4Addr)>,
    pod_cidrs: PodCidrSync,
    endpoints_map: EndpointMapSync,
    policy: PolicySync,
    services: ServiceSync,
    snapshot: SharedSnapshot,
    metrics: Option<ReconcileMetrics>,
    propagation: PropagationClock,
    steps: Steps,
    step_metrics: Option<StepMetrics>,
    status: SharedReconcileStatus,
    readiness: Arc<EndpointReadiness>,
    /// The shared view as the last pass saw it, and a counter of its changes.
    view_copy: Arc<SharedView>,
    view_generation: u64,
    /// What the compiled policy was last computed from.
    policy_inputs: Option<PolicyInputs>,
    /// The manifests were read once (or there is no directory): until then
    /// every pod would look unknown, so identities wait.
    manifests_read: bool,
    /// Where the changes of each pass are announced (GetAgentEvents).
    events: Option<AgentEvents>,
    /// Something that decides verdicts (policy entries, ipcache entries,
    /// enforcement flags) may have changed since the policy revision last
    /// moved. True at start: an earlier agent may have written without
    /// moving it.
    verdicts_changed: bool,
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
            manifests: manifests.map(Source::Directory),
            cluster: ClusterManifests::default(),
            policy_audit_mode: false,
            cluster_generation: 0,
            reported_rejections: BTreeMap::new(),
            identities,
            ipcache: IpcacheSync::default(),
            local_pod_cidr: None,
            pod_cidrs: PodCidrSync::default(),
            endpoints_map: EndpointMapSync::default(),
            policy: PolicySync::default(),
            services,
            snapshot,
            metrics: None,
            propagation: PropagationClock::default(),
            steps: Steps::new(),
            step_metrics: None,
            status: SharedReconcileStatus::default(),
            readiness: Arc::default(),
            view_copy: Arc::default(),
            view_generation: 0,
            policy_inputs: None,
            manifests_read: false,
            events: None,
            verdicts_changed: true,
        }
    }

    /// The names of the steps of a pass, in order.
    pub const STEPS: [&'static str; 6] = [
        "manifests",
        "services",
        "identities",
        "ipcache",
        "policy",
        "endpoints",
    ];

    /// Every endpoint of the node in policy audit mode unless its pod or
    /// namespace says otherwise ([`audit`]).
    pub fn with_policy_audit_mode(mut self, on: bool) -> Self {
        self.policy_audit_mode = on;
        self
    }

    /// Read the desired state from the Kubernetes API instead of a
    /// manifest directory.
    pub fn with_kubernetes(mut self, source: KubernetesSource) -> Self {
        self.manifests = Some(Source::Kubernetes(source));
        self
    }

    /// Keep `weir_pod_cidrs` (anti-spoofing on the node devices, the
    /// tunnel) and `weir_pod_cidrs6` equal to this node's pod CIDRs and the
    /// other nodes' records, in the ipcache step.
    pub fn with_pod_cidrs(
        mut self,
        pod_cidrs: crate::cluster::node_ipam::PodCidrs,
        node_ip: std::net::Ipv4Addr,
    ) -> Self {
        self.local_pod_cidr = Some((pod_cidrs, node_ip));
        self
    }

    /// Count each step's failures into `metrics`.
    pub fn with_step_metrics(mut self, metrics: StepMetrics) -> Self {
        self.step_metrics = Some(metrics);
        self
    }

    /// Publish each step's state into `status` after every pass.
    pub fn with_status(mut self, status: SharedReconcileStatus) -> Self {
        self.status = status;
        self.publish_status(false);
        self
    }

    /// Publish what the endpoints map holds into `readiness` after every
    /// pass (CNI ADD waits on it).
    pub fn with_readiness(mut self, readiness: Arc<EndpointReadiness>) -> Self {
        self.readiness = readiness;
        self
    }

    /// Announce each pass's changes (policies, endpoints, ipcache entries,
    /// services) in `ring`. The endpoints the agent holds now (restored
    /// from an earlier run) are not announced as created.
    pub fn with_agent_events(mut self, ring: Arc<weir_observer::AgentEventRing>) -> Self {
        self.events = Some(AgentEvents::new(ring, &self.endpoints.endpoints()));
        self
    }

    /// Observe regeneration and propagation times into `metrics`.
    pub fn with_metrics(mut self, metrics: ReconcileMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// One pass: every step that is not backing off, in order. A step
    /// that fails keeps its last good output for the steps after it. The
    /// error lists the steps that failed in this pass (each also logs its
    /// own errors, once per change).
    pub async fn tick(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut failed = Vec::new();
        if self.steps.manifests.due(started) {
            let result = self.read_manifests(started);
            self.record(|s| &mut s.manifests, result, &mut failed);
        }
        // Services depend on nothing below: programmed first, so a slow
        // identity allocation never delays them.
        let endpoints = self.endpoints.endpoints();
        if self.steps.services.due(started) {
            let result = self.services.sync(
                &self.cluster,
                self.cluster_generation,
                &endpoints,
                &self.datapath,
            );
            self.record(|s| &mut s.services, result, &mut failed);
            self.announce_services();
        }
        if self.manifests_read && self.steps.identities.due(Instant::now()) {
            // Publish what is held even when an allocation failed.
            let allocated = self.identities.sync(&self.cluster, &endpoints).await;
            let published = self.identities.publish(&endpoints).await;
            self.record(|s| &mut s.identities, allocated.and(published), &mut failed);
            if let Some(events) = &mut self.events {
                let labels = self.identities.local_labels();
                events.endpoints(&endpoints, |e| {
                    self.identities
                        .of(&e.attachment)
                        .and_then(|id| labels.get(&id).cloned())
                });
            }
        }
        let view = self.shared_view();
        let identities = self.identities.by_attachment();
        let inputs = PolicyInputs {
            cluster_generation: self.cluster_generation,
            view_generation: self.view_generation,
            endpoints: endpoints.clone(),
            identities: identities.clone(),
            local_labels: self.identities.local_labels(),
        };
        // Compiling is the costly part of a pass: done only when one of its
        // inputs changed, so an agent with nothing to do does next to nothing.
        let recompile = self.policy_inputs.as_ref() != Some(&inputs);
        if recompile {
            self.policy
                .recall_cidr_identities(&mut self.datapath.lock());
            self.policy.update(
                &self.cluster,
                &view,
                &inputs.endpoints,
                &inputs.identities,
                &inputs.local_labels,
            );
            self.policy_inputs = Some(inputs);
        }
        if self.steps.ipcache.due(Instant::now()) {
            let desired = self.desired_ipcache(&view);
            let mut datapath = self.datapath.lock();
            let ebpf = datapath.ebpf_mut();
            let ipcache = self.ipcache.sync(ebpf, &desired, view.synced());
            // Pod CIDR owners are addresses of the cluster too: written in
            // the same step, each whatever the other's outcome.
            let cidrs = match self.local_pod_cidr {
                Some((cidr, node_ip)) => {
                    let desired =
                        pod_cidrs::desired(&self.node_name, cidr, node_ip, view.nodes.values());
                    self.pod_cidrs.sync(ebpf, &desired, view.nodes_synced)
                }
                None => Ok(()),
            };
            drop(datapath);
            // A failed sync may have written part of its diff.
            self.verdicts_changed |= ipcache.is_err();
            self.record(|s| &mut s.ipcache, ipcache.and(cidrs), &mut failed);
            let writes = self.ipcache.take_writes();
            self.verdicts_changed |= !writes.is_empty();
            if let Some(events) = &self.events {
                events.ipcache(&writes, &endpoints);
            }
        }
        // Allows first, then enforcement flags, then removals: a policy
        // change never opens a window of default deny for allowed traffic.
        // So the endpoints map is written only once the allows are, and
        // removals only once the flags are.
        let mut regenerated = BTreeSet::new();
        let mut written = false;
        if self.steps.policy.due(Instant::now()) {
            // The first pass reads what an earlier agent left in the map.
            let adopted = self.policy.adopt(&mut self.datapath.lock());
            let upserts = adopted.and_then(|()| {
                regenerated = self.policy.pending_endpoints();
                self.policy.apply_upserts(&mut self.datapath.lock())
            });
            let flags = match upserts {
                Ok(()) if self.steps.endpoints.due(Instant::now()) => {
                    let result = self.endpoints_map.sync(
                        self.datapath.lock().ebpf_mut(),
                        &endpoints,
                        |endpoint| self.identities.of(&endpoint.attachment),
                        |endpoint| {
                            let audit = audit::audit_mode(
                                self.policy_audit_mode,
                                self.cluster.pods.get(&endpoint.pod),
                                self.cluster.namespaces.get(&endpoint.pod.namespace),
                            );
                            self.policy.enforcement_flags(endpoint.id)
                                | if audit { EndpointInfo::AUDIT } else { 0 }
                        },
                        view.synced(),
                    );
                    if let Some(written) = self.endpoints_map.written() {
                        self.readiness.publish(written);
                    }
                    self.verdicts_changed |= result.as_ref().map_or(true, |ids| !ids.is_empty());
                    let ok = result.map(|ids| regenerated.extend(ids));
                    let flags_written = ok.is_ok();
                    self.record(|s| &mut s.endpoints, ok, &mut failed);
                    flags_written
                }
                _ => false,
            };
            let result = match upserts {
                Ok(()) if flags => {
                    let removals = self.policy.apply_removals(&mut self.datapath.lock());
                    written = removals.is_ok();
                    removals
                }
                other => other,
            };
            self.verdicts_changed |= !regenerated.is_empty() || result.is_err();
            if let Err(error) = &result {
                // What this pass meant to write for these endpoints is not
                // (all) in force.
                self.announce_regenerated(&regenerated, &endpoints, Some(&format!("{error:#}")));
            }
            self.record(|s| &mut s.policy, result, &mut failed);
        }
        // Last, once this pass's writes are all in: established connections
        // check their verdict again on their next packet.
        if self.verdicts_changed {
            self.advance_policy_revision();
        }
        if written {
            self.observe(started, &regenerated, &endpoints);
            self.announce_regenerated(&regenerated, &endpoints, None);
        }
        if recompile {
            let snapshot = self.policy.snapshot(&endpoints, &identities);
            *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
        }
        self.publish_status(view.synced());
        if failed.is_empty() {
            Ok(())
        } else {
            Err(anyhow!("reconcile steps failed: {}", failed.join("; ")))
        }
    }

    /// When the loop must run again without being woken: the end of a
    /// failing step's backoff, or a manifest directory that asks to be
    /// looked at again soon (see [`driver`]).
    ///
    /// Only future times count: a deadline already past after a pass
    /// belongs to a step that waits on another (the endpoints step on
    /// policy upserts, identities on the manifests), whose own deadline
    /// wakes the loop; counting it would spin.
    pub fn next_retry(&self) -> Option<Instant> {
        let recheck = match &self.manifests {
            Some(Source::Directory(dir)) => dir.recheck_at(),
            _ => None,
        };
        let now = Instant::now();
        let recheck = recheck.filter(|at| *at > now);
        self.steps.next_retry(now).into_iter().chain(recheck).min()
    }

    /// The shared view as of now, cloned only when it changed since the
    /// last pass (then `view_generation` moves on).
    fn shared_view(&mut self) -> Arc<SharedView> {
        let shared = self.view.lock().unwrap_or_else(|e| e.into_inner());
        if *shared != *self.view_copy {
            self.view_copy = Arc::new(shared.clone());
            self.view_generation += 1;
        }
        self.view_copy.clone()
    }

    /// Records one step's run: its state, its metrics, and in `failed` the
    /// error of this pass.
    fn record<E: std::fmt::Display + FullMap>(
        &mut self,
        which: fn(&mut Steps) -> &mut Step,
        result: Result<(), E>,
        failed: &mut Vec<String>,
    ) {
        let step = which(&mut self.steps);
        if let Err(error) = &result {
            failed.push(format!("{}: {error:#}", step.name()));
            if let (Some(map), Some(metrics)) = (error.full_map(), &self.step_metrics) {
                metrics.map_full(map);
            }
        }
        step.record(Instant::now(), result);
        if let Some(metrics) = &self.step_metrics {
            metrics.ran(step.name(), step.failures());
        }
    }

    /// Moves the datapath's policy revision on; if that fails, the next
    /// pass tries again (until then established connections keep verdicts
    /// from before this pass's changes: logged).
    fn advance_policy_revision(&mut self) {
        match maps::advance_policy_revision(self.datapath.lock().ebpf_mut()) {
            Ok(_) => self.verdicts_changed = false,
            Err(error) => warn!(
                %error,
                "cannot move the policy revision: established connections keep their verdicts until it moves"
            ),
        }
    }

    fn publish_status(&self, synced: bool) {
        let steps = self.steps.all().map(Step::report).to_vec();
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.steps = steps;
        status.synced = synced;
    }

    /// Reads the source (manifest directory or Kubernetes API) if it
    /// changed; logs each rejected file or object once.
    fn read_manifests(&mut self, now: Instant) -> anyhow::Result<()> {
        let read = match &mut self.manifests {
            None => {
                self.manifests_read = true;
                return Ok(());
            }
            Some(Source::Directory(dir)) => dir.read_if_changed()?,
            // Fails while a watch has not listed once or is cut off: the
            // last state stays in force and the step reports why.
            Some(Source::Kubernetes(source)) => source.read_if_changed()?,
        };
        self.manifests_read = true;
        let Some(manifests) = read else {
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
        if let Some(events) = &mut self.events {
            events.policies(&self.cluster.policies, &manifests.policies);
        }
        self.cluster = manifests;
        self.cluster_generation += 1;
        Ok(())
    }

    /// The ipcache the cluster asks for: every endpoint record (ours before
    /// the watch echoes them back), every node, and the policy CIDRs; pods
    /// and nodes with their address identities.
    fn desired_ipcache(&self, view: &SharedView) -> DesiredIpcache {
        let mut desired = DesiredIpcache::default();
        for (ip, record) in view.trusted_endpoints().chain(self.identities.published()) {
            desired.set_endpoint(*ip, record.identity, record.node_ip);
        }
        for node in view.nodes.values() {
            for address in node.addresses() {
                desired.set_node(address, node.name == self.node_name);
            }
        }
        desired.set_node(self.node_ip, true);
        // The node over IPv6: its link-local addresses (the host ends of
        // the pod veths among them) and its global ones are `host`.
        desired.set_host_link_local();
        for address in ipcache::host_addresses::node_ipv6_addresses() {
            desired.set_node(address.into(), true);
        }
        desired.set_cidrs(self.policy.cidr_identities());
        desired.set_address_prefixes(self.policy.address_identities());
        desired
    }

    /// ENDPOINT_REGENERATE_SUCCESS (or _FAILURE with `error`) for the
    /// `regenerated` endpoints, with their identities' labels.
    fn announce_regenerated(
        &self,
        regenerated: &BTreeSet<u16>,
        endpoints: &[Endpoint],
        error: Option<&str>,
    ) {
        let Some(events) = &self.events else {
            return;
        };
        let labels = self.identities.local_labels();
        events.regenerated(
            regenerated,
            endpoints,
            |e| {
                self.identities
                    .of(&e.attachment)
                    .and_then(|id| labels.get(&id).cloned())
            },
            error,
        );
    }

    /// SERVICE_UPSERTED / SERVICE_DELETED for the frontends the services
    /// step wrote.
    fn announce_services(&mut self) {
        let writes = self.services.take_writes();
        let Some(events) = &self.events else {
            return;
        };
        for write in writes {
            match write {
                services::ServiceWrite::Upserted(id, frontend) => {
                    let service = self.cluster.services.get(&frontend.service);
                    events.service_upserted(id, &frontend, service);
                }
                services::ServiceWrite::Deleted(id) => events.service_deleted(id),
            }
        }
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
