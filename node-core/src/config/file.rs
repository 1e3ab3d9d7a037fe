//! The `file` source: static pod manifests in `staticPodPath` (upstream `file.go`,
//! `file_linux.go`).
//!
//! - The path is a directory of manifests (one pod per file; names starting with `.` are
//!   ignored; subdirectories are not entered) or a single manifest file.
//! - inotify reports changes as they happen; a full re-list every `fileCheckFrequency` is the
//!   safety net. A file is re-read when it is closed after writing, created (unless still
//!   empty), moved in, moved out, deleted or chmod-ed, so both editor patterns (write a temp
//!   file and rename it into place; truncate and write) give one consistent read.
//! - Every change sends the complete list of the source's pods (a snapshot) to the merger.
//! - A manifest that fails to read, decode or validate is rejected on its own: logged at warn
//!   when its content changes and kept in the source's rejections; its pod (if it had one) is
//!   no longer in the snapshot. The other pods are unaffected.
//! - Two files declaring the same namespace/name: the first in path order wins, the other is
//!   rejected naming both.
//! - A missing path gives an empty snapshot (so the source counts as seen); the source watches
//!   the nearest existing ancestor directory and picks the path up when it appears.
//! - A directory that cannot be listed keeps the previous pods and records the error.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::time::{Instant, MissedTickBehavior};

use super::error::{ManifestOrigin, PodSourceError, chain};
use super::merge::SourceSender;
use super::static_pod::{Fnv128a, MAX_MANIFEST_SIZE, decode_static_pod};
use super::watch::{Change, PathKind, WatchEvent, Watcher, path_kind};

/// The decoded state of one manifest file.
struct Entry {
    /// Hash of the bytes last read; unchanged bytes are not decoded again.
    digest: Option<u128>,
    /// The pod, or why the file was rejected.
    result: Result<Pod, String>,
}

/// Everything the file source knows about its path; lives on blocking threads while it reads.
struct FileState {
    path: PathBuf,
    node_name: String,
    entries: BTreeMap<PathBuf, Entry>,
    /// Why the path itself could not be listed, if it could not.
    list_error: Option<String>,
}

impl FileState {
    fn new(path: PathBuf, node_name: String) -> Self {
        FileState {
            path,
            node_name,
            entries: BTreeMap::new(),
            list_error: None,
        }
    }

    /// Re-reads everything. Returns the kind of the path, and whether the snapshot is usable
    /// (false when the directory could not be listed: the previous pods stay).
    fn relist(&mut self) -> (PathKind, bool) {
        let kind = path_kind(&self.path);
        self.list_error = None;
        match kind {
            PathKind::Missing => {
                tracing::debug!(path = %self.path.display(), "path does not exist, ignoring");
                self.entries.clear();
            }
            PathKind::File => {
                let path = self.path.clone();
                self.entries.retain(|p, _| *p == path);
                self.load(&path, false);
            }
            PathKind::Dir(..) => match self.list_dir() {
                Ok(files) => {
                    self.entries.retain(|p, _| files.contains(p));
                    for file in files {
                        self.load(&file, false);
                    }
                }
                Err(e) => {
                    let error = PodSourceError::Read {
                        origin: ManifestOrigin::File(self.path.clone()),
                        source: e,
                    };
                    tracing::warn!(path = %self.path.display(), error = %chain(&error),
                        "unable to read config path");
                    self.list_error = Some(chain(&error));
                    return (kind, false);
                }
            },
            PathKind::Other => {
                let error = PodSourceError::NotAFile {
                    origin: ManifestOrigin::File(self.path.clone()),
                };
                tracing::warn!(path = %self.path.display(), "path is not a directory or file");
                self.entries.clear();
                self.list_error = Some(error.to_string());
            }
        }
        (kind, true)
    }

    /// The visible (not hidden) entries of the directory, sorted.
    fn list_dir(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.path)? {
            let entry = entry?;
            if is_hidden(&entry.file_name()) {
                continue;
            }
            files.push(entry.path());
        }
        files.sort();
        Ok(files)
    }

    /// Re-reads the entries named by inotify.
    fn refresh(&mut self, changes: &[Change], dir_mode: bool) {
        for change in changes {
            if dir_mode && is_hidden(&change.name) {
                tracing::trace!(name = ?change.name, "ignored pod manifest, because it starts with dots");
                continue;
            }
            let file = if dir_mode {
                self.path.join(&change.name)
            } else {
                self.path.clone()
            };
            self.load(&file, change.created_only);
        }
    }

    /// Reads and decodes one file into `entries` (or drops it when gone or not a file).
    fn load(&mut self, file: &Path, created_only: bool) {
        let origin = ManifestOrigin::File(file.to_path_buf());
        let meta = match std::fs::metadata(file) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.entries.remove(file);
                return;
            }
            Err(e) => {
                self.reject(file, None, PodSourceError::Read { origin, source: e });
                return;
            }
        };
        if meta.is_dir() {
            if file != self.path {
                tracing::debug!(path = %file.display(),
                    "provided manifest path is a directory, not recursing into manifest path");
            }
            self.entries.remove(file);
            return;
        }
        if !meta.is_file() {
            self.reject(file, None, PodSourceError::NotAFile { origin });
            return;
        }
        if created_only && meta.len() == 0 {
            // Just created and still empty: its close-after-write will follow.
            return;
        }
        let data = match read_limited(file) {
            Ok(data) => data,
            Err(error) => {
                self.reject(file, None, error);
                return;
            }
        };
        let mut hasher = Fnv128a::new();
        hasher.write(&data);
        let digest = hasher.finish();
        if self
            .entries
            .get(file)
            .is_some_and(|e| e.digest == Some(digest))
        {
            return;
        }
        tracing::debug!(path = %file.display(), "reading config file");
        match decode_static_pod(&data, &origin, &self.node_name) {
            Ok(pod) => {
                self.entries.insert(
                    file.to_path_buf(),
                    Entry {
                        digest: Some(digest),
                        result: Ok(pod),
                    },
                );
            }
            Err(error) => self.reject(file, Some(digest), error),
        }
    }

    fn reject(&mut self, file: &Path, digest: Option<u128>, error: PodSourceError) {
        let message = chain(&error);
        eprintln!(
            "DEBUG reject {message} at {:?}",
            std::time::SystemTime::now()
        );
        let repeated = self
            .entries
            .get(file)
            .is_some_and(|e| e.result.as_ref().err() == Some(&message));
        if !repeated {
            tracing::warn!(path = %file.display(), error = %message,
                "could not process manifest file");
        }
        self.entries.insert(
            file.to_path_buf(),
            Entry {
                digest,
                result: Err(message),
            },
        );
    }

    /// The pods in path order, with duplicates (same namespace/name) rejected, and every
    /// rejection by path.
    fn snapshot(&self) -> (Vec<Pod>, BTreeMap<String, String>) {
        let mut pods = Vec::new();
        let mut rejected = BTreeMap::new();
        let mut owners: HashMap<String, &Path> = HashMap::new();
        if let Some(error) = &self.list_error {
            rejected.insert(self.path.display().to_string(), error.clone());
        }
        for (file, entry) in &self.entries {
            match &entry.result {
                Ok(pod) => {
                    let key = format!(
                        "{}/{}",
                        pod.metadata.namespace.as_deref().unwrap_or(""),
                        pod.metadata.name.as_deref().unwrap_or("")
                    );
                    if let Some(first) = owners.get(key.as_str()) {
                        let error = PodSourceError::DuplicatePod {
                            origin: ManifestOrigin::File(file.clone()),
                            pod: key,
                            first: first.to_path_buf(),
                        };
                        tracing::warn!(path = %file.display(), error = %error,
                            "could not process manifest file");
                        rejected.insert(file.display().to_string(), error.to_string());
                        continue;
                    }
                    owners.insert(key, file);
                    pods.push(pod.clone());
                }
                Err(error) => {
                    rejected.insert(file.display().to_string(), error.clone());
                }
            }
        }
        (pods, rejected)
    }
}

fn is_hidden(name: &OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

/// Reads at most [`MAX_MANIFEST_SIZE`] bytes; more is an error.
fn read_limited(file: &Path) -> Result<Vec<u8>, PodSourceError> {
    let origin = || ManifestOrigin::File(file.to_path_buf());
    let read = || -> std::io::Result<Vec<u8>> {
        let mut data = Vec::new();
        std::fs::File::open(file)?
            .take(MAX_MANIFEST_SIZE as u64 + 1)
            .read_to_end(&mut data)?;
        Ok(data)
    };
    let data = read().map_err(|source| PodSourceError::Read {
        origin: origin(),
        source,
    })?;
    if data.len() > MAX_MANIFEST_SIZE {
        return Err(PodSourceError::TooLarge {
            origin: origin(),
            limit: MAX_MANIFEST_SIZE,
        });
    }
    Ok(data)
}

/// What to do on a blocking thread.
enum Work {
    Relist,
    Refresh(Vec<Change>, bool),
}

/// The file source's async side: owns the watch, the timer and the last snapshot sent.
struct Source {
    sender: SourceSender,
    state: Option<FileState>,
    path: PathBuf,
    last_sent: Option<Vec<Pod>>,
}

impl Source {
    /// Runs `work` on a blocking thread, publishes rejections and sends the snapshot if it
    /// changed. Returns the kind of the path after a re-list; `Err` when the receiver is gone.
    async fn apply(&mut self, work: Work) -> Result<Option<PathKind>, PodSourceError> {
        let mut state = match self.state.take() {
            Some(state) => state,
            None => FileState::new(self.path.clone(), self.sender.node_name().to_owned()),
        };
        let joined = tokio::task::spawn_blocking(move || {
            let outcome = match work {
                Work::Relist => {
                    let (kind, usable) = state.relist();
                    (Some(kind), usable)
                }
                Work::Refresh(changes, dir_mode) => {
                    state.refresh(&changes, dir_mode);
                    (None, true)
                }
            };
            let (pods, rejected) = state.snapshot();
            (state, outcome, pods, rejected)
        })
        .await;
        let (state, (kind, usable), pods, rejected) = match joined {
            Ok(result) => result,
            Err(e) => {
                // A panic while reading: start again from a clean state at the next event.
                tracing::error!(path = %self.path.display(), error = %e, "file source read failed");
                return Ok(None);
            }
        };
        self.state = Some(state);
        self.sender.status().set_source_errors(rejected);
        if usable && (!self.sender.first_sent() || self.last_sent.as_ref() != Some(&pods)) {
            self.last_sent = Some(pods.clone());
            self.sender.send(pods).await?;
        }
        Ok(kind)
    }
}

/// The source task.
pub(crate) async fn run(sender: SourceSender, path: PathBuf, period: Duration) {
    // Upstream trims a trailing '/'; `Path` comparisons ignore it already, joins keep it out.
    let path = match path.to_str() {
        Some(text) if text.len() > 1 && text.ends_with('/') => {
            PathBuf::from(text.trim_end_matches('/'))
        }
        _ => path,
    };
    tracing::info!(path = %path.display(), "watching path");
    let period = period.max(Duration::from_millis(1));
    let mut source = Source {
        sender,
        state: None,
        path: path.clone(),
        last_sent: None,
    };
    let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut resets_in_a_row = 0u32;
    loop {
        // (Re)establish the watch, then re-list: whatever changed before the watch existed
        // is in the listing, whatever changes after it is reported.
        let mut watcher = match Watcher::new(&path).await {
            Ok(watcher) => Some(watcher),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e,
                    "unable to watch path, relying on the periodic re-list");
                None
            }
        };
        let Ok(kind) = source.apply(Work::Relist).await else {
            return;
        };
        if let (Some(w), Some(kind)) = (&watcher, kind)
            && w.kind() != kind
        {
            // The path changed while the watch was set up; set it up again (with a short
            // pause if that keeps happening).
            resets_in_a_row += 1;
            if resets_in_a_row > 3 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            continue;
        }
        resets_in_a_row = 0;
        loop {
            let event = async {
                match watcher.as_mut() {
                    Some(w) => w.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = ticker.tick() => {
                    let Ok(kind) = source.apply(Work::Relist).await else { return };
                    match (&watcher, kind) {
                        // No watch: try to set one up again.
                        (None, _) => break,
                        (Some(w), Some(kind)) if w.kind() != kind => break,
                        _ => {}
                    }
                }
                event = event => match event {
                    Ok(WatchEvent::Changed(changes)) => {
                        let dir_mode = matches!(watcher.as_ref().map(Watcher::kind),
                            Some(PathKind::Dir(..)));
                        if source.apply(Work::Refresh(changes, dir_mode)).await.is_err() {
                            return;
                        }
                    }
                    Ok(WatchEvent::Rescan) => {
                        if source.apply(Work::Relist).await.is_err() {
                            return;
                        }
                    }
                    Ok(WatchEvent::Reset) => break,
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e,
                            "error while watching path, relying on the periodic re-list");
                        watcher = None;
                    }
                }
            }
            if source.sender.is_closed() {
                return;
            }
        }
    }
}
