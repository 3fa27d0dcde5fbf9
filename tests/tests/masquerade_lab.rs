//! BPF masquerading in the lab (issue 19 item 3): agents with
//! `--enable-ipv4-masquerade --non-masquerade-cidr 203.0.113.20/32`. The
//! outside world's servers report the address each connection came from:
//! a pod's connection to 203.0.113.10 arrives from its node's address (and
//! is answered), one to the non-masquerade 203.0.113.20 from the pod's own;
//! two pods of one node using the same source port toward the same server
//! get two ports of the node; pods still reach each other unchanged.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Once;
use std::time::Duration;

use weir_lab::probe::{self, Target};
use weir_lab::testing::{namespace_yaml, pod_yaml, TestLab};
use weir_tests::netns::NetNs;

const MASQUERADED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const NOT_MASQUERADED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
const TCP_PORT: u16 = 9100;
const UDP_PORT: u16 = 9101;
const TIMEOUT: Duration = Duration::from_secs(5);

fn masquerading_lab() -> TestLab {
    static ENV: Once = Once::new();
    ENV.call_once(|| {
        // SAFETY: set once, before any lab of this process reads it;
        // nothing else in this suite's process reads or writes it.
        unsafe {
            std::env::set_var(weir_lab::MASQUERADE_ENV, format!("{NOT_MASQUERADED}/32"));
        }
    });
    let mut lab = TestLab::up(2).unwrap();
    let mut yaml = namespace_yaml("x");
    yaml.push_str(&pod_yaml("x", "a", "n1", &[80]));
    yaml.push_str(&pod_yaml("x", "b", "n1", &[80]));
    yaml.push_str(&pod_yaml("x", "c", "n2", &[80]));
    lab.apply_yaml(&yaml).unwrap();
    lab
}

fn world(lab: &TestLab) -> std::mem::ManuallyDrop<NetNs> {
    NetNs::existing(&format!("{}-world", lab.name()))
}

/// A TCP server in the world on `address` answering every connection with
/// the address it came from; serves `connections` and stops.
fn tcp_reporter(
    lab: &TestLab,
    address: Ipv4Addr,
    connections: usize,
) -> std::thread::JoinHandle<()> {
    let listener = world(lab)
        .run(move || TcpListener::bind(SocketAddr::new(address.into(), TCP_PORT)))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        for _ in 0..connections {
            let Ok((mut conn, peer)) = listener.accept() else {
                return;
            };
            let _ = conn.write_all(peer.to_string().as_bytes());
        }
    })
}

/// Connects from `pod` to `address` and returns the source the server saw.
fn seen_from(lab: &TestLab, pod: &str, address: Ipv4Addr) -> SocketAddr {
    let netns = lab.pod(pod).unwrap().netns.clone();
    let server = SocketAddr::new(address.into(), TCP_PORT);
    let mut stream = NetNs::existing(&netns)
        .run(move || TcpStream::connect_timeout(&server, TIMEOUT))
        .unwrap()
        .unwrap_or_else(|e| panic!("{pod} -> {server}: {e}"));
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply
        .parse()
        .unwrap_or_else(|_| panic!("a reported address: {reply:?}"))
}

fn node_ip(lab: &TestLab, node: &str) -> Ipv4Addr {
    lab.state().node(node).unwrap().underlay_ip
}

#[test]
fn the_world_sees_the_node_except_for_non_masquerade_destinations() {
    let lab = masquerading_lab();
    let n1 = node_ip(&lab, "n1");
    let a = lab.pod("x/a").unwrap().ip;

    let server = tcp_reporter(&lab, MASQUERADED, 3);
    for _ in 0..3 {
        let seen = seen_from(&lab, "x/a", MASQUERADED);
        assert_eq!(seen.ip(), std::net::IpAddr::V4(n1), "masqueraded to n1");
        assert!(
            (weir_abi::lb::SNAT_PORT_MIN..=weir_abi::lb::SNAT_PORT_MAX).contains(&seen.port()),
            "a port of the SNAT range: {seen}"
        );
    }
    server.join().unwrap();

    let server = tcp_reporter(&lab, NOT_MASQUERADED, 1);
    let seen = seen_from(&lab, "x/a", NOT_MASQUERADED);
    assert_eq!(seen.ip(), std::net::IpAddr::V4(a), "the pod's own address");
    server.join().unwrap();

    // Inside the cluster nothing changes.
    for target in [Target::Tcp(80), Target::Udp(80)] {
        let (from, to) = (lab.pod("x/a").unwrap(), lab.pod("x/c").unwrap());
        assert!(
            probe::probe(from, to, target).connected,
            "a -> c {target:?}"
        );
    }
}

#[test]
fn two_pods_with_the_same_source_port_get_two_ports_of_the_node() {
    let lab = masquerading_lab();
    let n1 = node_ip(&lab, "n1");
    // A UDP server in the world answering each datagram with its source.
    let socket = world(&lab)
        .run(|| UdpSocket::bind(SocketAddr::new(MASQUERADED.into(), UDP_PORT)))
        .unwrap()
        .unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    let server = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 64];
        while seen.len() < 2 {
            let Ok((_, peer)) = socket.recv_from(&mut buf) else {
                break;
            };
            let _ = socket.send_to(peer.to_string().as_bytes(), peer);
            if !seen.contains(&peer) {
                seen.push(peer);
            }
        }
        seen
    });
    let mut replies = Vec::new();
    for pod in ["x/a", "x/b"] {
        let netns = lab.pod(pod).unwrap().netns.clone();
        let reply = NetNs::existing(&netns)
            .run(move || -> std::io::Result<String> {
                let socket = UdpSocket::bind("0.0.0.0:40000")?;
                socket.set_read_timeout(Some(TIMEOUT))?;
                let mut buf = [0u8; 64];
                // A few tries: the first datagram may meet a cold path.
                for _ in 0..3 {
                    socket.send_to(b"hello", SocketAddr::new(MASQUERADED.into(), UDP_PORT))?;
                    if let Ok(n) = socket.recv(&mut buf) {
                        return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
                    }
                }
                Err(std::io::Error::other("no reply"))
            })
            .unwrap()
            .unwrap_or_else(|e| panic!("{pod} from port 40000: {e}"));
        replies.push(reply);
    }
    let seen = server.join().unwrap();
    assert_eq!(seen.len(), 2, "two sources seen: {seen:?}");
    assert!(
        seen.iter().all(|s| s.ip() == std::net::IpAddr::V4(n1)),
        "{seen:?}"
    );
    assert_ne!(seen[0].port(), seen[1].port(), "two ports of n1: {seen:?}");
    // Each pod got the reply to its own datagram.
    assert_ne!(replies[0], replies[1], "{replies:?}");
}
