//! The built `weir-cni` executable invoked as a runtime invokes it, for the
//! cases that need no agent: VERSION and the input errors.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

const BINARY: &str = env!("CARGO_BIN_EXE_weir-cni");

/// Runs the plugin with exactly `env` (nothing inherited) and `stdin`.
fn invoke(env: &[(&str, &str)], stdin: &str) -> Output {
    let mut child = Command::new(BINARY)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start weir-cni");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for weir-cni")
}

fn stdout_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "stdout is not one JSON document ({error}): {:?}; stderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// Asserts a non-zero exit and an error result with exactly the spec's keys.
fn assert_error(output: &Output, code: u32, cni_version: &str) -> Value {
    assert!(!output.status.success(), "must exit non-zero");
    let error = stdout_json(output);
    let object = error.as_object().expect("an object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["cniVersion", "code", "details", "msg"], "{error}");
    assert_eq!(error["code"], code, "{error}");
    assert_eq!(error["cniVersion"], cni_version, "{error}");
    assert!(
        error["msg"].as_str().is_some_and(|msg| !msg.is_empty()),
        "{error}"
    );
    assert!(error["details"].is_string(), "{error}");
    error
}

fn add_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "weir-cni-binary-test"),
        ("CNI_NETNS", "/proc/self/ns/net"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=test"),
        ("CNI_PATH", "/opt/cni/bin"),
    ]
}

fn config(version: &str) -> String {
    json!({"cniVersion": version, "name": "weir", "type": "weir-cni"}).to_string()
}

#[test]
fn version_prints_supported_versions() {
    let output = invoke(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.1.0"}"#);
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout_json(&output),
        json!({
            "cniVersion": "1.1.0",
            "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
        })
    );
}

#[test]
fn bad_stdin_is_6() {
    for stdin in ["", "{", "cniVersion=1.0.0"] {
        assert_error(&invoke(&add_env(), stdin), 6, "1.1.0");
    }
}

#[test]
fn missing_environment_is_4() {
    for name in ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
        let env: Vec<_> = add_env()
            .into_iter()
            .filter(|(key, _)| *key != name)
            .collect();
        let error = assert_error(&invoke(&env, &config("1.0.0")), 4, "1.0.0");
        assert!(
            format!("{}{}", error["msg"], error["details"]).contains(name),
            "{name}: {error}"
        );
    }
}

#[test]
fn unknown_command_is_4() {
    let mut env = add_env();
    env[0] = ("CNI_COMMAND", "UPGRADE");
    assert_error(&invoke(&env, &config("1.0.0")), 4, "1.0.0");
}

#[test]
fn unsupported_version_is_1() {
    for version in ["0.1.0", "0.2.0", "9.0.0"] {
        assert_error(&invoke(&add_env(), &config(version)), 1, version);
    }
}

#[test]
fn check_before_0_4_0_is_1() {
    let mut env = add_env();
    env[0] = ("CNI_COMMAND", "CHECK");
    assert_error(&invoke(&env, &config("0.3.1")), 1, "0.3.1");
}

#[test]
fn gc_and_status_before_1_1_0_are_1() {
    assert_error(
        &invoke(&[("CNI_COMMAND", "GC")], &config("1.0.0")),
        1,
        "1.0.0",
    );
    assert_error(
        &invoke(&[("CNI_COMMAND", "STATUS")], &config("1.0.0")),
        1,
        "1.0.0",
    );
}

#[test]
fn invalid_config_is_7() {
    let cases = [
        json!({"cniVersion": "1.0.0", "type": "weir-cni"}),
        json!({"cniVersion": "1.0.0", "name": "weir"}),
        json!({"cniVersion": "1.0.0", "name": "weir", "type": "weir-cni", "mtu": 10}),
        json!({"cniVersion": "1.0.0", "name": "weir", "type": "weir-cni", "agentSocket": 3}),
        json!({"name": "weir", "type": "weir-cni"}),
    ];
    for config in cases {
        let version = config["cniVersion"].as_str().unwrap_or("1.1.0").to_string();
        assert_error(&invoke(&add_env(), &config.to_string()), 7, &version);
    }
}

#[test]
fn ipam_section_is_2() {
    let config = json!({"cniVersion": "1.0.0", "name": "weir", "type": "weir-cni", "ipam": {"type": "host-local"}});
    assert_error(&invoke(&add_env(), &config.to_string()), 2, "1.0.0");
}

#[test]
fn check_without_prev_result_is_7() {
    let mut env = add_env();
    env[0] = ("CNI_COMMAND", "CHECK");
    assert_error(&invoke(&env, &config("1.0.0")), 7, "1.0.0");
}

#[test]
fn gc_without_valid_attachments_is_7() {
    assert_error(
        &invoke(&[("CNI_COMMAND", "GC")], &config("1.1.0")),
        7,
        "1.1.0",
    );
}

#[test]
fn status_without_an_agent_is_50() {
    let socket = std::env::temp_dir().join(format!(
        "weir-cni-binary-no-agent-{}.sock",
        std::process::id()
    ));
    let config = json!({
        "cniVersion": "1.1.0", "name": "weir", "type": "weir-cni",
        "agentSocket": socket.to_str().unwrap(),
    });
    assert_error(
        &invoke(&[("CNI_COMMAND", "STATUS")], &config.to_string()),
        50,
        "1.1.0",
    );
}

#[test]
fn add_without_an_agent_is_11_and_logs_only_to_stderr() {
    let socket = std::env::temp_dir().join(format!(
        "weir-cni-binary-no-agent-{}.sock",
        std::process::id()
    ));
    let config = json!({
        "cniVersion": "0.3.1", "name": "weir", "type": "weir-cni",
        "agentSocket": socket.to_str().unwrap(),
    });
    let output = invoke(&add_env(), &config.to_string());
    assert_error(&output, 11, "0.3.1");
    assert!(!output.stderr.is_empty(), "the failure is logged to stderr");
}
