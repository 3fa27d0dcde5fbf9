//! A throwaway single-member etcd for tests and the lab.
//!
//! [`EtcdServer::start`] runs `/usr/bin/etcd` on loopback (or
//! [`EtcdServer::start_on`] an address of your choice) with free client
//! and peer ports and a fresh data directory `/tmp/wt<pid>x<n>` (the naming
//! the test sweeper recognises), waits until it reports healthy, and on drop
//! (including during a panic's unwinding) kills it and removes the directory.
//!
//! If the whole test process is killed, drop does not run: the etcd process
//! (its `--name` is `wt<pid>x<n>`) and the directory stay until a sweep
//! removes objects whose `<pid>` no longer runs.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The etcd binary Debian's `etcd-server` installs.
pub const ETCD_BINARY: &str = "/usr/bin/etcd";

const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Free ports are found by binding port 0 and letting go, so another
/// process can take one in between: start again with new ports.
const START_ATTEMPTS: u32 = 3;

static NEXT: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, thiserror::Error)]
pub enum EtcdServerError {
    #[error("cannot start {ETCD_BINARY} (is the etcd-server package installed?)")]
    Spawn(#[source] io::Error),
    #[error("cannot prepare {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no free port to listen on")]
    Port(#[source] io::Error),
    #[error("etcd exited before it was ready ({status}); its log:\n{log}")]
    Exited { status: String, log: String },
    #[error("etcd did not become healthy within {0:?}; its log:\n{1}")]
    NotReady(Duration, String),
}

/// A running etcd, stopped and wiped on drop.
#[derive(Debug)]
pub struct EtcdServer {
    child: Child,
    dir: PathBuf,
    client: SocketAddr,
    /// Where `/health` answers in plain HTTP (the client address, or with
    /// TLS a metrics listener of its own).
    health: SocketAddr,
    tls: bool,
    name: String,
}

/// etcd's TLS on its client URL: its serving certificate (for the address
/// it listens on) and key, and the CA whose client certificates it
/// requires (`--client-cert-auth`).
#[derive(Debug, Clone)]
pub struct EtcdServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

impl EtcdServer {
    /// Starts a fresh etcd on 127.0.0.1 and waits until it answers.
    pub fn start() -> Result<Self, EtcdServerError> {
        Self::start_on(Ipv4Addr::LOCALHOST.into())
    }

    /// Starts a fresh etcd listening on `ip` (e.g. a lab's underlay bridge
    /// address, so agents in other network namespaces reach it) and waits
    /// until it answers there.
    pub fn start_on(ip: IpAddr) -> Result<Self, EtcdServerError> {
        Self::start_with(ip, None)
    }

    /// [`EtcdServer::start`] serving TLS on loopback and requiring client
    /// certificates of `tls.client_ca`.
    pub fn start_tls(tls: &EtcdServerTls) -> Result<Self, EtcdServerError> {
        Self::start_with(Ipv4Addr::LOCALHOST.into(), Some(tls))
    }

    fn start_with(ip: IpAddr, tls: Option<&EtcdServerTls>) -> Result<Self, EtcdServerError> {
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(ip, tls) {
                Ok(server) => return Ok(server),
                // A taken port shows as an early exit; anything else is final.
                Err(e @ EtcdServerError::Exited { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// The client URL, e.g. `http://127.0.0.1:40123` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.client)
    }

    /// The data directory (also holds etcd's log, `etcd.log`).
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// The member name, `wt<pid>x<n>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Freezes etcd (SIGSTOP): connections stay open and nothing answers,
    /// as in a network partition.
    pub fn pause(&self) -> io::Result<()> {
        self.signal("-STOP")
    }

    /// Lets a paused etcd run again (SIGCONT).
    pub fn resume(&self) -> io::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, which: &str) -> io::Result<()> {
        let status = Command::new("kill")
            .arg(which)
            .arg(self.child.id().to_string())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("kill {which} failed: {status}")))
        }
    }

    fn try_start(ip: IpAddr, tls: Option<&EtcdServerTls>) -> Result<Self, EtcdServerError> {
        let name = format!(
            "wt{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = Path::new("/tmp").join(&name);
        let data_dir_err = |source| EtcdServerError::DataDir {
            path: dir.clone(),
            source,
        };
        // A leftover of a crashed run with the same pid would be reused.
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(data_dir_err)?;
        }
        std::fs::create_dir_all(&dir).map_err(data_dir_err)?;
        let log = std::fs::File::create(dir.join("etcd.log")).map_err(data_dir_err)?;
        let log_err = log.try_clone().map_err(data_dir_err)?;
        let (client, peer, metrics) = match (free_port(ip), free_port(ip), free_port(ip)) {
            (Ok(c), Ok(p), Ok(m)) => (c, p, m),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(EtcdServerError::Port(e));
            }
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://{client}");
        let peer_url = format!("http://{peer}");
        let mut command = Command::new(ETCD_BINARY);
        if let Some(tls) = tls {
            command
                .arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--trusted-ca-file")
                .arg(&tls.client_ca)
                .arg("--client-cert-auth")
                // `/health` in plain HTTP beside the TLS client URL.
                .args(["--listen-metrics-urls", &format!("http://{metrics}")]);
        }
        let spawned = command
            .arg("--name")
            .arg(&name)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .arg("--initial-cluster")
            .arg(format!("{name}={peer_url}"))
            .args(["--initial-cluster-state", "new"])
            .args([
                "--logger",
                "zap",
                "--log-outputs",
                "stderr",
                "--log-level",
                "warn",
            ])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(EtcdServerError::Spawn(e));
            }
        };
        // From here on, drop cleans up.
        let mut server = EtcdServer {
            child,
            dir,
            client,
            health: if tls.is_some() { metrics } else { client },
            tls: tls.is_some(),
            name,
        };
        server.wait_healthy()?;
        Ok(server)
    }

    fn wait_healthy(&mut self) -> Result<(), EtcdServerError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(EtcdServerError::Exited {
                    status: status.to_string(),
                    log: self.log(),
                });
            }
            if healthy(self.health) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(EtcdServerError::NotReady(START_TIMEOUT, self.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// etcd's own log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.resume();
        // SIGKILL: nothing in a throwaway server needs a clean shutdown.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port(ip: IpAddr) -> io::Result<SocketAddr> {
    TcpListener::bind((ip, 0))?.local_addr()
}

/// etcd serves `/health` over HTTP/1 on its client port.
fn healthy(addr: SocketAddr) -> bool {
    let probe = || -> io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        stream.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut out = String::new();
        stream.read_to_string(&mut out)?;
        Ok(out)
    };
    probe().is_ok_and(|body| body.contains(r#""health":"true""#))
}
