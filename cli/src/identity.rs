//! `weir identity list|get`: the identities this agent knows.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;
use weir_agent_api::v1;
use weir_types::NamespacedName;

use crate::agent::{self, rpc_error};
use crate::output::{self, field};
use crate::table::Table;

/// One line of `identity list -o json` (fields in key order, see
/// [`crate::output`]).
#[derive(Serialize)]
struct IdentityJson<'a> {
    id: u32,
    labels: &'a [String],
}

impl<'a> From<&'a v1::IdentityEntry> for IdentityJson<'a> {
    fn from(i: &'a v1::IdentityEntry) -> Self {
        IdentityJson {
            id: i.id,
            labels: &i.labels,
        }
    }
}

/// `identity get -o json`.
#[derive(Serialize)]
struct IdentityDetailJson<'a> {
    endpoints: Vec<LocalEndpointJson>,
    id: u32,
    labels: &'a [String],
    scope: &'a str,
}

#[derive(Serialize)]
struct LocalEndpointJson {
    id: u32,
    pod: String,
}

impl<'a> From<&'a v1::IdentityDetail> for IdentityDetailJson<'a> {
    fn from(i: &'a v1::IdentityDetail) -> Self {
        IdentityDetailJson {
            endpoints: i
                .endpoints
                .iter()
                .map(|e| LocalEndpointJson {
                    id: e.id,
                    pod: NamespacedName::new(&e.namespace, &e.pod).to_string(),
                })
                .collect(),
            id: i.id,
            labels: &i.labels,
            scope: &i.scope,
        }
    }
}

pub async fn list(socket: &Path, json: bool) -> Result<()> {
    let r = agent::inspect(socket)
        .await?
        .list_identities(v1::ListRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner();
    if json {
        return output::json_lines(r.identities.iter().map(IdentityJson::from));
    }
    // One row per label, as `cilium identity list` prints them.
    let mut table = Table::new(&["ID", "LABELS"]);
    for i in &r.identities {
        let mut labels = i.labels.iter();
        table.row(vec![
            i.id.to_string(),
            labels.next().cloned().unwrap_or_default(),
        ]);
        for label in labels {
            table.row(vec![String::new(), label.clone()]);
        }
    }
    print!("{}", table.render());
    Ok(())
}

pub async fn get(socket: &Path, id: u32, json: bool) -> Result<()> {
    let i = agent::inspect(socket)
        .await?
        .get_identity(v1::IdentityDetailRequest { id })
        .await
        .map_err(rpc_error)?
        .into_inner();
    if json {
        return output::json_document(&IdentityDetailJson::from(&i));
    }
    field("ID", i.id);
    field("Scope", &i.scope);
    output::list("Labels", &i.labels);
    let endpoints: Vec<String> = i
        .endpoints
        .iter()
        .map(|e| format!("{} ({})", e.id, NamespacedName::new(&e.namespace, &e.pod)))
        .collect();
    if endpoints.is_empty() {
        field("Local endpoints", "none");
    } else {
        output::list("Local endpoints", &endpoints);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_unchanged() {
        let entry = v1::IdentityEntry {
            id: 300,
            labels: vec!["k8s:app=web".into()],
        };
        assert_eq!(
            serde_json::to_string(&IdentityJson::from(&entry)).unwrap(),
            include_str!("../testdata/identity_list.json")
        );
        let detail = v1::IdentityDetail {
            id: 300,
            labels: vec!["k8s:app=web".into()],
            scope: "cluster".into(),
            endpoints: vec![v1::LocalEndpointRef {
                id: 1,
                namespace: "x".into(),
                pod: "a".into(),
            }],
        };
        assert_eq!(
            serde_json::to_string_pretty(&IdentityDetailJson::from(&detail)).unwrap(),
            include_str!("../testdata/identity_get.json")
        );
    }
}
