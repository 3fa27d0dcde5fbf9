//! The ipcache reconciler: brings `weir_ipcache` to what the cluster says
//! (every pod address, node address and policy CIDR with its identity),
//! writing only the difference. The desired state and its diff are pure
//! ([`desired`]); this module reads and writes the map.

pub mod desired;

pub use desired::{DesiredIpcache, IpcacheDiff, Origin};

use std::collections::BTreeMap;

use aya::Ebpf;
use ipnetwork::IpNetwork;
use weir_abi::IpcacheValue;

use crate::datapath::maps::{self, TableError};

#[derive(Default)]
pub struct IpcacheSync {
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
        let diff = desired.diff(&current, synced);
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
        Ok(())
    }
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
