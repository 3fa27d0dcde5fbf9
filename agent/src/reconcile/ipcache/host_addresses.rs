//! The node's own IPv6 addresses, which the ipcache maps to `host` (as the
//! node's IPv4 address): a pod reaching the node over IPv6 (a listener on
//! `[::]`) must meet the policy for the host entity, not that for world.
//!
//! Read from `/proc/net/if_inet6` of the agent's network namespace (the
//! node's) at every reconcile pass: a small file, no netlink dump. An
//! address added to the node is in the ipcache at the next pass.

use std::net::Ipv6Addr;

/// `/proc/net/if_inet6` scope of global (and unique local) addresses;
/// link-local (0x20) ones are covered by `fe80::/10` as a whole
/// ([`super::DesiredIpcache::set_host_link_local`]), loopback (0x10)
/// cannot be reached from a pod.
const SCOPE_GLOBAL: u8 = 0x00;

/// The node's global-scope IPv6 addresses; none when IPv6 is off or the
/// file cannot be read.
pub fn node_ipv6_addresses() -> Vec<Ipv6Addr> {
    std::fs::read_to_string("/proc/net/if_inet6")
        .map(|text| parse(&text))
        .unwrap_or_default()
}

/// Parses `/proc/net/if_inet6`: per line the address as 32 hex digits, the
/// interface index, prefix length, scope and flags in hex, the name.
fn parse(text: &str) -> Vec<Ipv6Addr> {
    let mut addresses: Vec<Ipv6Addr> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let hex = fields.next()?;
            let scope = u8::from_str_radix(fields.nth(2)?, 16).ok()?;
            if scope != SCOPE_GLOBAL || hex.len() != 32 {
                return None;
            }
            u128::from_str_radix(hex, 16).ok().map(Ipv6Addr::from)
        })
        .collect();
    addresses.sort();
    addresses.dedup();
    addresses
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_addresses_only() {
        let text = "fe8000000000000000fc00fffe000001 04 40 20 80     eth0\n\
                    00000000000000000000000000000001 01 80 10 80       lo\n\
                    fd000000000000000000000000000002 04 40 00 82     eth0\n\
                    20010db8000000000000000000000005 05 40 00 80     eth1\n\
                    garbage\n";
        assert_eq!(
            parse(text),
            vec![
                "2001:db8::5".parse::<Ipv6Addr>().unwrap(),
                "fd00::2".parse().unwrap()
            ]
        );
    }
}
