//! Connectivity probes from inside a pod's network namespace, and the
//! all-pairs truth table (as in the Kubernetes network-policy e2e suite).

use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use super::state::{IpFamily, PodRecord};
use weir_agent::cluster::manifest::Protocol;
use weir_tests::netns;

/// How long a probe waits for a connection or a reply.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What a probe is about: L4 protocol and port, or ICMP echo.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "protocol", content = "port")]
pub enum Target {
    Tcp(u16),
    Udp(u16),
    Icmp,
}

impl Target {
    /// Parses `80/tcp`, `53/udp` or `icmp`.
    pub fn parse(text: &str) -> Result<Target> {
        if text.eq_ignore_ascii_case("icmp") {
            return Ok(Target::Icmp);
        }
        let (port, protocol) = text.split_once('/').ok_or_else(|| {
            anyhow::anyhow!("expected PORT/PROTO (e.g. 80/tcp) or icmp, got {text:?}")
        })?;
        let port: u16 = port
            .parse()
            .map_err(|_| anyhow::anyhow!("bad port {port:?}"))?;
        match protocol.to_ascii_uppercase().parse::<Protocol>()? {
            Protocol::Tcp => Ok(Target::Tcp(port)),
            Protocol::Udp => Ok(Target::Udp(port)),
            Protocol::Sctp => {
                anyhow::bail!("this kernel has no SCTP sockets: SCTP cannot be probed")
            }
        }
    }

    pub fn label(&self) -> String {
        match self {
            Target::Tcp(p) => format!("{p}/tcp"),
            Target::Udp(p) => format!("{p}/udp"),
            Target::Icmp => "icmp".into(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ProbeResult {
    pub from: String,
    pub to: String,
    pub to_ip: IpAddr,
    pub target: Target,
    pub connected: bool,
    /// What the server answered (its namespace/name), if anything.
    pub reply: Option<String>,
    pub error: Option<String>,
}

/// Probes `dst` from inside `src`'s network namespace. A connection counts
/// only if the destination's server answered with its own name.
pub fn probe(src: &PodRecord, dst: &PodRecord, target: Target) -> ProbeResult {
    probe_with_timeout(src, dst, target, PROBE_TIMEOUT)
}

/// [`probe`] with another wait for a connection or reply.
pub fn probe_with_timeout(
    src: &PodRecord,
    dst: &PodRecord,
    target: Target,
    timeout: Duration,
) -> ProbeResult {
    probe_family(src, dst, target, IpFamily::V4, timeout)
}

/// [`probe_with_timeout`] to `dst`'s address of `family` (a dual-stack
/// lab); a destination without one is not connected.
pub fn probe_family(
    src: &PodRecord,
    dst: &PodRecord,
    target: Target,
    family: IpFamily,
    timeout: Duration,
) -> ProbeResult {
    let Some(dst_ip) = dst.address(family) else {
        return ProbeResult {
            from: src.key(),
            to: dst.key(),
            to_ip: IpAddr::V4(dst.ip),
            target,
            connected: false,
            reply: None,
            error: Some(format!("{} has no {family:?} address", dst.key())),
        };
    };
    let outcome =
        netns::run_in(&src.netns, move || attempt(dst_ip, target, timeout)).and_then(|r| r);
    let (reply, error) = match outcome {
        Ok(reply) => (reply, None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    let connected = match target {
        Target::Icmp => error.is_none(),
        _ => reply.as_deref() == Some(dst.key().as_str()),
    };
    ProbeResult {
        from: src.key(),
        to: dst.key(),
        to_ip: dst_ip,
        target,
        connected,
        reply,
        error,
    }
}

fn attempt(ip: IpAddr, target: Target, timeout: Duration) -> Result<Option<String>> {
    match target {
        Target::Tcp(port) => {
            let mut stream = TcpStream::connect_timeout(&SocketAddr::from((ip, port)), timeout)?;
            stream.set_read_timeout(Some(timeout))?;
            let mut reply = String::new();
            stream.read_to_string(&mut reply)?;
            Ok(Some(reply.trim().to_string()))
        }
        Target::Udp(port) => {
            let any: IpAddr = if ip.is_ipv4() {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            };
            let socket = UdpSocket::bind((any, 0))?;
            socket.set_read_timeout(Some(timeout))?;
            socket.send_to(b"probe", (ip, port))?;
            let mut buf = [0u8; 512];
            let (n, _) = socket.recv_from(&mut buf)?;
            Ok(Some(String::from_utf8_lossy(&buf[..n]).trim().to_string()))
        }
        Target::Icmp => {
            let out = Command::new("ping")
                .args(["-n", "-q", "-c", "1", "-W", "1"])
                .arg(ip.to_string())
                .output()?;
            anyhow::ensure!(out.status.success(), "no echo reply from {ip}");
            Ok(None)
        }
    }
}

/// Probes every pod from every pod for each target, several at a time.
pub fn matrix(pods: &[PodRecord], targets: &[Target]) -> Vec<ProbeResult> {
    matrix_with_timeout(pods, targets, PROBE_TIMEOUT)
}

/// [`matrix`] with another per-probe wait.
pub fn matrix_with_timeout(
    pods: &[PodRecord],
    targets: &[Target],
    timeout: Duration,
) -> Vec<ProbeResult> {
    matrix_family(pods, targets, IpFamily::V4, timeout)
}

/// [`matrix_with_timeout`] over the pods' addresses of `family`.
pub fn matrix_family(
    pods: &[PodRecord],
    targets: &[Target],
    family: IpFamily,
    timeout: Duration,
) -> Vec<ProbeResult> {
    let mut jobs = Vec::new();
    for target in targets {
        for src in pods {
            for dst in pods {
                jobs.push((src.clone(), dst.clone(), *target));
            }
        }
    }
    // Bounded parallelism: blocked probes each wait for the timeout.
    const WORKERS: usize = 16;
    let chunks: Vec<Vec<(PodRecord, PodRecord, Target)>> = {
        let mut chunks = vec![Vec::new(); WORKERS];
        for (i, job) in jobs.into_iter().enumerate() {
            chunks[i % WORKERS].push(job);
        }
        chunks
    };
    let mut results: Vec<ProbeResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|(s, d, t)| probe_family(s, d, *t, family, timeout))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("probe worker"))
            .collect()
    });
    results.sort_by(|a, b| {
        (a.target.label(), &a.from, &a.to).cmp(&(b.target.label(), &b.from, &b.to))
    });
    results
}

/// The truth table of one target: rows are sources, columns destinations,
/// `.` connected and `X` not.
pub fn render_table(pods: &[String], results: &[ProbeResult], target: Target) -> String {
    let width = pods
        .iter()
        .map(|p| p.len())
        .max()
        .unwrap_or(1)
        .max(target.label().len());
    let mut out = format!("{:<width$}", target.label());
    for dst in pods {
        out.push_str(&format!(" {dst:>w$}", w = dst.len().max(1)));
    }
    out.push('\n');
    for src in pods {
        out.push_str(&format!("{src:<width$}"));
        for dst in pods {
            let mark = results
                .iter()
                .find(|r| r.target == target && &r.from == src && &r.to == dst)
                .map(|r| if r.connected { "." } else { "X" })
                .unwrap_or("?");
            out.push_str(&format!(" {mark:>w$}", w = dst.len().max(1)));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert_eq!(Target::parse("80/tcp").unwrap(), Target::Tcp(80));
        assert_eq!(Target::parse("53/UDP").unwrap(), Target::Udp(53));
        assert_eq!(Target::parse("icmp").unwrap(), Target::Icmp);
        assert!(Target::parse("80").is_err());
        assert!(Target::parse("99999/tcp").is_err());
        assert!(Target::parse("80/sctp").is_err());
    }

    #[test]
    fn renders_a_truth_table() {
        let pods = vec!["x/a".to_string(), "x/b".to_string()];
        let result = |from: &str, to: &str, connected| ProbeResult {
            from: from.into(),
            to: to.into(),
            to_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            target: Target::Tcp(80),
            connected,
            reply: None,
            error: None,
        };
        let results = vec![
            result("x/a", "x/a", true),
            result("x/a", "x/b", false),
            result("x/b", "x/a", true),
            result("x/b", "x/b", true),
        ];
        assert_eq!(
            render_table(&pods, &results, Target::Tcp(80)),
            "80/tcp x/a x/b\nx/a      .   X\nx/b      .   .\n"
        );
    }
}
