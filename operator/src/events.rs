//! Kubernetes Events, written as core/v1 Events (in the object's namespace,
//! `default` for cluster-scoped objects such as Nodes), which every server
//! version accepts: the events.k8s.io/v1 kind (kube-runtime's recorder) is
//! refused by 1.20 for a cluster-scoped object unless it lives in
//! kube-system, where `kubectl describe node` would not look.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::PostParams;
use kube::{Api, Client};

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Normal,
    Warning,
}

#[derive(Clone)]
pub struct Events {
    client: Client,
    component: String,
    instance: String,
}

impl Events {
    pub fn new(client: Client, component: &str, instance: &str) -> Events {
        Events {
            client,
            component: component.into(),
            instance: instance.into(),
        }
    }

    /// Records one event about `object`.
    pub async fn publish(
        &self,
        object: ObjectReference,
        kind: Kind,
        reason: &str,
        message: &str,
    ) -> Result<(), kube::Error> {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", object.name.as_deref().unwrap_or("object"))),
                ..ObjectMeta::default()
            },
            involved_object: object,
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(
                match kind {
                    Kind::Normal => "Normal",
                    Kind::Warning => "Warning",
                }
                .into(),
            ),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: None,
            }),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.instance.clone()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Event::default()
        };
        let namespace = event
            .involved_object
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        api.create(&PostParams::default(), &event).await.map(drop)
    }
}
