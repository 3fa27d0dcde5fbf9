//! Loading Weir's kernel programs, pinning their maps under bpffs and
//! attaching them to interfaces.
//!
//! The object is embedded at build time (see `build.rs`). Maps are pinned by
//! name under a configurable directory (default [`DEFAULT_PIN_DIR`]); a
//! second load with the same directory reuses the pinned maps, so counters
//! and, later, policy and conntrack state survive an agent restart.
//! Attachments are TCX links, also pinned there (see [`attach`]), so
//! programs stay attached while the agent is down. A pin whose layout or
//! ABI version does not match the object is replaced (see [`pins`]).

mod attach;
pub mod cgroup;
pub mod debug;
mod link_detach;
mod load;
pub mod maps;
mod metrics;
pub mod node_routes;
pub mod pins;
pub mod sysctl;
pub mod tunnel;

use std::io;
use std::path::{Path, PathBuf};

use aya::programs::{ProgramError, SchedClassifier};
use aya::{Ebpf, EbpfError, EbpfLoader};
use weir_abi::program_names;

pub use attach::{AttachPoint, Hook};
pub use cgroup::SockProgram;
pub use metrics::{MetricsError, MetricsSnapshot};

/// Where maps and links are pinned unless configured otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/weir";

/// The kernel programs, as built by `cargo xtask build`.
#[cfg(not(weir_no_datapath))]
pub fn object() -> Result<&'static [u8], DatapathError> {
    Ok(aya::include_bytes_aligned!(concat!(
        env!("OUT_DIR"),
        "/weir-datapath.o"
    )))
}

/// This agent was compiled without the kernel object (a `cargo check` of a
/// fresh clone, see build.rs), so it has nothing to load.
#[cfg(weir_no_datapath)]
pub fn object() -> Result<&'static [u8], DatapathError> {
    Err(DatapathError::NotEmbedded)
}

/// The programs in the datapath object.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ProgramKind {
    FromPod,
    ToPod,
    FromNetdev,
    ToNetdev,
    FromOverlay,
    ToOverlay,
}

impl ProgramKind {
    pub const ALL: [ProgramKind; 6] = [
        ProgramKind::FromPod,
        ProgramKind::ToPod,
        ProgramKind::FromNetdev,
        ProgramKind::ToNetdev,
        ProgramKind::FromOverlay,
        ProgramKind::ToOverlay,
    ];

    /// The programs of pod and node devices: every packet of every node
    /// passes them (the tunnel device's only exist in tunnel mode, and
    /// drop what carries no tunnel metadata).
    pub const POD_AND_NETDEV: [ProgramKind; 4] = [
        ProgramKind::FromPod,
        ProgramKind::ToPod,
        ProgramKind::FromNetdev,
        ProgramKind::ToNetdev,
    ];

    /// The program's symbol (and kernel) name.
    pub const fn name(self) -> &'static str {
        match self {
            ProgramKind::FromPod => program_names::FROM_POD,
            ProgramKind::ToPod => program_names::TO_POD,
            ProgramKind::FromNetdev => program_names::FROM_NETDEV,
            ProgramKind::ToNetdev => program_names::TO_NETDEV,
            ProgramKind::FromOverlay => program_names::FROM_OVERLAY,
            ProgramKind::ToOverlay => program_names::TO_OVERLAY,
        }
    }

    /// One of the tunnel device's programs.
    pub const fn is_overlay(self) -> bool {
        matches!(self, ProgramKind::FromOverlay | ProgramKind::ToOverlay)
    }

    /// The direction its packets are counted in (the pod's for the pod
    /// programs, the node's for the others).
    pub const fn direction(self) -> weir_abi::TrafficDirection {
        match self {
            ProgramKind::FromPod | ProgramKind::ToNetdev | ProgramKind::ToOverlay => {
                weir_abi::TrafficDirection::Egress
            }
            ProgramKind::ToPod | ProgramKind::FromNetdev | ProgramKind::FromOverlay => {
                weir_abi::TrafficDirection::Ingress
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(
        "this agent was built without the kernel programs: build them and the agent with \
         `cargo xtask build` (the agent embeds target/ebpf/bpfel-unknown-none/release/weir-datapath)"
    )]
    NotEmbedded,
    #[error("cannot create pin directory {path}: {source}")]
    PinDir { path: PathBuf, source: io::Error },
    #[error("{path} is not on a bpf filesystem (mount one with `mount -t bpf bpf /sys/fs/bpf`)")]
    NotBpffs { path: PathBuf },
    #[error("loading the datapath object failed: {0}")]
    Object(#[from] EbpfError),
    #[error("program {name} is missing from the datapath object")]
    MissingProgram { name: &'static str },
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        source: ProgramError,
    },
    #[error("attaching to {interface}: {reason}")]
    Attach { interface: String, reason: String },
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Table(#[from] maps::TableError),
    #[error("checking the pinned maps: {0}")]
    Pins(#[from] pins::PinError),
}

/// Which packets produce flow events (Cilium's monitor aggregation levels).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum MonitorAggregation {
    /// Every packet.
    None,
    /// Drops, new connections, TCP SYN/FIN/RST and policy verdicts.
    #[default]
    Medium,
}

impl MonitorAggregation {
    /// The value of the object's `WEIR_MONITOR_AGGREGATION` global.
    pub fn abi_value(self) -> u8 {
        match self {
            MonitorAggregation::None => weir_abi::events::AGGREGATION_NONE,
            MonitorAggregation::Medium => weir_abi::events::AGGREGATION_MEDIUM,
        }
    }
}

/// How a pod's packets reach their next hop (Cilium's
/// `bpf.hostLegacyRouting`): see docs/datapath.md, host routing.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum HostRouting {
    /// A from-pod packet to a pod address whose verdict passed is
    /// redirected by the programs to the device the FIB routes it through
    /// (the destination's own programs still run); the rest goes up the
    /// stack.
    #[default]
    Bpf,
    /// Every packet goes up the host's IP stack, which routes it.
    Legacy,
}

impl HostRouting {
    /// The value of the object's `WEIR_HOST_ROUTING` global.
    pub fn abi_value(self) -> u8 {
        match self {
            HostRouting::Bpf => 1,
            HostRouting::Legacy => 0,
        }
    }
}

/// Load-time settings of the kernel programs.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Which packets produce events.
    pub monitor_aggregation: MonitorAggregation,
    /// The node's address: the source of per-packet SNAT toward backends on
    /// other nodes (without it those backends are unreachable per packet).
    pub node_ipv4: Option<std::net::Ipv4Addr>,
    /// The node's IPv6 address: the same for IPv6 NodePorts.
    pub node_ipv6: Option<std::net::Ipv6Addr>,
    /// Maglev: slots per service table (a prime) and how many services can
    /// have a table (`weir_lb4_maglev` holds tables × size entries).
    pub maglev_table_size: u32,
    pub maglev_tables: u32,
    /// Capacities other than the object's, by map name (the fault suites
    /// fill small maps; a map pinned with another capacity is replaced, see
    /// `pins`).
    pub max_entries: Vec<(&'static str, u32)>,
    /// The budget of new conntrack and service NAT entries each endpoint's
    /// packets may insert: entries per second (0: no budget) and burst
    /// (`weir_ct_budget`).
    pub ct_new_rate: u32,
    pub ct_new_burst: u32,
    /// eBPF host routing or the stack's.
    pub host_routing: HostRouting,
    /// BPF masquerading of pods' connections out of the cluster
    /// (`--enable-ipv4-masquerade`).
    pub masquerade: bool,
    /// Load the tunnel device's programs too (tunnel mode). Each program
    /// loaded is verified at the agent's start, which the agent-kill fault
    /// suite bounds; native routing leaves them out.
    pub tunnel_programs: bool,
}

/// The default budget of new entries per endpoint: well above what one pod
/// opens in the benchmarks (1,000 connections per second, 10,000 new flows
/// at once), far below what fills the conntrack map in a second.
pub const DEFAULT_CT_NEW_RATE: u32 = 2_000;
pub const DEFAULT_CT_NEW_BURST: u32 = 20_000;

/// Cilium's default Maglev table size is 16381; Weir defaults to a smaller
/// prime from the same list, enough for backend sets of up to ~100.
pub const DEFAULT_MAGLEV_TABLE_SIZE: u32 = 1021;
pub const DEFAULT_MAGLEV_TABLES: u32 = 256;

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            monitor_aggregation: MonitorAggregation::Medium,
            node_ipv4: None,
            node_ipv6: None,
            maglev_table_size: DEFAULT_MAGLEV_TABLE_SIZE,
            maglev_tables: DEFAULT_MAGLEV_TABLES,
            max_entries: Vec::new(),
            ct_new_rate: DEFAULT_CT_NEW_RATE,
            ct_new_burst: DEFAULT_CT_NEW_BURST,
            host_routing: HostRouting::default(),
            masquerade: false,
            tunnel_programs: true,
        }
    }
}

/// The loaded datapath: programs verified and loaded into the kernel, maps
/// created (or reused) and pinned.
pub struct Datapath {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    pins: pins::PinCheck,
}

impl Datapath {
    /// Loads the embedded object with maps pinned under `pin_dir`.
    pub fn load(pin_dir: &Path) -> Result<Datapath, DatapathError> {
        Datapath::load_with(pin_dir, &LoadOptions::default())
    }

    /// Loads the embedded object with `options`.
    pub fn load_with(pin_dir: &Path, options: &LoadOptions) -> Result<Datapath, DatapathError> {
        Datapath::load_object(object()?, pin_dir, options)
    }

    /// Loads `object` with maps pinned under `pin_dir`, and every program in it.
    pub fn load_object(
        object: &[u8],
        pin_dir: &Path,
        options: &LoadOptions,
    ) -> Result<Datapath, DatapathError> {
        std::fs::create_dir_all(pin_dir).map_err(|source| DatapathError::PinDir {
            path: pin_dir.to_path_buf(),
            source,
        })?;
        if !is_bpffs(pin_dir) {
            return Err(DatapathError::NotBpffs {
                path: pin_dir.to_path_buf(),
            });
        }
        let node_ipv4 = options
            .node_ipv4
            .map_or(0, |a| u32::from_ne_bytes(a.octets()));
        let node_ipv6 = options.node_ipv6.map_or([0; 16], |a| a.octets());
        let maglev_entries = options
            .maglev_table_size
            .saturating_mul(options.maglev_tables)
            .max(1);
        let aggregation = options.monitor_aggregation.abi_value();
        let host_routing = options.host_routing.abi_value();
        let masquerade = u8::from(options.masquerade);
        let (ct_interval, ct_tolerance) =
            weir_abi::conntrack::ct_budget_globals(options.ct_new_rate, options.ct_new_burst);
        // The maglev table's size and any capacity the options set: what
        // the pins must match and what the loader creates.
        let mut capacities = vec![(weir_abi::map_names::LB4_MAGLEV, maglev_entries)];
        capacities.extend(options.max_entries.iter().copied());
        let expected = pins::expected(object, &capacities)?;
        let pins = pins::check(pin_dir, &expected)?;
        for pin in &pins.replaced {
            tracing::warn!(pin_dir = %pin_dir.display(), map = %pin.map, reason = %pin.reason,
                "pinned map does not match this agent's datapath: replaced by a new map; \
                 the programs attached keep the old one until they are replaced");
        }
        let mut loader = EbpfLoader::new();
        loader
            .default_map_pin_directory(pin_dir)
            .override_global("WEIR_MONITOR_AGGREGATION", &aggregation, true)
            .override_global("WEIR_NODE_IPV4", &node_ipv4, true)
            .override_global("WEIR_NODE_IPV6", &node_ipv6, true)
            .override_global("WEIR_LB_MAGLEV_SIZE", &options.maglev_table_size, true)
            .override_global("WEIR_CT_NEW_INTERVAL_NS", &ct_interval, true)
            .override_global("WEIR_CT_NEW_TOLERANCE_NS", &ct_tolerance, true)
            .override_global("WEIR_HOST_ROUTING", &host_routing, true)
            .override_global("WEIR_MASQUERADE", &masquerade, true);
        for (name, entries) in &capacities {
            loader.map_max_entries(name, *entries);
        }
        let ebpf = loader.load(object)?;
        let mut datapath = Datapath {
            ebpf,
            pin_dir: pin_dir.to_path_buf(),
            pins,
        };
        // The pod programs first: the largest, verified longest.
        let names: Vec<&'static str> = ProgramKind::ALL
            .into_iter()
            .filter(|kind| !kind.is_overlay() || options.tunnel_programs)
            .map(ProgramKind::name)
            .chain(SockProgram::ALL.into_iter().map(SockProgram::name))
            .collect();
        load::programs(&mut datapath.ebpf, &names)?;
        if !datapath.pins.fill_before_attach {
            pins::record(pin_dir, true)?;
        }
        Ok(datapath)
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// The pins this load replaced because they did not match the object.
    pub fn replaced_pins(&self) -> &[pins::StalePin] {
        &self.pins.replaced
    }

    /// True when maps were replaced (now, or by an earlier start that did
    /// not get to attach): the programs attached still use the old maps,
    /// and attaching the new programs before the new maps hold the desired
    /// state would open a gap in enforcement. Fill them first, attach, then
    /// call [`Datapath::serving`].
    pub fn fill_before_attach(&self) -> bool {
        self.pins.fill_before_attach
    }

    /// Records that the programs using these maps are attached: the next
    /// start reuses the pins and attaches at once.
    pub fn serving(&mut self) -> Result<(), DatapathError> {
        pins::record(&self.pin_dir, true)?;
        self.pins.fill_before_attach = false;
        Ok(())
    }

    /// A loaded program, e.g. to run it with `BPF_PROG_TEST_RUN`.
    pub fn program_mut(
        &mut self,
        kind: ProgramKind,
    ) -> Result<&mut SchedClassifier, DatapathError> {
        let name = kind.name();
        self.ebpf
            .program_mut(name)
            .ok_or(DatapathError::MissingProgram { name })?
            .try_into()
            .map_err(|source| DatapathError::Program { name, source })
    }

    /// Reads the packet/byte counters, summed over CPUs.
    pub fn metrics(&self) -> Result<MetricsSnapshot, DatapathError> {
        Ok(metrics::read(&self.ebpf)?)
    }

    /// Takes the event ring buffer out of the object, for a reader task.
    pub fn take_events(&mut self) -> Result<aya::maps::RingBuf<aya::maps::MapData>, DatapathError> {
        let name = weir_abi::map_names::EVENTS;
        let map = self
            .ebpf
            .take_map(name)
            .ok_or(maps::TableError::Missing(name))?;
        aya::maps::RingBuf::try_from(map)
            .map_err(|source| maps::TableError::Map { map: name, source }.into())
    }

    /// The loaded object, for the typed map accessors in [`maps`].
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Attaches the programs of `hook` to `interface` (in the caller's
    /// network namespace) and pins the links; replaces the programs of an
    /// existing pinned attachment atomically.
    pub fn attach(&mut self, interface: &str, hook: Hook) -> Result<(), DatapathError> {
        for point in hook.points() {
            attach::attach(self, interface, point)?;
        }
        Ok(())
    }

    /// Attaches the socket LB programs to a cgroup v2 directory (every
    /// socket of its subtree) and pins the links.
    pub fn attach_cgroup(&mut self, cgroup: &Path) -> Result<(), DatapathError> {
        cgroup::attach(self, cgroup)
    }

    /// Detaches what [`Datapath::attach_cgroup`] attached.
    pub fn detach_cgroup(&self, cgroup: &Path) -> Result<(), DatapathError> {
        cgroup::detach(&self.pin_dir, cgroup)
    }

    /// Detaches what [`Datapath::attach`] attached with `hook`.
    /// Removes link pins whose interface is gone (see
    /// [`attach::remove_orphaned_pins`]); returns how many.
    pub fn remove_orphaned_pins(&self) -> Result<usize, DatapathError> {
        attach::remove_orphaned_pins(&self.pin_dir)
            .map(|removed| removed.len())
            .map_err(|e| DatapathError::Attach {
                interface: "*".into(),
                reason: format!("sweeping {}: {e}", self.pin_dir.join("links").display()),
            })
    }

    pub fn detach(&self, interface: &str, hook: Hook) -> Result<(), DatapathError> {
        detach_pinned(&self.pin_dir, interface, hook)
    }

    /// Removes the pinned maps (the links are removed by [`Datapath::detach`]).
    /// Used when a datapath instance is torn down for good, as in tests.
    pub fn unpin_all(self) -> io::Result<()> {
        let pin_dir = self.pin_dir.clone();
        drop(self);
        remove_pins(&pin_dir)
    }
}

/// Detaches `hook` from `interface` by removing its pinned links; works
/// without a loaded datapath (e.g. from a cleanup path after a crash).
pub fn detach_pinned(pin_dir: &Path, interface: &str, hook: Hook) -> Result<(), DatapathError> {
    for point in hook.points() {
        attach::detach(pin_dir, interface, point)?;
    }
    Ok(())
}

/// Removes every pin under `pin_dir` (maps and links) and the directory.
pub fn remove_pins(pin_dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(pin_dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// True if `path` lives on a bpf filesystem.
fn is_bpffs(path: &Path) -> bool {
    use nix::sys::statfs::{statfs, BPF_FS_MAGIC};
    statfs(path).is_ok_and(|fs| fs.filesystem_type() == BPF_FS_MAGIC)
}

/// The datapath shared by the endpoint logic (attach/detach) and the
/// reconciler (maps). Lock order: the agent's state lock, then this.
#[derive(Clone)]
pub struct SharedDatapath(std::sync::Arc<std::sync::Mutex<Datapath>>);

impl SharedDatapath {
    pub fn new(datapath: Datapath) -> SharedDatapath {
        SharedDatapath(std::sync::Arc::new(std::sync::Mutex::new(datapath)))
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Datapath> {
        // Map writes are single syscalls: a panic elsewhere cannot leave the
        // datapath half-changed, so a poisoned lock is still usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
