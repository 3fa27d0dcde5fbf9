//! TLS for the Observer API's TCP listeners and the clients that reach
//! them (the relay's peers, `weir observe`), as Hubble's options have it:
//! a server certificate and key, optionally a CA whose client certificates
//! the server requires (mutual TLS); a client trusts the CA it is given
//! (never the system's roots) and may present a certificate of its own.
//! Files are PEM, read once when the listener or client is made.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: give both a certificate and its key")]
    HalfIdentity { what: &'static str },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// A server's TLS: its certificate chain and key, and the CA of the client
/// certificates it requires (none: any client, as with plain TLS).
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

impl ServerTls {
    /// From a listener's options: none without a certificate; a
    /// certificate without its key (or the reverse) is an error.
    pub fn from_options(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        client_ca: Option<PathBuf>,
    ) -> Result<Option<ServerTls>, TlsError> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(ServerTls {
                cert,
                key,
                client_ca,
            })),
            (None, None) if client_ca.is_none() => Ok(None),
            _ => Err(TlsError::HalfIdentity {
                what: "a TLS listener (a client CA needs a server certificate too)",
            }),
        }
    }

    /// The server configuration, files read now.
    pub fn config(&self) -> Result<ServerTlsConfig, TlsError> {
        let identity = Identity::from_pem(read(&self.cert)?, read(&self.key)?);
        let config = ServerTlsConfig::new().identity(identity);
        Ok(match &self.client_ca {
            Some(ca) => config.client_ca_root(Certificate::from_pem(read(ca)?)),
            None => config,
        })
    }
}

/// A client's TLS: the CA it trusts, the certificate it presents (if the
/// server asks for one), the name it expects (default: the host it dials).
/// The PEM contents, so targets can be compared and cloned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    ca: Vec<u8>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    server_name: Option<String>,
}

impl ClientTls {
    pub fn load(
        ca: &Path,
        cert: Option<&Path>,
        key: Option<&Path>,
        server_name: Option<String>,
    ) -> Result<ClientTls, TlsError> {
        let identity = match (cert, key) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            (None, None) => None,
            _ => {
                return Err(TlsError::HalfIdentity {
                    what: "a TLS client certificate",
                })
            }
        };
        Ok(ClientTls {
            ca: read(ca)?,
            identity,
            server_name,
        })
    }

    pub fn config(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca));
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(name) = &self.server_name {
            config = config.domain_name(name.clone());
        }
        config
    }
}
