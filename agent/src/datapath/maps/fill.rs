//! How full each datapath map the agent fills is: entries against capacity,
//! for `weir status` and the `weir_bpf_map_pressure{map_name}` gauge; and
//! what a write does when a map is full: [`fits`] refuses a change that
//! does not fit before any of it is written, [`FullMap::full_map`] tells
//! a full map (refused, or the kernel's E2BIG/ENOSPC) from other errors for
//! `weir_map_full_total{map}`.

use aya::maps::{Map, MapError};
use aya::Ebpf;
use weir_abi::map_names;

use crate::datapath::maps::lb as lb_maps;
use crate::datapath::maps::TableError;
use crate::datapath::{maps, Datapath};

/// The capacity of a loaded map (None if it is not in `ebpf` or the
/// kernel does not say).
pub fn max_entries(ebpf: &Ebpf, name: &str) -> Option<u32> {
    let data = match ebpf.map(name)? {
        Map::HashMap(data) | Map::LpmTrie(data) | Map::LruHashMap(data) | Map::Array(data) => data,
        _ => return None,
    };
    data.info().ok().map(|info| info.max_entries())
}

/// Whether `new` more entries fit into `map`, which holds `used` of
/// `capacity` (None: unknown, assumed to fit). Writers check before writing
/// a change, so a change that does not fit is not written at all rather
/// than cut off where the map filled up.
pub fn fits(
    map: &'static str,
    used: usize,
    new: usize,
    capacity: Option<u32>,
) -> Result<(), TableError> {
    match capacity {
        Some(capacity) if used.saturating_add(new) > capacity as usize => Err(TableError::Full {
            map,
            new,
            used,
            capacity,
        }),
        _ => Ok(()),
    }
}

/// errno of a hash map update into a full map.
const E2BIG: i32 = 7;
/// errno of an LPM trie update into a full trie.
const ENOSPC: i32 = 28;

/// Errors that can say a map is full.
pub trait FullMap {
    /// The map this error says is full, if it says so.
    fn full_map(&self) -> Option<&'static str>;
}

/// Whether the kernel refused an update because the map is full.
pub fn says_full(error: &MapError) -> bool {
    matches!(error, MapError::SyscallError(error)
        if matches!(error.io_error.raw_os_error(), Some(E2BIG | ENOSPC)))
}

impl FullMap for TableError {
    fn full_map(&self) -> Option<&'static str> {
        match self {
            TableError::Full { map, .. } | TableError::KernelFull { map, .. } => Some(map),
            TableError::Map { map, source } if says_full(source) => Some(map),
            _ => None,
        }
    }
}

/// An error from anywhere in a step: the first map error in its chain that
/// says a map is full.
impl FullMap for anyhow::Error {
    fn full_map(&self) -> Option<&'static str> {
        self.chain()
            .filter_map(|cause| cause.downcast_ref::<TableError>())
            .find_map(FullMap::full_map)
    }
}

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

/// The endpoints, ipcache, policy, conntrack, LB and fragments maps.
/// Endpoints and policy entries are what the agent keeps (it writes them);
/// the others are counted in the kernel.
pub fn map_fill(
    datapath: &mut Datapath,
    endpoints: u64,
    policy_entries: u64,
) -> Result<Vec<MapFill>, TableError> {
    let pin_dir = datapath.pin_dir().to_path_buf();
    let ebpf = datapath.ebpf_mut();
    let ipcache = maps::ipcache_entries(ebpf)?.len() as u64;
    let conntrack = maps::conntrack::conntrack_of(ebpf, map_names::CONNTRACK)?.len() as u64;
    let conntrack_any = maps::conntrack::conntrack_of(ebpf, map_names::CONNTRACK_ANY)?.len() as u64;
    let services = lb_maps::services(ebpf)?.len() as u64;
    let backends = lb_maps::backends(ebpf)?.len() as u64;
    let nat = lb_maps::nat_entries(ebpf)?.len() as u64;
    let fragments = maps::fragments(ebpf)?.len() as u64;
    Ok([
        (map_names::ENDPOINTS, endpoints),
        (map_names::IPCACHE, ipcache),
        (map_names::POLICY, policy_entries),
        (map_names::CONNTRACK, conntrack),
        (map_names::CONNTRACK_ANY, conntrack_any),
        (map_names::LB4_SERVICES, services),
        (map_names::LB4_BACKENDS, backends),
        (map_names::LB4_NAT, nat),
        (map_names::FRAGMENTS, fragments),
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
    fn a_change_fits_or_is_refused_whole() {
        assert!(fits("m", 10, 6, Some(16)).is_ok());
        assert!(fits("m", 10, 0, Some(10)).is_ok());
        assert!(fits("m", 1_000, 1_000, None).is_ok());
        let refused = fits("m", 10, 7, Some(16)).unwrap_err();
        assert_eq!(refused.full_map(), Some("m"));
        assert_eq!(
            refused.to_string(),
            "map m is full: 7 more entries do not fit (10 of 16 in use); \
             nothing of this change was written"
        );
    }

    #[test]
    fn full_maps_are_told_from_other_errors() {
        let syscall = |errno| TableError::Map {
            map: "m",
            source: MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_update_elem",
                io_error: std::io::Error::from_raw_os_error(errno),
            }),
        };
        let error = |errno| {
            MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_update_elem",
                io_error: std::io::Error::from_raw_os_error(errno),
            })
        };
        let kernel_full = maps::map_err("m")(error(E2BIG));
        assert!(matches!(kernel_full, TableError::KernelFull { .. }));
        assert!(kernel_full.to_string().starts_with("map m is full: "));
        assert_eq!(kernel_full.full_map(), Some("m"));
        assert_eq!(maps::map_err("m")(error(1)).full_map(), None);
        assert_eq!(syscall(E2BIG).full_map(), Some("m"));
        assert_eq!(syscall(ENOSPC).full_map(), Some("m"));
        assert_eq!(syscall(1).full_map(), None);
        assert_eq!(TableError::Missing("m").full_map(), None);
        let wrapped = anyhow::Error::new(syscall(E2BIG)).context("services");
        assert_eq!(wrapped.full_map(), Some("m"));
        assert_eq!(anyhow::anyhow!("no map here").full_map(), None);
    }

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
