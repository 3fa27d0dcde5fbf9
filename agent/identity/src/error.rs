//! Errors of the shared store.

use weir_abi::identity::{CLUSTER_MAX, CLUSTER_MIN};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid store configuration: {0}")]
    Config(String),
    #[error("etcd at {endpoints} is unreachable (is it running and listening there?)")]
    Unreachable {
        endpoints: String,
        #[source]
        source: etcd_client::Error,
    },
    /// Failed fast or timed out: the store is not answering now (see
    /// [`crate::Connection`]); the call is worth retrying later.
    #[error("etcd at {endpoints} is not answering: {reason}")]
    NotAnswering { endpoints: String, reason: String },
    #[error("etcd {op} on {key:?} failed")]
    Etcd {
        op: &'static str,
        key: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("Kubernetes API {op} of {what} failed")]
    Kube {
        op: &'static str,
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("watch of {what} failed")]
    Watch {
        what: &'static str,
        #[source]
        source: kube::runtime::watcher::Error,
    },
    #[error("value stored under {key:?} is malformed: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("cannot allocate an identity for an empty label set")]
    EmptyLabels,
    #[error("no free identity left in {min}..={max}")]
    Exhausted { min: u32, max: u32 },
    #[error("gave up allocating an identity after {0} conflicting attempts")]
    Contended(u32),
    #[error("identity {0} is not a cluster identity ({CLUSTER_MIN}..={CLUSTER_MAX})")]
    NotClusterIdentity(u32),
    /// The store answered that it will never take this input (the API
    /// server's validation, 422): the same input fails the same way, so
    /// the caller should not retry it at once.
    #[error("the store refused {what}: {reason}")]
    Refused { what: String, reason: String },
}

impl StoreError {
    pub(crate) fn etcd(
        op: &'static str,
        key: impl AsRef<[u8]>,
        source: etcd_client::Error,
    ) -> Self {
        StoreError::Etcd {
            op,
            key: String::from_utf8_lossy(key.as_ref()).into_owned(),
            source,
        }
    }

    pub(crate) fn kube(op: &'static str, what: impl Into<String>, source: kube::Error) -> Self {
        StoreError::Kube {
            op,
            what: what.into(),
            source,
        }
    }

    pub(crate) fn corrupt(key: impl AsRef<[u8]>, reason: impl ToString) -> Self {
        StoreError::Corrupt {
            key: String::from_utf8_lossy(key.as_ref()).into_owned(),
            reason: reason.to_string(),
        }
    }
}

impl StoreError {
    /// Whether the error says the store did not answer (as opposed to an
    /// answer that refused or a bad record).
    pub fn is_unanswered(&self) -> bool {
        match self {
            StoreError::Unreachable { .. } | StoreError::NotAnswering { .. } => true,
            StoreError::Etcd { source, .. } => match source {
                etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
                etcd_client::Error::GRpcStatus(status) => {
                    // gRPC's Cancelled (1, what the client's own request
                    // timeout gives), Unknown (2, a reset connection),
                    // DeadlineExceeded (4) and Unavailable (14).
                    matches!(i32::from(status.code()), 1 | 2 | 4 | 14)
                }
                _ => false,
            },
            StoreError::Kube { source, .. } => kube_unanswered(source),
            StoreError::Watch {
                source:
                    kube::runtime::watcher::Error::InitialListFailed(e)
                    | kube::runtime::watcher::Error::WatchStartFailed(e)
                    | kube::runtime::watcher::Error::WatchFailed(e),
                ..
            } => kube_unanswered(e),
            _ => false,
        }
    }
}

/// A transport failure, or the API server saying it cannot answer now
/// (429, 5xx).
fn kube_unanswered(error: &kube::Error) -> bool {
    match error {
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        _ => false,
    }
}
