//! Incremental compilation: the same result as [`crate::compile()`], kept
//! current by changes, with work proportional to what changed.
//!
//! Two caches, after Cilium's selector cache and policy distillery:
//! * the **selector cache**: every rule's resolved peers
//!   (`PeerSet`), split into the identities its selectors pick by label
//!   (updated one identity at a time as identities come, go or change
//!   labels) and the CIDR and world identities (recomputed only when the set
//!   of CIDRs the policies name changes);
//! * **per-endpoint policy**: each local endpoint's [`crate::EndpointPolicy`] is
//!   recomputed only when something it depends on changed: its identity's
//!   labels or its named ports, a policy selecting it (before or after the
//!   change), the peers of a rule of such a policy, or the named ports of
//!   identities when it has an egress rule on a named port.
//!
//! Callers either apply changes one by one ([`IncrementalCompiler::upsert_identity`]
//! and friends) or hand over the whole desired input
//! ([`IncrementalCompiler::sync`], which diffs it against what it holds),
//! then [`IncrementalCompiler::flush`] computes what is dirty. Policies are
//! keyed by their [`PolicyId`]: ids are unique among the policies in force.
//!
//! CIDR identities: each prefix a policy names holds one reference of the
//! [`CidrIdentities`] while some policy names it; `flush` returns the
//! prefixes no policy names any more, for the caller to release. A prefix
//! that got no identity is asked for again at every flush, as a compile
//! from scratch would.
//!
//! The correctness anchor is `incremental/tests.rs`: random sequences of
//! changes, after each of which the result equals a compile from scratch.

use std::collections::{BTreeMap, BTreeSet};

use ipnetwork::IpNetwork;

use crate::compile::{
    address_prefixes, compile_endpoint, named_address_cidrs, named_cidrs, names_cidrs, selected,
    selects, CompileOptions, Compiled, PeerSet, Prefixes,
};
use crate::identity::{
    CidrIdentities, ClusterView, Endpoint, EndpointId, Identity, NumericIdentity,
};
use crate::label_index::LabelIndex;
use crate::labels::LabelSet;
use crate::rule::{Direction, Policy, PolicyId, PortRef};

/// Above this many identity changes in one [`IncrementalCompiler::sync`],
/// rules are resolved again whole rather than identity by identity.
const BULK: usize = 256;

/// A policy with its rules' resolved peers (per rule set, per rule).
#[derive(Debug, Clone)]
struct CachedPolicy {
    policy: Policy,
    peers: Vec<Vec<PeerSet>>,
    /// Some rule's peers name CIDRs or the world.
    names_cidrs: bool,
    /// Some egress rule has a named port: its entries follow the named
    /// ports of the peer identities.
    egress_named_ports: bool,
}

impl CachedPolicy {
    fn new(policy: Policy, view: &ClusterView, index: &LabelIndex, prefixes: Prefixes<'_>) -> Self {
        let rules = || policy.rule_sets.iter().flat_map(|rs| &rs.rules);
        let names_cidrs = rules().any(|r| names_cidrs(&r.peers));
        let egress_named_ports = rules().any(|r| {
            r.direction == Direction::Egress
                && r.ports.iter().any(|p| matches!(p.port, PortRef::Named(_)))
        });
        let peers = policy
            .rule_sets
            .iter()
            .map(|rs| {
                rs.rules
                    .iter()
                    .map(|r| PeerSet::resolve(view, index, prefixes, &r.peers))
                    .collect()
            })
            .collect();
        CachedPolicy {
            policy,
            peers,
            names_cidrs,
            egress_named_ports,
        }
    }

    /// Whether a rule set of this policy selects an endpoint with `labels`.
    fn selects_endpoint(&self, labels: &LabelSet) -> bool {
        self.policy
            .rule_sets
            .iter()
            .any(|rs| rs.subject.matches(labels))
    }

    /// Puts identity `id` with `labels` (None: gone) into or out of every
    /// rule's label-selected peers; true if any rule's set changed.
    fn reselect(&mut self, id: NumericIdentity, labels: Option<&LabelSet>) -> bool {
        let mut changed = false;
        for (rs, peers) in self.policy.rule_sets.iter().zip(&mut self.peers) {
            for (rule, set) in rs.rules.iter().zip(peers) {
                changed |= if labels.is_some_and(|l| selects(&rule.peers, l)) {
                    set.selected.insert(id)
                } else {
                    set.selected.remove(&id)
                };
            }
        }
        changed
    }

    /// Resolves every rule's label-selected peers again; true if any changed.
    fn reselect_all(&mut self, view: &ClusterView, index: &LabelIndex) -> bool {
        let mut changed = false;
        for (rs, peers) in self.policy.rule_sets.iter().zip(&mut self.peers) {
            for (rule, set) in rs.rules.iter().zip(peers) {
                let selected = selected(view, index, &rule.peers);
                changed |= selected != set.selected;
                set.selected = selected;
            }
        }
        changed
    }

    /// Recomputes the CIDR and world part of every rule's peers; true if
    /// any changed.
    fn refix(&mut self, prefixes: Prefixes<'_>) -> bool {
        let mut changed = false;
        for (rs, peers) in self.policy.rule_sets.iter().zip(&mut self.peers) {
            for (rule, set) in rs.rules.iter().zip(peers) {
                changed |= set.set_fixed(&rule.peers, prefixes);
            }
        }
        changed
    }
}

/// What a [`IncrementalCompiler::flush`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Flushed {
    /// Local endpoints whose policy was recomputed, added or removed.
    pub endpoints: BTreeSet<EndpointId>,
    /// Prefixes no policy names any more: the caller releases their
    /// identity (one reference each).
    pub released: Vec<IpNetwork>,
    /// The prefix → identity map ([`Compiled::cidrs`]) changed.
    pub cidrs_changed: bool,
}

/// The compiled state of the local endpoints, kept current by changes.
#[derive(Debug, Clone, Default)]
pub struct IncrementalCompiler {
    options: CompileOptions,
    view: ClusterView,
    /// The view's identities by label.
    index: LabelIndex,
    policies: BTreeMap<PolicyId, CachedPolicy>,
    compiled: Compiled,
    /// Endpoints to recompute at the next flush.
    dirty: BTreeSet<EndpointId>,
    /// Policies added or changed since the last flush: their fixed peers
    /// wait for the CIDRs of the flush, and the endpoints they select are
    /// recomputed then.
    pending: BTreeSet<PolicyId>,
    /// The policies changed in a way that may change the prefixes named.
    cidrs_stale: bool,
    /// A prefix named got no identity at the last flush: ask again.
    cidrs_missing: bool,
}

impl IncrementalCompiler {
    pub fn new(options: CompileOptions) -> Self {
        IncrementalCompiler {
            options,
            ..Default::default()
        }
    }

    /// The state as of the last flush.
    pub fn compiled(&self) -> &Compiled {
        &self.compiled
    }

    /// The view (identities and local endpoints) as given.
    pub fn view(&self) -> &ClusterView {
        &self.view
    }

    /// Marks the endpoints whose identity is `id`.
    fn mark_endpoints_of(&mut self, id: NumericIdentity) {
        let ids = self.view.endpoints.values().filter(|e| e.identity == id);
        self.dirty.extend(ids.map(|e| e.id));
    }

    /// Adds or replaces an identity.
    pub fn upsert_identity(&mut self, identity: Identity) {
        let previous = self.view.identities.get(&identity.id);
        if previous == Some(&identity) {
            return;
        }
        let labels_changed = previous.is_none_or(|p| p.labels != identity.labels);
        let ports_changed = previous.is_none_or(|p| p.named_ports != identity.named_ports);
        let id = identity.id;
        self.index_identity(&identity);
        self.view.add_identity(identity);
        self.identity_changed(id, labels_changed, ports_changed);
    }

    /// Removes an identity.
    pub fn remove_identity(&mut self, id: NumericIdentity) {
        if let Some(previous) = self.view.identities.remove(&id) {
            self.index.remove(id, &previous.labels);
            self.identity_changed(id, true, true);
        }
    }

    /// Puts `identity`'s labels into the index in place of its previous ones.
    fn index_identity(&mut self, identity: &Identity) {
        if let Some(previous) = self.view.identities.get(&identity.id) {
            self.index.remove(identity.id, &previous.labels);
        }
        self.index.add(identity.id, &identity.labels);
    }

    fn identity_changed(&mut self, id: NumericIdentity, labels: bool, ports: bool) {
        // Cloned out so the loop can mark endpoints on self.
        let current = self.view.identities.get(&id).map(|i| i.labels.clone());
        let mut touched = Vec::new();
        for (key, policy) in &mut self.policies {
            let reselected = labels && policy.reselect(id, current.as_ref());
            if reselected || (ports && policy.egress_named_ports) {
                touched.push(key.clone());
            }
        }
        for key in touched {
            if let Some(policy) = self.policies.get(&key) {
                mark_selected_by(&self.view, policy, &mut self.dirty);
            }
        }
        if labels {
            self.mark_endpoints_of(id);
        }
    }

    /// Adds or replaces a local endpoint.
    pub fn upsert_endpoint(&mut self, endpoint: Endpoint) {
        if self.view.endpoints.get(&endpoint.id) != Some(&endpoint) {
            self.dirty.insert(endpoint.id);
            self.view.add_endpoint(endpoint);
        }
    }

    /// Removes a local endpoint.
    pub fn remove_endpoint(&mut self, id: EndpointId) {
        if self.view.endpoints.remove(&id).is_some() {
            self.dirty.insert(id);
        }
    }

    /// Adds or replaces a policy (by its id).
    pub fn upsert_policy(&mut self, policy: Policy) {
        if let Some(previous) = self.policies.get(&policy.id) {
            if previous.policy == policy {
                return;
            }
            mark_selected_by(&self.view, previous, &mut self.dirty);
        }
        let prefixes = Prefixes::of(&self.compiled);
        let cached = CachedPolicy::new(policy, &self.view, &self.index, prefixes);
        self.pending.insert(cached.policy.id.clone());
        self.cidrs_stale = true;
        self.policies.insert(cached.policy.id.clone(), cached);
    }

    /// Removes a policy.
    pub fn remove_policy(&mut self, id: &PolicyId) {
        if let Some(previous) = self.policies.remove(id) {
            mark_selected_by(&self.view, &previous, &mut self.dirty);
            self.pending.remove(id);
            self.cidrs_stale = true;
        }
    }

    /// Brings the inputs to `view` and `policies` by applying only their
    /// differences.
    pub fn sync(&mut self, view: &ClusterView, policies: &[Policy]) {
        let gone: Vec<NumericIdentity> = (self.view.identities.keys())
            .filter(|id| !view.identities.contains_key(id))
            .copied()
            .collect();
        let changed: Vec<&Identity> = (view.identities.values())
            .filter(|i| self.view.identities.get(&i.id) != Some(*i))
            .collect();
        if gone.len() + changed.len() > BULK {
            self.bulk_identities(gone, changed);
        } else {
            for id in gone {
                self.remove_identity(id);
            }
            for identity in changed {
                self.upsert_identity(identity.clone());
            }
        }
        let gone: Vec<EndpointId> = (self.view.endpoints.keys())
            .filter(|id| !view.endpoints.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            self.remove_endpoint(id);
        }
        for endpoint in view.endpoints.values() {
            self.upsert_endpoint(endpoint.clone());
        }
        let wanted: BTreeMap<&PolicyId, &Policy> = policies.iter().map(|p| (&p.id, p)).collect();
        let gone: Vec<PolicyId> = (self.policies.keys())
            .filter(|id| !wanted.contains_key(id))
            .cloned()
            .collect();
        for id in gone {
            self.remove_policy(&id);
        }
        for policy in wanted.into_values() {
            if self
                .policies
                .get(&policy.id)
                .is_none_or(|c| c.policy != *policy)
            {
                self.upsert_policy(policy.clone());
            }
        }
    }

    /// Many identity changes at once (a first list, a relist): each rule is
    /// resolved again through the index, once, instead of each identity
    /// being matched against every rule; every endpoint is recomputed.
    fn bulk_identities(&mut self, gone: Vec<NumericIdentity>, changed: Vec<&Identity>) {
        for id in gone {
            if let Some(previous) = self.view.identities.remove(&id) {
                self.index.remove(id, &previous.labels);
            }
        }
        for identity in changed {
            self.index_identity(identity);
            self.view.add_identity(identity.clone());
        }
        for policy in self.policies.values_mut() {
            policy.reselect_all(&self.view, &self.index);
        }
        self.dirty.extend(self.view.endpoints.keys());
    }

    /// Computes what the changes since the last flush made dirty.
    pub fn flush(&mut self, cidr_ids: &mut dyn CidrIdentities) -> Flushed {
        let mut flushed = Flushed::default();
        if self.cidrs_stale || self.cidrs_missing {
            flushed.cidrs_changed = self.update_cidrs(cidr_ids, &mut flushed.released);
        }
        self.cidrs_stale = false;
        let prefixes = Prefixes::of(&self.compiled);
        let mut touched = Vec::new();
        for (key, policy) in &mut self.policies {
            // Added or changed policies were resolved against the previous
            // CIDRs; the others only need it when the CIDRs changed.
            let pending = self.pending.contains(key);
            let refix = pending || (flushed.cidrs_changed && policy.names_cidrs);
            if (refix && policy.refix(prefixes)) || pending {
                touched.push(key.clone());
            }
        }
        self.pending.clear();
        for key in touched {
            if let Some(policy) = self.policies.get(&key) {
                mark_selected_by(&self.view, policy, &mut self.dirty);
            }
        }
        for id in std::mem::take(&mut self.dirty) {
            let Some(ep) = self.view.endpoints.get(&id) else {
                self.compiled.endpoints.remove(&id);
                flushed.endpoints.insert(id);
                continue;
            };
            let rules = self
                .policies
                .values()
                .map(|c| (&c.policy, c.peers.as_slice()));
            let state = compile_endpoint(&self.view, ep, rules, self.options);
            if self.compiled.endpoints.get(&id) != Some(&state) {
                self.compiled.endpoints.insert(id, state);
                flushed.endpoints.insert(id);
            }
        }
        flushed
    }

    fn wanted_cidrs(&self) -> BTreeSet<IpNetwork> {
        self.policies
            .values()
            .flat_map(|p| named_cidrs(&p.policy))
            .collect()
    }

    /// Takes an identity for each prefix newly named (or still without
    /// one), lets go of those no longer named, and derives the address
    /// prefixes; true if either map changed.
    fn update_cidrs(
        &mut self,
        cidr_ids: &mut dyn CidrIdentities,
        released: &mut Vec<IpNetwork>,
    ) -> bool {
        let cidrs_changed = self.update_cidr_identities(cidr_ids, released);
        let named = self
            .policies
            .values()
            .flat_map(|p| named_address_cidrs(&p.policy));
        let addresses = address_prefixes(&self.compiled.cidrs, named);
        let addresses_changed = addresses != self.compiled.addresses;
        self.compiled.addresses = addresses;
        cidrs_changed || addresses_changed
    }

    fn update_cidr_identities(
        &mut self,
        cidr_ids: &mut dyn CidrIdentities,
        released: &mut Vec<IpNetwork>,
    ) -> bool {
        let wanted = self.wanted_cidrs();
        let cidrs = &mut self.compiled.cidrs;
        let before = cidrs.len();
        let gone: Vec<IpNetwork> = cidrs
            .keys()
            .filter(|n| !wanted.contains(n))
            .copied()
            .collect();
        for net in &gone {
            cidrs.remove(net);
        }
        released.extend(gone.iter().copied());
        let mut added = false;
        self.cidrs_missing = false;
        for net in wanted {
            if cidrs.contains_key(&net) {
                continue;
            }
            match cidr_ids.identity_for(net) {
                Some(id) => {
                    cidrs.insert(net, id);
                    added = true;
                }
                None => self.cidrs_missing = true,
            }
        }
        added || cidrs.len() != before
    }
}

/// Marks the endpoints of `view` that a rule set of `policy` selects (an
/// endpoint whose identity is unknown has no labels, as in a compile).
fn mark_selected_by(view: &ClusterView, policy: &CachedPolicy, dirty: &mut BTreeSet<EndpointId>) {
    let empty = LabelSet::new();
    for ep in view.endpoints.values() {
        let labels = view.labels_of(ep.identity).unwrap_or(&empty);
        if policy.selects_endpoint(labels) {
            dirty.insert(ep.id);
        }
    }
}

#[cfg(test)]
mod tests;
