//! The network configuration on stdin: decoding (error 6), version
//! negotiation (error 1) and validation of Weir's keys (error 7).

use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::attachment::Attachment;
use crate::env::Command;
use crate::error::{CniError, ErrorCode};
use crate::version::{self, CniVersion};

/// MTU used when the configuration sets none.
pub const DEFAULT_MTU: u32 = 1500;
/// The smallest MTU IPv4 allows.
const MIN_MTU: u64 = 68;
const MAX_MTU: u64 = 65535;

/// The GC key for attachments still in use.
const VALID_ATTACHMENTS_KEY: &str = "cni.dev/valid-attachments";
/// The key's name in an earlier draft; libcni sends both.
const LEGACY_ATTACHMENTS_KEY: &str = "cni.dev/attachments";

#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    pub cni_version: CniVersion,
    pub name: String,
    pub plugin_type: String,
    /// Path of the agent's unix socket (`agentSocket`).
    pub agent_socket: PathBuf,
    /// Interface MTU unless the agent says otherwise (`mtu`).
    pub mtu: u32,
    /// The previous result (CHECK, DEL), undecoded.
    pub prev_result: Option<Value>,
    /// Every top-level key, for commands that reject unsupported ones.
    keys: Vec<String>,
    /// GC's `cni.dev/valid-attachments`, undecoded.
    valid_attachments: Option<Value>,
    /// The `portMappings` capability (`runtimeConfig.portMappings`, as the
    /// portmap plugin takes it): the pod's host ports.
    pub port_mappings: Vec<PortMapping>,
}

/// One entry of `runtimeConfig.portMappings`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// As given (`tcp` when absent); the agent checks it.
    pub protocol: String,
    /// As given (empty when absent); the agent checks it.
    pub host_ip: String,
}

/// `runtimeConfig.portMappings`: a list of objects with `hostPort` and
/// `containerPort` (1-65535), optional `protocol` and `hostIP` strings.
fn port_mappings(object: &Map<String, Value>) -> Result<Vec<PortMapping>, CniError> {
    let Some(mappings) = object
        .get("runtimeConfig")
        .and_then(|runtime| runtime.get("portMappings"))
    else {
        return Ok(Vec::new());
    };
    if mappings.is_null() {
        return Ok(Vec::new());
    }
    let entries = mappings.as_array().ok_or_else(|| {
        invalid("runtimeConfig.portMappings must be a list")
            .with_details(format!("portMappings is {mappings}"))
    })?;
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let port = |key: &str| -> Result<u16, CniError> {
                entry
                    .get(key)
                    .and_then(Value::as_u64)
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p != 0)
                    .ok_or_else(|| {
                        invalid(format!(
                            "runtimeConfig.portMappings[{i}].{key} must be a port (1-65535)"
                        ))
                        .with_details(format!("entry is {entry}"))
                    })
            };
            let text = |key: &str, default: &str| -> Result<String, CniError> {
                match entry.get(key) {
                    None | Some(Value::Null) => Ok(default.to_string()),
                    Some(Value::String(text)) => Ok(text.clone()),
                    Some(other) => Err(invalid(format!(
                        "runtimeConfig.portMappings[{i}].{key} must be a string"
                    ))
                    .with_details(format!("{key} is {other}"))),
                }
            };
            Ok(PortMapping {
                host_port: port("hostPort")?,
                container_port: port("containerPort")?,
                protocol: text("protocol", "tcp")?,
                host_ip: text("hostIP", "")?,
            })
        })
        .collect()
}

/// The `cniVersion` on stdin if it can be read at all: errors should be
/// reported in the version the runtime asked for.
pub fn peek_version(stdin: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(stdin).ok()?;
    value
        .get("cniVersion")?
        .as_str()
        .filter(|version| !version.is_empty())
        .map(str::to_string)
}

impl NetworkConfig {
    /// Decodes and validates the configuration for `command`.
    pub fn parse(stdin: &[u8], command: Command) -> Result<Self, CniError> {
        let value: Value = serde_json::from_slice(stdin).map_err(|error| {
            CniError::new(ErrorCode::Decode, "failed to decode network configuration")
                .with_details(error.to_string())
        })?;
        let Value::Object(object) = value else {
            return Err(invalid("network configuration must be a JSON object"));
        };

        let requested = required_string(&object, "cniVersion")?;
        let cni_version = version::negotiate(&requested, command)?;

        let name = required_string(&object, "name")?;
        validate_network_name(&name)?;
        let plugin_type = required_string(&object, "type")?;

        let agent_socket = match object.get("agentSocket") {
            None | Some(Value::Null) => PathBuf::from(weir_agent_api::DEFAULT_SOCKET),
            Some(Value::String(path)) if !path.is_empty() => PathBuf::from(path),
            Some(other) => {
                return Err(invalid("agentSocket must be a non-empty string")
                    .with_details(format!("agentSocket is {other}")))
            }
        };

        let mtu = match object.get("mtu") {
            None | Some(Value::Null) => DEFAULT_MTU,
            Some(value) => match value.as_u64() {
                Some(mtu) if (MIN_MTU..=MAX_MTU).contains(&mtu) => mtu as u32,
                _ => {
                    return Err(invalid(format!(
                        "mtu must be an integer from {MIN_MTU} to {MAX_MTU}"
                    ))
                    .with_details(format!("mtu is {value}")))
                }
            },
        };

        let prev_result = match object.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(value @ Value::Object(_)) => Some(value.clone()),
            Some(other) => {
                return Err(invalid("prevResult must be an object")
                    .with_details(format!("prevResult is {other}")))
            }
        };

        let valid_attachments = object
            .get(VALID_ATTACHMENTS_KEY)
            .or_else(|| object.get(LEGACY_ATTACHMENTS_KEY))
            .cloned();

        Ok(Self {
            cni_version,
            name,
            plugin_type,
            agent_socket,
            mtu,
            prev_result,
            port_mappings: port_mappings(&object)?,
            keys: object.keys().cloned().collect(),
            valid_attachments,
        })
    }

    pub fn has_key(&self, key: &str) -> bool {
        self.keys.iter().any(|present| present == key)
    }

    /// GC's list of attachments still in use. Missing is an error rather
    /// than "none", which would release every address on the node.
    pub fn valid_attachments(&self) -> Result<Vec<Attachment>, CniError> {
        let value = self
            .valid_attachments
            .as_ref()
            .ok_or_else(|| invalid(format!("{VALID_ATTACHMENTS_KEY} is required for GC")))?;
        let entries = value.as_array().ok_or_else(|| {
            invalid(format!("{VALID_ATTACHMENTS_KEY} must be a list"))
                .with_details(format!("{VALID_ATTACHMENTS_KEY} is {value}"))
        })?;
        entries
            .iter()
            .map(|entry| {
                let field = |key: &str| {
                    entry
                        .get(key)
                        .and_then(Value::as_str)
                        .filter(|text| !text.is_empty())
                        .map(str::to_string)
                        .ok_or_else(|| {
                            invalid(format!(
                                "every {VALID_ATTACHMENTS_KEY} entry needs a string {key}"
                            ))
                            .with_details(format!("entry is {entry}"))
                        })
                };
                Ok(Attachment {
                    container_id: field("containerID")?,
                    ifname: field("ifname")?,
                })
            })
            .collect()
    }
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(ErrorCode::InvalidConfig, msg)
}

fn required_string(object: &Map<String, Value>, key: &str) -> Result<String, CniError> {
    match object.get(key) {
        Some(Value::String(text)) if !text.is_empty() => Ok(text.clone()),
        None | Some(Value::Null) => Err(invalid(format!("{key} is required"))),
        Some(other) => Err(invalid(format!("{key} must be a non-empty string"))
            .with_details(format!("{key} is {other}"))),
    }
}

/// The specification: an alphanumeric first character, then alphanumerics,
/// `_`, `.` or `-`.
fn validate_network_name(name: &str) -> Result<(), CniError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(invalid("invalid network name")
            .with_details(format!("{name:?} must match [a-zA-Z0-9][a-zA-Z0-9_.-]*")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value, command: Command) -> Result<NetworkConfig, CniError> {
        NetworkConfig::parse(value.to_string().as_bytes(), command)
    }

    fn minimal() -> Value {
        json!({"cniVersion": "1.0.0", "name": "weir", "type": "weir-cni"})
    }

    fn with(key: &str, value: Value) -> Value {
        let mut config = minimal();
        config[key] = value;
        config
    }

    fn without(key: &str) -> Value {
        let mut config = minimal();
        config.as_object_mut().unwrap().remove(key);
        config
    }

    #[test]
    fn defaults_apply_to_a_minimal_config() {
        let config = parse(minimal(), Command::Add).unwrap();
        assert_eq!(config.cni_version, CniVersion::V1_0_0);
        assert_eq!(config.name, "weir");
        assert_eq!(config.plugin_type, "weir-cni");
        assert_eq!(
            config.agent_socket,
            PathBuf::from(weir_agent_api::DEFAULT_SOCKET)
        );
        assert_eq!(config.mtu, 1500);
        assert_eq!(config.prev_result, None);
    }

    #[test]
    fn weir_keys_are_read() {
        let mut value = with("agentSocket", json!("/tmp/agent.sock"));
        value["mtu"] = json!(9000);
        value["prevResult"] = json!({"cniVersion": "1.0.0"});
        value["unknownKey"] = json!({"ignored": true});
        let config = parse(value, Command::Del).unwrap();
        assert_eq!(config.agent_socket, PathBuf::from("/tmp/agent.sock"));
        assert_eq!(config.mtu, 9000);
        assert_eq!(config.prev_result, Some(json!({"cniVersion": "1.0.0"})));
        assert!(config.has_key("unknownKey"));
        assert!(!config.has_key("ipam"));
    }

    #[test]
    fn undecodable_input_is_error_6() {
        for bad in [
            &b""[..],
            b"{",
            b"not json",
            b"{\"cniVersion\": }",
            b"\xff\xfe",
        ] {
            let error = NetworkConfig::parse(bad, Command::Add).unwrap_err();
            assert_eq!(error.code, ErrorCode::Decode, "{bad:?}");
        }
    }

    #[test]
    fn non_object_json_is_error_7() {
        for value in [json!([]), json!("text"), json!(1), json!(null)] {
            assert_eq!(
                parse(value, Command::Add).unwrap_err().code,
                ErrorCode::InvalidConfig
            );
        }
    }

    #[test]
    fn missing_or_mistyped_required_fields_are_error_7() {
        for key in ["cniVersion", "name", "type"] {
            assert_eq!(
                parse(without(key), Command::Add).unwrap_err().code,
                ErrorCode::InvalidConfig,
                "{key}"
            );
            for bad in [json!(""), json!(1), json!(["x"])] {
                assert_eq!(
                    parse(with(key, bad.clone()), Command::Add)
                        .unwrap_err()
                        .code,
                    ErrorCode::InvalidConfig,
                    "{key}={bad}"
                );
            }
        }
    }

    #[test]
    fn invalid_network_names_are_error_7() {
        for bad in ["-weir", "we ir", "weir/1"] {
            assert_eq!(
                parse(with("name", json!(bad)), Command::Add)
                    .unwrap_err()
                    .code,
                ErrorCode::InvalidConfig
            );
        }
        assert!(parse(with("name", json!("k8s-pod.net_1")), Command::Add).is_ok());
    }

    #[test]
    fn unsupported_version_is_error_1() {
        for version in ["0.1.0", "0.2.0", "2.0.0"] {
            let error = parse(with("cniVersion", json!(version)), Command::Add).unwrap_err();
            assert_eq!(error.code, ErrorCode::IncompatibleVersion, "{version}");
        }
    }

    #[test]
    fn invalid_weir_keys_are_error_7() {
        for (key, bad) in [
            ("agentSocket", json!("")),
            ("agentSocket", json!(5)),
            ("mtu", json!(0)),
            ("mtu", json!(67)),
            ("mtu", json!(65536)),
            ("mtu", json!(-1)),
            ("mtu", json!(1500.5)),
            ("mtu", json!("1500")),
            ("prevResult", json!("{}")),
            ("prevResult", json!([])),
        ] {
            let error = parse(with(key, bad.clone()), Command::Add).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidConfig, "{key}={bad}");
        }
    }

    #[test]
    fn port_mappings_come_from_the_runtime_config() {
        let config = parse(
            with(
                "runtimeConfig",
                json!({"portMappings": [
                    {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                    {"hostPort": 53, "containerPort": 5353, "protocol": "udp", "hostIP": "10.77.0.11"},
                    {"hostPort": 9000, "containerPort": 9000},
                ]}),
            ),
            Command::Add,
        )
        .unwrap();
        let mapping = |host_port, container_port, protocol: &str, host_ip: &str| PortMapping {
            host_port,
            container_port,
            protocol: protocol.into(),
            host_ip: host_ip.into(),
        };
        assert_eq!(
            config.port_mappings,
            vec![
                mapping(8080, 80, "tcp", ""),
                mapping(53, 5353, "udp", "10.77.0.11"),
                mapping(9000, 9000, "tcp", ""),
            ]
        );
        assert!(parse(minimal(), Command::Add)
            .unwrap()
            .port_mappings
            .is_empty());
        for bad in [
            json!({"portMappings": {}}),
            json!({"portMappings": [{"hostPort": 0, "containerPort": 80}]}),
            json!({"portMappings": [{"hostPort": 70000, "containerPort": 80}]}),
            json!({"portMappings": [{"containerPort": 80}]}),
            json!({"portMappings": [{"hostPort": 80, "containerPort": 80, "protocol": 6}]}),
        ] {
            let error = parse(with("runtimeConfig", bad.clone()), Command::Add).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidConfig, "{bad}");
        }
    }

    #[test]
    fn valid_attachments_are_parsed() {
        let mut value = with(
            "cni.dev/valid-attachments",
            json!([{"containerID": "a", "ifname": "eth0"}, {"containerID": "b", "ifname": "net1"}]),
        );
        value["cniVersion"] = json!("1.1.0");
        let config = parse(value, Command::Gc).unwrap();
        assert_eq!(
            config.valid_attachments().unwrap(),
            vec![
                Attachment {
                    container_id: "a".into(),
                    ifname: "eth0".into()
                },
                Attachment {
                    container_id: "b".into(),
                    ifname: "net1".into()
                },
            ]
        );
    }

    #[test]
    fn empty_valid_attachments_is_an_empty_list() {
        let mut value = with("cni.dev/valid-attachments", json!([]));
        value["cniVersion"] = json!("1.1.0");
        assert_eq!(
            parse(value, Command::Gc)
                .unwrap()
                .valid_attachments()
                .unwrap(),
            vec![]
        );
    }

    #[test]
    fn legacy_attachments_key_is_accepted() {
        let mut value = with(
            "cni.dev/attachments",
            json!([{"containerID": "a", "ifname": "eth0"}]),
        );
        value["cniVersion"] = json!("1.1.0");
        assert_eq!(
            parse(value, Command::Gc)
                .unwrap()
                .valid_attachments()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn missing_or_malformed_valid_attachments_are_error_7() {
        let mut missing = minimal();
        missing["cniVersion"] = json!("1.1.0");
        assert_eq!(
            parse(missing, Command::Gc)
                .unwrap()
                .valid_attachments()
                .unwrap_err()
                .code,
            ErrorCode::InvalidConfig
        );
        for bad in [
            json!({}),
            json!("a"),
            json!([{"containerID": "a"}]),
            json!([{"ifname": "eth0"}]),
            json!([{"containerID": 1, "ifname": "eth0"}]),
            json!(["a"]),
        ] {
            let mut value = with("cni.dev/valid-attachments", bad.clone());
            value["cniVersion"] = json!("1.1.0");
            let error = parse(value, Command::Gc)
                .unwrap()
                .valid_attachments()
                .unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidConfig, "{bad}");
        }
    }

    #[test]
    fn peek_version_is_best_effort() {
        assert_eq!(
            peek_version(br#"{"cniVersion":"0.4.0"}"#),
            Some("0.4.0".into())
        );
        assert_eq!(
            peek_version(br#"{"cniVersion":"9.9.9"}"#),
            Some("9.9.9".into())
        );
        assert_eq!(peek_version(br#"{"cniVersion":""}"#), None);
        assert_eq!(peek_version(br#"{"cniVersion":1}"#), None);
        assert_eq!(peek_version(b"garbage"), None);
    }
}
