//! `weir_policy`: one LPM trie of every local endpoint's policy entries,
//! keyed by (endpoint, direction, peer identity, protocol, port prefix).

use aya::maps::lpm_trie::Key;
use aya::Ebpf;
use weir_abi::{map_names, PolicyEntry, PolicyKey};

use super::{lpm, map_err, removed, TableError};

pub fn set_policy(
    ebpf: &mut Ebpf,
    prefix_len: u32,
    key: PolicyKey,
    entry: PolicyEntry,
) -> Result<(), TableError> {
    lpm::<PolicyKey, PolicyEntry>(ebpf, map_names::POLICY)?
        .insert(&Key::new(prefix_len, key), entry, 0)
        .map_err(map_err(map_names::POLICY))
}

pub fn remove_policy(ebpf: &mut Ebpf, prefix_len: u32, key: PolicyKey) -> Result<(), TableError> {
    let mut map = lpm::<PolicyKey, PolicyEntry>(ebpf, map_names::POLICY)?;
    removed(map_names::POLICY, map.remove(&Key::new(prefix_len, key)))
}

/// Every policy map entry, as (prefix length, key, entry).
pub fn policy_entries(ebpf: &mut Ebpf) -> Result<Vec<(u32, PolicyKey, PolicyEntry)>, TableError> {
    let map = lpm::<PolicyKey, PolicyEntry>(ebpf, map_names::POLICY)?;
    let mut entries = Vec::new();
    for item in map.iter() {
        let (key, entry) = item.map_err(map_err(map_names::POLICY))?;
        entries.push((key.prefix_len(), key.data(), entry));
    }
    Ok(entries)
}
