//! The Kubernetes control plane's binaries (kube-apiserver,
//! kube-controller-manager, kube-scheduler) built from Debian bookworm's
//! `kubernetes` source package, plus Debian's kubectl, for the lab.
//!
//! No reachable registry ships these binaries, but the source package is the
//! complete upstream v1.20.2 tree (vendor/ and staging/ included) and builds
//! offline with Debian's Go 1.19 after a few fixes (see `source`). A cold
//! build takes about 8 minutes on 2 cores, so the binaries are
//! cached outside the clone, keyed by the source version and a hash of the
//! recipe: a second clone or CI run on the same machine builds nothing, and
//! changing the recipe builds anew beside the old binaries.
//!
//! The clone reaches its binaries through `target/kube`, a symlink to the
//! cache entry, which weir-lab's `KubeBinaries::locate` finds.

mod build;
mod source;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd::{self, step};
use crate::paths;

/// The Debian source package and its version (bookworm's security update).
pub const SOURCE_PACKAGE: &str = "kubernetes";
pub const SOURCE_VERSION: &str = "1.20.5+really1.20.2-1.1+deb12u1";
/// The upstream release inside it: what `--version` must report.
pub const UPSTREAM_VERSION: &str = "v1.20.2";

/// The programs built from the source package, by their cmd/ directory:
/// the control plane, and kubelet for the lab's real nodes.
pub const COMPONENTS: &[&str] = &[
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
];

/// The upstream e2e suite's programs from the same tree (for `cargo xtask
/// e2e` on the lab's real nodes): its test image's agnhost, built like
/// the components, and the `e2e.test` binary (`go test -c`).
pub const AGNHOST: &str = "agnhost";
pub const E2E_TEST: &str = "e2e.test";

/// Debian's kubectl, unpacked from the `kubernetes-client` binary package of
/// the same source version.
pub const CLIENT_PACKAGE: &str = "kubernetes-client";

/// Bumped by hand when a fix in `source` or `build` changes in a way the
/// recipe below does not show.
const RECIPE_REVISION: u32 = 1;

/// Where the cache lives unless `WEIR_KUBE_CACHE` says otherwise.
const DEFAULT_CACHE: &str = "/var/cache/weir/kube";
const CACHE_ENV: &str = "WEIR_KUBE_CACHE";

/// Builds (or finds in the cache) the control plane's binaries and links
/// them into this clone as `target/kube/bin`.
pub fn ensure() -> Result<()> {
    step(&format!(
        "Kubernetes control plane {UPSTREAM_VERSION} (Debian source {SOURCE_PACKAGE} {SOURCE_VERSION})"
    ));
    let entry = cache_root().join(cache_key());
    let bin = entry.join("bin");
    if verified(&bin).is_err() {
        let _lock = CacheLock::take(&cache_root())?;
        // Another setup may have finished the build while we waited.
        if verified(&bin).is_err() {
            build_entry(&entry)?;
        }
    }
    let versions = verified(&bin)?;
    for line in versions {
        eprintln!("    {line}");
    }
    link_into_clone(&entry)?;
    eprintln!("    {} -> {}", paths::kube_dir().display(), entry.display());
    Ok(())
}

/// The recipe's identity: the source version and everything this module does
/// to it. A change to any of them makes a new cache entry.
fn cache_key() -> String {
    let recipe = format!(
        "revision {RECIPE_REVISION}\n{}\n{}\n{}\n{AGNHOST} {E2E_TEST}",
        source::recipe(),
        build::recipe(),
        COMPONENTS.join(" ")
    );
    format!("{SOURCE_VERSION}-{:016x}", fnv1a(recipe.as_bytes()))
}

/// FNV-1a, 64 bits: a hash that stays the same across Rust releases (std's
/// `DefaultHasher` promises no such thing), so cache keys are stable.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn cache_root() -> PathBuf {
    std::env::var_os(CACHE_ENV).map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from)
}

/// Fetches, fixes and builds into `entry/bin`, which appears only complete
/// and verified (built in `bin.partial`, then renamed).
fn build_entry(entry: &Path) -> Result<()> {
    eprintln!(
        "    not cached: building from source; a cold build takes about 8 minutes on 2 cores \
         (Go's build cache under {} makes a rebuild take seconds)",
        cache_root().display()
    );
    let work = entry.join("work");
    let tree = source::prepare(&work)?;
    let partial = entry.join("bin.partial");
    if partial.exists() {
        fs::remove_dir_all(&partial)?;
    }
    fs::create_dir_all(&partial)?;
    build::components(&tree, &work, &partial)?;
    source::generate_bindata(&work, &tree)?;
    build::e2e_programs(&tree, &work, &partial)?;
    source::unpack_kubectl(&work, &partial)?;
    verified(&partial)?;
    let bin = entry.join("bin");
    if bin.exists() {
        fs::remove_dir_all(&bin)?;
    }
    fs::rename(&partial, &bin)
        .with_context(|| format!("cannot move {} to {}", partial.display(), bin.display()))
}

/// Runs each binary's `--version` and checks it reports the upstream
/// release; returns the lines they printed.
fn verified(bin: &Path) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for name in COMPONENTS {
        let path = bin.join(name);
        let out = cmd::output(Command::new(&path).arg("--version"))
            .with_context(|| format!("{} --version failed", path.display()))?;
        if out != format!("Kubernetes {UPSTREAM_VERSION}") {
            bail!("{} reports {out:?}, not {UPSTREAM_VERSION}", path.display());
        }
        lines.push(format!("{name}: {out}"));
    }
    for program in [AGNHOST, E2E_TEST] {
        let path = bin.join(program);
        cmd::output(Command::new(&path).arg("--help"))
            .with_context(|| format!("{} --help failed", path.display()))?;
        lines.push(format!("{program}: runs"));
    }
    let kubectl = bin.join("kubectl");
    let out = cmd::output(Command::new(&kubectl).args(["version", "--client", "--short"]))
        .with_context(|| format!("{} version --client failed", kubectl.display()))?;
    lines.push(format!("kubectl: {out}"));
    Ok(lines)
}

/// Points `target/kube` at the cache entry (replacing an older link).
fn link_into_clone(entry: &Path) -> Result<()> {
    let link = paths::kube_dir();
    if fs::read_link(&link).ok().as_deref() == Some(entry) {
        return Ok(());
    }
    if let Some(parent) = link.parent() {
        fs::create_dir_all(parent)?;
    }
    if fs::symlink_metadata(&link).is_ok() {
        fs::remove_file(&link).with_context(|| format!("cannot replace {}", link.display()))?;
    }
    symlink(entry, &link).with_context(|| format!("cannot create {}", link.display()))
}

/// An exclusive lock on the cache, so two setups (two clones, or CI beside a
/// developer) do not build the same entry at once. Released on drop.
struct CacheLock {
    _file: fs::File,
}

impl CacheLock {
    fn take(root: &Path) -> Result<CacheLock> {
        use std::os::fd::AsRawFd;
        fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
        let path = root.join("lock");
        let file =
            fs::File::create(&path).with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: flock on a descriptor this function owns; no memory involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            eprintln!(
                "    waiting for another setup building in {}",
                root.display()
            );
            // SAFETY: as above.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
                bail!(
                    "cannot lock {}: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                );
            }
        }
        Ok(CacheLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::{cache_key, fnv1a};

    #[test]
    fn fnv1a_matches_the_reference_values() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn the_cache_key_names_the_source_version_and_is_stable() {
        let key = cache_key();
        assert!(key.starts_with("1.20.5+really1.20.2-1.1+deb12u1-"), "{key}");
        assert_eq!(key, cache_key());
    }
}
