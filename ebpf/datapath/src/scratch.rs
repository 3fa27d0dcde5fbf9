//! Per-CPU scratch space: the state of the packet a TC program is working
//! on ([`Report`]: the parsed flow and what the pod path learned about
//! it), kept out of the 512-byte BPF stack so the stages that follow
//! (service NAT, the pod path, redirects) have frames of their own.
//!
//! One slot per CPU is enough: a TC program runs to completion on its CPU
//! with bottom halves disabled, so no other TC program of this object
//! starts on that CPU before it returns. The cgroup programs run in process
//! context and may be preempted, so they never use it (they keep their
//! small report on the stack).

use aya_ebpf::macros::map;
use aya_ebpf::maps::PerCpuArray;

use crate::events::Report;

#[map(name = "weir_scratch")]
static SCRATCH: PerCpuArray<Report> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's report, reset for a new packet. `None` cannot happen (slot 0
/// of a one-entry array always exists); the verifier wants the check.
#[inline(always)]
pub fn report() -> Option<&'static mut Report> {
    let slot = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: slot 0 of this CPU's copy, from a successful lookup; only
    // the TC program running on this CPU uses it (see the module's text),
    // and only one reference to it is made per program run.
    let report = unsafe { &mut *slot };
    *report = Report::new();
    Some(report)
}
