//! Weir's test kit: what the integration suites, the lab (weir-lab) and the
//! benchmarks (weir-bench) share.
//!
//! Everything here creates real kernel objects (BPF maps and programs,
//! network namespaces, veth pairs) under names unique to this process, and
//! removes them when the guard that made them is dropped.

pub mod cgroup;
pub mod datapath;
pub mod local_agent;
pub mod names;
pub mod netns;
pub mod packets;
pub mod traffic;

/// Fails loudly when the suite is not run as root: the datapath suites need
/// the kernel and must never skip silently.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test loads BPF programs and creates network namespaces: run it as root \
         (cargo xtask test does)"
    );
}
