//! BPF masquerading (issue 19 item 3, `--masquerade`): a local pod's
//! TCP or UDP connection to a destination outside the cluster leaves the
//! node device (`weir_to_netdev`) with the node's address and a port of the
//! SNAT range as its source, as ip-masq-agent or Cilium's BPF masquerading
//! do it; the replies come back to the node's address and are translated
//! back by the reply mappings service NAT already follows
//! (`nodeport::from_network`, `FLAG_SNAT`), then redirected to the pod.
//!
//! Left alone: sources that are not this node's pods, destinations in any
//! node's pod CIDR (`weir_pod_cidrs`), the cluster's nodes (ipcache
//! `host`, `remote-node`, `kube-apiserver`: as Cilium, which does not
//! masquerade to remote nodes by default) and the prefixes of
//! `weir_nonmasq` (`--non-masquerade-cidr`, ip-masq-agent's
//! `nonMasqueradeCIDRs`).
//!
//! Both mappings live in `weir_lb4_nat` beside service NAT's (`FLAG_SNAT
//! | FLAG_MASQUERADE`, no backend). The source port is chosen by a hash of
//! the connection and the first free one of a few candidates, so two pods
//! that use the same source port toward the same server get two ports of
//! the node. ICMP is not masqueraded yet.

use aya_ebpf::macros::map;
use aya_ebpf::maps::lpm_trie::Key;
use aya_ebpf::maps::LpmTrie;
use aya_ebpf::programs::TcContext;
use weir_abi::identity;
use weir_abi::ipcache::FAMILY_IPV4;
use weir_abi::lb::{Lb4NatEntry, Lb4NatKey};
use weir_abi::{PodCidrKey, Reason};

use crate::antispoof::POD_CIDRS;
use crate::nodeport::{self, Tuple, NAT};

/// 1: masquerade (`--masquerade`); 0: never. Set by the loader.
#[unsafe(no_mangle)]
static WEIR_MASQUERADE: u8 = 0;

/// Destinations never masqueraded (value 1).
#[map(name = "weir_nonmasq")]
static NON_MASQUERADE: LpmTrie<PodCidrKey, u8> = LpmTrie::pinned(1_024, 0);

#[inline(always)]
fn enabled() -> bool {
    // SAFETY: a global the loader sets; volatile so its value is read.
    unsafe { core::ptr::read_volatile(&WEIR_MASQUERADE) != 0 }
}

/// Whether a packet from `tuple.saddr` to `tuple.daddr` leaving the node is
/// masqueraded.
#[inline(always)]
fn applies(tuple: &Tuple) -> bool {
    let from_local_pod = POD_CIDRS
        .get(Key::new(32, PodCidrKey { addr: tuple.saddr }))
        .is_some_and(|cidr| cidr.is_local());
    if !from_local_pod {
        return false;
    }
    let destination = || Key::new(32, PodCidrKey { addr: tuple.daddr });
    if POD_CIDRS.get(destination()).is_some() || NON_MASQUERADE.get(destination()).is_some() {
        return false;
    }
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&tuple.daddr);
    !matches!(
        crate::policy::identity_of(FAMILY_IPV4, &addr),
        identity::HOST | identity::REMOTE_NODE | identity::KUBE_APISERVER
    )
}

/// Masquerades `tuple`'s packet on its way out of the node device, if it
/// is a local pod's to outside the cluster. A function of its own (a
/// BPF-to-BPF call): its mappings stay off the caller's frame.
#[inline(never)]
pub fn to_network(ctx: &TcContext, tuple: &Tuple) -> Result<(), Reason> {
    if !enabled() {
        return Ok(());
    }
    // A connection already masqueraded: one hash lookup, before the
    // prefix lookups that decide whether a new one is.
    if let Some(entry) = NAT.get_ptr(tuple.key(Lb4NatKey::FORWARD)) {
        // SAFETY: a pointer from a successful lookup; the value is Copy.
        let entry = unsafe { *entry };
        if entry.flags & Lb4NatEntry::FLAG_MASQUERADE != 0 {
            return nodeport::rewrite(ctx, tuple, &entry);
        }
    }
    if !applies(tuple) {
        return Ok(());
    }
    // SAFETY: reading a global of this object; volatile so the loader's
    // value is read instead of the compile-time initialiser.
    let node = unsafe { core::ptr::read_volatile(&nodeport::WEIR_NODE_IPV4) }.to_ne_bytes();
    if node == [0; 4] {
        return Ok(());
    }
    // Only a datagram's first fragment opens a mapping.
    if !tuple.l4 {
        return Err(Reason::DropFragNotFound);
    }
    let forward = open(tuple, node)?;
    nodeport::rewrite(ctx, tuple, &forward)
}

/// Records a new masqueraded connection: the reply mapping (server ->
/// node:port becomes server -> pod) with a free port, then the forward one;
/// returns the forward one.
#[inline(always)]
fn open(tuple: &Tuple, node: [u8; 4]) -> Result<Lb4NatEntry, Reason> {
    let flags = Lb4NatEntry::FLAG_SNAT | Lb4NatEntry::FLAG_MASQUERADE;
    let reply = Lb4NatEntry {
        saddr: tuple.daddr,
        daddr: tuple.saddr,
        sport: tuple.dport,
        dport: tuple.sport,
        backend_id: 0,
        rev_nat_id: 0,
        flags,
        pad: 0,
    };
    let mut reply_key = Lb4NatKey {
        saddr: tuple.daddr,
        daddr: node,
        sport: tuple.dport,
        dport: [0; 2],
        protocol: tuple.protocol,
        direction: Lb4NatKey::REPLY,
        pad: [0; 2],
    };
    let ports =
        (u16::from_ne_bytes(tuple.sport) as u32) << 16 | u16::from_ne_bytes(tuple.dport) as u32;
    let hash = crate::lb::hash_words(&[
        u32::from_ne_bytes(tuple.saddr),
        u32::from_ne_bytes(tuple.daddr),
        ports,
        tuple.protocol as u32,
    ]);
    if !nodeport::snat_port::<crate::lb::V4>(&mut reply_key, &reply, hash) {
        return Err(Reason::DropCtCreateFailed);
    }
    let forward = Lb4NatEntry {
        saddr: node,
        daddr: tuple.daddr,
        sport: reply_key.dport,
        dport: tuple.dport,
        backend_id: 0,
        rev_nat_id: 0,
        flags,
        pad: 0,
    };
    NAT.insert(tuple.key(Lb4NatKey::FORWARD), forward, 0)
        .map_err(|_| Reason::DropCtCreateFailed)?;
    Ok(forward)
}
