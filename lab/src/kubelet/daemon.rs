//! The lab's kubelet daemon (`weir-lab kubelet --node NAME`), one per node
//! on the control plane, in the node's network namespace, as the node's
//! kubelet (`system:node:<name>`): it watches the pods bound to its node
//! (`spec.nodeName`) and runs what they ask, whoever created them (a lab
//! `apply`, a plain `kubectl create`, a controller):
//!
//! - a bound pod it does not run gets its sandbox (network namespace, CNI
//!   ADD through weir-cni, a server on each container port), then its
//!   status (podIP(s), hostIP, Running, Ready); a failed start is reported
//!   (Pending, not Ready, the error) and retried with backoff;
//! - a pod with a deletion timestamp ends as kubelet ends it: once the
//!   EndpointSlice controller has marked its endpoints terminating (the
//!   part a preStop hook plays for a real workload) and a short grace, its
//!   server stops, CNI DEL runs, the namespace goes, and the final delete
//!   (grace period 0) removes the object;
//! - a sandbox whose pod is gone from the API (force-deleted, or deleted
//!   while the daemon was down) is removed.
//!
//! Its records ([`NodeRecord::kubelet_records`]) are the truth about what
//! runs: a restarted daemon adopts them and reconciles against the API.
//! Pods annotated [`EXTERNAL_SANDBOX`] are left alone (a test runs their
//! sandbox, or none). The node's Lease and Ready condition are renewed by
//! [`super::heartbeat`].

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod as ApiPod;
use kube::api::{Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use serde_json::json;

use super::{
    final_delete, report_status, wait_endpoints_terminating, FIELD_MANAGER, TERMINATION_GRACE,
};
use crate::manifest::{self, Object, Pod};
use crate::state::{load_pod_records, save_pod_records, NodeRecord, PodRecord, Sandbox};
use crate::{api, Binaries, Lab};

/// The annotation that tells the kubelet daemons to leave a pod's sandbox
/// to someone else.
pub const EXTERNAL_SANDBOX: &str = "lab.weir.io/sandbox";
/// How often the daemon looks again without an event (retries, and a pod
/// whose status could not be written).
const RESYNC: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Runs the kubelet of `node` in lab `lab_name` until SIGTERM.
pub fn run(lab_name: &str, node: &str) -> Result<()> {
    let lab = Lab::open(lab_name, Binaries::locate()?)?;
    let record = lab.node(node)?.clone();
    let kubeconfig = lab.control_plane()?.kubelet_kubeconfig(node);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(async move {
        let client = api::client(&kubeconfig).await?;
        let heartbeat = tokio::spawn(super::heartbeat::run(client.clone(), record.name.clone()));
        let mut kubelet = Kubelet::new(lab, record, client)?;
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = kubelet.watch() => result?,
            _ = terminate.recv() => eprintln!("kubelet: SIGTERM, stopping (pods keep running)"),
        }
        heartbeat.abort();
        Ok(())
    })
}

struct Kubelet {
    lab: Lab,
    node: NodeRecord,
    client: Client,
    /// The pods this daemon runs, as saved in its records file.
    running: Vec<PodRecord>,
    /// Pods whose start failed: attempts and when to try again.
    failed: HashMap<String, (u32, Instant)>,
}

impl Kubelet {
    fn new(lab: Lab, node: NodeRecord, client: Client) -> Result<Kubelet> {
        let running = load_pod_records(&node.kubelet_records(&lab.dir))?;
        eprintln!(
            "kubelet {}: {} pod(s) adopted from {}",
            node.name,
            running.len(),
            node.kubelet_records(&lab.dir).display()
        );
        Ok(Kubelet {
            lab,
            node,
            client,
            running,
            failed: HashMap::new(),
        })
    }

    /// Watches the pods bound to this node and syncs after every event
    /// (once the first list is in) and every [`RESYNC`].
    async fn watch(&mut self) -> Result<()> {
        let pods: Api<ApiPod> = Api::all(self.client.clone());
        let config =
            watcher::Config::default().fields(&format!("spec.nodeName={}", self.node.name));
        let mut events = watcher(pods, config).default_backoff().boxed();
        let mut known: BTreeMap<String, ApiPod> = BTreeMap::new();
        let mut listing: BTreeMap<String, ApiPod> = BTreeMap::new();
        let mut synced = false;
        let mut tick = tokio::time::interval(RESYNC);
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(watcher::Event::Apply(pod))) => {
                        known.insert(key(&pod), pod);
                    }
                    Some(Ok(watcher::Event::Delete(pod))) => {
                        known.remove(&key(&pod));
                    }
                    Some(Ok(watcher::Event::Init)) => listing.clear(),
                    Some(Ok(watcher::Event::InitApply(pod))) => {
                        listing.insert(key(&pod), pod);
                    }
                    Some(Ok(watcher::Event::InitDone)) => {
                        known = std::mem::take(&mut listing);
                        synced = true;
                    }
                    Some(Err(e)) => eprintln!("kubelet {}: watch: {e}", self.node.name),
                    None => anyhow::bail!("the pod watch ended"),
                },
                _ = tick.tick() => {}
            }
            if synced {
                self.sync(&known).await;
            }
        }
    }

    /// Brings what runs in line with `pods` (this node's pods in the API).
    async fn sync(&mut self, pods: &BTreeMap<String, ApiPod>) {
        // Sandboxes of pods the API no longer has (or has anew, another uid).
        let orphans: Vec<PodRecord> = self
            .running
            .iter()
            .filter(|r| pods.get(&r.key()).is_none_or(|p| uid(p) != r.uid))
            .cloned()
            .collect();
        for record in orphans {
            eprintln!(
                "kubelet {}: pod {} is gone from the API",
                self.node.name,
                record.key()
            );
            self.stop(&record);
        }
        for (key, pod) in pods {
            if external(pod) {
                continue;
            }
            let result = if pod.metadata.deletion_timestamp.is_some() {
                self.terminate(key, pod).await
            } else {
                self.keep_running(key, pod).await
            };
            if let Err(e) = result {
                eprintln!("kubelet {}: pod {key}: {e:#}", self.node.name);
            }
        }
    }

    /// Starts the sandbox of a pod that has none (unless it is backing
    /// off), or brings its record and status up to date.
    async fn keep_running(&mut self, key: &str, pod: &ApiPod) -> Result<()> {
        if let Some(record) = self.running.iter_mut().find(|r| r.key() == key) {
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            let labels: manifest::Labels = labels.into_iter().collect();
            if record.labels != labels {
                record.labels = labels;
                self.save()?;
            }
            let record = self.running.iter().find(|r| r.key() == key).cloned();
            if let Some(record) = record {
                let reported = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref());
                if reported != Some(record.ip.to_string().as_str()) {
                    report_status(&self.client, &record, self.node.underlay_ip).await?;
                }
            }
            return Ok(());
        }
        if let Some((_, retry_at)) = self.failed.get(key) {
            if Instant::now() < *retry_at {
                return Ok(());
            }
        }
        let started = Instant::now();
        let spec = to_manifest(pod)?;
        // The sandbox's commands block (CNI, waiting for the server).
        let made = tokio::task::block_in_place(|| self.lab.create_pod(&spec, &self.node));
        match made {
            Ok(mut record) => {
                self.failed.remove(key);
                record.sandbox = Sandbox::Kubelet;
                record.uid = uid(pod).to_string();
                self.running.push(record.clone());
                self.save()?;
                report_status(&self.client, &record, self.node.underlay_ip).await?;
                eprintln!(
                    "kubelet {}: pod {key} running at {} ({} ms)",
                    self.node.name,
                    record.ip,
                    started.elapsed().as_millis()
                );
                Ok(())
            }
            Err(error) => {
                let attempts = self.failed.get(key).map_or(1, |(n, _)| n + 1);
                let backoff =
                    (Duration::from_millis(500) * 2u32.pow(attempts.min(5))).min(MAX_BACKOFF);
                self.failed
                    .insert(key.to_string(), (attempts, Instant::now() + backoff));
                report_failure(&self.client, pod, &format!("{error:#}")).await?;
                Err(error.context(format!(
                    "sandbox not started (attempt {attempts}, next in {backoff:?})"
                )))
            }
        }
    }

    /// Ends a pod with a deletion timestamp, as kubelet does.
    async fn terminate(&mut self, key: &str, pod: &ApiPod) -> Result<()> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        if let Some(record) = self.running.iter().find(|r| r.key() == key).cloned() {
            if wait_endpoints_terminating(&self.client, namespace, name).await? {
                tokio::time::sleep(TERMINATION_GRACE).await;
            }
            self.stop(&record);
        }
        self.failed.remove(key);
        final_delete(&self.client, namespace, name).await
    }

    /// Removes a sandbox and its record.
    fn stop(&mut self, record: &PodRecord) {
        if let Err(e) = tokio::task::block_in_place(|| self.lab.stop_sandbox(record)) {
            eprintln!("kubelet {}: pod {}: {e:#}", self.node.name, record.key());
        }
        self.running
            .retain(|r| r.key() != record.key() || r.uid != record.uid);
        if let Err(e) = self.save() {
            eprintln!("kubelet {}: {e:#}", self.node.name);
        }
    }

    fn save(&self) -> Result<()> {
        save_pod_records(&self.node.kubelet_records(&self.lab.dir), &self.running)
    }
}

fn key(pod: &ApiPod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

fn uid(pod: &ApiPod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

fn external(pod: &ApiPod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(EXTERNAL_SANDBOX))
}

/// The pod as the lab's sandbox code takes it, read the way the agents
/// read pods.
fn to_manifest(pod: &ApiPod) -> Result<Pod> {
    let mut document = serde_json::to_value(pod)?;
    // Pod from the API carries apiVersion and kind only in lists' items.
    document["apiVersion"] = "v1".into();
    document["kind"] = "Pod".into();
    match manifest::from_document(serde_yaml_ng::to_value(&document)?)? {
        Object::Pod(pod) => Ok(pod),
        _ => anyhow::bail!("not a pod"),
    }
}

/// A pod whose sandbox did not start, as kubelet shows it: Pending, not
/// Ready, the reason in the condition's message.
async fn report_failure(client: &Client, pod: &ApiPod, error: &str) -> Result<()> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let status = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "status": {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "False", "reason": "SandboxFailed", "message": error},
            ],
        },
    });
    Api::<ApiPod>::namespaced(client.clone(), namespace)
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&status),
        )
        .await
        .with_context(|| format!("status of pod {namespace}/{name}"))?;
    Ok(())
}
