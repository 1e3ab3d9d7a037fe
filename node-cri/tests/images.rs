//! The image manager against real registries (`docker-registry` on 127.0.0.1, plain and with
//! htpasswd basic auth) and a real containerd pulling over plain HTTP.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use node_core::events::{EventType, MemoryRecorder};
use node_core::runtime::{ContainerState, Runtime};
use node_cri::harness::{self, Registry, eventually};
use node_cri::runtime::CriRuntime;
use node_cri::runtime::sandbox::NodeContext;
use node_cri::{CriImageService, ManagedContainerd};
use node_images::credentials::Keyring;
use node_images::manager::{ImageManager, PullConcurrency, reasons};
use node_images::oci::{DEFAULT_BUSYBOX_PATH, busybox_image};

fn pod(uid: &str, image: &str, policy: Option<&str>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("img-{uid}")),
            namespace: Some("default".into()),
            uid: Some(uid.into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".into(),
                image: Some(image.into()),
                image_pull_policy: policy.map(String::from),
                command: Some(vec!["sleep".into(), "3600".into()]),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn keyring(host: &str, user: &str, password: &str) -> Keyring {
    let mut k = Keyring::new();
    let json =
        format!(r#"{{"auths":{{"{host}":{{"username":"{user}","password":"{password}"}}}}}}"#);
    k.add_docker_config_json(json.as_bytes(), "test-secret")
        .unwrap();
    k
}

fn count(recorder: &MemoryRecorder, reason: &str) -> usize {
    recorder
        .events()
        .iter()
        .filter(|e| e.reason == reason)
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn pulls_follow_policies_credentials_and_back_off_and_a_pod_runs_the_pulled_image() {
    // An image of our own, pushed to a plain registry and to one with basic auth.
    let config = harness::test_config("images").unwrap();
    let dir = config.dir.clone();
    let archive = dir.join("app.tar");
    busybox_image(
        std::path::Path::new(DEFAULT_BUSYBOX_PATH),
        "example.invalid/app:1",
    )
    .label("node-agent.test/app", "1")
    .build()
    .unwrap()
    .write_to(&archive)
    .unwrap();
    let plain = Registry::start("plain", None).unwrap_or_else(|e| panic!("{e}"));
    let secured =
        Registry::start("auth", Some(("puller", "s3cret"))).unwrap_or_else(|e| panic!("{e}"));
    let public = plain
        .push(&archive, "team/app:1")
        .unwrap_or_else(|e| panic!("{e}"));
    let private = secured
        .push(&archive, "secret/app:1")
        .unwrap_or_else(|e| panic!("{e}"));

    let mut config = config;
    config.plain_http_registries = vec![plain.host().into(), secured.host().into()];
    let containerd = ManagedContainerd::start(config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = containerd.client().clone();
    let recorder = Arc::new(MemoryRecorder::default());
    let manager = Arc::new(ImageManager::new(
        Arc::new(CriImageService::new(client.clone())),
        recorder.clone(),
        PullConcurrency::Serial,
    ));
    let none = Keyring::new();

    // Without credentials from the plain registry; IfNotPresent then does not pull again.
    let p = pod("u1", &public, Some("IfNotPresent"));
    let c = &p.spec.as_ref().unwrap().containers[0];
    let image = manager
        .ensure_image_exists(&p, c, &none)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(image.repo_tags.contains(&public), "{image:?}");
    assert_eq!(count(&recorder, "Pulling"), 1);
    assert!(recorder.events().iter().any(|e| {
        e.reason == "Pulled"
            && e.message
                .starts_with(&format!("Successfully pulled image {public:?} in "))
    }));
    manager.ensure_image_exists(&p, c, &none).await.unwrap();
    assert_eq!(
        count(&recorder, "Pulling"),
        1,
        "IfNotPresent does not pull a present image"
    );
    assert!(
        recorder
            .events()
            .iter()
            .any(|e| e.message == format!("Container image {public:?} already present on machine"))
    );
    // Always pulls again.
    let p = pod("u2", &public, Some("Always"));
    manager
        .ensure_image_exists(&p, &p.spec.as_ref().unwrap().containers[0], &none)
        .await
        .unwrap();
    assert_eq!(count(&recorder, "Pulling"), 2, "Always pulls again");

    // Never with a missing image.
    let missing = format!("{}/team/missing:1", plain.host());
    let p = pod("u3", &missing, Some("Never"));
    let err = manager
        .ensure_image_exists(&p, &p.spec.as_ref().unwrap().containers[0], &none)
        .await
        .unwrap_err();
    assert_eq!(err.reason, reasons::ERR_IMAGE_NEVER_PULL);
    assert_eq!(
        err.message,
        format!("Container image {missing:?} is not present with pull policy of Never")
    );

    // The secured registry: no or wrong credentials fail, then back off; right ones work.
    let p = pod("u4", &private, None);
    let c = &p.spec.as_ref().unwrap().containers[0];
    let err = manager
        .ensure_image_exists(&p, c, &keyring(secured.host(), "puller", "wrong"))
        .await
        .unwrap_err();
    assert_eq!(err.reason, reasons::ERR_IMAGE_PULL, "{err}");
    assert!(
        err.message
            .starts_with(&format!("Failed to pull image {private:?}")),
        "{err}"
    );
    let err = manager.ensure_image_exists(&p, c, &none).await.unwrap_err();
    assert_eq!(err.reason, reasons::IMAGE_PULL_BACK_OFF, "{err}");
    assert_eq!(err.message, format!("Back-off pulling image {private:?}"));
    assert!(
        recorder
            .events()
            .iter()
            .any(|e| e.reason == "BackOff" && e.event_type == EventType::Normal)
    );
    let p = pod("u5", &private, None);
    let c = &p.spec.as_ref().unwrap().containers[0];
    let image = manager
        .ensure_image_exists(&p, c, &keyring(secured.host(), "puller", "s3cret"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(image.repo_tags.contains(&private));

    // A pod referencing the registry image runs.
    let node = NodeContext {
        node_name: "img-node".into(),
        pod_logs_dir: dir.join("logs"),
        cgroup_root: format!("/node-agent-test/{}", std::process::id()),
        resolv_conf: None,
        ..NodeContext::default()
    };
    let runtime =
        CriRuntime::new(client.clone(), node, recorder.clone()).with_image_manager(manager.clone());
    let p = pod("u6", &public, None);
    let status = runtime
        .get_pod_status("u6", "img-u6", "default")
        .await
        .unwrap();
    let result = runtime.sync_pod(&p, &status).await;
    assert!(result.error().is_none(), "{result:?}");
    let running = eventually(
        Duration::from_secs(20),
        "the pod's container to run",
        || async {
            let s = runtime
                .get_pod_status("u6", "img-u6", "default")
                .await
                .ok()?;
            s.containers
                .iter()
                .any(|c| c.state == ContainerState::Running)
                .then_some(s)
        },
    )
    .await;
    assert_eq!(running.containers[0].image, public);
    let rp = running.running_pod("containerd");
    runtime.kill_pod(Some(&p), &rp, Some(1)).await.unwrap();
    for s in client.list_pod_sandbox(None).await.unwrap() {
        client.remove_pod_sandbox(&s.id).await.unwrap();
    }
    containerd.stop().await.unwrap();
}
