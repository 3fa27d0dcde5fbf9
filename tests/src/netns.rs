//! Network namespaces made for a test, removed when dropped.

use std::fs::File;
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
        run(Command::new("ip").args(["netns", "add", name]))?;
        let ns = NetNs {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
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
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).with_context(|| format!("open {path}"))?;
        thread::spawn(move || -> Result<T> {
            setns(&file, CloneFlags::CLONE_NEWNET).context("setns")?;
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in netns panicked"))?
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
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
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
