//! `cargo xtask image`: OCI image archives of weir-agent (with weir-cni,
//! the `weir` CLI and a static busybox for the CNI install step),
//! weir-operator and weir-relay, from the workspace's binaries and the
//! shared libraries they link (found with ldd), built without a container
//! engine ([`oci`]). `ctr -n k8s.io image import target/images/X.oci.tar`
//! loads one into a node's containerd.

mod oci;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::cmd::step;
use crate::{build, paths};

/// The image tag: the workspace version.
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Debian's busybox-static (installed by `cargo xtask setup`).
const BUSYBOX: &str = "/bin/busybox";
/// What the agent image's CNI install step runs.
const BUSYBOX_APPLETS: [&str; 5] = ["sh", "cp", "mv", "cat", "mkdir"];

#[derive(Args)]
pub struct ImageArgs {
    /// Package the debug binaries (as the test suite builds them) instead
    /// of building release ones.
    #[arg(long)]
    pub debug: bool,
    /// Take the binaries from this directory as they are (no build).
    #[arg(long, conflicts_with = "debug")]
    pub binaries: Option<PathBuf>,
    /// Where the archives go.
    #[arg(long, default_value = "target/images")]
    pub out: PathBuf,
}

struct Spec {
    name: &'static str,
    binaries: &'static [&'static str],
    busybox: bool,
}

const IMAGES: [Spec; 3] = [
    Spec {
        name: "weir-agent",
        binaries: &["weir-agent", "weir-cni", "weir"],
        busybox: true,
    },
    Spec {
        name: "weir-operator",
        binaries: &["weir-operator"],
        busybox: false,
    },
    Spec {
        name: "weir-relay",
        binaries: &["weir-relay"],
        busybox: false,
    },
];

pub fn run(args: &ImageArgs) -> Result<()> {
    let dir = match &args.binaries {
        Some(dir) => dir.clone(),
        None => {
            let release = !args.debug;
            build::binaries(release)?;
            paths::root()
                .join("target")
                .join(if release { "release" } else { "debug" })
        }
    };
    let out = paths::root().join(&args.out);
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    for spec in &IMAGES {
        step(&format!("image {}", spec.name));
        let image = assemble(spec, &dir, &format!("localhost/{}:{VERSION}", spec.name))?;
        let name = image.name.clone();
        let built = oci::build(image, "amd64")?;
        let path = out.join(format!("{}-{VERSION}.oci.tar", spec.name));
        std::fs::write(&path, &built.archive)
            .with_context(|| format!("write {}", path.display()))?;
        // The archive on stdout (what scripts take); the sizes beside it.
        println!("{}", path.display());
        eprintln!(
            "    {name}: layer {:.1} MiB compressed ({:.1} MiB unpacked)",
            mib(built.layer_compressed),
            mib(built.layer_uncompressed)
        );
    }
    Ok(())
}

/// The images a real lab node's containerd runs (issue 20): the pod
/// sandbox's `pause` (static, from the Kubernetes tree's
/// build/pause/linux/pause.c, by the name kubelet 1.20 asks for) and the
/// lab's pod server. Written to `target/images/lab/`, where weir-lab finds
/// them beside its binaries.
pub fn lab_node_images(bin_dir: &Path) -> Result<()> {
    step("images of the lab's real nodes (pause, weir-lab-pod, agnhost)");
    let out = paths::root().join("target/images/lab");
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let pause = out.join("pause");
    let source = paths::kube_dir().join("work/src/tree/build/pause/linux/pause.c");
    crate::cmd::run(
        Command::new("cc")
            .args(["-Os", "-static", "-DVERSION=3.2", "-o"])
            .arg(&pause)
            .arg(&source),
    )
    .with_context(|| format!("compile {} (static)", source.display()))?;
    let images = [
        oci::Image {
            name: LAB_PAUSE_IMAGE.into(),
            entrypoint: vec!["/pause".into()],
            cmd: Vec::new(),
            entries: vec![oci::Entry::File {
                path: "pause".into(),
                source: pause.clone(),
                mode: 0o755,
            }],
        },
        assemble(&LAB_POD_SPEC, bin_dir, LAB_POD_IMAGE)?,
        agnhost()?,
    ];
    for (image, file) in images.into_iter().zip(["pause", "weir-lab-pod", "agnhost"]) {
        let built = oci::build(image, "amd64")?;
        let path = out.join(format!("{file}.oci.tar"));
        std::fs::write(&path, &built.archive)
            .with_context(|| format!("write {}", path.display()))?;
        eprintln!("    {}", path.display());
    }
    Ok(())
}

/// The upstream e2e suite's test image, by the name the 1.20 suite asks
/// for: agnhost (built by `cargo xtask setup` from the same tree) at
/// `/agnhost` as its Dockerfile has it, porter's TLS pair, and busybox for
/// the shell the suite's client pods run (`sh -c 'for i in $(seq 1 5) ...'`).
fn agnhost() -> Result<oci::Image> {
    let kube = paths::kube_dir();
    let agnhost = kube.join("bin/agnhost");
    if !agnhost.is_file() {
        bail!("{} not found: run `cargo xtask setup`", agnhost.display());
    }
    let porter = kube.join("work/src/tree/test/images/agnhost/porter");
    let mut entries = vec![
        oci::Entry::File {
            path: "agnhost".into(),
            source: agnhost,
            mode: 0o755,
        },
        oci::Entry::Link {
            path: "agnhost-2".into(),
            target: "agnhost".into(),
        },
        oci::Entry::File {
            path: "bin/busybox".into(),
            source: BUSYBOX.into(),
            mode: 0o755,
        },
    ];
    for file in ["localhost.crt", "localhost.key"] {
        entries.push(oci::Entry::File {
            path: file.into(),
            source: porter.join(file),
            mode: 0o644,
        });
    }
    for (path, source) in AGNHOST_TOOLS {
        entries.extend(with_libraries(path, Path::new(source))?);
    }
    entries.sort_by(|a, b| a.path().cmp(b.path()));
    entries.dedup_by(|a, b| a.path() == b.path());
    // The suite runs its commands with `/bin/sh -c`: bash, since busybox's
    // shell prefers its own applets (its `nc` has no `-z`) to /bin's.
    entries.push(oci::Entry::Link {
        path: "bin/sh".into(),
        target: "bash".into(),
    });
    for applet in AGNHOST_APPLETS {
        entries.push(oci::Entry::Link {
            path: format!("bin/{applet}"),
            target: "busybox".into(),
        });
    }
    Ok(oci::Image {
        name: "k8s.gcr.io/e2e-test-images/agnhost:2.21".into(),
        entrypoint: vec!["/agnhost".into()],
        cmd: vec!["pause".into()],
        entries,
    })
}

/// What the suite's pods run besides agnhost (upstream's image is Alpine
/// with bash, curl, netcat-openbsd and bind-tools): the machine's own programs (setup
/// installs them), with the shared libraries they load.
const AGNHOST_TOOLS: [(&str, &str); 5] = [
    ("bin/nc", "/bin/nc.openbsd"),
    ("bin/curl", "/usr/bin/curl"),
    ("bin/bash", "/usr/bin/bash"),
    ("bin/nslookup", "/usr/bin/nslookup"),
    ("bin/dig", "/usr/bin/dig"),
];

/// The rest, from busybox.
const AGNHOST_APPLETS: [&str; 14] = [
    "ash", "cat", "echo", "seq", "sleep", "ls", "test", "[", "wget", "grep", "timeout", "hostname",
    "printf", "true",
];

/// `source` at `path` in the image, with every shared library `ldd` says
/// it loads (and the dynamic loader) at the path the loader looks for it.
fn with_libraries(path: &str, source: &Path) -> Result<Vec<oci::Entry>> {
    if !source.is_file() {
        bail!("{} not found: run `cargo xtask setup`", source.display());
    }
    let listed = crate::cmd::output(Command::new("ldd").arg(source))
        .with_context(|| format!("ldd {} failed", source.display()))?;
    let mut entries = vec![oci::Entry::File {
        path: path.into(),
        source: source.into(),
        mode: 0o755,
    }];
    // `libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)`, or the
    // loader's `/lib64/ld-linux-x86-64.so.2 (0x...)`; the vDSO has no file.
    for library in listed
        .lines()
        .filter_map(|line| line.split_whitespace().find(|w| w.starts_with('/')))
    {
        entries.push(oci::Entry::File {
            path: library.trim_start_matches('/').into(),
            source: std::fs::canonicalize(library)
                .with_context(|| format!("{library} (loaded by {})", source.display()))?,
            mode: 0o755,
        });
    }
    Ok(entries)
}

/// kubelet 1.20's default sandbox image.
const LAB_PAUSE_IMAGE: &str = "k8s.gcr.io/pause:3.2";
/// What the lab's pods name (weir-lab's `server_apply::POD_IMAGE`).
const LAB_POD_IMAGE: &str = "weir.invalid/weir-lab-pod:latest";
const LAB_POD_SPEC: Spec = Spec {
    name: "weir-lab-pod",
    binaries: &["weir-lab-pod"],
    busybox: false,
};

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn assemble(spec: &Spec, dir: &Path, name: &str) -> Result<oci::Image> {
    let mut entries = Vec::new();
    let mut libraries: Vec<PathBuf> = Vec::new();
    for binary in spec.binaries {
        let source = dir.join(binary);
        if !source.is_file() {
            bail!("{} not found: build it first", source.display());
        }
        libraries.extend(shared_libraries(&source)?);
        entries.push(oci::Entry::File {
            path: format!("usr/local/bin/{binary}"),
            source,
            mode: 0o755,
        });
    }
    libraries.sort();
    libraries.dedup();
    for library in libraries {
        // The path the dynamic loader looks for, with symlinks resolved to
        // the file itself.
        let path = library
            .strip_prefix("/")
            .unwrap_or(&library)
            .display()
            .to_string();
        let source = std::fs::canonicalize(&library)
            .with_context(|| format!("resolve {}", library.display()))?;
        entries.push(oci::Entry::File {
            path,
            source,
            mode: 0o755,
        });
    }
    if spec.busybox {
        if !Path::new(BUSYBOX).is_file() {
            bail!("{BUSYBOX} not found: run `cargo xtask setup` (Debian's busybox-static)");
        }
        entries.push(oci::Entry::File {
            path: "bin/busybox".into(),
            source: BUSYBOX.into(),
            mode: 0o755,
        });
        for applet in BUSYBOX_APPLETS {
            entries.push(oci::Entry::Link {
                path: format!("bin/{applet}"),
                target: "busybox".into(),
            });
        }
    }
    Ok(oci::Image {
        cmd: Vec::new(),
        name: name.to_string(),
        entrypoint: vec![format!("/usr/local/bin/{}", spec.binaries[0])],
        entries,
    })
}

/// The absolute paths of the shared libraries (and the loader) `binary`
/// links, from `ldd`; none for a static binary.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .context("run ldd")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        if text.contains("not a dynamic executable")
            || output.stderr.starts_with(b"\tnot a dynamic")
        {
            return Ok(Vec::new());
        }
        bail!(
            "ldd {}: {}",
            binary.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(parse_ldd(&text))
}

/// `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` and
/// `/lib64/ld-linux-x86-64.so.2 (0x...)` lines; the vDSO has no file.
fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// deploy/images/<name>.Containerfile: the binaries its COPY line takes
    /// from target/release, and its entrypoint.
    fn containerfile(text: &str) -> (Vec<String>, String) {
        let copy = text
            .lines()
            .find(|l| l.starts_with("COPY "))
            .expect("a COPY line");
        let binaries = copy
            .split_whitespace()
            .filter_map(|w| w.strip_prefix("target/release/"))
            .map(str::to_string)
            .collect();
        let entrypoint = text
            .lines()
            .find_map(|l| l.strip_prefix("ENTRYPOINT [\""))
            .and_then(|l| l.strip_suffix("\"]"))
            .expect("an ENTRYPOINT line")
            .to_string();
        (binaries, entrypoint)
    }

    #[test]
    fn containerfiles_package_what_the_engineless_images_do() {
        let files = [
            include_str!("../../deploy/images/agent.Containerfile"),
            include_str!("../../deploy/images/operator.Containerfile"),
            include_str!("../../deploy/images/relay.Containerfile"),
        ];
        for (spec, file) in IMAGES.iter().zip(files) {
            let (binaries, entrypoint) = containerfile(file);
            assert_eq!(binaries, spec.binaries, "{}", spec.name);
            assert_eq!(entrypoint, format!("/usr/local/bin/{}", spec.binaries[0]));
        }
    }

    #[test]
    fn ldd_lines_give_library_paths() {
        let text = "\tlinux-vdso.so.1 (0x00007ffc)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }
}
