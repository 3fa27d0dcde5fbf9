//! Pods' host ports in the lab (issue 19 item 4): a pod with `hostPort`
//! in its spec, run by the lab's kubelet daemon, which passes it to
//! `weir-cni` as the `portMappings` capability (`runtimeConfig`). The pod's
//! container port answers on its node's address from the outside world,
//! from a pod on another node and from a pod and the host of its own node,
//! over TCP and UDP; a second pod asking for the same host port is reported
//! and does not take it; deleting the pod (CNI DEL) removes the port.

use weir_lab::testing::{namespace_yaml, wait_until, TestLab};
use weir_lab::ClientResult;

const HOST_PORT: u16 = 8080;

fn pod_with_host_port(name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: x\n  labels: {{pod: {name}}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n    ports:\n    - {{containerPort: 80, protocol: TCP, hostPort: {HOST_PORT}}}\n    - {{containerPort: 80, protocol: UDP, hostPort: {HOST_PORT}}}\n---\n"
    )
}

fn answered_by(results: &[ClientResult], pod: &str) -> bool {
    !results.is_empty()
        && results
            .iter()
            .all(|r| r.ok && r.reply.as_deref() == Some(pod))
}

#[test]
fn a_host_port_is_served_on_the_nodes_address_until_the_pod_goes() {
    let mut lab = TestLab::up(2).unwrap();
    let mut yaml = namespace_yaml("x");
    yaml.push_str(&pod_with_host_port("web", "n1"));
    yaml.push_str(&weir_lab::testing::pod_yaml("x", "client", "n2", &[80]));
    yaml.push_str(&weir_lab::testing::pod_yaml("x", "local", "n1", &[80]));
    lab.apply_yaml(&yaml).unwrap();
    let n1 = lab.state().node("n1").unwrap().underlay_ip;
    let tcp = format!("tcp:{n1}:{HOST_PORT}");
    let udp = format!("udp:{n1}:{HOST_PORT}");

    wait_until(
        "the host port answers from outside",
        std::time::Duration::from_secs(20),
        || answered_by(&lab.world_client(&tcp, 1).unwrap(), "x/web"),
    );
    for target in [&tcp, &udp] {
        let results = lab.world_client(target, 5).unwrap();
        assert!(
            answered_by(&results, "x/web"),
            "world {target}: {results:?}"
        );
        let results = lab.pod_client("x/client", target, 5).unwrap();
        assert!(
            answered_by(&results, "x/web"),
            "pod on n2 {target}: {results:?}"
        );
        let results = lab.pod_client("x/local", target, 5).unwrap();
        assert!(
            answered_by(&results, "x/web"),
            "pod on n1 {target}: {results:?}"
        );
        let results = lab.node_client("n1", target, 5).unwrap();
        assert!(
            answered_by(&results, "x/web"),
            "n1's host {target}: {results:?}"
        );
    }

    // Another pod of n1 asking for the same host port does not take it.
    lab.apply_yaml(&pod_with_host_port("rival", "n1")).unwrap();
    let results = lab.world_client(&tcp, 10).unwrap();
    assert!(answered_by(&results, "x/web"), "{results:?}");
    lab.delete_yaml(&pod_with_host_port("rival", "n1")).unwrap();

    // CNI DEL removes it.
    lab.delete_yaml(&pod_with_host_port("web", "n1")).unwrap();
    wait_until(
        "the host port is gone",
        std::time::Duration::from_secs(20),
        || lab.world_client(&tcp, 1).unwrap().iter().all(|r| !r.ok),
    );
}
