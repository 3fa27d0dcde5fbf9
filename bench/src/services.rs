//! `cargo xtask bench services`: Weir against kube-proxy's iptables mode,
//! side by side in one run on the same lab, at several service counts.
//!
//! For each count N (services × 2 backends, one on each node; each peer
//! has its own pair of backend servers, see [`WEIR_BACKENDS`]):
//!
//! * **program all** — kube-proxy: a full sync into node n1's namespace
//!   (`iptables-restore --noflush` of KUBE-SERVICES / KUBE-SVC / KUBE-SEP, as
//!   kube-proxy writes it). Weir: the agent's service sync (compile the
//!   node's LB state and write the LB maps) into a freshly loaded datapath.
//!   Both start from the desired state in memory, as each daemon does after
//!   its watch delivered it. Weir's end-to-end time in the lab (Services
//!   and EndpointSlices written as manifests → the last service in node
//!   n1's map) is shown too.
//! * **add one** — one more service: kube-proxy's partial sync; Weir's sync
//!   given the N+1 services: its incremental compiler compares each service
//!   with what it compiled, compiles the new one, and the map sync writes
//!   only the new frontend.
//! * **connect** — TCP connect() latency, p50 and p99, from a client pod on
//!   n1 to the first and the last service. kube-proxy: iptables DNAT in n1's
//!   namespace; Weir: socket LB (the client runs in the pod's cgroup). The
//!   client and both backend servers are pinned to CPU 0 (a wake-up on the
//!   other CPU costs ~40 µs here).
//!
//! The iptables phase runs first with no service in Weir's maps; its rules
//! are flushed before Weir's services are applied.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use weir_agent::datapath::{Datapath, LoadOptions};
use weir_agent::reconcile::lb_sync::LbSync;

use crate::kubeproxy::{self, BenchService, KubeProxyIptables, Percentiles};
use weir_lab::testing::{namespace_yaml, TestLab};
use weir_tests::datapath::PinDir;

const PORT: u16 = 80;
const CLIENT: &str = "bench/client";

#[derive(Clone, Debug)]
pub struct Options {
    pub counts: Vec<usize>,
    /// Connections per latency measurement.
    pub samples: u32,
    pub iptables: kubeproxy::Backend,
}

/// One row of the result table.
#[derive(Clone, Debug, Default)]
struct Row {
    services: usize,
    iptables_all: Duration,
    iptables_add: Duration,
    weir_all: Duration,
    weir_add: Duration,
    weir_lab_all: Duration,
    iptables_first: Option<Percentiles>,
    iptables_last: Option<Percentiles>,
    weir_first: Option<Percentiles>,
    weir_last: Option<Percentiles>,
}

/// The i-th service address: 10.96.0.0/16 from 10.96.0.1 up.
fn cluster_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 1)) + i as u32)
}

fn bench_services(count: usize, backends: &[(Ipv4Addr, u16)]) -> Vec<BenchService> {
    (0..count)
        .map(|i| BenchService {
            namespace: "bench".into(),
            name: format!("s{i}"),
            cluster_ip: cluster_ip(i),
            port: PORT,
            protocol: weir_types::Protocol::Tcp,
            backends: backends.to_vec(),
        })
        .collect()
}

fn service_yaml(service: &BenchService) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {}, namespace: bench}}\nspec:\n  clusterIP: {}\n  selector: {{app: backend}}\n  ports:\n  - {{name: p{PORT}, port: {PORT}, targetPort: {PORT}}}\n---\n",
        service.name, service.cluster_ip
    )
}

/// Weir's backends (what its Services select) and the peer's: the same
/// placement, but separate servers. A server keeps TIME_WAIT state for 60 s
/// with the client's TCP timestamps, whose offset depends on the address
/// the client connected to (the service address through iptables, the
/// backend address through socket LB). A second peer reusing the first
/// one's servers would have ~5% of its SYNs rejected by PAWS and retried
/// 10 ms later (TcpExtPAWSTimewait): an artifact of sharing, not a cost of
/// either path.
const WEIR_BACKENDS: [&str; 2] = ["bench/b1", "bench/b2"];
const PEER_BACKENDS: [&str; 2] = ["bench/p1", "bench/p2"];

fn lab_yaml() -> String {
    let mut yaml = namespace_yaml("bench");
    for (name, node, app) in [
        ("b1", "n1", "backend"),
        ("b2", "n2", "backend"),
        ("p1", "n1", "peer-backend"),
        ("p2", "n2", "peer-backend"),
        ("client", "n1", "client"),
    ] {
        let ports = if app != "client" {
            format!("    ports:\n    - {{containerPort: {PORT}, protocol: TCP}}\n")
        } else {
            String::new()
        };
        yaml.push_str(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: bench\n  labels: {{app: {app}}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n{ports}---\n"
        ));
    }
    yaml
}

pub fn run(options: &Options) -> Result<()> {
    weir_tests::require_root();
    let mut rows = Vec::new();
    let mut version = String::new();
    for &count in &options.counts {
        println!("== {count} services");
        let (row, v) = measure(count, options)?;
        version = v;
        rows.push(row);
    }
    print_table(&rows, &version, options.samples);
    Ok(())
}

fn measure(count: usize, options: &Options) -> Result<(Row, String)> {
    let mut lab = TestLab::up(2)?;
    lab.apply_yaml(&lab_yaml())?;
    let addresses = |keys: [&str; 2]| -> Result<Vec<(Ipv4Addr, u16)>> {
        keys.iter()
            .map(|key| lab.pod(key).map(|p| (p.ip, PORT)))
            .collect()
    };
    let backends = addresses(WEIR_BACKENDS)?;
    let peer_backends = addresses(PEER_BACKENDS)?;
    for key in WEIR_BACKENDS.iter().chain(&PEER_BACKENDS) {
        pin_to_cpu0(lab.pod(key)?.server_pid)?;
    }
    let services = bench_services(count + 1, &backends);
    let (existing, extra) = services.split_at(count);
    let peer_services = bench_services(count + 1, &peer_backends);
    let (peer_existing, peer_extra) = peer_services.split_at(count);
    let first = existing[0].cluster_ip;
    let last = existing[count - 1].cluster_ip;
    let mut row = Row {
        services: count,
        ..Row::default()
    };

    // kube-proxy, iptables mode, in node n1's namespace.
    let n1 = lab.state().node("n1").context("node n1")?.clone();
    let mut peer = KubeProxyIptables::new(&n1.netns).with_backend(options.iptables);
    let version = peer.version()?;
    row.iptables_all = peer.program_all(peer_existing)?;
    println!(
        "   iptables full sync {:.3} s",
        row.iptables_all.as_secs_f64()
    );
    row.iptables_add = peer.add_one(peer_existing, &peer_extra[0])?;
    println!(
        "   iptables add one {:.3} s",
        row.iptables_add.as_secs_f64()
    );
    row.iptables_first = Some(latency(&lab, first, options.samples, PEER_BACKENDS)?);
    row.iptables_last = Some(latency(&lab, last, options.samples, PEER_BACKENDS)?);
    peer.flush()?;

    // Weir: the agent's sync alone, into a datapath of its own.
    let (all, add) = weir_sync(existing, extra, &backends)?;
    row.weir_all = all;
    row.weir_add = add;
    println!(
        "   weir sync {:.3} s, add one {:.6} s",
        all.as_secs_f64(),
        add.as_secs_f64()
    );

    // Weir end to end in the lab: manifests → node n1's map.
    let yaml: String = existing.iter().map(service_yaml).collect();
    let start = Instant::now();
    lab.apply_yaml(&yaml)?;
    wait_for_frontend(&n1.bpffs_dir, last, Duration::from_secs(600))?;
    row.weir_lab_all = start.elapsed();
    println!(
        "   weir lab manifests -> map {:.3} s",
        row.weir_lab_all.as_secs_f64()
    );
    row.weir_first = Some(latency(&lab, first, options.samples, WEIR_BACKENDS)?);
    row.weir_last = Some(latency(&lab, last, options.samples, WEIR_BACKENDS)?);
    Ok((row, version))
}

/// The agent's service sync timed in-process: all services into an empty
/// datapath, then one more.
fn weir_sync(
    existing: &[BenchService],
    extra: &[BenchService],
    backends: &[(Ipv4Addr, u16)],
) -> Result<(Duration, Duration)> {
    let pins = PinDir::new();
    let mut datapath = Datapath::load_with(pins.path(), &LoadOptions::default())?;
    let options = weir_lb::LbOptions::default();
    let node = weir_lb::NodeContext {
        name: "n1".into(),
        addresses: vec![Ipv4Addr::new(10, 77, 0, 11)],
        addresses_v6: Vec::new(),
    };
    let slices_for = |services: &[BenchService]| -> Result<(Vec<weir_lb::Service>, Vec<weir_lb::EndpointSlice>)> {
        let mut parsed = Vec::new();
        for service in services {
            let yaml = service_yaml(service);
            let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml.trim_end_matches("---\n"))?;
            parsed.push(
                weir_lb::Service::from_document(&doc).map_err(|e| anyhow::anyhow!("{e}"))?,
            );
        }
        let pods: Vec<weir_lb::PodInfo> = backends
            .iter()
            .enumerate()
            .map(|(i, (ip, port))| weir_lb::PodInfo {
                namespace: "bench".into(),
                name: format!("b{}", i + 1),
                labels: [("app".to_string(), "backend".to_string())].into(),
                node: format!("n{}", i + 1),
                ip: Some(*ip),
                ipv6: None,
                ready: true,
                terminating: false,
                ports: vec![weir_lb::NamedPort {
                    name: None,
                    port: *port,
                    protocol: weir_types::Protocol::Tcp,
                }],
            })
            .collect();
        let slices = weir_lb::derive_endpoint_slices(&parsed, &pods);
        Ok((parsed, slices))
    };
    let (services, slices) = slices_for(existing)?;
    let mut all_services = existing.to_vec();
    all_services.extend_from_slice(extra);
    let (services_plus, slices_plus) = slices_for(&all_services)?;
    let mut compiler = weir_lb::LbCompiler::new(node, options);
    let mut sync = LbSync::new("n1".into(), 1021, 256, Default::default());
    let mut pass = |services: &[weir_lb::Service], slices: &[weir_lb::EndpointSlice]| {
        let changed = compiler.update(services, slices);
        let problems = compiler.problems();
        sync.apply(
            datapath.ebpf_mut(),
            compiler.frontends(),
            &changed,
            &problems,
        )
    };

    let start = Instant::now();
    pass(&services, &slices)?;
    let all = start.elapsed();

    let start = Instant::now();
    pass(&services_plus, &slices_plus)?;
    let add = start.elapsed();
    drop(datapath);
    Ok((all, add))
}

/// Waits until node's LB map holds the ClusterIP frontend `address`:80.
fn wait_for_frontend(bpffs_dir: &Path, address: Ipv4Addr, timeout: Duration) -> Result<()> {
    use weir_abi::lb::{Lb4Key, Lb4Service, LB_SCOPE_INTERNAL};
    let key = Lb4Key {
        address: address.octets(),
        port: PORT.to_be_bytes(),
        backend_slot: 0,
        protocol: weir_abi::ip_proto::TCP,
        scope: LB_SCOPE_INTERNAL,
        pad: [0; 2],
    };
    let path = bpffs_dir.join(weir_abi::map_names::LB4_SERVICES);
    let data =
        aya::maps::MapData::from_pin(&path).with_context(|| format!("open {}", path.display()))?;
    let map: aya::maps::HashMap<_, Lb4Key, Lb4Service> =
        aya::maps::HashMap::try_from(aya::maps::Map::HashMap(data))?;
    let deadline = Instant::now() + timeout;
    loop {
        if map.get(&key, 0).is_ok_and(|s| s.count > 0) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{address}:{PORT} never appeared in {}", path.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn pin_to_cpu0(pid: u32) -> Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(0)?;
    // Every thread of the server: it accepts on one per port.
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let tid: i32 = task?.file_name().to_string_lossy().parse()?;
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(tid), &set)?;
    }
    Ok(())
}

/// connect() latency from the client pod (its netns and cgroup, pinned to
/// CPU 0) to `address`:80; fails if any connection fails or is answered by
/// a server other than `backends` (all of which must answer).
fn latency(
    lab: &TestLab,
    address: Ipv4Addr,
    samples: u32,
    backends: [&str; 2],
) -> Result<Percentiles> {
    let target = format!("tcp:{address}:{PORT}");
    // Warm up (ARP, conntrack, caches), then measure.
    let _ = run_pinned_client(lab, &target, 10)?;
    let results = run_pinned_client(lab, &target, samples)?;
    let mut durations = Vec::new();
    let mut answered = BTreeSet::new();
    for r in &results {
        if !r.ok {
            bail!("{target}: {}", r.error.clone().unwrap_or_default());
        }
        answered.insert(r.reply.clone().unwrap_or_default());
        durations.push(Duration::from_micros(r.connect_us.unwrap_or(0)));
    }
    let expected: BTreeSet<String> = backends.iter().map(|b| b.to_string()).collect();
    if !answered.is_subset(&expected) || (answered.len() < 2 && samples >= 20) {
        bail!("{target}: answered by {answered:?}, expected {expected:?}");
    }
    Ok(Percentiles::of(&durations))
}

fn run_pinned_client(
    lab: &TestLab,
    target: &str,
    count: u32,
) -> Result<Vec<weir_lab::ClientResult>> {
    let pod = lab.pod(CLIENT)?;
    let client = weir_lab::Binaries::locate()?.client;
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0"]).arg(client);
    cmd.args(["--target", target, "--count", &count.to_string()]);
    weir_tests::netns::command_in(&mut cmd, &pod.netns)?;
    weir_tests::cgroup::enter_on_exec(&pod.cgroup, &mut cmd)?;
    let out = cmd.output().context("run weir-lab-client")?;
    if !out.status.success() {
        bail!("client: {}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).context("client output"))
        .collect()
}

fn secs(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2} s", d.as_secs_f64())
    } else if d >= Duration::from_millis(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.0} µs", d.as_secs_f64() * 1e6)
    }
}

fn ratio(peer: Duration, weir: Duration) -> String {
    if weir.is_zero() {
        return "-".into();
    }
    format!("{:.1}x", peer.as_secs_f64() / weir.as_secs_f64())
}

fn print_table(rows: &[Row], version: &str, samples: u32) {
    println!();
    println!("Services: Weir vs kube-proxy iptables mode ({version}), 2 backends per service, same lab, same run");
    println!(
        "{:>8} | {:>22} | {:>10} | {:>26} | {:>10} | {:>12}",
        "services",
        "program all: weir",
        "iptables",
        "add one: weir / iptables",
        "ratio",
        "weir e2e lab"
    );
    for r in rows {
        println!(
            "{:>8} | {:>22} | {:>10} | {:>26} | {:>10} | {:>12}",
            r.services,
            format!(
                "{} ({} faster)",
                secs(r.weir_all),
                ratio(r.iptables_all, r.weir_all)
            ),
            secs(r.iptables_all),
            format!("{} / {}", secs(r.weir_add), secs(r.iptables_add)),
            ratio(r.iptables_add, r.weir_add),
            secs(r.weir_lab_all),
        );
    }
    println!();
    println!("connect() latency from a pod on n1, {samples} connections each, p50 / p99 (client and servers pinned to CPU 0)");
    println!(
        "{:>8} | {:>24} | {:>24} | {:>24} | {:>24}",
        "services", "first: weir", "first: iptables", "last: weir", "last: iptables"
    );
    let pct = |p: &Option<Percentiles>| match p {
        Some(p) => format!("{} / {}", secs(p.p50), secs(p.p99)),
        None => "-".into(),
    };
    for r in rows {
        println!(
            "{:>8} | {:>24} | {:>24} | {:>24} | {:>24}",
            r.services,
            pct(&r.weir_first),
            pct(&r.iptables_first),
            pct(&r.weir_last),
            pct(&r.iptables_last),
        );
    }
}
