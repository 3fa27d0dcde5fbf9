use std::collections::BTreeSet;
use std::path::PathBuf;

use super::*;
use crate::endpoint::ipam::{Ipam, Ipam6};

/// Records attachments instead of touching the kernel; the kernel side is
/// covered by the datapath and lab suites.
#[derive(Default)]
struct RecordingDatapath {
    attached: BTreeSet<String>,
    fail_attach: bool,
    forgotten: Vec<IpAddr>,
}

impl EndpointDatapath for RecordingDatapath {
    fn attach_pod(
        &mut self,
        endpoint: &Endpoint,
        _entry: EndpointInfo,
    ) -> Result<(), DatapathError> {
        if self.fail_attach {
            return Err(DatapathError::Attach {
                interface: endpoint.host_ifname.clone(),
                reason: "test".into(),
            });
        }
        self.attached.insert(endpoint.host_ifname.clone());
        Ok(())
    }

    fn detach_pod(&mut self, endpoint: &Endpoint) -> Result<(), DatapathError> {
        self.attached.remove(&endpoint.host_ifname);
        Ok(())
    }

    fn remove_orphans(&mut self) -> Result<usize, DatapathError> {
        Ok(0)
    }

    fn forget_address(&mut self, address: IpAddr) -> Result<(), DatapathError> {
        self.forgotten.push(address);
        Ok(())
    }

    fn retain_netns_owners(
        &mut self,
        _cookies: &std::collections::BTreeSet<u64>,
    ) -> Result<usize, DatapathError> {
        Ok(0)
    }
}

struct Fixture {
    dir: PathBuf,
    agent: EndpointManager<RecordingDatapath>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fixture(name: &str, cidr: &str) -> Fixture {
    dual_stack_fixture(name, cidr, None)
}

fn dual_stack_fixture(name: &str, cidr: &str, cidr6: Option<&str>) -> Fixture {
    let dir = std::env::temp_dir().join(format!("weir-agent-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = StateStore::new(&dir).unwrap();
    let ipam6 = cidr6.map(|c| Ipam6::new(c.parse().unwrap()).unwrap());
    let state = store
        .load_or(Ipam::new(cidr.parse().unwrap()).unwrap(), ipam6)
        .unwrap();
    let agent = EndpointManager::new(
        "n1".into(),
        1500,
        store,
        state,
        RecordingDatapath::default(),
    );
    Fixture { dir, agent }
}

fn key(id: &str) -> AttachmentKey {
    AttachmentKey {
        container_id: id.into(),
        ifname: "eth0".into(),
    }
}

fn new_endpoint(id: &str, ipv4: Ipv4Addr) -> NewEndpoint {
    NewEndpoint {
        attachment: key(id),
        pod: NamespacedName::new("x", id),
        netns: format!("/run/netns/{id}"),
        host_ifname: format!("lxc{id}"),
        host_ifindex: 9,
        ipv4,
        ipv6: None,
        mac: "02:00:00:00:00:01".into(),
        netns_cookie: 0,
        port_mappings: Vec::new(),
    }
}

#[test]
fn allocate_then_create_then_delete() {
    let f = fixture("lifecycle", "10.244.1.0/24");
    let allocation = f.agent.allocate(&key("a")).unwrap();
    assert_eq!(allocation.address, Ipv4Addr::new(10, 244, 1, 2));
    assert_eq!(allocation.gateway, Ipv4Addr::new(10, 244, 1, 1));
    let endpoint = f
        .agent
        .create_endpoint(new_endpoint("a", allocation.address))
        .unwrap();
    assert_eq!(endpoint.id, 1);
    assert!(f.agent.lock().datapath.attached.contains("lxca"));
    assert!(f.agent.delete_endpoint(&key("a")).unwrap());
    assert!(!f.agent.delete_endpoint(&key("a")).unwrap(), "DEL twice");
    assert!(f.agent.lock().datapath.attached.is_empty());
    // The released address's connections are forgotten (once).
    assert_eq!(
        f.agent.lock().datapath.forgotten,
        [IpAddr::V4(allocation.address)]
    );
    assert_eq!(f.agent.status().addresses_free, 253);
}

#[test]
fn create_without_allocation_or_with_another_address_is_refused() {
    let f = fixture("refuse", "10.244.1.0/24");
    assert!(f
        .agent
        .create_endpoint(new_endpoint("a", Ipv4Addr::new(10, 244, 1, 2)))
        .is_err());
    f.agent.allocate(&key("a")).unwrap();
    assert!(f
        .agent
        .create_endpoint(new_endpoint("a", Ipv4Addr::new(10, 244, 1, 99)))
        .is_err());
    assert!(f.agent.endpoints().is_empty());
}

#[test]
fn a_failed_attach_changes_nothing() {
    let f = fixture("attach-fails", "10.244.1.0/24");
    let allocation = f.agent.allocate(&key("a")).unwrap();
    f.agent.lock().datapath.fail_attach = true;
    assert!(f
        .agent
        .create_endpoint(new_endpoint("a", allocation.address))
        .is_err());
    assert!(f.agent.endpoints().is_empty());
    // The allocation stays until DEL releases it (the CNI plugin cleans up).
    assert!(f.agent.delete_endpoint(&key("a")).unwrap());
}

#[test]
fn state_survives_a_restart() {
    let f = fixture("restart", "10.244.1.0/24");
    let allocation = f.agent.allocate(&key("a")).unwrap();
    f.agent
        .create_endpoint(new_endpoint("a", allocation.address))
        .unwrap();
    let store = StateStore::new(&f.dir).unwrap();
    let state = store
        .load_or(Ipam::new("10.244.1.0/24".parse().unwrap()).unwrap(), None)
        .unwrap();
    let restarted = EndpointManager::new(
        "n1".into(),
        1500,
        store,
        state,
        RecordingDatapath::default(),
    );
    assert!(restarted.restore().is_empty());
    assert!(restarted.lock().datapath.attached.contains("lxca"));
    assert_eq!(
        restarted.allocate(&key("a")).unwrap().address,
        allocation.address
    );
    assert_eq!(restarted.endpoint(&key("a")).unwrap().id, 1);
}

#[test]
fn garbage_collect_releases_what_is_not_valid() {
    let f = fixture("gc", "10.244.1.0/24");
    for id in ["a", "b", "c"] {
        let allocation = f.agent.allocate(&key(id)).unwrap();
        f.agent
            .create_endpoint(new_endpoint(id, allocation.address))
            .unwrap();
    }
    f.agent.allocate(&key("d")).unwrap(); // allocated, never created
    let released = f.agent.garbage_collect(&[key("b")]).unwrap();
    assert_eq!(released, vec![key("a"), key("c"), key("d")]);
    assert_eq!(f.agent.endpoints().len(), 1);
    assert_eq!(f.agent.status().addresses_free, 252);
}

#[test]
fn exhaustion_is_reported() {
    let f = fixture("exhaust", "10.0.0.0/30");
    f.agent.allocate(&key("a")).unwrap();
    let err = f.agent.allocate(&key("b")).unwrap_err();
    assert!(err.to_string().contains("exhausted"), "{err}");
    assert_eq!(f.agent.status().addresses_free, 0);
}

#[test]
fn a_dual_stack_node_gives_each_pod_both_addresses_and_takes_both_back() {
    let f = dual_stack_fixture("dual", "10.244.1.0/24", Some("fd00:10:244:1::/112"));
    let allocation = f.agent.allocate(&key("a")).unwrap();
    let v6 = allocation.ipv6.clone().expect("an IPv6 address");
    assert_eq!(v6.address.to_string(), "fd00:10:244:1::2");
    assert_eq!(v6.gateway.to_string(), "fd00:10:244:1::1");
    assert_eq!(v6.pod_cidr.to_string(), "fd00:10:244:1::/112");
    // Both addresses of the allocation, or the endpoint is refused.
    for wrong in [None, Some("fd00:10:244:1::9".parse().unwrap())] {
        let endpoint = NewEndpoint {
            ipv6: wrong,
            ..new_endpoint("a", allocation.address)
        };
        let err = f.agent.create_endpoint(endpoint).unwrap_err();
        assert!(matches!(err, ManagerError::Invalid(_)), "{err}");
    }
    let endpoint = f
        .agent
        .create_endpoint(NewEndpoint {
            ipv6: Some(v6.address),
            ..new_endpoint("a", allocation.address)
        })
        .unwrap();
    assert_eq!(endpoint.ipv6, Some(v6.address));
    assert_eq!(endpoint.closed_entry().ipv6, v6.address.octets());
    assert!(f.agent.delete_endpoint(&key("a")).unwrap());
    assert_eq!(
        f.agent.lock().datapath.forgotten,
        [IpAddr::V4(allocation.address), IpAddr::V6(v6.address)]
    );
    // The IPv6 address comes back last, as the IPv4 one does.
    let next = f.agent.allocate(&key("b")).unwrap();
    assert_eq!(next.ipv6.unwrap().address.to_string(), "fd00:10:244:1::3");
}
