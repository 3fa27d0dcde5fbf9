//! Cluster state from a directory of Kubernetes YAML manifests: the agent's
//! source when there is no Kubernetes API (the lab writes one object per
//! file there). The Kubernetes watcher will feed the same [`ClusterManifests`].
//!
//! Every file is parsed on its own: a file that does not parse is reported
//! with its reason and contributes nothing, while every other file still
//! applies, so one bad manifest never takes the rest down or half-applies.
//! A file that parsed before and no longer does keeps the objects it held in
//! force (last known good, shown as stale) until it parses again or is
//! deleted; a file that never parsed contributes nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};

use weir_types::NamespacedName;

use crate::cluster::last_known_good::Version;
use crate::cluster::manifest::{self, Namespace, Object, Pod, PolicyDocument};
use crate::wake::Wake;

/// Everything the directory declares, by key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterManifests {
    /// By name.
    pub namespaces: BTreeMap<String, Namespace>,
    pub pods: BTreeMap<NamespacedName, Pod>,
    /// By `kind/namespace/name` (cluster-wide kinds have no namespace).
    pub policies: BTreeMap<String, PolicyDocument>,
    pub services: BTreeMap<NamespacedName, weir_lb::Service>,
    pub endpoint_slices: BTreeMap<NamespacedName, weir_lb::EndpointSlice>,
    /// IPv6 EndpointSlices (`addressType: IPv6`), by namespace/name.
    pub endpoint_slices_v6: BTreeMap<NamespacedName, weir_lb::EndpointSlice<std::net::Ipv6Addr>>,
    /// Files whose latest content was rejected, with the reason.
    pub rejected: BTreeMap<PathBuf, String>,
    /// Objects in force from a file's previous content because its latest
    /// does not parse: object key (`kind/namespace/name`) → file and reason.
    pub stale: BTreeMap<String, String>,
}

impl ClusterManifests {
    pub(crate) fn add(&mut self, object: Object) {
        match object {
            Object::Namespace(ns) => {
                self.namespaces.insert(ns.name.clone(), ns);
            }
            Object::Pod(pod) => {
                self.pods.insert(pod.namespaced_name(), pod);
            }
            Object::Policy(policy) => {
                self.policies.insert(policy.key(), policy);
            }
            Object::Service(service) => {
                let service = service.object;
                self.services.insert(service.service_name(), service);
            }
            Object::EndpointSlice(slice) => match slice.object {
                weir_lb::AnyEndpointSlice::V4(slice) => {
                    let key = NamespacedName::new(&slice.namespace, &slice.name);
                    self.endpoint_slices.insert(key, slice);
                }
                weir_lb::AnyEndpointSlice::V6(slice) => {
                    let key = NamespacedName::new(&slice.namespace, &slice.name);
                    self.endpoint_slices_v6.insert(key, slice);
                }
            },
        }
    }
}

/// How often every file is stat'ed even when no directory changed: an
/// in-place edit (not a create, rename or delete) changes only the file.
/// Under [`ManifestDir::watch`] file events say so at once; this is then
/// the safety net for a missed event, checked when the loop runs.
const FULL_SCAN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// How soon to look again after a scan that may have missed a change
/// sharing a coarse timestamp with it (see [`SETTLE`]).
const RECHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// Changes within this long of a scan may share a coarse timestamp with
/// it (file times tick with the kernel's jiffies): scan again next time.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(50);

/// One file as last parsed, with what identifies its version: a file
/// replaced by rename is a new inode even when its time and length match.
struct CachedFile {
    modified: SystemTime,
    len: u64,
    inode: u64,
    version: Version<Vec<Object>, String>,
}

/// A directory with its modification time (None if it vanished).
type DirectoryStamp = (PathBuf, Option<SystemTime>);

/// A manifest directory and what was last read from it.
///
/// Built for large directories (the lab writes one file per object: 10,000
/// Services are 20,000 files with their EndpointSlices): a tick only stats
/// the directories, whose modification time changes when a file in them is
/// created, renamed over or deleted (how the lab, and tools that write
/// atomically, change files); every file is stat'ed only then or every
/// [`FULL_SCAN_INTERVAL`]; and only files that changed are parsed again.
pub struct ManifestDir {
    path: PathBuf,
    /// Modification times of every directory below `path` at the last scan.
    directories: Vec<DirectoryStamp>,
    files: BTreeMap<PathBuf, CachedFile>,
    last_full_scan: Option<std::time::Instant>,
    /// A directory changed so close to the last scan that a later change
    /// might not move its timestamp.
    unsettled: bool,
    /// Set by the file watcher on every event: scan at the next read.
    events: Arc<AtomicBool>,
    /// The inotify watch of the directory tree, once [`ManifestDir::watch`]ed.
    watcher: Option<notify::RecommendedWatcher>,
}

impl ManifestDir {
    pub fn new(path: &Path) -> ManifestDir {
        ManifestDir {
            path: path.to_path_buf(),
            directories: Vec::new(),
            files: BTreeMap::new(),
            last_full_scan: None,
            unsettled: false,
            events: Arc::default(),
            watcher: None,
        }
    }

    /// Watches the directory tree (inotify, recursive; the root is created
    /// if missing so there is something to watch): every change rings
    /// `wake`, and the next read scans. Events the agent's own reads cause
    /// (opens, reads, read-only closes) are ignored.
    pub fn watch(&mut self, wake: Wake) -> notify::Result<()> {
        std::fs::create_dir_all(&self.path).map_err(notify::Error::io)?;
        let events = self.events.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // An error may mean lost events: scan all the same.
                let ours = event.as_ref().is_ok_and(|e| {
                    matches!(e.kind, EventKind::Access(kind)
                    if kind != AccessKind::Close(AccessMode::Write))
                });
                if !ours {
                    events.store(true, Ordering::Release);
                    wake.wake();
                }
            })?;
        watcher.watch(&self.path, RecursiveMode::Recursive)?;
        self.watcher = Some(watcher);
        Ok(())
    }

    /// When to read again without an event: soon after a scan that may
    /// have missed a change (see `SETTLE`).
    pub fn recheck_at(&self) -> Option<std::time::Instant> {
        self.unsettled
            .then_some(self.last_full_scan)
            .flatten()
            .map(|at| at + RECHECK)
    }

    /// Every directory and .yaml/.yml file below the root.
    fn walk(&self) -> std::io::Result<(Vec<DirectoryStamp>, Vec<PathBuf>)> {
        let mut directories = Vec::new();
        let mut files = Vec::new();
        let mut pending = vec![self.path.clone()];
        while let Some(dir) = pending.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            directories.push((dir.clone(), modified(&dir)));
            for entry in entries {
                let entry = entry?;
                let path = entry.path();
                if entry.file_type()?.is_dir() {
                    pending.push(path);
                } else if matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml")
                ) {
                    files.push(path);
                }
            }
        }
        directories.sort();
        files.sort();
        Ok((directories, files))
    }

    /// True when a directory changed since the last scan (or there was none).
    fn directories_changed(&self) -> bool {
        if self.last_full_scan.is_none() {
            return true;
        }
        if self.directories.is_empty() {
            // The root did not exist: look again.
            return self.path.exists();
        }
        self.directories
            .iter()
            .any(|(dir, time)| modified(dir) != *time)
    }

    /// Reads the directory if anything changed since the last read; parses
    /// only the files that changed.
    pub fn read_if_changed(&mut self) -> std::io::Result<Option<ClusterManifests>> {
        let due = self
            .last_full_scan
            .is_none_or(|at| at.elapsed() >= FULL_SCAN_INTERVAL);
        let events = self.events.swap(false, Ordering::AcqRel);
        if !due && !events && !self.unsettled && !self.directories_changed() {
            return Ok(None);
        }
        let first = self.last_full_scan.is_none();
        self.last_full_scan = Some(std::time::Instant::now());
        let scan_started = SystemTime::now();
        let (directories, paths) = self.walk()?;
        self.unsettled = directories
            .iter()
            .any(|(_, time)| time.is_some_and(|t| t + SETTLE >= scan_started));
        self.directories = directories;
        let mut changed = first || paths.len() != self.files.len();
        let mut files = BTreeMap::new();
        for path in paths {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue; // removed between listing and stat
            };
            let (modified, len) = (meta.modified()?, meta.len());
            let inode = std::os::unix::fs::MetadataExt::ino(&meta);
            match self.files.remove(&path) {
                Some(cached)
                    if cached.modified == modified
                        && cached.len == len
                        && cached.inode == inode =>
                {
                    files.insert(path, cached);
                }
                previous => {
                    changed = true;
                    let Some(parsed) = parse_file(&path)? else {
                        continue;
                    };
                    let version = Version::next(previous.map(|c| c.version), parsed);
                    files.insert(
                        path,
                        CachedFile {
                            modified,
                            len,
                            inode,
                            version,
                        },
                    );
                }
            }
        }
        // What is left in the old cache was deleted.
        changed |= !self.files.is_empty();
        self.files = files;
        if !changed {
            return Ok(None);
        }
        Ok(Some(self.assemble()))
    }

    /// Reads and parses every manifest file (no cache).
    pub fn read(&self) -> std::io::Result<ClusterManifests> {
        let mut fresh = ManifestDir::new(&self.path);
        Ok(fresh.read_if_changed()?.unwrap_or_default())
    }

    fn assemble(&self) -> ClusterManifests {
        let mut manifests = ClusterManifests::default();
        for (path, file) in &self.files {
            if let Some(reason) = file.version.errors() {
                manifests.rejected.insert(path.clone(), reason.clone());
            }
            let Some(objects) = file.version.in_force() else {
                continue;
            };
            for object in objects {
                if file.version.is_stale() {
                    let reason = file.version.errors().map_or("", String::as_str);
                    let why = format!("{}: {reason}", path.display());
                    manifests.stale.insert(object.key(), why);
                }
                manifests.add(object.clone());
            }
        }
        manifests
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// One file's objects, or why it was rejected; None if it disappeared.
fn parse_file(path: &Path) -> std::io::Result<Option<Result<Vec<Object>, String>>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(Some(manifest::parse(&text).map_err(|e| format!("{e:#}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weir-source-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("pods")).unwrap();
        dir
    }

    #[test]
    fn reads_every_file_and_rejects_bad_ones_alone() {
        let dir = temp_dir("read");
        std::fs::write(
            dir.join("ns.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {ns: x}}\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("pods/a.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {pod: a}}\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("pods/bad.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: Bad}\n",
        )
        .unwrap();
        std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
        let mut source = ManifestDir::new(&dir);
        let manifests = source.read_if_changed().unwrap().expect("first read");
        assert_eq!(manifests.namespaces.keys().collect::<Vec<_>>(), ["x"]);
        assert_eq!(
            manifests
                .pods
                .keys()
                .map(|k| k.to_string())
                .collect::<Vec<_>>(),
            ["x/a"]
        );
        assert_eq!(manifests.rejected.len(), 1);
        assert!(manifests
            .rejected
            .values()
            .next()
            .unwrap()
            .contains("not a valid name"));
        assert!(source.read_if_changed().unwrap().is_none(), "unchanged");
        std::fs::remove_file(dir.join("pods/a.yaml")).unwrap();
        let manifests = source.read_if_changed().unwrap().expect("changed");
        assert!(manifests.pods.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn files_replaced_by_rename_are_read_again_and_new_directories_are_seen() {
        let dir = temp_dir("rename");
        let ns = |labels: &str| {
            format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: x, labels: {{{labels}}}}}\n"
            )
        };
        std::fs::write(dir.join("ns.yaml"), ns("a: one")).unwrap();
        let mut source = ManifestDir::new(&dir);
        let first = source.read_if_changed().unwrap().expect("first read");
        assert_eq!(first.namespaces["x"].labels["a"], "one");
        // Same length, written aside and renamed over, as the lab does.
        std::fs::write(dir.join("ns.tmp"), ns("a: two")).unwrap();
        std::fs::rename(dir.join("ns.tmp"), dir.join("ns.yaml")).unwrap();
        let second = source.read_if_changed().unwrap().expect("changed");
        assert_eq!(second.namespaces["x"].labels["a"], "two");
        // A file in a directory created after the first read.
        std::fs::create_dir_all(dir.join("more/deeper")).unwrap();
        std::fs::write(
            dir.join("more/deeper/y.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: y}\n",
        )
        .unwrap();
        let third = source.read_if_changed().unwrap().expect("changed");
        assert!(third.namespaces.contains_key("y"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_that_no_longer_parses_keeps_its_objects_until_deleted() {
        let dir = temp_dir("stale");
        let pod = |labels: &str| {
            format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: a, namespace: x, labels: {{{labels}}}}}\n")
        };
        let write = |text: &str| {
            std::fs::write(dir.join("pods/a.tmp"), text).unwrap();
            std::fs::rename(dir.join("pods/a.tmp"), dir.join("pods/a.yaml")).unwrap();
        };
        let mut source = ManifestDir::new(&dir);
        // Never valid: nothing.
        write("kind: Pod\nmetadata: {name: Bad}\n");
        let first = source.read_if_changed().unwrap().expect("first read");
        assert!(first.pods.is_empty() && first.stale.is_empty());
        assert_eq!(first.rejected.len(), 1);
        // Valid, then an invalid edit: the old pod stays, shown as stale.
        write(&pod("app: one"));
        let valid = source.read_if_changed().unwrap().expect("changed");
        assert!(valid.rejected.is_empty() && valid.stale.is_empty());
        write("apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: [\n");
        let stale = source.read_if_changed().unwrap().expect("changed");
        let key = NamespacedName::new("x", "a");
        assert_eq!(stale.pods[&key].labels["app"], "one");
        assert_eq!(stale.stale.keys().collect::<Vec<_>>(), ["Pod/x/a"]);
        assert!(stale.stale["Pod/x/a"].contains("a.yaml"));
        assert_eq!(stale.rejected.len(), 1);
        // Fixed: the new version replaces it.
        write(&pod("app: two"));
        let fixed = source.read_if_changed().unwrap().expect("changed");
        assert_eq!(fixed.pods[&key].labels["app"], "two");
        assert!(fixed.stale.is_empty() && fixed.rejected.is_empty());
        // Invalid again, then deleted: gone.
        write("not: [yaml\n");
        assert!(source
            .read_if_changed()
            .unwrap()
            .expect("changed")
            .pods
            .contains_key(&key));
        std::fs::remove_file(dir.join("pods/a.yaml")).unwrap();
        let deleted = source.read_if_changed().unwrap().expect("changed");
        assert!(deleted.pods.is_empty() && deleted.stale.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn file_events_ring_the_wake_and_an_in_place_edit_is_read_at_once() {
        let dir = temp_dir("watch");
        let ns = |labels: &str| {
            format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: x, labels: {{{labels}}}}}\n"
            )
        };
        std::fs::write(dir.join("ns.yaml"), ns("a: one")).unwrap();
        // Past SETTLE, so the first read leaves nothing to look at again.
        std::thread::sleep(SETTLE * 2);
        let wake = Wake::default();
        let mut source = ManifestDir::new(&dir);
        source.watch(wake.clone()).unwrap();
        source.read_if_changed().unwrap().expect("first read");
        // The agent's own reads (opens, reads, closes) do not ring.
        let _ = source.read().unwrap();
        let quiet = tokio::time::timeout(std::time::Duration::from_millis(200), wake.woken());
        assert!(quiet.await.is_err(), "reading the directory woke the loop");
        // An in-place edit moves no directory's time and no full scan is
        // due: only the file event makes the next read see it.
        std::fs::write(dir.join("ns.yaml"), ns("a: three")).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), wake.woken())
            .await
            .expect("a file event rang the wake");
        let edited = source.read_if_changed().unwrap().expect("changed");
        assert_eq!(edited.namespaces["x"].labels["a"], "three");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_directory_is_an_empty_cluster() {
        let source = ManifestDir::new(Path::new("/nonexistent/weir/manifests"));
        assert_eq!(source.read().unwrap(), ClusterManifests::default());
    }
}
