use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aya::maps::MapError;
use aya::sys::SyscallError;
use weir_abi::lb::*;
use weir_lb::{FrontendKind, Scope};
use weir_types::NamespacedName;

use super::*;

/// The LB maps in memory, with the service map's capacity as the kernel
/// enforces `max_entries`.
struct MemoryMaps {
    services: BTreeMap<Lb4Key, Lb4Service>,
    backends: BTreeMap<u32, Lb4Backend>,
    revnat: BTreeMap<u16, Lb4RevNat>,
    maglev: BTreeMap<u32, Vec<u32>>,
    /// What the datapath keeps per connection and client.
    nat: HashMap<Lb4NatKey, Lb4NatEntry>,
    affinity: HashMap<Lb4AffinityKey, Lb4AffinityValue>,
    sock_revnat: HashMap<Lb4SockKey, Lb4SockRevNat>,
    service_capacity: usize,
    writes: usize,
}

impl MemoryMaps {
    fn new() -> Self {
        MemoryMaps {
            services: BTreeMap::new(),
            backends: BTreeMap::new(),
            revnat: BTreeMap::new(),
            maglev: BTreeMap::new(),
            nat: HashMap::new(),
            affinity: HashMap::new(),
            sock_revnat: HashMap::new(),
            service_capacity: usize::MAX,
            writes: 0,
        }
    }
}

fn map_full() -> TableError {
    TableError::Map {
        map: "weir_lb4_services",
        source: MapError::SyscallError(SyscallError {
            call: "bpf_map_update_elem",
            io_error: std::io::Error::from_raw_os_error(7), // E2BIG, what a full hash map answers,
        }),
    }
}

impl LbMaps for MemoryMaps {
    fn set_service(&mut self, key: Lb4Key, value: Lb4Service) -> Result<(), TableError> {
        if !self.services.contains_key(&key) && self.services.len() >= self.service_capacity {
            return Err(map_full());
        }
        self.writes += 1;
        self.services.insert(key, value);
        Ok(())
    }
    fn remove_service(&mut self, key: &Lb4Key) -> Result<(), TableError> {
        self.writes += 1;
        self.services.remove(key);
        Ok(())
    }
    fn set_backend(&mut self, id: u32, value: Lb4Backend) -> Result<(), TableError> {
        self.writes += 1;
        self.backends.insert(id, value);
        Ok(())
    }
    fn remove_backend(&mut self, id: u32) -> Result<(), TableError> {
        self.writes += 1;
        self.backends.remove(&id);
        Ok(())
    }
    fn set_revnat(&mut self, id: u16, value: Lb4RevNat) -> Result<(), TableError> {
        self.writes += 1;
        self.revnat.insert(id, value);
        Ok(())
    }
    fn remove_revnat(&mut self, id: u16) -> Result<(), TableError> {
        self.writes += 1;
        self.revnat.remove(&id);
        Ok(())
    }
    fn set_maglev_table(&mut self, table: u32, slots: &[u32]) -> Result<(), TableError> {
        self.writes += 1;
        self.maglev.insert(table, slots.to_vec());
        Ok(())
    }
    fn services(&mut self) -> Result<Vec<(Lb4Key, Lb4Service)>, TableError> {
        Ok(self.services.iter().map(|(k, v)| (*k, *v)).collect())
    }
    fn backends(&mut self) -> Result<Vec<(u32, Lb4Backend)>, TableError> {
        Ok(self.backends.iter().map(|(k, v)| (*k, *v)).collect())
    }
    fn revnats(&mut self) -> Result<Vec<(u16, Lb4RevNat)>, TableError> {
        Ok(self.revnat.iter().map(|(k, v)| (*k, *v)).collect())
    }
    fn maglev_table(&mut self, table: u32, size: u32) -> Result<Vec<u32>, TableError> {
        let slots = self.maglev.get(&table).cloned().unwrap_or_default();
        Ok((0..size as usize)
            .map(|i| slots.get(i).copied().unwrap_or(0))
            .collect())
    }
    fn nat(&mut self) -> Result<Vec<(Lb4NatKey, Lb4NatEntry)>, TableError> {
        Ok(self.nat.iter().map(|(k, v)| (*k, *v)).collect())
    }
    fn remove_nat(&mut self, key: &Lb4NatKey) -> Result<(), TableError> {
        self.nat.remove(key);
        Ok(())
    }
    fn affinity(&mut self) -> Result<Vec<(Lb4AffinityKey, Lb4AffinityValue)>, TableError> {
        Ok(self.affinity.iter().map(|(k, v)| (*k, *v)).collect())
    }
    fn remove_affinity(&mut self, key: &Lb4AffinityKey) -> Result<(), TableError> {
        self.affinity.remove(key);
        Ok(())
    }
    fn sock_revnat(&mut self) -> Result<Vec<(Lb4SockKey, Lb4SockRevNat)>, TableError> {
        Ok(self.sock_revnat.iter().map(|(k, v)| (*k, *v)).collect())
    }
    fn remove_sock_revnat(&mut self, key: &Lb4SockKey) -> Result<(), TableError> {
        self.sock_revnat.remove(key);
        Ok(())
    }
}

/// A service entry with its ids resolved to what they name.
#[derive(Debug, PartialEq)]
struct Resolved {
    entry: Lb4Service,
    revnat: Lb4RevNat,
    slots: Vec<Lb4Backend>,
    maglev: Option<Vec<Lb4Backend>>,
}

/// The maps as the datapath reads them, independent of id numbering; also
/// checks that nothing dangles and nothing is left over.
fn resolve(maps: &MemoryMaps) -> BTreeMap<Lb4Key, Resolved> {
    let mut view = BTreeMap::new();
    let mut referenced_backends = BTreeSet::new();
    let mut referenced_revnat = BTreeSet::new();
    for (key, entry) in maps.services.iter().filter(|(k, _)| k.backend_slot == 0) {
        let slots: Vec<Lb4Backend> = (1..=entry.count)
            .map(|slot| {
                let id = maps.services[&Lb4Key {
                    backend_slot: slot,
                    ..*key
                }]
                    .backend_id;
                referenced_backends.insert(id);
                maps.backends[&id]
            })
            .collect();
        referenced_revnat.insert(entry.rev_nat_id);
        let maglev = (entry.flags & Lb4Service::FLAG_MAGLEV != 0).then(|| {
            maps.maglev[&entry.maglev_table]
                .iter()
                .map(|id| maps.backends[id])
                .collect()
        });
        let mut entry = *entry;
        let revnat = maps.revnat[&entry.rev_nat_id];
        entry.rev_nat_id = 0;
        entry.maglev_table = 0;
        view.insert(
            *key,
            Resolved {
                entry,
                revnat,
                slots,
                maglev,
            },
        );
    }
    for key in maps.services.keys().filter(|k| k.backend_slot != 0) {
        let entry = maps.services.get(&Lb4Key {
            backend_slot: 0,
            ..*key
        });
        assert!(
            entry.is_some_and(|e| key.backend_slot <= e.count),
            "slot {key:?} beyond its entry"
        );
    }
    for id in maps.revnat.keys() {
        assert!(referenced_revnat.contains(id), "reverse NAT {id} left over");
    }
    for (id, backend) in &maps.backends {
        // Terminating backends are kept without a slot.
        assert!(
            referenced_backends.contains(id) || backend.state == Lb4Backend::STATE_TERMINATING,
            "backend {id} left over"
        );
    }
    view
}

fn shared_status() -> SharedLbStatus {
    Arc::new(Mutex::new(LbStatus::default()))
}

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
        service: NamespacedName::new("svc", "web"),
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

fn by_key(frontends: &[Frontend]) -> BTreeMap<FrontendKey, Frontend> {
    frontends.iter().map(|f| (f.key(), f.clone())).collect()
}

/// Applies `next` over `previous`, telling the sync what differs.
fn step(
    sync: &mut LbSync,
    maps: &mut MemoryMaps,
    previous: &BTreeMap<FrontendKey, Frontend>,
    next: &BTreeMap<FrontendKey, Frontend>,
) -> Result<(), TableError> {
    let changed = previous
        .keys()
        .chain(next.keys())
        .filter(|k| previous.get(k) != next.get(k))
        .copied()
        .collect();
    sync.apply(maps, next, &changed, &[])
}

#[test]
fn a_frontend_writes_active_backends_in_slots_and_marks_local_ones() {
    let status = shared_status();
    let mut sync = LbSync::new("n1".into(), 251, 4, status.clone());
    let mut maps = MemoryMaps::new();
    let web = frontend(
        vec![
            backend(2, BackendState::Active, "n1"),
            backend(3, BackendState::Terminating, "n2"),
            backend(4, BackendState::Active, "n2"),
        ],
        Algorithm::Random,
        Some(60),
    );
    step(
        &mut sync,
        &mut maps,
        &BTreeMap::new(),
        &by_key(std::slice::from_ref(&web)),
    )
    .unwrap();
    let entry = maps.services[&service_key(&web.key(), 0)];
    assert_eq!(entry.count, 2, "the terminating backend has no slot");
    assert_eq!(entry.affinity_timeout_s, 60);
    assert_eq!(
        entry.flags,
        Lb4Service::FLAG_CLUSTER_IP | Lb4Service::FLAG_AFFINITY
    );
    assert_eq!(maps.services.len(), 3, "service entry and two slots");
    let operations = sync.map_operations();
    assert_eq!(operations.updates(LbMap::Services), 3);
    assert_eq!(operations.updates(LbMap::Backends), 3);
    assert_eq!(operations.updates(LbMap::RevNat), 1);
    assert_eq!(operations.deletes(LbMap::Services), 0);
    let status = status.lock().unwrap();
    let ids = &status.frontends[&web.key()].backend_ids;
    assert_eq!(
        maps.backends.len(),
        3,
        "the terminating one stays for its connections"
    );
    assert_eq!(maps.backends[&ids[0]].flags, Lb4Backend::FLAG_LOCAL);
    assert_eq!(maps.backends[&ids[1]].state, Lb4Backend::STATE_TERMINATING);
    assert_eq!(maps.backends[&ids[2]].flags, 0, "on another node");
    let slots: BTreeSet<u32> = (1..=2)
        .map(|slot| maps.services[&service_key(&web.key(), slot)].backend_id)
        .collect();
    assert_eq!(slots, BTreeSet::from([ids[0], ids[2]]));
    assert_eq!(maps.revnat[&entry.rev_nat_id].port, 80u16.to_be_bytes());
    assert_eq!(
        status.service_at(web.address, 80, weir_abi::ip_proto::TCP),
        Some(&NamespacedName::new("svc", "web"))
    );
}

#[test]
fn ids_survive_changes_and_maglev_tables_index_backend_ids() {
    let status = shared_status();
    let mut sync = LbSync::new("n1".into(), 251, 1, status.clone());
    let mut maps = MemoryMaps::new();
    let ids_of = |key: &FrontendKey| status.lock().unwrap().frontends[key].backend_ids.clone();
    let two = frontend(
        vec![
            backend(2, BackendState::Active, "n1"),
            backend(3, BackendState::Active, "n2"),
        ],
        Algorithm::Maglev,
        None,
    );
    let first = by_key(std::slice::from_ref(&two));
    step(&mut sync, &mut maps, &BTreeMap::new(), &first).unwrap();
    let entry = maps.services[&service_key(&two.key(), 0)];
    assert_ne!(entry.flags & Lb4Service::FLAG_MAGLEV, 0);
    let table = &maps.maglev[&entry.maglev_table];
    assert_eq!(table.len(), 251);
    let in_table: BTreeSet<u32> = table.iter().copied().collect();
    let first_ids = ids_of(&two.key());
    assert_eq!(in_table, first_ids.iter().copied().collect());

    // One backend more: the others keep their ids.
    let mut three = two.clone();
    three.backends.push(backend(4, BackendState::Active, "n2"));
    let second = by_key(std::slice::from_ref(&three));
    step(&mut sync, &mut maps, &first, &second).unwrap();
    assert_eq!(ids_of(&two.key())[..2], first_ids[..]);

    // A second Maglev frontend finds no free table (capacity 1): random,
    // and said so.
    let mut other = two.clone();
    other.address = Ipv4Addr::new(10, 96, 0, 11);
    let third = by_key(&[three, other.clone()]);
    step(&mut sync, &mut maps, &second, &third).unwrap();
    assert_eq!(
        maps.services[&service_key(&other.key(), 0)].flags & Lb4Service::FLAG_MAGLEV,
        0
    );
    let note = status.lock().unwrap().frontends[&other.key()].note.clone();
    assert!(note.unwrap().contains("no free Maglev table"));
    resolve(&maps);
}

#[test]
fn shrinking_and_removing_leave_nothing_behind() {
    let mut sync = LbSync::new("n1".into(), 251, 4, shared_status());
    let mut maps = MemoryMaps::new();
    let three = frontend(
        (2..5)
            .map(|i| backend(i, BackendState::Active, "n2"))
            .collect(),
        Algorithm::Random,
        None,
    );
    let mut one = three.clone();
    one.backends.truncate(1);
    let states = [
        by_key(std::slice::from_ref(&three)),
        by_key(&[one]),
        by_key(&[three]),
        BTreeMap::new(),
    ];
    let mut previous = BTreeMap::new();
    for (i, next) in states.iter().enumerate() {
        step(&mut sync, &mut maps, &previous, next).unwrap();
        let expected_backends = [3, 1, 3, 0][i];
        assert_eq!(maps.backends.len(), expected_backends, "state {i}");
        assert_eq!(maps.services.len(), [4, 2, 4, 0][i], "state {i}");
        resolve(&maps);
        previous = next.clone();
    }
    assert!(maps.revnat.is_empty());
    assert_eq!(sync.frontends_written(), 0);
}

/// A random frontend at one of 3 addresses × 2 ports × 2 scopes, over 5
/// backends shared between frontends (each on one node, in one state, as
/// the pods behind them are).
fn random_frontend(rng: &mut fastrand::Rng) -> Frontend {
    let mut backends: Vec<Backend> = (0..rng.u64(..4))
        .map(|_| {
            let last = 1 + rng.u64(..5) as u8;
            let state = match last {
                5 => BackendState::Terminating,
                _ => BackendState::Active,
            };
            backend(last, state, ["n1", "n2"][usize::from(last % 2)])
        })
        .collect();
    backends.sort_by_key(|b| (b.address, b.port));
    backends.dedup_by_key(|b| (b.address, b.port));
    Frontend {
        service: NamespacedName::new("svc", format!("s{}", rng.u64(..3))),
        port_name: None,
        address: Ipv4Addr::new(10, 96, 0, 1 + rng.u64(..3) as u8),
        port: [80, 81][rng.u64(..2) as usize],
        protocol: Protocol::Tcp,
        kind: FrontendKind::ClusterIp,
        scope: [Scope::Internal, Scope::External][rng.u64(..2) as usize],
        backends,
        algorithm: [Algorithm::Random, Algorithm::Maglev][rng.u64(..2) as usize],
        affinity_timeout: [None, Some(30)][rng.u64(..2) as usize],
    }
}

#[test]
fn passes_of_changes_end_as_one_fresh_pass_would_even_after_full_maps_and_restarts() {
    let mut rng = fastrand::Rng::with_seed(0xfeed_0042);
    let mut maps = MemoryMaps::new();
    let mut sync = LbSync::new("n1".into(), 13, 64, shared_status());
    let mut current: BTreeMap<FrontendKey, Frontend> = BTreeMap::new();
    let mut failed_passes = 0;
    for round in 0..300 {
        let mut next = current.clone();
        for _ in 0..1 + rng.u64(..3) {
            let frontend = random_frontend(&mut rng);
            if rng.u64(..4) == 0 {
                next.remove(&frontend.key());
            } else {
                next.insert(frontend.key(), frontend);
            }
        }
        // Now and then the service map is full for a pass.
        let squeeze = round % 17 == 5;
        if squeeze {
            maps.service_capacity = maps.services.len();
        }
        let result = step(&mut sync, &mut maps, &current, &next);
        maps.service_capacity = usize::MAX;
        if squeeze && result.is_err() {
            failed_passes += 1;
            // The next pass, with room again, gets there in full.
            sync.apply(&mut maps, &next, &BTreeSet::new(), &[]).unwrap();
        } else {
            result.unwrap();
        }
        // Now and then the agent restarts over the pinned maps.
        if round % 23 == 11 {
            sync = LbSync::new("n1".into(), 13, 64, shared_status());
            let writes = maps.writes;
            sync.apply(&mut maps, &next, &BTreeSet::new(), &[]).unwrap();
            assert_eq!(
                maps.writes, writes,
                "round {round}: a restart over the same state writes nothing"
            );
            assert_eq!(sync.map_operations(), MapOperations::default());
        }

        let mut fresh_maps = MemoryMaps::new();
        let mut fresh = LbSync::new("n1".into(), 13, 64, shared_status());
        fresh
            .apply(&mut fresh_maps, &next, &BTreeSet::new(), &[])
            .unwrap();
        assert_eq!(resolve(&maps), resolve(&fresh_maps), "round {round}");
        current = next;
    }
    assert!(failed_passes > 3, "the full map was met: {failed_passes}");
}

#[test]
fn a_full_map_is_reported_and_the_next_pass_recovers() {
    let status = shared_status();
    let mut sync = LbSync::new("n1".into(), 251, 4, status.clone());
    let mut maps = MemoryMaps::new();
    maps.service_capacity = 2;
    let web = frontend(
        vec![
            backend(2, BackendState::Active, "n1"),
            backend(3, BackendState::Active, "n2"),
        ],
        Algorithm::Random,
        None,
    );
    let desired = by_key(std::slice::from_ref(&web));
    assert!(step(&mut sync, &mut maps, &BTreeMap::new(), &desired).is_err());
    {
        let status = status.lock().unwrap();
        assert_eq!(status.write_failures, 1);
        assert!(status
            .last_error
            .as_deref()
            .unwrap()
            .contains("weir_lb4_services"));
    }
    assert!(
        !maps.services.contains_key(&service_key(&web.key(), 0)),
        "the entry is not written before all its slots"
    );
    maps.service_capacity = usize::MAX;
    sync.apply(&mut maps, &desired, &BTreeSet::new(), &[])
        .unwrap();
    assert_eq!(maps.services[&service_key(&web.key(), 0)].count, 2);
    assert_eq!(status.lock().unwrap().last_error, None);
    resolve(&maps);
}

/// A connection from 192.0.2.1:`sport` balanced by the frontend of
/// `rev_nat_id` to backend `id`, as the datapath records it: the forward
/// and the reply mapping, and the client's affinity entry.
fn connect(maps: &mut MemoryMaps, frontend: &Frontend, rev_nat_id: u16, id: u32, sport: u16) {
    let backend = maps.backends[&id];
    let client = [192, 0, 2, 1];
    let forward = Lb4NatKey {
        saddr: client,
        daddr: frontend.address.octets(),
        sport: sport.to_be_bytes(),
        dport: frontend.port.to_be_bytes(),
        protocol: weir_abi::ip_proto::TCP,
        direction: Lb4NatKey::FORWARD,
        pad: [0; 2],
    };
    let reply = Lb4NatKey {
        saddr: backend.address,
        daddr: client,
        sport: backend.port,
        dport: sport.to_be_bytes(),
        direction: Lb4NatKey::REPLY,
        ..forward
    };
    let entry = Lb4NatEntry {
        saddr: client,
        daddr: backend.address,
        sport: sport.to_be_bytes(),
        dport: backend.port,
        backend_id: id,
        rev_nat_id,
        flags: 0,
        pad: 0,
    };
    maps.nat.insert(forward, entry);
    maps.nat.insert(
        reply,
        Lb4NatEntry {
            saddr: forward.daddr,
            daddr: client,
            sport: forward.dport,
            dport: forward.sport,
            ..entry
        },
    );
    maps.sock_revnat.insert(
        Lb4SockKey {
            cookie: u64::from(sport),
            address: backend.address,
            port: backend.port,
            pad: [0; 2],
        },
        Lb4SockRevNat {
            address: frontend.address.octets(),
            port: frontend.port.to_be_bytes(),
            rev_nat_id,
        },
    );
    maps.affinity.insert(
        Lb4AffinityKey {
            client: u64::from(sport),
            rev_nat_id,
            kind: Lb4AffinityKey::KIND_ADDRESS,
            pad: [0; 5],
        },
        Lb4AffinityValue {
            backend_id: id,
            last_used_s: 1,
        },
    );
}

/// The backend ids the NAT mappings and affinity entries point at, and
/// the backend addresses' last bytes of the socket reverse translations.
fn steered(maps: &MemoryMaps) -> (Vec<u32>, Vec<u32>, Vec<u8>) {
    let mut nat: Vec<u32> = maps.nat.values().map(|e| e.backend_id).collect();
    let mut affinity: Vec<u32> = maps.affinity.values().map(|v| v.backend_id).collect();
    let mut sockets: Vec<u8> = maps.sock_revnat.keys().map(|k| k.address[3]).collect();
    nat.sort_unstable();
    affinity.sort_unstable();
    sockets.sort_unstable();
    (nat, affinity, sockets)
}

#[test]
fn a_restart_removes_nat_and_affinity_of_what_was_deleted_while_down() {
    let active = BackendState::Active;
    let web = frontend(
        vec![backend(1, active, "n1"), backend(2, active, "n1")],
        Algorithm::Random,
        Some(60),
    );
    let api = Frontend {
        address: Ipv4Addr::new(10, 96, 0, 11),
        backends: vec![backend(3, active, "n1")],
        ..web.clone()
    };
    let mut maps = MemoryMaps::new();
    let mut sync = LbSync::new("n1".into(), 251, 4, shared_status());
    sync.apply(
        &mut maps,
        &by_key(&[web.clone(), api.clone()]),
        &BTreeSet::new(),
        &[],
    )
    .unwrap();
    let id_of = |maps: &MemoryMaps, last: u8| {
        maps.backends
            .iter()
            .find(|(_, b)| b.address == [10, 244, 1, last])
            .map(|(id, _)| *id)
            .unwrap()
    };
    let revnat_of =
        |maps: &MemoryMaps, f: &Frontend| maps.services[&service_key(&f.key(), 0)].rev_nat_id;
    let (b1, b2, b3) = (id_of(&maps, 1), id_of(&maps, 2), id_of(&maps, 3));
    let (web_rev, api_rev) = (revnat_of(&maps, &web), revnat_of(&maps, &api));
    connect(&mut maps, &web, web_rev, b1, 1001);
    connect(&mut maps, &web, web_rev, b2, 1002);
    connect(&mut maps, &api, api_rev, b3, 1003);
    // A pass that is not full leaves them.
    sync.apply(
        &mut maps,
        &by_key(&[web.clone(), api.clone()]),
        &BTreeSet::new(),
        &[],
    )
    .unwrap();
    assert_eq!(
        steered(&maps),
        (
            vec![b1, b1, b2, b2, b3, b3],
            vec![b1, b2, b3],
            vec![1, 2, 3]
        )
    );

    // While the agent is down web loses backend .2 and api is deleted.
    let web_now = Frontend {
        backends: vec![backend(1, active, "n1")],
        ..web.clone()
    };
    let mut restarted = LbSync::new("n1".into(), 251, 4, shared_status());
    restarted
        .apply(
            &mut maps,
            &by_key(std::slice::from_ref(&web_now)),
            &BTreeSet::new(),
            &[],
        )
        .unwrap();
    assert_eq!(
        steered(&maps),
        (vec![b1, b1], vec![b1], vec![1]),
        "only web's connection to .1 keeps its mappings"
    );

    // A freed id handed to a new backend: a mapping that still names the
    // id with the old address is not the new backend's.
    let mut entry = maps.nat.values().next().copied().unwrap();
    entry.daddr = [10, 244, 1, 2];
    let key = Lb4NatKey {
        direction: Lb4NatKey::FORWARD,
        ..*maps.nat.keys().next().unwrap()
    };
    let members = BTreeMap::from([(web_rev, BTreeSet::from([b1]))]);
    let backend = |id| maps.backends.get(&id).map(|b| (b.address, b.port));
    assert!(connections::stale_nat(&key, &entry, backend, &members));
    entry.daddr = [10, 244, 1, 1];
    entry.dport = 8080u16.to_be_bytes();
    assert!(!connections::stale_nat(&key, &entry, backend, &members));
    entry.rev_nat_id = api_rev;
    assert!(connections::stale_nat(&key, &entry, backend, &members));
}

#[test]
fn a_restart_keeps_the_mappings_of_masqueraded_connections() {
    let web = frontend(
        vec![backend(1, BackendState::Active, "n1")],
        Algorithm::Random,
        None,
    );
    let mut maps = MemoryMaps::new();
    // A pod's connection out of the cluster, masqueraded to the node: its
    // mappings name no backend and no frontend.
    let pod = [10, 244, 1, 7];
    let (node, world) = ([10, 77, 0, 11], [203, 0, 113, 10]);
    let flags = Lb4NatEntry::FLAG_SNAT | Lb4NatEntry::FLAG_MASQUERADE;
    let forward = Lb4NatKey {
        saddr: pod,
        daddr: world,
        sport: 40000u16.to_be_bytes(),
        dport: 80u16.to_be_bytes(),
        protocol: weir_abi::ip_proto::TCP,
        direction: Lb4NatKey::FORWARD,
        pad: [0; 2],
    };
    let reply = Lb4NatKey {
        saddr: world,
        daddr: node,
        sport: 80u16.to_be_bytes(),
        dport: 61000u16.to_be_bytes(),
        direction: Lb4NatKey::REPLY,
        ..forward
    };
    let entry = Lb4NatEntry {
        saddr: node,
        daddr: world,
        sport: 61000u16.to_be_bytes(),
        dport: 80u16.to_be_bytes(),
        backend_id: 0,
        rev_nat_id: 0,
        flags,
        pad: 0,
    };
    maps.nat.insert(forward, entry);
    maps.nat.insert(
        reply,
        Lb4NatEntry {
            saddr: world,
            daddr: pod,
            sport: 80u16.to_be_bytes(),
            dport: 40000u16.to_be_bytes(),
            ..entry
        },
    );
    // The first pass after a restart is full and sweeps what no frontend
    // has: the connection keeps its port.
    let mut sync = LbSync::new("n1".into(), 251, 4, shared_status());
    sync.apply(&mut maps, &by_key(&[web]), &BTreeSet::new(), &[])
        .unwrap();
    assert_eq!(maps.nat.len(), 2, "{:?}", maps.nat);
}
