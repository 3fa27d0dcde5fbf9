//! The ADD success result, shaped for the requested specification version.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

use crate::mac::MacAddr;
use crate::version::CniVersion;

/// What ADD made: a veth pair whose pod end holds one IPv4 /32 address.
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
    /// The MTU set on both ends of the veth.
    pub mtu: u32,
}

/// Index of the pod interface in `interfaces` (the host veth is 0).
const POD_INTERFACE_INDEX: usize = 1;

impl AddResult {
    pub fn to_json(&self, version: CniVersion) -> Value {
        let mut ip = json!({
            "address": format!("{}/32", self.pod_ip),
            "gateway": self.gateway.to_string(),
            "interface": POD_INTERFACE_INDEX,
        });
        if version.ip_entries_carry_version() {
            ip["version"] = json!("4");
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
            "ips": [ip],
            "routes": [{"dst": "0.0.0.0/0", "gw": self.gateway.to_string()}],
            "dns": {},
        })
    }
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
            mtu: 1450,
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
}
