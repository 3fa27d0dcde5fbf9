//! TCX attachment of the programs to interfaces, as bpffs-pinned links.
//!
//! A pinned TCX link keeps its program attached while the agent is not
//! running (restart-safe) and needs no qdisc, so detaching leaves nothing
//! behind on the interface. Pins live at
//! `<pin dir>/links/<interface>@<ifindex>@<ingress|egress>` (bpffs refuses
//! names with a dot): the ifindex in
//! the name tells a live attachment from the stale pin of an interface that
//! was deleted and re-created under the same name.

use std::io;
use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcAttachOptions};
use aya::programs::{LinkOrder, TcAttachType};

use super::{Datapath, DatapathError, ProgramKind};

/// Which side of a device the programs guard.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// The host-side veth of a pod: from-pod on ingress, to-pod on egress.
    Pod,
    /// A node's network device: from-netdev on ingress, to-netdev on egress.
    Netdev,
    /// The tunnel device (tunnel mode): from-overlay on ingress, to-overlay
    /// on egress.
    Overlay,
}

/// One program at one TC hook.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct AttachPoint {
    pub program: ProgramKind,
    pub ingress: bool,
}

impl Hook {
    pub const fn points(self) -> [AttachPoint; 2] {
        let (from, to) = match self {
            Hook::Pod => (ProgramKind::FromPod, ProgramKind::ToPod),
            Hook::Netdev => (ProgramKind::FromNetdev, ProgramKind::ToNetdev),
            Hook::Overlay => (ProgramKind::FromOverlay, ProgramKind::ToOverlay),
        };
        [
            AttachPoint {
                program: from,
                ingress: true,
            },
            AttachPoint {
                program: to,
                ingress: false,
            },
        ]
    }
}

impl AttachPoint {
    fn tc_type(self) -> TcAttachType {
        if self.ingress {
            TcAttachType::Ingress
        } else {
            TcAttachType::Egress
        }
    }

    fn suffix(self) -> &'static str {
        if self.ingress {
            "ingress"
        } else {
            "egress"
        }
    }
}

fn links_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join("links")
}

fn link_pin(pin_dir: &Path, interface: &str, ifindex: u32, point: AttachPoint) -> PathBuf {
    links_dir(pin_dir).join(format!("{interface}@{ifindex}@{}", point.suffix()))
}

/// Pins of `interface` at `point`, whatever ifindex they were made for.
fn pins_of(pin_dir: &Path, interface: &str, point: AttachPoint) -> io::Result<Vec<PathBuf>> {
    let prefix = format!("{interface}@");
    let suffix = format!("@{}", point.suffix());
    let entries = match std::fs::read_dir(links_dir(pin_dir)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut pins = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(&suffix) {
            pins.push(entry.path());
        }
    }
    Ok(pins)
}

/// Removes the link pins whose interface no longer exists (by the ifindex
/// they were made for, and its name): the attachment went with the
/// interface and only the pin file is left, e.g. of a pod whose ADD died
/// with the agent before the endpoint was recorded. Returns what it removed.
pub(super) fn remove_orphaned_pins(pin_dir: &Path) -> io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(links_dir(pin_dir)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Only TCX links (`<interface>@<ifindex>@<ingress|egress>`): the
        // socket LB's cgroup links share the directory.
        let mut parts = name.split('@');
        let (Some(interface), Some(ifindex), Some("ingress" | "egress"), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Ok(ifindex) = ifindex.parse::<u32>() else {
            continue;
        };
        let exists = nix::net::if_::if_indextoname(ifindex)
            .is_ok_and(|current| current.to_string_lossy() == interface);
        if !exists {
            std::fs::remove_file(entry.path())?;
            removed.push(entry.path());
        }
    }
    Ok(removed)
}

pub(super) fn attach(
    datapath: &mut Datapath,
    interface: &str,
    point: AttachPoint,
) -> Result<(), DatapathError> {
    let fail = |reason: String| DatapathError::Attach {
        interface: interface.to_string(),
        reason,
    };
    let ifindex = nix::net::if_::if_nametoindex(interface)
        .map_err(|e| fail(format!("no such interface: {e}")))?;
    let pin_dir = datapath.pin_dir.clone();
    let pin = link_pin(&pin_dir, interface, ifindex, point);
    for stale in pins_of(&pin_dir, interface, point).map_err(|e| fail(e.to_string()))? {
        if stale != pin {
            // The interface this pin was made for no longer exists, and with
            // it the attachment; only the pin file is left.
            let _ = std::fs::remove_file(stale);
        }
    }
    std::fs::create_dir_all(links_dir(&pin_dir)).map_err(|e| fail(e.to_string()))?;

    let program = datapath.program_mut(point.program)?;
    if !pin.exists() {
        let id = program
            .attach_with_options(
                interface,
                point.tc_type(),
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(|e| fail(format!("TCX attach of {}: {e}", point.program.name())))?;
        let link = program.take_link(id).map_err(|e| fail(e.to_string()))?;
        let fd_link = FdLink::try_from(link).map_err(|e| fail(e.to_string()))?;
        fd_link
            .pin(&pin)
            .map_err(|e| fail(format!("pinning {}: {e}", pin.display())))?;
        return Ok(());
    }
    // Already attached (an earlier agent run): swap in this program.
    let pinned = PinnedLink::from_pin(&pin)
        .map_err(|e| fail(format!("opening {}: {e:?}", pin.display())))?;
    let link = SchedClassifierLink::try_from(FdLink::from(pinned))
        .map_err(|e| fail(format!("pinned link {}: {e}", pin.display())))?;
    let link_id = program
        .attach_to_link(link)
        .map_err(|e| fail(format!("replacing {}: {e}", point.program.name())))?;
    // The pin keeps the link alive; the program need not hold it too.
    let _ = program.take_link(link_id);
    Ok(())
}

pub(super) fn detach(
    pin_dir: &Path,
    interface: &str,
    point: AttachPoint,
) -> Result<(), DatapathError> {
    let pins = pins_of(pin_dir, interface, point).map_err(|e| DatapathError::Attach {
        interface: interface.to_string(),
        reason: e.to_string(),
    })?;
    for pin in pins {
        // Detached in the call: dropping the pin alone lets the program
        // run until the kernel frees the pin's inode.
        super::link_detach::detach_and_unpin(&pin).map_err(|e| DatapathError::Attach {
            interface: interface.to_string(),
            reason: format!("detaching {}: {e}", pin.display()),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tcx_pins_of_interfaces_that_are_gone_are_removed() {
        let pin_dir = std::env::temp_dir().join(format!("weir-orphans-{}", std::process::id()));
        let links = links_dir(&pin_dir);
        std::fs::create_dir_all(&links).unwrap();
        let lo = nix::net::if_::if_nametoindex("lo").unwrap();
        let names = [
            format!("lo@{lo}@ingress"),
            "lxcgone@4000000@egress".to_string(),
            format!("lxcrenamed@{lo}@ingress"),
            "cgroup@4000000@connect4".to_string(),
            "unrelated-file".to_string(),
        ];
        for name in &names {
            std::fs::write(links.join(name), b"").unwrap();
        }
        let mut removed: Vec<String> = remove_orphaned_pins(&pin_dir)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        removed.sort();
        let mut left: Vec<String> = std::fs::read_dir(&links)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let _ = std::fs::remove_dir_all(&pin_dir);
        assert_eq!(removed, [names[1].clone(), names[2].clone()]);
        assert_eq!(
            left,
            [
                names[3].clone(),
                names[0].clone(),
                "unrelated-file".to_string()
            ]
        );
    }
}
