//! The lab's stand-in for the endpoint-slice controller: Services with a
//! selector get EndpointSlices derived from the lab's pods (weir-lb's
//! derivation, the controller's rules), written to the manifests directory
//! next to the Services, where every agent reads them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Result;
use weir_lb::{EndpointSlice, LbAddress, NamedPort, PodInfo, Protocol};

use crate::state::LabState;
use crate::Lab;

/// Where derived slices live in the manifests directory.
pub const DERIVED_DIR: &str = "endpointslices/derived";

/// The lab's pods as the controller sees them; `terminating` are being
/// deleted (published not ready, still serving).
pub fn pod_infos(state: &LabState, terminating: &BTreeSet<String>) -> Vec<PodInfo> {
    state
        .pods
        .iter()
        .map(|pod| PodInfo {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            labels: pod.labels.clone(),
            node: pod.node.clone(),
            ip: Some(pod.ip),
            ipv6: pod.ipv6,
            // A lab pod is created once its server serves.
            ready: true,
            terminating: terminating.contains(&pod.key()),
            ports: pod
                .ports
                .iter()
                // The lab's pods serve no SCTP, so their SCTP ports get no endpoints.
                .filter(|p| p.protocol != Protocol::Sctp)
                .map(|p| NamedPort {
                    name: p.name.clone(),
                    port: p.port,
                    protocol: p.protocol,
                })
                .collect(),
        })
        .collect()
}

/// The relative manifest path of a derived slice.
pub fn slice_file<A: LbAddress>(slice: &EndpointSlice<A>) -> String {
    format!("{DERIVED_DIR}/{}/{}.yaml", slice.namespace, slice.name)
}

/// A slice as the Kubernetes API writes it.
pub fn slice_document<A: LbAddress>(slice: &EndpointSlice<A>) -> serde_json::Value {
    let endpoints: Vec<serde_json::Value> = slice
        .endpoints
        .iter()
        .map(|e| {
            let mut endpoint = serde_json::json!({
                "addresses": e.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "conditions": {
                    "ready": e.conditions.ready(),
                    "serving": e.conditions.serving(),
                    "terminating": e.conditions.terminating(),
                },
            });
            if let Some(node) = &e.node_name {
                endpoint["nodeName"] = node.clone().into();
            }
            if let Some(target) = &e.target_ref {
                endpoint["targetRef"] = serde_json::json!({
                    "kind": target.kind,
                    "namespace": target.namespace,
                    "name": target.name,
                });
            }
            endpoint
        })
        .collect();
    let ports: Vec<serde_json::Value> = slice
        .ports
        .iter()
        .map(|p| {
            serde_json::json!({
                "name": p.name.clone().unwrap_or_default(),
                "protocol": p.protocol.name(),
                "port": p.port,
            })
        })
        .collect();
    serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": slice.name,
            "namespace": slice.namespace,
            "labels": slice.labels,
        },
        "addressType": A::FAMILY.as_str(),
        "endpoints": endpoints,
        "ports": ports,
    })
}

impl Lab {
    /// Brings the derived EndpointSlices to the lab's Services and pods
    /// (`terminating` pods are published as terminating). Returns whether
    /// anything changed.
    pub fn sync_endpoint_slices(&self, terminating: &BTreeSet<String>) -> Result<bool> {
        let source = weir_agent::cluster::manifest_dir::ManifestDir::new(&self.manifests_dir());
        let manifests = source.read()?;
        let services: Vec<weir_lb::Service> = manifests.services.into_values().collect();
        let pods = pod_infos(&self.state, terminating);
        let slices = weir_lb::derive_endpoint_slices(&services, &pods);
        let slices_v6 = weir_lb::derive_endpoint_slices_v6(&services, &pods);
        let mut changed = false;
        let mut wanted = BTreeSet::new();
        let files = slices
            .iter()
            .map(|s| (slice_file(s), slice_document(s)))
            .chain(slices_v6.iter().map(|s| (slice_file(s), slice_document(s))));
        for (file, document) in files {
            let path = self.manifests_dir().join(&file);
            let current = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_yaml_ng::from_str::<serde_json::Value>(&t).ok());
            if current.as_ref() != Some(&document) {
                self.write_manifest(&file, &document)?;
                changed = true;
            }
            wanted.insert(self.manifests_dir().join(file));
        }
        let derived = self.manifests_dir().join(DERIVED_DIR);
        for file in yaml_files(&derived) {
            if !wanted.contains(&file) {
                std::fs::remove_file(&file)?;
                changed = true;
            }
        }
        Ok(changed)
    }
}

/// Every .yaml file below `dir` (none if it does not exist).
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    files
}
