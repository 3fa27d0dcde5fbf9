//! A client for service tests and benchmarks: connects (TCP) or sends
//! (UDP) to a target `count` times and prints one JSON line per attempt with
//! what answered, the peer the socket reports, and how long connect took.
//!
//! It is a process of its own because socket LB applies to the sockets of
//! processes in a cgroup: the lab starts it inside a pod's network
//! namespace and cgroup, as a pod's own client would run.

use std::io::Read;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use weir_types::Protocol;

#[derive(Parser)]
#[command(name = "weir-lab-client")]
struct Args {
    /// `tcp:ADDRESS:PORT` or `udp:ADDRESS:PORT`.
    #[arg(long)]
    target: String,
    /// How many connections (or datagrams).
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Wait for a connection or reply at most this long.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
}

fn parse_target(text: &str) -> Result<(Protocol, SocketAddr)> {
    let (protocol, address) = text
        .split_once(':')
        .context("target must be tcp:ADDRESS:PORT or udp:ADDRESS:PORT")?;
    let protocol = match protocol {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        other => bail!("unknown protocol {other:?}"),
    };
    Ok((protocol, address.parse().context("ADDRESS:PORT")?))
}

struct Attempt {
    reply: Option<String>,
    peer: Option<SocketAddr>,
    connect: Duration,
}

fn tcp(address: SocketAddr, timeout: Duration) -> Result<Attempt> {
    let start = Instant::now();
    let mut stream = TcpStream::connect_timeout(&address, timeout)?;
    let connect = start.elapsed();
    let peer = stream.peer_addr().ok();
    stream.set_read_timeout(Some(timeout))?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(Attempt {
        reply: Some(reply.trim().to_string()),
        peer,
        connect,
    })
}

fn udp(address: SocketAddr, timeout: Duration) -> Result<Attempt> {
    // A socket of the target's family (an IPv6 one goes through sendmsg6).
    let local = match address {
        SocketAddr::V4(_) => "0.0.0.0:0",
        SocketAddr::V6(_) => "[::]:0",
    };
    let socket = UdpSocket::bind(local)?;
    socket.set_read_timeout(Some(timeout))?;
    let start = Instant::now();
    socket.send_to(b"probe", address)?;
    let mut buf = [0u8; 512];
    let (n, from) = socket.recv_from(&mut buf)?;
    Ok(Attempt {
        reply: Some(String::from_utf8_lossy(&buf[..n]).trim().to_string()),
        peer: Some(from),
        connect: start.elapsed(),
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (protocol, address) = parse_target(&args.target)?;
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    for _ in 0..args.count {
        let result = match protocol {
            Protocol::Tcp => tcp(address, timeout),
            Protocol::Udp => udp(address, timeout),
            // parse_target accepts only tcp and udp.
            Protocol::Sctp => bail!("SCTP cannot be probed (no SCTP sockets)"),
        };
        let line = match result {
            Ok(a) => serde_json::json!({
                "ok": true,
                "reply": a.reply,
                "peer": a.peer.map(|p| p.to_string()),
                "connect_us": a.connect.as_micros() as u64,
            }),
            Err(e) => serde_json::json!({ "ok": false, "error": format!("{e:#}") }),
        };
        println!("{line}");
    }
    Ok(())
}
