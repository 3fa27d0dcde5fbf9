//! `lab apply`/`lab delete` on the control plane, as `kubectl apply
//! --server-side` does them: each document goes to the API server as a
//! `DynamicObject` of the resource discovery finds for its kind, by
//! server-side apply with the field manager `weir-lab`. Every document is
//! first sent as a dry run, so one the server refuses leaves the rest of the
//! file unapplied, with the server's reason.

use std::collections::{BTreeSet, HashMap};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiCapabilities;
use kube::Client;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

use crate::api::{dynamic_api, resource};
use crate::apply::annotated;
use crate::apply::Applied;
use crate::manifest::{Object, Pod};

/// The field manager of everything the lab applies.
pub const FIELD_MANAGER: &str = "weir-lab";
/// The image of the lab's pods (nothing pulls it: the lab runs its pod
/// server), required by the API's validation.
pub const POD_IMAGE: &str = "weir.invalid/weir-lab-pod";

const NAMESPACE_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

/// One document to send, with the name the lab reports it under.
#[derive(Clone, Debug)]
pub struct Document {
    pub what: String,
    pub value: Value,
}

impl Document {
    fn api_version(&self) -> &str {
        self.value["apiVersion"].as_str().unwrap_or_default()
    }

    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }

    fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }

    /// Its namespace, `default` when a namespaced document names none.
    fn namespace(&self) -> &str {
        self.value["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
    }
}

/// An object as the lab sends it: Namespaces with the
/// `kubernetes.io/metadata.name` label (1.21+ servers add it themselves),
/// Pods as the lab runs them, v1 EndpointSlices in the 1.20 server's
/// `v1beta1`, the rest as written.
pub fn document(object: &Object) -> Result<Document> {
    Ok(match object {
        Object::Namespace(ns) => {
            let mut labels = ns.labels.clone();
            labels.insert("kubernetes.io/metadata.name".into(), ns.name.clone());
            Document {
                what: format!("namespace/{}", ns.name),
                value: json!({
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": annotated(
                        json!({"name": ns.name, "labels": labels}),
                        ns.policy_audit_mode,
                    ),
                }),
            }
        }
        Object::Pod(pod) => Document {
            what: format!("pod/{}", pod.namespaced_name()),
            value: pod_document(pod),
        },
        Object::Policy(policy) => Document {
            what: policy.key(),
            value: serde_json::to_value(&policy.document)?,
        },
        Object::Service(service) => Document {
            what: format!(
                "service/{}/{}",
                service.object.namespace, service.object.name
            ),
            value: default_port_protocols(serde_json::to_value(&service.document)?),
        },
        Object::EndpointSlice(slice) => Document {
            what: format!(
                "endpointslice/{}/{}",
                slice.object.namespace(),
                slice.object.name()
            ),
            value: v1_slice_to_v1beta1(serde_json::to_value(&slice.document)?),
        },
    })
}

/// A Pod of the lab: its labels and ports, bound to a node only if the
/// manifest names one (the scheduler binds the rest). No ServiceAccount
/// token is mounted (the lab's pods read none), so creating one needs no
/// token from the token controller.
pub fn pod_document(pod: &Pod) -> Value {
    let ports: Vec<Value> = pod
        .ports
        .iter()
        .map(|p| {
            let mut port = json!({"containerPort": p.port, "protocol": p.protocol.name()});
            if let Some(name) = &p.name {
                port["name"] = name.clone().into();
            }
            if let Some(host_port) = p.host_port {
                port["hostPort"] = host_port.into();
            }
            port
        })
        .collect();
    // The image and arguments a real node runs (the lab's kubelet daemons
    // run the same server); imported, never pulled.
    let mut spec = json!({
        "automountServiceAccountToken": false,
        "containers": [{
            "name": "main",
            "image": POD_IMAGE,
            "imagePullPolicy": "Never",
            "args": crate::pods::pod_server_args(pod),
            "ports": ports,
        }],
    });
    if let Some(node) = &pod.node {
        spec["nodeName"] = node.clone().into();
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": annotated(
            json!({"name": pod.name, "namespace": pod.namespace, "labels": pod.labels}),
            pod.policy_audit_mode,
        ),
        "spec": spec,
    })
}

/// A Service with `protocol: TCP` on every port that names none, the
/// server's default: 1.20's server-side apply refuses a port without it
/// (the protocol is a key of the ports list; fixed in later releases).
fn default_port_protocols(mut value: Value) -> Value {
    if let Some(ports) = value["spec"]["ports"].as_array_mut() {
        for port in ports.iter_mut().filter_map(|p| p.as_object_mut()) {
            port.entry("protocol").or_insert_with(|| "TCP".into());
        }
    }
    value
}

/// A `discovery.k8s.io/v1` EndpointSlice in `v1beta1`'s shape (what 1.20
/// serves): `nodeName` and `zone` go to the endpoint's `topology`.
fn v1_slice_to_v1beta1(mut value: Value) -> Value {
    if value["apiVersion"] != "discovery.k8s.io/v1" {
        return value;
    }
    value["apiVersion"] = "discovery.k8s.io/v1beta1".into();
    if let Some(endpoints) = value["endpoints"].as_array_mut() {
        for endpoint in endpoints.iter_mut().filter_map(|e| e.as_object_mut()) {
            let mut topology = serde_json::Map::new();
            if let Some(node) = endpoint.remove("nodeName") {
                topology.insert("kubernetes.io/hostname".into(), node);
            }
            if let Some(zone) = endpoint.remove("zone") {
                topology.insert("topology.kubernetes.io/zone".into(), zone);
            }
            endpoint.remove("hints");
            if !topology.is_empty() {
                endpoint.insert("topology".into(), Value::Object(topology));
            }
        }
    }
    value
}

/// Discovery results of one call, by (apiVersion, kind).
#[derive(Default)]
struct Resources(HashMap<(String, String), (ApiResource, ApiCapabilities)>);

impl Resources {
    async fn api(&mut self, client: &Client, doc: &Document) -> Result<kube::Api<DynamicObject>> {
        let key = (doc.api_version().to_string(), doc.kind().to_string());
        if !self.0.contains_key(&key) {
            let found = resource(client, &key.0, &key.1).await?;
            self.0.insert(key.clone(), found);
        }
        let (resource, capabilities) = &self.0[&key];
        Ok(dynamic_api(client, resource, capabilities, doc.namespace()))
    }
}

fn apply_params(dry_run: bool) -> PatchParams {
    // Forced, as `kubectl apply --server-side --force-conflicts`: the lab
    // owns what it applies.
    let params = PatchParams::apply(FIELD_MANAGER).force();
    if dry_run {
        params.dry_run()
    } else {
        params
    }
}

/// Sends every document as a dry run; fails with every refusal if the
/// server refuses any. A document in a namespace that `documents` itself
/// creates cannot be checked before that namespace exists: the server
/// checks it again when it is applied.
pub async fn dry_run(client: &Client, documents: &[Document]) -> Result<()> {
    // The namespaces the file creates that do not exist yet: a document in
    // one is not sent (the server would only answer, after its admission
    // waited for the namespace to appear, that it does not exist).
    let namespaces: kube::Api<Namespace> = kube::Api::all(client.clone());
    let mut new_namespaces = BTreeSet::new();
    for doc in documents {
        if doc.api_version() == "v1"
            && doc.kind() == "Namespace"
            && namespaces.get_opt(doc.name()).await?.is_none()
        {
            new_namespaces.insert(doc.name());
        }
    }
    let mut resources = Resources::default();
    let mut refused = Vec::new();
    for doc in documents {
        if doc.kind() != "Namespace" && new_namespaces.contains(doc.namespace()) {
            continue;
        }
        let api = match resources.api(client, doc).await {
            Ok(api) => api,
            Err(e) => {
                refused.push(format!("{}: {e:#}", doc.what));
                continue;
            }
        };
        let sent = api
            .patch(doc.name(), &apply_params(true), &Patch::Apply(&doc.value))
            .await;
        match sent {
            Ok(_) => {}
            Err(kube::Error::Api(status)) => {
                refused.push(format!("{}: {}", doc.what, status.message))
            }
            Err(e) => refused.push(format!("{}: {e}", doc.what)),
        }
    }
    if !refused.is_empty() {
        bail!(
            "refused by the API server, nothing applied:\n{}",
            refused.join("\n")
        );
    }
    Ok(())
}

/// Applies `documents` in order, reporting each as kubectl does: created,
/// configured (its resourceVersion moved) or unchanged.
pub async fn apply(client: &Client, documents: &[Document]) -> Result<Vec<Applied>> {
    let mut resources = Resources::default();
    let mut report = Vec::new();
    for doc in documents {
        let api = resources.api(client, doc).await?;
        let before = api
            .get_opt(doc.name())
            .await
            .with_context(|| format!("get {}", doc.what))?
            .and_then(|o| o.metadata.resource_version);
        let after = api
            .patch(doc.name(), &apply_params(false), &Patch::Apply(&doc.value))
            .await
            .with_context(|| format!("apply {}", doc.what))?
            .metadata
            .resource_version;
        if doc.kind() == "Service" && doc.value.get("status").is_some() {
            // The load balancer's addresses, as a cloud controller reports them.
            let status = json!({
                "apiVersion": doc.api_version(),
                "kind": doc.kind(),
                "status": doc.value["status"],
            });
            api.patch_status(doc.name(), &apply_params(false), &Patch::Apply(&status))
                .await
                .with_context(|| format!("status of {}", doc.what))?;
        }
        let what = doc.what.clone();
        report.push(match before {
            None => Applied::Created(what),
            Some(before) if Some(&before) == after.as_ref() => Applied::Unchanged(what),
            Some(_) => Applied::Configured(what),
        });
    }
    Ok(report)
}

/// Waits until the ServiceAccount controller has given `namespace` its
/// `default` account: until then the ServiceAccount admission refuses pods
/// there (kubectl users retry; the lab waits).
pub async fn wait_default_service_account(client: &Client, namespace: &str) -> Result<()> {
    let accounts: kube::Api<ServiceAccount> = kube::Api::namespaced(client.clone(), namespace);
    let namespaces: kube::Api<Namespace> = kube::Api::all(client.clone());
    if namespaces.get_opt(namespace).await?.is_none() {
        bail!("namespace {namespace:?} not found (apply it first)");
    }
    let started = Instant::now();
    while accounts.get_opt("default").await?.is_none() {
        if started.elapsed() > NAMESPACE_TIMEOUT {
            bail!("namespace {namespace}: no default ServiceAccount after {NAMESPACE_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// Waits until namespace `name` is gone (the namespace controller deletes
/// what is in it first), as `kubectl delete` waits.
pub async fn wait_namespace_gone(client: &Client, name: &str) -> Result<()> {
    let namespaces: kube::Api<Namespace> = kube::Api::all(client.clone());
    let started = Instant::now();
    while namespaces.get_opt(name).await?.is_some() {
        if started.elapsed() > NAMESPACE_TIMEOUT {
            bail!("namespace {name} still terminating after {NAMESPACE_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// Deletes the object of `doc`; false if there was none.
pub async fn delete(client: &Client, doc: &Document) -> Result<bool> {
    let api = Resources::default().api(client, doc).await?;
    match api.delete(doc.name(), &DeleteParams::default()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(e) => Err(e).with_context(|| format!("delete {}", doc.what)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest;

    #[test]
    fn pods_carry_an_image_and_their_node_only_when_the_manifest_names_one() {
        let objects = manifest::parse(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {app: a}}\n\
             spec:\n  containers:\n  - name: c\n    ports: [{name: http, containerPort: 80}]\n",
        )
        .unwrap();
        let doc = document(&objects[0]).unwrap();
        assert_eq!(doc.what, "pod/x/a");
        assert_eq!(doc.value["spec"]["containers"][0]["image"], POD_IMAGE);
        assert_eq!(
            doc.value["spec"]["containers"][0]["ports"][0]["name"],
            "http"
        );
        assert!(doc.value["spec"].get("nodeName").is_none());
        assert_eq!(doc.value["spec"]["automountServiceAccountToken"], false);
    }

    #[test]
    fn namespaces_get_their_name_label() {
        let objects = manifest::parse(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {a: b}}\n",
        )
        .unwrap();
        let doc = document(&objects[0]).unwrap();
        assert_eq!(
            doc.value["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "x"
        );
        assert_eq!(doc.value["metadata"]["labels"]["a"], "b");
    }

    #[test]
    fn service_ports_without_a_protocol_get_tcp() {
        let service = default_port_protocols(json!({
            "spec": {"ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]},
        }));
        assert_eq!(service["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(service["spec"]["ports"][1]["protocol"], "UDP");
    }

    #[test]
    fn v1_endpoint_slices_go_to_the_server_as_v1beta1() {
        let slice = v1_slice_to_v1beta1(json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "endpoints": [{"addresses": ["10.0.0.5"], "nodeName": "n1", "zone": "z1"}],
        }));
        assert_eq!(slice["apiVersion"], "discovery.k8s.io/v1beta1");
        assert_eq!(
            slice["endpoints"][0]["topology"]["kubernetes.io/hostname"],
            "n1"
        );
        assert_eq!(
            slice["endpoints"][0]["topology"]["topology.kubernetes.io/zone"],
            "z1"
        );
        assert!(slice["endpoints"][0].get("nodeName").is_none());
    }
}
