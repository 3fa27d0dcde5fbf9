//! Fault: each map the agent writes filled to capacity (issue 11). The real
//! reconcile loop over a real datapath loaded with small maps (pins of its
//! own), an endpoint on a veth in a namespace of its own, the in-memory
//! store. For the policy, ipcache and LB maps: a change that does not fit
//! fails its step with an explicit error (the step's error is what the
//! agent logs, `/readyz` and `weir status` show), counted in
//! `weir_reconcile_errors_total{step}` and `weir_map_full_total{map}`;
//! nothing of it is written; the other steps stay ok and what was in force
//! stays; freeing space (deleting an object) lets it recover. For
//! conntrack, which the datapath writes: no new connection is dropped, the
//! kernel evicts entries instead (see the last test).

use std::sync::Arc;
use std::time::Duration;

use weir_abi::map_names;
use weir_agent::datapath::{maps, LoadOptions, SharedDatapath};
use weir_agent::metrics::readiness;
use weir_agent::reconcile::metrics::StepMetrics;
use weir_agent::reconcile::status::SharedReconcileStatus;
use weir_agent::reconcile::Reconciler;
use weir_identity::MemoryStore;
use weir_tests::local_agent::{LocalAgent, NodeFixture, NodePaths, NODE};
use weir_tests::require_root;
use weir_types::NamespacedName;

const POD: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {ns: x}}\n---\n\
apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {pod: a}}\n";

/// Egress from x/a to `ports` UDP ports from `first`: one policy entry per
/// port.
fn egress_ports(name: &str, first: u16, ports: u16) -> String {
    let mut yaml = format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {{name: {name}, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  \
         policyTypes: [Egress]\n  egress:\n  - ports:\n"
    );
    for port in first..first + ports {
        yaml.push_str(&format!("    - {{port: {port}, protocol: UDP}}\n"));
    }
    yaml
}

/// Egress from x/a to `count` /32 CIDRs: one ipcache entry per CIDR.
fn egress_cidrs(count: u8) -> String {
    let mut yaml = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {name: cidrs, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  \
         policyTypes: [Egress]\n  egress:\n  - to:\n"
        .to_string();
    for n in 1..=count {
        yaml.push_str(&format!("    - ipBlock: {{cidr: 198.51.100.{n}/32}}\n"));
    }
    yaml
}

/// A ClusterIP Service without selector and its slice of `backends`
/// addresses: 1 + `backends` entries in the services map.
fn service(name: &str, ip: &str, backends: u8) -> String {
    let mut yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: x}}\nspec:\n  \
         clusterIP: {ip}\n  ports: [{{port: 80, protocol: TCP, targetPort: 8080}}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  \
         namespace: x\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\n\
         ports: [{{name: \"\", port: 8080, protocol: TCP}}]\nendpoints:\n"
    );
    for n in 1..=backends {
        yaml.push_str(&format!(
            "- addresses: [10.244.9.{n}]\n  conditions: {{ready: true, serving: true, terminating: false}}\n"
        ));
    }
    yaml
}

/// The loop and what the test reads from it.
struct Node {
    paths: NodePaths,
    datapath: SharedDatapath,
    reconciler: Reconciler,
    metrics: StepMetrics,
    status: SharedReconcileStatus,
}

impl Node {
    async fn start(paths: NodePaths, max_entries: Vec<(&'static str, u32)>) -> Node {
        let agent = LocalAgent::load_with(
            &paths,
            &LoadOptions {
                max_entries,
                ..LoadOptions::default()
            },
        );
        agent.add_pod(&paths, NamespacedName::new("x", "a"));
        let metrics = StepMetrics::new(&prometheus::Registry::new(), &Reconciler::STEPS);
        let status = SharedReconcileStatus::default();
        let (reconciler, _view) = agent
            .reconciler(Arc::new(MemoryStore::new(NODE)), &paths)
            .await;
        let reconciler = reconciler
            .with_step_metrics(metrics.clone())
            .with_status(status.clone());
        let mut node = Node {
            paths,
            datapath: agent.datapath.clone(),
            reconciler,
            metrics,
            status,
        };
        assert!(
            node.tick_until(|n| n.ready()).await,
            "never ready: {}",
            n_readyz(&node)
        );
        node.settle().await;
        node
    }

    fn write(&self, file: &str, yaml: &str) {
        std::fs::write(self.paths.manifests.join(file), yaml).unwrap();
    }

    fn remove(&self, file: &str) {
        std::fs::remove_file(self.paths.manifests.join(file)).unwrap();
    }

    fn ready(&self) -> bool {
        readiness(&self.status).0.as_u16() == 200
    }

    /// Ticks 30 times, 10 ms apart: the watches echo, the loop settles.
    async fn settle(&mut self) {
        for _ in 0..30 {
            let _ = self.reconciler.tick().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Ticks (10 ms apart, so backoffs elapse) until `done` or 10 s.
    async fn tick_until(&mut self, done: impl Fn(&Node) -> bool) -> bool {
        for _ in 0..1000 {
            let _ = self.reconciler.tick().await;
            if done(self) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    fn policy(&self) -> Vec<String> {
        let entries = maps::policy::policy_entries(self.datapath.lock().ebpf_mut()).unwrap();
        entries.iter().map(|e| format!("{e:?}")).collect()
    }

    fn ipcache(&self) -> Vec<String> {
        let entries = maps::ipcache_entries(self.datapath.lock().ebpf_mut()).unwrap();
        entries.iter().map(|e| format!("{e:?}")).collect()
    }

    fn endpoints(&self) -> String {
        format!(
            "{:?}",
            maps::endpoint_entries(self.datapath.lock().ebpf_mut()).unwrap()
        )
    }

    /// The frontends whose service entry (slot 0) is in the map, and how
    /// many slots each says it has.
    fn frontends(&self) -> Vec<(String, u16)> {
        let entries = maps::lb::services(self.datapath.lock().ebpf_mut()).unwrap();
        let mut frontends: Vec<(String, u16)> = entries
            .iter()
            .filter_map(|(key, value)| match maps::lb::decode_service(key, value) {
                Ok(maps::lb::ServiceMapEntry::Service(s)) => {
                    Some((s.frontend.address.to_string(), s.count))
                }
                _ => None,
            })
            .collect();
        frontends.sort();
        frontends
    }

    fn step_failing(&self, step: &str) -> bool {
        n_readyz(self).contains(&format!("{step}: failing"))
    }
}

fn n_readyz(node: &Node) -> String {
    readiness(&node.status).1
}

/// Runs `body` on a runtime on a thread in the fixture's namespace.
fn run<T: Send + 'static>(
    fixture: &NodeFixture,
    body: impl FnOnce(NodePaths) -> T + Send + 'static,
) -> T {
    fixture.run(body)
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// What every test checks of a step failing on a full map.
fn assert_full_reported(node: &Node, step: &str, map: &str) -> String {
    let body = n_readyz(node);
    assert_eq!(readiness(&node.status).0.as_u16(), 503, "{body}");
    assert!(
        body.contains(&format!("{step}: failing")) && body.contains(&format!("map {map}")),
        "/readyz names the step and the map: {body}"
    );
    for other in Reconciler::STEPS.iter().filter(|s| **s != step) {
        assert!(
            !body.contains(&format!("{other}: failing")),
            "only {step} fails: {body}"
        );
    }
    assert!(node.metrics.errors(step) >= 1, "errors of {step} counted");
    assert!(
        node.metrics.map_full_count(map) >= 1,
        "weir_map_full_total{{map=\"{map}\"}} counted"
    );
    body.lines()
        .find(|line| line.contains(&format!("{step}: failing")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn a_full_policy_map_refuses_a_policy_whole_and_recovers_when_space_is_freed() {
    require_root();
    let fixture = NodeFixture::new();
    fixture.write("pod.yaml", POD);
    fixture.write("base.yaml", &egress_ports("base", 1000, 4));
    fixture.write("medium.yaml", &egress_ports("medium", 2000, 12));
    let line = run(&fixture, |paths| {
        block_on(async {
            let mut node = Node::start(paths, vec![(map_names::POLICY, 32)]).await;
            let before = node.policy();
            let flags = node.endpoints();
            assert!(
                before.len() >= 16 && before.len() < 32,
                "base and medium written: {} entries",
                before.len()
            );

            // 20 more entries do not fit beside what is there.
            node.write("big.yaml", &egress_ports("big", 3000, 20));
            assert!(
                node.tick_until(|n| n.step_failing("policy")).await,
                "the policy step never failed: {}",
                n_readyz(&node)
            );
            node.settle().await;
            let line = assert_full_reported(&node, "policy", map_names::POLICY);
            assert_eq!(
                node.policy(),
                before,
                "nothing of the policy that does not fit is written"
            );
            assert_eq!(
                node.endpoints(),
                flags,
                "the endpoint's flags are unchanged"
            );

            // Deleting medium makes room: big is written whole, medium's
            // entries are gone.
            node.remove("medium.yaml");
            assert!(
                node.tick_until(|n| n.ready()).await,
                "never recovered: {}",
                n_readyz(&node)
            );
            node.settle().await;
            let after = node.policy();
            assert_eq!(
                after.len(),
                before.len() - 12 + 20,
                "big written whole, medium removed"
            );
            format!(
                "fault full map weir_policy: capacity 32, {} entries in force kept, 20 refused whole \
                 ({line}), {} full-map errors counted, recovered to {} entries",
                before.len(),
                node.metrics.map_full_count(map_names::POLICY),
                after.len()
            )
        })
    });
    weir_tests::figure!("{line}");
}

#[test]
fn a_full_ipcache_refuses_new_prefixes_whole_and_recovers_when_space_is_freed() {
    require_root();
    let fixture = NodeFixture::new();
    fixture.write("pod.yaml", POD);
    fixture.write("cidrs.yaml", &egress_cidrs(2));
    let line = run(&fixture, |paths| {
        block_on(async {
            let mut node = Node::start(paths, vec![(map_names::IPCACHE, 12)]).await;
            let before = node.ipcache();
            let policy = node.policy();
            assert!(before.len() < 12, "{} entries", before.len());

            // 20 CIDRs do not fit.
            node.write("cidrs.yaml", &egress_cidrs(20));
            assert!(
                node.tick_until(|n| n.step_failing("ipcache")).await,
                "the ipcache step never failed: {}",
                n_readyz(&node)
            );
            node.settle().await;
            let line = assert_full_reported(&node, "ipcache", map_names::IPCACHE);
            let during = node.ipcache();
            assert_eq!(during, before, "no prefix of the 20 is written");
            assert_ne!(
                node.policy(),
                policy,
                "the policy step still runs (the new CIDR allows are written; without \
                 their ipcache entries they match nothing)"
            );

            // Back to 4 CIDRs: they fit, the ipcache recovers.
            node.write("cidrs.yaml", &egress_cidrs(4));
            assert!(
                node.tick_until(|n| n.ready()).await,
                "never recovered: {}",
                n_readyz(&node)
            );
            node.settle().await;
            let after = node.ipcache();
            assert_eq!(after.len(), before.len() + 2, "two more CIDRs written");
            format!(
                "fault full map weir_ipcache: capacity 12, {} entries in force kept, 18 new prefixes \
                 refused whole ({line}), {} full-map errors counted, recovered to {} entries",
                before.len(),
                node.metrics.map_full_count(map_names::IPCACHE),
                after.len()
            )
        })
    });
    weir_tests::figure!("{line}");
}

#[test]
fn a_full_services_map_leaves_no_half_service_and_recovers_when_space_is_freed() {
    require_root();
    let fixture = NodeFixture::new();
    fixture.write("pod.yaml", POD);
    fixture.write("s1.yaml", &service("s1", "10.96.0.11", 2));
    let line = run(&fixture, |paths| {
        block_on(async {
            // s1 takes 3 entries (its entry and 2 slots); s2 needs 4.
            let mut node = Node::start(paths, vec![(map_names::LB4_SERVICES, 5)]).await;
            let before = node.frontends();
            assert_eq!(before, [("10.96.0.11".to_string(), 2)]);
            let policy = node.policy();

            node.write("s2.yaml", &service("s2", "10.96.0.12", 3));
            assert!(
                node.tick_until(|n| n.step_failing("services")).await,
                "the services step never failed: {}",
                n_readyz(&node)
            );
            node.settle().await;
            let line = assert_full_reported(&node, "services", map_names::LB4_SERVICES);
            assert_eq!(
                node.frontends(),
                before,
                "s1 stays as it was, s2 has no service entry (no half service)"
            );
            // The rest of the node keeps working: a policy change is written.
            node.write("more.yaml", &egress_ports("more", 4000, 2));
            assert!(
                node.tick_until(|n| n.policy().len() == policy.len() + 2)
                    .await,
                "a policy change was not written while the LB map was full"
            );

            node.remove("s1.yaml");
            assert!(
                node.tick_until(|n| n.ready()).await,
                "never recovered: {}",
                n_readyz(&node)
            );
            node.settle().await;
            let after = node.frontends();
            assert_eq!(after, [("10.96.0.12".to_string(), 3)], "s2 written whole");
            format!(
                "fault full map weir_lb4_services: capacity 5, 1 service in force kept, a service \
                 of 4 entries refused with no entry of it in force ({line}), {} full-map errors \
                 counted, recovered when the other service was deleted",
                node.metrics.map_full_count(map_names::LB4_SERVICES),
            )
        })
    });
    weir_tests::figure!("{line}");
}

/// Conntrack is an LRU map the datapath writes (the agent only collects
/// expired entries): when it is full, the kernel evicts entries to make
/// room (its LRU approximation keeps entries looked up again, such as a
/// connection that saw a reply, ahead of new ones), so a new connection is
/// never dropped for want of an entry. What fullness costs is an evicted
/// connection's state: its next packet is judged as new, so the reply of
/// an evicted connection meets the other direction's policy and is denied
/// where that policy denies it. BPF_PROG_TEST_RUN with the maps programmed
/// directly.
#[test]
fn a_full_conntrack_evicts_entries_and_never_drops_a_new_connection() {
    use weir_abi::policy::{POLICY_ALLOW, POLICY_PREFIX_FULL};
    use weir_abi::{
        ip_proto, EndpointInfo, IpcacheValue, PolicyEntry, PolicyKey, Reason, TrafficDirection,
    };
    use weir_agent::datapath::{Datapath, ProgramKind};
    use weir_tests::datapath::{test_run, PinDir};
    use weir_tests::packets;

    const CAPACITY: u32 = 64;
    const CONNECTIONS: u16 = 1_000;
    const ENDPOINT_ID: u16 = 7;
    const PEER_IDENTITY: u32 = 40_000;
    require_root();
    let pins = PinDir::new();
    let mut datapath = Datapath::load_with(
        pins.path(),
        &LoadOptions {
            max_entries: vec![(map_names::CONNTRACK, CAPACITY)],
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let ebpf = datapath.ebpf_mut();
    // The pod (packets::IP4_A) on lo, the program's device under
    // BPF_PROG_TEST_RUN; enforced both ways, egress TCP/80 to the peer
    // allowed, nothing allowed in.
    maps::set_endpoint(
        ebpf,
        1,
        EndpointInfo {
            id: ENDPOINT_ID,
            flags: EndpointInfo::EGRESS_ENFORCED | EndpointInfo::INGRESS_ENFORCED,
            pad: 0,
            identity: 30_000,
            ipv4: packets::IP4_A,
            ..EndpointInfo::default()
        },
    )
    .unwrap();
    maps::set_ipcache(
        ebpf,
        "10.99.0.2/32".parse().unwrap(),
        IpcacheValue {
            identity: PEER_IDENTITY,
            node_ipv4: [0; 4],
            address_identity: 0,
        },
    )
    .unwrap();
    maps::set_policy(
        ebpf,
        POLICY_PREFIX_FULL,
        PolicyKey {
            endpoint_id: ENDPOINT_ID,
            direction: TrafficDirection::Egress as u8,
            pad0: 0,
            identity: PEER_IDENTITY,
            protocol: ip_proto::TCP,
            pad1: 0,
            port: 80u16.to_be_bytes(),
        },
        PolicyEntry {
            verdict: POLICY_ALLOW,
            match_type: 0,
            pad: [0; 2],
            rule: 1,
        },
    )
    .unwrap();
    let l4 = packets::ETH_HLEN + packets::IPV4_HLEN;
    let syn_from = |port: u16| {
        let mut frame = packets::ipv4_tcp_syn();
        frame[l4..l4 + 2].copy_from_slice(&port.to_be_bytes());
        frame
    };
    // The SYN-ACK of `syn`: addresses and ports swapped.
    let syn_ack = |syn: &[u8]| {
        let mut out = syn.to_vec();
        let ip = packets::ETH_HLEN;
        out[0..6].copy_from_slice(&syn[6..12]);
        out[6..12].copy_from_slice(&syn[0..6]);
        out[ip + 12..ip + 16].copy_from_slice(&syn[ip + 16..ip + 20]);
        out[ip + 16..ip + 20].copy_from_slice(&syn[ip + 12..ip + 16]);
        out[l4..l4 + 2].copy_from_slice(&syn[l4 + 2..l4 + 4]);
        out[l4 + 2..l4 + 4].copy_from_slice(&syn[l4..l4 + 2]);
        out[l4 + 13] = 0x12;
        out
    };
    let mut reasons = std::collections::BTreeMap::<String, u32>::new();
    let mut run = |datapath: &mut Datapath, program, frame: &[u8]| -> Reason {
        let before = datapath.metrics().unwrap();
        test_run(datapath, program, frame, 1).unwrap();
        let delta = datapath.metrics().unwrap().since(&before);
        let reason = delta
            .iter()
            .map(|(reason, _, _)| Reason::from_u8(reason).unwrap())
            .next()
            .expect("a counter moved");
        *reasons.entry(format!("{reason:?}")).or_default() += 1;
        reason
    };

    let first = syn_from(20_000);
    assert_eq!(
        run(&mut datapath, ProgramKind::FromPod, &first),
        Reason::Forwarded
    );
    assert_eq!(
        run(&mut datapath, ProgramKind::ToPod, &syn_ack(&first)),
        Reason::Forwarded,
        "the reply of a tracked connection passes"
    );
    let mut dropped = Vec::new();
    for port in 1..=CONNECTIONS {
        let reason = run(
            &mut datapath,
            ProgramKind::FromPod,
            &syn_from(20_000 + port),
        );
        if reason != Reason::Forwarded {
            dropped.push((port, reason));
        }
    }
    let tracked = maps::conntrack(datapath.ebpf_mut()).unwrap().len();
    assert!(
        dropped.is_empty(),
        "new connections dropped with conntrack full: {dropped:?}"
    );
    assert!(
        tracked <= CAPACITY as usize,
        "{tracked} entries in a map of {CAPACITY}"
    );
    // The replies tell tracked connections (a reply passes) from evicted
    // ones (a reply is judged as new and ingress allows nothing).
    let mut evicted = 0;
    for port in 1..=CONNECTIONS {
        match run(
            &mut datapath,
            ProgramKind::ToPod,
            &syn_ack(&syn_from(20_000 + port)),
        ) {
            Reason::Forwarded => {}
            Reason::DropPolicyDenied => evicted += 1,
            other => panic!("the reply of connection {port}: {other:?}"),
        }
    }
    assert!(
        evicted >= CONNECTIONS - CAPACITY as u16,
        "{evicted} of {CONNECTIONS} connections evicted from a map of {CAPACITY}"
    );
    let first_kept = run(&mut datapath, ProgramKind::ToPod, &syn_ack(&first)) == Reason::Forwarded;
    weir_tests::figure!(
        "fault full map weir_conntrack: capacity {CAPACITY}, {} new connections, 0 dropped \
         (LRU eviction, {tracked} entries tracked), {evicted} evicted whose replies were denied \
         by ingress policy; the first connection (replied to before) {}; datapath counters: \
         {reasons:?}",
        u32::from(CONNECTIONS) + 1,
        if first_kept { "kept" } else { "evicted" }
    );
}
