//! `weir_conntrack`: the LRU of tracked connections, read for inspection
//! and garbage-collected by the agent (the LRU only evicts under pressure).

use aya::Ebpf;
use weir_abi::{map_names, CtEntry, CtKey};

use super::{hash, map_err, TableError};

/// Every conntrack entry.
pub fn conntrack(ebpf: &mut Ebpf) -> Result<Vec<(CtKey, CtEntry)>, TableError> {
    hash::<CtKey, CtEntry>(ebpf, map_names::CONNTRACK)?
        .iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(map_err(map_names::CONNTRACK))
}

/// Deletes conntrack entries that expired before `now_ns` (the kernel's
/// CLOCK_MONOTONIC, as `bpf_ktime_get_ns`); returns how many.
pub fn conntrack_gc(ebpf: &mut Ebpf, now_ns: u64) -> Result<usize, TableError> {
    let expired: Vec<CtKey> = conntrack(ebpf)?
        .into_iter()
        .filter(|(_, entry)| entry.expires_ns < now_ns)
        .map(|(key, _)| key)
        .collect();
    let mut map = hash::<CtKey, CtEntry>(ebpf, map_names::CONNTRACK)?;
    let mut removed = 0;
    for key in &expired {
        if map.remove(key).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_now_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available");
    now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64
}
