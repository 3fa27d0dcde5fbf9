//! The lab's etcd (the agents' kvstore for identities and the ipcache): one
//! member in the underlay namespace, listening on the bridge only, over TLS
//! with client certificates (`--client-cert-auth`) from a CA the lab makes
//! at `up` ([`EtcdPki`]); the agents present the lab's client certificate.
//! Fault tests freeze and thaw it ([`Lab::pause_etcd`],
//! [`Lab::resume_etcd`]) and read it from its namespace
//! ([`Lab::in_etcd_netns`], with [`Lab::etcd_config`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::topology::{underlay_netns, ETCD_CLIENT_PORT, ETCD_IP};
use crate::{process, Lab};
use weir_tests::netns;

const ETCD_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Where the lab's etcd answers `/health` in plain HTTP (its client URL
/// is TLS only).
const ETCD_METRICS_PORT: u16 = 2390;

/// The client URL the agents are given.
pub fn endpoint() -> String {
    format!("https://{ETCD_IP}:{ETCD_CLIENT_PORT}")
}

/// The lab's etcd PKI, PEM files in one directory: a CA, etcd's serving
/// certificate for [`ETCD_IP`], and the client certificate the agents (and
/// tests) present.
#[derive(Debug, Clone)]
pub struct EtcdPki {
    dir: PathBuf,
}

impl EtcdPki {
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.crt")
    }
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }

    /// Makes the CA and the two certificates in `dir` (created).
    pub(crate) fn create(dir: &Path) -> Result<EtcdPki> {
        std::fs::create_dir_all(dir)?;
        let openssl = |args: &[&str]| -> Result<()> {
            netns::run(Command::new("openssl").current_dir(dir).args(args)).map(drop)
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec![
            "req",
            "-x509",
            "-days",
            "3650",
            "-subj",
            "/CN=weir-lab-etcd-ca",
        ];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
        openssl(&ca)?;
        let server_ext = format!("subjectAltName=IP:{ETCD_IP}\nextendedKeyUsage=serverAuth\n");
        for (leaf, ext) in [
            ("server", server_ext.as_str()),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            std::fs::write(dir.join(format!("{leaf}.ext")), ext)?;
            let subject = format!("/CN=weir-lab-etcd-{leaf}");
            let (key, csr, crt, ext) = (
                format!("{leaf}.key"),
                format!("{leaf}.csr"),
                format!("{leaf}.crt"),
                format!("{leaf}.ext"),
            );
            let mut request = vec!["req", "-subj", &subject];
            request.extend(ec);
            request.extend(["-keyout", &key, "-out", &csr]);
            openssl(&request)?;
            openssl(&[
                "x509",
                "-req",
                "-days",
                "3650",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-extfile",
                &ext,
            ])?;
        }
        Ok(EtcdPki {
            dir: dir.to_path_buf(),
        })
    }

    /// The agent's flags for it.
    pub(crate) fn agent_args(&self) -> Vec<String> {
        [
            ("--etcd-ca-file", self.ca()),
            ("--etcd-cert-file", self.client_cert()),
            ("--etcd-key-file", self.client_key()),
        ]
        .into_iter()
        .flat_map(|(flag, path)| [flag.to_string(), path.display().to_string()])
        .collect()
    }
}

impl Lab {
    /// Freezes the lab's etcd (SIGSTOP): its connections stay open and
    /// nothing answers, as in a network partition. Its pid does not change,
    /// so the lab's state needs no update.
    pub fn pause_etcd(&self) -> Result<()> {
        self.signal_etcd(Signal::SIGSTOP)
    }

    /// Lets a paused etcd run again (SIGCONT).
    pub fn resume_etcd(&self) -> Result<()> {
        self.signal_etcd(Signal::SIGCONT)
    }

    fn signal_etcd(&self, signal: Signal) -> Result<()> {
        let pid = self.state.etcd_pid;
        if pid == 0 {
            bail!("lab {} runs no etcd", self.state.name);
        }
        kill(Pid::from_raw(pid as i32), signal)
            .with_context(|| format!("{signal} to etcd (pid {pid})"))
    }

    /// Kills the lab's etcd (SIGKILL: its clients see their connections
    /// reset and new ones refused) and waits until it is gone.
    pub fn kill_etcd(&mut self) -> Result<()> {
        let pid = self.state.etcd_pid;
        self.signal_etcd(Signal::SIGKILL)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while process::alive(pid) {
            let _ = nix::sys::wait::waitpid(
                Pid::from_raw(pid as i32),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
            if Instant::now() > deadline {
                bail!("etcd (pid {pid}) still runs 5 s after SIGKILL");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Starts the lab's etcd again over its data directory (everything it
    /// held is kept) and waits until it serves requests (a restarted member
    /// accepts connections a second or two before it has elected itself
    /// leader and answers).
    pub fn restart_etcd(&mut self) -> Result<()> {
        let underlay = underlay_netns(&self.state.name);
        self.state.etcd_pid = self.start_etcd(&underlay)?;
        self.state.save(&self.dir)?;
        let deadline = Instant::now() + ETCD_READY_TIMEOUT;
        while !netns::run_in(&underlay, healthy)? {
            if Instant::now() > deadline {
                bail!("etcd accepts connections but is not healthy after {ETCD_READY_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The lab's etcd PKI (made at `up`).
    pub fn etcd_pki(&self) -> EtcdPki {
        EtcdPki {
            dir: self.dir.join("etcd-pki"),
        }
    }

    /// A store configuration that reaches the lab's etcd as `node` (from
    /// inside [`Lab::in_etcd_netns`]), with the lab's client certificate.
    pub fn etcd_config(&self, node: &str) -> Result<weir_identity::EtcdConfig> {
        let pki = self.etcd_pki();
        let mut config = weir_identity::EtcdConfig::new(vec![endpoint()], node);
        config.tls = Some(weir_identity::EtcdTls::load(
            &pki.ca(),
            Some(&pki.client_cert()),
            Some(&pki.client_key()),
        )?);
        Ok(config)
    }

    /// Runs `f` in the namespace etcd listens in (the underlay), on a
    /// thread of its own: a client made there reaches [`endpoint`].
    pub fn in_etcd_netns<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        netns::run_in(&underlay_netns(&self.state.name), f)
    }

    /// Starts the lab's etcd in `underlay` and waits until it accepts
    /// connections; returns its pid.
    pub(crate) fn start_etcd(&self, underlay: &str) -> Result<u32> {
        let pki = self.etcd_pki();
        if !pki.ca().exists() {
            EtcdPki::create(&pki.dir)?;
        }
        start_member(
            underlay,
            &format!("{}-etcd", self.state.name),
            &self.dir.join("etcd"),
            ETCD_CLIENT_PORT,
            2380,
            &self.dir.join("etcd.log"),
            Some(&pki),
        )
    }
}

/// Starts a one-member etcd in `netns_name` on [`ETCD_IP`] (peers on
/// loopback), over TLS with client certificates when `tls` is given, and
/// waits until it accepts connections; returns its pid.
pub(crate) fn start_member(
    netns_name: &str,
    name: &str,
    data_dir: &Path,
    client_port: u16,
    peer_port: u16,
    log: &Path,
    tls: Option<&EtcdPki>,
) -> Result<u32> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let client = format!("{scheme}://{ETCD_IP}:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let mut args = vec![
        "--name".to_string(),
        name.to_string(),
        "--data-dir".into(),
        data_dir.display().to_string(),
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
    if let Some(pki) = tls {
        args.extend([
            "--cert-file".into(),
            pki.server_cert().display().to_string(),
            "--key-file".into(),
            pki.server_key().display().to_string(),
            "--trusted-ca-file".into(),
            pki.ca().display().to_string(),
            "--client-cert-auth".into(),
            // `/health` in plain HTTP for the lab's readiness check.
            "--listen-metrics-urls".into(),
            format!("http://{ETCD_IP}:{ETCD_METRICS_PORT}"),
        ]);
    }
    let etcd = Path::new("/usr/bin/etcd");
    let pid = process::spawn_detached(netns_name, etcd, &args, log)?;
    let deadline = Instant::now() + ETCD_READY_TIMEOUT;
    while Instant::now() < deadline {
        let up = netns::run_in(netns_name, move || {
            std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from((ETCD_IP, client_port)),
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
        "etcd {name} did not start; its log ({}):\n{}",
        log.display(),
        std::fs::read_to_string(log).unwrap_or_default()
    )
}

/// etcd serves `/health` over HTTP/1 on its metrics URL: true once it has
/// a leader and answers.
fn healthy() -> bool {
    use std::io::{Read, Write};
    let probe = || -> std::io::Result<String> {
        let address = std::net::SocketAddr::from((ETCD_IP, ETCD_METRICS_PORT));
        let mut stream =
            std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200))?;
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        stream.write_all(b"GET /health HTTP/1.0\r\nHost: etcd\r\n\r\n")?;
        let mut out = String::new();
        stream.read_to_string(&mut out)?;
        Ok(out)
    };
    probe().is_ok_and(|body| body.contains(r#""health":"true""#))
}
