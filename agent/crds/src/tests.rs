use kube::Resource;

use super::*;

#[test]
fn every_kind_serves_the_one_api_version() {
    assert_eq!(format!("{GROUP}/{VERSION}"), API_VERSION);
    for api_version in [
        WeirNetworkPolicy::api_version(&()),
        WeirClusterwideNetworkPolicy::api_version(&()),
        WeirIdentity::api_version(&()),
        WeirEndpoint::api_version(&()),
        WeirNode::api_version(&()),
    ] {
        assert_eq!(api_version, API_VERSION);
    }
}
