//! 500 CNI ADD/DEL cycles on a one-node lab, with faults injected at random
//! points (issue 11, item 6): the agent killed with SIGKILL before, during
//! or after an ADD and during a DEL, and ADDs interrupted as a runtime that
//! times out does (the plugin killed). After every fault the test does what
//! kubelet does: restart what died, and retry DEL until it succeeds.
//! Afterwards nothing may be left: no address, endpoint, host link, host
//! route, `weir_endpoints` or `weir_policy` entry, or link pin.
//!
//! The random points come from a seed printed with the figures; set
//! `WEIR_FAULT_SEED` to replay a run.

use std::path::Path;
use std::process::Child;
use std::thread;
use std::time::{Duration, Instant};

use aya::maps::lpm_trie::LpmTrie;
use aya::maps::{HashMap, Map, MapData};
use weir_abi::{map_names, EndpointInfo, EndpointKey, PolicyEntry, PolicyKey};
use weir_lab::cni::{self, Invocation};
use weir_lab::testing::{namespace_yaml, remove_pod_manifest, write_pod_manifest, TestLab};
use weir_tests::names;
use weir_tests::netns::{self, NetNs};

const CYCLES: u32 = 500;
const NAMESPACE: &str = "cycles";

/// A small deterministic generator (xorshift64*): the seed replays a run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Where a cycle's fault strikes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    None,
    AgentDeadBeforeAdd,
    AgentKilledDuringAdd,
    PluginKilledDuringAdd,
    AgentKilledBetween,
    AgentKilledDuringDel,
}

impl Fault {
    fn pick(rng: &mut Rng) -> Fault {
        match rng.below(100) {
            0..=1 => Fault::AgentDeadBeforeAdd,
            2..=3 => Fault::AgentKilledDuringAdd,
            4..=7 => Fault::PluginKilledDuringAdd,
            8..=9 => Fault::AgentKilledBetween,
            10..=11 => Fault::AgentKilledDuringDel,
            _ => Fault::None,
        }
    }
}

struct Cycles {
    lab: TestLab,
    /// The pod sandbox every cycle reuses (as a runtime reuses nothing,
    /// but the interface is gone after each DEL) and its path.
    _sandbox: NetNs,
    sandbox_path: String,
    config: serde_json::Value,
    plugin: std::path::PathBuf,
    agent_restarts: u32,
    adds_failed: u32,
    del_retries: u32,
    /// Time spent in ADDs and DELs of cycles without a fault.
    add_time: Duration,
    del_time: Duration,
    clean_cycles: u32,
    restart_time: Duration,
}

impl Cycles {
    fn node(&self) -> &weir_lab::state::NodeRecord {
        &self.lab.state().nodes[0]
    }

    fn call<'a>(&'a self, command: &'a str, container: &'a str, pod: &'a str) -> Invocation<'a> {
        Invocation {
            plugin: &self.plugin,
            node_netns: &self.node().netns,
            command,
            container_id: container,
            pod_netns: &self.sandbox_path,
            ifname: "eth0",
            pod_namespace: NAMESPACE,
            pod_name: pod,
            config: &self.config,
        }
    }

    fn spawn(&self, command: &str, container: &str, pod: &str) -> Child {
        cni::spawn(&self.call(command, container, pod)).unwrap()
    }

    fn run(&self, command: &str, container: &str, pod: &str) -> bool {
        cni::invoke(&self.call(command, container, pod))
            .unwrap()
            .success
    }

    fn kill_agent(&mut self) {
        weir_lab::process::kill_now(self.node().agent_pid).expect("SIGKILL the agent");
    }

    fn restart_agent(&mut self) {
        let started = Instant::now();
        self.lab.restart_agent("n1").expect("agent restarts");
        self.restart_time += started.elapsed();
        self.agent_restarts += 1;
    }

    /// DEL until it succeeds, as kubelet retries it.
    fn del_until_done(&mut self, container: &str, pod: &str) {
        for attempt in 0..10 {
            if self.run("DEL", container, pod) {
                return;
            }
            self.del_retries += 1;
            if !weir_lab::process::alive(self.node().agent_pid) {
                self.restart_agent();
            } else if attempt > 0 {
                thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("DEL of {container} never succeeded");
    }

    fn write_manifest(&self, pod: &str) {
        write_pod_manifest(&self.lab, NAMESPACE, pod, ("app", "cycles"), "n1").unwrap();
    }

    fn remove_manifest(&self, pod: &str) {
        remove_pod_manifest(&self.lab, NAMESPACE, pod).unwrap();
    }

    fn cycle(&mut self, rng: &mut Rng, index: u32, fault: Fault) {
        let container = format!("{}-{index}", names::run_prefix());
        let pod = format!("c{index}");
        self.write_manifest(&pod);
        match fault {
            Fault::AgentDeadBeforeAdd => {
                self.kill_agent();
                assert!(
                    !self.run("ADD", &container, &pod),
                    "ADD without an agent succeeded"
                );
                self.adds_failed += 1;
                self.restart_agent();
            }
            Fault::AgentKilledDuringAdd | Fault::PluginKilledDuringAdd => {
                let mut child = self.spawn("ADD", &container, &pod);
                thread::sleep(Duration::from_millis(rng.below(80)));
                if fault == Fault::AgentKilledDuringAdd {
                    self.kill_agent();
                    if !cni::finish(child).unwrap().success {
                        self.adds_failed += 1;
                    }
                    self.restart_agent();
                } else {
                    // The runtime's timeout: the plugin dies wherever it is.
                    if child.try_wait().unwrap().is_none() {
                        self.adds_failed += 1;
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
            Fault::None | Fault::AgentKilledBetween | Fault::AgentKilledDuringDel => {
                let started = Instant::now();
                if !self.run("ADD", &container, &pod) {
                    self.adds_failed += 1;
                }
                if fault == Fault::None {
                    self.add_time += started.elapsed();
                }
            }
        }
        if fault == Fault::AgentKilledBetween {
            self.kill_agent();
            self.restart_agent();
        }
        if fault == Fault::AgentKilledDuringDel {
            let child = self.spawn("DEL", &container, &pod);
            thread::sleep(Duration::from_millis(rng.below(40)));
            self.kill_agent();
            let _ = cni::finish(child);
            self.restart_agent();
        }
        let started = Instant::now();
        self.del_until_done(&container, &pod);
        if fault == Fault::None {
            self.del_time += started.elapsed();
            self.clean_cycles += 1;
        }
        self.remove_manifest(&pod);
    }
}

fn pinned(dir: &Path, name: &str) -> MapData {
    MapData::from_pin(dir.join(name)).unwrap_or_else(|e| panic!("open pinned {name}: {e}"))
}

fn endpoint_entries(dir: &Path) -> usize {
    let map: HashMap<_, EndpointKey, EndpointInfo> =
        HashMap::try_from(Map::HashMap(pinned(dir, map_names::ENDPOINTS))).unwrap();
    map.keys().count()
}

fn policy_entries(dir: &Path) -> usize {
    let map: LpmTrie<_, PolicyKey, PolicyEntry> =
        LpmTrie::try_from(Map::LpmTrie(pinned(dir, map_names::POLICY))).unwrap();
    map.keys().filter(Result::is_ok).count()
}

/// What is left on the node, as (what, count).
fn leftovers(lab: &TestLab) -> Vec<(&'static str, usize)> {
    let node = &lab.state().nodes[0];
    let node_ns = NetNs::existing(&node.netns);
    let links = node_ns.ip(&["-j", "link", "show"]).unwrap();
    let links: serde_json::Value = serde_json::from_str(&links).unwrap();
    let pod_links = links
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["ifname"].as_str().is_some_and(|n| n.starts_with("lxc")))
        .count();
    let routes = node_ns.ip(&["-j", "route", "show"]).unwrap();
    let routes: serde_json::Value = serde_json::from_str(&routes).unwrap();
    let pod_routes = routes
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["dev"].as_str().is_some_and(|d| d.starts_with("lxc")))
        .count();
    let link_pins = std::fs::read_dir(node.bpffs_dir.join("links"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().contains("lxc"))
                .count()
        })
        .unwrap_or(0);
    let (free, total, endpoints) = agent_status(&node.api_socket);
    vec![
        ("addresses", (total - free) as usize),
        ("agent endpoints", endpoints),
        ("host links", pod_links),
        ("host routes", pod_routes),
        ("weir_endpoints entries", endpoint_entries(&node.bpffs_dir)),
        ("weir_policy entries", policy_entries(&node.bpffs_dir)),
        ("link pins", link_pins),
    ]
}

/// (free addresses, total addresses, endpoints) from the agent.
fn agent_status(socket: &Path) -> (u64, u64, usize) {
    let socket = socket.to_path_buf();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let mut client = weir_agent_api::connect(&socket).await.unwrap();
            let status = client
                .status(weir_agent_api::v1::StatusRequest {})
                .await
                .unwrap()
                .into_inner();
            (
                status.addresses_free,
                status.addresses_total,
                status.endpoints as usize,
            )
        })
}

#[test]
fn five_hundred_add_del_cycles_with_the_agent_killed_at_random_points_leak_nothing() {
    let seed = std::env::var("WEIR_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let mut rng = Rng(seed);
    let mut lab = TestLab::up(1).expect("lab up");
    // Every pod of the namespace is selected, so each endpoint has policy
    // entries to leak.
    let yaml = namespace_yaml(NAMESPACE)
        + "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: same-ns, namespace: cycles}\nspec:\n  podSelector: {}\n  ingress:\n  - from: [{podSelector: {}}]\n---\n";
    lab.apply_yaml(&yaml).unwrap();
    let node = lab.state().nodes[0].clone();
    let config = serde_json::from_slice(&std::fs::read(&node.cni_config).unwrap()).unwrap();
    let sandbox = NetNs::new(&names::unique()).unwrap();
    let sandbox_path = netns::path(sandbox.name()).display().to_string();
    let mut cycles = Cycles {
        lab,
        _sandbox: sandbox,
        sandbox_path,
        config,
        plugin: weir_lab::Binaries::locate().unwrap().cni,
        agent_restarts: 0,
        adds_failed: 0,
        del_retries: 0,
        add_time: Duration::ZERO,
        del_time: Duration::ZERO,
        clean_cycles: 0,
        restart_time: Duration::ZERO,
    };

    let started = Instant::now();
    // Per fault: cycles and the time they took.
    let mut faults = std::collections::BTreeMap::new();
    for index in 0..CYCLES {
        let fault = Fault::pick(&mut rng);
        let cycle_started = Instant::now();
        cycles.cycle(&mut rng, index, fault);
        let entry = faults.entry(fault).or_insert((0u32, Duration::ZERO));
        entry.0 += 1;
        entry.1 += cycle_started.elapsed();
    }
    let faults: Vec<String> = faults
        .iter()
        .map(|(fault, (n, took))| format!("{fault:?} {n} ({} ms each)", (*took / *n).as_millis()))
        .collect();
    let took = started.elapsed();

    // Policy entries of the last endpoints go with the next reconcile pass.
    let deadline = Instant::now() + Duration::from_secs(5);
    let left = loop {
        let left = leftovers(&cycles.lab);
        if left.iter().all(|(_, n)| *n == 0) || Instant::now() > deadline {
            break left;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let leaked: Vec<String> = left.iter().map(|(what, n)| format!("{what} {n}")).collect();
    weir_tests::figure!(
        "fault cni cycles: {CYCLES} ADD/DEL cycles in {:.1} s (seed {seed}), faults: {}; \
         agent killed and restarted {} times ({} ms per restart), {} ADDs failed or interrupted, {} DEL retries; \
         ADD {} ms and DEL {} ms on average without a fault; leaked: {}",
        took.as_secs_f64(),
        faults.join(", "),
        cycles.agent_restarts,
        (cycles.restart_time / cycles.agent_restarts.max(1)).as_millis(),
        cycles.adds_failed,
        cycles.del_retries,
        (cycles.add_time / cycles.clean_cycles.max(1)).as_millis(),
        (cycles.del_time / cycles.clean_cycles.max(1)).as_millis(),
        leaked.join(", ")
    );
    assert!(
        left.iter().all(|(_, n)| *n == 0),
        "left behind after {CYCLES} cycles (seed {seed}): {left:?}"
    );
}
