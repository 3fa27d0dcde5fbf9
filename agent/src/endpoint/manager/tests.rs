use std::collections::BTreeSet;
use std::path::PathBuf;

use super::*;
use crate::endpoint::ipam::Ipam;

/// Records attachments instead of touching the kernel; the kernel side is
/// covered by the datapath and lab suites.
#[derive(Default)]
struct RecordingDatapath {
    attached: BTreeSet<String>,
    fail_attach: bool,
    forgotten: Vec<Ipv4Addr>,
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

    fn forget_address(&mut self, address: Ipv4Addr) -> Result<(), DatapathError> {
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
    let dir = std::env::temp_dir().join(format!("weir-agent-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = StateStore::new(&dir).unwrap();
    let state = store
        .load_or(Ipam::new(cidr.parse().unwrap()).unwrap())
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
    assert_eq!(f.agent.lock().datapath.forgotten, [allocation.address]);
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
        .load_or(Ipam::new("10.244.1.0/24".parse().unwrap()).unwrap())
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
