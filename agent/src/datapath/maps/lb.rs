//! The load-balancing maps (`weir_abi::lb`): typed entries built from
//! weir-lb's frontend and backend types, their encoding into the kernel's
//! layouts and back, and access to the maps (what the service sync writes
//! and what `weir bpf lb list` reads). Errors name the map.
//!
//! ```text
//! ServiceEntry  (frontend, slot 0)  ─▶ Lb4Key, Lb4Service { count, rev_nat_id, flags, affinity, maglev_table }
//! SlotEntry     (frontend, slot n)  ─▶ Lb4Key, Lb4Service { backend_id }
//! BackendEntry  (id)                ─▶ Lb4Backend
//! RevNatEntry   (id)                ─▶ Lb4RevNat
//! Maglev table t, slot s            ─▶ weir_lb4_maglev[t * size + s] = backend id
//! ```

use std::net::Ipv4Addr;

use aya::maps::{Array, MapData, MapError};
use aya::Ebpf;
use weir_abi::lb::{
    Lb4AffinityKey, Lb4AffinityValue, Lb4Backend, Lb4Key, Lb4NatEntry, Lb4NatKey, Lb4RevNat,
    Lb4Service, Lb4SockKey, Lb4SockRevNat, LB_SCOPE_EXTERNAL, LB_SCOPE_INTERNAL,
};
use weir_abi::map_names;
use weir_lb::maglev::Table;
use weir_lb::{BackendState, FrontendKey, FrontendKind, Protocol, Scope};

use super::{hash, map_err, removed, updated, TableError};

/// Slot 0 of a frontend in `weir_lb4_services`: the service itself.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    pub frontend: FrontendKey,
    pub kind: FrontendKind,
    /// Active backends, in slots 1..=count.
    pub count: u16,
    pub rev_nat_id: u16,
    /// `Some(seconds)` with sessionAffinity ClientIP.
    pub affinity_timeout: Option<u32>,
    /// The Maglev table (its number in `weir_lb4_maglev`) it selects through.
    pub maglev_table: Option<u32>,
}

/// Slot 1..=count of a frontend: the backend that slot selects.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SlotEntry {
    pub frontend: FrontendKey,
    pub slot: u16,
    pub backend_id: u32,
}

/// An entry of `weir_lb4_services`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ServiceMapEntry {
    Service(ServiceEntry),
    Slot(SlotEntry),
}

/// An entry of `weir_lb4_backends` (keyed by backend id).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BackendEntry {
    pub address: Ipv4Addr,
    pub port: u16,
    /// The protocol of the frontends that use it.
    pub protocol: Protocol,
    pub state: BackendState,
    /// A pod on this node (no SNAT for per-packet NAT).
    pub local: bool,
}

/// An entry of `weir_lb4_revnat` (keyed by reverse-NAT id): the frontend
/// replies appear to come from.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RevNatEntry {
    pub address: Ipv4Addr,
    pub port: u16,
}

/// A kernel entry that no typed entry encodes to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LbCodecError {
    #[error("IP protocol {0} is not load-balanced")]
    Protocol(u8),
    #[error("unknown scope {0}")]
    Scope(u8),
    #[error("service flags {0:#x} are not one frontend kind and known options")]
    ServiceFlags(u16),
    #[error("unknown backend state {0}")]
    BackendState(u8),
    #[error("unknown backend flags {0:#x}")]
    BackendFlags(u8),
}

/// The protocol of an IP protocol number the LB maps carry.
pub fn protocol_of(number: u8) -> Option<Protocol> {
    [Protocol::Tcp, Protocol::Udp]
        .into_iter()
        .find(|p| p.number() == number)
}

const KINDS: [(FrontendKind, u16); 5] = [
    (FrontendKind::ClusterIp, Lb4Service::FLAG_CLUSTER_IP),
    (FrontendKind::NodePort, Lb4Service::FLAG_NODE_PORT),
    (FrontendKind::ExternalIp, Lb4Service::FLAG_EXTERNAL_IP),
    (FrontendKind::LoadBalancer, Lb4Service::FLAG_LOAD_BALANCER),
    (FrontendKind::HostPort, Lb4Service::FLAG_HOST_PORT),
];

fn kind_flag(kind: FrontendKind) -> u16 {
    KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(0, |(_, flag)| *flag)
}

/// The service map key of a frontend's entry (`slot` 0) or backend slot.
pub fn service_key(frontend: &FrontendKey, slot: u16) -> Lb4Key {
    Lb4Key {
        address: frontend.address.octets(),
        port: frontend.port.to_be_bytes(),
        backend_slot: slot,
        protocol: frontend.protocol.number(),
        scope: match frontend.scope {
            Scope::External => LB_SCOPE_EXTERNAL,
            Scope::Internal => LB_SCOPE_INTERNAL,
        },
        pad: [0; 2],
    }
}

/// The frontend and slot of a service map key.
pub fn decode_service_key(key: &Lb4Key) -> Result<(FrontendKey, u16), LbCodecError> {
    let frontend = FrontendKey {
        address: Ipv4Addr::from(key.address),
        port: u16::from_be_bytes(key.port),
        protocol: protocol_of(key.protocol).ok_or(LbCodecError::Protocol(key.protocol))?,
        scope: match key.scope {
            LB_SCOPE_EXTERNAL => Scope::External,
            LB_SCOPE_INTERNAL => Scope::Internal,
            other => return Err(LbCodecError::Scope(other)),
        },
    };
    Ok((frontend, key.backend_slot))
}

pub fn encode_service(entry: &ServiceEntry) -> (Lb4Key, Lb4Service) {
    let mut flags = kind_flag(entry.kind);
    if entry.affinity_timeout.is_some() {
        flags |= Lb4Service::FLAG_AFFINITY;
    }
    if entry.maglev_table.is_some() {
        flags |= Lb4Service::FLAG_MAGLEV;
    }
    let value = Lb4Service {
        backend_id: 0,
        count: entry.count,
        rev_nat_id: entry.rev_nat_id,
        flags,
        pad: 0,
        affinity_timeout_s: entry.affinity_timeout.unwrap_or(0),
        maglev_table: entry.maglev_table.unwrap_or(0),
    };
    (service_key(&entry.frontend, 0), value)
}

pub fn encode_slot(entry: &SlotEntry) -> (Lb4Key, Lb4Service) {
    let value = Lb4Service {
        backend_id: entry.backend_id,
        ..Default::default()
    };
    (service_key(&entry.frontend, entry.slot), value)
}

pub fn decode_service(key: &Lb4Key, value: &Lb4Service) -> Result<ServiceMapEntry, LbCodecError> {
    let (frontend, slot) = decode_service_key(key)?;
    if slot != 0 {
        return Ok(ServiceMapEntry::Slot(SlotEntry {
            frontend,
            slot,
            backend_id: value.backend_id,
        }));
    }
    let options = Lb4Service::FLAG_AFFINITY | Lb4Service::FLAG_MAGLEV;
    let kind = KINDS
        .iter()
        .find(|(_, flag)| value.flags & !options == *flag)
        .map(|(kind, _)| *kind)
        .ok_or(LbCodecError::ServiceFlags(value.flags))?;
    let has = |flag: u16| value.flags & flag != 0;
    Ok(ServiceMapEntry::Service(ServiceEntry {
        frontend,
        kind,
        count: value.count,
        rev_nat_id: value.rev_nat_id,
        affinity_timeout: has(Lb4Service::FLAG_AFFINITY).then_some(value.affinity_timeout_s),
        maglev_table: has(Lb4Service::FLAG_MAGLEV).then_some(value.maglev_table),
    }))
}

pub fn encode_backend(entry: &BackendEntry) -> Lb4Backend {
    Lb4Backend {
        address: entry.address.octets(),
        port: entry.port.to_be_bytes(),
        protocol: entry.protocol.number(),
        state: match entry.state {
            BackendState::Active => Lb4Backend::STATE_ACTIVE,
            BackendState::Terminating => Lb4Backend::STATE_TERMINATING,
        },
        flags: if entry.local {
            Lb4Backend::FLAG_LOCAL
        } else {
            0
        },
        pad: [0; 3],
    }
}

pub fn decode_backend(value: &Lb4Backend) -> Result<BackendEntry, LbCodecError> {
    if value.flags & !Lb4Backend::FLAG_LOCAL != 0 {
        return Err(LbCodecError::BackendFlags(value.flags));
    }
    Ok(BackendEntry {
        address: Ipv4Addr::from(value.address),
        port: u16::from_be_bytes(value.port),
        protocol: protocol_of(value.protocol).ok_or(LbCodecError::Protocol(value.protocol))?,
        state: match value.state {
            Lb4Backend::STATE_ACTIVE => BackendState::Active,
            Lb4Backend::STATE_TERMINATING => BackendState::Terminating,
            other => return Err(LbCodecError::BackendState(other)),
        },
        local: value.flags & Lb4Backend::FLAG_LOCAL != 0,
    })
}

pub fn encode_revnat(entry: &RevNatEntry) -> Lb4RevNat {
    Lb4RevNat {
        address: entry.address.octets(),
        port: entry.port.to_be_bytes(),
        pad: [0; 2],
    }
}

pub fn decode_revnat(value: &Lb4RevNat) -> RevNatEntry {
    RevNatEntry {
        address: Ipv4Addr::from(value.address),
        port: u16::from_be_bytes(value.port),
    }
}

/// A frontend's Maglev table as the datapath holds it: the backend id of
/// each slot. `table`'s slots index the frontend's backends, and
/// `backend_ids` holds their ids in the same order; `None` if a slot
/// indexes past them.
pub fn maglev_backend_ids(table: &Table, backend_ids: &[u32]) -> Option<Vec<u32>> {
    table
        .slots()
        .iter()
        .map(|index| backend_ids.get(*index as usize).copied())
        .collect()
}

/// The index in `weir_lb4_maglev` of slot `slot` of table `table`, tables
/// being `size` slots each.
pub fn maglev_index(table: u32, size: u32, slot: u32) -> u32 {
    table * size + slot
}

fn upsert<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    key: K,
    value: V,
) -> Result<(), TableError> {
    updated(name, hash::<K, V>(ebpf, name)?.insert(key, value, 0))
}

fn remove<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    key: &K,
) -> Result<(), TableError> {
    removed(name, hash::<K, V>(ebpf, name)?.remove(key))
}

fn entries<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<Vec<(K, V)>, TableError> {
    hash::<K, V>(ebpf, name)?
        .iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(map_err(name))
}

pub fn set_service(ebpf: &mut Ebpf, key: Lb4Key, value: Lb4Service) -> Result<(), TableError> {
    upsert(ebpf, map_names::LB4_SERVICES, key, value)
}

pub fn remove_service(ebpf: &mut Ebpf, key: &Lb4Key) -> Result<(), TableError> {
    remove::<Lb4Key, Lb4Service>(ebpf, map_names::LB4_SERVICES, key)
}

pub fn services(ebpf: &mut Ebpf) -> Result<Vec<(Lb4Key, Lb4Service)>, TableError> {
    entries(ebpf, map_names::LB4_SERVICES)
}

pub fn set_backend(ebpf: &mut Ebpf, id: u32, value: Lb4Backend) -> Result<(), TableError> {
    upsert(ebpf, map_names::LB4_BACKENDS, id, value)
}

pub fn remove_backend(ebpf: &mut Ebpf, id: u32) -> Result<(), TableError> {
    remove::<u32, Lb4Backend>(ebpf, map_names::LB4_BACKENDS, &id)
}

pub fn backends(ebpf: &mut Ebpf) -> Result<Vec<(u32, Lb4Backend)>, TableError> {
    entries(ebpf, map_names::LB4_BACKENDS)
}

pub fn set_revnat(ebpf: &mut Ebpf, id: u16, value: Lb4RevNat) -> Result<(), TableError> {
    upsert(ebpf, map_names::LB4_REVNAT, id, value)
}

pub fn remove_revnat(ebpf: &mut Ebpf, id: u16) -> Result<(), TableError> {
    remove::<u16, Lb4RevNat>(ebpf, map_names::LB4_REVNAT, &id)
}

pub fn revnats(ebpf: &mut Ebpf) -> Result<Vec<(u16, Lb4RevNat)>, TableError> {
    entries(ebpf, map_names::LB4_REVNAT)
}

/// Per-packet NAT mappings (`weir_lb4_nat`).
pub fn nat_entries(ebpf: &mut Ebpf) -> Result<Vec<(Lb4NatKey, Lb4NatEntry)>, TableError> {
    entries(ebpf, map_names::LB4_NAT)
}

/// The per-packet NAT mappings as the datapath changes them while they
/// are read: a mapping removed between its key and its value is skipped.
pub fn nat_entries_live(ebpf: &mut Ebpf) -> Result<Vec<(Lb4NatKey, Lb4NatEntry)>, TableError> {
    live_entries(ebpf, map_names::LB4_NAT)
}

pub fn remove_nat(ebpf: &mut Ebpf, key: &Lb4NatKey) -> Result<(), TableError> {
    remove::<Lb4NatKey, Lb4NatEntry>(ebpf, map_names::LB4_NAT, key)
}

/// Session affinity (`weir_lb4_affinity`), read as the datapath changes it.
pub fn affinity_entries(
    ebpf: &mut Ebpf,
) -> Result<Vec<(Lb4AffinityKey, Lb4AffinityValue)>, TableError> {
    live_entries(ebpf, map_names::LB4_AFFINITY)
}

pub fn remove_affinity(ebpf: &mut Ebpf, key: &Lb4AffinityKey) -> Result<(), TableError> {
    remove::<Lb4AffinityKey, Lb4AffinityValue>(ebpf, map_names::LB4_AFFINITY, key)
}

/// Socket LB reverse translations (`weir_lb4_sock_revnat`), read as the
/// datapath changes them.
pub fn sock_revnat_entries(
    ebpf: &mut Ebpf,
) -> Result<Vec<(Lb4SockKey, Lb4SockRevNat)>, TableError> {
    live_entries(ebpf, map_names::LB4_SOCK_REVNAT)
}

pub fn remove_sock_revnat(ebpf: &mut Ebpf, key: &Lb4SockKey) -> Result<(), TableError> {
    remove::<Lb4SockKey, Lb4SockRevNat>(ebpf, map_names::LB4_SOCK_REVNAT, key)
}

/// Entries of a map the datapath inserts into and evicts from while it is
/// read (the LRU maps). A key removed under the walk restarts the kernel's
/// walk from the start, so the walk is bounded: twice the largest of these
/// maps (`weir_lb4_nat`, 131072 entries).
const LIVE_WALK_BOUND: usize = 2 * 131_072;

fn live_entries<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<Vec<(K, V)>, TableError> {
    let map = hash::<K, V>(ebpf, name)?;
    let mut found = Vec::new();
    for key in map.keys().take(LIVE_WALK_BOUND) {
        let key = key.map_err(map_err(name))?;
        match map.get(&key, 0) {
            Ok(value) => found.push((key, value)),
            Err(MapError::KeyNotFound) => {}
            Err(source) => return Err(TableError::Map { map: name, source }),
        }
    }
    Ok(found)
}

/// Writes Maglev table number `table` (backend ids, one per slot).
pub fn set_maglev_table(ebpf: &mut Ebpf, table: u32, slots: &[u32]) -> Result<(), TableError> {
    let name = map_names::LB4_MAGLEV;
    let map = ebpf.map_mut(name).ok_or(TableError::Missing(name))?;
    let mut array: Array<&mut MapData, u32> = Array::try_from(map).map_err(map_err(name))?;
    let size = slots.len() as u32;
    for (slot, id) in (0..).zip(slots) {
        array
            .set(maglev_index(table, size, slot), id, 0)
            .map_err(map_err(name))?;
    }
    Ok(())
}

/// Reads Maglev table number `table` of `size` slots.
pub fn maglev_table(ebpf: &mut Ebpf, table: u32, size: u32) -> Result<Vec<u32>, TableError> {
    let name = map_names::LB4_MAGLEV;
    let map = ebpf.map_mut(name).ok_or(TableError::Missing(name))?;
    let array: Array<&mut MapData, u32> = Array::try_from(map).map_err(map_err(name))?;
    (0..size)
        .map(|slot| {
            array
                .get(&maglev_index(table, size, slot), 0)
                .map_err(map_err(name))
        })
        .collect()
}

#[cfg(test)]
mod tests;
