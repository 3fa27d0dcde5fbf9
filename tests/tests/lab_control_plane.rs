//! The lab on its Kubernetes control plane (`TestLab::up`, `lab up`):
//! kube-apiserver with its etcd on the underlay, kube-controller-manager and
//! kube-scheduler, the nodes registered as Ready Nodes, the agents in
//! Kubernetes mode as the `weir-agent` ServiceAccount (deploy/kubernetes/20-agent-rbac.yaml). Debian's
//! kubectl drives it from the underlay namespace; `lab apply` goes through
//! the API server (a refused document leaves the file unapplied), the
//! scheduler binds pods, a kubelet daemon per node runs the pods bound to
//! it (also those made with plain kubectl) and reports their status, the
//! EndpointSlice controller makes the slices. A missing binary fails the
//! test: it never skips.

use std::time::{Duration, Instant};

use weir_lab::probe::{self, Target};
use weir_lab::testing::{namespace_yaml, pod_yaml, TestLab};
use weir_lab::{manifest, Applied};

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
    let mut lab = TestLab::up(2).expect("lab up with the control plane");
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

    // A pod made with plain kubectl: the scheduler binds it, the node's
    // kubelet daemon runs it and reports it Running and Ready.
    cp.kubectl_stdin(&["create", "-f", "-"], POD).unwrap();
    cp.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "pod/idle",
        "-n",
        "cp-smoke",
        "--timeout=60s",
        "--request-timeout=0",
    ])
    .unwrap_or_else(|e| {
        panic!(
            "pod cp-smoke/idle not Ready: {e:#}\nscheduler log:\n{}",
            cp.log("kube-scheduler")
        )
    });
    let status = cp
        .kubectl(&[
            "get",
            "pod",
            "idle",
            "-n",
            "cp-smoke",
            "-o",
            "jsonpath={.spec.nodeName} {.status.phase} {.status.podIP}",
        ])
        .unwrap();
    let fields: Vec<&str> = status.split(' ').collect();
    assert_eq!(fields.len(), 3, "{status:?}");
    let node = lab.state().node(fields[0]).expect("bound to a lab node");
    let cidr: ipnetwork::Ipv4Network = node.pod_cidr.parse().unwrap();
    let ip: std::net::Ipv4Addr = fields[2].parse().unwrap();
    assert!(
        fields[1] == "Running" && cidr.contains(ip),
        "{status:?} on {} ({})",
        node.name,
        node.pod_cidr
    );
    lab.reload_pods().unwrap();
    let idle = lab.pod("cp-smoke/idle").unwrap().clone();
    assert_eq!(idle.ip, ip);
    // A graceful delete, which the kubelet ends: sandbox gone, then the
    // object (kubectl waits for it).
    cp.kubectl(&["delete", "pod", "idle", "-n", "cp-smoke", "--timeout=60s"])
        .unwrap();
    assert!(
        !weir_tests::netns::list_with_prefix(&idle.netns).contains(&idle.netns),
        "{} left after the delete",
        idle.netns
    );

    // The lab's own pods, through the API server and the lab's kubelet.
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
    let lab = TestLab::up(1).expect("lab up with the control plane");
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

const SCHEDULED: &str = "\
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: cp, labels: {app: web}}
spec:
  containers:
  - name: c
    ports: [{name: http, containerPort: 80, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: cp}
spec:
  clusterIP: 10.96.0.77
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
";

#[test]
fn lab_apply_goes_through_the_api_server_and_the_kubelets_run_the_pods() {
    let mut lab = TestLab::up(2).expect("lab up");
    let cp = lab.control_plane().unwrap().clone();

    // The agents watch the API as the weir-agent ServiceAccount, whose
    // role (deploy/kubernetes/20-agent-rbac.yaml) reads pods but does not create them.
    for node in &lab.state().nodes {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", node.agent_pid)).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            cmdline.contains("--k8s --kubeconfig") && !cmdline.contains("--manifests-dir"),
            "{cmdline}"
        );
    }
    let agent = "--as=system:serviceaccount:weir-system:weir-agent";
    assert_eq!(
        cp.kubectl(&["auth", "can-i", "watch", "pods", agent])
            .unwrap()
            .trim(),
        "yes"
    );
    assert_eq!(
        cp.kubectl(&["auth", "can-i", "create", "weirendpoints.weir.io", agent])
            .unwrap()
            .trim(),
        "yes"
    );
    assert!(cp
        .kubectl(&["auth", "can-i", "create", "pods", agent])
        .is_err());

    // One pod for the scheduler to bind, one with its nodeName, a Service.
    let mut yaml = namespace_yaml("cp");
    yaml.push_str(SCHEDULED);
    yaml.push_str("---\n");
    yaml.push_str(&pod_yaml("cp", "b", "n2", &[80]));
    let objects = manifest::parse(&yaml).unwrap();
    let report = lab.apply(&objects).unwrap();
    let a = lab.pod("cp/a").unwrap().clone();
    let b = lab.pod("cp/b").unwrap().clone();
    assert!(
        report.contains(&Applied::Created(format!(
            "pod/cp/a on {} ({})",
            a.node, a.ip
        ))) && report.contains(&Applied::Created("namespace/cp".into()))
            && report.contains(&Applied::Created("service/cp/web".into())),
        "{report:?}"
    );
    assert_eq!(b.node, "n2");
    assert_eq!(
        lab.kubectl_field(
            &["namespace", "cp"],
            "{.metadata.labels.kubernetes\\.io/metadata\\.name}"
        )
        .unwrap(),
        "cp"
    );
    // The scheduler's binding and the kubelet's status, as the API has them.
    let status = lab
        .kubectl_field(
            &["pod", "a", "-n", "cp"],
            "{.spec.nodeName} {.status.podIP} {.status.hostIP} {.status.phase} \
         {.status.conditions[?(@.type==\"Ready\")].status}",
        )
        .unwrap();
    let host_ip = lab.state().node(&a.node).unwrap().underlay_ip;
    assert_eq!(
        status,
        format!("{} {} {host_ip} Running True", a.node, a.ip)
    );
    // Applied again: unchanged, as kubectl reports it.
    let again = lab.apply(&objects).unwrap();
    assert!(
        again.iter().all(|r| matches!(r, Applied::Unchanged(_))),
        "{again:?}"
    );

    // The EndpointSlice controller publishes the ready pod behind web.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let addresses = lab
            .kubectl_field(
                &[
                    "endpointslices",
                    "-n",
                    "cp",
                    "-l",
                    "kubernetes.io/service-name=web",
                ],
                "{.items[*].endpoints[*].addresses[*]}",
            )
            .unwrap();
        if addresses == a.ip.to_string() {
            break;
        }
        assert!(Instant::now() < deadline, "web's slice: {addresses:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The agents learned the pods from the API: they reach each other.
    let results = probe::matrix(lab.pods(), &[Target::Tcp(80)]);
    assert!(results.iter().all(|r| r.connected), "{results:?}");

    // A document the server refuses leaves the rest of the file unapplied.
    // (A label value may not start with '-': the server's validation.)
    let refused = "apiVersion: v1\nkind: Namespace\nmetadata: {name: cp-refused}\n---\n\
        apiVersion: v1\nkind: Pod\nmetadata: {name: c, namespace: cp, labels: {app: '-bad'}}\n\
        spec:\n  containers: [{name: c}]\n";
    let error = format!("{:#}", lab.apply_yaml(refused).unwrap_err());
    assert!(
        error.contains("refused by the API server") && error.contains("pod/cp/c"),
        "{error}"
    );
    assert!(cp.kubectl(&["get", "namespace", "cp-refused"]).is_err());

    // Deleted as kubelet deletes: the object and the sandbox are gone.
    lab.delete_yaml(SCHEDULED).unwrap();
    assert!(lab.pod("cp/a").is_err());
    assert!(cp.kubectl(&["get", "pod", "a", "-n", "cp"]).is_err());
    assert!(
        !weir_tests::netns::list_with_prefix(&a.netns).contains(&a.netns),
        "{} left",
        a.netns
    );
}
