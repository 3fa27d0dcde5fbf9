//! The ipcache the agent wants in the datapath: every pod address in the
//! cluster (local and remote), every node address, and every CIDR that a
//! policy names, each mapped to its identity.
//!
//! Pod and node addresses also carry their address identity: that of the
//! most specific prefix a NetworkPolicy `ipBlock` names containing them
//! (the policy engine's `Compiled::addresses`), computed when the entry is
//! built, so a pod created inside a covered range is matched by the rule
//! as soon as its address is in the map, with no policy entry rewritten.
//!
//! Pure state plus a diff: sources (endpoint records, node records, CIDR
//! identities from the policy engine) update [`DesiredIpcache`]; the agent
//! applies [`DesiredIpcache::diff`] to the map, so only what changed is
//! written. Nothing is removed from the map until the sources have listed
//! everything once (`synced`): acting on a partial view would delete live
//! entries.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use weir_abi::{identity, IpcacheValue};
use weir_policy::compile::most_specific;

/// Where an entry came from; an address can be named by several sources and
/// the most specific meaning wins (a pod over a node over a CIDR).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    Cidr,
    Node,
    Endpoint,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredIpcache {
    entries: BTreeMap<IpNetwork, BTreeMap<Origin, IpcacheValue>>,
    /// NetworkPolicy `ipBlock` prefixes with their address identities.
    addresses: BTreeMap<IpNetwork, u32>,
}

/// What to write to the map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpcacheDiff {
    pub upserts: Vec<(IpNetwork, IpcacheValue)>,
    pub removals: Vec<IpNetwork>,
}

const LINK_LOCAL: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0);

fn host_prefix(ip: IpAddr) -> IpNetwork {
    IpNetwork::new(ip, if ip.is_ipv4() { 32 } else { 128 }).expect("full-length prefix")
}

fn node_ipv4(ip: IpAddr) -> [u8; 4] {
    match ip {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(_) => [0; 4],
    }
}

impl DesiredIpcache {
    /// A pod address with its identity, hosted on the node at `node_ip`.
    pub fn set_endpoint(&mut self, ip: IpAddr, identity: u32, node_ip: IpAddr) {
        self.set(
            host_prefix(ip),
            Origin::Endpoint,
            IpcacheValue {
                identity,
                node_ipv4: node_ipv4(node_ip),
                address_identity: 0,
            },
        );
    }

    pub fn remove_endpoint(&mut self, ip: IpAddr) {
        self.unset(host_prefix(ip), Origin::Endpoint);
    }

    /// A node address: this node is `host`, others `remote-node`.
    pub fn set_node(&mut self, ip: IpAddr, is_local: bool) {
        let identity = if is_local {
            identity::HOST
        } else {
            identity::REMOTE_NODE
        };
        self.set(
            host_prefix(ip),
            Origin::Node,
            IpcacheValue {
                identity,
                node_ipv4: node_ipv4(ip),
                address_identity: 0,
            },
        );
    }

    /// Every IPv6 link-local address (`fe80::/10`) is the node's: the only
    /// on-link peer of a pod is the host end of its veth (a point-to-point
    /// link), and link-local addresses are never routed, so a link-local
    /// destination of a pod's packet (or source of one to it) is the node,
    /// whichever of its interfaces' addresses it names. One prefix covers
    /// every pod veth's host end, present and future.
    pub fn set_host_link_local(&mut self) {
        self.set(
            IpNetwork::new(IpAddr::V6(LINK_LOCAL), 10).expect("fe80::/10"),
            Origin::Node,
            IpcacheValue {
                identity: identity::HOST,
                node_ipv4: [0; 4],
                address_identity: 0,
            },
        );
    }

    /// Replaces the set of CIDR identities (from the policy engine).
    pub fn set_cidrs(&mut self, cidrs: &BTreeMap<IpNetwork, u32>) {
        let stale: Vec<IpNetwork> = self
            .entries
            .iter()
            .filter(|(prefix, origins)| {
                origins.contains_key(&Origin::Cidr) && !cidrs.contains_key(prefix)
            })
            .map(|(prefix, _)| *prefix)
            .collect();
        for prefix in stale {
            self.unset(prefix, Origin::Cidr);
        }
        for (prefix, identity) in cidrs {
            self.set(
                *prefix,
                Origin::Cidr,
                IpcacheValue {
                    identity: *identity,
                    node_ipv4: [0; 4],
                    address_identity: 0,
                },
            );
        }
    }

    /// Replaces the NetworkPolicy `ipBlock` prefixes and their address
    /// identities (the policy engine's `Compiled::addresses`).
    pub fn set_address_prefixes(&mut self, addresses: &BTreeMap<IpNetwork, u32>) {
        self.addresses = addresses.clone();
    }

    fn set(&mut self, prefix: IpNetwork, origin: Origin, value: IpcacheValue) {
        self.entries
            .entry(prefix)
            .or_default()
            .insert(origin, value);
    }

    fn unset(&mut self, prefix: IpNetwork, origin: Origin) {
        if let Some(origins) = self.entries.get_mut(&prefix) {
            origins.remove(&origin);
            if origins.is_empty() {
                self.entries.remove(&prefix);
            }
        }
    }

    /// The value the map should hold per prefix: a pod's or node's address
    /// with the address identity of the most specific `ipBlock` prefix
    /// containing it.
    pub fn effective(&self) -> BTreeMap<IpNetwork, IpcacheValue> {
        self.entries
            .iter()
            .filter_map(|(prefix, origins)| {
                let (origin, value) = origins.iter().next_back()?;
                let mut value = *value;
                if *origin != Origin::Cidr {
                    value.address_identity =
                        most_specific(&self.addresses, prefix.ip()).map_or(0, |(_, id)| id);
                }
                Some((*prefix, value))
            })
            .collect()
    }

    /// What turns the map's `current` content into the desired one. With
    /// `synced` false, entries not (yet) desired are kept.
    pub fn diff(&self, current: &BTreeMap<IpNetwork, IpcacheValue>, synced: bool) -> IpcacheDiff {
        let desired = self.effective();
        let upserts = desired
            .iter()
            .filter(|(prefix, value)| current.get(prefix) != Some(value))
            .map(|(prefix, value)| (*prefix, *value))
            .collect();
        let removals = if synced {
            current
                .keys()
                .filter(|p| !desired.contains_key(p))
                .copied()
                .collect()
        } else {
            Vec::new()
        };
        IpcacheDiff { upserts, removals }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn endpoints_nodes_and_cidrs_become_entries() {
        let mut desired = DesiredIpcache::default();
        desired.set_endpoint(ip("10.244.2.5"), 300, ip("10.77.0.12"));
        desired.set_node(ip("10.77.0.11"), true);
        desired.set_node(ip("10.77.0.12"), false);
        desired.set_cidrs(&BTreeMap::from([(
            "203.0.113.0/24".parse().unwrap(),
            16_777_217,
        )]));
        let map = desired.effective();
        assert_eq!(
            map[&"10.244.2.5/32".parse().unwrap()],
            IpcacheValue {
                identity: 300,
                node_ipv4: [10, 77, 0, 12],
                address_identity: 0,
            }
        );
        assert_eq!(
            map[&"10.77.0.11/32".parse().unwrap()].identity,
            identity::HOST
        );
        assert_eq!(
            map[&"10.77.0.12/32".parse().unwrap()].identity,
            identity::REMOTE_NODE
        );
        assert_eq!(map[&"203.0.113.0/24".parse().unwrap()].identity, 16_777_217);
    }

    #[test]
    fn a_pod_wins_over_a_cidr_naming_the_same_address() {
        let mut desired = DesiredIpcache::default();
        desired.set_cidrs(&BTreeMap::from([(
            "10.244.2.5/32".parse().unwrap(),
            16_777_218,
        )]));
        desired.set_endpoint(ip("10.244.2.5"), 300, ip("10.77.0.12"));
        assert_eq!(
            desired.effective()[&"10.244.2.5/32".parse().unwrap()].identity,
            300
        );
        desired.remove_endpoint(ip("10.244.2.5"));
        assert_eq!(
            desired.effective()[&"10.244.2.5/32".parse().unwrap()].identity,
            16_777_218
        );
    }

    #[test]
    fn diff_writes_only_changes_and_removes_only_after_sync() {
        let mut desired = DesiredIpcache::default();
        desired.set_endpoint(ip("10.244.1.2"), 300, ip("10.77.0.11"));
        let stale: IpNetwork = "10.244.9.9/32".parse().unwrap();
        let mut current = BTreeMap::from([(
            stale,
            IpcacheValue {
                identity: 5,
                node_ipv4: [0; 4],
                address_identity: 0,
            },
        )]);
        let before_sync = desired.diff(&current, false);
        assert_eq!(before_sync.upserts.len(), 1);
        assert!(
            before_sync.removals.is_empty(),
            "nothing removed before the first full listing"
        );
        assert_eq!(desired.diff(&current, true).removals, vec![stale]);
        current = desired.effective();
        assert_eq!(desired.diff(&current, true), IpcacheDiff::default());
    }

    #[test]
    fn replacing_cidrs_drops_the_old_ones() {
        let mut desired = DesiredIpcache::default();
        desired.set_cidrs(&BTreeMap::from([(
            "198.51.100.0/24".parse().unwrap(),
            16_777_217,
        )]));
        desired.set_cidrs(&BTreeMap::from([(
            "203.0.113.0/24".parse().unwrap(),
            16_777_218,
        )]));
        let keys: Vec<String> = desired.effective().keys().map(|k| k.to_string()).collect();
        assert_eq!(keys, ["203.0.113.0/24"]);
    }

    #[test]
    fn pod_and_node_addresses_carry_the_most_specific_ip_block_prefix() {
        let net = |s: &str| s.parse::<IpNetwork>().unwrap();
        let mut desired = DesiredIpcache::default();
        desired.set_endpoint(ip("10.244.1.5"), 300, ip("10.77.0.11"));
        desired.set_endpoint(ip("10.244.2.3"), 301, ip("10.77.0.12"));
        desired.set_endpoint(ip("10.245.0.9"), 302, ip("10.77.0.12"));
        desired.set_node(ip("10.77.0.12"), false);
        let (wide, narrow) = (16_777_217, 16_777_218);
        desired.set_cidrs(&BTreeMap::from([
            (net("10.244.0.0/16"), wide),
            (net("10.244.2.3/32"), narrow),
        ]));
        let address = |c| identity::address_identity(c);
        desired.set_address_prefixes(&BTreeMap::from([
            (net("10.244.0.0/16"), address(wide)),
            (net("10.244.2.3/32"), address(narrow)),
        ]));
        let map = desired.effective();
        let at = |s: &str| map[&net(s)];
        assert_eq!(at("10.244.1.5/32").identity, 300);
        assert_eq!(at("10.244.1.5/32").address_identity, address(wide));
        // The /32 a policy names is the pod's entry, with the /32's address
        // identity.
        assert_eq!(at("10.244.2.3/32").identity, 301);
        assert_eq!(at("10.244.2.3/32").address_identity, address(narrow));
        assert_eq!(
            at("10.245.0.9/32").address_identity,
            0,
            "outside every prefix"
        );
        assert_eq!(at("10.77.0.12/32").address_identity, 0);
        // CIDR entries match the outside world by their CIDR identity.
        assert_eq!(at("10.244.0.0/16").address_identity, 0);
        // A new pod in the range gets it at once; a prefix no policy names
        // any more leaves the pods' entries.
        desired.set_endpoint(ip("10.244.7.7"), 303, ip("10.77.0.11"));
        assert_eq!(
            desired.effective()[&net("10.244.7.7/32")].address_identity,
            address(wide)
        );
        desired.set_address_prefixes(&BTreeMap::new());
        let current = map;
        let diff = desired.diff(&current, true);
        assert!(diff.upserts.iter().all(|(_, v)| v.address_identity == 0));
        assert_eq!(diff.upserts.len(), 3, "{diff:?}");
    }

    #[test]
    fn every_ipv6_link_local_address_is_the_host() {
        let mut desired = DesiredIpcache::default();
        desired.set_host_link_local();
        let effective = desired.effective();
        let prefix: IpNetwork = "fe80::/10".parse().unwrap();
        assert_eq!(effective[&prefix].identity, identity::HOST);
        assert_eq!(effective.len(), 1);
    }
}
