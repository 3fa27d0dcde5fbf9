//! The layer around a real server on a real unix socket.

use super::*;
use crate::api::policy::PolicyService;
use crate::api::test_socket::Running;
use crate::reconcile::snapshot::SharedSnapshot;
use weir_agent_api::v1;

#[test]
fn labels_are_methods_of_the_api_only() {
    assert_eq!(
        method_label("/weir.agent.v1.Policy/GetPolicy"),
        "weir.agent.v1.Policy/GetPolicy"
    );
    assert_eq!(method_label("/grpc.health.v1.Health/Check"), "other");
    assert_eq!(method_label("/weir.agent.v1.Policy"), "other");
    assert_eq!(method_label("/"), "other");
}

#[tokio::test]
async fn every_answered_call_is_observed_under_its_method() {
    let registry = Registry::new();
    let layer = ApiMetricsLayer::new(&registry);
    let server = Running::start(
        "api-metrics",
        tonic::transport::Server::builder()
            .layer(layer.clone())
            .add_service(v1::policy_server::PolicyServer::new(PolicyService::new(
                SharedSnapshot::default(),
            ))),
    );
    let mut client = weir_agent_api::connect_policy(&server.socket.0)
        .await
        .unwrap();
    for _ in 0..2 {
        client.get_policy(v1::GetPolicyRequest {}).await.unwrap();
    }
    // A failing call is an answer too.
    client.trace(v1::TraceRequest::default()).await.unwrap_err();

    let count = |method: &str| {
        layer
            .histogram()
            .with_label_values(&[method])
            .get_sample_count()
    };
    assert_eq!(count("weir.agent.v1.Policy/GetPolicy"), 2);
    assert_eq!(count("weir.agent.v1.Policy/Trace"), 1);
    let text = {
        let mut out = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &registry.gather(),
            &mut out,
        )
        .unwrap();
        String::from_utf8(out).unwrap()
    };
    assert!(text.contains(
        "weir_api_request_duration_seconds_count{method=\"weir.agent.v1.Policy/GetPolicy\"} 2"
    ));
    server.stop().await;
}
