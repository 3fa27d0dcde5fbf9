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
