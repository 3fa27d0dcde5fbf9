//! The CNI plugin's input: the `CNI_*` environment, the network
//! configuration on stdin and its `prevResult`.
//!
//! An input is text: `NAME=value` lines (the environment) up to the first
//! empty line, then stdin as bytes. For example:
//!
//! ```text
//! CNI_COMMAND=CHECK
//! CNI_CONTAINERID=abc
//! CNI_NETNS=/run/netns/pod
//! CNI_IFNAME=eth0
//!
//! {"cniVersion":"1.0.0","name":"weir","type":"weir-cni","prevResult":{...}}
//! ```
//!
//! What must hold for any input:
//! - nothing panics; a refusal is a CNI error with a message, which the
//!   plugin writes to stdout as the specification's error object (exit
//!   status non-zero);
//! - parsing is deterministic;
//! - an accepted request's names are usable: the host veth name and the
//!   temporary peer name fit the kernel's 15 bytes, the pod MAC is a
//!   locally administered unicast address, CHECK expects at least one
//!   IPv4 address on the interface it names;
//! - `prevResult` alone (any JSON object as the previous result of any
//!   interface name) is read or refused with a reason.

use std::collections::HashMap;

use serde_json::Value;
use weir_cni::prev_result::expected_pod_interface;
use weir_cni::request::{parse_request, Request};
use weir_cni::{CniError, ErrorCode};

pub fn fuzz(data: &[u8]) {
    let (env, stdin) = split(data);
    let parsed = parse_request(&env, stdin);
    assert_eq!(
        parsed,
        parse_request(&env, stdin),
        "parsing is not deterministic"
    );
    match &parsed {
        Ok(request) => check_request(request),
        Err(error) => {
            check_error(error);
            // Nothing is executed for an invalid invocation: run the whole
            // plugin and read what it answers.
            check_response(&env, stdin, error);
        }
    }
    if parsed == Ok(Request::Version) {
        let mut stdout = Vec::new();
        let status = weir_cni::run(&env, &mut &stdin[..], &mut stdout);
        assert_eq!(status, 0, "VERSION failed");
        let answer: Value = serde_json::from_slice(&stdout).expect("VERSION answers JSON");
        assert!(answer.get("supportedVersions").is_some(), "{answer}");
    }

    // prevResult on its own, for the interface the environment names.
    if let Ok(Value::Object(config)) = serde_json::from_slice::<Value>(stdin) {
        let ifname = env.get("CNI_IFNAME").map_or("eth0", String::as_str);
        let prev = config.get("prevResult").unwrap_or(&Value::Null);
        match expected_pod_interface(prev, ifname) {
            Ok(expected) => {
                assert_eq!(expected.name, ifname);
                assert!(!expected.ipv4.is_empty(), "an interface without IPv4");
            }
            Err(error) => {
                check_error(&error);
                assert_eq!(error.code, ErrorCode::InvalidConfig, "{error}");
            }
        }
    }
}

/// Splits an input into the environment and stdin.
fn split(data: &[u8]) -> (HashMap<String, String>, &[u8]) {
    let (head, stdin) = match find(data, b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let env = String::from_utf8_lossy(head)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    (env, stdin)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn check_error(error: &CniError) {
    assert!(
        !error.msg.trim().is_empty(),
        "a CNI error without a message"
    );
    assert_ne!(error.code.value(), 0, "{error}: code 0 is success");
}

/// The plugin's answer to an invalid invocation: the error object on
/// stdout, with the code and message of the refusal, and a failure status.
fn check_response(env: &HashMap<String, String>, stdin: &[u8], error: &CniError) {
    let mut stdout = Vec::new();
    let status = weir_cni::run(env, &mut &stdin[..], &mut stdout);
    assert_eq!(
        status,
        weir_cni::ERROR_EXIT_STATUS,
        "a refusal exited {status}"
    );
    let answer: Value = serde_json::from_slice(&stdout)
        .unwrap_or_else(|e| panic!("the error result is not JSON ({e}): {stdout:?}"));
    assert_eq!(answer["code"], u64::from(error.code.value()), "{answer}");
    assert_eq!(answer["msg"], error.msg.as_str(), "{answer}");
    assert!(
        answer["cniVersion"].as_str().is_some_and(|v| !v.is_empty()),
        "{answer}"
    );
}

fn check_request(request: &Request) {
    let attachment = match request {
        Request::Add(add) => &add.attachment,
        Request::Del(del) => &del.attachment,
        Request::Check(check) => {
            assert_eq!(check.expected.name, check.attachment.ifname);
            assert!(!check.expected.ipv4.is_empty(), "CHECK expects no address");
            &check.attachment
        }
        Request::Gc(gc) => {
            for attachment in &gc.valid {
                assert!(!attachment.container_id.is_empty());
                assert!(!attachment.ifname.is_empty());
            }
            return;
        }
        Request::Status(_) | Request::Version => return,
    };
    for name in [attachment.host_ifname(), attachment.peer_temp_ifname()] {
        assert!(
            !name.is_empty() && name.len() <= 15,
            "interface name {name:?} does not fit the kernel's 15 bytes"
        );
    }
    let mac = attachment.pod_mac();
    assert_eq!(
        mac.octets()[0] & 0b11,
        0b10,
        "pod MAC {mac} is not a locally administered unicast address"
    );
}
