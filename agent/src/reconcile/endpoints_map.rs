//! The endpoints-map reconciler: one `weir_endpoints` entry per local
//! endpoint (id, identity, enforcement flags, address), keyed by its
//! host-side ifindex; only changed entries are written. An endpoint without
//! a real identity yet, or while the cluster view has not synced, gets the
//! not-ready entry that drops everything (the one the endpoint manager
//! writes when it attaches the interface): nothing passes before policy.
//!
//! The map is pinned and outlives the agent: the first pass reads what an
//! earlier agent left (adopts it) and diffs against it, so a restart with
//! nothing changed writes nothing and an endpoint deleted while the agent
//! was down loses its entry (its ifindex may be reused by a new pod).
//! An adopted entry is held as it is (neither rewritten nor removed)
//! while the cluster view has not synced yet, and for as long as its
//! endpoint is still local but has no identity: its flags come from a
//! policy compiled on identity labels the agent may not have yet, and
//! writing them from a partial view could drop the enforcement the pod had
//! before the restart.

use std::collections::{BTreeMap, BTreeSet};

use aya::Ebpf;
use weir_abi::EndpointInfo;

use crate::datapath::maps::{self, TableError};
use crate::endpoint::registry::Endpoint;

#[derive(Default)]
pub struct EndpointMapSync {
    /// What the endpoints map holds, by ifindex; `None` until read from
    /// the kernel on the first pass.
    written: Option<BTreeMap<u32, EndpointInfo>>,
    /// Entries read from the kernel that this agent has not confirmed or
    /// removed yet.
    adopted: BTreeSet<u32>,
}

/// What one pass writes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EndpointsPlan {
    pub writes: Vec<(u32, EndpointInfo)>,
    pub removals: Vec<u32>,
    /// Adopted entries left as they are this pass.
    pub held: BTreeSet<u32>,
}

/// The writes that bring `written` to `wanted`, holding the adopted
/// entries that are not safe to touch yet: all of them before the view is
/// `synced`, then those of local endpoints without an identity
/// (`unidentified`, by ifindex).
pub fn plan(
    written: &BTreeMap<u32, EndpointInfo>,
    wanted: &BTreeMap<u32, EndpointInfo>,
    adopted: &BTreeSet<u32>,
    synced: bool,
    unidentified: &BTreeSet<u32>,
) -> EndpointsPlan {
    let held: BTreeSet<u32> = adopted
        .iter()
        .filter(|ifindex| !synced || unidentified.contains(ifindex))
        .copied()
        .collect();
    let writes = wanted
        .iter()
        .filter(|(ifindex, info)| !held.contains(ifindex) && written.get(ifindex) != Some(info))
        .map(|(ifindex, info)| (*ifindex, *info))
        .collect();
    let removals = written
        .keys()
        .filter(|ifindex| !wanted.contains_key(ifindex) && !held.contains(ifindex))
        .copied()
        .collect();
    EndpointsPlan {
        writes,
        removals,
        held,
    }
}

impl EndpointMapSync {
    /// What the map holds, by ifindex, as of the last pass (`None` before
    /// the first).
    pub fn written(&self) -> Option<&BTreeMap<u32, EndpointInfo>> {
        self.written.as_ref()
    }

    /// Brings the map to `endpoints` (those `identity_of` knows); returns the
    /// ids of the endpoints whose entry was written. `synced`: the cluster
    /// view has listed everything once.
    pub fn sync(
        &mut self,
        ebpf: &mut Ebpf,
        endpoints: &[Endpoint],
        identity_of: impl Fn(&Endpoint) -> Option<u32>,
        flags_of: impl Fn(&Endpoint) -> u8,
        synced: bool,
    ) -> Result<BTreeSet<u16>, TableError> {
        let mut wanted = BTreeMap::new();
        let mut unidentified = BTreeSet::new();
        for endpoint in endpoints {
            let identity = identity_of(endpoint);
            if identity.is_none() {
                unidentified.insert(endpoint.host_ifindex);
            }
            wanted.insert(
                endpoint.host_ifindex,
                desired_entry(endpoint, identity, || flags_of(endpoint), synced),
            );
        }
        let current = match self.written.take() {
            Some(current) => current,
            None => {
                let current = maps::endpoint_entries(ebpf)?;
                self.adopted = current.keys().copied().collect();
                current
            }
        };
        let plan = plan(&current, &wanted, &self.adopted, synced, &unidentified);
        let written = match apply(ebpf, &plan) {
            Ok(written) => written,
            Err(error) => {
                // The map holds a prefix of the plan; the next pass redoes it.
                self.written = Some(current);
                return Err(error);
            }
        };
        let mut next = wanted;
        for ifindex in &plan.held {
            if let Some(info) = current.get(ifindex) {
                next.insert(*ifindex, *info);
            }
        }
        self.written = Some(next);
        self.adopted = plan.held;
        Ok(written)
    }
}

/// The entry an endpoint should have: ready with its identity and
/// enforcement flags once it has a real identity (not `reserved:init`,
/// which a pod has while its manifest is unknown) and the cluster view is
/// synced (its peers' identities known); not ready, so closed, before.
fn desired_entry(
    endpoint: &Endpoint,
    identity: Option<u32>,
    flags: impl FnOnce() -> u8,
    synced: bool,
) -> EndpointInfo {
    let closed = endpoint.closed_entry();
    match identity {
        Some(identity) if identity != weir_abi::identity::INIT && synced => EndpointInfo {
            flags: flags(),
            identity,
            ..closed
        },
        _ => closed,
    }
}

/// Writes `plan`; returns the ids of the endpoints whose entry was written.
fn apply(ebpf: &mut Ebpf, plan: &EndpointsPlan) -> Result<BTreeSet<u16>, TableError> {
    let mut written = BTreeSet::new();
    for (ifindex, info) in &plan.writes {
        maps::set_endpoint(ebpf, *ifindex, *info)?;
        written.insert(info.id);
    }
    for ifindex in &plan.removals {
        maps::remove_endpoint(ebpf, *ifindex)?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u16, flags: u8) -> EndpointInfo {
        EndpointInfo {
            id,
            flags,
            pad: 0,
            identity: 300,
            ipv4: [10, 244, 0, id as u8],
            ..EndpointInfo::default()
        }
    }

    #[test]
    fn a_restart_with_nothing_changed_writes_nothing() {
        let kernel = BTreeMap::from([(7, info(1, 1)), (8, info(2, 0))]);
        let adopted = kernel.keys().copied().collect();
        let plan = plan(&kernel, &kernel, &adopted, true, &BTreeSet::new());
        assert!(plan.writes.is_empty() && plan.removals.is_empty());
    }

    #[test]
    fn adopted_entries_are_held_until_the_view_is_synced() {
        let kernel = BTreeMap::from([(7, info(1, 1)), (9, info(3, 1))]);
        let adopted: BTreeSet<u32> = kernel.keys().copied().collect();
        // A partial view computes endpoint 1 unenforced; endpoint 3 is gone;
        // endpoint 4 is new.
        let wanted = BTreeMap::from([(7, info(1, 0)), (10, info(4, 0))]);
        let unsynced = plan(&kernel, &wanted, &adopted, false, &BTreeSet::new());
        assert_eq!(unsynced.writes, vec![(10, info(4, 0))], "only the new one");
        assert!(unsynced.removals.is_empty());
        let synced = plan(&kernel, &wanted, &adopted, true, &BTreeSet::new());
        assert_eq!(synced.writes, vec![(7, info(1, 0)), (10, info(4, 0))]);
        assert_eq!(synced.removals, vec![9], "the gone endpoint's entry");
        assert!(synced.held.is_empty());
    }

    #[test]
    fn an_endpoint_without_identity_keeps_its_adopted_entry() {
        let kernel = BTreeMap::from([(7, info(1, 1))]);
        let adopted = BTreeSet::from([7]);
        let plan = plan(
            &kernel,
            &BTreeMap::new(),
            &adopted,
            true,
            &BTreeSet::from([7]),
        );
        assert!(plan.removals.is_empty());
        assert_eq!(plan.held, BTreeSet::from([7]));
    }

    #[test]
    fn entries_this_agent_wrote_follow_the_endpoints_as_before() {
        let written = BTreeMap::from([(7, info(1, 1))]);
        let plan = plan(
            &written,
            &BTreeMap::new(),
            &BTreeSet::new(),
            false,
            &BTreeSet::from([7]),
        );
        assert_eq!(plan.removals, vec![7], "not adopted: removed as before");
    }
}
