//! Installs Weir's CRDs: server-side apply of the definitions compiled into
//! this binary (weir-crds, the same ones `deploy/crds` is generated from),
//! forced, so an operator with a newer schema replaces an older one; then
//! waits until the API server reports every one Established.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, ResourceExt};
use tracing::info;

use crate::FIELD_MANAGER;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("apply CRD {name}: {source}")]
    Apply { name: String, source: kube::Error },
    #[error("CRD {name} not Established after {timeout:?}")]
    NotEstablished { name: String, timeout: Duration },
    #[error("wait for CRD {name}: {source}")]
    Wait {
        name: String,
        source: kube::runtime::wait::Error,
    },
}

/// Applies every Weir CRD and waits until each is Established.
pub async fn install(client: &Client, timeout: Duration) -> Result<(), Error> {
    install_all(client, &weir_crds::crds(), timeout).await
}

async fn install_all(
    client: &Client,
    crds: &[CustomResourceDefinition],
    timeout: Duration,
) -> Result<(), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in crds {
        let name = crd.name_any();
        api.patch(&name, &params, &Patch::Apply(crd))
            .await
            .map_err(|source| Error::Apply {
                name: name.clone(),
                source,
            })?;
    }
    for crd in crds {
        let name = crd.name_any();
        let established = await_condition(api.clone(), &name, conditions::is_crd_established());
        match tokio::time::timeout(timeout, established).await {
            Err(_) => return Err(Error::NotEstablished { name, timeout }),
            Ok(Err(source)) => return Err(Error::Wait { name, source }),
            Ok(Ok(_)) => info!(crd = %name, "CRD established"),
        }
    }
    Ok(())
}
