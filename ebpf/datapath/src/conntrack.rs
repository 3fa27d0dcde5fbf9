//! Connection tracking for the pod programs (see `weir_abi::conntrack`).

use aya_ebpf::bindings::BPF_NOEXIST;
use aya_ebpf::helpers::generated::bpf_ktime_get_ns;
use weir_abi::conntrack::*;
use weir_abi::ip_proto;
use weir_abi::{CtEntry, CtKey, Reason};

use aya_ebpf::maps::LruHashMap;

use crate::maps::{CONNTRACK, CONNTRACK_ANY};
use crate::parse::Flow;

/// -EEXIST, as map helpers return it.
const NEG_EEXIST: i32 = -17;

/// How a packet relates to tracked connections.
#[derive(Copy, Clone, PartialEq, Eq)]
pub enum CtState {
    /// No entry: a new connection (policy decides).
    New,
    /// The opening direction of a tracked connection.
    Established,
    /// The reply direction of a connection tracked in the other scope.
    Reply,
}

/// What [`lookup`] found: the state, and for an established connection
/// its entry (to read and renew the verdict's stamp).
pub struct Tracked {
    pub state: CtState,
    entry: *mut CtEntry,
}

impl Tracked {
    /// Whether the opening direction was allowed at policy `revision`
    /// (so nothing that decides its verdict has changed since).
    #[inline(always)]
    pub fn verdict_current(&self, revision: u64) -> bool {
        // SAFETY: a pointer from a successful lookup of a conntrack map,
        // valid for the program's run (an LRU eviction meanwhile leaves the
        // memory readable; the worst outcome is one more policy check).
        self.state == CtState::Established
            && !self.entry.is_null()
            && unsafe { (*self.entry).policy_revision } == revision
    }

    /// Records that the opening direction was allowed at `revision`.
    #[inline(always)]
    pub fn stamp(&self, revision: u64) {
        if self.state == CtState::Established && !self.entry.is_null() {
            // SAFETY: as in `verdict_current`; a racing CPU stamping the
            // same entry writes a revision it read no earlier than ours.
            unsafe { (*self.entry).policy_revision = revision };
        }
    }
}

/// The map of the flow's protocol: TCP, or every other.
#[inline(always)]
fn table(protocol: u8) -> &'static LruHashMap<CtKey, CtEntry> {
    if protocol == ip_proto::TCP {
        &CONNTRACK
    } else {
        &CONNTRACK_ANY
    }
}

fn key(flow: &Flow, scope: u8, reversed: bool) -> CtKey {
    let (saddr, daddr, sport, dport) = if reversed {
        (flow.daddr, flow.saddr, flow.dport, flow.sport)
    } else {
        (flow.saddr, flow.daddr, flow.sport, flow.dport)
    };
    CtKey {
        saddr,
        daddr,
        sport,
        dport,
        protocol: flow.protocol,
        family: flow.family,
        scope,
        pad: 0,
    }
}

fn timeout(protocol: u8, tcp_flags_seen: u8) -> u64 {
    if protocol != ip_proto::TCP {
        return CT_TIMEOUT_OTHER_NS;
    }
    if tcp_flags_seen & (CtEntry::TCP_FIN | CtEntry::TCP_RST) != 0 {
        CT_TIMEOUT_TCP_CLOSE_NS
    } else if tcp_flags_seen & CtEntry::TCP_ACK != 0 {
        CT_TIMEOUT_TCP_ESTABLISHED_NS
    } else {
        CT_TIMEOUT_TCP_SYN_NS
    }
}

/// Looks the packet up: as the opening direction of an entry in `scope`,
/// then as the reply of an entry in `reply_scope`. Refreshes what it finds.
#[inline(always)]
pub fn lookup(flow: &Flow, scope: u8, reply_scope: u8) -> Tracked {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let table = table(flow.protocol);
    if let Some(entry) = table.get_ptr_mut(key(flow, scope, false)) {
        // SAFETY: a pointer from a successful lookup; concurrent updates of
        // these counters from another CPU may race, which costs at most a
        // lost increment or an early/late expiry, never memory safety.
        unsafe {
            (*entry).packets_forward += 1;
            (*entry).tcp_flags |= flow.tcp_flags;
            (*entry).expires_ns = now + timeout(flow.protocol, (*entry).tcp_flags);
        }
        return Tracked {
            state: CtState::Established,
            entry,
        };
    }
    if let Some(entry) = table.get_ptr_mut(key(flow, reply_scope, true)) {
        // SAFETY: as above.
        unsafe {
            (*entry).packets_reply += 1;
            (*entry).tcp_flags |= flow.tcp_flags;
            (*entry).expires_ns = now + timeout(flow.protocol, (*entry).tcp_flags);
        }
        return Tracked {
            state: CtState::Reply,
            entry: core::ptr::null_mut(),
        };
    }
    Tracked {
        state: CtState::New,
        entry: core::ptr::null_mut(),
    }
}

/// Starts tracking a new connection in `scope`, its verdict taken at
/// policy `revision`.
#[inline(always)]
pub fn create(flow: &Flow, scope: u8, revision: u64) -> Result<(), Reason> {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let entry = CtEntry {
        expires_ns: now + timeout(flow.protocol, flow.tcp_flags),
        packets_forward: 1,
        packets_reply: 0,
        policy_revision: revision,
        tcp_flags: flow.tcp_flags,
        pad: [0; 7],
    };
    // BPF_NOEXIST: a racing CPU may have created it; that entry is as good.
    match table(flow.protocol).insert(key(flow, scope, false), entry, BPF_NOEXIST as u64) {
        Ok(()) => Ok(()),
        Err(NEG_EEXIST) => Ok(()),
        Err(_) => Err(Reason::DropCtCreateFailed),
    }
}

/// Whether `inner`, the packet an ICMP error quotes, belongs to a tracked
/// connection: as the opening direction of an entry of `reply_scope` (the
/// error travels against a connection opened the other way, e.g. to the
/// pod that opened it) or as the reply of an entry of `scope` (the error
/// is about that connection's replies). Read only: an error refreshes
/// nothing.
#[inline(always)]
pub fn related(inner: &Flow, scope: u8, reply_scope: u8) -> bool {
    let table = table(inner.protocol);
    table.get_ptr(key(inner, reply_scope, false)).is_some()
        || table.get_ptr(key(inner, scope, true)).is_some()
}
