//! Ethernet (MAC) addresses as the plugin reports and compares them.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// A locally administered (bit 1 of the first octet) unicast (bit 0
    /// clear) address built from six arbitrary bytes.
    pub fn local_unicast(mut bytes: [u8; 6]) -> Self {
        bytes[0] = (bytes[0] | 0x02) & !0x01;
        Self(bytes)
    }

    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// From a netlink hardware address attribute.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 6]>::try_from(bytes).ok().map(Self)
    }
}

/// Lower-case, colon-separated (the form `ip` and the CNI result use).
impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}")]
pub struct InvalidMac(pub String);

impl FromStr for MacAddr {
    type Err = InvalidMac;

    /// Accepts `aa:bb:cc:dd:ee:ff` in either case.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidMac(text.to_string());
        let mut bytes = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(invalid)?;
            if part.len() != 2 {
                return Err(invalid());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| invalid())?;
        }
        if parts.next().is_some() {
            return Err(invalid());
        }
        Ok(Self(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_lower_case_with_colons() {
        let mac = MacAddr([0x0a, 0xBC, 0, 1, 0xff, 0x10]);
        assert_eq!(mac.to_string(), "0a:bc:00:01:ff:10");
    }

    #[test]
    fn parses_what_it_formats_in_either_case() {
        let mac = MacAddr([0x0a, 0xbc, 0, 1, 0xff, 0x10]);
        assert_eq!("0a:bc:00:01:ff:10".parse::<MacAddr>(), Ok(mac));
        assert_eq!("0A:BC:00:01:FF:10".parse::<MacAddr>(), Ok(mac));
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "",
            "0a:bc:00:01:ff",
            "0a:bc:00:01:ff:10:11",
            "0a-bc-00-01-ff-10",
            "0a:bc:00:01:ff:1",
            "zz:bc:00:01:ff:10",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn local_unicast_sets_local_bit_and_clears_multicast_bit() {
        assert_eq!(MacAddr::local_unicast([0xff; 6]).octets()[0], 0xfe);
        assert_eq!(MacAddr::local_unicast([0x00; 6]).octets()[0], 0x02);
        assert_eq!(
            MacAddr::local_unicast([0x01, 9, 9, 9, 9, 9]).octets(),
            [0x02, 9, 9, 9, 9, 9]
        );
    }

    #[test]
    fn from_slice_needs_six_bytes() {
        assert_eq!(
            MacAddr::from_slice(&[1, 2, 3, 4, 5, 6]),
            Some(MacAddr([1, 2, 3, 4, 5, 6]))
        );
        assert_eq!(MacAddr::from_slice(&[1, 2, 3]), None);
    }
}
