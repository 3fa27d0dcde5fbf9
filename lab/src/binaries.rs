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
}
