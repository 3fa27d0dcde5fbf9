//! Keeps every Node's pod CIDR in its `WeirNode` (`spec.podCIDRs`, written
//! with server-side apply under the operator's field manager, so the agent's
//! own fields of the object are untouched), and releases the block and the
//! `WeirNode` when the Node goes.
//!
//! The pool is rebuilt from a consistent list of the `WeirNode`s before the
//! watch starts: a new leader never hands out a block an earlier one gave.
//! Only the leader runs this, so one writer assigns at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use futures::StreamExt;
use ipnetwork::{IpNetwork, Ipv4Network};
use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{info, warn};
use weir_crds::WeirNode;

use super::{ClusterPool, PoolError};
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
    pool: ClusterPool,
    metrics: Metrics,
    events: Events,
    /// Nodes refused a block (pool exhausted), given one when a block frees.
    waiting: BTreeMap<String, Node>,
}

impl NodeCidrs {
    pub fn new(client: Client, pool: ClusterPool, metrics: Metrics, events: Events) -> Self {
        NodeCidrs {
            nodes: Api::all(client.clone()),
            weir_nodes: Api::all(client),
            pool,
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
            for cidr in v4_cidrs(&weir_node) {
                if let Err(error) = self.pool.restore(&name, cidr) {
                    // A block outside the pool (the pool changed) or given
                    // twice: the node gets a new one on its next reconcile.
                    warn!(node = %name, %cidr, %error, "pod CIDR not restored");
                }
            }
        }
        info!(
            pool = %self.pool.pool(),
            assigned = self.pool.assigned_count(),
            "cluster pool restored from WeirNodes"
        );
        self.publish_pool_use();
        Ok(())
    }

    /// Gives `node` its block (the one it holds, or a new one) and writes
    /// it into its `WeirNode`, owned by the Node.
    async fn assign(&mut self, node: &Node) -> Result<(), Error> {
        if node.meta().deletion_timestamp.is_some() {
            return Ok(());
        }
        let name = node.name_any();
        let cidr = match self.pool.allocate(&name) {
            Ok(cidr) => cidr,
            Err(error @ PoolError::Exhausted { .. }) => {
                // Said once per node, not on every update of a waiting Node.
                if self.waiting.insert(name.clone(), node.clone()).is_none() {
                    self.metrics.ipam_exhausted.inc();
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
        let object = serde_json::json!({
            "apiVersion": "weir.io/v1",
            "kind": "WeirNode",
            "metadata": {"name": name, "ownerReferences": owner.into_iter().collect::<Vec<_>>()},
            "spec": {"podCIDRs": [cidr.to_string()]},
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let before = self.weir_nodes.get_opt(&name).await.ok().flatten();
        if before
            .as_ref()
            .is_some_and(|wn| v4_cidrs(wn) == vec![cidr] && has_owner(wn, node))
        {
            return Ok(());
        }
        self.weir_nodes
            .patch(&name, &params, &Patch::Apply(&object))
            .await
            .map_err(|source| Error::Write {
                node: name.clone(),
                source,
            })?;
        info!(node = %name, %cidr, "pod CIDR assigned");
        self.event(
            node,
            Kind::Normal,
            "PodCIDRAssigned",
            &format!("pod CIDR {cidr}"),
        )
        .await;
        Ok(())
    }

    /// The Node is gone: its `WeirNode` goes and its block is free again.
    async fn release(&mut self, name: &str) -> Result<(), Error> {
        self.waiting.remove(name);
        let freed = self.pool.release(name);
        self.publish_pool_use();
        self.delete_weir_node(name, freed).await?;
        if freed.is_some() {
            // A node refused for an exhausted pool gets the freed block.
            if let Some(next) = self.waiting.values().next().cloned() {
                Box::pin(self.assign(&next)).await?;
            }
        }
        Ok(())
    }

    async fn delete_weir_node(&self, name: &str, freed: Option<Ipv4Network>) -> Result<(), Error> {
        match self.weir_nodes.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                self.metrics
                    .gc_deleted
                    .with_label_values(&["WeirNode"])
                    .inc();
                info!(node = %name, cidr = ?freed, "node deleted: WeirNode removed, pod CIDR released");
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
        let capacity = i64::try_from(self.pool.capacity()).unwrap_or(i64::MAX);
        let assigned = i64::try_from(self.pool.assigned_count()).unwrap_or(i64::MAX);
        self.metrics
            .ipam_blocks
            .with_label_values(&["capacity"])
            .set(capacity);
        self.metrics
            .ipam_blocks
            .with_label_values(&["assigned"])
            .set(assigned);
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

/// The IPv4 pod CIDRs a `WeirNode` carries.
fn v4_cidrs(node: &WeirNode) -> Vec<Ipv4Network> {
    node.spec
        .pod_cidrs
        .iter()
        .filter_map(|cidr| match cidr {
            IpNetwork::V4(v4) => Some(*v4),
            IpNetwork::V6(_) => None,
        })
        .collect()
}

fn has_owner(weir_node: &WeirNode, node: &Node) -> bool {
    let uid = node.meta().uid.as_deref();
    weir_node
        .owner_references()
        .iter()
        .any(|owner| owner.kind == "Node" && Some(owner.uid.as_str()) == uid)
}
