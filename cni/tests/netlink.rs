//! The pod wiring (`veth`) against the real kernel, in network namespaces
//! the tests create and always delete. No agent involved. Needs root.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use weir_cni::attachment::Attachment;
use weir_cni::mac::MacAddr;
use weir_cni::netlink::{self, NetlinkError};
use weir_cni::netns;
use weir_cni::veth::{self, PodEndDeletion, PodIpv6, PodNetwork, PodNetworkSpec};

const POD_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
const MTU: u32 = 1450;
const POD_IPV6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 1, 0, 0, 0, 5);
const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 1, 0, 0, 0, 1);

static NEXT_NAMESPACE: AtomicUsize = AtomicUsize::new(0);

fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "these tests create network namespaces and must run as root"
    );
}

/// A named network namespace (`ip netns add`), deleted on drop, panics included.
struct Namespace {
    name: String,
}

impl Namespace {
    fn new(role: &str) -> Self {
        require_root();
        let name = format!(
            "wt{}x{}{role}",
            std::process::id(),
            NEXT_NAMESPACE.fetch_add(1, Ordering::SeqCst)
        );
        run_ip(&["netns", "add", &name]);
        Self { name }
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    fn file(&self) -> File {
        netns::open(&self.path()).expect("open the namespace")
    }

    /// `ip -n <ns> -j <args>` parsed.
    fn ip_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["-n", &self.name, "-j"];
        full.extend_from_slice(args);
        let stdout = run_ip(&full);
        if stdout.trim().is_empty() {
            return Value::Array(vec![]);
        }
        serde_json::from_str(&stdout)
            .unwrap_or_else(|error| panic!("ip {full:?}: {error}: {stdout}"))
    }

    fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run_ip(&full);
    }

    fn link_names(&self) -> Vec<String> {
        self.ip_json(&["link", "show"])
            .as_array()
            .unwrap()
            .iter()
            .map(|link| link["ifname"].as_str().unwrap().to_string())
            .collect()
    }

    fn routes(&self) -> Vec<Value> {
        self.ip_json(&["route", "show"]).as_array().unwrap().clone()
    }

    fn routes6(&self) -> Vec<Value> {
        self.ip_json(&["-6", "route", "show"])
            .as_array()
            .unwrap()
            .clone()
    }

    /// A sysctl under /proc/sys as the namespace sees it.
    fn sysctl(&self, path: &str) -> String {
        let output = Command::new("ip")
            .args(["netns", "exec", &self.name, "cat"])
            .arg(format!("/proc/sys/{path}"))
            .output()
            .expect("ip netns exec");
        assert!(output.status.success(), "{path}: {output:?}");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    fn set_sysctl(&self, setting: &str) {
        let status = Command::new("ip")
            .args(["netns", "exec", &self.name, "sysctl", "-q", "-w", setting])
            .status()
            .expect("sysctl");
        assert!(status.success(), "{setting}");
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run_ip(args: &[&str]) -> String {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn spec_for(container_id: &str) -> PodNetworkSpec {
    let attachment = Attachment {
        container_id: container_id.to_string(),
        ifname: "eth0".to_string(),
    };
    PodNetworkSpec {
        host_ifname: attachment.host_ifname(),
        pod_ifname: attachment.ifname.clone(),
        peer_temp_ifname: attachment.peer_temp_ifname(),
        pod_mac: attachment.pod_mac(),
        mtu: MTU,
        pod_ip: POD_IP,
        gateway: GATEWAY,
        ipv6: None,
    }
}

fn dual_stack_spec_for(container_id: &str) -> PodNetworkSpec {
    PodNetworkSpec {
        ipv6: Some(PodIpv6 {
            address: POD_IPV6,
            gateway: GATEWAY_V6,
        }),
        ..spec_for(container_id)
    }
}

fn unique_container_id(host: &Namespace) -> String {
    format!("container-{}", host.name)
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// Runs `veth::setup` from inside the host namespace, as the plugin does
/// from the node's namespace.
/// The first step of the wiring: both ends configured, the host end down.
fn setup_down_in(
    host: &Namespace,
    pod: &Namespace,
    spec: &PodNetworkSpec,
) -> Result<PodNetwork, NetlinkError> {
    let pod_netns = pod.file();
    let spec = spec.clone();
    block_on(netns::run_in(&host.file(), move |handle| async move {
        veth::setup(&handle, &pod_netns, &spec).await
    }))
}

/// The whole wiring, as ADD does it around the agent's CreateEndpoint:
/// setup, then activate.
fn setup_in(
    host: &Namespace,
    pod: &Namespace,
    spec: &PodNetworkSpec,
) -> Result<PodNetwork, NetlinkError> {
    let network = setup_down_in(host, pod, spec)?;
    let spec = spec.clone();
    block_on(netns::run_in(&host.file(), move |handle| async move {
        veth::activate(&handle, &spec, &network)
            .await
            .map(|()| network)
    }))
}

fn delete_host_end_in(host: &Namespace, name: &str) -> bool {
    let name = name.to_string();
    block_on(netns::run_in(&host.file(), move |handle| async move {
        netlink::delete_link_if_exists(&handle, &name).await
    }))
    .expect("delete host end")
}

fn find<'a>(entries: &'a [Value], wanted: &[(&str, &str)]) -> Option<&'a Value> {
    entries.iter().find(|entry| {
        wanted
            .iter()
            .all(|(key, value)| entry[*key].as_str() == Some(*value))
    })
}

fn has_flag(link: &Value, flag: &str) -> bool {
    link["flags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|present| present.as_str() == Some(flag))
}

/// Nothing but loopback left, and no routes.
fn assert_pristine(namespace: &Namespace) {
    assert_eq!(
        namespace.link_names(),
        vec!["lo"],
        "links left in {}",
        namespace.name
    );
    assert_eq!(
        namespace.routes(),
        Vec::<Value>::new(),
        "routes left in {}",
        namespace.name
    );
}

#[test]
fn setup_leaves_the_host_end_down_until_activate() {
    let host = Namespace::new("host");
    let pod = Namespace::new("pod");
    let spec = spec_for(&unique_container_id(&host));

    setup_down_in(&host, &pod, &spec).expect("setup");
    let eth0 = &pod.ip_json(&["link", "show", "dev", "eth0"])[0];
    assert!(has_flag(eth0, "UP"), "{eth0}");
    assert!(
        !has_flag(eth0, "LOWER_UP"),
        "no carrier before the host end is up: {eth0}"
    );
    let host_link = &host.ip_json(&["link", "show", "dev", &spec.host_ifname])[0];
    assert!(!has_flag(host_link, "UP"), "{host_link}");
    // The node takes no IPv6 routes or redirects from the pod.
    for key in ["accept_ra", "accept_redirects", "accept_dad"] {
        let path = format!("/proc/sys/net/ipv6/conf/{}/{key}", spec.host_ifname);
        let out = Command::new("ip")
            .args(["netns", "exec", &host.name, "cat", &path])
            .output()
            .expect("ip netns exec");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "{key}");
    }
    assert!(
        find(&host.routes(), &[("dst", "10.244.1.5")]).is_none(),
        "no host route before activate"
    );
    assert!(delete_host_end_in(&host, &spec.host_ifname));
}

#[test]
fn setup_wires_both_ends_and_deleting_the_host_end_removes_everything() {
    let host = Namespace::new("host");
    let pod = Namespace::new("pod");
    let spec = spec_for(&unique_container_id(&host));

    let network = setup_in(&host, &pod, &spec).expect("setup");

    // Pod end: name, MAC, MTU, up, the /32.
    let eth0 = &pod.ip_json(&["addr", "show", "dev", "eth0"])[0];
    assert_eq!(eth0["address"], spec.pod_mac.to_string());
    assert_eq!(eth0["mtu"], MTU);
    assert!(has_flag(eth0, "UP"), "{eth0}");
    assert!(
        has_flag(eth0, "LOWER_UP"),
        "carrier needs the host end up: {eth0}"
    );
    let addresses = eth0["addr_info"].as_array().unwrap();
    let inet: Vec<&Value> = addresses.iter().filter(|a| a["family"] == "inet").collect();
    assert_eq!(inet.len(), 1, "{eth0}");
    assert_eq!(inet[0]["local"], POD_IP.to_string());
    assert_eq!(inet[0]["prefixlen"], 32);
    assert!(
        !pod.link_names().iter().any(|name| name.starts_with("wtmp")),
        "temporary name left"
    );

    let lo = &pod.ip_json(&["link", "show", "dev", "lo"])[0];
    assert!(has_flag(lo, "UP"), "{lo}");

    // Pod routes: gateway on-link, default via gateway.
    let pod_routes = pod.routes();
    find(
        &pod_routes,
        &[("dst", "10.244.1.1"), ("dev", "eth0"), ("scope", "link")],
    )
    .unwrap_or_else(|| panic!("no on-link gateway route: {pod_routes:?}"));
    find(
        &pod_routes,
        &[
            ("dst", "default"),
            ("gateway", "10.244.1.1"),
            ("dev", "eth0"),
        ],
    )
    .unwrap_or_else(|| panic!("no default route: {pod_routes:?}"));
    let lookup = &pod.ip_json(&["route", "get", "192.0.2.10"])[0];
    assert_eq!(lookup["gateway"], "10.244.1.1", "{lookup}");
    assert_eq!(lookup["prefsrc"], POD_IP.to_string(), "{lookup}");

    // Pod neighbour: the gateway resolves statically to the host end's MAC.
    let neighbours = pod.ip_json(&["neigh", "show", "dev", "eth0"]);
    let gateway = find(neighbours.as_array().unwrap(), &[("dst", "10.244.1.1")])
        .unwrap_or_else(|| panic!("no gateway neighbour: {neighbours}"));
    assert_eq!(gateway["lladdr"], network.host_mac.to_string());
    assert_eq!(gateway["state"], serde_json::json!(["PERMANENT"]));

    // Host end: name, MAC reported, MTU, up, and the /32 route to the pod.
    let host_link = &host.ip_json(&["link", "show", "dev", &spec.host_ifname])[0];
    assert_eq!(host_link["address"], network.host_mac.to_string());
    assert_eq!(host_link["mtu"], MTU);
    assert!(has_flag(host_link, "UP"), "{host_link}");
    assert_eq!(host_link["ifindex"], network.host_index);
    let host_routes = host.routes();
    find(
        &host_routes,
        &[
            ("dst", "10.244.1.5"),
            ("dev", spec.host_ifname.as_str()),
            ("scope", "link"),
        ],
    )
    .unwrap_or_else(|| panic!("no host route: {host_routes:?}"));

    // Inspection (CHECK's view) agrees.
    let state = block_on(veth::inspect_pod_end(&pod.file(), "eth0"))
        .unwrap()
        .expect("eth0 exists");
    assert_eq!(state.link.mac, Some(spec.pod_mac));
    assert!(state.link.up);
    assert_eq!(state.ipv4, vec![(POD_IP, 32)]);

    // Teardown as DEL does it: host end, then the (already gone) pod end.
    assert!(delete_host_end_in(&host, &spec.host_ifname));
    assert_eq!(
        block_on(veth::delete_pod_end(&pod.path(), "eth0", spec.pod_mac)).unwrap(),
        PodEndDeletion::Absent
    );
    assert_pristine(&host);
    assert_pristine(&pod);
    assert_eq!(
        block_on(veth::inspect_pod_end(&pod.file(), "eth0")).unwrap(),
        None
    );

    // And again: DEL is idempotent.
    assert!(!delete_host_end_in(&host, &spec.host_ifname));
}

#[test]
fn setup_failing_in_the_pod_leaves_nothing_behind() {
    let host = Namespace::new("host");
    let pod = Namespace::new("pod");
    pod.ip(&["link", "add", "eth0", "type", "bridge"]);
    let spec = spec_for(&unique_container_id(&host));

    let error = setup_in(&host, &pod, &spec).expect_err("eth0 is taken");
    assert_eq!(
        error.errno(),
        Some(nix::errno::Errno::EEXIST as i32),
        "{error}"
    );

    assert_pristine(&host);
    assert_eq!(
        pod.link_names(),
        vec!["lo", "eth0"],
        "only the pre-existing placeholder remains"
    );
    let placeholder = &pod.ip_json(&["addr", "show", "dev", "eth0"])[0];
    assert_eq!(
        placeholder["addr_info"],
        serde_json::json!([]),
        "the placeholder was not touched"
    );
    assert_eq!(pod.routes(), Vec::<Value>::new());

    // The DEL a runtime sends after the failed ADD keeps the foreign eth0.
    assert_eq!(
        block_on(veth::delete_pod_end(&pod.path(), "eth0", spec.pod_mac)).unwrap(),
        PodEndDeletion::NotOurs
    );
    assert_eq!(pod.link_names(), vec!["lo", "eth0"]);
}

#[test]
fn setup_does_not_delete_a_host_interface_it_did_not_create() {
    let host = Namespace::new("host");
    let pod = Namespace::new("pod");
    let spec = spec_for(&unique_container_id(&host));
    host.ip(&["link", "add", &spec.host_ifname, "type", "bridge"]);

    let error = setup_in(&host, &pod, &spec).expect_err("host name is taken");
    assert_eq!(
        error.errno(),
        Some(nix::errno::Errno::EEXIST as i32),
        "{error}"
    );

    assert_eq!(
        host.link_names(),
        vec!["lo".to_string(), spec.host_ifname.clone()]
    );
    assert_pristine(&pod);
}

#[test]
fn setup_failing_late_in_the_pod_is_undone() {
    // The pod already has a default route: ours fails with EEXIST after
    // the rename, address, link-up and gateway route have been made.
    let host = Namespace::new("host");
    let pod = Namespace::new("pod");
    pod.ip(&["link", "add", "placeholder0", "type", "bridge"]);
    pod.ip(&["link", "set", "placeholder0", "up"]);
    pod.ip(&["route", "add", "default", "dev", "placeholder0"]);
    let spec = spec_for(&unique_container_id(&host));

    let error = setup_in(&host, &pod, &spec).expect_err("default route is taken");
    assert_eq!(
        error.errno(),
        Some(nix::errno::Errno::EEXIST as i32),
        "{error}"
    );

    assert_pristine(&host);
    assert_eq!(pod.link_names(), vec!["lo", "placeholder0"]);
    let routes = pod.routes();
    assert_eq!(routes.len(), 1, "{routes:?}");
    find(&routes, &[("dst", "default"), ("dev", "placeholder0")])
        .expect("the pod's own route stays");
}

#[test]
fn setup_failing_at_the_last_step_on_the_host_is_undone() {
    // The host already routes the pod address elsewhere: the final host
    // route fails after the pod end is completely configured.
    let host = Namespace::new("host");
    let pod = Namespace::new("pod");
    host.ip(&["link", "add", "placeholder0", "type", "bridge"]);
    host.ip(&["link", "set", "placeholder0", "up"]);
    host.ip(&[
        "route",
        "add",
        "10.244.1.5/32",
        "dev",
        "placeholder0",
        "scope",
        "link",
    ]);
    let spec = spec_for(&unique_container_id(&host));

    let error = setup_in(&host, &pod, &spec).expect_err("host route is taken");
    assert_eq!(
        error.errno(),
        Some(nix::errno::Errno::EEXIST as i32),
        "{error}"
    );

    assert_eq!(host.link_names(), vec!["lo", "placeholder0"]);
    let routes = host.routes();
    assert_eq!(routes.len(), 1, "{routes:?}");
    find(&routes, &[("dst", "10.244.1.5"), ("dev", "placeholder0")])
        .expect("the host's own route stays");
    assert_pristine(&pod);
}

#[test]
fn two_pods_get_separate_wiring() {
    let host = Namespace::new("host");
    let first = Namespace::new("poda");
    let second = Namespace::new("podb");
    let first_spec = spec_for(&format!("{}-a", unique_container_id(&host)));
    let mut second_spec = spec_for(&format!("{}-b", unique_container_id(&host)));
    second_spec.pod_ip = Ipv4Addr::new(10, 244, 1, 6);

    setup_in(&host, &first, &first_spec).expect("first");
    setup_in(&host, &second, &second_spec).expect("second");

    let routes = host.routes();
    find(
        &routes,
        &[
            ("dst", "10.244.1.5"),
            ("dev", first_spec.host_ifname.as_str()),
        ],
    )
    .expect("first route");
    find(
        &routes,
        &[
            ("dst", "10.244.1.6"),
            ("dev", second_spec.host_ifname.as_str()),
        ],
    )
    .expect("second route");
    assert_ne!(
        first.ip_json(&["link", "show", "dev", "eth0"])[0]["address"],
        second.ip_json(&["link", "show", "dev", "eth0"])[0]["address"]
    );

    assert!(delete_host_end_in(&host, &first_spec.host_ifname));
    assert_pristine(&first);
    assert_eq!(
        second.link_names(),
        vec!["lo", "eth0"],
        "the other pod is untouched"
    );
    assert!(delete_host_end_in(&host, &second_spec.host_ifname));
    assert_pristine(&host);
}

#[test]
fn delete_pod_end_tolerates_missing_namespace_and_interface() {
    let pod = Namespace::new("pod");
    let mac = spec_for(&pod.name).pod_mac;
    let missing = PathBuf::from(format!("/run/netns/{}-gone", pod.name));
    assert_eq!(
        block_on(veth::delete_pod_end(&missing, "eth0", mac)).unwrap(),
        PodEndDeletion::Absent
    );
    assert_eq!(
        block_on(veth::delete_pod_end(&pod.path(), "eth0", mac)).unwrap(),
        PodEndDeletion::Absent
    );
}

#[test]
fn delete_pod_end_deletes_only_an_interface_with_the_attachment_mac() {
    let pod = Namespace::new("pod");
    let mac = spec_for(&pod.name).pod_mac;
    pod.ip(&["link", "add", "eth0", "type", "bridge"]);
    pod.ip(&["link", "set", "eth0", "address", "02:00:00:00:00:01"]);
    assert_eq!(
        block_on(veth::delete_pod_end(&pod.path(), "eth0", mac)).unwrap(),
        PodEndDeletion::NotOurs
    );
    assert_eq!(pod.link_names(), vec!["lo", "eth0"]);

    pod.ip(&["link", "set", "eth0", "address", &mac.to_string()]);
    assert_eq!(
        block_on(veth::delete_pod_end(&pod.path(), "eth0", mac)).unwrap(),
        PodEndDeletion::Deleted
    );
    assert_pristine(&pod);
}

#[test]
fn a_file_that_is_not_a_namespace_counts_as_missing() {
    require_root();
    let path = std::env::temp_dir().join(format!("wt{}x-not-a-netns", std::process::id()));
    std::fs::write(&path, b"").unwrap();
    let error = netns::open(&path).expect_err("not a namespace");
    assert!(error.is_missing_netns(), "{error}");
    let mac = MacAddr::local_unicast([0; 6]);
    assert_eq!(
        block_on(veth::delete_pod_end(&path, "eth0", mac)).unwrap(),
        PodEndDeletion::Absent
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn the_host_mac_is_reported_as_the_kernel_has_it() {
    let host = Namespace::new("host");
    let pod = Namespace::new("pod");
    let spec = spec_for(&unique_container_id(&host));
    let network = setup_in(&host, &pod, &spec).expect("setup");
    let reported: MacAddr = host.ip_json(&["link", "show", "dev", &spec.host_ifname])[0]["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(reported, network.host_mac);
    assert!(delete_host_end_in(&host, &spec.host_ifname));
}

#[test]
fn the_gateway_neighbour_replaces_an_entry_the_kernel_made_first() {
    // A process already running in the sandbox that sends through the
    // default route before the plugin adds the permanent entry leaves the
    // kernel's own (incomplete or stale) entry for the gateway behind.
    let pod = Namespace::new("pod");
    pod.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    pod.ip(&["link", "set", "d0", "up"]);
    pod.ip(&["link", "set", "d1", "up"]);
    pod.ip(&[
        "neigh",
        "add",
        "10.244.1.1",
        "lladdr",
        "02:00:00:00:00:99",
        "dev",
        "d0",
        "nud",
        "stale",
    ]);
    let index = pod.ip_json(&["link", "show", "dev", "d0"])[0]["ifindex"]
        .as_u64()
        .unwrap() as u32;
    let mac: MacAddr = "02:00:00:00:00:01".parse().unwrap();
    block_on(netns::run_in(&pod.file(), move |handle| async move {
        netlink::add_permanent_neighbour(&handle, index, "10.244.1.1".parse().unwrap(), mac).await
    }))
    .expect("the plugin's entry replaces the kernel's");
    let neighbours = pod.ip_json(&["neigh", "show", "dev", "d0"]);
    let gateway = find(neighbours.as_array().unwrap(), &[("dst", "10.244.1.1")])
        .unwrap_or_else(|| panic!("no gateway neighbour: {neighbours}"));
    assert_eq!(gateway["lladdr"], "02:00:00:00:00:01");
    assert_eq!(gateway["state"], serde_json::json!(["PERMANENT"]));
}

#[test]
fn the_pod_link_local_address_is_the_eui64_of_its_mac_whatever_the_default() {
    let host = Namespace::new("host");
    let pod = Namespace::new("pod");
    // A namespace whose new interfaces would get random link-local
    // addresses (addr_gen_mode 3): the datapath would drop them.
    let status = Command::new("ip")
        .args(["netns", "exec", &pod.name, "sysctl", "-q", "-w"])
        .arg("net.ipv6.conf.default.addr_gen_mode=3")
        .status()
        .expect("sysctl");
    assert!(status.success());
    let spec = spec_for(&unique_container_id(&host));
    setup_in(&host, &pod, &spec).expect("setup");
    let [a, b, c, d, e, f] = spec.pod_mac.octets();
    let expected = Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([a ^ 2, b]),
        u16::from_be_bytes([c, 0xff]),
        u16::from_be_bytes([0xfe, d]),
        u16::from_be_bytes([e, f]),
    )
    .to_string();
    let mut seen = Value::Null;
    for _ in 0..100 {
        seen = pod.ip_json(&["-6", "addr", "show", "dev", "eth0", "scope", "link"]);
        let found = seen[0]["addr_info"]
            .as_array()
            .is_some_and(|infos| infos.iter().any(|i| i["local"] == expected.as_str()));
        if found {
            assert!(delete_host_end_in(&host, &spec.host_ifname));
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no link-local {expected} on eth0: {seen}");
}

/// Runs `work` on a thread that entered `namespace`: sockets it opens
/// belong to that namespace.
fn spawn_in<T: Send + 'static>(
    namespace: &Namespace,
    work: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let file = namespace.file();
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        work()
    })
}

/// A TCP connection from `client`'s namespace to a listener on `address`
/// in `server`'s exchanges data both ways.
fn assert_tcp_connects(client: &Namespace, server: &Namespace, address: IpAddr) {
    let (port_sender, port_receiver) = std::sync::mpsc::channel();
    let listener = spawn_in(server, move || {
        let listener = TcpListener::bind((address, 0)).expect("bind");
        port_sender
            .send(listener.local_addr().expect("local address").port())
            .expect("send the port");
        let (mut stream, peer) = listener.accept().expect("accept");
        let mut request = [0; 4];
        stream.read_exact(&mut request).expect("read the request");
        stream.write_all(b"pong").expect("write the answer");
        (request, peer.ip())
    });
    let port = port_receiver
        .recv_timeout(Duration::from_secs(5))
        .expect("the listener's port");
    let target = SocketAddr::new(address, port);
    // Generous: the host answers only once its veth's link-local address
    // has passed duplicate address detection (for IPv6 neighbour discovery).
    let answer = spawn_in(client, move || -> std::io::Result<[u8; 4]> {
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(15))?;
        stream.set_read_timeout(Some(Duration::from_secs(15)))?;
        stream.write_all(b"ping")?;
        let mut answer = [0; 4];
        stream.read_exact(&mut answer)?;
        Ok(answer)
    })
    .join()
    .expect("client thread");
    // On failure the listener thread is left blocked in accept; the test fails anyway.
    let answer = answer.unwrap_or_else(|error| panic!("connect to {target}: {error}"));
    assert_eq!(&answer, b"pong");
    let (request, peer) = listener.join().expect("listener thread");
    assert_eq!(&request, b"ping");
    assert_eq!(peer.is_ipv6(), address.is_ipv6());
}

/// The host namespace's own addresses, on its loopback, that the pod
/// reaches through its default routes.
const HOST_SERVICE_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const HOST_SERVICE_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 10);

fn add_host_services(host: &Namespace) {
    host.ip(&["link", "set", "lo", "up"]);
    host.ip(&["addr", "add", &format!("{HOST_SERVICE_V4}/32"), "dev", "lo"]);
    host.ip(&[
        "addr",
        "add",
        &format!("{HOST_SERVICE_V6}/128"),
        "dev",
        "lo",
    ]);
}

#[test]
fn dual_stack_setup_wires_ipv6_and_the_pod_reaches_the_host_over_both_families() {
    let host = Namespace::new("host");
    let pod = Namespace::new("pod");
    add_host_services(&host);
    let spec = dual_stack_spec_for(&unique_container_id(&host));

    let network = setup_in(&host, &pod, &spec).expect("setup");

    // Pod end: the IPv4 /32 as ever, and the IPv6 /128, usable at once (no
    // duplicate address detection).
    let eth0 = &pod.ip_json(&["addr", "show", "dev", "eth0"])[0];
    let addresses = eth0["addr_info"].as_array().unwrap();
    let inet: Vec<&Value> = addresses.iter().filter(|a| a["family"] == "inet").collect();
    assert_eq!(inet.len(), 1, "{eth0}");
    assert_eq!(inet[0]["local"], POD_IP.to_string());
    let global6: Vec<&Value> = addresses
        .iter()
        .filter(|a| a["family"] == "inet6" && a["scope"] == "global")
        .collect();
    assert_eq!(global6.len(), 1, "{eth0}");
    assert_eq!(global6[0]["local"], POD_IPV6.to_string());
    assert_eq!(global6[0]["prefixlen"], 128);
    assert_eq!(global6[0]["nodad"], true, "{eth0}");
    assert!(global6[0].get("tentative").is_none(), "{eth0}");

    // Pod IPv6 routes: gateway on-link, default via gateway.
    let pod_routes = pod.routes6();
    find(&pod_routes, &[("dst", "fd00:10:244:1::1"), ("dev", "eth0")])
        .unwrap_or_else(|| panic!("no on-link IPv6 gateway route: {pod_routes:?}"));
    find(
        &pod_routes,
        &[
            ("dst", "default"),
            ("gateway", "fd00:10:244:1::1"),
            ("dev", "eth0"),
        ],
    )
    .unwrap_or_else(|| panic!("no IPv6 default route: {pod_routes:?}"));
    let lookup = &pod.ip_json(&["route", "get", "2001:db8::10"])[0];
    assert_eq!(lookup["gateway"], "fd00:10:244:1::1", "{lookup}");
    assert_eq!(lookup["prefsrc"], POD_IPV6.to_string(), "{lookup}");
    // And IPv4's, unchanged.
    find(
        &pod.routes(),
        &[
            ("dst", "default"),
            ("gateway", "10.244.1.1"),
            ("dev", "eth0"),
        ],
    )
    .expect("IPv4 default route");

    // Pod neighbour: the IPv6 gateway resolves statically to the host end.
    let neighbours = pod.ip_json(&["-6", "neigh", "show", "dev", "eth0"]);
    let gateway = find(
        neighbours.as_array().unwrap(),
        &[("dst", "fd00:10:244:1::1")],
    )
    .unwrap_or_else(|| panic!("no IPv6 gateway neighbour: {neighbours}"));
    assert_eq!(gateway["lladdr"], network.host_mac.to_string());
    assert_eq!(gateway["state"], serde_json::json!(["PERMANENT"]));

    // Host: the /128 route to the pod, beside the /32.
    let host_routes = host.routes6();
    find(
        &host_routes,
        &[
            ("dst", "fd00:10:244:1::5"),
            ("dev", spec.host_ifname.as_str()),
        ],
    )
    .unwrap_or_else(|| panic!("no IPv6 host route: {host_routes:?}"));
    find(
        &host.routes(),
        &[("dst", "10.244.1.5"), ("dev", spec.host_ifname.as_str())],
    )
    .expect("IPv4 host route");

    // Inspection (CHECK's view) sees both.
    let state = block_on(veth::inspect_pod_end(&pod.file(), "eth0"))
        .unwrap()
        .expect("eth0 exists");
    assert_eq!(state.ipv4, vec![(POD_IP, 32)]);
    assert!(state.ipv6.contains(&(POD_IPV6, 128)), "{:?}", state.ipv6);

    // Traffic: the pod reaches the host over both families.
    assert_tcp_connects(&pod, &host, IpAddr::V4(HOST_SERVICE_V4));
    assert_tcp_connects(&pod, &host, IpAddr::V6(HOST_SERVICE_V6));

    // Deleting the host end takes all of it away.
    assert!(delete_host_end_in(&host, &spec.host_ifname));
    assert_eq!(pod.link_names(), vec!["lo"]);
    assert!(
        find(&host.routes6(), &[("dst", "fd00:10:244:1::5")]).is_none(),
        "host route left"
    );
    let pod_routes = pod.routes6();
    assert!(
        !pod_routes
            .iter()
            .any(|route| route["dev"] == "eth0" || route["dst"] == "default"),
        "{pod_routes:?}"
    );
}

#[test]
fn ipv6_is_enabled_in_a_pod_namespace_that_disables_it_only_when_asked_for() {
    let host = Namespace::new("host");
    let single = Namespace::new("poda");
    let dual = Namespace::new("podb");
    for pod in [&single, &dual] {
        pod.set_sysctl("net.ipv6.conf.all.disable_ipv6=1");
        pod.set_sysctl("net.ipv6.conf.default.disable_ipv6=1");
    }
    let single_spec = spec_for(&format!("{}-a", unique_container_id(&host)));
    let mut dual_spec = dual_stack_spec_for(&format!("{}-b", unique_container_id(&host)));
    dual_spec.pod_ip = Ipv4Addr::new(10, 244, 1, 6);

    setup_in(&host, &single, &single_spec).expect("IPv4 only");
    setup_in(&host, &dual, &dual_spec).expect("dual stack");

    // An IPv4-only pod's IPv6 settings are its own.
    assert_eq!(single.sysctl("net/ipv6/conf/eth0/disable_ipv6"), "1");
    assert_eq!(single.sysctl("net/ipv6/conf/lo/disable_ipv6"), "1");
    assert_eq!(dual.sysctl("net/ipv6/conf/eth0/disable_ipv6"), "0");
    assert_eq!(dual.sysctl("net/ipv6/conf/lo/disable_ipv6"), "0");
    let state = block_on(veth::inspect_pod_end(&dual.file(), "eth0"))
        .unwrap()
        .expect("eth0 exists");
    assert!(state.ipv6.contains(&(POD_IPV6, 128)), "{:?}", state.ipv6);
    find(&dual.routes6(), &[("dst", "default"), ("dev", "eth0")]).expect("IPv6 default route");

    assert!(delete_host_end_in(&host, &single_spec.host_ifname));
    assert!(delete_host_end_in(&host, &dual_spec.host_ifname));
    assert_pristine(&host);
}

#[test]
fn dual_stack_setup_failing_on_ipv6_in_the_pod_is_undone() {
    // The pod already has an IPv6 default route: ours fails with EEXIST
    // after all of IPv4 has been configured.
    let host = Namespace::new("host");
    let pod = Namespace::new("pod");
    pod.ip(&["link", "add", "placeholder0", "type", "bridge"]);
    pod.ip(&["link", "set", "placeholder0", "up"]);
    pod.ip(&["-6", "route", "add", "default", "dev", "placeholder0"]);
    let spec = dual_stack_spec_for(&unique_container_id(&host));

    let error = setup_in(&host, &pod, &spec).expect_err("IPv6 default route is taken");
    assert_eq!(
        error.errno(),
        Some(nix::errno::Errno::EEXIST as i32),
        "{error}"
    );

    assert_pristine(&host);
    assert_eq!(pod.link_names(), vec!["lo", "placeholder0"]);
    assert_eq!(pod.routes(), Vec::<Value>::new());
}

#[test]
fn dual_stack_activate_failing_on_the_ipv6_host_route_is_undone() {
    let host = Namespace::new("host");
    let pod = Namespace::new("pod");
    host.ip(&["link", "add", "placeholder0", "type", "bridge"]);
    host.ip(&["link", "set", "placeholder0", "up"]);
    host.ip(&[
        "-6",
        "route",
        "add",
        "fd00:10:244:1::5/128",
        "dev",
        "placeholder0",
    ]);
    let spec = dual_stack_spec_for(&unique_container_id(&host));

    let error = setup_in(&host, &pod, &spec).expect_err("IPv6 host route is taken");
    assert_eq!(
        error.errno(),
        Some(nix::errno::Errno::EEXIST as i32),
        "{error}"
    );

    assert_eq!(host.link_names(), vec!["lo", "placeholder0"]);
    assert_eq!(
        host.routes(),
        Vec::<Value>::new(),
        "the IPv4 host route is gone too"
    );
    find(
        &host.routes6(),
        &[("dst", "fd00:10:244:1::5"), ("dev", "placeholder0")],
    )
    .expect("the host's own route stays");
    assert_pristine(&pod);
}
