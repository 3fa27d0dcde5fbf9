//! New-connection latency through a service address, from inside a
//! namespace.
//!
//! One sample is the time from the start of `connect()` to the first byte of
//! the server's greeting: the SYN walks the NAT rules (a new conntrack
//! entry, so the whole KUBE-SERVICES walk up to the service's jump, then its
//! KUBE-SVC and KUBE-SEP chains), the SYN-ACK and ACK and the greeting
//! follow the conntrack entry. That is kube-proxy's per-connection cost as
//! a TCP_CRR-like client sees it. The servers here (the test kit's greeter,
//! the lab's pods) write on accept, so no request is needed.
//!
//! The measuring thread inherits the caller's CPU affinity: pin the caller
//! (and the servers) to one CPU, as docs/BENCHMARKING.md advises.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

use weir_tests::netns;

/// Bound on each connect and each read: a broken path fails a sample
/// instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// `samples` connections, one after the other, from namespace `netns` to
/// `addr:port`; each one's time from connect to the greeting's first byte.
/// Fails on the first connection that fails.
pub fn connect_latency(
    netns: &str,
    addr: Ipv4Addr,
    port: u16,
    samples: usize,
) -> Result<Vec<Duration>> {
    let target = SocketAddr::from((addr, port));
    netns::run_in(netns, move || -> Result<Vec<Duration>> {
        let mut times = Vec::with_capacity(samples);
        let mut buf = [0u8; 256];
        for sample in 0..samples {
            let start = Instant::now();
            let mut conn = TcpStream::connect_timeout(&target, IO_TIMEOUT)
                .with_context(|| format!("connect {target} (sample {sample})"))?;
            conn.set_read_timeout(Some(IO_TIMEOUT))?;
            let n = conn
                .read(&mut buf)
                .with_context(|| format!("read greeting from {target} (sample {sample})"))?;
            times.push(start.elapsed());
            ensure!(
                n > 0,
                "{target} closed without a greeting (sample {sample})"
            );
        }
        Ok(times)
    })?
}

/// The whole greeting of the server reached at `addr:port` from `netns`
/// (for the greeter: the backend address that answered).
pub fn greeting(netns: &str, addr: Ipv4Addr, port: u16) -> Result<String> {
    let target = SocketAddr::from((addr, port));
    netns::run_in(netns, move || -> Result<String> {
        let mut conn = TcpStream::connect_timeout(&target, IO_TIMEOUT)
            .with_context(|| format!("connect {target}"))?;
        conn.set_read_timeout(Some(IO_TIMEOUT))?;
        let mut text = String::new();
        conn.read_to_string(&mut text)
            .with_context(|| format!("read greeting from {target}"))?;
        Ok(text.trim().to_string())
    })?
}

/// The `p`-th percentile (0 < p <= 100) of `samples`, nearest rank.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    nearest_rank(&sorted, p)
}

fn nearest_rank(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The usual summary of a latency sample.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Percentiles {
    pub min: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Percentiles {
    pub fn of(samples: &[Duration]) -> Percentiles {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        Percentiles {
            min: nearest_rank(&sorted, 0.0),
            p50: nearest_rank(&sorted, 50.0),
            p99: nearest_rank(&sorted, 99.0),
            max: nearest_rank(&sorted, 100.0),
        }
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        write!(
            f,
            "p50 {:.1} µs, p99 {:.1} µs (min {:.1}, max {:.1})",
            us(self.p50),
            us(self.p99),
            us(self.min),
            us(self.max)
        )
    }
}
