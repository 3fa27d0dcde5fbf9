//! Pod networking end to end in the lab: real agents, pods created by the
//! real CNI plugin, real sockets. Same-node and cross-node TCP, UDP and
//! ICMP in both directions; address reuse; agent restart.

use weir_lab::probe::{self, Target};
use weir_lab::testing::{namespace_yaml, pod_yaml, TestLab};

fn all_connected(lab: &TestLab, targets: &[Target]) {
    let results = probe::matrix(lab.pods(), targets);
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.connected)
        .map(|r| format!("{} -> {} {}: {:?}", r.from, r.to, r.target.label(), r.error))
        .collect();
    if !failed.is_empty() {
        let names: Vec<String> = lab.pods().iter().map(|p| p.key()).collect();
        let tables: Vec<String> = targets
            .iter()
            .map(|t| probe::render_table(&names, &results, *t))
            .collect();
        panic!(
            "expected every probe to connect:\n{}\n{}",
            tables.join("\n"),
            failed.join("\n")
        );
    }
}

#[test]
fn every_pod_reaches_every_pod_on_one_node_and_across_nodes() {
    let mut lab = TestLab::up(2).unwrap();
    let mut yaml = namespace_yaml("x");
    yaml.push_str(&pod_yaml("x", "a", "n1", &[80]));
    yaml.push_str(&pod_yaml("x", "b", "n1", &[80]));
    yaml.push_str(&pod_yaml("x", "c", "n2", &[80]));
    lab.apply_yaml(&yaml).unwrap();
    let nodes: Vec<&str> = lab.pods().iter().map(|p| p.node.as_str()).collect();
    assert_eq!(nodes, ["n1", "n1", "n2"]);
    all_connected(&lab, &[Target::Tcp(80), Target::Udp(80), Target::Icmp]);
}

#[test]
fn a_deleted_pods_address_is_released_and_comes_back_last() {
    let mut lab = TestLab::up(1).unwrap();
    let mut yaml = namespace_yaml("x");
    yaml.push_str(&pod_yaml("x", "a", "n1", &[80]));
    yaml.push_str(&pod_yaml("x", "b", "n1", &[80]));
    lab.apply_yaml(&yaml).unwrap();
    let a_ip = lab.pod("x/a").unwrap().ip;
    let b_ip = lab.pod("x/b").unwrap().ip;
    lab.delete_yaml(&pod_yaml("x", "a", "n1", &[80])).unwrap();
    assert!(lab.pod("x/a").is_err());
    lab.apply_yaml(&pod_yaml("x", "d", "n1", &[80])).unwrap();
    // The next pod gets the address after the last one handed out, not the
    // one just released: what peers remember of the old pod has a whole
    // turn of the pod CIDR to go (issue 16 item 5).
    let d_ip = lab.pod("x/d").unwrap().ip;
    assert_ne!(d_ip, a_ip, "the released address is not handed out next");
    assert_eq!(u32::from(d_ip), u32::from(b_ip) + 1);
    all_connected(&lab, &[Target::Tcp(80), Target::Icmp]);
}

#[test]
fn an_agent_restart_keeps_addresses_and_connectivity() {
    let mut lab = TestLab::up(2).unwrap();
    let mut yaml = namespace_yaml("x");
    yaml.push_str(&pod_yaml("x", "a", "n1", &[80]));
    yaml.push_str(&pod_yaml("x", "b", "n2", &[80]));
    lab.apply_yaml(&yaml).unwrap();
    let before: Vec<_> = lab.pods().iter().map(|p| (p.key(), p.ip)).collect();

    lab.restart_agent("n1").unwrap();
    all_connected(&lab, &[Target::Tcp(80), Target::Udp(80)]);

    // The restarted agent remembers its allocations: a new pod gets a new
    // address, not one already in use.
    lab.apply_yaml(&pod_yaml("x", "c", "n1", &[80])).unwrap();
    let c_ip = lab.pod("x/c").unwrap().ip;
    assert!(
        before.iter().all(|(_, ip)| *ip != c_ip),
        "{c_ip} was already allocated"
    );
    let after: Vec<_> = lab
        .pods()
        .iter()
        .filter(|p| p.key() != "x/c")
        .map(|p| (p.key(), p.ip))
        .collect();
    assert_eq!(after, before);
    all_connected(&lab, &[Target::Tcp(80), Target::Icmp]);
}
