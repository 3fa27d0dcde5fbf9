//! No traffic before policy (issue 11, item 1), on a one-node lab with real
//! sockets: a new pod's interface drops everything from the moment it is
//! attached until its first regeneration is in the kernel, and CNI ADD
//! returns only after that.
//!
//! Each scenario floods from before the pod's interface exists until well
//! after ADD returned, then counts what arrived at the receiver (per
//! source) and what the node's datapath dropped, by reason. Two layers keep
//! a new pod closed: the plugin brings the host end up only after the
//! agent answered (so packets sent before meet a link without carrier), and
//! the endpoint's not-ready entry drops everything until its regeneration
//! (the last scenario shows that layer on its own: a running pod whose
//! manifest disappears is closed until it returns).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use weir_lab::cni::{self, Invocation};
use weir_lab::testing::{
    namespace_yaml, pod_yaml, remove_pod_manifest, write_pod_manifest, TestLab,
};
use weir_tests::names;
use weir_tests::netns::{self, NetNs};

/// How long the floods keep going after ADD returned: the final policy is
/// in force then, so anything delivered in this time that it denies would
/// show up too.
const AFTER_ADD: Duration = Duration::from_millis(1500);
/// A bound on every flood, whatever happens.
const FLOOD_LIMIT: Duration = Duration::from_secs(40);

/// Counts UDP datagrams arriving on a port inside a namespace, by source
/// address, until stopped.
struct Sink {
    counts: Arc<Mutex<BTreeMap<Ipv4Addr, u64>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    fn start(netns_name: &str, port: u16) -> Sink {
        let counts = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        // Bound before the thread returns: nothing sent after start() is missed.
        let socket = netns::run_in(netns_name, move || {
            UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
        })
        .unwrap()
        .unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let thread = thread::spawn({
            let (counts, stop) = (counts.clone(), stop.clone());
            move || {
                let mut buf = [0u8; 64];
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < FLOOD_LIMIT * 2 {
                    if let Ok((_, SocketAddr::V4(from))) = socket.recv_from(&mut buf) {
                        *counts.lock().unwrap().entry(*from.ip()).or_default() += 1;
                    }
                }
            }
        });
        Sink {
            counts,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops after a moment for datagrams in flight; returns the counts.
    fn finish(mut self) -> BTreeMap<Ipv4Addr, u64> {
        thread::sleep(Duration::from_millis(300));
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        self.counts.lock().unwrap().clone()
    }
}

/// Sends small UDP datagrams to `target` from inside a namespace as fast as
/// the socket takes them (sends fail while the namespace has no route),
/// until stopped; counts the sends the kernel accepted.
struct Flood {
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Flood {
    fn start(netns_name: &str, target: SocketAddr) -> Flood {
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let socket = netns::run_in(netns_name, || {
            UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
        })
        .unwrap()
        .unwrap();
        let thread = thread::spawn({
            let (sent, stop) = (sent.clone(), stop.clone());
            move || {
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < FLOOD_LIMIT {
                    if socket.send_to(b"weir", target).is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    // A short pause keeps two cores usable for the agent.
                    thread::sleep(Duration::from_micros(100));
                }
            }
        });
        Flood {
            sent,
            stop,
            thread: Some(thread),
        }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        self.sent()
    }
}

/// A pod set up by hand as kubelet does it: sandbox namespace first, the
/// Pod in the API (here: the lab's manifest directory), then CNI ADD.
struct NewPod {
    netns: NetNs,
    namespace: String,
    name: String,
    container_id: String,
}

impl NewPod {
    fn create(lab: &TestLab, namespace: &str, name: &str) -> NewPod {
        let netns = NetNs::new(&names::unique()).unwrap();
        write_pod_manifest(lab, namespace, name, ("pod", name), "n1").unwrap();
        NewPod {
            netns,
            namespace: namespace.into(),
            name: name.into(),
            container_id: format!("{}-{name}", names::unique()),
        }
    }

    /// The address the agent reserves for this pod's attachment; ADD
    /// gets the same one (Allocate is idempotent per attachment).
    fn reserve_address(&self, lab: &TestLab) -> Ipv4Addr {
        let socket = lab.state().nodes[0].api_socket.clone();
        let request = weir_agent_api::v1::AllocateRequest {
            attachment: Some(weir_agent_api::v1::Attachment {
                container_id: self.container_id.clone(),
                ifname: "eth0".into(),
            }),
            pod: Some(weir_agent_api::v1::PodRef {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
            }),
        };
        let response = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let mut client = weir_agent_api::connect(&socket).await.unwrap();
                client.allocate(request).await.unwrap().into_inner()
            });
        response.ipv4.split('/').next().unwrap().parse().unwrap()
    }

    fn cni(&self, lab: &TestLab, command: &str) -> anyhow::Result<Ipv4Addr> {
        let node = &lab.state().nodes[0];
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&node.cni_config).unwrap()).unwrap();
        let plugin = weir_lab::Binaries::locate().unwrap().cni;
        let pod_netns = netns::path(self.netns.name()).display().to_string();
        let call = Invocation {
            plugin: &plugin,
            node_netns: &node.netns,
            command,
            container_id: &self.container_id,
            pod_netns: &pod_netns,
            ifname: "eth0",
            pod_namespace: &self.namespace,
            pod_name: &self.name,
            config: &config,
        };
        if command == "ADD" {
            cni::add(&call).map(|added| added.ipv4)
        } else {
            cni::del(&call).map(|()| Ipv4Addr::UNSPECIFIED)
        }
    }
}

/// The node's drop counters by (direction, reason text), from `/metrics`.
fn drops(lab: &TestLab) -> BTreeMap<(String, String), f64> {
    let metrics = lab.scrape_metrics("n1").unwrap();
    let mut drops = BTreeMap::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("weir_drop_count_total{"))
    {
        let label = |name: &str| {
            let start = line.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
            line[start..].split('"').next().unwrap().to_string()
        };
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        drops.insert((label("direction"), label("reason")), value);
    }
    drops
}

fn dropped_since(
    before: &BTreeMap<(String, String), f64>,
    after: &BTreeMap<(String, String), f64>,
    direction: &str,
    reason: &str,
) -> u64 {
    let key = (direction.to_string(), reason.to_string());
    let delta = after.get(&key).unwrap_or(&0.0) - before.get(&key).unwrap_or(&0.0);
    delta as u64
}

const NOT_READY: &str = "Endpoint policy program not available";
const POLICY_DENIED: &str = "Policy denied";

#[test]
fn a_new_pod_under_namespace_default_deny_sends_nothing_from_its_first_packet() {
    let mut lab = TestLab::up(1).expect("lab up");
    let mut yaml = namespace_yaml("open") + &namespace_yaml("closed");
    yaml += &pod_yaml("open", "r", "n1", &[]);
    yaml += &pod_yaml("open", "f", "n1", &[]);
    yaml += "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: closed}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress, Egress]\n---\n";
    lab.apply_yaml(&yaml).unwrap();
    let receiver = lab.pod("open/r").unwrap().clone();
    let control = lab.pod("open/f").unwrap().clone();
    let port = 7001;
    let target = SocketAddr::from((receiver.ip, port));

    let sink = Sink::start(&receiver.netns, port);
    let before = drops(&lab);
    let pod = NewPod::create(&lab, "closed", "p");
    // The pod sends from before its interface exists.
    let flood = Flood::start(pod.netns.name(), target);
    let started = Instant::now();
    let ip = pod.cni(&lab, "ADD").expect("ADD");
    let add_took = started.elapsed();
    let sent_at_add = flood.sent();
    thread::sleep(AFTER_ADD);
    let sent = flood.finish();
    // A pod the policy allows, to show the receiver counts what arrives.
    let control_flood = Flood::start(&control.netns, target);
    thread::sleep(Duration::from_millis(300));
    let control_sent = control_flood.finish();
    let counts = sink.finish();
    let after = drops(&lab);

    let delivered = counts.get(&ip).copied().unwrap_or(0);
    let not_ready = dropped_since(&before, &after, "egress", NOT_READY);
    let denied = dropped_since(&before, &after, "egress", POLICY_DENIED);
    weir_tests::figure!(
        "fail closed (namespace default deny, egress): CNI ADD took {} ms; the new pod sent {sent} \
         datagrams ({sent_at_add} before ADD returned), delivered {delivered}; dropped {not_ready} \
         not ready + {denied} policy denied; control pod: sent {control_sent}, delivered {}",
        add_took.as_millis(),
        counts.get(&control.ip).copied().unwrap_or(0)
    );
    assert!(sent > 0, "the new pod never got a packet out");
    assert_eq!(
        delivered, 0,
        "datagrams the final policy denies were delivered"
    );
    assert!(
        not_ready + denied > 0,
        "the node counted no drop for the new pod's packets"
    );
    assert!(
        counts.get(&control.ip).copied().unwrap_or(0) > 0,
        "the receiver got nothing from the allowed control pod: the count proves nothing"
    );
    pod.cni(&lab, "DEL").expect("DEL");
}

#[test]
fn a_new_pod_that_admits_only_x_receives_nothing_else_from_its_first_packet() {
    let mut lab = TestLab::up(1).expect("lab up");
    let mut yaml = namespace_yaml("open") + &namespace_yaml("guarded");
    yaml += &pod_yaml("open", "x", "n1", &[]);
    yaml += &pod_yaml("open", "f", "n1", &[]);
    yaml += "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: only-x, namespace: guarded}\nspec:\n  podSelector: {matchLabels: {pod: p}}\n  policyTypes: [Ingress]\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {ns: open}}, podSelector: {matchLabels: {pod: x}}}]\n---\n";
    lab.apply_yaml(&yaml).unwrap();
    let allowed = lab.pod("open/x").unwrap().clone();
    let other = lab.pod("open/f").unwrap().clone();
    let port = 7002;

    let pod = NewPod::create(&lab, "guarded", "p");
    let ip = pod.reserve_address(&lab);
    let target = SocketAddr::from((ip, port));
    // The receiver listens in the pod's sandbox before its interface
    // exists; the other pod floods the address from then on.
    let sink = Sink::start(pod.netns.name(), port);
    let before = drops(&lab);
    let flood = Flood::start(&other.netns, target);
    let started = Instant::now();
    assert_eq!(
        pod.cni(&lab, "ADD").expect("ADD"),
        ip,
        "ADD kept the reserved address"
    );
    let add_took = started.elapsed();
    let allowed_flood = Flood::start(&allowed.netns, target);
    thread::sleep(AFTER_ADD);
    let sent = flood.finish();
    let allowed_sent = allowed_flood.finish();
    let counts = sink.finish();
    let after = drops(&lab);

    let delivered = counts.get(&other.ip).copied().unwrap_or(0);
    let allowed_delivered = counts.get(&allowed.ip).copied().unwrap_or(0);
    let not_ready = dropped_since(&before, &after, "ingress", NOT_READY);
    let denied = dropped_since(&before, &after, "ingress", POLICY_DENIED);
    weir_tests::figure!(
        "fail closed (allow only from x, ingress): CNI ADD took {} ms; the other pod sent {sent}, \
         delivered {delivered}; dropped {not_ready} not ready + {denied} policy denied; x sent \
         {allowed_sent} after ADD, delivered {allowed_delivered}",
        add_took.as_millis()
    );
    assert!(sent > 0, "the other pod never got a packet out");
    assert_eq!(
        delivered, 0,
        "datagrams the final policy denies were delivered"
    );
    assert!(
        not_ready + denied > 0,
        "the node counted no drop for the other pod's packets"
    );
    assert!(
        allowed_delivered > 0,
        "x's datagrams were not delivered after ADD returned"
    );
    pod.cni(&lab, "DEL").expect("DEL");
}

#[test]
fn a_running_pod_whose_manifest_disappears_is_closed_until_it_returns() {
    let mut lab = TestLab::up(1).expect("lab up");
    let mut yaml = namespace_yaml("open");
    yaml += &pod_yaml("open", "r", "n1", &[]);
    yaml += &pod_yaml("open", "p", "n1", &[]);
    lab.apply_yaml(&yaml).unwrap();
    let receiver = lab.pod("open/r").unwrap().clone();
    let pod = lab.pod("open/p").unwrap().clone();
    // The node's kubelet is down (on the control plane a running kubelet
    // ends the sandbox of a pod gone from the API): only the agent sees
    // the object go while the sandbox runs on.
    if lab.control_plane().is_ok() {
        lab.stop_kubelet("n1").unwrap();
    }
    let port = 7003;
    let sink = Sink::start(&receiver.netns, port);
    let delivered = || {
        sink.counts
            .lock()
            .unwrap()
            .get(&pod.ip)
            .copied()
            .unwrap_or(0)
    };
    let flood = Flood::start(&pod.netns, SocketAddr::from((receiver.ip, port)));
    let wait_until = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what} within 10 s");
            thread::sleep(Duration::from_millis(50));
        }
    };
    wait_until("traffic flows", &|| delivered() > 0);

    // The Pod object goes (its file, or on the control plane the object,
    // deleted at once) while its sandbox runs on.
    let before = drops(&lab);
    remove_pod_manifest(&lab, "open", "p").unwrap();
    let closed_at = Instant::now();
    wait_until("the pod is closed (drops counted as not ready)", &|| {
        dropped_since(&before, &drops(&lab), "egress", NOT_READY) > 0
    });
    let closed_after = closed_at.elapsed();
    let at_close = delivered();
    thread::sleep(Duration::from_millis(1000));
    let leaked = delivered() - at_close;

    write_pod_manifest(&lab, "open", "p", ("pod", "p"), "n1").unwrap();
    let opened_at = Instant::now();
    wait_until("traffic flows again", &|| delivered() > at_close + leaked);
    let opened_after = opened_at.elapsed();
    let sent = flood.finish();
    let not_ready = dropped_since(&before, &drops(&lab), "egress", NOT_READY);
    let total = sink.finish().get(&pod.ip).copied().unwrap_or(0);
    weir_tests::figure!(
        "fail closed (manifest gone): closed {} ms after the manifest was removed, {leaked} \
         datagrams delivered in the closed second, {not_ready} dropped as not ready; open again \
         {} ms after it returned; sent {sent}, delivered {total}",
        closed_after.as_millis(),
        opened_after.as_millis()
    );
    assert_eq!(
        leaked, 0,
        "datagrams passed while the pod's manifest was unknown"
    );
}
