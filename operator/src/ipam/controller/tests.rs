use super::*;
use crate::ipam::ClusterPool;

fn any(s: &str) -> IpNetwork {
    s.parse().expect("test CIDR")
}

fn v4_only() -> Pools {
    Pools {
        v4: ClusterPool::new("10.244.0.0/16".parse().expect("pool"), 24).expect("pool"),
        v6: None,
    }
}

fn dual() -> Pools {
    Pools {
        v6: Some(ClusterPool::new("fd00::/56".parse().expect("pool"), 112).expect("pool")),
        ..v4_only()
    }
}

fn desired(pod_cidrs: &[&str], changed: bool) -> Desired {
    Desired {
        pod_cidrs: pod_cidrs.iter().map(|cidr| any(cidr)).collect(),
        changed,
    }
}

#[test]
fn a_new_dual_stack_node_gets_ipv4_then_ipv6() {
    let mut pools = dual();
    assert_eq!(
        desired_pod_cidrs(&mut pools, "n1", None),
        Ok(desired(&["10.244.0.0/24", "fd00::/112"], true))
    );
    // A WeirNode the agent created, without pod CIDRs yet.
    assert_eq!(
        desired_pod_cidrs(&mut pools, "n2", Some(&[])),
        Ok(desired(&["10.244.1.0/24", "fd00::1:0/112"], true))
    );
}

#[test]
fn a_dual_stack_node_already_written_is_unchanged() {
    let mut pools = dual();
    let spec = [any("10.244.0.0/24"), any("fd00::/112")];
    assert_eq!(pools.restore("n1", &spec), vec![]);
    assert_eq!(
        desired_pod_cidrs(&mut pools, "n1", Some(&spec)),
        Ok(desired(&["10.244.0.0/24", "fd00::/112"], false))
    );
    // The same blocks in the wrong order are rewritten, IPv4 first.
    let reversed = [any("fd00::/112"), any("10.244.0.0/24")];
    assert_eq!(
        desired_pod_cidrs(&mut pools, "n1", Some(&reversed)),
        Ok(desired(&["10.244.0.0/24", "fd00::/112"], true))
    );
}

#[test]
fn an_ipv4_node_keeps_its_block_and_gains_an_ipv6_one() {
    // The operator was just given --cluster-pool-ipv6-cidr.
    let mut pools = dual();
    let spec = [any("10.244.5.0/24")];
    assert_eq!(pools.restore("n1", &spec), vec![]);
    assert_eq!(
        desired_pod_cidrs(&mut pools, "n1", Some(&spec)),
        Ok(desired(&["10.244.5.0/24", "fd00::/112"], true))
    );
}

#[test]
fn a_block_outside_the_pool_is_replaced() {
    let mut pools = dual();
    let spec = [any("10.9.0.0/24"), any("fd99::/112")];
    assert_eq!(pools.restore("n1", &spec).len(), 2);
    assert_eq!(
        desired_pod_cidrs(&mut pools, "n1", Some(&spec)),
        Ok(desired(&["10.244.0.0/24", "fd00::/112"], true))
    );
}

#[test]
fn without_an_ipv6_pool_only_ipv4_is_judged() {
    let mut pools = v4_only();
    let spec = [any("10.244.0.0/24"), any("fd00::/112")];
    assert_eq!(pools.restore("n1", &spec), vec![]);
    // As before dual stack: an IPv6 CIDR does not make the spec stale.
    assert_eq!(
        desired_pod_cidrs(&mut pools, "n1", Some(&spec)),
        Ok(desired(&["10.244.0.0/24"], false))
    );
    assert_eq!(
        desired_pod_cidrs(&mut pools, "n2", None),
        Ok(desired(&["10.244.1.0/24"], true))
    );
}

#[test]
fn an_exhausted_ipv6_pool_refuses_the_node_both_blocks() {
    let mut pools = Pools {
        v6: Some(ClusterPool::new("fd00::/126".parse().expect("pool"), 126).expect("pool")),
        ..v4_only()
    };
    desired_pod_cidrs(&mut pools, "n1", None).expect("blocks");
    let error = desired_pod_cidrs(&mut pools, "n2", None).expect_err("exhausted");
    assert_eq!(family_of(pool_of(&error)), "ipv6");
    assert_eq!(pools.v4.of("n2"), None);
}

fn pool_of(error: &PoolError<IpNetwork>) -> IpNetwork {
    match error {
        PoolError::Exhausted { pool, .. } => *pool,
        other => panic!("not exhaustion: {other}"),
    }
}

#[test]
fn pool_use_saturates_and_cidrs_are_listed() {
    let whole: Ipv6Network = "::/0".parse().expect("pool");
    let huge = ClusterPool::new(whole, 126).expect("pool");
    assert_eq!(pool_use(&huge), [("capacity", i64::MAX), ("assigned", 0)]);
    assert_eq!(
        listed(&[any("10.244.0.0/24"), any("fd00::/112")]),
        "10.244.0.0/24, fd00::/112"
    );
}
