//! Pod sources and their merge: static pod manifests from a directory (or a single file) and
//! from an HTTP URL, decoded, defaulted and validated like the upstream kubelet
//! (`pkg/kubelet/config`), then merged into incremental [`PodUpdate`]s.
//!
//! The pieces:
//! - [`decode_static_pod`] / [`decode_static_pods`]: bytes of one manifest (YAML or JSON) to a
//!   [`Pod`] with the v1 scheme defaults, the static pod name (`<name>-<node>`), a UID derived
//!   from the content and the origin, the `kubernetes.io/config.hash` annotation, and the
//!   validation of upstream's `ValidatePodCreate` (a useful subset, same field paths and
//!   messages).
//! - [`PodConfig`]: the merger. Every source sends complete snapshots of its pods; the merger
//!   compares them by UID with what the source sent before and emits [`PodUpdate`]s
//!   (REMOVE, ADD, UPDATE, DELETE, RECONCILE) on the [`PodUpdates`] channel.
//! - [`PodConfig::file_source`]: watches `staticPodPath` with inotify, with a full re-list
//!   every `fileCheckFrequency` as the safety net.
//! - [`PodConfig::http_source`]: polls `staticPodURL` every `httpCheckFrequency`.
//!
//! A manifest that fails to decode or validate is rejected on its own: it is logged at warn and
//! recorded in [`SourceHandle::rejected`]; the other pods of the source are unaffected.
//!
//! ```no_run
//! # async fn demo() -> Result<(), node_core::config::PodSourceError> {
//! use std::time::Duration;
//! use node_core::config::PodConfig;
//!
//! let (config, mut updates) = PodConfig::new("node-1");
//! let _file = config.file_source("/etc/kubernetes/manifests", Duration::from_secs(20));
//! while let Some(update) = updates.recv().await {
//!     println!("{:?} {} pods from {}", update.op, update.pods.len(), update.source);
//!     if updates.seen_all_sources() {
//!         // Now it is safe to stop pods whose manifests are gone.
//!     }
//! }
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "api")]
pub mod api;
mod defaults;
mod error;
mod file;
mod http;
mod merge;
mod security_validation;
mod static_pod;
mod validation;
mod watch;

pub use defaults::default_pull_policy;
pub use error::{FieldError, ManifestOrigin, PodSourceError};
pub use merge::{PodConfig, PodUpdates, SourceHandle, SourceSender};
pub use static_pod::{MAX_MANIFEST_SIZE, decode_static_pod, decode_static_pods};
pub use validation::{dns1123_label, validate_pod};

use k8s_openapi::api::core::v1::Pod;

/// `kubernetes.io/config.source` value of pods read from `staticPodPath`.
pub const FILE_SOURCE: &str = "file";
/// `kubernetes.io/config.source` value of pods read from `staticPodURL`.
pub const HTTP_SOURCE: &str = "http";
/// `kubernetes.io/config.source` value of pods read from the API server.
pub const API_SOURCE: &str = "api";

/// Annotation naming the source a pod came from (`file`, `http`, `api`).
pub const CONFIG_SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
/// Annotation holding the hash of a static pod's manifest (its UID).
pub const CONFIG_HASH_ANNOTATION: &str = "kubernetes.io/config.hash";
/// Annotation holding the time (RFC 3339 with nanoseconds) the kubelet first saw the pod.
pub const CONFIG_SEEN_ANNOTATION: &str = "kubernetes.io/config.seen";
/// Annotation marking a mirror pod; its value is the static pod's config hash.
pub const CONFIG_MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// What a [`PodUpdate`] asks the kubelet to do with its pods (upstream `kubetypes.PodOperation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PodOperation {
    /// Pods new to the source.
    Add,
    /// Pods whose spec, labels, annotations or deletion grace period changed.
    Update,
    /// Pods whose deletion timestamp is set: delete them gracefully.
    Delete,
    /// Pods gone from the source: stop them.
    Remove,
    /// Pods whose status alone changed.
    Reconcile,
}

impl PodOperation {
    /// The upstream name of the operation (`ADD`, `UPDATE`, ...), as the kubelet logs it.
    pub fn as_str(self) -> &'static str {
        match self {
            PodOperation::Add => "ADD",
            PodOperation::Update => "UPDATE",
            PodOperation::Delete => "DELETE",
            PodOperation::Remove => "REMOVE",
            PodOperation::Reconcile => "RECONCILE",
        }
    }
}

impl std::fmt::Display for PodOperation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change of the desired pods of one source.
#[derive(Debug, Clone, PartialEq)]
pub struct PodUpdate {
    /// What to do with `pods`.
    pub op: PodOperation,
    /// The source the pods come from (`file`, `http`, ...).
    pub source: String,
    /// The pods; empty only for the first update of a source that has no pods.
    pub pods: Vec<Pod>,
}
