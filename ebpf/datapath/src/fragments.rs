//! IPv4 fragment tracking (see `weir_abi::fragments`): the first fragment's
//! ports, remembered for the later fragments of the same datagram, which
//! carry no L4 header.
//!
//! Both functions are BPF-to-BPF calls: the parser is inlined into every
//! program, and the map key and value stay off the callers' frames.

use aya_ebpf::bindings::BPF_ANY;
use aya_ebpf::macros::map;
use aya_ebpf::maps::LruHashMap;
use weir_abi::fragments::FRAGMENTS_MAX_ENTRIES;
use weir_abi::{Frag4Key, Frag4Ports};

use crate::parse::Flow;

#[map(name = "weir_fragments")]
static FRAGMENTS: LruHashMap<Frag4Key, Frag4Ports> = LruHashMap::pinned(FRAGMENTS_MAX_ENTRIES, 0);

#[inline(always)]
fn key(flow: &Flow, id: u16) -> Frag4Key {
    Frag4Key {
        saddr: [flow.saddr[0], flow.saddr[1], flow.saddr[2], flow.saddr[3]],
        daddr: [flow.daddr[0], flow.daddr[1], flow.daddr[2], flow.daddr[3]],
        id: id.to_be_bytes(),
        protocol: flow.protocol,
        pad: 0,
    }
}

/// Remembers the ports of a first fragment (`flow` parsed with its L4
/// header). A failed insert only costs the later fragments their ports.
#[inline(never)]
pub fn record(flow: &Flow, id: u16) {
    let ports = Frag4Ports {
        sport: flow.sport,
        dport: flow.dport,
    };
    let _ = FRAGMENTS.insert(key(flow, id), ports, BPF_ANY as u64);
}

/// Gives a later fragment its datagram's ports; false when the first
/// fragment was not seen (the ports stay 0).
#[inline(never)]
pub fn recall(flow: &mut Flow, id: u16) -> bool {
    let Some(ports) = FRAGMENTS.get_ptr(key(flow, id)) else {
        return false;
    };
    // SAFETY: a pointer from a successful lookup; the value is Copy.
    let ports = unsafe { *ports };
    flow.sport = ports.sport;
    flow.dport = ports.dport;
    true
}
