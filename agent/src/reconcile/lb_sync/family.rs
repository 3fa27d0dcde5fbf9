//! What the sync does differently per IP family: which maps and which
//! mirror of them, which frontends and statuses. IPv4 and IPv6 frontends
//! are written by the same code over [`SyncFamily`]; the ids they use
//! (backends, reverse NAT, Maglev tables) come from pools shared by both
//! families, because the datapath's affinity and Maglev maps are shared
//! (see `weir_abi::lb`).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use weir_abi::lb::Lb4Service;
use weir_lb::FrontendKey;

use super::maps::{LbMap, LbMaps, Written};
use super::status::{FrontendStatus, LbStatus};
use super::{LbSync, Lowered};
use crate::datapath::maps::lb::{self, LbFamily, RevNatEntry};
use crate::datapath::maps::TableError;

pub(super) trait SyncFamily: LbFamily {
    const SERVICES: LbMap;
    const BACKENDS: LbMap;

    fn services(written: &mut Written) -> &mut BTreeMap<Self::Key, Lb4Service>;
    fn services_ref(written: &Written) -> &BTreeMap<Self::Key, Lb4Service>;
    fn backends(written: &mut Written) -> &mut BTreeMap<u32, Self::Backend>;
    fn set_service(
        maps: &mut impl LbMaps,
        key: Self::Key,
        value: Lb4Service,
    ) -> Result<(), TableError>;
    fn remove_service(maps: &mut impl LbMaps, key: &Self::Key) -> Result<(), TableError>;
    fn set_backend(maps: &mut impl LbMaps, id: u32, value: Self::Backend)
        -> Result<(), TableError>;
    fn read_services(maps: &mut impl LbMaps) -> Result<Vec<(Self::Key, Lb4Service)>, TableError>;
    fn read_backends(maps: &mut impl LbMaps) -> Result<Vec<(u32, Self::Backend)>, TableError>;
    fn lowered(sync: &mut LbSync) -> &mut BTreeMap<FrontendKey<Self>, Lowered>;
    fn lowered_ref(sync: &LbSync) -> &BTreeMap<FrontendKey<Self>, Lowered>;
    fn statuses(status: &mut LbStatus) -> &mut BTreeMap<FrontendKey<Self>, FrontendStatus<Self>>;
    /// Writes the reverse-NAT entry of a frontend: IPv4's per-packet NAT
    /// reads `weir_lb4_revnat`; IPv6 has no per-packet NAT, so no entry
    /// (its id still keys affinity and socket reverse translation).
    fn write_revnat(
        written: &mut Written,
        maps: &mut impl LbMaps,
        id: u16,
        address: Self,
        port: u16,
    ) -> Result<(), TableError>;
}

impl SyncFamily for Ipv4Addr {
    const SERVICES: LbMap = LbMap::Services;
    const BACKENDS: LbMap = LbMap::Backends;

    fn services(written: &mut Written) -> &mut BTreeMap<Self::Key, Lb4Service> {
        &mut written.services
    }
    fn services_ref(written: &Written) -> &BTreeMap<Self::Key, Lb4Service> {
        &written.services
    }
    fn backends(written: &mut Written) -> &mut BTreeMap<u32, Self::Backend> {
        &mut written.backends
    }
    fn set_service(
        maps: &mut impl LbMaps,
        key: Self::Key,
        value: Lb4Service,
    ) -> Result<(), TableError> {
        maps.set_service(key, value)
    }
    fn remove_service(maps: &mut impl LbMaps, key: &Self::Key) -> Result<(), TableError> {
        maps.remove_service(key)
    }
    fn set_backend(
        maps: &mut impl LbMaps,
        id: u32,
        value: Self::Backend,
    ) -> Result<(), TableError> {
        maps.set_backend(id, value)
    }
    fn read_services(maps: &mut impl LbMaps) -> Result<Vec<(Self::Key, Lb4Service)>, TableError> {
        maps.services()
    }
    fn read_backends(maps: &mut impl LbMaps) -> Result<Vec<(u32, Self::Backend)>, TableError> {
        maps.backends()
    }
    fn lowered(sync: &mut LbSync) -> &mut BTreeMap<FrontendKey<Self>, Lowered> {
        &mut sync.lowered
    }
    fn lowered_ref(sync: &LbSync) -> &BTreeMap<FrontendKey<Self>, Lowered> {
        &sync.lowered
    }
    fn statuses(status: &mut LbStatus) -> &mut BTreeMap<FrontendKey<Self>, FrontendStatus<Self>> {
        &mut status.frontends
    }
    fn write_revnat(
        written: &mut Written,
        maps: &mut impl LbMaps,
        id: u16,
        address: Self,
        port: u16,
    ) -> Result<(), TableError> {
        written.revnat(maps, id, lb::encode_revnat(&RevNatEntry { address, port }))
    }
}

impl SyncFamily for Ipv6Addr {
    const SERVICES: LbMap = LbMap::Services6;
    const BACKENDS: LbMap = LbMap::Backends6;

    fn services(written: &mut Written) -> &mut BTreeMap<Self::Key, Lb4Service> {
        &mut written.services6
    }
    fn services_ref(written: &Written) -> &BTreeMap<Self::Key, Lb4Service> {
        &written.services6
    }
    fn backends(written: &mut Written) -> &mut BTreeMap<u32, Self::Backend> {
        &mut written.backends6
    }
    fn set_service(
        maps: &mut impl LbMaps,
        key: Self::Key,
        value: Lb4Service,
    ) -> Result<(), TableError> {
        maps.set_service6(key, value)
    }
    fn remove_service(maps: &mut impl LbMaps, key: &Self::Key) -> Result<(), TableError> {
        maps.remove_service6(key)
    }
    fn set_backend(
        maps: &mut impl LbMaps,
        id: u32,
        value: Self::Backend,
    ) -> Result<(), TableError> {
        maps.set_backend6(id, value)
    }
    fn read_services(maps: &mut impl LbMaps) -> Result<Vec<(Self::Key, Lb4Service)>, TableError> {
        maps.services6()
    }
    fn read_backends(maps: &mut impl LbMaps) -> Result<Vec<(u32, Self::Backend)>, TableError> {
        maps.backends6()
    }
    fn lowered(sync: &mut LbSync) -> &mut BTreeMap<FrontendKey<Self>, Lowered> {
        &mut sync.lowered_v6
    }
    fn lowered_ref(sync: &LbSync) -> &BTreeMap<FrontendKey<Self>, Lowered> {
        &sync.lowered_v6
    }
    fn statuses(status: &mut LbStatus) -> &mut BTreeMap<FrontendKey<Self>, FrontendStatus<Self>> {
        &mut status.frontends_v6
    }
    fn write_revnat(
        _written: &mut Written,
        _maps: &mut impl LbMaps,
        _id: u16,
        _address: Self,
        _port: u16,
    ) -> Result<(), TableError> {
        Ok(())
    }
}

impl Written {
    pub(super) fn service_of<F: SyncFamily>(
        &mut self,
        maps: &mut impl LbMaps,
        key: F::Key,
        value: Lb4Service,
    ) -> Result<(), TableError> {
        if F::services(self).get(&key) != Some(&value) {
            F::set_service(maps, key, value)?;
            F::services(self).insert(key, value);
            self.operations.updated(F::SERVICES);
        }
        Ok(())
    }

    pub(super) fn remove_service_of<F: SyncFamily>(
        &mut self,
        maps: &mut impl LbMaps,
        key: &F::Key,
    ) -> Result<(), TableError> {
        if F::services(self).contains_key(key) {
            F::remove_service(maps, key)?;
            F::services(self).remove(key);
            self.operations.deleted(F::SERVICES);
        }
        Ok(())
    }

    pub(super) fn backend_of<F: SyncFamily>(
        &mut self,
        maps: &mut impl LbMaps,
        id: u32,
        value: F::Backend,
    ) -> Result<(), TableError> {
        if F::backends(self).get(&id) != Some(&value) {
            F::set_backend(maps, id, value)?;
            F::backends(self).insert(id, value);
            self.operations.updated(F::BACKENDS);
        }
        Ok(())
    }
}
