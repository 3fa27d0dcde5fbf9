//! Socket LB over IPv6 in the real kernel: the connect6, sendmsg6, recvmsg6
//! and getpeername6 programs attached to a cgroup of this test, the
//! `weir_lb6_*` maps written directly (as the agent's service sync does for
//! IPv4 in datapath_lb), real clients in that cgroup connecting to an IPv6
//! service address that exists nowhere but in the maps, real servers
//! answering on IPv6 addresses of a namespace the test made.
//!
//! TCP clients are `weir-lab-client`; the UDP client is forked here (see
//! [`udp_probe`]): it needs an IPv6 socket, and the lab client's UDP socket
//! is IPv4.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use weir_abi::ip_proto::{TCP, UDP};
use weir_abi::lb::*;
use weir_abi::{Reason, TrafficDirection};
use weir_agent::datapath::maps::{self, lb};
use weir_agent::datapath::{Datapath, LoadOptions};
use weir_lab::process;
use weir_tests::cgroup::Cgroup;
use weir_tests::datapath::PinDir;
use weir_tests::netns::NetNs;
use weir_tests::{names, require_root};

/// The service: an address no interface has, inside the machine only.
const VIP: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x10);
const VIP_PORT: u16 = 80;
/// Backends: (address on the namespace's loopback, port).
const BACKENDS: [(Ipv6Addr, u16); 3] = [
    (Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 0x11), 8081),
    (Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 0x12), 8082),
    (Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 0x13), 8083),
];

fn target(protocol: &str) -> String {
    format!("{protocol}:[{VIP}]:{VIP_PORT}")
}

fn vip_text() -> String {
    format!("[{VIP}]:{VIP_PORT}")
}

/// One test's world: a network namespace with three servers on IPv6
/// addresses of its loopback, a cgroup for the client, the datapath with
/// socket LB on that cgroup.
struct World {
    ns: NetNs,
    cgroup: Cgroup,
    datapath: Datapath,
    servers: Vec<u32>,
    _pins: PinDir,
    client: PathBuf,
    /// The servers' log.
    log: PathBuf,
}

impl Drop for World {
    fn drop(&mut self) {
        for pid in &self.servers {
            process::stop(*pid, Duration::from_millis(500));
        }
        let _ = self.datapath.detach_cgroup(self.cgroup.path());
        let _ = std::fs::remove_file(&self.log);
    }
}

fn world() -> World {
    require_root();
    let ns = NetNs::new(&names::unique()).expect("netns");
    ns.ip(&["link", "set", "lo", "up"]).unwrap();
    for (address, _) in BACKENDS {
        ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{address}/128"),
            "dev",
            "lo",
            "nodad",
        ])
        .unwrap();
    }
    let cgroup = Cgroup::create(&names::unique()).expect("cgroup");
    let pins = PinDir::new();
    let mut datapath =
        Datapath::load_with(pins.path(), &LoadOptions::default()).expect("load the datapath");
    datapath
        .attach_cgroup(cgroup.path())
        .expect("attach socket LB to the cgroup");
    let binaries = weir_lab::Binaries::locate().expect("the lab binaries are built");
    let log = std::env::temp_dir().join(format!("{}.log", names::unique()));
    let servers = BACKENDS
        .iter()
        .map(|(address, port)| {
            let args: Vec<String> = [
                "--identity",
                &format!("backend-{port}"),
                "--tcp",
                &port.to_string(),
                "--udp",
                &port.to_string(),
                "--bind",
                &address.to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            process::spawn_detached(ns.name(), &binaries.pod_server, &args, &log).unwrap()
        })
        .collect();
    let world = World {
        ns,
        cgroup,
        datapath,
        servers,
        _pins: pins,
        client: binaries.client,
        log,
    };
    // Wait until every server answers (without socket LB: direct address).
    for (address, port) in BACKENDS {
        let ok = (0..100).any(|_| {
            let out = world.run_client(&format!("tcp:[{address}]:{port}"), 1, false);
            if out[0]["ok"] == true {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
            false
        });
        assert!(ok, "server on [{address}]:{port} never answered");
    }
    world
}

impl World {
    /// Runs the TCP client `count` times, inside the cgroup (socket LB
    /// applies) or outside it.
    fn run_client(&self, target: &str, count: u32, in_cgroup: bool) -> Vec<serde_json::Value> {
        let cgroup = in_cgroup.then(|| self.cgroup.path());
        weir_lab::client::run(&self.client, self.ns.name(), cgroup, target, count)
            .expect("run weir-lab-client")
            .iter()
            .map(|r| serde_json::to_value(r).unwrap())
            .collect()
    }

    /// A ClusterIP service at [VIP]:80 over the given backends (ids 1..),
    /// with `flags` on the service entry.
    fn program_service(&mut self, protocol: u8, active: &[u16], flags: u16) {
        let ebpf = self.datapath.ebpf_mut();
        for (i, (address, port)) in BACKENDS.iter().enumerate() {
            let backend = Lb6Backend {
                address: address.octets(),
                port: port.to_be_bytes(),
                protocol,
                state: if active.contains(port) {
                    Lb4Backend::STATE_ACTIVE
                } else {
                    Lb4Backend::STATE_TERMINATING
                },
                flags: Lb4Backend::FLAG_LOCAL,
                pad: [0; 3],
            };
            lb::set_backend6(ebpf, i as u32 + 1, backend).unwrap();
        }
        let key = |slot: u16| Lb6Key {
            address: VIP.octets(),
            port: VIP_PORT.to_be_bytes(),
            backend_slot: slot,
            protocol,
            scope: LB_SCOPE_INTERNAL,
            pad: [0; 2],
        };
        let ids: Vec<u32> = BACKENDS
            .iter()
            .enumerate()
            .filter(|(_, (_, p))| active.contains(p))
            .map(|(i, _)| i as u32 + 1)
            .collect();
        for (slot, id) in ids.iter().enumerate() {
            let entry = Lb6Service {
                backend_id: *id,
                ..Default::default()
            };
            lb::set_service6(ebpf, key(slot as u16 + 1), entry).unwrap();
        }
        let service = Lb6Service {
            backend_id: 0,
            count: ids.len() as u16,
            rev_nat_id: 1,
            flags: Lb4Service::FLAG_CLUSTER_IP | flags,
            pad: 0,
            affinity_timeout_s: 60,
            maglev_table: 0,
        };
        lb::set_service6(ebpf, key(0), service).unwrap();
        if flags & Lb4Service::FLAG_MAGLEV != 0 {
            // A table that spreads slots over the active backends in turn.
            let size = LoadOptions::default().maglev_table_size;
            let slots: Vec<u32> = (0..size as usize).map(|i| ids[i % ids.len()]).collect();
            lb::set_maglev_table(ebpf, 0, &slots).unwrap();
        }
    }

    /// [`udp_probe`] from inside the namespace and the cgroup.
    fn udp_probe(&self, count: usize) -> Vec<UdpReply> {
        udp_probe(&self.ns, &self.cgroup, count)
    }
}

fn replies(results: &[serde_json::Value]) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for r in results {
        assert_eq!(r["ok"], true, "every attempt connects: {r}");
        *seen
            .entry(r["reply"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    seen
}

/// What one UDP exchange of [`udp_probe`] got: the reply and who it says
/// it came from (recvfrom's address, after recvmsg6).
#[derive(Debug)]
struct UdpReply {
    reply: String,
    from: std::net::SocketAddrV6,
}

/// One record of the probe child, written whole to the pipe.
#[repr(C)]
#[derive(Copy, Clone)]
struct Record {
    /// 0, or the errno of the step that failed.
    errno: i32,
    len: u32,
    from: libc::sockaddr_in6,
    reply: [u8; 64],
}

/// Sends `count` datagrams, each from a fresh unconnected IPv6 UDP socket,
/// to [VIP]:80 and reads each reply, in a child forked into the namespace
/// and the cgroup (sockets belong to the cgroup of the process that makes
/// them; the test process must stay out of it). The child makes only
/// async-signal-safe system calls.
fn udp_probe(ns: &NetNs, cgroup: &Cgroup, count: usize) -> Vec<UdpReply> {
    let netns = std::fs::File::open(weir_tests::netns::path(ns.name())).expect("open netns");
    let procs = std::fs::File::options()
        .write(true)
        .open(cgroup.path().join("cgroup.procs"))
        .expect("open cgroup.procs");
    // SAFETY: all-zero is a valid sockaddr_in6.
    let mut to: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    to.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    to.sin6_port = VIP_PORT.to_be();
    to.sin6_addr.s6_addr = VIP.octets();
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills the two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    let (read_fd, write_fd) = (fds[0], fds[1]);
    // SAFETY: the child runs only async-signal-safe system calls on memory
    // prepared before the fork (no allocation, no locks) and leaves with
    // _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        // SAFETY: see above; every pointer is to this stack frame or to
        // memory prepared before the fork.
        unsafe {
            libc::close(read_fd);
            let fail = |errno: i32| {
                let mut record: Record = std::mem::zeroed();
                record.errno = errno;
                libc::write(
                    write_fd,
                    (&record as *const Record).cast(),
                    size_of::<Record>(),
                );
                libc::_exit(1);
            };
            let errno = || *libc::__errno_location();
            if libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                fail(errno());
            }
            if libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                fail(errno());
            }
            for _ in 0..count {
                let mut record: Record = std::mem::zeroed();
                let socket = libc::socket(libc::AF_INET6, libc::SOCK_DGRAM, 0);
                if socket < 0 {
                    fail(errno());
                }
                let timeout = libc::timeval {
                    tv_sec: 2,
                    tv_usec: 0,
                };
                libc::setsockopt(
                    socket,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&timeout as *const libc::timeval).cast(),
                    size_of::<libc::timeval>() as libc::socklen_t,
                );
                let sent = libc::sendto(
                    socket,
                    b"probe".as_ptr().cast(),
                    5,
                    0,
                    (&to as *const libc::sockaddr_in6).cast(),
                    size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                );
                if sent != 5 {
                    record.errno = errno();
                } else {
                    let mut from_len = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
                    let n = libc::recvfrom(
                        socket,
                        record.reply.as_mut_ptr().cast(),
                        record.reply.len(),
                        0,
                        (&mut record.from as *mut libc::sockaddr_in6).cast(),
                        &mut from_len,
                    );
                    if n < 0 {
                        record.errno = errno();
                    } else {
                        record.len = n as u32;
                    }
                }
                libc::close(socket);
                libc::write(
                    write_fd,
                    (&record as *const Record).cast(),
                    size_of::<Record>(),
                );
            }
            libc::_exit(0);
        }
    }
    // SAFETY: closing the parent's copy of the write end.
    unsafe { libc::close(write_fd) };
    let mut out = Vec::new();
    loop {
        // SAFETY: all-zero is a valid Record.
        let mut record: Record = unsafe { std::mem::zeroed() };
        // SAFETY: read(2) fills at most the record's size.
        let n = unsafe {
            libc::read(
                read_fd,
                (&mut record as *mut Record).cast(),
                size_of::<Record>(),
            )
        };
        if n == 0 {
            break;
        }
        assert_eq!(n as usize, size_of::<Record>(), "a whole record");
        assert_eq!(
            record.errno,
            0,
            "UDP exchange failed: {}",
            std::io::Error::from_raw_os_error(record.errno)
        );
        out.push(UdpReply {
            reply: String::from_utf8_lossy(&record.reply[..record.len as usize])
                .trim()
                .to_string(),
            from: std::net::SocketAddrV6::new(
                Ipv6Addr::from(record.from.sin6_addr.s6_addr),
                u16::from_be(record.from.sin6_port),
                0,
                0,
            ),
        });
    }
    // SAFETY: closing our read end and reaping the child we forked.
    unsafe {
        libc::close(read_fd);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
    }
    out
}

#[test]
fn tcp_connections_to_an_ipv6_service_address_reach_every_backend() {
    let mut w = world();
    w.program_service(TCP, &[8081, 8082, 8083], 0);
    let results = w.run_client(&target("tcp"), 90, true);
    let seen = replies(&results);
    assert_eq!(seen.len(), 3, "all three backends answered: {seen:?}");
    assert!(
        seen.values().all(|n| *n >= 10),
        "random selection starves no backend: {seen:?}"
    );
    // getpeername6 shows the service, not the backend.
    assert!(
        results.iter().all(|r| r["peer"] == vip_text()),
        "{results:?}"
    );
}

#[test]
fn outside_the_cgroup_nothing_is_translated() {
    let mut w = world();
    w.program_service(TCP, &[8081, 8082, 8083], 0);
    let results = w.run_client(&target("tcp"), 1, false);
    assert_eq!(
        results[0]["ok"], false,
        "no route to the VIP: {}",
        results[0]
    );
}

#[test]
fn udp_replies_appear_to_come_from_the_ipv6_service() {
    let mut w = world();
    w.program_service(UDP, &[8081, 8082, 8083], 0);
    let results = w.udp_probe(30);
    assert_eq!(results.len(), 30, "{results:?}");
    let mut seen = BTreeMap::new();
    for r in &results {
        *seen.entry(r.reply.clone()).or_insert(0) += 1;
        assert_eq!(
            r.from,
            std::net::SocketAddrV6::new(VIP, VIP_PORT, 0, 0),
            "recvmsg6 rev-NAT: {r:?}"
        );
    }
    assert!(seen.len() >= 2, "datagrams are balanced: {seen:?}");
}

#[test]
fn an_ipv6_service_without_backends_refuses_at_once_and_reports_it() {
    use weir_abi::endpoint::NetnsOwner;
    use weir_abi::EndpointInfo;
    let mut w = world();
    w.program_service(TCP, &[], 0);
    // The namespace is a pod's: the refusal names it by its IPv6 address.
    let cookie =
        w.ns.run(weir_agent_api::netns_cookie)
            .unwrap()
            .expect("the namespace's cookie");
    let pod_ipv6 = Ipv6Addr::new(0xfd00, 0x10, 0x244, 1, 0, 0, 0, 9);
    let pod = EndpointInfo {
        id: 42,
        identity: 31_000,
        ipv4: [10, 244, 1, 9],
        ipv6: pod_ipv6.octets(),
        ..EndpointInfo::default()
    };
    maps::set_endpoint(w.datapath.ebpf_mut(), 4242, pod).unwrap();
    maps::set_netns_owner(w.datapath.ebpf_mut(), cookie, NetnsOwner::pod(4242)).unwrap();
    maps::drain_events(w.datapath.ebpf_mut()).unwrap();

    let before = w.datapath.metrics().unwrap();
    let started = std::time::Instant::now();
    let results = w.run_client(&target("tcp"), 3, true);
    for r in &results {
        assert_eq!(r["ok"], false);
        let error = r["error"].as_str().unwrap();
        assert!(error.contains("refused"), "ECONNREFUSED: {error}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused at once, not timed out"
    );
    let change = w.datapath.metrics().unwrap().since(&before);
    let refused = change.get(Reason::DropNoService, TrafficDirection::Egress);
    assert_eq!(refused.packets, 3, "three refusals counted");

    let events = maps::drain_events(w.datapath.ebpf_mut()).unwrap();
    assert_eq!(events.len(), 3, "{events:?}");
    let event = events[0];
    assert_eq!(event.subtype, Reason::DropNoService as u8);
    assert_eq!(event.family, weir_abi::ipcache::FAMILY_IPV6);
    assert_eq!(event.daddr, VIP.octets());
    assert_eq!(event.dport, VIP_PORT.to_be_bytes());
    assert_eq!(
        (
            event.src_identity,
            event.endpoint_id,
            event.ifindex,
            event.saddr
        ),
        (31_000, 42, 4242, pod_ipv6.octets())
    );
}

#[test]
fn terminating_ipv6_backends_get_no_new_connections() {
    let mut w = world();
    w.program_service(TCP, &[8081, 8082], 0);
    let seen = replies(&w.run_client(&target("tcp"), 40, true));
    assert!(
        !seen.contains_key("backend-8083"),
        "the terminating backend was picked: {seen:?}"
    );
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[test]
fn session_affinity_keeps_an_ipv6_client_on_one_backend() {
    let mut w = world();
    w.program_service(TCP, &[8081, 8082, 8083], Lb4Service::FLAG_AFFINITY);
    let seen = replies(&w.run_client(&target("tcp"), 30, true));
    assert_eq!(seen.len(), 1, "one backend for one client: {seen:?}");
}

#[test]
fn maglev_ipv6_services_select_through_the_shared_table() {
    let mut w = world();
    w.program_service(TCP, &[8081, 8082, 8083], Lb4Service::FLAG_MAGLEV);
    let seen = replies(&w.run_client(&target("tcp"), 60, true));
    assert_eq!(seen.len(), 3, "sockets hash over the table: {seen:?}");
}

#[test]
fn ipv4_mapped_addresses_are_left_alone() {
    let mut w = world();
    // A frontend whose address is IPv4-mapped can never be used: the hook
    // skips such destinations before the lookup.
    let mapped: Ipv6Addr = "::ffff:10.96.0.10".parse().unwrap();
    let ebpf = w.datapath.ebpf_mut();
    let (address, port) = BACKENDS[0];
    lb::set_backend6(
        ebpf,
        1,
        Lb6Backend {
            address: address.octets(),
            port: port.to_be_bytes(),
            protocol: TCP,
            ..Default::default()
        },
    )
    .unwrap();
    let key = |slot| Lb6Key {
        address: mapped.octets(),
        port: VIP_PORT.to_be_bytes(),
        backend_slot: slot,
        protocol: TCP,
        scope: LB_SCOPE_INTERNAL,
        pad: [0; 2],
    };
    lb::set_service6(
        ebpf,
        key(1),
        Lb6Service {
            backend_id: 1,
            ..Default::default()
        },
    )
    .unwrap();
    lb::set_service6(
        ebpf,
        key(0),
        Lb6Service {
            count: 1,
            rev_nat_id: 1,
            flags: Lb4Service::FLAG_CLUSTER_IP,
            ..Default::default()
        },
    )
    .unwrap();
    let results = w.run_client(&format!("tcp:[{mapped}]:{VIP_PORT}"), 1, true);
    assert_eq!(results[0]["ok"], false, "not translated: {}", results[0]);
}

/// The control plane's half over the same kernel: a dual-stack Service and
/// its IPv6 EndpointSlices compiled by weir-lb and written by the agent's
/// service sync (not by hand), then balanced by the kernel.
#[test]
fn a_compiled_ipv6_service_written_by_the_service_sync_is_balanced() {
    use weir_agent::reconcile::lb_sync::{Desired, LbStatus, LbSync};
    let mut w = world();
    let service = weir_lb::Service::from_document(
        &serde_yaml_ng::from_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop}}\nspec:\n  clusterIPs: [10.96.0.10, \"{VIP}\"]\n  ipFamilies: [IPv4, IPv6]\n  ipFamilyPolicy: RequireDualStack\n  selector: {{app: web}}\n  ports: [{{name: http, port: {VIP_PORT}}}]\n"
        ))
        .unwrap(),
    )
    .expect("a dual-stack Service");
    let slices: Vec<weir_lb::AnyEndpointSlice> = BACKENDS
        .iter()
        .map(|(address, port)| {
            weir_lb::AnyEndpointSlice::from_document(
                &serde_yaml_ng::from_str(&format!(
                    "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-{port}, namespace: shop, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv6\nendpoints: [{{addresses: [\"{address}\"]}}]\nports: [{{name: http, port: {port}}}]\n"
                ))
                .unwrap(),
            )
            .expect("an IPv6 EndpointSlice")
        })
        .collect();
    let node = weir_lb::NodeContext {
        name: "n1".into(),
        addresses: Vec::new(),
        addresses_v6: Vec::new(),
    };
    let ipv6 = weir_lb::Ipv6Options {
        enabled: true,
        service_cidrs: Some(vec!["fd00:96::/108".parse().unwrap()]),
        reserved: Vec::new(),
        ..weir_lb::Ipv6Options::default()
    };
    let mut compiler =
        weir_lb::LbCompiler::new(node, weir_lb::LbOptions::default()).with_ipv6(ipv6);
    let changed = compiler.update_any([&service], &slices);
    assert_eq!(compiler.problems(), vec![], "nothing refused");
    assert_eq!(changed.v6.len(), 1, "one IPv6 frontend");

    let status = std::sync::Arc::new(std::sync::Mutex::new(LbStatus::default()));
    let mut sync = LbSync::new(
        "n1".into(),
        LoadOptions::default().maglev_table_size,
        4,
        status,
    );
    sync.apply_dual(
        w.datapath.ebpf_mut(),
        Desired {
            frontends: compiler.frontends(),
            changed: &changed.v4,
        },
        Desired {
            frontends: compiler.frontends_v6(),
            changed: &changed.v6,
        },
        &[],
    )
    .expect("the sync writes both families");

    let results = w.run_client(&target("tcp"), 60, true);
    let seen = replies(&results);
    assert_eq!(seen.len(), 3, "all three backends answered: {seen:?}");
    assert!(results.iter().all(|r| r["peer"] == vip_text()));
}
