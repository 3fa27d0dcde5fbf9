//! Applying and deleting manifests. On the control plane every object goes
//! through the API server (`server_apply`) and the lab plays the kubelet
//! for pods (`kubelet`). On the manifest directory the lab plays the API
//! server and the controllers: every object is written to the directory the
//! agents read (atomically, so an agent never reads half a file); pods are
//! created and deleted as kubelet would (`pods`); the derived EndpointSlices
//! follow.

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};

use crate::api::ApiAccess;
use crate::manifest::{self, Namespace, Object, Pod};
use crate::{server_apply, Lab};

/// What `apply` did to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Created(String),
    Configured(String),
    Unchanged(String),
}

impl std::fmt::Display for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Applied::Created(what) => write!(f, "{what} created"),
            Applied::Configured(what) => write!(f, "{what} configured"),
            Applied::Unchanged(what) => write!(f, "{what} unchanged"),
        }
    }
}

impl Lab {
    /// Applies manifests: namespaces first, then pods, in file order.
    pub fn apply(&mut self, objects: &[Object]) -> Result<Vec<Applied>> {
        validate_policies(objects)?;
        if let Some(access) = self.api_access() {
            return self.apply_through_api(&access, objects);
        }
        let mut report = Vec::new();
        for object in objects {
            if let Object::Namespace(ns) = object {
                report.push(self.apply_namespace(ns)?);
            }
        }
        for object in objects {
            if let Object::Pod(pod) = object {
                report.push(self.apply_pod(pod)?);
            }
        }
        for object in objects {
            if let Object::Policy(policy) = object {
                report.push(self.apply_policy(policy)?);
            }
        }
        for object in objects {
            match object {
                Object::Service(service) => report.push(self.apply_document(
                    &format!(
                        "services/{}/{}.yaml",
                        service.object.namespace, service.object.name
                    ),
                    format!(
                        "service/{}/{}",
                        service.object.namespace, service.object.name
                    ),
                    &service.document,
                )?),
                Object::EndpointSlice(slice) => report.push(self.apply_document(
                    &user_slice_file(&slice.object),
                    format!(
                        "endpointslice/{}/{}",
                        slice.object.namespace(),
                        slice.object.name()
                    ),
                    &slice.document,
                )?),
                _ => {}
            }
        }
        self.sync_endpoint_slices(&BTreeSet::new())?;
        Ok(report)
    }

    /// Writes an object's document as the agents' source.
    fn apply_document(
        &self,
        file: &str,
        what: String,
        document: &serde_yaml_ng::Value,
    ) -> Result<Applied> {
        let document: serde_json::Value = serde_json::to_value(document)?;
        let path = self.manifests_dir().join(file);
        let existed = path.exists();
        let unchanged = existed
            && std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_yaml_ng::from_str::<serde_json::Value>(&t).ok())
                .as_ref()
                == Some(&document);
        if unchanged {
            return Ok(Applied::Unchanged(what));
        }
        self.write_manifest(file, &document)?;
        Ok(if existed {
            Applied::Configured(what)
        } else {
            Applied::Created(what)
        })
    }

    /// Deletes the objects named in the manifests (pods of a deleted
    /// namespace go with it).
    pub fn delete(&mut self, objects: &[Object]) -> Result<Vec<String>> {
        if let Some(access) = self.api_access() {
            return self.delete_through_api(&access, objects);
        }
        let mut deleted = Vec::new();
        for object in objects {
            let (file, what) = match object {
                Object::Policy(policy) => (policy_file(policy), policy.key()),
                Object::Service(service) => (
                    format!(
                        "services/{}/{}.yaml",
                        service.object.namespace, service.object.name
                    ),
                    format!(
                        "service/{}/{}",
                        service.object.namespace, service.object.name
                    ),
                ),
                Object::EndpointSlice(slice) => (
                    user_slice_file(&slice.object),
                    format!(
                        "endpointslice/{}/{}",
                        slice.object.namespace(),
                        slice.object.name()
                    ),
                ),
                _ => continue,
            };
            if std::fs::remove_file(self.manifests_dir().join(file)).is_ok() {
                deleted.push(format!("{what} deleted"));
            }
        }
        for object in objects {
            let keys: Vec<String> = match object {
                Object::Pod(pod) => vec![pod.namespaced_name().to_string()],
                Object::Policy(_) | Object::Service(_) | Object::EndpointSlice(_) => Vec::new(),
                Object::Namespace(ns) => self
                    .state
                    .pods
                    .iter()
                    .filter(|p| p.namespace == ns.name)
                    .map(|p| p.key())
                    .collect(),
            };
            for key in keys {
                if self.delete_pod(&key)? {
                    deleted.push(format!("pod/{key} deleted"));
                }
            }
            if let Object::Namespace(ns) = object {
                let before = self.state.namespaces.len();
                self.remove_manifest(&format!("namespaces/{}.yaml", ns.name))?;
                self.state.namespaces.retain(|n| n.name != ns.name);
                if self.state.namespaces.len() != before {
                    deleted.push(format!("namespace/{} deleted", ns.name));
                }
                self.state.save(&self.dir)?;
            }
        }
        self.sync_endpoint_slices(&BTreeSet::new())?;
        Ok(deleted)
    }

    pub(crate) fn write_manifest(
        &self,
        relative: &str,
        document: &serde_json::Value,
    ) -> Result<()> {
        let path = self.manifests_dir().join(relative);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Atomic: agents never read half a file.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_yaml_ng::to_string(document)?)?;
        std::fs::rename(&tmp, &path).with_context(|| format!("write {}", path.display()))
    }

    pub(crate) fn remove_manifest(&self, relative: &str) -> Result<()> {
        match std::fs::remove_file(self.manifests_dir().join(relative)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    fn apply_namespace(&mut self, ns: &Namespace) -> Result<Applied> {
        // Kubernetes labels every namespace with its name (since 1.21).
        let mut ns = ns.clone();
        ns.labels
            .insert("kubernetes.io/metadata.name".into(), ns.name.clone());
        let ns = &ns;
        self.write_manifest(
            &format!("namespaces/{}.yaml", ns.name),
            &serde_json::json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": annotated(
                    serde_json::json!({"name": ns.name, "labels": ns.labels}),
                    ns.policy_audit_mode,
                ),
            }),
        )?;
        let what = format!("namespace/{}", ns.name);
        let result = match self.state.namespaces.iter_mut().find(|n| n.name == ns.name) {
            Some(existing) if existing == ns => Applied::Unchanged(what),
            Some(existing) => {
                *existing = ns.clone();
                Applied::Configured(what)
            }
            None => {
                self.state.namespaces.push(ns.clone());
                Applied::Created(what)
            }
        };
        self.state.save(&self.dir)?;
        Ok(result)
    }

    fn apply_policy(&mut self, policy: &manifest::PolicyDocument) -> Result<Applied> {
        self.apply_document(&policy_file(policy), policy.key(), &policy.document)
    }
}

/// On the control plane: namespaces, pods, policies, then the rest, all
/// dry-run first; then waits until the new pods run.
impl Lab {
    fn apply_through_api(
        &mut self,
        access: &ApiAccess,
        objects: &[Object],
    ) -> Result<Vec<Applied>> {
        let rank = |o: &Object| match o {
            Object::Namespace(_) => 0,
            Object::Pod(_) => 1,
            Object::Policy(_) => 2,
            Object::Service(_) | Object::EndpointSlice(_) => 3,
        };
        let mut ordered: Vec<&Object> = objects.iter().collect();
        ordered.sort_by_key(|o| rank(o));
        let documents = ordered
            .iter()
            .map(|o| server_apply::document(o))
            .collect::<Result<Vec<_>>>()?;
        let pods: Vec<Pod> = ordered
            .iter()
            .filter_map(|o| match o {
                Object::Pod(pod) => Some(pod.clone()),
                _ => None,
            })
            .collect();
        let pod_namespaces: BTreeSet<String> = pods.iter().map(|p| p.namespace.clone()).collect();
        // One client for the whole file: the dry run, the apply, then the
        // wait for the new pods to run (their nodes' kubelets run them).
        let lab = &mut *self;
        let mut report = access.run(|client| async move {
            server_apply::dry_run(&client, &documents).await?;
            let (namespaces, rest): (Vec<_>, Vec<_>) = documents
                .into_iter()
                .partition(|d| d.value["kind"] == "Namespace");
            let mut report = server_apply::apply(&client, &namespaces).await?;
            for namespace in &pod_namespaces {
                server_apply::wait_default_service_account(&client, namespace).await?;
            }
            report.extend(server_apply::apply(&client, &rest).await?);
            let new: Vec<Pod> = pods
                .into_iter()
                .filter(|p| lab.state.pod(&p.namespaced_name().to_string()).is_none())
                .collect();
            lab.wait_running(&client, &new).await?;
            Ok(report)
        })?;
        for entry in &mut report {
            if let Applied::Created(what) = entry {
                if let Some(pod) = what.strip_prefix("pod/").and_then(|k| self.state.pod(k)) {
                    *what = format!("{what} on {} ({})", pod.node, pod.ip);
                }
            }
        }
        for object in objects {
            if let Object::Pod(pod) = object {
                let key = pod.namespaced_name().to_string();
                if let Some(record) = self.state.pods.iter_mut().find(|p| p.key() == key) {
                    record.labels = pod.labels.clone();
                }
            }
        }
        self.state.save(&self.dir)?;
        Ok(report)
    }

    /// On the control plane: each object deleted through the API; pods
    /// (also those of a deleted namespace) as kubelet deletes them.
    fn delete_through_api(
        &mut self,
        access: &ApiAccess,
        objects: &[Object],
    ) -> Result<Vec<String>> {
        let lab = &mut *self;
        access.run(|client| async move {
            let mut deleted = Vec::new();
            for object in objects {
                if matches!(object, Object::Pod(_) | Object::Namespace(_)) {
                    continue;
                }
                let document = server_apply::document(object)?;
                if server_apply::delete(&client, &document).await? {
                    deleted.push(format!("{} deleted", document.what));
                }
            }
            for object in objects {
                let keys: Vec<String> = match object {
                    Object::Pod(pod) => vec![pod.namespaced_name().to_string()],
                    Object::Namespace(ns) => lab
                        .state
                        .pods
                        .iter()
                        .filter(|p| p.namespace == ns.name)
                        .map(|p| p.key())
                        .collect(),
                    _ => Vec::new(),
                };
                for key in keys {
                    if lab.kubelet_delete_with(&client, &key).await? {
                        deleted.push(format!("pod/{key} deleted"));
                    }
                }
                if let Object::Namespace(ns) = object {
                    let document = server_apply::document(object)?;
                    let existed = server_apply::delete(&client, &document).await?;
                    server_apply::wait_namespace_gone(&client, &ns.name).await?;
                    if existed {
                        deleted.push(format!("namespace/{} deleted", ns.name));
                    }
                }
            }
            Ok(deleted)
        })
    }
}

/// Where a user-written EndpointSlice (for a Service without selector) goes.
fn user_slice_file(slice: &weir_lb::AnyEndpointSlice) -> String {
    format!(
        "endpointslices/user/{}/{}.yaml",
        slice.namespace(),
        slice.name()
    )
}

/// Validates every policy with the engine the agents use, before anything
/// of the file is applied: an invalid policy is refused with its reasons.
fn validate_policies(objects: &[Object]) -> Result<()> {
    let mut problems = Vec::new();
    for object in objects {
        if let Object::Policy(policy) = object {
            let parsed = weir_policy::PolicyDocument::from_value(policy.document.clone())
                .and_then(|doc| doc.to_policy());
            if let Err(error) = parsed {
                problems.push(format!("{}: {error}", policy.key()));
            }
        }
    }
    if !problems.is_empty() {
        bail!("invalid policy, nothing applied:\n{}", problems.join("\n"));
    }
    Ok(())
}

/// Where a policy's manifest lives in the manifest directory.
fn policy_file(policy: &manifest::PolicyDocument) -> String {
    format!(
        "policies/{}/{}/{}.yaml",
        policy.kind,
        policy.namespace.as_deref().unwrap_or("_cluster"),
        policy.name
    )
}

/// `metadata` with the annotations Weir reads, when there are any: an empty
/// `annotations` map in an applied document would make the API server
/// report a change on every server-side apply.
pub(crate) fn annotated(
    mut metadata: serde_json::Value,
    policy_audit_mode: Option<bool>,
) -> serde_json::Value {
    let annotations = manifest::annotations(policy_audit_mode);
    if !annotations.is_empty() {
        metadata["annotations"] = serde_json::json!(annotations);
    }
    metadata
}
