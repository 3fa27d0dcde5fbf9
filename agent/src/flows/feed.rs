//! Decoded datapath events, before enrichment, for whoever is listening
//! (`weir monitor`, like `cilium monitor`): the flow reader publishes every
//! event on a broadcast feed; each listener subscribes to it.

use std::sync::Arc;

use tokio::sync::broadcast;
use weir_observer::DatapathEvent;

/// Events a slow listener may fall behind by before it is told it lost some.
pub const FEED_CAPACITY: usize = 4096;

/// Decoded datapath events, for listeners that come and go.
#[derive(Clone)]
pub struct MonitorFeed {
    sender: broadcast::Sender<Arc<DatapathEvent>>,
}

impl Default for MonitorFeed {
    fn default() -> Self {
        Self::new(FEED_CAPACITY)
    }
}

impl MonitorFeed {
    pub fn new(capacity: usize) -> Self {
        MonitorFeed {
            sender: broadcast::channel(capacity.max(1)).0,
        }
    }

    /// Hands `event` to every listener; costs nothing without listeners.
    pub fn publish(&self, event: &DatapathEvent) {
        if self.sender.receiver_count() > 0 {
            let _ = self.sender.send(Arc::new(event.clone()));
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<DatapathEvent>> {
        self.sender.subscribe()
    }
}
