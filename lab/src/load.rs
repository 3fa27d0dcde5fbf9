//! Traffic that a fault must not disturb, from real sockets in pods'
//! network namespaces: long-lived TCP connections that echo small messages
//! both ways at a bounded rate ([`Streams`]) and new connections opened at a
//! steady rate ([`Dialer`]), each attempt recorded with its start time so a
//! fault's window can be cut out of the record afterwards.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sched::{setns, CloneFlags};

use weir_tests::netns;

/// The size of one echoed message.
const MESSAGE: usize = 64;
/// A connection whose echo does not come back within this long is broken
/// (TCP retransmits a lost segment well within it).
const STALL_LIMIT: Duration = Duration::from_secs(5);
/// How long the echo server waits for all its connections.
const ACCEPT_DEADLINE: Duration = Duration::from_secs(20);

/// Starts a thread that enters the named network namespace and runs `f`:
/// sockets it opens belong to that namespace.
fn spawn_in<T: Send + 'static>(
    netns_name: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<JoinHandle<Result<T>>> {
    let file =
        File::open(netns::path(netns_name)).with_context(|| format!("open netns {netns_name}"))?;
    Ok(thread::spawn(move || {
        setns(&file, CloneFlags::CLONE_NEWNET).context("setns")?;
        f()
    }))
}

/// How one long-lived connection ended.
#[derive(Clone, Debug, Default)]
pub struct StreamRecord {
    /// Round trips completed.
    pub round_trips: u64,
    /// The longest wait for an echo.
    pub longest_wait: Duration,
    /// Why it broke (an error, an early close, a wrong echo), if it did.
    pub broken: Option<String>,
}

/// Long-lived TCP connections from one namespace to an echo server in
/// another, each sending a numbered message every `interval` and checking
/// its echo, until [`Streams::finish`].
pub struct Streams {
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<StreamRecord>>,
    server: JoinHandle<()>,
}

impl Streams {
    /// Binds an echo server on `server_ip:port` in `server_netns` and opens
    /// `count` connections to it from `client_netns`.
    pub fn open(
        client_netns: &str,
        server_netns: &str,
        server_ip: Ipv4Addr,
        port: u16,
        count: usize,
        interval: Duration,
    ) -> Result<Streams> {
        let address = SocketAddr::from((server_ip, port));
        let listener = netns::run_in(server_netns, move || TcpListener::bind(address))?
            .with_context(|| format!("bind the echo server on {address}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let server = {
            let stop = stop.clone();
            thread::spawn(move || echo_server(listener, count, &stop))
        };
        let streams: Vec<TcpStream> = spawn_in(client_netns, move || {
            (0..count)
                .map(|_| {
                    TcpStream::connect_timeout(&address, Duration::from_secs(2))
                        .with_context(|| format!("connect to the echo server {address}"))
                })
                .collect::<Result<Vec<_>>>()
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("connecting thread panicked"))??;
        let clients = streams
            .into_iter()
            .map(|stream| {
                let stop = stop.clone();
                thread::spawn(move || drive(stream, interval, &stop))
            })
            .collect();
        Ok(Streams {
            stop,
            clients,
            server,
        })
    }

    /// Stops the connections (each after its current round trip) and
    /// returns how each one fared.
    pub fn finish(self) -> Vec<StreamRecord> {
        self.stop.store(true, Ordering::Relaxed);
        let records = self
            .clients
            .into_iter()
            .map(|client| {
                client.join().unwrap_or_else(|_| StreamRecord {
                    broken: Some("client thread panicked".into()),
                    ..StreamRecord::default()
                })
            })
            .collect();
        let _ = self.server.join();
        records
    }
}

/// Accepts `count` connections and echoes each on a thread of its own
/// until the peer closes.
fn echo_server(listener: TcpListener, count: usize, stop: &AtomicBool) {
    let mut echoes = Vec::new();
    // Non-blocking accepts, so a client that never connects cannot hold
    // this thread past the deadline.
    let deadline = Instant::now() + ACCEPT_DEADLINE;
    let _ = listener.set_nonblocking(true);
    while echoes.len() < count && Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        let mut conn = match listener.accept() {
            Ok((conn, _)) => conn,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => break,
        };
        let _ = conn.set_nonblocking(false);
        echoes.push(thread::spawn(move || {
            let _ = conn.set_read_timeout(Some(STALL_LIMIT * 2));
            let mut buf = [0u8; MESSAGE];
            while conn.read_exact(&mut buf).is_ok() {
                if conn.write_all(&buf).is_err() {
                    break;
                }
            }
        }));
    }
    for echo in echoes {
        let _ = echo.join();
    }
}

/// One connection's life: a numbered message, its echo, a pause.
fn drive(mut stream: TcpStream, interval: Duration, stop: &AtomicBool) -> StreamRecord {
    let mut record = StreamRecord::default();
    let result = (|| -> Result<()> {
        stream.set_read_timeout(Some(STALL_LIMIT))?;
        stream.set_write_timeout(Some(STALL_LIMIT))?;
        let mut sent = [0u8; MESSAGE];
        let mut echo = [0u8; MESSAGE];
        while !stop.load(Ordering::Relaxed) {
            sent[..8].copy_from_slice(&record.round_trips.to_be_bytes());
            let start = Instant::now();
            stream.write_all(&sent).context("send")?;
            stream.read_exact(&mut echo).context("read the echo")?;
            if echo != sent {
                bail!("echo {} differs from what was sent", record.round_trips);
            }
            record.round_trips += 1;
            record.longest_wait = record.longest_wait.max(start.elapsed());
            thread::sleep(interval);
        }
        Ok(())
    })();
    if let Err(e) = result {
        record.broken = Some(format!("after {} round trips: {e:#}", record.round_trips));
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    record
}

/// One new connection: when it started (since the dialer started) and
/// whether the server answered with what it should.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub at: Duration,
    pub ok: bool,
    pub error: Option<String>,
}

/// New TCP connections from one namespace to a server that answers with a
/// known line and closes (a lab pod's server), `rate` per second on a fixed
/// schedule, until [`Dialer::finish`].
pub struct Dialer {
    start: Instant,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Result<Vec<Attempt>>>>,
}

/// Attempts one worker keeps up with (each waits for a reply).
const ATTEMPTS_PER_WORKER: u32 = 100;

impl Dialer {
    /// Starts dialing `target` from `client_netns`; an attempt is ok when
    /// the server's reply is `expect`.
    pub fn start(
        client_netns: &str,
        target: SocketAddr,
        expect: &str,
        rate: u32,
        timeout: Duration,
    ) -> Result<Dialer> {
        let rate = rate.max(1);
        let workers = rate.div_ceil(ATTEMPTS_PER_WORKER);
        let period = Duration::from_secs(1) / rate;
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..workers)
            .map(|worker| {
                let stop = stop.clone();
                let expect = expect.to_string();
                spawn_in(client_netns, move || {
                    let mut attempts = Vec::new();
                    // Attempt n is due at start + n * period; this worker
                    // takes every `workers`-th one.
                    let mut n = worker;
                    while !stop.load(Ordering::Relaxed) {
                        let due = period * n;
                        if let Some(wait) = due.checked_sub(start.elapsed()) {
                            thread::sleep(wait);
                        }
                        attempts.push(dial(target, &expect, timeout, start));
                        n += workers;
                    }
                    Ok(attempts)
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Dialer {
            start,
            stop,
            workers: handles,
        })
    }

    /// The clock attempts are timed on.
    pub fn since_start(&self) -> Duration {
        self.start.elapsed()
    }

    /// Stops dialing; every attempt, in order of start.
    pub fn finish(self) -> Result<Vec<Attempt>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for worker in self.workers {
            all.extend(
                worker
                    .join()
                    .map_err(|_| anyhow::anyhow!("dialer thread panicked"))??,
            );
        }
        all.sort_by_key(|a| a.at);
        Ok(all)
    }
}

fn dial(target: SocketAddr, expect: &str, timeout: Duration, start: Instant) -> Attempt {
    let at = start.elapsed();
    let result = (|| -> Result<()> {
        let mut stream = TcpStream::connect_timeout(&target, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        if reply.trim() != expect {
            bail!("answered {:?}", reply.trim());
        }
        Ok(())
    })();
    Attempt {
        at,
        ok: result.is_ok(),
        error: result.err().map(|e| format!("{e:#}")),
    }
}

/// One connection attempt from `netns_name` to `target` answered by
/// `expect` within `timeout`: true if it connected and got that answer.
pub fn connects(
    netns_name: &str,
    target: SocketAddr,
    expect: &str,
    timeout: Duration,
) -> Result<bool> {
    let expect = expect.to_string();
    let start = Instant::now();
    netns::run_in(netns_name, move || dial(target, &expect, timeout, start).ok)
}
