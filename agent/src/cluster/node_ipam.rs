//! Where this node's pod CIDR and address come from (`--ipam`):
//! - `static`: `--pod-cidr` (and `--node-ip`), as the lab and the manifest
//!   directory mode give them;
//! - `cluster-pool`: `spec.podCIDRs` of this node's `WeirNode`, assigned by
//!   weir-operator from the cluster pool (Cilium's cluster-pool mode);
//! - `kubernetes`: `Node.spec.podCIDRs`, assigned by kube-controller-manager
//!   (`--allocate-node-cidrs`).
//!
//! Without `--node-ip`, the address is the Node's first IPv4 `InternalIP`.
//! The agent cannot give pods addresses before it knows its CIDR, so it
//! waits for the assignment, saying so every few seconds.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ipnetwork::{IpNetwork, Ipv4Network};
use k8s_openapi::api::core::v1::Node;
use kube::runtime::wait::await_condition;
use kube::{Api, Client};
use tracing::info;
use weir_crds::WeirNode;

/// How the node's pod CIDR is found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum IpamMode {
    /// `--pod-cidr`.
    #[default]
    Static,
    /// The `WeirNode`'s `spec.podCIDRs` (weir-operator's cluster pool).
    ClusterPool,
    /// `Node.spec.podCIDRs` (kube-controller-manager).
    Kubernetes,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--ipam static needs --pod-cidr")]
    NoStaticCidr,
    #[error("--ipam {0:?} reads the Kubernetes API: add --k8s (or --kubeconfig)")]
    NoKubernetes(IpamMode),
    #[error("waiting for {what}: {source}")]
    Wait {
        what: String,
        source: kube::runtime::wait::Error,
    },
    #[error("read Node {node}: {source}")]
    ReadNode { node: String, source: kube::Error },
    #[error("Node {0} has no IPv4 InternalIP address: give --node-ip")]
    NoNodeIp(String),
}

/// How long between "still waiting" lines.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// The node's IPv4 pod CIDR, as `mode` finds it.
pub async fn pod_cidr(
    mode: IpamMode,
    flag: Option<Ipv4Network>,
    client: Option<&Client>,
    node: &str,
) -> Result<Ipv4Network, Error> {
    match (mode, client) {
        (IpamMode::Static, _) => flag.ok_or(Error::NoStaticCidr),
        (_, None) => Err(Error::NoKubernetes(mode)),
        (IpamMode::ClusterPool, Some(client)) => {
            let api: Api<WeirNode> = Api::all(client.clone());
            let what = format!("the pod CIDR of WeirNode {node} (assigned by weir-operator)");
            let found = wait_for(&api, node, &what, |wn: &WeirNode| {
                first_v4(&wn.spec.pod_cidrs)
            })
            .await?;
            Ok(found)
        }
        (IpamMode::Kubernetes, Some(client)) => {
            let api: Api<Node> = Api::all(client.clone());
            let what = format!("spec.podCIDRs of Node {node}");
            wait_for(&api, node, &what, node_pod_cidr).await
        }
    }
}

/// The Node's first IPv4 InternalIP.
pub async fn node_ip(client: &Client, node: &str) -> Result<IpAddr, Error> {
    let api: Api<Node> = Api::all(client.clone());
    let object = api.get(node).await.map_err(|source| Error::ReadNode {
        node: node.to_string(),
        source,
    })?;
    internal_ipv4(&object)
        .map(IpAddr::V4)
        .ok_or_else(|| Error::NoNodeIp(node.to_string()))
}

/// Waits until `extract` finds the value in the object `name`.
async fn wait_for<K, T>(
    api: &Api<K>,
    name: &str,
    what: &str,
    extract: impl Fn(&K) -> Option<T> + Clone + Send + 'static,
) -> Result<T, Error>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    loop {
        let condition = {
            let extract = extract.clone();
            move |object: Option<&K>| object.and_then(&extract).is_some()
        };
        let waited = tokio::time::timeout(
            PROGRESS_EVERY,
            await_condition(api.clone(), name, condition),
        )
        .await;
        match waited {
            Ok(Ok(Some(object))) => {
                if let Some(value) = extract(&object) {
                    return Ok(value);
                }
            }
            Ok(Ok(None)) => {}
            Ok(Err(source)) => {
                return Err(Error::Wait {
                    what: what.to_string(),
                    source,
                })
            }
            Err(_) => info!("still waiting for {what}"),
        }
    }
}

fn first_v4(cidrs: &[IpNetwork]) -> Option<Ipv4Network> {
    cidrs.iter().find_map(|cidr| match cidr {
        IpNetwork::V4(v4) => Some(*v4),
        IpNetwork::V6(_) => None,
    })
}

/// `spec.podCIDRs` (or the older single `spec.podCIDR`), first IPv4.
fn node_pod_cidr(node: &Node) -> Option<Ipv4Network> {
    let spec = node.spec.as_ref()?;
    spec.pod_cidrs
        .iter()
        .flatten()
        .chain(spec.pod_cidr.as_ref())
        .find_map(|cidr| cidr.parse::<Ipv4Network>().ok())
}

fn internal_ipv4(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse::<Ipv4Addr>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(json: serde_json::Value) -> Node {
        serde_json::from_value(json).expect("a Node")
    }

    #[test]
    fn a_nodes_pod_cidr_and_address_are_its_first_ipv4_ones() {
        let n = node(serde_json::json!({
            "metadata": {"name": "n1"},
            "spec": {"podCIDRs": ["fd00::/64", "10.244.1.0/24"]},
            "status": {"addresses": [
                {"type": "Hostname", "address": "n1"},
                {"type": "InternalIP", "address": "fd00::1"},
                {"type": "InternalIP", "address": "192.0.2.11"}
            ]}
        }));
        assert_eq!(node_pod_cidr(&n), "10.244.1.0/24".parse().ok());
        assert_eq!(internal_ipv4(&n), Some(Ipv4Addr::new(192, 0, 2, 11)));
        let old = node(
            serde_json::json!({"metadata": {"name": "n2"}, "spec": {"podCIDR": "10.244.2.0/24"}}),
        );
        assert_eq!(node_pod_cidr(&old), "10.244.2.0/24".parse().ok());
        assert_eq!(internal_ipv4(&old), None);
        let unassigned = node(serde_json::json!({"metadata": {"name": "n3"}, "spec": {}}));
        assert_eq!(node_pod_cidr(&unassigned), None);
    }

    #[tokio::test]
    async fn static_mode_needs_the_flag_and_api_modes_need_the_api() {
        let cidr: Ipv4Network = "10.0.0.0/24".parse().expect("cidr");
        assert_eq!(
            pod_cidr(IpamMode::Static, Some(cidr), None, "n1")
                .await
                .ok(),
            Some(cidr)
        );
        assert!(matches!(
            pod_cidr(IpamMode::Static, None, None, "n1").await,
            Err(Error::NoStaticCidr)
        ));
        assert!(matches!(
            pod_cidr(IpamMode::ClusterPool, None, None, "n1").await,
            Err(Error::NoKubernetes(IpamMode::ClusterPool))
        ));
    }
}
