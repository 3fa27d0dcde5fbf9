//! The lab's kubelet daemons (one per node on the control plane, as
//! `system:node:<name>`): they renew their nodes' Leases and keep them
//! Ready, and a daemon that was down adopts the pods it ran (same servers,
//! same addresses) and catches up with what the API asked meanwhile: a pod
//! deleted gracefully is ended, a pod bound to its node is started.

use std::net::Ipv4Addr;
use std::time::Duration;

use weir_lab::testing::{namespace_yaml, pod_yaml, wait_until, TestLab};

#[test]
fn kubelets_renew_their_node_leases_and_keep_their_nodes_ready() {
    let lab = TestLab::up(2).expect("lab up");
    for node in ["n1", "n2"] {
        let lease = ["lease", node, "-n", "kube-node-lease"];
        let holder = lab
            .kubectl_field(&lease, "{.spec.holderIdentity}")
            .unwrap_or_default();
        assert_eq!(holder, node, "the Lease of {node}");
        let first = lab
            .kubectl_field(&lease, "{.spec.renewTime}")
            .unwrap_or_default();
        // Renewed every 10 s, as kubelet does.
        wait_until(
            &format!("{node}'s Lease renewed"),
            Duration::from_secs(30),
            || {
                lab.kubectl_field(&lease, "{.spec.renewTime}")
                    .unwrap_or_default()
                    != first
            },
        );
        let ready = lab
            .kubectl_field(
                &["node", node],
                "{.status.conditions[?(@.type==\"Ready\")].status} \
             {.status.conditions[?(@.type==\"Ready\")].reason}",
            )
            .unwrap_or_default();
        assert_eq!(ready, "True KubeletReady", "node {node}");
    }
}

#[test]
fn a_restarted_kubelet_adopts_its_pods_and_catches_up_with_the_api() {
    let mut lab = TestLab::up(1).expect("lab up");
    let mut yaml = namespace_yaml("k");
    yaml.push_str(&pod_yaml("k", "kept", "n1", &[80]));
    yaml.push_str(&pod_yaml("k", "deleted", "n1", &[80]));
    lab.apply_yaml(&yaml).unwrap();
    let kept = lab.pod("k/kept").unwrap().clone();
    let deleted = lab.pod("k/deleted").unwrap().clone();
    let cp = lab.control_plane().unwrap().clone();

    lab.stop_kubelet("n1").unwrap();
    // While it is down: a graceful delete waits for it (the pod still
    // serves), and a new pod bound to n1 waits to run.
    cp.kubectl(&["delete", "pod", "deleted", "-n", "k", "--wait=false"])
        .unwrap();
    // (kubectl, unlike the lab's apply, names an image.)
    let new_pod = pod_yaml("k", "new", "n1", &[80]).replace(
        "  - name: c\n",
        "  - name: c\n    image: weir.invalid/pod\n",
    );
    cp.kubectl_stdin(&["create", "-f", "-"], &new_pod).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !lab.kubectl_field(
            &["pod", "deleted", "-n", "k"],
            "{.metadata.deletionTimestamp}"
        )
        .unwrap_or_default()
        .is_empty(),
        "k/deleted is terminating"
    );
    assert_eq!(
        replies(&lab, "k/kept", deleted.ip),
        ["k/deleted"],
        "k/deleted serves while its kubelet is down"
    );
    assert_eq!(
        lab.kubectl_field(&["pod", "new", "-n", "k"], "{.status.phase}")
            .unwrap_or_default(),
        "Pending",
        "k/new waits for its kubelet"
    );

    lab.start_kubelet_of("n1").unwrap();
    wait_until("k/deleted gone", Duration::from_secs(60), || {
        cp.kubectl(&["get", "pod", "deleted", "-n", "k"]).is_err()
    });
    wait_until("k/new Ready", Duration::from_secs(60), || {
        lab.kubectl_field(
            &["pod", "new", "-n", "k"],
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        )
        .unwrap_or_default()
            == "True"
    });
    lab.reload_pods().unwrap();
    assert!(lab.pod("k/deleted").is_err());
    assert!(
        !weir_tests::netns::list_with_prefix(&deleted.netns).contains(&deleted.netns),
        "{} left",
        deleted.netns
    );
    // Adopted, not restarted: the same server at the same address.
    let again = lab.pod("k/kept").unwrap().clone();
    assert_eq!(
        (again.server_pid, again.ip, &again.uid),
        (kept.server_pid, kept.ip, &kept.uid)
    );
    let new = lab.pod("k/new").unwrap().clone();
    assert_eq!(replies(&lab, "k/kept", new.ip), ["k/new"]);
    assert_eq!(replies(&lab, "k/new", kept.ip), ["k/kept"]);
}

/// Who answered one TCP connection from `pod` to `ip`:80.
fn replies(lab: &TestLab, pod: &str, ip: Ipv4Addr) -> Vec<String> {
    lab.pod_client(pod, &format!("tcp:{ip}:80"), 1)
        .unwrap()
        .into_iter()
        .map(|r| r.reply.unwrap_or_else(|| format!("error {:?}", r.error)))
        .collect()
}
