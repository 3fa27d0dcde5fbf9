//! weir-operator in the lab, and the RBAC of deploy/ as the lab uses it.
//!
//! A 2-node lab on its control plane with the agents in CRD mode (the
//! default of an installation): two operator replicas share one Lease, the
//! leader gives each Node a pod CIDR (the agents run `--ipam cluster-pool
//! --auto-direct-node-routes`) and collects garbage (an orphan WeirEndpoint,
//! the WeirNode of a deleted Node, an identity no pod uses any more), and
//! weir-relay finds both agents from the WeirNodes and serves their flows.
//! The API server's audit log then says what the agents', the operator's
//! and the relay's ServiceAccounts asked for, set against what
//! deploy/kubernetes grants them: a refused request or a grant nothing used fails, unless the grant
//! is excused below with the reason the lab cannot exercise it (or, for
//! a grant whose use depends on timing, why).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use weir_lab::probe::{self, Target};
use weir_lab::rbac::{self, Grant};
use weir_lab::testing::TestLab;
use weir_lab::Identities;

const AGENT: &str = "system:serviceaccount:weir-system:weir-agent";
const OPERATOR: &str = "system:serviceaccount:weir-system:weir-operator";
const RELAY: &str = "system:serviceaccount:weir-system:weir-relay";

const WORKLOADS: &str = include_str!("../../examples/lab/workloads.yaml");
const SERVICES: &str = include_str!("../../examples/lab/services.yaml");
const POLICIES: &str = include_str!("../../examples/lab/policies.yaml");

/// Grants the lab cannot exercise, and why.
fn excused() -> BTreeMap<String, BTreeSet<Grant>> {
    let operator = [
        // LB IPAM is off in the lab (its LoadBalancer Services carry
        // their addresses); the operator suite runs it.
        Grant::new("", "services", "list"),
        Grant::new("", "services", "watch"),
        Grant::new("", "services/status", "patch"),
    ];
    let agent = [
        // Deletes its own try when it loses an allocation race (the
        // identity_store suite races eight agents).
        Grant::new("weir.io", "weiridentities", "delete"),
        // Looks up a number the identity watch has not delivered yet.
        Grant::new("weir.io", "weiridentities", "get"),
        // Creates its WeirNode when no operator has (here one always has).
        Grant::new("weir.io", "weirnodes", "create"),
    ];
    BTreeMap::from([
        (OPERATOR.to_string(), operator.into_iter().collect()),
        (AGENT.to_string(), agent.into_iter().collect()),
    ])
}

/// Grants the lab uses or not depending on timing (not checked for
/// staleness), and why.
fn timing_dependent() -> BTreeMap<String, BTreeSet<Grant>> {
    // Waiting for the CRDs to be Established lists them, and watches only
    // if one is not yet (a quick API server has them at the list).
    let operator = [Grant::new(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "watch",
    )];
    BTreeMap::from([(OPERATOR.to_string(), operator.into_iter().collect())])
}

/// The relay's view of the nodes: name and whether it reaches it.
/// What the `grpc.health.v1` service behind `socket` says of Hubble's
/// Observer service name, through the client generated from the upstream
/// protos.
fn health_of(socket: &std::path::Path) -> Result<String, String> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let channel = weir_observer::Target::Unix(socket.to_path_buf())
            .lazy_channel(Duration::from_secs(2))
            .map_err(|e| e.to_string())?;
        let answer = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: "hubble.server.Observer".into(),
            })
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        ServingStatus::try_from(answer.status)
            .map(|s| format!("{s:?}"))
            .map_err(|e| e.to_string())
    })
}

fn relay_nodes(socket: &std::path::Path) -> Result<Vec<(String, bool)>, String> {
    use weir_observer::proto::observer::GetNodesRequest;
    use weir_observer::proto::relay::NodeState;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let target = weir_observer::Target::Unix(socket.to_path_buf());
        let mut client = target
            .connect(Duration::from_secs(2))
            .await
            .map_err(|e| e.to_string())?;
        let nodes = client
            .get_nodes(GetNodesRequest {})
            .await
            .map_err(|e| e.to_string())?
            .into_inner()
            .nodes;
        Ok(nodes
            .into_iter()
            .map(|n| (n.name, n.state == NodeState::NodeConnected as i32))
            .collect())
    })
}

/// Polls `check` every 200 ms for up to `limit`; panics with `what`.
fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    started.elapsed()
}

#[test]
fn the_operator_assigns_pod_cidrs_collects_garbage_and_every_granted_permission_is_used() {
    let mut lab = TestLab::up_on_control_plane(2, Identities::Crd).expect("lab up");
    let cp = lab.control_plane().unwrap().clone();

    // Two replicas, one leader; distinct pod CIDRs the nodes took.
    assert_eq!(cp.operator_pids.len(), 2);
    let holder = cp
        .kubectl(&[
            "get",
            "lease",
            "weir-operator",
            "-n",
            "weir-system",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
        .unwrap();
    assert!(
        holder.starts_with("weir-operator-"),
        "lease holder {holder:?}"
    );
    let cidrs: BTreeSet<String> = lab
        .state()
        .nodes
        .iter()
        .map(|n| n.pod_cidr.clone())
        .collect();
    assert_eq!(cidrs.len(), 2, "{cidrs:?}");

    // Workloads across the nodes reach each other over the routes the
    // agents installed from each other's records.
    lab.apply_yaml(WORKLOADS).unwrap();
    lab.apply_yaml(SERVICES).unwrap();
    lab.apply_yaml(POLICIES).unwrap();
    let pods: Vec<_> = lab.state().pods.clone();
    let nodes: BTreeSet<&str> = pods.iter().map(|p| p.node.as_str()).collect();
    assert_eq!(nodes.len(), 2, "pods on both nodes");
    let endpoints = cp
        .kubectl(&["get", "weirendpoints", "-A", "-o", "name"])
        .unwrap();
    assert_eq!(endpoints.lines().count(), pods.len(), "{endpoints}");
    let pod = |name: &str| pods.iter().find(|p| p.name == name).unwrap().clone();
    let (frontend, cart, ledger) = (pod("frontend"), pod("cart"), pod("ledger"));
    let allowed = probe::probe(&frontend, &ledger, Target::Tcp(80));
    assert!(allowed.connected, "frontend -> ledger: {allowed:?}");
    let denied = probe::probe(&cart, &ledger, Target::Tcp(80));
    assert!(!denied.connected, "cart -> ledger: {denied:?}");

    // A relabelled pod gets a new identity, its WeirEndpoint is updated,
    // and policy still selects it.
    let relabelled = WORKLOADS
        .split("---")
        .find(|doc| doc.contains("name: frontend"))
        .expect("the frontend pod in the examples")
        .replace(
            "labels: {app: frontend, tier: web}",
            "labels: {app: frontend, tier: web, track: canary}",
        );
    let identity_of = |pod: &str| {
        cp.kubectl(&[
            "get",
            "weirendpoint",
            pod,
            "-n",
            "shop",
            "-o",
            "jsonpath={.spec.identity}",
        ])
        .unwrap_or_default()
    };
    let old_identity = identity_of("frontend");
    lab.apply_yaml(&relabelled).unwrap();
    wait_for(
        Duration::from_secs(30),
        "frontend's WeirEndpoint with a new identity",
        || {
            let now = identity_of("frontend");
            !now.is_empty() && now != old_identity
        },
    );
    let allowed = probe::probe(&frontend, &ledger, Target::Tcp(80));
    assert!(
        allowed.connected,
        "relabelled frontend -> ledger: {allowed:?}"
    );

    // The relay found both agents from their WeirNodes and reaches them.
    let relay_socket = cp.relay_socket();
    let mut seen = Vec::new();
    let relayed = wait_for(
        Duration::from_secs(30),
        "the relay reaching n1 and n2",
        || {
            seen = relay_nodes(&relay_socket).unwrap_or_default();
            seen.sort();
            seen == [("n1".to_string(), true), ("n2".to_string(), true)]
        },
    );
    // The standard gRPC health service, as `hubble status` asks it: the
    // relay (peers reached) and every agent (event reader running).
    let mut sockets = vec![relay_socket.clone()];
    for node in ["n1", "n2"] {
        sockets.push(weir_lab::hubble_socket(lab.state().node(node).unwrap()));
    }
    for socket in &sockets {
        assert_eq!(
            health_of(socket).as_deref(),
            Ok("Serving"),
            "health of {}",
            socket.display()
        );
    }

    // GC: an orphan WeirEndpoint goes.
    cp.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: weir.io/v1\nkind: WeirEndpoint\nmetadata:\n  name: orphan\n  namespace: shop\n\
         spec:\n  identity: 70001\n  nodeName: n1\n  addresses: {ipv4: 10.244.250.10}\n",
    )
    .unwrap();
    let orphan = wait_for(
        Duration::from_secs(30),
        "the orphan WeirEndpoint collected",
        || {
            cp.kubectl(&["get", "weirendpoint", "orphan", "-n", "shop"])
                .is_err()
        },
    );

    // A Node that comes and goes: its WeirNode gets a CIDR, then goes.
    cp.register_nodes(&[("n9", "10.77.0.99".parse().unwrap())])
        .unwrap();
    let assigned = wait_for(Duration::from_secs(30), "n9's pod CIDR", || {
        cp.kubectl(&[
            "get",
            "weirnode",
            "n9",
            "-o",
            "jsonpath={.spec.podCIDRs[0]}",
        ])
        .is_ok_and(|c| !c.is_empty() && !cidrs.contains(&c))
    });
    cp.kubectl(&["delete", "node", "n9"]).unwrap();
    wait_for(Duration::from_secs(30), "WeirNode n9 removed", || {
        cp.kubectl(&["get", "weirnode", "n9"]).is_err()
    });

    // An identity no pod uses any more goes after the lab's grace (30 s).
    let identities = || {
        cp.kubectl(&["get", "weiridentities", "-o", "name"])
            .unwrap()
            .lines()
            .count()
    };
    let before = identities();
    let cart = WORKLOADS
        .split("---")
        .find(|doc| doc.contains("name: cart"))
        .expect("the cart pod in the examples");
    lab.delete_yaml(cart).unwrap();
    let identity_gc = wait_for(Duration::from_secs(75), "cart's identity collected", || {
        identities() < before
    });
    // The rest still talk (nothing in use was collected).
    let allowed = probe::probe(&frontend, &ledger, Target::Tcp(80));
    assert!(
        allowed.connected,
        "frontend -> ledger after GC: {allowed:?}"
    );

    eprintln!(
        "figures: relay reaching both agents {:.1} s after the pods were up, orphan \
         WeirEndpoint collected in {:.1} s, a new Node's pod CIDR in {:.1} s, an unused \
         identity collected {:.1} s after its last pod went (grace 30 s)",
        relayed.as_secs_f64(),
        orphan.as_secs_f64(),
        assigned.as_secs_f64(),
        identity_gc.as_secs_f64()
    );

    // What the ServiceAccounts did against what deploy/ grants them.
    let granted = rbac::grants(&[
        include_str!("../../deploy/kubernetes/20-agent-rbac.yaml"),
        include_str!("../../deploy/kubernetes/30-operator-rbac.yaml"),
        include_str!("../../deploy/kubernetes/40-relay.yaml"),
    ])
    .unwrap();
    let log = std::fs::read_to_string(cp.audit_log()).unwrap();
    let usage = rbac::usage(&log).unwrap();
    assert!(
        usage.denied.is_empty(),
        "refused by RBAC: {:#?}",
        usage.denied
    );
    for user in [AGENT, OPERATOR, RELAY] {
        let used: Vec<String> = usage.used[user].iter().map(|g| g.to_string()).collect();
        eprintln!("{user} used: {}", used.join(", "));
    }
    let mut not_required = excused();
    for (user, grants) in timing_dependent() {
        not_required.entry(user).or_default().extend(grants);
    }
    let unused = rbac::unused(&granted, &usage.used, &not_required);
    assert!(
        unused.is_empty(),
        "granted by deploy/ but never used in the lab (drop them, or excuse them with a reason): {unused:#?}"
    );
    // An excuse for a grant that was used is stale.
    for (user, grants) in excused() {
        let used = &usage.used[&user];
        let stale: Vec<String> = grants
            .iter()
            .filter(|g| used.contains(*g))
            .map(|g| g.to_string())
            .collect();
        assert!(stale.is_empty(), "{user}: excused but used: {stale:?}");
    }
}
