//! Weir's cluster-wide components in the lab (control-plane mode), on the
//! underlay under deploy/'s RBAC, each as its own ServiceAccount:
//! - weir-operator, two replicas contending for one Lease as a
//!   Deployment's two pods would. The leader installs Weir's CRDs and
//!   gives every Node a pod CIDR from the lab's cluster pool in its
//!   WeirNode; the lab reads those assignments back for its own records
//!   and the outside world's routes, and the agents take theirs with
//!   `--ipam cluster-pool`.
//! - weir-relay, finding the agents' Observer APIs from the WeirNodes (in
//!   CRD mode, where the agents publish their addresses there; given the
//!   nodes' addresses in kvstore mode), on `10.77.0.1:4245` and on
//!   `kube/relay.sock`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::control_plane::ControlPlane;
use crate::process;
use crate::topology::{CLUSTER_CIDR, CLUSTER_CIDR_V6, POD_CIDR_V6_MASK};

/// Replicas, as deploy/kubernetes/31-operator.yaml runs.
pub const REPLICAS: usize = 2;
/// Each node's share of [`CLUSTER_CIDR`].
const MASK_SIZE: u8 = 24;
/// The first replica's metrics port (on the control plane's address); the
/// next replica takes the next port.
pub const METRICS_PORT: u16 = 9963;
/// The agents' Observer API port on their node address (`--hubble-address`).
pub const HUBBLE_PORT: u16 = 4244;
/// The relay's port (Hubble Relay's).
pub const RELAY_PORT: u16 = 4245;

/// The lab collects garbage often, so that its suites see it done: a pass
/// every few seconds, identities unused for half a minute.
const GC_INTERVAL_S: u64 = 5;
const IDENTITY_GC_GRACE_S: u64 = 30;
/// How long the leader may take to install the CRDs and assign every
/// node's pod CIDR (the first lease is taken at once).
const ASSIGN_TIMEOUT: Duration = Duration::from_secs(60);

impl ControlPlane {
    /// Starts the operator's replicas (recorded in [`Self::operator_pids`]
    /// as each starts, so `down` stops what did); with an IPv6 pool too
    /// when `dual_stack`.
    pub fn start_operators(&mut self, program: &std::path::Path, dual_stack: bool) -> Result<()> {
        for replica in 0..REPLICAS {
            let mut args = vec![
                "--kubeconfig".to_string(),
                self.operator_kubeconfig().display().to_string(),
                "--identity".into(),
                format!("weir-operator-{replica}"),
                "--lease-namespace".into(),
                "weir-system".into(),
                "--cluster-pool-ipv4-cidr".into(),
                CLUSTER_CIDR.into(),
                "--cluster-pool-ipv4-mask-size".into(),
                MASK_SIZE.to_string(),
                "--gc-interval-s".into(),
                GC_INTERVAL_S.to_string(),
                "--identity-gc-grace-s".into(),
                IDENTITY_GC_GRACE_S.to_string(),
                "--metrics-address".into(),
                format!("{}:{}", self.address, METRICS_PORT + replica as u16),
            ];
            if dual_stack {
                args.extend([
                    "--cluster-pool-ipv6-cidr".into(),
                    CLUSTER_CIDR_V6.into(),
                    "--cluster-pool-ipv6-mask-size".into(),
                    POD_CIDR_V6_MASK.to_string(),
                ]);
            }
            let log = self.dir.join(format!("weir-operator-{replica}.log"));
            let pid = process::spawn_detached(&self.netns, program, &args, &log)?;
            self.operator_pids.push(pid);
        }
        Ok(())
    }

    /// The relay's unix socket (mode 0600).
    pub fn relay_socket(&self) -> std::path::PathBuf {
        self.dir.join("relay.sock")
    }

    /// Starts weir-relay (recorded in [`Self::relay_pid`]): peers from the
    /// WeirNodes when `discover`, else `peers` (`host` addresses).
    pub fn start_relay(
        &mut self,
        program: &std::path::Path,
        discover: bool,
        peers: &[std::net::Ipv4Addr],
    ) -> Result<()> {
        let mut args = vec![
            "--listen-socket".to_string(),
            self.relay_socket().display().to_string(),
            "--listen-address".into(),
            format!("{}:{RELAY_PORT}", self.address),
            "--peer-check-interval-seconds".into(),
            "1".into(),
        ];
        if discover {
            args.extend([
                "--peer-discovery".into(),
                "weir-nodes".into(),
                "--peer-port".into(),
                HUBBLE_PORT.to_string(),
                "--kubeconfig".into(),
                self.relay_kubeconfig().display().to_string(),
            ]);
        } else {
            for peer in peers {
                args.extend(["--peer".into(), format!("http://{peer}:{HUBBLE_PORT}")]);
            }
        }
        let log = self.dir.join("weir-relay.log");
        self.relay_pid = process::spawn_detached(&self.netns, program, &args, &log)?;
        Ok(())
    }

    /// Waits until every one of `nodes` has its pod CIDRs in its WeirNode
    /// (IPv4, and IPv6 when `dual_stack`); the CIDRs of each (IPv4 first),
    /// by node name.
    pub fn wait_pod_cidrs(
        &self,
        nodes: &[&str],
        dual_stack: bool,
    ) -> Result<BTreeMap<String, Vec<String>>> {
        let wanted = if dual_stack { 2 } else { 1 };
        let started = Instant::now();
        let mut last_error = String::new();
        while started.elapsed() < ASSIGN_TIMEOUT {
            // Fails until the leader has installed the CRD.
            match self.kubectl(&[
                "get",
                "weirnodes",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name} {.spec.podCIDRs[*]}{\"\\n\"}{end}",
            ]) {
                Ok(out) => {
                    let assigned = parse_assignments(&out);
                    let done = |n: &&str| assigned.get(*n).is_some_and(|c| c.len() >= wanted);
                    if nodes.iter().all(done) {
                        return Ok(assigned);
                    }
                    last_error = format!("assigned so far: {assigned:?}");
                }
                Err(e) => last_error = format!("{e:#}"),
            }
            if !self.operator_pids.iter().any(|pid| process::alive(*pid)) {
                bail!(
                    "every weir-operator replica exited; the first one's log:\n{}",
                    self.log("weir-operator-0")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "the nodes' pod CIDRs were not assigned within {ASSIGN_TIMEOUT:?} ({last_error}); \
             the operators' logs:\n{}\n{}",
            self.log("weir-operator-0"),
            self.log("weir-operator-1")
        )
    }
}

/// `name cidr...` lines into a map, skipping WeirNodes without a CIDR yet.
fn parse_assignments(out: &str) -> BTreeMap<String, Vec<String>> {
    out.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next()?;
            let cidrs: Vec<String> = words.map(str::to_string).collect();
            (!cidrs.is_empty()).then(|| (name.to_string(), cidrs))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_assignments;

    #[test]
    fn reads_assignments_and_skips_nodes_without_one() {
        let got = parse_assignments("n1 10.244.0.0/24\nn2 \nn3 10.244.1.0/24 fd00::/112\n");
        assert_eq!(got.len(), 2);
        assert_eq!(got["n1"], ["10.244.0.0/24"]);
        assert_eq!(got["n3"], ["10.244.1.0/24", "fd00::/112"]);
    }
}
