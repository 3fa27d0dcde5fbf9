//! For tests: a unix socket path unique to this process and call, removed
//! on drop, and a tonic server running on it until stopped.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;

pub struct TempSocket(pub PathBuf);

impl TempSocket {
    pub fn new(what: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        TempSocket(std::env::temp_dir().join(format!(
            "weir-agent-test-{}-{what}-{n}.sock",
            std::process::id()
        )))
    }
}

impl Drop for TempSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A server on a [`TempSocket`]; `stop` shuts it down and waits for it.
pub struct Running {
    pub socket: TempSocket,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Running {
    /// Serves `router` (services already added) on a fresh socket.
    pub fn start<L>(what: &str, router: tonic::transport::server::Router<L>) -> Running
    where
        L: tower::Layer<tonic::service::Routes> + Send + 'static,
        L::Service: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
            > + Clone
            + Send
            + 'static,
        <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Future: Send + 'static,
        <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Error:
            Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    {
        let socket = TempSocket::new(what);
        let listener = tokio::net::UnixListener::bind(&socket.0).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(router.serve_with_incoming_shutdown(
            UnixListenerStream::new(listener),
            async {
                let _ = stopped.await;
            },
        ));
        Running { socket, stop, task }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}
