//! Services to the load-balancing maps (`weir_abi::lb`).
//!
//! weir-lb compiles Services and EndpointSlices into this node's frontends
//! ([`weir_lb::LbState`]); this module gives backends and frontends stable
//! ids, lowers the state to map entries and writes only the difference, in
//! an order that never lets the datapath see a half-written service:
//! backends, reverse NAT and Maglev tables first, then backend slots, then
//! the service entry (whose count makes the new slots visible), and
//! removals last. A write that fails (a full map) stops the pass with what
//! was already in force still consistent; the failure is counted and shown,
//! and the next pass retries.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use aya::Ebpf;
use weir_abi::lb::*;
use weir_lb::{Algorithm, BackendState, Frontend, FrontendKind, LbState, Protocol, Scope};

use crate::datapath::lb_tables;
use crate::datapath::tables::TableError;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// A backend's identity in the maps: one id per (address, port, protocol).
type BackendAddr = (Ipv4Addr, u16, u8);

fn protocol_number(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::Tcp => IPPROTO_TCP,
        Protocol::Udp => IPPROTO_UDP,
    }
}

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

fn service_key(frontend: &Frontend, slot: u16) -> Lb4Key {
    Lb4Key {
        address: frontend.address.octets(),
        port: frontend.port.to_be_bytes(),
        backend_slot: slot,
        protocol: protocol_number(frontend.protocol),
        scope: scope_number(frontend.scope),
        pad: [0; 2],
    }
}

/// Ids handed out from 1 up, reused after release (0 means none).
#[derive(Debug)]
struct IdPool<K: Ord, I> {
    ids: BTreeMap<K, I>,
    free: BTreeSet<I>,
    next: I,
    max: I,
}

impl<K: Ord + Clone, I: Copy + Ord + From<u8> + std::ops::Add<Output = I>> IdPool<K, I> {
    fn new(max: I) -> Self {
        IdPool {
            ids: BTreeMap::new(),
            free: BTreeSet::new(),
            next: I::from(1),
            max,
        }
    }

    fn adopt(&mut self, key: K, id: I) {
        self.ids.insert(key, id);
        if id >= self.next {
            self.next = id + I::from(1);
        }
    }

    fn get(&mut self, key: &K) -> Option<I> {
        if let Some(id) = self.ids.get(key) {
            return Some(*id);
        }
        let id = match self.free.pop_first() {
            Some(id) => id,
            None if self.next <= self.max => {
                let id = self.next;
                self.next = self.next + I::from(1);
                id
            }
            None => return None,
        };
        self.ids.insert(key.clone(), id);
        Some(id)
    }

    /// Releases the ids of keys not in `keep`.
    fn retain(&mut self, keep: &BTreeSet<K>) {
        let gone: Vec<K> = self
            .ids
            .keys()
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(id) = self.ids.remove(&key) {
                self.free.insert(id);
            }
        }
    }
}

/// A frontend as written, for `weir service list`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FrontendStatus {
    pub frontend: Frontend,
    pub rev_nat_id: u16,
    /// Map ids of `frontend.backends`, in the same order.
    pub backend_ids: Vec<u32>,
    /// The frontend's Maglev table, when it selects through one.
    pub maglev_table: Option<u32>,
    /// Why the frontend is not (fully) as desired, if it is not.
    pub note: Option<String>,
}

/// Prometheus view of the service sync.
#[derive(Clone)]
pub struct LbMetrics {
    frontends: prometheus::IntGauge,
    backends: prometheus::IntGauge,
    problems: prometheus::IntGauge,
    write_failures: prometheus::IntCounter,
}

impl LbMetrics {
    pub fn new(registry: &prometheus::Registry) -> LbMetrics {
        let gauge = |name: &str, help: &str| {
            let gauge = prometheus::IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(gauge.clone()))
                .expect("unique metric");
            gauge
        };
        let write_failures = prometheus::IntCounter::new(
            "weir_services_map_write_failures_total",
            "Service sync passes stopped by a failed LB map write (e.g. a full map)",
        )
        .expect("valid metric");
        registry
            .register(Box::new(write_failures.clone()))
            .expect("unique metric");
        LbMetrics {
            frontends: gauge(
                "weir_services_frontends",
                "Service frontends programmed on this node",
            ),
            backends: gauge(
                "weir_services_backends",
                "Service backends in the LB maps of this node",
            ),
            problems: gauge(
                "weir_services_problems",
                "Services (partly) left out, e.g. a NodePort outside the range",
            ),
            write_failures,
        }
    }

    /// Records what a pass left (`failed`: it stopped on a map write).
    pub fn observe(&self, status: &LbStatus, backends: usize, failed: bool) {
        self.frontends.set(status.frontends.len() as i64);
        self.backends.set(backends as i64);
        self.problems.set(status.problems.len() as i64);
        if failed {
            self.write_failures.inc();
        }
    }
}

/// The sync's status, shared with the inspection API.
pub type SharedLbStatus = std::sync::Arc<std::sync::Mutex<LbStatus>>;

/// What the sync last did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct LbStatus {
    pub frontends: Vec<FrontendStatus>,
    /// The service of each frontend (address, port, protocol), for naming
    /// services in flows.
    #[serde(skip)]
    pub by_frontend: std::collections::HashMap<BackendAddr, weir_lb::ServiceName>,
    /// Services (partly) left out, with the reason.
    pub problems: Vec<String>,
    /// Passes that stopped on a failed map write (a full map).
    pub write_failures: u64,
    pub last_error: Option<String>,
}

impl LbStatus {
    /// The service whose frontend is `address:port` for `protocol` (an IP
    /// protocol number), in any scope.
    pub fn service_at(
        &self,
        address: Ipv4Addr,
        port: u16,
        protocol: u8,
    ) -> Option<&weir_lb::ServiceName> {
        self.by_frontend.get(&(address, port, protocol))
    }
}

/// The desired content of the maps.
#[derive(Default)]
struct Desired {
    services: BTreeMap<Lb4Key, Lb4Service>,
    backends: BTreeMap<u32, Lb4Backend>,
    revnat: BTreeMap<u16, Lb4RevNat>,
    maglev: BTreeMap<u32, Vec<u32>>,
}

pub struct LbSync {
    node_name: String,
    maglev_table_size: u32,
    backend_ids: IdPool<BackendAddr, u32>,
    revnat_ids: IdPool<BackendAddr, u16>,
    maglev_tables: IdPool<(Ipv4Addr, u16, u8, u8), u32>,
    written: Desired,
    restored: bool,
    status: LbStatus,
}

impl LbSync {
    pub fn new(node_name: String, maglev_table_size: u32, maglev_tables: u32) -> LbSync {
        LbSync {
            node_name,
            maglev_table_size,
            backend_ids: IdPool::new(u32::MAX),
            revnat_ids: IdPool::new(u16::MAX),
            // Table numbers start at 0 in the map; the pool's ids start at 1.
            maglev_tables: IdPool::new(maglev_tables),
            written: Desired::default(),
            restored: false,
            status: LbStatus::default(),
        }
    }

    pub fn status(&self) -> &LbStatus {
        &self.status
    }

    /// Backends in the maps as last written.
    pub fn backends_written(&self) -> usize {
        self.written.backends.len()
    }

    /// Reads what an earlier agent left in the maps, so its ids are kept
    /// (connections in flight keep their backends) and its stale entries are
    /// removed by the first pass.
    fn restore(&mut self, ebpf: &mut Ebpf) -> Result<(), TableError> {
        for (id, backend) in lb_tables::backends(ebpf)? {
            let addr = (
                Ipv4Addr::from(backend.address),
                u16::from_be_bytes(backend.port),
                backend.protocol,
            );
            self.backend_ids.adopt(addr, id);
            self.written.backends.insert(id, backend);
        }
        for (id, revnat) in lb_tables::revnats(ebpf)? {
            self.written.revnat.insert(id, revnat);
        }
        for (key, service) in lb_tables::services(ebpf)? {
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
                }
            }
            self.written.services.insert(key, service);
        }
        Ok(())
    }

    /// Brings the maps to `state`.
    pub fn apply(&mut self, ebpf: &mut Ebpf, state: &LbState) -> Result<(), TableError> {
        if !self.restored {
            self.restore(ebpf)?;
            self.restored = true;
        }
        let (desired, frontends) = self.lower(state);
        let result = self.write(ebpf, desired);
        self.status.by_frontend = state
            .frontends
            .iter()
            .map(|f| {
                let key = (f.address, f.port, protocol_number(f.protocol));
                (key, f.service.clone())
            })
            .collect();
        self.status.frontends = frontends;
        self.status.problems = state
            .problems
            .iter()
            .map(|p| format!("{}/{}: {}", p.service.namespace, p.service.name, p.message))
            .collect();
        match &result {
            Ok(()) => self.status.last_error = None,
            Err(error) => {
                self.status.write_failures += 1;
                self.status.last_error = Some(error.to_string());
            }
        }
        result
    }

    /// The map entries for `state`, allocating ids as needed.
    fn lower(&mut self, state: &LbState) -> (Desired, Vec<FrontendStatus>) {
        let mut desired = Desired::default();
        let mut statuses = Vec::new();
        let mut used_backends = BTreeSet::new();
        let mut used_revnat = BTreeSet::new();
        let mut used_tables = BTreeSet::new();
        for frontend in &state.frontends {
            let protocol = protocol_number(frontend.protocol);
            let mut note = None;
            let mut ids = Vec::new();
            for backend in &frontend.backends {
                let addr = (backend.address, backend.port, protocol);
                let Some(id) = self.backend_ids.get(&addr) else {
                    // 0 keeps `ids` parallel to `frontend.backends`.
                    note = Some("out of backend ids".to_string());
                    ids.push(0);
                    continue;
                };
                used_backends.insert(addr);
                let local = backend.node.as_deref() == Some(self.node_name.as_str());
                desired.backends.insert(
                    id,
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
                    },
                );
                ids.push(id);
            }
            let frontend_addr = (frontend.address, frontend.port, protocol);
            let Some(rev_nat_id) = self.revnat_ids.get(&frontend_addr) else {
                statuses.push(FrontendStatus {
                    frontend: frontend.clone(),
                    rev_nat_id: 0,
                    backend_ids: ids,
                    maglev_table: None,
                    note: Some("out of reverse-NAT ids: not programmed".into()),
                });
                continue;
            };
            used_revnat.insert(frontend_addr);
            desired.revnat.insert(
                rev_nat_id,
                Lb4RevNat {
                    address: frontend.address.octets(),
                    port: frontend.port.to_be_bytes(),
                    pad: [0; 2],
                },
            );
            let active: Vec<u32> = frontend
                .backends
                .iter()
                .zip(&ids)
                .filter(|(b, id)| b.state == BackendState::Active && **id != 0)
                .map(|(_, id)| *id)
                .collect();
            for (slot, id) in active.iter().enumerate() {
                desired.services.insert(
                    service_key(frontend, slot as u16 + 1),
                    Lb4Service {
                        backend_id: *id,
                        ..Default::default()
                    },
                );
            }
            let mut flags = kind_flag(frontend.kind);
            let mut maglev_table = None;
            if frontend.algorithm == Algorithm::Maglev && !active.is_empty() {
                let table_key = (
                    frontend.address,
                    frontend.port,
                    protocol,
                    scope_number(frontend.scope),
                );
                match (
                    self.maglev_tables.get(&table_key),
                    frontend.maglev_table(self.maglev_table_size),
                ) {
                    (Some(table), Ok(slots)) => {
                        used_tables.insert(table_key);
                        let by_id: Vec<u32> =
                            slots.slots().iter().map(|i| ids[*i as usize]).collect();
                        desired.maglev.insert(table - 1, by_id);
                        flags |= Lb4Service::FLAG_MAGLEV;
                        maglev_table = Some(table - 1);
                    }
                    (None, _) => {
                        note = Some("no free Maglev table (see --maglev-tables): random".into())
                    }
                    (_, Err(error)) => note = Some(format!("Maglev: {error}: random")),
                }
            }
            if frontend.affinity_timeout.is_some() {
                flags |= Lb4Service::FLAG_AFFINITY;
            }
            desired.services.insert(
                service_key(frontend, 0),
                Lb4Service {
                    backend_id: 0,
                    count: active.len() as u16,
                    rev_nat_id,
                    flags,
                    pad: 0,
                    affinity_timeout_s: frontend.affinity_timeout.unwrap_or(0),
                    maglev_table: maglev_table.unwrap_or(0),
                },
            );
            statuses.push(FrontendStatus {
                frontend: frontend.clone(),
                rev_nat_id,
                backend_ids: ids,
                maglev_table,
                note,
            });
        }
        self.backend_ids.retain(&used_backends);
        self.revnat_ids.retain(&used_revnat);
        self.maglev_tables.retain(&used_tables);
        (desired, statuses)
    }

    /// Writes the difference between what is written and `desired`.
    fn write(&mut self, ebpf: &mut Ebpf, desired: Desired) -> Result<(), TableError> {
        for (id, backend) in &desired.backends {
            if self.written.backends.get(id) != Some(backend) {
                lb_tables::set_backend(ebpf, *id, *backend)?;
                self.written.backends.insert(*id, *backend);
            }
        }
        for (id, revnat) in &desired.revnat {
            if self.written.revnat.get(id) != Some(revnat) {
                lb_tables::set_revnat(ebpf, *id, *revnat)?;
                self.written.revnat.insert(*id, *revnat);
            }
        }
        for (table, slots) in &desired.maglev {
            if self.written.maglev.get(table) != Some(slots) {
                lb_tables::set_maglev_table(ebpf, *table, slots)?;
                self.written.maglev.insert(*table, slots.clone());
            }
        }
        // Backend slots, then service entries: a new count only ever
        // covers slots that are already written.
        let (masters, slots): (Vec<_>, Vec<_>) = desired
            .services
            .iter()
            .partition(|(key, _)| key.backend_slot == 0);
        for (key, value) in slots.into_iter().chain(masters) {
            if self.written.services.get(key) != Some(value) {
                lb_tables::set_service(ebpf, *key, *value)?;
                self.written.services.insert(*key, *value);
            }
        }
        // Removals: service entries before their slots, then what only
        // removed services referred to.
        let mut stale: Vec<Lb4Key> = self
            .written
            .services
            .keys()
            .filter(|k| !desired.services.contains_key(k))
            .copied()
            .collect();
        stale.sort_by_key(|k| k.backend_slot != 0);
        for key in stale {
            lb_tables::remove_service(ebpf, &key)?;
            self.written.services.remove(&key);
        }
        let stale: Vec<u16> = self
            .written
            .revnat
            .keys()
            .filter(|id| !desired.revnat.contains_key(id))
            .copied()
            .collect();
        for id in stale {
            lb_tables::remove_revnat(ebpf, id)?;
            self.written.revnat.remove(&id);
        }
        let stale: Vec<u32> = self
            .written
            .backends
            .keys()
            .filter(|id| !desired.backends.contains_key(id))
            .copied()
            .collect();
        for id in stale {
            lb_tables::remove_backend(ebpf, id)?;
            self.written.backends.remove(&id);
        }
        self.written
            .maglev
            .retain(|table, _| desired.maglev.contains_key(table));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_lb::{Backend, ServiceName};

    fn backend(last: u8, state: BackendState, node: &str) -> Backend {
        Backend {
            address: Ipv4Addr::new(10, 244, 1, last),
            port: 8080,
            state,
            node: Some(node.into()),
            pod: None,
        }
    }

    fn frontend(backends: Vec<Backend>, algorithm: Algorithm, affinity: Option<u32>) -> Frontend {
        Frontend {
            service: ServiceName::new("svc", "web"),
            port_name: None,
            address: Ipv4Addr::new(10, 96, 0, 10),
            port: 80,
            protocol: Protocol::Tcp,
            kind: FrontendKind::ClusterIp,
            scope: Scope::Internal,
            backends,
            algorithm,
            affinity_timeout: affinity,
        }
    }

    fn state(frontends: Vec<Frontend>) -> LbState {
        LbState {
            frontends,
            problems: Vec::new(),
        }
    }

    #[test]
    fn lowering_puts_only_active_backends_in_slots_and_marks_local_ones() {
        let mut sync = LbSync::new("n1".into(), 251, 4);
        let web = frontend(
            vec![
                backend(2, BackendState::Active, "n1"),
                backend(3, BackendState::Terminating, "n2"),
                backend(4, BackendState::Active, "n2"),
            ],
            Algorithm::Random,
            Some(60),
        );
        let (desired, statuses) = sync.lower(&state(vec![web.clone()]));
        let master = desired.services[&service_key(&web, 0)];
        assert_eq!(master.count, 2, "the terminating backend has no slot");
        assert_eq!(master.affinity_timeout_s, 60);
        assert_eq!(
            master.flags,
            Lb4Service::FLAG_CLUSTER_IP | Lb4Service::FLAG_AFFINITY
        );
        assert_eq!(desired.services.len(), 3, "service entry and two slots");
        let ids = &statuses[0].backend_ids;
        assert_eq!(
            desired.backends.len(),
            3,
            "the terminating one stays for its connections"
        );
        assert_eq!(desired.backends[&ids[0]].flags, Lb4Backend::FLAG_LOCAL);
        assert_eq!(
            desired.backends[&ids[1]].state,
            Lb4Backend::STATE_TERMINATING
        );
        assert_eq!(desired.backends[&ids[2]].flags, 0, "on another node");
        let slots: BTreeSet<u32> = (1..=2)
            .map(|slot| desired.services[&service_key(&web, slot)].backend_id)
            .collect();
        assert_eq!(slots, BTreeSet::from([ids[0], ids[2]]));
        assert_eq!(desired.revnat[&master.rev_nat_id].port, 80u16.to_be_bytes());
    }

    #[test]
    fn ids_survive_changes_and_maglev_tables_index_backend_ids() {
        let mut sync = LbSync::new("n1".into(), 251, 1);
        let two = frontend(
            vec![
                backend(2, BackendState::Active, "n1"),
                backend(3, BackendState::Active, "n2"),
            ],
            Algorithm::Maglev,
            None,
        );
        let (desired, first) = sync.lower(&state(vec![two.clone()]));
        let master = desired.services[&service_key(&two, 0)];
        assert_ne!(master.flags & Lb4Service::FLAG_MAGLEV, 0);
        let table = &desired.maglev[&master.maglev_table];
        assert_eq!(table.len(), 251);
        let in_table: BTreeSet<u32> = table.iter().copied().collect();
        assert_eq!(in_table, first[0].backend_ids.iter().copied().collect());

        // One backend more: the others keep their ids.
        let mut three = two.clone();
        three.backends.push(backend(4, BackendState::Active, "n2"));
        let (_, second) = sync.lower(&state(vec![three]));
        assert_eq!(second[0].backend_ids[..2], first[0].backend_ids[..]);

        // A second Maglev frontend finds no free table (capacity 1): random,
        // and said so.
        let mut other = two.clone();
        other.address = Ipv4Addr::new(10, 96, 0, 11);
        let (desired, statuses) = sync.lower(&state(vec![two.clone(), other.clone()]));
        assert_eq!(
            desired.services[&service_key(&other, 0)].flags & Lb4Service::FLAG_MAGLEV,
            0
        );
        assert!(statuses[1]
            .note
            .as_deref()
            .unwrap()
            .contains("no free Maglev table"));
    }

    #[test]
    fn ids_are_stable_reused_after_release_and_bounded() {
        let mut pool: IdPool<&str, u16> = IdPool::new(2);
        assert_eq!(pool.get(&"a"), Some(1));
        assert_eq!(pool.get(&"b"), Some(2));
        assert_eq!(pool.get(&"a"), Some(1), "stable");
        assert_eq!(pool.get(&"c"), None, "bounded");
        pool.retain(&BTreeSet::from(["b"]));
        assert_eq!(pool.get(&"c"), Some(1), "released id reused");
        pool.adopt("z", 7);
        assert_eq!(pool.get(&"z"), Some(7));
    }
}
