//! One reconcile step's error state: its last error, how many runs in a
//! row failed, and when it may run again. A failing step backs off
//! (capped exponential) on its own; the other steps keep running.

use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::status::{StepReport, StepState};

/// Capped exponential backoff: `initial`, doubling, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The wait after the `failures`-th consecutive failure (1 for the
    /// first).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.initial.saturating_mul(1u32 << doublings).min(self.max)
    }
}

/// A step of the reconcile pass.
#[derive(Debug)]
pub struct Step {
    name: &'static str,
    backoff: Backoff,
    ran: bool,
    failures: u32,
    last_error: Option<String>,
    retry_at: Option<Instant>,
}

impl Step {
    pub fn new(name: &'static str) -> Step {
        Step::with_backoff(name, Backoff::default())
    }

    pub fn with_backoff(name: &'static str, backoff: Backoff) -> Step {
        Step {
            name,
            backoff,
            ran: false,
            failures: 0,
            last_error: None,
            retry_at: None,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether the step may run at `now` (it is not backing off).
    pub fn due(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|at| now >= at)
    }

    /// When a failing step may run again (None when it is not failing).
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Records a run that ended at `now`. An error is logged once per
    /// change of its text, and the recovery once.
    pub fn record<E: std::fmt::Display>(&mut self, now: Instant, result: Result<(), E>) {
        self.ran = true;
        match result {
            Ok(()) => {
                if self.last_error.take().is_some() {
                    info!(step = self.name, "reconcile step recovered");
                }
                self.failures = 0;
                self.retry_at = None;
            }
            Err(error) => {
                let text = format!("{error:#}");
                self.failures = self.failures.saturating_add(1);
                let delay = self.backoff.delay(self.failures);
                if self.last_error.as_deref() != Some(text.as_str()) {
                    warn!(step = self.name, error = %text, retry_in = ?delay, "reconcile step failed");
                }
                self.last_error = Some(text);
                self.retry_at = Some(now + delay);
            }
        }
    }

    /// Consecutive failed runs (0 once a run succeeds).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// What readers see of this step.
    pub fn report(&self) -> StepReport {
        let state = match (self.ran, &self.last_error) {
            (false, _) => StepState::Pending,
            (true, None) => StepState::Ok,
            (true, Some(_)) => StepState::Failing,
        };
        StepReport {
            name: self.name.to_string(),
            state,
            consecutive_failures: self.failures,
            last_error: self.last_error.clone().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let backoff = Backoff::default();
        let delays: Vec<Duration> = (1..=9).map(|n| backoff.delay(n)).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000].map(|ms| ms * MS)
        );
        // No overflow however long it fails.
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn a_failing_step_waits_before_running_again() {
        let t0 = Instant::now();
        let mut step = Step::new("services");
        assert!(step.due(t0));
        assert_eq!(step.report().state, StepState::Pending);
        step.record(t0, Err("LB map full"));
        assert!(!step.due(t0 + 99 * MS));
        assert!(step.due(t0 + 100 * MS));
        step.record(t0 + 100 * MS, Err("LB map full"));
        assert!(!step.due(t0 + 299 * MS));
        assert!(step.due(t0 + 300 * MS));
        let report = step.report();
        assert_eq!(report.state, StepState::Failing);
        assert_eq!(report.consecutive_failures, 2);
        assert_eq!(report.last_error, "LB map full");
    }

    #[test]
    fn success_resets_the_failures_and_the_backoff() {
        let t0 = Instant::now();
        let mut step = Step::new("identities");
        for n in 0..5 {
            step.record(t0 + n * MS, Err("etcd unreachable"));
        }
        assert_eq!(step.failures(), 5);
        step.record(t0 + 10 * MS, Ok::<(), &str>(()));
        assert_eq!(step.failures(), 0);
        assert_eq!(step.last_error(), None);
        assert!(step.due(t0 + 10 * MS));
        assert_eq!(step.report().state, StepState::Ok);
        // The next failure starts again from the initial delay.
        step.record(t0 + 20 * MS, Err("etcd unreachable"));
        assert!(step.due(t0 + 120 * MS));
    }

    #[test]
    fn steps_back_off_independently() {
        let t0 = Instant::now();
        let mut services = Step::new("services");
        let mut policy = Step::new("policy");
        services.record(t0, Err("LB map full"));
        policy.record(t0, Ok::<(), &str>(()));
        assert!(!services.due(t0 + MS));
        assert!(policy.due(t0 + MS));
        assert_eq!(policy.report().state, StepState::Ok);
        assert_eq!(policy.failures(), 0);
    }
}
