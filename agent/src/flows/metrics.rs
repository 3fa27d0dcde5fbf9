//! Flow metrics under Hubble's names, counted as flows are produced, as
//! `--hubble-metrics` asks (Hubble's `--metrics` option string, see
//! [`options`]): the L3/L4 handlers `flow`, `drop`, `tcp`,
//! `port-distribution`, `icmp` and `policy` ([`handlers`]), each with
//! Hubble's context labels ([`context`]), their cardinality bounded
//! ([`series`]). Two families of the agent's own watch the bound:
//! `weir_hubble_metrics_contexts{metric}` and
//! `weir_hubble_metrics_context_overflow_total{metric}`.

pub mod context;
pub mod handlers;
pub mod options;
pub mod series;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use weir_observer::proto::flow::Flow;

use crate::registry::registered;
use context::PodKey;
use options::{HandlerConfig, MetricsConfig};
use series::{Departures, Family};

/// Distinct context label sets a family admits by default
/// (`--hubble-metrics-max-contexts`).
pub const DEFAULT_MAX_CONTEXTS: usize = 1000;

/// How long a pod is gone before the series naming it are removed
/// (Hubble's one minute).
pub const POD_GRACE: Duration = Duration::from_secs(60);

/// How often the agent looks for pods that are gone.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

struct Enabled {
    config: HandlerConfig,
    name: &'static str,
    family: Family,
}

struct Inner {
    families: Vec<Enabled>,
    departures: Departures,
}

#[derive(Clone)]
pub struct FlowMetrics {
    inner: Arc<Mutex<Inner>>,
    contexts: IntGaugeVec,
    overflow: IntCounterVec,
}

impl FlowMetrics {
    /// Registers the families `config` enables, each admitting at most
    /// `max_contexts` context label sets.
    pub fn new(registry: &Registry, config: &MetricsConfig, max_contexts: usize) -> FlowMetrics {
        let contexts = registered(
            registry,
            IntGaugeVec::new(
                Opts::new(
                    "weir_hubble_metrics_contexts",
                    "Distinct context label sets a hubble_ family counts under",
                ),
                &["metric"],
            ),
        );
        let overflow = registered(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "weir_hubble_metrics_context_overflow_total",
                    "Flows counted under the overflow context because a hubble_ family \
                     had all the contexts it admits",
                ),
                &["metric"],
            ),
        );
        let families = config
            .handlers
            .iter()
            .map(|config| {
                let (name, help) = handlers::family(config.handler);
                let mut labels = handlers::label_names(config.handler).to_vec();
                labels.extend(context::label_names(&config.context));
                let vec = registered(registry, IntCounterVec::new(Opts::new(name, help), &labels));
                if !config.context.is_empty() {
                    contexts.with_label_values(&[name]).set(0);
                    overflow.with_label_values(&[name]).reset();
                }
                Enabled {
                    config: config.clone(),
                    name,
                    family: Family::new(vec, max_contexts),
                }
            })
            .collect();
        FlowMetrics {
            inner: Arc::new(Mutex::new(Inner {
                families,
                departures: Departures::default(),
            })),
            contexts,
            overflow,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one flow in every enabled family.
    pub fn observe(&self, f: &Flow) {
        let mut inner = self.lock();
        for enabled in &mut inner.families {
            let rows = handlers::rows(enabled.config.handler, f);
            if rows.is_empty() {
                continue;
            }
            if enabled.config.context.is_empty() {
                enabled.family.count(&rows, Default::default());
                continue;
            }
            let context = context::context_of(&enabled.config.context, f);
            if !enabled.family.count(&rows, context) {
                self.overflow.with_label_values(&[enabled.name]).inc();
            }
            self.contexts
                .with_label_values(&[enabled.name])
                .set(enabled.family.contexts() as i64);
        }
    }

    /// Removes the series naming pods that `live` has not known for
    /// `grace` (checked at each call, `now` being the time of the call);
    /// returns how many series went.
    pub fn sweep(&self, live: &dyn Fn(&PodKey) -> bool, now: Instant, grace: Duration) -> usize {
        let mut inner = self.lock();
        let Inner {
            families,
            departures,
        } = &mut *inner;
        let tracked: HashSet<&PodKey> = families.iter().flat_map(|e| e.family.pods()).collect();
        let expired = departures.expired(tracked, live, now, grace);
        let mut removed = 0;
        for pod in &expired {
            for enabled in families.iter_mut() {
                removed += enabled.family.remove_pod(pod);
            }
        }
        for enabled in families.iter() {
            if !enabled.config.context.is_empty() {
                self.contexts
                    .with_label_values(&[enabled.name])
                    .set(enabled.family.contexts() as i64);
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests;
