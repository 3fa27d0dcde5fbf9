//! weir-cni against the CNI 1.1.0 specification, invoked as a runtime does,
//! with a real agent behind it (a one-node lab) and real namespaces.

use std::process::{Command, Stdio};

use serde_json::{json, Value};
use weir_lab::testing::{write_pod_manifest, TestLab};
use weir_tests::names;
use weir_tests::netns::{self, NetNs};

/// A one-node lab plus helpers to call the plugin directly.
struct Harness {
    lab: TestLab,
}

/// One plugin run: exit success, stdout parsed as JSON (Null if empty).
struct Run {
    success: bool,
    output: Value,
    stderr: String,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            lab: TestLab::up(1).expect("lab up"),
        }
    }

    fn node_netns(&self) -> String {
        self.lab.state().nodes[0].netns.clone()
    }

    fn config(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": "weir",
            "type": "weir-cni",
            "agentSocket": self.lab.state().nodes[0].api_socket,
            "mtu": 1500,
        })
    }

    /// Runs the plugin in the node namespace with exactly `env` and `stdin`.
    fn run(&self, env: &[(&str, &str)], stdin: &str) -> Run {
        use std::io::Write;
        let plugin = weir_lab::Binaries::locate().unwrap().cni;
        let mut cmd = Command::new(&plugin);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        netns::command_in(&mut cmd, &self.node_netns()).unwrap();
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        Run {
            success: out.status.success(),
            output: if stdout.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&stdout)
                    .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout}"))
            },
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The pod's manifest, as the API server has it before kubelet calls
    /// the plugin: ADD waits for the endpoint's first regeneration, which
    /// needs the pod's labels.
    fn write_pod_manifest(&self, name: &str) {
        let node = self.lab.state().nodes[0].name.clone();
        write_pod_manifest(&self.lab, "x", name, ("app", "conformance"), &node).unwrap();
    }

    fn call(&self, command: &str, container: &str, pod_netns: &str, config: &Value) -> Run {
        if command == "ADD" {
            self.write_pod_manifest(container);
        }
        let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=x;K8S_POD_NAME={container}");
        self.run(
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", container),
                ("CNI_NETNS", pod_netns),
                ("CNI_IFNAME", "eth0"),
                ("CNI_ARGS", &args),
                ("CNI_PATH", "/opt/cni/bin"),
            ],
            &config.to_string(),
        )
    }

    fn free_addresses(&self) -> u64 {
        let socket = self.lab.state().nodes[0].api_socket.clone();
        runtime().block_on(async {
            let mut client = weir_agent_api::connect(&socket).await.unwrap();
            client
                .status(weir_agent_api::v1::StatusRequest {})
                .await
                .unwrap()
                .into_inner()
                .addresses_free
        })
    }

    fn endpoint_count(&self) -> usize {
        let socket = self.lab.state().nodes[0].api_socket.clone();
        runtime().block_on(async {
            let mut client = weir_agent_api::connect(&socket).await.unwrap();
            client
                .list_endpoints(weir_agent_api::v1::ListEndpointsRequest {})
                .await
                .unwrap()
                .into_inner()
                .endpoints
                .len()
        })
    }

    /// Links in the node namespace whose name starts with lxc.
    fn host_veths(&self) -> Vec<String> {
        links(&self.node_netns())
            .into_iter()
            .filter(|l| l.starts_with("lxc"))
            .collect()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn links(ns: &str) -> Vec<String> {
    let out = netns::run(Command::new("ip").args(["-n", ns, "-j", "link", "show"])).unwrap();
    let value: Value = serde_json::from_str(&out).unwrap();
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect()
}

fn ip_json(ns: &str, args: &[&str]) -> Value {
    let mut full = vec!["-n", ns, "-j"];
    full.extend_from_slice(args);
    serde_json::from_str(&netns::run(Command::new("ip").args(&full)).unwrap()).unwrap()
}

fn assert_error(run: &Run, code: u64, what: &str) {
    assert!(
        !run.success,
        "{what}: must exit non-zero; output {}",
        run.output
    );
    assert_eq!(
        run.output["code"], code,
        "{what}: error code; output {} stderr {}",
        run.output, run.stderr
    );
    assert!(
        run.output["msg"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: msg; {}",
        run.output
    );
    assert!(
        run.output["cniVersion"].is_string(),
        "{what}: cniVersion; {}",
        run.output
    );
}

fn pod_ns() -> (NetNs, String) {
    let ns = NetNs::new(&names::unique()).unwrap();
    let path = netns::path(ns.name()).display().to_string();
    (ns, path)
}

#[test]
fn version_lists_every_supported_version() {
    let h = Harness::new();
    let run = h.run(
        &[("CNI_COMMAND", "VERSION")],
        &h.config("1.1.0").to_string(),
    );
    assert!(run.success, "{}", run.stderr);
    let versions: Vec<&str> = run.output["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        assert!(versions.contains(&v), "{v} in {versions:?}");
    }
}

#[test]
fn add_wires_the_pod_and_del_removes_everything() {
    let h = Harness::new();
    let free_before = h.free_addresses();
    let (pod, pod_path) = pod_ns();
    let run = h.call("ADD", "ctr-add", &pod_path, &h.config("1.1.0"));
    assert!(run.success, "ADD: {} {}", run.output, run.stderr);
    let result = &run.output;
    assert_eq!(result["cniVersion"], "1.1.0");
    // From the node's pod CIDR (the operator's assignment), with the
    // CIDR's first address as gateway.
    let pod_cidr: ipnetwork::Ipv4Network = h.lab.state().nodes[0].pod_cidr.parse().unwrap();
    let address = result["ips"][0]["address"].as_str().unwrap();
    let (ip, prefix) = address.split_once('/').unwrap();
    assert!(
        pod_cidr.contains(ip.parse().unwrap()) && prefix == "32",
        "{address} in {pod_cidr}"
    );
    let gateway = result["ips"][0]["gateway"].as_str().unwrap();
    assert_eq!(gateway, pod_cidr.nth(1).unwrap().to_string());
    let interfaces = result["interfaces"].as_array().unwrap();
    assert_eq!(interfaces.len(), 2);
    let host_if = interfaces[0]["name"].as_str().unwrap();
    assert!(
        host_if.starts_with("lxc") && host_if.len() <= 15,
        "{host_if}"
    );
    assert_eq!(interfaces[1]["name"], "eth0");
    assert_eq!(interfaces[1]["sandbox"], pod_path.as_str());
    assert_eq!(result["ips"][0]["interface"], 1);
    assert!(result["routes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["dst"] == "0.0.0.0/0"));

    // The pod side: address, default route via the gateway, static neighbour.
    let ip = address.trim_end_matches("/32");
    let addrs = ip_json(pod.name(), &["addr", "show", "dev", "eth0"]);
    assert!(addrs.to_string().contains(ip), "{addrs}");
    let routes = ip_json(pod.name(), &["route", "show"]);
    assert!(
        routes
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["dst"] == "default" && r["gateway"] == gateway),
        "{routes}"
    );
    let neighbours = ip_json(pod.name(), &["neigh", "show", "dev", "eth0"]);
    assert!(
        neighbours
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["dst"] == gateway
                && n["state"].to_string().contains("PERMANENT")
                && n["lladdr"] == interfaces[0]["mac"]),
        "{neighbours}"
    );
    // The host side: veth and a route to the pod.
    assert_eq!(h.host_veths(), vec![host_if.to_string()]);
    let host_routes = ip_json(&h.node_netns(), &["route", "show", ip]);
    assert!(host_routes.to_string().contains(host_if), "{host_routes}");
    assert_eq!(h.endpoint_count(), 1);
    assert_eq!(h.free_addresses(), free_before - 1);

    // CHECK agrees with what ADD made.
    let mut check_config = h.config("1.1.0");
    check_config["prevResult"] = result.clone();
    let check = h.call("CHECK", "ctr-add", &pod_path, &check_config);
    assert!(check.success, "CHECK: {} {}", check.output, check.stderr);

    let del = h.call("DEL", "ctr-add", &pod_path, &h.config("1.1.0"));
    assert!(del.success, "DEL: {} {}", del.output, del.stderr);
    assert!(h.host_veths().is_empty());
    assert!(!links(pod.name()).contains(&"eth0".to_string()));
    assert_eq!(h.endpoint_count(), 0);
    assert_eq!(h.free_addresses(), free_before);
}

#[test]
fn results_follow_the_requested_version() {
    let h = Harness::new();
    for (i, version) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0"].iter().enumerate() {
        let (_pod, pod_path) = pod_ns();
        let container = format!("ctr-v{i}");
        let run = h.call("ADD", &container, &pod_path, &h.config(version));
        assert!(run.success, "ADD {version}: {} {}", run.output, run.stderr);
        assert_eq!(run.output["cniVersion"], *version);
        let ip_version = &run.output["ips"][0]["version"];
        if version.starts_with("0.") {
            assert_eq!(ip_version, "4", "{version} results carry ips[].version");
        } else {
            assert!(
                ip_version.is_null(),
                "{version} results have no ips[].version"
            );
        }
        assert!(
            h.call("DEL", &container, &pod_path, &h.config(version))
                .success
        );
    }
}

#[test]
fn bad_input_gets_the_spec_error_codes() {
    let h = Harness::new();
    let (_pod, pod_path) = pod_ns();
    let good = h.config("1.1.0");

    let run = h.run(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", &pod_path),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ],
        "{ this is not json",
    );
    assert_error(&run, 6, "undecodable stdin");

    let mut bad = good.clone();
    bad["mtu"] = json!("large");
    assert_error(
        &h.call("ADD", "c1", &pod_path, &bad),
        7,
        "mtu of the wrong type",
    );
    let mut bad = good.clone();
    bad.as_object_mut().unwrap().remove("name");
    assert_error(
        &h.call("ADD", "c1", &pod_path, &bad),
        7,
        "config without a name",
    );

    let run = h.run(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_NETNS", &pod_path),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ],
        &good.to_string(),
    );
    assert_error(&run, 4, "no CNI_CONTAINERID");
    let run = h.run(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ],
        &good.to_string(),
    );
    assert_error(&run, 4, "no CNI_NETNS");

    assert_error(
        &h.call("ADD", "c1", &pod_path, &h.config("9.9.9")),
        1,
        "unsupported version",
    );

    // None of it allocated anything or left an interface.
    assert_eq!(h.endpoint_count(), 0);
    assert_eq!(h.free_addresses(), 253);
    assert!(h.host_veths().is_empty());
}

#[test]
fn del_is_idempotent_also_after_the_netns_is_gone() {
    let h = Harness::new();
    let (pod, pod_path) = pod_ns();
    assert!(
        h.call("ADD", "ctr-del", &pod_path, &h.config("1.1.0"))
            .success
    );
    drop(pod); // the runtime removed the sandbox first
    let first = h.call("DEL", "ctr-del", &pod_path, &h.config("1.1.0"));
    assert!(
        first.success,
        "DEL after netns gone: {} {}",
        first.output, first.stderr
    );
    let second = h.call("DEL", "ctr-del", &pod_path, &h.config("1.1.0"));
    assert!(
        second.success,
        "DEL twice: {} {}",
        second.output, second.stderr
    );
    let never_added = h.call("DEL", "ctr-never", "", &h.config("1.1.0"));
    assert!(never_added.success, "DEL of an unknown container");
    assert_eq!(h.endpoint_count(), 0);
    assert_eq!(h.free_addresses(), 253);
    assert!(h.host_veths().is_empty());
}

#[test]
fn gc_releases_attachments_that_are_not_valid() {
    let h = Harness::new();
    let (_a, a_path) = pod_ns();
    let (_b, b_path) = pod_ns();
    assert!(
        h.call("ADD", "ctr-keep", &a_path, &h.config("1.1.0"))
            .success
    );
    assert!(
        h.call("ADD", "ctr-stale", &b_path, &h.config("1.1.0"))
            .success
    );
    let mut config = h.config("1.1.0");
    config["cni.dev/valid-attachments"] = json!([{"containerID": "ctr-keep", "ifname": "eth0"}]);
    let run = h.run(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
        &config.to_string(),
    );
    assert!(run.success, "GC: {} {}", run.output, run.stderr);
    assert_eq!(h.endpoint_count(), 1);
    assert_eq!(h.free_addresses(), 252);
    assert_eq!(
        h.host_veths().len(),
        1,
        "the stale attachment's host veth is removed"
    );
}

#[test]
fn check_fails_after_tampering() {
    let h = Harness::new();
    let (pod, pod_path) = pod_ns();
    let add = h.call("ADD", "ctr-check", &pod_path, &h.config("1.1.0"));
    assert!(add.success);
    let mut config = h.config("1.1.0");
    config["prevResult"] = add.output.clone();
    assert!(h.call("CHECK", "ctr-check", &pod_path, &config).success);
    let address = add.output["ips"][0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    pod.ip(&["addr", "del", &address, "dev", "eth0"]).unwrap();
    let run = h.call("CHECK", "ctr-check", &pod_path, &config);
    assert!(!run.success, "CHECK must notice the missing address");
    assert!(run.output["code"].as_u64().is_some(), "{}", run.output);
}

#[test]
fn a_failed_add_leaves_nothing_behind() {
    let h = Harness::new();
    let (pod, pod_path) = pod_ns();
    // The sandbox already has an eth0, so the plugin cannot name its interface.
    pod.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "other",
    ])
    .unwrap();
    let run = h.call("ADD", "ctr-fail", &pod_path, &h.config("1.1.0"));
    assert!(!run.success, "ADD must fail: {}", run.output);
    assert!(run.output["code"].as_u64().is_some(), "{}", run.output);
    assert!(
        h.host_veths().is_empty(),
        "no host veth left: {:?}",
        h.host_veths()
    );
    assert_eq!(h.endpoint_count(), 0);
    assert_eq!(h.free_addresses(), 253, "the address was released");
    assert_eq!(links(pod.name()).iter().filter(|l| *l == "eth0").count(), 1);
}

#[test]
fn status_and_unreachable_agent() {
    let h = Harness::new();
    let run = h.run(
        &[("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/opt/cni/bin")],
        &h.config("1.1.0").to_string(),
    );
    assert!(run.success, "STATUS: {} {}", run.output, run.stderr);

    let mut gone = h.config("1.1.0");
    gone["agentSocket"] = json!("/run/weir-lab/no-such-agent.sock");
    let run = h.run(
        &[("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/opt/cni/bin")],
        &gone.to_string(),
    );
    assert_error(&run, 50, "STATUS without an agent");
    let (_pod, pod_path) = pod_ns();
    assert_error(
        &h.call("ADD", "ctr-x", &pod_path, &gone),
        11,
        "ADD without an agent",
    );
}
