//! The sync with IPv6 frontends beside IPv4 ones: the `weir_lb6_*` maps,
//! ids shared by both families, restart adoption and sweeps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use weir_abi::lb::*;
use weir_lb::{FrontendKind, Scope};
use weir_types::NamespacedName;

use super::*;

/// Both families' LB maps in memory.
#[derive(Default)]
struct DualMaps {
    services: BTreeMap<Lb4Key, Lb4Service>,
    backends: BTreeMap<u32, Lb4Backend>,
    revnat: BTreeMap<u16, Lb4RevNat>,
    maglev: BTreeMap<u32, Vec<u32>>,
    services6: BTreeMap<Lb6Key, Lb6Service>,
    backends6: BTreeMap<u32, Lb6Backend>,
    affinity: HashMap<Lb4AffinityKey, Lb4AffinityValue>,
    sock_revnat6: HashMap<Lb6SockKey, Lb6SockRevNat>,
    nat6: HashMap<Lb6NatKey, Lb6NatEntry>,
}

impl LbMaps for DualMaps {
    fn set_service(&mut self, key: Lb4Key, value: Lb4Service) -> Result<(), TableError> {
        self.services.insert(key, value);
        Ok(())
    }
    fn remove_service(&mut self, key: &Lb4Key) -> Result<(), TableError> {
        self.services.remove(key);
        Ok(())
    }
    fn set_backend(&mut self, id: u32, value: Lb4Backend) -> Result<(), TableError> {
        self.backends.insert(id, value);
        Ok(())
    }
    fn remove_backend(&mut self, id: u32) -> Result<(), TableError> {
        self.backends.remove(&id);
        Ok(())
    }
    fn set_revnat(&mut self, id: u16, value: Lb4RevNat) -> Result<(), TableError> {
        self.revnat.insert(id, value);
        Ok(())
    }
    fn remove_revnat(&mut self, id: u16) -> Result<(), TableError> {
        self.revnat.remove(&id);
        Ok(())
    }
    fn set_maglev_table(&mut self, table: u32, slots: &[u32]) -> Result<(), TableError> {
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
        Ok(Vec::new())
    }
    fn remove_nat(&mut self, _key: &Lb4NatKey) -> Result<(), TableError> {
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
        Ok(Vec::new())
    }
    fn remove_sock_revnat(&mut self, _key: &Lb4SockKey) -> Result<(), TableError> {
        Ok(())
    }
    fn set_service6(&mut self, key: Lb6Key, value: Lb6Service) -> Result<(), TableError> {
        self.services6.insert(key, value);
        Ok(())
    }
    fn remove_service6(&mut self, key: &Lb6Key) -> Result<(), TableError> {
        self.services6.remove(key);
        Ok(())
    }
    fn set_backend6(&mut self, id: u32, value: Lb6Backend) -> Result<(), TableError> {
        self.backends6.insert(id, value);
        Ok(())
    }
    fn remove_backend6(&mut self, id: u32) -> Result<(), TableError> {
        self.backends6.remove(&id);
        Ok(())
    }
    fn services6(&mut self) -> Result<Vec<(Lb6Key, Lb6Service)>, TableError> {
        Ok(self.services6.iter().map(|(k, v)| (*k, *v)).collect())
    }
    fn backends6(&mut self) -> Result<Vec<(u32, Lb6Backend)>, TableError> {
        Ok(self.backends6.iter().map(|(k, v)| (*k, *v)).collect())
    }
    fn sock_revnat6(&mut self) -> Result<Vec<(Lb6SockKey, Lb6SockRevNat)>, TableError> {
        Ok(self.sock_revnat6.iter().map(|(k, v)| (*k, *v)).collect())
    }
    fn remove_sock_revnat6(&mut self, key: &Lb6SockKey) -> Result<(), TableError> {
        self.sock_revnat6.remove(key);
        Ok(())
    }
    fn nat6(&mut self) -> Result<Vec<(Lb6NatKey, Lb6NatEntry)>, TableError> {
        Ok(self.nat6.iter().map(|(k, v)| (*k, *v)).collect())
    }
    fn remove_nat6(&mut self, key: &Lb6NatKey) -> Result<(), TableError> {
        self.nat6.remove(key);
        Ok(())
    }
}

fn status() -> SharedLbStatus {
    Arc::new(Mutex::new(LbStatus::default()))
}

fn v4(backends: &[u8], algorithm: Algorithm) -> Frontend {
    Frontend {
        service: NamespacedName::new("shop", "web"),
        port_name: None,
        address: Ipv4Addr::new(10, 96, 0, 10),
        port: 80,
        protocol: Protocol::Tcp,
        kind: FrontendKind::ClusterIp,
        scope: Scope::Internal,
        backends: backends
            .iter()
            .map(|last| Backend {
                address: Ipv4Addr::new(10, 244, 1, *last),
                port: 8080,
                state: BackendState::Active,
                node: Some("n1".into()),
                pod: None,
            })
            .collect(),
        algorithm,
        affinity_timeout: None,
    }
}

fn v6(backends: &[u16], algorithm: Algorithm) -> Frontend<Ipv6Addr> {
    Frontend {
        service: NamespacedName::new("shop", "web"),
        port_name: None,
        address: "fd00:96::10".parse().unwrap(),
        port: 80,
        protocol: Protocol::Tcp,
        kind: FrontendKind::ClusterIp,
        scope: Scope::Internal,
        backends: backends
            .iter()
            .map(|last| Backend {
                address: Ipv6Addr::new(0xfd00, 0x10, 0x244, 1, 0, 0, 0, *last),
                port: 8080,
                state: BackendState::Active,
                node: Some("n2".into()),
                pod: None,
            })
            .collect(),
        algorithm,
        affinity_timeout: Some(30),
    }
}

fn keyed<A: weir_lb::LbAddress>(
    frontends: &[Frontend<A>],
) -> BTreeMap<FrontendKey<A>, Frontend<A>> {
    frontends.iter().map(|f| (f.key(), f.clone())).collect()
}

/// Applies `next` over `previous` in both families.
fn step(
    sync: &mut LbSync,
    maps: &mut DualMaps,
    (prev4, next4): (&[Frontend], &[Frontend]),
    (prev6, next6): (&[Frontend<Ipv6Addr>], &[Frontend<Ipv6Addr>]),
) {
    fn changed<A: weir_lb::LbAddress>(
        previous: &BTreeMap<FrontendKey<A>, Frontend<A>>,
        next: &BTreeMap<FrontendKey<A>, Frontend<A>>,
    ) -> BTreeSet<FrontendKey<A>> {
        previous
            .keys()
            .chain(next.keys())
            .filter(|k| previous.get(k) != next.get(k))
            .copied()
            .collect()
    }
    let (p4, n4, p6, n6) = (keyed(prev4), keyed(next4), keyed(prev6), keyed(next6));
    let (c4, c6) = (changed(&p4, &n4), changed(&p6, &n6));
    sync.apply_dual(
        maps,
        Desired {
            frontends: &n4,
            changed: &c4,
        },
        Desired {
            frontends: &n6,
            changed: &c6,
        },
        &[],
    )
    .unwrap();
}

fn key6(frontend: &Frontend<Ipv6Addr>, slot: u16) -> Lb6Key {
    <Ipv6Addr as lb::LbFamily>::service_key(&frontend.key(), slot)
}

#[test]
fn ipv6_frontends_go_to_the_lb6_maps_with_ids_shared_with_ipv4() {
    let status = status();
    let mut sync = LbSync::new("n1".into(), 251, 4, status.clone());
    let mut maps = DualMaps::default();
    let (web4, web6) = (
        v4(&[2, 3], Algorithm::Random),
        v6(&[2, 3, 4], Algorithm::Random),
    );
    step(
        &mut sync,
        &mut maps,
        (&[], std::slice::from_ref(&web4)),
        (&[], std::slice::from_ref(&web6)),
    );
    assert_eq!(maps.services.len(), 3, "IPv4: entry and two slots");
    assert_eq!(maps.services6.len(), 4, "IPv6: entry and three slots");
    let entry = maps.services6[&key6(&web6, 0)];
    assert_eq!(entry.count, 3);
    assert_eq!(
        entry.flags,
        Lb4Service::FLAG_CLUSTER_IP | Lb4Service::FLAG_AFFINITY
    );
    assert_eq!(entry.affinity_timeout_s, 30);
    // One id space: no backend id or rev-NAT id means two things.
    let ids4: BTreeSet<u32> = maps.backends.keys().copied().collect();
    let ids6: BTreeSet<u32> = maps.backends6.keys().copied().collect();
    assert_eq!((ids4.len(), ids6.len()), (2, 3));
    assert!(ids4.is_disjoint(&ids6), "{ids4:?} {ids6:?}");
    let revnat4 = maps.services[&service_key(&web4.key(), 0)].rev_nat_id;
    assert_ne!(entry.rev_nat_id, revnat4);
    assert_eq!(
        maps.revnat.keys().copied().collect::<Vec<_>>(),
        vec![revnat4],
        "IPv6 has no per-packet NAT: no reverse-NAT entry"
    );
    let slots: BTreeSet<u32> = (1..=3)
        .map(|slot| maps.services6[&key6(&web6, slot)].backend_id)
        .collect();
    assert_eq!(slots, ids6);
    let backend = maps.backends6.values().next().unwrap();
    assert_eq!(backend.address[..2], [0xfd, 0x00]);
    assert_eq!(backend.flags, 0, "a backend on another node");
    assert_eq!(sync.frontends_written(), 2);
    assert_eq!(sync.backends_written(), 5);
    assert_eq!(sync.service_id_v6(&web6.key()), Some(entry.rev_nat_id));
    let status = status.lock().unwrap();
    assert_eq!(status.frontends.len(), 1);
    assert_eq!(status.frontends_v6[&web6.key()].backend_ids.len(), 3);
    assert_eq!(sync.map_operations().updates(LbMap::Services6), 4);
    assert_eq!(sync.map_operations().updates(LbMap::Backends6), 3);
}

#[test]
fn removing_an_ipv6_frontend_removes_its_entries_and_leaves_ipv4_alone() {
    let mut sync = LbSync::new("n1".into(), 251, 4, status());
    let mut maps = DualMaps::default();
    let (web4, web6) = (
        v4(&[2, 3], Algorithm::Random),
        v6(&[2, 3], Algorithm::Random),
    );
    let (both4, both6) = (vec![web4.clone()], vec![web6.clone()]);
    step(&mut sync, &mut maps, (&[], &both4), (&[], &both6));
    let before4 = (maps.services.clone(), maps.backends.clone());

    // One backend fewer, then the frontend gone.
    let fewer = vec![v6(&[3], Algorithm::Random)];
    step(&mut sync, &mut maps, (&both4, &both4), (&both6, &fewer));
    assert_eq!(maps.services6.len(), 2);
    assert_eq!(maps.backends6.len(), 1);
    step(&mut sync, &mut maps, (&both4, &both4), (&fewer, &[]));
    assert!(maps.services6.is_empty(), "{:?}", maps.services6);
    assert!(maps.backends6.is_empty(), "{:?}", maps.backends6);
    assert_eq!((maps.services.clone(), maps.backends.clone()), before4);
    assert_eq!(sync.frontends_written(), 1);
}

#[test]
fn a_restarted_sync_adopts_the_ipv6_ids_and_sweeps_what_is_no_longer_wanted() {
    let mut maps = DualMaps::default();
    let web6 = v6(&[2, 3], Algorithm::Maglev);
    let mut other = v6(&[9], Algorithm::Random);
    other.port = 443;
    let first = vec![web6.clone(), other.clone()];
    let mut sync = LbSync::new("n1".into(), 251, 4, status());
    step(&mut sync, &mut maps, (&[], &[]), (&[], &first));
    let ids: BTreeSet<u32> = maps.backends6.keys().copied().collect();
    let entry = maps.services6[&key6(&web6, 0)];
    assert_ne!(entry.flags & Lb4Service::FLAG_MAGLEV, 0);
    assert_eq!(maps.maglev.len(), 1, "IPv6 uses the shared Maglev tables");

    // A new agent: the same frontend keeps its ids; the other one goes.
    let mut sync = LbSync::new("n1".into(), 251, 4, status());
    let kept = vec![web6.clone()];
    step(&mut sync, &mut maps, (&[], &[]), (&first, &kept));
    assert_eq!(
        maps.services6[&key6(&web6, 0)],
        entry,
        "same ids, same table"
    );
    assert_eq!(maps.services6.len(), 3, "entry and two slots");
    let left: BTreeSet<u32> = maps.backends6.keys().copied().collect();
    assert_eq!(left.len(), 2);
    assert!(left.is_subset(&ids));

    // An IPv4-only apply (full, after a restart) sweeps every IPv6 entry.
    let mut sync = LbSync::new("n1".into(), 251, 4, status());
    sync.apply(&mut maps, &BTreeMap::new(), &BTreeSet::new(), &[])
        .unwrap();
    assert!(maps.services6.is_empty());
    assert!(maps.backends6.is_empty());
}

/// An IPv6 frontend with two backends as a sync programmed it: its
/// reverse-NAT id and one of its backends.
struct Synced {
    maps: DualMaps,
    web6: Frontend<Ipv6Addr>,
    rev_nat_id: u16,
    id: u32,
    backend: Lb6Backend,
}

fn synced_web6() -> Synced {
    let mut maps = DualMaps::default();
    let web6 = v6(&[2, 3], Algorithm::Random);
    let mut sync = LbSync::new("n1".into(), 251, 4, status());
    step(
        &mut sync,
        &mut maps,
        (&[], &[]),
        (&[], std::slice::from_ref(&web6)),
    );
    let rev_nat_id = maps.services6[&key6(&web6, 0)].rev_nat_id;
    let (id, backend) = maps.backends6.iter().next().map(|(k, v)| (*k, *v)).unwrap();
    Synced {
        maps,
        web6,
        rev_nat_id,
        id,
        backend,
    }
}

#[test]
fn socket_reverse_translations_and_affinity_of_gone_ipv6_backends_are_swept() {
    let Synced {
        mut maps,
        web6,
        rev_nat_id,
        id,
        backend,
    } = synced_web6();
    let live = Lb6SockKey {
        cookie: 1,
        address: backend.address,
        port: backend.port,
        pad: [0; 6],
    };
    let gone = Lb6SockKey {
        cookie: 2,
        address: Ipv6Addr::new(0xfd00, 0x10, 0x244, 9, 0, 0, 0, 9).octets(),
        ..live
    };
    let frontend = Lb6SockRevNat {
        address: web6.address.octets(),
        port: 80u16.to_be_bytes(),
        rev_nat_id,
    };
    maps.sock_revnat6.insert(live, frontend);
    maps.sock_revnat6.insert(gone, frontend);
    let affinity = |backend_id: u32| {
        (
            Lb4AffinityKey {
                client: backend_id.into(),
                rev_nat_id,
                kind: Lb4AffinityKey::KIND_NETNS,
                pad: [0; 5],
            },
            Lb4AffinityValue {
                backend_id,
                last_used_s: 0,
            },
        )
    };
    maps.affinity.extend([affinity(id), affinity(999)]);

    // A restart's full pass sweeps the connections' entries.
    let mut sync = LbSync::new("n1".into(), 251, 4, status());
    let all = vec![web6];
    step(&mut sync, &mut maps, (&[], &[]), (&all, &all));
    assert_eq!(maps.sock_revnat6.keys().collect::<Vec<_>>(), vec![&live]);
    assert_eq!(
        maps.affinity
            .values()
            .map(|v| v.backend_id)
            .collect::<Vec<_>>(),
        vec![id],
        "IPv6 members keep their affinity in the shared map"
    );
}

#[test]
fn ipv6_node_port_mappings_of_gone_backends_are_swept() {
    let Synced {
        mut maps,
        web6,
        rev_nat_id,
        id,
        backend,
    } = synced_web6();
    // A client's connection to the backend (its forward mapping), one to an
    // address no backend has any more under that id, and a masqueraded
    // connection's, which names no backend.
    let client = ipv6_words(&Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).octets());
    let key = |sport: u16| Lb6NatKey {
        saddr: client,
        daddr: ipv6_words(&web6.address.octets()),
        sport: sport.to_be_bytes(),
        dport: 80u16.to_be_bytes(),
        protocol: weir_abi::ip_proto::TCP,
        direction: Lb6NatKey::FORWARD,
        pad: [0; 2],
    };
    let entry = |address: [u8; 16], flags: u8| Lb6NatEntry {
        saddr: client,
        daddr: ipv6_words(&address),
        sport: 40000u16.to_be_bytes(),
        dport: backend.port,
        backend_id: id,
        rev_nat_id,
        flags,
        pad: 0,
    };
    let moved = Ipv6Addr::new(0xfd00, 0x10, 0x244, 9, 0, 0, 0, 9).octets();
    maps.nat6.insert(key(1), entry(backend.address, 0));
    maps.nat6.insert(key(2), entry(moved, 0));
    let masquerade = Lb6NatEntry {
        backend_id: 0,
        rev_nat_id: 0,
        ..entry(moved, Lb6NatEntry::FLAG_SNAT | Lb6NatEntry::FLAG_MASQUERADE)
    };
    maps.nat6.insert(key(3), masquerade);

    // A restart's full pass sweeps the mapping that no longer fits.
    let mut sync = LbSync::new("n1".into(), 251, 4, status());
    let all = vec![web6];
    step(&mut sync, &mut maps, (&[], &[]), (&all, &all));
    let mut left: Vec<u16> = maps
        .nat6
        .keys()
        .map(|k| u16::from_be_bytes(k.sport))
        .collect();
    left.sort_unstable();
    assert_eq!(left, [1, 3]);
}
