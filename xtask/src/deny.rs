//! `cargo deny` over both workspaces (the host crates and the kernel crate),
//! with the root deny.toml.
//!
//! Licenses, bans and sources need every crate of the lock file, for every
//! platform (cargo-deny reads their manifests offline): `cargo fetch` gets
//! the ones a Linux build never downloads (Windows and macOS
//! dependencies) from the registry first. Advisories need the RustSec database, a git clone that `cargo-deny fetch`
//! makes; the suite never fetches it (the machines that run it may have no
//! network) and checks advisories only where a clone exists.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;

use crate::{cmd, paths};

/// licenses, bans and sources, for the host workspace and the kernel crate.
pub fn check() -> Result<()> {
    cmd::run(cmd::cargo(None).args(["fetch", "--locked"]))?;
    cmd::run(
        cmd::cargo(Some("nightly"))
            .args(["fetch", "--locked", "--manifest-path"])
            .arg(paths::datapath_manifest()),
    )?;
    cmd::run(&mut deny_check(None, &["licenses", "bans", "sources"]))?;
    cmd::run(
        deny_check(
            Some(paths::datapath_manifest()),
            &["licenses", "bans", "sources"],
        )
        // deny.toml allows the licenses (and per-crate exceptions) of the
        // host graph; the kernel crate's smaller graph uses only some.
        .args([
            "--allow",
            "license-not-encountered",
            "--allow",
            "license-exception-not-encountered",
        ]),
    )
}

/// Advisories from the local database, which `--offline` keeps from being
/// updated.
pub fn check_advisories() -> Result<()> {
    for manifest in [None, Some(paths::datapath_manifest())] {
        cmd::run(&mut deny_check(manifest, &["advisories"]))?;
    }
    Ok(())
}

/// Where cargo-deny keeps advisory databases (its default `db-path`), if
/// one has been fetched there.
pub fn advisory_db() -> Option<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))?;
    let dbs = cargo_home.join("advisory-dbs");
    let fetched = std::fs::read_dir(&dbs)
        .ok()?
        .filter_map(Result::ok)
        .any(|entry| entry.path().is_dir());
    fetched.then_some(dbs)
}

/// `cargo deny check <checks>` for the workspace of `manifest` (the root
/// one by default), always with the root deny.toml and without network
/// access.
fn deny_check(manifest: Option<PathBuf>, checks: &[&str]) -> Command {
    let mut cmd = Command::new(paths::cargo_deny());
    cmd.arg("--offline")
        .arg("--config")
        .arg(paths::root().join("deny.toml"))
        .arg("--manifest-path")
        .arg(manifest.unwrap_or_else(|| paths::root().join("Cargo.toml")))
        .arg("check")
        // Inclusion graphs make each duplicate-version warning dozens of
        // lines; `cargo tree -i <crate>` shows them when needed.
        .arg("--hide-inclusion-graph")
        .args(checks);
    cmd
}
