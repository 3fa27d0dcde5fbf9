//! `weir_endpoints`: the local endpoints by host-side ifindex (id,
//! identity, enforcement flags, address), read by the pod programs.

use std::collections::BTreeMap;

use aya::maps::{HashMap, MapData, MapError};
use aya::Ebpf;
use weir_abi::{map_names, EndpointInfo, EndpointKey};

use super::{hash, map_err, removed, updated, TableError};

pub fn set_endpoint(ebpf: &mut Ebpf, ifindex: u32, info: EndpointInfo) -> Result<(), TableError> {
    let mut map = hash::<EndpointKey, EndpointInfo>(ebpf, map_names::ENDPOINTS)?;
    updated(
        map_names::ENDPOINTS,
        map.insert(EndpointKey { ifindex }, info, 0),
    )
}

/// Writes the first entry of an endpoint whose interface is being attached,
/// unless the map already holds this endpoint (same id and address: a
/// repeated ADD, or a restart), whose entry the endpoints reconciler owns.
/// Returns whether it wrote.
pub fn set_new_endpoint(
    ebpf: &mut Ebpf,
    ifindex: u32,
    info: EndpointInfo,
) -> Result<bool, TableError> {
    let mut map = hash::<EndpointKey, EndpointInfo>(ebpf, map_names::ENDPOINTS)?;
    let key = EndpointKey { ifindex };
    if holds(&map, key, info.id, info.ipv4)? {
        return Ok(false);
    }
    updated(map_names::ENDPOINTS, map.insert(key, info, 0))?;
    reset_budget(ebpf, info.id)?;
    Ok(true)
}

/// Gives the endpoint id a full budget of new entries (`weir_ct_budget`):
/// an id is reused after its endpoint is gone, and the new pod must not
/// start with what the old one used up.
pub fn reset_budget(ebpf: &mut Ebpf, id: u16) -> Result<(), TableError> {
    let name = map_names::CT_BUDGET;
    let map = ebpf.map_mut(name).ok_or(TableError::Missing(name))?;
    let mut array: aya::maps::Array<&mut MapData, weir_abi::conntrack::CtBudget> =
        aya::maps::Array::try_from(map).map_err(map_err(name))?;
    array
        .set(u32::from(id), weir_abi::conntrack::CtBudget::default(), 0)
        .map_err(map_err(name))
}

/// Removes the entry at `ifindex` if it is this endpoint's (same id and
/// address): the interface may be gone and its ifindex already another
/// pod's, whose entry stays. Absent is fine.
pub fn remove_endpoint_of(
    ebpf: &mut Ebpf,
    ifindex: u32,
    id: u16,
    ipv4: [u8; 4],
) -> Result<(), TableError> {
    let mut map = hash::<EndpointKey, EndpointInfo>(ebpf, map_names::ENDPOINTS)?;
    let key = EndpointKey { ifindex };
    if !holds(&map, key, id, ipv4)? {
        return Ok(());
    }
    removed(map_names::ENDPOINTS, map.remove(&key))
}

/// Whether the entry at `key` is the endpoint with this id and address.
fn holds(
    map: &HashMap<&mut MapData, EndpointKey, EndpointInfo>,
    key: EndpointKey,
    id: u16,
    ipv4: [u8; 4],
) -> Result<bool, TableError> {
    match map.get(&key, 0) {
        Ok(existing) => Ok(existing.id == id && existing.ipv4 == ipv4),
        Err(MapError::KeyNotFound) => Ok(false),
        Err(source) => Err(map_err(map_names::ENDPOINTS)(source)),
    }
}

/// Removes an endpoint; absent is fine.
pub fn remove_endpoint(ebpf: &mut Ebpf, ifindex: u32) -> Result<(), TableError> {
    let mut map = hash::<EndpointKey, EndpointInfo>(ebpf, map_names::ENDPOINTS)?;
    removed(map_names::ENDPOINTS, map.remove(&EndpointKey { ifindex }))
}

/// Every endpoint entry, by ifindex (what an earlier agent left, at start).
pub fn endpoint_entries(ebpf: &mut Ebpf) -> Result<BTreeMap<u32, EndpointInfo>, TableError> {
    let map = hash::<EndpointKey, EndpointInfo>(ebpf, map_names::ENDPOINTS)?;
    let mut entries = BTreeMap::new();
    for item in map.iter() {
        let (key, info) = item.map_err(map_err(map_names::ENDPOINTS))?;
        entries.insert(key.ifindex, info);
    }
    Ok(entries)
}
