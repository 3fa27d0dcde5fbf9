//! One suite, both backends of the shared store (`SharedStore`): etcd
//! (kvstore mode, `EtcdStore` on a throwaway etcd) and the Kubernetes API
//! (CRD mode, `CrdStore` on a real kube-apiserver v1.20.2 with Weir's CRDs
//! from deploy/crds, in a sealed netns). Each backend runs every scenario
//! in turn, its state wiped between them: identity allocation (8 agents
//! racing for one label set get one id; 200 sets in a crowded range get
//! distinct ids; a full range is reported), local reference counts,
//! endpoint and node records through list and watch (including an address
//! reused on another node).
//!
//! CRD mode has scenarios of its own: a watch that lists again after the
//! API server lost its history (410 Gone) reports what went away meanwhile;
//! an endpoint is owned by its Pod; identities are referenced by endpoints.
//! etcd's own (leases, key layout, the lazy store, relisting after a
//! compaction) are in weir-identity's tests.

mod support;

use std::collections::HashSet;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::sync::Barrier;
use weir_abi::identity::{self, CLUSTER_MAX, CLUSTER_MIN};
use weir_identity::testing::EtcdServer;
use weir_identity::{
    CrdConfig, CrdStore, EndpointEvent, EndpointRecord, EtcdConfig, EtcdStore, EventStream,
    LabelSet, NodeEvent, NodeRecord, SharedStore, StoreError, StoreEvent,
};
use weir_tests::require_root;

use support::api_server::{self, ApiServer};

/// Longest wait for one watch event: a watch of the API server reconnects
/// with kube-rs's backoff, which grows to several seconds.
const STEP: Duration = Duration::from_secs(60);

/// A backend: stores for named nodes on one shared state.
#[async_trait]
trait Backend: Send + Sync {
    /// For figures.
    fn name(&self) -> &'static str;

    /// A store for `node`, allocating from `range`.
    async fn store_in(&self, node: &str, range: RangeInclusive<u32>) -> Arc<dyn SharedStore>;

    async fn store(&self, node: &str) -> Arc<dyn SharedStore> {
        self.store_in(node, CLUSTER_MIN..=CLUSTER_MAX).await
    }

    /// Forgets everything stored (between scenarios).
    async fn reset(&self);
}

struct Etcd {
    server: Mutex<EtcdServer>,
}

#[async_trait]
impl Backend for Etcd {
    fn name(&self) -> &'static str {
        "etcd"
    }

    async fn store_in(&self, node: &str, range: RangeInclusive<u32>) -> Arc<dyn SharedStore> {
        let endpoint = self.server.lock().unwrap().endpoint();
        let mut config = EtcdConfig::new(vec![endpoint], node);
        config.identity_range = range;
        Arc::new(EtcdStore::connect(config).await.expect("connect to etcd"))
    }

    async fn reset(&self) {
        *self.server.lock().unwrap() = EtcdServer::start().expect("etcd must start");
    }
}

struct Crd {
    server: Arc<ApiServer>,
    kubeconfig: std::path::PathBuf,
}

#[async_trait]
impl Backend for Crd {
    fn name(&self) -> &'static str {
        "crd"
    }

    async fn store_in(&self, node: &str, range: RangeInclusive<u32>) -> Arc<dyn SharedStore> {
        let client = weir_agent::cluster::kubernetes::client(Some(&self.kubeconfig))
            .await
            .expect("Kubernetes client");
        let mut config = CrdConfig::new(node);
        config.identity_range = range;
        Arc::new(CrdStore::new(client, config).expect("CRD store"))
    }

    async fn reset(&self) {
        let server = self.server.clone();
        tokio::task::spawn_blocking(move || server.delete_weir_state())
            .await
            .unwrap()
            .expect("delete the Weir objects");
    }
}

fn app(name: &str) -> LabelSet {
    LabelSet::new()
        .with("k8s:app", name)
        .with("k8s:io.kubernetes.pod.namespace", "default")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn endpoint(identity: u32, node: &str, pod: &str) -> EndpointRecord {
    EndpointRecord {
        identity,
        node: node.into(),
        node_ip: ip("192.168.50.2"),
        namespace: "default".into(),
        pod: pod.into(),
    }
}

fn node(name: &str, underlay: &str, cidr: &str) -> NodeRecord {
    NodeRecord {
        name: name.into(),
        ip: ip(underlay),
        pod_cidr: cidr.parse().unwrap(),
        pod_cidr_v6: None,
        ipv6: None,
    }
}

async fn next<E: std::fmt::Debug>(watch: &mut EventStream<E>) -> E {
    tokio::time::timeout(STEP, watch.next())
        .await
        .expect("watch event in time")
        .expect("watch still open")
        .expect("watch event, not error")
}

/// The next event that is not an error (a watch reports its retries
/// while its server is away).
async fn next_ok<E: std::fmt::Debug>(watch: &mut EventStream<E>) -> E {
    loop {
        let event = tokio::time::timeout(STEP, watch.next())
            .await
            .expect("watch event in time")
            .expect("watch still open");
        match event {
            Ok(event) => return event,
            Err(error) => eprintln!("watch retrying: {error}"),
        }
    }
}

async fn same_labels_same_id_across_handles(backend: &dyn Backend) {
    let a = backend.store("node-a").await;
    let web = a.allocate_identity(&app("web")).await.unwrap();
    let db = a.allocate_identity(&app("db")).await.unwrap();
    assert!((CLUSTER_MIN..=CLUSTER_MAX).contains(&web), "{web}");
    assert!((CLUSTER_MIN..=CLUSTER_MAX).contains(&db), "{db}");
    assert_ne!(web, db);
    assert_eq!(a.allocate_identity(&app("web")).await.unwrap(), web);
    assert_eq!(a.lookup_identity(web).await.unwrap(), Some(app("web")));
    assert_eq!(a.lookup_identity(db).await.unwrap(), Some(app("db")));
    let listed = a.list_identities().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[&web], app("web"));

    // A single reserved label is its reserved identity; nothing is stored.
    let host = LabelSet::new().with("reserved:host", "");
    assert_eq!(a.allocate_identity(&host).await.unwrap(), identity::HOST);
    assert_eq!(a.lookup_identity(identity::HOST).await.unwrap(), Some(host));
    assert!(matches!(
        a.allocate_identity(&LabelSet::new()).await,
        Err(StoreError::EmptyLabels)
    ));
    assert_eq!(a.list_identities().await.unwrap().len(), 2);
    drop(a);

    // A new handle (an agent restart, another node) sees the same ids.
    let b = backend.store("node-b").await;
    assert_eq!(b.lookup_identity(web).await.unwrap(), Some(app("web")));
    assert_eq!(b.allocate_identity(&app("web")).await.unwrap(), web);
    assert_eq!(b.allocate_identity(&app("db")).await.unwrap(), db);
    assert_eq!(b.lookup_identity(65000).await.unwrap(), None);
}

async fn concurrent_agents_get_the_same_id_for_the_same_labels(backend: &dyn Backend) {
    let mut agents = Vec::new();
    for i in 0..8 {
        agents.push(backend.store(&format!("node-{i}")).await);
    }
    let mut watch = agents[0].watch_identities().await.unwrap();
    assert_eq!(next(&mut watch).await, StoreEvent::Synced);
    let started = std::time::Instant::now();
    for round in 0..10 {
        let labels = app(&format!("race-{round}"));
        let barrier = Arc::new(Barrier::new(agents.len()));
        let tasks: Vec<_> = agents
            .iter()
            .map(|agent| {
                let (agent, labels, barrier) = (agent.clone(), labels.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    agent.allocate_identity(&labels).await.unwrap()
                })
            })
            .collect();
        let mut ids = HashSet::new();
        for task in tasks {
            ids.insert(task.await.unwrap());
        }
        assert_eq!(ids.len(), 1, "round {round}: {ids:?}");
    }
    weir_tests::figure!(
        "identity store ({}): 8 agents racing for one label set, 10 rounds in {:.0} ms",
        backend.name(),
        started.elapsed().as_secs_f64() * 1e3
    );
    // One identity per set is left (a losing duplicate is deleted), and a
    // watcher ends up with exactly those.
    let stored = agents[0].list_identities().await.unwrap();
    assert_eq!(stored.len(), 10, "{stored:?}");
    let mut seen = std::collections::BTreeMap::new();
    while seen != stored {
        match next(&mut watch).await {
            StoreEvent::Upsert(id, labels) => {
                seen.insert(id, labels);
            }
            StoreEvent::Delete(id) => {
                seen.remove(&id);
            }
            StoreEvent::Synced => {}
        }
    }
}

async fn distinct_labels_get_distinct_ids_in_a_crowded_range(backend: &dyn Backend) {
    // 200 label sets into 256 numbers: random draws collide often, which
    // exercises the retry and the listing fallback.
    let mut agents = Vec::new();
    for i in 0..8 {
        agents.push(backend.store_in(&format!("node-{i}"), 256..=511).await);
    }
    let barrier = Arc::new(Barrier::new(agents.len()));
    let tasks: Vec<_> = agents
        .iter()
        .enumerate()
        .map(|(i, agent)| {
            let (agent, barrier) = (agent.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let mut out = Vec::new();
                for j in 0..25 {
                    let labels = app(&format!("app-{i}-{j}"));
                    out.push((agent.allocate_identity(&labels).await.unwrap(), labels));
                }
                out
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let ids: HashSet<u32> = all.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), 200, "two label sets share an id");
    assert!(ids.iter().all(|id| (256..=511).contains(id)));
    let stored = agents[0].list_identities().await.unwrap();
    for (id, labels) in &all {
        assert_eq!(&stored[id], labels);
    }
}

async fn a_full_range_is_reported(backend: &dyn Backend) {
    let a = backend.store_in("node-a", 300..=302).await;
    let mut ids = HashSet::new();
    for name in ["a", "b", "c"] {
        ids.insert(a.allocate_identity(&app(name)).await.unwrap());
    }
    assert_eq!(ids, HashSet::from([300, 301, 302]));
    let err = a.allocate_identity(&app("d")).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Exhausted { min: 300, max: 302 }),
        "{err}"
    );
    // Existing sets still resolve.
    assert!(ids.contains(&a.allocate_identity(&app("b")).await.unwrap()));
}

async fn references_are_counted_per_handle(backend: &dyn Backend) {
    let a = backend.store("node-a").await;
    let b = backend.store("node-b").await;
    let web = a.allocate_identity(&app("web")).await.unwrap();
    a.allocate_identity(&app("web")).await.unwrap();
    assert_eq!(b.allocate_identity(&app("web")).await.unwrap(), web);
    assert!(
        !a.release_identity(web).await.unwrap(),
        "a still has a user"
    );
    assert!(a.release_identity(web).await.unwrap());
    assert!(
        !a.release_identity(web).await.unwrap(),
        "a holds no more refs"
    );
    assert!(b.release_identity(web).await.unwrap());
    assert!(matches!(
        a.release_identity(identity::HOST).await,
        Err(StoreError::NotClusterIdentity(1))
    ));
}

async fn endpoint_watch_lists_then_streams_changes_in_order(backend: &dyn Backend) {
    let a = backend.store("node-a").await;
    let b = backend.store("node-b").await;
    let (ip1, ip2, ip3) = (ip("10.0.1.1"), ip("10.0.1.2"), ip("fd00::3"));
    a.upsert_endpoint(ip1, &endpoint(300, "node-a", "p1"))
        .await
        .unwrap();
    b.upsert_endpoint(ip2, &endpoint(301, "node-b", "p2"))
        .await
        .unwrap();

    let mut watch = b.watch_endpoints().await.unwrap();
    let mut initial = vec![next(&mut watch).await, next(&mut watch).await];
    initial.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        initial,
        vec![
            StoreEvent::Upsert(ip1, endpoint(300, "node-a", "p1")),
            StoreEvent::Upsert(ip2, endpoint(301, "node-b", "p2")),
        ]
    );
    assert_eq!(next(&mut watch).await, EndpointEvent::Synced);

    a.upsert_endpoint(ip3, &endpoint(302, "node-a", "p3"))
        .await
        .unwrap();
    a.upsert_endpoint(ip1, &endpoint(303, "node-a", "p1"))
        .await
        .unwrap();
    assert!(!a.delete_endpoint(ip2).await.unwrap(), "written by node-b");
    assert!(b.delete_endpoint(ip2).await.unwrap());
    assert!(!b.delete_endpoint(ip2).await.unwrap(), "already gone");
    assert_eq!(
        next(&mut watch).await,
        StoreEvent::Upsert(ip3, endpoint(302, "node-a", "p3"))
    );
    assert_eq!(
        next(&mut watch).await,
        StoreEvent::Upsert(ip1, endpoint(303, "node-a", "p1"))
    );
    assert_eq!(next(&mut watch).await, StoreEvent::Delete(ip2));

    let listed = a.list_endpoints().await.unwrap();
    assert_eq!(listed.keys().copied().collect::<Vec<_>>(), vec![ip1, ip3]);
    assert_eq!(listed[&ip1].identity, 303);

    // A pod address reused on another node belongs to that node now: the
    // old node's late delete must not remove it.
    b.upsert_endpoint(ip3, &endpoint(304, "node-b", "p3b"))
        .await
        .unwrap();
    assert!(!a.delete_endpoint(ip3).await.unwrap());
    assert_eq!(a.list_endpoints().await.unwrap()[&ip3].node, "node-b");
    assert_eq!(
        next(&mut watch).await,
        StoreEvent::Upsert(ip3, endpoint(304, "node-b", "p3b"))
    );
}

async fn node_records_upsert_list_watch_delete(backend: &dyn Backend) {
    let a = backend.store("node-a").await;
    let b = backend.store("node-b").await;
    let mut watch = a.watch_nodes().await.unwrap();
    assert_eq!(next(&mut watch).await, NodeEvent::Synced);
    let na = node("node-a", "192.168.50.2", "10.0.1.0/24");
    let nb = node("node-b", "192.168.50.3", "10.0.2.0/24");
    a.upsert_node(&na).await.unwrap();
    b.upsert_node(&nb).await.unwrap();
    assert_eq!(
        next(&mut watch).await,
        StoreEvent::Upsert("node-a".into(), na.clone())
    );
    assert_eq!(
        next(&mut watch).await,
        StoreEvent::Upsert("node-b".into(), nb.clone())
    );
    let listed = b.list_nodes().await.unwrap();
    assert_eq!(
        listed.values().cloned().collect::<Vec<_>>(),
        vec![na.clone(), nb]
    );
    assert!(!a.delete_node("node-b").await.unwrap(), "written by node-b");
    assert!(b.delete_node("node-b").await.unwrap());
    assert_eq!(next(&mut watch).await, StoreEvent::Delete("node-b".into()));
    assert_eq!(a.list_nodes().await.unwrap().len(), 1);
}

/// Runs every shared scenario on `backend`, wiping its state before each.
async fn shared_suite(backend: &dyn Backend) {
    macro_rules! scenarios {
        ($($scenario:ident),* $(,)?) => {$(
            backend.reset().await;
            eprintln!("scenario: {}", stringify!($scenario));
            $scenario(backend).await;
        )*};
    }
    scenarios!(
        same_labels_same_id_across_handles,
        concurrent_agents_get_the_same_id_for_the_same_labels,
        distinct_labels_get_distinct_ids_in_a_crowded_range,
        a_full_range_is_reported,
        references_are_counted_per_handle,
        endpoint_watch_lists_then_streams_changes_in_order,
        node_records_upsert_list_watch_delete,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_etcd_store_passes_the_shared_suite() {
    let backend = Etcd {
        server: Mutex::new(EtcdServer::start().expect("etcd must start")),
    };
    shared_suite(&backend).await;
}

/// After the API server lost the watch's history (restarted after a
/// change made behind its back, as a compaction would), the watch lists
/// again: the endpoint deleted meanwhile is reported deleted, the others
/// upserted, then synced.
async fn a_watch_lists_again_after_410_and_reports_what_went_away(backend: &Crd) {
    let server = &backend.server;
    backend.reset().await;
    let a = backend.store("node-a").await;
    let (ip1, ip2) = (ip("10.0.1.1"), ip("10.0.1.2"));
    a.upsert_endpoint(ip1, &endpoint(300, "node-a", "p1"))
        .await
        .unwrap();
    a.upsert_endpoint(ip2, &endpoint(301, "node-a", "p2"))
        .await
        .unwrap();
    let mut watch = a.watch_endpoints().await.unwrap();
    next(&mut watch).await;
    next(&mut watch).await;
    assert_eq!(next(&mut watch).await, EndpointEvent::Synced);

    // p2 deleted in etcd while no API server runs: the new one's watch
    // cache starts past the watch's last revision and answers 410.
    server.stop_apiserver();
    let mut etcd = etcd_client::Client::connect([api_server::ETCD_URL], None)
        .await
        .unwrap();
    let deleted = etcd
        .delete("/registry/weir.io/weirendpoints/default/p2", None)
        .await
        .unwrap();
    assert_eq!(deleted.deleted(), 1);
    let restart = server.clone();
    tokio::task::spawn_blocking(move || restart.start_apiserver())
        .await
        .unwrap()
        .unwrap();

    let mut events = Vec::new();
    while events.last() != Some(&EndpointEvent::Synced) {
        events.push(next_ok(&mut watch).await);
    }
    assert_eq!(
        events,
        vec![
            StoreEvent::Delete(ip2),
            StoreEvent::Upsert(ip1, endpoint(300, "node-a", "p1")),
            StoreEvent::Synced,
        ]
    );
    // And the watch follows changes after it.
    a.upsert_endpoint(ip2, &endpoint(302, "node-a", "p2"))
        .await
        .unwrap();
    assert_eq!(
        next_ok(&mut watch).await,
        StoreEvent::Upsert(ip2, endpoint(302, "node-a", "p2"))
    );
}

/// An endpoint of an existing pod is owned by it (Kubernetes' garbage
/// collector removes it with the pod); identities are referenced by the
/// endpoints that carry them.
async fn endpoints_are_owned_by_their_pod_and_reference_identities(backend: &Crd) {
    let server = &backend.server;
    backend.reset().await;
    let a = backend.store("node-a").await;
    let web = a.allocate_identity(&app("web")).await.unwrap();
    let db = a.allocate_identity(&app("db")).await.unwrap();
    let mut unreferenced = a.unreferenced_identities().await.unwrap();
    unreferenced.sort_unstable();
    let mut both = vec![web, db];
    both.sort_unstable();
    assert_eq!(unreferenced, both, "no endpoint uses either yet");

    server
        .create(
            // No controller-manager makes the namespace's ServiceAccount,
            // which admission looks up.
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: default, namespace: default}\n\
             ---\napiVersion: v1\nkind: Pod\nmetadata: {name: web-0, namespace: default}\n\
             spec: {nodeName: node-a, automountServiceAccountToken: false,\n\
             containers: [{name: web, image: weir.invalid/web}]}\n",
        )
        .unwrap();
    a.upsert_endpoint(ip("10.0.1.9"), &endpoint(web, "node-a", "web-0"))
        .await
        .unwrap();
    assert_eq!(a.unreferenced_identities().await.unwrap(), vec![db]);
    let pod_uid = server
        .kubectl(&["get", "pod", "web-0", "-o", "jsonpath={.metadata.uid}"])
        .unwrap();
    let owner = server
        .kubectl(&[
            "get",
            "wep",
            "web-0",
            "-o",
            "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].uid}",
        ])
        .unwrap();
    assert_eq!(owner, format!("Pod/{pod_uid}"));
    let shown = server.kubectl(&["get", "wep", "web-0"]).unwrap();
    assert!(
        shown.contains("10.0.1.9") && shown.contains("node-a"),
        "{shown}"
    );
    server
        .kubectl(&["delete", "pod", "web-0", "--grace-period=0", "--force"])
        .unwrap();
}

/// A hung API server (SIGSTOP) makes calls fail as unanswered instead of
/// holding the caller (the reconcile loop) for the client's 295 s read
/// timeout, and the connection check reports it unreachable, then
/// connected again once it answers.
async fn a_hung_api_server_fails_calls_and_is_reported(backend: &Crd) {
    backend.reset().await;
    let client = weir_agent::cluster::kubernetes::client(Some(&backend.kubeconfig))
        .await
        .unwrap();
    let store = CrdStore::new(client, CrdConfig::new("node-a")).unwrap();
    let states = Arc::new(Mutex::new(Vec::new()));
    let seen = states.clone();
    store.spawn_connection_check(Duration::from_millis(200), move |c| {
        let mut seen = seen.lock().unwrap();
        if seen.last() != Some(&c.is_connected()) {
            seen.push(c.is_connected());
        }
        eprintln!("connection: {}", c.describe(std::time::SystemTime::now()));
    });
    let web = store.allocate_identity(&app("web")).await.unwrap();
    let connected = |want: bool| {
        let states = states.clone();
        async move {
            while states.lock().unwrap().last() != Some(&want) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    tokio::time::timeout(STEP, connected(true)).await.unwrap();

    backend.server.freeze_apiserver(true).unwrap();
    let error = tokio::time::timeout(STEP, store.allocate_identity(&app("db")))
        .await
        .expect("the call ends while the API server hangs")
        .unwrap_err();
    assert!(error.is_unanswered(), "{error:?}");
    tokio::time::timeout(STEP, connected(false)).await.unwrap();

    backend.server.freeze_apiserver(false).unwrap();
    tokio::time::timeout(STEP, connected(true)).await.unwrap();
    assert_eq!(store.allocate_identity(&app("web")).await.unwrap(), web);
    assert_eq!(*states.lock().unwrap(), vec![false, true, false, true]);
}

#[test]
fn the_crd_store_passes_the_shared_suite_on_a_real_api_server() {
    require_root();
    let server = Arc::new(ApiServer::start().expect("kube-apiserver with Weir's CRDs"));
    let backend = Crd {
        kubeconfig: server.kubeconfig(),
        server: server.clone(),
    };
    // The clients run in the API server's netns: their sockets are made
    // by runtime threads started from a thread inside it.
    server
        .run_inside(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(4)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                shared_suite(&backend).await;
                endpoints_are_owned_by_their_pod_and_reference_identities(&backend).await;
                a_hung_api_server_fails_calls_and_is_reported(&backend).await;
                a_watch_lists_again_after_410_and_reports_what_went_away(&backend).await;
            });
        })
        .unwrap();
}
