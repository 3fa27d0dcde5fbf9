//! Pinned maps an earlier agent left that this object cannot use.
//!
//! aya reuses a pin by name without comparing it with the object's map
//! definition, so a pin from an agent built with another layout (key or
//! value size, map type, max entries, flags) would be handed to programs
//! that read it wrongly. Before loading, every pin the object would reuse is
//! compared with the object's definition, and the ABI version recorded
//! beside the pins (the bpffs symlink `<pin dir>/abi`, target `v<N>` or
//! `v<N>-pending`; bpffs holds no regular files) with
//! [`weir_abi::ABI_VERSION`]. A version that differs marks every pin stale
//! (some layout changed and the version says so even when sizes agree).
//!
//! Replacing without a gap in enforcement: a stale pin is only unlinked.
//! The programs attached by the earlier agent hold their own references to
//! the old maps, so they keep enforcing exactly what was last written (as
//! while the agent is down) until the new programs replace them. The new
//! object creates fresh maps under the same names; the agent must fill them
//! from the desired state before attaching (TCX link updates swap programs
//! atomically), see [`super::Datapath::fill_before_attach`]. The version is
//! recorded `v<N>-pending` until then, so an agent that dies between the
//! replacement and the attach defers the attach again at its next start.
//! A directory with pins and no version (agents before versioning) is
//! checked by layout only.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use aya::maps::{MapData, MapType};
use aya_obj::generated::bpf_map_type;
use aya_obj::maps::PinningType;
use weir_abi::ABI_VERSION;

/// The symlink beside the pins that records their ABI version.
pub const ABI_LINK: &str = "abi";

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("parsing the datapath object: {0}")]
    Object(#[from] aya_obj::ParseError),
    #[error("pinned map {path}: {source}")]
    Open {
        path: PathBuf,
        source: aya::maps::MapError,
    },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} does not name an ABI version (found {found:?})")]
    BadVersion { path: PathBuf, found: String },
}

/// A map's shape as the kernel knows it.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct MapLayout {
    pub map_type: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

/// A pin this object cannot reuse, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StalePin {
    pub map: String,
    pub reason: String,
}

impl fmt::Display for StalePin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.map, self.reason)
    }
}

/// The ABI version recorded beside the pins.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// No record: a fresh directory, or pins of an agent before versioning.
    None,
    /// The programs attached use maps of this version.
    Serving(u32),
    /// Maps of this version were created but not yet filled and attached.
    Pending(u32),
}

/// What [`check`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinCheck {
    /// The pins unlinked (the object creates fresh maps in their place).
    pub replaced: Vec<StalePin>,
    /// The new maps must be filled before programs are attached.
    pub fill_before_attach: bool,
}

/// Every pinned map of `object` with the layout the loader will create:
/// the object's definitions with the loader's overrides applied
/// (`max_entries` per map, ring buffers sized as aya sizes them).
pub fn expected(
    object: &[u8],
    max_entries: &[(&str, u32)],
) -> Result<BTreeMap<String, MapLayout>, PinError> {
    let object = aya_obj::Object::parse(object)?;
    let mut layouts = BTreeMap::new();
    for (name, map) in &object.maps {
        if map.pinning() != PinningType::ByName {
            continue;
        }
        let Some(map_type) = map_type(map.map_type()) else {
            continue;
        };
        let mut layout = MapLayout {
            map_type,
            key_size: map.key_size(),
            value_size: map.value_size(),
            max_entries: max_entries
                .iter()
                .find(|(n, _)| n == name)
                .map_or(map.max_entries(), |(_, v)| *v),
            flags: map.map_flags(),
        };
        if map_type == MapType::RingBuf {
            layout.value_size = 0;
            layout.max_entries = ring_size(layout.max_entries, page_size());
        }
        layouts.insert(name.clone(), layout);
    }
    Ok(layouts)
}

fn map_type(raw: u32) -> Option<MapType> {
    MapType::try_from(bpf_map_type::try_from(raw).ok()?).ok()
}

/// aya's ring buffer size: whole pages, a power of two of them.
fn ring_size(bytes: u32, page: u32) -> u32 {
    if bytes == 0 || page == 0 {
        return bytes;
    }
    page.saturating_mul(bytes.div_ceil(page).next_power_of_two())
}

fn page_size() -> u32 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|size| u32::try_from(size).ok())
        .unwrap_or(4096)
}

/// Why a pin of layout `found` cannot serve as `expected`; `None` if it can.
pub fn mismatch(expected: &MapLayout, found: &MapLayout) -> Option<String> {
    let mut differences = Vec::new();
    if expected.map_type != found.map_type {
        differences.push(format!(
            "map type {:?}, expected {:?}",
            found.map_type, expected.map_type
        ));
    }
    let sizes = [
        ("key size", found.key_size, expected.key_size),
        ("value size", found.value_size, expected.value_size),
        ("max entries", found.max_entries, expected.max_entries),
        ("flags", found.flags, expected.flags),
    ];
    for (what, found, expected) in sizes {
        if found != expected {
            differences.push(format!("{what} {found}, expected {expected}"));
        }
    }
    (!differences.is_empty()).then(|| differences.join(", "))
}

/// The layout of the map pinned at `path`, `None` when nothing is pinned.
pub fn pinned(path: &Path) -> Result<Option<MapLayout>, PinError> {
    if !path.exists() {
        return Ok(None);
    }
    let open = |source| PinError::Open {
        path: path.to_path_buf(),
        source,
    };
    let info = MapData::from_pin(path)
        .map_err(open)?
        .info()
        .map_err(open)?;
    Ok(Some(MapLayout {
        map_type: info.map_type().map_err(open)?,
        key_size: info.key_size(),
        value_size: info.value_size(),
        max_entries: info.max_entries(),
        flags: info.map_flags(),
    }))
}

/// Reads the version recorded in `pin_dir`.
pub fn recorded(pin_dir: &Path) -> Result<Recorded, PinError> {
    let path = pin_dir.join(ABI_LINK);
    let target = match std::fs::read_link(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Recorded::None),
        Err(source) => return Err(PinError::Io { path, source }),
        Ok(target) => target.to_string_lossy().into_owned(),
    };
    parse_recorded(&target).ok_or(PinError::BadVersion {
        path,
        found: target,
    })
}

fn parse_recorded(target: &str) -> Option<Recorded> {
    let version = target.strip_prefix('v')?;
    match version.strip_suffix("-pending") {
        Some(pending) => pending.parse().ok().map(Recorded::Pending),
        None => version.parse().ok().map(Recorded::Serving),
    }
}

/// Records that the pins in `pin_dir` are of this agent's ABI version, and
/// whether programs using them are attached (`serving`) or not yet.
pub fn record(pin_dir: &Path, serving: bool) -> Result<(), PinError> {
    let path = pin_dir.join(ABI_LINK);
    let target = if serving {
        format!("v{ABI_VERSION}")
    } else {
        format!("v{ABI_VERSION}-pending")
    };
    if std::fs::read_link(&path).is_ok_and(|t| t.as_os_str() == target.as_str()) {
        return Ok(());
    }
    let io = |source| PinError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    std::os::unix::fs::symlink(&target, &path).map_err(io)
}

/// The pins of `pin_dir` this object cannot reuse: a layout that differs
/// from `expected`, or every pin when the recorded version differs.
pub fn stale(
    pin_dir: &Path,
    expected: &BTreeMap<String, MapLayout>,
    recorded: Recorded,
) -> Result<Vec<StalePin>, PinError> {
    let old_version = match recorded {
        Recorded::Serving(v) | Recorded::Pending(v) if v != ABI_VERSION => Some(v),
        _ => None,
    };
    let mut stale = Vec::new();
    for (name, layout) in expected {
        let Some(found) = pinned(&pin_dir.join(name))? else {
            continue;
        };
        let reason = match old_version {
            Some(v) => Some(format!(
                "pinned with ABI version {v}, this agent has {ABI_VERSION}"
            )),
            None => mismatch(layout, &found),
        };
        if let Some(reason) = reason {
            stale.push(StalePin {
                map: name.clone(),
                reason,
            });
        }
    }
    Ok(stale)
}

/// Checks the pins of `pin_dir` against `expected` before a load, unlinks
/// the stale ones and records the version (pending when the new maps must
/// be filled before attaching).
pub fn check(pin_dir: &Path, expected: &BTreeMap<String, MapLayout>) -> Result<PinCheck, PinError> {
    let recorded = recorded(pin_dir)?;
    let replaced = stale(pin_dir, expected, recorded)?;
    for pin in &replaced {
        let path = pin_dir.join(&pin.map);
        std::fs::remove_file(&path).map_err(|source| PinError::Io { path, source })?;
    }
    let fill_before_attach = !replaced.is_empty() || recorded == Recorded::Pending(ABI_VERSION);
    if fill_before_attach {
        record(pin_dir, false)?;
    }
    Ok(PinCheck {
        replaced,
        fill_before_attach,
    })
}

#[cfg(test)]
mod tests;
