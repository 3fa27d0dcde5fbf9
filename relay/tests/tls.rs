//! TLS on the Observer API's TCP listeners, over real loopback sockets: a
//! node's listener that requires client certificates (mutual TLS) refuses
//! a plaintext client, a client without a certificate and a client that
//! trusts another CA, and serves one with the right CA and certificate; a
//! relay reaches that node over mutual TLS and serves its own clients over
//! TLS. Certificates are made for the test with openssl (a CA, a server
//! certificate for 127.0.0.1, a client certificate, and a second CA).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use weir_observer::proto::observer::{GetNodesRequest, ServerStatusRequest};
use weir_observer::proto::relay::NodeState;
use weir_observer::testutil::flow_on;
use weir_observer::{
    ClientTls, FlowRing, Listener, NodeInfo, ObserverService, Readiness, ServerTls, Target,
};
use weir_relay::RelayMetrics;

const TIMEOUT: Duration = Duration::from_secs(5);

/// A directory of PEM files, removed on drop.
struct Pki(PathBuf);

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA `name`.crt/.key.
fn ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

/// `name`.crt/.key signed by `ca`, with the given extensions.
fn leaf(dir: &Path, ca: &str, name: &str, extensions: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    std::fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "1",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

fn pki(test: &str) -> Pki {
    let dir = std::env::temp_dir().join(format!("weir-tls-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    ca(&dir, "ca");
    ca(&dir, "other-ca");
    leaf(
        &dir,
        "ca",
        "server",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    );
    leaf(&dir, "ca", "client", "extendedKeyUsage=clientAuth\n");
    Pki(dir)
}

impl Pki {
    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn server(&self, client_ca: bool) -> ServerTls {
        ServerTls {
            cert: self.file("server.crt"),
            key: self.file("server.key"),
            client_ca: client_ca.then(|| self.file("ca.crt")),
        }
    }

    fn client(&self, ca: &str, with_certificate: bool) -> ClientTls {
        let (cert, key) = (self.file("client.crt"), self.file("client.key"));
        ClientTls::load(
            &self.file(&format!("{ca}.crt")),
            with_certificate.then_some(cert.as_path()),
            with_certificate.then_some(key.as_path()),
            None,
        )
        .unwrap()
    }
}

/// Serves `service` on a fresh loopback port with `tls`; its address and
/// the means to stop it.
async fn serve<S: weir_observer::proto::observer::observer_server::Observer>(
    service: S,
    tls: &ServerTls,
) -> (std::net::SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(weir_observer::serve_with(
        service,
        Listener::Tls(listener, tls.config().unwrap()),
        Readiness::new(true),
        async {
            let _ = stopped.await;
        },
    ));
    (address, stop)
}

fn node_service(name: &str) -> ObserverService {
    let ring = Arc::new(FlowRing::new(16));
    ring.push(flow_on(name, 1, 1, false));
    ObserverService::new(
        ring,
        NodeInfo {
            name: name.into(),
            version: "weir-test".into(),
            address: String::new(),
        },
    )
}

/// Whether ServerStatus answers through `target`.
async fn answers(target: Target) -> Result<u64, String> {
    let mut client = target
        .connect(TIMEOUT)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let status = tokio::time::timeout(TIMEOUT, client.server_status(ServerStatusRequest {}))
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(status.into_inner().num_flows)
}

#[tokio::test]
async fn mutual_tls_admits_only_clients_with_a_certificate_of_the_ca() {
    let pki = pki("mutual");
    let (node, _stop) = serve(node_service("n1"), &pki.server(true)).await;
    let https = |tls: Option<ClientTls>| {
        Target::parse(&format!("https://{node}"))
            .unwrap()
            .with_tls(tls.as_ref())
    };

    let plaintext = answers(Target::parse(&format!("http://{node}")).unwrap()).await;
    assert!(plaintext.is_err(), "a plaintext client: {plaintext:?}");
    let anonymous = answers(https(Some(pki.client("ca", false)))).await;
    assert!(
        anonymous.is_err(),
        "a client without a certificate: {anonymous:?}"
    );
    let stranger = answers(https(Some(pki.client("other-ca", true)))).await;
    assert!(
        stranger.is_err(),
        "a client trusting another CA: {stranger:?}"
    );
    let no_tls = https(None).connect(TIMEOUT).await;
    assert!(no_tls.is_err(), "https:// without TLS options is refused");
    assert_eq!(answers(https(Some(pki.client("ca", true)))).await, Ok(1));
}

#[tokio::test]
async fn the_relay_reaches_its_peers_and_serves_its_clients_over_tls() {
    let pki = pki("relay");
    let (node, _node_stop) = serve(node_service("n1"), &pki.server(true)).await;
    let peer = Target::parse(&format!("https://{node}"))
        .unwrap()
        .with_tls(Some(&pki.client("ca", true)));
    let relay = weir_relay::relay(vec![peer], TIMEOUT, RelayMetrics::new()).unwrap();
    relay.peers().probe().await;
    let (address, _relay_stop) = serve(relay, &pki.server(false)).await;

    let target = Target::parse(&format!("https://{address}"))
        .unwrap()
        .with_tls(Some(&pki.client("ca", false)));
    let mut client = target.connect(TIMEOUT).await.unwrap();
    let nodes = client
        .get_nodes(GetNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(nodes[0].name, "n1");
    assert_eq!(nodes[0].state, NodeState::NodeConnected as i32, "{nodes:?}");
    assert_eq!(answers(target).await, Ok(1));
}
