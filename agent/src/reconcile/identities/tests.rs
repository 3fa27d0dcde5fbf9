use std::net::Ipv4Addr;

use weir_identity::MemoryStore;
use weir_types::NamespacedName;

use super::*;
use crate::cluster::manifest;

fn endpoint(id: u16, name: &str) -> Endpoint {
    Endpoint {
        id,
        attachment: AttachmentKey {
            container_id: format!("c{id}"),
            ifname: "eth0".into(),
        },
        pod: NamespacedName::new("default", name),
        netns: format!("/run/netns/{name}"),
        host_ifname: format!("lxc{id}"),
        host_ifindex: 40 + u32::from(id),
        ipv4: Ipv4Addr::new(10, 244, 1, id as u8),
        ipv6: None,
        mac: "02:00:00:00:00:01".into(),
        netns_cookie: 0,
        port_mappings: Vec::new(),
    }
}

/// Pods `default/a` and `default/b` labelled `app: <app>` each.
fn cluster(a_app: &str, b_app: &str) -> ClusterManifests {
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: a, namespace: default, labels: {{app: {a_app}}}}}\n\
         ---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {{name: b, namespace: default, labels: {{app: {b_app}}}}}\n"
    );
    let mut cluster = ClusterManifests::default();
    for object in manifest::parse(&yaml).unwrap() {
        cluster.add(object);
    }
    cluster
}

fn sync_with(store: &MemoryStore) -> IdentitySync {
    IdentitySync::new(
        "n1".into(),
        IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1)),
        Arc::new(store.clone()),
        LabelFilter::default(),
    )
}

#[tokio::test]
async fn a_refused_label_set_leaves_its_endpoint_without_identity_and_the_others_go_on() {
    let store = MemoryStore::new("n1");
    let mut sync = sync_with(&store);
    let endpoints = [endpoint(1, "a"), endpoint(2, "b")];
    let cluster = cluster("refused", "fine");
    let refused = sync.labels_of(&cluster, &endpoints[0]);
    store.refuse(refused, "securityLabels: Invalid value");

    sync.sync(&cluster, &endpoints).await.unwrap();
    assert_eq!(sync.of(&endpoints[0].attachment), None);
    assert!(sync.of(&endpoints[1].attachment).is_some());
    // Not offered again within REFUSED_RETRY: nothing changes, no error.
    sync.sync(&cluster, &endpoints).await.unwrap();
    assert_eq!(sync.of(&endpoints[0].attachment), None);
    assert!(sync
        .refused
        .contains_key(&sync.labels_of(&cluster, &endpoints[0])));
}

#[tokio::test]
async fn an_endpoint_relabelled_to_a_refused_set_releases_its_old_identity() {
    let store = MemoryStore::new("n1");
    let mut sync = sync_with(&store);
    let endpoints = [endpoint(1, "a"), endpoint(2, "b")];
    let before = cluster("a", "b");
    sync.sync(&before, &endpoints).await.unwrap();
    let old = sync.of(&endpoints[0].attachment).expect("a's identity");
    assert_eq!(
        store.unreferenced_identities().await.unwrap(),
        Vec::<u32>::new()
    );

    let after = cluster("refused", "b");
    store.refuse(sync.labels_of(&after, &endpoints[0]), "refused");
    sync.sync(&after, &endpoints).await.unwrap();
    assert_eq!(sync.of(&endpoints[0].attachment), None);
    assert_eq!(store.unreferenced_identities().await.unwrap(), vec![old]);
}
