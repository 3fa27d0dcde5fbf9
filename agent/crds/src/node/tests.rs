use super::*;

#[test]
fn a_node_round_trips() {
    let yaml = r#"
apiVersion: weir.io/v1
kind: WeirNode
metadata: {name: node-1}
spec:
  addresses:
  - {type: InternalIP, ip: 192.168.50.2}
  - {type: ExternalIP, ip: "2001:db8::2"}
  podCIDRs: [10.42.1.0/24, "fd00:42:1::/64"]
status:
  health: {state: Degraded, message: conntrack map full, lastHeartbeat: "2026-12-03T16:00:00Z"}
"#;
    let node: WeirNode = serde_yaml_ng::from_str(yaml).unwrap();
    crate::test_util::assert_stored_as_is::<WeirNode>(yaml);
    assert_eq!(node.spec.pod_cidrs[0].to_string(), "10.42.1.0/24");
    assert_eq!(
        serde_yaml_ng::to_value(&node).unwrap(),
        serde_yaml_ng::from_str::<serde_yaml_ng::Value>(yaml).unwrap()
    );
}
