//! Tunnel mode in the kernel programs, through BPF_PROG_TEST_RUN (issue 19
//! item 1): the tunnel device's programs and the pod program reading the
//! sender's identity from the mark `weir_from_overlay` leaves. A packet
//! with real tunnel metadata only exists behind a real VXLAN device: the
//! `tunnel_lab` suite carries those between nodes.

use weir_abi::overlay::identity_mark;
use weir_abi::policy::{POLICY_ALLOW, POLICY_PREFIX_FULL};
use weir_abi::{
    identity, ip_proto, EndpointInfo, IpcacheValue, MetricsValue, PolicyEntry, PolicyKey, Reason,
    TrafficDirection,
};
use weir_agent::datapath::maps::{self, PodCidrOwner};
use weir_agent::datapath::{Datapath, ProgramKind};
use weir_tests::datapath::{load, test_run, test_run_marked, PinDir};
use weir_tests::{packets, require_root};

const LOOPBACK_IFINDEX: u32 = 1;
const ENDPOINT_ID: u16 = 9;
/// What this node's ipcache says of the peer (packets::IP4_B).
const IPCACHE_IDENTITY: u32 = 40_000;
/// What the peer's node says of it in the tunnel header.
const TUNNEL_IDENTITY: u32 = 40_001;

/// The local pod at packets::IP4_A (endpoint 9 on lo), ingress enforced,
/// allowing TCP 80 from [`TUNNEL_IDENTITY`] only; the peer at IP4_B with
/// [`IPCACHE_IDENTITY`] in the ipcache.
fn setup() -> (PinDir, Datapath) {
    require_root();
    let pins = PinDir::new();
    let mut datapath = load(&pins).unwrap();
    let ebpf = datapath.ebpf_mut();
    maps::set_endpoint(
        ebpf,
        LOOPBACK_IFINDEX,
        EndpointInfo {
            id: ENDPOINT_ID,
            flags: EndpointInfo::INGRESS_ENFORCED,
            pad: 0,
            identity: 30_000,
            ipv4: packets::IP4_A,
            ipv6: [0; 16],
            ipv6_link_local: [0; 8],
        },
    )
    .unwrap();
    maps::set_ipcache(
        ebpf,
        "10.99.0.2/32".parse().unwrap(),
        IpcacheValue {
            identity: IPCACHE_IDENTITY,
            node_ipv4: [192, 0, 2, 12],
            address_identity: 0,
        },
    )
    .unwrap();
    let key = PolicyKey {
        endpoint_id: ENDPOINT_ID,
        direction: TrafficDirection::Ingress as u8,
        pad0: 0,
        identity: TUNNEL_IDENTITY,
        protocol: ip_proto::TCP,
        pad1: 0,
        port: 80u16.to_be_bytes(),
    };
    let entry = PolicyEntry {
        verdict: POLICY_ALLOW,
        match_type: 0,
        pad: [0; 2],
        rule: 1,
    };
    maps::set_policy(ebpf, POLICY_PREFIX_FULL, key, entry).unwrap();
    maps::advance_policy_revision(ebpf).unwrap();
    (pins, datapath)
}

/// A TCP SYN from the peer (IP4_B:`sport`) to the local pod's port 80.
fn syn_from_peer(sport: u16) -> Vec<u8> {
    let mut frame = packets::ipv4_tcp_syn();
    let ip = packets::ETH_HLEN;
    let (a, b) = (
        frame[ip + 12..ip + 16].to_vec(),
        frame[ip + 16..ip + 20].to_vec(),
    );
    frame[ip + 12..ip + 16].copy_from_slice(&b);
    frame[ip + 16..ip + 20].copy_from_slice(&a);
    let l4 = ip + packets::IPV4_HLEN;
    frame[l4..l4 + 2].copy_from_slice(&sport.to_be_bytes());
    frame[l4 + 2..l4 + 4].copy_from_slice(&80u16.to_be_bytes());
    frame
}

/// The one counter a run moved: (verdict, reason).
fn counted(
    datapath: &mut Datapath,
    run: impl FnOnce(&mut Datapath) -> i32,
    frame_len: usize,
) -> (i32, Reason) {
    let before = datapath.metrics().unwrap();
    let verdict = run(datapath);
    let delta = datapath.metrics().unwrap().since(&before);
    let moved: Vec<_> = delta.iter().collect();
    assert_eq!(moved.len(), 1, "exactly one counter moves: {moved:?}");
    assert_eq!(
        moved[0].2,
        MetricsValue {
            packets: 1,
            bytes: frame_len as u64
        }
    );
    (verdict, Reason::from_u8(moved[0].0).unwrap())
}

fn to_pod_with_mark(datapath: &mut Datapath, frame: &[u8], mark: u32) -> Reason {
    let (_, reason) = counted(
        datapath,
        |d| {
            test_run_marked(d, ProgramKind::ToPod, frame, mark)
                .unwrap()
                .verdict
        },
        frame.len(),
    );
    reason
}

#[test]
fn the_identity_from_the_tunnel_header_decides_ingress_policy() {
    let (_pins, mut datapath) = setup();
    // By the source address (native routing): the ipcache's identity,
    // which no rule allows.
    assert_eq!(
        to_pod_with_mark(&mut datapath, &syn_from_peer(1000), 0),
        Reason::DropPolicyDenied
    );
    // The identity the sender's node put in the VNI decides.
    assert_eq!(
        to_pod_with_mark(
            &mut datapath,
            &syn_from_peer(1001),
            identity_mark(TUNNEL_IDENTITY)
        ),
        Reason::Forwarded
    );
    // `world` in the header: resolved against this node's ipcache (CIDR
    // identities never travel), so the address decides again.
    assert_eq!(
        to_pod_with_mark(
            &mut datapath,
            &syn_from_peer(1002),
            identity_mark(identity::WORLD)
        ),
        Reason::DropPolicyDenied
    );
    // A mark that is not Weir's identity mark says nothing.
    assert_eq!(
        to_pod_with_mark(
            &mut datapath,
            &syn_from_peer(1003),
            0x4000 | TUNNEL_IDENTITY
        ),
        Reason::DropPolicyDenied
    );
}

#[test]
fn the_tunnel_device_drops_what_carries_no_tunnel_metadata() {
    let (_pins, mut datapath) = setup();
    let frame = syn_from_peer(2000);
    let (verdict, reason) = counted(
        &mut datapath,
        |d| {
            test_run(d, ProgramKind::FromOverlay, &frame, 1)
                .unwrap()
                .verdict
        },
        frame.len(),
    );
    assert_eq!((verdict, reason), (2, Reason::DropNoTunnelKey));
}

#[test]
fn only_other_nodes_pod_cidrs_are_sent_into_the_tunnel() {
    let (_pins, mut datapath) = setup();
    // From the local pod (IP4_A) to the peer (IP4_B).
    let frame = packets::ipv4_tcp_syn();
    let to_overlay = |datapath: &mut Datapath| {
        counted(
            datapath,
            |d| {
                test_run(d, ProgramKind::ToOverlay, &frame, 1)
                    .unwrap()
                    .verdict
            },
            frame.len(),
        )
    };
    // In no node's pod CIDR: nowhere to send it.
    assert_eq!(to_overlay(&mut datapath), (2, Reason::DropNoTunnelEndpoint));
    // In this node's own: never through the tunnel.
    let cidr = "10.99.0.0/24".parse().unwrap();
    let node_ip = "192.0.2.12".parse().unwrap();
    maps::pod_cidrs::set_pod_cidr(
        datapath.ebpf_mut(),
        cidr,
        PodCidrOwner {
            node_ip,
            local: true,
        },
    )
    .unwrap();
    assert_eq!(to_overlay(&mut datapath), (2, Reason::DropNoTunnelEndpoint));
    // Another node's: the tunnel key is set and the packet goes on.
    maps::pod_cidrs::set_pod_cidr(
        datapath.ebpf_mut(),
        cidr,
        PodCidrOwner {
            node_ip,
            local: false,
        },
    )
    .unwrap();
    assert_eq!(to_overlay(&mut datapath), (0, Reason::Forwarded));
}

/// A dual-stack node's IPv6 pods go through the (IPv4) tunnel to the node
/// owning their IPv6 pod CIDR (`weir_pod_cidrs6`), as IPv4 pods do.
#[test]
fn ipv6_pods_of_another_node_are_sent_into_the_tunnel() {
    let (_pins, mut datapath) = setup();
    // From fd00:99::1 to fd00:99::2.
    let v6 = packets::ipv6_tcp_syn();
    let to_overlay = |datapath: &mut Datapath| {
        counted(
            datapath,
            |d| test_run(d, ProgramKind::ToOverlay, &v6, 1).unwrap().verdict,
            v6.len(),
        )
    };
    assert_eq!(to_overlay(&mut datapath), (2, Reason::DropNoTunnelEndpoint));
    let cidr = "fd00:99::/112".parse().unwrap();
    let node_ip = "192.0.2.12".parse().unwrap();
    for (local, expected) in [
        (true, (2, Reason::DropNoTunnelEndpoint)),
        (false, (0, Reason::Forwarded)),
    ] {
        maps::pod_cidrs::set_pod_cidr(datapath.ebpf_mut(), cidr, PodCidrOwner { node_ip, local })
            .unwrap();
        assert_eq!(to_overlay(&mut datapath), expected, "local {local}");
    }
    let entries = maps::pod_cidrs::pod_cidr_entries(datapath.ebpf_mut()).unwrap();
    assert_eq!(entries.len(), 1, "in weir_pod_cidrs6: {entries:?}");
    maps::pod_cidrs::remove_pod_cidr(datapath.ebpf_mut(), cidr).unwrap();
    assert_eq!(to_overlay(&mut datapath), (2, Reason::DropNoTunnelEndpoint));
}
