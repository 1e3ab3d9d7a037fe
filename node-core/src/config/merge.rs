//! The merger of pod sources (upstream `config.go`, incremental mode): each source sends
//! complete snapshots; the merger diffs them by UID and emits [`PodUpdate`]s.

use crate::pod_manager::full_name;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::error::PodSourceError;
use super::{
    CONFIG_MIRROR_ANNOTATION, CONFIG_SEEN_ANNOTATION, CONFIG_SOURCE_ANNOTATION, FILE_SOURCE,
    HTTP_SOURCE, PodOperation, PodUpdate, file, http,
};

/// Capacity of the update channel (upstream buffers 50).
const UPDATES_CAPACITY: usize = 50;

/// Locks a mutex, recovering the data if a holder panicked (the data stays consistent: every
/// critical section here only replaces whole values).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What every source and the consumer share.
struct Shared {
    node_name: String,
    tx: mpsc::Sender<PodUpdate>,
    /// Pods per source, by UID, as last merged.
    pods: Mutex<HashMap<String, BTreeMap<String, Pod>>>,
    /// Sources configured on this `PodConfig`.
    configured: Mutex<BTreeSet<String>>,
    /// Sources whose first update the consumer has received.
    seen: Mutex<BTreeSet<String>>,
}

impl Shared {
    fn seen_all_sources(&self) -> bool {
        let configured = lock(&self.configured);
        let seen = lock(&self.seen);
        configured.is_subset(&seen)
    }
}

/// Why pods of one source were rejected, shared by the source task, the merger and the handle.
#[derive(Default)]
pub(crate) struct SourceStatus {
    /// Errors of the source itself, by file path or URL.
    source: Mutex<BTreeMap<String, String>>,
    /// Pods the merger dropped (duplicate names), by pod full name.
    merge: Mutex<BTreeMap<String, String>>,
}

impl SourceStatus {
    /// Replaces the source's own errors.
    pub(crate) fn set_source_errors(&self, errors: BTreeMap<String, String>) {
        *lock(&self.source) = errors;
    }

    /// Records (or with `None` clears) the source's error about one key.
    pub(crate) fn set_source_error(&self, key: &str, error: Option<String>) {
        let mut map = lock(&self.source);
        match error {
            Some(error) => map.insert(key.to_owned(), error),
            None => map.remove(key),
        };
    }

    fn rejected(&self) -> BTreeMap<String, String> {
        let mut all = lock(&self.source).clone();
        all.extend(lock(&self.merge).clone());
        all
    }
}

/// The merger of pod sources and the factory of the built-in sources.
///
/// Each source sends complete snapshots of its pods; for each source the merger keeps the pods
/// by UID and emits, per snapshot, in this order: `Remove` (UIDs gone), `Add` (new UIDs,
/// stamped with `kubernetes.io/config.seen` and `kubernetes.io/config.source`), `Update`
/// (spec, labels, non-local annotations or deletion grace period changed), `Delete` (deletion
/// timestamp set), then `Reconcile` (status alone changed). The first snapshot of a source
/// always emits something, an empty `Add` if nothing else, so the consumer knows the source
/// has reported. Within one snapshot a second pod with the same `name_namespace` (or UID) is
/// dropped with a warning and shows in the source's rejections.
///
/// Sources run as tokio tasks: create them inside a tokio runtime.
#[derive(Clone)]
pub struct PodConfig {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PodConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodConfig")
            .field("node_name", &self.shared.node_name)
            .field("sources", &*lock(&self.shared.configured))
            .finish_non_exhaustive()
    }
}

impl PodConfig {
    /// A merger for the pods of node `node_name`, and the channel of its updates.
    pub fn new(node_name: impl Into<String>) -> (PodConfig, PodUpdates) {
        let (tx, rx) = mpsc::channel(UPDATES_CAPACITY);
        let shared = Arc::new(Shared {
            node_name: node_name.into(),
            tx,
            pods: Mutex::new(HashMap::new()),
            configured: Mutex::new(BTreeSet::new()),
            seen: Mutex::new(BTreeSet::new()),
        });
        let updates = PodUpdates {
            rx,
            shared: shared.clone(),
        };
        (PodConfig { shared }, updates)
    }

    /// The node name the sources decode manifests for.
    pub fn node_name(&self) -> &str {
        &self.shared.node_name
    }

    /// A sender of snapshots for a source named `name` (e.g. `api` for a custom API server
    /// source). The source counts as configured from now on, so [`seen_all_sources`] waits for
    /// its first snapshot. Use one sender per source name.
    ///
    /// [`seen_all_sources`]: PodConfig::seen_all_sources
    pub fn source(&self, name: &str) -> SourceSender {
        lock(&self.shared.configured).insert(name.to_owned());
        SourceSender {
            name: name.to_owned(),
            shared: self.shared.clone(),
            status: Arc::new(SourceStatus::default()),
            first_sent: false,
        }
    }

    /// Starts the `file` source on `path` (`staticPodPath`: a directory of manifests, or a
    /// single manifest file), re-listed every `period` (`fileCheckFrequency`) and watched with
    /// inotify in between.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn file_source(&self, path: impl Into<PathBuf>, period: Duration) -> SourceHandle {
        let sender = self.source(FILE_SOURCE);
        let status = sender.status.clone();
        let task = tokio::spawn(file::run(sender, path.into(), period));
        SourceHandle {
            name: FILE_SOURCE.to_owned(),
            status,
            task,
        }
    }

    /// Starts the `http` source: GET `url` (`staticPodURL`) now and every `period`
    /// (`httpCheckFrequency`) with `headers` (`staticPodURLHeader`, every value added).
    ///
    /// Only `http://` URLs are supported for now; `https://` gives
    /// [`PodSourceError::UnsupportedScheme`]. A malformed URL or header is an error too.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn http_source(
        &self,
        url: &str,
        headers: &BTreeMap<String, Vec<String>>,
        period: Duration,
    ) -> Result<SourceHandle, PodSourceError> {
        let request = http::Request::new(url, headers)?;
        let sender = self.source(HTTP_SOURCE);
        let status = sender.status.clone();
        let task = tokio::spawn(http::run(sender, request, period));
        Ok(SourceHandle {
            name: HTTP_SOURCE.to_owned(),
            status,
            task,
        })
    }

    /// Whether the consumer has received the first update of every configured source. Until
    /// then the kubelet must not stop pods merely because no source lists them.
    pub fn seen_all_sources(&self) -> bool {
        self.shared.seen_all_sources()
    }
}

/// The receiving end of a [`PodConfig`]: the [`PodUpdate`]s of every source.
///
/// Receiving an update marks its source as seen (upstream's `sourcesReady.AddSource` after
/// each update), so [`seen_all_sources`](Self::seen_all_sources) never runs ahead of what the
/// consumer has actually processed.
pub struct PodUpdates {
    rx: mpsc::Receiver<PodUpdate>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PodUpdates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodUpdates").finish_non_exhaustive()
    }
}

impl PodUpdates {
    /// The next update; `None` once every source and the [`PodConfig`] are gone.
    /// Cancel-safe.
    pub async fn recv(&mut self) -> Option<PodUpdate> {
        let update = self.rx.recv().await?;
        lock(&self.shared.seen).insert(update.source.clone());
        Some(update)
    }

    /// The next update if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Option<PodUpdate> {
        let update = self.rx.try_recv().ok()?;
        lock(&self.shared.seen).insert(update.source.clone());
        Some(update)
    }

    /// Whether an update of every configured source has been received.
    pub fn seen_all_sources(&self) -> bool {
        self.shared.seen_all_sources()
    }
}

/// Sends the snapshots of one source to the merger. The built-in sources use one internally;
/// [`PodConfig::source`] gives one to a custom source.
pub struct SourceSender {
    name: String,
    shared: Arc<Shared>,
    status: Arc<SourceStatus>,
    first_sent: bool,
}

impl std::fmt::Debug for SourceSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceSender")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SourceSender {
    /// The source name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node name pods are decoded for.
    pub fn node_name(&self) -> &str {
        &self.shared.node_name
    }

    /// The rejections of this source, shared with the source's task.
    pub(crate) fn status(&self) -> &Arc<SourceStatus> {
        &self.status
    }

    /// Merges a complete snapshot of the source's pods and sends the resulting updates.
    /// Fails with [`PodSourceError::Closed`] once the receiver is gone.
    pub async fn send(&mut self, pods: Vec<Pod>) -> Result<(), PodSourceError> {
        let updates = self.merge(pods);
        self.first_sent = true;
        for update in updates {
            self.shared
                .tx
                .send(update)
                .await
                .map_err(|_| PodSourceError::Closed)?;
        }
        Ok(())
    }

    /// Whether the receiver of updates is gone.
    pub fn is_closed(&self) -> bool {
        self.shared.tx.is_closed()
    }

    /// Why pods of this source were dropped by the merger (duplicate names), by pod full name.
    pub fn rejected(&self) -> BTreeMap<String, String> {
        self.status.rejected()
    }

    fn merge(&self, snapshot: Vec<Pod>) -> Vec<PodUpdate> {
        let first = !self.first_sent;
        let source = self.name.as_str();
        let mut rejected = BTreeMap::new();
        let mut names = HashSet::new();
        let mut uids = HashSet::new();
        let mut pods_by_source = lock(&self.shared.pods);
        let mut old = pods_by_source.remove(source).unwrap_or_default();
        let mut current = BTreeMap::new();
        let (mut adds, mut updates, mut deletes, mut reconciles) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let now = now_rfc3339();
        for mut pod in snapshot {
            let full_name = full_name(&pod);
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            if !names.insert(full_name.clone()) || !uids.insert(uid.clone()) {
                let message = format!(
                    "Error validating pod {full_name}({uid}) from {source} due to duplicate pod \
                     name {:?}, ignoring",
                    pod.metadata.name.as_deref().unwrap_or("")
                );
                tracing::warn!(pod = %full_name, %uid, source, reason = "FailedValidation",
                    "pod failed validation due to duplicate pod name, ignoring");
                rejected.insert(full_name, message);
                continue;
            }
            annotations(&mut pod).insert(CONFIG_SOURCE_ANNOTATION.to_owned(), source.to_owned());
            match old.remove(&uid) {
                Some(mut existing) => {
                    match check_and_update(&mut existing, pod) {
                        Change::None => {}
                        Change::Reconcile => reconciles.push(existing.clone()),
                        Change::Update => updates.push(existing.clone()),
                        Change::Delete => deletes.push(existing.clone()),
                    }
                    current.insert(uid, existing);
                }
                None => {
                    annotations(&mut pod).insert(CONFIG_SEEN_ANNOTATION.to_owned(), now.clone());
                    adds.push(pod.clone());
                    current.insert(uid, pod);
                }
            }
        }
        let removes: Vec<Pod> = old.into_values().collect();
        pods_by_source.insert(source.to_owned(), current);
        drop(pods_by_source);
        *lock(&self.status.merge) = rejected;

        let nothing_sent = adds.is_empty() && updates.is_empty() && deletes.is_empty();
        let mut out = Vec::new();
        for (op, pods) in [
            (PodOperation::Remove, removes),
            (PodOperation::Add, adds),
            (PodOperation::Update, updates),
            (PodOperation::Delete, deletes),
        ] {
            if !pods.is_empty() {
                out.push(update(op, source, pods));
            }
        }
        if first && nothing_sent {
            // The first snapshot always says something, so the source can be marked as seen.
            out.push(update(PodOperation::Add, source, Vec::new()));
        }
        if !reconciles.is_empty() {
            out.push(update(PodOperation::Reconcile, source, reconciles));
        }
        out
    }
}

/// A running source. Dropping the handle (or [`stop`](Self::stop)) stops the source.
pub struct SourceHandle {
    name: String,
    status: Arc<SourceStatus>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for SourceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceHandle")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SourceHandle {
    /// The source name (`file`, `http`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The manifests currently rejected and why: keyed by file path or URL for manifests that
    /// failed to read, decode or validate, and by pod full name (`name_namespace`) for pods the
    /// merger dropped as duplicates.
    pub fn rejected(&self) -> BTreeMap<String, String> {
        self.status.rejected()
    }

    /// Whether the source task has ended (its receiver closed, or it was stopped).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the source.
    pub fn stop(self) {
        // Drop aborts the task.
    }
}

impl Drop for SourceHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn update(op: PodOperation, source: &str, pods: Vec<Pod>) -> PodUpdate {
    PodUpdate {
        op,
        source: source.to_owned(),
        pods,
    }
}

/// Upstream's `kubecontainer.GetPodFullName`: `name_namespace`.
fn annotations(pod: &mut Pod) -> &mut BTreeMap<String, String> {
    pod.metadata.annotations.get_or_insert_with(BTreeMap::new)
}

/// The time now, RFC 3339 with nanoseconds (upstream `kubetypes.NewTimestamp().GetString()`).
fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

const LOCAL_ANNOTATIONS: [&str; 3] = [
    CONFIG_SOURCE_ANNOTATION,
    CONFIG_MIRROR_ANNOTATION,
    CONFIG_SEEN_ANNOTATION,
];

/// Annotations equal apart from the kubelet's local ones.
fn annotations_equal(
    a: &Option<BTreeMap<String, String>>,
    b: &Option<BTreeMap<String, String>>,
) -> bool {
    let filtered = |m: &Option<BTreeMap<String, String>>| -> BTreeMap<String, String> {
        m.iter()
            .flatten()
            .filter(|(k, _)| !LOCAL_ANNOTATIONS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    filtered(a) == filtered(b)
}

fn differ_semantically(existing: &Pod, new: &Pod) -> bool {
    existing.spec != new.spec
        || existing.metadata.labels.as_ref().filter(|l| !l.is_empty())
            != new.metadata.labels.as_ref().filter(|l| !l.is_empty())
        || existing.metadata.deletion_timestamp != new.metadata.deletion_timestamp
        || existing.metadata.deletion_grace_period_seconds
            != new.metadata.deletion_grace_period_seconds
        || !annotations_equal(&existing.metadata.annotations, &new.metadata.annotations)
}

enum Change {
    None,
    Reconcile,
    Update,
    Delete,
}

/// Upstream's `checkAndUpdatePod`: folds `new` into `existing` and says what changed.
fn check_and_update(existing: &mut Pod, new: Pod) -> Change {
    if !differ_semantically(existing, &new) {
        if existing.status != new.status {
            existing.status = new.status;
            return Change::Reconcile;
        }
        return Change::None;
    }
    let deleting = new.metadata.deletion_timestamp.is_some();
    let old_annotations = existing.metadata.annotations.take().unwrap_or_default();
    let mut annotations = new.metadata.annotations.unwrap_or_default();
    for key in LOCAL_ANNOTATIONS {
        if let Some(value) = old_annotations.get(key) {
            annotations.insert(key.to_owned(), value.clone());
        }
    }
    existing.metadata.annotations = Some(annotations);
    existing.spec = new.spec;
    existing.metadata.labels = new.metadata.labels;
    existing.metadata.deletion_timestamp = new.metadata.deletion_timestamp;
    existing.metadata.deletion_grace_period_seconds = new.metadata.deletion_grace_period_seconds;
    existing.metadata.generation = new.metadata.generation;
    existing.status = new.status;
    if deleting {
        Change::Delete
    } else {
        Change::Update
    }
}
