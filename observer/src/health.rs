//! The standard gRPC health service (`grpc.health.v1.Health`) beside every
//! Observer API endpoint: `hubble status` and Hubble Relay check it before
//! anything else. It reports SERVING only while the flow pipeline behind
//! the endpoint is up (a node's event reader, a relay's peers), which a
//! [`Readiness`] handle tells it.

use std::sync::Arc;

use tokio::sync::watch;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// The names a client may ask about: the server as a whole (the empty
/// name, as the health protocol defines it), the name Hubble's clients use
/// (`hubble.server.Observer`, Hubble's `ObserverServiceName`), and the gRPC
/// service itself.
pub const SERVICE_NAMES: [&str; 3] = ["", "hubble.server.Observer", "observer.Observer"];

/// Whether the flow pipeline behind an Observer endpoint is up. Clones
/// share the state; every endpoint served with it follows every change.
#[derive(Clone, Debug)]
pub struct Readiness(Arc<watch::Sender<bool>>);

impl Readiness {
    pub fn new(up: bool) -> Self {
        Self(Arc::new(watch::Sender::new(up)))
    }

    pub fn set(&self, up: bool) {
        self.0
            .send_if_modified(|current| std::mem::replace(current, up) != up);
    }

    pub fn is_up(&self) -> bool {
        *self.0.borrow()
    }

    fn subscribe(&self) -> watch::Receiver<bool> {
        self.0.subscribe()
    }
}

fn status(up: bool) -> ServingStatus {
    if up {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

async fn report(reporter: &HealthReporter, up: bool) {
    for name in SERVICE_NAMES {
        reporter.set_service_status(name, status(up)).await;
    }
}

/// A health service whose statuses already say what `readiness` says (so
/// no check answers SERVING before the first update), and the task that
/// keeps them following it; the caller ends the task with the server.
pub(crate) async fn service(
    readiness: &Readiness,
) -> (
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (reporter, server) = tonic_health::server::health_reporter();
    let mut changes = readiness.subscribe();
    let up = *changes.borrow_and_update();
    report(&reporter, up).await;
    let follow = async move {
        while changes.changed().await.is_ok() {
            let up = *changes.borrow_and_update();
            report(&reporter, up).await;
        }
    };
    (server, follow)
}
