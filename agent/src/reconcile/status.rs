//! What the reconcile loop publishes about its steps: the reconciler
//! writes it after every pass, `/readyz` and `weir status` only read it.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use weir_identity::Connection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepState {
    /// Not run yet.
    Pending,
    /// The last run succeeded.
    Ok,
    /// The last run failed; the step retries with backoff.
    Failing,
}

impl StepState {
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Ok => "ok",
            StepState::Failing => "failing",
        }
    }
}

/// One step as readers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepReport {
    pub name: String,
    pub state: StepState,
    pub consecutive_failures: u32,
    /// Empty when the last run succeeded.
    pub last_error: String,
}

impl StepReport {
    /// `name`, not run yet.
    pub fn pending(name: &str) -> StepReport {
        StepReport {
            name: name.to_string(),
            state: StepState::Pending,
            consecutive_failures: 0,
            last_error: String::new(),
        }
    }
}

/// Every step of the loop, in pass order. No steps: this agent runs no
/// reconcile loop (no kvstore configured), so there is nothing to wait for.
#[derive(Debug, Clone, Default)]
pub struct ReconcileStatus {
    pub steps: Vec<StepReport>,
    /// The last pass ran on a view that had synced (desired state complete).
    pub synced: bool,
    /// The connection to the shared store, when there is one (written by
    /// the store's connection check, not by the reconciler).
    pub kvstore: Option<Connection>,
    /// The routes to the other nodes' pod CIDRs, when the agent keeps them
    /// (tunnel mode, `--auto-direct-node-routes`; written by their task,
    /// not by the reconciler): ok once they match a complete node list.
    pub node_routes: Option<StepReport>,
}

impl ReconcileStatus {
    /// The loop is expected to run these steps; none has run yet.
    pub fn pending(names: &[&str]) -> ReconcileStatus {
        ReconcileStatus {
            steps: names.iter().map(|name| StepReport::pending(name)).collect(),
            synced: false,
            kvstore: None,
            node_routes: None,
        }
    }

    /// Ready when every step has run and its last run succeeded, the
    /// shared store (if any) answers, and the routes to the other nodes'
    /// pods (if the agent keeps them) are in place: until then this node's
    /// pods cannot reach those nodes' pods (or their service backends).
    pub fn ready(&self) -> bool {
        self.steps_ok()
            && self.kvstore.as_ref().is_none_or(Connection::is_connected)
            && self
                .node_routes
                .as_ref()
                .is_none_or(|routes| routes.state == StepState::Ok)
    }

    fn steps_ok(&self) -> bool {
        self.steps.iter().all(|step| step.state == StepState::Ok)
    }

    /// `connected for 3 s`, `unreachable for 12 s: <error>`, ...; empty
    /// without a shared store.
    pub fn kvstore_line(&self, now: SystemTime) -> String {
        self.kvstore
            .as_ref()
            .map(|c| c.describe(now))
            .unwrap_or_default()
    }

    /// The maps hold the whole desired state: the last pass ran on a synced
    /// view and every step has succeeded.
    pub fn converged(&self) -> bool {
        // Not `ready`: an etcd gone after the sync leaves the maps whole.
        self.synced && !self.steps.is_empty() && self.steps_ok()
    }

    /// The `/readyz` body: one line per step.
    pub fn render(&self) -> String {
        if self.steps.is_empty() {
            return "ok: no reconcile loop\n".into();
        }
        let mut out = String::new();
        if self.kvstore.is_some() {
            let _ = writeln!(out, "kvstore: {}", self.kvstore_line(SystemTime::now()));
        }
        for step in self.steps.iter().chain(&self.node_routes) {
            let _ = write!(out, "{}: {}", step.name, step.state.as_str());
            if step.consecutive_failures > 0 {
                let _ = write!(out, " ({} failures)", step.consecutive_failures);
            }
            if !step.last_error.is_empty() {
                let _ = write!(out, ": {}", step.last_error);
            }
            out.push('\n');
        }
        out
    }
}

/// Written by the reconciler, read by the metrics server and the API.
pub type SharedReconcileStatus = Arc<Mutex<ReconcileStatus>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_step_has_succeeded() {
        let mut status = ReconcileStatus::pending(&["services", "policy"]);
        assert!(!status.ready());
        assert_eq!(status.render(), "services: pending\npolicy: pending\n");
        for step in &mut status.steps {
            step.state = StepState::Ok;
        }
        assert!(status.ready());
        status.steps[0] = StepReport {
            name: "services".into(),
            state: StepState::Failing,
            consecutive_failures: 3,
            last_error: "LB map full".into(),
        };
        assert!(!status.ready());
        assert_eq!(
            status.render(),
            "services: failing (3 failures): LB map full\npolicy: ok\n"
        );
    }

    #[test]
    fn not_ready_while_the_store_does_not_answer() {
        let t0 = SystemTime::now();
        let mut status = ReconcileStatus::pending(&["identities"]);
        status.steps[0].state = StepState::Ok;
        status.kvstore = Some(Connection::starting(t0).after(t0, Ok(())));
        assert!(status.ready());
        status.kvstore = status
            .kvstore
            .map(|c| c.after(t0, Err("connection refused".into())));
        assert!(!status.ready());
        assert!(status
            .render()
            .starts_with("kvstore: unreachable for 0 s: connection refused\nidentities: ok\n"));
    }

    #[test]
    fn not_ready_until_the_node_routes_are_in() {
        let mut status = ReconcileStatus::pending(&["services"]);
        status.steps[0].state = StepState::Ok;
        status.node_routes = Some(StepReport::pending("node-routes"));
        assert!(!status.ready());
        assert_eq!(status.render(), "services: ok\nnode-routes: pending\n");
        status.node_routes = Some(StepReport {
            name: "node-routes".into(),
            state: StepState::Failing,
            consecutive_failures: 2,
            last_error: "route 10.244.2.0/24 via 10.77.0.12: File exists".into(),
        });
        assert!(!status.ready());
        assert!(status.render().ends_with(
            "node-routes: failing (2 failures): route 10.244.2.0/24 via 10.77.0.12: File exists\n"
        ));
        status.node_routes.as_mut().unwrap().state = StepState::Ok;
        assert!(status.ready());
    }

    #[test]
    fn no_loop_is_ready() {
        let status = ReconcileStatus::default();
        assert!(status.ready());
        assert_eq!(status.render(), "ok: no reconcile loop\n");
    }
}
