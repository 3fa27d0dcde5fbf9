//! The programs the lab runs, found beside the running executable, so a
//! release `weir-lab` runs release agents and a test binary runs the debug
//! build next to it.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// The programs the lab runs.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub agent: PathBuf,
    pub cni: PathBuf,
    pub pod_server: PathBuf,
    /// `weir-lab-client`: runs inside a pod's netns and cgroup.
    pub client: PathBuf,
}

impl Binaries {
    /// The workspace's binaries next to the running executable (a test binary
    /// in target/*/deps or a binary in target/*).
    pub fn locate() -> Result<Binaries> {
        let exe = std::env::current_exe()?;
        let mut dir = exe
            .parent()
            .context("executable has a directory")?
            .to_path_buf();
        if dir.ends_with("deps") {
            dir.pop();
        }
        let find = |name: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            if !path.is_file() {
                bail!(
                    "{} not found: build the workspace first (cargo xtask build)",
                    path.display()
                );
            }
            Ok(path)
        };
        Ok(Binaries {
            agent: find("weir-agent")?,
            cni: find("weir-cni")?,
            pod_server: find("weir-lab-pod")?,
            client: find("weir-lab-client")?,
        })
    }
}

impl Binaries {
    /// The `weir` CLI, built beside the agent.
    pub fn weir(&self) -> PathBuf {
        self.agent.with_file_name("weir")
    }

    /// `weir-lab` itself (its `kubelet` command is the nodes' kubelet
    /// daemon), built beside the agent.
    pub fn lab(&self) -> PathBuf {
        self.agent.with_file_name("weir-lab")
    }

    /// `weir-relay`, built beside the agent.
    pub fn relay(&self) -> PathBuf {
        self.agent.with_file_name("weir-relay")
    }

    /// `weir-operator`, built beside the agent.
    pub fn operator(&self) -> PathBuf {
        self.agent.with_file_name("weir-operator")
    }
}

/// The Kubernetes control plane's programs (v1.20.2) and Debian's kubectl,
/// which `cargo xtask setup` builds once per machine into its cache and
/// links into the clone as `target/kube`.
#[derive(Clone, Debug)]
pub struct KubeBinaries {
    pub apiserver: PathBuf,
    pub controller_manager: PathBuf,
    pub scheduler: PathBuf,
    pub kubectl: PathBuf,
    /// For the lab's real nodes.
    pub kubelet: PathBuf,
    /// The upstream e2e suite, run against real nodes.
    pub e2e_test: PathBuf,
}

/// Overrides where the programs are looked for (a directory holding them).
pub const KUBE_BIN_ENV: &str = "WEIR_KUBE_BIN";

impl KubeBinaries {
    /// `$WEIR_KUBE_BIN`, or `kube/bin` in the nearest directory above the
    /// running executable that has one (the clone's `target/`). Errors,
    /// naming the fix, when a program is missing: suites never skip.
    pub fn locate() -> Result<KubeBinaries> {
        let dir = match std::env::var_os(KUBE_BIN_ENV) {
            Some(dir) => PathBuf::from(dir),
            None => {
                let exe = std::env::current_exe()?;
                exe.ancestors()
                    .map(|dir| dir.join("kube/bin"))
                    .find(|bin| bin.is_dir())
                    .with_context(|| {
                        format!(
                            "no kube/bin above {}: run `cargo xtask setup`, which builds \
                             kube-apiserver and its peers (or set {KUBE_BIN_ENV})",
                            exe.display()
                        )
                    })?
            }
        };
        let find = |name: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            if !path.is_file() {
                bail!(
                    "{} not found: run `cargo xtask setup` (or set {KUBE_BIN_ENV})",
                    path.display()
                );
            }
            Ok(path)
        };
        Ok(KubeBinaries {
            apiserver: find("kube-apiserver")?,
            controller_manager: find("kube-controller-manager")?,
            scheduler: find("kube-scheduler")?,
            kubectl: find("kubectl")?,
            kubelet: find("kubelet")?,
            e2e_test: find("e2e.test")?,
        })
    }
}
