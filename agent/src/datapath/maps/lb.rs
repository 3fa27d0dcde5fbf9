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
//!
//! IPv6 frontends (socket LB only) go to `weir_lb6_services` and
//! `weir_lb6_backends` with the same entries over `Lb6Key`/`Lb6Backend`
//! ([`LbFamily`] says which layout a family uses); they have no reverse-NAT
//! map entry and share the Maglev tables.

use std::fmt::Debug;
use std::net::{Ipv4Addr, Ipv6Addr};

use aya::maps::{Array, MapData, MapError};
use aya::Ebpf;
use weir_abi::lb::{
    Lb4AffinityKey, Lb4AffinityValue, Lb4Backend, Lb4Key, Lb4NatEntry, Lb4NatKey, Lb4RevNat,
    Lb4Service, Lb4SockKey, Lb4SockRevNat, Lb6Backend, Lb6Key, Lb6NatEntry, Lb6NatKey, Lb6Service,
    Lb6SockKey, Lb6SockRevNat, LB_SCOPE_EXTERNAL, LB_SCOPE_INTERNAL,
};
use weir_abi::map_names;
use weir_lb::maglev::Table;
use weir_lb::{BackendState, FrontendKey, FrontendKind, LbAddress, Protocol, Scope};

use super::{hash, map_err, removed, updated, TableError};

/// Slot 0 of a frontend in `weir_lb4_services` (`weir_lb6_services`): the
/// service itself.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ServiceEntry<A = Ipv4Addr> {
    pub frontend: FrontendKey<A>,
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
pub struct SlotEntry<A = Ipv4Addr> {
    pub frontend: FrontendKey<A>,
    pub slot: u16,
    pub backend_id: u32,
}

/// An entry of `weir_lb4_services`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ServiceMapEntry<A = Ipv4Addr> {
    Service(ServiceEntry<A>),
    Slot(SlotEntry<A>),
}

/// An entry of `weir_lb4_backends` (`weir_lb6_backends`), keyed by backend
/// id.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BackendEntry<A = Ipv4Addr> {
    pub address: A,
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
    (service_key(&entry.frontend, 0), service_value(entry))
}

/// The value of a frontend's entry (slot 0), whatever its family.
fn service_value<A>(entry: &ServiceEntry<A>) -> Lb4Service {
    let mut flags = kind_flag(entry.kind);
    if entry.affinity_timeout.is_some() {
        flags |= Lb4Service::FLAG_AFFINITY;
    }
    if entry.maglev_table.is_some() {
        flags |= Lb4Service::FLAG_MAGLEV;
    }
    Lb4Service {
        backend_id: 0,
        count: entry.count,
        rev_nat_id: entry.rev_nat_id,
        flags,
        pad: 0,
        affinity_timeout_s: entry.affinity_timeout.unwrap_or(0),
        maglev_table: entry.maglev_table.unwrap_or(0),
    }
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
    decode_service_value(frontend, slot, value)
}

/// A service map entry of any family, its key decoded.
fn decode_service_value<A>(
    frontend: FrontendKey<A>,
    slot: u16,
    value: &Lb4Service,
) -> Result<ServiceMapEntry<A>, LbCodecError> {
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
    let (protocol, state, flags) = backend_fields(entry);
    Lb4Backend {
        address: entry.address.octets(),
        port: entry.port.to_be_bytes(),
        protocol,
        state,
        flags,
        pad: [0; 3],
    }
}

/// Protocol, state and flags of a backend entry of any family.
fn backend_fields<A>(entry: &BackendEntry<A>) -> (u8, u8, u8) {
    let state = match entry.state {
        BackendState::Active => Lb4Backend::STATE_ACTIVE,
        BackendState::Terminating => Lb4Backend::STATE_TERMINATING,
    };
    let flags = if entry.local {
        Lb4Backend::FLAG_LOCAL
    } else {
        0
    };
    (entry.protocol.number(), state, flags)
}

pub fn decode_backend(value: &Lb4Backend) -> Result<BackendEntry, LbCodecError> {
    decode_backend_fields(
        Ipv4Addr::from(value.address),
        value.port,
        value.protocol,
        value.state,
        value.flags,
    )
}

fn decode_backend_fields<A>(
    address: A,
    port: [u8; 2],
    protocol: u8,
    state: u8,
    flags: u8,
) -> Result<BackendEntry<A>, LbCodecError> {
    if flags & !Lb4Backend::FLAG_LOCAL != 0 {
        return Err(LbCodecError::BackendFlags(flags));
    }
    Ok(BackendEntry {
        address,
        port: u16::from_be_bytes(port),
        protocol: protocol_of(protocol).ok_or(LbCodecError::Protocol(protocol))?,
        state: match state {
            Lb4Backend::STATE_ACTIVE => BackendState::Active,
            Lb4Backend::STATE_TERMINATING => BackendState::Terminating,
            other => return Err(LbCodecError::BackendState(other)),
        },
        local: flags & Lb4Backend::FLAG_LOCAL != 0,
    })
}

fn scope_number(scope: Scope) -> u8 {
    match scope {
        Scope::External => LB_SCOPE_EXTERNAL,
        Scope::Internal => LB_SCOPE_INTERNAL,
    }
}

fn scope_of(number: u8) -> Result<Scope, LbCodecError> {
    match number {
        LB_SCOPE_EXTERNAL => Ok(Scope::External),
        LB_SCOPE_INTERNAL => Ok(Scope::Internal),
        other => Err(LbCodecError::Scope(other)),
    }
}

/// A family's layouts in the LB maps: `weir_lb4_*` for IPv4, `weir_lb6_*`
/// for IPv6. The service value ([`Lb4Service`]) is the same in both.
pub trait LbFamily: LbAddress {
    /// Key of the family's services map.
    type Key: aya::Pod + Copy + Ord + Debug;
    /// Value of the family's backends map.
    type Backend: aya::Pod + Copy + PartialEq + Debug;
    const SERVICES_MAP: &'static str;
    const BACKENDS_MAP: &'static str;

    fn service_key(frontend: &FrontendKey<Self>, slot: u16) -> Self::Key;
    fn decode_service_key(key: &Self::Key) -> Result<(FrontendKey<Self>, u16), LbCodecError>;
    fn encode_backend(entry: &BackendEntry<Self>) -> Self::Backend;
    fn decode_backend(value: &Self::Backend) -> Result<BackendEntry<Self>, LbCodecError>;

    fn encode_service(entry: &ServiceEntry<Self>) -> (Self::Key, Lb4Service) {
        (Self::service_key(&entry.frontend, 0), service_value(entry))
    }

    fn encode_slot(entry: &SlotEntry<Self>) -> (Self::Key, Lb4Service) {
        let value = Lb4Service {
            backend_id: entry.backend_id,
            ..Default::default()
        };
        (Self::service_key(&entry.frontend, entry.slot), value)
    }

    fn decode_service(
        key: &Self::Key,
        value: &Lb4Service,
    ) -> Result<ServiceMapEntry<Self>, LbCodecError> {
        let (frontend, slot) = Self::decode_service_key(key)?;
        decode_service_value(frontend, slot, value)
    }
}

impl LbFamily for Ipv4Addr {
    type Key = Lb4Key;
    type Backend = Lb4Backend;
    const SERVICES_MAP: &'static str = map_names::LB4_SERVICES;
    const BACKENDS_MAP: &'static str = map_names::LB4_BACKENDS;

    fn service_key(frontend: &FrontendKey, slot: u16) -> Lb4Key {
        service_key(frontend, slot)
    }

    fn decode_service_key(key: &Lb4Key) -> Result<(FrontendKey, u16), LbCodecError> {
        decode_service_key(key)
    }

    fn encode_backend(entry: &BackendEntry) -> Lb4Backend {
        encode_backend(entry)
    }

    fn decode_backend(value: &Lb4Backend) -> Result<BackendEntry, LbCodecError> {
        decode_backend(value)
    }
}

impl LbFamily for Ipv6Addr {
    type Key = Lb6Key;
    type Backend = Lb6Backend;
    const SERVICES_MAP: &'static str = map_names::LB6_SERVICES;
    const BACKENDS_MAP: &'static str = map_names::LB6_BACKENDS;

    fn service_key(frontend: &FrontendKey<Ipv6Addr>, slot: u16) -> Lb6Key {
        Lb6Key {
            address: frontend.address.octets(),
            port: frontend.port.to_be_bytes(),
            backend_slot: slot,
            protocol: frontend.protocol.number(),
            scope: scope_number(frontend.scope),
            pad: [0; 2],
        }
    }

    fn decode_service_key(key: &Lb6Key) -> Result<(FrontendKey<Ipv6Addr>, u16), LbCodecError> {
        let frontend = FrontendKey {
            address: Ipv6Addr::from(key.address),
            port: u16::from_be_bytes(key.port),
            protocol: protocol_of(key.protocol).ok_or(LbCodecError::Protocol(key.protocol))?,
            scope: scope_of(key.scope)?,
        };
        Ok((frontend, key.backend_slot))
    }

    fn encode_backend(entry: &BackendEntry<Ipv6Addr>) -> Lb6Backend {
        let (protocol, state, flags) = backend_fields(entry);
        Lb6Backend {
            address: entry.address.octets(),
            port: entry.port.to_be_bytes(),
            protocol,
            state,
            flags,
            pad: [0; 3],
        }
    }

    fn decode_backend(value: &Lb6Backend) -> Result<BackendEntry<Ipv6Addr>, LbCodecError> {
        decode_backend_fields(
            Ipv6Addr::from(value.address),
            value.port,
            value.protocol,
            value.state,
            value.flags,
        )
    }
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

pub fn set_service6(ebpf: &mut Ebpf, key: Lb6Key, value: Lb6Service) -> Result<(), TableError> {
    upsert(ebpf, map_names::LB6_SERVICES, key, value)
}

pub fn remove_service6(ebpf: &mut Ebpf, key: &Lb6Key) -> Result<(), TableError> {
    remove::<Lb6Key, Lb6Service>(ebpf, map_names::LB6_SERVICES, key)
}

pub fn services6(ebpf: &mut Ebpf) -> Result<Vec<(Lb6Key, Lb6Service)>, TableError> {
    entries(ebpf, map_names::LB6_SERVICES)
}

pub fn set_backend6(ebpf: &mut Ebpf, id: u32, value: Lb6Backend) -> Result<(), TableError> {
    upsert(ebpf, map_names::LB6_BACKENDS, id, value)
}

pub fn remove_backend6(ebpf: &mut Ebpf, id: u32) -> Result<(), TableError> {
    remove::<u32, Lb6Backend>(ebpf, map_names::LB6_BACKENDS, &id)
}

pub fn backends6(ebpf: &mut Ebpf) -> Result<Vec<(u32, Lb6Backend)>, TableError> {
    entries(ebpf, map_names::LB6_BACKENDS)
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

/// Per-packet NAT mappings of IPv6 NodePorts (`weir_lb6_nat`), read as the
/// datapath changes them.
pub fn nat6_entries_live(ebpf: &mut Ebpf) -> Result<Vec<(Lb6NatKey, Lb6NatEntry)>, TableError> {
    live_entries(ebpf, map_names::LB6_NAT)
}

pub fn remove_nat6(ebpf: &mut Ebpf, key: &Lb6NatKey) -> Result<(), TableError> {
    remove::<Lb6NatKey, Lb6NatEntry>(ebpf, map_names::LB6_NAT, key)
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

/// Socket LB reverse translations of IPv6 sockets
/// (`weir_lb6_sock_revnat`), read as the datapath changes them.
pub fn sock_revnat6_entries(
    ebpf: &mut Ebpf,
) -> Result<Vec<(Lb6SockKey, Lb6SockRevNat)>, TableError> {
    live_entries(ebpf, map_names::LB6_SOCK_REVNAT)
}

pub fn remove_sock_revnat6(ebpf: &mut Ebpf, key: &Lb6SockKey) -> Result<(), TableError> {
    remove::<Lb6SockKey, Lb6SockRevNat>(ebpf, map_names::LB6_SOCK_REVNAT, key)
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
