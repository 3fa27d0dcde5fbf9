//! Network namespaces made for a test, removed when dropped.

use std::fs::File;
use std::mem::ManuallyDrop;
use std::process::Command;
use std::thread;

use anyhow::{bail, Context, Result};
use nix::sched::{setns, CloneFlags};

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `name`, with its loopback up.
    pub fn new(name: &str) -> Result<NetNs> {
        add(name)?;
        Ok(NetNs {
            name: name.to_string(),
        })
    }

    /// A handle on an existing namespace that is not deleted on drop.
    pub fn existing(name: &str) -> ManuallyDrop<NetNs> {
        ManuallyDrop::new(NetNs {
            name: name.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Runs a command inside the namespace (`ip netns exec`).
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        run(Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args))
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec("sysctl", &["-q", "-w", &format!("{key}={value}")])
            .map(drop)
    }

    /// Runs `f` on a thread that has entered this namespace, so sockets it
    /// opens and netlink requests it makes belong to the namespace. Sockets
    /// keep their namespace when handed back to other threads.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        run_in(&self.name, f)
    }

    /// The MAC address of `dev`.
    pub fn mac(&self, dev: &str) -> Result<[u8; 6]> {
        let json = self.ip(&["-j", "link", "show", "dev", dev])?;
        let value: serde_json::Value = serde_json::from_str(&json).context("ip -j output")?;
        let text = value[0]["address"]
            .as_str()
            .with_context(|| format!("no address in {json}"))?;
        let mut mac = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut mac {
            let part = parts.next().with_context(|| format!("MAC {text}"))?;
            *byte = u8::from_str_radix(part, 16).with_context(|| format!("MAC {text}"))?;
        }
        Ok(mac)
    }

    /// (rx packets, rx bytes, tx packets, tx bytes) of `dev` as the kernel counts them.
    pub fn link_stats(&self, dev: &str) -> Result<LinkStats> {
        let json = self.ip(&["-j", "-s", "link", "show", "dev", dev])?;
        let value: serde_json::Value = serde_json::from_str(&json).context("ip -j output")?;
        let stats = &value[0]["stats64"];
        let field = |dir: &str, what: &str| -> Result<u64> {
            stats[dir][what]
                .as_u64()
                .with_context(|| format!("ip -s -j: no {dir}.{what} in {json}"))
        };
        Ok(LinkStats {
            rx_packets: field("rx", "packets")?,
            rx_bytes: field("rx", "bytes")?,
            tx_packets: field("tx", "packets")?,
            tx_bytes: field("tx", "bytes")?,
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = delete(&self.name);
    }
}

/// Creates the named namespace (`ip netns add`) with its loopback up.
pub fn add(name: &str) -> Result<()> {
    run(Command::new("ip").args(["netns", "add", name]))?;
    run(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]))?;
    Ok(())
}

/// Deletes the named namespace; a namespace that does not exist is fine.
pub fn delete(name: &str) -> Result<()> {
    if !path(name).exists() {
        return Ok(());
    }
    run(Command::new("ip").args(["netns", "del", name])).map(drop)
}

/// The bind-mount path of a named namespace; an absolute path (such as
/// `/proc/<pid>/ns/net`, a namespace no name pins) stays as it is.
pub fn path(name: &str) -> std::path::PathBuf {
    std::path::Path::new("/run/netns").join(name)
}

/// Every named namespace whose name starts with `prefix`.
pub fn list_with_prefix(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Makes `cmd` run inside the named namespace: the child enters it between
/// fork and exec, keeping the parent's mount namespace (so bpffs and the
/// lab's files stay visible, unlike `ip netns exec`).
pub fn command_in(cmd: &mut Command, name: &str) -> Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;

    let file = File::open(path(name)).with_context(|| format!("open netns {name}"))?;
    let fd = file.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and only
    // makes the async-signal-safe setns(2) syscall on a descriptor that the
    // parent keeps open (it is moved into the closure, which lives in the
    // Command until spawn).
    unsafe {
        cmd.pre_exec(move || {
            let _keep_open = &file;
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

/// Runs `f` on a new thread inside the named namespace (see [`NetNs::run`]).
pub fn run_in<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let file = File::open(path(name)).with_context(|| format!("open netns {name}"))?;
    thread::spawn(move || -> Result<T> {
        setns(&file, CloneFlags::CLONE_NEWNET).context("setns")?;
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in netns panicked"))?
}

/// Runs a command, returning stdout; an error carries stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("spawn {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Two namespaces joined by a veth pair: `a` holds `<prefix>a` (10.99.0.1/24,
/// fd00:99::1/64), `b` holds `<prefix>b` (10.99.0.2/24, fd00:99::2/64).
/// Nothing in either namespace routes anywhere else.
pub struct VethPair {
    pub a: NetNs,
    pub b: NetNs,
    pub dev_a: String,
    pub dev_b: String,
}

impl VethPair {
    pub const ADDR_A: &'static str = "10.99.0.1";
    pub const ADDR_B: &'static str = "10.99.0.2";
    pub const ADDR6_A: &'static str = "fd00:99::1";
    pub const ADDR6_B: &'static str = "fd00:99::2";

    pub fn new(prefix: &str) -> Result<VethPair> {
        let a = NetNs::new(&format!("{prefix}a"))?;
        let b = NetNs::new(&format!("{prefix}b"))?;
        let dev_a = format!("{prefix}a");
        let dev_b = format!("{prefix}b");
        run(Command::new("ip").args([
            "link",
            "add",
            &dev_a,
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            &dev_b,
            "netns",
            b.name(),
        ]))?;
        for (ns, dev, v4, v6) in [
            (&a, &dev_a, Self::ADDR_A, Self::ADDR6_A),
            (&b, &dev_b, Self::ADDR_B, Self::ADDR6_B),
        ] {
            // No router solicitations: keep the links quiet but for the test's traffic.
            ns.sysctl(&format!("net.ipv6.conf.{dev}.router_solicitations"), "0")?;
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", dev])?;
            ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"])?;
            ns.ip(&["link", "set", dev, "up"])?;
        }
        Ok(VethPair { a, b, dev_a, dev_b })
    }
}
