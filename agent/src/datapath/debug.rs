//! Debug events: the kernel programs' aya-log messages (conntrack state,
//! policy lookups and their outcome, service backend selection), off until
//! switched on for the whole node or an endpoint (`weir debug enable`).
//! Switching writes `weir_debug` and reloads nothing. The messages go to
//! the agent's log (target `weir::datapath::debug`) and to a [`DebugFeed`]
//! that `weir monitor --type debug` follows and that keeps them for the
//! Observer API's GetDebugEvents (`hubble observe debug-events`).

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use aya::maps::{Array, MapData};
use aya::Ebpf;
use aya_log::EbpfLogger;
use tokio::io::unix::AsyncFd;
use tokio::sync::broadcast;
use tracing::info;
use weir_observer::DebugEventRing;

use super::maps::{map_err, TableError};

const MAP: &str = "weir_debug";

/// Whose packets are explained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DebugTarget {
    /// Every endpoint and the node devices.
    Node,
    /// One endpoint (its id, never 0).
    Endpoint(u16),
}

impl DebugTarget {
    fn index(self) -> u32 {
        match self {
            DebugTarget::Node => 0,
            DebugTarget::Endpoint(id) => u32::from(id),
        }
    }
}

fn array(ebpf: &mut Ebpf) -> Result<Array<&mut MapData, u8>, TableError> {
    let map = ebpf.map_mut(MAP).ok_or(TableError::Missing(MAP))?;
    Array::try_from(map).map_err(map_err(MAP))
}

/// Switches debug events on or off for `target`.
pub fn set_debug(ebpf: &mut Ebpf, target: DebugTarget, on: bool) -> Result<(), TableError> {
    array(ebpf)?
        .set(target.index(), u8::from(on), 0)
        .map_err(map_err(MAP))
}

/// Whether the node is on, and the endpoints that are.
pub fn debug_state(ebpf: &mut Ebpf) -> Result<(bool, Vec<u16>), TableError> {
    let array = array(ebpf)?;
    let mut endpoints = Vec::new();
    let mut node = false;
    for (index, flag) in array.iter().enumerate() {
        if flag.map_err(map_err(MAP))? != 0 {
            match u16::try_from(index) {
                Ok(0) => node = true,
                Ok(id) => endpoints.push(id),
                Err(_) => {}
            }
        }
    }
    Ok((node, endpoints))
}

/// One message of the kernel programs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebugMessage {
    pub time: SystemTime,
    /// The endpoint the message is about (0: the node's devices, or not
    /// said).
    pub endpoint_id: u16,
    pub text: String,
}

impl DebugMessage {
    /// A message as the programs write them: "ep <id> ...".
    pub fn parse(text: String) -> DebugMessage {
        let endpoint_id = text
            .strip_prefix("ep ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|id| id.parse().ok())
            .unwrap_or(0);
        DebugMessage {
            time: SystemTime::now(),
            endpoint_id,
            text,
        }
    }
}

/// Debug messages for listeners that come and go, and (with a ring) the
/// last ones for GetDebugEvents.
#[derive(Clone)]
pub struct DebugFeed {
    sender: broadcast::Sender<Arc<DebugMessage>>,
    ring: Option<Arc<DebugEventRing>>,
}

impl Default for DebugFeed {
    fn default() -> Self {
        DebugFeed {
            sender: broadcast::channel(crate::flows::feed::FEED_CAPACITY).0,
            ring: None,
        }
    }
}

impl DebugFeed {
    /// Also keeps every message in `ring` (Hubble's `DebugEvent`).
    pub fn with_ring(mut self, ring: Arc<DebugEventRing>) -> Self {
        self.ring = Some(ring);
        self
    }

    pub fn publish(&self, message: DebugMessage) {
        if let Some(ring) = &self.ring {
            let event = weir_observer::debug_events::generic(
                message.endpoint_id,
                None,
                message.text.clone(),
            );
            ring.publish_at(event, message.time);
        }
        if self.sender.receiver_count() > 0 {
            let _ = self.sender.send(Arc::new(message));
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<DebugMessage>> {
        self.sender.subscribe()
    }
}

/// The `log` sink aya-log writes decoded messages to.
struct Sink {
    feed: DebugFeed,
    /// The last messages, for tests and `recent`.
    recent: Arc<Mutex<VecDeque<DebugMessage>>>,
    /// Messages read so far.
    read: Arc<AtomicU64>,
}

/// Messages [`Sink`] keeps for [`DebugReader::recent`].
const RECENT: usize = 1024;

impl log::Log for Sink {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        self.read.fetch_add(1, Ordering::Relaxed);
        let message = DebugMessage::parse(record.args().to_string());
        info!(target: "weir::datapath::debug", endpoint = message.endpoint_id, "{}", message.text);
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(message.clone());
        drop(recent);
        self.feed.publish(message);
    }

    fn flush(&self) {}
}

/// Reads the programs' messages (aya-log's ring buffer) as they come.
pub struct DebugReader {
    logger: AsyncFd<EbpfLogger<Sink>>,
    recent: Arc<Mutex<VecDeque<DebugMessage>>>,
    read: Arc<AtomicU64>,
}

impl DebugReader {
    /// Takes aya-log's ring buffer out of `ebpf` (after the programs are
    /// loaded: they keep their own reference to it).
    pub fn new(ebpf: &mut Ebpf, feed: DebugFeed) -> anyhow::Result<DebugReader> {
        let recent = Arc::new(Mutex::new(VecDeque::new()));
        let read = Arc::new(AtomicU64::new(0));
        let sink = Sink {
            feed,
            recent: recent.clone(),
            read: read.clone(),
        };
        let logger = EbpfLogger::init_with_logger(ebpf, sink)?;
        tracing::debug!(
            fd = logger.as_raw_fd(),
            "reading the datapath's debug messages"
        );
        // SAFETY: the logger owns its ring buffer's file descriptor for as
        // long as the AsyncFd owns the logger, and always reports that same
        // descriptor.
        let logger =
            unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }?;
        Ok(DebugReader {
            logger,
            recent,
            read,
        })
    }

    /// Handles what is in the ring now (without waiting).
    pub fn drain(&mut self) {
        self.logger.get_mut().flush();
    }

    /// How many messages were read so far.
    pub fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// The last messages read, oldest first.
    pub fn recent(&self) -> Vec<DebugMessage> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.iter().cloned().collect()
    }

    /// Reads messages until the ring's descriptor fails.
    pub async fn run(mut self) {
        loop {
            let mut ready = match self.logger.readable_mut().await {
                Ok(ready) => ready,
                Err(error) => {
                    tracing::warn!(%error, "datapath debug messages: reading stopped");
                    return;
                }
            };
            ready.get_inner_mut().flush();
            ready.clear_ready();
        }
    }
}
