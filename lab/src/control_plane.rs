//! A Kubernetes control plane (v1.20.2, built by `cargo xtask setup`) in a
//! network namespace: kube-apiserver on a given etcd, with what 1.20 needs
//! (HTTPS with a self-generated serving certificate, static tokens,
//! ServiceAccount keys, `Node,RBAC` authorization), kube-controller-manager
//! and kube-scheduler each under an identity of its own, and Debian's
//! kubectl to drive it as the admin. The lab runs one beside its etcd on the
//! underlay; the `kube_apiserver` suite runs one on loopback.
//!
//! The record is plain data (kept in the lab's state file); [`stop`]
//! ends its processes, and the caller removes its directory.
//!
//! [`stop`]: ControlPlane::stop

use std::fs;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::{process, KubeBinaries};
use weir_tests::netns;

/// The API server's HTTPS port.
pub const API_PORT: u16 = 6443;
const SERVICE_CIDR: &str = "10.96.0.0/16";
/// A dual-stack control plane's IPv6 service range (the agents'
/// `--service-cidr-v6`).
const SERVICE_CIDR_V6: &str = crate::topology::SERVICE_CIDR_V6;
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Static token identities: the admin (system:masters), and the two
/// components as the users the default RBAC policy binds their roles to.
const ADMIN: Identity = Identity {
    user: "weir-admin",
    groups: "system:masters",
    kubeconfig: "admin.kubeconfig",
};
const CONTROLLER_MANAGER: Identity = Identity {
    user: "system:kube-controller-manager",
    groups: "",
    kubeconfig: "controller-manager.kubeconfig",
};
const SCHEDULER: Identity = Identity {
    user: "system:kube-scheduler",
    groups: "",
    kubeconfig: "scheduler.kubeconfig",
};

/// Weir's agents, as the ServiceAccount deploy/kubernetes/20-agent-rbac.yaml binds
/// its ClusterRole to: a static token names the account's user and groups,
/// so RBAC checks the agents against the real role without waiting for the
/// token controller to sign one at `lab up`.
const AGENT: Identity = Identity {
    user: "system:serviceaccount:weir-system:weir-agent",
    groups: "system:serviceaccounts,system:serviceaccounts:weir-system",
    kubeconfig: "agent.kubeconfig",
};

/// weir-operator, as the ServiceAccount deploy/kubernetes/30-operator-rbac.yaml
/// binds its roles to.
const OPERATOR: Identity = Identity {
    user: "system:serviceaccount:weir-system:weir-operator",
    groups: "system:serviceaccounts,system:serviceaccounts:weir-system",
    kubeconfig: "operator.kubeconfig",
};

/// weir-relay, as the ServiceAccount deploy/kubernetes/40-relay.yaml binds
/// its role to.
const RELAY: Identity = Identity {
    user: "system:serviceaccount:weir-system:weir-relay",
    groups: "system:serviceaccounts,system:serviceaccounts:weir-system",
    kubeconfig: "relay.kubeconfig",
};

/// Weir's namespace and the RBAC of agent, operator and relay, as an
/// installation applies them (deploy/kubernetes), applied at `lab up` (of
/// 40-relay.yaml only its ServiceAccount and roles: the lab runs the relay
/// itself); the operator installs the CRDs itself.
const DEPLOY: [&str; 4] = [
    include_str!("../../deploy/kubernetes/00-namespace.yaml"),
    include_str!("../../deploy/kubernetes/20-agent-rbac.yaml"),
    include_str!("../../deploy/kubernetes/30-operator-rbac.yaml"),
    include_str!("../../deploy/kubernetes/40-relay.yaml"),
];

/// The kinds of deploy/ the lab applies: identities and their roles.
const DEPLOYED_KINDS: [&str; 6] = [
    "Namespace",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
];

/// 1.20's alpha gate that makes the EndpointSlice controller publish
/// terminating endpoints with `serving`/`terminating` (as 1.22+ do by
/// default), which the agent's graceful termination reads.
const FEATURE_GATES: &str = "--feature-gates=EndpointSliceTerminatingCondition=true";
/// [`FEATURE_GATES`] and 1.20's alpha dual stack (`IPv6DualStack`): IPv6
/// and dual-stack Services, and an EndpointSlice per family from the pods'
/// `podIPs`.
const FEATURE_GATES_DUAL_STACK: &str =
    "--feature-gates=EndpointSliceTerminatingCondition=true,IPv6DualStack=true";

const AUDIT_POLICY_FILE: &str = "audit-policy.yaml";

/// Requests of Weir's ServiceAccounts at Metadata level, nothing else:
/// what the RBAC usage check compares with the roles in deploy/. Every
/// stage is kept: 1.20 logs a watch that is still open only when it was
/// received.
fn audit_policy() -> String {
    let users: Vec<String> = [AGENT, OPERATOR, RELAY]
        .iter()
        .map(|who| format!("\"{}\"", who.user))
        .collect();
    format!(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\n\
         rules:\n- level: Metadata\n  users: [{}]\n- level: None\n",
        users.join(", ")
    )
}

struct Identity {
    user: &'static str,
    groups: &'static str,
    kubeconfig: &'static str,
}

/// A control plane: where it runs, where its files are, its processes (0:
/// not started).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ControlPlane {
    /// The network namespace its components run (and kubectl reaches it) in.
    pub netns: String,
    /// Keys, tokens, kubeconfigs, the serving certificate and logs.
    pub dir: PathBuf,
    /// The address kube-apiserver binds and advertises.
    pub address: Ipv4Addr,
    /// The etcd it stores objects in.
    pub etcd_url: String,
    pub kubectl: PathBuf,
    /// An etcd of its own, when it runs one ([`Self::start_etcd`]).
    #[serde(default)]
    pub etcd_pid: u32,
    #[serde(default)]
    pub apiserver_pid: u32,
    #[serde(default)]
    pub controller_manager_pid: u32,
    #[serde(default)]
    pub scheduler_pid: u32,
    /// weir-operator's replicas (`lab up` starts them; see the operator module).
    #[serde(default)]
    pub operator_pids: Vec<u32>,
    /// weir-relay (`lab up` starts it; see the operator module).
    #[serde(default)]
    pub relay_pid: u32,
    /// Dual stack: IPv6 services beside IPv4 ones (set before
    /// [`Self::start_apiserver`]).
    #[serde(default)]
    pub dual_stack: bool,
}

impl ControlPlane {
    /// A control plane to run in `netns` with its files in `dir` (created):
    /// nothing started yet.
    pub fn new(
        netns: &str,
        dir: &Path,
        address: Ipv4Addr,
        etcd_url: &str,
        kubectl: &Path,
    ) -> Result<ControlPlane> {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(ControlPlane {
            netns: netns.to_string(),
            dir: dir.to_path_buf(),
            address,
            etcd_url: etcd_url.to_string(),
            kubectl: kubectl.to_path_buf(),
            etcd_pid: 0,
            apiserver_pid: 0,
            controller_manager_pid: 0,
            scheduler_pid: 0,
            operator_pids: Vec::new(),
            relay_pid: 0,
            dual_stack: false,
        })
    }

    fn feature_gates(&self) -> String {
        match self.dual_stack {
            true => FEATURE_GATES_DUAL_STACK.into(),
            false => FEATURE_GATES.into(),
        }
    }

    fn service_cluster_ip_range(&self) -> String {
        match self.dual_stack {
            true => format!("--service-cluster-ip-range={SERVICE_CIDR},{SERVICE_CIDR_V6}"),
            false => format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        }
    }

    /// The admin's kubeconfig (usable inside [`Self::netns`]).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join(ADMIN.kubeconfig)
    }

    /// The API server's audit log: one JSON event per request of Weir's
    /// ServiceAccounts (`ResponseComplete` stage, metadata only).
    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("audit.log")
    }

    /// weir-operator's kubeconfig (the `weir-operator` ServiceAccount).
    pub fn operator_kubeconfig(&self) -> PathBuf {
        self.dir.join(OPERATOR.kubeconfig)
    }

    /// weir-relay's kubeconfig (the `weir-relay` ServiceAccount).
    pub fn relay_kubeconfig(&self) -> PathBuf {
        self.dir.join(RELAY.kubeconfig)
    }

    /// The kubeconfig of Weir's agents (the `weir-agent` ServiceAccount).
    pub fn agent_kubeconfig(&self) -> PathBuf {
        self.dir.join(AGENT.kubeconfig)
    }

    /// The serving certificate kube-apiserver generates into --cert-dir
    /// (its file also holds the CA that signed it).
    pub fn serving_cert(&self) -> PathBuf {
        self.dir.join("pki/apiserver.crt")
    }

    /// A component's log.
    pub fn log(&self, component: &str) -> String {
        fs::read_to_string(self.dir.join(format!("{component}.log"))).unwrap_or_default()
    }

    /// Writes the ServiceAccount key pair, the token file (a random token
    /// per identity) and a kubeconfig per identity.
    pub fn write_credentials(&self) -> Result<()> {
        let key = self.dir.join("sa.key");
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            path_str(&key)?,
        ])?;
        openssl(&[
            "pkey",
            "-in",
            path_str(&key)?,
            "-pubout",
            "-out",
            path_str(&self.dir.join("sa.pub"))?,
        ])?;
        let mut tokens = String::new();
        for (uid, who) in [ADMIN, CONTROLLER_MANAGER, SCHEDULER, AGENT, OPERATOR, RELAY]
            .iter()
            .enumerate()
        {
            let token = random_token()?;
            // token,user,uid,"group1,group2"
            tokens.push_str(&format!("{token},{},{uid},\"{}\"\n", who.user, who.groups));
            fs::write(self.dir.join(who.kubeconfig), self.kubeconfig(&token))?;
        }
        fs::write(self.dir.join("tokens.csv"), tokens)?;
        Ok(())
    }

    /// Adds a kubelet identity per node (`system:node:<name>` in
    /// `system:nodes`, which the Node authorizer grants what a kubelet
    /// does) to the token file, with a kubeconfig each; before
    /// [`Self::start_apiserver`], which reads the file once.
    pub fn write_kubelet_credentials(&self, nodes: &[String]) -> Result<()> {
        let mut tokens = fs::read_to_string(self.dir.join("tokens.csv"))
            .context("the token file (write_credentials first)")?;
        for node in nodes {
            let token = random_token()?;
            tokens.push_str(&format!(
                "{token},system:node:{node},kubelet-{node},\"system:nodes\"\n"
            ));
            fs::write(self.kubelet_kubeconfig(node), self.kubeconfig(&token))?;
        }
        fs::write(self.dir.join("tokens.csv"), tokens)?;
        Ok(())
    }

    /// The kubeconfig of `node`'s kubelet (the lab's, for that node).
    pub fn kubelet_kubeconfig(&self, node: &str) -> PathBuf {
        self.dir.join(format!("kubelet-{node}.kubeconfig"))
    }

    fn kubeconfig(&self, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: weir\n  cluster:\n    \
             server: https://{}:{API_PORT}\n    certificate-authority: {}\n\
             users:\n- name: weir\n  user:\n    token: {token}\n\
             contexts:\n- name: weir\n  context: {{cluster: weir, user: weir}}\n\
             current-context: weir\n",
            self.address,
            self.serving_cert().display()
        )
    }

    fn start(&self, program: &Path, args: &[String], component: &str) -> Result<u32> {
        let log = self.dir.join(format!("{component}.log"));
        process::spawn_detached(&self.netns, program, args, &log)
    }

    /// Starts the control plane's own etcd on [`Self::address`] at
    /// `client_port` (its URL must be the one given to [`Self::new`]), so
    /// the API server does not share a store (and its faults) with the
    /// agents' kvstore, as Cilium's kvstore runs beside a cluster's etcd.
    pub fn start_etcd(&mut self, client_port: u16, peer_port: u16) -> Result<()> {
        self.etcd_pid = crate::etcd::start_member(
            &self.netns,
            "kube-etcd",
            &self.dir.join("etcd"),
            client_port,
            peer_port,
            &self.dir.join("etcd.log"),
            None,
        )?;
        Ok(())
    }

    /// Starts kube-apiserver (after [`Self::write_credentials`]); it takes
    /// seconds to serve: see [`Self::wait_ready`].
    pub fn start_apiserver(&mut self, program: &Path) -> Result<()> {
        let dir = |name: &str| self.dir.join(name).display().to_string();
        let args = vec![
            format!("--etcd-servers={}", self.etcd_url),
            format!("--bind-address={}", self.address),
            format!("--advertise-address={}", self.address),
            format!("--secure-port={API_PORT}"),
            "--insecure-port=0".into(),
            format!("--cert-dir={}", dir("pki")),
            format!("--token-auth-file={}", dir("tokens.csv")),
            format!("--service-account-issuer={ISSUER}"),
            format!("--service-account-key-file={}", dir("sa.pub")),
            format!("--service-account-signing-key-file={}", dir("sa.key")),
            self.service_cluster_ip_range(),
            "--authorization-mode=Node,RBAC".into(),
            // A node's kubelet by its underlay address (logs and exec of a
            // real kubelet; the lab's node names resolve nowhere).
            "--kubelet-preferred-address-types=InternalIP,Hostname".into(),
            self.feature_gates(),
            // What Weir's components ask of the API (RBAC usage checks).
            format!("--audit-policy-file={}", dir(AUDIT_POLICY_FILE)),
            format!("--audit-log-path={}", self.audit_log().display()),
            "--audit-log-maxsize=100".into(),
        ];
        fs::write(self.dir.join(AUDIT_POLICY_FILE), audit_policy())?;
        self.apiserver_pid = self.start(program, &args, "kube-apiserver")?;
        Ok(())
    }

    /// Waits until `/readyz` answers `ok`; the time it took.
    pub fn wait_ready(&self) -> Result<Duration> {
        let started = Instant::now();
        while started.elapsed() < READY_TIMEOUT {
            if self.kubectl(&["get", "--raw", "/readyz"]).ok().as_deref() == Some("ok") {
                return Ok(started.elapsed());
            }
            if !process::alive(self.apiserver_pid) {
                bail!(
                    "kube-apiserver exited; its log:\n{}",
                    self.log("kube-apiserver")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "kube-apiserver not ready after {READY_TIMEOUT:?}; its log:\n{}",
            self.log("kube-apiserver")
        )
    }

    /// Starts kube-controller-manager once the API server is ready (it
    /// reads the serving certificate as its root CA, and gives up on an API
    /// server that does not answer).
    pub fn start_controller_manager(&mut self, program: &Path) -> Result<()> {
        let dir = |name: &str| self.dir.join(name).display().to_string();
        let args = vec![
            format!("--kubeconfig={}", dir(CONTROLLER_MANAGER.kubeconfig)),
            "--leader-elect=false".into(),
            // Each controller under its own ServiceAccount (the token
            // controller signs their tokens with the key below), so RBAC
            // checks it against its own bootstrap role.
            "--use-service-account-credentials=true".into(),
            // Node lifecycle on its defaults: the kubelet daemons renew
            // their nodes' Leases (a node silent for 40 s goes Unknown).
            // Health on the insecure port (1.20 still has it), where the
            // API server's componentstatuses looks.
            "--address=127.0.0.1".into(),
            "--port=10252".into(),
            "--secure-port=0".into(),
            format!("--service-account-private-key-file={}", dir("sa.key")),
            format!("--root-ca-file={}", self.serving_cert().display()),
            self.feature_gates(),
        ];
        self.controller_manager_pid = self.start(program, &args, "kube-controller-manager")?;
        Ok(())
    }

    pub fn start_scheduler(&mut self, program: &Path) -> Result<()> {
        let args = vec![
            format!(
                "--kubeconfig={}",
                self.dir.join(SCHEDULER.kubeconfig).display()
            ),
            "--leader-elect=false".into(),
            "--address=127.0.0.1".into(),
            "--port=10251".into(),
            "--secure-port=0".into(),
        ];
        self.scheduler_pid = self.start(program, &args, "kube-scheduler")?;
        Ok(())
    }

    /// Waits for the API server, then starts the controller-manager and
    /// the scheduler.
    pub fn start_components(&mut self, bins: &KubeBinaries) -> Result<Duration> {
        let ready = self.wait_ready()?;
        self.start_controller_manager(&bins.controller_manager)?;
        self.start_scheduler(&bins.scheduler)?;
        Ok(ready)
    }

    /// Applies Weir's namespace and the RBAC of its components (deploy/),
    /// and the lab kubelets' extra read access.
    pub fn apply_deploy(&self) -> Result<()> {
        let mut documents = deployed_documents();
        documents.push(KUBELET_ENDPOINTSLICE_READER);
        let yaml = documents.join("\n---\n");
        self.kubectl_stdin(&["apply", "-f", "-"], &yaml)?;
        Ok(())
    }

    /// Stops the components, the API server and its etcd, all signalled at
    /// once: a terminating kube-apiserver drains its watches for up to a
    /// minute, and nothing in them needs saving (the control plane goes as
    /// a whole), so they have a second in all before SIGKILL.
    pub fn stop(&self) {
        // Its etcd too: what it holds goes with the control plane.
        let pids: Vec<u32> = self
            .operator_pids
            .iter()
            .copied()
            .chain([
                self.relay_pid,
                self.scheduler_pid,
                self.controller_manager_pid,
                self.apiserver_pid,
                self.etcd_pid,
            ])
            .collect();
        for pid in pids.iter().copied().filter(|pid| process::alive(*pid)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        // One second in all, not one each.
        let deadline = Instant::now() + Duration::from_secs(1);
        for pid in pids {
            process::stop(pid, deadline.saturating_duration_since(Instant::now()));
        }
    }

    /// A kubectl command as the admin inside the namespace.
    pub fn kubectl_command(&self, args: &[&str]) -> Result<Command> {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig")
            .arg(self.admin_kubeconfig())
            .args(args);
        netns::command_in(&mut cmd, &self.netns)?;
        Ok(cmd)
    }

    /// Runs kubectl as the admin, each request bounded to 10 s (a later
    /// `--request-timeout` in `args` wins); stdout, or an error with stderr.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let args: Vec<&str> = ["--request-timeout=10s"]
            .iter()
            .chain(args)
            .copied()
            .collect();
        netns::run(&mut self.kubectl_command(&args)?)
    }

    /// Runs kubectl with `input` on its stdin (`create -f -`, `apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Result<String> {
        let bounded: Vec<&str> = ["--request-timeout=10s"]
            .iter()
            .chain(args)
            .copied()
            .collect();
        let mut cmd = self.kubectl_command(&bounded)?;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("start kubectl")?;
        child
            .stdin
            .take()
            .context("kubectl stdin")?
            .write_all(input.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits until each of `crds` (full names) is Established. Polls
    /// rather than `kubectl wait`: 1.20's kubectl fails at once on a CRD
    /// whose status has no conditions yet.
    pub fn wait_crds_established(&self, crds: &[&str]) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        for crd in crds {
            loop {
                let status = self.kubectl(&[
                    "get",
                    "crd",
                    crd,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
                ]);
                if status.as_deref().is_ok_and(|s| s == "True") {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("CRD {crd} not Established within 30 s ({status:?})");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// Registers `nodes` as Nodes, Ready with room for pods, as a kubelet
    /// would register them (a Node may set its status on create).
    pub fn register_nodes(&self, nodes: &[(&str, Ipv4Addr)]) -> Result<()> {
        let now = netns::run(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]))?;
        let yaml: String = nodes
            .iter()
            .map(|(name, address)| node_yaml(name, *address, now.trim()))
            .collect();
        self.kubectl_stdin(&["create", "-f", "-"], &yaml)?;
        Ok(())
    }
}

/// A Ready Node with its underlay address and room for pods.
pub fn node_yaml(name: &str, address: Ipv4Addr, now: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n\
         status:\n  capacity: {{cpu: '2', memory: 4Gi, pods: '110'}}\n  \
         allocatable: {{cpu: '2', memory: 4Gi, pods: '110'}}\n  \
         addresses: [{{type: InternalIP, address: '{address}'}}]\n  conditions:\n  \
         - {{type: Ready, status: 'True', reason: KubeletReady, \
         lastHeartbeatTime: '{now}', lastTransitionTime: '{now}'}}\n---\n"
    )
}

/// What the lab's kubelets read beyond a kubelet's role: a terminating
/// pod waits until its endpoints are marked terminating (the part a
/// preStop hook plays for a real workload), so they need EndpointSlices.
const KUBELET_ENDPOINTSLICE_READER: &str = "\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: weir-lab:kubelet-endpointslice-reader
rules:
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: weir-lab:kubelet-endpointslice-reader
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: weir-lab:kubelet-endpointslice-reader
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: Group
  name: system:nodes
";

/// The documents of [`DEPLOY`] whose kind the lab applies.
fn deployed_documents() -> Vec<&'static str> {
    DEPLOY
        .iter()
        .flat_map(|file| file.split("\n---\n"))
        .filter(|doc| {
            doc.lines()
                .find_map(|l| l.strip_prefix("kind: "))
                .is_some_and(|kind| DEPLOYED_KINDS.contains(&kind.trim()))
        })
        .collect()
}

fn openssl(args: &[&str]) -> Result<()> {
    netns::run(Command::new("openssl").args(args)).map(drop)
}

/// 128 random bits in hex.
fn random_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

#[cfg(test)]
mod tests {
    use super::{deployed_documents, node_yaml};

    #[test]
    fn the_lab_applies_identities_and_roles_of_deploy_only() {
        let docs = deployed_documents();
        let kinds: Vec<&str> = docs
            .iter()
            .filter_map(|d| d.lines().find_map(|l| l.strip_prefix("kind: ")))
            .collect();
        assert!(kinds.contains(&"Namespace") && kinds.contains(&"ServiceAccount"));
        assert!(
            !kinds.contains(&"Deployment") && !kinds.contains(&"Service"),
            "{kinds:?}"
        );
        // The three components' accounts.
        for name in ["weir-agent", "weir-operator", "weir-relay"] {
            assert!(
                docs.iter()
                    .any(|d| d.contains("kind: ServiceAccount") && d.contains(name)),
                "{name}"
            );
        }
    }
    use std::net::Ipv4Addr;

    #[test]
    fn a_node_is_registered_ready_with_its_address() {
        let yaml = node_yaml("n1", Ipv4Addr::new(10, 77, 0, 11), "2026-01-01T00:00:00Z");
        let doc: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(yaml.trim_end_matches("---\n")).expect("node YAML parses");
        assert_eq!(doc["metadata"]["name"].as_str(), Some("n1"));
        assert_eq!(
            doc["status"]["addresses"][0]["address"].as_str(),
            Some("10.77.0.11")
        );
        let ready = &doc["status"]["conditions"][0];
        assert_eq!(ready["type"].as_str(), Some("Ready"));
        assert_eq!(ready["status"].as_str(), Some("True"));
    }
}
