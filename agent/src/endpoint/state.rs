//! The agent's on-disk state: address allocations and endpoints, written
//! atomically (temporary file, fsync, rename) on every change so that an
//! agent restart, or a crash at any instant, keeps every pod's address.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::endpoint::ipam::Ipam;
use crate::endpoint::registry::Registry;

const STATE_FILE: &str = "state.json";

/// Everything the agent must remember across restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    pub ipam: Ipam,
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

    /// The saved state, or a fresh one for `ipam` if there is none.
    pub fn load_or(&self, ipam: Ipam) -> Result<NodeState, StateError> {
        let path = self.path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(NodeState {
                    ipam,
                    endpoints: Registry::default(),
                })
            }
            Err(source) => return Err(StateError::Io { path, source }),
        };
        let state: NodeState =
            serde_json::from_str(&text).map_err(|source| StateError::Corrupt {
                path: path.clone(),
                source,
            })?;
        if state.ipam.cidr() != ipam.cidr() {
            return Err(StateError::CidrChanged {
                path,
                found: state.ipam.cidr().to_string(),
                configured: ipam.cidr().to_string(),
            });
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
            .load_or(Ipam::new("10.244.1.0/24".parse().unwrap()).unwrap())
            .unwrap();
        let key = AttachmentKey {
            container_id: "c1".into(),
            ifname: "eth0".into(),
        };
        state.ipam.allocate(&key).unwrap();
        store.save(&state).unwrap();
        let loaded = store
            .load_or(Ipam::new("10.244.1.0/24".parse().unwrap()).unwrap())
            .unwrap();
        assert_eq!(loaded, state);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_changed_pod_cidr_is_refused_not_silently_reset() {
        let dir = temp_dir();
        let store = StateStore::new(&dir).unwrap();
        let state = store
            .load_or(Ipam::new("10.244.1.0/24".parse().unwrap()).unwrap())
            .unwrap();
        store.save(&state).unwrap();
        let err = store
            .load_or(Ipam::new("10.244.2.0/24".parse().unwrap()).unwrap())
            .unwrap_err();
        assert!(matches!(err, StateError::CidrChanged { .. }), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_file_is_an_error() {
        let dir = temp_dir();
        let store = StateStore::new(&dir).unwrap();
        fs::write(dir.join(STATE_FILE), b"{ not json").unwrap();
        let err = store
            .load_or(Ipam::new("10.244.1.0/24".parse().unwrap()).unwrap())
            .unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }
}
