//! The Kubernetes control plane that `cargo xtask setup` builds (v1.20.2
//! from Debian's source package), run for real in a sealed network
//! namespace (loopback only): Debian's etcd, kube-apiserver with what 1.20
//! needs (HTTPS with a self-generated serving certificate, static tokens,
//! ServiceAccount keys, RBAC), kube-controller-manager and kube-scheduler
//! with identities of their own. Debian's kubectl (1.20) drives it: a
//! Namespace and a ConfigMap are created, listed and deleted, and the
//! components' work is seen through the API: componentstatuses healthy, a
//! `default` ServiceAccount in the new namespace, a pod bound to a node by
//! the scheduler, the namespace finalized on deletion. The recipe is the
//! lab's (`weir_lab::control_plane`), here on loopback with its own etcd.
//!
//! A missing binary fails the test: it never skips.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use weir_lab::control_plane::ControlPlane;
use weir_lab::{process, KubeBinaries};
use weir_tests::netns::NetNs;
use weir_tests::{names, require_root};

const ETCD: &str = "/usr/bin/etcd";
const ETCD_URL: &str = "http://127.0.0.1:2379";

const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// The lab's control plane recipe on loopback in a netns of its own, with
/// an etcd of its own: its processes are stopped, then its netns and files
/// removed, when dropped.
struct Sealed {
    cp: ControlPlane,
    etcd: u32,
    dir: PathBuf,
    // Dropped after the processes in it are stopped (see Drop).
    ns: NetNs,
}

impl Drop for Sealed {
    fn drop(&mut self) {
        self.cp.stop();
        process::stop(self.etcd, Duration::from_secs(5));
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Sealed {
    /// A fresh netns and directory with etcd running in it; the control
    /// plane's credentials written, nothing of it started yet.
    fn new(kubectl: &Path) -> Result<Sealed> {
        let name = names::unique();
        let ns = NetNs::new(&name)?;
        let dir = std::env::temp_dir().join(format!("{name}-kube"));
        let cp = ControlPlane::new(ns.name(), &dir, Ipv4Addr::LOCALHOST, ETCD_URL, kubectl)?;
        let mut sealed = Sealed {
            cp,
            etcd: 0,
            dir,
            ns,
        };
        sealed.cp.write_credentials()?;
        sealed.start_etcd()?;
        Ok(sealed)
    }

    fn start_etcd(&mut self) -> Result<()> {
        let args: Vec<String> = [
            "--name",
            "kube",
            "--data-dir",
            &self.dir.join("etcd").display().to_string(),
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
        self.etcd = process::spawn_detached(
            self.ns.name(),
            Path::new(ETCD),
            &args,
            &self.dir.join("etcd.log"),
        )?;
        Ok(())
    }

    fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.cp.kubectl(args)
    }

    /// Creates objects from YAML on kubectl's stdin.
    fn kubectl_apply(&self, yaml: &str) -> Result<String> {
        self.cp.kubectl_stdin(&["create", "-f", "-"], yaml)
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
            tail(&self.cp.log("kube-controller-manager")),
            tail(&self.cp.log("kube-scheduler"))
        )
    }
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

#[test]
fn the_control_plane_built_by_setup_serves_the_api_to_kubectl_and_runs_its_controllers() {
    require_root();
    let bins = KubeBinaries::locate().expect("the control plane's binaries");
    let mut cp = Sealed::new(&bins.kubectl).unwrap();
    cp.cp.start_apiserver(&bins.apiserver).unwrap();
    let apiserver = cp.cp.apiserver_pid;
    let ready = cp.cp.wait_ready().unwrap();
    let ready_rss = rss_mib(apiserver).unwrap_or(0);
    let version = cp.kubectl(&["get", "--raw", "/version"]).unwrap();
    assert!(
        version.contains("\"gitVersion\": \"v1.20.2\""),
        "/version: {version}"
    );

    let components_started = Instant::now();
    cp.cp
        .start_controller_manager(&bins.controller_manager)
        .unwrap();
    cp.cp.start_scheduler(&bins.scheduler).unwrap();

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
    cp.cp
        .register_nodes(&[("weir-node", Ipv4Addr::LOCALHOST)])
        .unwrap();
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
