//! A real Kubernetes node (issue 20): kubelet v1.20.2 (built from the same
//! source as the control plane) with Debian's containerd 1.6 and runc,
//! running the cluster's pods through weir-cni as an installation does,
//! in place of the lab's kubelet daemon.
//!
//! kubelet and containerd use fixed host paths (`/var/lib/kubelet`,
//! `/var/log/pods`, `/var/lib/cni`, `/run/containerd` for shim sockets),
//! so each real node gets a mount namespace of its own, kept in a file
//! (`<lab>/<node>/real/mntns`): tmpfs over `/var/lib` and `/var/log`
//! inside it (nothing of the machine's shows through, nothing is left on
//! it), the node's own directories bound where kubelet and containerd
//! look. Both run in it and in the node's network namespace (entered with
//! nsenter: `ip netns exec` would remount /sys and hide the cgroup tree
//! from runc).
//!
//! What these machines need: containerd's CRI with
//! `restrict_oom_score_adj` (the VMs refuse any negative oom_score_adj, so
//! runc fails every sandbox otherwise); kubelet with the cgroupfs driver
//! and no QoS cgroups or node allocatable enforcement; images imported
//! from archives (no registry is reachable): the sandbox's pause and the
//! lab's pod server (`cargo xtask` builds them into `target/images/lab`).
//! The CNI configuration is a conflist at cniVersion 1.0.0 (containerd
//! 1.6's libcni refuses 1.1.0 results) naming weir-cni, beside Debian's
//! loopback plugin, which the CRI runs in every sandbox.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::state::NodeRecord;
use crate::{process, Lab};
use weir_tests::netns;

/// Debian's containernetworking-plugins (installed by `cargo xtask setup`).
const LOOPBACK_PLUGIN: &str = "/usr/lib/cni/loopback";
/// The images every real node imports, from `target/images/lab`: the
/// sandbox, the lab's pod server, the upstream e2e suite's agnhost.
const IMAGES: [&str; 3] = ["pause.oci.tar", "weir-lab-pod.oci.tar", "agnhost.oci.tar"];
const CONTAINERD_READY: Duration = Duration::from_secs(20);
/// What the node's mount namespace covers with a tmpfs, and the node's
/// directories bound below (relative to the node's `real/` directory).
const COVERED: [&str; 2] = ["/var/lib", "/var/log"];
const BOUND: [(&str, &str); 5] = [
    ("kubelet", "/var/lib/kubelet"),
    ("cni-state", "/var/lib/cni"),
    ("log-pods", "/var/log/pods"),
    ("log-containers", "/var/log/containers"),
    ("run-containerd", "/run/containerd"),
];

/// The files of a real node, below `<lab>/<node>/real`.
pub struct RealNode {
    pub dir: PathBuf,
}

impl RealNode {
    pub fn of(lab_dir: &Path, node: &str) -> RealNode {
        RealNode {
            dir: lab_dir.join(node).join("real"),
        }
    }

    pub fn mount_namespace(&self) -> PathBuf {
        self.dir.join("mntns")
    }

    pub fn containerd_socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// `nsenter` into the node's mount and network namespaces, then
    /// `program`.
    fn enter(&self, node: &NodeRecord, program: &Path) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--mount={}", self.mount_namespace().display()))
            .arg(format!("--net={}", netns::path(&node.netns).display()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// The network namespace of the pod `namespace/name` this node runs:
    /// its server's (found among the node's containerd tasks by the
    /// identity it serves).
    pub fn pod_netns(&self, key: &str) -> Result<PathBuf> {
        let tasks = self.ctr(&["tasks", "list"])?;
        for pid in tasks
            .lines()
            .skip(1)
            .filter_map(|line| line.split_whitespace().nth(1))
        {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            if args
                .windows(2)
                .any(|w| w[0] == b"--identity" && w[1] == key.as_bytes())
            {
                return Ok(PathBuf::from(format!("/proc/{pid}/ns/net")));
            }
        }
        bail!("no task of {} serves {key}", self.dir.display())
    }

    /// The lines of the node's `log` (`kubelet.log`, `containerd.log`)
    /// that mention `needle`, the last `max` of them: what a test shows
    /// when the node did not do what it waited for.
    pub fn log_lines(&self, log: &str, needle: &str, max: usize) -> String {
        matching_lines(&self.dir.join(log), needle, max)
    }

    /// `ctr` against the node's containerd, in the CRI's namespace.
    pub fn ctr(&self, args: &[&str]) -> Result<String> {
        netns::run(
            Command::new("ctr")
                .arg("--address")
                .arg(self.containerd_socket())
                .args(["-n", "k8s.io"])
                .args(args),
        )
    }
}

impl Lab {
    /// Makes node `index` a real node: its mount namespace, containerd with
    /// the lab's images, then kubelet as the node (`system:node:<name>`).
    pub(crate) fn start_real_node(&mut self, index: usize, progress: &dyn Fn(&str)) -> Result<()> {
        let node = self.state.nodes[index].clone();
        let real = RealNode::of(&self.dir, &node.name);
        self.prepare_real_node(&node, &real)?;
        let started = Instant::now();
        let containerd = self.spawn_in_node(
            &node,
            &real,
            Path::new("containerd"),
            &["--config".into(), real.path("containerd.toml")],
            "containerd.log",
        )?;
        self.state.nodes[index].containerd_pid = containerd;
        self.state.save(&self.dir)?;
        wait_containerd(&real, containerd)?;
        let images = self.binaries.agent.parent().and_then(Path::parent);
        let images = images
            .map(|target| target.join("images/lab"))
            .context("target directory")?;
        for image in IMAGES {
            let archive = images.join(image);
            if !archive.is_file() {
                bail!(
                    "{} not found: `cargo xtask build` (or `cargo xtask test`) makes it",
                    archive.display()
                );
            }
            real.ctr(&["image", "import", &archive.display().to_string()])?;
        }
        let dns_args = [
            "dns".to_string(),
            "--kubeconfig".into(),
            self.control_plane()?
                .admin_kubeconfig()
                .display()
                .to_string(),
            "--listen".into(),
            node.underlay_ip.to_string(),
        ];
        let dns = self.spawn_in_node(&node, &real, &self.binaries.lab(), &dns_args, "dns.log")?;
        self.state.nodes[index].dns_pid = dns;
        self.state.save(&self.dir)?;
        let kubelet = self.kubelet_program()?;
        let args = self.kubelet_args(&node, &real)?;
        let pid = self.spawn_in_node(&node, &real, &kubelet, &args, "kubelet.log")?;
        self.state.nodes[index].kubelet_pid = pid;
        self.state.save(&self.dir)?;
        progress(&format!(
            "node {}: real node: containerd {}, DNS {dns} and kubelet {} (images imported in {:.1} s; logs in {})",
            node.name,
            containerd,
            pid,
            started.elapsed().as_secs_f64(),
            real.dir.display()
        ));
        Ok(())
    }

    fn kubelet_program(&self) -> Result<PathBuf> {
        Ok(crate::KubeBinaries::locate()?.kubelet)
    }

    /// Directories, containerd's configuration, the CNI configuration and
    /// plugins, and the mount namespace.
    fn prepare_real_node(&self, node: &NodeRecord, real: &RealNode) -> Result<()> {
        for (dir, _) in BOUND {
            std::fs::create_dir_all(real.dir.join(dir))?;
        }
        for dir in [
            "containerd-root",
            "containerd-state",
            "cni-bin",
            "cni-conf",
            "pki",
        ] {
            std::fs::create_dir_all(real.dir.join(dir))?;
        }
        let plugins = real.dir.join("cni-bin");
        std::fs::copy(&self.binaries.cni, plugins.join("weir-cni")).context("copy weir-cni")?;
        if !Path::new(LOOPBACK_PLUGIN).is_file() {
            bail!("{LOOPBACK_PLUGIN} not found: run `cargo xtask setup` (containernetworking-plugins)");
        }
        std::fs::copy(LOOPBACK_PLUGIN, plugins.join("loopback")).context("copy loopback")?;
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "weir",
            "plugins": [{
                "type": "weir-cni",
                "agentSocket": node.api_socket,
                "mtu": crate::lifecycle::MTU,
                // The runtime passes pods' hostPorts (runtimeConfig).
                "capabilities": {"portMappings": true},
            }],
        });
        std::fs::write(
            real.dir.join("cni-conf/10-weir.conflist"),
            serde_json::to_vec_pretty(&conflist)?,
        )?;
        std::fs::write(real.dir.join("containerd.toml"), containerd_config(real))?;
        // kubelet checks its cgroup root exists in every hierarchy.
        let pods = pods_cgroup(node)?;
        for hierarchy in weir_tests::cgroup::v1_hierarchies()? {
            let dir = hierarchy.join(pods.trim_start_matches('/'));
            std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        }
        // The namespace's file must sit on a private mount to hold it.
        let dir = real.dir.display().to_string();
        netns::run(Command::new("mount").args(["--bind", &dir, &dir]))?;
        netns::run(Command::new("mount").args(["--make-private", &dir]))?;
        std::fs::write(real.mount_namespace(), b"")?;
        netns::run(Command::new("unshare").args([
            &format!("--mount={}", real.mount_namespace().display()),
            "--propagation",
            "private",
            "true",
        ]))?;
        let mut script = String::from("set -e\n");
        for covered in COVERED {
            script.push_str(&format!("mount -t tmpfs tmpfs {covered}\n"));
        }
        for (dir, target) in BOUND {
            script.push_str(&format!(
                "mkdir -p {target}\nmount --bind {} {target}\n",
                real.path(dir)
            ));
        }
        netns::run(
            Command::new("nsenter")
                .arg(format!("--mount={}", real.mount_namespace().display()))
                .args(["--", "sh", "-c", &script]),
        )
        .map(drop)
    }

    /// kubelet's flags for `node`.
    fn kubelet_args(&self, node: &NodeRecord, real: &RealNode) -> Result<Vec<String>> {
        let cp = self.control_plane()?;
        let socket = format!("unix://{}", real.containerd_socket().display());
        Ok(vec![
            format!(
                "--kubeconfig={}",
                cp.kubelet_kubeconfig(&node.name).display()
            ),
            format!("--hostname-override={}", node.name),
            format!("--node-ip={}", node.underlay_ip),
            format!("--address={}", node.underlay_ip),
            "--container-runtime=remote".into(),
            format!("--container-runtime-endpoint={socket}"),
            format!("--image-service-endpoint={socket}"),
            "--pod-infra-container-image=k8s.gcr.io/pause:3.2".into(),
            // The node's own DNS server (`crate::dns`).
            format!("--cluster-dns={}", node.underlay_ip),
            format!("--cluster-domain={}", crate::dns::zone::CLUSTER_DOMAIN),
            // What these machines allow (see the module's comment).
            "--cgroup-driver=cgroupfs".into(),
            // Every pod's cgroup (kubepods/<qos>/pod<uid>) below the node's,
            // where socket LB sees their connect()s as it sees the lab's
            // own pods'.
            "--cgroups-per-qos=true".into(),
            format!("--cgroup-root={}", pods_cgroup(node)?),
            "--enforce-node-allocatable=".into(),
            "--fail-swap-on=false".into(),
            // The lab's disks are the machine's: no eviction or image GC.
            "--eviction-hard=".into(),
            "--image-gc-high-threshold=100".into(),
            "--image-gc-low-threshold=99".into(),
            format!("--cert-dir={}", real.path("pki")),
            format!("--volume-plugin-dir={}", real.path("volume-plugins")),
            "--read-only-port=0".into(),
            "--healthz-bind-address=127.0.0.1".into(),
            // The API server's calls (logs, exec) come from the sealed
            // underlay only.
            "--anonymous-auth=true".into(),
            "--authorization-mode=AlwaysAllow".into(),
        ])
    }

    /// Starts `program` detached in the node's namespaces, output to
    /// `log` in the node's real directory; its pid.
    fn spawn_in_node(
        &self,
        node: &NodeRecord,
        real: &RealNode,
        program: &Path,
        args: &[String],
        log: &str,
    ) -> Result<u32> {
        use std::os::unix::process::CommandExt;
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(real.dir.join(log))?;
        let mut cmd = real.enter(node, program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", program.display()))?;
        Ok(child.id())
    }
}

/// Stops a real node: kubelet, every container (SIGKILL), containerd,
/// then what they leave in the machine's view: cgroups runc made, the
/// sandboxes' network namespace files, the mount namespace.
pub fn stop(lab_dir: &Path, node: &NodeRecord) {
    let real = RealNode::of(lab_dir, &node.name);
    if !real.dir.exists() {
        return;
    }
    process::stop(node.kubelet_pid, Duration::from_secs(3));
    let containers = real
        .ctr(&["containers", "list", "-q"])
        .map(|out| out.split_whitespace().map(String::from).collect::<Vec<_>>())
        .unwrap_or_default();
    let netns_files = sandbox_netns_files(node.containerd_pid);
    for id in &containers {
        let _ = real.ctr(&["tasks", "kill", "--signal", "SIGKILL", id]);
    }
    for id in &containers {
        let _ = real.ctr(&["tasks", "delete", "--force", id]);
    }
    process::stop(node.containerd_pid, Duration::from_secs(3));
    process::stop(node.dns_pid, Duration::from_secs(3));
    // runc's cgroups of the containers (the v2 side goes with the lab's
    // cgroup tree), then the node's in the v1 hierarchies.
    if let Ok(pods) = pods_cgroup(node) {
        for hierarchy in weir_tests::cgroup::v1_hierarchies().unwrap_or_default() {
            let dir = hierarchy.join(pods.trim_start_matches('/'));
            let _ = weir_tests::cgroup::remove_tree(&dir);
            // The lab's and the root of every lab's, once empty.
            for parent in dir.ancestors().skip(1).take(2) {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
    for file in netns_files {
        let _ = std::fs::remove_file(file);
    }
    let dir = real.dir.display().to_string();
    let _ = netns::run(Command::new("umount").arg(real.mount_namespace()));
    let _ = netns::run(Command::new("umount").args(["--lazy", &dir]));
}

/// Unmounts what real nodes of the lab in `lab_dir` left mounted (after a
/// crash, or a state file that no longer loads), so the directory can go.
pub fn unmount_leftovers(lab_dir: &Path) {
    let Ok(nodes) = std::fs::read_dir(lab_dir) else {
        return;
    };
    for node in nodes.filter_map(Result::ok) {
        let real = node.path().join("real");
        if real.join("mntns").exists() {
            let _ = netns::run(Command::new("umount").arg(real.join("mntns")));
            let _ = netns::run(Command::new("umount").arg("--lazy").arg(&real));
        }
    }
}

/// The sandboxes' network namespace files containerd pinned (mounts in its
/// mount namespace; on the machine they are empty files to remove).
fn sandbox_netns_files(containerd: u32) -> Vec<PathBuf> {
    let Ok(mounts) = std::fs::read_to_string(format!("/proc/{containerd}/mountinfo")) else {
        return Vec::new();
    };
    mounts
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .filter(|target| target.starts_with("/run/netns/cni-"))
        .map(PathBuf::from)
        .collect()
}

/// The cgroups runc made for container `id` (cgroupfs driver: `/k8s.io/<id>`
/// in every hierarchy); empty once its processes are gone.
/// The node's cgroup as kubelet names it: its path below the cgroup v2
/// root (`/weir-lab/<lab>/<node>`), the same path in the v1 hierarchies.
fn pods_cgroup(node: &NodeRecord) -> Result<String> {
    let root = weir_tests::cgroup::cgroup2_root()?;
    let relative = node
        .cgroup
        .strip_prefix(&root)
        .with_context(|| format!("{} is not below {}", node.cgroup.display(), root.display()))?;
    Ok(format!("/{}", relative.display()))
}

fn wait_containerd(real: &RealNode, pid: u32) -> Result<()> {
    let started = Instant::now();
    while real.ctr(&["version"]).is_err() {
        if !process::alive(pid) || started.elapsed() > CONTAINERD_READY {
            bail!(
                "containerd did not serve on {}: {}",
                real.containerd_socket().display(),
                std::fs::read_to_string(real.dir.join("containerd.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// containerd's configuration: its own root, state and socket; the CRI
/// with the lab's CNI directories and pause image, and
/// `restrict_oom_score_adj`.
fn containerd_config(real: &RealNode) -> String {
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "k8s.gcr.io/pause:3.2"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin}"
    conf_dir = "{conf}"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
"#,
        root = real.path("containerd-root"),
        state = real.path("containerd-state"),
        socket = real.containerd_socket().display(),
        bin = real.path("cni-bin"),
        conf = real.path("cni-conf"),
    )
}

/// The last `max` lines of the file at `path` that contain `needle` (none
/// when it cannot be read): what a failing test quotes of a log.
pub fn matching_lines(path: &Path, needle: &str, max: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
    lines[lines.len().saturating_sub(max)..].join("\n")
}
