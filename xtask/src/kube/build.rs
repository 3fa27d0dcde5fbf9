//! Building the control plane's programs from the fixed tree with Debian's
//! Go 1.19, the way the tree's own scripts (hack/lib/golang.sh) do:
//! GOPATH mode, static binaries, version strings set at link time.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::{source, COMPONENTS, UPSTREAM_VERSION};
use crate::cmd;

/// Debian's golang-1.19-go.
pub(super) const GO: &str = "/usr/lib/go-1.19/bin/go";

/// The vendored packages that carry version strings. Without these the
/// binaries (and `/version`) report a master version.
const VERSION_PACKAGES: &[&str] = &[
    "k8s.io/kubernetes/vendor/k8s.io/component-base/version",
    "k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version",
];

/// Symbols and DWARF stripped (as the tree's release builds do), source
/// paths trimmed so the Go cache serves any work directory.
const BUILD_FLAGS: &[&str] = &["-trimpath"];
const STRIP_LDFLAGS: &str = "-s -w";

/// How many compiled packages between two progress lines.
const PROGRESS_EVERY: usize = 200;

/// What this module does, for the cache key.
pub(super) fn recipe() -> String {
    format!(
        "{GO} GO111MODULE=off CGO_ENABLED=0 {BUILD_FLAGS:?} -ldflags '{}'",
        ldflags()
    )
}

fn ldflags() -> String {
    let (major, minor) = major_minor();
    let mut flags = STRIP_LDFLAGS.to_string();
    for package in VERSION_PACKAGES {
        for (var, value) in [
            ("gitVersion", UPSTREAM_VERSION),
            ("gitMajor", major),
            ("gitMinor", minor),
            // What upstream's scripts say for a build from a release tarball.
            ("gitTreeState", "archive"),
        ] {
            flags.push_str(&format!(" -X {package}.{var}={value}"));
        }
    }
    flags
}

/// "1" and "20" from "v1.20.2".
fn major_minor() -> (&'static str, &'static str) {
    let mut parts = UPSTREAM_VERSION.trim_start_matches('v').split('.');
    (parts.next().unwrap_or(""), parts.next().unwrap_or(""))
}

/// A `go` command in GOPATH mode (see [`go_env`]).
pub(super) fn go(work: &Path, in_gopath: &Path) -> Command {
    let mut go = Command::new(GO);
    go_env(&mut go, work, in_gopath);
    go
}

/// Runs `cmd` (go, or a generator built with it) in the tree as seen
/// through the GOPATH symlink, in GOPATH mode, offline, with the shared
/// build cache and Debian's Go first on PATH (the generators' package
/// loader runs `go` to find GOROOT). The kernel gives a child the resolved
/// directory; Go takes the logical one from $PWD, and only under the GOPATH
/// does `vendor/` count.
pub(super) fn go_env(cmd: &mut Command, work: &Path, in_gopath: &Path) {
    let go_bin = Path::new(GO).parent().unwrap_or(Path::new("/usr/bin"));
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![go_bin.to_path_buf()];
    dirs.extend(std::env::split_paths(&path));
    cmd.current_dir(in_gopath)
        .env("PWD", in_gopath)
        .env("PATH", std::env::join_paths(dirs).unwrap_or(path))
        .env("GOPATH", source::gopath(work))
        .env("GO111MODULE", "off")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "")
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", super::cache_root().join("go-build"));
}

/// Builds the e2e suite's programs into `out`: agnhost (`go build`) and
/// `e2e.test` (`go test -c`, version strings as the components have them);
/// they share most packages with the components, so a warm cache makes
/// this a few minutes.
pub(super) fn e2e_programs(in_gopath: &Path, work: &Path, out: &Path) -> Result<()> {
    use super::{AGNHOST, E2E_TEST};
    cmd::step(&format!(
        "building {AGNHOST} and {E2E_TEST} (the upstream e2e suite); cold: about 10 min on 2 cores"
    ));
    let started = Instant::now();
    cmd::run(
        go(work, in_gopath)
            .arg("build")
            .args(BUILD_FLAGS)
            .arg("-ldflags")
            .arg(STRIP_LDFLAGS)
            .arg("-o")
            .arg(out.join(AGNHOST))
            .arg("./test/images/agnhost"),
    )?;
    cmd::run(
        go(work, in_gopath)
            .args(["test", "-c"])
            .args(BUILD_FLAGS)
            .arg("-ldflags")
            .arg(ldflags())
            .arg("-o")
            .arg(out.join(E2E_TEST))
            .arg("./test/e2e"),
    )?;
    eprintln!("    built in {} s", started.elapsed().as_secs());
    Ok(())
}

/// Builds every component into `out` with one `go build` (the packages they
/// share compile once), printing a line every few hundred packages.
pub(super) fn components(in_gopath: &Path, work: &Path, out: &Path) -> Result<()> {
    cmd::step(&format!(
        "building {} (CGO_ENABLED=0, GOPATH mode); cold: about 7 min on 2 cores",
        COMPONENTS.join(", ")
    ));
    let mut go = go(work, in_gopath);
    go.args(["build", "-v"])
        .args(BUILD_FLAGS)
        .arg("-ldflags")
        .arg(ldflags())
        .arg("-o")
        .arg(format!("{}/", out.display()))
        .args(COMPONENTS.iter().map(|c| format!("./cmd/{c}")))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    eprintln!("    $ {}", cmd::display(&go));
    let started = Instant::now();
    let mut child = go.spawn().context("cannot start go build")?;
    let stderr = child.stderr.take().context("go build has no stderr")?;
    // `go build -v` names each package as it compiles it; errors follow the
    // same stream, so the last lines are kept to show on failure.
    let mut last = VecDeque::new();
    let mut packages = 0;
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        if !line.starts_with(' ') && !line.starts_with('#') && !line.contains(": ") {
            packages += 1;
            if packages % PROGRESS_EVERY == 0 {
                eprintln!(
                    "    {packages} packages compiled ({} s)",
                    started.elapsed().as_secs()
                );
            }
        }
        if last.len() == 40 {
            last.pop_front();
        }
        last.push_back(line);
    }
    let status = child.wait()?;
    if !status.success() {
        let tail: Vec<String> = last.into();
        bail!("go build failed ({status}):\n{}", tail.join("\n"));
    }
    eprintln!(
        "    built in {} s ({packages} packages compiled)",
        started.elapsed().as_secs()
    );
    Ok(())
}
