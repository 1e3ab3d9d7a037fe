//! Image garbage collection, as upstream's image GC manager
//! (`pkg/kubelet/images/image_gc_manager.go`).
//!
//! [`ImageGcManager`] keeps a record per image id: when it was first detected and when a
//! container was last seen using it. Every period (5 minutes upstream) [`ImageGcManager::run`]
//! makes one pass, [`ImageGcManager::garbage_collect`]:
//!
//! 1. detect images: new ids get `first_detected = now`, ids in use by a container get
//!    `last_used = now`, records of images that disappeared are dropped;
//! 2. with `imageMaximumGCAge` set, delete every eligible image unused for longer than it;
//! 3. read the image filesystem; when `usage = 100 - available * 100 / capacity` is at or above
//!    `imageGCHighThresholdPercent`, free `capacity * (100 - low) / 100 - available` bytes by
//!    deleting eligible images least recently used first (ties: first detected first); if that
//!    is not enough, record a `FreeDiskSpaceFailed` warning on the node and fail.
//!
//! An image is eligible when no container uses it, it is not pinned (the sandbox image), and it
//! was first detected at least `imageMinimumGCAge` ago. [`ImageGcManager::delete_unused_images`]
//! deletes every eligible image at once, for eviction under disk pressure.
//!
//! The seams are traits: [`ImageFsStats`] (default: [`StatvfsImageFsStats`], `statvfs` of the
//! runtime's image directory) and [`ImagesInUse`] (the image ids of the node's containers,
//! provided by node-cri).
//!
//! ```no_run
//! use std::collections::HashSet;
//! use std::sync::Arc;
//! use std::time::Duration;
//! use node_images::gc::{
//!     ImageGcError, ImageGcManager, ImageGcPolicy, ImagesInUse, StatvfsImageFsStats,
//! };
//!
//! struct NoContainers;
//!
//! #[async_trait::async_trait]
//! impl ImagesInUse for NoContainers {
//!     async fn images_in_use(&self) -> Result<HashSet<String>, ImageGcError> {
//!         Ok(HashSet::new())
//!     }
//! }
//!
//! # async fn demo(service: Arc<dyn node_images::service::ImageService>) -> Result<(), ImageGcError> {
//! let gc = Arc::new(ImageGcManager::new(
//!     service,
//!     Arc::new(StatvfsImageFsStats::new("/var/lib/containerd")),
//!     Arc::new(NoContainers),
//!     ImageGcPolicy::default(),
//!     Arc::new(node_core::events::LogRecorder),
//!     "node-a".to_string(),
//! )?);
//! let _periodic = gc.clone().run(node_images::gc::IMAGE_GC_PERIOD);
//! let report = gc.delete_unused_images().await?;
//! println!("freed {} bytes", report.freed_bytes);
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use node_core::events::{EventObject, EventRecorder, EventType};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::service::{ImageService, ImageServiceError};

/// Upstream `ImageGCPeriod`: how often the kubelet runs image GC.
pub const IMAGE_GC_PERIOD: Duration = Duration::from_secs(5 * 60);

/// Upstream event reasons of image GC (spelled once, in node-core's `events::reasons`).
pub mod reasons {
    pub use node_core::events::reasons::{
        FREE_DISK_SPACE_FAILED, IMAGE_GC_FAILED, INVALID_DISK_CAPACITY,
    };
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An error of image garbage collection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageGcError {
    /// The policy is out of range (upstream rejects it when the manager is built).
    #[error("invalid image GC policy: {field} {message}")]
    InvalidPolicy {
        /// The configuration field (`imageGCHighThresholdPercent`, ...).
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The runtime could not list its images.
    #[error("cannot list images")]
    ListImages {
        /// The image service's error.
        #[source]
        source: ImageServiceError,
    },
    /// The images in use by containers could not be determined.
    #[error("cannot determine the images in use by containers")]
    ImagesInUse {
        /// The implementation's error.
        #[source]
        source: BoxError,
    },
    /// The image filesystem's stats could not be read.
    #[error("cannot read the image filesystem stats")]
    FsStats {
        /// The implementation's error.
        #[source]
        source: BoxError,
    },
    /// `statvfs` of the image filesystem failed.
    #[error("cannot statvfs the image filesystem at {}", .path.display())]
    Statvfs {
        /// The path given to `statvfs`.
        path: PathBuf,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// The image filesystem reported a capacity of 0 (upstream `InvalidDiskCapacity`).
    #[error("invalid capacity 0 on image filesystem")]
    InvalidDiskCapacity,
    /// Not enough eligible images to bring usage down to the low threshold (upstream
    /// `FreeDiskSpaceFailed`).
    #[error(
        "failed to garbage collect required amount of images: attempted to free {wanted} bytes, \
         but only found {freed} bytes eligible to free"
    )]
    FreeDiskSpaceFailed {
        /// Bytes needed to reach the low threshold.
        wanted: u64,
        /// Bytes freed by deleting eligible images.
        freed: u64,
    },
    /// The operation is not available on this platform.
    #[error("{what} is not supported on this platform")]
    Unsupported {
        /// What was attempted.
        what: &'static str,
    },
}

impl ImageGcError {
    /// Wraps an [`ImagesInUse`] implementation's error.
    pub fn images_in_use(err: impl Into<BoxError>) -> Self {
        ImageGcError::ImagesInUse { source: err.into() }
    }

    /// Wraps an [`ImageFsStats`] implementation's error.
    pub fn fs_stats(err: impl Into<BoxError>) -> Self {
        ImageGcError::FsStats { source: err.into() }
    }

    /// The message upstream puts in events about this error (upstream's exact wording where it
    /// differs from [`Display`](std::fmt::Display)).
    pub fn event_message(&self) -> String {
        match self {
            ImageGcError::FreeDiskSpaceFailed { wanted, freed } => format!(
                "Failed to garbage collect required amount of images. Attempted to free {wanted} \
                 bytes, but only found {freed} bytes eligible to free."
            ),
            other => other.to_string(),
        }
    }
}

/// When images are garbage collected (upstream `ImageGCPolicy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageGcPolicy {
    /// `imageGCHighThresholdPercent`: disk usage at or above which GC always runs.
    pub high_threshold_percent: u8,
    /// `imageGCLowThresholdPercent`: disk usage GC frees down to.
    pub low_threshold_percent: u8,
    /// `imageMinimumGCAge`: images first detected less than this long ago are never deleted.
    pub min_age: Duration,
    /// `imageMaximumGCAge`: images unused for longer than this are deleted whatever the disk
    /// usage. [`Duration::ZERO`] disables it.
    pub max_age: Duration,
}

impl Default for ImageGcPolicy {
    /// Upstream defaults: 85%, 80%, 2 minutes, disabled.
    fn default() -> Self {
        ImageGcPolicy {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            min_age: Duration::from_secs(2 * 60),
            max_age: Duration::ZERO,
        }
    }
}

impl ImageGcPolicy {
    /// Checks the thresholds as upstream's `NewImageGCManager`: each in `[0-100]`, low not above
    /// high.
    pub fn validate(&self) -> Result<(), ImageGcError> {
        let high = self.high_threshold_percent;
        let low = self.low_threshold_percent;
        if high > 100 {
            return Err(ImageGcError::InvalidPolicy {
                field: "imageGCHighThresholdPercent",
                message: format!("{high} must be in range [0-100]"),
            });
        }
        if low > 100 {
            return Err(ImageGcError::InvalidPolicy {
                field: "imageGCLowThresholdPercent",
                message: format!("{low} must be in range [0-100]"),
            });
        }
        if low > high {
            return Err(ImageGcError::InvalidPolicy {
                field: "imageGCLowThresholdPercent",
                message: format!("{low} can not be higher than imageGCHighThresholdPercent {high}"),
            });
        }
        Ok(())
    }

    /// Upstream turns periodic image GC off when the high threshold is 100 and there is no
    /// maximum age; images are then only detected (and deleted on demand).
    pub fn periodic_gc_disabled(&self) -> bool {
        self.high_threshold_percent >= 100 && self.max_age.is_zero()
    }
}

/// Size and free space of the filesystem that holds images.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsStats {
    /// Total size in bytes.
    pub capacity_bytes: u64,
    /// Bytes available to unprivileged users.
    pub available_bytes: u64,
}

/// Where image GC reads the image filesystem's size and free space. The default is
/// [`StatvfsImageFsStats`]; a custom agent (or a test) brings its own.
#[async_trait]
pub trait ImageFsStats: Send + Sync {
    /// The image filesystem's capacity and available bytes.
    async fn image_fs_stats(&self) -> Result<FsStats, ImageGcError>;
}

/// [`ImageFsStats`] from `statvfs(2)` of a directory on the image filesystem (the runtime's
/// root, e.g. `/var/lib/containerd`).
#[derive(Clone, Debug)]
pub struct StatvfsImageFsStats {
    path: PathBuf,
}

impl StatvfsImageFsStats {
    /// Stats of the filesystem holding `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StatvfsImageFsStats { path: path.into() }
    }

    /// The path given to `statvfs`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl ImageFsStats for StatvfsImageFsStats {
    async fn image_fs_stats(&self) -> Result<FsStats, ImageGcError> {
        let path = self.path.clone();
        // statvfs can block (a hung network filesystem): keep it off the async workers.
        tokio::task::spawn_blocking(move || statvfs_stats(&path))
            .await
            .map_err(ImageGcError::fs_stats)?
    }
}

#[cfg(unix)]
fn statvfs_stats(path: &Path) -> Result<FsStats, ImageGcError> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|errno| ImageGcError::Statvfs {
        path: path.to_path_buf(),
        source: errno.into(),
    })?;
    let (fragment, blocks, available) = (
        st.fragment_size() as u64,
        st.blocks() as u64,
        st.blocks_available() as u64,
    );
    Ok(FsStats {
        capacity_bytes: blocks.saturating_mul(fragment),
        available_bytes: available.saturating_mul(fragment),
    })
}

#[cfg(not(unix))]
fn statvfs_stats(_path: &Path) -> Result<FsStats, ImageGcError> {
    Err(ImageGcError::Unsupported { what: "statvfs" })
}

/// The image ids that containers on the node use (running or not, as upstream's
/// `GetPods(all)`). node-cri implements it from the runtime's container list.
#[async_trait]
pub trait ImagesInUse: Send + Sync {
    /// Image ids (`sha256:...`, as [`Image::id`](crate::service::Image::id)) in use.
    async fn images_in_use(&self) -> Result<HashSet<String>, ImageGcError>;
}

/// What image GC knows about one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRecord {
    /// The image id.
    pub id: String,
    /// When the image was first detected.
    pub first_detected: Instant,
    /// When a container was last seen using it; `None` if never.
    pub last_used: Option<Instant>,
    /// Size in bytes.
    pub size: u64,
    /// Pinned images (the sandbox image) are never deleted.
    pub pinned: bool,
}

/// What one GC pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Bytes freed (sum of the deleted images' sizes).
    pub freed_bytes: u64,
    /// Ids of the deleted images, in deletion order.
    pub deleted: Vec<String>,
}

/// Whether an image may be deleted at `now` at all: not in use, not pinned, not used at or
/// after `now`, and first detected at least `min_age` ago.
fn eligible(
    record: &ImageRecord,
    in_use: &HashSet<String>,
    now: Instant,
    policy: &ImageGcPolicy,
) -> bool {
    !record.pinned
        && !in_use.contains(&record.id)
        && record.last_used.is_none_or(|used| used < now)
        && now.saturating_duration_since(record.first_detected) >= policy.min_age
}

/// Eviction order: least recently used first (never used before any use), then first detected
/// first, then id (so the order is deterministic).
fn eviction_order(a: &ImageRecord, b: &ImageRecord) -> std::cmp::Ordering {
    a.last_used
        .cmp(&b.last_used)
        .then(a.first_detected.cmp(&b.first_detected))
        .then_with(|| a.id.cmp(&b.id))
}

/// The images to delete to free `bytes_to_free`: eligible images (not in `in_use`, not pinned,
/// first detected at least `policy.min_age` before `now`) in eviction order (least recently
/// used first, then first detected first), taken until their sizes add up to `bytes_to_free`.
/// Returns fewer than needed when there are not enough eligible images, and nothing when
/// `bytes_to_free` is 0.
pub fn select_victims(
    records: &[ImageRecord],
    in_use: &HashSet<String>,
    now: Instant,
    policy: &ImageGcPolicy,
    bytes_to_free: u64,
) -> Vec<String> {
    if bytes_to_free == 0 {
        return Vec::new();
    }
    let mut candidates: Vec<&ImageRecord> = records
        .iter()
        .filter(|r| eligible(r, in_use, now, policy))
        .collect();
    candidates.sort_unstable_by(|a, b| eviction_order(a, b));
    let mut freed = 0u64;
    let mut victims = Vec::new();
    for record in candidates {
        victims.push(record.id.clone());
        freed = freed.saturating_add(record.size);
        if freed >= bytes_to_free {
            break;
        }
    }
    victims
}

/// The images past `policy.max_age`: eligible images (as [`select_victims`]) not used for longer
/// than `max_age` (an image never used counts from when it was first detected), in eviction
/// order. Nothing when `max_age` is zero.
///
/// Upstream waits `max_age` after the kubelet starts before deleting by age; here that follows
/// from every time in a record being observed by this manager.
pub fn select_expired(
    records: &[ImageRecord],
    in_use: &HashSet<String>,
    now: Instant,
    policy: &ImageGcPolicy,
) -> Vec<String> {
    if policy.max_age.is_zero() {
        return Vec::new();
    }
    let mut expired: Vec<&ImageRecord> = records
        .iter()
        .filter(|r| eligible(r, in_use, now, policy))
        .filter(|r| {
            let since = r.last_used.unwrap_or(r.first_detected);
            now.saturating_duration_since(since) > policy.max_age
        })
        .collect();
    expired.sort_unstable_by(|a, b| eviction_order(a, b));
    expired.into_iter().map(|r| r.id.clone()).collect()
}

/// Disk usage in percent, as upstream: `100 - available * 100 / capacity` (integer division).
fn usage_percent(capacity: u64, available: u64) -> u64 {
    let available_percent = u128::from(available) * 100 / u128::from(capacity.max(1));
    100u64.saturating_sub(u64::try_from(available_percent).unwrap_or(u64::MAX))
}

/// Bytes to free to reach the low threshold: `capacity * (100 - low) / 100 - available`.
fn amount_to_free(capacity: u64, available: u64, low_threshold_percent: u8) -> u64 {
    let free_percent = u128::from(100u8.saturating_sub(low_threshold_percent));
    let target_available = u128::from(capacity) * free_percent / 100;
    let amount = target_available.saturating_sub(u128::from(available));
    u64::try_from(amount).unwrap_or(u64::MAX)
}

/// Image garbage collection for one node (upstream `realImageGCManager`). Passes are
/// serialized: a periodic pass and an on-demand one never run at the same time.
pub struct ImageGcManager {
    service: Arc<dyn ImageService>,
    stats: Arc<dyn ImageFsStats>,
    in_use: Arc<dyn ImagesInUse>,
    policy: ImageGcPolicy,
    recorder: Arc<dyn EventRecorder>,
    node: EventObject,
    records: Mutex<HashMap<String, ImageRecord>>,
}

impl std::fmt::Debug for ImageGcManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageGcManager")
            .field("node", &self.node.name)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl ImageGcManager {
    /// A manager deleting images through `service`, reading the image filesystem from `stats`
    /// and the images in use from `in_use`, recording events about node `node_name`. Fails on
    /// a policy that [`ImageGcPolicy::validate`] rejects.
    pub fn new(
        service: Arc<dyn ImageService>,
        stats: Arc<dyn ImageFsStats>,
        in_use: Arc<dyn ImagesInUse>,
        policy: ImageGcPolicy,
        recorder: Arc<dyn EventRecorder>,
        node_name: String,
    ) -> Result<Self, ImageGcError> {
        policy.validate()?;
        Ok(ImageGcManager {
            service,
            stats,
            in_use,
            policy,
            recorder,
            node: EventObject {
                kind: "Node",
                namespace: String::new(),
                uid: node_name.clone(),
                name: node_name,
                field_path: String::new(),
            },
            records: Mutex::new(HashMap::new()),
        })
    }

    /// The policy in force.
    pub fn policy(&self) -> &ImageGcPolicy {
        &self.policy
    }

    /// The current image records, in eviction order.
    pub async fn image_records(&self) -> Vec<ImageRecord> {
        let records = self.records.lock().await;
        let mut out: Vec<ImageRecord> = records.values().cloned().collect();
        out.sort_unstable_by(eviction_order);
        out
    }

    /// Refreshes the records: new image ids are first detected now, ids in use by containers
    /// are last used now, records of images that are gone are dropped.
    pub async fn detect_images(&self) -> Result<(), ImageGcError> {
        let mut records = self.records.lock().await;
        self.detect_locked(&mut records, Instant::now()).await?;
        Ok(())
    }

    /// One periodic pass: deletes images past the maximum age, then, when disk usage is at or
    /// above the high threshold, least recently used images until usage is at the low
    /// threshold. Fails with [`ImageGcError::FreeDiskSpaceFailed`] (and a `FreeDiskSpaceFailed`
    /// warning on the node) when there are not enough eligible images.
    #[tracing::instrument(skip_all, fields(node = %self.node.name))]
    pub async fn garbage_collect(&self) -> Result<GcReport, ImageGcError> {
        let mut records = self.records.lock().await;
        let now = Instant::now();
        let in_use = self.detect_locked(&mut records, now).await?;
        let mut report = GcReport::default();

        if !self.policy.max_age.is_zero() {
            let snapshot: Vec<ImageRecord> = records.values().cloned().collect();
            let expired = select_expired(&snapshot, &in_use, now, &self.policy);
            if !expired.is_empty() {
                tracing::info!(
                    count = expired.len(),
                    max_age = ?self.policy.max_age,
                    "removing images unused for longer than the maximum age"
                );
                self.remove_images(&mut records, &expired, "age", &mut report)
                    .await;
            }
        }

        let stats = self.stats.image_fs_stats().await?;
        let capacity = stats.capacity_bytes;
        let mut available = stats.available_bytes;
        if available > capacity {
            tracing::info!(available, capacity, "availability is larger than capacity");
            available = capacity;
        }
        if capacity == 0 {
            let err = ImageGcError::InvalidDiskCapacity;
            self.recorder.record(
                &self.node,
                EventType::Warning,
                reasons::INVALID_DISK_CAPACITY,
                &err.event_message(),
            );
            return Err(err);
        }

        let usage = usage_percent(capacity, available);
        let high = self.policy.high_threshold_percent;
        let low = self.policy.low_threshold_percent;
        if usage >= u64::from(high) {
            let wanted = amount_to_free(capacity, available, low);
            tracing::info!(
                usage,
                high_threshold = high,
                low_threshold = low,
                amount_to_free = wanted,
                "disk usage on image filesystem is over the high threshold, trying to free bytes \
                 down to the low threshold"
            );
            let freed = self
                .free_space(&mut records, &in_use, now, wanted, &mut report)
                .await;
            if freed < wanted {
                let err = ImageGcError::FreeDiskSpaceFailed { wanted, freed };
                self.recorder.record(
                    &self.node,
                    EventType::Warning,
                    reasons::FREE_DISK_SPACE_FAILED,
                    &err.event_message(),
                );
                return Err(err);
            }
        }
        Ok(report)
    }

    /// Deletes every eligible image (not in use, not pinned, old enough), least recently used
    /// first: the eviction manager's way to reclaim the image filesystem.
    #[tracing::instrument(skip_all, fields(node = %self.node.name))]
    pub async fn delete_unused_images(&self) -> Result<GcReport, ImageGcError> {
        tracing::info!("attempting to delete unused images");
        let mut records = self.records.lock().await;
        let now = Instant::now();
        let in_use = self.detect_locked(&mut records, now).await?;
        let mut report = GcReport::default();
        self.free_space(&mut records, &in_use, now, u64::MAX, &mut report)
            .await;
        Ok(report)
    }

    /// Runs [`garbage_collect`](Self::garbage_collect) now and then every `period` (upstream
    /// [`IMAGE_GC_PERIOD`]) until the task is aborted. Errors are logged; a failure on two
    /// passes in a row also records an `ImageGCFailed` warning on the node. With periodic GC
    /// disabled ([`ImageGcPolicy::periodic_gc_disabled`]) it only detects images.
    pub fn run(self: Arc<Self>, period: Duration) -> JoinHandle<()> {
        tokio::spawn(async move {
            let period = if period.is_zero() {
                tracing::warn!("image GC period of 0 given, using {IMAGE_GC_PERIOD:?}");
                IMAGE_GC_PERIOD
            } else {
                period
            };
            let disabled = self.policy.periodic_gc_disabled();
            if disabled {
                tracing::info!(
                    "imageGCHighThresholdPercent is 100 and imageMaximumGCAge is 0, image GC \
                     disabled"
                );
            }
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut prev_failed = false;
            loop {
                ticker.tick().await;
                if disabled {
                    if let Err(err) = self.detect_images().await {
                        tracing::info!(error = %err, "failed to monitor images");
                    }
                    continue;
                }
                match self.garbage_collect().await {
                    Ok(report) => {
                        if prev_failed {
                            tracing::info!(
                                freed_bytes = report.freed_bytes,
                                deleted = report.deleted.len(),
                                "image garbage collection succeeded"
                            );
                        } else {
                            tracing::debug!(
                                freed_bytes = report.freed_bytes,
                                deleted = report.deleted.len(),
                                "image garbage collection succeeded"
                            );
                        }
                        prev_failed = false;
                    }
                    Err(err) => {
                        if prev_failed {
                            tracing::error!(
                                error = %err,
                                "image garbage collection failed multiple times in a row"
                            );
                            self.recorder.record(
                                &self.node,
                                EventType::Warning,
                                reasons::IMAGE_GC_FAILED,
                                &err.event_message(),
                            );
                        } else {
                            tracing::error!(
                                error = %err,
                                "image garbage collection failed once, stats initialization may \
                                 not have completed yet"
                            );
                        }
                        prev_failed = true;
                    }
                }
            }
        })
    }

    /// Detection with the records locked; returns the images in use.
    async fn detect_locked(
        &self,
        records: &mut HashMap<String, ImageRecord>,
        now: Instant,
    ) -> Result<HashSet<String>, ImageGcError> {
        let images = self
            .service
            .list_images()
            .await
            .map_err(|source| ImageGcError::ListImages { source })?;
        let in_use = self.in_use.images_in_use().await?;
        let mut current = HashSet::with_capacity(images.len());
        for image in images {
            let record = records.entry(image.id.clone()).or_insert_with(|| {
                tracing::debug!(image = %image.id, "image is new");
                ImageRecord {
                    id: image.id.clone(),
                    first_detected: now,
                    last_used: None,
                    size: 0,
                    pinned: false,
                }
            });
            if in_use.contains(&image.id) {
                record.last_used = Some(now);
            }
            record.size = image.size;
            record.pinned = image.pinned;
            current.insert(image.id);
        }
        records.retain(|id, _| {
            let present = current.contains(id);
            if !present {
                tracing::debug!(image = %id, "image is no longer present, dropping its record");
            }
            present
        });
        Ok(in_use)
    }

    /// Deletes eligible images in eviction order until `bytes_to_free` is freed or none is
    /// left; an image that fails to be removed is skipped. Returns the bytes freed.
    async fn free_space(
        &self,
        records: &mut HashMap<String, ImageRecord>,
        in_use: &HashSet<String>,
        now: Instant,
        bytes_to_free: u64,
        report: &mut GcReport,
    ) -> u64 {
        let mut candidates: Vec<ImageRecord> = records.values().cloned().collect();
        let mut freed = 0u64;
        loop {
            let remaining = bytes_to_free.saturating_sub(freed);
            let victims = select_victims(&candidates, in_use, now, &self.policy, remaining);
            if victims.is_empty() {
                break;
            }
            freed =
                freed.saturating_add(self.remove_images(records, &victims, "space", report).await);
            // Removed or failed, a victim is not a candidate again in this pass.
            let tried: HashSet<&str> = victims.iter().map(String::as_str).collect();
            candidates.retain(|r| !tried.contains(r.id.as_str()));
        }
        freed
    }

    /// Removes `ids`, logging and skipping failures; returns the bytes freed.
    async fn remove_images(
        &self,
        records: &mut HashMap<String, ImageRecord>,
        ids: &[String],
        reason: &'static str,
        report: &mut GcReport,
    ) -> u64 {
        let mut freed = 0u64;
        for id in ids {
            let size = records.get(id).map_or(0, |r| r.size);
            tracing::info!(image = %id, size, reason, "removing image to free bytes");
            match self.service.remove_image(id).await {
                Ok(()) => {}
                Err(ImageServiceError::NotFound(_)) => {
                    tracing::debug!(image = %id, "image already gone");
                }
                Err(err) => {
                    tracing::warn!(image = %id, error = %err, "failed to remove image");
                    continue;
                }
            }
            records.remove(id);
            freed = freed.saturating_add(size);
            report.freed_bytes = report.freed_bytes.saturating_add(size);
            report.deleted.push(id.clone());
        }
        freed
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use node_core::events::MemoryRecorder;

    use super::*;
    use crate::service::{AuthConfig, FsUsage, Image};

    const MIB: u64 = 1 << 20;

    /// An in-memory runtime whose image filesystem holds its images plus `other_used` bytes.
    struct Fake {
        capacity: u64,
        other_used: StdMutex<u64>,
        images: StdMutex<Vec<Image>>,
        removed: StdMutex<Vec<String>>,
        fail_removal: StdMutex<HashSet<String>>,
        in_use: StdMutex<HashSet<String>>,
    }

    impl Fake {
        fn new(capacity: u64, other_used: u64, images: &[(&str, u64, bool)]) -> Arc<Self> {
            Arc::new(Fake {
                capacity,
                other_used: StdMutex::new(other_used),
                images: StdMutex::new(
                    images
                        .iter()
                        .map(|&(id, size, pinned)| Image {
                            id: id.into(),
                            size,
                            pinned,
                            ..Image::default()
                        })
                        .collect(),
                ),
                removed: StdMutex::new(Vec::new()),
                fail_removal: StdMutex::new(HashSet::new()),
                in_use: StdMutex::new(HashSet::new()),
            })
        }

        fn set_in_use(&self, ids: &[&str]) {
            *self.in_use.lock().unwrap() = ids.iter().map(|s| s.to_string()).collect();
        }

        fn removed(&self) -> Vec<String> {
            self.removed.lock().unwrap().clone()
        }

        fn ids(&self) -> Vec<String> {
            let mut ids: Vec<String> = self
                .images
                .lock()
                .unwrap()
                .iter()
                .map(|i| i.id.clone())
                .collect();
            ids.sort();
            ids
        }

        fn used(&self) -> u64 {
            let images: u64 = self.images.lock().unwrap().iter().map(|i| i.size).sum();
            images + *self.other_used.lock().unwrap()
        }

        fn add(&self, id: &str, size: u64) {
            self.images.lock().unwrap().push(Image {
                id: id.into(),
                size,
                ..Image::default()
            });
        }
    }

    #[async_trait]
    impl ImageService for Fake {
        async fn list_images(&self) -> Result<Vec<Image>, ImageServiceError> {
            Ok(self.images.lock().unwrap().clone())
        }

        async fn image_status(&self, image: &str) -> Result<Option<Image>, ImageServiceError> {
            Ok(self
                .images
                .lock()
                .unwrap()
                .iter()
                .find(|i| i.id == image)
                .cloned())
        }

        async fn pull_image(
            &self,
            image: &str,
            _auth: Option<&AuthConfig>,
        ) -> Result<String, ImageServiceError> {
            Err(ImageServiceError::NotFound(image.into()))
        }

        async fn remove_image(&self, image: &str) -> Result<(), ImageServiceError> {
            if self.fail_removal.lock().unwrap().contains(image) {
                return Err(ImageServiceError::Runtime("image is busy".into()));
            }
            let mut images = self.images.lock().unwrap();
            let before = images.len();
            images.retain(|i| i.id != image);
            if images.len() == before {
                return Err(ImageServiceError::NotFound(image.into()));
            }
            self.removed.lock().unwrap().push(image.into());
            Ok(())
        }

        async fn image_fs_info(&self) -> Result<FsUsage, ImageServiceError> {
            Ok(FsUsage::default())
        }
    }

    #[async_trait]
    impl ImageFsStats for Fake {
        async fn image_fs_stats(&self) -> Result<FsStats, ImageGcError> {
            Ok(FsStats {
                capacity_bytes: self.capacity,
                available_bytes: self.capacity.saturating_sub(self.used()),
            })
        }
    }

    #[async_trait]
    impl ImagesInUse for Fake {
        async fn images_in_use(&self) -> Result<HashSet<String>, ImageGcError> {
            Ok(self.in_use.lock().unwrap().clone())
        }
    }

    fn manager(
        fake: &Arc<Fake>,
        policy: ImageGcPolicy,
    ) -> (Arc<ImageGcManager>, Arc<MemoryRecorder>) {
        let recorder = Arc::new(MemoryRecorder::default());
        let gc = ImageGcManager::new(
            fake.clone(),
            fake.clone(),
            fake.clone(),
            policy,
            recorder.clone(),
            "node-a".into(),
        )
        .unwrap();
        (Arc::new(gc), recorder)
    }

    fn past_min_age() -> Duration {
        ImageGcPolicy::default().min_age + Duration::from_secs(1)
    }

    #[tokio::test(start_paused = true)]
    async fn below_the_high_threshold_nothing_is_deleted() {
        // 84% used: just under the default 85%.
        let fake = Fake::new(
            100 * MIB,
            54 * MIB,
            &[("a", 10 * MIB, false), ("b", 20 * MIB, false)],
        );
        let (gc, recorder) = manager(&fake, ImageGcPolicy::default());
        gc.detect_images().await.unwrap();
        tokio::time::advance(Duration::from_secs(3600)).await;

        let report = gc.garbage_collect().await.unwrap();
        assert_eq!(report, GcReport::default());
        assert!(fake.removed().is_empty());
        assert!(recorder.events().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn above_the_high_threshold_least_recently_used_go_first_down_to_the_low_threshold() {
        let fake = Fake::new(
            1000 * MIB,
            530 * MIB,
            &[
                ("a", 100 * MIB, false),
                ("b", 100 * MIB, false),
                ("c", 100 * MIB, false),
                ("d", 100 * MIB, false),
            ],
        );
        let (gc, _) = manager(&fake, ImageGcPolicy::default());
        // a last used first, then b, then c; d never used.
        fake.set_in_use(&["a", "b", "c"]);
        gc.detect_images().await.unwrap();
        tokio::time::advance(Duration::from_secs(60)).await;
        fake.set_in_use(&["b", "c"]);
        gc.detect_images().await.unwrap();
        tokio::time::advance(Duration::from_secs(60)).await;
        fake.set_in_use(&["c"]);
        gc.detect_images().await.unwrap();
        tokio::time::advance(Duration::from_secs(60)).await;
        fake.set_in_use(&[]);
        gc.detect_images().await.unwrap();
        tokio::time::advance(Duration::from_secs(60)).await;

        // 930 of 1000 used (93%): free 200 - 70 = 130 MiB to reach 80%.
        let report = gc.garbage_collect().await.unwrap();
        assert_eq!(report.deleted, ["d", "a"]);
        assert_eq!(report.freed_bytes, 200 * MIB);
        assert_eq!(fake.removed(), ["d", "a"]);
        assert!(fake.used() * 100 / fake.capacity <= 80);
        assert_eq!(fake.ids(), ["b", "c"]);
        // The records of the deleted images are gone.
        let records: Vec<String> = gc.image_records().await.into_iter().map(|r| r.id).collect();
        assert_eq!(records, ["b", "c"]);
    }

    #[tokio::test(start_paused = true)]
    async fn in_use_and_pinned_images_are_never_deleted() {
        let fake = Fake::new(
            100 * MIB,
            50 * MIB,
            &[
                ("pause", 10 * MIB, true),
                ("used", 30 * MIB, false),
                ("x", 5 * MIB, false),
            ],
        );
        fake.set_in_use(&["used"]);
        let (gc, recorder) = manager(&fake, ImageGcPolicy::default());
        gc.detect_images().await.unwrap();
        tokio::time::advance(Duration::from_secs(3600)).await;

        // 95% used, 15 MiB wanted, only x (5 MiB) eligible.
        let err = gc.garbage_collect().await.unwrap_err();
        assert!(matches!(
            err,
            ImageGcError::FreeDiskSpaceFailed { wanted, freed } if wanted == 15 * MIB && freed == 5 * MIB
        ));
        assert_eq!(fake.removed(), ["x"]);
        assert_eq!(fake.ids(), ["pause", "used"]);

        let report = gc.delete_unused_images().await.unwrap();
        assert!(report.deleted.is_empty());
        assert_eq!(fake.ids(), ["pause", "used"]);
        assert_eq!(recorder.events().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn images_younger_than_the_minimum_age_are_kept() {
        let fake = Fake::new(100 * MIB, 80 * MIB, &[("old", 10 * MIB, false)]);
        let (gc, _) = manager(&fake, ImageGcPolicy::default());
        gc.detect_images().await.unwrap();
        tokio::time::advance(past_min_age()).await;
        fake.add("young", 5 * MIB);
        gc.detect_images().await.unwrap();
        tokio::time::advance(Duration::from_secs(60)).await;

        // 95% used; wants 15 MiB: the young image would be needed but is 1 minute old.
        let err = gc.garbage_collect().await.unwrap_err();
        assert!(
            matches!(err, ImageGcError::FreeDiskSpaceFailed { freed, .. } if freed == 10 * MIB)
        );
        assert_eq!(fake.ids(), ["young"]);

        // Once old enough it goes too.
        tokio::time::advance(Duration::from_secs(61)).await;
        let report = gc.delete_unused_images().await.unwrap();
        assert_eq!(report.deleted, ["young"]);
    }

    #[tokio::test(start_paused = true)]
    async fn images_unused_past_the_maximum_age_are_deleted_below_the_threshold() {
        let policy = ImageGcPolicy {
            max_age: Duration::from_secs(10 * 60),
            ..ImageGcPolicy::default()
        };
        // 15% used: far below the thresholds.
        let fake = Fake::new(
            1000 * MIB,
            0,
            &[
                ("stale", 50 * MIB, false),
                ("recent", 50 * MIB, false),
                ("running", 50 * MIB, false),
            ],
        );
        fake.set_in_use(&["recent", "running"]);
        let (gc, _) = manager(&fake, policy);
        gc.detect_images().await.unwrap();
        tokio::time::advance(Duration::from_secs(5 * 60)).await;
        gc.detect_images().await.unwrap(); // recent last used at 5m
        fake.set_in_use(&["running"]);

        tokio::time::advance(Duration::from_secs(6 * 60)).await; // 11m
        let report = gc.garbage_collect().await.unwrap();
        assert_eq!(report.deleted, ["stale"]);
        assert_eq!(report.freed_bytes, 50 * MIB);

        tokio::time::advance(Duration::from_secs(5 * 60)).await; // 16m
        let report = gc.garbage_collect().await.unwrap();
        assert_eq!(report.deleted, ["recent"]);
        assert_eq!(fake.ids(), ["running"]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_target_records_free_disk_space_failed_on_the_node() {
        let fake = Fake::new(100 * MIB, 60 * MIB, &[("a", 30 * MIB, false)]);
        fake.set_in_use(&["a"]);
        let (gc, recorder) = manager(&fake, ImageGcPolicy::default());
        tokio::time::advance(Duration::from_secs(3600)).await;

        let err = gc.garbage_collect().await.unwrap_err();
        assert!(matches!(
            err,
            ImageGcError::FreeDiskSpaceFailed { wanted, freed: 0 } if wanted == 10 * MIB
        ));
        let events = recorder.events();
        assert_eq!(events.len(), 1);
        let event = &events[0];
        assert_eq!(event.event_type, EventType::Warning);
        assert_eq!(event.reason, "FreeDiskSpaceFailed");
        assert_eq!(event.object.kind, "Node");
        assert_eq!(event.object.name, "node-a");
        assert_eq!(
            event.message,
            format!(
                "Failed to garbage collect required amount of images. Attempted to free {} \
                 bytes, but only found 0 bytes eligible to free.",
                10 * MIB
            )
        );
        assert!(fake.removed().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn records_of_vanished_images_are_dropped() {
        let fake = Fake::new(100 * MIB, 0, &[("a", MIB, false), ("b", MIB, false)]);
        let (gc, _) = manager(&fake, ImageGcPolicy::default());
        gc.detect_images().await.unwrap();
        assert_eq!(gc.image_records().await.len(), 2);

        fake.images.lock().unwrap().retain(|i| i.id != "b");
        gc.detect_images().await.unwrap();
        let records = gc.image_records().await;
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].id, "a");
    }

    #[tokio::test(start_paused = true)]
    async fn detection_keeps_first_detected_and_updates_last_used() {
        let fake = Fake::new(100 * MIB, 0, &[("a", MIB, false)]);
        let (gc, _) = manager(&fake, ImageGcPolicy::default());
        let t0 = Instant::now();
        gc.detect_images().await.unwrap();
        tokio::time::advance(Duration::from_secs(30)).await;
        fake.set_in_use(&["a"]);
        gc.detect_images().await.unwrap();
        let record = &gc.image_records().await[0];
        assert_eq!(record.first_detected, t0);
        assert_eq!(record.last_used, Some(t0 + Duration::from_secs(30)));
        assert_eq!(record.size, MIB);
    }

    #[tokio::test(start_paused = true)]
    async fn delete_unused_images_removes_every_eligible_image() {
        let fake = Fake::new(
            100 * MIB,
            0,
            &[
                ("a", MIB, false),
                ("b", 2 * MIB, false),
                ("c", 3 * MIB, false),
                ("used", MIB, false),
                ("pause", MIB, true),
            ],
        );
        fake.set_in_use(&["used"]);
        let (gc, _) = manager(&fake, ImageGcPolicy::default());
        gc.detect_images().await.unwrap();
        tokio::time::advance(past_min_age()).await;
        fake.add("young", MIB);

        let report = gc.delete_unused_images().await.unwrap();
        let mut deleted = report.deleted.clone();
        deleted.sort();
        assert_eq!(deleted, ["a", "b", "c"]);
        assert_eq!(report.freed_bytes, 6 * MIB);
        assert_eq!(fake.ids(), ["pause", "used", "young"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_removal_is_skipped_and_gc_goes_on() {
        let fake = Fake::new(
            100 * MIB,
            70 * MIB,
            &[
                ("a", 10 * MIB, false),
                ("b", 10 * MIB, false),
                ("c", 10 * MIB, false),
            ],
        );
        fake.set_in_use(&["b", "c"]);
        let (gc, _) = manager(&fake, ImageGcPolicy::default());
        gc.detect_images().await.unwrap();
        tokio::time::advance(Duration::from_secs(60)).await;
        fake.set_in_use(&["c"]);
        gc.detect_images().await.unwrap();
        fake.set_in_use(&[]);
        tokio::time::advance(past_min_age()).await;
        fake.fail_removal.lock().unwrap().insert("a".into());

        // 100% used; wants 20 MiB: a (first in order) fails, b and c are removed instead.
        let report = gc.garbage_collect().await.unwrap();
        assert_eq!(report.deleted, ["b", "c"]);
        assert_eq!(report.freed_bytes, 20 * MIB);
        assert_eq!(fake.ids(), ["a"]);
        // a keeps its record for the next pass.
        assert_eq!(gc.image_records().await.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_capacity_is_reported() {
        let fake = Fake::new(0, 0, &[("a", MIB, false)]);
        let (gc, recorder) = manager(&fake, ImageGcPolicy::default());
        let err = gc.garbage_collect().await.unwrap_err();
        assert!(matches!(err, ImageGcError::InvalidDiskCapacity));
        let events = recorder.events();
        assert_eq!(events[0].reason, "InvalidDiskCapacity");
        assert_eq!(events[0].message, "invalid capacity 0 on image filesystem");
    }

    #[tokio::test(start_paused = true)]
    async fn run_collects_periodically_and_reports_repeated_failures() {
        let fake = Fake::new(100 * MIB, 90 * MIB, &[("a", 10 * MIB, false)]);
        let (gc, recorder) = manager(&fake, ImageGcPolicy::default());
        let task = gc.clone().run(IMAGE_GC_PERIOD);

        // First pass at start: `a` is new, too young; the target cannot be reached.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(fake.removed().is_empty());
        let reasons: Vec<String> = recorder.events().into_iter().map(|e| e.reason).collect();
        assert_eq!(reasons, ["FreeDiskSpaceFailed"]);

        // Second pass 5 minutes later: `a` goes, but 90% stays used: failed twice in a row.
        tokio::time::sleep(IMAGE_GC_PERIOD).await;
        assert_eq!(fake.removed(), ["a"]);
        let reasons: Vec<String> = recorder.events().into_iter().map(|e| e.reason).collect();
        assert_eq!(
            reasons,
            [
                "FreeDiskSpaceFailed",
                "FreeDiskSpaceFailed",
                "ImageGCFailed"
            ]
        );
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn run_only_detects_when_periodic_gc_is_disabled() {
        let policy = ImageGcPolicy {
            high_threshold_percent: 100,
            low_threshold_percent: 100,
            ..ImageGcPolicy::default()
        };
        assert!(policy.periodic_gc_disabled());
        let fake = Fake::new(100 * MIB, 90 * MIB, &[("a", 10 * MIB, false)]);
        let (gc, recorder) = manager(&fake, policy);
        let task = gc.clone().run(IMAGE_GC_PERIOD);
        tokio::time::sleep(IMAGE_GC_PERIOD * 3).await;
        assert!(fake.removed().is_empty());
        assert!(recorder.events().is_empty());
        assert_eq!(gc.image_records().await.len(), 1);
        task.abort();
    }

    fn record(id: &str, first: Instant, last: Option<Instant>, size: u64) -> ImageRecord {
        ImageRecord {
            id: id.into(),
            first_detected: first,
            last_used: last,
            size,
            pinned: false,
        }
    }

    #[test]
    fn select_victims_orders_by_last_used_then_first_detected() {
        let t0 = Instant::now();
        let t = |s: u64| t0 + Duration::from_secs(s);
        let now = t(1000);
        let records = [
            record("late", t(0), Some(t(500)), 10),
            record("early-detected", t(0), Some(t(100)), 10),
            record("later-detected", t(10), Some(t(100)), 10),
            record("never", t(20), None, 10),
            record("busy", t(0), Some(t(1)), 10),
            record("young", t(900), None, 10),
        ];
        let in_use = HashSet::from(["busy".to_string()]);
        let policy = ImageGcPolicy::default();

        let all = select_victims(&records, &in_use, now, &policy, u64::MAX);
        assert_eq!(all, ["never", "early-detected", "later-detected", "late"]);
        assert_eq!(
            select_victims(&records, &in_use, now, &policy, 11),
            ["never", "early-detected"]
        );
        assert_eq!(
            select_victims(&records, &in_use, now, &policy, 10),
            ["never"]
        );
        assert!(select_victims(&records, &in_use, now, &policy, 0).is_empty());
    }

    #[test]
    fn select_expired_needs_a_maximum_age() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(3600);
        let records = [
            record("old", t0, Some(t0), 1),
            record("fresh", t0, Some(now - Duration::from_secs(60)), 1),
        ];
        let mut policy = ImageGcPolicy::default();
        assert!(select_expired(&records, &HashSet::new(), now, &policy).is_empty());
        policy.max_age = Duration::from_secs(600);
        assert_eq!(
            select_expired(&records, &HashSet::new(), now, &policy),
            ["old"]
        );
    }

    #[test]
    fn thresholds_follow_upstream_arithmetic() {
        assert_eq!(usage_percent(1000, 150), 85);
        assert_eq!(usage_percent(1000, 151), 85);
        assert_eq!(usage_percent(1000, 0), 100);
        assert_eq!(usage_percent(1000, 1000), 0);
        assert_eq!(amount_to_free(1000, 150, 80), 50);
        assert_eq!(amount_to_free(1000, 300, 80), 0);
        assert_eq!(amount_to_free(u64::MAX, 0, 0), u64::MAX);
    }

    #[test]
    fn policy_validation() {
        assert!(ImageGcPolicy::default().validate().is_ok());
        let high = ImageGcPolicy {
            high_threshold_percent: 101,
            ..ImageGcPolicy::default()
        };
        assert!(matches!(
            high.validate(),
            Err(ImageGcError::InvalidPolicy {
                field: "imageGCHighThresholdPercent",
                ..
            })
        ));
        let inverted = ImageGcPolicy {
            high_threshold_percent: 50,
            low_threshold_percent: 60,
            ..ImageGcPolicy::default()
        };
        let err = inverted.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid image GC policy: imageGCLowThresholdPercent 60 can not be higher than \
             imageGCHighThresholdPercent 50"
        );
    }

    #[tokio::test]
    async fn statvfs_reads_the_filesystem_of_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let stats = StatvfsImageFsStats::new(dir.path());
        let fs = stats.image_fs_stats().await.unwrap();
        assert!(fs.capacity_bytes > 0);
        assert!(fs.available_bytes <= fs.capacity_bytes);

        let missing = StatvfsImageFsStats::new(dir.path().join("missing"));
        assert!(matches!(
            missing.image_fs_stats().await,
            Err(ImageGcError::Statvfs { .. })
        ));
    }
}
