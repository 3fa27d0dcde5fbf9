//! `weir_policy_revision`: the revision the pod programs stamp conntrack
//! entries with when they allow a connection. Established connections
//! skip policy while it stays; moving it makes each check its verdict again
//! on its next packet. The agent moves it after every change of policy
//! entries, ipcache entries or enforcement flags (the reconcile pass).

use aya::maps::{Array, MapData};
use aya::Ebpf;
use weir_abi::map_names;

use super::{map_err, TableError};

const NAME: &str = map_names::POLICY_REVISION;

fn array(ebpf: &mut Ebpf) -> Result<Array<&mut MapData, u64>, TableError> {
    let map = ebpf.map_mut(NAME).ok_or(TableError::Missing(NAME))?;
    Array::try_from(map).map_err(map_err(NAME))
}

/// The revision in force.
pub fn policy_revision(ebpf: &mut Ebpf) -> Result<u64, TableError> {
    array(ebpf)?.get(&0, 0).map_err(map_err(NAME))
}

/// Moves the revision on and returns the new one: past the one in force
/// and at least the monotonic clock's now, so it never repeats a revision
/// stamped earlier in this boot, even if the pinned map was replaced (an
/// old stamp is older than now).
pub fn advance_policy_revision(ebpf: &mut Ebpf) -> Result<u64, TableError> {
    let mut array = array(ebpf)?;
    let current = array.get(&0, 0).map_err(map_err(NAME))?;
    let next = current
        .saturating_add(1)
        .max(super::conntrack::monotonic_now_ns());
    array.set(0, next, 0).map_err(map_err(NAME))?;
    Ok(next)
}
