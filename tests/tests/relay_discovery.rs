//! weir-relay with `--peer-discovery weir-nodes` against a real
//! kube-apiserver (v1.20.2, sealed in a netns of its own): two node
//! Observer APIs listen at their nodes' InternalIPs (loopback addresses of
//! the netns); the relay finds them from the WeirNodes, serves both nodes'
//! flows, and drops a node whose WeirNode is deleted, while it runs.
//!
//! A missing binary fails the test: it never skips.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::oneshot;
use weir_lab::sealed::SealedControlPlane;
use weir_lab::{process, Binaries, KubeBinaries};
use weir_observer::proto::observer::{GetFlowsRequest, GetNodesRequest};
use weir_observer::testutil::flow_on;
use weir_observer::{FlowRing, Listener, NodeInfo, ObserverService, Target};
use weir_tests::{netns, require_root};

const RELAY: &str = "127.0.0.1:4245";
const PEER_PORT: u16 = 4244;

/// Observer APIs of nodes `(name, address)` with two flows each, served in
/// `netns_name` until the sender is dropped or fired.
fn serve_nodes(netns_name: &str, nodes: &[(&str, &str)]) -> Result<oneshot::Sender<()>> {
    let (stop, stopped) = oneshot::channel::<()>();
    let (ready, is_ready) = std::sync::mpsc::channel::<Result<()>>();
    let nodes: Vec<(String, String)> = nodes
        .iter()
        .map(|(n, a)| (n.to_string(), a.to_string()))
        .collect();
    let netns_name = netns_name.to_string();
    std::thread::spawn(move || {
        let _ = netns::run_in(&netns_name, move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => return drop(ready.send(Err(error.into()))),
            };
            runtime.block_on(async move {
                let mut servers = Vec::new();
                for (name, address) in nodes {
                    let listener =
                        match tokio::net::TcpListener::bind((address.as_str(), PEER_PORT)).await {
                            Ok(listener) => listener,
                            Err(error) => return drop(ready.send(Err(error.into()))),
                        };
                    let ring = Arc::new(FlowRing::new(16));
                    ring.push(flow_on(&name, 1, 1, false));
                    ring.push(flow_on(&name, 2, 2, false));
                    let service = ObserverService::new(
                        ring,
                        NodeInfo {
                            name: name.clone(),
                            version: "weir-test".into(),
                            address: format!("{address}:{PEER_PORT}"),
                        },
                    );
                    servers.push(tokio::spawn(weir_observer::serve_with(
                        service,
                        Listener::Tcp(listener),
                        weir_observer::Readiness::new(true),
                        std::future::pending::<()>(),
                    )));
                }
                let _ = ready.send(Ok(()));
                let _ = stopped.await;
                for server in servers {
                    server.abort();
                }
            });
        });
    });
    is_ready
        .recv_timeout(Duration::from_secs(10))
        .context("node servers did not start")??;
    Ok(stop)
}

/// (nodes the relay lists, flows it serves), asked inside the netns.
fn ask_relay(netns_name: &str) -> Result<(Vec<String>, usize)> {
    netns::run_in(netns_name, || -> Result<(Vec<String>, usize)> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(async {
                let mut client = Target::parse(&format!("http://{RELAY}"))?
                    .connect(Duration::from_secs(2))
                    .await?;
                let mut names: Vec<String> = client
                    .get_nodes(GetNodesRequest {})
                    .await?
                    .into_inner()
                    .nodes
                    .into_iter()
                    .map(|n| n.name)
                    .collect();
                names.sort();
                let mut stream = client
                    .get_flows(GetFlowsRequest {
                        number: 100,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                let mut flows = 0;
                while let Some(response) = stream.message().await? {
                    if matches!(
                        response.response_types,
                        Some(
                            weir_observer::proto::observer::get_flows_response::ResponseTypes::Flow(
                                _
                            )
                        )
                    ) {
                        flows += 1;
                    }
                }
                Ok((names, flows))
            })
    })?
}

fn weir_node(name: &str, address: &str) -> String {
    format!(
        "apiVersion: weir.io/v1\nkind: WeirNode\nmetadata:\n  name: {name}\n\
         spec:\n  addresses:\n  - {{type: InternalIP, ip: '{address}'}}\n---\n"
    )
}

#[test]
fn the_relay_follows_the_weir_nodes_as_they_come_and_go() {
    require_root();
    let kube = KubeBinaries::locate().expect("the control plane's binaries");
    let relay_bin = Binaries::locate()
        .expect("binaries")
        .agent
        .with_file_name("weir-relay");
    assert!(relay_bin.is_file(), "{} not built", relay_bin.display());
    let mut cp = SealedControlPlane::new(&kube.kubectl).unwrap();
    cp.cp.start_apiserver(&kube.apiserver).unwrap();
    cp.cp.wait_ready().unwrap();
    let crds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds");
    cp.kubectl(&["create", "-f", &crds.display().to_string()])
        .unwrap();
    cp.cp.wait_crds_established(&["weirnodes.weir.io"]).unwrap();

    let _nodes = serve_nodes(cp.netns(), &[("n1", "127.0.0.2"), ("n2", "127.0.0.3")]).unwrap();
    let args: Vec<String> = [
        "--peer-discovery",
        "weir-nodes",
        "--kubeconfig",
        &cp.cp.admin_kubeconfig().display().to_string(),
        "--peer-port",
        &PEER_PORT.to_string(),
        "--listen-address",
        RELAY,
        "--peer-check-interval-seconds",
        "1",
    ]
    .map(String::from)
    .to_vec();
    let log = cp.dir().join("relay.log");
    let relay = process::spawn_detached(cp.netns(), &relay_bin, &args, &log).unwrap();
    let result = (|| -> Result<()> {
        cp.kubectl_create(&(weir_node("n1", "127.0.0.2") + &weir_node("n2", "127.0.0.3")))?;
        cp.eventually("the relay serves n1 and n2", |cp| {
            ask_relay(cp.netns()).is_ok_and(|(names, flows)| names == ["n1", "n2"] && flows == 4)
        })?;
        cp.kubectl(&["delete", "weirnode", "n1"])?;
        cp.eventually("the relay serves n2 only", |cp| {
            ask_relay(cp.netns()).is_ok_and(|(names, flows)| names == ["n2"] && flows == 2)
        })?;
        Ok(())
    })();
    process::stop(relay, Duration::from_secs(5));
    if let Err(error) = result {
        panic!(
            "{error:#}\nlast answer: {:?}\nrelay log:\n{}",
            ask_relay(cp.netns()),
            weir_lab::sealed::tail(&std::fs::read_to_string(&log).unwrap_or_default())
        );
    }
}
