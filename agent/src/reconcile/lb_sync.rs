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
//! pass, once nothing points at them.
//!
//! A pass touches only the frontends that changed. Two passes are full,
//! rewriting every frontend where it differs and sweeping whatever else is
//! in the maps: the first (which adopts the ids an earlier agent left in
//! the pinned maps, so connections in flight keep their backends) and the
//! one after a failed write. A write that fails (a full map) stops the pass
//! with what was in force still consistent; the failure is counted and
//! shown, and the next pass starts over in full.

mod ids;
mod maps;
mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use weir_abi::lb::*;
use weir_lb::{
    Algorithm, Backend, BackendState, Frontend, FrontendKey, FrontendKind, Protocol, Scope,
    ServiceProblem,
};

use crate::datapath::maps::TableError;
use ids::IdPool;
use maps::Written;
pub use maps::{LbMap, LbMaps, MapOperations};
pub use status::{FrontendStatus, LbMetrics, LbStatus, PassReport, SharedLbStatus};

/// An (address, port, IP protocol): a backend, or a frontend's reverse-NAT
/// entry (shared by its two scopes).
type Addr = (Ipv4Addr, u16, u8);
/// A frontend's Maglev table: its address and scope.
type TableKey = (Ipv4Addr, u16, u8, u8);

fn scope_number(scope: Scope) -> u8 {
    match scope {
        Scope::External => LB_SCOPE_EXTERNAL,
        Scope::Internal => LB_SCOPE_INTERNAL,
    }
}

fn kind_flag(kind: FrontendKind) -> u16 {
    match kind {
        FrontendKind::ClusterIp => Lb4Service::FLAG_CLUSTER_IP,
        FrontendKind::NodePort => Lb4Service::FLAG_NODE_PORT,
        FrontendKind::ExternalIp => Lb4Service::FLAG_EXTERNAL_IP,
        FrontendKind::LoadBalancer => Lb4Service::FLAG_LOAD_BALANCER,
    }
}

fn addr_of(key: &FrontendKey) -> Addr {
    (key.address, key.port, key.protocol.number())
}

/// The service map key of a frontend's entry (`slot` 0) or backend slot.
fn service_key(key: &FrontendKey, slot: u16) -> Lb4Key {
    Lb4Key {
        address: key.address.octets(),
        port: key.port.to_be_bytes(),
        backend_slot: slot,
        protocol: key.protocol.number(),
        scope: scope_number(key.scope),
        pad: [0; 2],
    }
}

/// A frontend's Maglev table key.
fn table_key(key: &FrontendKey) -> TableKey {
    let (address, port, protocol) = addr_of(key);
    (address, port, protocol, scope_number(key.scope))
}

/// What a programmed frontend holds in the maps besides its reverse-NAT
/// id (`addr_of` its key).
struct Lowered {
    backends: Vec<Addr>,
    /// It holds the Maglev table of `table_key` its key.
    maglev_table: bool,
    /// Backend slots written: 1..=slots.
    slots: u16,
}

pub struct LbSync {
    node_name: String,
    maglev_table_size: u32,
    backend_ids: IdPool<Addr, u32>,
    revnat_ids: IdPool<Addr, u16>,
    maglev_tables: IdPool<TableKey, u32>,
    written: Written,
    lowered: BTreeMap<FrontendKey, Lowered>,
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
            full: true,
            restored: false,
            status,
        }
    }

    /// Frontends in the maps.
    pub fn frontends_written(&self) -> usize {
        self.lowered.len()
    }

    /// Backends in the maps.
    pub fn backends_written(&self) -> usize {
        self.written.backends.len()
    }

    /// Map operations done since start.
    pub fn map_operations(&self) -> MapOperations {
        self.written.operations
    }

    /// Brings the maps to `frontends`, the whole current state, of which
    /// `changed` were added, changed or removed since the last call.
    pub fn apply(
        &mut self,
        maps: &mut impl LbMaps,
        frontends: &BTreeMap<FrontendKey, Frontend>,
        changed: &BTreeSet<FrontendKey>,
        problems: &[ServiceProblem],
    ) -> Result<(), TableError> {
        let result = self.pass(maps, frontends, changed);
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
        frontends: &BTreeMap<FrontendKey, Frontend>,
        changed: &BTreeSet<FrontendKey>,
    ) -> Result<(), TableError> {
        if !self.restored {
            self.restore(maps)?;
            self.restored = true;
        }
        if self.full {
            self.lowered.clear();
            self.backend_ids.forget_holders();
            self.revnat_ids.forget_holders();
            self.maglev_tables.forget_holders();
            {
                let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
                status.frontends.clear();
            }
            for frontend in frontends.values() {
                self.upsert(maps, frontend)?;
            }
            self.sweep(maps)?;
            self.full = false;
        } else {
            for key in changed {
                match frontends.get(key) {
                    Some(frontend) => self.upsert(maps, frontend)?,
                    None => self.remove(maps, key)?,
                }
            }
        }
        self.free_retired(maps)
    }

    /// Reads what an earlier agent left in the maps: its ids are adopted
    /// and its entries are what the first (full) pass compares against.
    fn restore(&mut self, maps: &mut impl LbMaps) -> Result<(), TableError> {
        for (id, backend) in maps.backends()? {
            let addr = (
                Ipv4Addr::from(backend.address),
                u16::from_be_bytes(backend.port),
                backend.protocol,
            );
            self.backend_ids.adopt(addr, id);
            self.written.backends.insert(id, backend);
        }
        for (id, revnat) in maps.revnats()? {
            self.written.revnat.insert(id, revnat);
        }
        for (key, service) in maps.services()? {
            if key.backend_slot == 0 {
                let addr = (
                    Ipv4Addr::from(key.address),
                    u16::from_be_bytes(key.port),
                    key.protocol,
                );
                self.revnat_ids.adopt(addr, service.rev_nat_id);
                if service.flags & Lb4Service::FLAG_MAGLEV != 0 {
                    self.maglev_tables.adopt(
                        (addr.0, addr.1, addr.2, key.scope),
                        service.maglev_table + 1,
                    );
                    let slots = maps.maglev_table(service.maglev_table, self.maglev_table_size)?;
                    self.written.maglev.insert(service.maglev_table, slots);
                }
            }
            self.written.services.insert(key, service);
        }
        Ok(())
    }

    fn backend_entry(&self, backend: &Backend, protocol: u8) -> Lb4Backend {
        let local = backend.node.as_deref() == Some(self.node_name.as_str());
        Lb4Backend {
            address: backend.address.octets(),
            port: backend.port.to_be_bytes(),
            protocol,
            state: match backend.state {
                BackendState::Active => Lb4Backend::STATE_ACTIVE,
                BackendState::Terminating => Lb4Backend::STATE_TERMINATING,
            },
            flags: if local { Lb4Backend::FLAG_LOCAL } else { 0 },
            pad: [0; 3],
        }
    }

    /// Writes `frontend` over what its key held. New ids are acquired
    /// before the old ones are released, so what both use keeps its id.
    fn upsert(&mut self, maps: &mut impl LbMaps, frontend: &Frontend) -> Result<(), TableError> {
        let key = frontend.key();
        let revnat = addr_of(&key);
        let Some(rev_nat_id) = self.revnat_ids.acquire(&revnat) else {
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
        self.written.revnat(
            maps,
            rev_nat_id,
            Lb4RevNat {
                address: frontend.address.octets(),
                port: frontend.port.to_be_bytes(),
                pad: [0; 2],
            },
        )?;
        let mut lowered = Lowered {
            backends: Vec::with_capacity(frontend.backends.len()),
            maglev_table: false,
            slots: 0,
        };
        let mut note = None;
        // Map ids parallel to `frontend.backends`; 0 when out of ids.
        let mut ids = Vec::with_capacity(frontend.backends.len());
        for backend in &frontend.backends {
            let addr = (backend.address, backend.port, revnat.2);
            let Some(id) = self.backend_ids.acquire(&addr) else {
                note = Some("out of backend ids".to_string());
                ids.push(0);
                continue;
            };
            lowered.backends.push(addr);
            let entry = self.backend_entry(backend, revnat.2);
            self.written.backend(maps, id, entry)?;
            ids.push(id);
        }
        let active: Vec<u32> = frontend
            .backends
            .iter()
            .zip(&ids)
            .filter(|(b, id)| b.state == BackendState::Active && **id != 0)
            .map(|(_, id)| *id)
            .collect();

        let mut flags = kind_flag(frontend.kind);
        let mut maglev_table = None;
        if frontend.algorithm == Algorithm::Maglev && !active.is_empty() {
            match self.maglev_tables.acquire(&table_key(&key)) {
                None => note = Some("no free Maglev table (see --maglev-tables): random".into()),
                Some(table) => {
                    lowered.maglev_table = true;
                    match frontend.maglev_table(self.maglev_table_size) {
                        Ok(slots) => {
                            let by_id = slots.slots().iter().map(|i| ids[*i as usize]).collect();
                            self.written.maglev(maps, table - 1, by_id)?;
                            flags |= Lb4Service::FLAG_MAGLEV;
                            maglev_table = Some(table - 1);
                        }
                        Err(error) => note = Some(format!("Maglev: {error}: random")),
                    }
                }
            }
        }
        if frontend.affinity_timeout.is_some() {
            flags |= Lb4Service::FLAG_AFFINITY;
        }

        for (slot, id) in (1..).zip(&active) {
            let slot_entry = Lb4Service {
                backend_id: *id,
                ..Default::default()
            };
            self.written
                .service(maps, service_key(&key, slot), slot_entry)?;
        }
        let entry = Lb4Service {
            backend_id: 0,
            count: active.len() as u16,
            rev_nat_id,
            flags,
            pad: 0,
            affinity_timeout_s: frontend.affinity_timeout.unwrap_or(0),
            maglev_table: maglev_table.unwrap_or(0),
        };
        self.written.service(maps, service_key(&key, 0), entry)?;
        lowered.slots = active.len() as u16;

        let new_slots = lowered.slots;
        if let Some(old) = self.lowered.insert(key, lowered) {
            for slot in new_slots + 1..=old.slots {
                self.written
                    .remove_service(maps, &service_key(&key, slot))?;
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

    /// Removes the frontend at `key`: its entry first, so the datapath stops
    /// choosing before its slots go.
    fn remove(&mut self, maps: &mut impl LbMaps, key: &FrontendKey) -> Result<(), TableError> {
        if let Some(old) = self.lowered.remove(key) {
            self.written.remove_service(maps, &service_key(key, 0))?;
            for slot in 1..=old.slots {
                self.written.remove_service(maps, &service_key(key, slot))?;
            }
            self.release(key, old);
        }
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.frontends.remove(key);
        Ok(())
    }

    /// Lets go of what the frontend at `key` held.
    fn release(&mut self, key: &FrontendKey, old: Lowered) {
        for addr in &old.backends {
            self.backend_ids.release(addr);
        }
        self.revnat_ids.release(&addr_of(key));
        if old.maglev_table {
            self.maglev_tables.release(&table_key(key));
        }
    }

    fn set_status(&self, frontend: FrontendStatus) {
        let key = frontend.frontend.key();
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.frontends.insert(key, frontend);
    }

    /// After a full pass: removes every service entry no frontend wrote
    /// (entries before slots) and retires the ids nobody holds.
    fn sweep(&mut self, maps: &mut impl LbMaps) -> Result<(), TableError> {
        let mut stale: Vec<Lb4Key> = self
            .written
            .services
            .keys()
            .filter(|entry| {
                let Some(protocol) = Protocol::from_number(entry.protocol) else {
                    return true;
                };
                let key = FrontendKey {
                    address: Ipv4Addr::from(entry.address),
                    port: u16::from_be_bytes(entry.port),
                    protocol,
                    scope: match entry.scope {
                        LB_SCOPE_EXTERNAL => Scope::External,
                        _ => Scope::Internal,
                    },
                };
                let ours = self.lowered.get(&key).is_some_and(|lowered| {
                    service_key(&key, entry.backend_slot) == **entry
                        && entry.backend_slot <= lowered.slots
                });
                !ours
            })
            .copied()
            .collect();
        stale.sort_by_key(|entry| entry.backend_slot != 0);
        for entry in stale {
            self.written.remove_service(maps, &entry)?;
        }
        self.backend_ids.retire_unheld();
        self.revnat_ids.retire_unheld();
        self.maglev_tables.retire_unheld();
        // Entries whose id no key has (never adopted, or retired before a
        // failed pass) go too.
        let backends = self.backend_ids.in_use();
        let stale: Vec<u32> = self
            .written
            .backends
            .keys()
            .filter(|id| !backends.contains(id))
            .copied()
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

#[cfg(test)]
mod tests;
