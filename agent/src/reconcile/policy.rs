//! From policy manifests to the policy map: parse and validate every policy
//! (rejecting invalid ones whole, with their reasons; an invalid edit keeps
//! the previous valid version in force, shown as stale), compile for the local
//! endpoints, lower the result (the policy engine's [`weir_policy::lower()`]:
//! deny precedence, port blocks), encode it ([`maps::policy`]) and write
//! only the difference.
//!
//! The policy map is pinned and outlives the agent. The first pass reads
//! what an earlier agent left ([`PolicySync::adopt`]) and diffs against it:
//! a restart with nothing changed writes nothing, and the entries of a
//! policy deleted while the agent was down are removed. What is safe to
//! remove, and when:
//! * nothing adopted is touched (rewritten or removed) before the cluster
//!   view has synced: compiled from a partial view (identities whose labels
//!   are not listed yet), the desired state lacks allows and denies that the
//!   full view has, and acting on it would drop enforcement the pods had
//!   before the restart;
//! * after that, the adopted entries of a local endpoint that has no
//!   identity yet stay as they are (its last known policy, like its
//!   endpoints-map entry, see [`super::endpoints_map`]): the endpoint is not
//!   compiled at all, so removing its entries would turn its enforced
//!   directions into deny-all, and nothing tells us yet what it should have;
//!   they are diffed once its identity is known;
//! * an entry that does not decode is none the agent writes: it is logged and
//!   removed on the first pass (at the removal step, after upserts and flags).
//!
//! CIDR identities are node-local numbers that policy entries name. Before
//! the first compile the numbers an earlier agent gave its CIDRs are read
//! back from the pinned ipcache ([`PolicySync::recall_cidr_identities`]), so
//! the same CIDRs get the same numbers and a restart rewrites no entry.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use tracing::{info, warn};
use weir_abi::{EndpointInfo, PolicyEntry};
use weir_policy::incremental::IncrementalCompiler;
use weir_policy::lower::lower_endpoint;
use weir_policy::{ClusterView, Compiled, LocalIdentities, MapState, NamedPorts, Policy};
use weir_types::{LabelSet, NamespacedName};

use crate::cluster::kvstore::SharedView;
use crate::cluster::last_known_good::LastKnownGood;
use crate::cluster::manifest::Pod;
use crate::cluster::manifest_dir::ClusterManifests;
use crate::datapath::maps::policy::{decode_entry, decode_key, encode_state, LpmKey};
use crate::datapath::{maps, Datapath};
use crate::endpoint::ipam::AttachmentKey;
use crate::endpoint::registry::Endpoint;
use crate::reconcile::snapshot::{KnownPod, LocalPod, PolicySnapshot};

#[derive(Default)]
pub struct PolicySync {
    /// Holds one reference per CIDR of the compiled state.
    cidr_identities: LocalIdentities,
    /// The compiled state and its inputs (identities, local endpoints,
    /// policies), recomputed only where an input changed.
    engine: IncrementalCompiler,
    /// Each policy document as last parsed, with the result: only changed
    /// documents are parsed again.
    parsed: BTreeMap<String, (serde_yaml_ng::Value, Result<Policy, Vec<String>>)>,
    /// Every policy's versions: the valid one in force, the latest's errors.
    versions: LastKnownGood<String, Policy, Vec<String>>,
    /// Policies whose latest version failed validation: key → reasons.
    rejected: BTreeMap<String, Vec<String>>,
    /// Objects whose previous version stays in force because the latest is
    /// invalid (policies, and objects of files that no longer parse): key →
    /// errors.
    stale: BTreeMap<String, Vec<String>>,
    desired: BTreeMap<LpmKey, PolicyEntry>,
    /// What the policy map holds (read from the kernel on the first pass).
    written: BTreeMap<LpmKey, PolicyEntry>,
    /// The map was read once ([`PolicySync::adopt`]).
    read: bool,
    /// The ipcache's CIDR numbers were read ([`PolicySync::recall_cidr_identities`]).
    recalled: bool,
    /// Entries read from the kernel that this agent has not confirmed or
    /// removed yet (see the module's comment for when it does).
    adopted: BTreeSet<LpmKey>,
    /// The cluster view had listed everything once at the last update.
    synced: bool,
    /// Local endpoints without an identity at the last update.
    unidentified: BTreeSet<u16>,
    /// The policies in force, kept for tracing.
    policies: Vec<Policy>,
    /// Every known pod, local or not.
    pods: BTreeMap<NamespacedName, KnownPod>,
}

impl PolicySync {
    /// Recomputes the desired policy state from the cluster's manifests, the
    /// shared view and the local endpoints with their identities.
    pub fn update(
        &mut self,
        cluster: &ClusterManifests,
        view: &SharedView,
        endpoints: &[Endpoint],
        identities: &BTreeMap<AttachmentKey, u32>,
        local_labels: &BTreeMap<u32, LabelSet>,
    ) {
        let policies = self.parse(cluster);
        let (cluster_view, pods) = cluster_view(cluster, view, endpoints, identities, local_labels);
        self.compile(cluster_view, policies);
        if view.synced() {
            // Every CIDR a policy names is allocated now: numbers of CIDRs
            // no policy names any more need not be kept free.
            self.cidr_identities.forget_preferred();
        }
        self.pods = pods;
        self.synced = view.synced();
        self.unidentified = endpoints
            .iter()
            .filter(|e| !identities.contains_key(&e.attachment))
            .map(|e| e.id)
            .collect();
    }

    /// Before the first compile: the numbers an earlier agent gave CIDRs, as
    /// the pinned ipcache holds them (prefix → identity in the local scope),
    /// become the numbers these CIDRs get again. Read once; on an error the
    /// CIDRs are numbered afresh (their entries are then rewritten).
    pub fn recall_cidr_identities(&mut self, datapath: &mut Datapath) {
        if self.recalled {
            return;
        }
        self.recalled = true;
        match maps::ipcache_entries(datapath.ebpf_mut()) {
            Ok(entries) => self.cidr_identities.prefer(
                entries
                    .into_iter()
                    .map(|(prefix, value)| (prefix, value.identity)),
            ),
            Err(error) => {
                warn!(%error, "cannot read the ipcache: CIDR identities are numbered afresh")
            }
        }
    }

    /// Reads what the policy map holds, once (an earlier agent's entries):
    /// the first pass then writes only the difference.
    pub fn adopt(&mut self, datapath: &mut Datapath) -> Result<(), maps::TableError> {
        if self.read {
            return Ok(());
        }
        let entries = maps::policy_entries(datapath.ebpf_mut())?;
        self.take_over(entries);
        self.read = true;
        Ok(())
    }

    /// Takes `entries` (the map's content) as written; those that decode
    /// are adopted, the others are removed by the next removal step.
    fn take_over(&mut self, entries: Vec<(LpmKey, PolicyEntry)>) {
        for (key, entry) in entries {
            match decode_key(&key).and_then(|_| decode_entry(&entry)) {
                Ok(_) => {
                    self.adopted.insert(key);
                }
                Err(error) => {
                    warn!(endpoint = key.key.endpoint_id, prefix_len = key.prefix_len, %error,
                          "undecodable policy map entry; removing it");
                }
            }
            self.written.insert(key, entry);
        }
        if !self.written.is_empty() {
            info!(
                entries = self.written.len(),
                "policy map adopted from an earlier agent"
            );
        }
    }

    /// Endpoints whose adopted entries are left as they are this pass.
    fn held(&self) -> BTreeSet<u16> {
        held(&self.adopted, self.synced, &self.unidentified)
    }

    /// Compiles, lowers and encodes the desired state from its inputs:
    /// only the endpoints whose policy changed are lowered and encoded
    /// again.
    fn compile(&mut self, view: ClusterView, policies: Vec<Policy>) {
        self.engine.sync(&view, &policies);
        let flushed = self.engine.flush(&mut self.cidr_identities);
        // Prefixes no policy names any more let go of their identity only
        // now, after the new ones were taken: a CIDR named before and after
        // keeps its id.
        self.cidr_identities.release_all(flushed.released);
        let changed = &flushed.endpoints;
        self.desired
            .retain(|key, _| !changed.contains(&u32::from(key.key.endpoint_id)));
        let mut lowered = MapState::new();
        for id in changed {
            if let Some(policy) = self.engine.compiled().endpoints.get(id) {
                lower_endpoint(*id, policy, &mut lowered);
            }
        }
        self.desired.extend(encode_state(&lowered));
        self.policies = policies;
    }

    /// What `weir policy` reads: the compiled state and its inputs.
    pub fn snapshot(
        &self,
        endpoints: &[Endpoint],
        identities: &BTreeMap<AttachmentKey, u32>,
    ) -> PolicySnapshot {
        let local = endpoints
            .iter()
            .filter_map(|e| {
                identities.get(&e.attachment).map(|id| {
                    (
                        e.pod.clone(),
                        LocalPod {
                            endpoint: u32::from(e.id),
                            identity: *id,
                        },
                    )
                })
            })
            .collect();
        PolicySnapshot {
            compiled: self.engine.compiled().clone(),
            view: self.engine.view().clone(),
            policies: self.policies.clone(),
            cidrs: self.cidr_identities.clone(),
            rejected: self.rejected.clone(),
            stale: self.stale.clone(),
            local,
            pods: self.pods.clone(),
            map_entries: self.written.len(),
        }
    }

    fn parse(&mut self, cluster: &ClusterManifests) -> Vec<Policy> {
        let mut cache = std::mem::take(&mut self.parsed);
        for (key, document) in &cluster.policies {
            let cached = cache
                .remove(key)
                .filter(|(parsed, _)| *parsed == document.document);
            let entry = cached.unwrap_or_else(|| {
                let parsed = weir_policy::PolicyDocument::from_value(document.document.clone())
                    .and_then(|doc| doc.to_policy())
                    .map_err(|error| vec![error.to_string()]);
                (document.document.clone(), parsed)
            });
            self.parsed.insert(key.clone(), entry);
        }
        let latest = self
            .parsed
            .iter()
            .map(|(key, (_, parsed))| (key.clone(), parsed.clone()));
        self.versions.update(latest);
        let mut rejected = BTreeMap::new();
        let mut stale = BTreeMap::new();
        for (key, version) in self.versions.iter() {
            let Some(reasons) = version.errors() else {
                continue;
            };
            if self.rejected.get(key) != Some(reasons) {
                let kept = if version.is_stale() {
                    "the previous valid version stays in force"
                } else {
                    "nothing of it is applied"
                };
                warn!(policy = %key, reason = %reasons.join("; "), "policy rejected; {kept}");
            }
            rejected.insert(key.clone(), reasons.clone());
            if version.is_stale() {
                stale.insert(key.clone(), reasons.clone());
            }
        }
        for (key, reason) in &cluster.stale {
            stale.insert(key.clone(), vec![reason.clone()]);
        }
        self.rejected = rejected;
        self.stale = stale;
        self.versions.in_force().map(|(_, p)| p.clone()).collect()
    }

    /// Policies that failed validation, with the reasons.
    pub fn rejected(&self) -> &BTreeMap<String, Vec<String>> {
        &self.rejected
    }

    /// Objects whose previous valid version stays in force, with the
    /// latest version's errors.
    pub fn stale(&self) -> &BTreeMap<String, Vec<String>> {
        &self.stale
    }

    /// The compiled state (what `weir policy get/trace` reads).
    pub fn compiled(&self) -> &Compiled {
        self.engine.compiled()
    }

    /// CIDR identities the policies name, for the ipcache.
    pub fn cidr_identities(&self) -> &BTreeMap<IpNetwork, u32> {
        &self.engine.compiled().cidrs
    }

    /// NetworkPolicy `ipBlock` prefixes with their address identities, for
    /// the ipcache's pod and node entries.
    pub fn address_identities(&self) -> &BTreeMap<IpNetwork, u32> {
        &self.engine.compiled().addresses
    }

    /// The enforcement flags of a local endpoint.
    pub fn enforcement_flags(&self, endpoint_id: u16) -> u8 {
        let Some(policy) = self
            .engine
            .compiled()
            .endpoints
            .get(&u32::from(endpoint_id))
        else {
            return 0;
        };
        let mut flags = 0;
        if policy.ingress.enforced {
            flags |= EndpointInfo::INGRESS_ENFORCED;
        }
        if policy.egress.enforced {
            flags |= EndpointInfo::EGRESS_ENFORCED;
        }
        flags
    }

    /// Local endpoints whose policy map entries are not yet as desired:
    /// the ones the next apply regenerates.
    pub fn pending_endpoints(&self) -> BTreeSet<u16> {
        let held = self.held();
        let changed = upserts(&self.desired, &self.written, &held);
        let removed = removals(&self.desired, &self.written, &self.adopted, &held);
        changed
            .iter()
            .map(|(key, _)| key)
            .chain(removed.iter())
            .map(|key| key.key.endpoint_id)
            .collect()
    }

    /// Writes new and changed entries (before enforcement flags change, so
    /// a newly enforced endpoint finds its allows in place). All or
    /// nothing: if the new entries do not fit into the map, none is written
    /// (no policy partly applied) and the flags wait with them. A full map
    /// first drops the entries no longer desired, the only way to make
    /// room: that can deny, until the flags are written, traffic of an
    /// endpoint whose policy is going away (closed, never open).
    pub fn apply_upserts(&mut self, datapath: &mut Datapath) -> Result<(), maps::TableError> {
        if self.upserts_fit(datapath).is_err() {
            self.apply_removals(datapath)?;
        }
        self.upserts_fit(datapath)?;
        for (key, entry) in upserts(&self.desired, &self.written, &self.held()) {
            maps::set_policy(datapath.ebpf_mut(), key.prefix_len, key.key, entry)?;
            self.written.insert(key, entry);
        }
        Ok(())
    }

    /// Whether this pass's new entries fit beside what the map holds
    /// (`written` is the whole map: read at start, then kept as written).
    fn upserts_fit(&self, datapath: &mut Datapath) -> Result<(), maps::TableError> {
        let new = upserts(&self.desired, &self.written, &self.held())
            .iter()
            .filter(|(key, _)| !self.written.contains_key(key))
            .count();
        let capacity = maps::fill::max_entries(datapath.ebpf_mut(), weir_abi::map_names::POLICY);
        maps::fill::fits(
            weir_abi::map_names::POLICY,
            self.written.len(),
            new,
            capacity,
        )
    }

    /// Removes entries no longer desired (after enforcement flags change).
    pub fn apply_removals(&mut self, datapath: &mut Datapath) -> Result<(), maps::TableError> {
        let held = self.held();
        for key in removals(&self.desired, &self.written, &self.adopted, &held) {
            maps::remove_policy(datapath.ebpf_mut(), key.prefix_len, key.key)?;
            self.written.remove(&key);
        }
        self.forget_handled(&held);
        Ok(())
    }

    /// The adopted entries of endpoints not `held` were upserted or removed
    /// by this pass: the agent owns them now.
    fn forget_handled(&mut self, held: &BTreeSet<u16>) {
        let written = &self.written;
        self.adopted
            .retain(|key| written.contains_key(key) && held.contains(&key.key.endpoint_id));
    }
}

/// Endpoints whose `adopted` entries must stay as they are: every one
/// before the view is `synced`, then the local ones without an identity.
fn held(adopted: &BTreeSet<LpmKey>, synced: bool, unidentified: &BTreeSet<u16>) -> BTreeSet<u16> {
    adopted
        .iter()
        .map(|key| key.key.endpoint_id)
        .filter(|id| !synced || unidentified.contains(id))
        .collect()
}

/// Entries to write: desired and not in the map as desired, except those
/// of `held` endpoints.
fn upserts(
    desired: &BTreeMap<LpmKey, PolicyEntry>,
    written: &BTreeMap<LpmKey, PolicyEntry>,
    held: &BTreeSet<u16>,
) -> Vec<(LpmKey, PolicyEntry)> {
    desired
        .iter()
        .filter(|(key, entry)| {
            written.get(key) != Some(entry) && !held.contains(&key.key.endpoint_id)
        })
        .map(|(key, entry)| (*key, *entry))
        .collect()
}

/// Entries to remove: in the map and no longer desired, except the
/// adopted ones of `held` endpoints.
fn removals(
    desired: &BTreeMap<LpmKey, PolicyEntry>,
    written: &BTreeMap<LpmKey, PolicyEntry>,
    adopted: &BTreeSet<LpmKey>,
    held: &BTreeSet<u16>,
) -> Vec<LpmKey> {
    written
        .keys()
        .filter(|key| !desired.contains_key(key))
        .filter(|key| !(adopted.contains(key) && held.contains(&key.key.endpoint_id)))
        .copied()
        .collect()
}

fn named_ports_of(pod: &Pod) -> NamedPorts {
    let mut ports = NamedPorts::new();
    for port in &pod.ports {
        let Some(name) = &port.name else { continue };
        ports
            .entry(name.clone())
            .or_default()
            .insert((port.protocol, port.port));
    }
    ports
}

/// The policy engine's view: every identity in the cluster with its labels
/// and the named ports of its pods, and the local endpoints; plus every
/// known pod with its identity and named ports.
fn cluster_view(
    cluster: &ClusterManifests,
    shared: &SharedView,
    endpoints: &[Endpoint],
    identities: &BTreeMap<AttachmentKey, u32>,
    local_labels: &BTreeMap<u32, LabelSet>,
) -> (ClusterView, BTreeMap<NamespacedName, KnownPod>) {
    // Pods by identity: remote ones from the endpoint records, local ones
    // from our own endpoints (the store may not have echoed them yet).
    let mut pods_by_id: BTreeMap<u32, BTreeSet<NamespacedName>> = BTreeMap::new();
    let mut addresses: BTreeMap<NamespacedName, IpAddr> = BTreeMap::new();
    for (address, record) in &shared.endpoints {
        let key = NamespacedName::new(&record.namespace, &record.pod);
        addresses.insert(key.clone(), *address);
        pods_by_id.entry(record.identity).or_default().insert(key);
    }
    for endpoint in endpoints {
        if let Some(id) = identities.get(&endpoint.attachment) {
            addresses.insert(endpoint.pod.clone(), IpAddr::V4(endpoint.ipv4));
            pods_by_id
                .entry(*id)
                .or_default()
                .insert(endpoint.pod.clone());
        }
    }
    let mut pods = BTreeMap::new();
    for (id, keys) in &pods_by_id {
        for key in keys {
            let ports = cluster
                .pods
                .get(key)
                .map(named_ports_of)
                .unwrap_or_default();
            pods.insert(
                key.clone(),
                KnownPod {
                    identity: *id,
                    named_ports: ports,
                    address: addresses.get(key).copied(),
                },
            );
        }
    }
    let mut view = ClusterView::new();
    // The shared view's label sets are the engine's: no conversion. The
    // labels of identities allocated here are known before the watch
    // echoes them, so a new pod is selected by its policies at once.
    let mut labels_by_id: BTreeMap<u32, &LabelSet> =
        local_labels.iter().map(|(id, l)| (*id, l)).collect();
    labels_by_id.extend(shared.identities.iter().map(|(id, l)| (*id, l)));
    for (id, labels) in labels_by_id {
        let mut named_ports = NamedPorts::new();
        for pod in pods_by_id.get(&id).into_iter().flatten() {
            if let Some(pod) = cluster.pods.get(pod) {
                for (name, set) in named_ports_of(pod) {
                    named_ports.entry(name).or_default().extend(set);
                }
            }
        }
        view.add_identity(weir_policy::Identity {
            id,
            labels: labels.clone(),
            named_ports,
        });
    }
    for endpoint in endpoints {
        let Some(identity) = identities.get(&endpoint.attachment) else {
            continue;
        };
        view.add_endpoint(weir_policy::Endpoint {
            id: u32::from(endpoint.id),
            identity: *identity,
            named_ports: cluster
                .pods
                .get(&endpoint.pod)
                .map(named_ports_of)
                .unwrap_or_default(),
        });
    }
    (view, pods)
}

#[cfg(test)]
mod tests;
