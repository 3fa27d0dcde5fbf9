//! Tunnel mode (issue 19 item 1): the programs of the node's VXLAN device
//! (`weir_vxlan`, collect-metadata), see `weir_abi::overlay`.
//!
//! `weir_to_overlay` (the device's egress, every packet the node routes to
//! another node's pod CIDR, from a pod or from the node): the tunnel key.
//! The outer destination is the node owning the destination's pod CIDR
//! (`weir_pod_cidrs`, or `weir_pod_cidrs6` for a dual-stack node's IPv6
//! pods: the outer header is IPv4 for both); the VNI is the sender's security identity (the
//! ipcache's for the source address: a local pod's identity, `host` for the
//! node, `world` for what the node forwards from outside; node-local CIDR
//! identities do not travel and go as `world`, which the receiver resolves
//! against its own ipcache).
//!
//! `weir_from_overlay` (the device's ingress, decapsulated): the VNI is the
//! sender's identity, trusted because the outer source is a node of the
//! cluster (its address has the `remote-node` identity in the ipcache) and,
//! for a pod source, the node that owns the pod's CIDR. `host` becomes
//! `remote-node` (the sender's host is not this one). The identity goes on
//! in the packet's mark to the destination pod's `weir_to_pod`, which
//! decides by it instead of looking the source up. The frame's Ethernet
//! destination is the sending device's address (the tunnel devices do not
//! resolve neighbours), so the packet is marked as addressed to this host
//! for the stack to route it on.
//!
//! What this does not stop: a host of the underlay that forges a node's
//! outer source address (VXLAN is not authenticated; Cilium's answer is
//! encryption, which Weir does not do).

use aya_ebpf::bindings::{bpf_tunnel_key, BPF_F_ZERO_CSUM_TX};
use aya_ebpf::helpers::generated::{
    bpf_skb_change_type, bpf_skb_get_tunnel_key, bpf_skb_set_tunnel_key,
};
use aya_ebpf::maps::lpm_trie::Key;
use aya_ebpf::programs::TcContext;
use weir_abi::identity;
use weir_abi::ipcache::FAMILY_IPV4;
use weir_abi::overlay::{identity_mark, VNI_MAX};
use weir_abi::{PodCidr6Key, PodCidrInfo, PodCidrKey, Reason};

use crate::antispoof::{POD_CIDRS, POD_CIDRS6};
use crate::parse::Flow;
use crate::policy;

/// The outer header's TTL.
const TUNNEL_TTL: u8 = 64;
/// `skb->pkt_type` of a frame addressed to this host.
const PACKET_HOST: u32 = 0;

/// The first four bytes of an address field.
#[inline(always)]
fn ipv4(addr: &[u8; 16]) -> [u8; 4] {
    [addr[0], addr[1], addr[2], addr[3]]
}

/// The node whose pod CIDR holds `addr` (of the flow's `family`): IPv4 in
/// `weir_pod_cidrs`, IPv6 in `weir_pod_cidrs6` (a dual-stack node's; the
/// outer tunnel is IPv4 either way).
#[inline(always)]
fn pod_cidr_owner(family: u8, addr: &[u8; 16]) -> Option<&'static PodCidrInfo> {
    if family == FAMILY_IPV4 {
        POD_CIDRS.get(Key::new(32, PodCidrKey { addr: ipv4(addr) }))
    } else {
        POD_CIDRS6.get(Key::new(128, PodCidr6Key { addr: *addr }))
    }
}

/// `weir_to_overlay`: sets the tunnel key of a packet about to be
/// encapsulated, or names why it cannot be sent.
#[inline(always)]
pub fn to_overlay(ctx: &TcContext, flow: &Flow) -> Reason {
    let Some(node) = pod_cidr_owner(flow.family, &flow.daddr) else {
        return Reason::DropNoTunnelEndpoint;
    };
    if node.is_local() {
        return Reason::DropNoTunnelEndpoint;
    }
    let sender = policy::identity_of(flow.family, &flow.saddr);
    let vni = if sender > VNI_MAX {
        identity::WORLD
    } else {
        sender
    };
    // SAFETY: bpf_tunnel_key is plain data; all-zero is a valid value.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    key.tunnel_id = vni;
    // The helper takes the outer address in host order.
    key.__bindgen_anon_1.remote_ipv4 = u32::from_be_bytes(node.node_ipv4);
    key.tunnel_ttl = TUNNEL_TTL;
    // SAFETY: the context's skb and a key of the size passed.
    let rc = unsafe {
        bpf_skb_set_tunnel_key(
            ctx.skb.skb,
            &mut key,
            size_of::<bpf_tunnel_key>() as u32,
            BPF_F_ZERO_CSUM_TX as u64,
        )
    };
    if rc < 0 {
        return Reason::DropNoTunnelEndpoint;
    }
    Reason::Forwarded
}

/// `weir_from_overlay`: checks a decapsulated packet's sender and hands its
/// identity on in the mark.
#[inline(always)]
pub fn from_overlay(ctx: &TcContext, flow: &Flow) -> Reason {
    // SAFETY: bpf_tunnel_key is plain data; all-zero is a valid value.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    // SAFETY: the context's skb and a key of the size passed.
    let rc = unsafe {
        bpf_skb_get_tunnel_key(ctx.skb.skb, &mut key, size_of::<bpf_tunnel_key>() as u32, 0)
    };
    if rc < 0 {
        return Reason::DropNoTunnelKey;
    }
    // SAFETY: the helper filled the IPv4 member (no BPF_F_TUNINFO_IPV6).
    let outer = unsafe { key.__bindgen_anon_1.remote_ipv4 }.to_be_bytes();
    let mut outer_addr = [0u8; 16];
    outer_addr[..4].copy_from_slice(&outer);
    let outer_identity = policy::identity_of(FAMILY_IPV4, &outer_addr);
    if outer_identity != identity::REMOTE_NODE && outer_identity != identity::KUBE_APISERVER {
        return Reason::DropUnknownSender;
    }
    if let Some(owner) = pod_cidr_owner(flow.family, &flow.saddr) {
        if owner.is_local() || owner.node_ipv4 != outer {
            return Reason::DropUnknownSender;
        }
    }
    let sender = match key.tunnel_id & VNI_MAX {
        identity::HOST => identity::REMOTE_NODE,
        sender => sender,
    };
    ctx.set_mark(identity_mark(sender));
    // SAFETY: plain helper call on the context's skb.
    unsafe { bpf_skb_change_type(ctx.skb.skb, PACKET_HOST) };
    Reason::Forwarded
}
