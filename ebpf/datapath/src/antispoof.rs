//! Anti-spoofing on node devices (issue 16 item 2): a host on the underlay
//! must not be able to send with a pod's source address and be classified
//! with that pod's identity.
//!
//! For every IP packet arriving from the network, one LPM lookup of its
//! source in `weir_pod_cidrs` (every node's pod CIDR, written by the agent;
//! `weir_pod_cidrs6` for IPv6 sources, dual-stack nodes' IPv6 pod CIDRs):
//! - no match: not a pod address, nothing to check;
//! - this node's pod CIDR: dropped. Its pods reach it through their veths,
//!   never from the network;
//! - another node's pod CIDR: accepted only from the neighbour this node
//!   routes that source through (a strict reverse-path check at L2), or
//!   from the neighbour it routes the owning node's address through (in
//!   tunnel mode the route to other nodes' pods is the tunnel device, and
//!   what their pods send to this node's own address, such as the replies
//!   of a NodePort connection SNATed to it, arrives natively). The
//!   routes to other nodes' pod CIDRs go through their node addresses
//!   (`--auto-direct-node-routes`, or the operator's), so that neighbour is
//!   the owning node: the frame's Ethernet source must be the MAC address
//!   the kernel holds for that next hop, and it must have arrived on the
//!   interface that route leaves by. Both are asked of the kernel per packet
//!   (`bpf_fib_lookup` of the source) rather than copied into a map: a node
//!   that comes, goes or changes its MAC is followed by the routes the agent
//!   keeps and by the neighbour table, with no second copy to go stale, and
//!   where the underlay routes pod CIDRs through a gateway the check
//!   expects the gateway (which is what such traffic carries) instead of
//!   dropping it. The lookup is only made for sources in another node's pod
//!   CIDR: other traffic costs the one map lookup.
//!
//! Fail closed: a source whose route or neighbour the kernel cannot resolve
//! is dropped too (a node would not reach that neighbour either, and it
//! learns it from the ARP request of any node about to send to it).
//!
//! What this cannot stop: a host on the same L2 segment that also forges
//! the owning node's MAC address (a native packet carries nothing else to
//! check; through the tunnel, `weir_from_overlay` checks the outer source
//! against `PodCidrInfo::node_ipv4` instead). It does stop every sender
//! that keeps its own MAC, and everything routed in from off the segment.

use aya_ebpf::bindings::{bpf_fib_lookup, BPF_FIB_LKUP_RET_SUCCESS};
use aya_ebpf::helpers::generated::bpf_fib_lookup as fib_lookup;
use aya_ebpf::macros::map;
use aya_ebpf::maps::lpm_trie::Key;
use aya_ebpf::maps::LpmTrie;
use aya_ebpf::programs::TcContext;
use aya_ebpf::EbpfContext;
use weir_abi::ipcache::{FAMILY_IPV4, FAMILY_IPV6};
use weir_abi::{PodCidr6Key, PodCidrInfo, PodCidrKey, Reason};

use crate::nodeport::Outcome;
use crate::packet::Packet;
use crate::parse::Flow;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// Offset of the Ethernet source address.
const ETH_SOURCE_OFF: usize = 6;

/// Room for this many nodes' pod CIDRs (Cilium's node map holds 16k).
#[map(name = "weir_pod_cidrs")]
pub(crate) static POD_CIDRS: LpmTrie<PodCidrKey, PodCidrInfo> = LpmTrie::pinned(16_384, 0);

/// Dual-stack nodes' IPv6 pod CIDRs: the same check for IPv6 sources, and
/// the tunnel's map for IPv6 pods (`overlay.rs`).
#[map(name = "weir_pod_cidrs6")]
pub(crate) static POD_CIDRS6: LpmTrie<PodCidr6Key, PodCidrInfo> = LpmTrie::pinned(16_384, 0);

/// The anti-spoofing verdict of a packet from the network: continue, or
/// drop as [`Reason::DropUnknownSender`]. A function of its own (a
/// BPF-to-BPF call, a sibling of service NAT): its FIB parameter block
/// stays off the caller's frame.
#[inline(never)]
pub fn from_network(ctx: &TcContext, flow: &Flow) -> Outcome {
    let ipv4 = flow.family == FAMILY_IPV4;
    let owner = if ipv4 {
        let source = [flow.saddr[0], flow.saddr[1], flow.saddr[2], flow.saddr[3]];
        POD_CIDRS.get(Key::new(32, PodCidrKey { addr: source }))
    } else if flow.family == FAMILY_IPV6 {
        POD_CIDRS6.get(Key::new(128, PodCidr6Key { addr: flow.saddr }))
    } else {
        None
    };
    let Some(owner) = owner else {
        return Outcome::CONTINUE;
    };
    if owner.is_local() {
        return Outcome::drop(Reason::DropUnknownSender);
    }
    // The next hop toward the source, or (tunnel mode, where the route to
    // another node's pods is the tunnel but their packets to this node's
    // own address come natively) toward the node that owns it.
    let mut toward_source = Destination::Ipv6(flow.saddr);
    if ipv4 {
        toward_source =
            Destination::Ipv4([flow.saddr[0], flow.saddr[1], flow.saddr[2], flow.saddr[3]]);
    }
    if from_next_hop(ctx, toward_source) || from_next_hop(ctx, Destination::Ipv4(owner.node_ipv4)) {
        return Outcome::CONTINUE;
    }
    Outcome::drop(Reason::DropUnknownSender)
}

/// An address to look the route toward up (network order).
#[derive(Copy, Clone)]
enum Destination {
    Ipv4([u8; 4]),
    Ipv6([u8; 16]),
}

/// Whether the frame came from the neighbour, and over the interface, that
/// this node routes `source` through.
#[inline(always)]
fn from_next_hop(ctx: &TcContext, source: Destination) -> bool {
    let Some(sender) = Packet::new(ctx).read::<[u8; 6]>(ETH_SOURCE_OFF) else {
        return false;
    };
    let ingress = crate::ifindex(ctx);
    // SAFETY: bpf_fib_lookup is plain data; all-zero is a valid value.
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    // As a packet to `source` arriving on this interface (an input route
    // lookup, as the kernel would route the reply's forwarding).
    params.ifindex = ingress;
    match source {
        Destination::Ipv4(address) => {
            params.family = AF_INET;
            params.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(address);
        }
        Destination::Ipv6(a) => {
            params.family = AF_INET6;
            params.__bindgen_anon_4.ipv6_dst = [
                u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
                u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
                u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
                u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
            ];
        }
    }
    // SAFETY: the context and a parameter block of the size passed.
    let rc = unsafe {
        fib_lookup(
            ctx.as_ptr(),
            &mut params,
            size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    rc == BPF_FIB_LKUP_RET_SUCCESS as i64 && params.ifindex == ingress && params.dmac == sender
}
