//! The `file` source: static pod manifests in `staticPodPath` (upstream `file.go`,
//! `file_linux.go`).
//!
//! - The path is a directory of manifests (one pod per file; names starting with `.` are
//!   ignored; subdirectories are not entered) or a single manifest file.
//! - inotify reports changes as they happen; a full re-list every `fileCheckFrequency` is the
//!   safety net.
//! - Every change sends the complete list of the source's pods (a snapshot) to the merger.
//! - A manifest that fails to read, decode or validate is rejected on its own: logged at warn
//!   when it changes and kept in the source's rejections; its pod (if it had one) leaves the
//!   snapshot. The other pods are unaffected.
//! - Two files declaring the same namespace/name: the first in path order wins, the other is
//!   rejected naming both.
//! - A missing path gives an empty snapshot (so the source counts as seen); the source watches
//!   the nearest existing ancestor directory and picks the path up when it appears.
//! - A path that cannot be listed (or is neither a directory nor a file) keeps the previous
//!   pods and records the error.
//!
//! Editors' write patterns: a file is read when it is closed after writing, moved in, moved
//! out, deleted, chmod-ed or created (unless still empty), never while a write is in progress
//! (an `IN_MODIFY` not yet followed by its close). After every read the queued events are
//! checked again, and a read of a file that changed meanwhile is thrown away and redone, so a
//! read that raced a truncate-and-write never reaches the merger (which would stop the pod and
//! start it again). Write-to-temp-and-rename is a move-in.
//!
//! The watching and reading run on one dedicated thread: it owns the inotify descriptor, so it
//! can check for new events right after a read, and it blocks in `poll(2)` between changes
//! (woken by inotify, by the re-list deadline, or by the source being stopped). The async
//! task only forwards its snapshots to the merger.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use tokio::sync::mpsc;

use super::error::{ManifestOrigin, PodSourceError, chain};
use super::merge::{SourceSender, SourceStatus};
use super::static_pod::{Fnv128a, MAX_MANIFEST_SIZE, decode_static_pod};
use super::watch::{Change, PathKind, Watch, WatchEvent, path_kind};

/// How long reads may keep racing writers before the source publishes what is settled and
/// comes back to the rest later.
const SETTLE_LIMIT: Duration = Duration::from_secs(1);
/// Rounds of "read, then look for new events" before each further round pauses briefly.
const QUICK_SETTLE_ROUNDS: u32 = 10;
/// The pause between late settle rounds, and before files left unsettled are read again.
const SETTLE_PAUSE: Duration = Duration::from_millis(5);
const RETRY_UNSETTLED: Duration = Duration::from_millis(100);
/// How long a read that changes something waits for a late event before it is applied: the
/// kernel makes a truncate visible a moment before it queues the matching `IN_MODIFY`.
const GRACE: Duration = Duration::from_millis(10);
/// The same for a read that found an empty file, the usual sight of a truncate-and-write.
const EMPTY_GRACE: Duration = Duration::from_millis(50);

/// The decoded state of one manifest file.
struct Entry {
    /// Hash of the bytes last read; unchanged bytes are not decoded again.
    digest: Option<u128>,
    /// The pod, or why the file was rejected.
    result: Result<Pod, String>,
}

/// The outcome of reading one file, applied once it is known to be stable.
enum Loaded {
    /// Gone, or a directory: the file no longer declares a pod.
    Remove,
    /// Nothing changed (same bytes, or a new file that is still empty).
    Keep,
    /// New content: the pod, or why it is rejected.
    Set(Box<Decoded>),
}

/// A file's new content, decoded.
struct Decoded {
    /// Hash of the bytes, when they could be read.
    digest: Option<u128>,
    /// The pod, or why it is rejected.
    result: Result<Pod, PodSourceError>,
}

/// The manifests the source knows about.
struct FileState {
    path: PathBuf,
    node_name: String,
    entries: BTreeMap<PathBuf, Entry>,
    /// Why the path could not be listed at the last re-list; the previous pods stay and no
    /// snapshot is sent.
    list_error: Option<String>,
}

impl FileState {
    /// The kind of the path and the manifest files to read (or why there are none to trust).
    fn scan(&self) -> (PathKind, Result<Vec<PathBuf>, PodSourceError>) {
        let kind = path_kind(&self.path);
        let origin = || ManifestOrigin::File(self.path.clone());
        let files = match kind {
            PathKind::Missing => {
                tracing::debug!(path = %self.path.display(), "path does not exist, ignoring");
                Ok(Vec::new())
            }
            PathKind::File => Ok(vec![self.path.clone()]),
            PathKind::Dir(..) => self.list_dir().map_err(|source| PodSourceError::Read {
                origin: origin(),
                source,
            }),
            PathKind::Other => Err(PodSourceError::NotAFile { origin: origin() }),
        };
        (kind, files)
    }

    /// The visible (not hidden) entries of the directory, sorted.
    fn list_dir(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.path)? {
            let entry = entry?;
            if !is_hidden(&entry.file_name()) {
                files.push(entry.path());
            }
        }
        files.sort();
        Ok(files)
    }

    /// Reads and decodes one file, without changing anything yet.
    fn read(&self, file: &Path, created_only: bool) -> Loaded {
        let origin = ManifestOrigin::File(file.to_path_buf());
        let rejected = |error| {
            Loaded::Set(Box::new(Decoded {
                digest: None,
                result: Err(error),
            }))
        };
        let meta = match std::fs::metadata(file) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::Remove,
            Err(source) => return rejected(PodSourceError::Read { origin, source }),
        };
        if meta.is_dir() {
            if file != self.path {
                tracing::debug!(path = %file.display(),
                    "provided manifest path is a directory, not recursing into manifest path");
            }
            return Loaded::Remove;
        }
        if !meta.is_file() {
            return rejected(PodSourceError::NotAFile { origin });
        }
        if created_only && meta.len() == 0 {
            // Just created and still empty: its close-after-write follows.
            return Loaded::Keep;
        }
        let data = match read_limited(file) {
            Ok(data) => data,
            Err(error) => return rejected(error),
        };
        let mut hasher = Fnv128a::new();
        hasher.write(&data);
        let digest = hasher.finish();
        if self
            .entries
            .get(file)
            .is_some_and(|e| e.digest == Some(digest))
        {
            return Loaded::Keep;
        }
        tracing::debug!(path = %file.display(), "reading config file");
        Loaded::Set(Box::new(Decoded {
            digest: Some(digest),
            result: decode_static_pod(&data, &origin, &self.node_name),
        }))
    }

    fn apply(&mut self, file: PathBuf, loaded: Loaded) {
        let (digest, result) = match loaded {
            Loaded::Keep => return,
            Loaded::Remove => {
                self.entries.remove(&file);
                return;
            }
            Loaded::Set(decoded) => (decoded.digest, decoded.result),
        };
        let result = result.map_err(|error| {
            let message = chain(&error);
            let repeated = self
                .entries
                .get(&file)
                .is_some_and(|e| e.result.as_ref().err() == Some(&message));
            if !repeated {
                tracing::warn!(path = %file.display(), error = %message,
                    "could not process manifest file");
            }
            message
        });
        self.entries.insert(file, Entry { digest, result });
    }

    /// Whether `error` about `file` is the entry's own error or the listing error, both of
    /// which were logged when they happened.
    fn logged(&self, file: &str, error: &str) -> bool {
        self.list_error.as_deref() == Some(error)
            || self
                .entries
                .get(Path::new(file))
                .is_some_and(|e| e.result.as_ref().err().map(String::as_str) == Some(error))
    }

    /// The pods in path order, duplicates (same namespace/name) rejected, and every rejection
    /// by path.
    fn snapshot(&self) -> (Vec<Pod>, BTreeMap<String, String>) {
        let mut pods = Vec::new();
        let mut rejected = BTreeMap::new();
        let mut owners: HashMap<String, &Path> = HashMap::new();
        if let Some(error) = &self.list_error {
            rejected.insert(self.path.display().to_string(), error.clone());
        }
        for (file, entry) in &self.entries {
            let pod = match &entry.result {
                Ok(pod) => pod,
                Err(error) => {
                    rejected.insert(file.display().to_string(), error.clone());
                    continue;
                }
            };
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
                rejected.insert(file.display().to_string(), error.to_string());
                continue;
            }
            owners.insert(key, file);
            pods.push(pod.clone());
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

/// What the worker does after handling a wake-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    /// The path appeared, vanished or was replaced: set the watch up again.
    Reset,
}

/// Why `poll` returned.
enum Wake {
    Events,
    Relist,
    /// Time to read the files left unsettled.
    Unsettled,
    Stop,
}

/// The thread that watches and reads the manifests.
struct Worker {
    state: FileState,
    watch: Option<Watch>,
    period: Duration,
    status: Arc<SourceStatus>,
    out: mpsc::Sender<Vec<Pod>>,
    /// Becomes readable (end of file) when the async side is gone.
    stop: UnixStream,
    last_sent: Option<Vec<Pod>>,
    /// Changes whose files were still being written when the settle limit ran out.
    unsettled: Vec<Change>,
    /// The rejections last published.
    last_rejected: BTreeMap<String, String>,
}

impl Worker {
    fn run(mut self) {
        tracing::info!(path = %self.state.path.display(), "watching path");
        let mut quick_resets = 0u32;
        loop {
            // Watch first, then list: whatever changed before the watch existed is in the
            // listing, whatever changes after it is reported.
            self.watch = match Watch::new(&self.state.path) {
                Ok(watch) => Some(watch),
                Err(e) => {
                    tracing::warn!(path = %self.state.path.display(), error = %e,
                        "unable to watch path, relying on the periodic re-list");
                    None
                }
            };
            if self.relist() == Flow::Reset {
                // The path changed while the watch was set up; again (pausing if that keeps
                // happening).
                quick_resets += 1;
                if quick_resets > 3 {
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
            quick_resets = 0;
            if !self.publish() {
                return;
            }
            let mut deadline = Instant::now() + self.period;
            loop {
                let flow = match self.wait(deadline) {
                    Wake::Stop => return,
                    Wake::Relist => {
                        deadline = Instant::now() + self.period;
                        if self.watch.is_none() {
                            // Try to set a watch up again (that re-lists too).
                            Flow::Reset
                        } else {
                            self.relist()
                        }
                    }
                    Wake::Events => self.on_events(),
                    Wake::Unsettled => {
                        let changes = std::mem::take(&mut self.unsettled);
                        let reads = self.read_changes(&changes);
                        self.settle(reads, false)
                    }
                };
                if flow == Flow::Reset {
                    break;
                }
                if !self.publish() {
                    return;
                }
            }
        }
    }

    /// Waits for inotify, the re-list deadline, the retry of unsettled files or the stop
    /// signal.
    fn wait(&self, deadline: Instant) -> Wake {
        let retry = (!self.unsettled.is_empty()).then(|| Instant::now() + RETRY_UNSETTLED);
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Wake::Relist;
            }
            if retry.is_some_and(|retry| now >= retry) {
                return Wake::Unsettled;
            }
            let remaining = retry.map_or(deadline, |retry| retry.min(deadline)) - now;
            let timeout = PollTimeout::try_from(remaining.as_micros().div_ceil(1000))
                .unwrap_or(PollTimeout::MAX);
            let mut fds = vec![PollFd::new(self.stop.as_fd(), PollFlags::POLLIN)];
            if let Some(watch) = &self.watch {
                fds.push(PollFd::new(watch.fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(0) => continue,
                Ok(_) => {
                    if fds[0].revents().is_some_and(|r| !r.is_empty()) {
                        return Wake::Stop;
                    }
                    return Wake::Events;
                }
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "poll failed");
                    std::thread::sleep(Duration::from_secs(1));
                    return Wake::Relist;
                }
            }
        }
    }

    fn on_events(&mut self) -> Flow {
        let event = match self.watch.as_mut().map(Watch::read) {
            Some(Ok(event)) => event,
            Some(Err(e)) => {
                tracing::warn!(path = %self.state.path.display(), error = %e,
                    "error while watching path, relying on the periodic re-list");
                self.watch = None;
                None
            }
            None => None,
        };
        match event {
            None => Flow::Continue,
            Some(WatchEvent::Changed(changes)) => {
                let reads = self.read_changes(&changes);
                self.settle(reads, whole(&changes))
            }
            Some(WatchEvent::Rescan) => self.relist(),
            Some(WatchEvent::Reset) => Flow::Reset,
        }
    }

    /// Re-reads everything.
    fn relist(&mut self) -> Flow {
        self.unsettled.clear();
        let (kind, files) = self.state.scan();
        match files {
            Ok(files) => {
                self.state.list_error = None;
                self.state
                    .entries
                    .retain(|path, _| files.binary_search(path).is_ok());
                let reads = files
                    .into_iter()
                    .map(|file| {
                        let loaded = self.state.read(&file, false);
                        (file, loaded)
                    })
                    .collect();
                if self.settle(reads, false) == Flow::Reset {
                    return Flow::Reset;
                }
            }
            Err(error) => {
                let message = chain(&error);
                if self.state.list_error.as_ref() != Some(&message) {
                    tracing::warn!(path = %self.state.path.display(), error = %message,
                        "unable to read config path");
                }
                self.state.list_error = Some(message);
            }
        }
        match &self.watch {
            Some(watch) if watch.kind() != kind => Flow::Reset,
            _ => Flow::Continue,
        }
    }

    /// The manifest file an inotify change is about, if it is one to read.
    fn file_of(&self, change: &Change) -> Option<PathBuf> {
        match self.watch.as_ref().map(Watch::kind) {
            Some(PathKind::Dir(..)) if is_hidden(&change.name) => {
                tracing::trace!(name = ?change.name,
                    "ignored pod manifest, because it starts with dots");
                None
            }
            Some(PathKind::Dir(..)) => Some(self.state.path.join(&change.name)),
            _ => Some(self.state.path.clone()),
        }
    }

    fn read_changes(&self, changes: &[Change]) -> Vec<(PathBuf, Loaded)> {
        changes
            .iter()
            .filter(|change| !change.writing)
            .filter_map(|change| {
                let file = self.file_of(change)?;
                let loaded = self.state.read(&file, change.created_only);
                Some((file, loaded))
            })
            .collect()
    }

    /// Applies reads once no newer event concerns their files; the files named by newer
    /// events are read again (or left for their close-after-write). Files that keep changing
    /// past [`SETTLE_LIMIT`] keep their previous state and are read again a little later.
    /// `whole`: every read is of a file renamed into place, which no write can race, so the
    /// reads apply without the grace given to files written in place.
    fn settle(&mut self, mut reads: Vec<(PathBuf, Loaded)>, mut whole: bool) -> Flow {
        let started = Instant::now();
        let mut rounds = 0u32;
        let mut graced = false;
        loop {
            let newer = match self.watch.as_mut().map(Watch::read) {
                Some(Ok(event)) => event,
                Some(Err(e)) => {
                    tracing::warn!(path = %self.state.path.display(), error = %e,
                        "error while watching path, relying on the periodic re-list");
                    self.watch = None;
                    None
                }
                None => None,
            };
            let changes = match newer {
                None if !graced
                    && !whole
                    && reads.iter().any(|(_, l)| !matches!(l, Loaded::Keep)) =>
                {
                    // Before a read changes anything, give a racing write's event a moment.
                    graced = true;
                    let empty = reads.iter().any(|(_, l)| {
                        matches!(l, Loaded::Set(d)
                            if matches!(d.result, Err(PodSourceError::Empty { .. })))
                    });
                    std::thread::sleep(if empty { EMPTY_GRACE } else { GRACE });
                    continue;
                }
                None => break,
                // The reads may have raced whatever happened: start over.
                Some(WatchEvent::Reset) => return Flow::Reset,
                Some(WatchEvent::Rescan) => return self.relist(),
                Some(WatchEvent::Changed(changes)) => changes,
            };
            let touched: Vec<PathBuf> = changes.iter().filter_map(|c| self.file_of(c)).collect();
            for (file, loaded) in reads {
                if !touched.contains(&file) {
                    self.state.apply(file, loaded);
                }
            }
            if started.elapsed() > SETTLE_LIMIT {
                for change in changes {
                    match self.unsettled.iter_mut().find(|c| c.name == change.name) {
                        Some(known) => *known = change,
                        None => self.unsettled.push(change),
                    }
                }
                return Flow::Continue;
            }
            rounds += 1;
            if rounds > QUICK_SETTLE_ROUNDS {
                // A writer is busy: give it time rather than spin.
                std::thread::sleep(SETTLE_PAUSE);
            }
            reads = self.read_changes(&changes);
            whole = self::whole(&changes);
            graced = false;
        }
        for (file, loaded) in reads {
            self.state.apply(file, loaded);
        }
        Flow::Continue
    }

    /// Publishes the rejections, and sends the snapshot if it changed (always the first).
    /// False once the async side is gone.
    fn publish(&mut self) -> bool {
        let (pods, rejected) = self.state.snapshot();
        // Decode errors were logged as they were read; duplicates show up here first.
        for (file, error) in &rejected {
            if self.last_rejected.get(file) != Some(error) && !self.state.logged(file, error) {
                tracing::warn!(path = %file, %error, "could not process manifest file");
            }
        }
        self.last_rejected = rejected.clone();
        self.status.set_source_errors(rejected);
        if self.state.list_error.is_some() || self.last_sent.as_ref() == Some(&pods) {
            return true;
        }
        self.last_sent = Some(pods.clone());
        self.out.blocking_send(pods).is_ok()
    }
}

/// Whether every change is a file renamed into place.
fn whole(changes: &[Change]) -> bool {
    changes.iter().all(|c| c.moved_in)
}

/// The source task: starts the worker thread and forwards its snapshots to the merger.
pub(crate) async fn run(mut sender: SourceSender, path: PathBuf, period: Duration) {
    // Upstream trims a trailing '/'.
    let path = match path.to_str() {
        Some(text) if text.len() > 1 && text.ends_with('/') => {
            PathBuf::from(text.trim_end_matches('/'))
        }
        _ => path,
    };
    let (stop_guard, stop) = match UnixStream::pair() {
        Ok(pair) => pair,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot start the file source");
            return;
        }
    };
    let (out, mut snapshots) = mpsc::channel(4);
    let worker = Worker {
        state: FileState {
            path: path.clone(),
            node_name: sender.node_name().to_owned(),
            entries: BTreeMap::new(),
            list_error: None,
        },
        watch: None,
        period: period.max(Duration::from_millis(1)),
        status: sender.status().clone(),
        out,
        stop,
        last_sent: None,
        unsettled: Vec::new(),
        last_rejected: BTreeMap::new(),
    };
    let spawned = std::thread::Builder::new()
        .name("static-pod-files".to_owned())
        .spawn(move || worker.run());
    if let Err(e) = spawned {
        tracing::error!(path = %path.display(), error = %e, "cannot start the file source");
        return;
    }
    // Dropping the guard (this task ending or being aborted) wakes and ends the thread.
    let _stop_guard = stop_guard;
    while let Some(pods) = snapshots.recv().await {
        if sender.send(pods).await.is_err() {
            return;
        }
    }
}
