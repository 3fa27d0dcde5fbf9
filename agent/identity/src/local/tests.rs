use super::*;

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

#[test]
fn cidr_labels_follow_cilium() {
    let v4 = cidr_labels(net("10.1.0.0/16"));
    assert_eq!(v4.canonical(), "cidr:10.1.0.0/16=;reserved:world=;");
    let v6 = cidr_labels(net("2001:db8::1/32"));
    assert_eq!(v6.get("cidr:2001-db8--/32"), Some(""));
}
