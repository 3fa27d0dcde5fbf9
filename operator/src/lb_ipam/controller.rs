//! Follows the Services: a `type: LoadBalancer` Service gets an address of
//! the pool in `status.loadBalancer.ingress` (its `spec.loadBalancerIP` if
//! it asks for a free one of the pool); a Service deleted or no longer of
//! that type frees its address (and, still existing, loses the status),
//! and a Service waiting for one (pool exhausted) gets it. The pool is
//! rebuilt from the Services' statuses before the watch starts.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{info, warn};

use super::{AddressPool, PoolError};
use crate::events::{Events, Kind};
use crate::metrics::Metrics;

const CONTROLLER: &str = "lb-ipam";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("list Services: {0}")]
    List(kube::Error),
    #[error("write the status of Service {service}: {source}")]
    Status {
        service: String,
        source: kube::Error,
    },
}

pub struct LbIpam {
    client: Client,
    pool: AddressPool,
    metrics: Metrics,
    events: Events,
    /// Services refused an address, by key.
    waiting: BTreeMap<String, Service>,
}

fn key(service: &Service) -> String {
    format!(
        "{}/{}",
        service.namespace().unwrap_or_default(),
        service.name_any()
    )
}

fn is_load_balancer(service: &Service) -> bool {
    service.meta().deletion_timestamp.is_none()
        && service.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
}

/// The IPv4 ingress addresses in the Service's status.
fn ingress(service: &Service) -> Vec<Ipv4Addr> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

fn wanted(service: &Service) -> Option<Ipv4Addr> {
    service
        .spec
        .as_ref()?
        .load_balancer_ip
        .as_deref()?
        .parse()
        .ok()
}

impl LbIpam {
    pub fn new(client: Client, pool: AddressPool, metrics: Metrics, events: Events) -> LbIpam {
        LbIpam {
            client,
            pool,
            metrics,
            events,
            waiting: BTreeMap::new(),
        }
    }

    pub async fn run(mut self) -> Result<(), Error> {
        let api: Api<Service> = Api::all(self.client.clone());
        for service in api
            .list(&ListParams::default())
            .await
            .map_err(Error::List)?
        {
            if !is_load_balancer(&service) {
                continue;
            }
            for address in ingress(&service) {
                if let Err(error) = self.pool.restore(&key(&service), address) {
                    warn!(service = %key(&service), %error, "LB address not restored");
                }
            }
        }
        self.publish_use();
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut listed: BTreeSet<String> = BTreeSet::new();
        while let Some(event) = stream.next().await {
            let started = Instant::now();
            let result = match event {
                Ok(watcher::Event::Init) => {
                    listed.clear();
                    Ok(())
                }
                Ok(watcher::Event::InitApply(service)) => {
                    listed.insert(key(&service));
                    self.reconcile(&service).await
                }
                Ok(watcher::Event::InitDone) => {
                    let gone: Vec<String> = self
                        .pool_owners()
                        .into_iter()
                        .filter(|k| !listed.contains(k))
                        .collect();
                    for owner in gone {
                        self.release(&owner).await?;
                    }
                    Ok(())
                }
                Ok(watcher::Event::Apply(service)) => self.reconcile(&service).await,
                Ok(watcher::Event::Delete(service)) => self.release(&key(&service)).await,
                Err(error) => {
                    warn!(%error, "Service watch failed");
                    Ok(())
                }
            };
            self.metrics
                .reconcile_duration
                .with_label_values(&[CONTROLLER])
                .observe(started.elapsed().as_secs_f64());
            if let Err(error) = result {
                warn!(%error, "LB IPAM reconcile failed");
                self.metrics
                    .reconcile_errors
                    .with_label_values(&[CONTROLLER])
                    .inc();
            }
        }
        Ok(())
    }

    fn pool_owners(&self) -> Vec<String> {
        self.pool.by_owner.keys().cloned().collect()
    }

    async fn reconcile(&mut self, service: &Service) -> Result<(), Error> {
        let owner = key(service);
        if !is_load_balancer(service) {
            self.waiting.remove(&owner);
            if self.pool.release(&owner).is_some() {
                self.publish_use();
                if !ingress(service).is_empty() {
                    self.write_status(service, None).await?;
                }
                self.serve_waiting().await?;
            }
            return Ok(());
        }
        let address = match self.pool.allocate(&owner, wanted(service)) {
            Ok(address) => address,
            Err(error) => {
                if self
                    .waiting
                    .insert(owner.clone(), service.clone())
                    .is_none()
                {
                    warn!(service = %owner, %error, "no LB address");
                    if matches!(error, PoolError::Exhausted { .. }) {
                        self.metrics.lb_ipam_exhausted.inc();
                    }
                    let reference = service.object_ref(&());
                    if let Err(e) = self
                        .events
                        .publish(
                            reference,
                            Kind::Warning,
                            "LoadBalancerIPUnavailable",
                            &error.to_string(),
                        )
                        .await
                    {
                        warn!(error = %e, "could not record an event");
                    }
                }
                return Ok(());
            }
        };
        self.waiting.remove(&owner);
        self.publish_use();
        if ingress(service) != vec![address] {
            self.write_status(service, Some(address)).await?;
            info!(service = %owner, %address, "LB address assigned");
        }
        Ok(())
    }

    async fn release(&mut self, owner: &str) -> Result<(), Error> {
        self.waiting.remove(owner);
        if self.pool.release(owner).is_some() {
            self.publish_use();
            info!(service = %owner, "LB address released");
            self.serve_waiting().await?;
        }
        Ok(())
    }

    /// Gives a freed address to the first waiting Service.
    async fn serve_waiting(&mut self) -> Result<(), Error> {
        if let Some(next) = self.waiting.values().next().cloned() {
            self.waiting.remove(&key(&next));
            Box::pin(self.reconcile(&next)).await?;
        }
        Ok(())
    }

    async fn write_status(
        &self,
        service: &Service,
        address: Option<Ipv4Addr>,
    ) -> Result<(), Error> {
        let api: Api<Service> = Api::namespaced(
            self.client.clone(),
            &service.namespace().unwrap_or_default(),
        );
        let ingress: Vec<serde_json::Value> = address
            .map(|a| serde_json::json!({"ip": a.to_string()}))
            .into_iter()
            .collect();
        let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": ingress}}});
        api.patch_status(
            &service.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map(drop)
        .map_err(|source| Error::Status {
            service: key(service),
            source,
        })
    }

    fn publish_use(&self) {
        let size = i64::try_from(self.pool.size()).unwrap_or(i64::MAX);
        let assigned = i64::try_from(self.pool.assigned_count()).unwrap_or(i64::MAX);
        self.metrics
            .lb_ipam_addresses
            .with_label_values(&["capacity"])
            .set(size);
        self.metrics
            .lb_ipam_addresses
            .with_label_values(&["assigned"])
            .set(assigned);
    }
}
