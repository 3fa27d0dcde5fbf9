//! `cargo xtask lab ...`: builds everything, then runs `weir-lab` (from the
//! weir-tests crate) with the given arguments. `lab up` without `--empty`
//! is the main job: a 2-node lab, the example workloads, and the matrix.

use std::process::Command;

use anyhow::Result;
use clap::Args;

use crate::cmd::{self, step};
use crate::{build, paths};

#[derive(Args)]
pub struct LabArgs {
    /// Arguments for weir-lab (up, down, apply -f, delete -f, status, exec,
    /// probe, matrix, restart-agent; see `cargo xtask lab -- --help`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

const EXAMPLES: &str = "examples/lab/workloads.yaml";
const EXAMPLE_POLICIES: &str = "examples/lab/policies.yaml";
const EXAMPLE_SERVICES: &str = "examples/lab/services.yaml";

pub fn run(args: &LabArgs) -> Result<()> {
    build::run(&build::BuildArgs::default())?;
    let weir_lab = paths::root().join("target/debug/weir-lab");
    let mut lab_args = args.args.clone();
    let is_up = lab_args.first().map(String::as_str) == Some("up");
    let empty = lab_args.iter().any(|a| a == "--empty");
    lab_args.retain(|a| a != "--empty");
    step(&format!("weir-lab {}", lab_args.join(" ")));
    cmd::run(Command::new(&weir_lab).args(&lab_args))?;
    if is_up && !empty {
        let name: Vec<String> = name_args(&lab_args);
        step(&format!("applying {EXAMPLES}"));
        cmd::run(
            Command::new(&weir_lab)
                .args(&name)
                .args(["apply", "-f"])
                .arg(paths::root().join(EXAMPLES)),
        )?;
        step("connectivity matrix (every pod to every pod), no policy yet");
        cmd::run(Command::new(&weir_lab).args(&name).args([
            "matrix",
            "--ports",
            "80,81",
            "--protocols",
            "tcp,udp",
        ]))?;
        step(&format!("applying {EXAMPLE_POLICIES}"));
        cmd::run(
            Command::new(&weir_lab)
                .args(&name)
                .args(["apply", "-f"])
                .arg(paths::root().join(EXAMPLE_POLICIES)),
        )?;
        // The agents pick policies up within a reconcile interval (100 ms).
        std::thread::sleep(std::time::Duration::from_millis(500));
        step("connectivity matrix with the policies");
        cmd::run(Command::new(&weir_lab).args(&name).args([
            "matrix",
            "--ports",
            "80,81",
            "--protocols",
            "tcp",
        ]))?;
        step("why: weir policy trace on node n1");
        for (src, dst) in [
            ("shop/frontend", "billing/ledger"),
            ("shop/cart", "billing/ledger"),
            ("shop/cart", "billing/invoices"),
        ] {
            // A denied trace exits non-zero; here that is the point.
            let _ = Command::new(&weir_lab)
                .args(&name)
                .args(["weir", "n1", "--", "policy", "trace", "--src", src])
                .args(["--dst", dst, "--port", "80/tcp"])
                .status();
        }
        step(&format!("applying {EXAMPLE_SERVICES}"));
        cmd::run(
            Command::new(&weir_lab)
                .args(&name)
                .args(["apply", "-f"])
                .arg(paths::root().join(EXAMPLE_SERVICES)),
        )?;
        std::thread::sleep(std::time::Duration::from_millis(500));
        step("services programmed on node n1 (weir service list)");
        cmd::run(
            Command::new(&weir_lab)
                .args(&name)
                .args(["weir", "n1", "--", "service", "list"]),
        )?;
        for (what, from, target, count) in [
            (
                "shop/web from a pod (socket LB: both backends answer)",
                "shop/frontend",
                "tcp:10.96.0.10:80",
                "20",
            ),
            (
                "shop/web's NodePort from outside the cluster (per-packet NAT on n1)",
                "world",
                "tcp:10.77.0.11:30080",
                "20",
            ),
            (
                "billing/ledger with session affinity (one backend per client)",
                "shop/frontend",
                "tcp:10.96.0.20:80",
                "10",
            ),
            (
                "billing/archive has no backends: refused at once",
                "shop/frontend",
                "tcp:10.96.0.30:80",
                "3",
            ),
        ] {
            step(what);
            cmd::run(
                Command::new(&weir_lab)
                    .args(&name)
                    .args(["client", from, target, "--count", count]),
            )?;
        }
        println!(
            "\nThe lab stays up: `cargo xtask lab status`, \
             `cargo xtask lab probe shop/frontend billing/ledger 80/tcp`, \
             `cargo xtask lab weir n1 -- policy get`, \
             `cargo xtask lab client shop/frontend tcp:10.96.0.10:80 --count 50`, \
             `cargo xtask lab weir n1 -- bpf lb list`, `cargo xtask lab down`."
        );
    }
    Ok(())
}

/// `--name X` from the user's arguments, to pass on to follow-up calls.
fn name_args(args: &[String]) -> Vec<String> {
    args.iter()
        .position(|a| a == "--name")
        .and_then(|i| args.get(i + 1))
        .map(|n| vec!["--name".to_string(), n.clone()])
        .unwrap_or_default()
}
