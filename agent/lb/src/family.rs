//! The two IP families the engine compiles frontends for. Frontends,
//! backends and endpoint slices are generic over their address type,
//! IPv4 by default: an IPv6 frontend is the same frontend with a wider
//! address, and the rules are written once.

use std::fmt;
use std::hash::Hash;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Serialize;

/// Kubernetes' `IPFamily`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum IpFamily {
    Ipv4,
    Ipv6,
}

impl IpFamily {
    /// As the API spells it (`ipFamilies`, `addressType`).
    pub fn as_str(self) -> &'static str {
        match self {
            IpFamily::Ipv4 => "IPv4",
            IpFamily::Ipv6 => "IPv6",
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for std::net::Ipv4Addr {}
    impl Sealed for std::net::Ipv6Addr {}
}

/// [`Ipv4Addr`] or [`Ipv6Addr`].
pub trait LbAddress:
    Copy
    + Ord
    + Hash
    + fmt::Debug
    + fmt::Display
    + Serialize
    + Into<std::net::IpAddr>
    + Send
    + Sync
    + 'static
    + sealed::Sealed
{
    const FAMILY: IpFamily;

    /// The address in `text`, if it is one of this family.
    fn parse(text: &str) -> Option<Self>;

    /// Why this address may not carry service or endpoint traffic, if it
    /// may not (the API server's `ValidateNonSpecialIP`).
    fn special(&self) -> Option<&'static str>;

    /// `address:port`, with brackets around an IPv6 address.
    fn with_port(&self, port: u16) -> String;
}

impl LbAddress for Ipv4Addr {
    const FAMILY: IpFamily = IpFamily::Ipv4;

    fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }

    fn special(&self) -> Option<&'static str> {
        if self.is_unspecified() {
            Some("unspecified")
        } else if self.is_loopback() {
            Some("in the loopback range (127.0.0.0/8)")
        } else if self.is_link_local() {
            Some("in the link-local range (169.254.0.0/16)")
        } else if self.octets()[..3] == [224, 0, 0] {
            Some("in the link-local multicast range (224.0.0.0/24)")
        } else {
            None
        }
    }

    fn with_port(&self, port: u16) -> String {
        format!("{self}:{port}")
    }
}

impl LbAddress for Ipv6Addr {
    const FAMILY: IpFamily = IpFamily::Ipv6;

    fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }

    fn special(&self) -> Option<&'static str> {
        let segments = self.segments();
        if self.is_unspecified() {
            Some("unspecified")
        } else if self.is_loopback() {
            Some("the loopback address (::1)")
        } else if segments[0] & 0xffc0 == 0xfe80 {
            Some("in the link-local range (fe80::/10)")
        } else if segments[0] & 0xff0f == 0xff02 {
            Some("a link-local multicast address (ff02::/16)")
        } else if self.to_ipv4_mapped().is_some() {
            Some("an IPv4-mapped address (::ffff:0:0/96)")
        } else {
            None
        }
    }

    fn with_port(&self, port: u16) -> String {
        format!("[{self}]:{port}")
    }
}
