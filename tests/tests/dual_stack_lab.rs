//! Dual stack in the lab (issue 19 item 2), on the control plane: nodes
//! with IPv6 underlay addresses, weir-operator giving each an IPv6 pod CIDR
//! beside its IPv4 one, every pod with both addresses from the CNI plugin.
//! Real sockets over IPv6 on one node and across nodes, and NetworkPolicy
//! over IPv6: pod selectors (identities from the IPv6 ipcache entries) and
//! ipBlock with an IPv6 CIDR.

use std::time::{Duration, Instant};

use weir_lab::probe::{matrix_family, render_table, ProbeResult, Target};
use weir_lab::testing::{namespace_yaml, pod_yaml, TestLab};
use weir_lab::IpFamily;

const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(15);

fn dual_stack_lab(nodes: usize) -> TestLab {
    TestLab::up_dual_stack(nodes).unwrap()
}

/// x/a and x/b on n1, x/c on n2, serving TCP and UDP on port 80.
fn three_pods(lab: &mut TestLab) {
    let mut yaml = namespace_yaml("x");
    for (pod, node) in [("a", "n1"), ("b", "n1"), ("c", "n2")] {
        yaml.push_str(&pod_yaml("x", pod, node, &[80]));
    }
    lab.apply_yaml(&yaml).unwrap();
}

/// Waits until every probe of `family` to `targets` connects as `expect`
/// says (from, to, target); panics with both truth tables if it does not
/// within [`CONVERGE_TIMEOUT`]. A pod always reaches itself.
fn converge(
    lab: &TestLab,
    family: IpFamily,
    targets: &[Target],
    expect: impl Fn(&str, &str, Target) -> bool,
) {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let results = matrix_family(lab.pods(), targets, family, PROBE_TIMEOUT);
        let expected = |r: &ProbeResult| r.from == r.to || expect(&r.from, &r.to, r.target);
        let wrong: Vec<&ProbeResult> = results
            .iter()
            .filter(|r| r.connected != expected(r))
            .collect();
        if wrong.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            let names: Vec<String> = lab.pods().iter().map(|p| p.key()).collect();
            let wanted: Vec<ProbeResult> = results
                .iter()
                .map(|r| ProbeResult {
                    connected: expected(r),
                    ..r.clone()
                })
                .collect();
            let tables: Vec<String> = targets
                .iter()
                .map(|t| {
                    format!(
                        "expected:\n{}actual:\n{}",
                        render_table(&names, &wanted, *t),
                        render_table(&names, &results, *t)
                    )
                })
                .collect();
            let details: Vec<String> = wrong
                .iter()
                .map(|r| {
                    format!(
                        "{} -> {} ({}) {}: {:?}",
                        r.from,
                        r.to,
                        r.to_ip,
                        r.target.label(),
                        r.error
                    )
                })
                .collect();
            panic!(
                "{family:?} did not converge within {CONVERGE_TIMEOUT:?}:\n{}\n{}",
                tables.join("\n"),
                details.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn every_pod_gets_both_addresses_and_reaches_every_pod_over_both() {
    let mut lab = dual_stack_lab(2);
    three_pods(&mut lab);
    for pod in lab.pods() {
        let node = lab.state().node(&pod.node).unwrap();
        let cidr: ipnetwork::Ipv6Network = node.pod_cidr_v6.parse().unwrap();
        let address = pod
            .ipv6
            .unwrap_or_else(|| panic!("{} has no IPv6 address", pod.key()));
        assert!(
            cidr.contains(address),
            "{}'s {address} is outside its node's IPv6 pod CIDR {cidr}",
            pod.key()
        );
    }
    let cidrs: Vec<&str> = lab
        .state()
        .nodes
        .iter()
        .map(|n| n.pod_cidr_v6.as_str())
        .collect();
    assert_ne!(cidrs[0], cidrs[1], "each node has its own IPv6 pod CIDR");
    // Each agent routes the other node's IPv6 pod CIDR (proto 87): natively
    // through its IPv6 address (`--auto-direct-node-routes`), in tunnel mode
    // into the tunnel device.
    let tunnel = lab.state().routing == weir_lab::Routing::Tunnel;
    for (node, other) in [(0, 1), (1, 0)] {
        let nodes = &lab.state().nodes;
        let routes = weir_tests::netns::run(std::process::Command::new("ip").args([
            "-n",
            &nodes[node].netns,
            "-6",
            "route",
            "show",
            "proto",
            "87",
        ]))
        .unwrap();
        let expected = if tunnel {
            format!("{} dev weir_vxlan", nodes[other].pod_cidr_v6)
        } else {
            let via = nodes[other].underlay_ipv6.unwrap();
            format!("{} via {via}", nodes[other].pod_cidr_v6)
        };
        assert!(
            routes.contains(&expected),
            "{}: expected {expected:?} in {routes:?}",
            nodes[node].name
        );
    }
    let targets = [Target::Tcp(80), Target::Udp(80), Target::Icmp];
    converge(&lab, IpFamily::V6, &targets, |_, _, _| true);
    converge(&lab, IpFamily::V4, &targets, |_, _, _| true);
}

#[test]
fn network_policy_selects_and_blocks_over_ipv6() {
    let mut lab = dual_stack_lab(2);
    three_pods(&mut lab);
    converge(&lab, IpFamily::V6, &[Target::Tcp(80)], |_, _, _| true);
    // x/a: ingress from pod b only (a pod selector: the peer's identity
    // comes from its IPv6 ipcache entry). x/c: ingress from x/a's IPv6
    // address only (ipBlock), which admits nothing over IPv4.
    let a_v6 = lab.pod("x/a").unwrap().ipv6.unwrap();
    let yaml = format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: a-from-b, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from:\n    - podSelector: {{matchLabels: {{pod: b}}}}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: c-from-a, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: c}}}}\n  ingress:\n  - from:\n    - ipBlock: {{cidr: {a_v6}/128}}\n"
    );
    lab.apply_yaml(&yaml).unwrap();
    let tcp = [Target::Tcp(80)];
    converge(&lab, IpFamily::V6, &tcp, |from, to, _| match to {
        "x/a" => from == "x/b",
        "x/c" => from == "x/a",
        _ => true,
    });
    converge(&lab, IpFamily::V4, &tcp, |from, to, _| match to {
        "x/a" => from == "x/b",
        "x/c" => false,
        _ => true,
    });
    // The denied IPv6 connection from x/c (on n2) is a drop on x/a's node
    // with both IPv6 addresses, both pods and the reason.
    let (a, c) = (lab.pod("x/a").unwrap(), lab.pod("x/c").unwrap());
    let drops = lab.observe(
        "n1",
        &["--verdict", "DROPPED", "--to-pod", "x/a", "--last", "1000"],
    );
    let from_c = c.ipv6.unwrap().to_string();
    let drop = drops
        .iter()
        .find(|f| f["IP"]["source"] == from_c.as_str())
        .unwrap_or_else(|| panic!("no drop from {from_c}: {drops:?}"));
    assert_eq!(drop["IP"]["destination"], a.ipv6.unwrap().to_string());
    assert_eq!(drop["drop_reason_desc"], "POLICY_DENIED");
    assert_eq!(drop["source"]["pod_name"], "c");
    assert_eq!(drop["destination"]["pod_name"], "a");
}

/// How long the agents may take to program a Service once its slices exist.
const SERVICE_TIMEOUT: Duration = Duration::from_secs(30);

/// [`weir_lab::testing::eventually`] within [`SERVICE_TIMEOUT`].
fn eventually<T: std::fmt::Debug>(
    what: &str,
    attempt: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    weir_lab::testing::eventually(what, SERVICE_TIMEOUT, attempt, done)
}

/// The servers that answered `count` connections (TCP) or datagrams (UDP)
/// of `client` to `target` (errors as "error: ..."), with how many each
/// answered.
fn answers(
    lab: &TestLab,
    client: &str,
    target: &str,
    count: u32,
) -> std::collections::BTreeMap<String, usize> {
    tally(lab.pod_client(client, target, count).unwrap())
}

/// [`answers`] for a client in the outside world.
fn world_answers(
    lab: &TestLab,
    target: &str,
    count: u32,
) -> std::collections::BTreeMap<String, usize> {
    tally(lab.world_client(target, count).unwrap())
}

fn tally(results: Vec<weir_lab::ClientResult>) -> std::collections::BTreeMap<String, usize> {
    let mut seen = std::collections::BTreeMap::new();
    for result in results {
        let key = match (result.ok, result.reply, result.error) {
            (true, Some(reply), _) => reply,
            (_, _, error) => format!("error: {}", error.unwrap_or_default()),
        };
        *seen.entry(key).or_insert(0) += 1;
    }
    seen
}

#[test]
fn dual_stack_and_ipv6_services_balance_over_ipv6_from_pods() {
    // The API server's EndpointSlice controller publishes the IPv6 slices.
    ipv6_services_balance(dual_stack_lab(2));
}

#[test]
fn ipv6_services_on_the_manifests_directory() {
    // The lab derives the IPv6 slices (weir_lb::derive_endpoint_slices_v6).
    ipv6_services_balance(TestLab::up_dual_stack_on_manifests(2).unwrap());
}

/// A dual-stack and an IPv6-only Service over two backends, one per node,
/// reached from a client pod on each node over every cluster IP; the
/// IPv6-only one from the outside world on its externalIP and each node's
/// IPv6 address (NodePorts), and an IPv6 LoadBalancer on its ingress IP
/// (per-packet NAT: the node's own backend with the client's source, the
/// other node's through SNAT).
fn ipv6_services_balance(mut lab: TestLab) {
    // Backends web-1 (n1), web-2 (n2) serve 8080; a client on each node.
    let mut yaml = namespace_yaml("s");
    for (name, node, app) in [
        ("web-1", "n1", "web"),
        ("web-2", "n2", "web"),
        ("client-n1", "n1", "client"),
        ("client-n2", "n2", "client"),
    ] {
        yaml.push_str(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: s\n  labels: {{app: {app}}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n    ports:\n    - {{name: http, containerPort: 8080, protocol: TCP}}\n    - {{name: dns-ish, containerPort: 8080, protocol: UDP}}\n---\n"
        ));
    }
    // A dual-stack Service (one cluster IP per family) and an IPv6-only one.
    yaml.push_str(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: s}\nspec:\n  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv4, IPv6]\n  clusterIP: 10.96.0.50\n  clusterIPs: [10.96.0.50, 'fd00:96::50']\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: http, protocol: TCP}\n  - {name: dns, port: 53, targetPort: dns-ish, protocol: UDP}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web6, namespace: s}\nspec:\n  type: NodePort\n  ipFamilyPolicy: SingleStack\n  ipFamilies: [IPv6]\n  clusterIP: 'fd00:96::51'\n  clusterIPs: ['fd00:96::51']\n  externalIPs: ['2001:db8:51::10']\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: http, protocol: TCP, nodePort: 30651}\n  - {name: dns, port: 53, targetPort: dns-ish, protocol: UDP, nodePort: 30652}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web6-lb, namespace: s}\nspec:\n  type: LoadBalancer\n  ipFamilyPolicy: SingleStack\n  ipFamilies: [IPv6]\n  clusterIP: 'fd00:96::52'\n  clusterIPs: ['fd00:96::52']\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: http, protocol: TCP, nodePort: 30653}\nstatus:\n  loadBalancer:\n    ingress: [{ip: '2001:db8:51::20'}]\n---\n",
    );
    lab.apply_yaml(&yaml).unwrap();
    let both = |seen: &std::collections::BTreeMap<String, usize>| {
        seen.keys().collect::<Vec<_>>() == ["s/web-1", "s/web-2"]
    };
    for client in ["s/client-n1", "s/client-n2"] {
        for target in [
            "tcp:10.96.0.50:80",
            "tcp:[fd00:96::50]:80",
            "tcp:[fd00:96::51]:80",
            "udp:[fd00:96::50]:53",
            "udp:[fd00:96::51]:53",
        ] {
            // Every connection answered, and by both backends: the IPv6
            // frontends balance over the pods' IPv6 addresses on both nodes.
            eventually(
                &format!("{client} -> {target}"),
                || answers(&lab, client, target, 40),
                both,
            );
        }
    }
    // Its externalIP and load-balancer IP, routed by the outside world's
    // router to n1 and n2 (as announcements would): from the world and from
    // pods (socket LB, the internal scope).
    lab.route_from_world("2001:db8:51::10/128", "n1").unwrap();
    lab.route_from_world("2001:db8:51::20/128", "n2").unwrap();
    for address in ["2001:db8:51::10", "2001:db8:51::20"] {
        let target = format!("tcp:[{address}]:80");
        eventually(
            &format!("world -> {target}"),
            || world_answers(&lab, &target, 40),
            both,
        );
        eventually(
            &format!("s/client-n1 -> {target}"),
            || answers(&lab, "s/client-n1", &target, 40),
            both,
        );
    }
    for node in ["n1", "n2"] {
        let address = lab.state().node(node).unwrap().underlay_ipv6.unwrap();
        for (protocol, node_port) in [("tcp", 30651), ("udp", 30652)] {
            let target = format!("{protocol}:[{address}]:{node_port}");
            eventually(
                &format!("world -> {target}"),
                || world_answers(&lab, &target, 40),
                both,
            );
        }
    }
    // The agent's view: the IPv6 frontends with both backends' IPv6
    // addresses.
    let out = lab.weir("n1", &["-o", "json", "service", "list"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for pod in ["s/web-1", "s/web-2"] {
        let address = lab.pod(pod).unwrap().ipv6.unwrap().to_string();
        assert!(text.contains(&address), "{pod}'s {address} in {text}");
    }
    assert!(text.contains("fd00:96::51"), "{text}");
    // And the kernel's: `weir bpf lb list` reads weir_lb6_* back.
    let out = lab
        .weir("n1", &["-o", "json", "bpf", "lb", "list"])
        .unwrap();
    let maps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let frontends: Vec<&str> = maps["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["frontend"].as_str())
        .collect();
    for frontend in ["[fd00:96::50]:80", "[fd00:96::51]:53", "10.96.0.50:80"] {
        assert!(frontends.contains(&frontend), "{frontend} in {frontends:?}");
    }
    let backends: Vec<&str> = maps["backends"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["address"].as_str())
        .collect();
    for pod in ["s/web-1", "s/web-2"] {
        let backend = format!("[{}]:8080", lab.pod(pod).unwrap().ipv6.unwrap());
        assert!(
            backends.contains(&backend.as_str()),
            "{backend} in {backends:?}"
        );
    }

    // An IPv6 NodePort without backends: n1 answers an outside client's
    // SYN with ICMPv6 port unreachable, so its connect() is refused at once.
    lab.apply_yaml(
        "apiVersion: v1\nkind: Service\nmetadata: {name: empty6, namespace: s}\nspec:\n  type: NodePort\n  ipFamilyPolicy: SingleStack\n  ipFamilies: [IPv6]\n  clusterIP: 'fd00:96::59'\n  clusterIPs: ['fd00:96::59']\n  selector: {app: nobody}\n  ports:\n  - {name: http, port: 80, targetPort: 8080, protocol: TCP, nodePort: 30659}\n",
    )
    .unwrap();
    let n1 = lab.state().node("n1").unwrap().underlay_ipv6.unwrap();
    let frontend = format!("[{n1}]:30659");
    // Programmed first (before that, n1's own stack would refuse too).
    eventually(
        "the empty IPv6 NodePort is programmed on n1",
        || {
            lab.weir("n1", &["-o", "json", "bpf", "lb", "list"])
                .unwrap()
        },
        |out| String::from_utf8_lossy(&out.stdout).contains(&frontend),
    );
    for result in lab.world_client(&format!("tcp:{frontend}"), 3).unwrap() {
        let error = result.error.as_deref().unwrap_or_default();
        assert!(
            error.contains("refused"),
            "refused, not timed out: {result:?}"
        );
    }
}
