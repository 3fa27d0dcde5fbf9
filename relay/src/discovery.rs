//! Peer discovery: the relay follows the cluster's `WeirNode`s and reads
//! from every node's Observer API at its InternalIP (`--peer-port`, the
//! agents' `--hubble-address` port), as Hubble Relay follows its peer
//! service. Nodes that come are dialled on first use; nodes that go leave
//! the set (requests already running finish on the set they began with).

use std::net::IpAddr;

use futures::StreamExt;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};
use weir_crds::{NodeAddressType, WeirNode};
use weir_observer::{ClientTls, Target};

use crate::Peers;

/// The targets of `nodes` in name order: each node's first InternalIP
/// (IPv4 first), at `port`. Nodes without one (their agent has not
/// published its addresses yet) are left out.
/// `https://` with `tls` when the agents serve TLS.
pub fn targets_of<'a>(
    nodes: impl IntoIterator<Item = &'a WeirNode>,
    port: u16,
    tls: Option<&ClientTls>,
) -> Vec<Target> {
    let mut named: Vec<(String, Target)> = nodes
        .into_iter()
        .filter_map(|node| {
            let internal = || {
                node.spec
                    .addresses
                    .iter()
                    .filter(|a| a.address_type == NodeAddressType::InternalIP)
            };
            let ip = internal()
                .find(|a| a.ip.is_ipv4())
                .or_else(|| internal().next())?
                .ip;
            let host = match ip {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("[{v6}]"),
            };
            let target = match tls {
                Some(tls) => Target::Https(format!("https://{host}:{port}"), Some(tls.clone())),
                None => Target::Http(format!("http://{host}:{port}")),
            };
            Some((node.name_any(), target))
        })
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named.into_iter().map(|(_, target)| target).collect()
}

/// Follows the `WeirNode`s until the process ends (the watch retries with
/// backoff; meanwhile the last set stays).
pub async fn follow_weir_nodes(client: Client, port: u16, tls: Option<ClientTls>, peers: Peers) {
    let api: Api<WeirNode> = Api::all(client);
    let (store, writer) = kube::runtime::reflector::store();
    let stream = kube::runtime::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut listed = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::InitDone) => listed = true,
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
            Ok(_) => {}
            Err(error) => {
                warn!(%error, "WeirNode watch failed; keeping the last peers");
                continue;
            }
        }
        if !listed {
            continue;
        }
        let nodes = store.state();
        let targets = targets_of(nodes.iter().map(|n| n.as_ref()), port, tls.as_ref());
        if targets.iter().eq(peers.list().iter().map(|p| &p.target)) {
            continue;
        }
        info!(peers = targets.len(), "peers from WeirNodes");
        if let Err(error) = peers.set_targets(targets) {
            warn!(%error, "a WeirNode address is not a usable peer");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, addresses: serde_json::Value) -> WeirNode {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "weir.io/v1",
            "kind": "WeirNode",
            "metadata": {"name": name},
            "spec": {"addresses": addresses},
        }))
        .expect("a WeirNode")
    }

    #[test]
    fn every_node_with_an_internal_ip_is_a_peer_in_name_order() {
        let nodes = [
            node(
                "n2",
                serde_json::json!([
                    {"type": "ExternalIP", "ip": "203.0.113.2"},
                    {"type": "InternalIP", "ip": "fd00::2"},
                    {"type": "InternalIP", "ip": "192.0.2.2"}
                ]),
            ),
            node(
                "n1",
                serde_json::json!([{"type": "InternalIP", "ip": "192.0.2.1"}]),
            ),
            node(
                "n3",
                serde_json::json!([{"type": "InternalIP", "ip": "fd00::3"}]),
            ),
            node("pending", serde_json::json!([])),
        ];
        assert_eq!(
            targets_of(&nodes, 4244, None),
            vec![
                Target::Http("http://192.0.2.1:4244".into()),
                Target::Http("http://192.0.2.2:4244".into()),
                Target::Http("http://[fd00::3]:4244".into()),
            ]
        );
    }
}
