//! The lab with its Kubernetes control plane (`TestLab::up_with_control_plane`,
//! `lab up --control-plane`): kube-apiserver on the lab's etcd on the
//! underlay, kube-controller-manager and kube-scheduler, the nodes
//! registered as Ready Nodes. Debian's kubectl drives it from the underlay
//! namespace; objects applied through it are stored; the lab's own pods work
//! as before. A missing binary fails the test: it never skips.

use std::time::{Duration, Instant};

use weir_lab::probe::{self, Target};
use weir_lab::testing::{namespace_yaml, pod_yaml, TestLab};

const POLICY: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-ingress
  namespace: cp-smoke
spec:
  podSelector: {}
  policyTypes: [Ingress]
";

const POD: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: idle
  namespace: cp-smoke
spec:
  containers:
  - name: idle
    image: weir.invalid/idle
";

#[test]
fn the_lab_runs_a_control_plane_that_knows_its_nodes_schedules_and_stores_objects_applied_with_kubectl(
) {
    let started = Instant::now();
    let mut lab = TestLab::up_with_control_plane(2).expect("lab up with the control plane");
    let up = started.elapsed();
    let cp = lab.control_plane().unwrap().clone();
    assert_eq!(cp.address.to_string(), "10.77.0.1");
    assert!(
        cp.admin_kubeconfig()
            .starts_with(weir_lab::lab_dir(lab.name())),
        "the kubeconfig lives in the lab's state directory: {}",
        cp.admin_kubeconfig().display()
    );

    let nodes = cp
        .kubectl(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status} {end}",
        ])
        .unwrap();
    let mut nodes: Vec<&str> = nodes.split_whitespace().collect();
    nodes.sort();
    assert_eq!(nodes, ["n1=True", "n2=True"]);

    let created = cp
        .kubectl_stdin(
            &["apply", "-f", "-"],
            &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: cp-smoke\n---\n{POLICY}"),
        )
        .unwrap();
    assert!(
        created.contains("namespace/cp-smoke created")
            && created.contains("networkpolicy.networking.k8s.io/deny-ingress created"),
        "kubectl apply: {created}"
    );
    let types = cp
        .kubectl(&[
            "get",
            "networkpolicy",
            "deny-ingress",
            "-n",
            "cp-smoke",
            "-o",
            "jsonpath={.spec.policyTypes[*]}",
        ])
        .unwrap();
    assert_eq!(types, "Ingress");

    // The controllers run under their own identities: the ServiceAccount
    // controller gives the new namespace its `default` account.
    let deadline = Instant::now() + Duration::from_secs(60);
    while cp
        .kubectl(&["get", "serviceaccount", "default", "-n", "cp-smoke"])
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "no default ServiceAccount in cp-smoke; controller-manager log:\n{}",
            cp.log("kube-controller-manager")
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // The scheduler binds a pod to one of the registered nodes (no kubelet
    // watches the API yet, so it never runs and is force-deleted).
    cp.kubectl_stdin(&["create", "-f", "-"], POD).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let node = cp
            .kubectl(&[
                "get",
                "pod",
                "idle",
                "-n",
                "cp-smoke",
                "-o",
                "jsonpath={.spec.nodeName}",
            ])
            .unwrap_or_default();
        if node == "n1" || node == "n2" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pod cp-smoke/idle not bound (node {node:?}); scheduler log:\n{}",
            cp.log("kube-scheduler")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    cp.kubectl(&[
        "delete",
        "pod",
        "idle",
        "-n",
        "cp-smoke",
        "--grace-period=0",
        "--force",
    ])
    .unwrap();

    // The lab's own pods (manifest directory, lab's kubelet) as before.
    let mut yaml = namespace_yaml("x");
    yaml.push_str(&pod_yaml("x", "a", "n1", &[80]));
    yaml.push_str(&pod_yaml("x", "b", "n2", &[80]));
    lab.apply_yaml(&yaml).unwrap();
    let results = probe::matrix(lab.pods(), &[Target::Tcp(80)]);
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.connected)
        .map(|r| format!("{} -> {}: {:?}", r.from, r.to, r.error))
        .collect();
    assert!(failed.is_empty(), "pods cut off: {failed:?}");

    weir_tests::figure!(
        "lab up (2 nodes) with the control plane: {:.2} s",
        up.as_secs_f64()
    );
}

#[test]
fn lab_down_stops_the_control_plane_and_removes_its_files() {
    let lab = TestLab::up_with_control_plane(1).expect("lab up with the control plane");
    let cp = lab.control_plane().unwrap().clone();
    let pids = [
        cp.apiserver_pid,
        cp.controller_manager_pid,
        cp.scheduler_pid,
    ];
    assert!(
        pids.iter().all(|pid| weir_lab::process::alive(*pid)),
        "{pids:?}"
    );
    drop(lab);
    for pid in pids {
        assert!(
            !weir_lab::process::alive(pid),
            "pid {pid} survived lab down"
        );
    }
    assert!(!cp.dir.exists(), "{} left behind", cp.dir.display());
}
