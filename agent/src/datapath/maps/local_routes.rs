//! `weir_local_routes`: this node's pods by IPv4 address (host-side veth and
//! both MAC addresses), for eBPF host routing without a FIB lookup.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use aya::Ebpf;
use weir_abi::{map_names, LocalRoute, LocalRouteKey};

use super::{hash, map_err, removed, updated, TableError};

pub fn set_local_route(
    ebpf: &mut Ebpf,
    address: Ipv4Addr,
    route: LocalRoute,
) -> Result<(), TableError> {
    let mut map = hash::<LocalRouteKey, LocalRoute>(ebpf, map_names::LOCAL_ROUTES)?;
    let key = LocalRouteKey {
        addr: address.octets(),
    };
    updated(map_names::LOCAL_ROUTES, map.insert(key, route, 0))
}

/// Removes an address's entry; absent is fine.
pub fn remove_local_route(ebpf: &mut Ebpf, address: Ipv4Addr) -> Result<(), TableError> {
    let mut map = hash::<LocalRouteKey, LocalRoute>(ebpf, map_names::LOCAL_ROUTES)?;
    let key = LocalRouteKey {
        addr: address.octets(),
    };
    removed(map_names::LOCAL_ROUTES, map.remove(&key))
}

/// Removes an address's entry if it routes to `ifindex` (the address may
/// already be another pod's); absent is fine.
pub fn remove_local_route_of(
    ebpf: &mut Ebpf,
    address: Ipv4Addr,
    ifindex: u32,
) -> Result<(), TableError> {
    let mut map = hash::<LocalRouteKey, LocalRoute>(ebpf, map_names::LOCAL_ROUTES)?;
    let key = LocalRouteKey {
        addr: address.octets(),
    };
    match map.get(&key, 0) {
        Ok(route) if route.ifindex == ifindex => removed(map_names::LOCAL_ROUTES, map.remove(&key)),
        Ok(_) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(source) => Err(map_err(map_names::LOCAL_ROUTES)(source)),
    }
}

/// Every entry, by address.
pub fn local_route_entries(ebpf: &mut Ebpf) -> Result<BTreeMap<Ipv4Addr, LocalRoute>, TableError> {
    let map = hash::<LocalRouteKey, LocalRoute>(ebpf, map_names::LOCAL_ROUTES)?;
    map.iter()
        .map(|item| item.map(|(key, route)| (Ipv4Addr::from(key.addr), route)))
        .collect::<Result<BTreeMap<_, _>, _>>()
        .map_err(map_err(map_names::LOCAL_ROUTES))
}
