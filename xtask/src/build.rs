//! `cargo xtask build`: kernel programs first (the agent embeds them), then
//! the host crates.

use std::process::Command;

use anyhow::{Context, Result};
use clap::Args;

use crate::cmd::{self, step};
use crate::{paths, setup};

#[derive(Args, Default)]
pub struct BuildArgs {
    /// Build the host crates in release mode.
    #[arg(long)]
    pub release: bool,
    /// Skip `cargo xtask setup` (for when it just ran).
    #[arg(long)]
    pub no_setup: bool,
}

pub fn run(args: &BuildArgs) -> Result<()> {
    if !args.no_setup {
        setup::run()?;
    }
    build_datapath()?;
    step("host crates (stable)");
    let mut cargo = cmd::cargo(None);
    cargo.args(["build", "--workspace", "--all-targets"]);
    if args.release {
        cargo.arg("--release");
    }
    cmd::run(&mut cargo)?;
    crate::image::lab_node_images(&paths::host_bin_dir(args.release))
}

/// Builds what the lab and the benchmarks run: setup, the kernel programs,
/// then every binary of the workspace (agent, CNI plugin, CLI, lab,
/// benchmarks) in release mode, or in debug mode (the build the test suite
/// uses) when `release` is false.
pub fn binaries(release: bool) -> Result<()> {
    setup::run()?;
    build_datapath()?;
    let mut cargo = cmd::cargo(None);
    cargo.args(["build", "--workspace", "--bins"]);
    if release {
        step("host binaries (release)");
        cargo.arg("--release");
    } else {
        step("host binaries (debug)");
    }
    cmd::run(&mut cargo)?;
    crate::image::lab_node_images(&paths::host_bin_dir(release))
}

/// Builds ebpf/datapath for bpfel-unknown-none with nightly and bpf-linker.
pub fn build_datapath() -> Result<()> {
    step("kernel programs (nightly, bpfel-unknown-none)");
    cmd::run(datapath_cargo("build").args(["--release"])).context(
        "building the kernel programs failed; run `cargo xtask setup` if tools are missing",
    )?;
    eprintln!("    object: {}", paths::datapath_object().display());
    Ok(())
}

/// A nightly cargo invocation (`build`, `clippy`, ...) for the kernel crate.
pub fn datapath_cargo(subcommand: &str) -> Command {
    let mut cargo = cmd::cargo(Some("nightly"));
    cargo
        .arg(subcommand)
        .arg("--manifest-path")
        .arg(paths::datapath_manifest())
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(paths::ebpf_target_dir())
        .env(
            "CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER",
            paths::bpf_linker(),
        )
        // BTF lets the kernel and bpftool show the maps' key/value types.
        .env(
            "CARGO_TARGET_BPFEL_UNKNOWN_NONE_RUSTFLAGS",
            "-C debuginfo=2 -C link-arg=--btf -C target-cpu=v3",
        );
    cargo
}
