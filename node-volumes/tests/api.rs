//! The API-backed object source against a real kube-apiserver v1.36 (run with
//! `--features apiserver-tests`; needs the control plane binaries, see node-core's
//! `testing::control_plane`).
#![cfg(feature = "apiserver-tests")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{
    Container, Pod, PodSpec, ServiceAccount, ServiceAccountTokenProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;
use node_core::objects::ObjectSource;
use node_core::testing::control_plane::ControlPlane;
use node_volumes::api::ApiObjectSource;

#[tokio::test]
async fn projected_tokens_are_requested_again_at_80_percent_of_their_lifetime() {
    let cp = ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("cannot start the control plane: {e:#}"));
    let admin = cp.admin_client();
    let post = PostParams::default();
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    let _ = accounts
        .create(
            &post,
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some("default".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let pod = pods
        .create(
            &post,
            &Pod {
                metadata: ObjectMeta {
                    name: Some("holder".into()),
                    ..Default::default()
                },
                spec: Some(PodSpec {
                    node_name: Some("nowhere".into()),
                    automount_service_account_token: Some(false),
                    containers: vec![Container {
                        name: "main".into(),
                        image: Some("busybox".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    // A clock the test moves: seconds added to the real time.
    let skew = Arc::new(AtomicU64::new(0));
    let clock_skew = skew.clone();
    let source = ApiObjectSource::new(admin.clone()).with_clock(Arc::new(move || {
        SystemTime::now() + Duration::from_secs(clock_skew.load(Ordering::SeqCst))
    }));
    let projection = ServiceAccountTokenProjection {
        audience: Some("vault".into()),
        expiration_seconds: Some(3600),
        path: "token".into(),
    };
    let requests = || {
        cp.audit_events()
            .unwrap()
            .into_iter()
            .filter(|e| {
                e.resource.as_deref() == Some("serviceaccounts")
                    && e.subresource.as_deref() == Some("token")
                    && e.code == Some(201)
            })
            .count()
    };
    let first = source
        .service_account_token(&pod, &projection)
        .await
        .unwrap();
    assert_eq!(requests(), 1);
    // Within 80% of the hour: the same token, no new request.
    skew.store(2800, Ordering::SeqCst);
    let again = source
        .service_account_token(&pod, &projection)
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(requests(), 1, "the cached token served");
    // Past 80% (2880 s): a new TokenRequest, a new token, bound to the pod.
    skew.store(2890, Ordering::SeqCst);
    let renewed = source
        .service_account_token(&pod, &projection)
        .await
        .unwrap();
    assert_ne!(renewed, first, "a fresh token");
    assert_eq!(requests(), 2);
    cp.stop().await;
}
