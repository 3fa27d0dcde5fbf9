//! Running `weir-lab-client` inside the lab: a client process in a pod's
//! (or node's) network namespace and cgroup, one result per attempt.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::topology::world_netns;
use crate::Lab;
use weir_tests::netns;

/// One connection (TCP) or datagram exchange (UDP), as the client saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientResult {
    pub ok: bool,
    /// What the server answered (its namespace/name).
    pub reply: Option<String>,
    /// The peer the socket reports (getpeername / recvfrom).
    pub peer: Option<String>,
    /// Time for connect() (TCP) or the round trip (UDP), microseconds.
    pub connect_us: Option<u64>,
    pub error: Option<String>,
}

/// Wait at most this long for each connection or reply.
const TIMEOUT_MS: u64 = 2000;

/// Runs `count` attempts against `target` (`tcp:ADDRESS:PORT` or
/// `udp:ADDRESS:PORT`) from `netns_name`, inside `cgroup` when given.
pub fn run(
    binary: &Path,
    netns_name: &str,
    cgroup: Option<&Path>,
    target: &str,
    count: u32,
) -> Result<Vec<ClientResult>> {
    let mut cmd = Command::new(binary);
    cmd.args(["--target", target, "--count", &count.to_string()])
        .args(["--timeout-ms", &TIMEOUT_MS.to_string()]);
    netns::command_in(&mut cmd, netns_name)?;
    if let Some(cgroup) = cgroup {
        weir_tests::cgroup::enter_on_exec(cgroup, &mut cmd)?;
    }
    let out = cmd
        .output()
        .with_context(|| format!("run {}", binary.display()))?;
    if !out.status.success() {
        bail!(
            "weir-lab-client failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).with_context(|| format!("client output {line:?}")))
        .collect()
}

impl Lab {
    /// Runs `weir-lab-client` inside a pod (its network namespace and
    /// cgroup, so socket LB applies as to the pod's own clients).
    pub fn pod_client(&self, pod: &str, target: &str, count: u32) -> Result<Vec<ClientResult>> {
        let pod = self.pod(pod)?;
        run(
            &self.binaries.client,
            &pod.netns,
            Some(&pod.cgroup),
            target,
            count,
        )
    }

    /// Runs `weir-lab-client` as a host process of `node` (its network
    /// namespace, a cgroup below the node's).
    pub fn node_client(&self, node: &str, target: &str, count: u32) -> Result<Vec<ClientResult>> {
        let node = self.node(node)?;
        run(
            &self.binaries.client,
            &node.netns,
            Some(&node.cgroup.join("host")),
            target,
            count,
        )
    }

    /// Runs `weir-lab-client` in the outside world (no socket LB: its
    /// packets reach the nodes as any external client's do).
    pub fn world_client(&self, target: &str, count: u32) -> Result<Vec<ClientResult>> {
        let world = world_netns(&self.state.name);
        run(&self.binaries.client, &world, None, target, count)
    }
}
