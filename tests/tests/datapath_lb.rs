//! Socket LB in the real kernel: the cgroup programs of the datapath
//! attached to a cgroup of this test, maps written directly (as the agent's
//! service sync does), real clients in that cgroup connecting to a service
//! address that exists nowhere but in the maps, real servers answering.
//!
//! The control plane (Services and EndpointSlices to these maps) is tested
//! in the lab suite (services_lab); this suite pins down the kernel side.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
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

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const VIP_PORT: u16 = 80;
const BACKEND_PORTS: [u16; 3] = [8081, 8082, 8083];

/// One test's world: a network namespace with three servers on loopback,
/// a cgroup for the client, the datapath with socket LB on that cgroup.
struct World {
    ns: NetNs,
    cgroup: Cgroup,
    datapath: Datapath,
    servers: Vec<u32>,
    _pins: PinDir,
    client: PathBuf,
}

impl Drop for World {
    fn drop(&mut self) {
        for pid in &self.servers {
            process::stop(*pid, Duration::from_millis(500));
        }
        let _ = self.datapath.detach_cgroup(self.cgroup.path());
    }
}

fn world() -> World {
    require_root();
    let ns = NetNs::new(&names::unique()).expect("netns");
    ns.ip(&["link", "set", "lo", "up"]).unwrap();
    let cgroup = Cgroup::create(&names::unique()).expect("cgroup");
    let pins = PinDir::new();
    let mut datapath =
        Datapath::load_with(pins.path(), &LoadOptions::default()).expect("load the datapath");
    datapath
        .attach_cgroup(cgroup.path())
        .expect("attach socket LB to the cgroup");
    let binaries = weir_lab::Binaries::locate().expect("the lab binaries are built");
    let log = std::env::temp_dir().join(format!("{}.log", names::unique()));
    let servers = BACKEND_PORTS
        .iter()
        .map(|port| {
            let args: Vec<String> = [
                "--identity",
                &format!("backend-{port}"),
                "--tcp",
                &port.to_string(),
                "--udp",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
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
    };
    // Wait until every server answers (without socket LB: direct address).
    for port in BACKEND_PORTS {
        let ok = (0..100).any(|_| {
            let out = world.run_client(&format!("tcp:127.0.0.1:{port}"), 1, false);
            if out[0]["ok"] == true {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
            false
        });
        assert!(ok, "server on {port} never answered");
    }
    world
}

impl World {
    /// Runs the client `count` times, inside the cgroup (socket LB applies)
    /// or outside it.
    fn run_client(&self, target: &str, count: u32, in_cgroup: bool) -> Vec<serde_json::Value> {
        let cgroup = in_cgroup.then(|| self.cgroup.path());
        weir_lab::client::run(&self.client, self.ns.name(), cgroup, target, count)
            .expect("run weir-lab-client")
            .iter()
            .map(|r| serde_json::to_value(r).unwrap())
            .collect()
    }

    /// A ClusterIP service at VIP:80 over the given backends (ids 1..),
    /// with `flags` on the service entry.
    fn program_service(&mut self, protocol: u8, active: &[u16], flags: u16) {
        let ebpf = self.datapath.ebpf_mut();
        for (i, port) in BACKEND_PORTS.iter().enumerate() {
            let backend = Lb4Backend {
                address: [127, 0, 0, 1],
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
            lb::set_backend(ebpf, i as u32 + 1, backend).unwrap();
        }
        let key = |slot: u16| Lb4Key {
            address: VIP.octets(),
            port: VIP_PORT.to_be_bytes(),
            backend_slot: slot,
            protocol,
            // A ClusterIP: pods and hosts look frontends up in this scope.
            scope: LB_SCOPE_INTERNAL,
            pad: [0; 2],
        };
        let ids: Vec<u32> = BACKEND_PORTS
            .iter()
            .enumerate()
            .filter(|(_, p)| active.contains(p))
            .map(|(i, _)| i as u32 + 1)
            .collect();
        for (slot, id) in ids.iter().enumerate() {
            let entry = Lb4Service {
                backend_id: *id,
                ..Default::default()
            };
            lb::set_service(ebpf, key(slot as u16 + 1), entry).unwrap();
        }
        let service = Lb4Service {
            backend_id: 0,
            count: ids.len() as u16,
            rev_nat_id: 1,
            flags: Lb4Service::FLAG_CLUSTER_IP | flags,
            pad: 0,
            affinity_timeout_s: 60,
            maglev_table: 0,
        };
        lb::set_service(ebpf, key(0), service).unwrap();
        if flags & Lb4Service::FLAG_MAGLEV != 0 {
            // A table that spreads slots over the active backends in turn.
            let size = LoadOptions::default().maglev_table_size;
            let slots: Vec<u32> = (0..size as usize).map(|i| ids[i % ids.len()]).collect();
            lb::set_maglev_table(ebpf, 0, &slots).unwrap();
        }
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

#[test]
fn tcp_connections_to_a_service_address_reach_every_backend() {
    let mut w = world();
    w.program_service(TCP, &BACKEND_PORTS, 0);
    let results = w.run_client(&format!("tcp:{VIP}:{VIP_PORT}"), 90, true);
    let seen = replies(&results);
    assert_eq!(seen.len(), 3, "all three backends answered: {seen:?}");
    assert!(
        seen.values().all(|n| *n >= 10),
        "random selection starves no backend: {seen:?}"
    );
    // getpeername shows the service, not the backend.
    assert!(results
        .iter()
        .all(|r| r["peer"] == format!("{VIP}:{VIP_PORT}")));
}

#[test]
fn outside_the_cgroup_nothing_is_translated() {
    let mut w = world();
    w.program_service(TCP, &BACKEND_PORTS, 0);
    let results = w.run_client(&format!("tcp:{VIP}:{VIP_PORT}"), 1, false);
    assert_eq!(
        results[0]["ok"], false,
        "no route to the VIP: {}",
        results[0]
    );
}

#[test]
fn udp_replies_appear_to_come_from_the_service() {
    let mut w = world();
    w.program_service(UDP, &BACKEND_PORTS, 0);
    let results = w.run_client(&format!("udp:{VIP}:{VIP_PORT}"), 30, true);
    let seen = replies(&results);
    assert!(seen.len() >= 2, "datagrams are balanced: {seen:?}");
    for r in &results {
        assert_eq!(
            r["peer"],
            format!("{VIP}:{VIP_PORT}"),
            "recvmsg rev-NAT: {r}"
        );
    }
}

#[test]
fn a_service_without_backends_refuses_at_once_and_counts_the_drop() {
    let mut w = world();
    w.program_service(TCP, &[], 0);
    let before = w.datapath.metrics().unwrap();
    let results = w.run_client(&format!("tcp:{VIP}:{VIP_PORT}"), 3, true);
    for r in &results {
        assert_eq!(r["ok"], false);
        let error = r["error"].as_str().unwrap();
        assert!(error.contains("refused"), "ECONNREFUSED: {error}");
    }
    let change = w.datapath.metrics().unwrap().since(&before);
    let refused = change.get(Reason::DropNoService, TrafficDirection::Egress);
    assert_eq!(refused.packets, 3, "three refusals counted");
}

#[test]
fn terminating_backends_get_no_new_connections() {
    let mut w = world();
    w.program_service(TCP, &BACKEND_PORTS[..2], 0);
    let seen = replies(&w.run_client(&format!("tcp:{VIP}:{VIP_PORT}"), 40, true));
    assert!(
        !seen.contains_key("backend-8083"),
        "the terminating backend was picked: {seen:?}"
    );
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[test]
fn session_affinity_keeps_a_client_on_one_backend() {
    let mut w = world();
    w.program_service(TCP, &BACKEND_PORTS, Lb4Service::FLAG_AFFINITY);
    let seen = replies(&w.run_client(&format!("tcp:{VIP}:{VIP_PORT}"), 30, true));
    assert_eq!(seen.len(), 1, "one backend for one client: {seen:?}");
}

#[test]
fn maglev_services_select_through_their_table() {
    let mut w = world();
    w.program_service(TCP, &BACKEND_PORTS, Lb4Service::FLAG_MAGLEV);
    let seen = replies(&w.run_client(&format!("tcp:{VIP}:{VIP_PORT}"), 60, true));
    assert_eq!(seen.len(), 3, "sockets hash over the table: {seen:?}");
}

#[test]
fn a_refusal_names_the_pod_or_the_node_whose_namespace_connected() {
    use weir_abi::endpoint::NetnsOwner;
    use weir_abi::EndpointInfo;
    let mut w = world();
    w.program_service(TCP, &[], 0);
    let cookie =
        w.ns.run(weir_agent_api::netns_cookie)
            .unwrap()
            .expect("the namespace's cookie");
    let refused = |w: &mut World| {
        maps::drain_events(w.datapath.ebpf_mut()).unwrap();
        let results = w.run_client(&format!("tcp:{VIP}:{VIP_PORT}"), 1, true);
        assert_eq!(results[0]["ok"], false, "{}", results[0]);
        let events = maps::drain_events(w.datapath.ebpf_mut()).unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
        events[0]
    };

    // A namespace nobody owns: the refusal has no source (as before).
    let event = refused(&mut w);
    assert_eq!(
        (
            event.src_identity,
            event.endpoint_id,
            event.saddr[..4].to_vec()
        ),
        (0, 0, vec![0; 4])
    );

    // A pod's: its address, identity and endpoint, and its interface.
    let pod = EndpointInfo {
        id: 42,
        identity: 31_000,
        ipv4: [10, 244, 1, 9],
        ..EndpointInfo::default()
    };
    maps::set_endpoint(w.datapath.ebpf_mut(), 4242, pod).unwrap();
    maps::set_netns_owner(w.datapath.ebpf_mut(), cookie, NetnsOwner::pod(4242)).unwrap();
    let event = refused(&mut w);
    assert_eq!(event.subtype, Reason::DropNoService as u8);
    assert_eq!(
        (
            event.src_identity,
            event.endpoint_id,
            event.ifindex,
            event.saddr[..4].to_vec()
        ),
        (31_000, 42, 4242, vec![10, 244, 1, 9])
    );

    // The node's own: host, with the node's address.
    maps::set_netns_owner(
        w.datapath.ebpf_mut(),
        cookie,
        NetnsOwner::node([10, 77, 0, 11]),
    )
    .unwrap();
    let event = refused(&mut w);
    assert_eq!(
        (
            event.src_identity,
            event.endpoint_id,
            event.saddr[..4].to_vec()
        ),
        (weir_abi::identity::HOST, 0, vec![10, 77, 0, 11])
    );
}
