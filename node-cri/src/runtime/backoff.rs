//! Per-container crash-loop back-off, as upstream's `flowcontrol.Backoff` with the kubelet's
//! settings: 10s doubling to 5m, forgotten when a container ran for more than 10 minutes.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// Upstream `initialCrashLoopBackOff`.
pub(crate) const INITIAL_BACKOFF: Duration = Duration::from_secs(10);
/// Upstream `MaxContainerBackOff`.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container that ran this long since the last back-off step starts afresh.
const RESET_AFTER: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug)]
struct Entry {
    backoff: Duration,
    last_update: SystemTime,
}

/// Back-off state per key (pod UID, container name, image).
#[derive(Debug)]
pub(crate) struct BackOff {
    initial: Duration,
    max: Duration,
    entries: HashMap<String, Entry>,
}

impl Default for BackOff {
    fn default() -> Self {
        BackOff::new(INITIAL_BACKOFF, MAX_BACKOFF)
    }
}

impl BackOff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        BackOff {
            initial,
            max,
            entries: HashMap::new(),
        }
    }

    fn expired(event: SystemTime, entry: &Entry) -> bool {
        event
            .duration_since(entry.last_update)
            .is_ok_and(|d| d > RESET_AFTER)
    }

    /// If `key` is in back-off for a failure at `event` (the container's finish time), how much
    /// of it is left.
    pub(crate) fn remaining(
        &self,
        key: &str,
        event: SystemTime,
        now: SystemTime,
    ) -> Option<Duration> {
        let entry = self.entries.get(key)?;
        if Self::expired(event, entry) {
            return None;
        }
        let since = now.duration_since(event).unwrap_or_default();
        entry.backoff.checked_sub(since).filter(|d| !d.is_zero())
    }

    /// Records a restart after a failure at `event`: the next back-off doubles (or starts at the
    /// initial value).
    pub(crate) fn next(&mut self, key: &str, event: SystemTime, now: SystemTime) {
        let backoff = match self.entries.get(key) {
            Some(entry) if !Self::expired(event, entry) => (entry.backoff * 2).min(self.max),
            _ => self.initial,
        };
        self.entries.insert(
            key.to_string(),
            Entry {
                backoff,
                last_update: now,
            },
        );
    }

    /// Forgets keys whose prefix is `pod_uid` (the pod is gone).
    pub(crate) fn forget_pod(&mut self, pod_uid: &str) {
        let prefix = format!("{pod_uid}/");
        self.entries.retain(|k, _| !k.starts_with(&prefix));
    }
}

/// The back-off key of a container of a pod.
pub(crate) fn key(pod_uid: &str, container: &str, image: &str) -> String {
    format!("{pod_uid}/{container}/{image}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_restarts_at_once_then_backoff_doubles_to_the_cap() {
        let mut b = BackOff::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(b.remaining("k", t0, t0), None);
        b.next("k", t0, t0);
        let mut expected = INITIAL_BACKOFF;
        let mut now = t0;
        for _ in 0..8 {
            now += Duration::from_secs(1);
            // A failure just now: in back-off for the current window.
            assert_eq!(b.remaining("k", now, now), Some(expected));
            now += expected;
            assert_eq!(b.remaining("k", now - expected, now), None);
            b.next("k", now, now);
            expected = (expected * 2).min(MAX_BACKOFF);
        }
        assert_eq!(expected, MAX_BACKOFF);
    }

    #[test]
    fn ten_minutes_of_good_running_resets_the_backoff() {
        let mut b = BackOff::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        b.next("k", t0, t0);
        b.next("k", t0, t0);
        let later = t0 + Duration::from_secs(601);
        assert_eq!(b.remaining("k", later, later), None);
        b.next("k", later, later);
        assert_eq!(b.remaining("k", later, later), Some(INITIAL_BACKOFF));
    }
}
