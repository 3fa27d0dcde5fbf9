//! The ipcache reconciler: brings `weir_ipcache` to what the cluster says
//! (every pod address, node address and policy CIDR with its identity),
//! writing only the difference. The desired state and its diff are pure
//! ([`desired`]); this module reads and writes the map.

pub mod desired;
pub mod host_addresses;

pub use desired::{DesiredIpcache, IpcacheDiff, Origin};

use std::collections::BTreeMap;

use aya::Ebpf;
use ipnetwork::IpNetwork;
use weir_abi::IpcacheValue;

use crate::datapath::maps::{self, TableError};

/// One ipcache entry a pass wrote: `old` what the map held before (none: a
/// new prefix), `new` what it holds now (none: removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpcacheWrite {
    pub prefix: IpNetwork,
    pub old: Option<IpcacheValue>,
    pub new: Option<IpcacheValue>,
}

#[derive(Default)]
pub struct IpcacheSync {
    /// The entries written since [`IpcacheSync::take_writes`] was last
    /// called (for the agent's events).
    writes: Vec<IpcacheWrite>,
    /// What the map holds: read from the kernel once (an earlier agent's
    /// entries), then kept as this reconciler writes it, so a pass does not
    /// walk the LPM map.
    written: Option<BTreeMap<IpNetwork, IpcacheValue>>,
}

impl IpcacheSync {
    /// Writes the difference between `desired` and the map. Nothing is
    /// removed until the sources have listed everything once (`synced`).
    pub fn sync(
        &mut self,
        ebpf: &mut Ebpf,
        desired: &DesiredIpcache,
        synced: bool,
    ) -> Result<(), TableError> {
        let current = match self.written.take() {
            Some(current) => current,
            None => maps::ipcache_entries(ebpf)?,
        };
        let mut diff = desired.diff(&current, synced);
        let writes = describe(&diff, &current);
        // Removals are written after upserts (an address moving between
        // prefixes is never unknown), so the new entries must fit beside
        // all current ones. If they do not, the removals go first (the only
        // way to make room) and, if they still do not, none is written: a
        // policy's CIDRs are all in the map or none is.
        let capacity = maps::fill::max_entries(ebpf, weir_abi::map_names::IPCACHE);
        let mut current = current;
        if fits(&diff, &current, capacity).is_err() {
            // On a failed write `written` stays empty: the next pass re-reads.
            for prefix in std::mem::take(&mut diff.removals) {
                maps::remove_ipcache(ebpf, prefix)?;
                current.remove(&prefix);
            }
            if let Err(full) = fits(&diff, &current, capacity) {
                self.written = Some(current);
                return Err(full);
            }
        }
        // On a failed write `written` stays empty: the next pass re-reads.
        apply(ebpf, &diff)?;
        let mut next = current;
        for (prefix, value) in diff.upserts {
            next.insert(prefix, value);
        }
        for prefix in diff.removals {
            next.remove(&prefix);
        }
        self.written = Some(next);
        self.writes.extend(writes);
        Ok(())
    }

    /// The entries written by the passes since the last call.
    pub fn take_writes(&mut self) -> Vec<IpcacheWrite> {
        std::mem::take(&mut self.writes)
    }
}

/// What `diff` changes over `current`, entry by entry (unchanged upserts
/// left out).
fn describe(diff: &IpcacheDiff, current: &BTreeMap<IpNetwork, IpcacheValue>) -> Vec<IpcacheWrite> {
    let upserts = diff
        .upserts
        .iter()
        .filter(|(prefix, value)| current.get(prefix) != Some(value))
        .map(|(prefix, value)| IpcacheWrite {
            prefix: *prefix,
            old: current.get(prefix).copied(),
            new: Some(*value),
        });
    let removals = diff.removals.iter().map(|prefix| IpcacheWrite {
        prefix: *prefix,
        old: current.get(prefix).copied(),
        new: None,
    });
    upserts.chain(removals).collect()
}

/// Whether the new prefixes of `diff` fit beside `current`.
fn fits(
    diff: &IpcacheDiff,
    current: &BTreeMap<IpNetwork, IpcacheValue>,
    capacity: Option<u32>,
) -> Result<(), TableError> {
    let new = diff
        .upserts
        .iter()
        .filter(|(prefix, _)| !current.contains_key(prefix))
        .count();
    maps::fill::fits(weir_abi::map_names::IPCACHE, current.len(), new, capacity)
}

/// Applies an ipcache diff; stops at the first error (the map then holds a
/// prefix of the diff, which the next pass completes).
pub fn apply(ebpf: &mut Ebpf, diff: &IpcacheDiff) -> Result<(), TableError> {
    for (prefix, value) in &diff.upserts {
        maps::set_ipcache(ebpf, *prefix, *value)?;
    }
    for prefix in &diff.removals {
        maps::remove_ipcache(ebpf, *prefix)?;
    }
    Ok(())
}
