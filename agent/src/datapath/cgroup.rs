//! Socket LB attachment: the cgroup sock_addr programs on a cgroup v2
//! directory, as bpffs-pinned links.
//!
//! Every socket of every process in the cgroup's subtree goes through the
//! hooks, whatever network namespace it is in; a node attaches them to the
//! cgroup its pods (and host processes) live under. Pins live at
//! `<pin dir>/links/cgroup@<inode>@<hook>`, the cgroup directory's inode
//! naming the cgroup (bpffs refuses dots and slashes in names).

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use aya::programs::links::FdLink;
use aya::programs::{CgroupAttachMode, CgroupSockAddr};
use weir_abi::program_names;

use super::{Datapath, DatapathError};

/// The socket LB programs: one per hook and family.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum SockProgram {
    Connect4,
    Sendmsg4,
    Recvmsg4,
    Getpeername4,
    Connect6,
    Sendmsg6,
    Recvmsg6,
    Getpeername6,
}

impl SockProgram {
    pub const ALL: [SockProgram; 8] = [
        SockProgram::Connect4,
        SockProgram::Sendmsg4,
        SockProgram::Recvmsg4,
        SockProgram::Getpeername4,
        SockProgram::Connect6,
        SockProgram::Sendmsg6,
        SockProgram::Recvmsg6,
        SockProgram::Getpeername6,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            SockProgram::Connect4 => program_names::SOCK_CONNECT4,
            SockProgram::Sendmsg4 => program_names::SOCK_SENDMSG4,
            SockProgram::Recvmsg4 => program_names::SOCK_RECVMSG4,
            SockProgram::Getpeername4 => program_names::SOCK_GETPEERNAME4,
            SockProgram::Connect6 => program_names::SOCK_CONNECT6,
            SockProgram::Sendmsg6 => program_names::SOCK_SENDMSG6,
            SockProgram::Recvmsg6 => program_names::SOCK_RECVMSG6,
            SockProgram::Getpeername6 => program_names::SOCK_GETPEERNAME6,
        }
    }

    fn hook(self) -> &'static str {
        match self {
            SockProgram::Connect4 => "connect4",
            SockProgram::Sendmsg4 => "sendmsg4",
            SockProgram::Recvmsg4 => "recvmsg4",
            SockProgram::Getpeername4 => "getpeername4",
            SockProgram::Connect6 => "connect6",
            SockProgram::Sendmsg6 => "sendmsg6",
            SockProgram::Recvmsg6 => "recvmsg6",
            SockProgram::Getpeername6 => "getpeername6",
        }
    }
}

fn fail(cgroup: &Path, reason: String) -> DatapathError {
    DatapathError::Attach {
        interface: format!("cgroup {}", cgroup.display()),
        reason,
    }
}

/// An error with its sources (aya's Display leaves out the errno).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

fn pin_path(pin_dir: &Path, cgroup: &Path, program: SockProgram) -> Result<PathBuf, DatapathError> {
    let inode = std::fs::metadata(cgroup)
        .map_err(|e| fail(cgroup, e.to_string()))?
        .ino();
    Ok(pin_dir
        .join("links")
        .join(format!("cgroup@{inode}@{}", program.hook())))
}

pub(super) fn sock_program(
    datapath: &mut Datapath,
    program: SockProgram,
) -> Result<&mut CgroupSockAddr, DatapathError> {
    let name = program.name();
    datapath
        .ebpf
        .program_mut(name)
        .ok_or(DatapathError::MissingProgram { name })?
        .try_into()
        .map_err(|source| DatapathError::Program { name, source })
}

/// Attaches every socket LB program to `cgroup` and pins the links. An
/// attachment left by an earlier agent is replaced: the new link is made
/// first (multi-attach), then the old pin is removed, so no socket goes
/// untranslated in between.
pub(super) fn attach(datapath: &mut Datapath, cgroup: &Path) -> Result<(), DatapathError> {
    let pin_dir = datapath.pin_dir.clone();
    std::fs::create_dir_all(pin_dir.join("links")).map_err(|e| fail(cgroup, e.to_string()))?;
    let dir = File::open(cgroup).map_err(|e| fail(cgroup, format!("open: {e}")))?;
    for program in SockProgram::ALL {
        let pin = pin_path(&pin_dir, cgroup, program)?;
        let prog = sock_program(datapath, program)?;
        let id = prog
            // Links take no attach flags (the kernel refuses them) and are
            // always multi-attach: "Single" passes none.
            .attach(&dir, CgroupAttachMode::Single)
            .map_err(|e| fail(cgroup, format!("attach {}: {}", program.name(), chain(&e))))?;
        let link = prog
            .take_link(id)
            .map_err(|e| fail(cgroup, e.to_string()))?;
        let link = FdLink::try_from(link).map_err(|e| fail(cgroup, e.to_string()))?;
        match std::fs::remove_file(&pin) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(fail(cgroup, format!("removing {}: {e}", pin.display())))
            }
            _ => {}
        }
        link.pin(&pin)
            .map_err(|e| fail(cgroup, format!("pinning {}: {e}", pin.display())))?;
    }
    Ok(())
}

/// Removes the pinned socket LB links of `cgroup` (detaching the programs).
pub fn detach(pin_dir: &Path, cgroup: &Path) -> Result<(), DatapathError> {
    for program in SockProgram::ALL {
        let pin = pin_path(pin_dir, cgroup, program)?;
        match std::fs::remove_file(&pin) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(fail(cgroup, format!("removing {}: {e}", pin.display())))
            }
            _ => {}
        }
    }
    Ok(())
}
