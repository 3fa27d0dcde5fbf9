//! eBPF host routing (issue 17 item 1): a pod's packet whose verdict is
//! known is sent straight to the device the node routes it through, without
//! the host's IP stack (routing, netfilter) in between.
//!
//! Only packets to an address of a pod CIDR (`weir_pod_cidrs`: this node's
//! and every other node's; `weir_pod_cidrs6` for IPv6, [`route6`]) are
//! redirected; everything else (the node itself, the world) goes up the
//! stack as before, where a host firewall, masquerading or anything else
//! the node configures applies.
//! `weir_from_pod` redirects a pod's packets to any pod CIDR (this node's
//! pods and the node device toward other nodes); `weir_from_netdev`
//! redirects packets from the network to this node's pods only.
//!
//! The kernel's FIB decides where the packet goes (`bpf_fib_lookup`, an
//! input route lookup as if the packet arrived on the pod's interface, so
//! policy routing, forwarding and MTU are the kernel's own):
//! - success: the Ethernet header is rewritten with the next hop's and the
//!   device's MAC addresses, the TTL decremented, and the packet handed to
//!   the device's **egress** (`bpf_redirect`, flags 0). On a pod's host-side
//!   veth that egress runs `weir_to_pod`: the destination's ingress policy,
//!   conntrack and reverse service NAT still apply (the `host_routing`
//!   suite checks it). On a node device it runs `weir_to_netdev`.
//! - no neighbour entry yet: `bpf_redirect_neigh` to that device, which
//!   resolves the next hop (ARP) and transmits through the same egress.
//! - anything else (no route, local destination, packet too big for the
//!   route's MTU, forwarding off, TTL about to expire): `TC_ACT_OK`, the
//!   stack handles it as before (ICMP errors, fragmentation).
//!
//! Switched by the load-time global `WEIR_HOST_ROUTING` (the agent's
//! `--host-routing bpf|legacy`).

use aya_ebpf::bindings::{
    bpf_fib_lookup, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_OK,
};
use aya_ebpf::helpers::generated::{
    bpf_fib_lookup as fib_lookup, bpf_redirect, bpf_redirect_neigh,
};
use aya_ebpf::maps::lpm_trie::Key;
use aya_ebpf::programs::TcContext;
use aya_ebpf::EbpfContext;
use weir_abi::{EndpointKey, PodCidr6Key, PodCidrKey};

use crate::antispoof::{POD_CIDRS, POD_CIDRS6};
use crate::maps::ENDPOINTS;
use crate::packet::Packet;

/// 1: redirect (`--host-routing bpf`); 0: leave every packet to the stack.
/// Set by the loader.
#[unsafe(no_mangle)]
static WEIR_HOST_ROUTING: u8 = 0;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const ETH_HLEN: usize = 14;
const ETH_P_IP: [u8; 2] = [0x08, 0x00];
const ETH_P_IPV6: [u8; 2] = [0x86, 0xdd];
const IPV6_HOP_LIMIT_OFF: usize = ETH_HLEN + 7;
const IPV6_SADDR_OFF: usize = ETH_HLEN + 8;
const IPV6_HLEN: usize = 40;
const IPV4_TOS_OFF: usize = ETH_HLEN + 1;
const IPV4_TTL_OFF: usize = ETH_HLEN + 8;
const IPV4_CSUM_OFF: usize = ETH_HLEN + 10;
const IPV4_SADDR_OFF: usize = ETH_HLEN + 12;

/// Whether host routing is on.
#[inline(always)]
pub fn enabled() -> bool {
    // SAFETY: a global the loader sets before the program is loaded; a
    // volatile read keeps the compiler from folding its initial value.
    unsafe { core::ptr::read_volatile(&WEIR_HOST_ROUTING) != 0 }
}

/// The action for a packet whose verdict passed, to `daddr` (IPv4, network
/// order as in the packet; after service NAT for a pod's packet): a
/// redirect, or `TC_ACT_OK` for the stack. From a pod (`from_network`
/// false), any pod CIDR's address qualifies; from the network, only this
/// node's own pod CIDR, and only when the FIB routes the packet to a pod's
/// interface (an endpoint in `weir_endpoints`, whose egress runs
/// `weir_to_pod`): traffic between other hosts that passes through the node
/// stays the stack's. A function of its own (a BPF-to-BPF call, called
/// after the verdict): its FIB parameter block is a sibling of the
/// program's other frames, not added to them.
#[inline(never)]
pub fn route(ctx: &TcContext, daddr: u32, from_network: bool) -> i32 {
    let Some(cidr) = POD_CIDRS.get(Key::new(
        32,
        PodCidrKey {
            addr: daddr.to_ne_bytes(),
        },
    )) else {
        return TC_ACT_OK;
    };
    if from_network && !cidr.is_local() {
        return TC_ACT_OK;
    }
    // The Ethernet header and the IPv4 header's fixed part, read at once.
    let Some(headers) = Packet::new(ctx).read::<[u8; IPV4_SADDR_OFF + 4]>(0) else {
        return TC_ACT_OK;
    };
    let (tos, ttl) = (headers[IPV4_TOS_OFF], headers[IPV4_TTL_OFF]);
    let saddr = [
        headers[IPV4_SADDR_OFF],
        headers[IPV4_SADDR_OFF + 1],
        headers[IPV4_SADDR_OFF + 2],
        headers[IPV4_SADDR_OFF + 3],
    ];
    // The stack answers an expiring TTL (time exceeded).
    if headers[12..14] != ETH_P_IP || ttl <= 1 {
        return TC_ACT_OK;
    }
    // SAFETY: bpf_fib_lookup is plain data; all-zero is a valid value.
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    params.family = AF_INET;
    // As the packet arrived: an input route lookup on the pod's interface.
    // tot_len stays 0, so the helper checks the skb itself against the
    // route's MTU (GSO packets by their segments).
    params.ifindex = crate::ifindex(ctx);
    params.__bindgen_anon_2.tos = tos;
    params.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(saddr);
    params.__bindgen_anon_4.ipv4_dst = daddr;
    // SAFETY: the context and a parameter block of the size passed.
    let rc = unsafe {
        fib_lookup(
            ctx.as_ptr(),
            &mut params,
            size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    let resolved = rc == BPF_FIB_LKUP_RET_SUCCESS as i64;
    if !resolved && rc != BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
        return TC_ACT_OK;
    }
    if from_network && !to_endpoint(&params) {
        return TC_ACT_OK;
    }
    // Forwarded, so the TTL goes down by one as the stack would do it.
    // The TTL is the first byte of a 16-bit word whose other byte (the
    // protocol) does not change: the checksum update takes the word as it
    // lies in the packet.
    let old = u16::from_ne_bytes([ttl, 0]) as u64;
    let new = u16::from_ne_bytes([ttl - 1, 0]) as u64;
    if ctx.l3_csum_replace(IPV4_CSUM_OFF, old, new, 2).is_err()
        || ctx.store(IPV4_TTL_OFF, &(ttl - 1), 0).is_err()
    {
        return TC_ACT_OK;
    }
    send(ctx, &params, resolved)
}

/// [`route`] for an IPv6 packet to `daddr` (network order): the same
/// rules, with `weir_pod_cidrs6`, an IPv6 FIB lookup and the hop limit
/// (which no checksum covers) for the TTL.
#[inline(never)]
pub fn route6(ctx: &TcContext, daddr: [u8; 16], from_network: bool) -> i32 {
    let Some(cidr) = POD_CIDRS6.get(Key::new(128, PodCidr6Key { addr: daddr })) else {
        return TC_ACT_OK;
    };
    if from_network && !cidr.is_local() {
        return TC_ACT_OK;
    }
    // The Ethernet header and the IPv6 header, read at once.
    let Some(headers) = Packet::new(ctx).read::<[u8; ETH_HLEN + IPV6_HLEN]>(0) else {
        return TC_ACT_OK;
    };
    let hop_limit = headers[IPV6_HOP_LIMIT_OFF];
    // The stack answers an expiring hop limit (time exceeded).
    if headers[12..14] != ETH_P_IPV6 || hop_limit <= 1 {
        return TC_ACT_OK;
    }
    let word = |at: usize| {
        u32::from_ne_bytes([
            headers[at],
            headers[at + 1],
            headers[at + 2],
            headers[at + 3],
        ])
    };
    // SAFETY: bpf_fib_lookup is plain data; all-zero is a valid value.
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    params.family = AF_INET6;
    params.ifindex = crate::ifindex(ctx);
    // Traffic class and flow label, as the header holds them (network
    // order), the version masked off.
    params.__bindgen_anon_2.flowinfo = u32::from_ne_bytes([
        headers[ETH_HLEN] & 0x0f,
        headers[ETH_HLEN + 1],
        headers[ETH_HLEN + 2],
        headers[ETH_HLEN + 3],
    ]);
    params.__bindgen_anon_3.ipv6_src = [
        word(IPV6_SADDR_OFF),
        word(IPV6_SADDR_OFF + 4),
        word(IPV6_SADDR_OFF + 8),
        word(IPV6_SADDR_OFF + 12),
    ];
    params.__bindgen_anon_4.ipv6_dst = [
        u32::from_ne_bytes([daddr[0], daddr[1], daddr[2], daddr[3]]),
        u32::from_ne_bytes([daddr[4], daddr[5], daddr[6], daddr[7]]),
        u32::from_ne_bytes([daddr[8], daddr[9], daddr[10], daddr[11]]),
        u32::from_ne_bytes([daddr[12], daddr[13], daddr[14], daddr[15]]),
    ];
    // SAFETY: the context and a parameter block of the size passed.
    let rc = unsafe {
        fib_lookup(
            ctx.as_ptr(),
            &mut params,
            size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    let resolved = rc == BPF_FIB_LKUP_RET_SUCCESS as i64;
    if !resolved && rc != BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
        return TC_ACT_OK;
    }
    if from_network && !to_endpoint(&params) {
        return TC_ACT_OK;
    }
    if ctx.store(IPV6_HOP_LIMIT_OFF, &(hop_limit - 1), 0).is_err() {
        return TC_ACT_OK;
    }
    send(ctx, &params, resolved)
}

/// Whether the FIB's answer leaves by a pod's interface (an endpoint in
/// `weir_endpoints`, whose egress runs `weir_to_pod`).
#[inline(always)]
fn to_endpoint(params: &bpf_fib_lookup) -> bool {
    ENDPOINTS
        .get_ptr(EndpointKey {
            ifindex: params.ifindex,
        })
        .is_some()
}

/// Hands the packet to the FIB's device: with the next hop's and the
/// device's MAC addresses when the neighbour is known, else through
/// `bpf_redirect_neigh`, which resolves it.
#[inline(always)]
fn send(ctx: &TcContext, params: &bpf_fib_lookup, resolved: bool) -> i32 {
    if resolved {
        let mut macs = [0u8; 12];
        macs[..6].copy_from_slice(&params.dmac);
        macs[6..].copy_from_slice(&params.smac);
        if ctx.store(0, &macs, 0).is_err() {
            return TC_ACT_OK;
        }
        // SAFETY: plain helper call; flags 0 is the device's egress.
        unsafe { bpf_redirect(params.ifindex, 0) as i32 }
    } else {
        // SAFETY: a null parameter block asks the helper to resolve the
        // next hop of the packet's own destination.
        unsafe { bpf_redirect_neigh(params.ifindex, core::ptr::null_mut(), 0, 0) as i32 }
    }
}
