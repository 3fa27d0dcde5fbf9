//! The etcd store against a real etcd: each test starts its own server.
//! What both backends of the shared store must do is one suite,
//! tests/tests/identity_store.rs (weir-tests), run against etcd and the
//! Kubernetes API; here is what only etcd does: leases, the key layout,
//! references held by nodes and collection guarded by them, the lazy store.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use weir_abi::identity;
use weir_identity::testing::EtcdServer;
use weir_identity::{
    EndpointEvent, EndpointRecord, EtcdConfig, EtcdStore, EventStream, LabelSet, NodeEvent,
    NodeRecord, SharedStore, StoreError, StoreEvent,
};

const STEP: Duration = Duration::from_secs(10);

fn etcd() -> EtcdServer {
    EtcdServer::start().expect("etcd must start for these tests")
}

fn config(server: &EtcdServer, node: &str) -> EtcdConfig {
    EtcdConfig::new(vec![server.endpoint()], node)
}

async fn store(server: &EtcdServer, node: &str) -> EtcdStore {
    EtcdStore::connect(config(server, node))
        .await
        .expect("connect")
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

async fn raw_client(server: &EtcdServer) -> etcd_client::Client {
    etcd_client::Client::connect([server.endpoint()], None)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn references_are_counted_per_node_and_guard_collection() {
    let server = etcd();
    let a = store(&server, "node-a").await;
    let b = store(&server, "node-b").await;
    let web = a.allocate_identity(&app("web")).await.unwrap();
    a.allocate_identity(&app("web")).await.unwrap();
    b.allocate_identity(&app("web")).await.unwrap();

    assert!(
        !a.release_identity(web).await.unwrap(),
        "a still has a user"
    );
    assert!(a.release_identity(web).await.unwrap());
    assert!(
        !a.release_identity(web).await.unwrap(),
        "a holds no more refs"
    );
    assert!(
        a.unreferenced_identities().await.unwrap().is_empty(),
        "b holds it"
    );
    assert!(!a.delete_identity_if_unreferenced(web).await.unwrap());

    assert!(b.release_identity(web).await.unwrap());
    assert_eq!(a.unreferenced_identities().await.unwrap(), vec![web]);
    assert!(a.delete_identity_if_unreferenced(web).await.unwrap());
    assert_eq!(a.lookup_identity(web).await.unwrap(), None);
    assert!(a.list_identities().await.unwrap().is_empty());

    // Allocating again after collection works and is referenced.
    let again = b.allocate_identity(&app("web")).await.unwrap();
    assert_eq!(b.lookup_identity(again).await.unwrap(), Some(app("web")));
    assert!(b.unreferenced_identities().await.unwrap().is_empty());
    assert!(matches!(
        a.release_identity(identity::HOST).await,
        Err(StoreError::NotClusterIdentity(1))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_follow_the_documented_layout_under_the_configured_prefix() {
    let server = etcd();
    let mut config = config(&server, "node-a");
    config.prefix = "test/prefix".into();
    let a = EtcdStore::connect(config).await.unwrap();
    let id = a.allocate_identity(&app("web")).await.unwrap();
    a.upsert_endpoint(ip("10.0.0.7"), &endpoint(id, "node-a", "web-0"))
        .await
        .unwrap();
    let mut raw = raw_client(&server).await;
    let resp = raw
        .get("", Some(etcd_client::GetOptions::new().with_all_keys()))
        .await
        .unwrap();
    let keys: Vec<String> = resp
        .kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap().to_owned())
        .collect();
    let canonical = app("web").canonical();
    assert_eq!(
        keys,
        vec![
            "test/prefix/endpoints/v1/10.0.0.7".to_owned(),
            format!("test/prefix/identities/v1/id/{id}"),
            format!("test/prefix/identities/v1/refs/{id}/node-a"),
            format!("test/prefix/identities/v1/value/{canonical}"),
        ]
    );
    let value = resp
        .kvs()
        .iter()
        .find(|kv| kv.key_str().unwrap().contains("/value/"))
        .unwrap();
    assert_eq!(value.value_str().unwrap(), id.to_string());
    let lease = a.lease_id().await;
    let leases: Vec<i64> = resp.kvs().iter().map(|kv| kv.lease()).collect();
    // Endpoint and ref ride on the node's lease; the identity does not.
    assert_eq!(leases, vec![lease, 0, lease, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_nodes_records_vanish_when_its_lease_goes() {
    let server = etcd();
    let a = store(&server, "node-a").await;
    let b = store(&server, "node-b").await;
    let web = b.allocate_identity(&app("web")).await.unwrap();
    b.upsert_endpoint(ip("10.0.2.5"), &endpoint(web, "node-b", "web-0"))
        .await
        .unwrap();
    b.upsert_node(&node("node-b", "192.168.50.3", "10.0.2.0/24"))
        .await
        .unwrap();
    a.upsert_endpoint(ip("10.0.1.5"), &endpoint(web, "node-a", "web-1"))
        .await
        .unwrap();
    let mut endpoints = a.watch_endpoints().await.unwrap();
    let mut nodes = a.watch_nodes().await.unwrap();
    for _ in 0..3 {
        next(&mut endpoints).await;
    }
    next(&mut nodes).await;
    assert_eq!(next(&mut nodes).await, NodeEvent::Synced);

    // The agent dies (stops renewing) and its lease ends; revoking plays
    // the TTL running out, without the wait.
    let lease = b.lease_id().await;
    drop(b);
    raw_client(&server).await.lease_revoke(lease).await.unwrap();

    assert_eq!(
        next(&mut endpoints).await,
        StoreEvent::Delete(ip("10.0.2.5"))
    );
    assert_eq!(next(&mut nodes).await, StoreEvent::Delete("node-b".into()));
    assert_eq!(
        a.list_endpoints().await.unwrap().len(),
        1,
        "node-a's record stays"
    );
    // The identity outlives the node but nobody references it now.
    assert_eq!(a.unreferenced_identities().await.unwrap(), vec![web]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_node_publishes_again_after_losing_its_lease() {
    let server = etcd();
    let a = store(&server, "node-a").await;
    let mut config = config(&server, "node-b");
    config.lease_ttl = Duration::from_secs(3);
    let b = EtcdStore::connect(config).await.unwrap();
    let web = b.allocate_identity(&app("web")).await.unwrap();
    b.upsert_endpoint(ip("10.0.2.5"), &endpoint(web, "node-b", "web-0"))
        .await
        .unwrap();
    let mut watch = a.watch_endpoints().await.unwrap();
    next(&mut watch).await;
    assert_eq!(next(&mut watch).await, EndpointEvent::Synced);

    let lost = b.lease_id().await;
    raw_client(&server).await.lease_revoke(lost).await.unwrap();
    assert_eq!(next(&mut watch).await, StoreEvent::Delete(ip("10.0.2.5")));
    // Renewal runs within a third of the TTL.
    assert_eq!(
        next(&mut watch).await,
        StoreEvent::Upsert(ip("10.0.2.5"), endpoint(web, "node-b", "web-0"))
    );
    assert_ne!(b.lease_id().await, lost);
    assert!(
        a.unreferenced_identities().await.unwrap().is_empty(),
        "ref is back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_expiry_without_revocation_removes_records() {
    let server = etcd();
    let a = store(&server, "node-a").await;
    let mut config = config(&server, "node-b");
    config.lease_ttl = Duration::from_secs(2);
    let b = EtcdStore::connect(config).await.unwrap();
    b.upsert_endpoint(ip("10.0.2.9"), &endpoint(300, "node-b", "p"))
        .await
        .unwrap();
    // Renewals keep it alive past the TTL.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(a.list_endpoints().await.unwrap().len(), 1);
    let mut watch = a.watch_endpoints().await.unwrap();
    next(&mut watch).await;
    next(&mut watch).await;
    drop(b);
    let started = std::time::Instant::now();
    assert_eq!(next(&mut watch).await, StoreEvent::Delete(ip("10.0.2.9")));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unreachable_etcd_is_a_clear_error() {
    // A port nothing listens on: bind, note, let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut config = EtcdConfig::new(vec![endpoint.clone()], "node-a");
    config.connect_timeout = Duration::from_secs(1);
    config.request_timeout = Duration::from_secs(1);
    let started = std::time::Instant::now();
    let err = EtcdStore::connect(config).await.err().expect("must fail");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, StoreError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains(&endpoint), "{err}");
}

#[test]
fn etcd_server_guard_cleans_up_on_drop_and_on_panic() {
    let server = etcd();
    let (pid, dir) = (server.pid(), server.data_dir().to_owned());
    assert!(server
        .name()
        .starts_with(&format!("wt{}x", std::process::id())));
    assert!(dir.exists());
    drop(server);
    assert!(!dir.exists());
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());

    let (tx, rx) = std::sync::mpsc::channel();
    let panicked = std::thread::spawn(move || {
        let server = etcd();
        tx.send((server.pid(), server.data_dir().to_owned()))
            .unwrap();
        panic!("test failure while etcd runs");
    })
    .join();
    assert!(panicked.is_err());
    let (pid, dir) = rx.recv().unwrap();
    assert!(!dir.exists());
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

/// Polls `check` every 20 ms until it holds, for at most `within`; returns
/// how long it took.
async fn until(within: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        if check() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_store_fails_fast_while_etcd_is_frozen_and_resumes_after() {
    use weir_identity::{Connection, LazyEtcdStore, LazyOptions};
    let server = etcd();
    let states = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = states.clone();
    // Connected-ness as it changes (a new error text is a change too).
    let lazy = LazyEtcdStore::start(config(&server, "n1"), LazyOptions::default(), move |c| {
        let mut seen = seen.lock().unwrap();
        if seen.last() != Some(&c.is_connected()) {
            seen.push(c.is_connected());
        }
    })
    .unwrap();
    let mut watch = lazy.watch_identities().await.unwrap();
    until(STEP, || lazy.connection().is_connected())
        .await
        .expect("connects");
    let web = lazy.allocate_identity(&app("web")).await.unwrap();

    server.pause().unwrap();
    // The first call (or the check) finds out within the call timeout
    // plus a check interval; after that calls fail at once.
    let first = lazy.allocate_identity(&app("db")).await;
    assert!(first.is_err(), "{first:?}");
    until(STEP, || {
        matches!(lazy.connection(), Connection::Unreachable { .. })
    })
    .await
    .expect("seen as unreachable");
    let started = std::time::Instant::now();
    let error = lazy.allocate_identity(&app("db")).await.unwrap_err();
    assert!(matches!(error, StoreError::NotAnswering { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_millis(100));
    // Reserved identities need no store.
    assert_eq!(
        lazy.allocate_identity(&LabelSet::reserved(identity::HOST).unwrap())
            .await
            .unwrap(),
        identity::HOST
    );

    server.resume().unwrap();
    let back = until(STEP, || lazy.connection().is_connected())
        .await
        .expect("answers again");
    assert!(back < Duration::from_secs(2), "back after {back:?}");
    let db = lazy.allocate_identity(&app("db")).await.unwrap();
    assert_ne!(db, web);
    // The watch carried on: both identities arrive (web from the initial
    // list or the watch, whichever opened first).
    let mut ids = Vec::new();
    while ids.len() < 2 {
        let event = tokio::time::timeout(STEP, watch.next())
            .await
            .expect("watch event in time")
            .expect("watch open");
        if let Ok(StoreEvent::Upsert(id, _)) = event {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    let mut expected = vec![web, db];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    assert_eq!(*states.lock().unwrap(), vec![false, true, false, true]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_store_starts_without_etcd() {
    use weir_identity::{Connection, LazyEtcdStore, LazyOptions};
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = EtcdConfig::new(vec![format!("http://127.0.0.1:{port}")], "n1");
    let lazy = LazyEtcdStore::start(config, LazyOptions::default(), |_| {}).unwrap();
    let started = std::time::Instant::now();
    let error = lazy.allocate_identity(&app("web")).await.unwrap_err();
    assert!(matches!(error, StoreError::NotAnswering { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_millis(100));
    // Watches wait instead of failing.
    let mut watch = lazy.watch_nodes().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), watch.next())
            .await
            .is_err()
    );
    assert!(matches!(lazy.connection(), Connection::Connecting { .. }));
}

/// PEM files for a TLS etcd: a CA, etcd's certificate for 127.0.0.1, a
/// client certificate, and a second CA; removed on drop.
struct Pki(std::path::PathBuf);

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Pki {
    fn new() -> Pki {
        let dir = std::env::temp_dir().join(format!("weir-etcd-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let openssl = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .current_dir(&dir)
                .args(args)
                .output()
                .expect("openssl runs");
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let subject = format!("/CN={ca}");
            let (key, crt) = (format!("{ca}.key"), format!("{ca}.crt"));
            let mut args = vec!["req", "-x509", "-days", "1", "-subj", &subject];
            args.extend(ec);
            args.extend(["-keyout", &key, "-out", &crt]);
            openssl(&args);
        }
        for (leaf, ext) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            std::fs::write(dir.join(format!("{leaf}.ext")), ext).unwrap();
            let subject = format!("/CN={leaf}");
            let (key, csr, crt, extfile) = (
                format!("{leaf}.key"),
                format!("{leaf}.csr"),
                format!("{leaf}.crt"),
                format!("{leaf}.ext"),
            );
            let mut args = vec!["req", "-subj", &subject];
            args.extend(ec);
            args.extend(["-keyout", &key, "-out", &csr]);
            openssl(&args);
            openssl(&[
                "x509",
                "-req",
                "-days",
                "1",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-extfile",
                &extfile,
            ]);
        }
        Pki(dir)
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

/// etcd with TLS and client certificates (`--client-cert-auth`): only a
/// client that trusts etcd's CA and presents a certificate of that CA gets
/// in; plaintext, a client without a certificate and one trusting another
/// CA are refused as unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_with_client_certificates_admits_only_a_client_with_one() {
    use weir_identity::testing::EtcdServerTls;
    use weir_identity::EtcdTls;
    let pki = Pki::new();
    let server = EtcdServer::start_tls(&EtcdServerTls {
        cert: pki.path("server.crt"),
        key: pki.path("server.key"),
        client_ca: pki.path("ca.crt"),
    })
    .expect("a TLS etcd starts");
    assert!(server.endpoint().starts_with("https://"));
    let try_connect = |endpoint: String, tls: Option<EtcdTls>| async move {
        let mut config = EtcdConfig::new(vec![endpoint], "node-a");
        config.connect_timeout = Duration::from_secs(2);
        config.request_timeout = Duration::from_secs(2);
        config.tls = tls;
        EtcdStore::connect(config).await
    };
    let plaintext = server.endpoint().replacen("https://", "http://", 1);
    let refused = try_connect(plaintext, None).await;
    assert!(refused.is_err(), "plaintext to a TLS etcd");
    let anonymous = EtcdTls::load(&pki.path("ca.crt"), None, None).unwrap();
    let refused = try_connect(server.endpoint(), Some(anonymous)).await;
    assert!(refused.is_err(), "no client certificate");
    let stranger = EtcdTls::load(
        &pki.path("other-ca.crt"),
        Some(&pki.path("client.crt")),
        Some(&pki.path("client.key")),
    )
    .unwrap();
    let refused = try_connect(server.endpoint(), Some(stranger)).await;
    assert!(refused.is_err(), "trusting another CA");
    let client = EtcdTls::load(
        &pki.path("ca.crt"),
        Some(&pki.path("client.crt")),
        Some(&pki.path("client.key")),
    )
    .unwrap();
    let store = try_connect(server.endpoint(), Some(client))
        .await
        .expect("a client with a certificate of the CA");
    let id = store.allocate_identity(&app("tls")).await.unwrap();
    assert_eq!(store.lookup_identity(id).await.unwrap(), Some(app("tls")));
}
