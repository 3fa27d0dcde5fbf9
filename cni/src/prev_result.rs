//! Reading `prevResult` (the result of the attachment's ADD) for CHECK.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use serde_json::Value;

use crate::error::{CniError, ErrorCode};
use crate::mac::MacAddr;

/// What `prevResult` says the pod interface should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedPodInterface {
    pub name: String,
    pub mac: Option<MacAddr>,
    /// IPv4 addresses (host part) `prevResult` assigns to the interface.
    pub ipv4: Vec<Ipv4Addr>,
    /// IPv6 addresses (host part), on a dual-stack node; may be empty.
    pub ipv6: Vec<Ipv6Addr>,
}

/// Finds `ifname` among `prevResult.interfaces` and the addresses assigned
/// to it, at least one IPv4 (Weir always assigns one). A `prevResult` that
/// does not describe it is error 7.
pub fn expected_pod_interface(
    prev_result: &Value,
    ifname: &str,
) -> Result<ExpectedPodInterface, CniError> {
    let interfaces = prev_result
        .get("interfaces")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("prevResult has no interfaces list"))?;
    let index = interfaces
        .iter()
        .position(|interface| {
            interface.get("name").and_then(Value::as_str) == Some(ifname)
                && interface
                    .get("sandbox")
                    .and_then(Value::as_str)
                    .is_some_and(|sandbox| !sandbox.is_empty())
        })
        .ok_or_else(|| {
            invalid(format!(
                "prevResult has no sandbox interface named {ifname}"
            ))
        })?;

    let mac = match interfaces[index].get("mac").and_then(Value::as_str) {
        None | Some("") => None,
        Some(text) => Some(text.parse::<MacAddr>().map_err(|error| {
            invalid("prevResult has an invalid mac").with_details(error.to_string())
        })?),
    };

    let mut ipv4 = Vec::new();
    let mut ipv6 = Vec::new();
    for ip in prev_result
        .get("ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if ip.get("interface").and_then(Value::as_u64) != Some(index as u64) {
            continue;
        }
        let text = ip
            .get("address")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("prevResult has an ips entry without address"))?;
        match text.parse::<IpNetwork>() {
            Ok(IpNetwork::V4(network)) => ipv4.push(network.ip()),
            Ok(IpNetwork::V6(network)) => ipv6.push(network.ip()),
            Err(error) => {
                return Err(invalid("prevResult has an invalid address")
                    .with_details(format!("{text:?}: {error}")))
            }
        }
    }
    if ipv4.is_empty() {
        return Err(invalid(format!(
            "prevResult assigns no IPv4 address to {ifname}"
        )));
    }

    Ok(ExpectedPodInterface {
        name: ifname.to_string(),
        mac,
        ipv4,
        ipv6,
    })
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(ErrorCode::InvalidConfig, msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn prev_result() -> Value {
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "lxcba7816bf8f0", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "eth0", "mac": "0a:bb:cc:dd:ee:02", "sandbox": "/run/netns/pod"},
            ],
            "ips": [{"address": "10.244.1.5/32", "gateway": "10.244.1.1", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}],
            "dns": {},
        })
    }

    #[test]
    fn reads_the_pod_interface_and_its_addresses() {
        assert_eq!(
            expected_pod_interface(&prev_result(), "eth0").unwrap(),
            ExpectedPodInterface {
                name: "eth0".into(),
                mac: Some("0a:bb:cc:dd:ee:02".parse().unwrap()),
                ipv4: vec![Ipv4Addr::new(10, 244, 1, 5)],
                ipv6: vec![],
            }
        );
    }

    #[test]
    fn reads_a_dual_stack_result() {
        for carries_version in [false, true] {
            let mut value = prev_result();
            value["ips"] = json!([
                {"address": "10.244.1.5/32", "gateway": "10.244.1.1", "interface": 1},
                {"address": "fd00:10:244:1::5/128", "gateway": "fd00:10:244:1::1", "interface": 1},
                {"address": "fd00::9/128", "interface": 0},
            ]);
            if carries_version {
                value["ips"][0]["version"] = json!("4");
                value["ips"][1]["version"] = json!("6");
                value["ips"][2]["version"] = json!("6");
            }
            let expected = expected_pod_interface(&value, "eth0").unwrap();
            assert_eq!(expected.ipv4, vec![Ipv4Addr::new(10, 244, 1, 5)]);
            assert_eq!(
                expected.ipv6,
                vec!["fd00:10:244:1::5".parse::<Ipv6Addr>().unwrap()]
            );
        }
    }

    #[test]
    fn ipv6_alone_is_not_enough() {
        let mut value = prev_result();
        value["ips"] = json!([{"address": "fd00:10:244:1::5/128", "interface": 1}]);
        assert_eq!(
            expected_pod_interface(&value, "eth0").unwrap_err().code,
            ErrorCode::InvalidConfig
        );
        value["ips"][0]["address"] = json!("fd00:10:244:1::zz/128");
        assert_eq!(
            expected_pod_interface(&value, "eth0").unwrap_err().code,
            ErrorCode::InvalidConfig
        );
    }

    #[test]
    fn accepts_0_x_results_with_ip_version() {
        let mut value = prev_result();
        value["ips"][0]["version"] = json!("4");
        assert_eq!(
            expected_pod_interface(&value, "eth0").unwrap().ipv4.len(),
            1
        );
    }

    #[test]
    fn ignores_ipv6_and_other_interfaces_addresses() {
        let mut value = prev_result();
        value["ips"] = json!([
            {"address": "10.0.0.9/32", "interface": 0},
            {"address": "fd00::5/128", "interface": 1},
            {"address": "10.244.1.5/24", "interface": 1},
        ]);
        assert_eq!(
            expected_pod_interface(&value, "eth0").unwrap().ipv4,
            vec![Ipv4Addr::new(10, 244, 1, 5)]
        );
    }

    #[test]
    fn a_prev_result_not_describing_the_interface_is_error_7() {
        let wrong_name = expected_pod_interface(&prev_result(), "net1").unwrap_err();
        assert_eq!(wrong_name.code, ErrorCode::InvalidConfig);

        let mut host_only = prev_result();
        host_only["interfaces"][1]
            .as_object_mut()
            .unwrap()
            .remove("sandbox");
        assert_eq!(
            expected_pod_interface(&host_only, "eth0").unwrap_err().code,
            ErrorCode::InvalidConfig
        );

        let mut no_ips = prev_result();
        no_ips["ips"] = json!([]);
        assert_eq!(
            expected_pod_interface(&no_ips, "eth0").unwrap_err().code,
            ErrorCode::InvalidConfig
        );

        let mut bad_address = prev_result();
        bad_address["ips"][0]["address"] = json!("10.244.1.300/32");
        assert_eq!(
            expected_pod_interface(&bad_address, "eth0")
                .unwrap_err()
                .code,
            ErrorCode::InvalidConfig
        );

        let mut bad_mac = prev_result();
        bad_mac["interfaces"][1]["mac"] = json!("nope");
        assert_eq!(
            expected_pod_interface(&bad_mac, "eth0").unwrap_err().code,
            ErrorCode::InvalidConfig
        );

        assert_eq!(
            expected_pod_interface(&json!({}), "eth0").unwrap_err().code,
            ErrorCode::InvalidConfig
        );
    }
}
