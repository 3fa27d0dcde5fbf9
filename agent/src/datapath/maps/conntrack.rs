//! `weir_conntrack` (TCP) and `weir_conntrack_any` (every other protocol):
//! the LRUs of tracked connections, read for inspection and
//! garbage-collected by the agent (an LRU only evicts under pressure).

use std::net::IpAddr;

use aya::Ebpf;
use weir_abi::ip_proto;
use weir_abi::ipcache::{FAMILY_IPV4, FAMILY_IPV6};
use weir_abi::lb::Lb4AffinityKey;
use weir_abi::{map_names, CtEntry, CtKey};

use super::{hash, map_err, TableError};

/// Every conntrack entry, of both maps.
pub fn conntrack(ebpf: &mut Ebpf) -> Result<Vec<(CtKey, CtEntry)>, TableError> {
    let mut entries = Vec::new();
    for name in map_names::CONNTRACK_MAPS {
        entries.extend(conntrack_of(ebpf, name)?);
    }
    Ok(entries)
}

/// The entries of one conntrack map (`map_names::CONNTRACK` or
/// `CONNTRACK_ANY`).
pub fn conntrack_of(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<Vec<(CtKey, CtEntry)>, TableError> {
    hash::<CtKey, CtEntry>(ebpf, name)?
        .iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(map_err(name))
}

/// The map an entry of `protocol` lives in.
pub fn conntrack_map_of(protocol: u8) -> &'static str {
    if protocol == ip_proto::TCP {
        map_names::CONNTRACK
    } else {
        map_names::CONNTRACK_ANY
    }
}

/// Removes the entries `keys` (each from its protocol's map); returns how
/// many were there.
fn remove_entries(ebpf: &mut Ebpf, keys: &[CtKey]) -> Result<usize, TableError> {
    let mut removed = 0;
    for name in map_names::CONNTRACK_MAPS {
        let mut map = hash::<CtKey, CtEntry>(ebpf, name)?;
        for key in keys.iter().filter(|k| conntrack_map_of(k.protocol) == name) {
            if map.remove(key).is_ok() {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// Deletes conntrack entries that expired before `now_ns` (the kernel's
/// CLOCK_MONOTONIC, as `bpf_ktime_get_ns`); returns how many.
pub fn conntrack_gc(ebpf: &mut Ebpf, now_ns: u64) -> Result<usize, TableError> {
    let expired: Vec<CtKey> = conntrack(ebpf)?
        .into_iter()
        .filter(|(_, entry)| entry.expires_ns < now_ns)
        .map(|(key, _)| key)
        .collect();
    remove_entries(ebpf, &expired)
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_now_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available");
    now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64
}

/// What [`forget_address`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Forgotten {
    pub conntrack: usize,
    pub nat: usize,
    pub affinity: usize,
}

/// Removes every connection-tracking, service-NAT and per-address affinity
/// entry of `address` (as either end): a released pod address must not
/// carry the old pod's connections over to the next pod given it, past
/// that pod's ingress policy (issue 16 item 5).
pub fn forget_address(ebpf: &mut Ebpf, address: IpAddr) -> Result<Forgotten, TableError> {
    let (family, octets) = match address {
        IpAddr::V4(v4) => (FAMILY_IPV4, v4.octets().to_vec()),
        IpAddr::V6(v6) => (FAMILY_IPV6, v6.octets().to_vec()),
    };
    let is = |bytes: &[u8]| bytes.get(..octets.len()) == Some(&octets[..]);
    let conntrack_keys: Vec<CtKey> = conntrack(ebpf)?
        .into_iter()
        .filter(|(key, _)| key.family == family && (is(&key.saddr) || is(&key.daddr)))
        .map(|(key, _)| key)
        .collect();
    let mut forgotten = Forgotten {
        conntrack: remove_entries(ebpf, &conntrack_keys)?,
        ..Forgotten::default()
    };
    // Service NAT and affinity are IPv4 only.
    let IpAddr::V4(address) = address else {
        return Ok(forgotten);
    };
    let octets = address.octets();
    let nat_keys: Vec<_> = super::lb::nat_entries(ebpf)?
        .into_iter()
        .filter(|(key, _)| key.saddr == octets || key.daddr == octets)
        .map(|(key, _)| key)
        .collect();
    for key in &nat_keys {
        super::lb::remove_nat(ebpf, key)?;
        forgotten.nat += 1;
    }
    let client = u64::from(u32::from_ne_bytes(octets));
    let affinity_keys: Vec<_> = super::lb::affinity_entries(ebpf)?
        .into_iter()
        .filter(|(key, _)| key.kind == Lb4AffinityKey::KIND_ADDRESS && key.client == client)
        .map(|(key, _)| key)
        .collect();
    for key in &affinity_keys {
        super::lb::remove_affinity(ebpf, key)?;
        forgotten.affinity += 1;
    }
    Ok(forgotten)
}
