//! Change notification for the file source: inotify on Linux, a typed "unsupported" elsewhere
//! (the file source then relies on its periodic re-list alone).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// What the configured path is, as seen when the watch was set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathKind {
    /// A directory of manifests; `(device, inode)` identifies it.
    Dir(u64, u64),
    /// A single manifest file.
    File,
    /// Nothing there (yet).
    Missing,
    /// Something else (a socket, a fifo, ...), or unreadable.
    Other,
}

/// Stats `path` (following symlinks).
pub(crate) fn path_kind(path: &Path) -> PathKind {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => PathKind::Dir(meta.dev(), meta.ino()),
        Ok(meta) if meta.is_file() => PathKind::File,
        Ok(_) => PathKind::Other,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => PathKind::Missing,
        Err(_) => PathKind::Other,
    }
}

/// One changed entry of the watched directory (or the watched file itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    /// The entry's name in the directory.
    pub(crate) name: OsString,
    /// The entry was just created and nothing else happened to it yet (a new regular file is
    /// then usually still empty; its close-after-write follows).
    pub(crate) created_only: bool,
}

/// What a batch of notifications means for the file source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WatchEvent {
    /// These entries changed: re-read them.
    Changed(Vec<Change>),
    /// Events were lost (queue overflow): re-list everything.
    Rescan,
    /// The path itself appeared, vanished or was replaced: set the watch up again.
    Reset,
}

/// The nearest existing ancestor directory of `path`, and the name of its child on the way to
/// `path` (none when it cannot be told, e.g. for `..`).
fn anchor_of(path: &Path) -> (PathBuf, Option<OsString>) {
    let mut current = path;
    loop {
        let parent = match current.parent() {
            Some(parent) if parent.as_os_str().is_empty() => Path::new("."),
            Some(parent) => parent,
            None => return (current.to_path_buf(), None),
        };
        if parent.is_dir() {
            return (
                parent.to_path_buf(),
                current.file_name().map(OsString::from),
            );
        }
        current = parent;
    }
}

#[cfg(target_os = "linux")]
mod imp {
    //! inotify without `unsafe`: tokio 1.54 made registering a raw fd with its reactor
    //! (`AsyncFd`) an unsafe call, and this crate forbids unsafe code, so a small thread blocks
    //! in `read(2)` on the inotify fd and forwards the events over a channel. Dropping the
    //! [`Watcher`] removes the watch, which queues `IN_IGNORED` and so wakes and ends the
    //! thread.

    use std::ffi::OsString;
    use std::io;
    use std::path::Path;
    use std::sync::Arc;

    use nix::errno::Errno;
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor};
    use tokio::sync::mpsc;

    use super::{Change, PathKind, WatchEvent, anchor_of, path_kind};

    /// Batches of events the reader thread may queue before it waits (the kernel queue, and
    /// its overflow event, take over beyond that).
    const QUEUED_BATCHES: usize = 16;

    /// How to read events of the single watch.
    enum Target {
        /// The watched directory is the manifest directory: every named event is a change.
        Dir,
        /// The parent of the manifest file is watched: events naming the file are changes.
        File(OsString),
        /// An ancestor of a missing (or odd) path is watched: events naming the next component
        /// mean the path may have appeared.
        Anchor(Option<OsString>),
    }

    /// An inotify watch on the manifest path (or on the directory that will hold it).
    pub(crate) struct Watcher {
        inotify: Arc<Inotify>,
        wd: WatchDescriptor,
        events: mpsc::Receiver<io::Result<Vec<InotifyEvent>>>,
        target: Target,
        kind: PathKind,
    }

    const CHANGES: AddWatchFlags = AddWatchFlags::IN_CREATE
        .union(AddWatchFlags::IN_CLOSE_WRITE)
        .union(AddWatchFlags::IN_MOVED_TO)
        .union(AddWatchFlags::IN_MOVED_FROM)
        .union(AddWatchFlags::IN_DELETE)
        .union(AddWatchFlags::IN_ATTRIB)
        .union(AddWatchFlags::IN_DELETE_SELF)
        .union(AddWatchFlags::IN_MOVE_SELF)
        .union(AddWatchFlags::IN_ONLYDIR);

    const GONE: AddWatchFlags = AddWatchFlags::IN_IGNORED
        .union(AddWatchFlags::IN_DELETE_SELF)
        .union(AddWatchFlags::IN_MOVE_SELF)
        .union(AddWatchFlags::IN_UNMOUNT);

    /// Sets up the inotify watch for `path` (blocking: it stats the path).
    fn setup(path: &Path) -> io::Result<(Inotify, WatchDescriptor, Target, PathKind)> {
        let mut attempt = 0;
        loop {
            let kind = path_kind(path);
            let inotify = Inotify::init(InitFlags::IN_CLOEXEC)?;
            let (wd, target) = match kind {
                PathKind::Dir(..) => (inotify.add_watch(path, CHANGES)?, Target::Dir),
                PathKind::File => {
                    let (parent, name) = anchor_of(path);
                    let wd = inotify.add_watch(&parent, CHANGES)?;
                    match name {
                        Some(name) => (wd, Target::File(name)),
                        None => (wd, Target::Anchor(None)),
                    }
                }
                PathKind::Missing | PathKind::Other => {
                    let (anchor, next) = anchor_of(path);
                    (inotify.add_watch(&anchor, CHANGES)?, Target::Anchor(next))
                }
            };
            // The path may have changed between the stat and the watch; then again.
            attempt += 1;
            if path_kind(path) == kind || attempt >= 3 {
                return Ok((inotify, wd, target, kind));
            }
        }
    }

    /// The reader thread: forwards event batches until the watch is gone or nobody listens.
    fn forward(inotify: &Inotify, tx: &mpsc::Sender<io::Result<Vec<InotifyEvent>>>) {
        loop {
            match inotify.read_events() {
                Ok(events) => {
                    let gone = events
                        .iter()
                        .any(|e| e.mask.contains(AddWatchFlags::IN_IGNORED));
                    if tx.blocking_send(Ok(events)).is_err() || gone {
                        return;
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e.into()));
                    return;
                }
            }
        }
    }

    impl Watcher {
        /// Watches `path`; also records what the path was when the watch started.
        pub(crate) async fn new(path: &Path) -> io::Result<Watcher> {
            let owned = path.to_path_buf();
            let (inotify, wd, target, kind) = tokio::task::spawn_blocking(move || setup(&owned))
                .await
                .map_err(io::Error::other)??;
            let inotify = Arc::new(inotify);
            let (tx, events) = mpsc::channel(QUEUED_BATCHES);
            let reader = inotify.clone();
            std::thread::Builder::new()
                .name("inotify-manifests".to_owned())
                .spawn(move || forward(&reader, &tx))?;
            Ok(Watcher {
                inotify,
                wd,
                events,
                target,
                kind,
            })
        }

        /// The kind of the path when the watch was set up.
        pub(crate) fn kind(&self) -> PathKind {
            self.kind
        }

        /// Waits for the next batch of relevant notifications. Cancel-safe.
        pub(crate) async fn next(&mut self) -> io::Result<WatchEvent> {
            loop {
                let mut events = match self.events.recv().await {
                    Some(batch) => batch?,
                    None => return Ok(WatchEvent::Reset),
                };
                // Take whatever else is queued, so a burst is handled at once.
                while let Ok(batch) = self.events.try_recv() {
                    events.extend(batch?);
                }
                if let Some(event) = self.interpret(events) {
                    return Ok(event);
                }
            }
        }

        fn interpret(&self, events: Vec<InotifyEvent>) -> Option<WatchEvent> {
            let mut changes: Vec<Change> = Vec::new();
            let mut rescan = false;
            for event in events {
                if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    rescan = true;
                    continue;
                }
                if event.mask.intersects(GONE) {
                    return Some(WatchEvent::Reset);
                }
                let Some(name) = event.name else { continue };
                let relevant = match &self.target {
                    Target::Dir => true,
                    Target::File(file) => *file == name,
                    Target::Anchor(next) => {
                        if next.as_ref().is_none_or(|next| *next == name) {
                            return Some(WatchEvent::Reset);
                        }
                        false
                    }
                };
                if !relevant {
                    continue;
                }
                let created_only = event.mask.contains(AddWatchFlags::IN_CREATE);
                match changes.iter_mut().find(|c| c.name == name) {
                    Some(change) => change.created_only &= created_only,
                    None => changes.push(Change { name, created_only }),
                }
            }
            if rescan {
                Some(WatchEvent::Rescan)
            } else if changes.is_empty() {
                None
            } else {
                Some(WatchEvent::Changed(changes))
            }
        }
    }

    impl Drop for Watcher {
        fn drop(&mut self) {
            // Queues IN_IGNORED, which ends the reader thread. When the watch is gone already
            // (the directory was deleted), the thread has seen IN_IGNORED and ended.
            let _ = self.inotify.rm_watch(self.wd);
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;
    use std::path::Path;

    use super::{PathKind, WatchEvent};

    /// No change notification on this platform: [`Watcher::new`] always fails.
    pub(crate) struct Watcher {
        kind: PathKind,
    }

    impl Watcher {
        pub(crate) async fn new(_path: &Path) -> io::Result<Watcher> {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "file change notification is only supported on Linux",
            ))
        }

        pub(crate) fn kind(&self) -> PathKind {
            self.kind
        }

        pub(crate) async fn next(&mut self) -> io::Result<WatchEvent> {
            std::future::pending().await
        }
    }
}

pub(crate) use imp::Watcher;
