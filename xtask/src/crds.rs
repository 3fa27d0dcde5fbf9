//! `cargo xtask crds`: writes Weir's CRDs as YAML under `deploy/crds/`
//! from their Rust types. The generator is weir-crds' own binary, run
//! through cargo, so xtask stays free of the project's crates (and of
//! kube's compile time).

use anyhow::Result;

use crate::{cmd, paths};

#[derive(clap::Args)]
pub struct CrdsArgs {
    /// Write nothing; fail when deploy/crds differs from the types.
    #[arg(long)]
    check: bool,
}

pub fn run(args: &CrdsArgs) -> Result<()> {
    cmd::step("CRDs: agent/crds (weir-crds) -> deploy/crds");
    let mut cargo = cmd::cargo(None);
    cargo.current_dir(paths::root()).args([
        "run",
        "--quiet",
        "-p",
        "weir-crds",
        "--bin",
        "weir-crds",
        "--",
    ]);
    if args.check {
        cargo.arg("--check");
    }
    cmd::run(cargo.arg(paths::root().join("deploy/crds")))
}
