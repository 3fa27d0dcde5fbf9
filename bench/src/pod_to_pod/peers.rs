//! The filtering peers, each on a bare same-node topology of its own:
//! iptables-nft with N stateless rules in the node's FORWARD chain (every
//! packet walks them all: no conntrack shortcut, none matches), and an
//! nftables set of N elements looked up once per packet in a forward
//! chain. The addresses are in 198.18.0.0/15 (benchmarking), so no rule
//! matches the measured traffic. The rules live in the topology's node
//! namespace and go with it.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::topology::Bare;
use weir_tests::netns;

/// The `i`-th address of the rules (198.18.0.1 on).
fn address(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i + 1)
}

/// `iptables-restore` input: `count` DROP rules for addresses nobody uses.
pub fn iptables_rules(count: u32) -> String {
    let mut input = String::from("*filter\n:FORWARD ACCEPT [0:0]\n");
    for i in 0..count {
        input.push_str(&format!("-A FORWARD -s {}/32 -j DROP\n", address(i)));
    }
    input.push_str("COMMIT\n");
    input
}

/// `nft -f` input: a table with a set of `count` addresses and a forward
/// chain dropping what comes from them.
pub fn nft_ruleset(count: u32) -> String {
    let elements: Vec<String> = (0..count).map(|i| address(i).to_string()).collect();
    format!(
        "table ip weir_bench {{\n  set blocked {{\n    type ipv4_addr\n    elements = {{ {} }}\n  }}\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n    ip saddr @blocked drop\n  }}\n}}\n",
        elements.join(", ")
    )
}

/// Feeds `input` to `program ARGS` inside namespace `ns`.
fn feed(ns: &str, program: &str, args: &[&str], input: &str) -> Result<()> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    netns::command_in(&mut cmd, ns)?;
    let mut child = cmd
        .spawn()
        .with_context(|| format!("run {program} (cargo xtask setup installs it)"))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{program} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A same-node topology whose node holds `count` iptables-nft rules.
pub fn iptables(count: u32) -> Result<Bare> {
    let bare = Bare::same_node()?;
    feed(
        &bare.node,
        "iptables-nft-restore",
        &[],
        &iptables_rules(count),
    )?;
    Ok(bare)
}

/// A same-node topology whose node holds an nftables set of `count`.
pub fn nftables(count: u32) -> Result<Bare> {
    let bare = Bare::same_node()?;
    feed(&bare.node, "nft", &["-f", "-"], &nft_ruleset(count))?;
    Ok(bare)
}
