//! Per-endpoint budget of new conntrack and service NAT entries
//! (`weir_ct_budget`, see `weir_abi::conntrack::CtBudget`): the entries a
//! pod's own packets insert into the shared LRU maps are limited to a rate
//! and a burst, so one pod flooding new flows cannot evict the entries of
//! every other pod on the node (issue 16 item 6).

use aya_ebpf::helpers::generated::bpf_ktime_get_ns;
use aya_ebpf::macros::map;
use aya_ebpf::maps::Array;
use weir_abi::conntrack::CtBudget;

/// One slot per endpoint id (ids are 16-bit).
#[map(name = "weir_ct_budget")]
static BUDGET: Array<CtBudget> = Array::pinned(65_536, 0);

/// Nanoseconds per entry (1 s / rate); 0: no budget. Set by the loader.
#[unsafe(no_mangle)]
static WEIR_CT_NEW_INTERVAL_NS: u64 = 0;

/// How far ahead of now the budget may run: burst × interval. Set by the
/// loader.
#[unsafe(no_mangle)]
static WEIR_CT_NEW_TOLERANCE_NS: u64 = 0;

/// Takes one entry from the budget of `endpoint_id`; false when it is used
/// up. Concurrent takes on several CPUs may both succeed on the last entry
/// (the update is not atomic): the bound is approximate by a few entries.
#[inline(always)]
pub fn take(endpoint_id: u16) -> bool {
    // SAFETY: reading globals of this object; volatile so the loader's
    // values are read instead of the compile-time initialisers.
    let interval = unsafe { core::ptr::read_volatile(&WEIR_CT_NEW_INTERVAL_NS) };
    if interval == 0 {
        return true;
    }
    // SAFETY: as above.
    let tolerance = unsafe { core::ptr::read_volatile(&WEIR_CT_NEW_TOLERANCE_NS) };
    let Some(budget) = BUDGET.get_ptr_mut(endpoint_id as u32) else {
        return true;
    };
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: a pointer into the array from a successful lookup.
    let tat = unsafe { (*budget).tat_ns };
    let start = if tat > now { tat } else { now };
    let next = start + interval;
    if next - now > tolerance {
        return false;
    }
    // SAFETY: as above; a racing CPU's write may be lost (see above).
    unsafe { (*budget).tat_ns = next };
    true
}
