use hickory_proto::op::Query;

use super::*;

fn query(name: &str, kind: RecordType) -> Message {
    let mut request = Message::new();
    request
        .set_id(7)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    request
}

/// `web.x` is a ClusterIP Service, `db.x` headless with two endpoints,
/// `ext.x` an ExternalName.
fn cluster(namespace: &str, name: &str) -> Option<ServiceRecord> {
    match (namespace, name) {
        ("x", "web") => Some(ServiceRecord::ClusterIp(Ipv4Addr::new(10, 96, 0, 20))),
        ("x", "db") => Some(ServiceRecord::Headless(vec![
            Ipv4Addr::new(10, 244, 1, 5),
            Ipv4Addr::new(10, 244, 2, 6),
        ])),
        ("x", "ext") => Some(ServiceRecord::ExternalName("example.org".into())),
        ("x", "alias") => Some(ServiceRecord::ExternalName(
            "web.x.svc.cluster.local".into(),
        )),
        ("x", "loop") => Some(ServiceRecord::ExternalName(
            "loop.x.svc.cluster.local".into(),
        )),
        _ => None,
    }
}

fn addresses(response: &Message) -> Vec<Ipv4Addr> {
    response
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

#[test]
fn a_service_resolves_to_its_cluster_ip_whatever_the_case_and_final_dot() {
    for name in ["web.x.svc.cluster.local.", "WEB.x.Svc.cluster.local"] {
        let response = answer(&query(name, RecordType::A), cluster);
        assert_eq!(response.id(), 7);
        assert_eq!(response.message_type(), MessageType::Response);
        assert_eq!(response.response_code(), ResponseCode::NoError);
        assert!(response.authoritative());
        assert_eq!(
            addresses(&response),
            [Ipv4Addr::new(10, 96, 0, 20)],
            "{name}"
        );
    }
}

#[test]
fn a_headless_service_resolves_to_its_endpoints() {
    let response = answer(&query("db.x.svc.cluster.local.", RecordType::A), cluster);
    assert_eq!(
        addresses(&response),
        [Ipv4Addr::new(10, 244, 1, 5), Ipv4Addr::new(10, 244, 2, 6)]
    );
}

#[test]
fn an_external_name_service_is_a_cname() {
    let response = answer(&query("ext.x.svc.cluster.local.", RecordType::A), cluster);
    assert_eq!(response.response_code(), ResponseCode::NoError);
    match response.answers().first().map(Record::data) {
        Some(RData::CNAME(target)) => assert_eq!(target.0.to_ascii(), "example.org."),
        other => panic!("expected a CNAME, got {other:?}"),
    }
}

#[test]
fn pod_names_spell_their_address() {
    let response = answer(
        &query("10-244-1-5.x.pod.cluster.local.", RecordType::A),
        cluster,
    );
    assert_eq!(addresses(&response), [Ipv4Addr::new(10, 244, 1, 5)]);
}

#[test]
fn an_existing_name_without_the_type_is_nodata_and_the_rest_nxdomain() {
    let aaaa = answer(
        &query("web.x.svc.cluster.local.", RecordType::AAAA),
        cluster,
    );
    assert_eq!(aaaa.response_code(), ResponseCode::NoError);
    assert!(aaaa.answers().is_empty());
    for name in [
        "nope.x.svc.cluster.local.",
        "web.y.svc.cluster.local.",
        "x.svc.cluster.local.",
        "cluster.local.",
        "example.org.",
        "web.x.svc.cluster.local.example.org.",
        "999-1-1-1.x.pod.cluster.local.",
    ] {
        let response = answer(&query(name, RecordType::A), cluster);
        assert_eq!(response.response_code(), ResponseCode::NXDomain, "{name}");
    }
}

#[test]
fn anything_but_one_standard_query_is_refused_with_a_code() {
    let mut two = query("web.x.svc.cluster.local.", RecordType::A);
    two.add_query(Query::query(
        Name::from_ascii("db.x.svc.cluster.local.").unwrap(),
        RecordType::A,
    ));
    assert_eq!(answer(&two, cluster).response_code(), ResponseCode::FormErr);
    let mut update = query("web.x.svc.cluster.local.", RecordType::A);
    update.set_op_code(OpCode::Update);
    assert_eq!(
        answer(&update, cluster).response_code(),
        ResponseCode::NotImp
    );
}

#[test]
fn an_alias_to_a_cluster_name_is_followed_to_its_address_and_a_loop_ends() {
    let response = answer(&query("alias.x.svc.cluster.local.", RecordType::A), cluster);
    assert_eq!(response.response_code(), ResponseCode::NoError);
    assert!(matches!(response.answers()[0].data(), RData::CNAME(_)));
    assert_eq!(
        response.answers()[1].name().to_ascii(),
        "web.x.svc.cluster.local"
    );
    assert_eq!(addresses(&response), [Ipv4Addr::new(10, 96, 0, 20)]);

    let looped = answer(&query("loop.x.svc.cluster.local.", RecordType::A), cluster);
    assert_eq!(looped.answers().len(), MAX_ALIASES);
}
