//! Pod workers: one worker per pod UID, each an explicit state machine (upstream
//! `pod_workers.go`).
//!
//! A pod is **syncing** (the syncer brings it to its spec, again at every update and resync),
//! then, once termination is requested (removed from the configuration, deleted, evicted, a
//! terminal phase, or a pod only the runtime knows), **terminating** (the syncer stops its
//! containers within the effective grace period), then **terminated** (the syncer tears its
//! volumes down), then **finished**. [`PodWorkers::update_pod`] records what the sources, the
//! sync loop, housekeeping, eviction or the prober want; the worker task runs the work of the
//! pod's state ([`next_work`]) and moves the state with the result ([`complete_work`]); the
//! queries (`is_pod_termination_requested`, `should_pod_content_be_removed`, ...) answer from
//! the same states for every other part of the kubelet.
//!
//! As upstream: the grace period only ever shrinks, and a shorter one cancels the kill in
//! flight and restarts it; a termination request cancels a sync in flight; pods that arrive
//! deleted, in a terminal phase or already marked for termination are never started; static
//! pods of the same full name run one after the other in arrival order (a changed manifest
//! has a new UID); pods only the runtime knows are stopped with a grace period of 1 second.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Pod, PodStatus as ApiPodStatus};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::{API_SOURCE, CONFIG_SOURCE_ANNOTATION};
use crate::pod_manager::{full_name, uid};
use crate::runtime::RuntimePod;

#[cfg(test)]
mod tests;

/// Upstream's default `terminationGracePeriodSeconds`.
pub const DEFAULT_TERMINATION_GRACE_PERIOD: i64 = 30;
/// The grace period of pods only the runtime knows (upstream's orphan kill).
pub const RUNTIME_POD_GRACE_PERIOD: i64 = 1;

/// Edits a pod's final status (eviction sets its phase, reason and message).
pub type StatusFn = Arc<dyn Fn(&mut ApiPodStatus) + Send + Sync>;

/// Why a pod is updated (upstream `SyncPodType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateType {
    /// The pod was added.
    Create,
    /// The pod's spec or status changed.
    Update,
    /// A resync (PLEG event, periodic sync).
    Sync,
    /// The pod is to stop.
    Kill,
}

/// How a pod is to be killed (upstream `KillPodOptions`).
#[derive(Default)]
pub struct KillPodOptions {
    /// A grace period shorter than the pod's (eviction's `evictionMaxPodGracePeriod`).
    pub grace_period_override: Option<i64>,
    /// Edits the final status (an eviction's phase, reason and message).
    pub status_fn: Option<StatusFn>,
    /// The kill is an eviction: the pod's content may be removed once stopped.
    pub evict: bool,
    /// Signalled once the pod's containers are stopped.
    pub completed: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for KillPodOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KillPodOptions")
            .field("grace_period_override", &self.grace_period_override)
            .field("evict", &self.evict)
            .finish_non_exhaustive()
    }
}

/// One update of a pod (upstream `UpdatePodOptions`).
#[derive(Debug)]
pub struct UpdatePodOptions {
    /// Why.
    pub update_type: UpdateType,
    /// The pod (absent for a pod only the runtime knows).
    pub pod: Option<Pod>,
    /// A pod only the runtime knows, to be stopped ([`UpdateType::Kill`]).
    pub running_pod: Option<RuntimePod>,
    /// How to kill, with [`UpdateType::Kill`].
    pub kill: Option<KillPodOptions>,
}

impl UpdatePodOptions {
    /// An update of `pod` for `update_type`.
    pub fn new(update_type: UpdateType, pod: Pod) -> Self {
        UpdatePodOptions {
            update_type,
            pod: Some(pod),
            running_pod: None,
            kill: None,
        }
    }

    /// A kill of `pod` with `kill`.
    pub fn kill(pod: Pod, kill: KillPodOptions) -> Self {
        UpdatePodOptions {
            update_type: UpdateType::Kill,
            pod: Some(pod),
            running_pod: None,
            kill: Some(kill),
        }
    }

    /// A kill of a pod only the runtime knows.
    pub fn kill_runtime_pod(running: RuntimePod) -> Self {
        UpdatePodOptions {
            update_type: UpdateType::Kill,
            pod: None,
            running_pod: Some(running),
            kill: None,
        }
    }
}

/// Where a pod's worker is (upstream `PodWorkerState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodWorkerState {
    /// Syncing to its spec (or waiting to start).
    Syncing,
    /// Termination requested; its containers are being stopped.
    Terminating,
    /// Its containers are stopped; its volumes are being torn down.
    Terminated,
    /// Nothing more to do.
    Finished,
}

/// Cancels the work in flight; the syncer selects on [`Cancel::cancelled`].
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<CancelInner>);

#[derive(Debug, Default)]
struct CancelInner {
    cancelled: AtomicBool,
    notify: Notify,
}

impl Cancel {
    /// Cancels.
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    /// Whether it was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
    }

    /// Completes once cancelled.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// An error of the syncer: the worker logs it and retries after the back-off period.
pub type SyncError = Box<dyn std::error::Error + Send + Sync>;

/// What a sync decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncOutcome {
    /// The pod runs on; sync it again after this (the resync period when `None`).
    Continue(Option<Duration>),
    /// The pod reached a terminal phase: terminate it.
    Terminal,
}

/// The work of each state (upstream `podSyncer`): the kubelet implements it over its runtime,
/// volume manager and status manager. Work that selects on `cancel` and returns early when
/// it fires is restarted with the newer request.
#[async_trait]
pub trait PodSyncer: Send + Sync + 'static {
    /// Brings the pod to its spec.
    async fn sync_pod(
        &self,
        update: UpdateType,
        pod: &Pod,
        cancel: &Cancel,
    ) -> Result<SyncOutcome, SyncError>;

    /// Stops the pod's containers within `grace` seconds and writes its final status (with
    /// `status_fn` applied). Returning `Ok` after `cancel` fired means "not done": the worker
    /// runs it again with the newer grace period.
    async fn sync_terminating_pod(
        &self,
        pod: &Pod,
        grace: i64,
        status_fn: Option<&StatusFn>,
        cancel: &Cancel,
    ) -> Result<(), SyncError>;

    /// Stops a pod only the runtime knows (grace [`RUNTIME_POD_GRACE_PERIOD`]).
    async fn sync_terminating_runtime_pod(&self, running: &RuntimePod) -> Result<(), SyncError>;

    /// Cleans up after the containers stopped (volumes).
    async fn sync_terminated_pod(&self, pod: &Pod) -> Result<(), SyncError>;
}

/// How often workers resync and retry.
#[derive(Clone, Copy, Debug)]
pub struct WorkerTiming {
    /// A running pod is synced again after this (jittered), `syncFrequency`.
    pub resync: Duration,
    /// A failed step is retried after this (jittered), upstream's 10 s back-off.
    pub backoff: Duration,
}

/// Jitters `d` upward by up to half (upstream `wait.Jitter(d, 0.5)`).
pub fn jitter(d: Duration) -> Duration {
    let nanos = jiff::Timestamp::now().subsec_nanosecond().unsigned_abs();
    d + d.mul_f64(f64::from(nanos % 1000) / 2000.0)
}

/// The grace period to kill with (upstream `calculateEffectiveGracePeriod`): it only ever
/// shrinks from `current`; the deletion's grace period, then the kill's override, each apply
/// when shorter; without either, the spec's (30 s by default); never below 1 second.
pub fn effective_grace_period(current: Option<i64>, pod: &Pod, override_: Option<i64>) -> i64 {
    let mut grace = current;
    let mut overridden = false;
    for candidate in [pod.metadata.deletion_grace_period_seconds, override_]
        .into_iter()
        .flatten()
    {
        if grace.is_none_or(|g| candidate < g) {
            grace = Some(candidate);
            overridden = true;
        }
    }
    let grace = match grace {
        Some(g) if overridden || current.is_some() => g,
        _ => pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(DEFAULT_TERMINATION_GRACE_PERIOD),
    };
    grace.max(1)
}

/// Whether the pod came from a file or URL source (a static pod).
pub fn is_static_pod(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CONFIG_SOURCE_ANNOTATION))
        .is_some_and(|s| s != API_SOURCE)
}

fn is_terminal_phase(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The state of one pod's worker (upstream `podSyncStatus`).
pub struct PodSyncStatus {
    full_name: String,
    is_static: bool,
    pod: Option<Pod>,
    running_pod: Option<RuntimePod>,
    state: PodWorkerState,
    /// The effective grace period, once termination was requested.
    grace: Option<i64>,
    deleted: bool,
    evicted: bool,
    status_fn: Option<StatusFn>,
    completions: Vec<oneshot::Sender<()>>,
    /// Work waiting for the worker, and since when it is due.
    pending: Option<(UpdateType, Instant)>,
    /// The work in flight can be cancelled through this.
    in_flight: Option<Cancel>,
    /// A static pod allowed to run (not waiting for an earlier pod of its full name).
    started: bool,
    /// Added again while terminating: run afresh once finished.
    restart_requested: bool,
}

impl PodSyncStatus {
    fn new(pod: Option<Pod>, running_pod: Option<RuntimePod>) -> Self {
        let full_name = match (&pod, &running_pod) {
            (Some(p), _) => full_name(p),
            (None, Some(r)) => format!("{}_{}", r.name, r.namespace),
            (None, None) => String::new(),
        };
        PodSyncStatus {
            full_name,
            is_static: pod.as_ref().is_some_and(is_static_pod),
            pod,
            running_pod,
            state: PodWorkerState::Syncing,
            grace: None,
            deleted: false,
            evicted: false,
            status_fn: None,
            completions: Vec::new(),
            pending: None,
            in_flight: None,
            started: false,
            restart_requested: false,
        }
    }

    /// The state.
    pub fn state(&self) -> PodWorkerState {
        self.state
    }

    /// Whether termination was requested.
    pub fn is_termination_requested(&self) -> bool {
        self.state != PodWorkerState::Syncing
    }

    /// Whether the containers are known stopped.
    pub fn is_terminated(&self) -> bool {
        matches!(
            self.state,
            PodWorkerState::Terminated | PodWorkerState::Finished
        )
    }

    /// The effective grace period, once termination was requested.
    pub fn grace_period(&self) -> Option<i64> {
        self.grace
    }

    fn due(&mut self, update: UpdateType, at: Instant) {
        self.pending = Some(match self.pending {
            // Keep the earliest due time; a newer reason wins.
            Some((_, due)) if due <= at => (update, due),
            _ => (update, at),
        });
    }

    /// Requests termination (or shortens the grace period of one under way): cancels a sync
    /// in flight, or a kill in flight whose grace period is now longer.
    fn request_termination(&mut self, override_: Option<i64>, now: Instant) {
        let grace = match &self.pod {
            Some(pod) => effective_grace_period(self.grace, pod, override_),
            None => RUNTIME_POD_GRACE_PERIOD,
        };
        let became = self.state == PodWorkerState::Syncing;
        let shorter = self.grace.is_some_and(|g| grace < g);
        if became {
            self.state = PodWorkerState::Terminating;
        }
        if became || shorter || self.grace.is_none() {
            self.grace = Some(grace);
        }
        if (became || shorter)
            && let Some(cancel) = &self.in_flight
        {
            cancel.cancel();
        }
        if became || shorter {
            self.due(UpdateType::Kill, now);
        }
    }
}

/// The next work of a pod (the step function's first half): what its state calls for, if
/// anything is due. `None` when nothing is pending, the pod is finished, or a static pod
/// must still wait for its turn.
pub fn next_work(status: &mut PodSyncStatus, now: Instant) -> Option<Work> {
    let (update, due) = status.pending?;
    if due > now || status.state == PodWorkerState::Finished {
        return None;
    }
    if status.state == PodWorkerState::Syncing && !status.started {
        return None;
    }
    status.pending = None;
    let cancel = Cancel::default();
    status.in_flight = Some(cancel.clone());
    let work = match (status.state, &status.pod, &status.running_pod) {
        (PodWorkerState::Syncing, Some(pod), _) => Work::Sync {
            update,
            pod: pod.clone(),
            cancel,
        },
        (PodWorkerState::Terminating, Some(pod), _) => Work::Terminating {
            pod: pod.clone(),
            grace: status.grace.unwrap_or(1),
            status_fn: status.status_fn.clone(),
            cancel,
        },
        (PodWorkerState::Terminating, None, Some(running)) => {
            Work::TerminatingRuntimePod(running.clone())
        }
        (PodWorkerState::Terminated, Some(pod), _) => Work::Terminated(pod.clone()),
        _ => {
            status.in_flight = None;
            return None;
        }
    };
    Some(work)
}

/// What a worker runs.
pub enum Work {
    /// [`PodSyncer::sync_pod`].
    Sync {
        /// Why.
        update: UpdateType,
        /// The pod.
        pod: Pod,
        /// Cancelled when termination is requested.
        cancel: Cancel,
    },
    /// [`PodSyncer::sync_terminating_pod`].
    Terminating {
        /// The pod.
        pod: Pod,
        /// The effective grace period.
        grace: i64,
        /// The final status's edit.
        status_fn: Option<StatusFn>,
        /// Cancelled when the grace period shrinks.
        cancel: Cancel,
    },
    /// [`PodSyncer::sync_terminating_runtime_pod`].
    TerminatingRuntimePod(RuntimePod),
    /// [`PodSyncer::sync_terminated_pod`].
    Terminated(Pod),
}

/// How a work ended.
#[derive(Debug)]
pub enum WorkResult {
    /// A sync's outcome.
    Synced(SyncOutcome),
    /// Termination work done (unless cancelled, see [`complete_work`]).
    Done,
    /// Failed: retry after the back-off.
    Failed(String),
}

/// Moves the state with the result of `work` (the step function's second half), and
/// schedules what comes next. A termination step cancelled by a shorter grace period is run
/// again at once.
pub fn complete_work(
    status: &mut PodSyncStatus,
    work: &Work,
    cancelled: bool,
    result: WorkResult,
    now: Instant,
    timing: &WorkerTiming,
) {
    status.in_flight = None;
    if cancelled {
        // A newer request cancelled this work: it is pending already.
        status.due(UpdateType::Sync, now);
        return;
    }
    match (work, result) {
        (_, WorkResult::Failed(_)) => status.due(UpdateType::Sync, now + jitter(timing.backoff)),
        (Work::Sync { .. }, WorkResult::Synced(SyncOutcome::Terminal)) => {
            status.request_termination(None, now);
        }
        (Work::Sync { .. }, WorkResult::Synced(SyncOutcome::Continue(after))) => {
            status.due(
                UpdateType::Sync,
                now + after.unwrap_or_else(|| jitter(timing.resync)),
            );
        }
        (Work::Terminating { .. }, _) => {
            status.state = PodWorkerState::Terminated;
            for done in status.completions.drain(..) {
                let _ = done.send(());
            }
            status.due(UpdateType::Sync, now);
        }
        (Work::TerminatingRuntimePod(_), _) | (Work::Terminated(_), _) => {
            status.state = PodWorkerState::Finished;
            for done in status.completions.drain(..) {
                let _ = done.send(());
            }
        }
        (Work::Sync { .. }, WorkResult::Done) => status.due(UpdateType::Sync, now),
    }
}

struct Inner {
    statuses: HashMap<String, (PodSyncStatus, Arc<Notify>, JoinHandle<()>)>,
    /// The static pod running for each full name.
    started_static: HashMap<String, String>,
    /// Static pods waiting for their turn, in arrival order.
    waiting_static: HashMap<String, VecDeque<String>>,
    /// Whether the sources were all seen once ([`PodWorkers::sync_known_pods`] called).
    synced: bool,
}

/// The pod workers, shared by the sync loop, housekeeping, garbage collection and the
/// status manager (and, later, eviction and the prober).
pub struct PodWorkers {
    inner: Mutex<Inner>,
    syncer: Arc<dyn PodSyncer>,
    timing: WorkerTiming,
}

impl std::fmt::Debug for PodWorkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodWorkers")
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

impl PodWorkers {
    /// Workers running `syncer`'s work.
    pub fn new(syncer: Arc<dyn PodSyncer>, timing: WorkerTiming) -> Arc<Self> {
        Arc::new(PodWorkers {
            inner: Mutex::new(Inner {
                statuses: HashMap::new(),
                started_static: HashMap::new(),
                waiting_static: HashMap::new(),
                synced: false,
            }),
            syncer,
            timing,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an update of a pod and wakes (or starts) its worker (upstream `UpdatePod`).
    pub fn update_pod(self: &Arc<Self>, options: UpdatePodOptions) {
        let uid = match (&options.pod, &options.running_pod) {
            (Some(pod), _) => uid(pod).to_string(),
            (None, Some(running)) => running.uid.to_string(),
            (None, None) => return,
        };
        if uid.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut inner = self.lock();
        let mut kill = options.kill;
        if !inner.statuses.contains_key(&uid) {
            if options.pod.is_none() && options.update_type != UpdateType::Kill {
                return;
            }
            let status = PodSyncStatus::new(options.pod.clone(), options.running_pod.clone());
            let notify = Arc::new(Notify::new());
            let task = tokio::spawn(run_worker(
                Arc::downgrade(self),
                uid.clone(),
                notify.clone(),
            ));
            inner.statuses.insert(uid.clone(), (status, notify, task));
        }
        let Inner {
            statuses,
            started_static,
            waiting_static,
            ..
        } = &mut *inner;
        let (status, _, _) = statuses.get_mut(&uid).expect("inserted above");
        if status.state == PodWorkerState::Finished {
            // The same UID added again after it finished: a new incarnation.
            if options.update_type == UpdateType::Create
                && let Some(pod) = &options.pod
                && pod.metadata.deletion_timestamp.is_none()
            {
                info!(pod = %status.full_name, "pod added again after it finished; starting it afresh");
                *status = PodSyncStatus::new(Some(pod.clone()), None);
            } else {
                return;
            }
        } else if status.is_termination_requested()
            && options.update_type == UpdateType::Create
            && options
                .pod
                .as_ref()
                .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
        {
            status.restart_requested = true;
        }
        if let Some(pod) = options.pod {
            status.pod = Some(pod);
        }
        if let Some(k) = kill.as_mut() {
            if k.evict {
                status.evicted = true;
            }
            if let Some(f) = k.status_fn.take() {
                status.status_fn = Some(f);
            }
            if let Some(done) = k.completed.take() {
                status.completions.push(done);
            }
        }
        let pod = status.pod.clone();
        let deleted = pod
            .as_ref()
            .is_some_and(|p| p.metadata.deletion_timestamp.is_some());
        let terminate = status.running_pod.is_some() && pod.is_none()
            || deleted
            || pod.as_ref().is_some_and(is_terminal_phase)
            || options.update_type == UpdateType::Kill;
        if deleted || (status.running_pod.is_some() && pod.is_none()) {
            status.deleted = true;
        }
        if terminate {
            let override_ = kill.as_ref().and_then(|k| k.grace_period_override);
            if status.state == PodWorkerState::Syncing {
                debug!(pod = %status.full_name, "termination requested");
            }
            status.request_termination(override_, now);
        } else {
            status.due(options.update_type, now);
        }
        let needs_turn = status.is_static && !status.started;
        if !needs_turn {
            status.started = true;
        }
        if needs_turn {
            let allowed = allow_static_start(started_static, waiting_static, statuses, &uid);
            if let Some((status, _, _)) = statuses.get_mut(&uid) {
                status.started = allowed;
            }
        }
        if let Some((_, notify, _)) = statuses.get(&uid) {
            notify.notify_one();
        }
    }

    /// Runs once the sources were all seen: the workers of finished pods no longer wanted
    /// are forgotten (their UIDs returned, for the status manager), workers whose task ended
    /// while their pod is still wanted are started again, and from now on unknown pods count
    /// as removable (upstream `SyncKnownPods`).
    pub fn sync_known_pods(self: &Arc<Self>, desired: &HashSet<String>) -> Vec<String> {
        let mut inner = self.lock();
        inner.synced = true;
        let gone: Vec<String> = inner
            .statuses
            .iter()
            .filter(|(uid, (s, _, _))| {
                s.state == PodWorkerState::Finished
                    && !desired.contains(*uid)
                    && !s.restart_requested
            })
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in &gone {
            if let Some((status, notify, _)) = inner.statuses.remove(uid) {
                if status.is_static {
                    release_static(&mut inner, &status.full_name, uid);
                }
                notify.notify_one();
            }
        }
        let dead: Vec<String> = inner
            .statuses
            .iter()
            .filter(|(_, (s, _, task))| task.is_finished() && s.state != PodWorkerState::Finished)
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in dead {
            warn!(uid = %uid, "a pod worker ended early; starting it again");
            let notify = Arc::new(Notify::new());
            let task = tokio::spawn(run_worker(
                Arc::downgrade(self),
                uid.clone(),
                notify.clone(),
            ));
            if let Some(entry) = inner.statuses.get_mut(&uid) {
                entry.0.due(UpdateType::Sync, Instant::now());
                entry.1 = notify;
                entry.2 = task;
            }
        }
        gone
    }

    /// The state of pod `uid`'s worker, if it has one.
    pub fn state(&self, uid: &str) -> Option<PodWorkerState> {
        self.lock().statuses.get(uid).map(|(s, _, _)| s.state)
    }

    /// The UIDs of the pods that have a worker.
    pub fn known(&self) -> Vec<String> {
        self.lock().statuses.keys().cloned().collect()
    }

    /// Whether the pod's termination was requested (upstream `IsPodTerminationRequested`).
    pub fn is_pod_termination_requested(&self, uid: &str) -> bool {
        self.lock()
            .statuses
            .get(uid)
            .is_some_and(|(s, _, _)| s.is_termination_requested())
    }

    /// Whether the pod's containers should be stopping (upstream
    /// `ShouldPodContainersBeTerminating`); an unknown pod is not.
    pub fn should_pod_containers_be_terminating(&self, uid: &str) -> bool {
        self.is_pod_termination_requested(uid)
    }

    /// Whether the pod's containers are known stopped (upstream `IsPodKnownTerminated`).
    pub fn is_pod_known_terminated(&self, uid: &str) -> bool {
        self.lock()
            .statuses
            .get(uid)
            .is_some_and(|(s, _, _)| s.is_terminated())
    }

    /// Whether the pod may still have running containers (upstream
    /// `CouldHaveRunningContainers`); unknown pods may, until the sources were seen.
    pub fn could_have_running_containers(&self, uid: &str) -> bool {
        let inner = self.lock();
        match inner.statuses.get(uid) {
            Some((s, _, _)) => !s.is_terminated(),
            None => !inner.synced,
        }
    }

    /// Whether the runtime's containers and sandboxes of the pod may be removed (upstream
    /// `ShouldPodRuntimeBeRemoved`).
    pub fn should_pod_runtime_be_removed(&self, uid: &str) -> bool {
        let inner = self.lock();
        match inner.statuses.get(uid) {
            Some((s, _, _)) => s.is_terminated(),
            None => inner.synced,
        }
    }

    /// Whether the pod's content (volumes, directories, logs) may be removed (upstream
    /// `ShouldPodContentBeRemoved`): evicted, or deleted and terminated, or unknown once the
    /// sources were seen.
    pub fn should_pod_content_be_removed(&self, uid: &str) -> bool {
        let inner = self.lock();
        match inner.statuses.get(uid) {
            Some((s, _, _)) => s.evicted || (s.deleted && s.is_terminated()),
            None => inner.synced,
        }
    }

    /// Stops every worker task (the pods are left as they are).
    pub fn stop(&self) {
        for (_, _, task) in self.lock().statuses.values() {
            task.abort();
        }
    }
}

/// Garbage collection removes every container and sandbox of a pod only when its content may
/// go: a pod that finished but is still wanted keeps its dead containers (their exit codes
/// are its status).
impl crate::runtime::PodStateProvider for PodWorkers {
    fn should_pod_content_be_removed(&self, uid: &crate::runtime::PodUid) -> bool {
        PodWorkers::should_pod_content_be_removed(self, uid.as_str())
    }
}

/// Whether static pod `uid` may start now: no other pod of its full name runs, and it is the
/// first of those waiting that still wants to run (upstream `allowStaticPodStart`).
fn allow_static_start(
    started: &mut HashMap<String, String>,
    waiting: &mut HashMap<String, VecDeque<String>>,
    statuses: &HashMap<String, (PodSyncStatus, Arc<Notify>, JoinHandle<()>)>,
    uid: &str,
) -> bool {
    let Some((status, _, _)) = statuses.get(uid) else {
        return false;
    };
    let name = status.full_name.clone();
    if let Some(running) = started.get(&name) {
        if running == uid {
            return true;
        }
        let queue = waiting.entry(name).or_default();
        if !queue.iter().any(|u| u == uid) {
            queue.push_back(uid.to_string());
        }
        return false;
    }
    let queue = waiting.entry(name.clone()).or_default();
    if !queue.iter().any(|u| u == uid) {
        queue.push_back(uid.to_string());
    }
    // Skip waiters that no longer want to run.
    while let Some(front) = queue.front() {
        let wants = statuses
            .get(front)
            .is_some_and(|(s, _, _)| !s.is_termination_requested());
        if wants {
            break;
        }
        queue.pop_front();
    }
    if queue.front().map(String::as_str) != Some(uid) {
        return false;
    }
    queue.pop_front();
    if queue.is_empty() {
        waiting.remove(&name);
    }
    started.insert(name, uid.to_string());
    true
}

/// A finished static pod `uid` gives its full name to the next waiting pod, and wakes it.
fn release_static(inner: &mut Inner, name: &str, uid: &str) {
    if inner.started_static.get(name).map(String::as_str) != Some(uid) {
        return;
    }
    inner.started_static.remove(name);
    let Inner {
        statuses,
        started_static,
        waiting_static,
        ..
    } = inner;
    while let Some(next) = waiting_static.get(name).and_then(|q| q.front().cloned()) {
        if !allow_static_start(started_static, waiting_static, statuses, &next) {
            // The front waiter no longer wants to run and was skipped: try the new front.
            if waiting_static.get(name).and_then(|q| q.front()) == Some(&next) {
                break;
            }
            continue;
        }
        if let Some((s, notify, _)) = statuses.get_mut(&next) {
            s.started = true;
            s.due(UpdateType::Create, Instant::now());
            notify.notify_one();
        }
        break;
    }
}

/// One pod's worker task: runs the work its state calls for when due, until its status is
/// forgotten.
async fn run_worker(workers: std::sync::Weak<PodWorkers>, uid: String, notify: Arc<Notify>) {
    loop {
        let Some(this) = workers.upgrade() else {
            return;
        };
        let (work, wait) = {
            let mut inner = this.lock();
            let Some((status, own, _)) = inner.statuses.get_mut(&uid) else {
                return;
            };
            if !Arc::ptr_eq(own, &notify) {
                // Replaced by a restarted worker.
                return;
            }
            let now = Instant::now();
            match next_work(status, now) {
                Some(work) => (Some(work), None),
                // Work due later waits for its time; work that may not run yet (a static pod
                // waiting for its turn, a finished pod) waits to be woken.
                None => (
                    None,
                    status.pending.map(|(_, due)| due).filter(|d| *d > now),
                ),
            }
        };
        let Some(work) = work else {
            drop(this);
            match wait {
                Some(due) => {
                    tokio::select! {
                        _ = notify.notified() => {}
                        _ = tokio::time::sleep_until(due) => {}
                    }
                }
                None => notify.notified().await,
            }
            continue;
        };
        let syncer = this.syncer.clone();
        let timing = this.timing;
        drop(this);
        let (result, cancelled) = run_work(syncer.as_ref(), &work).await;
        let Some(this) = workers.upgrade() else {
            return;
        };
        let mut inner = this.lock();
        let Some((status, _, _)) = inner.statuses.get_mut(&uid) else {
            return;
        };
        if let WorkResult::Failed(e) = &result {
            warn!(pod = %status.full_name, error = %e, state = ?status.state, "pod worker step failed; retrying");
        }
        let was = status.state;
        complete_work(status, &work, cancelled, result, Instant::now(), &timing);
        if status.state != was {
            debug!(pod = %status.full_name, from = ?was, to = ?status.state, "pod worker state");
        }
        if status.state == PodWorkerState::Finished {
            let static_name = status.is_static.then(|| status.full_name.clone());
            let restart = status.restart_requested;
            if restart {
                info!(pod = %status.full_name, "pod added again while it stopped; starting it afresh");
                let pod = status.pod.clone();
                *status = PodSyncStatus::new(pod, None);
                status.due(UpdateType::Create, Instant::now());
                status.started = !status.is_static;
            }
            if let Some(name) = static_name {
                release_static(&mut inner, &name, &uid);
                if restart {
                    let Inner {
                        statuses,
                        started_static,
                        waiting_static,
                        ..
                    } = &mut *inner;
                    let allowed =
                        allow_static_start(started_static, waiting_static, statuses, &uid);
                    if let Some((s, _, _)) = statuses.get_mut(&uid) {
                        s.started = allowed;
                    }
                }
            }
        }
    }
}

/// Runs `work` on `syncer`; whether it was cancelled while it ran.
async fn run_work(syncer: &dyn PodSyncer, work: &Work) -> (WorkResult, bool) {
    let as_result = |r: Result<(), SyncError>| match r {
        Ok(()) => WorkResult::Done,
        Err(e) => WorkResult::Failed(e.to_string()),
    };
    match work {
        Work::Sync {
            update,
            pod,
            cancel,
        } => {
            let result = match syncer.sync_pod(*update, pod, cancel).await {
                Ok(outcome) => WorkResult::Synced(outcome),
                Err(e) => WorkResult::Failed(e.to_string()),
            };
            (result, cancel.is_cancelled())
        }
        Work::Terminating {
            pod,
            grace,
            status_fn,
            cancel,
        } => {
            let result = syncer
                .sync_terminating_pod(pod, *grace, status_fn.as_ref(), cancel)
                .await;
            (as_result(result), cancel.is_cancelled())
        }
        Work::TerminatingRuntimePod(running) => (
            as_result(syncer.sync_terminating_runtime_pod(running).await),
            false,
        ),
        Work::Terminated(pod) => (as_result(syncer.sync_terminated_pod(pod).await), false),
    }
}
