//! The IPv6 half of per-packet service NAT: NodePorts on the node's IPv6
//! address, reached from the network (`weir_lb6_nat`). IPv6 has no header
//! checksum; the TCP/UDP checksum covers the addresses through the pseudo
//! header, so an address rewrite folds the difference of the two 16-byte
//! addresses into it (`bpf_csum_diff`).
//!
//! Packets with extension headers before TCP/UDP, and so IPv6 fragments,
//! are not translated: they reach the stack as they arrived.

use aya_ebpf::bindings::{bpf_fib_lookup, BPF_F_PSEUDO_HDR};
use aya_ebpf::helpers::generated::bpf_csum_diff;
use aya_ebpf::macros::map;
use aya_ebpf::maps::{LruHashMap, PerCpuArray};
use aya_ebpf::programs::TcContext;
use weir_abi::ip_proto;
use weir_abi::ipcache::FAMILY_IPV6;
use weir_abi::lb::{ipv6_bytes, ipv6_words, Lb4AffinityKey, Lb6Backend, Lb6NatEntry, Lb6NatKey};
use weir_abi::{Reason, TrafficDirection};

use super::{
    established, from_network, l4_checksum, open, ports_word, reply_to_network, rewrite_ports,
    snat_reply, NatFamily, Outcome, ReplyMapping, Tuple, ETH_HLEN,
};
use crate::lb::{self, V6};
use crate::packet::Packet;
use crate::parse::Flow;

const AF_INET6: u8 = 10;
const IPV6_NEXTHDR_OFF: usize = ETH_HLEN + 6;
const IPV6_SADDR_OFF: usize = ETH_HLEN + 8;
const IPV6_DADDR_OFF: usize = ETH_HLEN + 24;
/// Where TCP/UDP starts when no extension header precedes it (the only
/// packets translated).
const L4_OFF: usize = ETH_HLEN + 40;

/// The node's IPv6 address (as `weir_lb6_nat` holds addresses), the SNAT
/// source; set by the loader. All zero:
/// no SNAT, remote backends are not reachable per packet over IPv6.
#[unsafe(no_mangle)]
static WEIR_NODE_IPV6: [u32; 4] = [0; 4];

#[map(name = "weir_lb6_nat")]
static NAT6: LruHashMap<Lb6NatKey, Lb6NatEntry> = LruHashMap::pinned(131_072, 0);

/// Per-CPU working memory of IPv6 NAT, kept off the stack (one slot per
/// CPU is enough, see `scratch.rs`): the packet's tuple, the mapping that
/// applies to it, and the reply mapping of a new connection.
struct Work {
    tuple: Tuple<[u32; 4]>,
    entry: Lb6NatEntry,
    reply: ReplyMapping<[u32; 4]>,
}

#[map(name = "weir_nat6_work")]
static WORK: PerCpuArray<Work> = PerCpuArray::with_max_entries(1, 0);

/// Service NAT for an IPv6 packet on the node device (see the parent
/// module): from the network, NodePorts are balanced; on the way out,
/// replies of local backends get the frontend back as source.
#[inline(never)]
pub(super) fn handle(ctx: &TcContext, flow: &Flow, direction: TrafficDirection) -> Outcome {
    let Some(slot) = WORK.get_ptr_mut(0) else {
        return Outcome::CONTINUE;
    };
    // SAFETY: this CPU's slot (see `Work`); its `tuple` and `entry` are
    // borrowed here, its `reply` by `open`.
    let (tuple, entry) = unsafe { (&mut (*slot).tuple, &mut (*slot).entry) };
    if !load_tuple(ctx, flow, tuple) {
        return Outcome::CONTINUE;
    }
    match direction {
        TrafficDirection::Ingress => from_network::<V6>(ctx, tuple, entry),
        TrafficDirection::Egress => to_network(ctx, tuple),
    }
}

/// A function of its own (a BPF-to-BPF call beside [`open`], not under
/// it), for the stack.
#[inline(never)]
fn to_network(ctx: &TcContext, tuple: &Tuple<[u32; 4]>) -> Outcome {
    reply_to_network::<V6>(ctx, tuple).unwrap_or(Outcome::CONTINUE)
}

/// Fills `tuple` from a TCP or UDP packet whose L4 header follows the
/// IPv6 header directly; false for any other packet.
#[inline(always)]
fn load_tuple(ctx: &TcContext, flow: &Flow, tuple: &mut Tuple<[u32; 4]>) -> bool {
    if flow.family != FAMILY_IPV6
        || !(flow.protocol == ip_proto::TCP || flow.protocol == ip_proto::UDP)
    {
        return false;
    }
    if Packet::new(ctx).read::<u8>(IPV6_NEXTHDR_OFF) != Some(flow.protocol) {
        return false;
    }
    // Both addresses loaded again, as aligned words: built from the
    // flow's bytes they would cost a register per byte.
    let Ok(addresses) = ctx.load::<[u32; 8]>(IPV6_SADDR_OFF) else {
        return false;
    };
    *tuple = Tuple {
        saddr: [addresses[0], addresses[1], addresses[2], addresses[3]],
        daddr: [addresses[4], addresses[5], addresses[6], addresses[7]],
        sport: flow.sport,
        dport: flow.dport,
        protocol: flow.protocol,
        l4: true,
    };
    true
}

impl NatFamily for V6 {
    type Addr = [u32; 4];

    #[inline(always)]
    fn nat() -> &'static LruHashMap<Lb6NatKey, Lb6NatEntry> {
        &NAT6
    }

    #[inline(always)]
    fn node() -> Option<[u32; 4]> {
        // SAFETY: reading a global of this object; volatile so the loader's
        // value is read instead of the compile-time initialiser.
        let node = unsafe { core::ptr::read_volatile(&WEIR_NODE_IPV6) };
        (node != [0; 4]).then_some(node)
    }

    #[inline(never)]
    fn lookup(tuple: &Tuple<[u32; 4]>, scope: u8) -> Option<lb::Service<V6>> {
        lb::lookup6(ipv6_bytes(&tuple.daddr), tuple.dport, tuple.protocol, scope)
    }

    #[inline(always)]
    fn target(backend: &Lb6Backend) -> ([u32; 4], [u8; 2], u8) {
        (ipv6_words(&backend.address), backend.port, backend.flags)
    }

    #[inline(always)]
    fn hash(tuple: &Tuple<[u32; 4]>) -> u32 {
        // Each address folded to two words: fewer words on the stack, and
        // Maglev needs spread, not uniqueness.
        let (s, d) = (tuple.saddr, tuple.daddr);
        lb::hash_words(&[
            s[0] ^ s[2],
            s[1] ^ s[3],
            d[0] ^ d[2],
            d[1] ^ d[3],
            ports_word(tuple),
            tuple.protocol as u32,
        ])
    }

    /// The client address folded to 64 bits: stickiness is per folded
    /// address, which two clients share only by chance.
    #[inline(always)]
    fn client(tuple: &Tuple<[u32; 4]>) -> Lb4AffinityKey {
        let s = tuple.saddr;
        Lb4AffinityKey {
            client: ((s[0] ^ s[2]) as u64) << 32 | (s[1] ^ s[3]) as u64,
            rev_nat_id: 0,
            kind: Lb4AffinityKey::KIND_ADDRESS6,
            pad: [0; 5],
        }
    }

    /// A function of its own (a BPF-to-BPF call), for the stack.
    #[inline(never)]
    fn rewrite(ctx: &TcContext, old: &Tuple<[u32; 4]>, new: &Lb6NatEntry) -> Result<(), Reason> {
        if old.saddr != new.saddr {
            rewrite_address(ctx, IPV6_SADDR_OFF, &old.saddr, &new.saddr, old.protocol)?;
        }
        if old.daddr != new.daddr {
            rewrite_address(ctx, IPV6_DADDR_OFF, &old.daddr, &new.daddr, old.protocol)?;
        }
        rewrite_ports(ctx, L4_OFF, old, new)
    }

    #[inline(always)]
    fn fib_params(params: &mut bpf_fib_lookup, entry: &Lb6NatEntry) {
        params.family = AF_INET6;
        params.__bindgen_anon_3.ipv6_src = entry.saddr;
        params.__bindgen_anon_4.ipv6_dst = entry.daddr;
    }

    #[inline(never)]
    fn snat_reply(tuple: &Tuple<[u32; 4]>, entry: &mut Lb6NatEntry) -> bool {
        snat_reply::<V6>(tuple, entry)
    }

    #[inline(never)]
    fn established(tuple: &Tuple<[u32; 4]>, entry: &mut Lb6NatEntry) -> bool {
        established::<V6>(tuple, entry)
    }

    /// The reply mapping built in this CPU's [`Work`], off the stack.
    #[inline(never)]
    fn open(
        tuple: &Tuple<[u32; 4]>,
        service: &lb::Service<V6>,
        snat_remote: bool,
        forward: &mut Lb6NatEntry,
    ) -> Result<(), Reason> {
        let slot = WORK.get_ptr_mut(0).ok_or(Reason::DropCtCreateFailed)?;
        // SAFETY: this CPU's slot (see `Work`); only its `reply` is
        // borrowed here, while the caller holds the `tuple` and `entry`.
        let reply = unsafe { &mut (*slot).reply };
        open::<V6>(tuple, service, snat_remote, reply, forward)
    }
}

/// Stores `to` over the address at `offset` and folds the change into the
/// L4 checksum (its pseudo header holds the address).
#[inline(always)]
fn rewrite_address(
    ctx: &TcContext,
    offset: usize,
    from: &[u32; 4],
    to: &[u32; 4],
    protocol: u8,
) -> Result<(), Reason> {
    let (csum_off, mangled) = l4_checksum(protocol, L4_OFF);
    let (mut before, mut after) = (*from, *to);
    // SAFETY: two 16-byte buffers on this frame, sizes as passed.
    let diff = unsafe { bpf_csum_diff(before.as_mut_ptr(), 16, after.as_mut_ptr(), 16, 0) };
    if diff < 0 {
        return Err(Reason::DropInvalid);
    }
    let fail = |_| Reason::DropInvalid;
    ctx.store(offset, to, 0).map_err(fail)?;
    ctx.l4_csum_replace(csum_off, 0, diff as u64, BPF_F_PSEUDO_HDR as u64 | mangled)
        .map_err(fail)
}
