//! Typed access to the datapath's maps, one module per map family. Errors
//! name the map. The family functions are re-exported here, so callers
//! write `maps::set_endpoint` and need not know the file.

pub mod conntrack;
pub mod endpoints;
pub mod events;
pub mod fill;
pub mod fragments;
pub mod ipcache;
pub mod lb;
pub mod netns_owners;
pub mod non_masquerade;
pub mod ops;
pub mod pod_cidrs;
pub mod policy;
pub mod policy_revision;

pub use conntrack::{conntrack, conntrack_gc, forget_address, monotonic_now_ns, Forgotten};
pub use endpoints::{
    endpoint_entries, remove_endpoint, remove_endpoint_of, set_endpoint, set_new_endpoint,
};
pub use events::{drain_events, events_lost, read_event};
pub use fragments::fragments;
pub use ipcache::{ipcache_entries, ipcache_key, remove_ipcache, set_ipcache};
pub use netns_owners::{netns_owner_entries, remove_netns_owner, set_netns_owner};
pub use non_masquerade::set_non_masquerade;
pub use pod_cidrs::{pod_cidr_entries, remove_pod_cidr, set_pod_cidr, PodCidrOwner};
pub use policy::{policy_entries, remove_policy, set_policy};
pub use policy_revision::{advance_policy_revision, policy_revision};

use std::net::IpAddr;

use aya::maps::{HashMap, LpmTrie, MapData, MapError};
use aya::Ebpf;
use weir_abi::ipcache::FAMILY_IPV4;

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("map {0} is missing from the datapath object")]
    Missing(&'static str),
    #[error("map {map}: {source}")]
    Map { map: &'static str, source: MapError },
    /// The kernel refused a new entry: the map is at its capacity.
    #[error("map {map} is full: the kernel refused a new entry ({source})")]
    KernelFull { map: &'static str, source: MapError },
    /// Refused before writing anything: see `fill::fits`.
    #[error(
        "map {map} is full: {new} more entries do not fit ({used} of {capacity} in use); \
         nothing of this change was written"
    )]
    Full {
        map: &'static str,
        new: usize,
        used: usize,
        capacity: u32,
    },
}

pub(super) fn map_err(map: &'static str) -> impl Fn(MapError) -> TableError {
    move |source| {
        if fill::says_full(&source) {
            TableError::KernelFull { map, source }
        } else {
            TableError::Map { map, source }
        }
    }
}

pub(super) fn hash<'a, K: aya::Pod, V: aya::Pod>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<HashMap<&'a mut MapData, K, V>, TableError> {
    let map = ebpf.map_mut(name).ok_or(TableError::Missing(name))?;
    HashMap::try_from(map).map_err(map_err(name))
}

pub(super) fn lpm<'a, K: aya::Pod, V: aya::Pod>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<LpmTrie<&'a mut MapData, K, V>, TableError> {
    let map = ebpf.map_mut(name).ok_or(TableError::Missing(name))?;
    LpmTrie::try_from(map).map_err(map_err(name))
}

/// A removal where an absent key is success.
/// A removal's result, with an absent key counted as removed: aya reports
/// it as `KeyNotFound` for some map types and as the syscall's ENOENT for
/// others (hash maps' `bpf_map_delete_elem`).
/// The outcome of an update of `map`, counted ([`ops`]).
pub(super) fn updated(map: &'static str, result: Result<(), MapError>) -> Result<(), TableError> {
    ops::count(map, ops::Operation::Update, result.is_ok());
    result.map_err(map_err(map))
}

/// The outcome of a delete from `map`, counted ([`ops`]); an entry that
/// was not there is removed.
pub(super) fn removed(map: &'static str, result: Result<(), MapError>) -> Result<(), TableError> {
    let result = removal(map, result);
    ops::count(map, ops::Operation::Delete, result.is_ok());
    result
}

fn removal(map: &'static str, result: Result<(), MapError>) -> Result<(), TableError> {
    match result {
        Err(MapError::KeyNotFound) | Ok(()) => Ok(()),
        Err(MapError::SyscallError(error))
            if error.io_error.raw_os_error() == Some(nix::errno::Errno::ENOENT as i32) =>
        {
            Ok(())
        }
        Err(source) => Err(map_err(map)(source)),
    }
}

/// An address as the maps and events carry it: a family and 16 bytes, IPv4
/// in the first 4.
pub fn ip_address(family: u8, bytes: &[u8; 16]) -> IpAddr {
    if family == FAMILY_IPV4 {
        IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
    } else {
        IpAddr::from(*bytes)
    }
}
