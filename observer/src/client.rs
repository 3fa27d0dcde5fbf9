//! Reaching an Observer API: `unix:///path` (or a bare path) for a local
//! socket, `http://host:port` for TCP, `https://host:port` for TCP with
//! TLS ([`ClientTls`], given with [`Target::with_tls`]). Used by `weir
//! observe` and the relay.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::proto::observer::observer_client::ObserverClient;
use crate::tls::ClientTls;

/// Where an Observer API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Unix(PathBuf),
    /// `http://host:port`, kept as written.
    Http(String),
    /// `https://host:port`, kept as written, and the TLS to reach it with
    /// (None until [`Target::with_tls`]: such a target cannot be dialled).
    Https(String, Option<ClientTls>),
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(
        "{0:?}: expected unix:///PATH, an absolute path, http://HOST:PORT or https://HOST:PORT"
    )]
    Unsupported(String),
    #[error("{0}: an https:// target needs a CA to trust (the TLS options)")]
    NoTls(String),
    #[error("{address:?}: {source}")]
    Invalid {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
}

impl Target {
    pub fn parse(text: &str) -> Result<Self, TargetError> {
        if let Some(path) = text.strip_prefix("unix://") {
            if path.starts_with('/') {
                return Ok(Target::Unix(PathBuf::from(path)));
            }
        } else if text.starts_with('/') {
            return Ok(Target::Unix(PathBuf::from(text)));
        } else if let Some(rest) = text.strip_prefix("http://") {
            if !rest.is_empty() && !rest.contains('/') {
                return Ok(Target::Http(text.to_string()));
            }
        } else if let Some(rest) = text.strip_prefix("https://") {
            if !rest.is_empty() && !rest.contains('/') {
                return Ok(Target::Https(text.to_string(), None));
            }
        }
        Err(TargetError::Unsupported(text.to_string()))
    }

    /// An `https://` target with `tls`; other targets as they are.
    pub fn with_tls(self, tls: Option<&ClientTls>) -> Target {
        match self {
            Target::Https(address, _) => Target::Https(address, tls.cloned()),
            other => other,
        }
    }

    /// A channel that connects on first use and reconnects after failures,
    /// so a peer that is down now can be reached later. `connect_timeout`
    /// bounds each connection attempt.
    pub fn lazy_channel(&self, connect_timeout: Duration) -> Result<Channel, TargetError> {
        let endpoint = self.endpoint(connect_timeout)?;
        Ok(match self {
            Target::Http(_) | Target::Https(..) => endpoint.connect_lazy(),
            Target::Unix(path) => endpoint.connect_with_connector_lazy(unix_connector(path)),
        })
    }

    /// A client connected now: an unreachable API is an error here rather
    /// than at the first call.
    pub async fn connect(
        &self,
        connect_timeout: Duration,
    ) -> Result<ObserverClient<Channel>, ConnectError> {
        let endpoint = self.endpoint(connect_timeout)?;
        let channel = match self {
            Target::Http(_) | Target::Https(..) => endpoint.connect().await,
            Target::Unix(path) => endpoint.connect_with_connector(unix_connector(path)).await,
        }
        .map_err(|source| ConnectError::Unreachable {
            target: self.to_string(),
            source,
        })?;
        Ok(ObserverClient::new(channel))
    }

    fn endpoint(&self, connect_timeout: Duration) -> Result<Endpoint, TargetError> {
        let endpoint = match self {
            Target::Http(address) => {
                Endpoint::from_shared(address.clone()).map_err(|source| TargetError::Invalid {
                    address: address.clone(),
                    source,
                })?
            }
            Target::Https(address, tls) => {
                let tls = tls
                    .as_ref()
                    .ok_or_else(|| TargetError::NoTls(address.clone()))?;
                let invalid = |source| TargetError::Invalid {
                    address: address.clone(),
                    source,
                };
                Endpoint::from_shared(address.clone())
                    .map_err(invalid)?
                    .tls_config(tls.config())
                    .map_err(invalid)?
            }
            // The URI is required by the API but unused: the connector dials the socket.
            Target::Unix(_) => Endpoint::from_static("http://[::1]:50051"),
        };
        // HTTP/2 keepalives: a peer that vanished (a node powered off, a
        // dropped path) is noticed within a minute even on a quiet follow
        // stream, instead of holding it open forever.
        Ok(endpoint
            .connect_timeout(connect_timeout)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true))
    }
}

fn unix_connector(
    path: &std::path::Path,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl Send + 'static,
> + Clone
       + Send
       + 'static {
    let path = path.to_path_buf();
    tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move {
            let stream = tokio::net::UnixStream::connect(path).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    })
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Unix(path) => write!(f, "unix://{}", path.display()),
            Target::Http(address) | Target::Https(address, _) => f.write_str(address),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("cannot reach the Observer API at {target}")]
    Unreachable {
        target: String,
        #[source]
        source: tonic::transport::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_unix_paths_and_http_addresses() {
        let unix = Target::parse("unix:///run/weir/hubble.sock").unwrap();
        assert_eq!(unix, Target::Unix("/run/weir/hubble.sock".into()));
        assert_eq!(unix.to_string(), "unix:///run/weir/hubble.sock");
        assert_eq!(
            Target::parse("/run/weir/hubble.sock").unwrap(),
            Target::Unix("/run/weir/hubble.sock".into())
        );
        assert_eq!(
            Target::parse("http://10.0.0.1:4244").unwrap(),
            Target::Http("http://10.0.0.1:4244".into())
        );
        // https:// parses, but cannot be dialled until it is given TLS.
        let https = Target::parse("https://10.0.0.1:4244").unwrap();
        assert_eq!(https, Target::Https("https://10.0.0.1:4244".into(), None));
        assert!(matches!(
            https.lazy_channel(Duration::from_secs(1)),
            Err(TargetError::NoTls(_))
        ));
        for bad in [
            "unix://relative",
            "relative.sock",
            "https://",
            "https://x:1/path",
            "http://",
            "http://x:1/path",
            "",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
