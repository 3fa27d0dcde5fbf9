//! Cluster state from a directory of Kubernetes YAML manifests: the agent's
//! source when there is no Kubernetes API (the lab writes one object per
//! file there). The Kubernetes watcher will feed the same [`ClusterManifests`].
//!
//! Every file is parsed on its own: a file that does not parse is reported
//! with its reason and contributes nothing, while every other file still
//! applies, so one bad manifest never takes the rest down or half-applies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::manifest::{self, Namespace, Object, Pod, PolicyDocument};

/// Everything the directory declares, by key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterManifests {
    pub namespaces: BTreeMap<String, Namespace>,
    /// By `namespace/name`.
    pub pods: BTreeMap<String, Pod>,
    /// By `kind/namespace/name`.
    pub policies: BTreeMap<String, PolicyDocument>,
    /// By `namespace/name`.
    pub services: BTreeMap<String, weir_lb::Service>,
    /// By `namespace/name`.
    pub endpoint_slices: BTreeMap<String, weir_lb::EndpointSlice>,
    /// Files that were rejected, with the reason.
    pub rejected: BTreeMap<PathBuf, String>,
}

impl ClusterManifests {
    fn add(&mut self, object: Object) {
        match object {
            Object::Namespace(ns) => {
                self.namespaces.insert(ns.name.clone(), ns);
            }
            Object::Pod(pod) => {
                self.pods
                    .insert(format!("{}/{}", pod.namespace, pod.name), pod);
            }
            Object::Policy(policy) => {
                self.policies.insert(policy.key(), policy);
            }
            Object::Service(service) => {
                let service = service.object;
                let key = format!("{}/{}", service.namespace, service.name);
                self.services.insert(key, service);
            }
            Object::EndpointSlice(slice) => {
                let slice = slice.object;
                let key = format!("{}/{}", slice.namespace, slice.name);
                self.endpoint_slices.insert(key, slice);
            }
        }
    }
}

/// A manifest directory and what was last read from it.
pub struct ManifestDir {
    path: PathBuf,
    /// (file, modification time, length) of the last read, to notice changes
    /// without re-parsing unchanged directories.
    fingerprint: Vec<(PathBuf, SystemTime, u64)>,
}

impl ManifestDir {
    pub fn new(path: &Path) -> ManifestDir {
        ManifestDir {
            path: path.to_path_buf(),
            fingerprint: Vec::new(),
        }
    }

    fn yaml_files(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        let mut dirs = vec![self.path.clone()];
        while let Some(dir) = dirs.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let path = entry?.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml")
                ) {
                    files.push(path);
                }
            }
        }
        files.sort();
        Ok(files)
    }

    fn current_fingerprint(&self) -> std::io::Result<Vec<(PathBuf, SystemTime, u64)>> {
        self.yaml_files()?
            .into_iter()
            .map(|path| {
                let meta = std::fs::metadata(&path)?;
                Ok((path, meta.modified()?, meta.len()))
            })
            .collect()
    }

    /// Reads the directory if anything changed since the last read.
    pub fn read_if_changed(&mut self) -> std::io::Result<Option<ClusterManifests>> {
        let fingerprint = self.current_fingerprint()?;
        if fingerprint == self.fingerprint && !self.fingerprint.is_empty() {
            return Ok(None);
        }
        self.fingerprint = fingerprint;
        self.read().map(Some)
    }

    /// Reads and parses every manifest file.
    pub fn read(&self) -> std::io::Result<ClusterManifests> {
        let mut manifests = ClusterManifests::default();
        for path in self.yaml_files()? {
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                // Removed between listing and reading: it is simply gone.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            match manifest::parse(&text) {
                Ok(objects) => objects.into_iter().for_each(|o| manifests.add(o)),
                Err(e) => {
                    manifests.rejected.insert(path, format!("{e:#}"));
                }
            }
        }
        Ok(manifests)
    }
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
        assert_eq!(manifests.pods.keys().collect::<Vec<_>>(), ["x/a"]);
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
    fn a_missing_directory_is_an_empty_cluster() {
        let source = ManifestDir::new(Path::new("/nonexistent/weir/manifests"));
        assert_eq!(source.read().unwrap(), ClusterManifests::default());
    }
}
