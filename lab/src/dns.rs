//! The cluster DNS of the lab's real nodes (`weir-lab dns --node N`): one
//! server per node, on the node's address, port 53 (UDP and TCP), which
//! that node's kubelet gives its pods as their nameserver
//! (`--cluster-dns`, search path under [`zone::CLUSTER_DOMAIN`]). It
//! answers from Services and Endpoints it watches on the API server, by
//! the naming rules in [`zone`]. Upstream clusters run CoreDNS for this;
//! no registry here serves it, and the lab only needs the cluster's own
//! names (it is sealed: nothing is forwarded).

pub mod zone;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use hickory_proto::op::{Message, MessageType, ResponseCode};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use crate::api;
use zone::ServiceRecord;

/// The DNS port.
pub const PORT: u16 = 53;
/// How long a TCP client may stay idle between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// TCP connections served at once; more wait to be accepted.
const TCP_CONNECTIONS: usize = 32;

/// Serves the cluster's names on `listen`:53 until SIGTERM, as the client
/// of `kubeconfig`.
pub fn run(kubeconfig: &Path, listen: Ipv4Addr) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(async move {
        let client = api::client(kubeconfig).await?;
        let services = mirror::<Service>(Api::all(client.clone()));
        let endpoints = mirror::<Endpoints>(Api::all(client));
        services.wait_until_ready().await?;
        endpoints.wait_until_ready().await?;
        let address = SocketAddr::from((listen, PORT));
        let udp = UdpSocket::bind(address)
            .await
            .with_context(|| format!("bind udp {address}"))?;
        let tcp = TcpListener::bind(address)
            .await
            .with_context(|| format!("bind tcp {address}"))?;
        eprintln!("dns: serving {} on {address}", zone::CLUSTER_DOMAIN);
        let cluster = Arc::new(Cluster {
            services,
            endpoints,
        });
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = serve_udp(&udp, &cluster) => result,
            result = serve_tcp(&tcp, cluster.clone()) => result,
            _ = terminate.recv() => Ok(()),
        }
    })
}

/// A store of `K` kept current by a watch (retried with backoff).
fn mirror<K>(api: Api<K>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    tokio::spawn(stream.for_each(|event| async move {
        if let Err(error) = event {
            eprintln!("dns: watch: {error}");
        }
    }));
    store
}

/// What the server knows of the cluster.
struct Cluster {
    services: Store<Service>,
    endpoints: Store<Endpoints>,
}

impl Cluster {
    fn service(&self, namespace: &str, name: &str) -> Option<ServiceRecord> {
        let service = self.services.get(&ObjectRef::new(name).within(namespace))?;
        let spec = service.spec.as_ref()?;
        if spec.type_.as_deref() == Some("ExternalName") {
            return spec.external_name.clone().map(ServiceRecord::ExternalName);
        }
        match spec.cluster_ip.as_deref() {
            Some("None") => Some(ServiceRecord::Headless(
                self.ready_addresses(namespace, name),
            )),
            Some(ip) => ip.parse().ok().map(ServiceRecord::ClusterIp),
            None => None,
        }
    }

    /// The ready IPv4 addresses of a Service's Endpoints.
    fn ready_addresses(&self, namespace: &str, name: &str) -> Vec<Ipv4Addr> {
        let Some(endpoints) = self.endpoints.get(&ObjectRef::new(name).within(namespace)) else {
            return Vec::new();
        };
        let mut addresses: Vec<Ipv4Addr> = endpoints
            .subsets
            .iter()
            .flatten()
            .flat_map(|subset| subset.addresses.iter().flatten())
            .filter_map(|address| address.ip.parse().ok())
            .collect();
        addresses.sort();
        addresses.dedup();
        addresses
    }

    /// The response to one message (FORMERR, keeping its id, to one that
    /// does not parse; nothing to fewer bytes than a header).
    fn respond(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let response = match Message::from_vec(bytes) {
            Ok(request) if request.message_type() == MessageType::Query => {
                zone::answer(&request, |namespace, name| self.service(namespace, name))
            }
            // Responses are not answered (no loops between servers).
            Ok(_) => return None,
            Err(_) if bytes.len() >= 12 => {
                let mut error = Message::new();
                error
                    .set_id(u16::from_be_bytes([bytes[0], bytes[1]]))
                    .set_message_type(MessageType::Response)
                    .set_response_code(ResponseCode::FormErr);
                error
            }
            Err(_) => return None,
        };
        response.to_vec().ok()
    }
}

async fn serve_udp(socket: &UdpSocket, cluster: &Cluster) -> Result<()> {
    let mut buffer = vec![0u8; 4096];
    loop {
        let (length, peer) = socket.recv_from(&mut buffer).await?;
        if let Some(response) = cluster.respond(&buffer[..length]) {
            // A lost reply is the client's to retry.
            let _ = socket.send_to(&response, peer).await;
        }
    }
}

async fn serve_tcp(listener: &TcpListener, cluster: Arc<Cluster>) -> Result<()> {
    let slots = Arc::new(Semaphore::new(TCP_CONNECTIONS));
    loop {
        let slot = slots.clone().acquire_owned().await?;
        let (stream, _) = listener.accept().await?;
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let _ = serve_connection(stream, &cluster).await;
            drop(slot);
        });
    }
}

/// Length-prefixed messages (RFC 1035 4.2.2) until the client closes or
/// stays idle for [`TCP_IDLE`].
async fn serve_connection(mut stream: TcpStream, cluster: &Cluster) -> std::io::Result<()> {
    loop {
        let Ok(length) = tokio::time::timeout(TCP_IDLE, stream.read_u16()).await else {
            return Ok(());
        };
        let mut bytes = vec![0u8; usize::from(length?)];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut bytes))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        let Some(response) = cluster.respond(&bytes) else {
            return Ok(());
        };
        let length = u16::try_from(response.len()).unwrap_or(u16::MAX);
        stream.write_u16(length).await?;
        stream.write_all(&response).await?;
    }
}
