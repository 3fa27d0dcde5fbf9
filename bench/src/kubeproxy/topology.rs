//! A client, a "node" and backend namespaces to run kube-proxy's rules
//! over real sockets, removed when dropped.
//!
//! ```text
//!  client ns            node ns (ip_forward, the rules)        backend ns j
//!  10.200.0.2 ---veth--- 10.200.0.1
//!                        10.200.(1+j).1 ----------veth--------- 10.200.(1+j).2
//!                        route 10.200.(64(j+1)).0/18 via .2      local 10.200.(64(j+1)).0/18
//!                        route 10.201.0.0/16 via 10.200.0.3 (a gateway nobody is)
//! ```
//!
//! Every backend namespace treats its whole /18 as local (a `local` route,
//! so one listener on 0.0.0.0 answers for thousands of endpoint addresses
//! without thousands of `ip addr add`) and runs a [`Greeter`] that answers
//! each connection with the address it was reached at. Service addresses
//! are in 10.201.0.0/16: the client's default route leads to the node, and
//! the node routes the range to a gateway on the client link that does not
//! exist (a permanent neighbour entry with a MAC nobody owns, so no ARP),
//! as a real node's default route would take it somewhere. So a service address that no rule
//! translates is forwarded (through the filter table, where kube-proxy
//! REJECTs services without endpoints) and lost, not refused by routing.
//! The pod range, 10.200.0.0/16, is the
//! cluster CIDR: the client is a pod, so no masquerade applies. Nothing
//! routes out of these namespaces.

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use anyhow::{ensure, Context, Result};

use super::render::RenderOptions;
use super::BenchService;
use weir_tests::names;
use weir_tests::netns::{self, NetNs};
use weir_types::Protocol;

/// The pods' range, the cluster CIDR of the rules.
pub const CLUSTER_CIDR: &str = "10.200.0.0/16";
/// Where service (cluster) addresses come from.
pub const SERVICE_CIDR: &str = "10.201.0.0/16";
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
/// The port services listen on and the port the greeters serve.
pub const SERVICE_PORT: u16 = 80;
pub const BACKEND_PORT: u16 = 8080;
/// At most this many backend namespaces (one /18 each)...
pub const MAX_BACKENDS: usize = 3;
/// ...and this many services (endpoint addresses per /18).
pub const MAX_SERVICES: usize = (1 << 14) - 1;

/// The address of the `service`-th service.
pub fn service_ip(service: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 201, 0, 0)) + service as u32 + 1)
}

/// The address of backend `backend` of the `service`-th service, in
/// backend namespace `backend`.
pub fn endpoint_ip(backend: usize, service: usize) -> Ipv4Addr {
    let base = u32::from(Ipv4Addr::new(10, 200, 64 * (backend as u8 + 1), 0));
    Ipv4Addr::from(base + service as u32 + 1)
}

/// Render options matching this topology.
pub fn render_options() -> RenderOptions {
    RenderOptions {
        cluster_cidr: Some(CLUSTER_CIDR.to_string()),
    }
}

/// `count` TCP services (`bench/svc-<i>`, port 80), each with one endpoint
/// in every one of `backends` backend namespaces (port 8080).
pub fn services(count: usize, backends: usize) -> Vec<BenchService> {
    (0..count).map(|i| service(i, backends)).collect()
}

/// The `i`-th service of [`services`].
pub fn service(i: usize, backends: usize) -> BenchService {
    assert!(i < MAX_SERVICES && backends <= MAX_BACKENDS);
    BenchService {
        namespace: "bench".to_string(),
        name: format!("svc-{i}"),
        cluster_ip: service_ip(i),
        port: SERVICE_PORT,
        protocol: Protocol::Tcp,
        backends: (0..backends)
            .map(|b| (endpoint_ip(b, i), BACKEND_PORT))
            .collect(),
    }
}

/// The namespaces, links, routes and greeters.
pub struct Topology {
    // Fields drop in order: the greeters stop before their namespaces go.
    greeters: Vec<Greeter>,
    pub client: NetNs,
    pub node: NetNs,
    pub backends: Vec<NetNs>,
}

impl Topology {
    pub fn new(backends: usize) -> Result<Topology> {
        ensure!(
            (1..=MAX_BACKENDS).contains(&backends),
            "1 to {MAX_BACKENDS} backend namespaces"
        );
        let prefix = names::unique();
        let client = NetNs::new(&format!("{prefix}c"))?;
        let node = NetNs::new(&format!("{prefix}n"))?;
        let mut topology = Topology {
            greeters: Vec::new(),
            client,
            node,
            backends: Vec::new(),
        };
        topology.node.sysctl("net.ipv4.ip_forward", "1")?;
        // Unknown service addresses go back out of the client link; an ICMP
        // redirect for them would use up the client's ICMP rate-limit token
        // and silence the REJECT of services without endpoints.
        for scope in ["all", "default"] {
            topology
                .node
                .sysctl(&format!("net.ipv4.conf.{scope}.send_redirects"), "0")?;
        }
        link(
            (&topology.client, &format!("{prefix}c"), "10.200.0.2/24"),
            (&topology.node, &format!("{prefix}nc"), "10.200.0.1/24"),
        )?;
        topology
            .client
            .ip(&["route", "add", "default", "via", "10.200.0.1"])?;
        let node_dev = format!("{prefix}nc");
        topology.node.ip(&[
            "neigh",
            "add",
            "10.200.0.3",
            "lladdr",
            "02:00:0a:c8:00:03",
            "dev",
            &node_dev,
            "nud",
            "permanent",
        ])?;
        topology
            .node
            .ip(&["route", "add", SERVICE_CIDR, "via", "10.200.0.3"])?;
        for j in 0..backends {
            let ns = NetNs::new(&format!("{prefix}b{j}"))?;
            let link_net = format!("10.200.{}", j + 1);
            link(
                (&ns, &format!("{prefix}b{j}"), &format!("{link_net}.2/24")),
                (
                    &topology.node,
                    &format!("{prefix}n{j}"),
                    &format!("{link_net}.1/24"),
                ),
            )?;
            let range = format!("10.200.{}.0/18", 64 * (j + 1));
            ns.ip(&["route", "add", "default", "via", &format!("{link_net}.1")])?;
            ns.ip(&["route", "add", "local", &range, "dev", "lo"])?;
            topology
                .node
                .ip(&["route", "add", &range, "via", &format!("{link_net}.2")])?;
            topology
                .greeters
                .push(Greeter::start(ns.name(), BACKEND_PORT)?);
            topology.backends.push(ns);
        }
        Ok(topology)
    }

    /// Every namespace's name.
    pub fn namespaces(&self) -> Vec<String> {
        let mut all = vec![self.client.name().to_string(), self.node.name().to_string()];
        all.extend(self.backends.iter().map(|b| b.name().to_string()));
        all
    }
}

/// A veth pair between two namespaces, addressed and up.
fn link(a: (&NetNs, &str, &str), b: (&NetNs, &str, &str)) -> Result<()> {
    netns::run(Command::new("ip").args([
        "link",
        "add",
        a.1,
        "netns",
        a.0.name(),
        "type",
        "veth",
        "peer",
        "name",
        b.1,
        "netns",
        b.0.name(),
    ]))?;
    for (ns, dev, addr) in [a, b] {
        ns.ip(&["addr", "add", addr, "dev", dev])?;
        ns.ip(&["link", "set", dev, "up"])?;
    }
    Ok(())
}

/// A TCP server that answers every connection with the local address it was
/// reached at (`10.200.64.7\n`) and closes; stopped on drop.
pub struct Greeter {
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Greeter {
    /// Listens on 0.0.0.0:`port` inside `netns`.
    pub fn start(netns: &str, port: u16) -> Result<Greeter> {
        let listener = netns::run_in(netns, move || TcpListener::bind(("0.0.0.0", port)))?
            .with_context(|| format!("bind 0.0.0.0:{port} in {netns}"))?;
        let serving = listener.try_clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = thread::spawn(move || {
            for conn in serving.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(mut conn) = conn {
                    if let Ok(local) = conn.local_addr() {
                        let _ = conn.write_all(format!("{}\n", local.ip()).as_bytes());
                    }
                }
            }
        });
        Ok(Greeter {
            listener,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Greeter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Shutting a listening socket down wakes a blocked accept() (EINVAL).
        // SAFETY: plain shutdown(2) on a descriptor this struct owns.
        unsafe {
            libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
