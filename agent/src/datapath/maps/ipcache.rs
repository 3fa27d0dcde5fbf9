//! `weir_ipcache`: every known prefix (pod, node, policy CIDR) to its
//! identity, an LPM trie keyed by family and address.

use std::collections::BTreeMap;
use std::net::IpAddr;

use aya::maps::lpm_trie::Key;
use aya::Ebpf;
use ipnetwork::IpNetwork;
use weir_abi::{map_names, IpcacheKey, IpcacheValue};

use super::{lpm, map_err, removed, updated, TableError};

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

pub fn set_ipcache(
    ebpf: &mut Ebpf,
    prefix: IpNetwork,
    value: IpcacheValue,
) -> Result<(), TableError> {
    let mut map = lpm::<IpcacheKey, IpcacheValue>(ebpf, map_names::IPCACHE)?;
    updated(
        map_names::IPCACHE,
        map.insert(&ipcache_key(prefix), value, 0),
    )
}

pub fn remove_ipcache(ebpf: &mut Ebpf, prefix: IpNetwork) -> Result<(), TableError> {
    let mut map = lpm::<IpcacheKey, IpcacheValue>(ebpf, map_names::IPCACHE)?;
    removed(map_names::IPCACHE, map.remove(&ipcache_key(prefix)))
}

/// The ipcache's content, by prefix.
pub fn ipcache_entries(ebpf: &mut Ebpf) -> Result<BTreeMap<IpNetwork, IpcacheValue>, TableError> {
    let map = lpm::<IpcacheKey, IpcacheValue>(ebpf, map_names::IPCACHE)?;
    let mut entries = BTreeMap::new();
    for item in map.iter() {
        let (key, value) = item.map_err(map_err(map_names::IPCACHE))?;
        let data = key.data();
        let bits = key
            .prefix_len()
            .saturating_sub(weir_abi::ipcache::IPCACHE_PREFIX_BITS_BEFORE_ADDR)
            as u8;
        let addr = super::ip_address(data.family, &data.addr);
        if let Ok(prefix) = IpNetwork::new(addr, bits) {
            entries.insert(prefix, value);
        }
    }
    Ok(entries)
}
