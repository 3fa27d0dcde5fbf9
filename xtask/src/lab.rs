//! `cargo xtask lab ...`: builds the workspace's binaries (release unless
//! `--debug`), then runs `weir-lab` (from the weir-lab crate) with the given
//! arguments. `lab up` without `--empty` is the main job: a 2-node lab, the
//! example workloads, and the matrix.

use std::path::Path;
use std::process::Command;

use anyhow::Result;
use clap::Args;

use crate::cmd::{self, step};
use crate::{build, paths};

#[derive(Args)]
pub struct LabArgs {
    /// Arguments for weir-lab (up [--manifest-dir], down, apply -f,
    /// delete -f, status, exec, probe, matrix, restart-agent, kubeconfig,
    /// kubectl -- ARGS; see `cargo xtask lab -- --help`), plus
    /// `--empty` (`up` without the example tour) and `--debug` (build and
    /// run the debug binaries, as the test suite does, instead of release).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

const EXAMPLES: &str = "examples/lab/workloads.yaml";
const EXAMPLE_POLICIES: &str = "examples/lab/policies.yaml";
const EXAMPLE_SERVICES: &str = "examples/lab/services.yaml";

pub fn run(args: &LabArgs) -> Result<()> {
    let mut lab_args = args.args.clone();
    let empty = take_flag(&mut lab_args, "--empty");
    let debug = take_flag(&mut lab_args, "--debug");
    // A user's lab runs what a user would deploy: release binaries.
    build::binaries(!debug)?;
    let weir_lab = paths::host_bin_dir(!debug).join("weir-lab");
    step(&format!("weir-lab {}", lab_args.join(" ")));
    cmd::run_result(Command::new(&weir_lab).args(&lab_args))?;
    if subcommand(&lab_args) == Some("up") && !empty {
        tour(&weir_lab, &name_args(&lab_args), wants_json(&lab_args))?;
    }
    Ok(())
}

/// The example workloads, policies and services applied and shown. With
/// `-o json` its output goes to stderr: stdout then holds only the JSON
/// of `up`.
fn tour(weir_lab: &Path, name: &[String], json: bool) -> Result<()> {
    let show = |cmd: &mut Command| {
        if json {
            cmd::run(cmd)
        } else {
            cmd::run_result(cmd)
        }
    };
    step(&format!("applying {EXAMPLES}"));
    show(
        Command::new(weir_lab)
            .args(name)
            .args(["apply", "-f"])
            .arg(paths::root().join(EXAMPLES)),
    )?;
    step("connectivity matrix (every pod to every pod), no policy yet");
    show(Command::new(weir_lab).args(name).args([
        "matrix",
        "--ports",
        "80,81",
        "--protocols",
        "tcp,udp",
    ]))?;
    step(&format!("applying {EXAMPLE_POLICIES}"));
    show(
        Command::new(weir_lab)
            .args(name)
            .args(["apply", "-f"])
            .arg(paths::root().join(EXAMPLE_POLICIES)),
    )?;
    // The agents pick policies up as the files change (a few ms); the
    // pause leaves a margin on a loaded machine.
    std::thread::sleep(std::time::Duration::from_millis(500));
    step("connectivity matrix with the policies");
    show(Command::new(weir_lab).args(name).args([
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
        let mut trace = Command::new(weir_lab);
        trace
            .args(name)
            .args(["weir", "n1", "--", "policy", "trace", "--src", src])
            .args(["--dst", dst, "--port", "80/tcp"]);
        if json {
            trace.stdout(std::io::stderr());
        }
        // A denied trace exits non-zero; here that is the point.
        let _ = trace.status();
    }
    step(&format!("applying {EXAMPLE_SERVICES}"));
    show(
        Command::new(weir_lab)
            .args(name)
            .args(["apply", "-f"])
            .arg(paths::root().join(EXAMPLE_SERVICES)),
    )?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    step("services programmed on node n1 (weir service list)");
    show(
        Command::new(weir_lab)
            .args(name)
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
        show(
            Command::new(weir_lab)
                .args(name)
                .args(["client", from, target, "--count", count]),
        )?;
    }
    let hint = "\nThe lab stays up: `cargo xtask lab status`, \
         `cargo xtask lab probe shop/frontend billing/ledger 80/tcp`, \
         `cargo xtask lab weir n1 -- policy get`, \
         `cargo xtask lab client shop/frontend tcp:10.96.0.10:80 --count 50`, \
         `cargo xtask lab weir n1 -- bpf lb list`, `cargo xtask lab down`.";
    if json {
        eprintln!("{hint}");
    } else {
        println!("{hint}");
    }
    Ok(())
}

/// The arguments before `--` (after it they belong to a command weir-lab
/// runs, such as `exec` or `weir`).
fn own(args: &[String]) -> &[String] {
    &args[..args.iter().position(|a| a == "--").unwrap_or(args.len())]
}

/// Removes `flag` (an xtask option, not weir-lab's) from `args`; true if it
/// was there.
fn take_flag(args: &mut Vec<String>, flag: &str) -> bool {
    let mut found = false;
    while let Some(at) = own(args).iter().position(|a| a == flag) {
        args.remove(at);
        found = true;
    }
    found
}

/// weir-lab's subcommand: the first argument that is neither an option nor
/// the value of one of its global options (`--name X`, `-o json`).
fn subcommand(args: &[String]) -> Option<&str> {
    let mut args = own(args).iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--name" | "-o" | "--output" => {
                args.next();
            }
            option if option.starts_with('-') => {}
            command => return Some(command),
        }
    }
    None
}

/// True if the user asked weir-lab for JSON (`-o json`, `--output json`,
/// `-ojson`, `--output=json`).
fn wants_json(args: &[String]) -> bool {
    let args = own(args);
    args.iter().enumerate().any(|(i, arg)| match arg.as_str() {
        "-o" | "--output" => args.get(i + 1).is_some_and(|v| v == "json"),
        other => other == "-ojson" || other == "--output=json",
    })
}

/// `--name X` from the user's arguments, to pass on to follow-up calls.
fn name_args(args: &[String]) -> Vec<String> {
    args.iter()
        .position(|a| a == "--name")
        .and_then(|i| args.get(i + 1))
        .map(|n| vec!["--name".to_string(), n.clone()])
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::{name_args, subcommand, take_flag, wants_json};

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn finds_the_subcommand_after_global_options() {
        assert_eq!(subcommand(&args("up --nodes 3")), Some("up"));
        assert_eq!(subcommand(&args("--name x -o json up")), Some("up"));
        assert_eq!(subcommand(&args("--output=json status")), Some("status"));
        assert_eq!(subcommand(&args("-o json")), None);
    }

    #[test]
    fn sees_json_output_in_every_spelling() {
        assert!(wants_json(&args("status -o json")));
        assert!(wants_json(&args("--output json status")));
        assert!(wants_json(&args("status -ojson")));
        assert!(wants_json(&args("status --output=json")));
        assert!(!wants_json(&args("status -o text")));
        assert!(!wants_json(&args("exec x/a -- echo json")));
        assert!(!wants_json(&args("exec x/a -- ls -o json")));
    }

    #[test]
    fn takes_xtask_flags_out_of_weir_labs_arguments() {
        let mut line = args("up --debug --nodes 2 --empty");
        assert!(take_flag(&mut line, "--debug"));
        assert!(take_flag(&mut line, "--empty"));
        assert!(!take_flag(&mut line, "--debug"));
        assert_eq!(line, args("up --nodes 2"));
        let mut line = args("weir n1 -- policy get --debug");
        assert!(!take_flag(&mut line, "--debug"));
        assert_eq!(line, args("weir n1 -- policy get --debug"));
        assert_eq!(name_args(&args("--name x up")), args("--name x"));
    }
}
