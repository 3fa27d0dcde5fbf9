//! Agent events (Hubble's `AgentEvent`, from an agent's GetAgentEvents):
//! one line each or JSON, for `weir observe agent-events` and
//! `weir monitor --type agent`.

use std::time::{Duration, SystemTime};

use anyhow::Result;
use serde::Serialize;
use weir_observer::proto::flow::{agent_event::Notification, AgentEventType};
use weir_observer::proto::observer::{GetAgentEventsRequest, GetAgentEventsResponse};

use crate::args::AgentEventsArgs;
use crate::time;

/// Hubble's name of an event type (`POLICY_UPDATED`, ...).
fn type_name(value: i32) -> &'static str {
    AgentEventType::try_from(value)
        .unwrap_or(AgentEventType::AgentEventUnknown)
        .as_str_name()
}

fn list(values: &[String]) -> String {
    format!("[{}]", values.join(","))
}

fn pod(namespace: &str, name: &str) -> String {
    if namespace.is_empty() && name.is_empty() {
        String::new()
    } else {
        format!(", pod={namespace}/{name}")
    }
}

/// `TIME [NODE] TYPE: details`.
pub fn line(r: &GetAgentEventsResponse) -> String {
    let event = r.agent_event.clone().unwrap_or_default();
    let details = match &event.notification {
        Some(Notification::AgentStart(t)) => format!(
            "started at {}",
            t.time.as_ref().map(time::clock).unwrap_or_default()
        ),
        Some(Notification::PolicyUpdate(p)) => format!(
            "labels={}, revision={}, rule_count={}",
            list(&p.labels),
            p.revision,
            p.rule_count
        ),
        Some(Notification::EndpointRegenerate(e)) => {
            let mut text = format!("id={}, labels={}", e.id, list(&e.labels));
            if !e.error.is_empty() {
                text.push_str(&format!(", error={}", e.error));
            }
            text
        }
        Some(Notification::EndpointUpdate(e)) => format!(
            "id={}{}, labels={}",
            e.id,
            pod(&e.namespace, &e.pod_name),
            list(&e.labels)
        ),
        Some(Notification::IpcacheUpdate(i)) => {
            let mut text = format!("cidr={}, identity={}", i.cidr, i.identity);
            if let Some(old) = i.old_identity {
                text.push_str(&format!(", old_identity={old}"));
            }
            if !i.host_ip.is_empty() {
                text.push_str(&format!(", host_ip={}", i.host_ip));
            }
            if !i.old_host_ip.is_empty() {
                text.push_str(&format!(", old_host_ip={}", i.old_host_ip));
            }
            text.push_str(&pod(&i.namespace, &i.pod_name));
            text
        }
        Some(Notification::ServiceUpsert(s)) => {
            let addr = |a: &weir_observer::proto::flow::ServiceUpsertNotificationAddr| {
                format!("{}:{}", a.ip, a.port)
            };
            let backends: Vec<String> = s.backend_addresses.iter().map(addr).collect();
            format!(
                "id={}, service={}/{}, type={}, frontend={}, backends={}",
                s.id,
                s.namespace,
                s.name,
                s.r#type,
                s.frontend_address.as_ref().map(addr).unwrap_or_default(),
                list(&backends)
            )
        }
        Some(Notification::ServiceDelete(s)) => format!("id={}", s.id),
        Some(Notification::Unknown(u)) => format!("{}: {}", u.r#type, u.notification),
        None => String::new(),
    };
    format!(
        "{} [{}] {}: {details}",
        r.time.as_ref().map(time::clock).unwrap_or_default(),
        r.node_name,
        type_name(event.r#type)
    )
}

/// One line of `-o json`: the response as Hubble's JSON names it (the
/// notification under its field name), keys sorted.
#[derive(Serialize)]
pub struct AgentEventJson {
    agent_event: EventJson,
    node_name: String,
    time: Option<String>,
}

#[derive(Serialize)]
struct EventJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_start: Option<TimeJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint_regenerate: Option<EndpointJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint_update: Option<EndpointJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipcache_update: Option<IpcacheJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy_update: Option<PolicyJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_delete: Option<ServiceDeleteJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_upsert: Option<ServiceJson>,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    unknown: Option<UnknownJson>,
}

#[derive(Serialize)]
struct TimeJson {
    time: Option<String>,
}

#[derive(Serialize)]
struct PolicyJson {
    labels: Vec<String>,
    revision: u64,
    rule_count: i64,
}

#[derive(Serialize)]
struct EndpointJson {
    error: String,
    id: u64,
    labels: Vec<String>,
    namespace: String,
    pod_name: String,
}

#[derive(Serialize)]
struct IpcacheJson {
    cidr: String,
    host_ip: String,
    identity: u32,
    namespace: String,
    old_host_ip: String,
    old_identity: Option<u32>,
    pod_name: String,
}

#[derive(Serialize)]
struct AddrJson {
    ip: String,
    port: u32,
}

#[derive(Serialize)]
struct ServiceJson {
    backend_addresses: Vec<AddrJson>,
    ext_traffic_policy: String,
    frontend_address: Option<AddrJson>,
    id: u32,
    int_traffic_policy: String,
    name: String,
    namespace: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Serialize)]
struct ServiceDeleteJson {
    id: u32,
}

#[derive(Serialize)]
struct UnknownJson {
    notification: String,
    #[serde(rename = "type")]
    kind: String,
}

impl From<&GetAgentEventsResponse> for AgentEventJson {
    fn from(r: &GetAgentEventsResponse) -> Self {
        let event = r.agent_event.clone().unwrap_or_default();
        let mut json = EventJson {
            agent_start: None,
            endpoint_regenerate: None,
            endpoint_update: None,
            ipcache_update: None,
            policy_update: None,
            service_delete: None,
            service_upsert: None,
            kind: type_name(event.r#type),
            unknown: None,
        };
        let addr = |a: weir_observer::proto::flow::ServiceUpsertNotificationAddr| AddrJson {
            ip: a.ip,
            port: a.port,
        };
        match event.notification {
            Some(Notification::AgentStart(t)) => {
                json.agent_start = Some(TimeJson {
                    time: time::json(&t.time),
                })
            }
            Some(Notification::PolicyUpdate(p)) => {
                json.policy_update = Some(PolicyJson {
                    labels: p.labels,
                    revision: p.revision,
                    rule_count: p.rule_count,
                })
            }
            Some(Notification::EndpointRegenerate(e)) => {
                json.endpoint_regenerate = Some(EndpointJson {
                    error: e.error,
                    id: e.id,
                    labels: e.labels,
                    namespace: String::new(),
                    pod_name: String::new(),
                })
            }
            Some(Notification::EndpointUpdate(e)) => {
                json.endpoint_update = Some(EndpointJson {
                    error: e.error,
                    id: e.id,
                    labels: e.labels,
                    namespace: e.namespace,
                    pod_name: e.pod_name,
                })
            }
            Some(Notification::IpcacheUpdate(i)) => {
                json.ipcache_update = Some(IpcacheJson {
                    cidr: i.cidr,
                    host_ip: i.host_ip,
                    identity: i.identity,
                    namespace: i.namespace,
                    old_host_ip: i.old_host_ip,
                    old_identity: i.old_identity,
                    pod_name: i.pod_name,
                })
            }
            Some(Notification::ServiceUpsert(s)) => {
                json.service_upsert = Some(ServiceJson {
                    backend_addresses: s.backend_addresses.into_iter().map(addr).collect(),
                    ext_traffic_policy: s.ext_traffic_policy,
                    frontend_address: s.frontend_address.map(addr),
                    id: s.id,
                    int_traffic_policy: s.int_traffic_policy,
                    name: s.name,
                    namespace: s.namespace,
                    kind: s.r#type,
                })
            }
            Some(Notification::ServiceDelete(s)) => {
                json.service_delete = Some(ServiceDeleteJson { id: s.id })
            }
            Some(Notification::Unknown(u)) => {
                json.unknown = Some(UnknownJson {
                    notification: u.notification,
                    kind: u.r#type,
                })
            }
            None => {}
        }
        AgentEventJson {
            agent_event: json,
            node_name: r.node_name.clone(),
            time: time::json(&r.time),
        }
    }
}

/// The text or JSON line of one event.
pub fn render(r: &GetAgentEventsResponse, json: bool) -> Result<String> {
    Ok(if json {
        serde_json::to_string(&AgentEventJson::from(r))?
    } else {
        line(r)
    })
}

/// The request of `weir observe agent-events`: the last 20 unless
/// following (as Hubble's CLI), or the first N with `--first`.
pub fn request(args: &AgentEventsArgs) -> GetAgentEventsRequest {
    let since = args.since_seconds.map(|s| {
        let t = SystemTime::now() - Duration::from_secs(s);
        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        weir_observer::proto::Timestamp {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        }
    });
    let default = if args.follow || since.is_some() {
        0
    } else {
        20
    };
    GetAgentEventsRequest {
        number: args.first.or(args.last).unwrap_or(default),
        first: args.first.is_some(),
        follow: args.follow,
        since,
        until: None,
    }
}

#[cfg(test)]
mod tests;
