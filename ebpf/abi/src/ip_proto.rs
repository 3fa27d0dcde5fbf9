//! IP protocol numbers (IANA), as the kernel programs parse them and every
//! map keys them, with the names people read (`TCP`, `ICMPv6`).

/// IPv6 hop-by-hop options header.
pub const HOPOPTS: u8 = 0;
pub const ICMP: u8 = 1;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
/// IPv6 routing header.
pub const ROUTING: u8 = 43;
/// IPv6 fragment header.
pub const FRAGMENT: u8 = 44;
/// Authentication header.
pub const AH: u8 = 51;
pub const ICMPV6: u8 = 58;
/// IPv6 destination options header.
pub const DSTOPTS: u8 = 60;
pub const SCTP: u8 = 132;

/// The transport protocols Weir reads, with their names.
pub const NAMES: [(u8, &str); 5] = [
    (ICMP, "ICMP"),
    (TCP, "TCP"),
    (UDP, "UDP"),
    (ICMPV6, "ICMPv6"),
    (SCTP, "SCTP"),
];

/// The name of a protocol number (`6` → `TCP`).
pub fn name(protocol: u8) -> Option<&'static str> {
    NAMES
        .iter()
        .find(|(number, _)| *number == protocol)
        .map(|(_, name)| *name)
}

/// A protocol number shown as its name, or as the number when it has none.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Named(pub u8);

impl core::fmt::Display for Named {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match name(self.0) {
            Some(name) => f.write_str(name),
            None => write!(f, "{}", self.0),
        }
    }
}
