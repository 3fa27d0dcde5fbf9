//! The per-CPU packet/byte counters (`weir_metrics`).

use aya_ebpf::bindings::BPF_NOEXIST;
use aya_ebpf::macros::map;
use aya_ebpf::maps::PerCpuHashMap;
use weir_abi::{MetricsKey, MetricsValue, Reason, TrafficDirection};

/// Room for every (reason, direction) pair with a wide margin; Cilium uses
/// the same size for its metrics map.
const METRICS_MAX_ENTRIES: u32 = 1024;

#[map(name = "weir_metrics")]
static METRICS: PerCpuHashMap<MetricsKey, MetricsValue> =
    PerCpuHashMap::pinned(METRICS_MAX_ENTRIES, 0);

/// Adds one packet of `bytes` to the counter of (reason, direction).
#[inline(always)]
pub fn account(direction: TrafficDirection, reason: Reason, bytes: u32) {
    let key = MetricsKey::new(reason, direction);
    if bump(&key, bytes) {
        return;
    }
    let first = MetricsValue {
        packets: 1,
        bytes: bytes as u64,
    };
    // Another CPU may create the entry between our lookup and insert; then
    // the insert fails with EEXIST and the entry now exists to be bumped.
    if METRICS.insert(key, first, BPF_NOEXIST as u64).is_err() {
        bump(&key, bytes);
    }
}

#[inline(always)]
fn bump(key: &MetricsKey, bytes: u32) -> bool {
    match METRICS.get_ptr_mut(key) {
        Some(value) => {
            // SAFETY: the pointer comes from a successful lookup in a per-CPU
            // map, so it is valid and only this CPU writes through it (and
            // BPF programs are not preempted on one CPU by another program
            // touching the same TC hook).
            unsafe {
                (*value).packets += 1;
                (*value).bytes += bytes as u64;
            }
            true
        }
        None => false,
    }
}
