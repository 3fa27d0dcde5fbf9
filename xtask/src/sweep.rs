//! Removes what crashed test runs left behind.
//!
//! Test objects are named `wt<pid>x<n>...` (see tests/src/names.rs): network
//! namespaces (with any process still inside), bpffs pin directories, lab
//! directories and cgroups (with their processes) whose creating process no
//! longer runs are removed. Links and qdiscs live inside those namespaces and go
//! with them.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::cmd::step;

/// The pid encoded in a test object name, if the name is one of ours.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("wt")?;
    let (pid, _) = rest.split_once('x')?;
    pid.parse().ok()
}

fn is_stale(name: &str) -> bool {
    owner_pid(name).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

pub fn stale_test_objects() {
    step("sweeping objects left by earlier test runs");
    let mut removed = 0;
    if let Ok(entries) = fs::read_dir("/run/netns") {
        for name in entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
        {
            if !is_stale(&name) {
                continue;
            }
            // Lab agents and pod servers of a crashed run still live there.
            kill_processes_in(&name);
            if Command::new("ip")
                .args(["netns", "del", &name])
                .status()
                .is_ok_and(|s| s.success())
            {
                removed += 1;
            }
        }
    }
    // etcd servers of the identity tests keep their data in /tmp/wt<pid>x<n>.
    if let Ok(entries) = fs::read_dir("/tmp") {
        for entry in entries.filter_map(Result::ok) {
            if !is_stale(&entry.file_name().to_string_lossy()) {
                continue;
            }
            kill_processes_mentioning(&entry.path().to_string_lossy());
            if fs::remove_dir_all(entry.path()).is_ok() {
                removed += 1;
            }
        }
    }
    if let Ok(entries) = fs::read_dir("/run/weir-lab") {
        for entry in entries.filter_map(Result::ok) {
            if is_stale(&entry.file_name().to_string_lossy())
                && fs::remove_dir_all(entry.path()).is_ok()
            {
                removed += 1;
            }
        }
    }
    if let Ok(entries) = fs::read_dir("/sys/fs/bpf") {
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_stale(&name) && fs::remove_dir_all(entry.path()).is_ok() {
                removed += 1;
            }
        }
    }
    removed += stale_cgroups();
    eprintln!("    removed {removed}");
}

/// Test cgroups (`<cgroup2>/wt<pid>x<n>`) and test-lab cgroups
/// (`<cgroup2>/weir-lab/wt<pid>x<n>`) of runs that are gone: their
/// processes are killed (cgroup.kill) and the directories removed, deepest
/// first.
fn stale_cgroups() -> usize {
    let Some(root) = cgroup2_root() else {
        return 0;
    };
    let mut removed = 0;
    for dir in [root.clone(), root.join("weir-lab")] {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            if is_stale(&entry.file_name().to_string_lossy()) && remove_cgroup(&entry.path()) {
                removed += 1;
            }
        }
    }
    removed
}

fn cgroup2_root() -> Option<std::path::PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(2) == Some(&"cgroup2")).then(|| std::path::PathBuf::from(fields[1]))
    })
}

fn remove_cgroup(path: &Path) -> bool {
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&entry.path());
            }
        }
    }
    let _ = fs::write(path.join("cgroup.kill"), "1");
    for _ in 0..100 {
        if fs::remove_dir(path).is_ok() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

fn kill_processes_in(netns: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", netns]).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let _ = Command::new("kill").args(["-KILL", pid]).status();
    }
}

/// Kills every process whose command line mentions `needle` (a test
/// object's unique path).
fn kill_processes_mentioning(needle: &str) {
    let Ok(entries) = fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            let _ = Command::new("kill").args(["-KILL", &name]).status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::owner_pid;

    #[test]
    fn reads_the_owner_pid_of_test_names() {
        assert_eq!(owner_pid("wt1234x0a"), Some(1234));
        assert_eq!(owner_pid("wt77x12"), Some(77));
        assert_eq!(owner_pid("weir"), None);
        assert_eq!(owner_pid("wtx1"), None);
        assert_eq!(owner_pid("lxc12ab"), None);
    }
}
