use std::collections::{BTreeMap, BTreeSet};

use super::{grants, unused, usage, Grant};

const ROLES: &str = "\
apiVersion: v1
kind: ServiceAccount
metadata: {name: a, namespace: weir-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: a}
rules:
- apiGroups: ['']
  resources: [pods, services/status]
  verbs: [list, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: a}
subjects: [{kind: ServiceAccount, name: a, namespace: weir-system}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: lease, namespace: weir-system}
rules:
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: lease, namespace: weir-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: lease}
subjects: [{kind: ServiceAccount, name: a}]
";

const USER: &str = "system:serviceaccount:weir-system:a";

fn event(verb: &str, group: &str, resource: &str, sub: Option<&str>, code: u16) -> String {
    let sub = sub
        .map(|s| format!(",\"subresource\":\"{s}\""))
        .unwrap_or_default();
    format!(
        "{{\"verb\":\"{verb}\",\"stage\":\"ResponseComplete\",\"user\":{{\"username\":\"{USER}\"}},\"requestURI\":\"/x\",\
         \"objectRef\":{{\"resource\":\"{resource}\",\"apiGroup\":\"{group}\"{sub}}},\
         \"responseStatus\":{{\"code\":{code}}}}}"
    )
}

#[test]
fn bindings_give_their_subjects_every_rule_of_the_role() {
    let g = grants(&[ROLES]).unwrap();
    let set = &g[USER];
    assert_eq!(set.len(), 5, "{set:?}");
    assert!(set.contains(&Grant::new("", "services/status", "patch")));
    // A RoleBinding's subject without a namespace is in the binding's.
    assert!(set.contains(&Grant::new("coordination.k8s.io", "leases", "get")));
}

#[test]
fn a_wildcard_or_a_missing_role_is_refused() {
    let wild = ROLES.replace("verbs: [list, patch]", "verbs: ['*']");
    assert!(grants(&[&wild]).is_err());
    let dangling = ROLES.replace("kind: ClusterRole, name: a}", "kind: ClusterRole, name: b}");
    assert!(grants(&[&dangling]).is_err());
}

#[test]
fn usage_and_what_is_left_unused() {
    let log = [
        event("list", "", "pods", None, 200),
        event("patch", "", "services", Some("status"), 200),
        // Denied: not a use, a finding.
        event("delete", "", "pods", None, 403),
        "{\"verb\":\"get\",\"stage\":\"ResponseComplete\",\"user\":{\"username\":\"x\"},\"requestURI\":\"/version\"}".into(),
        // A watch still open: received only.
        event("watch", "", "pods", None, 0).replace("ResponseComplete", "RequestReceived"),
        // Another request only received: not counted until answered.
        event("delete", "", "services", Some("status"), 0).replace("ResponseComplete", "RequestReceived"),
    ]
    .join("\n");
    let usage = usage(&log).unwrap();
    assert_eq!(usage.denied[USER].len(), 1);
    let g = grants(&[ROLES]).unwrap();
    let left = unused(&g, &usage.used, &BTreeMap::new());
    let names: Vec<String> = left[USER].iter().map(|g| g.to_string()).collect();
    assert_eq!(
        names,
        [
            "patch core/pods",
            "list core/services/status",
            "get coordination.k8s.io/leases"
        ]
    );
    assert!(usage.used[USER].contains(&Grant::new("", "pods", "watch")));
    assert!(
        !usage.used[USER].contains(&Grant::new("", "services/status", "delete")),
        "a request only received is not a use"
    );
    let excused = BTreeMap::from([(
        USER.to_string(),
        BTreeSet::from([
            Grant::new("coordination.k8s.io", "leases", "get"),
            Grant::new("", "pods", "patch"),
            Grant::new("", "services/status", "list"),
        ]),
    )]);
    assert!(unused(&g, &usage.used, &excused).is_empty());
}

#[test]
fn an_apply_that_created_its_object_used_create() {
    let log = event("patch", "weir.io", "weirnodes", None, 201);
    let used = usage(&log).unwrap().used;
    assert!(used[USER].contains(&Grant::new("weir.io", "weirnodes", "create")));
    assert!(used[USER].contains(&Grant::new("weir.io", "weirnodes", "patch")));
}
