//! Invoking `weir-cni` exactly as a container runtime does: CNI_*
//! environment, the network configuration on stdin, the result on stdout,
//! run in the node's network namespace.

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use weir_tests::netns;

/// The network configuration the lab gives the plugin on `node`. It says
/// 1.0.0, as an installed configuration should: containerd 1.6/1.7 (libcni
/// 1.1) refuses results of 1.1.0, and the plugin answers in the version the
/// configuration names.
pub fn network_config(agent_socket: &Path, mtu: u32) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "weir",
        "type": "weir-cni",
        "agentSocket": agent_socket,
        "mtu": mtu,
    })
}

/// `config` with the `runtimeConfig.portMappings` a runtime adds for the
/// pod's `hostPort`s (kubelet passes them through the CNI `portMappings`
/// capability), unchanged when it has none.
pub fn with_port_mappings(
    mut config: serde_json::Value,
    ports: &[weir_agent::cluster::manifest::ContainerPort],
) -> serde_json::Value {
    let mappings: Vec<serde_json::Value> = ports
        .iter()
        .filter_map(|port| {
            Some(serde_json::json!({
                "hostPort": port.host_port?,
                "containerPort": port.port,
                "protocol": port.protocol.name().to_ascii_lowercase(),
            }))
        })
        .collect();
    if !mappings.is_empty() {
        config["runtimeConfig"] = serde_json::json!({ "portMappings": mappings });
    }
    config
}

/// One plugin invocation.
pub struct Invocation<'a> {
    pub plugin: &'a Path,
    pub node_netns: &'a str,
    pub command: &'a str,
    pub container_id: &'a str,
    pub pod_netns: &'a str,
    pub ifname: &'a str,
    pub pod_namespace: &'a str,
    pub pod_name: &'a str,
    pub config: &'a serde_json::Value,
}

/// The outcome of an invocation: exit success and stdout.
pub struct Outcome {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

pub fn invoke(call: &Invocation) -> Result<Outcome> {
    finish(spawn(call)?)
}

/// Starts the plugin with the configuration on its stdin; [`finish`] waits
/// for it (a runtime that times out kills it instead).
pub fn spawn(call: &Invocation) -> Result<std::process::Child> {
    let mut cmd = Command::new(call.plugin);
    cmd.env_clear()
        .env("CNI_COMMAND", call.command)
        .env("CNI_CONTAINERID", call.container_id)
        .env("CNI_NETNS", call.pod_netns)
        .env("CNI_IFNAME", call.ifname)
        .env(
            "CNI_ARGS",
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}",
                call.pod_namespace, call.pod_name, call.container_id
            ),
        )
        .env(
            "CNI_PATH",
            call.plugin.parent().unwrap_or(Path::new("/")),
        )
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    netns::command_in(&mut cmd, call.node_netns)?;
    let mut child = cmd
        .spawn()
        .with_context(|| format!("start {}", call.plugin.display()))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(serde_json::to_string(call.config)?.as_bytes())?;
    Ok(child)
}

/// Waits for a plugin started by [`spawn`].
pub fn finish(child: std::process::Child) -> Result<Outcome> {
    let out = child.wait_with_output()?;
    Ok(Outcome {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// A pod's addresses, as ADD's result reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodAddresses {
    pub ipv4: Ipv4Addr,
    /// On a dual-stack node.
    pub ipv6: Option<Ipv6Addr>,
}

/// ADD, returning the pod's addresses from the result.
pub fn add(call: &Invocation) -> Result<PodAddresses> {
    let outcome = invoke(call)?;
    if !outcome.success {
        bail!(
            "CNI ADD for {}/{} failed: {} {}",
            call.pod_namespace,
            call.pod_name,
            outcome.stdout.trim(),
            outcome.stderr.trim()
        );
    }
    add_result_addresses(&outcome.stdout)
}

/// The pod's addresses in a successful ADD's result: its IPv4 address (it
/// must have one) and its IPv6 address if it has one.
pub fn add_result_addresses(stdout: &str) -> Result<PodAddresses> {
    let result: serde_json::Value =
        serde_json::from_str(stdout).context("CNI ADD result is not JSON")?;
    let mut addresses = Vec::new();
    for ip in result["ips"].as_array().into_iter().flatten() {
        let text = ip["address"]
            .as_str()
            .context("CNI ADD result has an ips entry without an address")?;
        let address: std::net::IpAddr = text
            .split('/')
            .next()
            .unwrap_or_default()
            .parse()
            .with_context(|| format!("CNI ADD returned address {text:?}"))?;
        addresses.push(address);
    }
    let ipv4 = addresses
        .iter()
        .find_map(|a| match a {
            std::net::IpAddr::V4(v4) => Some(*v4),
            std::net::IpAddr::V6(_) => None,
        })
        .context("CNI ADD result has no IPv4 address")?;
    let ipv6 = addresses.iter().find_map(|a| match a {
        std::net::IpAddr::V6(v6) => Some(*v6),
        std::net::IpAddr::V4(_) => None,
    });
    Ok(PodAddresses { ipv4, ipv6 })
}

/// DEL; errors carry the plugin's error JSON.
pub fn del(call: &Invocation) -> Result<()> {
    let outcome = invoke(call)?;
    if !outcome.success {
        bail!(
            "CNI DEL for {}/{} failed: {} {}",
            call.pod_namespace,
            call.pod_name,
            outcome.stdout.trim(),
            outcome.stderr.trim()
        );
    }
    Ok(())
}
