//! `weir_netns_owners`: who owns each network namespace, by netns cookie
//! (a pod's host-side ifindex, or the node). The cgroup hooks read it to
//! name the pod, or the node, of a connection they refuse.

use std::collections::BTreeMap;

use aya::Ebpf;
use weir_abi::endpoint::NetnsOwner;
use weir_abi::map_names;

use super::{hash, map_err, removed, updated, TableError};

pub fn set_netns_owner(ebpf: &mut Ebpf, cookie: u64, owner: NetnsOwner) -> Result<(), TableError> {
    let mut map = hash::<u64, NetnsOwner>(ebpf, map_names::NETNS_OWNERS)?;
    updated(map_names::NETNS_OWNERS, map.insert(cookie, owner, 0))
}

/// Removes a namespace's entry; absent is fine.
pub fn remove_netns_owner(ebpf: &mut Ebpf, cookie: u64) -> Result<(), TableError> {
    let mut map = hash::<u64, NetnsOwner>(ebpf, map_names::NETNS_OWNERS)?;
    removed(map_names::NETNS_OWNERS, map.remove(&cookie))
}

/// Every entry, by cookie.
pub fn netns_owner_entries(ebpf: &mut Ebpf) -> Result<BTreeMap<u64, NetnsOwner>, TableError> {
    let map = hash::<u64, NetnsOwner>(ebpf, map_names::NETNS_OWNERS)?;
    map.iter()
        .collect::<Result<BTreeMap<_, _>, _>>()
        .map_err(map_err(map_names::NETNS_OWNERS))
}
