//! `weir_endpoints`: the local endpoints by host-side ifindex (id,
//! identity, enforcement flags, address), read by the pod programs.

use std::collections::BTreeMap;

use aya::Ebpf;
use weir_abi::{map_names, EndpointInfo, EndpointKey};

use super::{hash, map_err, removed, TableError};

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
