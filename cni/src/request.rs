//! Turns one invocation (environment + stdin) into a validated, typed
//! request, or the CNI error the runtime should see. Everything here is pure.

use std::path::PathBuf;

use crate::attachment::{Attachment, PodRef};
use crate::config::NetworkConfig;
use crate::env::{AttachmentEnv, Command, Environment};
use crate::error::{CniError, ErrorCode};
use crate::prev_result::{expected_pod_interface, ExpectedPodInterface};

#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Version,
    Add(AddRequest),
    Del(DelRequest),
    Check(CheckRequest),
    Gc(GcRequest),
    Status(NetworkConfig),
}

#[derive(Debug, Clone, PartialEq)]
pub struct AddRequest {
    pub attachment: Attachment,
    pub pod: PodRef,
    pub netns: PathBuf,
    pub config: NetworkConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DelRequest {
    pub attachment: Attachment,
    /// May be absent: the runtime has no namespace left to give.
    pub netns: Option<PathBuf>,
    pub config: NetworkConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CheckRequest {
    pub attachment: Attachment,
    pub netns: PathBuf,
    pub config: NetworkConfig,
    pub expected: ExpectedPodInterface,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GcRequest {
    pub config: NetworkConfig,
    pub valid: Vec<Attachment>,
}

/// Top-level configuration keys Weir refuses on ADD because it would
/// silently ignore them (Weir's agent is the IPAM).
const UNSUPPORTED_KEYS: [&str; 1] = ["ipam"];

/// Validates in the order: command, environment (4), stdin decoding (6),
/// version (1), configuration (7).
pub fn parse_request(env: &dyn Environment, stdin: &[u8]) -> Result<Request, CniError> {
    let command = Command::from_env(env)?;
    match command {
        Command::Version => Ok(Request::Version),
        Command::Add => {
            let attachment_env = AttachmentEnv::from_env(env, true)?;
            let config = NetworkConfig::parse(stdin, command)?;
            reject_unsupported_keys(&config, stdin)?;
            Ok(Request::Add(AddRequest {
                attachment: attachment_env.attachment,
                pod: attachment_env.pod,
                netns: attachment_env.netns.expect("required above"),
                config,
            }))
        }
        Command::Del => {
            let attachment_env = AttachmentEnv::from_env(env, false)?;
            let config = NetworkConfig::parse(stdin, command)?;
            Ok(Request::Del(DelRequest {
                attachment: attachment_env.attachment,
                netns: attachment_env.netns,
                config,
            }))
        }
        Command::Check => {
            let attachment_env = AttachmentEnv::from_env(env, true)?;
            let config = NetworkConfig::parse(stdin, command)?;
            let prev_result = config.prev_result.as_ref().ok_or_else(|| {
                CniError::new(ErrorCode::InvalidConfig, "prevResult is required for CHECK")
            })?;
            let expected = expected_pod_interface(prev_result, &attachment_env.attachment.ifname)?;
            Ok(Request::Check(CheckRequest {
                attachment: attachment_env.attachment,
                netns: attachment_env.netns.expect("required above"),
                config,
                expected,
            }))
        }
        Command::Gc => {
            let config = NetworkConfig::parse(stdin, command)?;
            let valid = config.valid_attachments()?;
            Ok(Request::Gc(GcRequest { config, valid }))
        }
        Command::Status => Ok(Request::Status(NetworkConfig::parse(stdin, command)?)),
    }
}

/// Error 2 names the key and its value, as the specification asks.
fn reject_unsupported_keys(config: &NetworkConfig, stdin: &[u8]) -> Result<(), CniError> {
    let Some(key) = UNSUPPORTED_KEYS.into_iter().find(|key| config.has_key(key)) else {
        return Ok(());
    };
    let value = serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|object| object.get(key).map(ToString::to_string))
        .unwrap_or_default();
    Err(CniError::new(
        ErrorCode::UnsupportedField,
        format!("unsupported field {key}: {value}"),
    )
    .with_details("Weir allocates addresses through its agent; remove the ipam section"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::{json, Value};

    use super::*;
    use crate::version::CniVersion;

    fn env(command: &str) -> HashMap<String, String> {
        [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_NETNS", "/run/netns/pod"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p"),
            ("CNI_PATH", "/opt/cni/bin"),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
    }

    fn config(version: &str) -> Value {
        json!({"cniVersion": version, "name": "weir", "type": "weir-cni"})
    }

    fn prev_result() -> Value {
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "lxcba7816bf8f0", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "eth0", "mac": "0a:bb:cc:dd:ee:02", "sandbox": "/run/netns/pod"},
            ],
            "ips": [{"address": "10.244.1.5/32", "gateway": "10.244.1.1", "interface": 1}],
        })
    }

    fn parse(env: &HashMap<String, String>, stdin: &Value) -> Result<Request, CniError> {
        parse_request(env, stdin.to_string().as_bytes())
    }

    #[test]
    fn version_needs_nothing_but_the_command() {
        let only_command: HashMap<String, String> =
            [("CNI_COMMAND".to_string(), "VERSION".to_string())].into();
        assert_eq!(
            parse_request(&only_command, b"not json"),
            Ok(Request::Version)
        );
    }

    #[test]
    fn add_is_parsed() {
        let Request::Add(add) = parse(&env("ADD"), &config("1.1.0")).unwrap() else {
            panic!("not ADD")
        };
        assert_eq!(add.attachment.container_id, "abc");
        assert_eq!(add.attachment.ifname, "eth0");
        assert_eq!(add.netns, PathBuf::from("/run/netns/pod"));
        assert_eq!(add.pod.namespace, "ns");
        assert_eq!(add.pod.name, "p");
        assert_eq!(add.config.cni_version, CniVersion::V1_1_0);
    }

    #[test]
    fn environment_is_checked_before_stdin() {
        let mut environment = env("ADD");
        environment.remove("CNI_NETNS");
        let error = parse_request(&environment, b"not json").unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidEnvironment);
    }

    #[test]
    fn add_error_codes() {
        assert_eq!(
            parse_request(&env("ADD"), b"{oops").unwrap_err().code,
            ErrorCode::Decode
        );
        assert_eq!(
            parse(&env("ADD"), &config("0.2.0")).unwrap_err().code,
            ErrorCode::IncompatibleVersion
        );
        assert_eq!(
            parse(
                &env("ADD"),
                &json!({"cniVersion": "1.0.0", "type": "weir-cni"})
            )
            .unwrap_err()
            .code,
            ErrorCode::InvalidConfig
        );
    }

    #[test]
    fn add_rejects_an_ipam_section_with_error_2_naming_key_and_value() {
        let mut value = config("1.0.0");
        value["ipam"] = json!({"type": "host-local"});
        let error = parse(&env("ADD"), &value).unwrap_err();
        assert_eq!(error.code, ErrorCode::UnsupportedField);
        assert!(error.msg.contains("ipam"), "{}", error.msg);
        assert!(error.msg.contains("host-local"), "{}", error.msg);
    }

    #[test]
    fn del_allows_missing_netns_and_a_config_ipam_section() {
        let mut environment = env("DEL");
        environment.remove("CNI_NETNS");
        let mut value = config("0.3.1");
        value["ipam"] = json!({});
        let Request::Del(del) = parse(&environment, &value).unwrap() else {
            panic!("not DEL")
        };
        assert_eq!(del.netns, None);
        assert_eq!(del.config.cni_version, CniVersion::V0_3_1);
    }

    #[test]
    fn del_still_needs_container_id_and_ifname() {
        for name in ["CNI_CONTAINERID", "CNI_IFNAME"] {
            let mut environment = env("DEL");
            environment.remove(name);
            assert_eq!(
                parse(&environment, &config("1.0.0")).unwrap_err().code,
                ErrorCode::InvalidEnvironment
            );
        }
    }

    #[test]
    fn check_needs_0_4_0_and_a_prev_result() {
        let mut value = config("0.3.1");
        value["prevResult"] = prev_result();
        assert_eq!(
            parse(&env("CHECK"), &value).unwrap_err().code,
            ErrorCode::IncompatibleVersion
        );

        let error = parse(&env("CHECK"), &config("1.0.0")).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidConfig);
        assert!(error.msg.contains("prevResult"));

        let mut value = config("0.4.0");
        value["prevResult"] = prev_result();
        let Request::Check(check) = parse(&env("CHECK"), &value).unwrap() else {
            panic!("not CHECK")
        };
        assert_eq!(
            check.expected.ipv4,
            vec![std::net::Ipv4Addr::new(10, 244, 1, 5)]
        );
        assert_eq!(check.netns, PathBuf::from("/run/netns/pod"));
    }

    #[test]
    fn check_needs_netns() {
        let mut environment = env("CHECK");
        environment.remove("CNI_NETNS");
        let mut value = config("1.0.0");
        value["prevResult"] = prev_result();
        assert_eq!(
            parse(&environment, &value).unwrap_err().code,
            ErrorCode::InvalidEnvironment
        );
    }

    #[test]
    fn gc_needs_1_1_0_and_valid_attachments_but_no_attachment_env() {
        let gc_env: HashMap<String, String> = [
            ("CNI_COMMAND".to_string(), "GC".to_string()),
            ("CNI_PATH".to_string(), "/opt/cni/bin".to_string()),
        ]
        .into();
        let mut value = config("1.0.0");
        value["cni.dev/valid-attachments"] = json!([]);
        assert_eq!(
            parse(&gc_env, &value).unwrap_err().code,
            ErrorCode::IncompatibleVersion
        );

        assert_eq!(
            parse(&gc_env, &config("1.1.0")).unwrap_err().code,
            ErrorCode::InvalidConfig
        );

        let mut value = config("1.1.0");
        value["cni.dev/valid-attachments"] = json!([{"containerID": "abc", "ifname": "eth0"}]);
        let Request::Gc(gc) = parse(&gc_env, &value).unwrap() else {
            panic!("not GC")
        };
        assert_eq!(
            gc.valid,
            vec![Attachment {
                container_id: "abc".into(),
                ifname: "eth0".into()
            }]
        );
    }

    #[test]
    fn status_needs_1_1_0() {
        let status_env: HashMap<String, String> =
            [("CNI_COMMAND".to_string(), "STATUS".to_string())].into();
        assert_eq!(
            parse(&status_env, &config("1.0.0")).unwrap_err().code,
            ErrorCode::IncompatibleVersion
        );
        assert!(matches!(
            parse(&status_env, &config("1.1.0")),
            Ok(Request::Status(_))
        ));
    }
}
