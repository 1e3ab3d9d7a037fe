//! Per-container crash-loop back-off, as upstream's `flowcontrol.Backoff` with the kubelet's
//! settings: 10s doubling to 5m, forgotten when a container ran for more than 10 minutes.
//!
//! Unlike upstream, only a container that exited on its own counts as a failure. An instance
//! the kubelet stopped itself (a container whose spec changed, a pod removed, replaced or
//! cleaned up as an orphan) and an instance of an earlier sandbox of the pod (a pod that left
//! and came back under the same UID) are replaced at once and leave the back-off untouched.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// Upstream `initialCrashLoopBackOff`.
pub(crate) const INITIAL_BACKOFF: Duration = Duration::from_secs(10);
/// Upstream `MaxContainerBackOff`.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug)]
struct Entry {
    backoff: Duration,
    last_update: SystemTime,
}

/// The exited instance a restart replaces.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Exited<'a> {
    /// Its container id.
    pub(crate) id: &'a str,
    /// When it was created.
    pub(crate) created: SystemTime,
    /// When it finished: the back-off runs from there.
    pub(crate) finished: SystemTime,
}

/// Back-off state per key (pod UID, container name, image), and the containers the kubelet
/// stopped itself.
#[derive(Debug)]
pub(crate) struct BackOff {
    initial: Duration,
    max: Duration,
    entries: HashMap<String, Entry>,
    /// Container id -> pod UID of the instances the kubelet stopped and has not replaced yet.
    stopped: HashMap<String, String>,
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
            stopped: HashMap::new(),
        }
    }

    /// A back-off whose longest delay is `max` (`crashLoopBackOff.maxContainerRestartPeriod`):
    /// below the initial 10 s it is the initial delay too, as upstream's
    /// `newCrashLoopBackOff`.
    pub(crate) fn with_max(max: Duration) -> Self {
        BackOff::new(INITIAL_BACKOFF.min(max), max)
    }

    /// A container that stays up this long past its last back-off step starts afresh
    /// (upstream: twice the maximum).
    fn reset_after(&self) -> Duration {
        self.max * 2
    }

    fn expired(&self, event: SystemTime, entry: &Entry) -> bool {
        event
            .duration_since(entry.last_update)
            .is_ok_and(|d| d > self.reset_after())
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
        if self.expired(event, entry) {
            return None;
        }
        let since = now.duration_since(event).unwrap_or_default();
        entry.backoff.checked_sub(since).filter(|d| !d.is_zero())
    }

    /// Records a restart after a failure at `event`: the next back-off doubles (or starts at the
    /// initial value).
    pub(crate) fn next(&mut self, key: &str, event: SystemTime, now: SystemTime) {
        let backoff = match self.entries.get(key) {
            Some(entry) if !self.expired(event, entry) => (entry.backoff * 2).min(self.max),
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

    /// Notes that the kubelet stopped container `id` of pod `pod_uid`: its exit is no failure.
    pub(crate) fn stopped_by_kubelet(&mut self, pod_uid: &str, id: &str) {
        self.stopped.insert(id.to_owned(), pod_uid.to_owned());
    }

    /// Decides the restart of `key` whose previous instance is `previous`, in a sandbox created
    /// at `sandbox_created`: `Ok` to start it now (a failure of its own advances the back-off),
    /// `Err(left)` while the back-off lasts.
    pub(crate) fn restart(
        &mut self,
        key: &str,
        previous: &Exited<'_>,
        sandbox_created: Option<SystemTime>,
        now: SystemTime,
    ) -> Result<(), Duration> {
        if self.stopped.remove(previous.id).is_some() {
            return Ok(());
        }
        if sandbox_created.is_some_and(|s| previous.created < s) {
            return Ok(());
        }
        if let Some(left) = self.remaining(key, previous.finished, now) {
            return Err(left);
        }
        self.next(key, previous.finished, now);
        Ok(())
    }

    /// Forgets the pod `pod_uid` (it stopped or is gone).
    pub(crate) fn forget_pod(&mut self, pod_uid: &str) {
        let prefix = format!("{pod_uid}/");
        self.entries.retain(|k, _| !k.starts_with(&prefix));
        self.stopped.retain(|_, uid| uid != pod_uid);
    }

    /// Drops entries not updated for twice the maximum (upstream's `Backoff.GC`): they would
    /// start afresh anyway.
    pub(crate) fn gc(&mut self, now: SystemTime) {
        let keep = self.reset_after();
        self.entries.retain(|_, e| {
            now.duration_since(e.last_update)
                .map_or(true, |age| age <= keep)
        });
    }

    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        (self.entries.len(), self.stopped.len())
    }
}

/// The back-off key of a container of a pod.
pub(crate) fn key(pod_uid: &str, container: &str, image: &str) -> String {
    format!("{pod_uid}/{container}/{image}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)
    }

    /// A container instance created at `created` that exited at `finished`.
    fn exited(id: &str, created: SystemTime, finished: SystemTime) -> Exited<'_> {
        Exited {
            id,
            created,
            finished,
        }
    }

    #[test]
    fn the_first_failure_restarts_at_once_then_backoff_doubles_to_the_cap() {
        let mut b = BackOff::default();
        let t0 = t0();
        assert_eq!(b.remaining("k", t0, t0), None);
        b.next("k", t0, t0);
        let mut expected = INITIAL_BACKOFF;
        let mut now = t0;
        let mut seen = Vec::new();
        for _ in 0..8 {
            now += S;
            // A failure just now: in back-off for the current window.
            assert_eq!(b.remaining("k", now, now), Some(expected));
            seen.push(expected.as_secs());
            now += expected;
            assert_eq!(b.remaining("k", now - expected, now), None);
            b.next("k", now, now);
            expected = (expected * 2).min(MAX_BACKOFF);
        }
        assert_eq!(seen, [10, 20, 40, 80, 160, 300, 300, 300]);
    }

    /// The delays a container crashing every time sees.
    fn delays(mut b: BackOff, rounds: usize) -> Vec<u64> {
        let t0 = t0();
        b.next("k", t0, t0);
        let mut now = t0;
        let mut seen = Vec::new();
        for _ in 0..rounds {
            now += S;
            let left = b.remaining("k", now, now).expect("in back-off");
            seen.push(left.as_secs());
            now += left;
            b.next("k", now, now);
        }
        seen
    }

    #[test]
    fn max_container_restart_period_caps_the_backoff_and_lowers_its_start() {
        // crashLoopBackOff.maxContainerRestartPeriod: 30s.
        let b = BackOff::with_max(30 * S);
        assert_eq!(delays(b, 5), [10, 20, 30, 30, 30]);
        // Below the initial 10 s the maximum is the initial delay too.
        let b = BackOff::with_max(4 * S);
        assert_eq!(delays(b, 3), [4, 4, 4]);
    }

    #[test]
    fn ten_minutes_of_good_running_resets_the_backoff() {
        let mut b = BackOff::default();
        let t0 = t0();
        b.next("k", t0, t0);
        b.next("k", t0, t0);
        assert_eq!(b.remaining("k", t0 + S, t0 + S), Some(20 * S));
        // Exactly ten minutes is not yet "more than twice the maximum".
        let at_limit = t0 + 600 * S;
        assert_eq!(b.remaining("k", at_limit, at_limit), Some(20 * S));
        let later = t0 + 601 * S;
        assert_eq!(b.remaining("k", later, later), None);
        b.next("k", later, later);
        assert_eq!(b.remaining("k", later, later), Some(INITIAL_BACKOFF));
    }

    /// The first crash restarts at once, a second crash 5 s later waits the rest of 10 s, as
    /// upstream; the wait runs from the container's finish time.
    #[test]
    fn crashes_of_its_own_restart_at_once_then_back_off() {
        let mut b = BackOff::default();
        let sandbox = Some(t0());
        let first = exited("c1", t0() + S, t0() + 2 * S);
        assert_eq!(b.restart("k", &first, sandbox, t0() + 2 * S), Ok(()));
        let second = exited("c2", t0() + 2 * S, t0() + 7 * S);
        assert_eq!(
            b.restart("k", &second, sandbox, t0() + 7 * S),
            Err(10 * S),
            "the second crash waits the full 10 s window"
        );
        // Still in back-off 4 s later (the sync that retries), with 6 s left.
        assert_eq!(b.restart("k", &second, sandbox, t0() + 11 * S), Err(6 * S));
        // Then it restarts, and the next crash waits 20 s.
        assert_eq!(b.restart("k", &second, sandbox, t0() + 17 * S), Ok(()));
        let third = exited("c3", t0() + 17 * S, t0() + 18 * S);
        assert_eq!(b.restart("k", &third, sandbox, t0() + 18 * S), Err(20 * S));
    }

    /// A container the kubelet stopped itself is replaced at once and does not advance the
    /// back-off: the next crash of its own is a first crash.
    #[test]
    fn a_container_the_kubelet_stopped_is_no_failure() {
        let mut b = BackOff::default();
        let sandbox = Some(t0());
        b.stopped_by_kubelet("uid", "c1");
        let stopped = exited("c1", t0() + S, t0() + 2 * S);
        assert_eq!(b.restart("k", &stopped, sandbox, t0() + 2 * S), Ok(()));
        assert_eq!(b.len(), (0, 0), "nothing recorded, the mark consumed");
        let crashed = exited("c2", t0() + 3 * S, t0() + 4 * S);
        assert_eq!(b.restart("k", &crashed, sandbox, t0() + 4 * S), Ok(()));
        // Even in back-off, a kubelet stop does not wait.
        b.stopped_by_kubelet("uid", "c3");
        let stopped = exited("c3", t0() + 4 * S, t0() + 5 * S);
        assert_eq!(b.restart("k", &stopped, sandbox, t0() + 5 * S), Ok(()));
    }

    /// A pod removed and put back (same UID, new sandbox) starts its containers at once, and
    /// the first crash after that restarts at once too: the instances of the earlier sandbox,
    /// which the kubelet stopped, count for nothing.
    #[test]
    fn a_pod_that_comes_back_starts_with_a_clean_backoff() {
        let mut b = BackOff::default();
        let k = key("uid", "main", "busybox");
        // Crashes in the first incarnation put the container in back-off.
        let first_sandbox = Some(t0());
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            let t = t0() + (i as u32 + 1) * S;
            let _ = b.restart(&k, &exited(id, t, t), first_sandbox, t);
        }
        assert!(b.remaining(&k, t0() + 4 * S, t0() + 4 * S).is_some());
        // The pod is removed: the kubelet stops its container and forgets the pod.
        b.stopped_by_kubelet("uid", "d");
        b.forget_pod("uid");
        assert_eq!(b.len(), (0, 0));
        // It comes back: a new sandbox; the old instance starts nothing of its own.
        let second_sandbox = Some(t0() + 20 * S);
        let old = exited("d", t0() + 4 * S, t0() + 10 * S);
        assert_eq!(b.restart(&k, &old, second_sandbox, t0() + 20 * S), Ok(()));
        assert_eq!(b.len(), (0, 0), "the old instance advanced nothing");
        // Its first crash restarts at once, the second backs off as upstream.
        let crash = exited("e", t0() + 21 * S, t0() + 22 * S);
        assert_eq!(b.restart(&k, &crash, second_sandbox, t0() + 22 * S), Ok(()));
        let crash = exited("f", t0() + 22 * S, t0() + 23 * S);
        assert_eq!(
            b.restart(&k, &crash, second_sandbox, t0() + 23 * S),
            Err(10 * S)
        );
    }

    /// An instance of an earlier sandbox does not count even when the kubelet restarted in
    /// between (the stop marks are gone, the sandbox times are not).
    #[test]
    fn an_instance_of_an_earlier_sandbox_is_no_failure() {
        let mut b = BackOff::default();
        let old = exited("x", t0(), t0() + S);
        assert_eq!(
            b.restart("k", &old, Some(t0() + 2 * S), t0() + 3 * S),
            Ok(())
        );
        assert_eq!(b.len(), (0, 0));
    }

    #[test]
    fn forgetting_a_pod_and_gc_keep_the_tables_bounded() {
        let mut b = BackOff::default();
        b.next(&key("a", "c", "i"), t0(), t0());
        b.next(&key("b", "c", "i"), t0(), t0() + 300 * S);
        b.stopped_by_kubelet("a", "1");
        b.stopped_by_kubelet("b", "2");
        b.forget_pod("a");
        assert_eq!(b.len(), (1, 1));
        b.gc(t0() + 900 * S);
        assert_eq!(b.len(), (1, 1), "updated 600 s ago: kept");
        b.gc(t0() + 901 * S);
        assert_eq!(b.len(), (0, 1), "older than twice the maximum: dropped");
    }
}
