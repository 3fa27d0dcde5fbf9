//! Running external commands with their command line printed first and a
//! failure that says what failed.
//!
//! Progress (step headings, command lines, what build tools print) goes to
//! stderr; stdout carries only what the user asked for (weir-lab's and
//! weir-bench's output, the test summary), so `cargo xtask lab status -o
//! json | jq` works.

use std::ffi::OsStr;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Prints a step heading (on stderr), so long workflows show where they are.
pub fn step(what: &str) {
    eprintln!("==> {what}");
}

/// Runs a tool whose output is progress (a build, an installer, a check):
/// its stdout goes to our stderr. Errors if it cannot start or exits
/// non-zero.
pub fn run(cmd: &mut Command) -> Result<()> {
    run_result(cmd.stdout(std::io::stderr()))
}

/// Runs a program whose stdout is the result the user asked for (weir-lab,
/// weir-bench), with inherited stdio. Errors if it cannot start or exits
/// non-zero.
pub fn run_result(cmd: &mut Command) -> Result<()> {
    eprintln!("    $ {}", display(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", display(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(cmd));
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its trimmed stdout, or None if it fails.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// True if `program` is found on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// A cargo command for the toolchain `channel` (e.g. "nightly"), with the
/// variables of the stable cargo that runs xtask removed so they cannot leak
/// into the other toolchain's build.
///
/// Every workflow builds the kernel programs before the agent, so an agent
/// without them is an error here, not the stub that a plain `cargo check`
/// of a fresh clone gets (see agent/build.rs).
pub fn cargo(channel: Option<&str>) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.env("WEIR_REQUIRE_DATAPATH", "1");
    if let Some(channel) = channel {
        cmd.arg(format!("+{channel}"));
    }
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

pub fn display(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    line
}

fn quote(arg: &OsStr) -> String {
    let s = arg.to_string_lossy();
    if s.is_empty() || s.contains([' ', '"', '\'']) {
        format!("'{s}'")
    } else {
        s.into_owned()
    }
}
