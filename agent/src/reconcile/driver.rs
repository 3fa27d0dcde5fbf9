//! When the reconcile loop runs: not on a clock, but when something
//! changed. A pass runs at once when a source rings the [`Wake`] (a
//! Kubernetes watch event, a file event in the manifest directory, a
//! shared-store watch event), when CNI ADD asks for a new endpoint's first
//! regeneration or CNI DEL removed one (the readiness kick), and when a
//! failing step's backoff ends. Between those the loop sleeps: an agent
//! with nothing to do uses no CPU. A slow safety pass (`resync`) covers a
//! missed event; the manifest directory re-reads every file then.
//!
//! Bursts coalesce: after a ring the loop waits [`DEBOUNCE`] so a change
//! written as several events is one pass, and rings during a pass make
//! one more pass (see [`Wake`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Reconciler;
use crate::endpoint::readiness::EndpointReadiness;
use crate::wake::Wake;

/// How long a ring waits for the rest of its burst.
pub const DEBOUNCE: Duration = Duration::from_millis(2);

/// What wakes the loop besides its own retry deadlines.
pub struct Triggers {
    pub wake: Wake,
    /// Kicked by the endpoints API (CNI ADD and DEL).
    pub readiness: Arc<EndpointReadiness>,
    /// The longest the loop sleeps without a cause.
    pub resync: Duration,
}

/// Runs passes for ever, each when something asks for one.
pub async fn run(mut reconciler: Reconciler, triggers: Triggers) {
    loop {
        // Each step logs its own errors (once per change) and retries on
        // its own backoff.
        let _ = reconciler.tick().await;
        let resync = Instant::now() + triggers.resync;
        let until = reconciler
            .next_retry()
            .map_or(resync, |at| Instant::from_std(at).min(resync));
        tokio::select! {
            () = triggers.wake.woken() => tokio::time::sleep(DEBOUNCE).await,
            () = triggers.readiness.kicked() => {}
            () = tokio::time::sleep_until(until) => {}
        }
    }
}
