//! The bound on a family's cardinality. Each family admits at most `cap`
//! distinct context label sets (values of its `source`, `destination` and
//! `labelsContext` labels); a flow with a new context beyond that is counted
//! under the overflow context (every context label [`OVERFLOW`]) and
//! reported as refused. A context naming a pod (pod, pod-name, ip, the
//! `*_pod` and `*_ip` labels) is bound to that pod: when the pod is gone,
//! [`Departures`] removes its series after a grace period, which frees the
//! context's place. Families without context options have one context and
//! are not bounded here.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use prometheus::IntCounterVec;

use super::context::{Context, PodKey};

/// The value of every context label of the overflow series. Not a valid
/// namespace, pod, workload or label, so never a real context.
pub const OVERFLOW: &str = "__overflow__";

#[derive(Default)]
struct Tracked {
    /// The handler's own label values counted with this context.
    rows: HashSet<Vec<String>>,
    pods: Vec<PodKey>,
}

/// One family's series and what its contexts name.
pub struct Family {
    vec: IntCounterVec,
    cap: usize,
    contexts: HashMap<Vec<String>, Tracked>,
    by_pod: HashMap<PodKey, HashSet<Vec<String>>>,
}

/// Values of the series' labels: the handler's, then the context's.
fn labels<'a>(row: &'a [String], context: &'a [String]) -> Vec<&'a str> {
    row.iter().chain(context).map(String::as_str).collect()
}

impl Family {
    pub fn new(vec: IntCounterVec, cap: usize) -> Family {
        Family {
            vec,
            cap,
            contexts: HashMap::new(),
            by_pod: HashMap::new(),
        }
    }

    /// Counts one flow: an increment per row, with its context if admitted.
    /// Returns false if the context was refused (counted as overflow).
    pub fn count(&mut self, rows: &[Vec<String>], context: Context) -> bool {
        if rows.is_empty() {
            return true;
        }
        if context.values.is_empty() {
            for row in rows {
                self.vec.with_label_values(&labels(row, &[])).inc();
            }
            return true;
        }
        if !self.contexts.contains_key(&context.values) && self.contexts.len() >= self.cap {
            let overflow = vec![OVERFLOW.to_string(); context.values.len()];
            for row in rows {
                self.vec.with_label_values(&labels(row, &overflow)).inc();
            }
            return false;
        }
        let tracked = self.contexts.entry(context.values.clone()).or_default();
        for pod in context.pods {
            if !tracked.pods.contains(&pod) {
                self.by_pod
                    .entry(pod.clone())
                    .or_default()
                    .insert(context.values.clone());
                tracked.pods.push(pod);
            }
        }
        for row in rows {
            self.vec
                .with_label_values(&labels(row, &context.values))
                .inc();
            if !tracked.rows.contains(row) {
                tracked.rows.insert(row.clone());
            }
        }
        true
    }

    /// Removes every series whose context names `pod`; returns how many.
    pub fn remove_pod(&mut self, pod: &PodKey) -> usize {
        let mut removed = 0;
        for context in self.by_pod.remove(pod).unwrap_or_default() {
            let Some(tracked) = self.contexts.remove(&context) else {
                continue;
            };
            for row in &tracked.rows {
                if self.vec.remove_label_values(&labels(row, &context)).is_ok() {
                    removed += 1;
                }
            }
            for other in tracked.pods.iter().filter(|p| *p != pod) {
                if let Some(contexts) = self.by_pod.get_mut(other) {
                    contexts.remove(&context);
                    if contexts.is_empty() {
                        self.by_pod.remove(other);
                    }
                }
            }
        }
        removed
    }

    /// Distinct contexts admitted (the overflow context not included).
    pub fn contexts(&self) -> usize {
        self.contexts.len()
    }

    /// The pods some context names.
    pub fn pods(&self) -> impl Iterator<Item = &PodKey> {
        self.by_pod.keys()
    }
}

/// Pods that contexts name and that are gone, since when: their series
/// are removed once they have been gone for the grace period (so a scrape
/// can still see the last counts, and a pod briefly missing from the
/// agent's view keeps its series).
#[derive(Default)]
pub struct Departures {
    gone: HashMap<PodKey, Instant>,
}

impl Departures {
    /// The pods among `tracked` that `live` no longer knows and that have
    /// been gone for `grace` at `now`; they are forgotten here.
    pub fn expired<'a>(
        &mut self,
        tracked: impl IntoIterator<Item = &'a PodKey>,
        live: &dyn Fn(&PodKey) -> bool,
        now: Instant,
        grace: Duration,
    ) -> Vec<PodKey> {
        let mut seen = HashSet::new();
        let mut expired = Vec::new();
        for pod in tracked {
            if !seen.insert(pod) || live(pod) {
                continue;
            }
            let since = *self.gone.entry(pod.clone()).or_insert(now);
            if now.duration_since(since) >= grace {
                expired.push(pod.clone());
            }
        }
        // Forget pods that came back or are no longer tracked.
        self.gone.retain(|pod, _| seen.contains(pod) && !live(pod));
        for pod in &expired {
            self.gone.remove(pod);
        }
        expired
    }
}
