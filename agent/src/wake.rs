//! The change signal between the agent's sources and its reconcile loop:
//! a source that learns of a change (a watch event, a file event, a new
//! endpoint) rings it, and the loop, asleep until then, runs a pass.
//! Rings are not counted: however many arrive while a pass runs, they
//! cause exactly one more pass, never none (one stored permit).

use std::sync::Arc;

use tokio::sync::Notify;

#[derive(Clone, Debug, Default)]
pub struct Wake(Arc<Notify>);

impl Wake {
    /// Something changed: the loop runs (again) soon.
    pub fn wake(&self) {
        self.0.notify_one();
    }

    /// Returns once rung (at once if rung since the last return).
    pub async fn woken(&self) {
        self.0.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rings_before_the_wait_are_kept_once() {
        let wake = Wake::default();
        wake.wake();
        wake.wake();
        wake.woken().await;
        let again = tokio::time::timeout(std::time::Duration::from_millis(20), wake.woken()).await;
        assert!(again.is_err(), "two rings make one pass, not two");
    }
}
