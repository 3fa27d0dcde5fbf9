//! Service lookup and backend selection, shared by socket LB (`sock.rs`)
//! and per-packet NAT (`nodeport.rs`), for IPv4 and IPv6.
//! The map layouts are documented in `weir_abi::lb`.

use aya_ebpf::bindings::BPF_ANY;
use aya_ebpf::helpers::generated::{bpf_get_prandom_u32, bpf_ktime_get_ns};
use aya_ebpf::macros::map;
use aya_ebpf::maps::{Array, HashMap, LruHashMap};
use weir_abi::lb::*;

/// Table size of Maglev services; set by the loader (`EbpfLoader::set_global`).
#[unsafe(no_mangle)]
static WEIR_LB_MAGLEV_SIZE: u32 = 1021;

#[map(name = "weir_lb4_services")]
pub static SERVICES: HashMap<Lb4Key, Lb4Service> = HashMap::pinned(65_536, 0);

#[map(name = "weir_lb4_backends")]
pub static BACKENDS: HashMap<u32, Lb4Backend> = HashMap::pinned(65_536, 0);

#[map(name = "weir_lb4_revnat")]
pub static REVNAT: HashMap<u16, Lb4RevNat> = HashMap::pinned(65_536, 0);

/// Sized by the loader: Maglev tables × table size.
#[map(name = "weir_lb4_maglev")]
static MAGLEV: Array<u32> = Array::pinned(1, 0);

#[map(name = "weir_lb4_affinity")]
static AFFINITY: LruHashMap<Lb4AffinityKey, Lb4AffinityValue> = LruHashMap::pinned(65_536, 0);

#[map(name = "weir_lb6_services")]
static SERVICES6: HashMap<Lb6Key, Lb6Service> = HashMap::pinned(65_536, 0);

#[map(name = "weir_lb6_backends")]
static BACKENDS6: HashMap<u32, Lb6Backend> = HashMap::pinned(65_536, 0);

/// What differs between the IPv4 and the IPv6 maps: the key and backend
/// types (the address width) and which maps hold them. Selection (slots,
/// Maglev, affinity) is written once over it.
pub trait Family {
    type Key: Copy;
    type Backend: Copy;
    /// The entry of `key` in the family's services map.
    fn entry(key: &Self::Key) -> Option<Lb4Service>;
    /// `key` with another backend slot.
    fn slot(key: &Self::Key, slot: u16) -> Self::Key;
    /// A backend of the family by id, if it still exists.
    fn backend(id: u32) -> Option<Self::Backend>;
    fn state(backend: &Self::Backend) -> u8;
}

/// `weir_lb4_*`.
#[derive(Copy, Clone)]
pub struct V4;

/// `weir_lb6_*`.
#[derive(Copy, Clone)]
pub struct V6;

impl Family for V4 {
    type Key = Lb4Key;
    type Backend = Lb4Backend;

    #[inline(always)]
    fn entry(key: &Lb4Key) -> Option<Lb4Service> {
        // SAFETY: a successful lookup returns a valid pointer; the value is Copy.
        SERVICES.get_ptr(key).map(|s| unsafe { *s })
    }

    #[inline(always)]
    fn slot(key: &Lb4Key, slot: u16) -> Lb4Key {
        Lb4Key {
            backend_slot: slot,
            ..*key
        }
    }

    #[inline(always)]
    fn backend(id: u32) -> Option<Lb4Backend> {
        backend(id)
    }

    #[inline(always)]
    fn state(backend: &Lb4Backend) -> u8 {
        backend.state
    }
}

impl Family for V6 {
    type Key = Lb6Key;
    type Backend = Lb6Backend;

    #[inline(always)]
    fn entry(key: &Lb6Key) -> Option<Lb4Service> {
        // SAFETY: a successful lookup returns a valid pointer; the value is Copy.
        SERVICES6.get_ptr(key).map(|s| unsafe { *s })
    }

    #[inline(always)]
    fn slot(key: &Lb6Key, slot: u16) -> Lb6Key {
        Lb6Key {
            backend_slot: slot,
            ..*key
        }
    }

    #[inline(always)]
    fn backend(id: u32) -> Option<Lb6Backend> {
        // SAFETY: a successful lookup returns a valid pointer; the value is Copy.
        BACKENDS6.get_ptr(id).map(|b| unsafe { *b })
    }

    #[inline(always)]
    fn state(backend: &Lb6Backend) -> u8 {
        backend.state
    }
}

/// A frontend's service entry (slot 0) and the key it was found under.
#[derive(Copy, Clone)]
pub struct Service<F: Family = V4> {
    pub key: F::Key,
    pub entry: Lb4Service,
}

/// The backend chosen for a new connection.
#[derive(Copy, Clone)]
pub struct Selected<F: Family = V4> {
    pub id: u32,
    pub backend: F::Backend,
}

/// The frontend (address, port, protocol) in `scope`, if it is a service.
#[inline(always)]
pub fn lookup(address: [u8; 4], port: [u8; 2], protocol: u8, scope: u8) -> Option<Service> {
    let key = Lb4Key {
        address,
        port,
        backend_slot: 0,
        protocol,
        scope,
        pad: [0; 2],
    };
    let entry = V4::entry(&key)?;
    Some(Service { key, entry })
}

/// Looks a frontend up as traffic from inside the cluster sees it: the
/// internal scope, where every frontend has an entry (ClusterIPs only there;
/// NodePort, externalIP and LoadBalancer frontends in both scopes, with all
/// backends here whatever their externalTrafficPolicy). One lookup.
#[inline(always)]
pub fn lookup_internal(address: [u8; 4], port: [u8; 2], protocol: u8) -> Option<Service> {
    lookup(address, port, protocol, LB_SCOPE_INTERNAL)
}

/// [`lookup`] for an IPv6 frontend.
#[inline(always)]
pub fn lookup6(address: [u8; 16], port: [u8; 2], protocol: u8, scope: u8) -> Option<Service<V6>> {
    let key = Lb6Key {
        address,
        port,
        backend_slot: 0,
        protocol,
        scope,
        pad: [0; 2],
    };
    let entry = V6::entry(&key)?;
    Some(Service { key, entry })
}

/// [`lookup_internal`] for an IPv6 frontend (socket LB).
#[inline(always)]
pub fn lookup6_internal(address: [u8; 16], port: [u8; 2], protocol: u8) -> Option<Service<V6>> {
    lookup6(address, port, protocol, LB_SCOPE_INTERNAL)
}

/// A backend by id, if it still exists.
#[inline(always)]
pub fn backend(id: u32) -> Option<Lb4Backend> {
    // SAFETY: a successful lookup returns a valid pointer; Lb4Backend is Copy.
    BACKENDS.get_ptr(id).map(|b| unsafe { *b })
}

fn now_s() -> u32 {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    (unsafe { bpf_ktime_get_ns() } / 1_000_000_000) as u32
}

/// Picks an active backend for a new connection. `hash` keys Maglev (a hash
/// of what identifies the connection); `client` keys session affinity.
/// `None` when the service has no active backend.
#[inline(always)]
pub fn select<F: Family>(
    service: &Service<F>,
    hash: u32,
    client: Lb4AffinityKey,
) -> Option<Selected<F>> {
    let entry = &service.entry;
    if entry.count == 0 {
        return None;
    }
    let affinity = entry.flags & Lb4Service::FLAG_AFFINITY != 0;
    let affinity_key = Lb4AffinityKey {
        rev_nat_id: entry.rev_nat_id,
        ..client
    };
    if affinity {
        if let Some(found) = affine::<F>(&affinity_key, entry.affinity_timeout_s) {
            return Some(found);
        }
    }
    let id = if entry.flags & Lb4Service::FLAG_MAGLEV != 0 {
        maglev_pick(entry.maglev_table, hash)?
    } else {
        // SAFETY: bpf_get_prandom_u32 has no preconditions.
        let slot = unsafe { bpf_get_prandom_u32() } % entry.count as u32 + 1;
        F::entry(&F::slot(&service.key, slot as u16))?.backend_id
    };
    let backend = F::backend(id)?;
    if affinity {
        let value = Lb4AffinityValue {
            backend_id: id,
            last_used_s: now_s(),
        };
        // Best effort: a failed insert only loses stickiness.
        let _ = AFFINITY.insert(affinity_key, value, BPF_ANY as u64);
    }
    Some(Selected { id, backend })
}

/// The client's earlier backend, if within the timeout and still active.
#[inline(always)]
fn affine<F: Family>(key: &Lb4AffinityKey, timeout_s: u32) -> Option<Selected<F>> {
    let value = AFFINITY.get_ptr_mut(key)?;
    let now = now_s();
    // SAFETY: a pointer from a successful lookup; a racing update from
    // another CPU at worst refreshes the timestamp twice.
    let (id, last) = unsafe { ((*value).backend_id, (*value).last_used_s) };
    if now.wrapping_sub(last) > timeout_s {
        return None;
    }
    let backend = F::backend(id)?;
    if F::state(&backend) != Lb4Backend::STATE_ACTIVE {
        return None;
    }
    // SAFETY: as above.
    unsafe { (*value).last_used_s = now };
    Some(Selected { id, backend })
}

#[inline(always)]
fn maglev_pick(table: u32, hash: u32) -> Option<u32> {
    // SAFETY: reading a global of this object; volatile so the loader's
    // value is read instead of the compile-time initialiser.
    let size = unsafe { core::ptr::read_volatile(&WEIR_LB_MAGLEV_SIZE) };
    if size == 0 {
        return None;
    }
    let index = table.checked_mul(size)?.checked_add(hash % size)?;
    MAGLEV.get(index).copied().filter(|id| *id != 0)
}

/// A 32-bit mix of the words that identify a connection (the finaliser of
/// MurmurHash3 over a running xor-multiply): good spread for Maglev slots.
#[inline(always)]
pub fn hash_words(words: &[u32]) -> u32 {
    let mut h: u32 = 0x9747_b28c;
    for w in words {
        h ^= w
            .wrapping_mul(0xcc9e_2d51)
            .rotate_left(15)
            .wrapping_mul(0x1b87_3593);
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}
