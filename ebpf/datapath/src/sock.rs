//! Socket LB: cgroup sock_addr hooks translate a service frontend to a
//! backend when a socket connects (TCP, connected UDP) or sends (unconnected
//! UDP), so the packets of the connection carry the backend's address from
//! the start and pay no per-packet NAT. recvmsg and getpeername turn the
//! backend back into the frontend the application asked for.
//!
//! A frontend with no active backend refuses the connection at once
//! (`ECONNREFUSED`), counted under `DropNoService`.
//!
//! IPv6 sockets go through the connect6/sendmsg6/recvmsg6/getpeername6
//! hooks and the `weir_lb6_*` maps the same way. An IPv4-mapped address
//! (`::ffff:a.b.c.d`, a dual-stack socket reaching an IPv4 address) is left
//! alone: it is never an IPv6 frontend, and it is not translated through the
//! IPv4 maps either (such connections reach an IPv4 ClusterIP untranslated).

use aya_ebpf::bindings::BPF_ANY;
use aya_ebpf::helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_set_retval};
use aya_ebpf::macros::map;
use aya_ebpf::maps::LruHashMap;
use aya_ebpf::programs::SockAddrContext;
use aya_ebpf::EbpfContext;
use weir_abi::endpoint::NetnsOwner;
use weir_abi::ip_proto;
use weir_abi::ipcache::{FAMILY_IPV4, FAMILY_IPV6};
use weir_abi::lb::{Lb4AffinityKey, Lb4SockKey, Lb4SockRevNat, Lb6SockKey, Lb6SockRevNat};
use weir_abi::{identity, EndpointKey, Reason, TrafficDirection};

use crate::events::{self, Report};
use crate::lb;
use crate::maps::{ENDPOINTS, NETNS_OWNERS};
use crate::metrics;

/// Let the syscall go on.
const SYS_PROCEED: i32 = 1;
/// Fail the syscall (with the errno set by `bpf_set_retval`).
const SYS_REJECT: i32 = 0;
const ECONNREFUSED: i32 = 111;

#[map(name = "weir_lb4_sock_revnat")]
static SOCK_REVNAT: LruHashMap<Lb4SockKey, Lb4SockRevNat> = LruHashMap::pinned(131_072, 0);

#[map(name = "weir_lb6_sock_revnat")]
static SOCK_REVNAT6: LruHashMap<Lb6SockKey, Lb6SockRevNat> = LruHashMap::pinned(131_072, 0);

/// The address and port the application passed, as network-order bytes.
#[inline(always)]
fn user_addr(ctx: &SockAddrContext) -> ([u8; 4], [u8; 2]) {
    let sa = ctx.sock_addr;
    // SAFETY: the context pointer the kernel passed in; these fields are
    // readable in every sock_addr hook. Both hold network byte order, the
    // port in the low 16 bits.
    unsafe {
        (
            (*sa).user_ip4.to_ne_bytes(),
            ((*sa).user_port as u16).to_ne_bytes(),
        )
    }
}

#[inline(always)]
fn set_user_addr(ctx: &SockAddrContext, address: [u8; 4], port: [u8; 2]) {
    let sa = ctx.sock_addr;
    // SAFETY: as above; user_ip4/user_port are writable in connect, sendmsg,
    // recvmsg and getpeername hooks.
    unsafe {
        (*sa).user_ip4 = u32::from_ne_bytes(address);
        (*sa).user_port = u16::from_ne_bytes(port) as u32;
    }
}

/// connect4 and sendmsg4: frontend → backend.
#[inline(always)]
pub fn translate(ctx: &SockAddrContext) -> i32 {
    // SAFETY: reading a field of the context.
    let protocol = unsafe { (*ctx.sock_addr).protocol };
    if protocol != u32::from(ip_proto::TCP) && protocol != u32::from(ip_proto::UDP) {
        return SYS_PROCEED;
    }
    let (address, port) = user_addr(ctx);
    let Some(service) = lb::lookup_internal(address, port, protocol as u8) else {
        return SYS_PROCEED;
    };
    // SAFETY: socket and netns cookies are defined for every sock_addr context.
    let (cookie, netns) = unsafe {
        (
            bpf_get_socket_cookie(ctx.as_ptr()),
            bpf_get_netns_cookie(ctx.as_ptr()),
        )
    };
    let client = Lb4AffinityKey {
        client: netns,
        rev_nat_id: 0,
        kind: Lb4AffinityKey::KIND_NETNS,
        pad: [0; 5],
    };
    let hash = lb::hash_words(&[cookie as u32, (cookie >> 32) as u32]);
    let Some(selected) = lb::select(&service, hash, client) else {
        let mut daddr = [0; 16];
        daddr[..4].copy_from_slice(&address);
        refuse(netns, FAMILY_IPV4, daddr, port, protocol as u8);
        return SYS_REJECT;
    };
    let backend = selected.backend;
    let key = Lb4SockKey {
        cookie,
        address: backend.address,
        port: backend.port,
        pad: [0; 2],
    };
    let frontend = Lb4SockRevNat {
        address,
        port,
        rev_nat_id: service.entry.rev_nat_id,
    };
    // Best effort: without it, recvmsg/getpeername show the backend.
    let _ = SOCK_REVNAT.insert(key, frontend, BPF_ANY as u64);
    set_user_addr(ctx, backend.address, backend.port);
    SYS_PROCEED
}

/// Fills in who owns the socket's network namespace `netns` (a cgroup hook
/// sees no interface and, before the socket is bound, no source address):
/// a pod's endpoint id, identity and address, from its `weir_endpoints`
/// entry; for the node's own namespace, `host` and the node's address.
/// Returns the pod's host-side ifindex (0 for the node or an unknown
/// namespace, whose report names nobody).
#[inline(always)]
fn owner(netns: u64, family: u8, report: &mut Report) -> u32 {
    let Some(owner) = NETNS_OWNERS.get_ptr(netns) else {
        return 0;
    };
    // SAFETY: a pointer from a successful lookup; the value is Copy.
    let owner = unsafe { *owner };
    if owner.ifindex == NetnsOwner::NODE {
        report.endpoint_identity = identity::HOST;
        // The record holds the node's IPv4 address only.
        if family == FAMILY_IPV4 {
            report.flow.saddr[..4].copy_from_slice(&owner.ipv4);
        }
        return 0;
    }
    let Some(endpoint) = ENDPOINTS.get_ptr(EndpointKey {
        ifindex: owner.ifindex,
    }) else {
        return 0;
    };
    // SAFETY: as above; only Copy fields are read.
    let (id, endpoint_identity) = unsafe { ((*endpoint).id, (*endpoint).identity) };
    report.endpoint_id = id;
    report.endpoint_identity = endpoint_identity;
    if family == FAMILY_IPV4 {
        // SAFETY: as above.
        let ipv4 = unsafe { (*endpoint).ipv4 };
        report.flow.saddr[..4].copy_from_slice(&ipv4);
    } else {
        // SAFETY: as above.
        report.flow.saddr = unsafe { (*endpoint).ipv6 };
    }
    owner.ifindex
}

/// recvmsg4 and getpeername4: backend → the frontend the socket asked for.
#[inline(always)]
pub fn reverse(ctx: &SockAddrContext) -> i32 {
    let (address, port) = user_addr(ctx);
    // SAFETY: the socket cookie is defined for every sock_addr context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = Lb4SockKey {
        cookie,
        address,
        port,
        pad: [0; 2],
    };
    if let Some(frontend) = SOCK_REVNAT.get_ptr(key) {
        // SAFETY: a pointer from a successful lookup; the value is Copy.
        let frontend = unsafe { *frontend };
        set_user_addr(ctx, frontend.address, frontend.port);
    }
    SYS_PROCEED
}

/// Counts and reports a connection refused for want of a backend, and sets
/// the errno the application sees. The report names the socket's owner
/// (see [`owner`]). `daddr`: the frontend, an IPv4 one in its first 4 bytes.
#[inline(always)]
fn refuse(netns: u64, family: u8, daddr: [u8; 16], port: [u8; 2], protocol: u8) {
    metrics::account(TrafficDirection::Egress, Reason::DropNoService, 0);
    let mut report = Report::new();
    report.flow.family = family;
    report.flow.protocol = protocol;
    report.flow.daddr = daddr;
    report.flow.dport = port;
    let ifindex = owner(netns, family, &mut report);
    events::report(
        &report,
        Reason::DropNoService,
        TrafficDirection::Egress,
        true,
        ifindex,
        0,
    );
    // SAFETY: bpf_set_retval only sets the errno the syscall returns.
    unsafe { bpf_set_retval(-ECONNREFUSED) };
}

/// The IPv6 address and port the application passed, as network-order
/// bytes. `user_ip6` is four u32 words, each read on its own (the only
/// width every kernel accepts for them).
#[inline(always)]
fn user_addr6(ctx: &SockAddrContext) -> ([u8; 16], [u8; 2]) {
    let sa = ctx.sock_addr;
    let mut address = [0u8; 16];
    // SAFETY: the context pointer the kernel passed in; user_ip6 and
    // user_port are readable in every IPv6 sock_addr hook, in network byte
    // order (the port in the low 16 bits). Volatile keeps the reads 4 bytes
    // wide, as the verifier wants them.
    let port = unsafe {
        let words = core::ptr::addr_of!((*sa).user_ip6) as *const u32;
        for i in 0..4 {
            let word = core::ptr::read_volatile(words.add(i));
            address[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
        }
        ((*sa).user_port as u16).to_ne_bytes()
    };
    (address, port)
}

#[inline(always)]
fn set_user_addr6(ctx: &SockAddrContext, address: [u8; 16], port: [u8; 2]) {
    let sa = ctx.sock_addr;
    // SAFETY: as above; user_ip6 (4-byte stores) and user_port are writable
    // in connect6, sendmsg6, recvmsg6 and getpeername6.
    unsafe {
        let words = core::ptr::addr_of_mut!((*sa).user_ip6) as *mut u32;
        for i in 0..4 {
            let word = u32::from_ne_bytes([
                address[i * 4],
                address[i * 4 + 1],
                address[i * 4 + 2],
                address[i * 4 + 3],
            ]);
            core::ptr::write_volatile(words.add(i), word);
        }
        (*sa).user_port = u16::from_ne_bytes(port) as u32;
    }
}

/// `::ffff:a.b.c.d`.
#[inline(always)]
fn is_v4_mapped(address: &[u8; 16]) -> bool {
    address[..10] == [0; 10] && address[10] == 0xff && address[11] == 0xff
}

/// connect6 and sendmsg6: frontend → backend, as [`translate`] does for
/// IPv4. IPv4-mapped destinations are left alone (see the module docs).
#[inline(always)]
pub fn translate6(ctx: &SockAddrContext) -> i32 {
    // SAFETY: reading a field of the context.
    let protocol = unsafe { (*ctx.sock_addr).protocol };
    if protocol != u32::from(ip_proto::TCP) && protocol != u32::from(ip_proto::UDP) {
        return SYS_PROCEED;
    }
    let (address, port) = user_addr6(ctx);
    if is_v4_mapped(&address) {
        return SYS_PROCEED;
    }
    let Some(service) = lb::lookup6_internal(address, port, protocol as u8) else {
        return SYS_PROCEED;
    };
    // SAFETY: socket and netns cookies are defined for every sock_addr context.
    let (cookie, netns) = unsafe {
        (
            bpf_get_socket_cookie(ctx.as_ptr()),
            bpf_get_netns_cookie(ctx.as_ptr()),
        )
    };
    let client = Lb4AffinityKey {
        client: netns,
        rev_nat_id: 0,
        kind: Lb4AffinityKey::KIND_NETNS,
        pad: [0; 5],
    };
    let hash = lb::hash_words(&[cookie as u32, (cookie >> 32) as u32]);
    let Some(selected) = lb::select(&service, hash, client) else {
        refuse(netns, FAMILY_IPV6, address, port, protocol as u8);
        return SYS_REJECT;
    };
    let backend = selected.backend;
    let key = Lb6SockKey {
        cookie,
        address: backend.address,
        port: backend.port,
        pad: [0; 6],
    };
    let frontend = Lb6SockRevNat {
        address,
        port,
        rev_nat_id: service.entry.rev_nat_id,
    };
    // Best effort: without it, recvmsg/getpeername show the backend.
    let _ = SOCK_REVNAT6.insert(key, frontend, BPF_ANY as u64);
    set_user_addr6(ctx, backend.address, backend.port);
    SYS_PROCEED
}

/// recvmsg6 and getpeername6: backend → the frontend the socket asked for.
#[inline(always)]
pub fn reverse6(ctx: &SockAddrContext) -> i32 {
    let (address, port) = user_addr6(ctx);
    // SAFETY: the socket cookie is defined for every sock_addr context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = Lb6SockKey {
        cookie,
        address,
        port,
        pad: [0; 6],
    };
    if let Some(frontend) = SOCK_REVNAT6.get_ptr(key) {
        // SAFETY: a pointer from a successful lookup; the value is Copy.
        let frontend = unsafe { *frontend };
        set_user_addr6(ctx, frontend.address, frontend.port);
    }
    SYS_PROCEED
}
