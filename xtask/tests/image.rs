//! `cargo xtask image` end to end: the archives of the workspace's debug
//! binaries are imported by a real containerd (Debian's 1.6, with runc; a
//! private instance with its own root, state and socket, stopped and
//! removed afterwards), and each image runs its program: `--version` of
//! weir-agent, weir-operator and weir-relay, and the agent image's shell
//! step sees weir-cni and weir. The image sizes are printed as figures.
//!
//! Needs root; a missing containerd, runc or busybox fails the test with
//! the fix (`cargo xtask setup`): it never skips.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A private containerd, killed and its directories removed on drop.
struct Containerd {
    dir: PathBuf,
    child: Child,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Containerd {
    fn start(dir: &Path) -> Containerd {
        std::fs::create_dir_all(dir).expect("containerd dir");
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{0}/containerd.sock\"\n\
                 [ttrpc]\n  address = \"{0}/containerd.ttrpc.sock\"\n",
                dir.display()
            ),
        )
        .expect("config");
        let log = std::fs::File::create(dir.join("containerd.log")).expect("log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("containerd (Debian's containerd package: run `cargo xtask setup`)");
        let containerd = Containerd {
            dir: dir.to_path_buf(),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !containerd.socket().exists() {
            assert!(
                Instant::now() < deadline,
                "containerd did not start: {}",
                containerd.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        containerd
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// `ctr` in the test's namespace; stdout, or a panic with stderr.
    fn ctr(&self, args: &[&str]) -> String {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", "weir-image-test"])
            .args(args)
            .output()
            .expect("ctr (Debian's containerd package: run `cargo xtask setup`)");
        assert!(
            out.status.success(),
            "ctr {args:?}: {}\ncontainerd log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn figure(line: &str) {
    use std::io::Write;
    println!("{line}");
    if let Some(path) = std::env::var_os("WEIR_TEST_FIGURES") {
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    }
}

#[test]
fn the_images_import_into_containerd_and_run_their_programs() {
    // SAFETY: geteuid(2) has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "the image suite runs containers: run it as root");
    let xtask = PathBuf::from(env!("CARGO_BIN_EXE_xtask"));
    let binaries = xtask.parent().expect("target/debug").to_path_buf();
    let unique = format!("weir-image-test-{}", std::process::id());
    let out = std::env::temp_dir().join(&unique).join("images");
    let built = Command::new(&xtask)
        .arg("image")
        .arg("--binaries")
        .arg(&binaries)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run xtask image");
    assert!(
        built.status.success(),
        "cargo xtask image: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let archives: Vec<PathBuf> = String::from_utf8_lossy(&built.stdout)
        .lines()
        .map(PathBuf::from)
        .collect();
    assert_eq!(archives.len(), 3, "{archives:?}");

    let containerd = Containerd::start(&std::env::temp_dir().join(&unique).join("containerd"));
    let mut sizes = Vec::new();
    for archive in &archives {
        let size = std::fs::metadata(archive).expect("archive").len();
        sizes.push(format!(
            "{} {:.1} MiB",
            archive.file_name().unwrap_or_default().to_string_lossy(),
            size as f64 / 1048576.0
        ));
        containerd.ctr(&["image", "import", &archive.display().to_string()]);
    }
    let images = containerd.ctr(&["image", "ls", "-q"]);
    for (image, program) in [
        ("weir-agent", "weir-agent"),
        ("weir-operator", "weir-operator"),
        ("weir-relay", "weir-relay"),
    ] {
        let reference = format!("localhost/{image}:{VERSION}");
        assert!(
            images.lines().any(|l| l == reference),
            "{reference} not in:\n{images}"
        );
        let output = containerd.ctr(&[
            "run",
            "--rm",
            &reference,
            &format!("{image}-version"),
            &format!("/usr/local/bin/{program}"),
            "--version",
        ]);
        assert_eq!(output.trim(), format!("{program} {VERSION}"), "{reference}");
    }
    let listing = containerd.ctr(&[
        "run",
        "--rm",
        &format!("localhost/weir-agent:{VERSION}"),
        "weir-agent-shell",
        "/bin/sh",
        "-c",
        "ls /usr/local/bin",
    ]);
    let programs: Vec<&str> = listing.split_whitespace().collect();
    assert_eq!(programs, ["weir", "weir-agent", "weir-cni"], "{listing}");
    for archive in &archives {
        let _ = std::fs::remove_file(archive);
    }
    drop(containerd);
    let _ = std::fs::remove_dir_all(std::env::temp_dir().join(&unique));
    figure(&format!(
        "images (debug binaries; release ones are smaller): {}",
        sizes.join(", ")
    ));
}
