//! One row's measurements between a client and a server namespace: TCP
//! throughput with iperf3 (1 and 4 streams), request/response latency over
//! one connection and new-connection latency (TCP_RR- and TCP_CRR-like,
//! a small echo client and server of this module), the same tools and
//! pinning for every row.
//!
//! Pinning (docs/BENCHMARKING.md): both ends of a latency test run on one
//! CPU ([`LATENCY_CPU`]), since waking a process on the other CPU costs
//! about 40 µs in these VMs; iperf3's client and server each get a CPU of
//! their own ([`THROUGHPUT_CPUS`]).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;

use weir_tests::netns;

/// The CPU both ends of the latency tests run on.
pub const LATENCY_CPU: usize = 1;
/// iperf3's client and server CPUs.
pub const THROUGHPUT_CPUS: (usize, usize) = (0, 1);
/// iperf3's port, and the echo server's.
pub const IPERF_PORT: u16 = 5201;
pub const ECHO_PORT: u16 = 7000;
/// Bound on each connect and read.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// How much of each measurement to take.
#[derive(Clone, Copy, Debug)]
pub struct Amounts {
    /// Seconds of each iperf3 run.
    pub seconds: u32,
    /// Round trips of the request/response test.
    pub round_trips: usize,
    /// Connections of the new-connection test.
    pub connections: usize,
}

/// One run of one row.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    pub gbits_1: f64,
    pub gbits_4: f64,
    pub rr_p50_us: f64,
    pub rr_p99_us: f64,
    pub crr_p50_us: f64,
    pub crr_p99_us: f64,
}

/// Where a row's traffic goes: from `client` to `server_ip` (a namespace
/// holding it).
#[derive(Clone, Debug)]
pub struct Path {
    pub client: String,
    pub server: String,
    pub server_ip: IpAddr,
}

/// The servers of a path, stopped on drop.
pub struct Servers {
    iperf: Child,
    echo: Echo,
}

impl Servers {
    pub fn start(path: &Path) -> Result<Servers> {
        let mut iperf = Command::new("taskset");
        iperf
            .args(["-c", &THROUGHPUT_CPUS.1.to_string(), "iperf3", "-s"])
            .args(["-p", &IPERF_PORT.to_string()])
            .args(["-B", &path.server_ip.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        netns::command_in(&mut iperf, &path.server)?;
        let iperf = iperf
            .spawn()
            .context("start iperf3 -s (is iperf3 installed? cargo xtask setup installs it)")?;
        let echo = Echo::start(&path.server, path.server_ip, ECHO_PORT)?;
        Ok(Servers { iperf, echo })
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        let _ = self.iperf.kill();
        let _ = self.iperf.wait();
        self.echo.stop();
    }
}

/// Every measurement of one run on `path`, whose [`Servers`] run, and
/// what `cpu` (CPU time so far of some processes) grew by during the
/// new-connection test alone.
pub fn run_once(
    path: &Path,
    amounts: Amounts,
    cpu: &dyn Fn() -> Vec<Duration>,
) -> Result<(Sample, Vec<Duration>)> {
    let gbits_1 = throughput(path, 1, amounts.seconds)?;
    let gbits_4 = throughput(path, 4, amounts.seconds)?;
    let rr = request_response(path, amounts.round_trips)?;
    let before = cpu();
    let crr = new_connections(path, amounts.connections)?;
    let used = cpu()
        .into_iter()
        .zip(before)
        .map(|(after, before)| after.saturating_sub(before))
        .collect();
    let sample = Sample {
        gbits_1,
        gbits_4,
        rr_p50_us: rr.0,
        rr_p99_us: rr.1,
        crr_p50_us: crr.0,
        crr_p99_us: crr.1,
    };
    Ok((sample, used))
}

/// iperf3 from the client to the server, `streams` parallel streams:
/// Gbit/s received. Retries while the server is not listening yet.
pub(super) fn throughput(path: &Path, streams: u32, seconds: u32) -> Result<f64> {
    let mut last = String::new();
    for _attempt in 0..10 {
        let mut client = Command::new("taskset");
        client
            .args(["-c", &THROUGHPUT_CPUS.0.to_string(), "iperf3", "-J"])
            .args(["-c", &path.server_ip.to_string()])
            .args(["-p", &IPERF_PORT.to_string()])
            .args(["-P", &streams.to_string()])
            .args(["-t", &seconds.to_string()]);
        netns::command_in(&mut client, &path.client)?;
        let out = client.output().context("run iperf3 -c")?;
        let json = String::from_utf8_lossy(&out.stdout);
        match received_gbits(&json) {
            Ok(gbits) if out.status.success() => return Ok(gbits),
            Ok(_) => last = format!("iperf3 exited with {}", out.status),
            Err(e) => last = format!("{e:#}"),
        }
        thread::sleep(Duration::from_millis(300));
    }
    bail!("iperf3 to {} failed: {last}", path.server_ip)
}

/// Gbit/s the receiver counted, from iperf3's `-J` output.
pub fn received_gbits(json: &str) -> Result<f64> {
    let value: serde_json::Value = serde_json::from_str(json).context("iperf3 JSON")?;
    if let Some(error) = value["error"].as_str() {
        bail!("iperf3: {error}");
    }
    let bits = value["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 JSON has no end.sum_received.bits_per_second")?;
    Ok(bits / 1e9)
}

/// Pins the calling thread to `cpu`.
fn pin(cpu: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(Pid::from_raw(0), &set).context("sched_setaffinity")
}

/// `round_trips` one-byte exchanges over one connection: (p50, p99) µs.
pub(super) fn request_response(path: &Path, round_trips: usize) -> Result<(f64, f64)> {
    let target = SocketAddr::from((path.server_ip, ECHO_PORT));
    let times = netns::run_in(&path.client, move || -> Result<Vec<Duration>> {
        pin(LATENCY_CPU)?;
        let mut conn = TcpStream::connect_timeout(&target, IO_TIMEOUT)
            .with_context(|| format!("connect {target}"))?;
        conn.set_nodelay(true)?;
        conn.set_read_timeout(Some(IO_TIMEOUT))?;
        let mut times = Vec::with_capacity(round_trips);
        let mut byte = [0u8; 1];
        for i in 0..round_trips {
            let start = Instant::now();
            conn.write_all(b"r")?;
            conn.read_exact(&mut byte)
                .with_context(|| format!("reply {i} from {target}"))?;
            times.push(start.elapsed());
        }
        Ok(times)
    })??;
    Ok(p50_p99_us(&times))
}

/// `connections` new connections one after the other, each timed from
/// connect() to the reply of a one-byte request, then closed by the
/// client: (p50, p99) µs.
pub(super) fn new_connections(path: &Path, connections: usize) -> Result<(f64, f64)> {
    let target = SocketAddr::from((path.server_ip, ECHO_PORT));
    let times = netns::run_in(&path.client, move || -> Result<Vec<Duration>> {
        pin(LATENCY_CPU)?;
        let mut times = Vec::with_capacity(connections);
        let mut byte = [0u8; 1];
        for i in 0..connections {
            let start = Instant::now();
            let mut conn = TcpStream::connect_timeout(&target, IO_TIMEOUT)
                .with_context(|| format!("connect {target} (connection {i})"))?;
            conn.set_nodelay(true)?;
            conn.set_read_timeout(Some(IO_TIMEOUT))?;
            conn.write_all(b"c")?;
            conn.read_exact(&mut byte)
                .with_context(|| format!("reply on connection {i} from {target}"))?;
            times.push(start.elapsed());
        }
        Ok(times)
    })??;
    Ok(p50_p99_us(&times))
}

fn p50_p99_us(times: &[Duration]) -> (f64, f64) {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    (
        us(crate::kubeproxy::percentile(times, 50.0)),
        us(crate::kubeproxy::percentile(times, 99.0)),
    )
}

/// Whether a TCP connection from namespace `client` to `target` opens
/// within `timeout` (a policy's deny shows as a timeout).
pub fn connects(client: &str, target: SocketAddr, timeout: Duration) -> Result<bool> {
    netns::run_in(client, move || {
        TcpStream::connect_timeout(&target, timeout).is_ok()
    })
}

/// An echo server pinned to [`LATENCY_CPU`]: one connection at a time,
/// every byte read is written back, until the client closes.
struct Echo {
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn start(netns: &str, address: IpAddr, port: u16) -> Result<Echo> {
        let listener = netns::run_in(netns, move || TcpListener::bind((address, port)))?
            .with_context(|| format!("bind {address}:{port} in {netns}"))?;
        let serving = listener.try_clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = thread::spawn(move || {
            if pin(LATENCY_CPU).is_err() {
                return;
            }
            for conn in serving.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_nodelay(true);
                let _ = conn.set_read_timeout(Some(IO_TIMEOUT));
                let mut buf = [0u8; 64];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        });
        Ok(Echo {
            listener,
            stop,
            thread: Some(thread),
        })
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Shutting a listening socket down wakes a blocked accept() (EINVAL).
        // SAFETY: plain shutdown(2) on a descriptor this struct owns.
        unsafe {
            libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Checks that `path` carries a connection (before any measuring).
pub fn check(path: &Path) -> Result<()> {
    let target = SocketAddr::from((path.server_ip, ECHO_PORT));
    ensure!(
        connects(&path.client, target, IO_TIMEOUT)?,
        "no connection from {} to {target}",
        path.client
    );
    Ok(())
}
