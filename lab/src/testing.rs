//! A lab made for one test: unique name, removed on drop (also when the test
//! panics), so suites can run in parallel and leave nothing behind.

use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::{Binaries, Identities, KubeBinaries, Lab, Options, Source};
use weir_agent::cluster::manifest::{self, Object};

pub struct TestLab {
    name: String,
    lab: Option<Lab>,
}

impl TestLab {
    /// A lab on its Kubernetes control plane (kube-apiserver beside its
    /// etcd, agents in Kubernetes mode, objects applied through the API).
    /// A missing control-plane binary fails: it never falls back.
    /// Identities are shared as WeirIdentity objects (CRD mode, an
    /// installation's default).
    pub fn up(nodes: usize) -> Result<TestLab> {
        TestLab::up_on_control_plane(nodes, Identities::Crd)
    }

    /// [`TestLab::up`] dual stack: every pod also has an IPv6 address.
    pub fn up_dual_stack(nodes: usize) -> Result<TestLab> {
        let source = Source::ControlPlane {
            kube: KubeBinaries::locate()?,
            identities: Identities::Crd,
            real_nodes: false,
        };
        TestLab::up_with_options(nodes, source, Options { dual_stack: true })
    }

    /// A dual-stack lab on the manifests directory (no control plane): the
    /// lab derives the EndpointSlices of both families itself.
    pub fn up_dual_stack_on_manifests(nodes: usize) -> Result<TestLab> {
        TestLab::up_with_options(nodes, Source::ManifestDir, Options { dual_stack: true })
    }

    /// [`TestLab::up_kvstore`] dual stack.
    pub fn up_kvstore_dual_stack(nodes: usize) -> Result<TestLab> {
        let source = Source::ControlPlane {
            kube: KubeBinaries::locate()?,
            identities: Identities::Kvstore,
            real_nodes: false,
        };
        TestLab::up_with_options(nodes, source, Options { dual_stack: true })
    }

    /// [`TestLab::up`] with identities, endpoints and nodes shared through
    /// the lab's etcd (kvstore mode), for what concerns the kvstore.
    pub fn up_kvstore(nodes: usize) -> Result<TestLab> {
        TestLab::up_on_control_plane(nodes, Identities::Kvstore)
    }

    /// [`TestLab::up`] with the agents sharing identities as `identities`
    /// says.
    pub fn up_on_control_plane(nodes: usize, identities: Identities) -> Result<TestLab> {
        let kube = KubeBinaries::locate()?;
        TestLab::up_with(
            nodes,
            Source::ControlPlane {
                kube,
                identities,
                real_nodes: false,
            },
        )
    }

    /// [`TestLab::up`] with real nodes: kubelet, containerd and runc on
    /// each (see `weir_lab::real_node`).
    pub fn up_real_nodes(nodes: usize) -> Result<TestLab> {
        let kube = KubeBinaries::locate()?;
        TestLab::up_with(
            nodes,
            Source::ControlPlane {
                kube,
                identities: Identities::Crd,
                real_nodes: true,
            },
        )
    }

    /// A lab without a control plane: the agents read the manifest
    /// directory the lab writes. For what the 1.20 API server cannot carry
    /// (NetworkPolicy `endPort`, which it drops).
    pub fn up_manifest_dir(nodes: usize) -> Result<TestLab> {
        TestLab::up_with(nodes, Source::ManifestDir)
    }

    fn up_with(nodes: usize, source: Source) -> Result<TestLab> {
        TestLab::up_with_options(nodes, source, Options::default())
    }

    fn up_with_options(nodes: usize, source: Source, options: Options) -> Result<TestLab> {
        weir_tests::require_root();
        let name = weir_tests::names::unique();
        let binaries = Binaries::locate()?;
        let lab = Lab::up_with_options(&name, nodes, binaries, source, options, &|_| {})?;
        Ok(TestLab {
            name,
            lab: Some(lab),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Applies YAML, failing the test on error.
    pub fn apply_yaml(&mut self, yaml: &str) -> Result<()> {
        let objects = manifest::parse(yaml)?;
        self.apply(&objects)?;
        Ok(())
    }

    pub fn delete_yaml(&mut self, yaml: &str) -> Result<()> {
        let objects: Vec<Object> = manifest::parse(yaml)?;
        self.delete(&objects)?;
        Ok(())
    }

    /// `kubectl get ARGS -o jsonpath=PATH` as the admin: one field, empty
    /// if the path matches nothing; an error if kubectl fails (no such
    /// object, no control plane).
    pub fn kubectl_field(&self, args: &[&str], path: &str) -> Result<String> {
        let path = format!("jsonpath={path}");
        let mut all: Vec<&str> = vec!["get"];
        all.extend(args);
        all.extend(["-o", &path]);
        self.control_plane()?.kubectl(&all)
    }
}

impl TestLab {
    /// `weir -o json observe` on `node` against its Observer API with
    /// `args`: the flows, one JSON object each. Panics (failing the test)
    /// when the command fails.
    pub fn observe(&self, node: &str, args: &[&str]) -> Vec<serde_json::Value> {
        let server = crate::hubble_socket(self.state().node(node).expect("a lab node"));
        let server = server.to_str().expect("a UTF-8 socket path");
        let out = self
            .weir(
                node,
                &[&["-o", "json", "observe", "--server", server], args].concat(),
            )
            .expect("weir observe runs");
        assert!(
            out.status.success(),
            "weir observe failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).expect("a flow as JSON"))
            .collect()
    }
}

/// Runs `attempt` every 200 ms until `done` holds for its result, which it
/// returns; panics (failing the test) with the last result after `limit`.
pub fn eventually<T: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    mut attempt: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let result = attempt();
        if done(&result) {
            return result;
        }
        assert!(Instant::now() < deadline, "{what}: last result {result:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls `done` every 200 ms until it holds; panics (failing the test)
/// after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Deref for TestLab {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        self.lab.as_ref().expect("lab is up")
    }
}

impl DerefMut for TestLab {
    fn deref_mut(&mut self) -> &mut Lab {
        self.lab.as_mut().expect("lab is up")
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        self.lab.take();
        if let Err(e) = Lab::down(&self.name) {
            eprintln!("lab {} cleanup: {e:#}", self.name);
        }
    }
}

/// Publishes a Pod as the API server holds it before kubelet calls the CNI
/// plugin (labelled `key: value`, bound to `node`), for tests that run the
/// plugin themselves: ADD waits for the endpoint's regeneration, which
/// needs the pod's labels. On the control plane the Pod is created through
/// the API (and its namespace, if it does not exist); in the
/// manifest-directory mode it is written atomically, as the
/// lab writes manifests.
pub fn write_pod_manifest(
    lab: &Lab,
    namespace: &str,
    name: &str,
    label: (&str, &str),
    node: &str,
) -> Result<()> {
    if let Some(access) = lab.api_access() {
        let pod = manifest::Pod {
            namespace: namespace.into(),
            name: name.into(),
            labels: [(label.0.to_string(), label.1.to_string())]
                .into_iter()
                .collect(),
            node: Some(node.into()),
            ports: Vec::new(),
            policy_audit_mode: None,
        };
        // The API server takes pods only in a namespace that exists.
        let namespace = Object::Namespace(manifest::Namespace {
            name: namespace.into(),
            labels: Default::default(),
            policy_audit_mode: None,
        });
        let namespace = crate::server_apply::document(&namespace)?;
        access.run(move |client| async move {
            let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
                kube::Api::all(client.clone());
            if namespaces
                .get_opt(namespace_name(&namespace))
                .await?
                .is_none()
            {
                crate::server_apply::apply(&client, &[namespace]).await?;
            }
            Ok(())
        })?;
        return lab.publish_pod(&access, &pod);
    }
    lab.write_manifest(
        &pod_manifest_path(namespace, name),
        &serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {label.0: label.1}},
            "spec": {"nodeName": node, "containers": [{"name": "c"}]},
        }),
    )
}

/// Applies `yaml` through the API server past the lab's own policy
/// validation, as kubectl would with no admission webhook to stop it: how
/// an invalid policy reaches the agents on the control plane.
pub fn apply_past_validation(lab: &Lab, yaml: &str) -> Result<()> {
    let access = lab
        .api_access()
        .ok_or_else(|| anyhow::anyhow!("lab {} runs no control plane", lab.state().name))?;
    let documents = manifest::parse(yaml)?
        .iter()
        .map(crate::server_apply::document)
        .collect::<Result<Vec<_>>>()?;
    access.run(move |client| async move {
        crate::server_apply::apply(&client, &documents)
            .await
            .map(drop)
    })
}

fn namespace_name(document: &crate::server_apply::Document) -> &str {
    document.value["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
}

/// Removes what [`write_pod_manifest`] wrote; absent is fine.
pub fn remove_pod_manifest(lab: &Lab, namespace: &str, name: &str) -> Result<()> {
    if let Some(access) = lab.api_access() {
        return lab.unpublish_pod(&access, namespace, name);
    }
    lab.remove_manifest(&pod_manifest_path(namespace, name))
}

fn pod_manifest_path(namespace: &str, name: &str) -> String {
    format!("pods/{namespace}/{name}.yaml")
}

/// YAML for a namespace with `labels` as `key: value` pairs.
pub fn namespace_yaml(name: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels: {{ns: {name}}}\n---\n")
}

/// YAML for a pod on `node` serving TCP and UDP on `ports`.
pub fn pod_yaml(namespace: &str, name: &str, node: &str, ports: &[u16]) -> String {
    let mut yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels: {{pod: {name}}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n    ports:\n"
    );
    for port in ports {
        yaml.push_str(&format!(
            "    - {{name: serve-{port}-tcp, containerPort: {port}, protocol: TCP}}\n    - {{name: serve-{port}-udp, containerPort: {port}, protocol: UDP}}\n"
        ));
    }
    yaml.push_str("---\n");
    yaml
}

/// The upstream network-policy e2e cluster: namespaces x, y, z labelled
/// `ns=<name>`, pods a, b, c in each labelled `pod=<name>`, alternating
/// between nodes n1 and n2 (x/a on n1, x/b on n2, ...), serving ports 80 and
/// 81 on TCP and UDP under the upstream port names (`serve-80-tcp`, ...).
pub fn netpol_cluster_yaml() -> String {
    let mut yaml = String::new();
    for ns in ["x", "y", "z"] {
        yaml.push_str(&namespace_yaml(ns));
    }
    let mut index = 0;
    for ns in ["x", "y", "z"] {
        for pod in ["a", "b", "c"] {
            let node = if index % 2 == 0 { "n1" } else { "n2" };
            index += 1;
            yaml.push_str(&pod_yaml(ns, pod, node, &[80, 81]));
        }
    }
    yaml
}
