//! How full each datapath map the agent fills is: entries against capacity,
//! for `weir status` and the `weir_bpf_map_pressure{map_name}` gauge.

use weir_abi::map_names;

use crate::datapath::maps::lb as lb_maps;
use crate::datapath::{maps, Datapath};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapFill {
    pub name: &'static str,
    pub entries: u64,
    pub capacity: u64,
}

impl MapFill {
    /// Entries over capacity (0 when the capacity is unknown).
    pub fn ratio(&self) -> f64 {
        if self.capacity == 0 {
            0.0
        } else {
            self.entries as f64 / self.capacity as f64
        }
    }
}

fn capacity(pin_dir: &std::path::Path, name: &str) -> u64 {
    aya::maps::MapInfo::from_pin(pin_dir.join(name))
        .map(|info| u64::from(info.max_entries()))
        .unwrap_or(0)
}

/// The endpoints, ipcache, policy and conntrack maps. Endpoints and policy
/// entries are what the agent keeps (it writes them); the ipcache and the
/// conntrack table are counted in the kernel.
pub fn map_fill(
    datapath: &mut Datapath,
    endpoints: u64,
    policy_entries: u64,
) -> Result<Vec<MapFill>, maps::TableError> {
    let pin_dir = datapath.pin_dir().to_path_buf();
    let ebpf = datapath.ebpf_mut();
    let ipcache = maps::ipcache_entries(ebpf)?.len() as u64;
    let conntrack = maps::conntrack(ebpf)?.len() as u64;
    let services = lb_maps::services(ebpf)?.len() as u64;
    let backends = lb_maps::backends(ebpf)?.len() as u64;
    let nat = lb_maps::nat_entries(ebpf)?.len() as u64;
    Ok([
        (map_names::ENDPOINTS, endpoints),
        (map_names::IPCACHE, ipcache),
        (map_names::POLICY, policy_entries),
        (map_names::CONNTRACK, conntrack),
        (map_names::LB4_SERVICES, services),
        (map_names::LB4_BACKENDS, backends),
        (map_names::LB4_NAT, nat),
    ]
    .into_iter()
    .map(|(name, entries)| MapFill {
        name,
        entries,
        capacity: capacity(&pin_dir, name),
    })
    .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_of_entries_to_capacity() {
        let fill = |entries, capacity| MapFill {
            name: "m",
            entries,
            capacity,
        };
        assert_eq!(fill(0, 100).ratio(), 0.0);
        assert_eq!(fill(25, 100).ratio(), 0.25);
        assert_eq!(fill(100, 100).ratio(), 1.0);
        assert_eq!(fill(5, 0).ratio(), 0.0);
    }
}
