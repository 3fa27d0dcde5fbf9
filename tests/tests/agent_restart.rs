//! An agent restart over pinned maps, with the real reconcile loop: a real
//! datapath (pins of its own), a real endpoint on a veth in a namespace of
//! its own, the in-memory shared store (a fresh one per agent life, as an
//! agent's view is rebuilt at start), a manifest directory and a state
//! directory kept across lives.
//!
//! A policy deleted while the agent is down stops allowing after the
//! restart (its entries leave the policy map, the endpoint stays enforced
//! by the policy left); a restart with nothing changed writes nothing.
//! A restart whose pins are of an older ABI version replaces every map
//! without a gap: the programs attached keep the old maps until the new
//! ones hold the desired state and the programs are swapped. CIDR
//! identities keep their numbers. NAT and affinity entries of a service
//! deleted while the agent was down are removed; conntrack entries stay.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use weir_abi::{ip_proto, map_names, EndpointInfo, PolicyEntry, ABI_VERSION};
use weir_agent::datapath::maps::{self, policy::LpmKey};
use weir_agent::datapath::{pins, SharedDatapath};
use weir_agent::reconcile::metrics::ReconcileMetrics;
use weir_agent::reconcile::status::ReconcileStatus;
use weir_agent::reconcile::Reconciler;
use weir_identity::{MemoryStore, SharedStore};
use weir_tests::local_agent::{settle, LocalAgent, NodeFixture, NodePaths, NODE};
use weir_tests::require_root;
use weir_types::NamespacedName;

const POD: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {ns: x}}\n---\n\
apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {pod: a}}\n";

/// A policy allowing TCP `port` into x/a from anywhere.
fn allow_port(port: u16) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {{name: p{port}, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  \
         ingress:\n  - ports: [{{port: {port}, protocol: TCP}}]\n"
    )
}

/// What the policy and endpoints maps hold.
#[derive(Clone, Debug, PartialEq)]
struct Maps {
    policy: BTreeMap<LpmKey, PolicyEntry>,
    endpoints: BTreeMap<u32, EndpointInfo>,
}

impl Maps {
    fn read(datapath: &SharedDatapath) -> Maps {
        let mut datapath = datapath.lock();
        Maps {
            policy: maps::policy_entries(datapath.ebpf_mut())
                .unwrap()
                .into_iter()
                .collect(),
            endpoints: maps::endpoint_entries(datapath.ebpf_mut()).unwrap(),
        }
    }

    /// The TCP ports x/a's policy entries allow (besides the host's
    /// L3 entry, which every enforced endpoint has).
    fn ports(&self) -> Vec<u16> {
        self.policy
            .keys()
            .filter(|key| key.key.protocol == ip_proto::TCP)
            .map(|key| u16::from_be_bytes(key.key.port))
            .collect()
    }

    fn flags(&self) -> Vec<u8> {
        self.endpoints.values().map(|info| info.flags).collect()
    }
}

/// What one agent life saw.
struct Life {
    /// The maps after the first pass, if the view had not synced by then.
    first_unsynced: Option<Maps>,
    /// The maps once the loop has nothing left to write.
    settled: Maps,
    regenerations: u64,
}

/// One agent life: load the datapath over `pins`, restore (or, the first
/// time, create) x/a's endpoint, reconcile until settled.
fn life(paths: NodePaths) -> Life {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let agent = LocalAgent::load(&paths);
        assert!(
            agent.endpoints.restore().is_empty(),
            "restored endpoints re-attach"
        );
        if agent.endpoints.endpoints().is_empty() {
            agent.add_pod(&paths, NamespacedName::new("x", "a"));
        }
        let store: Arc<dyn SharedStore> = Arc::new(MemoryStore::new(NODE));
        let metrics = ReconcileMetrics::new(&prometheus::Registry::new());
        let (reconciler, view) = agent.reconciler(store, &paths).await;
        let mut reconciler = reconciler.with_metrics(metrics.clone());

        // The watches have not run yet: the first pass sees a partial view.
        reconciler.tick().await.unwrap();
        let unsynced = !view.lock().unwrap().synced();
        let first_unsynced = unsynced.then(|| Maps::read(&agent.datapath));
        settle(&mut reconciler, &metrics).await;
        Life {
            first_unsynced,
            settled: Maps::read(&agent.datapath),
            regenerations: metrics.regenerations(),
        }
    })
}

#[test]
fn a_policy_deleted_while_the_agent_was_down_stops_allowing_after_restart() {
    require_root();
    let node = NodeFixture::new();
    node.write("pod.yaml", POD);
    node.write("p80.yaml", &allow_port(80));
    node.write("p443.yaml", &allow_port(443));
    let run = |node: &NodeFixture| node.run(life);

    let first = run(&node);
    assert_eq!(first.settled.ports(), [80, 443]);
    assert_eq!(first.settled.flags(), [EndpointInfo::INGRESS_ENFORCED]);

    // Restarted with nothing changed: nothing written, nothing regenerated.
    let same = run(&node);
    assert_eq!(same.settled, first.settled);
    assert_eq!(same.regenerations, 0, "a restart with nothing changed");

    // p443 is deleted while the agent is down.
    node.remove("p443.yaml");
    let restarted = run(&node);
    // On the current-thread runtime the watch tasks have not run before
    // the first tick, so the first pass always sees a partial view: the
    // check below must run, not be skipped.
    let partial = restarted
        .first_unsynced
        .as_ref()
        .expect("the first pass after the restart saw a partial view");
    assert_eq!(
        partial, &first.settled,
        "nothing adopted is touched on a partial view"
    );
    assert_eq!(restarted.settled.ports(), [80], "443 no longer allowed");
    assert_eq!(
        restarted.settled.flags(),
        [EndpointInfo::INGRESS_ENFORCED],
        "x/a stays enforced by p80"
    );
    assert_eq!(restarted.regenerations, 1, "x/a regenerated once");

    // The last policy is deleted while the agent is down: x/a unenforced,
    // no entry left.
    node.remove("p80.yaml");
    let open = run(&node);
    assert!(open.settled.policy.is_empty(), "{:?}", open.settled.policy);
    assert_eq!(open.settled.flags(), [0]);
    weir_tests::figure!(
        "agent restart: first pass unsynced in {} of 4 lives; entries {} -> {} -> {}",
        [&first, &same, &restarted, &open]
            .iter()
            .filter(|l| l.first_unsynced.is_some())
            .count(),
        first.settled.policy.len(),
        restarted.settled.policy.len(),
        open.settled.policy.len()
    );
}

/// The kernel id of the map pinned as `map` under `pins`.
fn map_id(pins: &Path, map: &str) -> u32 {
    aya::maps::MapData::from_pin(pins.join(map))
        .unwrap()
        .info()
        .unwrap()
        .id()
}

/// The number of entries in the policy map of kernel id `id`, if that map
/// still exists.
fn policy_entries_of(id: u32) -> Option<usize> {
    let map = aya::maps::MapData::from_id(id).ok()?;
    let trie: aya::maps::LpmTrie<_, weir_abi::PolicyKey, PolicyEntry> =
        aya::maps::LpmTrie::try_from(aya::maps::Map::LpmTrie(map)).unwrap();
    Some(trie.keys().count())
}

/// What an agent life over replaced maps saw.
struct ReplacedLife {
    replaced: usize,
    /// Entries of the old policy map once the new maps were loaded, before
    /// the programs were swapped (`None`: released).
    old_before_swap: Option<usize>,
    /// The new maps before the loop ran, and once it converged.
    fresh: Maps,
    filled: Maps,
}

/// An agent life whose pins were replaced at load, as `weir-agent` runs
/// it: nothing is attached until the loop has converged on the new maps
/// (a pass on a synced view, every step ok), then the restored endpoint's
/// programs are swapped and the pins recorded as serving.
fn replaced_life(paths: NodePaths, old_policy: u32) -> ReplacedLife {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let agent = LocalAgent::load(&paths);
        let (replaced, deferred) = {
            let datapath = agent.datapath.lock();
            (
                datapath.replaced_pins().len(),
                datapath.fill_before_attach(),
            )
        };
        assert!(deferred, "replaced maps defer the attach");
        let old_before_swap = policy_entries_of(old_policy);
        let fresh = Maps::read(&agent.datapath);
        let store: Arc<dyn SharedStore> = Arc::new(MemoryStore::new(NODE));
        let metrics = ReconcileMetrics::new(&prometheus::Registry::new());
        let status = Arc::new(Mutex::new(ReconcileStatus::pending(&Reconciler::STEPS)));
        let (reconciler, _view) = agent.reconciler(store, &paths).await;
        let mut reconciler = reconciler
            .with_metrics(metrics.clone())
            .with_status(status.clone());
        settle(&mut reconciler, &metrics).await;
        assert!(
            status.lock().unwrap().converged(),
            "{}",
            status.lock().unwrap().render()
        );
        let filled = Maps::read(&agent.datapath);
        assert!(
            agent.endpoints.restore().is_empty(),
            "restored endpoints re-attach"
        );
        agent.datapath.lock().serving().unwrap();
        ReplacedLife {
            replaced,
            old_before_swap,
            fresh,
            filled,
        }
    })
}

#[test]
fn maps_replaced_at_restart_keep_enforcing_until_the_new_ones_are_filled() {
    require_root();
    let node = NodeFixture::new();
    node.write("pod.yaml", POD);
    node.write("p80.yaml", &allow_port(80));
    let first = node.run(life);
    assert_eq!(first.settled.ports(), [80]);
    assert_eq!(first.settled.flags(), [EndpointInfo::INGRESS_ENFORCED]);

    // The pins are recorded with an older ABI version, as an upgrade that
    // changed a layout finds them.
    let pin_dir = node.pins.path().to_path_buf();
    let link = pin_dir.join(pins::ABI_LINK);
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(format!("v{}", ABI_VERSION - 1), &link).unwrap();
    let old_policy = map_id(&pin_dir, map_names::POLICY);

    let swap = node.run(move |paths| replaced_life(paths, old_policy));
    assert!(swap.replaced > 0);
    assert!(swap.fresh.policy.is_empty() && swap.fresh.endpoints.is_empty());
    // Until the swap, the old map is alive (the attached programs hold it:
    // neither a pin nor this process does) and holds what it held.
    assert_eq!(
        swap.old_before_swap,
        Some(first.settled.policy.len()),
        "the attached programs keep the old policy map until they are replaced"
    );
    // The new maps hold the desired state before anything uses them.
    assert_eq!(swap.filled, first.settled);
    assert_ne!(map_id(&pin_dir, map_names::POLICY), old_policy);
    assert_eq!(
        pins::recorded(&pin_dir).unwrap(),
        pins::Recorded::Serving(ABI_VERSION)
    );
    // Once the programs are swapped nothing holds the old map: the kernel
    // frees it (asynchronously, so poll a bounded while).
    let mut released = false;
    for _ in 0..100 {
        if policy_entries_of(old_policy).is_none() {
            released = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(released, "the old policy map is released after the swap");

    // The next restart reuses the new pins: nothing replaced, nothing written.
    let next = node.run(life);
    assert_eq!(next.settled, first.settled);
    assert_eq!(next.regenerations, 0);
    weir_tests::figure!(
        "pin replacement: {} maps replaced, old policy map kept {} entries until the swap, \
         new maps filled with {} policy entries before attaching",
        swap.replaced,
        first.settled.policy.len(),
        swap.filled.policy.len()
    );
}

/// A policy allowing x/a egress to `cidr`.
fn allow_cidr(name: &str, cidr: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {{name: {name}, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  \
         egress:\n  - to: [{{ipBlock: {{cidr: {cidr}}}}}]\n"
    )
}

/// What the policy map and the ipcache hold once settled, and the
/// regenerations a life counted.
#[derive(Debug)]
struct CidrLife {
    policy: BTreeMap<LpmKey, PolicyEntry>,
    ipcache: BTreeMap<ipnetwork::IpNetwork, weir_abi::IpcacheValue>,
    regenerations: u64,
}

/// One agent life that settles, then (if `later` names a manifest) writes
/// it and settles again.
fn cidr_life(paths: NodePaths, later: Option<(&'static str, String)>) -> CidrLife {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let agent = LocalAgent::load(&paths);
        assert!(agent.endpoints.restore().is_empty());
        if agent.endpoints.endpoints().is_empty() {
            agent.add_pod(&paths, NamespacedName::new("x", "a"));
        }
        let store: Arc<dyn SharedStore> = Arc::new(MemoryStore::new(NODE));
        let metrics = ReconcileMetrics::new(&prometheus::Registry::new());
        let (reconciler, _view) = agent.reconciler(store, &paths).await;
        let mut reconciler = reconciler.with_metrics(metrics.clone());
        settle(&mut reconciler, &metrics).await;
        if let Some((file, yaml)) = later {
            std::fs::write(paths.manifests.join(file), yaml).unwrap();
            settle(&mut reconciler, &metrics).await;
        }
        let mut datapath = agent.datapath.lock();
        CidrLife {
            policy: maps::policy_entries(datapath.ebpf_mut())
                .unwrap()
                .into_iter()
                .collect(),
            ipcache: maps::ipcache_entries(datapath.ebpf_mut()).unwrap(),
            regenerations: metrics.regenerations(),
        }
    })
}

/// The identity the ipcache gives `cidr`.
fn identity_of(life: &CidrLife, cidr: &str) -> u32 {
    life.ipcache[&cidr.parse().unwrap()].identity
}

#[test]
fn cidr_identities_keep_their_numbers_across_a_restart() {
    require_root();
    let node = NodeFixture::new();
    node.write("pod.yaml", POD);
    // 10.2/16 is named first and numbered first; 10.1/16 comes later in the
    // same life. A fresh numbering at start (policies in name order) would
    // swap them.
    node.write("cb.yaml", &allow_cidr("cb", "10.2.0.0/16"));
    let first =
        node.run(|paths| cidr_life(paths, Some(("ca.yaml", allow_cidr("ca", "10.1.0.0/16")))));
    let (a, b) = (
        identity_of(&first, "10.1.0.0/16"),
        identity_of(&first, "10.2.0.0/16"),
    );
    assert!(b < a, "10.2/16 was numbered first: {b} {a}");

    let restarted = node.run(|paths| cidr_life(paths, None));
    assert_eq!(identity_of(&restarted, "10.1.0.0/16"), a);
    assert_eq!(identity_of(&restarted, "10.2.0.0/16"), b);
    assert_eq!(
        restarted.ipcache, first.ipcache,
        "the ipcache is not rewritten"
    );
    assert_eq!(
        restarted.policy, first.policy,
        "the policy map is not rewritten"
    );
    assert_eq!(restarted.regenerations, 0, "nothing regenerated");
    weir_tests::figure!(
        "cidr identities: 10.2/16 = {b:#x}, 10.1/16 = {a:#x} kept across a restart; \
         {} policy entries, {} ipcache entries, 0 rewritten",
        restarted.policy.len(),
        restarted.ipcache.len()
    );
}

/// Service x/`name` at ClusterIP 10.96.0.`last`:80 with session affinity,
/// and its slice with one ready backend 10.244.9.`last`:8080.
fn service(name: &str, last: u8) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: x}}\nspec:\n  \
         clusterIP: 10.96.0.{last}\n  sessionAffinity: ClientIP\n  ports:\n  - {{port: 80, targetPort: 8080}}\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}-1, namespace: x, labels: {{kubernetes.io/service-name: {name}}}}}\n\
         addressType: IPv4\nendpoints:\n- addresses: [10.244.9.{last}]\n  conditions: {{ready: true}}\n\
         ports:\n- {{name: '', protocol: TCP, port: 8080}}\n"
    )
}

/// What the datapath keeps per connection, as a test reads it between
/// agent lives: NAT mappings and affinity entries by the frontend they
/// belong to (the last byte of its ClusterIP), conntrack entries.
#[derive(Debug, PartialEq)]
struct Connections {
    nat: Vec<u8>,
    affinity: Vec<u8>,
    sockets: Vec<u8>,
    conntrack: Vec<weir_abi::CtKey>,
}

fn with_datapath<T>(pins: &Path, f: impl FnOnce(&mut aya::Ebpf) -> T) -> T {
    let mut datapath = weir_agent::datapath::Datapath::load(pins).unwrap();
    f(datapath.ebpf_mut())
}

/// The reverse-NAT id and backend id the agent gave the frontend at
/// 10.96.0.`last`.
fn ids_of(ebpf: &mut aya::Ebpf, last: u8) -> (u16, u32) {
    let services = maps::lb::services(ebpf).unwrap();
    let find = |slot: u16| {
        services
            .iter()
            .find(|(k, _)| k.address == [10, 96, 0, last] && k.backend_slot == slot)
            .map(|(_, v)| *v)
            .unwrap()
    };
    (find(0).rev_nat_id, find(1).backend_id)
}

/// Records what the datapath would for a client connection to the
/// frontend at 10.96.0.`last`: forward and reply NAT mappings and the
/// client's affinity entry, plus a conntrack entry of the connection.
fn connect(ebpf: &mut aya::Ebpf, last: u8) {
    use weir_abi::lb::{
        Lb4AffinityKey, Lb4AffinityValue, Lb4NatEntry, Lb4NatKey, Lb4SockKey, Lb4SockRevNat,
    };
    let (rev_nat_id, backend_id) = ids_of(ebpf, last);
    let client = [192, 0, 2, 7];
    let sport = 40_000u16 + u16::from(last);
    let (frontend, backend) = ([10, 96, 0, last], [10, 244, 9, last]);
    let forward = Lb4NatKey {
        saddr: client,
        daddr: frontend,
        sport: sport.to_be_bytes(),
        dport: 80u16.to_be_bytes(),
        protocol: ip_proto::TCP,
        direction: Lb4NatKey::FORWARD,
        pad: [0; 2],
    };
    let reply = Lb4NatKey {
        saddr: backend,
        daddr: client,
        sport: 8080u16.to_be_bytes(),
        dport: forward.sport,
        direction: Lb4NatKey::REPLY,
        ..forward
    };
    let to_backend = Lb4NatEntry {
        saddr: client,
        daddr: backend,
        sport: forward.sport,
        dport: 8080u16.to_be_bytes(),
        backend_id,
        rev_nat_id,
        flags: 0,
        pad: 0,
    };
    let from_frontend = Lb4NatEntry {
        saddr: frontend,
        daddr: client,
        sport: forward.dport,
        dport: forward.sport,
        ..to_backend
    };
    let mut nat: aya::maps::HashMap<_, Lb4NatKey, Lb4NatEntry> =
        aya::maps::HashMap::try_from(ebpf.map_mut(map_names::LB4_NAT).unwrap()).unwrap();
    nat.insert(forward, to_backend, 0).unwrap();
    nat.insert(reply, from_frontend, 0).unwrap();
    let mut affinity: aya::maps::HashMap<_, Lb4AffinityKey, Lb4AffinityValue> =
        aya::maps::HashMap::try_from(ebpf.map_mut(map_names::LB4_AFFINITY).unwrap()).unwrap();
    let key = Lb4AffinityKey {
        client: u64::from(u32::from_ne_bytes(client)),
        rev_nat_id,
        kind: Lb4AffinityKey::KIND_ADDRESS,
        pad: [0; 5],
    };
    let value = Lb4AffinityValue {
        backend_id,
        last_used_s: 1,
    };
    affinity.insert(key, value, 0).unwrap();
    let mut sockets: aya::maps::HashMap<_, Lb4SockKey, Lb4SockRevNat> =
        aya::maps::HashMap::try_from(ebpf.map_mut(map_names::LB4_SOCK_REVNAT).unwrap()).unwrap();
    let socket = Lb4SockKey {
        cookie: u64::from(last),
        address: backend,
        port: 8080u16.to_be_bytes(),
        pad: [0; 2],
    };
    let translation = Lb4SockRevNat {
        address: frontend,
        port: 80u16.to_be_bytes(),
        rev_nat_id,
    };
    sockets.insert(socket, translation, 0).unwrap();
    let mut conntrack: aya::maps::HashMap<_, weir_abi::CtKey, weir_abi::CtEntry> =
        aya::maps::HashMap::try_from(ebpf.map_mut(map_names::CONNTRACK).unwrap()).unwrap();
    let mut ct = weir_abi::CtKey::default();
    ct.saddr[..4].copy_from_slice(&client);
    ct.daddr[..4].copy_from_slice(&backend);
    ct.sport = forward.sport;
    ct.dport = 8080u16.to_be_bytes();
    ct.protocol = ip_proto::TCP;
    ct.family = weir_abi::ipcache::FAMILY_IPV4;
    ct.scope = weir_abi::conntrack::CT_SCOPE_INGRESS;
    let entry = weir_abi::CtEntry {
        expires_ns: maps::monotonic_now_ns() + weir_abi::conntrack::CT_TIMEOUT_TCP_ESTABLISHED_NS,
        packets_forward: 10,
        packets_reply: 10,
        tcp_flags: weir_abi::CtEntry::TCP_SYN | weir_abi::CtEntry::TCP_ACK,
        ..Default::default()
    };
    conntrack.insert(ct, entry, 0).unwrap();
}

fn connections(ebpf: &mut aya::Ebpf) -> Connections {
    let frontend_of = |rev_nat_id: u16, ebpf: &mut aya::Ebpf| {
        maps::lb::revnats(ebpf)
            .unwrap()
            .into_iter()
            .find(|(id, _)| *id == rev_nat_id)
            .map_or(0, |(_, revnat)| revnat.address[3])
    };
    let nat: Vec<u16> = maps::lb::nat_entries(ebpf)
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.rev_nat_id)
        .collect();
    let affinity: Vec<u16> = maps::lb::affinity_entries(ebpf)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k.rev_nat_id)
        .collect();
    let mut nat: Vec<u8> = nat.into_iter().map(|id| frontend_of(id, ebpf)).collect();
    let mut affinity: Vec<u8> = affinity
        .into_iter()
        .map(|id| frontend_of(id, ebpf))
        .collect();
    nat.sort_unstable();
    affinity.sort_unstable();
    let mut sockets: Vec<u8> = maps::lb::sock_revnat_entries(ebpf)
        .unwrap()
        .into_iter()
        .map(|(_, v)| v.address[3])
        .collect();
    sockets.sort_unstable();
    let mut conntrack: Vec<weir_abi::CtKey> = maps::conntrack(ebpf)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    conntrack.sort_by_key(|k| k.sport);
    Connections {
        nat,
        affinity,
        sockets,
        conntrack,
    }
}

#[test]
fn nat_affinity_and_sockets_of_a_service_deleted_while_down_are_removed_conntrack_kept() {
    require_root();
    let node = NodeFixture::new();
    node.write("pod.yaml", POD);
    node.write("svc-a.yaml", &service("a", 41));
    node.write("svc-b.yaml", &service("b", 42));
    node.run(life);
    let pins = node.pins.path().to_path_buf();
    let before = with_datapath(&pins, |ebpf| {
        connect(ebpf, 41);
        connect(ebpf, 42);
        connections(ebpf)
    });
    assert_eq!(before.nat, [41, 41, 42, 42]);
    assert_eq!(before.affinity, [41, 42]);
    assert_eq!(before.sockets, [41, 42]);
    assert_eq!(before.conntrack.len(), 2);

    // Service b is deleted while the agent is down.
    node.remove("svc-b.yaml");
    node.run(life);
    let after = with_datapath(&pins, connections);
    assert_eq!(after.nat, [41, 41], "b's NAT mappings are removed");
    assert_eq!(after.affinity, [41], "b's affinity entry is removed");
    assert_eq!(after.sockets, [41], "b's socket translation is removed");
    assert_eq!(
        after.conntrack, before.conntrack,
        "conntrack entries survive the restart"
    );
    weir_tests::figure!(
        "restart sweep: NAT {} -> {}, affinity {} -> {}, socket translations {} -> {}, \
         conntrack {} kept",
        before.nat.len(),
        after.nat.len(),
        before.affinity.len(),
        after.affinity.len(),
        before.sockets.len(),
        after.sockets.len(),
        after.conntrack.len()
    );
}
