//! The Kubernetes control plane that `cargo xtask setup` builds (v1.20.2
//! from Debian's source package), run for real in a sealed network
//! namespace (loopback only): Debian's etcd, kube-apiserver with what 1.20
//! needs (HTTPS with a self-generated serving certificate, static tokens,
//! ServiceAccount keys, RBAC), kube-controller-manager and kube-scheduler
//! with identities of their own. Debian's kubectl (1.20) drives it: a
//! Namespace and a ConfigMap are created, listed and deleted, and the
//! components' work is seen through the API: componentstatuses healthy, a
//! `default` ServiceAccount in the new namespace, a pod bound to a node by
//! the scheduler, the namespace finalized on deletion.
//!
//! A missing binary fails the test: it never skips.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use weir_lab::{process, KubeBinaries};
use weir_tests::netns::{self, NetNs};
use weir_tests::{names, require_root};

const ETCD: &str = "/usr/bin/etcd";
const ETCD_URL: &str = "http://127.0.0.1:2379";
const API_PORT: u16 = 6443;
const SERVICE_CIDR: &str = "10.96.0.0/16";
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

const READY_TIMEOUT: Duration = Duration::from_secs(90);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// Static token identities: the admin (system:masters), and the two
/// components as the users the default RBAC policy binds their roles to.
const ADMIN: Identity = Identity {
    user: "weir-admin",
    groups: "system:masters",
};
const CONTROLLER_MANAGER: Identity = Identity {
    user: "system:kube-controller-manager",
    groups: "",
};
const SCHEDULER: Identity = Identity {
    user: "system:kube-scheduler",
    groups: "",
};

struct Identity {
    user: &'static str,
    groups: &'static str,
}

impl Identity {
    /// A token unique to the run and the user.
    fn token(&self, run: &str) -> String {
        format!("{run}-{}", self.user.replace(':', "-"))
    }
}

/// The running control plane: its processes are stopped, then its netns
/// and files removed, when dropped.
struct ControlPlane {
    pids: Vec<u32>,
    dir: PathBuf,
    kubectl: PathBuf,
    admin_kubeconfig: PathBuf,
    // Dropped after the processes in it are stopped (see Drop).
    ns: NetNs,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for pid in self.pids.iter().rev() {
            process::stop(*pid, Duration::from_secs(5));
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl ControlPlane {
    /// A fresh netns and directory; nothing started yet.
    fn new(kubectl: &Path) -> Result<ControlPlane> {
        let name = names::unique();
        let ns = NetNs::new(&name)?;
        let dir = std::env::temp_dir().join(format!("{name}-kube"));
        fs::create_dir_all(&dir)?;
        Ok(ControlPlane {
            pids: Vec::new(),
            admin_kubeconfig: dir.join("admin.kubeconfig"),
            dir,
            kubectl: kubectl.to_path_buf(),
            ns,
        })
    }

    fn start(&mut self, program: &Path, args: &[String], log: &str) -> Result<u32> {
        let pid = process::spawn_detached(self.ns.name(), program, args, &self.dir.join(log))?;
        self.pids.push(pid);
        Ok(pid)
    }

    fn log(&self, log: &str) -> String {
        fs::read_to_string(self.dir.join(log)).unwrap_or_default()
    }

    /// Writes the keys, token file and kubeconfigs the components need.
    fn write_credentials(&self) -> Result<()> {
        let run = names::run_prefix();
        let key = self.dir.join("sa.key");
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            path_str(&key)?,
        ])?;
        openssl(&[
            "pkey",
            "-in",
            path_str(&key)?,
            "-pubout",
            "-out",
            path_str(&self.dir.join("sa.pub"))?,
        ])?;
        let mut tokens = String::new();
        for (uid, who) in [ADMIN, CONTROLLER_MANAGER, SCHEDULER].iter().enumerate() {
            // token,user,uid,"group1,group2"
            tokens.push_str(&format!(
                "{},{},{uid},\"{}\"\n",
                who.token(&run),
                who.user,
                who.groups
            ));
        }
        fs::write(self.dir.join("tokens.csv"), tokens)?;
        for (file, who) in [
            ("admin.kubeconfig", &ADMIN),
            ("controller-manager.kubeconfig", &CONTROLLER_MANAGER),
            ("scheduler.kubeconfig", &SCHEDULER),
        ] {
            fs::write(self.dir.join(file), self.kubeconfig(&who.token(&run)))?;
        }
        Ok(())
    }

    /// The serving certificate kube-apiserver generates into --cert-dir
    /// (its file also holds the CA that signed it).
    fn serving_cert(&self) -> PathBuf {
        self.dir.join("pki/apiserver.crt")
    }

    fn kubeconfig(&self, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: weir\n  cluster:\n    \
             server: https://127.0.0.1:{API_PORT}\n    certificate-authority: {}\n\
             users:\n- name: weir\n  user:\n    token: {token}\n\
             contexts:\n- name: weir\n  context: {{cluster: weir, user: weir}}\n\
             current-context: weir\n",
            self.serving_cert().display()
        )
    }

    fn start_etcd(&mut self) -> Result<()> {
        let args: Vec<String> = [
            "--name",
            "kube",
            "--data-dir",
            path_str(&self.dir.join("etcd"))?,
            "--listen-client-urls",
            ETCD_URL,
            "--advertise-client-urls",
            ETCD_URL,
            "--listen-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-cluster",
            "kube=http://127.0.0.1:2380",
        ]
        .map(String::from)
        .to_vec();
        self.start(Path::new(ETCD), &args, "etcd.log")?;
        Ok(())
    }

    fn start_apiserver(&mut self, program: &Path) -> Result<u32> {
        let dir = |name: &str| self.dir.join(name).display().to_string();
        let args = vec![
            format!("--etcd-servers={ETCD_URL}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={API_PORT}"),
            "--insecure-port=0".into(),
            format!("--cert-dir={}", dir("pki")),
            format!("--token-auth-file={}", dir("tokens.csv")),
            format!("--service-account-issuer={ISSUER}"),
            format!("--service-account-key-file={}", dir("sa.pub")),
            format!("--service-account-signing-key-file={}", dir("sa.key")),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--authorization-mode=Node,RBAC".into(),
        ];
        self.start(program, &args, "kube-apiserver.log")
    }

    fn start_controller_manager(&mut self, program: &Path) -> Result<()> {
        let dir = |name: &str| self.dir.join(name).display().to_string();
        let args = vec![
            format!("--kubeconfig={}", dir("controller-manager.kubeconfig")),
            "--leader-elect=false".into(),
            // Each controller under its own ServiceAccount (the token
            // controller signs their tokens with the key below), so RBAC
            // checks it against its own bootstrap role.
            "--use-service-account-credentials=true".into(),
            // Health on the insecure port (1.20 still has it), where the
            // API server's componentstatuses looks.
            "--address=127.0.0.1".into(),
            "--port=10252".into(),
            "--secure-port=0".into(),
            format!("--service-account-private-key-file={}", dir("sa.key")),
            format!("--root-ca-file={}", self.serving_cert().display()),
        ];
        self.start(program, &args, "kube-controller-manager.log")?;
        Ok(())
    }

    fn start_scheduler(&mut self, program: &Path) -> Result<()> {
        let args = vec![
            format!(
                "--kubeconfig={}",
                self.dir.join("scheduler.kubeconfig").display()
            ),
            "--leader-elect=false".into(),
            "--address=127.0.0.1".into(),
            "--port=10251".into(),
            "--secure-port=0".into(),
        ];
        self.start(program, &args, "kube-scheduler.log")?;
        Ok(())
    }

    /// Runs Debian's kubectl as the admin inside the netns; stdout, or an
    /// error with stderr.
    fn kubectl(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig")
            .arg(&self.admin_kubeconfig)
            .arg("--request-timeout=10s")
            .args(args);
        netns::command_in(&mut cmd, self.ns.name())?;
        netns::run(&mut cmd)
    }

    /// Creates objects from YAML on kubectl's stdin.
    fn kubectl_apply(&self, yaml: &str) -> Result<String> {
        use std::io::Write;
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig")
            .arg(&self.admin_kubeconfig)
            .args(["create", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        netns::command_in(&mut cmd, self.ns.name())?;
        let mut child = cmd.spawn().context("start kubectl")?;
        child
            .stdin
            .take()
            .context("kubectl stdin")?
            .write_all(yaml.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "kubectl create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits until `/readyz` answers `ok`; the time it took.
    fn wait_ready(&self, apiserver: u32) -> Result<Duration> {
        let started = Instant::now();
        while started.elapsed() < READY_TIMEOUT {
            if self.kubectl(&["get", "--raw", "/readyz"]).ok().as_deref() == Some("ok") {
                return Ok(started.elapsed());
            }
            if !process::alive(apiserver) {
                bail!(
                    "kube-apiserver exited; its log:\n{}",
                    self.log("kube-apiserver.log")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!(
            "kube-apiserver not ready after {READY_TIMEOUT:?}; its log:\n{}",
            self.log("kube-apiserver.log")
        )
    }

    /// Waits (bounded) until `done` holds; errors naming `what` if never.
    fn eventually(&self, what: &str, mut done: impl FnMut(&Self) -> bool) -> Result<Duration> {
        let started = Instant::now();
        while started.elapsed() < CONVERGE_TIMEOUT {
            if done(self) {
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        bail!(
            "{what}: not within {CONVERGE_TIMEOUT:?}\ncontroller-manager log (tail):\n{}\n\
             scheduler log (tail):\n{}",
            tail(&self.log("kube-controller-manager.log")),
            tail(&self.log("kube-scheduler.log"))
        )
    }
}

fn openssl(args: &[&str]) -> Result<()> {
    netns::run(Command::new("openssl").args(args)).map(drop)
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Resident memory of a process in MiB, from /proc.
fn rss_mib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024)
}

const OBJECTS: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: weir-smoke
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: weir-smoke
data:
  mode: enforce
";

const POD: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: idle
  namespace: weir-smoke
spec:
  containers:
  - name: idle
    image: weir.invalid/idle
";

/// A Ready node with room for pods and a heartbeat of now (Nodes may set
/// their status on create).
fn node_yaml() -> String {
    let now = netns::run(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]))
        .expect("date")
        .trim()
        .to_string();
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: weir-node\n\
         status:\n  capacity: {{cpu: '2', memory: 4Gi, pods: '10'}}\n  \
         allocatable: {{cpu: '2', memory: 4Gi, pods: '10'}}\n  conditions:\n  \
         - {{type: Ready, status: 'True', reason: KubeletReady, \
         lastHeartbeatTime: '{now}', lastTransitionTime: '{now}'}}\n"
    )
}

#[test]
fn the_control_plane_built_by_setup_serves_the_api_to_kubectl_and_runs_its_controllers() {
    require_root();
    let bins = KubeBinaries::locate().expect("the control plane's binaries");
    let mut cp = ControlPlane::new(&bins.kubectl).unwrap();
    cp.write_credentials().unwrap();
    cp.start_etcd().unwrap();
    let apiserver = cp.start_apiserver(&bins.apiserver).unwrap();
    let ready = cp.wait_ready(apiserver).unwrap();
    let ready_rss = rss_mib(apiserver).unwrap_or(0);
    let version = cp.kubectl(&["get", "--raw", "/version"]).unwrap();
    assert!(
        version.contains("\"gitVersion\": \"v1.20.2\""),
        "/version: {version}"
    );

    let components_started = Instant::now();
    cp.start_controller_manager(&bins.controller_manager)
        .unwrap();
    cp.start_scheduler(&bins.scheduler).unwrap();

    let created = cp.kubectl_apply(OBJECTS).unwrap();
    assert!(
        created.contains("namespace/weir-smoke created")
            && created.contains("configmap/settings created"),
        "kubectl create: {created}"
    );
    let namespaces = cp.kubectl(&["get", "namespaces", "-o", "name"]).unwrap();
    assert!(
        namespaces.lines().any(|l| l == "namespace/weir-smoke"),
        "{namespaces}"
    );
    let mode = cp
        .kubectl(&[
            "get",
            "configmap",
            "settings",
            "-n",
            "weir-smoke",
            "-o",
            "jsonpath={.data.mode}",
        ])
        .unwrap();
    assert_eq!(mode, "enforce");

    // The components report healthy to the API server (1.20's
    // componentstatuses asks them on their local health ports).
    cp.eventually("scheduler, controller-manager and etcd healthy", |cp| {
        cp.kubectl(&[
            "get",
            "componentstatuses",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.conditions[0].status} {end}",
        ])
        .is_ok_and(|s| {
            ["scheduler=True", "controller-manager=True", "etcd-0=True"]
                .iter()
                .all(|want| s.split_whitespace().any(|got| got == *want))
        })
    })
    .unwrap();
    let healthy = components_started.elapsed();
    // The controller-manager works under its own identity: its
    // ServiceAccount controller gives the new namespace a `default` account.
    cp.eventually("ServiceAccount default in weir-smoke", |cp| {
        cp.kubectl(&["get", "serviceaccount", "default", "-n", "weir-smoke"])
            .is_ok()
    })
    .unwrap();

    // The scheduler binds a pod to the one Ready node (a Node object as a
    // kubelet would register it; no kubelet runs, so the pod never starts
    // and is force-deleted).
    cp.kubectl_apply(&node_yaml()).unwrap();
    cp.kubectl_apply(POD).unwrap();
    let scheduled = cp
        .eventually("pod weir-smoke/idle bound to node weir-node", |cp| {
            cp.kubectl(&[
                "get",
                "pod",
                "idle",
                "-n",
                "weir-smoke",
                "-o",
                "jsonpath={.spec.nodeName}",
            ])
            .is_ok_and(|node| node == "weir-node")
        })
        .unwrap();
    cp.kubectl(&[
        "delete",
        "pod",
        "idle",
        "-n",
        "weir-smoke",
        "--grace-period=0",
        "--force",
    ])
    .unwrap();

    cp.kubectl(&["delete", "configmap", "settings", "-n", "weir-smoke"])
        .unwrap();
    // Deleting a namespace completes only once the namespace controller has
    // emptied it and removed its finalizer.
    let deleted = Instant::now();
    cp.kubectl(&[
        "delete",
        "namespace",
        "weir-smoke",
        "--timeout=60s",
        // Its wait is one watch: longer than kubectl()'s 10 s per request
        // (the last value of a flag wins).
        "--request-timeout=70s",
    ])
    .unwrap();
    let namespaces = cp.kubectl(&["get", "namespaces", "-o", "name"]).unwrap();
    assert!(
        !namespaces.lines().any(|l| l == "namespace/weir-smoke"),
        "{namespaces}"
    );
    weir_tests::figure!(
        "kube control plane: kube-apiserver ready after {:.1} s (RSS {ready_rss} MiB, \
         {} MiB at the end), components healthy {:.1} s after they started, pod scheduled in {:.1} s, \
         namespace deleted (finalized) in {:.1} s",
        ready.as_secs_f64(),
        rss_mib(apiserver).unwrap_or(0),
        healthy.as_secs_f64(),
        scheduled.as_secs_f64(),
        deleted.elapsed().as_secs_f64()
    );
}
