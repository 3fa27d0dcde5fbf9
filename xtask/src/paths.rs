//! Where things live in the repository.

use std::path::PathBuf;

/// The workspace root (the directory holding the top-level Cargo.toml).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Host tools built by setup (bpf-linker), kept under target/ so a clean
/// clone rebuilds them and nothing outside the repository is assumed.
pub fn tools_dir() -> PathBuf {
    root().join("target/tools")
}

pub fn bpf_linker() -> PathBuf {
    tools_dir().join("bin/bpf-linker")
}

/// cargo-fuzz, for `cargo xtask fuzz` (see fuzz.rs).
pub fn cargo_fuzz() -> PathBuf {
    tools_dir().join("bin/cargo-fuzz")
}

pub fn cargo_deny() -> PathBuf {
    tools_dir().join("bin/cargo-deny")
}

/// In setup's Python venv; the deploy_manifests suite finds it there too.
pub fn kubernetes_validate() -> PathBuf {
    tools_dir().join("venv/bin/kubernetes-validate")
}

/// A prefix whose lib/ points at nightly's own libLLVM, for building bpf-linker.
pub fn llvm_prefix() -> PathBuf {
    root().join("target/llvm-prefix")
}

/// The clone's link to its Kubernetes binaries in the machine-wide cache
/// (see kube.rs); weir-lab's `KubeBinaries::locate` finds `bin/` below it.
pub fn kube_dir() -> PathBuf {
    root().join("target/kube")
}

pub fn datapath_manifest() -> PathBuf {
    root().join("ebpf/datapath/Cargo.toml")
}

/// Cargo target directory of the kernel crate.
pub fn ebpf_target_dir() -> PathBuf {
    root().join("target/ebpf")
}

/// The datapath object the agent embeds (see agent/build.rs).
pub fn datapath_object() -> PathBuf {
    ebpf_target_dir().join("bpfel-unknown-none/release/weir-datapath")
}

/// Where cargo puts the workspace's binaries of a profile.
pub fn host_bin_dir(release: bool) -> PathBuf {
    root().join(if release {
        "target/release"
    } else {
        "target/debug"
    })
}

/// Where the test suites record their figures for the summary
/// (`weir_tests::figure!`), remade by each `cargo xtask test`.
pub fn test_figures() -> PathBuf {
    root().join("target/test-figures.txt")
}
