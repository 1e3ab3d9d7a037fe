//! Memory threshold notifiers: the eviction manager is woken when memory usage crosses the
//! level at which a memory threshold is met, instead of finding out at its next 10 s pass.
//!
//! - **cgroup v1** ([`MemcgNotifier`]): the kernel's memory cgroup threshold events. An
//!   eventfd is registered through `cgroup.event_control` with the cgroup's
//!   `memory.usage_in_bytes` and a threshold; the kernel signals it whenever usage crosses the
//!   threshold, either way. Upstream's kubelet has the same notifier, off by default
//!   (`kernelMemcgNotification`); here it is on wherever v1 is. Moving the threshold
//!   registers a new eventfd and closes the old one, which unregisters it.
//! - **cgroup v2** ([`PollNotifier`]): v2 has no usage threshold event. `memory.events`
//!   reports only breaches of the cgroup's own `memory.high`/`memory.max` (and setting
//!   `memory.high` at the threshold would throttle the pods, not just report), and PSI
//!   triggers on `memory.pressure` report stall time, not usage, so neither says "usage
//!   passed N bytes". The v2 notifier therefore polls the usage every 500 ms: one small file
//!   read (`memory.current`, or `/proc/meminfo` for the node), with a wake-up only on a
//!   crossing.
//!
//! The level armed is upstream's: capacity minus the threshold plus the inactive file pages
//! (usage counts them, the working set does not), so that the event comes when the working
//! set reaches capacity minus the threshold.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use nix::sys::eventfd::{EfdFlags, EventFd};
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

/// Why a notifier could not be armed.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {source}", path.display())]
pub struct NotifierError {
    what: &'static str,
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

fn error(what: &'static str, path: &Path, source: impl Into<std::io::Error>) -> NotifierError {
    NotifierError {
        what,
        path: path.to_path_buf(),
        source: source.into(),
    }
}

/// Wakes its owner when a memory usage crosses an armed level.
pub trait ThresholdNotifier: Send + Sync {
    /// What is watched and how, for the log.
    fn describe(&self) -> String;
    /// Notifies when the usage crosses `usage_bytes` (replacing any earlier level).
    fn arm(&self, usage_bytes: u64) -> Result<(), NotifierError>;
    /// Completes at the next crossing of the armed level (never before one is armed).
    fn crossed(&self) -> BoxFuture<'_, ()>;
}

/// cgroup v1 memory threshold events on one memory cgroup directory (the root,
/// `/sys/fs/cgroup/memory`, for `memory.available`; the pods' cgroup for
/// `allocatableMemory.available`).
pub struct MemcgNotifier {
    dir: PathBuf,
    armed: Mutex<Option<Arc<AsyncFd<EventFd>>>>,
    rearmed: Notify,
}

impl MemcgNotifier {
    /// A notifier on the memory cgroup at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        MemcgNotifier {
            dir: dir.into(),
            armed: Mutex::new(None),
            rearmed: Notify::new(),
        }
    }

    fn current(&self) -> Option<Arc<AsyncFd<EventFd>>> {
        self.armed.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl ThresholdNotifier for MemcgNotifier {
    fn describe(&self) -> String {
        format!(
            "cgroup v1 memory threshold events on {}",
            self.dir.display()
        )
    }

    fn arm(&self, usage_bytes: u64) -> Result<(), NotifierError> {
        let usage_path = self.dir.join("memory.usage_in_bytes");
        let control_path = self.dir.join("cgroup.event_control");
        let usage = File::open(&usage_path).map_err(|e| error("opening", &usage_path, e))?;
        let event = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| error("creating an eventfd for", &usage_path, e))?;
        let line = format!("{} {} {usage_bytes}", event.as_raw_fd(), usage.as_raw_fd());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&control_path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| error("registering with", &control_path, e))?;
        // `AsyncFd` owns the eventfd, so it cannot be closed while registered: the I/O
        // safety issue behind the deprecation (a borrowed fd) does not arise, and the
        // replacement, `register`, is `unsafe`.
        #[allow(deprecated)]
        let event =
            AsyncFd::new(event).map_err(|e| error("watching the eventfd of", &usage_path, e))?;
        // The old eventfd closes once its last waiter lets go: the kernel unregisters it.
        *self.armed.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(event));
        self.rearmed.notify_waiters();
        Ok(())
    }

    fn crossed(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            loop {
                let rearmed = self.rearmed.notified();
                let Some(event) = self.current() else {
                    rearmed.await;
                    continue;
                };
                tokio::select! {
                    ready = event.readable() => {
                        let Ok(mut guard) = ready else {
                            // The eventfd failed: wait for the next arming.
                            self.rearmed.notified().await;
                            continue;
                        };
                        match guard.get_inner().read() {
                            Ok(_) => return,
                            Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
                            Err(_) => {
                                drop(guard);
                                self.rearmed.notified().await;
                            }
                        }
                    }
                    _ = rearmed => {}
                }
            }
        })
    }
}

/// Polls a usage figure every [`PollNotifier::PERIOD`] and wakes on a crossing of the armed
/// level (cgroup v2, where no usage event exists).
pub struct PollNotifier {
    name: String,
    read: Box<dyn Fn() -> Option<u64> + Send + Sync>,
    level: Mutex<Option<u64>>,
    period: Duration,
}

impl PollNotifier {
    /// How often the usage is read.
    pub const PERIOD: Duration = Duration::from_millis(500);

    /// A notifier reading the usage with `read` (`name` says what it reads, for the log).
    pub fn new(
        name: impl Into<String>,
        read: impl Fn() -> Option<u64> + Send + Sync + 'static,
    ) -> Self {
        PollNotifier {
            name: name.into(),
            read: Box::new(read),
            level: Mutex::new(None),
            period: Self::PERIOD,
        }
    }

    /// Reads every `period` instead (tests).
    pub fn with_period(mut self, period: Duration) -> Self {
        self.period = period;
        self
    }

    fn level(&self) -> Option<u64> {
        *self.level.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ThresholdNotifier for PollNotifier {
    fn describe(&self) -> String {
        format!("a {} ms poll of {}", self.period.as_millis(), self.name)
    }

    fn arm(&self, usage_bytes: u64) -> Result<(), NotifierError> {
        *self.level.lock().unwrap_or_else(|e| e.into_inner()) = Some(usage_bytes);
        Ok(())
    }

    fn crossed(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let mut above: Option<bool> = None;
            loop {
                tokio::time::sleep(self.period).await;
                let (Some(level), Some(usage)) = (self.level(), (self.read)()) else {
                    continue;
                };
                let now = usage >= level;
                match above {
                    Some(was) if was != now => return,
                    _ => above = Some(now),
                }
            }
        })
    }
}

/// The usage level to arm for a memory threshold (upstream `UpdateThreshold`): capacity
/// (available + working set) minus the threshold's quantity, plus the inactive file pages
/// (usage minus working set).
pub fn usage_level(
    threshold: &node_config::EvictionThreshold,
    memory: &node_core::stats::MemoryStats,
) -> Option<u64> {
    let (available, working_set, usage) = (
        memory.available_bytes?,
        memory.working_set_bytes?,
        memory.usage_bytes?,
    );
    let capacity = available.saturating_add(working_set);
    let quantity = crate::signals::threshold_quantity(threshold, i64::try_from(capacity).ok()?);
    let inactive = usage.saturating_sub(working_set);
    Some(
        capacity
            .saturating_sub(u64::try_from(quantity).unwrap_or(0))
            .saturating_add(inactive),
    )
}
