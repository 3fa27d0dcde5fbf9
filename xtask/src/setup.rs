//! `cargo xtask setup`: everything a fresh machine lacks to build and test
//! Weir. Each step checks first and does nothing when already done.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

use crate::cmd::{self, step};
use crate::{kube, paths};

/// bpf-linker release built by setup; it must use the same LLVM major as
/// nightly's rustc, which is why it is built against nightly's libLLVM.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// cargo-deny release built by setup: the newest that builds with this
/// workspace's stable rustc (it needs 1.88).
const CARGO_DENY_VERSION: &str = "0.20.2";

/// cargo-fuzz release built by setup, for `cargo xtask fuzz` (it drives
/// libFuzzer on nightly; installed with the stable toolchain).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// kubernetes-validate (PyPI): Kubernetes' OpenAPI schemas of 1.25 to 1.37,
/// against which the deploy/ manifests are checked; in a venv under target/.
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

/// Offline source for nightly's rust-src: an archive of the component
/// (containing `library/` and `src/`), e.g. shared/toolchain/rust-src-*.tar.xz.
const RUST_SRC_ARCHIVE_ENV: &str = "WEIR_RUST_SRC_ARCHIVE";

/// Debian packages the tests and the lab use, with what proves each is
/// present: a command on PATH, or an absolute file path.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip"),
    ("iproute2", "tc"),
    // protoc, for the gRPC APIs (tonic-prost-build, etcd-client)...
    ("protobuf-compiler", "protoc"),
    // ...and the well-known .proto files etcd-client's API imports.
    (
        "libprotobuf-dev",
        "/usr/include/google/protobuf/descriptor.proto",
    ),
    // ping, for the lab's ICMP probes.
    ("iputils-ping", "ping"),
    // etcd, the kvstore of shared identity/endpoint state in the lab.
    ("etcd-server", "etcd"),
    // iptables, for the kube-proxy iptables peer of the service benchmarks.
    ("iptables", "iptables-restore"),
    // nft and iperf3, for the pod-to-pod benchmark: its nftables peer and
    // TCP throughput (its latency client and server are its own).
    ("nftables", "nft"),
    ("iperf3", "iperf3"),
    // openssl, for the keys the control-plane suite generates (ServiceAccount
    // token signing).
    ("openssl", "openssl"),
    // A static shell for the agent image's CNI install step (cargo xtask
    // image), and containerd with runc, which the image suite imports and
    // runs the images with.
    ("busybox-static", "/bin/busybox"),
    ("containerd", "containerd"),
    ("runc", "runc"),
    // The loopback plugin containerd's CRI runs before the cluster's CNI
    // plugin in every pod sandbox (the lab's real nodes, issue 20).
    ("containernetworking-plugins", "/usr/lib/cni/loopback"),
    // What the upstream e2e suite runs inside its agnhost pods (upstream's
    // image is Alpine with these): netcat-openbsd's `nc -zv -t -w`, curl
    // bash and bind's nslookup and dig, copied with their libraries into
    // the lab's agnhost image.
    ("netcat-openbsd", "/bin/nc.openbsd"),
    ("curl", "curl"),
    ("bash", "bash"),
    ("bind9-dnsutils", "nslookup"),
];

pub fn run() -> Result<()> {
    let sysroot = nightly_sysroot()?;
    ensure_rust_src(&sysroot)?;
    ensure_bpf_linker(&sysroot)?;
    ensure_cargo_deny()?;
    ensure_cargo_fuzz()?;
    ensure_debian_packages()?;
    ensure_bpffs()?;
    ensure_manifest_validator()?;
    kube::ensure()?;
    step("setup complete");
    Ok(())
}

fn nightly_sysroot() -> Result<PathBuf> {
    step("nightly toolchain");
    let version =
        cmd::output(Command::new("rustc").args(["+nightly", "-vV"])).ok_or_else(|| {
            anyhow!(
                "the nightly toolchain is missing (`rustc +nightly -vV` failed): \
             install it with `rustup toolchain install nightly`"
            )
        })?;
    let release = version
        .lines()
        .find_map(|l| l.strip_prefix("release: "))
        .unwrap_or("unknown");
    eprintln!("    rustc {release}");
    let sysroot = cmd::output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .ok_or_else(|| anyhow!("`rustc +nightly --print sysroot` failed"))?;
    Ok(PathBuf::from(sysroot))
}

fn ensure_rust_src(sysroot: &Path) -> Result<()> {
    step("nightly rust-src (needed by -Z build-std=core)");
    let src_root = sysroot.join("lib/rustlib/src/rust");
    if src_root.join("library/core/src/lib.rs").is_file() {
        eprintln!("    present at {}", src_root.display());
        return Ok(());
    }
    if let Some(archive) = std::env::var_os(RUST_SRC_ARCHIVE_ENV) {
        return unpack_rust_src(Path::new(&archive), &src_root);
    }
    cmd::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
    .with_context(|| {
        format!(
            "could not download rust-src; offline, point {RUST_SRC_ARCHIVE_ENV} at an archive \
                 of the component for exactly this nightly (rustc +nightly -vV)"
        )
    })
}

/// Unpacks an offline rust-src archive after checking that it was made for
/// the installed nightly (its file name carries the short commit hash) and,
/// where a SHA256SUMS file sits beside it, that its checksum matches.
fn unpack_rust_src(archive: &Path, src_root: &Path) -> Result<()> {
    let name = archive
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("{RUST_SRC_ARCHIVE_ENV}: not a file path"))?;
    let commit = cmd::output(Command::new("rustc").args(["+nightly", "-vV"]))
        .and_then(|v| {
            v.lines()
                .find_map(|l| l.strip_prefix("commit-hash: ").map(str::to_owned))
        })
        .ok_or_else(|| anyhow!("cannot read nightly's commit hash"))?;
    if !name.contains(&commit[..9.min(commit.len())]) {
        bail!("{name} is not for this nightly (commit {commit}); use the archive made for it");
    }
    let sums = archive.with_file_name("SHA256SUMS");
    if sums.is_file() {
        let dir = archive.parent().unwrap_or(Path::new("."));
        cmd::run(
            Command::new("sha256sum")
                .args(["--check", "--ignore-missing", "SHA256SUMS"])
                .current_dir(dir),
        )
        .context("rust-src archive checksum mismatch")?;
    }
    fs::create_dir_all(src_root)?;
    cmd::run(
        Command::new("tar")
            .arg("-xJf")
            .arg(archive)
            .arg("-C")
            .arg(src_root),
    )
}

fn ensure_bpf_linker(sysroot: &Path) -> Result<()> {
    step(&format!(
        "bpf-linker {BPF_LINKER_VERSION} against nightly's LLVM"
    ));
    let (llvm_lib, llvm_major) = find_nightly_llvm(sysroot)?;
    let linker = paths::bpf_linker();
    let stamp = paths::tools_dir().join("bpf-linker.stamp");
    let wanted_stamp = format!("{BPF_LINKER_VERSION} {}\n", llvm_lib.display());
    let linker_runs = cmd::output(Command::new(&linker).arg("--version")).is_some();
    if linker_runs && fs::read_to_string(&stamp).ok().as_deref() == Some(&wanted_stamp) {
        eprintln!("    present at {}", linker.display());
        return Ok(());
    }

    let prefix_lib = paths::llvm_prefix().join("lib");
    fs::create_dir_all(&prefix_lib)?;
    let soname = llvm_lib.file_name().expect("a library file has a name");
    for link in [Path::new("libLLVM.so"), Path::new(soname)] {
        let link = prefix_lib.join(link);
        let _ = fs::remove_file(&link);
        symlink(&llvm_lib, &link)
            .with_context(|| format!("cannot create symlink {}", link.display()))?;
    }
    eprintln!("    LLVM {llvm_major} from {}", llvm_lib.display());
    cmd::run(
        cmd::cargo(None)
            .args(["install", &format!("bpf-linker@{BPF_LINKER_VERSION}")])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{llvm_major}"),
            ])
            .arg("--root")
            .arg(paths::tools_dir())
            .arg("--force")
            .env("LLVM_PREFIX", paths::llvm_prefix()),
    )
    .context(
        "building bpf-linker failed; it needs nightly's libLLVM (see docs/building.md) \
         and access to crates.io",
    )?;
    fs::write(&stamp, wanted_stamp)?;
    Ok(())
}

fn ensure_cargo_deny() -> Result<()> {
    step(&format!("cargo-deny {CARGO_DENY_VERSION}"));
    let deny = paths::cargo_deny();
    let wanted = format!("cargo-deny {CARGO_DENY_VERSION}");
    if cmd::output(Command::new(&deny).arg("--version")).as_deref() == Some(wanted.as_str()) {
        eprintln!("    present at {}", deny.display());
        return Ok(());
    }
    cmd::run(
        cmd::cargo(None)
            .args(["install", &format!("cargo-deny@{CARGO_DENY_VERSION}")])
            .args(["--locked", "--force", "--root"])
            .arg(paths::tools_dir())
            // An unoptimized build without debug info takes a third of the
            // time of its release profile (fat LTO, one codegen unit) and
            // still checks this workspace in under a second.
            .arg("--debug")
            .env("CARGO_PROFILE_DEV_DEBUG", "0"),
    )
    .context("building cargo-deny failed; it needs access to crates.io")
}

fn ensure_cargo_fuzz() -> Result<()> {
    step(&format!("cargo-fuzz {CARGO_FUZZ_VERSION}"));
    let fuzz = paths::cargo_fuzz();
    let wanted = format!("cargo-fuzz {CARGO_FUZZ_VERSION}");
    if cmd::output(Command::new(&fuzz).arg("--version")).as_deref() == Some(wanted.as_str()) {
        eprintln!("    present at {}", fuzz.display());
        return Ok(());
    }
    cmd::run(
        cmd::cargo(None)
            .args(["install", &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}")])
            .args(["--locked", "--force", "--root"])
            .arg(paths::tools_dir()),
    )
    .with_context(|| format!("building {wanted} failed; it needs access to crates.io"))
}

/// A Python venv under target/tools with kubernetes-validate, for the
/// deploy_manifests suite. Debian's python3 makes it (python3-venv when the
/// venv module cannot).
fn ensure_manifest_validator() -> Result<()> {
    step(&format!(
        "kubernetes-validate {KUBERNETES_VALIDATE_VERSION}"
    ));
    let validate = paths::kubernetes_validate();
    let wanted = format!("kubernetes-validate {KUBERNETES_VALIDATE_VERSION}");
    let version = cmd::output(Command::new(&validate).arg("--version"));
    if version
        .as_deref()
        .is_some_and(|v| v.trim().ends_with(KUBERNETES_VALIDATE_VERSION))
    {
        eprintln!("    present at {}", validate.display());
        return Ok(());
    }
    let venv = paths::tools_dir().join("venv");
    let make_venv = || {
        cmd::run(
            Command::new("python3")
                .args(["-m", "venv", "--clear"])
                .arg(&venv),
        )
    };
    if make_venv().is_err() {
        cmd::run(
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends", "python3-venv"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
        make_venv().context("could not make a Python venv")?;
    }
    cmd::run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!(
                "kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"
            )),
    )
    .with_context(|| format!("installing {wanted} failed; it needs access to PyPI"))
}

/// Finds nightly's shared libLLVM (e.g. `libLLVM.so.22.1-rust-1.97.0-nightly`)
/// and its major version, without hard-coding the name.
fn find_nightly_llvm(sysroot: &Path) -> Result<(PathBuf, u32)> {
    let lib = sysroot.join("lib");
    let entry = fs::read_dir(&lib)
        .with_context(|| format!("cannot list {}", lib.display()))?
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("libLLVM"))
        .ok_or_else(|| anyhow!("nightly ships no libLLVM in {}", lib.display()))?;
    let name = entry.file_name().to_string_lossy().into_owned();
    let major = name
        .split(['.', '-'])
        .find_map(|part| part.parse::<u32>().ok())
        .ok_or_else(|| anyhow!("cannot read the LLVM major version from {name}"))?;
    Ok((entry.path(), major))
}

fn ensure_debian_packages() -> Result<()> {
    step("Debian packages");
    ensure_packages(DEBIAN_PACKAGES)
}

/// Installs those of `packages` (name, probe: a command on PATH or an
/// absolute file path) whose probe is missing.
pub(crate) fn ensure_packages(packages: &[(&str, &str)]) -> Result<()> {
    let mut missing: Vec<&str> = packages
        .iter()
        .filter(|(_, probe)| !is_present(probe))
        .map(|(package, _)| *package)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        eprintln!("    present: {}", package_list(packages));
        return Ok(());
    }
    let install = || {
        cmd::run(
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    if install().is_err() {
        cmd::run(
            Command::new("apt-get")
                .arg("update")
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
        install().context("could not install Debian packages (needs root and a package mirror)")?;
    }
    Ok(())
}

fn is_present(probe: &str) -> bool {
    if probe.starts_with('/') {
        Path::new(probe).is_file()
    } else {
        cmd::on_path(probe) || Path::new("/usr/sbin").join(probe).is_file()
    }
}

fn package_list(packages: &[(&str, &str)]) -> String {
    let mut names: Vec<&str> = packages.iter().map(|(p, _)| *p).collect();
    names.dedup();
    names.join(", ")
}

/// The tests pin maps, so /sys/fs/bpf must be a bpf filesystem.
fn ensure_bpffs() -> Result<()> {
    step("bpffs at /sys/fs/bpf");
    let mounts = fs::read_to_string("/proc/mounts").context("cannot read /proc/mounts")?;
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.starts_with("bpf "))
    {
        eprintln!("    mounted");
        return Ok(());
    }
    fs::create_dir_all("/sys/fs/bpf").ok();
    cmd::run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
        .context("cannot mount bpffs at /sys/fs/bpf (needs root)")
}
