//! The lab's stand-in for a pod's containers: a server on every declared
//! container port that answers with the pod's `namespace/name` (TCP: writes
//! it and closes; UDP: replies to each datagram), so probes can tell which
//! pod answered.

use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::thread;

use anyhow::{Context, Result};
use clap::Parser;
use nix::sys::signal::{SigSet, Signal};

#[derive(Parser)]
#[command(name = "weir-lab-pod")]
struct Args {
    /// What to answer: the pod's namespace/name.
    #[arg(long)]
    identity: String,
    /// TCP ports to serve (repeatable).
    #[arg(long = "tcp")]
    tcp: Vec<u16>,
    /// UDP ports to serve (repeatable).
    #[arg(long = "udp")]
    udp: Vec<u16>,
    /// SCTP ports are declared by some manifests; this kernel has no SCTP
    /// sockets, so they are accepted and not served.
    #[arg(long = "sctp")]
    sctp: Vec<u16>,
    /// Address to bind (default: all).
    #[arg(long, default_value = "0.0.0.0")]
    bind: std::net::IpAddr,
    /// Created once every socket is bound, so the lab knows the pod is ready.
    #[arg(long)]
    ready_file: Option<std::path::PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    // As a container's first process SIGTERM has no default action: a real
    // kubelet would wait out the grace period for a server that ignores
    // it. Blocked here (every thread inherits the mask) and taken by one
    // thread, which exits.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    stop.thread_block().context("block SIGTERM")?;
    thread::spawn(move || {
        let _ = stop.wait();
        std::process::exit(0);
    });
    let mut servers = Vec::new();
    for port in args.tcp {
        let listener =
            TcpListener::bind((args.bind, port)).with_context(|| format!("bind tcp/{port}"))?;
        let identity = format!("{}\n", args.identity);
        servers.push(thread::spawn(move || {
            for mut conn in listener.incoming().map_while(Result::ok) {
                let _ = conn.write_all(identity.as_bytes());
            }
        }));
    }
    for port in args.udp {
        let socket =
            UdpSocket::bind((args.bind, port)).with_context(|| format!("bind udp/{port}"))?;
        let identity = args.identity.clone();
        servers.push(thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((_, peer)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(identity.as_bytes(), peer);
            }
        }));
    }
    if !args.sctp.is_empty() {
        eprintln!(
            "SCTP ports {:?} declared; not served (no SCTP sockets here)",
            args.sctp
        );
    }
    eprintln!("{} serving", args.identity);
    if let Some(path) = &args.ready_file {
        std::fs::write(path, b"ready\n").with_context(|| format!("write {}", path.display()))?;
    }
    for server in servers {
        let _ = server.join();
    }
    // No ports: stay up like a container without servers.
    loop {
        thread::park();
    }
}
