//! The services reconciler: Services and EndpointSlices to the LB maps,
//! with the local pods' host ports beside them ([`super::host_ports`]).
//! Fed to the incremental compiler when the cluster's Services or
//! EndpointSlices were read again (or the last write failed); only the
//! frontends that changed are written (see [`super::lb_sync`]).

use std::collections::BTreeMap;
use std::time::Instant;

use tracing::{info, warn};

use super::lb_sync::{Desired, LbMetrics, LbSync, PassReport};
use crate::cluster::manifest_dir::ClusterManifests;
use crate::datapath::SharedDatapath;
use crate::endpoint::registry::Endpoint;

/// A frontend a pass wrote, for the agent's events.
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceWrite {
    /// Added or changed, with its service id (reverse NAT index).
    Upserted(u16, weir_lb::Frontend),
    /// Removed; its service id while it was programmed.
    Deleted(u16),
}

/// The services reconciler's state.
pub struct ServiceSync {
    /// Frontends written since [`ServiceSync::take_writes`] was last called.
    writes: Vec<ServiceWrite>,
    compiler: weir_lb::LbCompiler,
    /// What the compiler was made with (to make it again with IPv6).
    compiler_options: weir_lb::LbOptions,
    /// The node, for the host ports' frontends.
    node: weir_lb::NodeContext,
    /// The host-port frontends last written.
    host_ports: BTreeMap<weir_lb::FrontendKey, weir_lb::Frontend>,
    writer: LbSync,
    /// The problems last reported, so each is logged once.
    problems: Vec<weir_lb::ServiceProblem>,
    /// The cluster generation of the last pass.
    seen_generation: Option<u64>,
    failed: bool,
    metrics: Option<LbMetrics>,
}

impl ServiceSync {
    pub fn new(
        node: weir_lb::NodeContext,
        options: weir_lb::LbOptions,
        writer: LbSync,
    ) -> ServiceSync {
        ServiceSync {
            writes: Vec::new(),
            compiler: weir_lb::LbCompiler::new(node.clone(), options.clone()),
            compiler_options: options,
            node,
            host_ports: BTreeMap::new(),
            writer,
            problems: Vec::new(),
            seen_generation: None,
            failed: false,
            metrics: None,
        }
    }

    /// Compiles and programs IPv6 frontends (ClusterIPs, socket LB) per
    /// `ipv6`; without it every IPv6 cluster IP is reported as a problem.
    /// Call before the first [`ServiceSync::sync`].
    pub fn with_ipv6(mut self, ipv6: weir_lb::Ipv6Options) -> ServiceSync {
        let options = self.compiler_options.clone();
        self.compiler = weir_lb::LbCompiler::new(self.node.clone(), options).with_ipv6(ipv6);
        self
    }

    /// Also report each pass to Prometheus.
    pub fn with_metrics(mut self, metrics: LbMetrics) -> ServiceSync {
        self.metrics = Some(metrics);
        self
    }

    /// The frontends written by the passes since the last call.
    pub fn take_writes(&mut self) -> Vec<ServiceWrite> {
        std::mem::take(&mut self.writes)
    }

    /// Compiles and writes what changed since the last pass, the host
    /// ports of `endpoints` included; a pass with nothing read and no host
    /// port changed costs one comparison.
    pub fn sync(
        &mut self,
        cluster: &ClusterManifests,
        generation: u64,
        endpoints: &[Endpoint],
        datapath: &SharedDatapath,
    ) -> anyhow::Result<()> {
        // Nothing read since the last pass: nothing to compare (comparing
        // 20,000 objects every tick is not free).
        let cluster_read = self.failed || self.seen_generation != Some(generation);
        self.seen_generation = Some(generation);
        let started = Instant::now();
        let weir_lb::Changed {
            v4: mut changed,
            v6: changed_v6,
        } = if cluster_read {
            self.compiler.update_dual(
                cluster.services.values(),
                cluster.endpoint_slices.values(),
                cluster.endpoint_slices_v6.values(),
            )
        } else {
            weir_lb::Changed::default()
        };
        let (host_ports, host_port_problems) =
            super::host_ports::frontends(&self.node, endpoints, &self.host_ports, |key| {
                self.compiler.frontends().contains_key(key)
            });
        let host_ports_changed: Vec<weir_lb::FrontendKey> = host_ports
            .iter()
            .filter(|(key, frontend)| self.host_ports.get(key) != Some(frontend))
            .map(|(key, _)| *key)
            .chain(
                self.host_ports
                    .keys()
                    .filter(|key| !host_ports.contains_key(key))
                    .copied(),
            )
            .collect();
        if !cluster_read && host_ports_changed.is_empty() {
            return Ok(());
        }
        changed.extend(host_ports_changed);
        let mut problems = self.compiler.problems();
        problems.extend(host_port_problems);
        for problem in problems.iter().filter(|p| !self.problems.contains(p)) {
            warn!(service = %problem.service, problem = %problem.message, "service");
        }
        if changed.is_empty() && changed_v6.is_empty() && !self.failed && problems == self.problems
        {
            return Ok(());
        }
        let mut frontends = self.compiler.frontends().clone();
        frontends.extend(host_ports.iter().map(|(k, f)| (*k, f.clone())));
        // The ids of removed frontends are released by the write.
        let removed: Vec<(weir_lb::FrontendKey, u16)> = changed
            .iter()
            .filter(|key| !frontends.contains_key(key))
            .filter_map(|key| Some((*key, self.writer.service_id(key)?)))
            .collect();
        let result = self.writer.apply_dual(
            datapath.lock().ebpf_mut(),
            Desired {
                frontends: &frontends,
                changed: &changed,
            },
            Desired {
                frontends: self.compiler.frontends_v6(),
                changed: &changed_v6,
            },
            &problems,
        );
        self.failed = result.is_err();
        if result.is_ok() {
            self.host_ports = host_ports;
        }
        if let Some(metrics) = &self.metrics {
            metrics.observe(&PassReport {
                frontends: self.writer.frontends_written(),
                backends: self.writer.backends_written(),
                problems: problems.len(),
                failed: self.failed,
                operations: self.writer.map_operations(),
                took: started.elapsed(),
            });
        }
        self.problems = problems;
        if result.is_ok() {
            for key in &changed {
                if let (Some(frontend), Some(id)) =
                    (frontends.get(key), self.writer.service_id(key))
                {
                    self.writes
                        .push(ServiceWrite::Upserted(id, frontend.clone()));
                }
            }
            // An id another scope of the same address still holds is not
            // deleted.
            for (key, id) in removed {
                if self.writer.service_id(&key).is_none() {
                    self.writes.push(ServiceWrite::Deleted(id));
                }
            }
        }
        if result.is_ok() && !(changed.is_empty() && changed_v6.is_empty()) {
            info!(
                services = self.compiler.services(),
                frontends = self.compiler.frontends().len(),
                frontends_v6 = self.compiler.frontends_v6().len(),
                changed = changed.len() + changed_v6.len(),
                "services programmed"
            );
        }
        Ok(result?)
    }
}
