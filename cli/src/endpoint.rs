//! `weir endpoint list|get`: the local endpoints.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;
use weir_agent_api::v1;
use weir_types::NamespacedName;

use crate::agent::{self, rpc_error};
use crate::output::{self, enforcement_or_audit, field};
use crate::table::Table;

/// One row of `endpoint list -o json` (fields in key order, see
/// [`crate::output`]).
#[derive(Serialize)]
struct EndpointJson<'a> {
    egress_policy: &'static str,
    host_ifindex: u32,
    host_ifname: &'a str,
    id: u32,
    ingress_policy: &'static str,
    ipv4: &'a str,
    /// Dual stack only: absent for an IPv4-only pod.
    #[serde(skip_serializing_if = "str::is_empty")]
    ipv6: &'a str,
    mac: &'a str,
    pod: String,
}

impl<'a> EndpointJson<'a> {
    /// The registry's record with the policy state of its detail (None:
    /// the endpoint went away between the two calls).
    fn new(e: &'a v1::Endpoint, detail: Option<&v1::EndpointDetail>) -> Self {
        let (ingress_policy, egress_policy) = policy_modes(detail);
        EndpointJson {
            egress_policy,
            host_ifindex: e.host_ifindex,
            host_ifname: &e.host_ifname,
            id: e.id,
            ingress_policy,
            ipv4: &e.ipv4,
            ipv6: &e.ipv6,
            mac: &e.mac,
            pod: pod(&e.pod),
        }
    }
}

/// Ingress and egress: `enforced`, `allow-all`, `audit`, or `unknown`
/// without a detail.
fn policy_modes(detail: Option<&v1::EndpointDetail>) -> (&'static str, &'static str) {
    match detail {
        Some(d) => (
            enforcement_or_audit(d.ingress_enforced, d.policy_audit_mode),
            enforcement_or_audit(d.egress_enforced, d.policy_audit_mode),
        ),
        None => ("unknown", "unknown"),
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
    policy_audit_mode: bool,
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
            policy_audit_mode: e.policy_audit_mode,
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
    // Policy state (enforcement, audit mode) is the inspection API's: one
    // detail per endpoint, on the same local socket.
    let mut inspect = agent::inspect(socket).await?;
    let mut details = Vec::with_capacity(response.endpoints.len());
    for e in &response.endpoints {
        let detail = match inspect
            .get_endpoint(v1::EndpointDetailRequest { id: e.id })
            .await
        {
            Ok(detail) => Some(detail.into_inner()),
            Err(status) if status.code() == tonic::Code::NotFound => None,
            Err(status) => return Err(rpc_error(status)),
        };
        details.push(detail);
    }
    if json {
        let rows: Vec<EndpointJson> = response
            .endpoints
            .iter()
            .zip(&details)
            .map(|(e, d)| EndpointJson::new(e, d.as_ref()))
            .collect();
        return output::json_document(&rows);
    }
    // An IPv6 column on a dual-stack node only.
    let dual_stack = response.endpoints.iter().any(|e| !e.ipv6.is_empty());
    let mut headers = vec!["ID", "POD", "IPV4"];
    if dual_stack {
        headers.push("IPV6");
    }
    headers.extend(["HOST IF", "MAC", "POLICY (INGRESS)", "POLICY (EGRESS)"]);
    let mut table = Table::new(&headers);
    for (e, detail) in response.endpoints.iter().zip(&details) {
        let (ingress, egress) = policy_modes(detail.as_ref());
        let mut row = vec![e.id.to_string(), pod(&e.pod), e.ipv4.clone()];
        if dual_stack {
            row.push(e.ipv6.clone());
        }
        row.extend([
            e.host_ifname.clone(),
            e.mac.clone(),
            ingress.to_string(),
            egress.to_string(),
        ]);
        table.row(row);
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
    field(
        "Ingress policy",
        enforcement_or_audit(e.ingress_enforced, e.policy_audit_mode),
    );
    field(
        "Egress policy",
        enforcement_or_audit(e.egress_enforced, e.policy_audit_mode),
    );
    field(
        "Policy audit mode",
        if e.policy_audit_mode { "on" } else { "off" },
    );
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
                ipv6: String::new(),
                mac: "02:00:00:00:00:01".into(),
                netns_cookie: 7,
                port_mappings: Vec::new(),
            },
            v1::Endpoint {
                id: 2,
                pod: None,
                ..Default::default()
            },
        ];
        let audited = v1::EndpointDetail {
            ingress_enforced: true,
            policy_audit_mode: true,
            ..Default::default()
        };
        let details = [Some(&audited), None];
        let rows: Vec<EndpointJson> = endpoints
            .iter()
            .zip(details)
            .map(|(e, d)| EndpointJson::new(e, d))
            .collect();
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
            policy_audit_mode: false,
            container_id: "3f2a".into(),
            netns: "/run/netns/a".into(),
        };
        assert_eq!(
            serde_json::to_string_pretty(&EndpointDetailJson::from(&e)).unwrap(),
            include_str!("../testdata/endpoint_get.json")
        );
    }
}
