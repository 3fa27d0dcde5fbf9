//! Services to the load-balancing maps (`weir_abi::lb`).
//!
//! weir-lb's [`weir_lb::LbCompiler`] keeps this node's frontends and says
//! which changed. This module gives backends, reverse-NAT entries and
//! Maglev tables stable ids, held by the frontends that use them, and
//! writes a changed frontend in an order that never lets the datapath see
//! it half written: its backends, reverse NAT and Maglev table first, then
//! its backend slots, then its service entry (whose count makes the new
//! slots visible), then the removal of slots past the new count. Ids that
//! no frontend holds any more are removed from the maps at the end of the
//! pass, once nothing points at them. Entries are built as the typed
//! entries of [`crate::datapath::maps::lb`] and encoded there.
//!
//! A pass touches only the frontends that changed. Two passes are full,
//! rewriting every frontend where it differs and sweeping whatever else is
//! in the maps: the first (which adopts the ids an earlier agent left in
//! the pinned maps, so connections in flight keep their backends) and the
//! one after a failed write. A write that fails (a full map) stops the pass
//! with what was in force still consistent; the failure is counted and
//! shown, and the next pass starts over in full. After a full pass the
//! datapath's NAT and affinity entries that point at frontends or backends
//! no longer programmed are removed ([`connections`]).
//!
//! IPv6 frontends (ClusterIPs, socket LB) are written the same way to the
//! `weir_lb6_*` maps ([`family`]); ids are drawn from the same pools as
//! IPv4's, so an id means one thing in every map that holds ids.

mod connections;
mod family;
mod ids;
mod maps;
mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use weir_lb::{Algorithm, Backend, BackendState, Frontend, FrontendKey, Protocol, ServiceProblem};

#[cfg(test)]
use crate::datapath::maps::lb::service_key; // the tests' (`use super::*`)
use crate::datapath::maps::lb::{
    self as lb, BackendEntry, ServiceEntry, ServiceMapEntry, SlotEntry,
};
use crate::datapath::maps::TableError;
use family::SyncFamily;
use ids::IdPool;
use maps::Written;
pub use maps::{LbMap, LbMaps, MapOperations};
pub use status::{FrontendStatus, LbMetrics, LbStatus, PassReport, SharedLbStatus};

/// An address, port and protocol: a backend (with its frontend's
/// protocol), or the frontend a reverse-NAT entry stands for (shared by
/// its two scopes). Of either family: the id pools are shared.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct L4Address {
    address: IpAddr,
    port: u16,
    protocol: Protocol,
}

impl L4Address {
    fn of_frontend<A: Into<IpAddr> + Copy>(key: &FrontendKey<A>) -> L4Address {
        L4Address {
            address: key.address.into(),
            port: key.port,
            protocol: key.protocol,
        }
    }
}

/// A frontend key of either family, for the Maglev table pool.
fn any_key<A: Into<IpAddr> + Copy>(key: &FrontendKey<A>) -> FrontendKey<IpAddr> {
    FrontendKey {
        address: key.address.into(),
        port: key.port,
        protocol: key.protocol,
        scope: key.scope,
    }
}

/// What a programmed frontend holds in the maps besides its reverse-NAT
/// id (of [`L4Address::of_frontend`] its key).
struct Lowered {
    backends: Vec<L4Address>,
    /// It holds the Maglev table of its key.
    maglev_table: bool,
    /// Backend slots written: 1..=slots.
    slots: u16,
}

pub struct LbSync {
    node_name: String,
    maglev_table_size: u32,
    backend_ids: IdPool<L4Address, u32>,
    revnat_ids: IdPool<L4Address, u16>,
    maglev_tables: IdPool<FrontendKey<IpAddr>, u32>,
    written: Written,
    lowered: BTreeMap<FrontendKey, Lowered>,
    lowered_v6: BTreeMap<FrontendKey<Ipv6Addr>, Lowered>,
    /// The next pass rewrites and sweeps everything.
    full: bool,
    restored: bool,
    status: SharedLbStatus,
}

impl LbSync {
    /// A sync reporting into `status`.
    pub fn new(
        node_name: String,
        maglev_table_size: u32,
        maglev_tables: u32,
        status: SharedLbStatus,
    ) -> LbSync {
        LbSync {
            node_name,
            maglev_table_size,
            backend_ids: IdPool::new(u32::MAX),
            revnat_ids: IdPool::new(u16::MAX),
            // Table numbers start at 0 in the map; the pool's ids start at 1.
            maglev_tables: IdPool::new(maglev_tables),
            written: Written::default(),
            lowered: BTreeMap::new(),
            lowered_v6: BTreeMap::new(),
            full: true,
            restored: false,
            status,
        }
    }

    /// Frontends in the maps, of both families.
    pub fn frontends_written(&self) -> usize {
        self.lowered.len() + self.lowered_v6.len()
    }

    /// Backends in the maps, of both families.
    pub fn backends_written(&self) -> usize {
        self.written.backends.len() + self.written.backends6.len()
    }

    /// The service id (reverse NAT index) of a frontend in the maps.
    pub fn service_id(&self, key: &FrontendKey) -> Option<u16> {
        self.revnat_ids.get(&L4Address::of_frontend(key))
    }

    /// The service id of an IPv6 frontend in the maps.
    pub fn service_id_v6(&self, key: &FrontendKey<Ipv6Addr>) -> Option<u16> {
        self.revnat_ids.get(&L4Address::of_frontend(key))
    }

    /// Map operations done since start.
    pub fn map_operations(&self) -> MapOperations {
        self.written.operations
    }

    /// Brings the maps to `frontends`, the whole current state, of which
    /// `changed` were added, changed or removed since the last call. IPv4
    /// only: with no IPv6 frontends, a full pass removes any IPv6 entries
    /// (see [`LbSync::apply_dual`]).
    pub fn apply(
        &mut self,
        maps: &mut impl LbMaps,
        frontends: &BTreeMap<FrontendKey, Frontend>,
        changed: &BTreeSet<FrontendKey>,
        problems: &[ServiceProblem],
    ) -> Result<(), TableError> {
        self.apply_dual(
            maps,
            Desired { frontends, changed },
            Desired {
                frontends: &BTreeMap::new(),
                changed: &BTreeSet::new(),
            },
            problems,
        )
    }

    /// [`LbSync::apply`] for both families.
    pub fn apply_dual(
        &mut self,
        maps: &mut impl LbMaps,
        v4: Desired<'_, Ipv4Addr>,
        v6: Desired<'_, Ipv6Addr>,
        problems: &[ServiceProblem],
    ) -> Result<(), TableError> {
        let result = self.pass(maps, v4, v6);
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.problems = problems
            .iter()
            .map(|p| format!("{}/{}: {}", p.service.namespace, p.service.name, p.message))
            .collect();
        match &result {
            Ok(()) => status.last_error = None,
            Err(error) => {
                self.full = true;
                status.write_failures += 1;
                status.last_error = Some(error.to_string());
            }
        }
        result
    }

    fn pass(
        &mut self,
        maps: &mut impl LbMaps,
        v4: Desired<'_, Ipv4Addr>,
        v6: Desired<'_, Ipv6Addr>,
    ) -> Result<(), TableError> {
        if !self.restored {
            self.restore(maps)?;
            self.restored = true;
        }
        if self.full {
            // A full map is the usual cause of a failed pass, and the sweep
            // comes only after every frontend is written: the entries of
            // frontends no longer asked for go first, to make room.
            self.remove_undesired(maps, v4.frontends)?;
            self.remove_undesired(maps, v6.frontends)?;
            self.lowered.clear();
            self.lowered_v6.clear();
            self.backend_ids.forget_holders();
            self.revnat_ids.forget_holders();
            self.maglev_tables.forget_holders();
            {
                let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
                status.frontends.clear();
                status.frontends_v6.clear();
            }
            for frontend in v4.frontends.values() {
                self.upsert(maps, frontend)?;
            }
            for frontend in v6.frontends.values() {
                self.upsert(maps, frontend)?;
            }
            self.sweep_services::<Ipv4Addr>(maps)?;
            self.sweep_services::<Ipv6Addr>(maps)?;
            self.sweep(maps)?;
            self.free_retired(maps)?;
            self.sweep_connections(maps)?;
            self.full = false;
            return Ok(());
        } else {
            self.apply_changed(maps, v4)?;
            self.apply_changed(maps, v6)?;
        }
        self.free_retired(maps)
    }

    fn apply_changed<F: SyncFamily>(
        &mut self,
        maps: &mut impl LbMaps,
        desired: Desired<'_, F>,
    ) -> Result<(), TableError> {
        for key in desired.changed {
            match desired.frontends.get(key) {
                Some(frontend) => self.upsert(maps, frontend)?,
                None => self.remove(maps, key)?,
            }
        }
        Ok(())
    }

    /// Removes the NAT mappings, socket reverse translations and affinity
    /// entries that point at what no
    /// programmed frontend has (see [`connections`]); counts them in the
    /// status.
    fn sweep_connections(&mut self, maps: &mut impl LbMaps) -> Result<(), TableError> {
        let mut members = connections::Members::new();
        let lowered = self
            .lowered
            .iter()
            .map(|(key, lowered)| (L4Address::of_frontend(key), lowered))
            .chain(
                self.lowered_v6
                    .iter()
                    .map(|(key, lowered)| (L4Address::of_frontend(key), lowered)),
            );
        for (frontend, lowered) in lowered {
            let Some(rev_nat_id) = self.revnat_ids.get(&frontend) else {
                continue;
            };
            members.entry(rev_nat_id).or_default().extend(
                lowered
                    .backends
                    .iter()
                    .filter_map(|address| self.backend_ids.get(address)),
            );
        }
        let mut removed = 0;
        let backend4 = |id| self.written.backends.get(&id).map(|b| (b.address, b.port));
        for (key, entry) in maps.nat()? {
            if connections::stale_nat(&key, &entry, backend4, &members) {
                maps.remove_nat(&key)?;
                removed += 1;
            }
        }
        let backend6 = |id| {
            let b = self.written.backends6.get(&id)?;
            Some((weir_abi::lb::ipv6_words(&b.address), b.port))
        };
        for (key, entry) in maps.nat6()? {
            if connections::stale_nat(&key, &entry, backend6, &members) {
                maps.remove_nat6(&key)?;
                removed += 1;
            }
        }
        for (key, value) in maps.affinity()? {
            if connections::stale_affinity(&key, &value, &members) {
                maps.remove_affinity(&key)?;
                removed += 1;
            }
        }
        for (key, value) in maps.sock_revnat()? {
            if connections::stale_sock_revnat(&key, &value, &self.written.backends, &members) {
                maps.remove_sock_revnat(&key)?;
                removed += 1;
            }
        }
        for (key, value) in maps.sock_revnat6()? {
            if connections::stale_sock_revnat6(&key, &value, &self.written.backends6, &members) {
                maps.remove_sock_revnat6(&key)?;
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(
                entries = removed,
                "removed NAT, socket reverse-NAT and affinity entries of services or backends \
                 no longer programmed"
            );
        }
        Ok(())
    }

    /// Reads what an earlier agent left in the maps: its ids are adopted
    /// and its entries are what the first (full) pass compares against.
    /// Entries that do not decode adopt nothing; the sweep removes them.
    fn restore(&mut self, maps: &mut impl LbMaps) -> Result<(), TableError> {
        self.restore_family::<Ipv4Addr>(maps)?;
        self.restore_family::<Ipv6Addr>(maps)?;
        for (id, revnat) in maps.revnats()? {
            self.written.revnat.insert(id, revnat);
        }
        Ok(())
    }

    fn restore_family<F: SyncFamily>(&mut self, maps: &mut impl LbMaps) -> Result<(), TableError> {
        for (id, backend) in F::read_backends(maps)? {
            if let Ok(entry) = F::decode_backend(&backend) {
                let address = L4Address {
                    address: entry.address.into(),
                    port: entry.port,
                    protocol: entry.protocol,
                };
                self.backend_ids.adopt(address, id);
            }
            F::backends(&mut self.written).insert(id, backend);
        }
        for (key, value) in F::read_services(maps)? {
            if let Ok(ServiceMapEntry::Service(service)) = F::decode_service(&key, &value) {
                self.revnat_ids.adopt(
                    L4Address::of_frontend(&service.frontend),
                    service.rev_nat_id,
                );
                if let Some(table) = service.maglev_table {
                    self.maglev_tables
                        .adopt(any_key(&service.frontend), table + 1);
                    let slots = maps.maglev_table(table, self.maglev_table_size)?;
                    self.written.maglev.insert(table, slots);
                }
            }
            F::services(&mut self.written).insert(key, value);
        }
        Ok(())
    }

    /// Writes `frontend` over what its key held. New ids are acquired
    /// before the old ones are released, so what both use keeps its id.
    fn upsert<F: SyncFamily>(
        &mut self,
        maps: &mut impl LbMaps,
        frontend: &Frontend<F>,
    ) -> Result<(), TableError> {
        let key = frontend.key();
        let Some(rev_nat_id) = self.revnat_ids.acquire(&L4Address::of_frontend(&key)) else {
            self.remove(maps, &key)?;
            self.set_status(FrontendStatus {
                frontend: frontend.clone(),
                rev_nat_id: 0,
                backend_ids: vec![0; frontend.backends.len()],
                maglev_table: None,
                note: Some("out of reverse-NAT ids: not programmed".into()),
            });
            return Ok(());
        };
        F::write_revnat(
            &mut self.written,
            maps,
            rev_nat_id,
            frontend.address,
            frontend.port,
        )?;
        let mut lowered = Lowered {
            backends: Vec::with_capacity(frontend.backends.len()),
            maglev_table: false,
            slots: 0,
        };
        let mut note = None;
        let ids = self.write_backends(maps, frontend, &mut lowered, &mut note)?;
        let active: Vec<u32> = frontend
            .backends
            .iter()
            .zip(&ids)
            .filter(|(b, id)| b.state == BackendState::Active && **id != 0)
            .map(|(_, id)| *id)
            .collect();
        let maglev_table = if frontend.algorithm == Algorithm::Maglev && !active.is_empty() {
            self.write_maglev(maps, frontend, &ids, &mut lowered, &mut note)?
        } else {
            None
        };

        for (slot, id) in (1..).zip(&active) {
            let (slot_key, value) = F::encode_slot(&SlotEntry {
                frontend: key,
                slot,
                backend_id: *id,
            });
            self.written.service_of::<F>(maps, slot_key, value)?;
        }
        lowered.slots = active.len() as u16;
        let (entry_key, value) = F::encode_service(&ServiceEntry {
            frontend: key,
            kind: frontend.kind,
            count: lowered.slots,
            rev_nat_id,
            affinity_timeout: frontend.affinity_timeout,
            maglev_table,
        });
        self.written.service_of::<F>(maps, entry_key, value)?;

        let new_slots = lowered.slots;
        if let Some(old) = F::lowered(self).insert(key, lowered) {
            for slot in new_slots + 1..=old.slots {
                self.written
                    .remove_service_of::<F>(maps, &F::service_key(&key, slot))?;
            }
            self.release(&key, old);
        }
        self.set_status(FrontendStatus {
            frontend: frontend.clone(),
            rev_nat_id,
            backend_ids: ids,
            maglev_table,
            note,
        });
        Ok(())
    }

    /// Writes the backends of `frontend`; their map ids, parallel to
    /// `frontend.backends`, 0 where out of ids.
    fn write_backends<F: SyncFamily>(
        &mut self,
        maps: &mut impl LbMaps,
        frontend: &Frontend<F>,
        lowered: &mut Lowered,
        note: &mut Option<String>,
    ) -> Result<Vec<u32>, TableError> {
        let mut ids = Vec::with_capacity(frontend.backends.len());
        for backend in &frontend.backends {
            let address = L4Address {
                address: backend.address.into(),
                port: backend.port,
                protocol: frontend.protocol,
            };
            let Some(id) = self.backend_ids.acquire(&address) else {
                *note = Some("out of backend ids".to_string());
                ids.push(0);
                continue;
            };
            lowered.backends.push(address);
            let entry = F::encode_backend(&self.backend_entry(backend, frontend.protocol));
            self.written.backend_of::<F>(maps, id, entry)?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// Writes the Maglev table of `frontend` (whose backends have `ids`);
    /// its number, or `None` (with a note) when it selects at random.
    fn write_maglev<F: SyncFamily>(
        &mut self,
        maps: &mut impl LbMaps,
        frontend: &Frontend<F>,
        ids: &[u32],
        lowered: &mut Lowered,
        note: &mut Option<String>,
    ) -> Result<Option<u32>, TableError> {
        let Some(table) = self.maglev_tables.acquire(&any_key(&frontend.key())) else {
            *note = Some("no free Maglev table (see --maglev-tables): random".into());
            return Ok(None);
        };
        lowered.maglev_table = true;
        let slots = match frontend.maglev_table(self.maglev_table_size) {
            Ok(slots) => slots,
            Err(error) => {
                *note = Some(format!("Maglev: {error}: random"));
                return Ok(None);
            }
        };
        let Some(by_id) = lb::maglev_backend_ids(&slots, ids) else {
            *note = Some("Maglev: a slot names no backend: random".into());
            return Ok(None);
        };
        // Table numbers start at 0 in the map; the pool's ids start at 1.
        self.written.maglev(maps, table - 1, by_id)?;
        Ok(Some(table - 1))
    }

    fn backend_entry<A: Copy>(&self, backend: &Backend<A>, protocol: Protocol) -> BackendEntry<A> {
        BackendEntry {
            address: backend.address,
            port: backend.port,
            protocol,
            state: backend.state,
            local: backend.node.as_deref() == Some(self.node_name.as_str()),
        }
    }

    /// Removes the service entries of every frontend of the family not in
    /// `frontends` (entries before slots).
    fn remove_undesired<F: SyncFamily>(
        &mut self,
        maps: &mut impl LbMaps,
        frontends: &BTreeMap<FrontendKey<F>, Frontend<F>>,
    ) -> Result<(), TableError> {
        let mut stale: Vec<(u16, F::Key)> = F::services(&mut self.written)
            .keys()
            .filter_map(|entry| match F::decode_service_key(entry) {
                Ok((key, slot)) => (!frontends.contains_key(&key)).then_some((slot, *entry)),
                Err(_) => Some((1, *entry)),
            })
            .collect();
        stale.sort_by_key(|(slot, _)| *slot != 0);
        for (_, entry) in stale {
            self.written.remove_service_of::<F>(maps, &entry)?;
        }
        Ok(())
    }

    /// Removes the frontend at `key`: its entry first, so the datapath stops
    /// choosing before its slots go.
    fn remove<F: SyncFamily>(
        &mut self,
        maps: &mut impl LbMaps,
        key: &FrontendKey<F>,
    ) -> Result<(), TableError> {
        if let Some(old) = F::lowered(self).remove(key) {
            self.written
                .remove_service_of::<F>(maps, &F::service_key(key, 0))?;
            for slot in 1..=old.slots {
                self.written
                    .remove_service_of::<F>(maps, &F::service_key(key, slot))?;
            }
            self.release(key, old);
        }
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        F::statuses(&mut status).remove(key);
        Ok(())
    }

    /// Lets go of what the frontend at `key` held.
    fn release<A: Into<IpAddr> + Copy>(&mut self, key: &FrontendKey<A>, old: Lowered) {
        for addr in &old.backends {
            self.backend_ids.release(addr);
        }
        self.revnat_ids.release(&L4Address::of_frontend(key));
        if old.maglev_table {
            self.maglev_tables.release(&any_key(key));
        }
    }

    fn set_status<F: SyncFamily>(&self, frontend: FrontendStatus<F>) {
        let key = frontend.frontend.key();
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        F::statuses(&mut status).insert(key, frontend);
    }

    /// After a full pass: removes every service entry of the family no
    /// frontend wrote (entries before slots).
    fn sweep_services<F: SyncFamily>(&mut self, maps: &mut impl LbMaps) -> Result<(), TableError> {
        let lowered = F::lowered_ref(self);
        let mut stale: Vec<(u16, F::Key)> = self
            .written_services::<F>()
            .filter(|entry| {
                let Ok((key, slot)) = F::decode_service_key(entry) else {
                    return true;
                };
                let ours = lowered.get(&key).is_some_and(|lowered| {
                    F::service_key(&key, slot) == *entry && slot <= lowered.slots
                });
                !ours
            })
            .map(|entry| {
                let slot = F::decode_service_key(&entry).map_or(1, |(_, slot)| slot);
                (slot, entry)
            })
            .collect();
        stale.sort_by_key(|(slot, _)| *slot != 0);
        for (_, entry) in stale {
            self.written.remove_service_of::<F>(maps, &entry)?;
        }
        Ok(())
    }

    /// The service map keys written for family `F`.
    fn written_services<F: SyncFamily>(&self) -> impl Iterator<Item = F::Key> + '_ {
        F::services_ref(&self.written).keys().copied()
    }

    /// After a full pass (and its service sweeps): retires the ids nobody
    /// holds and removes the entries of ids no key has.
    fn sweep(&mut self, maps: &mut impl LbMaps) -> Result<(), TableError> {
        self.backend_ids.retire_unheld();
        self.revnat_ids.retire_unheld();
        self.maglev_tables.retire_unheld();
        // Entries whose id no key has (never adopted, or retired before a
        // failed pass) go too.
        let backends = self.backend_ids.in_use();
        let stale: Vec<u32> = self
            .written
            .backend_ids()
            .filter(|id| !backends.contains(id))
            .collect();
        for id in stale {
            self.written.remove_backend(maps, id)?;
        }
        let revnats = self.revnat_ids.in_use();
        let stale: Vec<u16> = self
            .written
            .revnat
            .keys()
            .filter(|id| !revnats.contains(id))
            .copied()
            .collect();
        for id in stale {
            self.written.remove_revnat(maps, id)?;
        }
        let tables = self.maglev_tables.in_use();
        self.written
            .maglev
            .retain(|table, _| tables.contains(&(table + 1)));
        Ok(())
    }

    /// Removes the entries of retired ids, now that nothing points at them.
    fn free_retired(&mut self, maps: &mut impl LbMaps) -> Result<(), TableError> {
        let written = &mut self.written;
        self.backend_ids
            .free_retired(|id| written.remove_backend(maps, id))?;
        self.revnat_ids
            .free_retired(|id| written.remove_revnat(maps, id))?;
        self.maglev_tables.free_retired(|table| {
            // Array entries are not removed: a table is rewritten before a
            // frontend points at it again.
            written.maglev.remove(&(table - 1));
            Ok(())
        })
    }
}

/// One family's desired frontends for [`LbSync::apply_dual`]: the whole
/// current state, and the keys added, changed or removed since the last
/// call.
pub struct Desired<'a, A> {
    pub frontends: &'a BTreeMap<FrontendKey<A>, Frontend<A>>,
    pub changed: &'a BTreeSet<FrontendKey<A>>,
}

impl<A> Clone for Desired<'_, A> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A> Copy for Desired<'_, A> {}

#[cfg(test)]
mod dual_stack_tests;
#[cfg(test)]
mod tests;
