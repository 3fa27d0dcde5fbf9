//! Policy audit mode (Cilium's `--policy-audit-mode`): an endpoint in it
//! has its policy computed and looked up as usual, but what policy would
//! drop is reported as a flow with verdict AUDIT and passes
//! (`EndpointInfo::AUDIT`).
//!
//! Where it is decided, most specific first: the pod's
//! `policy.weir.io/audit-mode` annotation, its namespace's, then the
//! agent's `--policy-audit-mode` for every endpoint of the node.

use crate::cluster::manifest::{Namespace, Pod};

/// Whether an endpoint of `pod` (in `namespace`) runs in audit mode; both
/// `None` when the manifests do not know them (yet).
pub fn audit_mode(node_wide: bool, pod: Option<&Pod>, namespace: Option<&Namespace>) -> bool {
    pod.and_then(|p| p.policy_audit_mode)
        .or_else(|| namespace.and_then(|n| n.policy_audit_mode))
        .unwrap_or(node_wide)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(audit: Option<bool>) -> Pod {
        Pod {
            namespace: "x".into(),
            name: "a".into(),
            labels: Default::default(),
            node: None,
            ports: Vec::new(),
            policy_audit_mode: audit,
        }
    }

    fn namespace(audit: Option<bool>) -> Namespace {
        Namespace {
            name: "x".into(),
            labels: Default::default(),
            policy_audit_mode: audit,
        }
    }

    #[test]
    fn the_most_specific_setting_wins() {
        // Nothing said: the node's flag.
        assert!(!audit_mode(false, Some(&pod(None)), Some(&namespace(None))));
        assert!(audit_mode(true, Some(&pod(None)), Some(&namespace(None))));
        assert!(audit_mode(true, None, None));
        // The namespace over the node.
        assert!(audit_mode(
            false,
            Some(&pod(None)),
            Some(&namespace(Some(true)))
        ));
        assert!(!audit_mode(
            true,
            Some(&pod(None)),
            Some(&namespace(Some(false)))
        ));
        // The pod over both.
        assert!(audit_mode(
            false,
            Some(&pod(Some(true))),
            Some(&namespace(Some(false)))
        ));
        assert!(!audit_mode(
            true,
            Some(&pod(Some(false))),
            Some(&namespace(Some(true)))
        ));
        assert!(audit_mode(false, Some(&pod(Some(true))), None));
    }
}
