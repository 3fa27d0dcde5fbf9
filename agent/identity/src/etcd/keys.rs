//! The etcd key layout, all under one configurable prefix `<p>`:
//!
//! | key | value | lease |
//! |---|---|---|
//! | `<p>/identities/v1/id/<id>` | labels as a JSON object | none |
//! | `<p>/identities/v1/value/<canonical labels>` | id in decimal | none |
//! | `<p>/identities/v1/refs/<id>/<node>` | empty | the node's |
//! | `<p>/endpoints/v1/<ip>` | [`EndpointRecord`] JSON | the writer's |
//! | `<p>/nodes/v1/<name>` | [`NodeRecord`] JSON | the writer's |
//!
//! The two identity keys are the identity itself and outlive any node; the
//! refs say which nodes use it, and vanish with their node's lease, so an
//! identity without refs is garbage. Numeric keys are plain decimal, `<ip>`
//! is the address's standard text form.
//!
//! [`EndpointRecord`]: crate::store::EndpointRecord
//! [`NodeRecord`]: crate::store::NodeRecord

use std::net::IpAddr;

#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }

    pub fn identity_ids(&self) -> String {
        format!("{}/identities/v1/id/", self.prefix)
    }

    pub fn identity_id(&self, id: u32) -> String {
        format!("{}{id}", self.identity_ids())
    }

    pub fn identity_value(&self, canonical: &str) -> String {
        format!("{}/identities/v1/value/{canonical}", self.prefix)
    }

    pub fn identity_refs(&self) -> String {
        format!("{}/identities/v1/refs/", self.prefix)
    }

    /// Ends in '/', so refs of 25 are not refs of 256.
    pub fn identity_refs_of(&self, id: u32) -> String {
        format!("{}{id}/", self.identity_refs())
    }

    pub fn identity_ref(&self, id: u32, node: &str) -> String {
        format!("{}{node}", self.identity_refs_of(id))
    }

    /// The identity a ref key belongs to.
    pub fn ref_identity(&self, key: &str) -> Option<u32> {
        let rest = key.strip_prefix(&self.identity_refs())?;
        rest.split_once('/')?.0.parse().ok()
    }

    pub fn endpoints(&self) -> String {
        format!("{}/endpoints/v1/", self.prefix)
    }

    pub fn endpoint(&self, ip: IpAddr) -> String {
        format!("{}{ip}", self.endpoints())
    }

    pub fn nodes(&self) -> String {
        format!("{}/nodes/v1/", self.prefix)
    }

    pub fn node(&self, name: &str) -> String {
        format!("{}{name}", self.nodes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let k = Keys::new("weir/state/");
        assert_eq!(k.identity_id(256), "weir/state/identities/v1/id/256");
        assert_eq!(
            k.identity_value("k8s:app=web;"),
            "weir/state/identities/v1/value/k8s:app=web;"
        );
        assert_eq!(
            k.identity_ref(256, "node-a"),
            "weir/state/identities/v1/refs/256/node-a"
        );
        assert_eq!(
            k.endpoint("10.0.1.5".parse().unwrap()),
            "weir/state/endpoints/v1/10.0.1.5"
        );
        assert_eq!(
            k.endpoint("fd00::5".parse().unwrap()),
            "weir/state/endpoints/v1/fd00::5"
        );
        assert_eq!(k.node("node-a"), "weir/state/nodes/v1/node-a");
    }

    #[test]
    fn ref_prefixes_do_not_overlap_between_ids() {
        let k = Keys::new("p");
        assert!(!k
            .identity_ref(256, "n")
            .starts_with(&k.identity_refs_of(25)));
        assert_eq!(k.ref_identity(&k.identity_ref(256, "n")), Some(256));
        assert_eq!(k.ref_identity("p/identities/v1/refs/x/n"), None);
        assert_eq!(k.ref_identity("p/identities/v1/refs/256"), None);
    }
}
