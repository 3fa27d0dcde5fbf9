//! kube-apiserver (v1.20.2, built by `cargo xtask setup`) on an etcd of
//! its own, in a sealed network namespace (loopback only), with Weir's CRDs
//! from deploy/crds applied: the lab's recipe (`weir_lab::control_plane`)
//! without controllers. Stopped and removed, netns included, when dropped.
//! A missing binary fails the suite: it never skips.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result};
use weir_lab::control_plane::ControlPlane;
use weir_lab::{process, KubeBinaries};
use weir_tests::names;
use weir_tests::netns::{self, NetNs};

const ETCD: &str = "/usr/bin/etcd";
/// The API server's etcd, reachable inside the namespace.
pub const ETCD_URL: &str = "http://127.0.0.1:2379";

pub struct ApiServer {
    /// Locked to restart the API server (its pid changes).
    cp: Mutex<ControlPlane>,
    apiserver: PathBuf,
    etcd: u32,
    dir: PathBuf,
    // Dropped after the processes in it are stopped (see Drop).
    ns: NetNs,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.cp().stop();
        process::stop(self.etcd, Duration::from_secs(5));
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl ApiServer {
    /// etcd and kube-apiserver in a fresh netns, ready, with the CRDs
    /// established.
    pub fn start() -> Result<ApiServer> {
        let bins = KubeBinaries::locate().context("the control plane's binaries")?;
        let name = names::unique();
        let ns = NetNs::new(&name)?;
        let dir = std::env::temp_dir().join(format!("{name}-kube"));
        let cp = ControlPlane::new(
            ns.name(),
            &dir,
            Ipv4Addr::LOCALHOST,
            ETCD_URL,
            &bins.kubectl,
        )?;
        let mut server = ApiServer {
            cp: Mutex::new(cp),
            apiserver: bins.apiserver.clone(),
            etcd: 0,
            dir,
            ns,
        };
        server.cp().write_credentials()?;
        let args: Vec<String> = [
            "--name",
            "kube",
            "--data-dir",
            &server.dir.join("etcd").display().to_string(),
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
        server.etcd = process::spawn_detached(
            server.ns.name(),
            Path::new(ETCD),
            &args,
            &server.dir.join("etcd.log"),
        )?;
        server.start_apiserver()?;
        server.apply_crds()?;
        Ok(server)
    }

    fn cp(&self) -> MutexGuard<'_, ControlPlane> {
        self.cp.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// kubectl as the admin (see `ControlPlane::kubectl`).
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.cp().kubectl(args)
    }

    pub fn netns(&self) -> &str {
        self.ns.name()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.cp().admin_kubeconfig()
    }

    /// Weir's CRDs from deploy/crds, established.
    fn apply_crds(&self) -> Result<()> {
        let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds");
        self.kubectl(&["apply", "-f", crds.to_str().context("UTF-8 path")?])?;
        self.cp().wait_crds_established(&[
            "weiridentities.weir.io",
            "weirendpoints.weir.io",
            "weirnodes.weir.io",
        ])
    }

    /// Stops kube-apiserver (etcd keeps running).
    pub fn stop_apiserver(&self) {
        self.cp().stop();
    }

    /// Starts kube-apiserver again and waits until it is ready.
    pub fn start_apiserver(&self) -> Result<()> {
        let mut cp = self.cp();
        cp.start_apiserver(&self.apiserver)?;
        cp.wait_ready()?;
        Ok(())
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) kube-apiserver: it keeps its
    /// connections but answers nothing, as a hung server.
    pub fn freeze_apiserver(&self, frozen: bool) -> Result<()> {
        let signal = if frozen {
            nix::sys::signal::Signal::SIGSTOP
        } else {
            nix::sys::signal::Signal::SIGCONT
        };
        let pid = nix::unistd::Pid::from_raw(self.cp().apiserver_pid as i32);
        nix::sys::signal::kill(pid, signal).context("signal kube-apiserver")?;
        Ok(())
    }

    /// Deletes every Weir identity, endpoint and node.
    pub fn delete_weir_state(&self) -> Result<()> {
        self.kubectl(&[
            "delete",
            "weiridentities,weirendpoints,weirnodes",
            "--all",
            "--all-namespaces",
            "--wait=true",
        ])?;
        Ok(())
    }

    /// `kubectl create` of YAML given inline.
    pub fn create(&self, yaml: &str) -> Result<String> {
        self.cp().kubectl_stdin(&["create", "-f", "-"], yaml)
    }

    /// Runs `f` on a thread inside the server's netns (where 127.0.0.1:6443
    /// is the API server), on a runtime of its own.
    pub fn run_inside<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        netns::run_in(self.netns(), f)
    }
}
