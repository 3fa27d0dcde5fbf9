//! When an endpoint is ready: its first full regeneration (real identity,
//! policy entries, enforcement flags) is in the kernel. The endpoints
//! reconciler publishes what it wrote to `weir_endpoints` after every pass;
//! CNI ADD waits here until the new endpoint's entry is ready, so a pod
//! never starts before its policy (Cilium's CNI waits the same way).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use weir_abi::EndpointInfo;

use crate::endpoint::registry::Endpoint;

pub struct EndpointReadiness {
    written: watch::Sender<BTreeMap<u32, EndpointInfo>>,
    /// Wakes the reconcile loop at once instead of at its next tick.
    kick: Notify,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "endpoint {id} of pod {pod} was not regenerated within {timeout:?} (identity or policy not \
     in the kernel yet; `weir status` shows which reconcile step fails): it stays closed"
)]
pub struct NotReady {
    pub id: u16,
    pub pod: String,
    pub timeout: Duration,
}

impl Default for EndpointReadiness {
    fn default() -> Self {
        EndpointReadiness {
            written: watch::Sender::new(BTreeMap::new()),
            kick: Notify::new(),
        }
    }
}

impl EndpointReadiness {
    /// What the endpoints map holds now, by ifindex (the reconciler's view).
    pub fn publish(&self, written: &BTreeMap<u32, EndpointInfo>) {
        self.written.send_if_modified(|current| {
            let changed = current != written;
            if changed {
                current.clone_from(written);
            }
            changed
        });
    }

    /// Asks for a reconcile pass now.
    pub fn kick(&self) {
        self.kick.notify_one();
    }

    /// Resolves when a pass was asked for.
    pub async fn kicked(&self) {
        self.kick.notified().await;
    }

    /// Whether `endpoint`'s entry is written and ready.
    pub fn is_ready(&self, endpoint: &Endpoint) -> bool {
        ready_in(&self.written.borrow(), endpoint)
    }

    /// Waits until `endpoint`'s entry is ready, for at most `timeout`.
    pub async fn wait(&self, endpoint: &Endpoint, timeout: Duration) -> Result<(), NotReady> {
        let mut written = self.written.subscribe();
        let wait = async {
            // Drop the borrow of the value at once: it holds a read lock.
            written
                .wait_for(|written| ready_in(written, endpoint))
                .await
                .map(drop)
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(_)) => Ok(()),
            // The sender lives as long as `self`: a closed channel cannot
            // happen while we borrow it; treat it as not ready.
            Ok(Err(_)) | Err(_) => Err(NotReady {
                id: endpoint.id,
                pod: endpoint.pod.to_string(),
                timeout,
            }),
        }
    }
}

/// Ready: the entry at the endpoint's ifindex is this endpoint's (id and
/// address: the ifindex may have been another pod's) and not marked
/// [`EndpointInfo::NOT_READY`].
fn ready_in(written: &BTreeMap<u32, EndpointInfo>, endpoint: &Endpoint) -> bool {
    written.get(&endpoint.host_ifindex).is_some_and(|info| {
        info.id == endpoint.id && info.ipv4 == endpoint.ipv4.octets() && info.is_ready()
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use weir_types::NamespacedName;

    use super::*;
    use crate::endpoint::ipam::AttachmentKey;

    fn endpoint() -> Endpoint {
        Endpoint {
            id: 3,
            attachment: AttachmentKey {
                container_id: "c".into(),
                ifname: "eth0".into(),
            },
            pod: NamespacedName::new("x", "p"),
            netns: "/run/netns/p".into(),
            host_ifname: "lxc3".into(),
            host_ifindex: 17,
            ipv4: "10.244.0.3".parse().unwrap(),
            ipv6: None,
            mac: "02:00:00:00:00:03".into(),
            netns_cookie: 0,
            port_mappings: Vec::new(),
        }
    }

    fn entry(id: u16, flags: u8) -> EndpointInfo {
        EndpointInfo {
            id,
            flags,
            pad: 0,
            identity: 300,
            ipv4: [10, 244, 0, 3],
            ..EndpointInfo::default()
        }
    }

    #[test]
    fn only_this_endpoints_ready_entry_counts() {
        let e = endpoint();
        let cases = [
            (BTreeMap::new(), false),
            (
                BTreeMap::from([(17, EndpointInfo::not_ready(3, [10, 244, 0, 3]))]),
                false,
            ),
            (BTreeMap::from([(17, entry(4, 0))]), false),
            (BTreeMap::from([(18, entry(3, 0))]), false),
            (BTreeMap::from([(17, entry(3, 0))]), true),
            (
                BTreeMap::from([(17, entry(3, EndpointInfo::INGRESS_ENFORCED))]),
                true,
            ),
        ];
        for (written, ready) in cases {
            assert_eq!(ready_in(&written, &e), ready, "{written:?}");
        }
    }

    #[tokio::test]
    async fn wait_returns_once_the_entry_is_ready_and_times_out_otherwise() {
        let readiness = Arc::new(EndpointReadiness::default());
        let e = endpoint();
        let err = readiness
            .wait(&e, Duration::from_millis(20))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("stays closed"), "{err}");

        let publisher = readiness.clone();
        let waiter = tokio::spawn({
            let readiness = readiness.clone();
            let e = e.clone();
            async move { readiness.wait(&e, Duration::from_secs(10)).await }
        });
        publisher.publish(&BTreeMap::from([(
            17,
            EndpointInfo::not_ready(3, [10, 244, 0, 3]),
        )]));
        publisher.publish(&BTreeMap::from([(17, entry(3, 0))]));
        waiter.await.unwrap().unwrap();
        assert!(readiness.is_ready(&e));
    }
}
