//! Registration, node status and lease against a real kube-apiserver v1.36 (with
//! NodeRestriction and the Node authorizer), as the node's own identity
//! `system:node:localhost`. Needs the control plane binaries: see node-core's
//! `testing::control_plane` (run with `--features apiserver-tests`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Taint};
use kube::Api;
use node_core::testing::control_plane::ControlPlane;
use node_status::lease::{NODE_LEASE_NAMESPACE, NodeLease};
use node_status::registration::{CONTROLLER_MANAGED_ATTACH_DETACH, NodeRegistration, register};
use node_status::status::{MachineInfo, NodeStatusInputs};
use node_status::updater::{NodeStatusSource, NodeStatusUpdater};

const NODE: &str = "localhost";

async fn control_plane() -> ControlPlane {
    ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("cannot start the control plane: {e:#}"))
}

async fn node_client(cp: &ControlPlane) -> kube::Client {
    let kubeconfig = cp
        .kubeconfig_for_client_cert(&format!("system:node:{NODE}"), &["system:nodes"])
        .expect("node kubeconfig");
    ControlPlane::client_for_kubeconfig(&kubeconfig)
        .await
        .expect("node client")
}

fn registration() -> NodeRegistration {
    NodeRegistration {
        name: NODE.into(),
        hostname: NODE.into(),
        labels: [("node.kubernetes.io/pool".to_string(), "edge".to_string())].into(),
        taints: vec![Taint {
            key: "dedicated".into(),
            value: Some("edge".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        }],
        provider_id: Some("edge://localhost".into()),
        external_cloud_provider: false,
        controller_attach_detach: true,
    }
}

/// Inputs the test changes between updates.
struct Source(Mutex<NodeStatusInputs>);

#[async_trait]
impl NodeStatusSource for Source {
    async fn inputs(&self) -> NodeStatusInputs {
        self.0.lock().unwrap().clone()
    }
}

fn inputs() -> NodeStatusInputs {
    NodeStatusInputs {
        hostname: NODE.into(),
        node_ips: vec!["10.0.0.5".parse().unwrap()],
        machine: MachineInfo {
            cpu_millis: 2000,
            memory_bytes: 8 << 30,
            ephemeral_storage_bytes: Some(100 << 30),
            ..Default::default()
        },
        max_pods: 110,
        container_runtime_version: "containerd://1.7.24".into(),
        kubelet_version: "v1.36.0+node-agent.0.1.0".into(),
        kubelet_port: 10250,
        max_images: 50,
        ..Default::default()
    }
}

fn status_patches(cp: &ControlPlane) -> usize {
    cp.audit_events()
        .expect("audit log")
        .iter()
        .filter(|e| {
            e.user == format!("system:node:{NODE}")
                && e.verb == "patch"
                && e.resource.as_deref() == Some("nodes")
                && e.subresource.as_deref() == Some("status")
        })
        .count()
}

#[tokio::test]
async fn the_node_registers_reports_its_status_when_it_changes_and_keeps_its_lease() {
    let cp = control_plane().await;
    let client = node_client(&cp).await;

    // Registration, as the node's own identity.
    let node = register(&client, &registration()).await;
    let labels = node.metadata.labels.clone().unwrap();
    assert_eq!(labels["kubernetes.io/hostname"], NODE);
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["kubernetes.io/arch"], "amd64");
    assert_eq!(labels["beta.kubernetes.io/arch"], "amd64");
    assert_eq!(labels["node.kubernetes.io/pool"], "edge");
    let spec = node.spec.clone().unwrap();
    assert_eq!(spec.provider_id.as_deref(), Some("edge://localhost"));
    assert_eq!(spec.taints.unwrap()[0].key, "dedicated");
    assert_eq!(
        node.metadata.annotations.unwrap()[CONTROLLER_MANAGED_ATTACH_DETACH],
        "true"
    );

    // Registered again after someone dropped a label the kubelet owns: reconciled.
    let admin: Api<Node> = Api::all(cp.admin_client());
    let mut edited = admin.get(NODE).await.unwrap();
    edited
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .remove("kubernetes.io/os");
    admin
        .replace(NODE, &Default::default(), &edited)
        .await
        .unwrap();
    let again = register(&client, &registration()).await;
    assert_eq!(
        again.metadata.labels.as_ref().unwrap()["kubernetes.io/os"],
        "linux"
    );

    // Node status: sent at first, not again while nothing changed, sent when it changes.
    let source = Arc::new(Source(Mutex::new(inputs())));
    let mut updater = NodeStatusUpdater::new(
        client.clone(),
        NODE,
        source.clone(),
        Duration::from_secs(10),
        Duration::from_secs(300),
    )
    .with_registered(&again);
    assert!(updater.update().await.unwrap(), "the first status is sent");
    let stored = admin.get(NODE).await.unwrap().status.unwrap();
    let ready = stored
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");
    assert_eq!(ready.reason.as_deref(), Some("KubeletReady"));
    assert_eq!(stored.capacity.unwrap()["pods"].0, "110");
    assert_eq!(
        stored.node_info.unwrap().kubelet_version,
        "v1.36.0+node-agent.0.1.0"
    );
    for _ in 0..3 {
        assert!(
            !updater.update().await.unwrap(),
            "nothing changed: no patch"
        );
    }
    source.0.lock().unwrap().not_ready = vec!["container runtime is down".into()];
    assert!(updater.update().await.unwrap(), "a change is sent at once");
    let ready = admin
        .get(NODE)
        .await
        .unwrap()
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "False");
    assert_eq!(ready.message.as_deref(), Some("container runtime is down"));
    // The first report sends the addresses (a merge patch, replacing them whole) and the
    // rest (a strategic-merge patch); then one patch per change, none while unchanged.
    assert_eq!(
        status_patches(&cp),
        3,
        "one patch per change, none while unchanged"
    );

    // A condition another component owns survives the kubelet's patches.
    let mut with_network = admin.get(NODE).await.unwrap();
    with_network
        .status
        .as_mut()
        .unwrap()
        .conditions
        .as_mut()
        .unwrap()
        .push(k8s_openapi::api::core::v1::NodeCondition {
            type_: "NetworkUnavailable".into(),
            status: "False".into(),
            reason: Some("RouteCreated".into()),
            ..Default::default()
        });
    admin
        .replace_status(NODE, &Default::default(), &with_network)
        .await
        .unwrap();
    source.0.lock().unwrap().not_ready.clear();
    assert!(updater.update().await.unwrap());
    let conditions = admin
        .get(NODE)
        .await
        .unwrap()
        .status
        .unwrap()
        .conditions
        .unwrap();
    assert!(conditions.iter().any(|c| c.type_ == "NetworkUnavailable"));

    // The lease: created owned by the Node, renewed every quarter of its duration.
    let lease = NodeLease::new(client.clone(), NODE, 4);
    assert_eq!(lease.renew_interval(), Duration::from_secs(1));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(lease.run(async {
        let _ = stop_rx.await;
    }));
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let _ = stop_tx.send(());
    task.await.unwrap();
    let leases: Api<Lease> = Api::namespaced(cp.admin_client(), NODE_LEASE_NAMESPACE);
    let stored = leases.get(NODE).await.unwrap();
    let spec = stored.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some(NODE));
    assert_eq!(spec.lease_duration_seconds, Some(4));
    let owner = &stored.metadata.owner_references.unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Node", NODE));
    assert_eq!(Some(owner.uid.clone()), again.metadata.uid);
    let renewals = cp
        .audit_events()
        .unwrap()
        .iter()
        .filter(|e| {
            e.user == format!("system:node:{NODE}")
                && e.resource.as_deref() == Some("leases")
                && e.verb == "update"
        })
        .count();
    assert!(
        (2..=4).contains(&renewals),
        "{renewals} renewals in 3.5 s at 1 s"
    );
    cp.stop().await;
}

#[tokio::test]
async fn node_restriction_keeps_the_node_to_itself() {
    let cp = control_plane().await;
    let client = node_client(&cp).await;
    let mut other = registration();
    other.name = "other".into();
    let nodes: Api<Node> = Api::all(client.clone());
    let err = node_status::registration::try_register(&nodes, &other)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("register node other"), "{err}");
    assert!(format!("{err:?}").contains("403"), "{err:?}");
    // Its own node is fine.
    node_status::registration::try_register(&nodes, &registration())
        .await
        .unwrap();
    cp.stop().await;
}

#[tokio::test]
async fn tls_bootstrap_gets_a_node_certificate_from_a_bootstrap_token() {
    use node_status::certificate::{
        CURRENT_CLIENT_PEM, PENDING_KEY, bootstrap_client_certificate, kubeconfig_still_valid,
    };
    let cp = ControlPlane::builder()
        .controller_manager(true)
        .start()
        .await
        .unwrap_or_else(|e| panic!("cannot start the control plane: {e:#}"));
    let (_token, bootstrap) = cp.create_bootstrap_token().await.expect("bootstrap token");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubelet.conf");
    let cert_dir = dir.path().join("pki");
    assert!(!kubeconfig_still_valid(&kubeconfig));

    let requested = bootstrap_client_certificate(
        &kubeconfig,
        &bootstrap,
        &cert_dir,
        NODE,
        "kubelet/test",
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|e| panic!("bootstrap: {e}"));
    assert!(requested);
    let current = cert_dir.join(CURRENT_CLIENT_PEM);
    let target = std::fs::read_link(&current).expect("kubelet-client-current.pem is a link");
    let name = target.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("kubelet-client-") && name.ends_with(".pem") && name != CURRENT_CLIENT_PEM,
        "{name}"
    );
    let pem = std::fs::read_to_string(&current).unwrap();
    assert!(pem.contains("BEGIN CERTIFICATE") && pem.contains("PRIVATE KEY"));
    assert!(
        !cert_dir.join(PENDING_KEY).exists(),
        "the pending key is removed"
    );
    assert!(kubeconfig_still_valid(&kubeconfig));

    // The written kubeconfig is the node's identity: it registers as system:node:localhost.
    let client = node_status::client::client_from_kubeconfig(&kubeconfig, "kubelet/test")
        .await
        .unwrap();
    let node = register(&client, &registration()).await;
    assert_eq!(node.metadata.name.as_deref(), Some(NODE));
    assert!(cp.audit_events().unwrap().iter().any(|e| {
        e.user == format!("system:node:{NODE}")
            && e.verb == "create"
            && e.resource.as_deref() == Some("nodes")
    }));

    // A valid kubeconfig needs no new certificate.
    let again = bootstrap_client_certificate(
        &kubeconfig,
        &bootstrap,
        &cert_dir,
        NODE,
        "kubelet/test",
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert!(!again);

    // A bootstrap kubeconfig that does not exist is an error naming it.
    std::fs::remove_file(&kubeconfig).unwrap();
    let missing = dir.path().join("no-bootstrap.conf");
    let err = bootstrap_client_certificate(
        &kubeconfig,
        &missing,
        &cert_dir,
        NODE,
        "kubelet/test",
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("no-bootstrap.conf"), "{err}");
    cp.stop().await;
}

/// Another component (the node lifecycle controller) marks the node's conditions Unknown:
/// the kubelet notices through its watch of the Node and posts its status again at once,
/// although its own status did not change.
#[tokio::test]
async fn conditions_changed_by_others_are_put_right() {
    let cp = control_plane().await;
    let client = node_client(&cp).await;
    let node = register(&client, &registration()).await;
    let source = Arc::new(Source(Mutex::new(inputs())));
    let updater = NodeStatusUpdater::new(
        client.clone(),
        NODE,
        source,
        Duration::from_secs(1),
        Duration::from_secs(300),
    )
    .with_registered(&node);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(updater.run(async {
        let _ = stop_rx.await;
    }));
    let admin: Api<Node> = Api::all(cp.admin_client());
    let ready_status = |node: &Node| {
        node.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.clone())
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while ready_status(&admin.get(NODE).await.unwrap()).as_deref() != Some("True") {
        assert!(tokio::time::Instant::now() < deadline, "never Ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let patches = status_patches(&cp);
    // As the node lifecycle controller does when the lease runs out.
    let mut unknown = admin.get(NODE).await.unwrap();
    for c in unknown
        .status
        .as_mut()
        .unwrap()
        .conditions
        .as_mut()
        .unwrap()
    {
        c.status = "Unknown".into();
        c.reason = Some("NodeStatusUnknown".into());
        c.message = Some("Kubelet stopped posting node status.".into());
    }
    admin
        .replace_status(NODE, &Default::default(), &unknown)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ready_status(&admin.get(NODE).await.unwrap()).as_deref() != Some("True") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the kubelet did not put its conditions right in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status_patches(&cp), patches + 1, "one patch puts it right");
    let _ = stop_tx.send(());
    task.await.unwrap();
    cp.stop().await;
}

/// Certificates that last a minute: the node rotates its client certificate with its own
/// credentials before it expires, and its client keeps working past the first certificate's
/// expiry without being rebuilt by its users.
#[tokio::test]
async fn the_client_certificate_rotates_without_a_restart() {
    use node_status::certificate::{CURRENT_CLIENT_PEM, bootstrap_client_certificate};
    use node_status::rotation::{CertificateRotation, RotatingClient, certificate_validity};
    let cp = ControlPlane::builder()
        .controller_manager(true)
        .cluster_signing_duration(Duration::from_secs(60))
        .start()
        .await
        .unwrap_or_else(|e| panic!("cannot start the control plane: {e:#}"));
    let (_token, bootstrap) = cp.create_bootstrap_token().await.expect("bootstrap token");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubelet.conf");
    let cert_dir = dir.path().join("pki");
    bootstrap_client_certificate(
        &kubeconfig,
        &bootstrap,
        &cert_dir,
        NODE,
        "kubelet/test",
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|e| panic!("bootstrap: {e}"));
    let current = cert_dir.join(CURRENT_CLIENT_PEM);
    let first = std::fs::read_link(&current).unwrap();
    let (_, first_expiry) =
        certificate_validity(&std::fs::read_to_string(&current).unwrap()).unwrap();

    let config = node_status::client::config_from_kubeconfig(&kubeconfig, "kubelet/test")
        .await
        .unwrap();
    let rotating = RotatingClient::new(config).unwrap();
    let client = rotating.client();
    register(&client, &registration()).await;
    let lease = NodeLease::new(client.clone(), NODE, 4);
    let lease_task = tokio::spawn(lease.run(std::future::pending()));
    let rotation_task = tokio::spawn(CertificateRotation::new(rotating, &cert_dir, NODE).run());

    // Past the first certificate's expiry, with a margin.
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    tokio::time::sleep(Duration::from_secs(
        u64::try_from(first_expiry - now + 15).unwrap_or(15),
    ))
    .await;
    let renewed_after_expiry = Api::<Lease>::namespaced(cp.admin_client(), NODE_LEASE_NAMESPACE)
        .get(NODE)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.renew_time)
        .is_some_and(|t| t.0.as_second() > first_expiry + 5);
    lease_task.abort();
    rotation_task.abort();
    let events = cp.audit_events().unwrap();
    let node_user = format!("system:node:{NODE}");
    assert!(
        events.iter().any(|e| e.user == node_user
            && e.verb == "create"
            && e.resource.as_deref() == Some("certificatesigningrequests")),
        "the node asked for its new certificate itself"
    );
    assert_ne!(
        std::fs::read_link(&current).unwrap(),
        first,
        "a new certificate is current"
    );
    assert!(
        renewed_after_expiry,
        "the lease was renewed after the first certificate expired"
    );
    let refused = events
        .iter()
        .filter(|e| e.code == Some(401) && e.received.is_some_and(|t| t.as_second() > first_expiry))
        .count();
    assert_eq!(refused, 0, "no request refused for an expired certificate");
    cp.stop().await;
}

/// kubeAPIQPS / kubeAPIBurst hold the client's requests to the rate.
#[tokio::test]
async fn the_client_keeps_to_kube_api_qps() {
    use node_status::rotation::RotatingClient;
    let cp = control_plane().await;
    let kubeconfig = cp
        .kubeconfig_for_client_cert(&format!("system:node:{NODE}"), &["system:nodes"])
        .unwrap();
    let config = node_status::client::config_from_kubeconfig(&kubeconfig, "kubelet/test")
        .await
        .unwrap();
    let timed = |client: kube::Client| async move {
        let nodes: Api<Node> = Api::all(client);
        let t = tokio::time::Instant::now();
        for _ in 0..7 {
            let _ = nodes.get_opt(NODE).await.unwrap();
        }
        t.elapsed()
    };
    let unlimited = timed(RotatingClient::new(config.clone()).unwrap().client()).await;
    // A burst of 2 then 5/s: 7 requests need at least a second.
    let limited = timed(
        RotatingClient::new(config)
            .unwrap()
            .with_rate_limit(5, 2)
            .client(),
    )
    .await;
    assert!(limited >= Duration::from_millis(990), "{limited:?}");
    assert!(unlimited < limited, "{unlimited:?} vs {limited:?}");
    cp.stop().await;
}

/// A dual-stack node: both InternalIP addresses are stored, and a changed address replaces
/// the old one rather than merging with it (addresses are keyed by type in strategic merge).
#[tokio::test]
async fn dual_stack_addresses_are_stored_and_replaced_whole() {
    let cp = control_plane().await;
    let client = node_client(&cp).await;
    let node = register(&client, &registration()).await;
    let source = Arc::new(Source(Mutex::new(inputs())));
    source.0.lock().unwrap().node_ips =
        vec!["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()];
    let mut updater = NodeStatusUpdater::new(
        client.clone(),
        NODE,
        source.clone(),
        Duration::from_secs(10),
        Duration::from_secs(300),
    )
    .with_registered(&node);
    updater.update().await.unwrap();
    let admin: Api<Node> = Api::all(cp.admin_client());
    let addresses = |node: Node| {
        node.status
            .unwrap()
            .addresses
            .unwrap()
            .into_iter()
            .map(|a| format!("{}={}", a.type_, a.address))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        addresses(admin.get(NODE).await.unwrap()),
        [
            "InternalIP=10.0.0.5",
            "InternalIP=fd00::5",
            "Hostname=localhost"
        ]
    );
    source.0.lock().unwrap().node_ips = vec!["10.0.0.6".parse().unwrap()];
    assert!(updater.update().await.unwrap());
    assert_eq!(
        addresses(admin.get(NODE).await.unwrap()),
        ["InternalIP=10.0.0.6", "Hostname=localhost"]
    );
    cp.stop().await;
}
