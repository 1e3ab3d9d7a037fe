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
use node_images::gc::{FsStats, ImageFsStats, ImageGcError, ImageGcManager, ImageGcPolicy};
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
        .get_pod_status(&"u6".into(), "img-u6", "default")
        .await
        .unwrap();
    let result = runtime.sync_pod(&p, &status).await;
    assert!(result.error().is_none(), "{result:?}");
    let running = eventually(
        Duration::from_secs(20),
        "the pod's container to run",
        || async {
            let s = runtime
                .get_pod_status(&"u6".into(), "img-u6", "default")
                .await
                .ok()?;
            s.containers
                .iter()
                .any(|c| c.state == ContainerState::Running)
                .then_some(s)
        },
    )
    .await;
    // The public and private images are the same image (one id, two tags).
    let pulled = client.image_status(&public).await.unwrap().unwrap();
    let image_ref = &running.containers[0].image_ref;
    assert!(
        *image_ref == pulled.id || pulled.repo_digests.contains(image_ref),
        "{image_ref} is the pulled image {pulled:?}"
    );
    let rp = running.running_pod("containerd");
    runtime.kill_pod(Some(&p), &rp, Some(1)).await.unwrap();
    for s in client.list_pod_sandbox(None).await.unwrap() {
        client.remove_pod_sandbox(&s.id).await.unwrap();
    }
    containerd.stop().await.unwrap();
}

/// Image filesystem figures from the images present: the test decides the capacity.
struct ImagesStats {
    service: CriImageService,
    capacity: Arc<std::sync::atomic::AtomicU64>,
}

#[async_trait::async_trait]
impl ImageFsStats for ImagesStats {
    async fn image_fs_stats(&self) -> Result<FsStats, ImageGcError> {
        use node_images::service::ImageService;
        let used: u64 = self
            .service
            .list_images()
            .await
            .map_err(ImageGcError::fs_stats)?
            .iter()
            .map(|i| i.size)
            .sum();
        let capacity = self.capacity.load(std::sync::atomic::Ordering::SeqCst);
        Ok(FsStats {
            capacity_bytes: capacity,
            available_bytes: capacity.saturating_sub(used),
        })
    }
}

fn import(containerd: &ManagedContainerd, name: &str, filler_mib: usize) -> String {
    let dir = &containerd.config().dir;
    let reference = format!("example.invalid/gc/{name}:1");
    let archive = dir.join(format!("{name}.tar"));
    let filler: Vec<u8> = (0..filler_mib << 20)
        .map(|b| {
            (b as u32)
                .wrapping_mul(2654435761)
                .wrapping_add(filler_mib as u32)
                .to_le_bytes()[3]
        })
        .collect();
    busybox_image(std::path::Path::new(DEFAULT_BUSYBOX_PATH), &reference)
        .file("/filler", filler, 0o644)
        .build()
        .unwrap()
        .write_to(&archive)
        .unwrap();
    let out = std::process::Command::new("ctr")
        .arg("--address")
        .arg(containerd.config().socket_path())
        .args(["--namespace", "k8s.io", "images", "import"])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    reference
}

#[tokio::test(flavor = "multi_thread")]
async fn image_gc_deletes_unused_images_first_detected_first_down_to_the_low_threshold() {
    let config = harness::test_config("imagegc").unwrap();
    let dir = config.dir.clone();
    let containerd = ManagedContainerd::start(config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = containerd.client().clone();
    let service = CriImageService::new(client.clone());
    let recorder = Arc::new(MemoryRecorder::default());

    // busybox is in use by a running container; pause is pinned.
    let node = NodeContext {
        node_name: "gc-node".into(),
        pod_logs_dir: dir.join("logs"),
        cgroup_root: format!("/node-agent-test/{}", std::process::id()),
        resolv_conf: None,
        ..NodeContext::default()
    };
    let runtime = CriRuntime::new(client.clone(), node, recorder.clone());
    let user = pod(
        "gc-user",
        node_images::oci::BUSYBOX_IMAGE,
        Some("IfNotPresent"),
    );
    let status = runtime
        .get_pod_status(&"gc-user".into(), "img-gc-user", "default")
        .await
        .unwrap();
    assert!(runtime.sync_pod(&user, &status).await.error().is_none());

    let capacity = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX / 4));
    let manager = ImageGcManager::new(
        Arc::new(CriImageService::new(client.clone())),
        Arc::new(ImagesStats {
            service: CriImageService::new(client.clone()),
            capacity: capacity.clone(),
        }),
        Arc::new(CriImageService::new(client.clone())),
        ImageGcPolicy {
            min_age: Duration::ZERO,
            ..ImageGcPolicy::default()
        },
        recorder.clone(),
        "gc-node".into(),
    )
    .unwrap();
    // Images detected one after the other: first, second, third.
    let mut names = Vec::new();
    for (name, mib) in [("first", 3), ("second", 2), ("third", 1)] {
        names.push(import(&containerd, name, mib));
        manager.detect_images().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Capacity chosen so usage is 88%: freeing the first image brings it under 80%.
    use node_images::service::ImageService;
    let total: u64 = service
        .list_images()
        .await
        .unwrap()
        .iter()
        .map(|i| i.size)
        .sum();
    capacity.store(total * 100 / 88, std::sync::atomic::Ordering::SeqCst);
    let report = manager
        .garbage_collect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let left: Vec<String> = service
        .list_images()
        .await
        .unwrap()
        .into_iter()
        .flat_map(|i| i.repo_tags)
        .collect();
    assert!(report.freed_bytes > 0, "{report:?}");
    assert!(
        left.iter().any(|t| t == node_images::oci::BUSYBOX_IMAGE),
        "the image in use stays: {left:?}"
    );
    assert!(
        left.iter().any(|t| t == node_images::oci::PAUSE_IMAGE),
        "the pinned image stays: {left:?}"
    );
    let used_after: u64 = service
        .list_images()
        .await
        .unwrap()
        .iter()
        .map(|i| i.size)
        .sum();
    assert!(
        used_after * 100 / (total * 100 / 88) <= 80,
        "usage is under the low threshold"
    );
    assert!(
        report.deleted.len() < 3,
        "only what was needed went: {report:?}"
    );
    // Deleted in first-detected order: a prefix of first, second, third.
    let gone: Vec<&String> = names.iter().filter(|n| !left.contains(n)).collect();
    assert_eq!(
        gone,
        names.iter().take(gone.len()).collect::<Vec<_>>(),
        "{left:?}"
    );
    assert!(!gone.is_empty());

    let rp = runtime
        .get_pod_status(&"gc-user".into(), "img-gc-user", "default")
        .await
        .unwrap()
        .running_pod("containerd");
    runtime.kill_pod(Some(&user), &rp, Some(1)).await.unwrap();
    for s in client.list_pod_sandbox(None).await.unwrap() {
        client.remove_pod_sandbox(&s.id).await.unwrap();
    }
    containerd.stop().await.unwrap();
}

/// Counts the pulls in flight through the real image service.
struct Counting {
    inner: CriImageService,
    running: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl node_images::service::ImageService for Counting {
    async fn list_images(
        &self,
    ) -> Result<Vec<node_images::service::Image>, node_images::service::ImageServiceError> {
        self.inner.list_images().await
    }
    async fn image_status(
        &self,
        image: &str,
    ) -> Result<Option<node_images::service::Image>, node_images::service::ImageServiceError> {
        self.inner.image_status(image).await
    }
    async fn pull_image(
        &self,
        image: &str,
        auth: Option<&node_images::service::AuthConfig>,
    ) -> Result<String, node_images::service::ImageServiceError> {
        use std::sync::atomic::Ordering;
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        let result = self.inner.pull_image(image, auth).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        result
    }
    async fn remove_image(
        &self,
        image: &str,
    ) -> Result<(), node_images::service::ImageServiceError> {
        self.inner.remove_image(image).await
    }
    async fn image_fs_info(
        &self,
    ) -> Result<node_images::service::FsUsage, node_images::service::ImageServiceError> {
        self.inner.image_fs_info().await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_pulls_from_the_registry_never_exceed_max_parallel_image_pulls() {
    let mut config = harness::test_config("parallel").unwrap();
    let registry = Registry::start("parallel", None).unwrap_or_else(|e| panic!("{e}"));
    let mut images = Vec::new();
    for i in 0..6 {
        let archive = config.dir.join(format!("p{i}.tar"));
        busybox_image(
            std::path::Path::new(DEFAULT_BUSYBOX_PATH),
            &format!("example.invalid/p{i}:1"),
        )
        .label("node-agent.test/n", i.to_string())
        .build()
        .unwrap()
        .write_to(&archive)
        .unwrap();
        images.push(
            registry
                .push(&archive, &format!("par/p{i}:1"))
                .unwrap_or_else(|e| panic!("{e}")),
        );
    }
    config.plain_http_registries = vec![registry.host().into()];
    let containerd = ManagedContainerd::start(config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let counting = Arc::new(Counting {
        inner: CriImageService::new(containerd.client().clone()),
        running: Default::default(),
        most: Default::default(),
    });
    let manager = ImageManager::new(
        counting.clone(),
        Arc::new(MemoryRecorder::default()),
        PullConcurrency::Parallel(Some(2)),
    );
    let pods: Vec<Pod> = images
        .iter()
        .enumerate()
        .map(|(i, img)| pod(&format!("par{i}"), img, None))
        .collect();
    let none = Keyring::new();
    let results =
        futures::future::join_all(pods.iter().map(|p| {
            manager.ensure_image_exists(p, &p.spec.as_ref().unwrap().containers[0], &none)
        }))
        .await;
    for r in results {
        r.unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(
        counting.most.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "two pulls at a time, never more"
    );
    containerd.stop().await.unwrap();
}
