use super::*;

fn errs() -> FieldErrors {
    FieldErrors::new()
}

#[test]
fn cidr_parsing() {
    let mut e = errs();
    let p = Path::root("x");
    assert_eq!(
        parse_cidr("10.1.2.3/8", false, &p, &mut e),
        Some("10.0.0.0/8".parse().unwrap())
    );
    assert_eq!(
        parse_cidr("10.1.2.3", true, &p, &mut e),
        Some("10.1.2.3/32".parse().unwrap())
    );
    assert!(e.is_empty());
    assert_eq!(parse_cidr("10.1.2.3", false, &p, &mut e), None);
    assert_eq!(parse_cidr("10.0.0.0/33", false, &p, &mut e), None);
    assert_eq!(parse_cidr("nonsense", true, &p, &mut e), None);
    assert_eq!(e.len(), 3);
    assert_eq!(
        e.messages()[0],
        r#"x: invalid CIDR "10.1.2.3": must be a CIDR such as 10.0.0.0/8 or fd00::/64"#
    );
}

#[test]
fn except_must_be_strict_subnet() {
    let mut e = errs();
    let p = Path::root("ipBlock");
    let ok = parse_cidr_peer(
        "10.0.0.0/8",
        &["10.1.0.0/16".into()],
        false,
        CidrScope::Addresses,
        &p,
        &mut e,
    );
    assert!(ok.is_some());
    let bad = parse_cidr_peer(
        "10.0.0.0/8",
        &[
            "192.168.0.0/16".into(),
            "10.0.0.0/8".into(),
            "fd00::/8".into(),
        ],
        false,
        CidrScope::Addresses,
        &p,
        &mut e,
    );
    assert!(bad.is_none());
    assert_eq!(
        e.messages(),
        vec![
            "ipBlock.except[0]: 192.168.0.0/16 is not a strict subnet of cidr 10.0.0.0/8",
            "ipBlock.except[1]: 10.0.0.0/8 is not a strict subnet of cidr 10.0.0.0/8",
            "ipBlock.except[2]: fd00::/8 is not a strict subnet of cidr 10.0.0.0/8",
        ]
    );
}

#[test]
fn port_names() {
    for ok in ["http", "dns-tcp", "h2c", "a"] {
        assert!(valid_port_name(ok), "{ok}");
    }
    for bad in [
        "",
        "80",
        "-http",
        "http-",
        "ht--tp",
        "HTTP",
        "averyveryverylongname",
        "a_b",
    ] {
        assert!(!valid_port_name(bad), "{bad}");
    }
}

fn port(
    p: Option<IntOrString>,
    end: Option<i64>,
    style: PortStyle,
) -> Result<PortRef, Vec<String>> {
    let mut e = errs();
    parse_port(p.as_ref(), end, style, &Path::root("p"), &mut e).ok_or_else(|| e.messages())
}

#[test]
fn port_ranges_and_errors() {
    use IntOrString::*;
    use PortStyle::*;
    assert_eq!(
        port(Some(Int(80)), None, Kubernetes),
        Ok(PortRef::Range(80, 80))
    );
    assert_eq!(
        port(Some(Int(80)), Some(90), Kubernetes),
        Ok(PortRef::Range(80, 90))
    );
    assert_eq!(port(None, None, Kubernetes), Ok(PortRef::Any));
    assert_eq!(
        port(Some(String("http".into())), None, Kubernetes),
        Ok(PortRef::Named("http".into()))
    );
    assert_eq!(
        port(Some(Int(80)), Some(79), Kubernetes),
        Err(vec!["p.endPort: 79 is below port 80".to_string()])
    );
    assert_eq!(
        port(Some(Int(0)), None, Kubernetes),
        Err(vec!["p.port: port 0 is out of range 1-65535".to_string()])
    );
    assert_eq!(
        port(Some(Int(70000)), None, Kubernetes),
        Err(vec![
            "p.port: port 70000 is out of range 1-65535".to_string()
        ])
    );
    assert_eq!(
        port(Some(Int(80)), Some(65536), Kubernetes),
        Err(vec![
            "p.endPort: endPort 65536 is out of range 1-65535".to_string()
        ])
    );
    assert_eq!(
        port(None, Some(90), Kubernetes),
        Err(vec![
            "p.endPort: endPort requires a numeric port".to_string()
        ])
    );
    assert_eq!(
        port(Some(String("http".into())), Some(90), Kubernetes),
        Err(vec![
            r#"p.endPort: endPort cannot be used with named port "http""#.to_string()
        ])
    );
    // Kubernetes: a string is a port name, so "80" is invalid.
    assert!(port(Some(String("80".into())), None, Kubernetes).is_err());
    // Weir (Cilium): ports are strings; "0" and "" mean any.
    assert_eq!(
        port(Some(String("80".into())), Some(90), Weir),
        Ok(PortRef::Range(80, 90))
    );
    assert_eq!(port(Some(String("0".into())), None, Weir), Ok(PortRef::Any));
    assert_eq!(port(Some(String("".into())), None, Weir), Ok(PortRef::Any));
    assert_eq!(port(Some(Int(0)), None, Weir), Ok(PortRef::Any));
    assert_eq!(
        port(Some(String("99999999999999999999".into())), None, Weir),
        Err(vec![
            "p.port: port 99999999999999999999 is out of range 1-65535".to_string()
        ])
    );
}
