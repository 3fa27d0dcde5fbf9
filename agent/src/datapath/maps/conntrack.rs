//! `weir_conntrack`: the LRU of tracked connections, read for inspection
//! and garbage-collected by the agent (the LRU only evicts under pressure).

use std::net::Ipv4Addr;

use aya::Ebpf;
use weir_abi::ipcache::FAMILY_IPV4;
use weir_abi::lb::Lb4AffinityKey;
use weir_abi::{map_names, CtEntry, CtKey};

use super::{hash, map_err, TableError};

/// Every conntrack entry.
pub fn conntrack(ebpf: &mut Ebpf) -> Result<Vec<(CtKey, CtEntry)>, TableError> {
    hash::<CtKey, CtEntry>(ebpf, map_names::CONNTRACK)?
        .iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(map_err(map_names::CONNTRACK))
}

/// Deletes conntrack entries that expired before `now_ns` (the kernel's
/// CLOCK_MONOTONIC, as `bpf_ktime_get_ns`); returns how many.
pub fn conntrack_gc(ebpf: &mut Ebpf, now_ns: u64) -> Result<usize, TableError> {
    let expired: Vec<CtKey> = conntrack(ebpf)?
        .into_iter()
        .filter(|(_, entry)| entry.expires_ns < now_ns)
        .map(|(key, _)| key)
        .collect();
    let mut map = hash::<CtKey, CtEntry>(ebpf, map_names::CONNTRACK)?;
    let mut removed = 0;
    for key in &expired {
        if map.remove(key).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
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
pub fn forget_address(ebpf: &mut Ebpf, address: Ipv4Addr) -> Result<Forgotten, TableError> {
    let octets = address.octets();
    let is = |bytes: &[u8]| bytes.get(..4) == Some(&octets[..]);
    let conntrack_keys: Vec<CtKey> = conntrack(ebpf)?
        .into_iter()
        .filter(|(key, _)| key.family == FAMILY_IPV4 && (is(&key.saddr) || is(&key.daddr)))
        .map(|(key, _)| key)
        .collect();
    let mut forgotten = Forgotten::default();
    {
        let mut map = hash::<CtKey, CtEntry>(ebpf, map_names::CONNTRACK)?;
        for key in &conntrack_keys {
            if map.remove(key).is_ok() {
                forgotten.conntrack += 1;
            }
        }
    }
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
