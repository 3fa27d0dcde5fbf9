//! The jumps from the built-in chains into kube-proxy's, which kube-proxy
//! ensures one `iptables` call at a time on every full sync rather than
//! through iptables-restore (it must not own PREROUTING and the others):
//! `iptablesJumpChains` and the kubelet duplicates in proxier.go.

use super::chains::*;

pub struct Jump {
    pub table: &'static str,
    pub from: &'static str,
    pub to: &'static str,
    /// `-m conntrack --ctstate NEW` first.
    new_only: bool,
    comment: Option<&'static str>,
}

impl Jump {
    /// The match arguments, before `-j <to>`.
    pub fn args(&self) -> Vec<&'static str> {
        let mut args = Vec::with_capacity(8);
        if self.new_only {
            args.extend(["-m", "conntrack", "--ctstate", "NEW"]);
        }
        if let Some(comment) = self.comment {
            args.extend(["-m", "comment", "--comment", comment]);
        }
        args
    }
}

const fn jump(
    table: &'static str,
    from: &'static str,
    to: &'static str,
    new_only: bool,
    comment: Option<&'static str>,
) -> Jump {
    Jump {
        table,
        from,
        to,
        new_only,
        comment,
    }
}

const EXTERNAL: Option<&str> = Some("kubernetes externally-visible service portals");
const PORTALS: Option<&str> = Some("kubernetes service portals");
const FIREWALL: Option<&str> = Some("kubernetes load balancer firewall");

/// In kube-proxy's order; each is inserted at the top of its chain.
pub const JUMPS: &[Jump] = &[
    jump("filter", "INPUT", EXTERNAL_SERVICES, true, EXTERNAL),
    jump("filter", "FORWARD", EXTERNAL_SERVICES, true, EXTERNAL),
    jump(
        "filter",
        "INPUT",
        NODEPORTS,
        false,
        Some("kubernetes health check service ports"),
    ),
    jump("filter", "FORWARD", SERVICES, true, PORTALS),
    jump("filter", "OUTPUT", SERVICES, true, PORTALS),
    jump(
        "filter",
        "FORWARD",
        FORWARD,
        false,
        Some("kubernetes forwarding rules"),
    ),
    jump("filter", "INPUT", PROXY_FIREWALL, true, FIREWALL),
    jump("filter", "OUTPUT", PROXY_FIREWALL, true, FIREWALL),
    jump("filter", "FORWARD", PROXY_FIREWALL, true, FIREWALL),
    jump("nat", "OUTPUT", SERVICES, false, PORTALS),
    jump("nat", "PREROUTING", SERVICES, false, PORTALS),
    jump(
        "nat",
        "POSTROUTING",
        POSTROUTING,
        false,
        Some("kubernetes postrouting rules"),
    ),
    // kubelet's anti-martian chain.
    jump("filter", "INPUT", KUBELET_FIREWALL, false, None),
    jump("filter", "OUTPUT", KUBELET_FIREWALL, false, None),
];
