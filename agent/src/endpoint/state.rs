//! The agent's on-disk state: address allocations and endpoints, written
//! atomically (temporary file, fsync, rename) on every change so that an
//! agent restart, or a crash at any instant, keeps every pod's address.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::endpoint::ipam::{Ipam, Ipam6};
use crate::endpoint::registry::Registry;

const STATE_FILE: &str = "state.json";

/// Everything the agent must remember across restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    pub ipam: Ipam,
    /// The IPv6 pool of a dual-stack node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam6: Option<Ipam6>,
    pub endpoints: Registry,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "state file {path} is for pod CIDR {found}, but this agent is configured for {configured}"
    )]
    CidrChanged {
        path: PathBuf,
        found: String,
        configured: String,
    },
}

/// Reads and writes [`NodeState`] under a state directory.
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    pub fn new(dir: &Path) -> Result<StateStore, StateError> {
        fs::create_dir_all(dir).map_err(|source| StateError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(StateStore {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The saved state, or a fresh one for `ipam` (and `ipam6` on a
    /// dual-stack node) if there is none. A node that becomes dual-stack
    /// keeps its IPv4 state and starts an empty IPv6 pool; one whose pod
    /// CIDRs changed otherwise (or that drops IPv6 while it holds IPv6
    /// state) is refused: its pods' addresses would be outside them.
    pub fn load_or(&self, ipam: Ipam, ipam6: Option<Ipam6>) -> Result<NodeState, StateError> {
        let path = self.path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(NodeState {
                    ipam,
                    ipam6,
                    endpoints: Registry::default(),
                })
            }
            Err(source) => return Err(StateError::Io { path, source }),
        };
        let mut state: NodeState =
            serde_json::from_str(&text).map_err(|source| StateError::Corrupt {
                path: path.clone(),
                source,
            })?;
        let changed = |found: String, configured: String| StateError::CidrChanged {
            path: path.clone(),
            found,
            configured,
        };
        if state.ipam.cidr() != ipam.cidr() {
            return Err(changed(
                state.ipam.cidr().to_string(),
                ipam.cidr().to_string(),
            ));
        }
        let cidr6 = |pool: &Option<Ipam6>| {
            pool.as_ref()
                .map_or("no IPv6 pod CIDR".to_string(), |p| p.cidr().to_string())
        };
        match (&state.ipam6, &ipam6) {
            (Some(found), Some(configured)) if found.cidr() == configured.cidr() => {}
            (None, Some(_)) => state.ipam6 = ipam6,
            (None, None) => {}
            _ => return Err(changed(cidr6(&state.ipam6), cidr6(&ipam6))),
        }
        Ok(state)
    }

    pub fn save(&self, state: &NodeState) -> Result<(), StateError> {
        let path = self.path();
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        let json = serde_json::to_vec_pretty(state).expect("state serialises");
        let mut file = fs::File::create(&tmp).map_err(io)?;
        file.write_all(&json).map_err(io)?;
        file.sync_all().map_err(io)?;
        fs::rename(&tmp, &path).map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::ipam::AttachmentKey;

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "weir-state-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn saved_state_loads_back() {
        let dir = temp_dir();
        let store = StateStore::new(&dir).unwrap();
        let mut state = store
            .load_or(Ipam::new("10.244.1.0/24".parse().unwrap()).unwrap(), None)
            .unwrap();
        let key = AttachmentKey {
            container_id: "c1".into(),
            ifname: "eth0".into(),
        };
        state.ipam.allocate(&key).unwrap();
        store.save(&state).unwrap();
        let loaded = store
            .load_or(Ipam::new("10.244.1.0/24".parse().unwrap()).unwrap(), None)
            .unwrap();
        assert_eq!(loaded, state);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_changed_pod_cidr_is_refused_not_silently_reset() {
        let dir = temp_dir();
        let store = StateStore::new(&dir).unwrap();
        let state = store
            .load_or(Ipam::new("10.244.1.0/24".parse().unwrap()).unwrap(), None)
            .unwrap();
        store.save(&state).unwrap();
        let err = store
            .load_or(Ipam::new("10.244.2.0/24".parse().unwrap()).unwrap(), None)
            .unwrap_err();
        assert!(matches!(err, StateError::CidrChanged { .. }), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_node_becomes_dual_stack_but_never_loses_its_ipv6_pool_silently() {
        let dir = temp_dir();
        let store = StateStore::new(&dir).unwrap();
        let v4 = || Ipam::new("10.244.1.0/24".parse().unwrap()).unwrap();
        let v6 = |cidr: &str| Some(Ipam6::new(cidr.parse().unwrap()).unwrap());
        let mut state = store.load_or(v4(), None).unwrap();
        let key = AttachmentKey {
            container_id: "c1".into(),
            ifname: "eth0".into(),
        };
        state.ipam.allocate(&key).unwrap();
        store.save(&state).unwrap();
        // IPv4-only state, IPv6 configured: the IPv4 allocations stay.
        let dual = store.load_or(v4(), v6("fd00:10:244:1::/112")).unwrap();
        assert_eq!(dual.ipam, state.ipam);
        assert!(dual.ipam6.is_some());
        store.save(&dual).unwrap();
        for changed in [None, v6("fd00:10:244:2::/112")] {
            let err = store.load_or(v4(), changed).unwrap_err();
            assert!(matches!(err, StateError::CidrChanged { .. }), "{err}");
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_file_is_an_error() {
        let dir = temp_dir();
        let store = StateStore::new(&dir).unwrap();
        fs::write(dir.join(STATE_FILE), b"{ not json").unwrap();
        let err = store
            .load_or(Ipam::new("10.244.1.0/24".parse().unwrap()).unwrap(), None)
            .unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }
}
