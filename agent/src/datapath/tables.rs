//! Typed access to the maps the agent programs: endpoints, ipcache, policy,
//! and conntrack (read and garbage-collected). Errors name the map.

use std::net::IpAddr;

use aya::maps::lpm_trie::Key;
use aya::maps::{HashMap, LpmTrie, MapData, MapError};
use aya::Ebpf;
use ipnetwork::IpNetwork;
use weir_abi::{map_names, CtEntry, CtKey, EndpointInfo, EndpointKey, IpcacheKey, IpcacheValue};
use weir_abi::{PolicyEntry, PolicyKey};

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("map {0} is missing from the datapath object")]
    Missing(&'static str),
    #[error("map {map}: {source}")]
    Map { map: &'static str, source: MapError },
}

pub(super) fn map_err(map: &'static str) -> impl Fn(MapError) -> TableError {
    move |source| TableError::Map { map, source }
}

pub(super) fn hash<'a, K: aya::Pod, V: aya::Pod>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<HashMap<&'a mut MapData, K, V>, TableError> {
    let map = ebpf.map_mut(name).ok_or(TableError::Missing(name))?;
    HashMap::try_from(map).map_err(map_err(name))
}

fn lpm<'a, K: aya::Pod, V: aya::Pod>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<LpmTrie<&'a mut MapData, K, V>, TableError> {
    let map = ebpf.map_mut(name).ok_or(TableError::Missing(name))?;
    LpmTrie::try_from(map).map_err(map_err(name))
}

/// The ipcache key of a prefix.
pub fn ipcache_key(prefix: IpNetwork) -> Key<IpcacheKey> {
    match prefix.network() {
        IpAddr::V4(addr) => Key::new(
            IpcacheKey::prefix_len(prefix.prefix()),
            IpcacheKey::ipv4(addr.octets()),
        ),
        IpAddr::V6(addr) => Key::new(
            IpcacheKey::prefix_len(prefix.prefix()),
            IpcacheKey::ipv6(addr.octets()),
        ),
    }
}

/// A removal where an absent key is success.
pub(super) fn removed(map: &'static str, result: Result<(), MapError>) -> Result<(), TableError> {
    match result {
        Err(MapError::KeyNotFound) | Ok(()) => Ok(()),
        Err(source) => Err(TableError::Map { map, source }),
    }
}

pub fn set_endpoint(ebpf: &mut Ebpf, ifindex: u32, info: EndpointInfo) -> Result<(), TableError> {
    hash::<EndpointKey, EndpointInfo>(ebpf, map_names::ENDPOINTS)?
        .insert(EndpointKey { ifindex }, info, 0)
        .map_err(map_err(map_names::ENDPOINTS))
}

/// Removes an endpoint; absent is fine.
pub fn remove_endpoint(ebpf: &mut Ebpf, ifindex: u32) -> Result<(), TableError> {
    let mut map = hash::<EndpointKey, EndpointInfo>(ebpf, map_names::ENDPOINTS)?;
    removed(map_names::ENDPOINTS, map.remove(&EndpointKey { ifindex }))
}

pub fn set_ipcache(
    ebpf: &mut Ebpf,
    prefix: IpNetwork,
    value: IpcacheValue,
) -> Result<(), TableError> {
    lpm::<IpcacheKey, IpcacheValue>(ebpf, map_names::IPCACHE)?
        .insert(&ipcache_key(prefix), value, 0)
        .map_err(map_err(map_names::IPCACHE))
}

pub fn remove_ipcache(ebpf: &mut Ebpf, prefix: IpNetwork) -> Result<(), TableError> {
    let mut map = lpm::<IpcacheKey, IpcacheValue>(ebpf, map_names::IPCACHE)?;
    removed(map_names::IPCACHE, map.remove(&ipcache_key(prefix)))
}

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

/// The ipcache's content, by prefix.
pub fn ipcache_entries(
    ebpf: &mut Ebpf,
) -> Result<std::collections::BTreeMap<IpNetwork, IpcacheValue>, TableError> {
    let map = lpm::<IpcacheKey, IpcacheValue>(ebpf, map_names::IPCACHE)?;
    let mut entries = std::collections::BTreeMap::new();
    for item in map.iter() {
        let (key, value) = item.map_err(map_err(map_names::IPCACHE))?;
        let data = key.data();
        let bits = key
            .prefix_len()
            .saturating_sub(weir_abi::ipcache::IPCACHE_PREFIX_BITS_BEFORE_ADDR)
            as u8;
        let addr: IpAddr = if data.family == weir_abi::ipcache::FAMILY_IPV4 {
            IpAddr::from([data.addr[0], data.addr[1], data.addr[2], data.addr[3]])
        } else {
            IpAddr::from(data.addr)
        };
        if let Ok(prefix) = IpNetwork::new(addr, bits) {
            entries.insert(prefix, value);
        }
    }
    Ok(entries)
}

/// Applies an ipcache diff; stops at the first error (the map then holds a
/// prefix of the diff, which the next reconcile completes).
pub fn apply_ipcache_diff(
    ebpf: &mut Ebpf,
    diff: &crate::ipcache::IpcacheDiff,
) -> Result<(), TableError> {
    for (prefix, value) in &diff.upserts {
        set_ipcache(ebpf, *prefix, *value)?;
    }
    for prefix in &diff.removals {
        remove_ipcache(ebpf, *prefix)?;
    }
    Ok(())
}

/// Takes every event waiting in the `weir_events` ring buffer.
pub fn drain_events(ebpf: &mut Ebpf) -> Result<Vec<weir_abi::FlowEvent>, TableError> {
    let name = map_names::EVENTS;
    let map = ebpf.map_mut(name).ok_or(TableError::Missing(name))?;
    let mut ring = aya::maps::RingBuf::try_from(map).map_err(map_err(name))?;
    let mut events = Vec::new();
    while let Some(item) = ring.next() {
        events.extend(read_event(&item));
    }
    Ok(events)
}

/// The `FlowEvent` in one ring buffer record; None for a short record.
pub fn read_event(record: &[u8]) -> Option<weir_abi::FlowEvent> {
    if record.len() < std::mem::size_of::<weir_abi::FlowEvent>() {
        return None;
    }
    // SAFETY: the record holds at least a FlowEvent's bytes (checked above),
    // FlowEvent is plain old data, and read_unaligned makes no alignment
    // assumption.
    Some(unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<weir_abi::FlowEvent>()) })
}

/// Events lost because the ring buffer was full, summed over CPUs.
pub fn events_lost(ebpf: &mut Ebpf) -> Result<u64, TableError> {
    let name = map_names::EVENT_LOSS;
    let map = ebpf.map_mut(name).ok_or(TableError::Missing(name))?;
    let array: aya::maps::PerCpuArray<&mut MapData, u64> =
        aya::maps::PerCpuArray::try_from(map).map_err(map_err(name))?;
    let values = array.get(&0, 0).map_err(map_err(name))?;
    Ok(values.iter().sum())
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
