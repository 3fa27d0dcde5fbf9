//! `weir endpoint list|get`: the local endpoints.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;
use weir_agent_api::v1;
use weir_types::NamespacedName;

use crate::agent::{self, rpc_error};
use crate::output::{self, enforcement, field};
use crate::table::Table;

/// One row of `endpoint list -o json` (fields in key order, see
/// [`crate::output`]).
#[derive(Serialize)]
struct EndpointJson<'a> {
    host_ifindex: u32,
    host_ifname: &'a str,
    id: u32,
    ipv4: &'a str,
    mac: &'a str,
    pod: String,
}

impl<'a> From<&'a v1::Endpoint> for EndpointJson<'a> {
    fn from(e: &'a v1::Endpoint) -> Self {
        EndpointJson {
            host_ifindex: e.host_ifindex,
            host_ifname: &e.host_ifname,
            id: e.id,
            ipv4: &e.ipv4,
            mac: &e.mac,
            pod: pod(&e.pod),
        }
    }
}

/// `endpoint get -o json`.
#[derive(Serialize)]
struct EndpointDetailJson<'a> {
    addresses: &'a [String],
    container_id: &'a str,
    egress_enforced: bool,
    id: u32,
    identity: u32,
    ifindex: u32,
    ingress_enforced: bool,
    interface: &'a str,
    labels: &'a [String],
    mac: &'a str,
    namespace: &'a str,
    netns: &'a str,
    pod: &'a str,
    policy_map_entries: u64,
}

impl<'a> From<&'a v1::EndpointDetail> for EndpointDetailJson<'a> {
    fn from(e: &'a v1::EndpointDetail) -> Self {
        EndpointDetailJson {
            addresses: &e.addresses,
            container_id: &e.container_id,
            egress_enforced: e.egress_enforced,
            id: e.id,
            identity: e.identity,
            ifindex: e.ifindex,
            ingress_enforced: e.ingress_enforced,
            interface: &e.interface,
            labels: &e.labels,
            mac: &e.mac,
            namespace: &e.namespace,
            netns: &e.netns,
            pod: &e.pod,
            policy_map_entries: e.policy_map_entries,
        }
    }
}

/// The pod of an endpoint, empty when it has none.
fn pod(p: &Option<v1::PodRef>) -> String {
    p.as_ref()
        .map(|p| NamespacedName::new(&p.namespace, &p.name).to_string())
        .unwrap_or_default()
}

pub async fn list(socket: &Path, json: bool) -> Result<()> {
    let response = agent::endpoints(socket)
        .await?
        .list_endpoints(v1::ListEndpointsRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner();
    if json {
        let rows: Vec<EndpointJson> = response.endpoints.iter().map(Into::into).collect();
        return output::json_document(&rows);
    }
    let mut table = Table::new(&["ID", "POD", "IPV4", "HOST IF", "MAC"]);
    for e in &response.endpoints {
        table.row(vec![
            e.id.to_string(),
            pod(&e.pod),
            e.ipv4.clone(),
            e.host_ifname.clone(),
            e.mac.clone(),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}

pub async fn get(socket: &Path, id: u32, json: bool) -> Result<()> {
    let e = agent::inspect(socket)
        .await?
        .get_endpoint(v1::EndpointDetailRequest { id })
        .await
        .map_err(rpc_error)?
        .into_inner();
    if json {
        return output::json_document(&EndpointDetailJson::from(&e));
    }
    field("ID", e.id);
    field("Pod", NamespacedName::new(&e.namespace, &e.pod).to_string());
    let identity = if e.identity == 0 {
        "none yet".to_string()
    } else {
        e.identity.to_string()
    };
    field("Identity", identity);
    output::list("Labels", &e.labels);
    output::list("Addresses", &e.addresses);
    field(
        "Interface",
        format!("{} (ifindex {})", e.interface, e.ifindex),
    );
    field("MAC", &e.mac);
    field("Ingress policy", enforcement(e.ingress_enforced));
    field("Egress policy", enforcement(e.egress_enforced));
    field("Policy map", format!("{} entries", e.policy_map_entries));
    field("Container", &e.container_id);
    field("Netns", &e.netns);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_json_is_unchanged() {
        let endpoints = [
            v1::Endpoint {
                id: 1,
                attachment: None,
                pod: Some(v1::PodRef {
                    namespace: "x".into(),
                    name: "a".into(),
                }),
                netns: "/run/netns/a".into(),
                host_ifname: "lxc1".into(),
                host_ifindex: 12,
                ipv4: "10.244.1.2".into(),
                mac: "02:00:00:00:00:01".into(),
                netns_cookie: 7,
            },
            v1::Endpoint {
                id: 2,
                pod: None,
                ..Default::default()
            },
        ];
        let rows: Vec<EndpointJson> = endpoints.iter().map(Into::into).collect();
        assert_eq!(
            serde_json::to_string_pretty(&rows).unwrap(),
            include_str!("../testdata/endpoint_list.json")
        );
        let none: Vec<EndpointJson> = Vec::new();
        assert_eq!(
            serde_json::to_string_pretty(&none).unwrap(),
            include_str!("../testdata/endpoint_list_empty.json")
        );
    }

    #[test]
    fn detail_json_is_unchanged() {
        let e = v1::EndpointDetail {
            id: 1,
            namespace: "x".into(),
            pod: "a".into(),
            labels: vec!["k8s:pod=a".into(), "k8s:ns=x".into()],
            identity: 14437,
            addresses: vec!["10.244.1.2".into()],
            ifindex: 12,
            interface: "lxc1".into(),
            mac: "02:00:00:00:00:01".into(),
            ingress_enforced: true,
            egress_enforced: false,
            policy_map_entries: 6,
            container_id: "3f2a".into(),
            netns: "/run/netns/a".into(),
        };
        assert_eq!(
            serde_json::to_string_pretty(&EndpointDetailJson::from(&e)).unwrap(),
            include_str!("../testdata/endpoint_get.json")
        );
    }
}
