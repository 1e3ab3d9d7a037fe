//! Change notification for the file source: inotify on Linux; elsewhere [`Watch::new`] fails
//! with "unsupported" and the file source relies on its periodic re-list alone.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// What the configured path is.
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
    /// The last event was a write that has not been followed by a close: a writer is busy with
    /// the file and its close-after-write will follow.
    pub(crate) writing: bool,
    /// The last event was a rename into the directory: the file arrived whole (as editors and
    /// config managers write), so no write can race its read.
    pub(crate) moved_in: bool,
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
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
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
    use std::ffi::OsString;
    use std::io;
    use std::os::fd::{AsFd, BorrowedFd};
    use std::path::Path;

    use nix::errno::Errno;
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent};

    use super::{Change, PathKind, WatchEvent, anchor_of, path_kind};

    /// How to read the events of the single watch.
    enum Target {
        /// The watched directory is the manifest directory: every named event is a change.
        Dir,
        /// The parent of the manifest file is watched: events naming the file are changes.
        File(OsString),
        /// An ancestor of a missing (or odd) path is watched: events naming the next component
        /// mean the path may have appeared.
        Anchor(Option<OsString>),
    }

    /// A non-blocking inotify watch on the manifest path (or on the directory that will hold
    /// it). The owner polls [`fd`](Watch::fd) and calls [`read`](Watch::read).
    pub(crate) struct Watch {
        inotify: Inotify,
        target: Target,
        kind: PathKind,
    }

    const CHANGES: AddWatchFlags = AddWatchFlags::IN_CREATE
        .union(AddWatchFlags::IN_MODIFY)
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

    impl Watch {
        /// Watches `path` (blocking: it stats the path).
        pub(crate) fn new(path: &Path) -> io::Result<Watch> {
            let mut attempt = 0;
            loop {
                let kind = path_kind(path);
                let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
                let target = match kind {
                    PathKind::Dir(..) => {
                        inotify.add_watch(path, CHANGES)?;
                        Target::Dir
                    }
                    PathKind::File => {
                        let (parent, name) = anchor_of(path);
                        inotify.add_watch(&parent, CHANGES)?;
                        match name {
                            Some(name) => Target::File(name),
                            None => Target::Anchor(None),
                        }
                    }
                    PathKind::Missing | PathKind::Other => {
                        let (anchor, next) = anchor_of(path);
                        inotify.add_watch(&anchor, CHANGES)?;
                        Target::Anchor(next)
                    }
                };
                // The path may have changed between the stat and the watch; then again.
                attempt += 1;
                if path_kind(path) == kind || attempt >= 3 {
                    return Ok(Watch {
                        inotify,
                        target,
                        kind,
                    });
                }
            }
        }

        /// The kind of the path when the watch was set up.
        pub(crate) fn kind(&self) -> PathKind {
            self.kind
        }

        /// The descriptor to poll for readability.
        pub(crate) fn fd(&self) -> BorrowedFd<'_> {
            self.inotify.as_fd()
        }

        /// Reads every queued event without waiting; `None` when nothing relevant is queued.
        pub(crate) fn read(&mut self) -> io::Result<Option<WatchEvent>> {
            let mut events = Vec::new();
            loop {
                match self.inotify.read_events() {
                    Ok(batch) if batch.is_empty() => break,
                    Ok(batch) => events.extend(batch),
                    Err(Errno::EAGAIN) => break,
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(self.interpret(events))
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
                let created = event.mask.contains(AddWatchFlags::IN_CREATE);
                let modified = event.mask.contains(AddWatchFlags::IN_MODIFY);
                let index = match changes.iter().position(|c| c.name == name) {
                    Some(index) => index,
                    None => {
                        changes.push(Change {
                            name,
                            created_only: true,
                            writing: false,
                            moved_in: false,
                        });
                        changes.len() - 1
                    }
                };
                let change = &mut changes[index];
                change.created_only &= created;
                // Only IN_MODIFY leaves a writer busy; a close, a rename, a delete or a
                // chmod after it means the file is settled (or gone).
                change.writing = modified;
                change.moved_in = event.mask.contains(AddWatchFlags::IN_MOVED_TO);
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
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::convert::Infallible;
    use std::io;
    use std::os::fd::BorrowedFd;
    use std::path::Path;

    use super::{PathKind, WatchEvent};

    /// No change notification on this platform: [`Watch::new`] always fails.
    pub(crate) struct Watch {
        never: Infallible,
    }

    impl Watch {
        pub(crate) fn new(_path: &Path) -> io::Result<Watch> {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "file change notification is only supported on Linux",
            ))
        }

        pub(crate) fn kind(&self) -> PathKind {
            match self.never {}
        }

        pub(crate) fn fd(&self) -> BorrowedFd<'_> {
            match self.never {}
        }

        pub(crate) fn read(&mut self) -> io::Result<Option<WatchEvent>> {
            match self.never {}
        }
    }
}

pub(crate) use imp::Watch;
