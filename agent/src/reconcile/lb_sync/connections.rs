//! The maps the datapath keeps per connection, per socket and per client
//! (`weir_lb4_nat`, `weir_lb6_nat`, `weir_lb4_sock_revnat`,
//! `weir_lb6_sock_revnat`, `weir_lb4_affinity`) point at
//! backends and reverse-NAT ids the sync owns. Those entries are LRU and age out, but until then
//! one whose service or backend is gone keeps steering: the datapath only
//! checks that the backend *id* still exists, and a freed id is handed to
//! the next new backend, so a NAT mapping would send an established flow
//! to its old (deleted) address, and an affinity entry could pick another
//! service's backend, and a socket's reverse translation would show
//! replies as coming from a frontend that is gone. After each full pass (the first after a restart
//! among them) the sync removes every entry whose pair (reverse-NAT id,
//! backend id) no programmed frontend has, or whose backend address is not
//! the one the id now stands for.

use std::collections::{BTreeMap, BTreeSet};

use weir_abi::lb::{
    Lb4AffinityKey, Lb4AffinityValue, Lb4Backend, Lb4SockKey, Lb4SockRevNat, Lb6Backend,
    Lb6SockKey, Lb6SockRevNat, LbNatEntry, LbNatKey,
};

/// The backend ids of each programmed frontend, by reverse-NAT id (shared
/// by a frontend's two scopes), terminating backends included: their
/// connections finish.
pub(super) type Members = BTreeMap<u16, BTreeSet<u32>>;

/// True when a service NAT mapping of either family points at what no
/// frontend programs now; `backend` gives a backend id's address (as the
/// mapping holds addresses) and port. Masquerading mappings name no
/// backend: they are left to age out.
pub(super) fn stale_nat<A: PartialEq>(
    key: &LbNatKey<A>,
    entry: &LbNatEntry<A>,
    backend: impl Fn(u32) -> Option<(A, [u8; 2])>,
    members: &Members,
) -> bool {
    if entry.flags & LbNatEntry::<A>::FLAG_MASQUERADE != 0 {
        return false;
    }
    // Where the backend is in the tuple: the destination a forward packet
    // is rewritten to, the source a reply arrives from.
    let (address, port) = match key.direction {
        LbNatKey::<A>::FORWARD => (&entry.daddr, entry.dport),
        LbNatKey::<A>::REPLY => (&key.saddr, key.sport),
        _ => return true,
    };
    let member = members
        .get(&entry.rev_nat_id)
        .is_some_and(|ids| ids.contains(&entry.backend_id));
    let same_backend = backend(entry.backend_id).is_some_and(|(a, p)| a == *address && p == port);
    !(member && same_backend)
}

/// True when an affinity entry names a backend its frontend no longer has.
pub(super) fn stale_affinity(
    key: &Lb4AffinityKey,
    value: &Lb4AffinityValue,
    members: &Members,
) -> bool {
    !members
        .get(&key.rev_nat_id)
        .is_some_and(|ids| ids.contains(&value.backend_id))
}

/// True when a socket's reverse translation names a frontend that no
/// longer has the backend the socket was sent to.
pub(super) fn stale_sock_revnat(
    key: &Lb4SockKey,
    value: &Lb4SockRevNat,
    backends: &BTreeMap<u32, Lb4Backend>,
    members: &Members,
) -> bool {
    !members.get(&value.rev_nat_id).is_some_and(|ids| {
        ids.iter().any(|id| {
            backends
                .get(id)
                .is_some_and(|b| b.address == key.address && b.port == key.port)
        })
    })
}

/// [`stale_sock_revnat`] for an IPv6 socket.
pub(super) fn stale_sock_revnat6(
    key: &Lb6SockKey,
    value: &Lb6SockRevNat,
    backends: &BTreeMap<u32, Lb6Backend>,
    members: &Members,
) -> bool {
    !members.get(&value.rev_nat_id).is_some_and(|ids| {
        ids.iter().any(|id| {
            backends
                .get(id)
                .is_some_and(|b| b.address == key.address && b.port == key.port)
        })
    })
}
