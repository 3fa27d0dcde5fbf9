//! The ADD success result, shaped for the requested specification version.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

use crate::mac::MacAddr;
use crate::version::CniVersion;
use crate::veth::PodIpv6;

/// What ADD made: a veth pair whose pod end holds one IPv4 /32 address,
/// and on a dual-stack node one IPv6 /128.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddResult {
    pub host_ifname: String,
    pub host_mac: MacAddr,
    pub pod_ifname: String,
    pub pod_mac: MacAddr,
    /// `CNI_NETNS`, reported as the pod interface's sandbox.
    pub sandbox: String,
    pub pod_ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    /// `None` on an IPv4-only node.
    pub ipv6: Option<PodIpv6>,
    /// The MTU set on both ends of the veth.
    pub mtu: u32,
}

/// Index of the pod interface in `interfaces` (the host veth is 0).
const POD_INTERFACE_INDEX: usize = 1;

impl AddResult {
    pub fn to_json(&self, version: CniVersion) -> Value {
        let mut ips = vec![ip_entry(
            format!("{}/32", self.pod_ip),
            self.gateway.to_string(),
            "4",
            version,
        )];
        let mut routes = vec![json!({"dst": "0.0.0.0/0", "gw": self.gateway.to_string()})];
        if let Some(ipv6) = &self.ipv6 {
            ips.push(ip_entry(
                format!("{}/128", ipv6.address),
                ipv6.gateway.to_string(),
                "6",
                version,
            ));
            routes.push(json!({"dst": "::/0", "gw": ipv6.gateway.to_string()}));
        }
        let mut interfaces = json!([
            {"name": self.host_ifname, "mac": self.host_mac.to_string()},
            {"name": self.pod_ifname, "mac": self.pod_mac.to_string(), "sandbox": self.sandbox},
        ]);
        if version.interfaces_carry_mtu() {
            interfaces[0]["mtu"] = json!(self.mtu);
            interfaces[POD_INTERFACE_INDEX]["mtu"] = json!(self.mtu);
        }
        json!({
            "cniVersion": version.as_str(),
            "interfaces": interfaces,
            "ips": ips,
            "routes": routes,
            "dns": {},
        })
    }
}

/// One `ips` entry on the pod interface; 0.x results name the family.
fn ip_entry(address: String, gateway: String, family: &str, version: CniVersion) -> Value {
    let mut ip = json!({
        "address": address,
        "gateway": gateway,
        "interface": POD_INTERFACE_INDEX,
    });
    if version.ip_entries_carry_version() {
        ip["version"] = json!(family);
    }
    ip
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result() -> AddResult {
        AddResult {
            host_ifname: "lxcba7816bf8f0".into(),
            host_mac: "aa:bb:cc:dd:ee:01".parse().unwrap(),
            pod_ifname: "eth0".into(),
            pod_mac: "0a:bb:cc:dd:ee:02".parse().unwrap(),
            sandbox: "/run/netns/pod".into(),
            pod_ip: Ipv4Addr::new(10, 244, 1, 5),
            gateway: Ipv4Addr::new(10, 244, 1, 1),
            ipv6: None,
            mtu: 1450,
        }
    }

    fn dual_stack_result() -> AddResult {
        AddResult {
            ipv6: Some(PodIpv6 {
                address: "fd00:10:244:1::5".parse().unwrap(),
                gateway: "fd00:10:244:1::1".parse().unwrap(),
            }),
            ..result()
        }
    }

    #[test]
    fn result_1_x_has_no_ip_version_and_1_1_reports_the_mtu() {
        for version in [CniVersion::V1_0_0, CniVersion::V1_1_0] {
            let mut interfaces = json!([
                {"name": "lxcba7816bf8f0", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "eth0", "mac": "0a:bb:cc:dd:ee:02", "sandbox": "/run/netns/pod"},
            ]);
            if version == CniVersion::V1_1_0 {
                interfaces[0]["mtu"] = json!(1450);
                interfaces[1]["mtu"] = json!(1450);
            }
            assert_eq!(
                result().to_json(version),
                json!({
                    "cniVersion": version.as_str(),
                    "interfaces": interfaces,
                    "ips": [{"address": "10.244.1.5/32", "gateway": "10.244.1.1", "interface": 1}],
                    "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}],
                    "dns": {},
                })
            );
        }
    }

    #[test]
    fn result_0_x_carries_ip_version_4() {
        for version in [CniVersion::V0_3_0, CniVersion::V0_3_1, CniVersion::V0_4_0] {
            let value = result().to_json(version);
            assert_eq!(value["cniVersion"], version.as_str());
            assert_eq!(
                value["ips"],
                json!([{"version": "4", "address": "10.244.1.5/32", "gateway": "10.244.1.1", "interface": 1}])
            );
            assert_eq!(value["interfaces"][1]["sandbox"], "/run/netns/pod");
        }
    }

    #[test]
    fn interface_index_points_at_the_sandboxed_interface() {
        let value = result().to_json(CniVersion::V1_1_0);
        let index = value["ips"][0]["interface"].as_u64().unwrap() as usize;
        assert_eq!(value["interfaces"][index]["name"], "eth0");
        assert!(
            value["interfaces"][0].get("sandbox").is_none(),
            "host veth has no sandbox"
        );
    }

    #[test]
    fn dual_stack_1_x_reports_both_addresses_and_default_routes() {
        for version in [CniVersion::V1_0_0, CniVersion::V1_1_0] {
            let value = dual_stack_result().to_json(version);
            assert_eq!(
                value["ips"],
                json!([
                    {"address": "10.244.1.5/32", "gateway": "10.244.1.1", "interface": 1},
                    {"address": "fd00:10:244:1::5/128", "gateway": "fd00:10:244:1::1", "interface": 1},
                ])
            );
            assert_eq!(
                value["routes"],
                json!([
                    {"dst": "0.0.0.0/0", "gw": "10.244.1.1"},
                    {"dst": "::/0", "gw": "fd00:10:244:1::1"},
                ])
            );
            // Everything else is as on an IPv4-only node.
            let mut single = result().to_json(version);
            single["ips"] = value["ips"].clone();
            single["routes"] = value["routes"].clone();
            assert_eq!(value, single);
        }
    }

    #[test]
    fn dual_stack_0_x_carries_both_ip_versions() {
        for version in [CniVersion::V0_3_0, CniVersion::V0_3_1, CniVersion::V0_4_0] {
            let value = dual_stack_result().to_json(version);
            assert_eq!(value["cniVersion"], version.as_str());
            assert_eq!(
                value["ips"],
                json!([
                    {"version": "4", "address": "10.244.1.5/32", "gateway": "10.244.1.1", "interface": 1},
                    {"version": "6", "address": "fd00:10:244:1::5/128", "gateway": "fd00:10:244:1::1", "interface": 1},
                ])
            );
            assert_eq!(
                value["routes"],
                json!([
                    {"dst": "0.0.0.0/0", "gw": "10.244.1.1"},
                    {"dst": "::/0", "gw": "fd00:10:244:1::1"},
                ])
            );
        }
    }

    #[test]
    fn single_stack_results_have_one_address_and_one_route_in_every_version() {
        for version in [
            CniVersion::V0_3_0,
            CniVersion::V0_3_1,
            CniVersion::V0_4_0,
            CniVersion::V1_0_0,
            CniVersion::V1_1_0,
        ] {
            let value = result().to_json(version);
            assert_eq!(value["ips"].as_array().unwrap().len(), 1, "{value}");
            assert_eq!(
                value["routes"],
                json!([{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}])
            );
        }
    }
}
