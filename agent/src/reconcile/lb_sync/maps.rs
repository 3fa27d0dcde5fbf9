//! The LB maps as the sync sees them: a trait over the datapath's maps (so
//! the sync's bookkeeping is tested against memory) and the mirror of what
//! was written, which turns every write into "only if it differs".

use std::collections::BTreeMap;

use aya::Ebpf;
use weir_abi::lb::{
    Lb4AffinityKey, Lb4AffinityValue, Lb4Backend, Lb4Key, Lb4NatEntry, Lb4NatKey, Lb4RevNat,
    Lb4Service, Lb4SockKey, Lb4SockRevNat, Lb6Backend, Lb6Key, Lb6NatEntry, Lb6NatKey, Lb6Service,
    Lb6SockKey, Lb6SockRevNat,
};

use crate::datapath::maps::lb;
use crate::datapath::maps::TableError;

/// Writes and reads of the LB maps (`weir_abi::lb`).
pub trait LbMaps {
    fn set_service(&mut self, key: Lb4Key, value: Lb4Service) -> Result<(), TableError>;
    fn remove_service(&mut self, key: &Lb4Key) -> Result<(), TableError>;
    fn set_backend(&mut self, id: u32, value: Lb4Backend) -> Result<(), TableError>;
    fn remove_backend(&mut self, id: u32) -> Result<(), TableError>;
    fn set_revnat(&mut self, id: u16, value: Lb4RevNat) -> Result<(), TableError>;
    fn remove_revnat(&mut self, id: u16) -> Result<(), TableError>;
    /// Writes Maglev table number `table` (backend ids, one per slot).
    fn set_maglev_table(&mut self, table: u32, slots: &[u32]) -> Result<(), TableError>;
    fn services(&mut self) -> Result<Vec<(Lb4Key, Lb4Service)>, TableError>;
    fn backends(&mut self) -> Result<Vec<(u32, Lb4Backend)>, TableError>;
    fn revnats(&mut self) -> Result<Vec<(u16, Lb4RevNat)>, TableError>;
    /// Reads Maglev table number `table` of `size` slots.
    fn maglev_table(&mut self, table: u32, size: u32) -> Result<Vec<u32>, TableError>;
    /// The datapath's per-connection NAT mappings and affinity entries.
    fn nat(&mut self) -> Result<Vec<(Lb4NatKey, Lb4NatEntry)>, TableError>;
    fn remove_nat(&mut self, key: &Lb4NatKey) -> Result<(), TableError>;
    fn affinity(&mut self) -> Result<Vec<(Lb4AffinityKey, Lb4AffinityValue)>, TableError>;
    fn remove_affinity(&mut self, key: &Lb4AffinityKey) -> Result<(), TableError>;
    /// The socket LB's reverse translations (socket, backend → frontend).
    fn sock_revnat(&mut self) -> Result<Vec<(Lb4SockKey, Lb4SockRevNat)>, TableError>;
    fn remove_sock_revnat(&mut self, key: &Lb4SockKey) -> Result<(), TableError>;

    // The IPv6 maps (socket LB). By default a datapath without them: it
    // reads nothing and refuses writes, so only a sync given IPv6
    // frontends ever fails on them.
    fn set_service6(&mut self, _key: Lb6Key, _value: Lb6Service) -> Result<(), TableError> {
        Err(TableError::Missing(weir_abi::map_names::LB6_SERVICES))
    }
    fn remove_service6(&mut self, _key: &Lb6Key) -> Result<(), TableError> {
        Err(TableError::Missing(weir_abi::map_names::LB6_SERVICES))
    }
    fn set_backend6(&mut self, _id: u32, _value: Lb6Backend) -> Result<(), TableError> {
        Err(TableError::Missing(weir_abi::map_names::LB6_BACKENDS))
    }
    fn remove_backend6(&mut self, _id: u32) -> Result<(), TableError> {
        Err(TableError::Missing(weir_abi::map_names::LB6_BACKENDS))
    }
    fn services6(&mut self) -> Result<Vec<(Lb6Key, Lb6Service)>, TableError> {
        Ok(Vec::new())
    }
    fn backends6(&mut self) -> Result<Vec<(u32, Lb6Backend)>, TableError> {
        Ok(Vec::new())
    }
    fn sock_revnat6(&mut self) -> Result<Vec<(Lb6SockKey, Lb6SockRevNat)>, TableError> {
        Ok(Vec::new())
    }
    fn remove_sock_revnat6(&mut self, _key: &Lb6SockKey) -> Result<(), TableError> {
        Err(TableError::Missing(weir_abi::map_names::LB6_SOCK_REVNAT))
    }
    /// Per-packet NAT of IPv6 NodePorts.
    fn nat6(&mut self) -> Result<Vec<(Lb6NatKey, Lb6NatEntry)>, TableError> {
        Ok(Vec::new())
    }
    fn remove_nat6(&mut self, _key: &Lb6NatKey) -> Result<(), TableError> {
        Err(TableError::Missing(weir_abi::map_names::LB6_NAT))
    }
}

impl LbMaps for Ebpf {
    fn set_service(&mut self, key: Lb4Key, value: Lb4Service) -> Result<(), TableError> {
        lb::set_service(self, key, value)
    }
    fn remove_service(&mut self, key: &Lb4Key) -> Result<(), TableError> {
        lb::remove_service(self, key)
    }
    fn set_backend(&mut self, id: u32, value: Lb4Backend) -> Result<(), TableError> {
        lb::set_backend(self, id, value)
    }
    fn remove_backend(&mut self, id: u32) -> Result<(), TableError> {
        lb::remove_backend(self, id)
    }
    fn set_revnat(&mut self, id: u16, value: Lb4RevNat) -> Result<(), TableError> {
        lb::set_revnat(self, id, value)
    }
    fn remove_revnat(&mut self, id: u16) -> Result<(), TableError> {
        lb::remove_revnat(self, id)
    }
    fn set_maglev_table(&mut self, table: u32, slots: &[u32]) -> Result<(), TableError> {
        lb::set_maglev_table(self, table, slots)
    }
    fn services(&mut self) -> Result<Vec<(Lb4Key, Lb4Service)>, TableError> {
        lb::services(self)
    }
    fn backends(&mut self) -> Result<Vec<(u32, Lb4Backend)>, TableError> {
        lb::backends(self)
    }
    fn revnats(&mut self) -> Result<Vec<(u16, Lb4RevNat)>, TableError> {
        lb::revnats(self)
    }
    fn maglev_table(&mut self, table: u32, size: u32) -> Result<Vec<u32>, TableError> {
        lb::maglev_table(self, table, size)
    }
    fn nat(&mut self) -> Result<Vec<(Lb4NatKey, Lb4NatEntry)>, TableError> {
        lb::nat_entries_live(self)
    }
    fn remove_nat(&mut self, key: &Lb4NatKey) -> Result<(), TableError> {
        lb::remove_nat(self, key)
    }
    fn affinity(&mut self) -> Result<Vec<(Lb4AffinityKey, Lb4AffinityValue)>, TableError> {
        lb::affinity_entries(self)
    }
    fn remove_affinity(&mut self, key: &Lb4AffinityKey) -> Result<(), TableError> {
        lb::remove_affinity(self, key)
    }
    fn sock_revnat(&mut self) -> Result<Vec<(Lb4SockKey, Lb4SockRevNat)>, TableError> {
        lb::sock_revnat_entries(self)
    }
    fn remove_sock_revnat(&mut self, key: &Lb4SockKey) -> Result<(), TableError> {
        lb::remove_sock_revnat(self, key)
    }
    fn set_service6(&mut self, key: Lb6Key, value: Lb6Service) -> Result<(), TableError> {
        lb::set_service6(self, key, value)
    }
    fn remove_service6(&mut self, key: &Lb6Key) -> Result<(), TableError> {
        lb::remove_service6(self, key)
    }
    fn set_backend6(&mut self, id: u32, value: Lb6Backend) -> Result<(), TableError> {
        lb::set_backend6(self, id, value)
    }
    fn remove_backend6(&mut self, id: u32) -> Result<(), TableError> {
        lb::remove_backend6(self, id)
    }
    fn services6(&mut self) -> Result<Vec<(Lb6Key, Lb6Service)>, TableError> {
        lb::services6(self)
    }
    fn backends6(&mut self) -> Result<Vec<(u32, Lb6Backend)>, TableError> {
        lb::backends6(self)
    }
    fn sock_revnat6(&mut self) -> Result<Vec<(Lb6SockKey, Lb6SockRevNat)>, TableError> {
        lb::sock_revnat6_entries(self)
    }
    fn remove_sock_revnat6(&mut self, key: &Lb6SockKey) -> Result<(), TableError> {
        lb::remove_sock_revnat6(self, key)
    }
    fn nat6(&mut self) -> Result<Vec<(Lb6NatKey, Lb6NatEntry)>, TableError> {
        lb::nat6_entries_live(self)
    }
    fn remove_nat6(&mut self, key: &Lb6NatKey) -> Result<(), TableError> {
        lb::remove_nat6(self, key)
    }
}

/// The LB maps the sync writes, for counting operations.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LbMap {
    Services,
    Backends,
    RevNat,
    Maglev,
    Services6,
    Backends6,
}

impl LbMap {
    pub const ALL: [LbMap; 6] = [
        LbMap::Services,
        LbMap::Backends,
        LbMap::RevNat,
        LbMap::Maglev,
        LbMap::Services6,
        LbMap::Backends6,
    ];

    /// The map's name in the datapath.
    pub fn name(self) -> &'static str {
        match self {
            LbMap::Services => weir_abi::map_names::LB4_SERVICES,
            LbMap::Backends => weir_abi::map_names::LB4_BACKENDS,
            LbMap::RevNat => weir_abi::map_names::LB4_REVNAT,
            LbMap::Maglev => weir_abi::map_names::LB4_MAGLEV,
            LbMap::Services6 => weir_abi::map_names::LB6_SERVICES,
            LbMap::Backends6 => weir_abi::map_names::LB6_BACKENDS,
        }
    }
}

/// Successful map operations since start: (updates, deletes) per map.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct MapOperations([(u64, u64); LbMap::ALL.len()]);

impl MapOperations {
    pub fn updates(&self, map: LbMap) -> u64 {
        self.0[map as usize].0
    }

    pub fn deletes(&self, map: LbMap) -> u64 {
        self.0[map as usize].1
    }

    pub(super) fn updated(&mut self, map: LbMap) {
        self.0[map as usize].0 += 1;
    }

    pub(super) fn deleted(&mut self, map: LbMap) {
        self.0[map as usize].1 += 1;
    }
}

/// What is in the maps, as written (or found at start): each write goes
/// to the map only if it changes something, and is recorded only once the
/// map took it.
#[derive(Default)]
pub(super) struct Written {
    pub(super) services: BTreeMap<Lb4Key, Lb4Service>,
    pub(super) backends: BTreeMap<u32, Lb4Backend>,
    pub(super) revnat: BTreeMap<u16, Lb4RevNat>,
    pub(super) maglev: BTreeMap<u32, Vec<u32>>,
    pub(super) services6: BTreeMap<Lb6Key, Lb6Service>,
    pub(super) backends6: BTreeMap<u32, Lb6Backend>,
    pub(super) operations: MapOperations,
}

impl Written {
    /// Removes backend `id` from whichever family's map holds it (ids are
    /// shared by the families).
    pub(super) fn remove_backend(
        &mut self,
        maps: &mut impl LbMaps,
        id: u32,
    ) -> Result<(), TableError> {
        if self.backends.contains_key(&id) {
            maps.remove_backend(id)?;
            self.backends.remove(&id);
            self.operations.deleted(LbMap::Backends);
        }
        if self.backends6.contains_key(&id) {
            maps.remove_backend6(id)?;
            self.backends6.remove(&id);
            self.operations.deleted(LbMap::Backends6);
        }
        Ok(())
    }

    /// Every backend id written, of both families.
    pub(super) fn backend_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.backends.keys().chain(self.backends6.keys()).copied()
    }

    pub(super) fn revnat(
        &mut self,
        maps: &mut impl LbMaps,
        id: u16,
        value: Lb4RevNat,
    ) -> Result<(), TableError> {
        if self.revnat.get(&id) != Some(&value) {
            maps.set_revnat(id, value)?;
            self.revnat.insert(id, value);
            self.operations.updated(LbMap::RevNat);
        }
        Ok(())
    }

    pub(super) fn remove_revnat(
        &mut self,
        maps: &mut impl LbMaps,
        id: u16,
    ) -> Result<(), TableError> {
        if self.revnat.contains_key(&id) {
            maps.remove_revnat(id)?;
            self.revnat.remove(&id);
            self.operations.deleted(LbMap::RevNat);
        }
        Ok(())
    }

    pub(super) fn maglev(
        &mut self,
        maps: &mut impl LbMaps,
        table: u32,
        slots: Vec<u32>,
    ) -> Result<(), TableError> {
        if self.maglev.get(&table) != Some(&slots) {
            maps.set_maglev_table(table, &slots)?;
            self.maglev.insert(table, slots);
            self.operations.updated(LbMap::Maglev);
        }
        Ok(())
    }
}
