//! The transport protocol of a Kubernetes port, as manifests, policies and
//! services spell it (`TCP`, `UDP`, `SCTP`), with the IP protocol number the
//! datapath keys it by (from the one table in `weir_abi::ip_proto`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use weir_abi::ip_proto;

/// A Kubernetes `protocol`. Ordered TCP, UDP, SCTP.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

/// Text that is not a Kubernetes protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol {0:?} (TCP, UDP or SCTP)")]
pub struct ProtocolError(pub String);

impl Protocol {
    /// Every protocol, in order.
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    /// The Kubernetes spelling: `TCP`, `UDP`, `SCTP`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }

    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => ip_proto::TCP,
            Protocol::Udp => ip_proto::UDP,
            Protocol::Sctp => ip_proto::SCTP,
        }
    }

    /// The protocol of an IP protocol number, if it is one of these.
    pub fn from_number(number: u8) -> Option<Protocol> {
        Self::ALL.into_iter().find(|p| p.number() == number)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Protocol {
    type Err = ProtocolError;

    /// Case-sensitive, as the Kubernetes API is.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| ProtocolError(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelling_numbers_and_order() {
        for p in Protocol::ALL {
            assert_eq!(p.name().parse::<Protocol>(), Ok(p));
            assert_eq!(Protocol::from_number(p.number()), Some(p));
            assert_eq!(p.to_string(), p.name());
        }
        assert_eq!(
            Protocol::ALL.map(Protocol::number),
            [ip_proto::TCP, ip_proto::UDP, ip_proto::SCTP]
        );
        assert_eq!(Protocol::from_number(ip_proto::ICMP), None);
        assert!(Protocol::Tcp < Protocol::Udp && Protocol::Udp < Protocol::Sctp);
        assert_eq!(
            "tcp".parse::<Protocol>().unwrap_err().to_string(),
            r#"unknown protocol "tcp" (TCP, UDP or SCTP)"#
        );
    }

    #[test]
    fn serde_spells_it_as_kubernetes_does() {
        assert_eq!(serde_json::to_string(&Protocol::Sctp).unwrap(), r#""SCTP""#);
        assert_eq!(
            serde_json::from_str::<Protocol>(r#""UDP""#).unwrap(),
            Protocol::Udp
        );
        assert!(serde_json::from_str::<Protocol>(r#""udp""#).is_err());
    }
}
