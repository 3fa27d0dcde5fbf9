//! Node-level kernel settings of the agent's network namespace.

use std::io;

/// Turns on IPv4 forwarding in the agent's network namespace: pods reach
/// each other and other nodes through the node's routing table.
pub fn enable_ipv4_forwarding() -> io::Result<()> {
    // /proc/sys/net is per network namespace: this writes the agent's own.
    std::fs::write("/proc/sys/net/ipv4/ip_forward", b"1")
}
