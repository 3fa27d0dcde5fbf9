//! Long-lived processes of the lab (agents, pod servers): started inside a
//! network namespace in their own session, so they outlive the `weir-lab`
//! invocation that started them, with output in a log file.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use weir_tests::netns;

/// Starts `program args` in the named network namespace, detached, with
/// stdout and stderr appended to `log`. Returns the pid.
pub fn spawn_detached(
    netns_name: &str,
    program: &Path,
    args: &[String],
    log: &Path,
) -> Result<u32> {
    spawn_detached_in(netns_name, None, program, args, log)
}

/// [`spawn_detached`], the process also joining `cgroup` (when given).
pub fn spawn_detached_in(
    netns_name: &str,
    cgroup: Option<&Path>,
    program: &Path,
    args: &[String],
    log: &Path,
) -> Result<u32> {
    use std::os::unix::process::CommandExt;

    let log_file = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .process_group(0);
    netns::command_in(&mut cmd, netns_name)?;
    if let Some(cgroup) = cgroup {
        weir_tests::cgroup::enter_on_exec(cgroup, &mut cmd)?;
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("start {}", program.display()))?;
    Ok(child.id())
}

/// True if a process with this pid exists. Pid 0 (never started) is not
/// a process: signalling it would signal our whole process group.
pub fn alive(pid: u32) -> bool {
    pid != 0 && kill(Pid::from_raw(pid as i32), None).is_ok()
}

/// Stops a process: SIGTERM, up to `grace` to exit, then SIGKILL. Reaps it
/// if it is our child.
pub fn stop(pid: u32, grace: Duration) {
    if pid == 0 {
        return;
    }
    let target = Pid::from_raw(pid as i32);
    if kill(target, Signal::SIGTERM).is_err() {
        return;
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        reap(target);
        if !alive(pid) {
            return;
        }
        sleep(Duration::from_millis(20));
    }
    let _ = kill(target, Signal::SIGKILL);
    for _ in 0..50 {
        reap(target);
        if !alive(pid) {
            return;
        }
        sleep(Duration::from_millis(20));
    }
}

/// Kills a process with SIGKILL at once and waits (bounded) until it is
/// gone, reaping it if it is our child.
pub fn kill_now(pid: u32) -> Result<()> {
    if !alive(pid) {
        anyhow::bail!("no process {pid} to kill");
    }
    let target = Pid::from_raw(pid as i32);
    kill(target, Signal::SIGKILL).with_context(|| format!("SIGKILL {pid}"))?;
    for _ in 0..250 {
        reap(target);
        if !alive(pid) {
            return Ok(());
        }
        sleep(Duration::from_millis(20));
    }
    anyhow::bail!("process {pid} still there 5 s after SIGKILL")
}

fn reap(pid: Pid) {
    let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
}

/// Every process running inside the named network namespace.
pub fn pids_in_netns(netns_name: &str) -> Vec<u32> {
    Command::new("ip")
        .args(["netns", "pids", netns_name])
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}
