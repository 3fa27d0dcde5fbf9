//! The lab's own calls to its kube-apiserver through kube-rs, from plain
//! (blocking) code: each call runs on a thread inside the control plane's
//! network namespace (the API server is reachable only from the underlay)
//! with a current-thread runtime and a fresh client.

use std::future::Future;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::discovery::{ApiCapabilities, Scope};
use kube::{Api, Client};

use crate::control_plane::ControlPlane;
use weir_tests::netns;

/// Where to reach the API server and as whom.
#[derive(Clone, Debug)]
pub struct ApiAccess {
    netns: String,
    kubeconfig: PathBuf,
}

impl ApiAccess {
    /// The lab's access as the admin (the lab plays the API server's
    /// clients: `kubectl apply` and the kubelet).
    pub fn admin(cp: &ControlPlane) -> ApiAccess {
        ApiAccess {
            netns: cp.netns.clone(),
            kubeconfig: cp.admin_kubeconfig(),
        }
    }

    /// The kubelet of `node` (`system:node:<node>`).
    pub fn kubelet(cp: &ControlPlane, node: &str) -> ApiAccess {
        ApiAccess {
            netns: cp.netns.clone(),
            kubeconfig: cp.kubelet_kubeconfig(node),
        }
    }

    /// Runs `call` with a client and waits for its result. It runs on a
    /// thread of its own inside the namespace, which may borrow from the
    /// caller (the kubelet runs a pod's sandbox between API calls there:
    /// the commands it starts enter their own namespaces).
    pub fn run<T, F, Fut>(&self, call: F) -> Result<T>
    where
        T: Send,
        F: FnOnce(Client) -> Fut + Send,
        Fut: Future<Output = Result<T>>,
    {
        let netns_file = std::fs::File::open(netns::path(&self.netns))
            .with_context(|| format!("open netns {}", self.netns))?;
        let kubeconfig = &self.kubeconfig;
        std::thread::scope(|scope| {
            scope
                .spawn(move || -> Result<T> {
                    nix::sched::setns(&netns_file, nix::sched::CloneFlags::CLONE_NEWNET)
                        .context("setns")?;
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("tokio runtime")?;
                    runtime.block_on(async move { call(client(kubeconfig).await?).await })
                })
                .join()
                .map_err(|_| anyhow::anyhow!("API call thread panicked"))?
        })
    }
}

/// A client as the identity of `kubeconfig` (from within the namespace).
pub async fn client(kubeconfig: &Path) -> Result<Client> {
    weir_agent::cluster::kubernetes::client(Some(kubeconfig))
        .await
        .with_context(|| format!("Kubernetes client of {}", kubeconfig.display()))
}

/// The resource of `apiVersion`/`kind` as the server serves it.
pub async fn resource(
    client: &Client,
    api_version: &str,
    kind: &str,
) -> Result<(ApiResource, ApiCapabilities)> {
    let (group, version) = match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    };
    let gvk = GroupVersionKind::gvk(group, version, kind);
    kube::discovery::pinned_kind(client, &gvk)
        .await
        .with_context(|| format!("the API server does not serve {api_version} {kind}"))
}

/// The API of one resource, in `namespace` if it is namespaced.
pub fn dynamic_api(
    client: &Client,
    resource: &ApiResource,
    capabilities: &ApiCapabilities,
    namespace: &str,
) -> Api<DynamicObject> {
    match capabilities.scope {
        Scope::Namespaced => Api::namespaced_with(client.clone(), namespace, resource),
        Scope::Cluster => Api::all_with(client.clone(), resource),
    }
}
