//! The pod workers' state machine under paused time, with a syncer that records its calls.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::*;
use crate::config::FILE_SOURCE;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Call {
    Sync(String, UpdateType),
    Terminating(String, i64),
    Runtime(String),
    Terminated(String),
}

/// Records calls; a kill takes its grace period in seconds (returning early when cancelled);
/// syncs answer per UID as set in `outcomes` (default: running on), or block until cancelled
/// for UIDs in `hang`.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<Call>>,
    outcomes: Mutex<HashMap<String, Result<SyncOutcome, String>>>,
    hang: Mutex<HashSet<String>>,
}

impl Recorder {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn count(&self, f: impl Fn(&Call) -> bool) -> usize {
        self.calls().iter().filter(|c| f(c)).count()
    }
}

#[async_trait]
impl PodSyncer for Recorder {
    async fn sync_pod(
        &self,
        update: UpdateType,
        pod: &Pod,
        cancel: &Cancel,
    ) -> Result<SyncOutcome, SyncError> {
        let id = uid(pod).to_string();
        self.calls
            .lock()
            .unwrap()
            .push(Call::Sync(id.clone(), update));
        if self.hang.lock().unwrap().contains(&id) {
            cancel.cancelled().await;
            return Ok(SyncOutcome::Continue(None));
        }
        match self.outcomes.lock().unwrap().get(&id).cloned() {
            Some(Ok(o)) => Ok(o),
            Some(Err(e)) => Err(e.into()),
            None => Ok(SyncOutcome::Continue(None)),
        }
    }

    async fn sync_terminating_pod(
        &self,
        pod: &Pod,
        grace: i64,
        _status_fn: Option<&StatusFn>,
        cancel: &Cancel,
    ) -> Result<(), SyncError> {
        self.calls
            .lock()
            .unwrap()
            .push(Call::Terminating(uid(pod).to_string(), grace));
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_secs(grace as u64)) => {}
        }
        Ok(())
    }

    async fn sync_terminating_runtime_pod(&self, running: &RuntimePod) -> Result<(), SyncError> {
        self.calls
            .lock()
            .unwrap()
            .push(Call::Runtime(running.uid.to_string()));
        Ok(())
    }

    async fn sync_terminated_pod(&self, pod: &Pod) -> Result<(), SyncError> {
        self.calls
            .lock()
            .unwrap()
            .push(Call::Terminated(uid(pod).to_string()));
        Ok(())
    }
}

const TIMING: WorkerTiming = WorkerTiming {
    resync: Duration::from_secs(60),
    backoff: Duration::from_secs(10),
};

fn workers() -> (Arc<PodWorkers>, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    (PodWorkers::new(recorder.clone(), TIMING), recorder)
}

fn pod(name: &str, id: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(id.into()),
            annotations: Some([(CONFIG_SOURCE_ANNOTATION.into(), API_SOURCE.into())].into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            termination_grace_period_seconds: Some(30),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn static_pod(name: &str, id: &str) -> Pod {
    let mut p = pod(name, id);
    p.metadata.annotations = Some([(CONFIG_SOURCE_ANNOTATION.into(), FILE_SOURCE.into())].into());
    p
}

fn deleted(mut p: Pod, grace: i64) -> Pod {
    p.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
    p.metadata.deletion_grace_period_seconds = Some(grace);
    p
}

/// Lets the workers run for `secs` seconds of paused time.
async fn run_for(secs: f64) {
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
}

fn kill(p: &Pod) -> UpdatePodOptions {
    UpdatePodOptions::kill(p.clone(), KillPodOptions::default())
}

#[tokio::test(start_paused = true)]
async fn a_pod_syncs_and_resyncs_then_terminates_through_every_state() {
    let (w, r) = workers();
    let a = pod("a", "ua");
    w.update_pod(UpdatePodOptions::new(UpdateType::Create, a.clone()));
    run_for(0.1).await;
    assert_eq!(r.calls(), [Call::Sync("ua".into(), UpdateType::Create)]);
    assert_eq!(w.state("ua"), Some(PodWorkerState::Syncing));
    assert!(!w.is_pod_termination_requested("ua"));
    // The resync comes within the period plus its jitter.
    run_for(91.0).await;
    assert_eq!(r.count(|c| matches!(c, Call::Sync(_, UpdateType::Sync))), 1);

    let (done_tx, mut done) = oneshot::channel();
    w.update_pod(UpdatePodOptions::kill(
        a.clone(),
        KillPodOptions {
            completed: Some(done_tx),
            ..Default::default()
        },
    ));
    assert!(w.is_pod_termination_requested("ua"));
    assert!(w.should_pod_containers_be_terminating("ua"));
    assert!(w.could_have_running_containers("ua"));
    run_for(1.0).await;
    assert_eq!(w.state("ua"), Some(PodWorkerState::Terminating));
    assert!(done.try_recv().is_err(), "not done while the kill runs");
    run_for(30.0).await;
    assert!(done.try_recv().is_ok(), "the completion is signalled");
    assert_eq!(w.state("ua"), Some(PodWorkerState::Finished));
    assert!(w.is_pod_known_terminated("ua"));
    assert!(!w.could_have_running_containers("ua"));
    let tail: Vec<Call> = r.calls().into_iter().skip(2).collect();
    assert_eq!(
        tail,
        [
            Call::Terminating("ua".into(), 30),
            Call::Terminated("ua".into())
        ]
    );
    // Finished: nothing more runs, not even a resync.
    run_for(300.0).await;
    assert_eq!(r.calls().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_termination_request_cancels_a_sync_in_flight() {
    let (w, r) = workers();
    let a = pod("a", "ua");
    r.hang.lock().unwrap().insert("ua".into());
    w.update_pod(UpdatePodOptions::new(UpdateType::Create, a.clone()));
    run_for(5.0).await;
    w.update_pod(kill(&a));
    run_for(0.1).await;
    assert_eq!(
        r.calls(),
        [
            Call::Sync("ua".into(), UpdateType::Create),
            Call::Terminating("ua".into(), 30)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_shorter_grace_period_restarts_the_kill_and_a_longer_one_is_ignored() {
    let (w, r) = workers();
    let a = pod("a", "ua");
    w.update_pod(UpdatePodOptions::new(UpdateType::Create, a.clone()));
    run_for(0.1).await;
    w.update_pod(kill(&a));
    run_for(5.0).await;
    // Deleted with 10 s: shorter, the kill restarts with it.
    w.update_pod(UpdatePodOptions::new(
        UpdateType::Update,
        deleted(a.clone(), 10),
    ));
    run_for(0.1).await;
    // An eviction asking for 20 s: longer, ignored.
    w.update_pod(UpdatePodOptions::kill(
        a.clone(),
        KillPodOptions {
            grace_period_override: Some(20),
            ..Default::default()
        },
    ));
    run_for(0.1).await;
    // A force delete (0) becomes 1 second.
    w.update_pod(UpdatePodOptions::new(
        UpdateType::Update,
        deleted(a.clone(), 0),
    ));
    run_for(2.0).await;
    let kills: Vec<i64> = r
        .calls()
        .iter()
        .filter_map(|c| match c {
            Call::Terminating(_, g) => Some(*g),
            _ => None,
        })
        .collect();
    assert_eq!(kills, [30, 10, 1]);
    assert_eq!(w.state("ua"), Some(PodWorkerState::Finished));
    assert!(
        w.should_pod_content_be_removed("ua"),
        "deleted and terminated: its content may go"
    );
}

#[tokio::test(start_paused = true)]
async fn pods_arriving_deleted_or_terminal_are_never_started() {
    let (w, r) = workers();
    w.update_pod(UpdatePodOptions::new(
        UpdateType::Create,
        deleted(pod("gone", "ug"), 5),
    ));
    let mut done = pod("done", "ud");
    done.status = Some(ApiPodStatus {
        phase: Some("Succeeded".into()),
        ..Default::default()
    });
    w.update_pod(UpdatePodOptions::new(UpdateType::Create, done));
    run_for(31.0).await;
    assert_eq!(
        r.count(|c| matches!(c, Call::Sync(..))),
        0,
        "{:?}",
        r.calls()
    );
    assert!(r.calls().contains(&Call::Terminating("ug".into(), 5)));
    assert!(r.calls().contains(&Call::Terminating("ud".into(), 30)));
    assert_eq!(w.state("ug"), Some(PodWorkerState::Finished));
    assert_eq!(w.state("ud"), Some(PodWorkerState::Finished));
}

#[tokio::test(start_paused = true)]
async fn a_sync_reaching_a_terminal_phase_terminates_the_pod() {
    let (w, r) = workers();
    r.outcomes
        .lock()
        .unwrap()
        .insert("ua".into(), Ok(SyncOutcome::Terminal));
    w.update_pod(UpdatePodOptions::new(UpdateType::Create, pod("a", "ua")));
    run_for(31.0).await;
    assert_eq!(
        r.calls(),
        [
            Call::Sync("ua".into(), UpdateType::Create),
            Call::Terminating("ua".into(), 30),
            Call::Terminated("ua".into())
        ]
    );
    assert!(
        !w.should_pod_content_be_removed("ua"),
        "terminal but not deleted: its content stays"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_sync_is_retried_after_the_back_off() {
    let (w, r) = workers();
    r.outcomes
        .lock()
        .unwrap()
        .insert("ua".into(), Err("runtime unavailable".into()));
    w.update_pod(UpdatePodOptions::new(UpdateType::Create, pod("a", "ua")));
    run_for(9.0).await;
    assert_eq!(r.calls().len(), 1);
    run_for(7.0).await;
    assert_eq!(r.calls().len(), 2, "retried within 10-15 s");
}

#[tokio::test(start_paused = true)]
async fn static_pods_of_one_full_name_run_one_after_the_other_in_arrival_order() {
    let (w, r) = workers();
    let first = static_pod("etcd", "u1");
    w.update_pod(UpdatePodOptions::new(UpdateType::Create, first.clone()));
    run_for(0.1).await;
    // The manifest changed twice: two new UIDs arrive while the first runs.
    w.update_pod(UpdatePodOptions::new(
        UpdateType::Create,
        static_pod("etcd", "u2"),
    ));
    w.update_pod(UpdatePodOptions::new(
        UpdateType::Create,
        static_pod("etcd", "u3"),
    ));
    // Not static: an API pod of the same name does not wait.
    w.update_pod(UpdatePodOptions::new(
        UpdateType::Create,
        pod("etcd", "api"),
    ));
    run_for(1.0).await;
    let synced = |id: &str| {
        r.calls()
            .contains(&Call::Sync(id.into(), UpdateType::Create))
    };
    assert!(synced("u1") && synced("api"));
    assert!(!synced("u2") && !synced("u3"), "{:?}", r.calls());
    w.update_pod(kill(&first));
    run_for(31.0).await;
    assert!(synced("u2"), "the second starts once the first finished");
    assert!(!synced("u3"), "the third still waits");
    w.update_pod(kill(&static_pod("etcd", "u2")));
    run_for(31.0).await;
    assert!(synced("u3"));
    let order: Vec<String> = r
        .calls()
        .iter()
        .filter_map(|c| match c {
            Call::Sync(id, UpdateType::Create) if id.starts_with('u') => Some(id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["u1", "u2", "u3"]);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_static_pod_removed_before_its_turn_never_starts() {
    let (w, r) = workers();
    let first = static_pod("etcd", "u1");
    let second = static_pod("etcd", "u2");
    w.update_pod(UpdatePodOptions::new(UpdateType::Create, first.clone()));
    w.update_pod(UpdatePodOptions::new(UpdateType::Create, second.clone()));
    w.update_pod(UpdatePodOptions::new(
        UpdateType::Create,
        static_pod("etcd", "u3"),
    ));
    run_for(0.1).await;
    w.update_pod(kill(&second));
    run_for(31.0).await;
    w.update_pod(kill(&first));
    run_for(31.0).await;
    assert!(
        !r.calls()
            .contains(&Call::Sync("u2".into(), UpdateType::Create))
    );
    assert!(
        r.calls()
            .contains(&Call::Sync("u3".into(), UpdateType::Create))
    );
}

#[tokio::test(start_paused = true)]
async fn runtime_only_pods_stop_through_the_workers_and_unknown_pods_count_after_sync() {
    let (w, r) = workers();
    assert!(w.could_have_running_containers("orphan"));
    assert!(!w.should_pod_content_be_removed("orphan"));
    w.update_pod(UpdatePodOptions::kill_runtime_pod(RuntimePod {
        uid: "orphan".into(),
        name: "old".into(),
        namespace: "default".into(),
        ..Default::default()
    }));
    run_for(0.1).await;
    assert_eq!(r.calls(), [Call::Runtime("orphan".into())]);
    assert_eq!(w.state("orphan"), Some(PodWorkerState::Finished));
    // Killing it again while finished does nothing.
    w.update_pod(UpdatePodOptions::kill_runtime_pod(RuntimePod {
        uid: "orphan".into(),
        ..Default::default()
    }));
    run_for(0.1).await;
    assert_eq!(r.calls().len(), 1);
    let gone = w.sync_known_pods(&HashSet::new());
    assert_eq!(gone, ["orphan"]);
    assert_eq!(w.state("orphan"), None);
    assert!(w.should_pod_content_be_removed("orphan"));
    assert!(!w.could_have_running_containers("orphan"));
    assert!(w.should_pod_runtime_be_removed("unknown"));
}

#[tokio::test(start_paused = true)]
async fn an_evicted_pod_content_may_go_and_its_status_fn_reaches_the_kill() {
    let recorder = Arc::new(StatusFnRecorder::default());
    let w = PodWorkers::new(recorder.clone(), TIMING);
    let a = pod("a", "ua");
    w.update_pod(UpdatePodOptions::new(UpdateType::Create, a.clone()));
    run_for(0.1).await;
    let status_fn: StatusFn = Arc::new(|s: &mut ApiPodStatus| {
        s.phase = Some("Failed".into());
        s.reason = Some("Evicted".into());
    });
    w.update_pod(UpdatePodOptions::kill(
        a,
        KillPodOptions {
            grace_period_override: Some(2),
            status_fn: Some(status_fn),
            evict: true,
            completed: None,
        },
    ));
    assert!(w.should_pod_content_be_removed("ua"), "evicted");
    run_for(3.0).await;
    assert_eq!(
        recorder.seen.lock().unwrap().as_deref(),
        Some("Failed/Evicted/2")
    );
}

#[derive(Default)]
struct StatusFnRecorder {
    seen: Mutex<Option<String>>,
}

#[async_trait]
impl PodSyncer for StatusFnRecorder {
    async fn sync_pod(&self, _: UpdateType, _: &Pod, _: &Cancel) -> Result<SyncOutcome, SyncError> {
        Ok(SyncOutcome::Continue(None))
    }
    async fn sync_terminating_pod(
        &self,
        _: &Pod,
        grace: i64,
        status_fn: Option<&StatusFn>,
        _: &Cancel,
    ) -> Result<(), SyncError> {
        let mut status = ApiPodStatus::default();
        if let Some(f) = status_fn {
            f(&mut status);
        }
        *self.seen.lock().unwrap() = Some(format!(
            "{}/{}/{grace}",
            status.phase.unwrap_or_default(),
            status.reason.unwrap_or_default()
        ));
        Ok(())
    }
    async fn sync_terminating_runtime_pod(&self, _: &RuntimePod) -> Result<(), SyncError> {
        Ok(())
    }
    async fn sync_terminated_pod(&self, _: &Pod) -> Result<(), SyncError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_pod_added_again_runs_afresh_after_it_stopped() {
    let (w, r) = workers();
    let a = static_pod("web", "same");
    w.update_pod(UpdatePodOptions::new(UpdateType::Create, a.clone()));
    run_for(0.1).await;
    // Removed, and put back (same manifest, same UID) while it is stopping.
    w.update_pod(kill(&a));
    run_for(1.0).await;
    w.update_pod(UpdatePodOptions::new(UpdateType::Create, a.clone()));
    run_for(31.0).await;
    assert_eq!(w.state("same"), Some(PodWorkerState::Syncing));
    assert_eq!(
        r.count(|c| matches!(c, Call::Sync(_, UpdateType::Create))),
        2,
        "{:?}",
        r.calls()
    );
    // Removed again, finished, then put back: a new incarnation too.
    w.update_pod(kill(&a));
    run_for(31.0).await;
    assert_eq!(w.state("same"), Some(PodWorkerState::Finished));
    w.update_pod(UpdatePodOptions::new(UpdateType::Create, a));
    run_for(0.1).await;
    assert_eq!(w.state("same"), Some(PodWorkerState::Syncing));
    assert_eq!(
        r.count(|c| matches!(c, Call::Sync(_, UpdateType::Create))),
        3
    );
}

#[test]
fn grace_period_as_upstream_computes_it() {
    let mut p = pod("a", "u");
    assert_eq!(effective_grace_period(None, &p, None), 30);
    p.spec.as_mut().unwrap().termination_grace_period_seconds = None;
    assert_eq!(
        effective_grace_period(None, &p, None),
        DEFAULT_TERMINATION_GRACE_PERIOD
    );
    p.spec.as_mut().unwrap().termination_grace_period_seconds = Some(0);
    assert_eq!(effective_grace_period(None, &p, None), 1, "never below 1");
    let d = deleted(pod("a", "u"), 12);
    assert_eq!(effective_grace_period(None, &d, None), 12);
    assert_eq!(effective_grace_period(None, &d, Some(3)), 3);
    assert_eq!(effective_grace_period(Some(5), &d, None), 5, "only shrinks");
    assert_eq!(effective_grace_period(Some(5), &d, Some(2)), 2);
    assert_eq!(effective_grace_period(Some(5), &pod("a", "u"), None), 5);
}

/// Panics in its first sync, then behaves.
#[derive(Default)]
struct PanicsOnce {
    syncs: std::sync::atomic::AtomicU32,
}

#[async_trait]
impl PodSyncer for PanicsOnce {
    async fn sync_pod(&self, _: UpdateType, _: &Pod, _: &Cancel) -> Result<SyncOutcome, SyncError> {
        if self.syncs.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("a bug in the syncer");
        }
        Ok(SyncOutcome::Continue(None))
    }
    async fn sync_terminating_pod(
        &self,
        _: &Pod,
        _: i64,
        _: Option<&StatusFn>,
        _: &Cancel,
    ) -> Result<(), SyncError> {
        Ok(())
    }
    async fn sync_terminating_runtime_pod(&self, _: &RuntimePod) -> Result<(), SyncError> {
        Ok(())
    }
    async fn sync_terminated_pod(&self, _: &Pod) -> Result<(), SyncError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_died_is_started_again_while_its_pod_is_wanted() {
    let syncer = Arc::new(PanicsOnce::default());
    let w = PodWorkers::new(syncer.clone(), TIMING);
    w.update_pod(UpdatePodOptions::new(UpdateType::Create, pod("a", "ua")));
    run_for(0.1).await;
    assert_eq!(syncer.syncs.load(Ordering::SeqCst), 1);
    assert_eq!(w.state("ua"), Some(PodWorkerState::Syncing), "still known");
    let gone = w.sync_known_pods(&["ua".to_string()].into());
    assert!(gone.is_empty());
    run_for(0.1).await;
    assert_eq!(
        syncer.syncs.load(Ordering::SeqCst),
        2,
        "housekeeping started the worker again and it synced"
    );
}
