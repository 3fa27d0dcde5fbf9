//! Names unique to this test process, so parallel runs never collide.
//!
//! Every object a test creates is named `wt<pid>x<n>...` (network
//! namespaces, links, bpffs directories); `cargo xtask test` sweeps objects
//! whose pid no longer runs, so a crashed run leaves nothing behind for long.

use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The prefix of everything this process creates.
pub fn run_prefix() -> String {
    format!("wt{}x", std::process::id())
}

/// A fresh name: `wt<pid>x<n>`. At most 13 characters for pids up to
/// 4194304 and n < 1000, leaving room under the 15-byte interface name limit
/// for a one- or two-letter suffix.
pub fn unique() -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{}{n}", run_prefix())
}
