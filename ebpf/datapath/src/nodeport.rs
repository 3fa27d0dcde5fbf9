//! Per-packet service NAT, for traffic the socket hooks never see: on the
//! node device for NodePort, externalIPs and LoadBalancer IPs reached from
//! outside the node, and on a pod's veth for a pod's own connections that
//! socket LB did not translate ([`pod_egress`], [`pod_ingress`]).
//!
//! From the network (`from_netdev`), a packet to an external-scope frontend
//! is balanced once per connection and both translations are remembered in
//! `weir_lb4_nat` (LRU): the forward one (client → frontend becomes client →
//! backend) and the reply one (backend → client becomes frontend → client).
//! A backend on this node gets the client's own source (so
//! `externalTrafficPolicy: Local` preserves it) and the packet goes up the
//! stack to the pod; its replies are translated back as they leave through
//! the node device (`to_netdev`). A backend on another node is reached with
//! the node's address and a port from `SNAT_PORT_MIN..=SNAT_PORT_MAX` as
//! source, so its replies come back here to be translated; those packets
//! carry the node's own address as source (after SNAT) or destination
//! client (after reverse SNAT), which the stack would drop as martians, so
//! they are redirected out directly after a FIB lookup.
//!
//! IPv6 NodePorts take the same path with `weir_lb6_nat` ([`v6`]); the flow
//! ([`from_network`], [`open`], ...) is written once over [`NatFamily`].
//! What stays IPv4-only: a pod's own packets (socket LB translates IPv6
//! ones), ICMP errors about translated connections, masquerading.

use aya_ebpf::bindings::{
    bpf_fib_lookup, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, BPF_F_MARK_MANGLED_0,
    BPF_F_PSEUDO_HDR, BPF_NOEXIST, TC_ACT_OK,
};
use aya_ebpf::helpers::generated::{bpf_fib_lookup as fib_lookup, bpf_redirect_neigh};
use aya_ebpf::macros::map;
use aya_ebpf::maps::LruHashMap;
use aya_ebpf::programs::TcContext;
use aya_ebpf::EbpfContext;
use weir_abi::ip_proto;
use weir_abi::ipcache::{FAMILY_IPV4, FAMILY_IPV6};
use weir_abi::lb::*;
use weir_abi::{Reason, TrafficDirection};

use crate::lb::{self, V4};
use crate::packet::Packet;
use crate::parse::Flow;

mod v6;

const AF_INET: u8 = 2;
const ETH_HLEN: usize = 14;
const IPV4_CSUM_OFF: usize = ETH_HLEN + 10;
const IPV4_SADDR_OFF: usize = ETH_HLEN + 12;
const IPV4_DADDR_OFF: usize = ETH_HLEN + 16;
/// Source-port candidates tried for one SNAT mapping before giving up.
const SNAT_ATTEMPTS: u32 = 8;

/// The node's IPv4 address (network order), the SNAT source; set by the
/// loader. 0: no SNAT, remote backends are not reachable per packet.
#[unsafe(no_mangle)]
pub(crate) static WEIR_NODE_IPV4: u32 = 0;

#[map(name = "weir_lb4_nat")]
pub(crate) static NAT: LruHashMap<Lb4NatKey, Lb4NatEntry> = LruHashMap::pinned(131_072, 0);

/// The result of service NAT packed into one integer, so that it crosses
/// the BPF-to-BPF call in a register (enums with payloads leave partly
/// uninitialised registers behind, which the verifier rejects): 0 continue
/// to the usual verdict, 1..=255 drop with that reason code,
/// `RETURN_BASE + action` return that TC action (redirected).
#[derive(Copy, Clone)]
pub struct Outcome(i32);

const RETURN_BASE: i32 = 0x100;

impl Outcome {
    pub const CONTINUE: Outcome = Outcome(0);

    pub fn drop(reason: Reason) -> Outcome {
        Outcome(reason as u8 as i32)
    }

    fn action(action: i32) -> Outcome {
        Outcome(RETURN_BASE + action)
    }

    /// The drop reason, if the packet is to be dropped.
    #[inline(always)]
    pub fn drop_reason(self) -> Option<Reason> {
        if self.0 > 0 && self.0 < RETURN_BASE {
            Some(Reason::from_u8(self.0 as u8).unwrap_or(Reason::DropInvalid))
        } else {
            None
        }
    }

    /// The TC action to return instead of the usual verdict, if any.
    #[inline(always)]
    pub fn redirect(self) -> Option<i32> {
        (self.0 >= RETURN_BASE).then_some(self.0 - RETURN_BASE)
    }
}

/// A packet's addresses (`A`: `[u8; 4]`, or `[u32; 4]` for IPv6, see
/// `Lb6NatKey`), ports and protocol.
#[derive(Copy, Clone)]
pub(crate) struct Tuple<A = [u8; 4]> {
    pub(crate) saddr: A,
    pub(crate) daddr: A,
    pub(crate) sport: [u8; 2],
    pub(crate) dport: [u8; 2],
    pub(crate) protocol: u8,
    /// The packet holds the L4 header (false for a later fragment, whose
    /// ports came from its first fragment: only addresses are rewritten).
    pub(crate) l4: bool,
}

impl<A: Copy> Tuple<A> {
    pub(crate) fn key(&self, direction: u8) -> LbNatKey<A> {
        LbNatKey {
            saddr: self.saddr,
            daddr: self.daddr,
            sport: self.sport,
            dport: self.dport,
            protocol: self.protocol,
            direction,
            pad: [0; 2],
        }
    }
}

#[inline(always)]
fn tuple_of(flow: &Flow) -> Option<Tuple> {
    if flow.family != FAMILY_IPV4
        || !(flow.protocol == ip_proto::TCP || flow.protocol == ip_proto::UDP)
    {
        return None;
    }
    let mut saddr = [0u8; 4];
    let mut daddr = [0u8; 4];
    saddr.copy_from_slice(&flow.saddr[..4]);
    daddr.copy_from_slice(&flow.daddr[..4]);
    Some(Tuple {
        saddr,
        daddr,
        sport: flow.sport,
        dport: flow.dport,
        protocol: flow.protocol,
        l4: !flow.is_later_fragment(),
    })
}

/// What per-packet NAT needs of an address family beyond service lookup
/// (`lb::Family`): its NAT map, the node's address, header rewriting and
/// the FIB lookup of a redirect.
pub(crate) trait NatFamily: lb::Family + Sized {
    type Addr: Copy + Default + PartialEq + 'static;
    fn nat() -> &'static LruHashMap<LbNatKey<Self::Addr>, LbNatEntry<Self::Addr>>;
    /// The node's address of the family (the SNAT source), if the loader set one.
    fn node() -> Option<Self::Addr>;
    /// The frontend the packet is addressed to, in `scope`.
    fn lookup(tuple: &Tuple<Self::Addr>, scope: u8) -> Option<lb::Service<Self>>;
    /// A backend's address, port and `Lb4Backend::FLAG_*`.
    fn target(backend: &Self::Backend) -> (Self::Addr, [u8; 2], u8);
    /// What identifies the connection, for Maglev.
    fn hash(tuple: &Tuple<Self::Addr>) -> u32;
    /// The client, for session affinity.
    fn client(tuple: &Tuple<Self::Addr>) -> Lb4AffinityKey;
    /// Rewrites the packet's tuple from `old` to `new`, fixing checksums.
    fn rewrite(
        ctx: &TcContext,
        old: &Tuple<Self::Addr>,
        new: &LbNatEntry<Self::Addr>,
    ) -> Result<(), Reason>;
    /// Fills the FIB lookup's family and addresses for `entry`'s packet.
    fn fib_params(params: &mut bpf_fib_lookup, entry: &LbNatEntry<Self::Addr>);

    // The steps of `from_network`, inlined by default. IPv6 makes each a
    // call of its own (a BPF-to-BPF call): its four-word addresses would
    // otherwise spill the frames of the chain beyond 512 bytes.

    /// [`snat_reply`].
    #[inline(always)]
    fn snat_reply(tuple: &Tuple<Self::Addr>, entry: &mut LbNatEntry<Self::Addr>) -> bool {
        snat_reply::<Self>(tuple, entry)
    }
    /// [`established`].
    #[inline(always)]
    fn established(tuple: &Tuple<Self::Addr>, entry: &mut LbNatEntry<Self::Addr>) -> bool {
        established::<Self>(tuple, entry)
    }
    /// [`open`], the reply mapping built on the stack.
    #[inline(always)]
    fn open(
        tuple: &Tuple<Self::Addr>,
        service: &lb::Service<Self>,
        snat_remote: bool,
        forward: &mut LbNatEntry<Self::Addr>,
    ) -> Result<(), Reason> {
        let mut reply = ReplyMapping::default();
        open::<Self>(tuple, service, snat_remote, &mut reply, forward)
    }
}

impl NatFamily for V4 {
    type Addr = [u8; 4];

    #[inline(always)]
    fn nat() -> &'static LruHashMap<Lb4NatKey, Lb4NatEntry> {
        &NAT
    }

    #[inline(always)]
    fn node() -> Option<[u8; 4]> {
        // SAFETY: reading a global of this object; volatile so the loader's
        // value is read instead of the compile-time initialiser.
        let node = unsafe { core::ptr::read_volatile(&WEIR_NODE_IPV4) }.to_ne_bytes();
        (node != [0; 4]).then_some(node)
    }

    #[inline(always)]
    fn lookup(tuple: &Tuple, scope: u8) -> Option<lb::Service> {
        lb::lookup(tuple.daddr, tuple.dport, tuple.protocol, scope)
    }

    #[inline(always)]
    fn target(backend: &Lb4Backend) -> ([u8; 4], [u8; 2], u8) {
        (backend.address, backend.port, backend.flags)
    }

    #[inline(always)]
    fn hash(tuple: &Tuple) -> u32 {
        lb::hash_words(&[
            u32::from_ne_bytes(tuple.saddr),
            u32::from_ne_bytes(tuple.daddr),
            ports_word(tuple),
            tuple.protocol as u32,
        ])
    }

    #[inline(always)]
    fn client(tuple: &Tuple) -> Lb4AffinityKey {
        Lb4AffinityKey {
            client: u32::from_ne_bytes(tuple.saddr) as u64,
            rev_nat_id: 0,
            kind: Lb4AffinityKey::KIND_ADDRESS,
            pad: [0; 5],
        }
    }

    #[inline(always)]
    fn rewrite(ctx: &TcContext, old: &Tuple, new: &Lb4NatEntry) -> Result<(), Reason> {
        rewrite(ctx, old, new)
    }

    #[inline(always)]
    fn fib_params(params: &mut bpf_fib_lookup, entry: &Lb4NatEntry) {
        params.family = AF_INET;
        params.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(entry.saddr);
        params.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(entry.daddr);
    }
}

/// Both ports in one word, for connection hashes.
#[inline(always)]
pub(crate) fn ports_word<A>(tuple: &Tuple<A>) -> u32 {
    (u16::from_ne_bytes(tuple.sport) as u32) << 16 | u16::from_ne_bytes(tuple.dport) as u32
}

/// Service NAT for a packet on the node device. Each family's half is a
/// function of its own (a BPF-to-BPF call): inlined, its locals and the
/// event report's would share one frame beyond the 512-byte stack.
#[inline(always)]
pub fn handle(ctx: &TcContext, flow: &Flow, direction: TrafficDirection) -> Outcome {
    match flow.family {
        FAMILY_IPV4 => handle4(ctx, flow, direction),
        FAMILY_IPV6 => v6::handle(ctx, flow, direction),
        // Not IP (ARP, ...): nothing to translate.
        _ => Outcome::CONTINUE,
    }
}

#[inline(never)]
fn handle4(ctx: &TcContext, flow: &Flow, direction: TrafficDirection) -> Outcome {
    let Some(tuple) = tuple_of(flow) else {
        return Outcome::CONTINUE;
    };
    match direction {
        TrafficDirection::Ingress => {
            let mut entry = Lb4NatEntry::default();
            from_network::<V4>(ctx, &tuple, &mut entry)
        }
        TrafficDirection::Egress => match reply_to_network::<V4>(ctx, &tuple) {
            Some(outcome) => outcome,
            None => match crate::masquerade::to_network(ctx, &tuple) {
                Ok(()) => Outcome::CONTINUE,
                Err(reason) => Outcome::drop(reason),
            },
        },
    }
}

/// `?` for functions returning [`Outcome`].
macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(value) => value,
            Err(reason) => return Outcome::drop(reason),
        }
    };
}

/// Replies of connections to a local backend, leaving the node: the source
/// becomes the frontend again. `None` for packets that are no such reply
/// (IPv4 ones may be masqueraded then).
#[inline(always)]
fn reply_to_network<F: NatFamily>(ctx: &TcContext, tuple: &Tuple<F::Addr>) -> Option<Outcome> {
    let entry = F::nat().get_ptr(tuple.key(LbNatKey::<F::Addr>::REPLY))?;
    // SAFETY: a pointer from a successful lookup; the value is Copy.
    let entry = unsafe { *entry };
    if entry.flags & LbNatEntry::<F::Addr>::FLAG_SNAT != 0 {
        return None;
    }
    Some(match F::rewrite(ctx, tuple, &entry) {
        Ok(()) => Outcome::CONTINUE,
        Err(reason) => Outcome::drop(reason),
    })
}

/// A packet from the network: a reply of a SNATed connection, or a
/// connection to an external-scope frontend. `entry` is room for the
/// mapping that applies (the caller's frame for IPv4, scratch for IPv6).
#[inline(always)]
fn from_network<F: NatFamily>(
    ctx: &TcContext,
    tuple: &Tuple<F::Addr>,
    entry: &mut LbNatEntry<F::Addr>,
) -> Outcome {
    if F::snat_reply(tuple, entry) {
        tri!(F::rewrite(ctx, tuple, entry));
        return finish::<F>(ctx, entry);
    }
    // Everything else that is not for a frontend passes with one lookup.
    let Some(service) = F::lookup(tuple, LB_SCOPE_EXTERNAL) else {
        return Outcome::CONTINUE;
    };
    if !F::established(tuple, entry) {
        // Only a datagram's first fragment balances it.
        if !tuple.l4 {
            return Outcome::drop(Reason::DropFragNotFound);
        }
        tri!(F::open(tuple, &service, true, entry));
    }
    tri!(F::rewrite(ctx, tuple, entry));
    finish::<F>(ctx, entry)
}

/// Whether the packet is a reply of a SNATed connection, come back to the
/// node's own address; its reply mapping in `entry` if so.
#[inline(always)]
fn snat_reply<F: NatFamily>(tuple: &Tuple<F::Addr>, entry: &mut LbNatEntry<F::Addr>) -> bool {
    if F::node() != Some(tuple.daddr) {
        return false;
    }
    let Some(found) = F::nat().get_ptr(tuple.key(LbNatKey::<F::Addr>::REPLY)) else {
        return false;
    };
    // SAFETY: a pointer from a successful lookup; the value is Copy.
    *entry = unsafe { *found };
    entry.flags & LbNatEntry::<F::Addr>::FLAG_SNAT != 0
}

/// Whether the connection was balanced already and its backend still
/// exists, its forward mapping in `entry` if so (a mapping whose backend
/// is gone is dropped: the connection is balanced anew).
#[inline(always)]
fn established<F: NatFamily>(tuple: &Tuple<F::Addr>, entry: &mut LbNatEntry<F::Addr>) -> bool {
    let key = tuple.key(LbNatKey::<F::Addr>::FORWARD);
    let Some(found) = F::nat().get_ptr(key) else {
        return false;
    };
    // SAFETY: a pointer from a successful lookup; the value is Copy.
    *entry = unsafe { *found };
    if F::backend(entry.backend_id).is_some() {
        true
    } else {
        let _ = F::nat().remove(key);
        false
    }
}

/// The reply mapping [`open`] builds for a new connection, in place: in
/// the caller's frame (IPv4) or per-CPU scratch (IPv6, whose frames are
/// full).
#[derive(Default)]
pub(crate) struct ReplyMapping<A> {
    pub(crate) key: LbNatKey<A>,
    pub(crate) entry: LbNatEntry<A>,
}

/// Balances a new connection: selects a backend of `service` and records
/// the forward and reply mappings (left in `forward` and `reply`). With
/// `snat_remote`, a backend on another node is reached from the node's
/// address (traffic from outside); without, the client's source is kept
/// (a pod's address routes back to it from every node). Called through
/// [`NatFamily::open`].
#[inline(always)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "the mappings are inserted from where they are built (per-CPU scratch for IPv6): by value they would be copied back onto the stack"
)]
fn open<F: NatFamily>(
    tuple: &Tuple<F::Addr>,
    service: &lb::Service<F>,
    snat_remote: bool,
    reply: &mut ReplyMapping<F::Addr>,
    forward: &mut LbNatEntry<F::Addr>,
) -> Result<(), Reason> {
    let hash = F::hash(tuple);
    let selected = lb::select(service, hash, F::client(tuple)).ok_or(Reason::DropNoService)?;
    let (address, port, backend_flags) = F::target(&selected.backend);
    let rev_nat_id = service.entry.rev_nat_id;
    let snat = LbNatEntry::<F::Addr>::FLAG_SNAT;
    let (source, sport, flags) = if !snat_remote || backend_flags & Lb4Backend::FLAG_LOCAL != 0 {
        (tuple.saddr, tuple.sport, 0)
    } else {
        (F::node().ok_or(Reason::DropNoService)?, [0; 2], snat)
    };
    // The reply mapping first: a forward entry exists only with its reply.
    reply.entry = LbNatEntry {
        saddr: tuple.daddr,
        daddr: tuple.saddr,
        sport: tuple.dport,
        dport: tuple.sport,
        backend_id: selected.id,
        rev_nat_id,
        flags,
        pad: 0,
    };
    reply.key = LbNatKey {
        saddr: address,
        daddr: source,
        sport: port,
        dport: sport,
        protocol: tuple.protocol,
        direction: LbNatKey::<F::Addr>::REPLY,
        pad: [0; 2],
    };
    let sport = if flags & snat != 0 {
        if !snat_port::<F>(&mut reply.key, &reply.entry, hash) {
            return Err(Reason::DropCtCreateFailed);
        }
        reply.key.dport
    } else {
        F::nat()
            .insert(&reply.key, &reply.entry, 0)
            .map_err(|_| Reason::DropCtCreateFailed)?;
        sport
    };
    *forward = LbNatEntry {
        saddr: source,
        daddr: address,
        sport,
        dport: port,
        backend_id: selected.id,
        rev_nat_id,
        flags,
        pad: 0,
    };
    F::nat()
        .insert(tuple.key(LbNatKey::<F::Addr>::FORWARD), &*forward, 0)
        .map_err(|_| Reason::DropCtCreateFailed)?;
    Ok(())
}

/// Service NAT for a pod's own packets that socket LB did not translate
/// (a process outside the node's socket-LB cgroup, or socket LB off): the
/// destination becomes a backend before conntrack and policy see the packet
/// (`flow` is updated), so policy applies to the backend. The client's
/// source is kept. Replies are translated back by [`pod_ingress`].
///
/// A new connection takes one entry of the endpoint's budget
/// (`endpoint_id`, see `budget.rs`) before its mappings are inserted.
#[inline(never)]
pub fn pod_egress(ctx: &TcContext, flow: &mut Flow, endpoint_id: u16) -> Outcome {
    let Some(tuple) = tuple_of(flow) else {
        return Outcome::CONTINUE;
    };
    let Some(service) = lb::lookup_internal(tuple.daddr, tuple.dport, tuple.protocol) else {
        return Outcome::CONTINUE;
    };
    let mut forward = Lb4NatEntry::default();
    let new = !established::<V4>(&tuple, &mut forward);
    if new {
        // Only a datagram's first fragment balances it.
        if !tuple.l4 {
            return Outcome::drop(Reason::DropFragNotFound);
        }
        if !crate::budget::take(endpoint_id) {
            return Outcome::drop(Reason::DropRateLimited);
        }
        tri!(V4::open(&tuple, &service, false, &mut forward));
    }
    if crate::debug::enabled(endpoint_id) {
        crate::debug::service(endpoint_id, flow, forward.daddr, forward.dport, new);
    }
    tri!(rewrite(ctx, &tuple, &forward));
    flow.daddr[..4].copy_from_slice(&forward.daddr);
    flow.dport = forward.dport;
    Outcome::CONTINUE
}

/// Replies to a pod of connections [`pod_egress`] balanced: the source
/// becomes the service again, after conntrack and policy saw the backend.
/// Called for packets conntrack found to be replies only.
#[inline(never)]
pub fn pod_ingress(ctx: &TcContext, flow: &Flow) -> Outcome {
    let Some(tuple) = tuple_of(flow) else {
        return Outcome::CONTINUE;
    };
    if let Some(entry) = NAT.get_ptr(tuple.key(Lb4NatKey::REPLY)) {
        // SAFETY: a pointer from a successful lookup; the value is Copy.
        let entry = unsafe { *entry };
        if entry.flags & Lb4NatEntry::FLAG_SNAT == 0 {
            tri!(rewrite(ctx, &tuple, &entry));
        }
    }
    Outcome::CONTINUE
}

/// An ICMP error on its way into a pod (`outer`, the quoted packet
/// `inner` at offset `quote`) about the pod's packets to a service backend
/// that [`pod_egress`] translated: the quote becomes what the pod sent
/// (the frontend as destination address and port), and an error the
/// backend itself sent comes from the frontend, as the backend's replies
/// do. Fixes the quoted IP header's checksum and the ICMP checksum (which
/// covers the quote); the quoted L4 checksum is left as it is (the quote
/// usually cuts it off, and no stack checks it). Nothing when the quote
/// names no translated connection; a drop (134) when a rewrite failed
/// (the packet may be half rewritten).
#[inline(always)]
pub fn icmp_error_to_pod(ctx: &TcContext, outer: &Flow, inner: &Flow, quote: usize) -> Outcome {
    let Some(tuple) = tuple_of(inner) else {
        return Outcome::CONTINUE;
    };
    // The quoted packet went pod -> backend: its reply mapping (backend ->
    // pod) holds the frontend.
    let key = Lb4NatKey {
        saddr: tuple.daddr,
        daddr: tuple.saddr,
        sport: tuple.dport,
        dport: tuple.sport,
        protocol: tuple.protocol,
        direction: Lb4NatKey::REPLY,
        pad: [0; 2],
    };
    let Some(entry) = NAT.get_ptr(key) else {
        return Outcome::CONTINUE;
    };
    // SAFETY: a pointer from a successful lookup; the value is Copy.
    let entry = unsafe { *entry };
    if entry.flags & Lb4NatEntry::FLAG_SNAT != 0 {
        return Outcome::CONTINUE;
    }
    match rewrite_quote(ctx, outer, &tuple, &entry, quote) {
        Ok(()) => Outcome::CONTINUE,
        Err(_) => Outcome::drop(Reason::DropInvalid),
    }
}

#[inline(always)]
fn rewrite_quote(
    ctx: &TcContext,
    outer: &Flow,
    quoted: &Tuple,
    reply: &Lb4NatEntry,
    quote: usize,
) -> Result<(), i64> {
    let packet = Packet::new(ctx);
    let icmp_csum = quote - 8 + 2;
    let quote_csum = quote + 10;
    // Two bytes, not one: LLVM turns a 1-byte bounds check at a variable
    // offset into `>=`, which the verifier cannot use.
    let version_ihl: [u8; 2] = packet.read(quote).ok_or(0)?;
    let quote_l4 = quote + ((version_ihl[0] & 0x0f) as usize) * 4;
    if quoted.daddr != reply.saddr {
        let (from, to) = (
            u32::from_ne_bytes(quoted.daddr) as u64,
            u32::from_ne_bytes(reply.saddr) as u64,
        );
        let before: [u8; 2] = packet.read(quote_csum).ok_or(0)?;
        ctx.store(quote + 16, &reply.saddr, 0)?;
        ctx.l3_csum_replace(quote_csum, from, to, 4)?;
        let after: [u8; 2] = packet.read(quote_csum).ok_or(0)?;
        ctx.l4_csum_replace(icmp_csum, from, to, 4)?;
        ctx.l4_csum_replace(
            icmp_csum,
            u16::from_ne_bytes(before) as u64,
            u16::from_ne_bytes(after) as u64,
            2,
        )?;
    }
    if quoted.dport != reply.sport {
        ctx.store(quote_l4 + 2, &reply.sport, 0)?;
        ctx.l4_csum_replace(
            icmp_csum,
            u16::from_ne_bytes(quoted.dport) as u64,
            u16::from_ne_bytes(reply.sport) as u64,
            2,
        )?;
    }
    // IPv4's ICMP checksum has no pseudo header: the outer source changes
    // only the IP checksum.
    if outer.saddr[..4] == quoted.daddr && quoted.daddr != reply.saddr {
        ctx.store(IPV4_SADDR_OFF, &reply.saddr, 0)?;
        ctx.l3_csum_replace(
            IPV4_CSUM_OFF,
            u32::from_ne_bytes(quoted.daddr) as u64,
            u32::from_ne_bytes(reply.saddr) as u64,
            4,
        )?;
    }
    Ok(())
}

/// Claims a free SNAT source port for the reply mapping: inserts the
/// mapping with the port in `key.dport`; false when every candidate is taken.
#[inline(always)]
pub(crate) fn snat_port<F: NatFamily>(
    key: &mut LbNatKey<F::Addr>,
    reply: &LbNatEntry<F::Addr>,
    hash: u32,
) -> bool {
    let range = (SNAT_PORT_MAX - SNAT_PORT_MIN) as u32 + 1;
    for attempt in 0..SNAT_ATTEMPTS {
        let port = SNAT_PORT_MIN + (hash.wrapping_add(attempt.wrapping_mul(7919)) % range) as u16;
        key.dport = port.to_be_bytes();
        if F::nat().insert(*key, reply, BPF_NOEXIST as u64).is_ok() {
            return true;
        }
    }
    false
}

/// Rewrites the packet's tuple from `old` to `new`, fixing the IPv4 and
/// TCP/UDP checksums (the L4 one covers the addresses through the pseudo
/// header). A later fragment (`old.l4` false) has only its addresses and
/// IP checksum rewritten: the L4 header, ports and checksum (which covers
/// the whole datagram) are in the first fragment, rewritten with it.
#[inline(always)]
pub(crate) fn rewrite(ctx: &TcContext, old: &Tuple, new: &Lb4NatEntry) -> Result<(), Reason> {
    let packet = Packet::new(ctx);
    let version_ihl: u8 = packet.read(ETH_HLEN).ok_or(Reason::DropInvalid)?;
    let l4 = ETH_HLEN + ((version_ihl & 0x0f) as usize) * 4;
    let (csum_off, mangled) = l4_checksum(old.protocol, l4);
    let addr_flags = BPF_F_PSEUDO_HDR as u64 | mangled | 4;
    let fail = |_| Reason::DropInvalid;
    if old.saddr != new.saddr {
        let (from, to) = (
            u32::from_ne_bytes(old.saddr) as u64,
            u32::from_ne_bytes(new.saddr) as u64,
        );
        ctx.store(IPV4_SADDR_OFF, &new.saddr, 0).map_err(fail)?;
        ctx.l3_csum_replace(IPV4_CSUM_OFF, from, to, 4)
            .map_err(fail)?;
        if old.l4 {
            ctx.l4_csum_replace(csum_off, from, to, addr_flags)
                .map_err(fail)?;
        }
    }
    if old.daddr != new.daddr {
        let (from, to) = (
            u32::from_ne_bytes(old.daddr) as u64,
            u32::from_ne_bytes(new.daddr) as u64,
        );
        ctx.store(IPV4_DADDR_OFF, &new.daddr, 0).map_err(fail)?;
        ctx.l3_csum_replace(IPV4_CSUM_OFF, from, to, 4)
            .map_err(fail)?;
        if old.l4 {
            ctx.l4_csum_replace(csum_off, from, to, addr_flags)
                .map_err(fail)?;
        }
    }
    if !old.l4 {
        return Ok(());
    }
    rewrite_ports(ctx, l4, old, new)
}

/// The port half of a rewrite, at L4 offset `l4` (both families).
#[inline(always)]
pub(crate) fn rewrite_ports<A>(
    ctx: &TcContext,
    l4: usize,
    old: &Tuple<A>,
    new: &LbNatEntry<A>,
) -> Result<(), Reason> {
    let (csum_off, mangled) = l4_checksum(old.protocol, l4);
    let fail = |_| Reason::DropInvalid;
    if old.sport != new.sport {
        let (from, to) = (
            u16::from_ne_bytes(old.sport) as u64,
            u16::from_ne_bytes(new.sport) as u64,
        );
        ctx.store(l4, &new.sport, 0).map_err(fail)?;
        ctx.l4_csum_replace(csum_off, from, to, mangled | 2)
            .map_err(fail)?;
    }
    if old.dport != new.dport {
        let (from, to) = (
            u16::from_ne_bytes(old.dport) as u64,
            u16::from_ne_bytes(new.dport) as u64,
        );
        ctx.store(l4 + 2, &new.dport, 0).map_err(fail)?;
        ctx.l4_csum_replace(csum_off, from, to, mangled | 2)
            .map_err(fail)?;
    }
    Ok(())
}

/// The offset of the TCP or UDP checksum of an L4 header at `l4`, and the
/// flag that keeps a UDP checksum from becoming 0 ("none").
#[inline(always)]
pub(crate) fn l4_checksum(protocol: u8, l4: usize) -> (usize, u64) {
    if protocol == ip_proto::TCP {
        (l4 + 16, 0)
    } else {
        (l4 + 6, BPF_F_MARK_MANGLED_0 as u64)
    }
}

/// After NAT: SNATed packets are redirected out (see the module docs),
/// others continue to the stack.
#[inline(always)]
fn finish<F: NatFamily>(ctx: &TcContext, entry: &LbNatEntry<F::Addr>) -> Outcome {
    if entry.flags & LbNatEntry::<F::Addr>::FLAG_SNAT == 0 {
        return Outcome::CONTINUE;
    }
    Outcome::action(redirect::<F>(ctx, entry))
}

/// Sends the packet out of the interface the FIB routes its destination
/// through, resolving the next hop's MAC address on the way. A function of
/// its own (a BPF-to-BPF call): the lookup's parameters stay off the
/// caller's frame.
#[inline(never)]
fn redirect<F: NatFamily>(ctx: &TcContext, entry: &LbNatEntry<F::Addr>) -> i32 {
    // SAFETY: bpf_fib_lookup is plain data; all-zero is a valid value.
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    F::fib_params(&mut params, entry);
    params.ifindex = crate::ifindex(ctx);
    // SAFETY: the context and a parameter block of the size passed.
    let rc = unsafe {
        fib_lookup(
            ctx.as_ptr(),
            &mut params,
            size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 && rc != BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
        return TC_ACT_OK;
    }
    // SAFETY: a null parameter block asks the helper to resolve the next
    // hop of the packet's own destination.
    unsafe { bpf_redirect_neigh(params.ifindex, core::ptr::null_mut(), 0, 0) as i32 }
}
