//! `weir_pod_cidrs`: every node's pod CIDR with the node owning it, an LPM
//! trie the node-device programs look a packet's source up in
//! (anti-spoofing, see `ebpf/abi/src/pod_cidr.rs`) and the tunnel its
//! destination; `weir_pod_cidrs6` the same for dual-stack nodes' IPv6 pod
//! CIDRs (the tunnel only). The functions taking an [`IpNetwork`] pick the
//! map by its family.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use aya::maps::lpm_trie::Key;
use aya::Ebpf;
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use weir_abi::{map_names, PodCidr6Key, PodCidrInfo, PodCidrKey};

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

fn encode_key6(cidr: Ipv6Network) -> Key<PodCidr6Key> {
    Key::new(
        u32::from(cidr.prefix()),
        PodCidr6Key {
            addr: cidr.network().octets(),
        },
    )
}

fn decode_key6(key: &Key<PodCidr6Key>) -> Option<Ipv6Network> {
    let bits = u8::try_from(key.prefix_len()).ok()?;
    Ipv6Network::new(Ipv6Addr::from(key.data().addr), bits).ok()
}

pub fn set_pod_cidr(
    ebpf: &mut Ebpf,
    cidr: IpNetwork,
    owner: PodCidrOwner,
) -> Result<(), TableError> {
    let value = encode_value(owner);
    match cidr {
        IpNetwork::V4(cidr) => {
            let mut map = lpm::<PodCidrKey, PodCidrInfo>(ebpf, map_names::POD_CIDRS)?;
            updated(
                map_names::POD_CIDRS,
                map.insert(&encode_key(cidr), value, 0),
            )
        }
        IpNetwork::V6(cidr) => {
            let mut map = lpm::<PodCidr6Key, PodCidrInfo>(ebpf, map_names::POD_CIDRS6)?;
            updated(
                map_names::POD_CIDRS6,
                map.insert(&encode_key6(cidr), value, 0),
            )
        }
    }
}

pub fn remove_pod_cidr(ebpf: &mut Ebpf, cidr: IpNetwork) -> Result<(), TableError> {
    match cidr {
        IpNetwork::V4(cidr) => {
            let mut map = lpm::<PodCidrKey, PodCidrInfo>(ebpf, map_names::POD_CIDRS)?;
            removed(map_names::POD_CIDRS, map.remove(&encode_key(cidr)))
        }
        IpNetwork::V6(cidr) => {
            let mut map = lpm::<PodCidr6Key, PodCidrInfo>(ebpf, map_names::POD_CIDRS6)?;
            removed(map_names::POD_CIDRS6, map.remove(&encode_key6(cidr)))
        }
    }
}

/// Both maps' content, by prefix.
pub fn pod_cidr_entries(ebpf: &mut Ebpf) -> Result<BTreeMap<IpNetwork, PodCidrOwner>, TableError> {
    let mut entries = BTreeMap::new();
    let map = lpm::<PodCidrKey, PodCidrInfo>(ebpf, map_names::POD_CIDRS)?;
    for item in map.iter() {
        let (key, value) = item.map_err(map_err(map_names::POD_CIDRS))?;
        if let Some(cidr) = decode_key(&key) {
            entries.insert(cidr.into(), decode_value(&value));
        }
    }
    let map = lpm::<PodCidr6Key, PodCidrInfo>(ebpf, map_names::POD_CIDRS6)?;
    for item in map.iter() {
        let (key, value) = item.map_err(map_err(map_names::POD_CIDRS6))?;
        if let Some(cidr) = decode_key6(&key) {
            entries.insert(cidr.into(), decode_value(&value));
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
        let cidr6: Ipv6Network = "fd00:10:244:2::/112".parse().unwrap();
        assert_eq!(decode_key6(&encode_key6(cidr6)), Some(cidr6));
        assert_eq!(decode_key6(&Key::new(129, PodCidr6Key::default())), None);
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
