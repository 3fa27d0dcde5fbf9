//! The LB maps as the sync sees them: a trait over the datapath's maps (so
//! the sync's bookkeeping is tested against memory) and the mirror of what
//! was written, which turns every write into "only if it differs".

use std::collections::BTreeMap;

use aya::Ebpf;
use weir_abi::lb::{
    Lb4AffinityKey, Lb4AffinityValue, Lb4Backend, Lb4Key, Lb4NatEntry, Lb4NatKey, Lb4RevNat,
    Lb4Service, Lb4SockKey, Lb4SockRevNat,
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
}

/// The LB maps the sync writes, for counting operations.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LbMap {
    Services,
    Backends,
    RevNat,
    Maglev,
}

impl LbMap {
    pub const ALL: [LbMap; 4] = [
        LbMap::Services,
        LbMap::Backends,
        LbMap::RevNat,
        LbMap::Maglev,
    ];

    /// The map's name in the datapath.
    pub fn name(self) -> &'static str {
        match self {
            LbMap::Services => weir_abi::map_names::LB4_SERVICES,
            LbMap::Backends => weir_abi::map_names::LB4_BACKENDS,
            LbMap::RevNat => weir_abi::map_names::LB4_REVNAT,
            LbMap::Maglev => weir_abi::map_names::LB4_MAGLEV,
        }
    }
}

/// Successful map operations since start: (updates, deletes) per map.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct MapOperations([(u64, u64); 4]);

impl MapOperations {
    pub fn updates(&self, map: LbMap) -> u64 {
        self.0[map as usize].0
    }

    pub fn deletes(&self, map: LbMap) -> u64 {
        self.0[map as usize].1
    }

    fn updated(&mut self, map: LbMap) {
        self.0[map as usize].0 += 1;
    }

    fn deleted(&mut self, map: LbMap) {
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
    pub(super) operations: MapOperations,
}

impl Written {
    pub(super) fn service(
        &mut self,
        maps: &mut impl LbMaps,
        key: Lb4Key,
        value: Lb4Service,
    ) -> Result<(), TableError> {
        if self.services.get(&key) != Some(&value) {
            maps.set_service(key, value)?;
            self.services.insert(key, value);
            self.operations.updated(LbMap::Services);
        }
        Ok(())
    }

    pub(super) fn remove_service(
        &mut self,
        maps: &mut impl LbMaps,
        key: &Lb4Key,
    ) -> Result<(), TableError> {
        if self.services.contains_key(key) {
            maps.remove_service(key)?;
            self.services.remove(key);
            self.operations.deleted(LbMap::Services);
        }
        Ok(())
    }

    pub(super) fn backend(
        &mut self,
        maps: &mut impl LbMaps,
        id: u32,
        value: Lb4Backend,
    ) -> Result<(), TableError> {
        if self.backends.get(&id) != Some(&value) {
            maps.set_backend(id, value)?;
            self.backends.insert(id, value);
            self.operations.updated(LbMap::Backends);
        }
        Ok(())
    }

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
        Ok(())
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
