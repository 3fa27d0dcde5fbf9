//! Node-level kernel settings of the agent's network namespace.

use std::io;

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const IPV6_FORWARDING: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

/// Turns on IPv4 forwarding in the agent's network namespace: pods reach
/// each other and other nodes through the node's routing table. Already on
/// (kubeadm requires it of every node) means nothing to write, so an agent
/// whose `/proc/sys` is read-only (an unprivileged DaemonSet pod) starts.
pub fn enable_ipv4_forwarding() -> io::Result<()> {
    enable(IP_FORWARD)
}

/// The same for IPv6 (a dual-stack node): `net.ipv6.conf.all.forwarding`.
pub fn enable_ipv6_forwarding() -> io::Result<()> {
    enable(IPV6_FORWARDING)
}

fn enable(key: &str) -> io::Result<()> {
    // /proc/sys/net is per network namespace: this is the agent's own.
    if std::fs::read_to_string(key)?.trim() == "1" {
        return Ok(());
    }
    std::fs::write(key, b"1")
}
