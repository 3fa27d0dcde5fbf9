//! Policy lookup for new and established connections (see
//! `weir_abi::policy` for the map layout and the deny-wins rule).

use aya_ebpf::maps::lpm_trie::Key;
use weir_abi::ipcache::IpcacheKey;
use weir_abi::policy::*;
use weir_abi::{identity, PolicyKey, Reason, TrafficDirection};

use crate::maps::{IPCACHE, POLICY, POLICY_REVISION};
use crate::parse::Flow;

/// The policy revision now (0 before the agent wrote one).
#[inline(always)]
pub fn revision() -> u64 {
    POLICY_REVISION.get(0).copied().unwrap_or(0)
}

/// The security identity of `addr` (IPv4 in the first 4 bytes when
/// `family` is IPv4): the longest ipcache match, or `world`.
#[inline(always)]
pub fn identity_of(family: u8, addr: &[u8; 16]) -> u32 {
    peer_of(family, addr).0
}

/// The security identity of `addr` and its address identity (0 unless
/// `addr` is a pod's or node's address inside a prefix a NetworkPolicy
/// `ipBlock` names): one ipcache lookup.
#[inline(always)]
pub fn peer_of(family: u8, addr: &[u8; 16]) -> (u32, u32) {
    let key = if family == weir_abi::ipcache::FAMILY_IPV4 {
        Key::new(
            IpcacheKey::prefix_len(32),
            IpcacheKey::ipv4([addr[0], addr[1], addr[2], addr[3]]),
        )
    } else {
        Key::new(IpcacheKey::prefix_len(128), IpcacheKey::ipv6(*addr))
    };
    IPCACHE
        .get(key)
        .map(|value| (value.identity, value.address_identity))
        .unwrap_or((identity::WORLD, 0))
}

/// The most specific entry for (endpoint, direction, peer, protocol,
/// port) as (verdict, match type), or (0, 0) if none matches.
#[inline(always)]
fn lookup(endpoint_id: u16, direction: TrafficDirection, peer: u32, flow: &Flow) -> (u8, u8) {
    let key = Key::new(
        POLICY_PREFIX_FULL,
        PolicyKey {
            endpoint_id,
            direction: direction as u8,
            pad0: 0,
            identity: peer,
            protocol: flow.protocol,
            pad1: 0,
            port: flow.dport,
        },
    );
    POLICY
        .get(key)
        .map(|entry| (entry.verdict, entry.match_type))
        .unwrap_or((0, 0))
}

/// Decides a connection of an enforced endpoint: deny from either the
/// peer's own entries or the any-peer entries wins; otherwise an allow from
/// either; otherwise, for a cluster peer with an address identity
/// (`address`, 0 if none), that identity's entries (NetworkPolicy
/// `ipBlock`s covering the peer's address: allows only); otherwise the
/// default deny. Returns the match type of the deciding entry with the
/// outcome. A verdict decided by identity costs the two lookups it did
/// before address identities existed.
#[inline(always)]
pub fn decide(
    endpoint_id: u16,
    direction: TrafficDirection,
    peer: u32,
    address: u32,
    flow: &Flow,
) -> (u8, Result<(), Reason>) {
    let (exact, exact_match) = lookup(endpoint_id, direction, peer, flow);
    let (any, any_match) = lookup(endpoint_id, direction, IDENTITY_ANY, flow);
    if exact == POLICY_DENY {
        (exact_match, Err(Reason::DropPolicyDeny))
    } else if any == POLICY_DENY {
        (any_match, Err(Reason::DropPolicyDeny))
    } else if exact == POLICY_ALLOW {
        (exact_match, Ok(()))
    } else if any == POLICY_ALLOW {
        (any_match, Ok(()))
    } else if address != 0 {
        match lookup(endpoint_id, direction, address, flow) {
            (POLICY_ALLOW, address_match) => (address_match, Ok(())),
            (POLICY_DENY, address_match) => (address_match, Err(Reason::DropPolicyDeny)),
            _ => (0, Err(Reason::DropPolicyDenied)),
        }
    } else {
        (0, Err(Reason::DropPolicyDenied))
    }
}
