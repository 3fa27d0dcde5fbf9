//! The lab's etcd (the agents' kvstore for identities and the ipcache): one
//! member in the underlay namespace, listening on the bridge only.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::topology::{ETCD_CLIENT_PORT, ETCD_IP};
use crate::{process, Lab};
use weir_tests::netns;

const ETCD_READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The client URL the agents are given.
pub(crate) fn endpoint() -> String {
    format!("http://{ETCD_IP}:{ETCD_CLIENT_PORT}")
}

impl Lab {
    /// Starts etcd in `underlay` and waits until it accepts connections;
    /// returns its pid.
    pub(crate) fn start_etcd(&self, underlay: &str) -> Result<u32> {
        let name = format!("{}-etcd", self.state.name);
        let client = endpoint();
        let peer = "http://127.0.0.1:2380".to_string();
        let args = vec![
            "--name".to_string(),
            name.clone(),
            "--data-dir".into(),
            self.dir.join("etcd").display().to_string(),
            "--listen-client-urls".into(),
            client.clone(),
            "--advertise-client-urls".into(),
            client,
            "--listen-peer-urls".into(),
            peer.clone(),
            "--initial-advertise-peer-urls".into(),
            peer.clone(),
            "--initial-cluster".into(),
            format!("{name}={peer}"),
        ];
        let log = self.dir.join("etcd.log");
        let etcd = Path::new("/usr/bin/etcd");
        let pid = process::spawn_detached(underlay, etcd, &args, &log)?;
        let deadline = Instant::now() + ETCD_READY_TIMEOUT;
        while Instant::now() < deadline {
            let up = netns::run_in(underlay, || {
                std::net::TcpStream::connect_timeout(
                    &std::net::SocketAddr::from((ETCD_IP, ETCD_CLIENT_PORT)),
                    Duration::from_millis(200),
                )
                .is_ok()
            })?;
            if up {
                return Ok(pid);
            }
            if !process::alive(pid) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        process::stop(pid, Duration::from_secs(1));
        bail!(
            "etcd did not start; its log ({}):\n{}",
            log.display(),
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    }
}
