//! Liveness, readiness and startup probes (upstream `pkg/kubelet/prober`).
//!
//! [`ProbeManager`] keeps one worker (a tokio task, no thread) per container and probe type
//! of the pods it is given; containers without probes cost nothing. A worker follows its
//! container through the pods' statuses (the [`StatusManager`]): a new container ID starts
//! from the probe type's initial result (readiness: failure, liveness: success, startup:
//! unknown), nothing is probed before `initialDelaySeconds` after the container started,
//! liveness and readiness wait for the startup probe, and a result changes only after
//! `successThreshold` or `failureThreshold` equal results in a row. Probes run every
//! `periodSeconds`; workers started within a period of the kubelet's start wait a random
//! part of it first, so that a restarted kubelet does not probe everything at once.
//!
//! The results ([`ProbeResults`]) feed the status (a container is `started` once its startup
//! probe succeeded, `ready` once its readiness probe did) and the runtime, which kills a
//! container that failed its liveness or startup probe ([`ProbeVerdicts`]). Every change of a
//! result asks the engine to sync the pod. Failures are recorded as `Unhealthy` events with
//! the probe's output, a redirect to another host as `ProbeWarning`, as upstream.
//!
//! Handlers ([`handlers`]): exec through the runtime ([`CommandRunner`]), HTTP(S) GET (no
//! certificate verification, `kube-probe/<major.minor>`, 200–399, same-host redirects only,
//! 10 KiB of body), TCP connect.

pub mod handlers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerStatus as ApiContainerStatus, Pod, PodStatus as ApiPodStatus, Probe,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::debug;

use crate::events::{EventObject, EventRecorder, EventType};
use crate::metrics::KubeletMetrics;
use crate::pod_manager::{is_sidecar, uid};
use crate::runtime::{CommandRunner, PodUid};
use crate::status::StatusManager;

/// The kind of a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeType {
    /// Restarts the container when it fails.
    Liveness,
    /// Decides whether the container is ready.
    Readiness,
    /// Holds the other probes back until it succeeds; restarts the container when it fails.
    Startup,
}

impl ProbeType {
    /// As upstream writes it in events and metrics (`Liveness`, `Readiness`, `Startup`).
    pub fn name(self) -> &'static str {
        match self {
            ProbeType::Liveness => "Liveness",
            ProbeType::Readiness => "Readiness",
            ProbeType::Startup => "Startup",
        }
    }

    /// The container's probe of this kind.
    pub fn of(self, container: &Container) -> Option<&Probe> {
        match self {
            ProbeType::Liveness => container.liveness_probe.as_ref(),
            ProbeType::Readiness => container.readiness_probe.as_ref(),
            ProbeType::Startup => container.startup_probe.as_ref(),
        }
    }

    /// The result a new container starts from.
    fn initial(self) -> ProbeResult {
        match self {
            ProbeType::Liveness => ProbeResult::Success,
            ProbeType::Readiness => ProbeResult::Failure,
            ProbeType::Startup => ProbeResult::Unknown,
        }
    }

    const ALL: [ProbeType; 3] = [
        ProbeType::Liveness,
        ProbeType::Readiness,
        ProbeType::Startup,
    ];
}

/// A probe's result as the kubelet keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeResult {
    /// Not known yet.
    Unknown,
    /// Passed.
    Success,
    /// Failed.
    Failure,
}

/// What one run of a handler found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Passed, with the output.
    Success(String),
    /// Passed with a warning (an HTTP redirect to another host).
    Warning(String),
    /// Failed, with the output or the reason.
    Failure(String),
}

/// Which running containers failed a liveness or startup probe: the runtime kills them.
pub trait ProbeVerdicts: Send + Sync {
    /// The probe container `container_id` (`containerd://<id>`) failed, if any.
    fn failed(&self, container_id: &str) -> Option<ProbeType>;

    /// Whether the startup probe of container `container_id` (which has one) succeeded: a
    /// sidecar holds the next init container back until it did.
    fn startup_succeeded(&self, container_id: &str) -> bool;
}

/// The probes' results by container ID and probe type.
#[derive(Debug, Default)]
pub struct ProbeResults {
    results: Mutex<HashMap<(String, ProbeType), ProbeResult>>,
}

impl ProbeResults {
    /// The result of probe `kind` of container `container_id`.
    pub fn get(&self, container_id: &str, kind: ProbeType) -> Option<ProbeResult> {
        self.lock().get(&(container_id.to_string(), kind)).copied()
    }

    /// Sets a result; whether it changed.
    fn set(&self, container_id: &str, kind: ProbeType, result: ProbeResult) -> bool {
        self.lock().insert((container_id.to_string(), kind), result) != Some(result)
    }

    fn remove(&self, container_id: &str, kind: ProbeType) {
        self.lock().remove(&(container_id.to_string(), kind));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, ProbeType), ProbeResult>> {
        self.results.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ProbeVerdicts for ProbeResults {
    fn failed(&self, container_id: &str) -> Option<ProbeType> {
        [ProbeType::Liveness, ProbeType::Startup]
            .into_iter()
            .find(|kind| self.get(container_id, *kind) == Some(ProbeResult::Failure))
    }

    fn startup_succeeded(&self, container_id: &str) -> bool {
        self.get(container_id, ProbeType::Startup) == Some(ProbeResult::Success)
    }
}

/// A probe's settings with upstream's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timing {
    /// `initialDelaySeconds` (0).
    pub initial_delay: Duration,
    /// `periodSeconds` (10; at least 1).
    pub period: Duration,
    /// `timeoutSeconds` (1; at least 1).
    pub timeout: Duration,
    /// `successThreshold` (1).
    pub success_threshold: u32,
    /// `failureThreshold` (3).
    pub failure_threshold: u32,
}

impl Timing {
    /// The timing of `probe`.
    pub fn of(probe: &Probe) -> Self {
        let secs = |v: Option<i32>, default: i32, min: i32| {
            Duration::from_secs(u64::try_from(v.unwrap_or(default).max(min)).unwrap_or(0))
        };
        let count =
            |v: Option<i32>, default: i32| u32::try_from(v.unwrap_or(default).max(1)).unwrap_or(1);
        Timing {
            initial_delay: secs(probe.initial_delay_seconds, 0, 0),
            period: secs(probe.period_seconds, 10, 1),
            timeout: secs(probe.timeout_seconds, 1, 1),
            success_threshold: count(probe.success_threshold, 1),
            failure_threshold: count(probe.failure_threshold, 3),
        }
    }
}

/// How probes reach containers: exec through the runtime, the network directly.
pub trait Prober: Send + Sync {
    /// Runs `probe` of `container` in `pod` (pod IP `pod_ip`, runtime container
    /// `container_id`). `Err` is an error of the prober itself (not the container's failure):
    /// the result is then thrown away.
    fn probe<'a>(
        &'a self,
        probe: &'a Probe,
        pod: &'a Pod,
        pod_ip: &'a str,
        container: &'a Container,
        container_id: &'a str,
        timeout: Duration,
    ) -> futures::future::BoxFuture<'a, Result<Outcome, String>>;
}

/// The default prober: [`handlers`] over the runtime's exec.
pub struct DefaultProber {
    runner: Arc<dyn CommandRunner>,
}

impl DefaultProber {
    /// Exec probes through `runner`.
    pub fn new(runner: Arc<dyn CommandRunner>) -> Self {
        DefaultProber { runner }
    }
}

impl Prober for DefaultProber {
    fn probe<'a>(
        &'a self,
        probe: &'a Probe,
        _pod: &'a Pod,
        pod_ip: &'a str,
        container: &'a Container,
        container_id: &'a str,
        timeout: Duration,
    ) -> futures::future::BoxFuture<'a, Result<Outcome, String>> {
        Box::pin(handlers::run(
            self.runner.as_ref(),
            probe,
            pod_ip,
            container,
            container_id,
            timeout,
        ))
    }
}

type WorkerKey = (String, String, ProbeType);

struct WorkerHandle {
    stop: watch::Sender<bool>,
    trigger: mpsc::Sender<()>,
}

struct Inner {
    statuses: Arc<StatusManager>,
    prober: Arc<dyn Prober>,
    recorder: Arc<dyn EventRecorder>,
    results: Arc<ProbeResults>,
    metrics: Option<Arc<KubeletMetrics>>,
    updates: mpsc::Sender<PodUid>,
    started: Instant,
    workers: Mutex<HashMap<WorkerKey, WorkerHandle>>,
}

/// The probe workers of the node's pods.
#[derive(Clone)]
pub struct ProbeManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ProbeManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeManager").finish_non_exhaustive()
    }
}

impl ProbeManager {
    /// Workers reading the pods' statuses from `statuses`, probing with `prober`, keeping
    /// results in `results` and recording events with `recorder`. The receiver gets the UID
    /// of every pod whose results changed (the engine syncs it).
    pub fn new(
        statuses: Arc<StatusManager>,
        prober: Arc<dyn Prober>,
        recorder: Arc<dyn EventRecorder>,
        results: Arc<ProbeResults>,
        metrics: Option<Arc<KubeletMetrics>>,
    ) -> (Self, mpsc::Receiver<PodUid>) {
        let (updates, rx) = mpsc::channel(1000);
        let inner = Arc::new(Inner {
            statuses,
            prober,
            recorder,
            results,
            metrics,
            updates,
            started: Instant::now(),
            workers: Mutex::default(),
        });
        (ProbeManager { inner }, rx)
    }

    fn workers(&self) -> std::sync::MutexGuard<'_, HashMap<WorkerKey, WorkerHandle>> {
        self.inner.workers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the workers of `pod`'s probes that do not run yet (regular containers and
    /// sidecars; regular init containers are not probed).
    pub fn add_pod(&self, pod: &Pod) {
        let Some(spec) = pod.spec.as_ref() else {
            return;
        };
        let uid = uid(pod).to_string();
        let containers = spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| is_sidecar(c))
            .chain(&spec.containers);
        let mut workers = self.workers();
        for container in containers {
            for kind in ProbeType::ALL {
                let Some(probe) = kind.of(container) else {
                    continue;
                };
                let key = (uid.clone(), container.name.clone(), kind);
                if workers.contains_key(&key) {
                    continue;
                }
                let (stop, stopped) = watch::channel(false);
                let (trigger, triggered) = mpsc::channel(1);
                let worker = Worker {
                    inner: self.inner.clone(),
                    pod: pod.clone(),
                    container: container.clone(),
                    probe: probe.clone(),
                    kind,
                    timing: Timing::of(probe),
                    container_id: String::new(),
                    on_hold: false,
                    last: None,
                    run: 0,
                };
                tokio::spawn(worker.run(stopped, triggered));
                workers.insert(key, WorkerHandle { stop, trigger });
            }
        }
    }

    /// The pod is terminating: its liveness and startup probes stop (their results are set to
    /// success, so that nothing is killed for them), readiness goes on.
    pub fn stop_liveness_and_startup(&self, pod_uid: &str) {
        let mut workers = self.workers();
        workers.retain(|(uid, _, kind), handle| {
            let stop = uid == pod_uid && *kind != ProbeType::Readiness;
            if stop {
                let _ = handle.stop.send(true);
            }
            !stop
        });
    }

    /// Stops every worker of the pod and forgets their results.
    pub fn remove_pod(&self, pod_uid: &str) {
        let mut workers = self.workers();
        workers.retain(|(uid, _, _), handle| {
            let stop = uid == pod_uid;
            if stop {
                let _ = handle.stop.send(true);
            }
            !stop
        });
    }

    /// Sets the containers' `started` and `ready` from the probes (upstream
    /// `UpdatePodStatus`): a running container is started unless its startup probe has not
    /// succeeded, and ready when its readiness probe succeeded (or it has none) and it
    /// started. A readiness probe that has no result for the container yet is run at once.
    pub fn update_container_statuses(&self, pod_uid: &str, statuses: &mut [ApiContainerStatus]) {
        let workers = self.workers();
        for status in statuses {
            let running = status.state.as_ref().is_some_and(|s| s.running.is_some());
            let id = status.container_id.clone().unwrap_or_default();
            if !running || id.is_empty() {
                continue;
            }
            let key = |kind| (pod_uid.to_string(), status.name.clone(), kind);
            let started = match workers.contains_key(&key(ProbeType::Startup)) {
                true => {
                    self.inner.results.get(&id, ProbeType::Startup) == Some(ProbeResult::Success)
                }
                false => true,
            };
            status.started = Some(started);
            let ready = match workers.get(&key(ProbeType::Readiness)) {
                None => true,
                Some(worker) => match self.inner.results.get(&id, ProbeType::Readiness) {
                    Some(result) => result == ProbeResult::Success,
                    None => {
                        // The worker has not seen this container yet: probe it now rather
                        // than a period from now. (Upstream triggers on every status
                        // generation while the result is not Success, which re-runs failing
                        // probes at each pod sync; their duplicate events are merged by its
                        // event correlator.)
                        let _ = worker.trigger.try_send(());
                        false
                    }
                },
            };
            status.ready = status.ready && started && ready;
        }
    }

    /// A running container's readiness as its probes have it now: started (its startup
    /// probe passed, or it has none) and ready (its readiness probe passed, or it has none);
    /// `None` for a container that is not running. For
    /// [`refresh_readiness`](crate::status::refresh_readiness).
    pub fn readiness_of(&self, pod_uid: &str, status: &ApiContainerStatus) -> Option<bool> {
        let running = status.state.as_ref().is_some_and(|s| s.running.is_some());
        let id = status.container_id.as_deref().filter(|id| !id.is_empty())?;
        if !running {
            return None;
        }
        let workers = self.workers();
        let passed = |kind| {
            let key = (pod_uid.to_string(), status.name.clone(), kind);
            !workers.contains_key(&key)
                || self.inner.results.get(id, kind) == Some(ProbeResult::Success)
        };
        Some(passed(ProbeType::Startup) && passed(ProbeType::Readiness))
    }

    /// The probes' results, for the runtime.
    pub fn results(&self) -> Arc<ProbeResults> {
        self.inner.results.clone()
    }

    /// How many workers run (for tests and metrics).
    pub fn worker_count(&self) -> usize {
        self.workers().len()
    }
}

struct Worker {
    inner: Arc<Inner>,
    pod: Pod,
    container: Container,
    probe: Probe,
    kind: ProbeType,
    timing: Timing,
    /// The container the results are about (`containerd://<id>`).
    container_id: String,
    /// A failed liveness or startup probe: nothing more until a new container.
    on_hold: bool,
    last: Option<ProbeResult>,
    run: u32,
}

/// A pseudo-random fraction in [0, 1) from the clock.
fn random_fraction() -> f64 {
    let nanos = jiff::Timestamp::now().subsec_nanosecond().unsigned_abs();
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

fn find_status<'a>(status: &'a ApiPodStatus, name: &str) -> Option<&'a ApiContainerStatus> {
    status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .find(|c| c.name == name)
}

impl Worker {
    async fn run(mut self, mut stop: watch::Receiver<bool>, mut trigger: mpsc::Receiver<()>) {
        let period = self.timing.period;
        // Started within a period of the kubelet's start: containers may be running already,
        // so spread the first probes over the period.
        if self.inner.started.elapsed() < period {
            let wait = period.mul_f64(random_fraction());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return self.finish(),
            }
        }
        loop {
            if *stop.borrow() || !self.probe_once().await {
                break;
            }
            // Triggers that came while probing are answered by this round.
            while trigger.try_recv().is_ok() {}
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                Some(()) = trigger.recv() => {}
                _ = stop.changed() => break,
            }
        }
        self.finish();
    }

    fn finish(&self) {
        if !self.container_id.is_empty() {
            self.inner.results.remove(&self.container_id, self.kind);
        }
        if let Some(m) = &self.inner.metrics {
            m.forget_probe_labels(&self.pod, &self.container.name, self.kind.name());
        }
    }

    fn pod_uid(&self) -> PodUid {
        PodUid::from(uid(&self.pod).to_string())
    }

    fn set(&self, result: ProbeResult) {
        if self
            .inner
            .results
            .set(&self.container_id, self.kind, result)
        {
            let _ = self.inner.updates.try_send(self.pod_uid());
        }
    }

    /// One round (upstream `doProbe`); whether to go on.
    async fn probe_once(&mut self) -> bool {
        let Some(status) = self.inner.statuses.get(uid(&self.pod)) else {
            return true;
        };
        if matches!(status.phase.as_deref(), Some("Failed" | "Succeeded")) {
            return false;
        }
        let Some(c) = find_status(&status, &self.container.name) else {
            return true;
        };
        let Some(id) = c.container_id.clone().filter(|id| !id.is_empty()) else {
            return true;
        };
        if id != self.container_id {
            if !self.container_id.is_empty() {
                self.inner.results.remove(&self.container_id, self.kind);
            }
            self.container_id = id;
            self.set(self.kind.initial());
            self.on_hold = false;
            self.last = None;
            self.run = 0;
        }
        if self.on_hold {
            return true;
        }
        let Some(running) = c.state.as_ref().and_then(|s| s.running.as_ref()) else {
            self.set(ProbeResult::Failure);
            // A container that will not be restarted is not waited for.
            let terminated = c.state.as_ref().is_some_and(|s| s.terminated.is_some());
            let never = self
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.restart_policy.as_deref())
                == Some("Never");
            return !(terminated && never && !is_sidecar(&self.container));
        };
        if let Some(started_at) = &running.started_at {
            let since = jiff::Timestamp::now().duration_since(started_at.0);
            if since.as_secs_f64() < self.timing.initial_delay.as_secs_f64() {
                return true;
            }
        }
        let started = c.started == Some(true);
        match (started, self.kind) {
            (true, ProbeType::Startup) => return true,
            (false, ProbeType::Liveness | ProbeType::Readiness) => return true,
            _ => {}
        }
        let pod_ip = status.pod_ip.clone().unwrap_or_default();
        let result = self.probe_with_retries(&pod_ip).await;
        let Some(result) = result else {
            return true;
        };
        if self.last == Some(result) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(result);
            self.run = 1;
        }
        let threshold = match result {
            ProbeResult::Failure => self.timing.failure_threshold,
            _ => self.timing.success_threshold,
        };
        if self.run < threshold {
            return true;
        }
        self.set(result);
        if result == ProbeResult::Failure && self.kind != ProbeType::Readiness {
            // The container will be restarted: nothing more until a new one.
            self.on_hold = true;
            self.run = 0;
        }
        true
    }

    /// Runs the probe (up to three times while the prober itself fails), records its
    /// events and metrics; `None` when every attempt failed in the prober.
    async fn probe_with_retries(&self, pod_ip: &str) -> Option<ProbeResult> {
        let event =
            EventObject::container(&self.pod, &self.container.name, is_sidecar(&self.container));
        let kind = self.kind.name();
        let mut last_error = String::new();
        for _ in 0..3 {
            let outcome = self
                .inner
                .prober
                .probe(
                    &self.probe,
                    &self.pod,
                    pod_ip,
                    &self.container,
                    &self.container_id,
                    self.timing.timeout,
                )
                .await;
            let (result, label) = match outcome {
                Ok(Outcome::Success(_)) => (ProbeResult::Success, "successful"),
                Ok(Outcome::Warning(output)) => {
                    self.inner.recorder.record(
                        &event,
                        EventType::Warning,
                        crate::events::reasons::PROBE_WARNING,
                        &format!("{kind} probe warning: {output}"),
                    );
                    (ProbeResult::Success, "successful")
                }
                Ok(Outcome::Failure(output)) => {
                    self.inner.recorder.record(
                        &event,
                        EventType::Warning,
                        crate::events::reasons::UNHEALTHY,
                        &format!("{kind} probe failed: {output}"),
                    );
                    (ProbeResult::Failure, "failed")
                }
                Err(e) => {
                    debug!(container = %self.container.name, probe = kind, error = %e, "probe errored");
                    last_error = e;
                    continue;
                }
            };
            if let Some(m) = &self.inner.metrics {
                m.count_probe(&self.pod, &self.container.name, kind, label);
            }
            return Some(result);
        }
        self.inner.recorder.record(
            &event,
            EventType::Warning,
            crate::events::reasons::UNHEALTHY,
            &format!("{kind} probe errored and resulted in unknown state: {last_error}"),
        );
        if let Some(m) = &self.inner.metrics {
            m.count_probe(&self.pod, &self.container.name, kind, "unknown");
        }
        None
    }
}

#[cfg(test)]
mod tests;
