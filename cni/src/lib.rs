//! weir-cni: Weir's CNI plugin (CNI specification 1.1.0).
//!
//! [`run`] handles one invocation: it reads the environment and stdin
//! through [`Environment`] and [`std::io::Read`], validates them into a
//! [`request::Request`] (pure, see `request`), executes it against the Weir
//! agent and the kernel (`commands`), and writes the result or the CNI error
//! to stdout. Logs go to stderr only; stdout is the protocol.

pub mod agent;
pub mod attachment;
pub mod commands;
pub mod config;
pub mod env;
pub mod error;
pub mod mac;
pub mod netlink;
pub mod netns;
pub mod prev_result;
pub mod request;
pub mod result;
pub mod version;
pub mod veth;

use std::io::{Read, Write};

use serde_json::Value;
use tracing::error;

pub use env::{Environment, ProcessEnvironment};
pub use error::{CniError, ErrorCode};

use request::{parse_request, Request};
use version::{version_info, CniVersion};

/// Exit status for any error result (the specification asks for non-zero).
pub const ERROR_EXIT_STATUS: u8 = 1;

/// Handles one invocation; returns the process exit status.
pub fn run(env: &dyn Environment, stdin: &mut dyn Read, stdout: &mut dyn Write) -> u8 {
    let mut input = Vec::new();
    let outcome = match stdin.read_to_end(&mut input) {
        Ok(_) => parse_request(env, &input).and_then(execute),
        Err(error) => {
            Err(CniError::new(ErrorCode::Io, "cannot read stdin").with_details(error.to_string()))
        }
    };
    // Errors are reported in the version the runtime asked for, when known.
    let error_version =
        config::peek_version(&input).unwrap_or_else(|| CniVersion::LATEST.as_str().to_string());
    respond(outcome, &error_version, stdout)
}

fn execute(request: Request) -> Result<Option<Value>, CniError> {
    if request == Request::Version {
        return Ok(Some(version_info()));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            CniError::new(ErrorCode::Io, "cannot start the async runtime")
                .with_details(error.to_string())
        })?;
    runtime.block_on(commands::execute(request))
}

/// Writes a result (or nothing) or an error result; returns the exit status.
pub fn respond(
    outcome: Result<Option<Value>, CniError>,
    error_version: &str,
    stdout: &mut dyn Write,
) -> u8 {
    let (output, status) = match outcome {
        Ok(None) => return 0,
        Ok(Some(result)) => (result, 0),
        Err(cni_error) => {
            error!(%cni_error, "failed");
            (cni_error.to_json(error_version), ERROR_EXIT_STATUS)
        }
    };
    match writeln!(stdout, "{output}").and_then(|()| stdout.flush()) {
        Ok(()) => status,
        Err(write_error) => {
            error!(%write_error, "cannot write to stdout");
            ERROR_EXIT_STATUS
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;

    fn invoke(env: &[(&str, &str)], stdin: &str) -> (u8, Option<Value>) {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut stdout = Vec::new();
        let status = run(&env, &mut stdin.as_bytes(), &mut stdout);
        let output =
            (!stdout.is_empty()).then(|| serde_json::from_slice(&stdout).expect("stdout is JSON"));
        (status, output)
    }

    fn attachment_env(command: &'static str) -> Vec<(&'static str, &'static str)> {
        vec![
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "weir-cni-unit-test"),
            ("CNI_NETNS", "/proc/self/ns/net"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ]
    }

    fn missing_socket() -> String {
        std::env::temp_dir()
            .join(format!("weir-cni-no-agent-{}.sock", std::process::id()))
            .display()
            .to_string()
    }

    fn config(version: &str) -> Value {
        json!({"cniVersion": version, "name": "weir", "type": "weir-cni", "agentSocket": missing_socket()})
    }

    fn assert_error(outcome: (u8, Option<Value>), code: u32, version: &str) -> Value {
        let (status, output) = outcome;
        assert_ne!(status, 0);
        let output = output.expect("an error result");
        assert_eq!(output["code"], code, "{output}");
        assert_eq!(output["cniVersion"], version, "{output}");
        let keys: Vec<&str> = output
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 4, "{output}");
        for key in ["cniVersion", "code", "msg", "details"] {
            assert!(keys.contains(&key), "{key} in {output}");
        }
        assert!(output["msg"].as_str().is_some_and(|msg| !msg.is_empty()));
        assert!(output["details"].is_string());
        output
    }

    #[test]
    fn version_prints_supported_versions_and_exits_0() {
        let (status, output) = invoke(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.0.0"}"#);
        assert_eq!(status, 0);
        assert_eq!(output.unwrap(), version_info());
    }

    #[test]
    fn version_ignores_stdin() {
        let (status, output) = invoke(&[("CNI_COMMAND", "VERSION")], "");
        assert_eq!(status, 0);
        assert_eq!(output.unwrap()["cniVersion"], "1.1.0");
    }

    #[test]
    fn missing_command_is_4_in_the_latest_version() {
        assert_error(invoke(&[], ""), 4, "1.1.0");
    }

    #[test]
    fn errors_echo_the_requested_version() {
        let mut env = attachment_env("ADD");
        env.retain(|(key, _)| *key != "CNI_IFNAME");
        assert_error(invoke(&env, &config("0.4.0").to_string()), 4, "0.4.0");
    }

    #[test]
    fn bad_stdin_is_6() {
        assert_error(invoke(&attachment_env("ADD"), "{not json"), 6, "1.1.0");
    }

    #[test]
    fn unsupported_version_is_1() {
        assert_error(
            invoke(&attachment_env("ADD"), &config("0.2.0").to_string()),
            1,
            "0.2.0",
        );
    }

    #[test]
    fn invalid_config_is_7() {
        let mut value = config("1.0.0");
        value["mtu"] = json!("big");
        assert_error(
            invoke(&attachment_env("ADD"), &value.to_string()),
            7,
            "1.0.0",
        );
    }

    #[test]
    fn add_with_a_missing_netns_is_4_before_contacting_the_agent() {
        let mut env = attachment_env("ADD");
        env.retain(|(key, _)| *key != "CNI_NETNS");
        env.push(("CNI_NETNS", "/run/netns/weir-cni-does-not-exist"));
        assert_error(invoke(&env, &config("1.0.0").to_string()), 4, "1.0.0");
    }

    #[test]
    fn add_with_a_non_namespace_netns_is_4() {
        let mut env = attachment_env("ADD");
        env.retain(|(key, _)| *key != "CNI_NETNS");
        env.push(("CNI_NETNS", "/etc/hostname"));
        assert_error(invoke(&env, &config("1.0.0").to_string()), 4, "1.0.0");
    }

    #[test]
    fn add_without_agent_is_11() {
        let output = assert_error(
            invoke(&attachment_env("ADD"), &config("1.0.0").to_string()),
            11,
            "1.0.0",
        );
        assert!(
            output["details"]
                .as_str()
                .unwrap()
                .contains(&missing_socket()),
            "{output}"
        );
    }

    #[test]
    fn del_without_agent_is_11() {
        let mut env = attachment_env("DEL");
        env.retain(|(key, _)| *key != "CNI_NETNS");
        assert_error(invoke(&env, &config("0.3.1").to_string()), 11, "0.3.1");
    }

    #[test]
    fn check_without_agent_is_11() {
        let mut value = config("1.0.0");
        value["prevResult"] = json!({
            "interfaces": [{"name": "eth0", "sandbox": "/proc/self/ns/net"}],
            "ips": [{"address": "10.244.1.5/32", "interface": 0}],
        });
        assert_error(
            invoke(&attachment_env("CHECK"), &value.to_string()),
            11,
            "1.0.0",
        );
    }

    #[test]
    fn gc_without_agent_is_11() {
        let mut value = config("1.1.0");
        value["cni.dev/valid-attachments"] = json!([]);
        assert_error(
            invoke(
                &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
                &value.to_string(),
            ),
            11,
            "1.1.0",
        );
    }

    #[test]
    fn status_without_agent_is_50() {
        assert_error(
            invoke(&[("CNI_COMMAND", "STATUS")], &config("1.1.0").to_string()),
            50,
            "1.1.0",
        );
    }

    #[test]
    fn status_before_1_1_0_is_1() {
        assert_error(
            invoke(&[("CNI_COMMAND", "STATUS")], &config("1.0.0").to_string()),
            1,
            "1.0.0",
        );
    }

    #[test]
    fn success_without_output_writes_nothing() {
        let mut stdout = Vec::new();
        assert_eq!(respond(Ok(None), "1.1.0", &mut stdout), 0);
        assert!(stdout.is_empty());
    }

    #[test]
    fn unreadable_stdin_is_5() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("broken pipe"))
            }
        }
        let env: HashMap<String, String> = [("CNI_COMMAND".to_string(), "ADD".to_string())].into();
        let mut stdout = Vec::new();
        assert_eq!(run(&env, &mut Broken, &mut stdout), ERROR_EXIT_STATUS);
        let output: Value = serde_json::from_slice(&stdout).unwrap();
        assert_eq!(output["code"], 5);
    }
}
