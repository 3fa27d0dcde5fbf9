use super::*;

fn key(id: &str) -> AttachmentKey {
    AttachmentKey {
        container_id: id.to_string(),
        ifname: "eth0".to_string(),
    }
}

fn ipam(cidr: &str) -> Ipam {
    Ipam::new(cidr.parse().unwrap()).unwrap()
}

#[test]
fn hands_out_addresses_after_the_gateway() {
    let mut ipam = ipam("10.244.1.0/24");
    assert_eq!(ipam.gateway(), Ipv4Addr::new(10, 244, 1, 1));
    assert_eq!(
        ipam.allocate(&key("a")).unwrap(),
        Ipv4Addr::new(10, 244, 1, 2)
    );
    assert_eq!(
        ipam.allocate(&key("b")).unwrap(),
        Ipv4Addr::new(10, 244, 1, 3)
    );
    assert_eq!(ipam.capacity(), 253);
    assert_eq!(ipam.free(), 251);
}

#[test]
fn allocation_is_idempotent_per_attachment() {
    let mut ipam = ipam("10.244.1.0/24");
    let first = ipam.allocate(&key("a")).unwrap();
    assert_eq!(ipam.allocate(&key("a")).unwrap(), first);
    let other_if = AttachmentKey {
        container_id: "a".into(),
        ifname: "net1".into(),
    };
    assert_ne!(ipam.allocate(&other_if).unwrap(), first);
}

#[test]
fn a_released_address_comes_back_only_after_every_other_free_one() {
    // Five pod addresses: .2 to .6.
    let mut ipam = ipam("10.0.0.0/29");
    let a = ipam.allocate(&key("a")).unwrap();
    ipam.allocate(&key("b")).unwrap();
    assert_eq!(ipam.release(&key("a")), Some(a));
    assert_eq!(ipam.release(&key("a")), None, "release is idempotent");
    let next: Vec<Ipv4Addr> = ["c", "d", "e", "f"]
        .iter()
        .map(|k| ipam.allocate(&key(k)).unwrap())
        .collect();
    let expected = [
        Ipv4Addr::new(10, 0, 0, 4),
        Ipv4Addr::new(10, 0, 0, 5),
        Ipv4Addr::new(10, 0, 0, 6),
        a, // the released one, last
    ];
    assert_eq!(next, expected);
    // Round again: .3 (b) and .4 (c) freed; the search goes on after .2.
    ipam.release(&key("c"));
    ipam.release(&key("b"));
    let again = ipam.allocate(&key("g")).unwrap();
    assert_eq!(again, Ipv4Addr::new(10, 0, 0, 3));
}

#[test]
fn state_written_before_the_rotation_reads_and_starts_at_the_first_address() {
    let old = r#"{"cidr":"10.244.1.0/24","allocations":{}}"#;
    let mut ipam: Ipam = serde_json::from_str(old).unwrap();
    assert_eq!(
        ipam.allocate(&key("a")).unwrap(),
        Ipv4Addr::new(10, 244, 1, 2)
    );
}

#[test]
fn exhaustion_is_an_error_and_changes_nothing() {
    let mut ipam = ipam("10.0.0.0/30"); // network, gateway, one pod, broadcast
    assert_eq!(ipam.capacity(), 1);
    ipam.allocate(&key("a")).unwrap();
    let before = ipam.clone();
    assert!(matches!(
        ipam.allocate(&key("b")),
        Err(IpamError::Exhausted { .. })
    ));
    assert_eq!(ipam, before);
}

#[test]
fn never_hands_out_network_gateway_or_broadcast() {
    let mut ipam = ipam("10.9.8.0/29");
    let mut got = Vec::new();
    for i in 0..ipam.capacity() {
        got.push(ipam.allocate(&key(&i.to_string())).unwrap());
    }
    let octets: Vec<u8> = got.iter().map(|a| a.octets()[3]).collect();
    assert_eq!(octets, vec![2, 3, 4, 5, 6]);
}

#[test]
fn cidrs_too_small_for_a_pod_are_refused() {
    assert!(Ipam::new("10.0.0.0/31".parse().unwrap()).is_err());
    assert!(Ipam::new("10.0.0.4/32".parse().unwrap()).is_err());
}

#[test]
fn host_bits_in_the_cidr_are_normalised() {
    assert_eq!(ipam("10.244.1.77/24").cidr().to_string(), "10.244.1.0/24");
}

#[test]
fn restore_checks_range_and_conflicts() {
    let mut ipam = ipam("10.244.1.0/24");
    ipam.restore(Ipv4Addr::new(10, 244, 1, 9), key("a"))
        .unwrap();
    assert_eq!(
        ipam.address_of(&key("a")),
        Some(Ipv4Addr::new(10, 244, 1, 9))
    );
    assert!(ipam
        .restore(Ipv4Addr::new(10, 244, 2, 9), key("b"))
        .is_err());
    assert!(
        ipam.restore(Ipv4Addr::new(10, 244, 1, 1), key("b"))
            .is_err(),
        "gateway"
    );
    assert!(
        ipam.restore(Ipv4Addr::new(10, 244, 1, 9), key("b"))
            .is_err(),
        "taken"
    );
    assert_eq!(
        ipam.allocate(&key("c")).unwrap(),
        Ipv4Addr::new(10, 244, 1, 2)
    );
}

fn ipam6(cidr: &str) -> Ipam6 {
    Ipam6::new(cidr.parse().unwrap()).unwrap()
}

#[test]
fn ipv6_hands_out_addresses_after_the_gateway_up_to_the_last_one() {
    // No broadcast in IPv6: the CIDR's last address is a pod's.
    let mut ipam = ipam6("fd00:10:244:1::/126");
    assert_eq!(
        ipam.gateway(),
        "fd00:10:244:1::1".parse::<Ipv6Addr>().unwrap()
    );
    assert_eq!(ipam.capacity(), 2);
    let got: Vec<String> = ["a", "b"]
        .iter()
        .map(|k| ipam.allocate(&key(k)).unwrap().to_string())
        .collect();
    assert_eq!(got, ["fd00:10:244:1::2", "fd00:10:244:1::3"]);
    assert!(matches!(
        ipam.allocate(&key("c")),
        Err(IpamError::Exhausted { .. })
    ));
}

#[test]
fn ipv6_pools_of_any_size_count_and_rotate() {
    let mut ipam = ipam6("fd00:10:244:1::77/64");
    assert_eq!(ipam.cidr().to_string(), "fd00:10:244:1::/64");
    assert_eq!(ipam.capacity(), u64::MAX - 1, "2^64 - 2 addresses");
    assert_eq!(ipam6("fd00::/48").capacity(), u64::MAX, "saturated");
    let a = ipam.allocate(&key("a")).unwrap();
    ipam.allocate(&key("b")).unwrap();
    ipam.release(&key("a"));
    let c = ipam.allocate(&key("c")).unwrap();
    assert_eq!(c.to_string(), "fd00:10:244:1::4");
    assert_ne!(c, a, "the released address is not handed out next");
    assert!(Ipam6::new("fd00::/127".parse().unwrap()).is_err());
}

#[test]
fn ipv6_state_round_trips_through_json() {
    let mut ipam = ipam6("fd00:10:244:1::/112");
    ipam.allocate(&key("a")).unwrap();
    let json = serde_json::to_string(&ipam).unwrap();
    assert!(json.contains("\"fd00:10:244:1::/112\""), "{json}");
    assert_eq!(serde_json::from_str::<Ipam6>(&json).unwrap(), ipam);
}
