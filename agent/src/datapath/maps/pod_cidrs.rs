//! `weir_pod_cidrs`: every node's pod CIDR with the node owning it, an LPM
//! trie the node-device programs look a packet's source up in
//! (anti-spoofing, see `ebpf/abi/src/pod_cidr.rs`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use aya::maps::lpm_trie::Key;
use aya::Ebpf;
use ipnetwork::Ipv4Network;
use weir_abi::{map_names, PodCidrInfo, PodCidrKey};

use super::{lpm, map_err, removed, updated, TableError};

/// The owner of a pod CIDR, as the agent thinks of it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PodCidrOwner {
    /// The node's underlay address.
    pub node_ip: Ipv4Addr,
    /// The CIDR is this node's own.
    pub local: bool,
}

pub fn encode_key(cidr: Ipv4Network) -> Key<PodCidrKey> {
    Key::new(
        u32::from(cidr.prefix()),
        PodCidrKey {
            addr: cidr.network().octets(),
        },
    )
}

/// The prefix of a key; `None` for a prefix length beyond 32.
pub fn decode_key(key: &Key<PodCidrKey>) -> Option<Ipv4Network> {
    let bits = u8::try_from(key.prefix_len()).ok()?;
    Ipv4Network::new(Ipv4Addr::from(key.data().addr), bits).ok()
}

pub fn encode_value(owner: PodCidrOwner) -> PodCidrInfo {
    PodCidrInfo {
        node_ipv4: owner.node_ip.octets(),
        flags: if owner.local { PodCidrInfo::LOCAL } else { 0 },
        pad: [0; 3],
    }
}

pub fn decode_value(value: &PodCidrInfo) -> PodCidrOwner {
    PodCidrOwner {
        node_ip: Ipv4Addr::from(value.node_ipv4),
        local: value.is_local(),
    }
}

pub fn set_pod_cidr(
    ebpf: &mut Ebpf,
    cidr: Ipv4Network,
    owner: PodCidrOwner,
) -> Result<(), TableError> {
    let mut map = lpm::<PodCidrKey, PodCidrInfo>(ebpf, map_names::POD_CIDRS)?;
    updated(
        map_names::POD_CIDRS,
        map.insert(&encode_key(cidr), encode_value(owner), 0),
    )
}

pub fn remove_pod_cidr(ebpf: &mut Ebpf, cidr: Ipv4Network) -> Result<(), TableError> {
    let mut map = lpm::<PodCidrKey, PodCidrInfo>(ebpf, map_names::POD_CIDRS)?;
    removed(map_names::POD_CIDRS, map.remove(&encode_key(cidr)))
}

/// The map's content, by prefix.
pub fn pod_cidr_entries(
    ebpf: &mut Ebpf,
) -> Result<BTreeMap<Ipv4Network, PodCidrOwner>, TableError> {
    let map = lpm::<PodCidrKey, PodCidrInfo>(ebpf, map_names::POD_CIDRS)?;
    let mut entries = BTreeMap::new();
    for item in map.iter() {
        let (key, value) = item.map_err(map_err(map_names::POD_CIDRS))?;
        if let Some(cidr) = decode_key(&key) {
            entries.insert(cidr, decode_value(&value));
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip() {
        let cidr: Ipv4Network = "10.244.2.0/24".parse().unwrap();
        let key = encode_key(cidr);
        assert_eq!(key.prefix_len(), 24);
        assert_eq!(key.data().addr, [10, 244, 2, 0]);
        assert_eq!(decode_key(&key), Some(cidr));
        assert_eq!(decode_key(&Key::new(33, PodCidrKey::default())), None);
        for local in [true, false] {
            let owner = PodCidrOwner {
                node_ip: Ipv4Addr::new(10, 77, 0, 12),
                local,
            };
            let value = encode_value(owner);
            assert_eq!(value.node_ipv4, [10, 77, 0, 12]);
            assert_eq!(value.is_local(), local);
            assert_eq!(decode_value(&value), owner);
        }
    }
}
