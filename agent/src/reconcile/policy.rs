//! From policy manifests to the policy map: parse and validate every policy
//! (rejecting invalid ones whole, with their reasons), compile for the local
//! endpoints, lower the result to LPM entries, and write only the
//! difference.
//!
//! Lowering (what `weir_abi::policy` expects): protocol `Any` becomes the
//! 64-bit prefix, a protocol with any port the 80-bit prefix, and a port
//! range the aligned power-of-two blocks that cover it exactly. Within one
//! (endpoint, direction, peer identity) an allow covered by a less specific
//! deny is stored as deny, so the most specific match the kernel finds is
//! always the right verdict; across the peer's and the any-peer entries the
//! kernel itself lets deny win.

use std::collections::{BTreeMap, BTreeSet};

use ipnetwork::IpNetwork;
use tracing::warn;
use weir_abi::policy::*;
use weir_abi::{EndpointInfo, PolicyEntry, PolicyKey, TrafficDirection};
use weir_policy::{
    compile, ClusterView, Compiled, Direction, EntryKey, LocalCidrAllocator, NamedPorts, PeerKey,
    Policy, Ports, Verdict,
};
use weir_types::NamespacedName;

use crate::cluster::kvstore::SharedView;
use crate::cluster::manifest::Pod;
use crate::cluster::manifest_dir::ClusterManifests;
use crate::datapath::{maps, Datapath};
use crate::endpoint::ipam::AttachmentKey;
use crate::endpoint::registry::Endpoint;

/// One policy map entry: LPM prefix length and key.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LpmKey {
    pub prefix_len: u32,
    pub key: PolicyKey,
}

#[derive(Default)]
pub struct PolicySync {
    cidr_identities: LocalCidrAllocator,
    compiled: Compiled,
    /// Policies that failed validation: key → reasons.
    rejected: BTreeMap<String, Vec<String>>,
    desired: BTreeMap<LpmKey, PolicyEntry>,
    written: BTreeMap<LpmKey, PolicyEntry>,
    /// The compiler's inputs, kept for tracing.
    view: ClusterView,
    policies: Vec<Policy>,
    /// Every known pod → (identity, named ports).
    pods: BTreeMap<NamespacedName, (u32, NamedPorts)>,
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
    ) {
        let policies = self.parse(cluster);
        let (cluster_view, pods) = cluster_view(cluster, view, endpoints, identities);
        self.compiled = compile(&cluster_view, &policies, &mut self.cidr_identities);
        self.desired = lower(&self.compiled);
        self.view = cluster_view;
        self.policies = policies;
        self.pods = pods;
    }

    /// What `weir policy` reads: the compiled state and its inputs.
    pub fn snapshot(
        &self,
        endpoints: &[Endpoint],
        identities: &BTreeMap<AttachmentKey, u32>,
    ) -> crate::reconcile::snapshot::PolicySnapshot {
        let local = endpoints
            .iter()
            .filter_map(|e| {
                identities
                    .get(&e.attachment)
                    .map(|id| (e.pod.clone(), (u32::from(e.id), *id)))
            })
            .collect();
        crate::reconcile::snapshot::PolicySnapshot {
            compiled: self.compiled.clone(),
            view: self.view.clone(),
            policies: self.policies.clone(),
            cidrs: self.cidr_identities.clone(),
            rejected: self.rejected.clone(),
            local,
            pods: self.pods.clone(),
            map_entries: self.written.len(),
        }
    }

    fn parse(&mut self, cluster: &ClusterManifests) -> Vec<Policy> {
        let mut policies = Vec::new();
        let mut rejected = BTreeMap::new();
        for (key, document) in &cluster.policies {
            let parsed = weir_policy::PolicyDocument::from_value(document.document.clone())
                .and_then(|doc| doc.to_policy());
            match parsed {
                Ok(policy) => policies.push(policy),
                Err(error) => {
                    let reasons = vec![error.to_string()];
                    if self.rejected.get(key) != Some(&reasons) {
                        warn!(policy = %key, reason = %reasons[0], "policy rejected; nothing of it is applied");
                    }
                    rejected.insert(key.clone(), reasons);
                }
            }
        }
        self.rejected = rejected;
        policies
    }

    /// Policies that failed validation, with the reasons.
    pub fn rejected(&self) -> &BTreeMap<String, Vec<String>> {
        &self.rejected
    }

    /// The compiled state (what `weir policy get/trace` reads).
    pub fn compiled(&self) -> &Compiled {
        &self.compiled
    }

    /// CIDR identities the policies name, for the ipcache.
    pub fn cidr_identities(&self) -> &BTreeMap<IpNetwork, u32> {
        &self.compiled.cidrs
    }

    /// The enforcement flags of a local endpoint.
    pub fn enforcement_flags(&self, endpoint_id: u16) -> u8 {
        let Some(policy) = self.compiled.endpoints.get(&u32::from(endpoint_id)) else {
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
        let changed = self
            .desired
            .iter()
            .filter(|(key, entry)| self.written.get(key) != Some(entry))
            .map(|(key, _)| key);
        let removed = self
            .written
            .keys()
            .filter(|key| !self.desired.contains_key(key));
        changed
            .chain(removed)
            .map(|key| key.key.endpoint_id)
            .collect()
    }

    /// Writes new and changed entries (before enforcement flags change, so
    /// a newly enforced endpoint finds its allows in place).
    pub fn apply_upserts(&mut self, datapath: &mut Datapath) -> Result<(), maps::TableError> {
        for (key, entry) in &self.desired {
            if self.written.get(key) != Some(entry) {
                maps::set_policy(datapath.ebpf_mut(), key.prefix_len, key.key, *entry)?;
                self.written.insert(*key, *entry);
            }
        }
        Ok(())
    }

    /// Removes entries no longer desired (after enforcement flags change).
    pub fn apply_removals(&mut self, datapath: &mut Datapath) -> Result<(), maps::TableError> {
        let stale: Vec<LpmKey> = self
            .written
            .keys()
            .filter(|k| !self.desired.contains_key(k))
            .copied()
            .collect();
        for key in stale {
            maps::remove_policy(datapath.ebpf_mut(), key.prefix_len, key.key)?;
            self.written.remove(&key);
        }
        Ok(())
    }
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
#[allow(clippy::type_complexity)]
fn cluster_view(
    cluster: &ClusterManifests,
    shared: &SharedView,
    endpoints: &[Endpoint],
    identities: &BTreeMap<AttachmentKey, u32>,
) -> (ClusterView, BTreeMap<NamespacedName, (u32, NamedPorts)>) {
    // Pods by identity: remote ones from the endpoint records, local ones
    // from our own endpoints (the store may not have echoed them yet).
    let mut pods_by_id: BTreeMap<u32, BTreeSet<NamespacedName>> = BTreeMap::new();
    for record in shared.endpoints.values() {
        pods_by_id
            .entry(record.identity)
            .or_default()
            .insert(NamespacedName::new(&record.namespace, &record.pod));
    }
    for endpoint in endpoints {
        if let Some(id) = identities.get(&endpoint.attachment) {
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
            pods.insert(key.clone(), (*id, ports));
        }
    }
    let mut view = ClusterView::new();
    // The shared view's label sets are the engine's: no conversion.
    for (&id, labels) in &shared.identities {
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

/// The aligned power-of-two blocks that cover `lo..=hi` exactly, as
/// (first port, prefix bits of the port).
pub fn port_blocks(lo: u16, hi: u16) -> Vec<(u16, u32)> {
    let mut blocks = Vec::new();
    let (mut start, end) = (u32::from(lo), u32::from(hi));
    while start <= end {
        let mut size = 1u32;
        while start % (size * 2) == 0 && start + size * 2 - 1 <= end && size < 65_536 {
            size *= 2;
        }
        blocks.push((start as u16, 16 - size.trailing_zeros()));
        start += size;
    }
    blocks
}

fn lpm_keys(endpoint_id: u16, direction: TrafficDirection, key: &EntryKey) -> Vec<LpmKey> {
    let base = PolicyKey {
        endpoint_id,
        direction: direction as u8,
        pad0: 0,
        identity: match key.peer {
            PeerKey::Any => IDENTITY_ANY,
            PeerKey::Identity(id) => id,
        },
        protocol: PROTOCOL_ANY,
        pad1: 0,
        port: [0; 2],
    };
    match (key.protocol, key.ports) {
        (None, _) => vec![LpmKey {
            prefix_len: POLICY_PREFIX_ANY_PROTOCOL,
            key: base,
        }],
        (Some(protocol), Ports::Any) => vec![LpmKey {
            prefix_len: POLICY_PREFIX_ANY_PORT,
            key: PolicyKey {
                protocol: protocol.number(),
                ..base
            },
        }],
        (Some(protocol), Ports::Range(lo, hi)) => port_blocks(lo, hi)
            .into_iter()
            .map(|(start, bits)| LpmKey {
                prefix_len: POLICY_PREFIX_ANY_PORT + bits,
                key: PolicyKey {
                    protocol: protocol.number(),
                    port: start.to_be_bytes(),
                    ..base
                },
            })
            .collect(),
    }
}

/// True if `outer` matches every key `inner` matches (same endpoint,
/// direction and identity assumed).
fn covers(outer: &LpmKey, inner: &LpmKey) -> bool {
    if outer.prefix_len > inner.prefix_len {
        return false;
    }
    if outer.prefix_len <= POLICY_PREFIX_ANY_PROTOCOL {
        return true;
    }
    if outer.key.protocol != inner.key.protocol {
        return false;
    }
    let bits = outer.prefix_len - POLICY_PREFIX_ANY_PORT;
    if bits == 0 {
        return true;
    }
    let mask = u16::MAX << (16 - bits);
    u16::from_be_bytes(outer.key.port) & mask == u16::from_be_bytes(inner.key.port) & mask
}

/// What an entry matches on, for policy verdict events (Hubble's
/// `policy_match_type`).
fn match_type(key: &LpmKey) -> u8 {
    use weir_abi::events::*;
    let any_peer = key.key.identity == IDENTITY_ANY;
    let any_l4 = key.prefix_len <= POLICY_PREFIX_ANY_PROTOCOL;
    match (any_peer, any_l4) {
        (false, true) => MATCH_L3_ONLY,
        (false, false) => MATCH_L3_L4,
        (true, false) => MATCH_L4_ONLY,
        (true, true) => MATCH_ALL,
    }
}

/// Lowers a compiled state to policy map entries.
pub fn lower(compiled: &Compiled) -> BTreeMap<LpmKey, PolicyEntry> {
    let mut out = BTreeMap::new();
    for (endpoint_id, policy) in &compiled.endpoints {
        let Ok(endpoint_id) = u16::try_from(*endpoint_id) else {
            continue;
        };
        for (direction, traffic) in [
            (Direction::Ingress, TrafficDirection::Ingress),
            (Direction::Egress, TrafficDirection::Egress),
        ] {
            let dir = policy.direction(direction);
            if !dir.enforced {
                continue;
            }
            // (key, verdict) per identity group.
            let mut groups: BTreeMap<u32, BTreeMap<LpmKey, u8>> = BTreeMap::new();
            for (key, verdict) in dir.effective() {
                let code = match verdict {
                    Verdict::Allow => POLICY_ALLOW,
                    Verdict::Deny => POLICY_DENY,
                };
                for lpm in lpm_keys(endpoint_id, traffic, &key) {
                    let slot = groups
                        .entry(lpm.key.identity)
                        .or_default()
                        .entry(lpm)
                        .or_insert(code);
                    if code == POLICY_DENY {
                        *slot = POLICY_DENY;
                    }
                }
            }
            for entries in groups.values() {
                let denies: Vec<&LpmKey> = entries
                    .iter()
                    .filter(|(_, v)| **v == POLICY_DENY)
                    .map(|(k, _)| k)
                    .collect();
                for (key, verdict) in entries {
                    let verdict =
                        if *verdict == POLICY_ALLOW && denies.iter().any(|d| covers(d, key)) {
                            POLICY_DENY
                        } else {
                            *verdict
                        };
                    out.insert(
                        *key,
                        PolicyEntry {
                            verdict,
                            match_type: match_type(key),
                            pad: [0; 2],
                            rule: 0,
                        },
                    );
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
