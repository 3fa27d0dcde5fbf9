//! `cargo xtask e2e`: the upstream Kubernetes e2e suite against Weir. Builds
//! what a lab needs (release binaries unless `--debug`), brings up a lab
//! with real nodes (kubelet, containerd, runc; `weir-lab up --real-nodes`),
//! runs `weir-lab e2e` with the chosen specs, and takes the lab down
//! (unless `--keep`). The JUnit report and the suite's log stay in
//! `target/e2e/<lab>/`.

use std::process::Command;

use anyhow::Result;
use clap::Args;

use crate::cmd::{self, step};
use crate::{build, paths};

#[derive(Args)]
pub struct E2eArgs {
    /// The specs to run (ginkgo focus, a regular expression). The default:
    /// every NetworkPolicy spec and the Services conformance specs.
    #[arg(
        long,
        default_value = r"\[sig-network\] NetworkPolicy|\[sig-network\] Services.*\[Conformance\]"
    )]
    pub focus: String,
    /// The specs to leave out (ginkgo skip): SCTP (the lab's kernel
    /// module may be missing) and what disrupts the cluster.
    #[arg(long, default_value = r"SCTP|\[Disruptive\]")]
    pub skip: String,
    /// Lab nodes (at least two, so cross-node paths are covered).
    #[arg(long, default_value_t = 2)]
    pub nodes: u32,
    /// Run the debug binaries (as the test suite does) instead of release.
    #[arg(long)]
    pub debug: bool,
    /// Leave the lab up afterwards (`cargo xtask lab --name <lab> down`
    /// removes it).
    #[arg(long)]
    pub keep: bool,
}

pub fn run(args: &E2eArgs) -> Result<()> {
    build::binaries(!args.debug)?;
    let weir_lab = paths::host_bin_dir(!args.debug).join("weir-lab");
    let name = format!("e2e{}", std::process::id());
    let report_dir = paths::root().join("target/e2e").join(&name);
    step(&format!("lab {name} with {} real nodes", args.nodes));
    cmd::run(Command::new(&weir_lab).args([
        "--name",
        &name,
        "up",
        "--real-nodes",
        "--nodes",
        &args.nodes.to_string(),
    ]))?;
    step(&format!(
        "e2e.test --ginkgo.focus '{}' --ginkgo.skip '{}' (report in {})",
        args.focus,
        args.skip,
        report_dir.display()
    ));
    let ran = cmd::run_result(
        Command::new(&weir_lab)
            .args(["--name", &name, "e2e", "--focus", &args.focus])
            .args(["--skip", &args.skip, "--report-dir"])
            .arg(&report_dir),
    );
    if args.keep {
        step(&format!(
            "lab {name} kept: `cargo xtask lab --name {name} down` removes it"
        ));
    } else {
        step(&format!("lab {name} down"));
        cmd::run(Command::new(&weir_lab).args(["--name", &name, "down"]))?;
    }
    ran
}
