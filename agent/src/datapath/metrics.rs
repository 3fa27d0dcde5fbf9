//! Reading the per-CPU metrics map (`weir_metrics`).

use std::collections::BTreeMap;

use aya::maps::{MapError, PerCpuHashMap};
use aya::Ebpf;
use weir_abi::{map_names, MetricsKey, MetricsValue, Reason, TrafficDirection};

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("map weir_metrics is missing from the datapath object")]
    Missing,
    #[error("reading weir_metrics: {0}")]
    Map(#[from] MapError),
}

/// The counters at one moment, summed over CPUs, keyed by (reason, direction)
/// as raw codes so that codes from a newer datapath are kept, not lost.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    counters: BTreeMap<(u8, u8), MetricsValue>,
}

impl MetricsSnapshot {
    /// The counter for (reason, direction); zero if never incremented.
    pub fn get(&self, reason: Reason, direction: TrafficDirection) -> MetricsValue {
        self.counters
            .get(&(reason as u8, direction as u8))
            .copied()
            .unwrap_or_default()
    }

    /// Every non-zero counter as (reason code, direction code, value).
    pub fn iter(&self) -> impl Iterator<Item = (u8, u8, MetricsValue)> + '_ {
        self.counters.iter().map(|(&(r, d), &v)| (r, d, v))
    }

    /// What changed since `earlier`: per counter, this minus earlier.
    pub fn since(&self, earlier: &MetricsSnapshot) -> MetricsSnapshot {
        let counters = self
            .counters
            .iter()
            .filter_map(|(key, now)| {
                let before = earlier.counters.get(key).copied().unwrap_or_default();
                let delta = MetricsValue {
                    packets: now.packets.saturating_sub(before.packets),
                    bytes: now.bytes.saturating_sub(before.bytes),
                };
                (delta != MetricsValue::default()).then_some((*key, delta))
            })
            .collect();
        MetricsSnapshot { counters }
    }

    /// Total over all counters.
    pub fn total(&self) -> MetricsValue {
        self.counters
            .values()
            .fold(MetricsValue::default(), |acc, v| acc.saturating_add(*v))
    }

    fn add(&mut self, key: MetricsKey, value: MetricsValue) {
        let slot = self
            .counters
            .entry((key.reason, key.direction))
            .or_default();
        *slot = slot.saturating_add(value);
    }
}

pub(super) fn read(ebpf: &Ebpf) -> Result<MetricsSnapshot, MetricsError> {
    let map = ebpf.map(map_names::METRICS).ok_or(MetricsError::Missing)?;
    let map: PerCpuHashMap<_, MetricsKey, MetricsValue> = PerCpuHashMap::try_from(map)?;
    let mut snapshot = MetricsSnapshot::default();
    for entry in map.iter() {
        let (key, per_cpu) = entry?;
        let sum = per_cpu
            .iter()
            .fold(MetricsValue::default(), |acc, v| acc.saturating_add(*v));
        snapshot.add(key, sum);
    }
    Ok(snapshot)
}
