//! The services reconciler: Services and EndpointSlices to the LB maps.
//! Fed to the incremental compiler when the cluster's Services or
//! EndpointSlices were read again (or the last write failed); only the
//! frontends that changed are written (see [`super::lb_sync`]).

use std::time::Instant;

use tracing::{info, warn};

use super::lb_sync::{LbMetrics, LbSync, PassReport};
use crate::cluster::manifest_dir::ClusterManifests;
use crate::datapath::SharedDatapath;

/// The services reconciler's state.
pub struct ServiceSync {
    compiler: weir_lb::LbCompiler,
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
            compiler: weir_lb::LbCompiler::new(node, options),
            writer,
            problems: Vec::new(),
            seen_generation: None,
            failed: false,
            metrics: None,
        }
    }

    /// Also report each pass to Prometheus.
    pub fn with_metrics(mut self, metrics: LbMetrics) -> ServiceSync {
        self.metrics = Some(metrics);
        self
    }

    /// Compiles and writes what changed since the last pass; a pass with
    /// nothing read since the last one costs nothing.
    pub fn sync(
        &mut self,
        cluster: &ClusterManifests,
        generation: u64,
        datapath: &SharedDatapath,
    ) -> anyhow::Result<()> {
        // Nothing read since the last pass: nothing to compare (comparing
        // 20,000 objects every tick is not free).
        if !self.failed && self.seen_generation == Some(generation) {
            return Ok(());
        }
        self.seen_generation = Some(generation);
        let started = Instant::now();
        let changed = self
            .compiler
            .update(cluster.services.values(), cluster.endpoint_slices.values());
        let problems = self.compiler.problems();
        for problem in problems.iter().filter(|p| !self.problems.contains(p)) {
            warn!(service = %problem.service, problem = %problem.message, "service");
        }
        if changed.is_empty() && !self.failed && problems == self.problems {
            return Ok(());
        }
        let result = self.writer.apply(
            datapath.lock().ebpf_mut(),
            self.compiler.frontends(),
            &changed,
            &problems,
        );
        self.failed = result.is_err();
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
        if result.is_ok() && !changed.is_empty() {
            info!(
                services = self.compiler.services(),
                frontends = self.compiler.frontends().len(),
                changed = changed.len(),
                "services programmed"
            );
        }
        Ok(result?)
    }
}
