//! `cargo xtask`: the privileged and multi-toolchain workflows of Weir.
//!
//! Kept free of the project's own crates so that it builds on a fresh clone
//! before anything else exists (the agent embeds the kernel object, which
//! `cargo xtask build` produces first).

mod bench;
mod build;
mod cmd;
mod crds;
mod deny;
mod e2e;
mod fuzz;
mod image;
mod kube;
mod lab;
#[cfg(test)]
mod lint_mirror;
mod packages;
mod paths;
mod setup;
mod sweep;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Weir developer workflows")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and testing need: nightly rust-src, bpf-linker
    /// and cargo-deny (under target/), Debian packages, a mounted bpffs, and
    /// the Kubernetes control plane's binaries (built once per machine into
    /// /var/cache/weir/kube, linked as target/kube). Idempotent.
    Setup,
    /// Build the kernel programs (nightly, bpfel) and then the host crates.
    Build(build::BuildArgs),
    /// Setup, build, format and lint checks, then every test suite (needs root).
    Test(test::TestArgs),
    /// Run the fuzz targets of fuzz/ under libFuzzer (cargo-fuzz, nightly):
    /// each for `--time` seconds, then executions, findings and corpus size
    /// per target. `datapath` loads the kernel programs (needs root).
    Fuzz(fuzz::FuzzArgs),
    /// Benchmarks that print figures.
    Bench(bench::BenchArgs),
    /// The lab cluster: `lab up` (2 nodes, example workloads, matrix),
    /// `lab down`, `lab apply -f`, `lab status`, `lab matrix`, ...
    Lab(lab::LabArgs),
    /// The upstream Kubernetes e2e suite (v1.20.2) against a lab with real
    /// nodes (kubelet, containerd, runc): NetworkPolicy and Services
    /// conformance specs by default; prints each spec's outcome.
    E2e(e2e::E2eArgs),
    /// Write Weir's CRDs (agent/crds) as YAML under deploy/crds/;
    /// `--check` fails when the files are out of date instead.
    Crds(crds::CrdsArgs),
    /// OCI image archives of weir-agent (with weir-cni and weir),
    /// weir-operator and weir-relay under target/images, without a
    /// container engine; `--debug` packages the debug build.
    Image(image::ImageArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::Build(args) => build::run(&args),
        Command::Test(args) => test::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Lab(args) => lab::run(&args),
        Command::Crds(args) => crds::run(&args),
        Command::E2e(args) => e2e::run(&args),
        Command::Image(args) => image::run(&args),
    }
}
