//! Where this node's pod CIDR and address come from (`--ipam`):
//! - `static`: `--pod-cidr` (and `--pod-cidr-v6` on a dual-stack node,
//!   and `--node-ip`), as the lab and the manifest directory mode give them;
//! - `cluster-pool`: `spec.podCIDRs` of this node's `WeirNode`, assigned by
//!   weir-operator from the cluster pool (Cilium's cluster-pool mode);
//! - `kubernetes`: `Node.spec.podCIDRs`, assigned by kube-controller-manager
//!   (`--allocate-node-cidrs`).
//!
//! In the API modes a dual-stack node's IPv6 range is the first IPv6 CIDR
//! of the same list, assigned with the IPv4 one.
//!
//! Without `--node-ip`, the address is the Node's first IPv4 `InternalIP`.
//! The agent cannot give pods addresses before it knows its CIDR, so it
//! waits for the assignment, saying so every few seconds.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
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

/// A node's pod CIDRs: IPv4, and IPv6 on a dual-stack node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodCidrs {
    pub v4: Ipv4Network,
    pub v6: Option<Ipv6Network>,
}

impl PodCidrs {
    /// The IPv4 CIDR and the first IPv6 one of `cidrs`; None without an
    /// IPv4 one.
    fn from_list<'a>(cidrs: impl Iterator<Item = &'a IpNetwork> + Clone) -> Option<PodCidrs> {
        Some(PodCidrs {
            v4: cidrs.clone().find_map(|cidr| match cidr {
                IpNetwork::V4(v4) => Some(*v4),
                IpNetwork::V6(_) => None,
            })?,
            v6: cidrs.clone().find_map(|cidr| match cidr {
                IpNetwork::V6(v6) => Some(*v6),
                IpNetwork::V4(_) => None,
            }),
        })
    }
}

/// How long between "still waiting" lines.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// The node's pod CIDRs, as `mode` finds them; `flags` are `--pod-cidr`
/// and `--pod-cidr-v6` (static mode).
pub async fn pod_cidrs(
    mode: IpamMode,
    flags: (Option<Ipv4Network>, Option<Ipv6Network>),
    client: Option<&Client>,
    node: &str,
) -> Result<PodCidrs, Error> {
    match (mode, client) {
        (IpamMode::Static, _) => Ok(PodCidrs {
            v4: flags.0.ok_or(Error::NoStaticCidr)?,
            v6: flags.1,
        }),
        (_, None) => Err(Error::NoKubernetes(mode)),
        (IpamMode::ClusterPool, Some(client)) => {
            let api: Api<WeirNode> = Api::all(client.clone());
            let what = format!("the pod CIDR of WeirNode {node} (assigned by weir-operator)");
            wait_for(&api, node, &what, |wn: &WeirNode| {
                PodCidrs::from_list(wn.spec.pod_cidrs.iter())
            })
            .await
        }
        (IpamMode::Kubernetes, Some(client)) => {
            let api: Api<Node> = Api::all(client.clone());
            let what = format!("spec.podCIDRs of Node {node}");
            wait_for(&api, node, &what, node_pod_cidr).await
        }
    }
}

/// The Node's first IPv4 InternalIP, and its first IPv6 one if it has one
/// (a dual-stack node).
pub async fn node_ips(client: &Client, node: &str) -> Result<(IpAddr, Option<Ipv6Addr>), Error> {
    let api: Api<Node> = Api::all(client.clone());
    let object = api.get(node).await.map_err(|source| Error::ReadNode {
        node: node.to_string(),
        source,
    })?;
    let ipv4: Ipv4Addr = internal_ip(&object).ok_or_else(|| Error::NoNodeIp(node.to_string()))?;
    Ok((IpAddr::V4(ipv4), internal_ip(&object)))
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

/// `spec.podCIDRs` (or the older single `spec.podCIDR`): the first IPv4
/// and the first IPv6 one.
fn node_pod_cidr(node: &Node) -> Option<PodCidrs> {
    let spec = node.spec.as_ref()?;
    let parsed: Vec<IpNetwork> = spec
        .pod_cidrs
        .iter()
        .flatten()
        .chain(spec.pod_cidr.as_ref())
        .filter_map(|cidr| cidr.parse().ok())
        .collect();
    PodCidrs::from_list(parsed.iter())
}

/// The Node's first `InternalIP` of the family `A`.
fn internal_ip<A: std::str::FromStr>(node: &Node) -> Option<A> {
    node.status
        .as_ref()?
        .addresses
        .iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse::<A>().ok())
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
        let dual = node_pod_cidr(&n).unwrap();
        assert_eq!(dual.v4, "10.244.1.0/24".parse().unwrap());
        assert_eq!(dual.v6, "fd00::/64".parse().ok());
        assert_eq!(internal_ip(&n), Some(Ipv4Addr::new(192, 0, 2, 11)));
        assert_eq!(internal_ip(&n), "fd00::1".parse::<Ipv6Addr>().ok());
        let old = node(
            serde_json::json!({"metadata": {"name": "n2"}, "spec": {"podCIDR": "10.244.2.0/24"}}),
        );
        let old_cidrs = node_pod_cidr(&old).unwrap();
        assert_eq!(old_cidrs.v4, "10.244.2.0/24".parse().unwrap());
        assert_eq!(old_cidrs.v6, None);
        assert_eq!(internal_ip::<Ipv4Addr>(&old), None);
        let unassigned = node(serde_json::json!({"metadata": {"name": "n3"}, "spec": {}}));
        assert_eq!(node_pod_cidr(&unassigned), None);
    }

    #[tokio::test]
    async fn static_mode_needs_the_flag_and_api_modes_need_the_api() {
        let cidr: Ipv4Network = "10.0.0.0/24".parse().expect("cidr");
        let cidr6: Ipv6Network = "fd00:10::/112".parse().expect("cidr");
        assert_eq!(
            pod_cidrs(IpamMode::Static, (Some(cidr), Some(cidr6)), None, "n1")
                .await
                .ok(),
            Some(PodCidrs {
                v4: cidr,
                v6: Some(cidr6)
            })
        );
        assert!(matches!(
            pod_cidrs(IpamMode::Static, (None, Some(cidr6)), None, "n1").await,
            Err(Error::NoStaticCidr)
        ));
        assert!(matches!(
            pod_cidrs(IpamMode::ClusterPool, (None, None), None, "n1").await,
            Err(Error::NoKubernetes(IpamMode::ClusterPool))
        ));
    }
}
