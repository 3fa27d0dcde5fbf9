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

/// Prints a figure a test measured (`fault kill: 100 connections, 0 broken,
/// ...`) and, when `WEIR_TEST_FIGURES` names a file, appends it there, so
/// that `cargo xtask test` lists every suite's figures under its summary
/// (the harness shows a passing test's output only with `--nocapture`).
#[macro_export]
macro_rules! figure {
    ($($arg:tt)*) => {
        $crate::record_figure(&format!($($arg)*))
    };
}

/// See [`figure!`].
pub fn record_figure(line: &str) {
    use std::io::Write;
    println!("{line}");
    let Some(path) = std::env::var_os("WEIR_TEST_FIGURES") else {
        return;
    };
    // One write of a whole line with O_APPEND: suites running at once do
    // not interleave within a line.
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(format!("{line}\n").as_bytes()));
    if let Err(error) = written {
        eprintln!(
            "cannot record the figure in {}: {error}",
            path.to_string_lossy()
        );
    }
}

/// Fails loudly when the suite is not run as root: the datapath suites need
/// the kernel and must never skip silently.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test loads BPF programs and creates network namespaces: run it as root \
         (cargo xtask test does)"
    );
}
