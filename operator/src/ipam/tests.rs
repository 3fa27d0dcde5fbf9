use super::*;

fn net(s: &str) -> Ipv4Network {
    s.parse().expect("test CIDR")
}

#[test]
fn blocks_are_handed_out_lowest_first_and_never_twice() {
    let mut pool = ClusterPool::new(net("10.244.0.0/16"), 24).expect("pool");
    assert_eq!(pool.capacity(), 256);
    assert_eq!(pool.allocate("n1"), Ok(net("10.244.0.0/24")));
    assert_eq!(pool.allocate("n2"), Ok(net("10.244.1.0/24")));
    // Asking again gives the same block.
    assert_eq!(pool.allocate("n1"), Ok(net("10.244.0.0/24")));
    assert_eq!(pool.release("n1"), Some(net("10.244.0.0/24")));
    assert_eq!(pool.allocate("n3"), Ok(net("10.244.0.0/24")));
    assert_eq!(pool.assigned_count(), 2);
}

#[test]
fn an_exhausted_pool_says_so() {
    let mut pool = ClusterPool::new(net("10.0.0.0/23"), 24).expect("pool");
    pool.allocate("a").expect("first");
    pool.allocate("b").expect("second");
    let error = pool.allocate("c").expect_err("exhausted");
    assert!(
        matches!(error, PoolError::Exhausted { blocks: 2, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("exhausted"));
}

#[test]
fn restored_assignments_are_kept_and_conflicts_refused() {
    let mut pool = ClusterPool::new(net("10.244.0.0/16"), 24).expect("pool");
    pool.restore("n2", net("10.244.0.0/24")).expect("restore");
    // The next node does not get n2's block.
    assert_eq!(pool.allocate("n1"), Ok(net("10.244.1.0/24")));
    assert_eq!(
        pool.restore("n3", net("10.244.0.0/24")),
        Err(PoolError::Taken {
            cidr: net("10.244.0.0/24"),
            owner: "n2".into()
        })
    );
    assert!(matches!(
        pool.restore("n3", net("10.245.0.0/24")),
        Err(PoolError::NotInPool { .. })
    ));
    assert!(matches!(
        pool.restore("n3", net("10.244.0.0/25")),
        Err(PoolError::NotInPool { .. })
    ));
}

#[test]
fn masks_outside_the_pool_are_refused() {
    assert!(ClusterPool::new(net("10.244.0.0/16"), 15).is_err());
    assert!(ClusterPool::new(net("10.244.0.0/16"), 31).is_err());
    // Host bits in the flag are ignored.
    let pool = ClusterPool::new(net("10.244.3.7/16"), 24).expect("pool");
    assert_eq!(pool.pool(), net("10.244.0.0/16"));
}

fn net6(s: &str) -> Ipv6Network {
    s.parse().expect("test CIDR")
}

fn any(s: &str) -> IpNetwork {
    s.parse().expect("test CIDR")
}

#[test]
fn ipv6_blocks_are_handed_out_lowest_first_and_reused_when_freed() {
    let mut pool = ClusterPool::new(net6("fd00:10:244::/104"), 112).expect("pool");
    assert_eq!(pool.capacity(), 256);
    assert_eq!(pool.allocate("n1"), Ok(net6("fd00:10:244::/112")));
    assert_eq!(pool.allocate("n2"), Ok(net6("fd00:10:244::1:0/112")));
    assert_eq!(pool.allocate("n3"), Ok(net6("fd00:10:244::2:0/112")));
    assert_eq!(pool.allocate("n2"), Ok(net6("fd00:10:244::1:0/112")));
    assert_eq!(pool.release("n2"), Some(net6("fd00:10:244::1:0/112")));
    assert_eq!(pool.release("n2"), None);
    // The gap is filled before the end is extended.
    assert_eq!(pool.allocate("n4"), Ok(net6("fd00:10:244::1:0/112")));
    assert_eq!(pool.allocate("n5"), Ok(net6("fd00:10:244::3:0/112")));
    assert_eq!(pool.assigned_count(), 4);
    assert_eq!(pool.of("n4"), Some(net6("fd00:10:244::1:0/112")));
}

#[test]
fn a_tiny_ipv6_pool_is_exhausted_and_says_so() {
    let mut pool = ClusterPool::new(net6("fd00::/124"), 126).expect("pool");
    for node in ["a", "b", "c", "d"] {
        pool.allocate(node).expect("a block");
    }
    assert_eq!(pool.of("d"), Some(net6("fd00::c/126")));
    let error = pool.allocate("e").expect_err("exhausted");
    assert_eq!(
        error,
        PoolError::Exhausted {
            pool: net6("fd00::/124"),
            mask: 126,
            blocks: 4
        }
    );
    assert_eq!(
        error.to_string(),
        "pool fd00::/124 is exhausted: all 4 /126 blocks are assigned"
    );
    pool.release("b");
    assert_eq!(pool.allocate("e"), Ok(net6("fd00::4/126")));
}

#[test]
fn a_huge_ipv6_pool_allocates_at_once_and_counts_saturate() {
    // 2^56 blocks: nothing may walk them.
    let mut pool = ClusterPool::new(net6("fd00::/56"), 112).expect("pool");
    assert_eq!(pool.capacity(), 1 << 56);
    for i in 0..1000u32 {
        pool.allocate(&format!("n{i}")).expect("a block");
    }
    assert_eq!(pool.of("n999"), Some(net6("fd00::3e7:0/112")));
    // A block at the very end of the pool is restored and kept.
    let last = net6("fd00:0:0:ff:ffff:ffff:ffff:0/112");
    pool.restore("far", last).expect("restore");
    assert_eq!(pool.release("far"), Some(last));
    // 2^126 blocks: the count saturates.
    let pool = ClusterPool::new(net6("::/0"), 126).expect("pool");
    assert_eq!(pool.capacity(), u64::MAX);
}

#[test]
fn ipv6_restored_assignments_are_kept_and_conflicts_refused() {
    let mut pool = ClusterPool::new(net6("fd00::/96"), 112).expect("pool");
    pool.restore("n2", net6("fd00::/112")).expect("restore");
    pool.restore("n2", net6("fd00::/112"))
        .expect("restore again");
    assert_eq!(pool.allocate("n1"), Ok(net6("fd00::1:0/112")));
    assert_eq!(
        pool.restore("n3", net6("fd00::/112")),
        Err(PoolError::Taken {
            cidr: net6("fd00::/112"),
            owner: "n2".into()
        })
    );
    // Outside the pool, the wrong size, host bits set.
    for cidr in ["fd01::/112", "fd00::/113", "fd00::5/112", "fc00::/112"] {
        let error = pool.restore("n3", net6(cidr)).expect_err(cidr);
        assert!(matches!(error, PoolError::NotInPool { .. }), "{cidr}");
    }
    assert_eq!(
        pool.restore("n3", net6("fd01::/112"))
            .expect_err("outside")
            .to_string(),
        "fd01::/112 is not a /112 block of pool fd00::/96"
    );
    // Restoring another block moves the node.
    pool.restore("n1", net6("fd00::9:0/112")).expect("move");
    assert_eq!(pool.of("n1"), Some(net6("fd00::9:0/112")));
    assert_eq!(pool.allocate("n4"), Ok(net6("fd00::1:0/112")));
}

#[test]
fn ipv6_masks_outside_the_pool_are_refused() {
    let error = ClusterPool::new(net6("fd00::/56"), 127).expect_err("too long");
    assert_eq!(
        error.to_string(),
        "pool fd00::/56 cannot be split into /127 blocks (mask must be 56..=126)"
    );
    assert!(ClusterPool::new(net6("fd00::/56"), 55).is_err());
    assert!(ClusterPool::new(net6("fd00::/56"), 126).is_ok());
    // Host bits in the flag are ignored.
    let pool = ClusterPool::new(net6("fd00::1234/56"), 112).expect("pool");
    assert_eq!(pool.pool(), net6("fd00::/56"));
    // The whole space as one block.
    let mut pool = ClusterPool::new(net6("::/0"), 0).expect("pool");
    assert_eq!(pool.capacity(), 1);
    assert_eq!(pool.allocate("a"), Ok(net6("::/0")));
    assert!(pool.allocate("b").is_err());
}

#[test]
fn ipv4_mask_limit_stays_30() {
    let error = ClusterPool::new(net("10.244.0.0/16"), 31).expect_err("too long");
    assert_eq!(
        error.to_string(),
        "pool 10.244.0.0/16 cannot be split into /31 blocks (mask must be 16..=30)"
    );
}

fn dual(v4: &str, mask4: u8, v6: &str, mask6: u8) -> Pools {
    Pools {
        v4: ClusterPool::new(net(v4), mask4).expect("pool"),
        v6: Some(ClusterPool::new(net6(v6), mask6).expect("pool")),
    }
}

#[test]
fn a_dual_stack_node_gets_one_block_of_each_family_ipv4_first() {
    let mut pools = dual("10.244.0.0/16", 24, "fd00::/56", 112);
    assert_eq!(
        pools.allocate("n1"),
        Ok(vec![any("10.244.0.0/24"), any("fd00::/112")])
    );
    assert_eq!(
        pools.allocate("n2"),
        Ok(vec![any("10.244.1.0/24"), any("fd00::1:0/112")])
    );
    assert_eq!(
        pools.release("n1"),
        vec![any("10.244.0.0/24"), any("fd00::/112")]
    );
    assert_eq!(pools.release("n1"), vec![]);
}

#[test]
fn pools_restore_both_families_and_leave_ipv6_alone_without_its_pool() {
    let mut pools = dual("10.244.0.0/16", 24, "fd00::/56", 112);
    let refused = pools.restore(
        "n1",
        &[
            any("fd00::5:0/112"),
            any("10.244.7.0/24"),
            any("fd01::/112"),
        ],
    );
    assert_eq!(refused.len(), 1);
    assert!(matches!(refused[0], PoolError::NotInPool { .. }));
    assert_eq!(
        pools.allocate("n1"),
        Ok(vec![any("10.244.7.0/24"), any("fd00::5:0/112")])
    );

    let mut v4_only = Pools {
        v4: ClusterPool::new(net("10.244.0.0/16"), 24).expect("pool"),
        v6: None,
    };
    let refused = v4_only.restore("n1", &[any("10.244.7.0/24"), any("fd00::/112")]);
    assert_eq!(refused, vec![]);
    assert_eq!(v4_only.allocate("n1"), Ok(vec![any("10.244.7.0/24")]));
    assert!(v4_only.manages(any("10.0.0.0/8")));
    assert!(!v4_only.manages(any("fd00::/112")));
}

#[test]
fn a_node_with_an_ipv4_block_only_keeps_it_and_gains_an_ipv6_one() {
    let mut pools = dual("10.244.0.0/16", 24, "fd00::/56", 112);
    assert_eq!(pools.restore("old", &[any("10.244.3.0/24")]), vec![]);
    assert_eq!(
        pools.allocate("old"),
        Ok(vec![any("10.244.3.0/24"), any("fd00::/112")])
    );
}

#[test]
fn a_node_refused_one_family_gets_no_new_block_of_the_other() {
    let mut pools = dual("10.244.0.0/16", 24, "fd00::/124", 126);
    for node in ["a", "b", "c", "d"] {
        pools.allocate(node).expect("blocks");
    }
    let error = pools.allocate("e").expect_err("IPv6 exhausted");
    assert!(matches!(
        error,
        PoolError::Exhausted {
            pool: IpNetwork::V6(_),
            ..
        }
    ));
    // e's IPv4 block went back to the pool.
    assert_eq!(pools.v4.assigned_count(), 4);
    assert_eq!(pools.v4.of("e"), None);
    // A node that already held its IPv4 block keeps it.
    pools.restore("old", &[any("10.244.9.0/24")]);
    assert!(pools.allocate("old").is_err());
    assert_eq!(pools.v4.of("old"), Some(net("10.244.9.0/24")));
    // Once a node leaves, the waiting one gets both.
    pools.release("b");
    assert_eq!(
        pools.allocate("e"),
        Ok(vec![any("10.244.1.0/24"), any("fd00::4/126")])
    );
}
