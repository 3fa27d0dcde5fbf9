//! Keeps every Node's pod CIDRs in its `WeirNode` (`spec.podCIDRs`: the
//! IPv4 block, then the IPv6 one on a dual-stack cluster; written with
//! server-side apply under the operator's field manager, so the agent's own
//! fields of the object are untouched), and releases the blocks and the
//! `WeirNode` when the Node goes.
//!
//! The pools are rebuilt from a consistent list of the `WeirNode`s before
//! the watch starts: a new leader never hands out a block an earlier one
//! gave. Only the leader runs this, so one writer assigns at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use futures::StreamExt;
use ipnetwork::{IpNetwork, Ipv6Network};
use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{info, warn};
use weir_crds::WeirNode;

use super::{family_of, ClusterPool, Family, PoolError, Pools};
use crate::events::{Events, Kind};
use crate::metrics::Metrics;
use crate::FIELD_MANAGER;

const CONTROLLER: &str = "ipam";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("list WeirNodes: {0}")]
    List(kube::Error),
    #[error("write WeirNode {node}: {source}")]
    Write { node: String, source: kube::Error },
    #[error("delete WeirNode {node}: {source}")]
    Delete { node: String, source: kube::Error },
    #[error("watch Nodes: {0}")]
    Watch(#[from] watcher::Error),
}

pub struct NodeCidrs {
    nodes: Api<Node>,
    weir_nodes: Api<WeirNode>,
    pools: Pools,
    metrics: Metrics,
    events: Events,
    /// Nodes refused a block (pool exhausted), given one when a block frees.
    waiting: BTreeMap<String, Node>,
}

impl NodeCidrs {
    pub fn new(client: Client, pools: Pools, metrics: Metrics, events: Events) -> Self {
        if pools.v6.is_some() {
            // The IPv6 series exists (at 0) from the start, as IPv4's does.
            metrics
                .ipam_exhausted
                .with_label_values(&[Ipv6Network::NAME]);
        }
        NodeCidrs {
            nodes: Api::all(client.clone()),
            weir_nodes: Api::all(client),
            pools,
            metrics,
            events,
            waiting: BTreeMap::new(),
        }
    }

    /// Restores the pool from the API, then follows the Nodes until the
    /// watch ends (it retries with backoff; it ends only on a fatal error).
    pub async fn run(mut self) -> Result<(), Error> {
        self.restore().await?;
        let stream = watcher(self.nodes.clone(), watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        // Names seen during a (re)list: blocks of nodes not among them are
        // released when the list completes.
        let mut listed: BTreeSet<String> = BTreeSet::new();
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(event) => event,
                Err(error) => {
                    // The watcher retries with backoff; say why meanwhile.
                    warn!(%error, "Node watch failed");
                    self.metrics
                        .reconcile_errors
                        .with_label_values(&[CONTROLLER])
                        .inc();
                    continue;
                }
            };
            let started = Instant::now();
            let result = match event {
                watcher::Event::Init => {
                    listed.clear();
                    Ok(())
                }
                watcher::Event::InitApply(node) => {
                    listed.insert(node.name_any());
                    self.assign(&node).await
                }
                watcher::Event::InitDone => self.release_absent(&listed).await,
                watcher::Event::Apply(node) => self.assign(&node).await,
                watcher::Event::Delete(node) => self.release(&node.name_any()).await,
            };
            self.observe(started, result);
        }
        Ok(())
    }

    async fn restore(&mut self) -> Result<(), Error> {
        let existing = self
            .weir_nodes
            .list(&ListParams::default())
            .await
            .map_err(Error::List)?;
        for weir_node in existing {
            let name = weir_node.name_any();
            for error in self.pools.restore(&name, &weir_node.spec.pod_cidrs) {
                // A block outside the pool (the pool changed) or given
                // twice: the node gets a new one on its next reconcile.
                warn!(node = %name, %error, "pod CIDR not restored");
            }
        }
        info!(
            pool = %self.pools.v4.pool(),
            assigned = self.pools.v4.assigned_count(),
            pool6 = self.pools.v6.as_ref().map(|v6| v6.pool().to_string()),
            assigned6 = self.pools.v6.as_ref().map(ClusterPool::assigned_count),
            "cluster pool restored from WeirNodes"
        );
        self.publish_pool_use();
        Ok(())
    }

    /// Gives `node` its blocks (those it holds, or new ones) and writes
    /// them into its `WeirNode`, owned by the Node.
    async fn assign(&mut self, node: &Node) -> Result<(), Error> {
        if node.meta().deletion_timestamp.is_some() {
            return Ok(());
        }
        let name = node.name_any();
        let before = self.weir_nodes.get_opt(&name).await.ok().flatten();
        let current = before.as_ref().map(|wn| wn.spec.pod_cidrs.as_slice());
        let desired = match desired_pod_cidrs(&mut self.pools, &name, current) {
            Ok(desired) => desired,
            Err(error @ PoolError::Exhausted { pool, .. }) => {
                // Said once per node, not on every update of a waiting Node.
                if self.waiting.insert(name.clone(), node.clone()).is_none() {
                    self.metrics
                        .ipam_exhausted
                        .with_label_values(&[family_of(pool)])
                        .inc();
                    warn!(node = %name, %error, "no pod CIDR for node");
                    self.event(
                        node,
                        Kind::Warning,
                        "PodCIDRPoolExhausted",
                        &error.to_string(),
                    )
                    .await;
                }
                return Ok(());
            }
            Err(error) => {
                warn!(node = %name, %error, "no pod CIDR for node");
                return Ok(());
            }
        };
        self.waiting.remove(&name);
        self.publish_pool_use();
        let owner = node.controller_owner_ref(&()).map(|mut owner| {
            // An owner, not a controller: deleting the Node deletes the
            // WeirNode through Kubernetes' garbage collector too.
            owner.controller = None;
            owner.block_owner_deletion = None;
            owner
        });
        if !desired.changed && before.as_ref().is_some_and(|wn| has_owner(wn, node)) {
            return Ok(());
        }
        let object = serde_json::json!({
            "apiVersion": "weir.io/v1",
            "kind": "WeirNode",
            "metadata": {"name": name, "ownerReferences": owner.into_iter().collect::<Vec<_>>()},
            "spec": {"podCIDRs": desired.pod_cidrs},
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.weir_nodes
            .patch(&name, &params, &Patch::Apply(&object))
            .await
            .map_err(|source| Error::Write {
                node: name.clone(),
                source,
            })?;
        let cidrs = listed(&desired.pod_cidrs);
        info!(node = %name, %cidrs, "pod CIDR assigned");
        let plural = if desired.pod_cidrs.len() > 1 { "s" } else { "" };
        self.event(
            node,
            Kind::Normal,
            "PodCIDRAssigned",
            &format!("pod CIDR{plural} {cidrs}"),
        )
        .await;
        Ok(())
    }

    /// The Node is gone: its `WeirNode` goes and its blocks are free again.
    async fn release(&mut self, name: &str) -> Result<(), Error> {
        self.waiting.remove(name);
        let freed = self.pools.release(name);
        self.publish_pool_use();
        self.delete_weir_node(name, &freed).await?;
        if !freed.is_empty() {
            // A node refused for an exhausted pool gets the freed blocks.
            if let Some(next) = self.waiting.values().next().cloned() {
                Box::pin(self.assign(&next)).await?;
            }
        }
        Ok(())
    }

    async fn delete_weir_node(&self, name: &str, freed: &[IpNetwork]) -> Result<(), Error> {
        match self.weir_nodes.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                self.metrics
                    .gc_deleted
                    .with_label_values(&["WeirNode"])
                    .inc();
                let cidrs = listed(freed);
                info!(node = %name, %cidrs, "node deleted: WeirNode removed, pod CIDR released");
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(source) => Err(Error::Delete {
                node: name.to_string(),
                source,
            }),
        }
    }

    async fn release_absent(&mut self, listed: &BTreeSet<String>) -> Result<(), Error> {
        let known: Vec<String> = self
            .weir_nodes
            .list(&ListParams::default())
            .await
            .map_err(Error::List)?
            .into_iter()
            .map(|wn| wn.name_any())
            .filter(|name| !listed.contains(name))
            .collect();
        for name in known {
            self.release(&name).await?;
        }
        Ok(())
    }

    fn publish_pool_use(&self) {
        // The unlabelled series stay the IPv4 pool's, as before dual stack.
        for (state, blocks) in pool_use(&self.pools.v4) {
            self.metrics
                .ipam_blocks
                .with_label_values(&[state])
                .set(blocks);
        }
        self.publish_family_use(&self.pools.v4);
        if let Some(v6) = &self.pools.v6 {
            self.publish_family_use(v6);
        }
    }

    fn publish_family_use<C: Family>(&self, pool: &ClusterPool<C>) {
        for (state, blocks) in pool_use(pool) {
            self.metrics
                .ipam_pool_blocks
                .with_label_values(&[C::NAME, state])
                .set(blocks);
        }
    }

    fn observe(&self, started: Instant, result: Result<(), Error>) {
        self.metrics
            .reconcile_duration
            .with_label_values(&[CONTROLLER])
            .observe(started.elapsed().as_secs_f64());
        if let Err(error) = result {
            warn!(%error, "pod CIDR reconcile failed");
            self.metrics
                .reconcile_errors
                .with_label_values(&[CONTROLLER])
                .inc();
        }
    }

    async fn event(&self, node: &Node, kind: Kind, reason: &str, message: &str) {
        let object = node.object_ref(&());
        if let Err(error) = self.events.publish(object, kind, reason, message).await {
            warn!(%error, "could not record an event");
        }
    }
}

/// A node's pod CIDRs as one reconcile finds them.
#[derive(Debug, PartialEq, Eq)]
struct Desired {
    /// `spec.podCIDRs` as it should be: the node's block of each pool, IPv4
    /// first (the agent takes the first of each family).
    pod_cidrs: Vec<IpNetwork>,
    /// Whether the `WeirNode` says otherwise (or there is none).
    changed: bool,
}

/// The pod CIDRs `node` should have, from the pools (allocating the blocks
/// it lacks), and whether `current` (its `WeirNode`'s `spec.podCIDRs`, if
/// it has one) differs. CIDRs of a family without a pool are not compared:
/// an IPv6 one stays until something else makes the operator write the
/// spec, as before dual stack.
fn desired_pod_cidrs(
    pools: &mut Pools,
    node: &str,
    current: Option<&[IpNetwork]>,
) -> Result<Desired, PoolError<IpNetwork>> {
    let pod_cidrs = pools.allocate(node)?;
    let managed = |cidrs: &[IpNetwork]| -> Vec<IpNetwork> {
        cidrs
            .iter()
            .copied()
            .filter(|&cidr| pools.manages(cidr))
            .collect()
    };
    let changed = current.is_none_or(|current| managed(current) != pod_cidrs);
    Ok(Desired { pod_cidrs, changed })
}

/// The pool's blocks by `state` label, as gauge values (saturating).
fn pool_use<C: Family>(pool: &ClusterPool<C>) -> [(&'static str, i64); 2] {
    [
        (
            "capacity",
            i64::try_from(pool.capacity()).unwrap_or(i64::MAX),
        ),
        (
            "assigned",
            i64::try_from(pool.assigned_count()).unwrap_or(i64::MAX),
        ),
    ]
}

/// CIDRs for a log line or an event: `10.244.0.0/24, fd00::/112`.
fn listed(cidrs: &[IpNetwork]) -> String {
    cidrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn has_owner(weir_node: &WeirNode, node: &Node) -> bool {
    let uid = node.meta().uid.as_deref();
    weir_node
        .owner_references()
        .iter()
        .any(|owner| owner.kind == "Node" && Some(owner.uid.as_str()) == uid)
}

#[cfg(test)]
mod tests;
