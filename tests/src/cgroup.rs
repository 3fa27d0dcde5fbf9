//! cgroup v2 directories for socket LB: the hooks apply to the sockets of
//! processes inside a cgroup, so tests and the lab put their clients in
//! cgroups they create (and remove).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` on unified
/// hosts, `/sys/fs/cgroup/unified` on hybrid ones).
pub fn cgroup2_root() -> Result<PathBuf> {
    mounts_of_type("cgroup2")?
        .into_iter()
        .next()
        .context("no cgroup2 filesystem is mounted (socket LB needs cgroup v2)")
}

/// The cgroup v1 hierarchies' mount points (none on a unified host).
pub fn v1_hierarchies() -> Result<Vec<PathBuf>> {
    mounts_of_type("cgroup")
}

/// Where filesystems of type `fstype` are mounted, in mount order.
fn mounts_of_type(fstype: &str) -> Result<Vec<PathBuf>> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").context("read /proc/self/mounts")?;
    Ok(mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, target, kind) = (fields.next()?, fields.next()?, fields.next()?);
            (kind == fstype).then(|| PathBuf::from(target))
        })
        .collect())
}

/// A cgroup this process created; removed (its processes killed first)
/// when dropped.
#[derive(Debug)]
pub struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    /// Creates `relative` under the cgroup v2 root (parents included).
    pub fn create(relative: &str) -> Result<Cgroup> {
        let path = cgroup2_root()?.join(relative);
        std::fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(Cgroup { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes `cmd`'s child join this cgroup before it execs.
    pub fn enter_on_exec(&self, cmd: &mut Command) -> Result<()> {
        enter_on_exec(&self.path, cmd)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = remove_tree(&self.path);
    }
}

/// Makes `cmd`'s child join the cgroup at `path` between fork and exec.
pub fn enter_on_exec(path: &Path, cmd: &mut Command) -> Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;

    let procs = File::options()
        .write(true)
        .open(path.join("cgroup.procs"))
        .with_context(|| format!("open {}/cgroup.procs", path.display()))?;
    let fd = procs.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and only
    // makes the async-signal-safe write(2) syscall ("0" = the writing
    // process) on a descriptor the Command keeps open until spawn.
    unsafe {
        cmd.pre_exec(move || {
            let _keep_open = &procs;
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

/// Removes a cgroup tree: `cgroup.kill` each level, wait for it to empty,
/// rmdir deepest first. Absent is fine.
pub fn remove_tree(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_tree(&entry.path())?;
        }
    }
    let _ = std::fs::write(path.join("cgroup.kill"), "1");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                bail!("remove cgroup {}: {e}", path.display())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}
