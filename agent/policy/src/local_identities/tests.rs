use super::*;

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn is_local(id: NumericIdentity) -> bool {
    (reserved::LOCAL_MIN..=reserved::LOCAL_CIDR_MAX).contains(&id)
}

#[test]
fn same_cidr_same_id_and_distinct_cidrs_distinct_ids() {
    let mut ids = LocalIdentities::new();
    let a = ids.allocate(net("10.0.0.0/8")).unwrap();
    let b = ids.allocate(net("192.168.0.0/16")).unwrap();
    let c = ids.allocate(net("2001:db8::/32")).unwrap();
    assert_eq!(ids.allocate(net("10.0.0.0/8")).unwrap(), a);
    // Host bits do not make a different CIDR.
    assert_eq!(ids.allocate(net("10.1.2.3/8")).unwrap(), a);
    assert!(a != b && b != c && a != c);
    for id in [a, b, c] {
        assert!(is_local(id), "{id:#x}");
    }
    assert_eq!(ids.lookup(b), Some(net("192.168.0.0/16")));
}

#[test]
fn ids_are_numbered_from_the_start_of_the_local_scope_and_stable() {
    let mut a = LocalIdentities::default();
    let n1 = net("10.0.0.0/8");
    let n2 = net("fd00::/64");
    let i1 = a.identity_for(n1).unwrap();
    let i2 = a.identity_for(n2).unwrap();
    assert_eq!(i1, reserved::LOCAL_SCOPE | 1);
    assert_eq!(i2, reserved::LOCAL_SCOPE | 2);
    assert_eq!(a.identity_for(n1), Some(i1));
    assert_eq!(a.len(), 2);
}

#[test]
fn release_frees_after_the_last_reference() {
    let mut ids = LocalIdentities::new();
    let a = ids.allocate(net("10.0.0.0/8")).unwrap();
    ids.allocate(net("10.0.0.0/8")).unwrap();
    assert_eq!(ids.release(net("10.0.0.0/8")), None);
    assert_eq!(ids.get(net("10.0.0.0/8")), Some(a));
    assert_eq!(ids.release(net("10.0.0.0/8")), Some(a));
    assert_eq!(ids.get(net("10.0.0.0/8")), None);
    assert_eq!(ids.lookup(a), None);
    assert!(ids.is_empty());
    assert_eq!(ids.release(net("10.0.0.0/8")), None, "unknown CIDR");
}

#[test]
fn freed_ids_are_reused_only_after_the_rest_of_the_range() {
    let min = reserved::LOCAL_MIN;
    let mut ids = LocalIdentities::with_range(min, min + 2);
    let a = ids.allocate(net("10.0.0.0/8")).unwrap();
    ids.release(net("10.0.0.0/8"));
    let b = ids.allocate(net("11.0.0.0/8")).unwrap();
    let c = ids.allocate(net("12.0.0.0/8")).unwrap();
    assert_eq!((a, b, c), (min, min + 1, min + 2));
    // Wraps around to the freed id.
    assert_eq!(ids.allocate(net("13.0.0.0/8")).unwrap(), min);
    assert_eq!(
        ids.allocate(net("14.0.0.0/8")),
        Err(LocalIdentityError::Exhausted(3))
    );
    assert_eq!(ids.identity_for(net("14.0.0.0/8")), None, "spent");
    ids.release(net("12.0.0.0/8"));
    assert_eq!(ids.allocate(net("14.0.0.0/8")).unwrap(), min + 2);
}

#[test]
fn the_scope_bounds_match_the_identity_crate() {
    assert_eq!(reserved::LOCAL_MIN, 16_777_217);
    assert_eq!(reserved::LOCAL_MAX, 33_554_431);
    // CIDR identities stay below the address flag, so every one has an
    // address identity of its own.
    assert_eq!(reserved::LOCAL_CIDR_MAX, 16_777_216 + (1 << 23) - 1);
    let mut ids = LocalIdentities::with_range(reserved::LOCAL_CIDR_MAX, reserved::LOCAL_CIDR_MAX);
    let last = ids.allocate(net("10.0.0.0/8")).unwrap();
    assert!(!reserved::is_address(last));
    assert_eq!(reserved::address_identity(last), reserved::LOCAL_MAX);
}

#[test]
fn preferred_numbers_are_given_back_and_kept_from_other_cidrs() {
    let min = reserved::LOCAL_MIN;
    let mut ids = LocalIdentities::with_range(min, min + 3);
    // An earlier agent numbered 10.2/16 first and 10.1/16 second.
    ids.prefer([(net("10.2.0.0/16"), min), (net("10.1.0.0/16"), min + 1)]);
    // Allocated in another order, each gets its number back, and a new
    // CIDR takes neither.
    assert_eq!(ids.allocate(net("10.1.0.0/16")).unwrap(), min + 1);
    assert_eq!(ids.allocate(net("10.3.0.0/16")).unwrap(), min + 2);
    assert_eq!(ids.allocate(net("10.2.1.0/16")).unwrap(), min);
    // Released and allocated again: numbered as any CIDR.
    assert_eq!(ids.release(net("10.2.0.0/16")), Some(min));
    assert_eq!(ids.allocate(net("10.2.0.0/16")).unwrap(), min + 3);
}

#[test]
fn preferred_numbers_are_used_by_others_only_when_nothing_else_is_free() {
    let min = reserved::LOCAL_MIN;
    let mut ids = LocalIdentities::with_range(min, min + 1);
    ids.prefer([(net("10.9.0.0/16"), min)]);
    assert_eq!(ids.allocate(net("10.1.0.0/16")).unwrap(), min + 1);
    assert_eq!(ids.allocate(net("10.2.0.0/16")).unwrap(), min);
    // Its number taken, the preferred CIDR gets none: the range is spent.
    assert_eq!(
        ids.allocate(net("10.9.0.0/16")),
        Err(LocalIdentityError::Exhausted(2))
    );
}

#[test]
fn unusable_preferences_are_ignored_and_can_be_forgotten() {
    let min = reserved::LOCAL_MIN;
    let mut ids = LocalIdentities::with_range(min, min + 3);
    let a = ids.allocate(net("10.1.0.0/16")).unwrap();
    ids.prefer([
        // In use by another CIDR, outside the range, promised twice.
        (net("10.2.0.0/16"), a),
        (net("10.3.0.0/16"), min + 10),
        (net("10.4.0.0/16"), min + 2),
        (net("10.5.0.0/16"), min + 2),
    ]);
    assert_eq!(ids.allocate(net("10.2.0.0/16")).unwrap(), min + 1);
    assert_eq!(ids.allocate(net("10.5.0.0/16")).unwrap(), min + 3);
    ids.forget_preferred();
    assert_eq!(ids.allocate(net("10.6.0.0/16")).unwrap(), min + 2);
}
