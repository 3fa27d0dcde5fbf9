//! An attachment (container id + interface name, the key the specification
//! uses) and the names and addresses derived from it deterministically, so
//! that DEL and GC can find what ADD made without stored state.

use sha2::{Digest, Sha256};

use crate::mac::MacAddr;

/// Host-side veth names are `lxc` + this many hex digits of the hash.
const HOST_IFNAME_HASH_DIGITS: usize = 11;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
}

/// The Kubernetes pod behind an attachment, from `CNI_ARGS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

impl Attachment {
    /// The host end of the veth: `lxc` + 11 hex digits of SHA-256(container
    /// id); 14 bytes, within the kernel's 15.
    pub fn host_ifname(&self) -> String {
        host_ifname(&self.container_id)
    }

    /// The name the pod end has between its creation in the pod namespace
    /// and its rename to `ifname` (which may be taken until the rename, e.g.
    /// by a leftover, and must fail the ADD cleanly then).
    pub fn peer_temp_ifname(&self) -> String {
        let digest = self.digest();
        format!("wtmp{}", &hex(&digest)[..11])
    }

    /// A stable MAC for the pod interface: the same attachment always gets
    /// the same address, so re-creations do not churn neighbour caches.
    pub fn pod_mac(&self) -> MacAddr {
        let digest = self.digest();
        let mut bytes = [0u8; 6];
        bytes.copy_from_slice(&digest[..6]);
        MacAddr::local_unicast(bytes)
    }

    /// SHA-256 over container id and ifname, separated by a NUL (which
    /// neither may contain) so that ("ab","c") and ("a","bc") differ.
    fn digest(&self) -> Vec<u8> {
        let mut hasher = Sha256::new();
        hasher.update(self.container_id.as_bytes());
        hasher.update([0u8]);
        hasher.update(self.ifname.as_bytes());
        hasher.finalize().to_vec()
    }
}

/// See [`Attachment::host_ifname`].
pub fn host_ifname(container_id: &str) -> String {
    let digest = Sha256::digest(container_id.as_bytes());
    format!("lxc{}", &hex(&digest)[..HOST_IFNAME_HASH_DIGITS])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attachment(container_id: &str, ifname: &str) -> Attachment {
        Attachment {
            container_id: container_id.into(),
            ifname: ifname.into(),
        }
    }

    #[test]
    fn host_ifname_is_lxc_plus_11_hex_of_sha256_of_container_id() {
        // sha256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(host_ifname("abc"), "lxcba7816bf8f0");
        assert_eq!(attachment("abc", "eth0").host_ifname(), "lxcba7816bf8f0");
        assert_eq!(attachment("abc", "net1").host_ifname(), "lxcba7816bf8f0");
        assert!(host_ifname("x").len() <= 15);
    }

    #[test]
    fn host_ifname_differs_per_container() {
        assert_ne!(host_ifname("a"), host_ifname("b"));
    }

    #[test]
    fn pod_mac_is_stable_local_and_unicast() {
        let mac = attachment("abc", "eth0").pod_mac();
        assert_eq!(mac, attachment("abc", "eth0").pod_mac());
        assert_eq!(mac.octets()[0] & 0x02, 0x02, "locally administered");
        assert_eq!(mac.octets()[0] & 0x01, 0x00, "unicast");
        // The first six bytes of SHA-256("abc\0eth0"), local/unicast bits fixed.
        let digest = Sha256::digest(b"abc\0eth0");
        let expected = MacAddr::local_unicast(digest[..6].try_into().unwrap());
        assert_eq!(mac, expected);
    }

    #[test]
    fn pod_mac_depends_on_container_and_ifname() {
        let base = attachment("abc", "eth0").pod_mac();
        assert_ne!(base, attachment("abd", "eth0").pod_mac());
        assert_ne!(base, attachment("abc", "eth1").pod_mac());
        assert_ne!(
            attachment("ab", "ceth0").pod_mac(),
            attachment("abc", "eth0").pod_mac()
        );
    }

    #[test]
    fn every_derived_mac_is_local_unicast() {
        for index in 0..256 {
            let octet = attachment(&format!("c{index}"), "eth0").pod_mac().octets()[0];
            assert_eq!(octet & 0x03, 0x02, "c{index}");
        }
    }

    #[test]
    fn temp_ifname_fits_and_differs_from_host_name() {
        let a = attachment("abc", "eth0");
        let temp = a.peer_temp_ifname();
        assert!(temp.len() <= 15, "{temp}");
        assert!(temp.starts_with("wtmp"));
        assert_ne!(temp, a.host_ifname());
    }
}
