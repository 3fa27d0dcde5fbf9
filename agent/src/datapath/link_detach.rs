//! Detaching a pinned BPF link at once.
//!
//! Unlinking a link's bpffs pin drops the pin's reference only when the
//! inode is freed, from an RCU callback that defers the release to a
//! workqueue: the program can go on running for a while after
//! `remove_file` returns. `BPF_LINK_DETACH` on the link detaches it in the
//! call, whoever else holds it. aya (0.14) has no call for it on a pinned
//! link, so this makes the two `bpf(2)` commands itself.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `enum bpf_cmd` values (include/uapi/linux/bpf.h).
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_DETACH: libc::c_long = 34;

/// The `BPF_OBJ_GET` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
}

/// The `link_detach` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct LinkDetachAttr {
    link_fd: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised `repr(C)` prefix of `union
    // bpf_attr` for `cmd`, and its size is passed with it; the kernel
    // treats the rest of the union as zero.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret)
}

/// Detaches the link pinned at `pin` (its program stops running on return)
/// and removes the pin. A link already detached (its interface deleted)
/// only loses its pin.
pub fn detach_and_unpin(pin: &Path) -> io::Result<()> {
    let path = CString::new(pin.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the pin path"))?;
    let mut get = ObjGetAttr {
        pathname: path.as_ptr() as u64,
        ..Default::default()
    };
    let fd = bpf(BPF_OBJ_GET, &mut get)?;
    // SAFETY: BPF_OBJ_GET returned a new file descriptor that nothing else
    // owns.
    let link = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut detach = LinkDetachAttr {
        link_fd: link.as_raw_fd() as u32,
    };
    match bpf(BPF_LINK_DETACH, &mut detach) {
        // ENOLINK: detached already (its device went).
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOLINK) => {}
        Err(e) => return Err(e),
    }
    std::fs::remove_file(pin)
}
