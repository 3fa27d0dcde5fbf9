use weir_lb::{Algorithm, Backend, Frontend};
use weir_types::NamespacedName;

use super::*;

fn frontend(protocol: Protocol, scope: Scope) -> FrontendKey {
    FrontendKey {
        address: Ipv4Addr::new(10, 96, 0, 10),
        port: 8080,
        protocol,
        scope,
    }
}

#[test]
fn service_keys_round_trip_in_every_protocol_and_scope() {
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        for scope in [Scope::External, Scope::Internal] {
            for slot in [0, 1, u16::MAX] {
                let key = frontend(protocol, scope);
                let encoded = service_key(&key, slot);
                assert_eq!(encoded.address, [10, 96, 0, 10]);
                assert_eq!(encoded.port, 8080u16.to_be_bytes(), "network order");
                assert_eq!(encoded.protocol, protocol.number());
                assert_eq!(decode_service_key(&encoded), Ok((key, slot)));
            }
        }
    }
    let key = service_key(&frontend(Protocol::Tcp, Scope::External), 0);
    assert_eq!(key.scope, LB_SCOPE_EXTERNAL);
    let bad = Lb4Key { scope: 9, ..key };
    assert_eq!(decode_service_key(&bad), Err(LbCodecError::Scope(9)));
    let sctp = Lb4Key {
        protocol: 132,
        ..key
    };
    assert_eq!(decode_service_key(&sctp), Err(LbCodecError::Protocol(132)));
}

#[test]
fn service_entries_round_trip_with_every_kind_and_option() {
    let kinds = [
        FrontendKind::ClusterIp,
        FrontendKind::NodePort,
        FrontendKind::ExternalIp,
        FrontendKind::LoadBalancer,
    ];
    for kind in kinds {
        for affinity_timeout in [None, Some(0), Some(10_800)] {
            for maglev_table in [None, Some(0), Some(7)] {
                let entry = ServiceEntry {
                    frontend: frontend(Protocol::Udp, Scope::Internal),
                    kind,
                    count: 3,
                    rev_nat_id: 42,
                    affinity_timeout,
                    maglev_table,
                };
                let (key, value) = encode_service(&entry);
                assert_eq!(key.backend_slot, 0);
                assert_eq!(value.backend_id, 0);
                assert_eq!(
                    value.flags & Lb4Service::FLAG_MAGLEV != 0,
                    maglev_table.is_some()
                );
                assert_eq!(
                    value.flags & Lb4Service::FLAG_AFFINITY != 0,
                    affinity_timeout.is_some()
                );
                assert_eq!(
                    decode_service(&key, &value),
                    Ok(ServiceMapEntry::Service(entry))
                );
            }
        }
    }
}

#[test]
fn kind_flags_are_the_abi_ones_and_exactly_one_is_set() {
    let entry = |kind| ServiceEntry {
        frontend: frontend(Protocol::Tcp, Scope::External),
        kind,
        count: 0,
        rev_nat_id: 1,
        affinity_timeout: None,
        maglev_table: None,
    };
    let flags = |kind| encode_service(&entry(kind)).1.flags;
    assert_eq!(flags(FrontendKind::ClusterIp), Lb4Service::FLAG_CLUSTER_IP);
    assert_eq!(flags(FrontendKind::NodePort), Lb4Service::FLAG_NODE_PORT);
    assert_eq!(
        flags(FrontendKind::ExternalIp),
        Lb4Service::FLAG_EXTERNAL_IP
    );
    assert_eq!(
        flags(FrontendKind::LoadBalancer),
        Lb4Service::FLAG_LOAD_BALANCER
    );
    let (key, mut value) = encode_service(&entry(FrontendKind::NodePort));
    value.flags |= Lb4Service::FLAG_CLUSTER_IP;
    let two = value.flags;
    assert_eq!(
        decode_service(&key, &value),
        Err(LbCodecError::ServiceFlags(two))
    );
    value.flags = Lb4Service::FLAG_AFFINITY;
    assert_eq!(
        decode_service(&key, &value),
        Err(LbCodecError::ServiceFlags(Lb4Service::FLAG_AFFINITY))
    );
}

#[test]
fn slot_entries_round_trip() {
    for slot in [1, 2, u16::MAX] {
        let entry = SlotEntry {
            frontend: frontend(Protocol::Tcp, Scope::External),
            slot,
            backend_id: 70_000,
        };
        let (key, value) = encode_slot(&entry);
        assert_eq!(key.backend_slot, slot);
        assert_eq!(
            value,
            Lb4Service {
                backend_id: 70_000,
                ..Default::default()
            }
        );
        assert_eq!(
            decode_service(&key, &value),
            Ok(ServiceMapEntry::Slot(entry))
        );
    }
}

#[test]
fn backend_entries_round_trip() {
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        for state in [BackendState::Active, BackendState::Terminating] {
            for local in [false, true] {
                let entry = BackendEntry {
                    address: Ipv4Addr::new(10, 244, 1, 7),
                    port: 9376,
                    protocol,
                    state,
                    local,
                };
                let value = encode_backend(&entry);
                assert_eq!(value.port, 9376u16.to_be_bytes());
                assert_eq!(value.flags & Lb4Backend::FLAG_LOCAL != 0, local);
                assert_eq!(decode_backend(&value), Ok(entry));
            }
        }
    }
    let value = encode_backend(&BackendEntry {
        address: Ipv4Addr::new(10, 244, 1, 7),
        port: 80,
        protocol: Protocol::Tcp,
        state: BackendState::Active,
        local: false,
    });
    let bad = |f: &dyn Fn(&mut Lb4Backend)| {
        let mut value = value;
        f(&mut value);
        decode_backend(&value)
    };
    assert_eq!(bad(&|v| v.state = 2), Err(LbCodecError::BackendState(2)));
    assert_eq!(
        bad(&|v| v.flags = 0x80),
        Err(LbCodecError::BackendFlags(0x80))
    );
    assert_eq!(bad(&|v| v.protocol = 1), Err(LbCodecError::Protocol(1)));
}

#[test]
fn reverse_nat_entries_round_trip() {
    let entry = RevNatEntry {
        address: Ipv4Addr::new(192, 0, 2, 1),
        port: 30_080,
    };
    let value = encode_revnat(&entry);
    assert_eq!(value.port, 30_080u16.to_be_bytes());
    assert_eq!(decode_revnat(&value), entry);
}

fn backend(last: u8) -> Backend {
    Backend {
        address: Ipv4Addr::new(10, 244, 1, last),
        port: 80,
        state: BackendState::Active,
        node: None,
        pod: None,
    }
}

#[test]
fn maglev_tables_hold_the_backend_id_of_each_slot() {
    let mut terminating = backend(2);
    terminating.state = BackendState::Terminating;
    let service = Frontend {
        service: NamespacedName::new("x", "web"),
        port_name: None,
        address: Ipv4Addr::new(10, 96, 0, 10),
        port: 80,
        protocol: Protocol::Tcp,
        kind: FrontendKind::ClusterIp,
        scope: Scope::Internal,
        backends: vec![backend(1), terminating, backend(3)],
        algorithm: Algorithm::Maglev,
        affinity_timeout: None,
    };
    let table = service.maglev_table(251).unwrap();
    let ids = [101, 102, 103];
    let by_id = maglev_backend_ids(&table, &ids).unwrap();
    assert_eq!(by_id.len(), 251);
    // Each slot's id names the backend the table picks; never a
    // terminating one.
    for (slot, id) in table.slots().iter().zip(&by_id) {
        assert_eq!(ids[*slot as usize], *id);
        assert_ne!(*id, 102);
    }
    assert_eq!(maglev_backend_ids(&table, &ids[..1]), None, "too few ids");
    // Tables follow each other in the array.
    assert_eq!(maglev_index(0, 251, 0), 0);
    assert_eq!(maglev_index(0, 251, 250), 250);
    assert_eq!(maglev_index(3, 251, 1), 3 * 251 + 1);
}

#[test]
fn ipv6_entries_round_trip_and_share_the_service_value_layout() {
    let key = FrontendKey {
        address: "fd00:96::10".parse::<Ipv6Addr>().unwrap(),
        port: 8080,
        protocol: Protocol::Udp,
        scope: Scope::Internal,
    };
    for slot in [0, 1, u16::MAX] {
        let encoded = <Ipv6Addr as LbFamily>::service_key(&key, slot);
        assert_eq!(encoded.address[..4], [0xfd, 0x00, 0x00, 0x96]);
        assert_eq!(encoded.port, 8080u16.to_be_bytes(), "network order");
        assert_eq!(encoded.scope, LB_SCOPE_INTERNAL);
        assert_eq!(
            <Ipv6Addr as LbFamily>::decode_service_key(&encoded),
            Ok((key, slot))
        );
    }
    let entry = ServiceEntry {
        frontend: key,
        kind: FrontendKind::ClusterIp,
        count: 3,
        rev_nat_id: 7,
        affinity_timeout: Some(60),
        maglev_table: Some(2),
    };
    let (encoded_key, value) = <Ipv6Addr as LbFamily>::encode_service(&entry);
    // The same value an IPv4 frontend with the same settings gets.
    let v4 = ServiceEntry {
        frontend: FrontendKey {
            address: Ipv4Addr::new(10, 96, 0, 10),
            port: key.port,
            protocol: key.protocol,
            scope: key.scope,
        },
        kind: entry.kind,
        count: entry.count,
        rev_nat_id: entry.rev_nat_id,
        affinity_timeout: entry.affinity_timeout,
        maglev_table: entry.maglev_table,
    };
    assert_eq!(value, encode_service(&v4).1);
    assert_eq!(
        <Ipv6Addr as LbFamily>::decode_service(&encoded_key, &value),
        Ok(ServiceMapEntry::Service(entry))
    );
    let backend = BackendEntry {
        address: "fd00:10:244:1::5".parse::<Ipv6Addr>().unwrap(),
        port: 8080,
        protocol: Protocol::Tcp,
        state: BackendState::Terminating,
        local: true,
    };
    let encoded = <Ipv6Addr as LbFamily>::encode_backend(&backend);
    assert_eq!(encoded.state, Lb4Backend::STATE_TERMINATING);
    assert_eq!(encoded.flags, Lb4Backend::FLAG_LOCAL);
    assert_eq!(
        <Ipv6Addr as LbFamily>::decode_backend(&encoded),
        Ok(backend)
    );
}
