//! The Kubernetes control plane that `cargo xtask setup` builds (v1.20.2
//! from Debian's source package), run for real in a sealed network
//! namespace (loopback only): Debian's etcd, kube-apiserver with what 1.20
//! needs (HTTPS with a self-generated serving certificate, static tokens,
//! ServiceAccount keys, RBAC), kube-controller-manager and kube-scheduler
//! with identities of their own. Debian's kubectl (1.20) drives it: a
//! Namespace and a ConfigMap are created, listed and deleted, and the
//! components' work is seen through the API: componentstatuses healthy, a
//! `default` ServiceAccount in the new namespace, a pod bound to a node by
//! the scheduler, the namespace finalized on deletion. The recipe is the
//! lab's (`weir_lab::control_plane`), here on loopback with its own etcd.
//!
//! A missing binary fails the test: it never skips.

use std::fs;
use std::net::Ipv4Addr;
use std::time::Instant;

use weir_lab::sealed::SealedControlPlane as Sealed;
use weir_lab::KubeBinaries;
use weir_tests::require_root;

/// Resident memory of a process in MiB, from /proc.
fn rss_mib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024)
}

const OBJECTS: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: weir-smoke
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: weir-smoke
data:
  mode: enforce
";

const POD: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: idle
  namespace: weir-smoke
spec:
  containers:
  - name: idle
    image: weir.invalid/idle
";

#[test]
fn the_control_plane_built_by_setup_serves_the_api_to_kubectl_and_runs_its_controllers() {
    require_root();
    let bins = KubeBinaries::locate().expect("the control plane's binaries");
    let mut cp = Sealed::new(&bins.kubectl).unwrap();
    cp.cp.start_apiserver(&bins.apiserver).unwrap();
    let apiserver = cp.cp.apiserver_pid;
    let ready = cp.cp.wait_ready().unwrap();
    let ready_rss = rss_mib(apiserver).unwrap_or(0);
    let version = cp.kubectl(&["get", "--raw", "/version"]).unwrap();
    assert!(
        version.contains("\"gitVersion\": \"v1.20.2\""),
        "/version: {version}"
    );

    let components_started = Instant::now();
    cp.cp
        .start_controller_manager(&bins.controller_manager)
        .unwrap();
    cp.cp.start_scheduler(&bins.scheduler).unwrap();

    let created = cp.kubectl_create(OBJECTS).unwrap();
    assert!(
        created.contains("namespace/weir-smoke created")
            && created.contains("configmap/settings created"),
        "kubectl create: {created}"
    );
    let namespaces = cp.kubectl(&["get", "namespaces", "-o", "name"]).unwrap();
    assert!(
        namespaces.lines().any(|l| l == "namespace/weir-smoke"),
        "{namespaces}"
    );
    let mode = cp
        .kubectl(&[
            "get",
            "configmap",
            "settings",
            "-n",
            "weir-smoke",
            "-o",
            "jsonpath={.data.mode}",
        ])
        .unwrap();
    assert_eq!(mode, "enforce");

    // The components report healthy to the API server (1.20's
    // componentstatuses asks them on their local health ports).
    cp.eventually("scheduler, controller-manager and etcd healthy", |cp| {
        cp.kubectl(&[
            "get",
            "componentstatuses",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.conditions[0].status} {end}",
        ])
        .is_ok_and(|s| {
            ["scheduler=True", "controller-manager=True", "etcd-0=True"]
                .iter()
                .all(|want| s.split_whitespace().any(|got| got == *want))
        })
    })
    .unwrap();
    let healthy = components_started.elapsed();
    // The controller-manager works under its own identity: its
    // ServiceAccount controller gives the new namespace a `default` account.
    cp.eventually("ServiceAccount default in weir-smoke", |cp| {
        cp.kubectl(&["get", "serviceaccount", "default", "-n", "weir-smoke"])
            .is_ok()
    })
    .unwrap();

    // The scheduler binds a pod to the one Ready node (a Node object as a
    // kubelet would register it; no kubelet runs, so the pod never starts
    // and is force-deleted).
    cp.cp
        .register_nodes(&[("weir-node", Ipv4Addr::LOCALHOST)])
        .unwrap();
    cp.kubectl_create(POD).unwrap();
    let scheduled = cp
        .eventually("pod weir-smoke/idle bound to node weir-node", |cp| {
            cp.kubectl(&[
                "get",
                "pod",
                "idle",
                "-n",
                "weir-smoke",
                "-o",
                "jsonpath={.spec.nodeName}",
            ])
            .is_ok_and(|node| node == "weir-node")
        })
        .unwrap();
    cp.kubectl(&[
        "delete",
        "pod",
        "idle",
        "-n",
        "weir-smoke",
        "--grace-period=0",
        "--force",
    ])
    .unwrap();

    cp.kubectl(&["delete", "configmap", "settings", "-n", "weir-smoke"])
        .unwrap();
    // Deleting a namespace completes only once the namespace controller has
    // emptied it and removed its finalizer.
    let deleted = Instant::now();
    cp.kubectl(&[
        "delete",
        "namespace",
        "weir-smoke",
        "--timeout=60s",
        // Its wait is one watch: longer than kubectl()'s 10 s per request
        // (the last value of a flag wins).
        "--request-timeout=70s",
    ])
    .unwrap();
    let namespaces = cp.kubectl(&["get", "namespaces", "-o", "name"]).unwrap();
    assert!(
        !namespaces.lines().any(|l| l == "namespace/weir-smoke"),
        "{namespaces}"
    );
    weir_tests::figure!(
        "kube control plane: kube-apiserver ready after {:.1} s (RSS {ready_rss} MiB, \
         {} MiB at the end), components healthy {:.1} s after they started, pod scheduled in {:.1} s, \
         namespace deleted (finalized) in {:.1} s",
        ready.as_secs_f64(),
        rss_mib(apiserver).unwrap_or(0),
        healthy.as_secs_f64(),
        scheduled.as_secs_f64(),
        deleted.elapsed().as_secs_f64()
    );
}
