//! Real traffic between network namespaces: TCP streams, UDP datagrams and
//! raw frames injected with an AF_PACKET socket. Every loop is bounded and
//! every socket has a timeout, so a broken datapath fails a test instead of
//! hanging it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use crate::netns::NetNs;

const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `bytes` over TCP from a client in `client_ns` to a server on
/// `server` in `server_ns`; the server replies with the count it received,
/// which must match.
pub fn tcp_transfer(
    server_ns: &NetNs,
    client_ns: &NetNs,
    server: SocketAddr,
    bytes: usize,
) -> Result<()> {
    let listener = server_ns.run(move || TcpListener::bind(server))??;
    let receiver = thread::spawn(move || -> Result<()> {
        let (mut conn, _) = listener.accept()?;
        conn.set_read_timeout(Some(IO_TIMEOUT))?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut total: u64 = 0;
        loop {
            let n = conn.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        conn.write_all(&total.to_be_bytes())?;
        Ok(())
    });
    let mut client = client_ns
        .run(move || TcpStream::connect_timeout(&server, IO_TIMEOUT))?
        .with_context(|| format!("connect to {server}"))?;
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    client.set_write_timeout(Some(IO_TIMEOUT))?;
    let chunk = vec![0x5au8; 16 * 1024];
    let mut sent = 0;
    while sent < bytes {
        let n = chunk.len().min(bytes - sent);
        client.write_all(&chunk[..n])?;
        sent += n;
    }
    client.shutdown(std::net::Shutdown::Write)?;
    let mut reply = [0u8; 8];
    client
        .read_exact(&mut reply)
        .context("reading the server's count")?;
    receiver
        .join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))??;
    ensure!(
        u64::from_be_bytes(reply) == bytes as u64,
        "server received {} of {bytes} bytes",
        u64::from_be_bytes(reply)
    );
    Ok(())
}

/// Sends `count` UDP datagrams of `size` bytes from `client_ns` to `server`
/// in `server_ns` and returns how many arrived.
pub fn udp_datagrams(
    server_ns: &NetNs,
    client_ns: &NetNs,
    server: SocketAddr,
    count: usize,
    size: usize,
) -> Result<usize> {
    let socket = server_ns.run(move || UdpSocket::bind(server))??;
    socket.set_read_timeout(Some(Duration::from_millis(500)))?;
    let unspecified: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let client = client_ns.run(move || UdpSocket::bind(unspecified))??;
    let payload = vec![0xa5u8; size];
    for _ in 0..count {
        client.send_to(&payload, server)?;
    }
    let mut received = 0;
    let mut buf = vec![0u8; size + 1];
    while received < count {
        match socket.recv_from(&mut buf) {
            Ok((n, _)) if n == size => received += 1,
            Ok((n, _)) => bail!("datagram of {n} bytes, expected {size}"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(received)
}

/// Sends raw Ethernet `frames` out of `dev` in `ns` through an AF_PACKET
/// socket, bypassing the stack: how malformed frames reach the peer's
/// datapath.
pub fn inject_frames(ns: &NetNs, dev: &str, frames: Vec<Vec<u8>>) -> Result<()> {
    let dev = dev.to_string();
    ns.run(move || send_raw(&dev, &frames))?
}

fn send_raw(dev: &str, frames: &[Vec<u8>]) -> Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    let ifindex =
        nix::net::if_::if_nametoindex(dev).with_context(|| format!("ifindex of {dev}"))?;
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    ensure!(
        raw >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    for frame in frames {
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: the buffer and address pointers are valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                socket.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        ensure!(
            sent == frame.len() as isize,
            "sendto on {dev}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}
