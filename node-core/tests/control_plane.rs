//! The control plane harness against the real API: node registration under NodeRestriction,
//! TLS bootstrap with a bootstrap token and CSR auto-approval, and the audit log.
//!
//! Needs etcd and the upstream kube-apiserver / kube-controller-manager binaries (see
//! `node_core::testing::control_plane`); without them every test fails with the harness's
//! message saying what is missing and how to provide it.
//!
//! Run: `cargo test -p node-core --features control-plane --test control_plane`.

use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use node_core::testing::control_plane::{
    ControlPlane, ControlPlaneBuilder, ControlPlaneError, Credentials,
};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

/// The tests start a control plane each; on a 2-core machine two starting at once take longer
/// than one after the other.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn start(builder: ControlPlaneBuilder) -> ControlPlane {
    let started = Instant::now();
    let cp = builder
        .start()
        .await
        .unwrap_or_else(|e| panic!("the control plane harness could not start: {e}"));
    eprintln!(
        "control plane at {} ready in {:?}",
        cp.apiserver_url(),
        started.elapsed()
    );
    cp
}

fn node(name: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("kubernetes.io/hostname".to_string(), name.to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn node_client(cp: &ControlPlane) -> kube::Client {
    let path = cp
        .kubeconfig_for_client_cert("system:node:localhost", &["system:nodes"])
        .expect("node kubeconfig");
    let kubeconfig = Kubeconfig::read_from(&path).expect("reading the node kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("loading the node kubeconfig");
    kube::Client::try_from(config).expect("node client")
}

#[tokio::test]
async fn node_registers_itself_and_node_restriction_refuses_other_nodes() {
    let _serial = SERIAL.lock().await;
    let cp = start(ControlPlane::builder()).await;

    let namespaces = Api::<Namespace>::all(cp.admin_client())
        .list(&ListParams::default())
        .await
        .expect("listing namespaces as admin");
    let names: Vec<String> = namespaces
        .items
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    assert!(names.iter().any(|n| n == "kube-system"), "{names:?}");

    let nodes: Api<Node> = Api::all(node_client(&cp).await);
    let created = nodes
        .create(&PostParams::default(), &node("localhost"))
        .await
        .expect("the node creates its own Node");
    assert_eq!(created.metadata.name.as_deref(), Some("localhost"));
    assert!(created.metadata.uid.is_some());

    match nodes.create(&PostParams::default(), &node("other")).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(status.message.contains("other"), "{status:?}");
        }
        other => panic!("NodeRestriction let system:node:localhost create node other: {other:?}"),
    }
    cp.stop().await;
}

#[tokio::test]
async fn bootstrap_token_csr_is_auto_approved_and_signed() {
    let _serial = SERIAL.lock().await;
    let cp = start(
        ControlPlane::builder()
            .controller_manager(true)
            .scheduler(true)
            .cluster_signing_duration(Duration::from_secs(600)),
    )
    .await;

    let (token, kubeconfig) = cp.create_bootstrap_token().await.expect("bootstrap token");
    assert_eq!(token.len(), 23, "{token}");
    let bootstrap = ControlPlane::client_for_kubeconfig(&kubeconfig)
        .await
        .expect("bootstrap client");

    // The kubelet's TLS bootstrap: a fresh key, a CSR for system:node:localhost.
    let key = KeyPair::generate().expect("node key");
    let mut params = CertificateParams::default();
    let mut subject = DistinguishedName::new();
    subject.push(DnType::OrganizationName, "system:nodes");
    subject.push(DnType::CommonName, "system:node:localhost");
    params.distinguished_name = subject;
    let request = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .expect("CSR");
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some("node-csr-".into()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request.into_bytes()),
            signer_name: "kubernetes.io/kube-apiserver-client-kubelet".into(),
            usages: Some(vec!["digital signature".into(), "client auth".into()]),
            ..Default::default()
        },
        status: None,
    };
    let csrs: Api<CertificateSigningRequest> = Api::all(bootstrap);
    let created = csrs
        .create(&PostParams::default(), &csr)
        .await
        .expect("the bootstrap token creates a CSR");
    let name = created.metadata.name.expect("generated name");

    let deadline = Instant::now() + Duration::from_secs(30);
    let (conditions, certificate) = loop {
        let current = csrs
            .get(&name)
            .await
            .expect("the bootstrap token reads its CSR");
        let status = current.status.unwrap_or_default();
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            break (status.conditions.unwrap_or_default(), cert);
        }
        assert!(
            Instant::now() < deadline,
            "CSR {name} not signed in 30s: {:?}; controller-manager log ends with:\n{}",
            status.conditions,
            tail(&cp.log_path("kube-controller-manager"))
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        conditions.iter().any(|c| c.type_ == "Approved"
            && c.status == "True"
            && c.reason.as_deref() == Some("AutoApproved")),
        "{conditions:?}"
    );
    let certificate = String::from_utf8(certificate.0).expect("PEM");
    assert!(
        certificate.starts_with("-----BEGIN CERTIFICATE-----"),
        "{certificate}"
    );

    // The signed certificate is the node's identity.
    let dir = cp.dir().join("bootstrapped");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("kubelet.crt"), &certificate).unwrap();
    std::fs::write(dir.join("kubelet.key"), key.serialize_pem()).unwrap();
    let kubeconfig = cp
        .write_kubeconfig(
            "system:node:localhost",
            &Credentials::ClientCertificate {
                cert_path: dir.join("kubelet.crt"),
                key_path: dir.join("kubelet.key"),
            },
        )
        .expect("kubeconfig of the signed certificate");
    let nodes: Api<Node> = Api::all(
        ControlPlane::client_for_kubeconfig(&kubeconfig)
            .await
            .expect("client of the signed certificate"),
    );
    nodes
        .create(&PostParams::default(), &node("localhost"))
        .await
        .expect("the bootstrapped identity registers its node");
    cp.stop().await;
}

#[tokio::test]
async fn audit_log_shows_the_node_identitys_requests() {
    let _serial = SERIAL.lock().await;
    let cp = start(ControlPlane::builder()).await;
    let nodes: Api<Node> = Api::all(node_client(&cp).await);
    nodes
        .create(&PostParams::default(), &node("localhost"))
        .await
        .expect("create node");
    nodes.get("localhost").await.expect("get node");
    let _ = nodes.create(&PostParams::default(), &node("other")).await;

    let events = cp.audit_events().expect("audit log");
    let mine: Vec<_> = events
        .iter()
        .filter(|e| e.user == "system:node:localhost")
        .collect();
    let summary: Vec<String> = mine
        .iter()
        .map(|e| format!("{} {} {:?} {:?}", e.verb, e.request_uri, e.name, e.code))
        .collect();
    assert!(
        mine.iter()
            .all(|e| e.stage == "ResponseComplete" && e.groups.iter().any(|g| g == "system:nodes")),
        "{summary:?}"
    );
    let find = |verb: &str, name: &str, code: u16| {
        mine.iter().any(|e| {
            e.verb == verb
                && e.resource.as_deref() == Some("nodes")
                && e.name.as_deref() == Some(name)
                && e.code == Some(code)
                && e.received.is_some()
        })
    };
    assert!(find("create", "localhost", 201), "{summary:?}");
    assert!(find("get", "localhost", 200), "{summary:?}");
    assert!(find("create", "other", 403), "{summary:?}");
    // The admin's requests are there too, under their own user.
    assert!(events.iter().any(|e| e.user == "admin"));
    cp.stop().await;
}

fn tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[tokio::test]
async fn a_component_that_cannot_start_fails_start_with_its_log() {
    let _serial = SERIAL.lock().await;
    let err = ControlPlane::builder()
        .apiserver_arg("--no-such-flag=1")
        .start()
        .await
        .expect_err("kube-apiserver refuses an unknown flag");
    let message = err.to_string();
    match err {
        ControlPlaneError::Exited { component, log, .. } => {
            assert_eq!(component, "kube-apiserver", "{message}");
            assert!(
                message.contains("unknown flag: --no-such-flag"),
                "{message}"
            );
            // The directory is kept for its logs; this test has read them.
            let dir = log.parent().expect("log directory");
            assert!(log.exists(), "{message}");
            std::fs::remove_dir_all(dir).unwrap();
        }
        other => panic!("expected kube-apiserver to exit: {other}"),
    }
}
