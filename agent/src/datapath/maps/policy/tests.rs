use super::*;

fn key(peer: PeerKey, l4: L4Prefix) -> MapKey {
    MapKey {
        endpoint: 1,
        direction: Direction::Egress,
        peer,
        l4,
    }
}

fn round_trip(key: MapKey) -> LpmKey {
    let entry = MapEntry {
        verdict: Verdict::Deny,
        match_kind: key.match_kind(),
    };
    let lpm = encode_key(&key).unwrap();
    assert_eq!(decode_key(&lpm), Ok(key), "{lpm:?}");
    assert_eq!(decode_entry(&encode_entry(&entry)), Ok(entry));
    lpm
}

#[test]
fn any_protocol_is_the_64_bit_prefix() {
    let lpm = round_trip(key(PeerKey::Identity(300), L4Prefix::Any));
    assert_eq!(lpm.prefix_len, POLICY_PREFIX_ANY_PROTOCOL);
    assert_eq!(
        lpm.key,
        PolicyKey {
            endpoint_id: 1,
            direction: TrafficDirection::Egress as u8,
            pad0: 0,
            identity: 300,
            protocol: PROTOCOL_ANY,
            pad1: 0,
            port: [0; 2],
        }
    );
}

#[test]
fn a_protocol_with_any_port_is_the_80_bit_prefix() {
    let l4 = L4Prefix::Protocol {
        number: 17,
        ports: PortPrefix::ANY,
    };
    let lpm = round_trip(key(PeerKey::Any, l4));
    assert_eq!(lpm.prefix_len, POLICY_PREFIX_ANY_PORT);
    assert_eq!(
        (lpm.key.identity, lpm.key.protocol, lpm.key.port),
        (IDENTITY_ANY, 17, [0; 2])
    );
}

#[test]
fn every_port_block_size_round_trips() {
    for bits in 1..=16u8 {
        // The last block of that size: the highest aligned first port.
        let port = u16::MAX << (16 - bits);
        let ports = PortPrefix::new(port, bits).unwrap();
        let l4 = L4Prefix::Protocol { number: 6, ports };
        let lpm = round_trip(key(PeerKey::Identity(7), l4));
        assert_eq!(lpm.prefix_len, POLICY_PREFIX_ANY_PORT + u32::from(bits));
        assert_eq!(lpm.key.port, port.to_be_bytes(), "network order");
    }
    let exact = round_trip(key(
        PeerKey::Identity(7),
        L4Prefix::Protocol {
            number: 132,
            ports: PortPrefix::exact(8080),
        },
    ));
    assert_eq!(exact.prefix_len, POLICY_PREFIX_FULL);
}

#[test]
fn entries_carry_the_verdict_and_match_type_codes() {
    let codes = [
        (MatchKind::L3Only, MATCH_L3_ONLY),
        (MatchKind::L3L4, MATCH_L3_L4),
        (MatchKind::L4Only, MATCH_L4_ONLY),
        (MatchKind::All, MATCH_ALL),
    ];
    for (match_kind, code) in codes {
        for (verdict, verdict_code) in
            [(Verdict::Allow, POLICY_ALLOW), (Verdict::Deny, POLICY_DENY)]
        {
            let entry = MapEntry {
                verdict,
                match_kind,
            };
            let encoded = encode_entry(&entry);
            assert_eq!((encoded.verdict, encoded.match_type), (verdict_code, code));
            assert_eq!(decode_entry(&encoded), Ok(entry));
        }
    }
}

#[test]
fn what_the_agent_never_writes_does_not_decode() {
    let good = encode_key(&key(PeerKey::Any, L4Prefix::Any)).unwrap();
    let with = |f: &dyn Fn(&mut LpmKey)| {
        let mut lpm = good;
        f(&mut lpm);
        decode_key(&lpm)
    };
    assert_eq!(with(&|k| k.prefix_len = 72), Err(CodecError::PrefixLen(72)));
    assert_eq!(with(&|k| k.prefix_len = 97), Err(CodecError::PrefixLen(97)));
    assert_eq!(
        with(&|k| k.key.direction = 0),
        Err(CodecError::Direction(0))
    );
    assert!(matches!(
        with(&|k| k.key.protocol = 6),
        Err(CodecError::HostBits { .. })
    ));
    assert!(matches!(
        with(&|k| {
            k.prefix_len = POLICY_PREFIX_ANY_PORT + 12;
            k.key.port = 81u16.to_be_bytes();
        }),
        Err(CodecError::HostBits { port: 81, .. })
    ));
    let entry = PolicyEntry {
        verdict: 3,
        ..Default::default()
    };
    assert_eq!(decode_entry(&entry), Err(CodecError::Verdict(3)));
    let entry = PolicyEntry {
        verdict: POLICY_ALLOW,
        ..Default::default()
    };
    assert_eq!(decode_entry(&entry), Err(CodecError::MatchType(0)));
    let wide = MapKey {
        endpoint: 70_000,
        ..key(PeerKey::Any, L4Prefix::Any)
    };
    assert_eq!(encode_key(&wide), Err(CodecError::EndpointId(70_000)));
    let state = MapState::from([(
        wide,
        MapEntry {
            verdict: Verdict::Allow,
            match_kind: MatchKind::All,
        },
    )]);
    assert!(encode_state(&state).is_empty(), "left out, as before");
}

fn random_key(rng: &mut fastrand::Rng) -> MapKey {
    let l4 = match rng.u64(..3) {
        0 => L4Prefix::Any,
        _ => {
            let bits = rng.u64(..17) as u8;
            let port =
                (rng.u64(..) as u16) & u16::MAX.checked_shl(u32::from(16 - bits)).unwrap_or(0);
            L4Prefix::Protocol {
                number: rng.u64(..) as u8,
                ports: PortPrefix::new(port, bits).unwrap(),
            }
        }
    };
    MapKey {
        endpoint: rng.u64(..u64::from(u16::MAX) + 1) as u32,
        direction: [Direction::Ingress, Direction::Egress][rng.u64(..2) as usize],
        peer: match rng.u64(..4) {
            0 => PeerKey::Any,
            _ => PeerKey::Identity(1 + rng.u64(..u64::from(u32::MAX)) as u32),
        },
        l4,
    }
}

#[test]
fn random_keys_and_states_round_trip() {
    let mut rng = fastrand::Rng::with_seed(0x0070_11c7);
    let mut state = MapState::new();
    for _ in 0..10_000 {
        let key = random_key(&mut rng);
        round_trip(key);
        let verdict = [Verdict::Allow, Verdict::Deny][rng.u64(..2) as usize];
        state.insert(
            key,
            MapEntry {
                verdict,
                match_kind: key.match_kind(),
            },
        );
    }
    // Distinct keys stay distinct in the kernel, and the whole state reads back.
    let encoded = encode_state(&state);
    assert_eq!(encoded.len(), state.len());
    let decoded: MapState = encoded
        .iter()
        .map(|(k, e)| (decode_key(k).unwrap(), decode_entry(e).unwrap()))
        .collect();
    assert_eq!(decoded, state);
}
