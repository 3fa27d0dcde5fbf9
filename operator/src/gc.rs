//! Garbage collection, one pass every `--gc-interval`:
//! - `WeirEndpoint`s whose Pod is gone (normally the Pod's owner reference
//!   lets Kubernetes delete them; this catches ones written without it);
//! - `WeirNode`s whose Node is gone;
//! - `WeirIdentity`s no `WeirEndpoint` uses, once they have been unused for
//!   `--identity-gc-grace` (an agent creates the identity before the
//!   endpoint that uses it, so a young unused identity is normal).
//!
//! Each pass lists the dependent kind before the kind it depends on: an
//! object listed first whose owner is missing from the later list is really
//! orphaned (an agent writes a `WeirEndpoint` only after its Pod exists).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};
use weir_crds::{WeirEndpoint, WeirIdentity, WeirNode};

use crate::metrics::Metrics;

const CONTROLLER: &str = "gc";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("list {kind}: {source}")]
    List {
        kind: &'static str,
        source: kube::Error,
    },
    #[error("delete {kind} {name}: {source}")]
    Delete {
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
}

#[derive(Clone, Copy, Debug)]
pub struct GcOptions {
    pub interval: Duration,
    pub identity_grace: Duration,
}

/// What one pass removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Collected {
    pub endpoints: usize,
    pub nodes: usize,
    pub identities: usize,
}

pub struct Collector {
    client: Client,
    options: GcOptions,
    metrics: Metrics,
    /// Unused identities and when they were first seen unused.
    unused_since: BTreeMap<String, Instant>,
}

impl Collector {
    pub fn new(client: Client, options: GcOptions, metrics: Metrics) -> Collector {
        Collector {
            client,
            options,
            metrics,
            unused_since: BTreeMap::new(),
        }
    }

    /// Runs a pass every interval, forever.
    pub async fn run(mut self) {
        let mut ticker = tokio::time::interval(self.options.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let started = Instant::now();
            match self.pass().await {
                Ok(collected) if collected != Collected::default() => {
                    info!(?collected, "garbage collected");
                }
                Ok(_) => {}
                Err(error) => {
                    warn!(%error, "garbage collection pass failed");
                    self.metrics
                        .reconcile_errors
                        .with_label_values(&[CONTROLLER])
                        .inc();
                }
            }
            self.metrics
                .reconcile_duration
                .with_label_values(&[CONTROLLER])
                .observe(started.elapsed().as_secs_f64());
        }
    }

    pub async fn pass(&mut self) -> Result<Collected, Error> {
        self.metrics.gc_runs.inc();
        let mut collected = Collected::default();
        let endpoints: Vec<WeirEndpoint> =
            list(&Api::all(self.client.clone()), "WeirEndpoint").await?;
        let pods: BTreeSet<(String, String)> = list(&Api::<Pod>::all(self.client.clone()), "Pod")
            .await?
            .into_iter()
            .map(|pod| (pod.namespace().unwrap_or_default(), pod.name_any()))
            .collect();
        let mut in_use: BTreeSet<String> = BTreeSet::new();
        for endpoint in &endpoints {
            let namespace = endpoint.namespace().unwrap_or_default();
            if pods.contains(&(namespace.clone(), endpoint.name_any())) {
                in_use.insert(endpoint.spec.identity.to_string());
                continue;
            }
            let api: Api<WeirEndpoint> = Api::namespaced(self.client.clone(), &namespace);
            if self
                .delete(&api, "WeirEndpoint", &endpoint.name_any())
                .await?
            {
                collected.endpoints += 1;
            }
        }

        let weir_nodes: Vec<WeirNode> = list(&Api::all(self.client.clone()), "WeirNode").await?;
        let nodes: BTreeSet<String> = list(&Api::<Node>::all(self.client.clone()), "Node")
            .await?
            .into_iter()
            .map(|node| node.name_any())
            .collect();
        let weir_node_api: Api<WeirNode> = Api::all(self.client.clone());
        for weir_node in weir_nodes
            .iter()
            .filter(|wn| !nodes.contains(&wn.name_any()))
        {
            if self
                .delete(&weir_node_api, "WeirNode", &weir_node.name_any())
                .await?
            {
                collected.nodes += 1;
            }
        }

        // Endpoints were listed before the identities: an identity created
        // after that list is young, and the grace period protects it.
        let identity_api: Api<WeirIdentity> = Api::all(self.client.clone());
        let identities: Vec<WeirIdentity> = list(&identity_api, "WeirIdentity").await?;
        let now = Instant::now();
        let present: BTreeSet<String> = identities.iter().map(|i| i.name_any()).collect();
        self.unused_since
            .retain(|name, _| present.contains(name) && !in_use.contains(name));
        for name in present.difference(&in_use) {
            let since = *self.unused_since.entry(name.clone()).or_insert(now);
            if now.duration_since(since) >= self.options.identity_grace
                && self.delete(&identity_api, "WeirIdentity", name).await?
            {
                self.unused_since.remove(name);
                collected.identities += 1;
            }
        }
        Ok(collected)
    }

    /// Deletes one object; false when it was already gone.
    async fn delete<K>(&self, api: &Api<K>, kind: &'static str, name: &str) -> Result<bool, Error>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                self.metrics.gc_deleted.with_label_values(&[kind]).inc();
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
            Err(source) => Err(Error::Delete {
                kind,
                name: name.to_string(),
                source,
            }),
        }
    }
}

async fn list<K>(api: &Api<K>, kind: &'static str) -> Result<Vec<K>, Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Ok(api
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::List { kind, source })?
        .items)
}
