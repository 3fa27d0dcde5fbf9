//! `weir_endpoints`: the local endpoints by host-side ifindex (id,
//! identity, enforcement flags, address), read by the pod programs.

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
