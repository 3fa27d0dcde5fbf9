//! A control plane for one suite: the lab's recipe ([`ControlPlane`]) on
//! loopback in a network namespace of its own, with an etcd of its own.
//! Its processes are stopped, then its netns and files removed, when
//! dropped. Suites that need the Kubernetes API but no lab nodes use it
//! (`kube_apiserver`, `operator`).

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::control_plane::ControlPlane;
use crate::process;
use weir_tests::names;
use weir_tests::netns::NetNs;

const ETCD: &str = "/usr/bin/etcd";
const ETCD_URL: &str = "http://127.0.0.1:2379";
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

pub struct SealedControlPlane {
    pub cp: ControlPlane,
    etcd: u32,
    dir: PathBuf,
    // Dropped after the processes in it are stopped (see Drop).
    ns: NetNs,
}

impl Drop for SealedControlPlane {
    fn drop(&mut self) {
        self.cp.stop();
        process::stop(self.etcd, Duration::from_secs(5));
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl SealedControlPlane {
    /// A fresh netns and directory with etcd running in it; the control
    /// plane's credentials written, nothing of it started yet.
    pub fn new(kubectl: &Path) -> Result<SealedControlPlane> {
        let name = names::unique();
        let ns = NetNs::new(&name)?;
        let dir = std::env::temp_dir().join(format!("{name}-kube"));
        let cp = ControlPlane::new(ns.name(), &dir, Ipv4Addr::LOCALHOST, ETCD_URL, kubectl)?;
        let mut sealed = SealedControlPlane {
            cp,
            etcd: 0,
            dir,
            ns,
        };
        sealed.cp.write_credentials()?;
        sealed.start_etcd()?;
        Ok(sealed)
    }

    /// The network namespace everything runs in.
    pub fn netns(&self) -> &str {
        self.ns.name()
    }

    /// A directory for the suite's own files, removed with the rest.
    pub fn dir(&self) -> &Path {
        &self.dir
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

    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.cp.kubectl(args)
    }

    /// Creates objects from YAML on kubectl's stdin.
    pub fn kubectl_create(&self, yaml: &str) -> Result<String> {
        self.cp.kubectl_stdin(&["create", "-f", "-"], yaml)
    }

    /// Waits (bounded) until `done` holds; errors naming `what` if never,
    /// with the tails of the controllers' logs.
    pub fn eventually(&self, what: &str, mut done: impl FnMut(&Self) -> bool) -> Result<Duration> {
        let started = Instant::now();
        while started.elapsed() < CONVERGE_TIMEOUT {
            if done(self) {
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "{what}: not within {CONVERGE_TIMEOUT:?}\ncontroller-manager log (tail):\n{}\n\
             scheduler log (tail):\n{}",
            tail(&self.cp.log("kube-controller-manager")),
            tail(&self.cp.log("kube-scheduler"))
        )
    }
}

/// The last 30 lines of a log.
pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
