//! The image manager: makes sure a container's image is present before it starts, as
//! upstream's `EnsureImageExists`: the default tag, the pull policy, credentials, a per-image
//! back-off, serialized or bounded-parallel pulls, and upstream's events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use node_core::events::reasons as events_reasons;
use node_core::events::{EventObject, EventRecorder, EventType};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::credentials::Keyring;
use crate::reference::{default_pull_policy, with_default_tag};
use crate::service::AuthConfig;
use crate::service::{Image, ImageService};

/// Upstream `imageBackOffPeriod`.
pub const INITIAL_PULL_BACKOFF: Duration = Duration::from_secs(10);
/// Upstream `MaxImageBackOff`.
pub const MAX_PULL_BACKOFF: Duration = Duration::from_secs(300);

/// Upstream image error reasons (the container's waiting reason).
pub mod reasons {
    /// The pull failed.
    pub const ERR_IMAGE_PULL: &str = "ErrImagePull";
    /// Waiting for the pull back-off to end.
    pub const IMAGE_PULL_BACK_OFF: &str = "ImagePullBackOff";
    /// Pull policy Never and the image is absent.
    pub const ERR_IMAGE_NEVER_PULL: &str = "ErrImageNeverPull";
    /// The reference cannot be parsed.
    pub const INVALID_IMAGE_NAME: &str = "InvalidImageName";
    /// The runtime could not tell whether the image is present.
    pub const IMAGE_INSPECT_ERROR: &str = "ImageInspectError";
}

/// Why an image could not be ensured: an upstream reason and a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct EnsureImageError {
    /// Upstream reason (`ErrImagePull`, `ImagePullBackOff`, ...).
    pub reason: &'static str,
    /// Message.
    pub message: String,
}

/// How pulls are scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullConcurrency {
    /// One pull at a time (`serializeImagePulls: true`, the default).
    Serial,
    /// Pulls in parallel, at most this many at once (`maxParallelImagePulls`; `None`: no
    /// bound).
    Parallel(Option<usize>),
}

#[derive(Clone, Copy, Debug)]
struct BackoffEntry {
    backoff: Duration,
    last_update: Instant,
}

/// Ensures images for containers.
pub struct ImageManager {
    service: Arc<dyn ImageService>,
    recorder: Arc<dyn EventRecorder>,
    pulls: Arc<Semaphore>,
    backoff: Mutex<HashMap<String, BackoffEntry>>,
    node_keyring: Keyring,
}

impl std::fmt::Debug for ImageManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageManager")
            .field("pull_slots", &self.pulls.available_permits())
            .finish_non_exhaustive()
    }
}

impl ImageManager {
    /// A manager pulling through `service`, recording events to `recorder`.
    pub fn new(
        service: Arc<dyn ImageService>,
        recorder: Arc<dyn EventRecorder>,
        concurrency: PullConcurrency,
    ) -> Self {
        let permits = match concurrency {
            PullConcurrency::Serial => 1,
            PullConcurrency::Parallel(Some(n)) => n.max(1),
            PullConcurrency::Parallel(None) => Semaphore::MAX_PERMITS,
        };
        ImageManager {
            service,
            recorder,
            pulls: Arc::new(Semaphore::new(permits)),
            backoff: Mutex::new(HashMap::new()),
            node_keyring: Keyring::default(),
        }
    }

    /// Credentials every pull may use (standalone mode: a docker config file of the node).
    pub fn with_node_keyring(mut self, keyring: Keyring) -> Self {
        self.node_keyring = keyring;
        self
    }

    /// The image service.
    pub fn service(&self) -> &Arc<dyn ImageService> {
        &self.service
    }

    fn in_backoff(&self, key: &str) -> bool {
        let Ok(map) = self.backoff.lock() else {
            return false;
        };
        map.get(key)
            .is_some_and(|e| e.last_update.elapsed() < e.backoff)
    }

    fn next_backoff(&self, key: &str) {
        let Ok(mut map) = self.backoff.lock() else {
            return;
        };
        let now = Instant::now();
        let backoff = match map.get(key) {
            // Forgotten after twice the maximum without failures, as flowcontrol.Backoff.
            Some(e) if now.duration_since(e.last_update) <= 2 * MAX_PULL_BACKOFF => {
                (e.backoff * 2).min(MAX_PULL_BACKOFF)
            }
            _ => INITIAL_PULL_BACKOFF,
        };
        map.insert(
            key.to_string(),
            BackoffEntry {
                backoff,
                last_update: now,
            },
        );
    }

    /// Makes sure the container's image is present, pulling it per the pull policy with the
    /// pod's pull secrets (`secrets`) and the node's credentials; returns the image.
    pub async fn ensure_image_exists(
        &self,
        pod: &Pod,
        container: &Container,
        secrets: &Keyring,
    ) -> Result<Image, EnsureImageError> {
        self.ensure_image_exists_then(pod, container, secrets, || {})
            .await
    }

    /// [`ensure_image_exists`](Self::ensure_image_exists), calling `before_pull` when it is
    /// about to pull (and not when the image is present or may not be pulled): a caller that
    /// holds a share of something scarce while it starts a container gives it up there.
    pub async fn ensure_image_exists_then(
        &self,
        pod: &Pod,
        container: &Container,
        secrets: &Keyring,
        before_pull: impl FnOnce() + Send,
    ) -> Result<Image, EnsureImageError> {
        let init = pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.as_ref())
            .is_some_and(|i| i.iter().any(|c| c.name == container.name));
        let object = EventObject::container(pod, &container.name, init);
        let event = |kind, reason: &str, message: &str| {
            self.recorder.record(&object, kind, reason, message)
        };
        let given = container.image.clone().unwrap_or_default();
        let image = match with_default_tag(&given) {
            Ok(image) => image,
            Err(e) => {
                let message = format!("Failed to apply default image tag {given:?}: {e}");
                event(EventType::Warning, "InspectFailed", &message);
                return Err(EnsureImageError {
                    reason: reasons::INVALID_IMAGE_NAME,
                    message,
                });
            }
        };
        let policy = container
            .image_pull_policy
            .clone()
            .unwrap_or_else(|| default_pull_policy(&given).to_string());
        let present = self.service.image_status(&image).await.map_err(|e| {
            let message = format!("Failed to inspect image {image:?}: {e}");
            event(EventType::Warning, "InspectFailed", &message);
            EnsureImageError {
                reason: reasons::IMAGE_INSPECT_ERROR,
                message,
            }
        })?;
        match (present, policy.as_str()) {
            (Some(found), p) if p != "Always" => {
                event(
                    EventType::Normal,
                    events_reasons::PULLED_IMAGE,
                    &format!("Container image {image:?} already present on machine"),
                );
                return Ok(found);
            }
            (None, "Never") => {
                let message =
                    format!("Container image {image:?} is not present with pull policy of Never");
                event(EventType::Warning, reasons::ERR_IMAGE_NEVER_PULL, &message);
                return Err(EnsureImageError {
                    reason: reasons::ERR_IMAGE_NEVER_PULL,
                    message,
                });
            }
            _ => {}
        }

        let key = format!(
            "{}_{image}",
            pod.metadata.uid.as_deref().unwrap_or_default()
        );
        if self.in_backoff(&key) {
            let message = format!("Back-off pulling image {image:?}");
            event(EventType::Normal, events_reasons::BACK_OFF, &message);
            return Err(EnsureImageError {
                reason: reasons::IMAGE_PULL_BACK_OFF,
                message,
            });
        }

        before_pull();
        event(
            EventType::Normal,
            events_reasons::PULLING_IMAGE,
            &format!("Pulling image {image:?}"),
        );
        let waited = Instant::now();
        let _slot = self.pulls.acquire().await.map_err(|_| EnsureImageError {
            reason: reasons::ERR_IMAGE_PULL,
            message: "the image manager is shutting down".into(),
        })?;
        let started = Instant::now();
        let mut credentials = secrets.lookup(&image);
        credentials.extend(self.node_keyring.lookup(&image));
        // Each matching credential in turn, most specific first, as upstream; none without.
        let auths: Vec<Option<&AuthConfig>> = if credentials.is_empty() {
            vec![None]
        } else {
            credentials.iter().map(Some).collect()
        };
        let mut outcome = Err(String::new());
        for auth in auths {
            outcome = self
                .service
                .pull_image(&image, auth)
                .await
                .map_err(|e| e.to_string());
            if outcome.is_ok() {
                break;
            }
        }
        drop(_slot);
        match outcome {
            Ok(_) => {
                let found = self.service.image_status(&image).await.ok().flatten();
                let Some(found) = found else {
                    return Err(EnsureImageError {
                        reason: reasons::ERR_IMAGE_PULL,
                        message: format!("image {image:?} is missing after it was pulled"),
                    });
                };
                event(
                    EventType::Normal,
                    events_reasons::PULLED_IMAGE,
                    &format!(
                        "Successfully pulled image {image:?} in {:?} ({:?} including waiting). Image size: {} bytes.",
                        started.elapsed(),
                        waited.elapsed(),
                        found.size
                    ),
                );
                Ok(found)
            }
            Err(e) => {
                self.next_backoff(&key);
                let message = format!("Failed to pull image {image:?}: {e}");
                event(
                    EventType::Warning,
                    events_reasons::FAILED_TO_CREATE_CONTAINER,
                    &message,
                );
                Err(EnsureImageError {
                    reason: reasons::ERR_IMAGE_PULL,
                    message,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{AuthConfig, FsUsage, ImageServiceError};
    use async_trait::async_trait;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use node_core::events::MemoryRecorder;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Pulls take 50 ms and fail when `fail` is set; counts concurrent pulls.
    #[derive(Default)]
    struct Fake {
        fail: bool,
        pulls: AtomicUsize,
        running: AtomicUsize,
        most: AtomicUsize,
    }

    #[async_trait]
    impl ImageService for Fake {
        async fn list_images(&self) -> Result<Vec<Image>, ImageServiceError> {
            Ok(Vec::new())
        }
        async fn image_status(&self, image: &str) -> Result<Option<Image>, ImageServiceError> {
            Ok(
                (self.pulls.load(Ordering::SeqCst) > 0 && !self.fail).then(|| Image {
                    id: format!("sha256:{image}"),
                    ..Default::default()
                }),
            )
        }
        async fn pull_image(
            &self,
            image: &str,
            _: Option<&AuthConfig>,
        ) -> Result<String, ImageServiceError> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            self.pulls.fetch_add(1, Ordering::SeqCst);
            if self.fail {
                return Err(ImageServiceError::NotFound(image.into()));
            }
            Ok(image.into())
        }
        async fn remove_image(&self, _: &str) -> Result<(), ImageServiceError> {
            Ok(())
        }
        async fn image_fs_info(&self) -> Result<FsUsage, ImageServiceError> {
            Ok(FsUsage::default())
        }
    }

    fn pod(uid: &str, image: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(uid.into()),
                namespace: Some("default".into()),
                uid: Some(uid.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some(image.into()),
                    image_pull_policy: Some("Always".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn ensure(m: &ImageManager, p: &Pod) -> Result<Image, EnsureImageError> {
        m.ensure_image_exists(p, &p.spec.as_ref().unwrap().containers[0], &Keyring::new())
            .await
    }

    #[tokio::test]
    async fn parallel_pulls_never_exceed_the_bound_and_serial_pulls_one_at_a_time() {
        for (concurrency, bound) in [
            (PullConcurrency::Parallel(Some(3)), 3),
            (PullConcurrency::Serial, 1),
        ] {
            let fake = Arc::new(Fake::default());
            let m = Arc::new(ImageManager::new(
                fake.clone(),
                Arc::new(MemoryRecorder::default()),
                concurrency,
            ));
            let pods: Vec<Pod> = (0..8)
                .map(|i| pod(&format!("p{i}"), &format!("reg.io/img{i}:1")))
                .collect();
            futures::future::join_all(pods.iter().map(|p| ensure(&m, p))).await;
            assert_eq!(fake.pulls.load(Ordering::SeqCst), 8);
            assert_eq!(fake.most.load(Ordering::SeqCst), bound, "{concurrency:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failed_pulls_back_off_doubling_to_the_cap() {
        let fake = Arc::new(Fake {
            fail: true,
            ..Default::default()
        });
        let m = ImageManager::new(
            fake.clone(),
            Arc::new(MemoryRecorder::default()),
            PullConcurrency::Serial,
        );
        let p = pod("u", "reg.io/app:1");
        let mut window = INITIAL_PULL_BACKOFF;
        for _ in 0..7 {
            assert_eq!(
                ensure(&m, &p).await.unwrap_err().reason,
                reasons::ERR_IMAGE_PULL
            );
            // Within the window: back-off, no pull.
            let pulls = fake.pulls.load(Ordering::SeqCst);
            tokio::time::advance(window - Duration::from_secs(1)).await;
            assert_eq!(
                ensure(&m, &p).await.unwrap_err().reason,
                reasons::IMAGE_PULL_BACK_OFF
            );
            assert_eq!(fake.pulls.load(Ordering::SeqCst), pulls);
            tokio::time::advance(Duration::from_secs(2)).await;
            window = (window * 2).min(MAX_PULL_BACKOFF);
        }
        assert_eq!(window, MAX_PULL_BACKOFF);
    }

    /// `before_pull` runs right before a pull, while no pull is running for the caller, and
    /// not at all when the image is present.
    #[tokio::test]
    async fn before_pull_runs_only_when_pulling() {
        let fake = Arc::new(Fake::default());
        let m = ImageManager::new(
            fake.clone(),
            Arc::new(MemoryRecorder::default()),
            PullConcurrency::Serial,
        );
        let mut p = pod("u", "reg.io/app:1");
        let called = AtomicUsize::new(0);
        let container = p.spec.as_ref().unwrap().containers[0].clone();
        let before = || {
            assert_eq!(fake.running.load(Ordering::SeqCst), 0, "before the pull");
            called.fetch_add(1, Ordering::SeqCst);
        };
        m.ensure_image_exists_then(&p, &container, &Keyring::new(), before)
            .await
            .unwrap();
        assert_eq!(called.load(Ordering::SeqCst), 1);
        assert_eq!(fake.pulls.load(Ordering::SeqCst), 1);
        // Present, and IfNotPresent: no pull, no call.
        p.spec.as_mut().unwrap().containers[0].image_pull_policy = Some("IfNotPresent".into());
        let container = p.spec.as_ref().unwrap().containers[0].clone();
        m.ensure_image_exists_then(&p, &container, &Keyring::new(), || {
            called.fetch_add(1, Ordering::SeqCst);
        })
        .await
        .unwrap();
        assert_eq!(called.load(Ordering::SeqCst), 1);
        assert_eq!(fake.pulls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_invalid_reference_is_invalid_image_name() {
        let m = ImageManager::new(
            Arc::new(Fake::default()),
            Arc::new(MemoryRecorder::default()),
            PullConcurrency::Serial,
        );
        let err = ensure(&m, &pod("u", "Bad/Image:1")).await.unwrap_err();
        assert_eq!(err.reason, reasons::INVALID_IMAGE_NAME);
        assert!(
            err.message
                .starts_with("Failed to apply default image tag \"Bad/Image:1\""),
            "{}",
            err.message
        );
    }
}
