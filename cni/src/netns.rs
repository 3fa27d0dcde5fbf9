//! Running netlink work inside another network namespace.
//!
//! A netlink socket talks to the namespace of the thread that created it, and
//! `setns` moves only the calling thread. So the work runs on a dedicated
//! thread that enters the namespace, builds its own single-threaded runtime
//! and opens its socket there; the thread (and with it the namespace switch)
//! ends with the work, so nothing else ever runs in the wrong namespace.

use std::fs::File;
use std::future::Future;
use std::path::Path;

use nix::sched::{setns, CloneFlags};
use nix::sys::statfs::{fstatfs, NSFS_MAGIC};
use rtnetlink::Handle;

use crate::netlink::NetlinkError;

/// Opens a namespace file (e.g. `/run/netns/x` or `/proc/<pid>/ns/net`),
/// refusing files that are not namespaces: an unmounted `/run/netns` bind
/// mount leaves an ordinary empty file behind.
pub fn open(path: &Path) -> Result<File, NetlinkError> {
    let file = File::open(path).map_err(|source| NetlinkError::OpenNetns {
        path: path.to_path_buf(),
        source,
    })?;
    let filesystem = fstatfs(&file).map_err(|errno| NetlinkError::OpenNetns {
        path: path.to_path_buf(),
        source: errno.into(),
    })?;
    if filesystem.filesystem_type() != NSFS_MAGIC {
        return Err(NetlinkError::NotANamespace(path.to_path_buf()));
    }
    Ok(file)
}

/// A netlink handle in the calling thread's namespace, served by a task on
/// the current tokio runtime.
pub fn connect() -> Result<Handle, NetlinkError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
    tokio::spawn(connection);
    Ok(handle)
}

/// Runs `work` with a netlink handle inside the namespace `netns` and returns
/// its result.
pub async fn run_in<F, Fut, T>(netns: &File, work: F) -> Result<T, NetlinkError>
where
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, NetlinkError>>,
    T: Send + 'static,
{
    let netns = netns.try_clone().map_err(NetlinkError::Worker)?;
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("weir-netns".into())
        .spawn(move || {
            // The receiver only goes away if the caller was cancelled.
            let _ = sender.send(run_entered(&netns, work));
        })
        .map_err(NetlinkError::Worker)?;
    receiver.await.map_err(|_| NetlinkError::WorkerPanicked)?
}

fn run_entered<F, Fut, T>(netns: &File, work: F) -> Result<T, NetlinkError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T, NetlinkError>>,
{
    setns(netns, CloneFlags::CLONE_NEWNET).map_err(NetlinkError::EnterNetns)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(NetlinkError::Worker)?;
    runtime.block_on(async move { work(connect()?).await })
}
