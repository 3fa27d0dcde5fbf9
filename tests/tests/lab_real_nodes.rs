//! The lab with real nodes (`lab up --real-nodes`, issue 20): on every
//! node kubelet v1.20.2 with Debian's containerd 1.6 and runc, in a mount
//! namespace of its own, running pods through weir-cni (a conflist at
//! cniVersion 1.0.0) beside the node's weir-agent. The nodes report their
//! kubelet and runtime; pods applied through the API run the lab's
//! pod-server image; they reach each other across nodes, a NetworkPolicy
//! closes a path and reopens it when deleted, a graceful delete ends a
//! pod; pods resolve Services through the node's cluster DNS (`weir-lab
//! dns`); `down` leaves no mount, process, cgroup or namespace file.

use std::process::Command;
use std::time::Duration;

use weir_lab::client::ClientResult;
use weir_lab::real_node::RealNode;
use weir_lab::testing::{namespace_yaml, pod_yaml, wait_until, TestLab};

/// A Service for x/b, and a pod with the tools the upstream e2e suite
/// execs (the lab's agnhost image: netcat-openbsd, curl, bash).
const WEB_AND_TOOLS: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: x}
spec:
  selector: {pod: b}
  ports: [{port: 8080, targetPort: 80, protocol: TCP}]
---
apiVersion: v1
kind: Pod
metadata: {name: tools, namespace: x}
spec:
  nodeName: n1
  containers:
  - name: agnhost
    image: k8s.gcr.io/e2e-test-images/agnhost:2.21
    imagePullPolicy: Never
    args: [pause]
";

const DENY_B: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Ingress]
";

/// One attempt from the pod `from` (on real node `node`) to `target`.
fn connect(lab: &TestLab, node: &str, from: &str, target: &str) -> ClientResult {
    let real = RealNode::of(&weir_lab::lab_dir(lab.name()), node);
    let netns = real.pod_netns(from).unwrap();
    let results =
        weir_lab::client::run(&lab_client(), &netns.display().to_string(), None, target, 1)
            .unwrap();
    results.into_iter().next().expect("one attempt")
}

/// The lines of `node`'s agent log that mention `needle` (the last 30).
fn agent_log_lines(lab: &str, node: &str, needle: &str) -> String {
    let log = weir_lab::lab_dir(lab).join(node).join("agent.log");
    weir_lab::real_node::matching_lines(&log, needle, 30)
}

fn lab_client() -> std::path::PathBuf {
    weir_lab::Binaries::locate().unwrap().client
}

#[test]
fn real_kubelets_run_pods_through_weir_and_weir_enforces_policy_on_them() {
    let mut lab = TestLab::up_real_nodes(2).expect("lab up with real nodes");
    let name = lab.name().to_string();
    for node in ["n1", "n2"] {
        wait_until(
            &format!("{node} reports its kubelet"),
            Duration::from_secs(60),
            || {
                lab.kubectl_field(&["node", node], "{.status.nodeInfo.kubeletVersion}")
                    .unwrap_or_default()
                    == "v1.20.2"
            },
        );
        let runtime = lab
            .kubectl_field(
                &["node", node],
                "{.status.nodeInfo.containerRuntimeVersion}",
            )
            .unwrap_or_default();
        assert!(runtime.starts_with("containerd://1.6"), "{node}: {runtime}");
    }

    let mut yaml = namespace_yaml("x");
    yaml.push_str(&pod_yaml("x", "a", "n1", &[80]));
    yaml.push_str(&pod_yaml("x", "b", "n2", &[80]));
    lab.apply_yaml(&yaml)
        .expect("the real kubelets run the pods");
    let b_ip = lab
        .kubectl_field(&["pod", "b", "-n", "x"], "{.status.podIP}")
        .unwrap_or_default();
    let n2_cidr: ipnetwork::Ipv4Network = lab.state().node("n2").unwrap().pod_cidr.parse().unwrap();
    assert!(
        n2_cidr.contains(b_ip.parse().unwrap()),
        "x/b at {b_ip}, n2 has {n2_cidr}"
    );

    // The pods' processes live below their node's cgroup (kubelet's
    // --cgroup-root), where the node's socket LB applies to them.
    let real = RealNode::of(&weir_lab::lab_dir(&name), "n1");
    let netns = real.pod_netns("x/a").unwrap();
    let pid = netns.components().nth(2).unwrap().as_os_str().to_owned();
    let cgroup =
        std::fs::read_to_string(format!("/proc/{}/cgroup", pid.to_string_lossy())).unwrap();
    let unified = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_default();
    assert!(
        unified.starts_with(&format!("/weir-lab/{name}/n1/")),
        "x/a's server is in cgroup {unified:?}"
    );

    // Across nodes, TCP and UDP.
    for proto in ["tcp", "udp"] {
        let result = connect(&lab, "n1", "x/a", &format!("{proto}:{b_ip}:80"));
        assert_eq!(result.reply.as_deref(), Some("x/b"), "{proto}: {result:?}");
    }

    // Cluster DNS: a pod reaches a Service by its short name, through the
    // node's DNS server and the search path kubelet writes, with the very
    // command the upstream suite's reachability checks run.
    let cp = lab.control_plane().unwrap().clone();
    cp.kubectl_stdin(&["apply", "-f", "-"], WEB_AND_TOOLS)
        .unwrap();
    cp.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "pod/tools",
        "-n",
        "x",
        "--timeout=60s",
    ])
    .unwrap();
    // As the suite runs it: through `/bin/sh -c`.
    let nc = |name: &str| {
        let command = format!("nc -zv -t -w 2 {name} 8080");
        cp.kubectl(&["exec", "-n", "x", "tools", "--", "/bin/sh", "-c", &command])
    };
    for name in ["web", "web.x", "web.x.svc.cluster.local"] {
        wait_until(
            &format!("nc -z {name} 8080 from x/tools"),
            Duration::from_secs(20),
            || nc(name).is_ok(),
        );
    }
    let missing = nc("nothing");
    assert!(missing.is_err(), "an unknown name resolved: {missing:?}");
    let nslookup = |name: &str| {
        cp.kubectl(&[
            "exec",
            "-n",
            "x",
            "tools",
            "--",
            "/bin/sh",
            "-c",
            &format!("nslookup {name}"),
        ])
    };
    let found = nslookup("web.x.svc.cluster.local").expect("nslookup of a Service");
    assert!(found.contains("Address: 10.96."), "{found}");
    assert!(nslookup("nothing.x.svc.cluster.local").is_err());

    // Policy on pods a real kubelet runs.
    lab.control_plane()
        .unwrap()
        .kubectl_stdin(&["apply", "-f", "-"], DENY_B)
        .unwrap();
    wait_until("x/a -> x/b closed", Duration::from_secs(10), || {
        !connect(&lab, "n1", "x/a", &format!("tcp:{b_ip}:80")).ok
    });
    lab.control_plane()
        .unwrap()
        .kubectl(&["delete", "networkpolicy", "deny-b", "-n", "x"])
        .unwrap();
    wait_until("x/a -> x/b open again", Duration::from_secs(10), || {
        connect(&lab, "n1", "x/a", &format!("tcp:{b_ip}:80")).ok
    });

    // A graceful delete: kubelet stops the pod (CNI DEL) and removes it.
    // kubelet 1.20 removes a deleted pod's stopped sandbox when PLEG
    // reports its container removed, but only if the sandbox was stopped
    // by then (CNI DEL done); otherwise its container GC does, once a
    // minute (`ContainerGCPeriod`), and the status manager's next sync
    // (10 s) deletes the object: up to some 70 s after the kill.
    let uid = lab
        .kubectl_field(&["pod", "b", "-n", "x"], "{.metadata.uid}")
        .unwrap();
    let delete_started = std::time::Instant::now();
    let deleted = cp.kubectl(&[
        "delete",
        "pod",
        "b",
        "-n",
        "x",
        "--timeout=120s",
        "--request-timeout=0",
    ]);
    let real = RealNode::of(&weir_lab::lab_dir(&name), "n2");
    let delete_took = delete_started.elapsed();
    if let Err(error) = deleted {
        let status = cp.kubectl(&["get", "pod", "b", "-n", "x", "-o", "yaml"]);
        panic!(
            "{error:#}\n--- x/b now:\n{status:?}\n--- n2 kubelet on {uid}:\n{}\n--- n2 containerd (last lines):\n{}\n--- n2 agent on x/b:\n{}",
            real.log_lines("kubelet.log", &uid, 60),
            real.log_lines("containerd.log", "", 40),
            agent_log_lines(&name, "n2", "x/b"),
        );
    }
    assert!(real.pod_netns("x/b").is_err(), "x/b's sandbox is gone");
    weir_tests::record_figure(&format!(
        "real nodes: graceful delete of a pod {:.1} s (kubelet 1.20 removes its sandbox at the next PLEG relist or container GC)",
        delete_took.as_secs_f64()
    ));

    drop(lab);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&format!("/{name}/")),
        "mounts left:\n{mounts}"
    );
    let left = Command::new("pgrep")
        .args(["-f", &format!("weir-lab/{name}/")])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "processes left: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}
