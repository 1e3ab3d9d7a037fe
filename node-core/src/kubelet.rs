//! The engine: the sync loop, the pod workers' syncer, the pod lifecycle event generator
//! (PLEG), housekeeping and garbage collection.
//!
//! Pod updates from the sources go to the [pod workers](crate::pod_workers), one state machine
//! per pod UID. The engine's [`PodSyncer`] does each state's work: syncing a pod (via
//! [`Runtime::sync_pod`]) when told to (config change, PLEG event) and otherwise only at the
//! resync period or when a back-off ends; stopping it ([`Runtime::kill_pod`]) within the
//! effective grace period once removed, deleted or in a terminal phase, and writing its final
//! status; tearing its volumes down. A pod whose manifest changed comes back under a new UID;
//! it starts once the old one finished. Pods only the runtime runs are stopped through the
//! workers too, once every source reported. PLEG follows the runtime's container events where
//! the runtime has them, with a relist every five minutes as a safety net, and otherwise
//! relists every second.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, NodeStatus, Pod, PodStatus as ApiPodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use crate::admission::{
    AdmissionFailureHandler, AdmitAttributes, NodeView, PodAdmitHandler, PredicateAdmitHandler,
    PredicateFailure, Rejection, SysctlAllowlist, is_critical_pod, pods_to_preempt,
    preemption_requirements,
};
use crate::config::{PodOperation, PodUpdate, PodUpdates};
use crate::events::{EventObject, EventRecorder, EventType, reasons};
use crate::metrics::KubeletMetrics;
use crate::pod_manager::{PodManager, full_name, is_mirror_pod, uid};
use crate::pod_workers::{
    Cancel, KillPodOptions, PodSyncer, PodWorkers, RUNTIME_POD_GRACE_PERIOD, StatusFn,
    SyncError as WorkerError, SyncOutcome, UpdatePodOptions, UpdateType, WorkerTiming, jitter,
};
use crate::runtime::{
    ContainerState, GcPolicy, PodStateProvider, PodUid, Runtime, RuntimeError, RuntimePod,
    SyncError,
};
use crate::status::{StatusContext, StatusManager, generate_pod_status, is_terminal};
use crate::volumes::{VolumeError, VolumeManager};

/// Upstream `housekeepingPeriod`.
pub const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(2);
/// Upstream `genericPlegRelistPeriod`.
pub const GENERIC_RELIST_PERIOD: Duration = Duration::from_secs(1);
/// Upstream `eventedPlegRelistPeriod`: the safety-net relist while events flow.
pub const EVENTED_RELIST_PERIOD: Duration = Duration::from_secs(300);
/// Upstream `ContainerGCPeriod`.
pub const CONTAINER_GC_PERIOD: Duration = Duration::from_secs(60);
/// How often the runtime's readiness is read (upstream `updateRuntimeUp` runs every 5 s).
pub const RUNTIME_STATUS_PERIOD: Duration = Duration::from_secs(5);
/// Upstream `NetworkNotReadyErrorMsg`.
pub const NETWORK_NOT_READY_MESSAGE: &str = "network is not ready";
/// Upstream `backOffPeriod`: retry after a failed sync.
const BACKOFF_PERIOD: Duration = Duration::from_secs(10);
/// The first pause before PLEG opens the runtime's container events again.
const FIRST_STREAM_RETRY_DELAY: Duration = Duration::from_millis(250);
/// The longest pause between attempts to open the container events (PLEG relists meanwhile).
pub const MAX_STREAM_RETRY_DELAY: Duration = Duration::from_secs(5);

/// Settings of the engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The node's name.
    pub node_name: String,
    /// The node's IPs (status.hostIP; pod IPs of hostNetwork pods).
    pub node_ips: Vec<String>,
    /// Resync period of each pod (`syncFrequency`).
    pub sync_frequency: Duration,
    /// Most pods the node admits (`maxPods`).
    pub max_pods: usize,
    /// Container garbage collection policy.
    pub gc_policy: GcPolicy,
    /// The Node as admission sees it (labels, taints, allocatable); the binary keeps it up
    /// to date from the API server. `None`: a node named `node_name` with the default labels
    /// and `pods` = `max_pods` as its only allocatable (so resources are not checked).
    pub node: Option<Arc<NodeView>>,
    /// `allowedUnsafeSysctls`: sysctls (or `prefix*` patterns) pods may set beside the safe
    /// ones. One not known to be namespaced is logged and ignored (validate it first with
    /// [`SysctlAllowlist::new`]).
    pub allowed_unsafe_sysctls: Vec<String>,
}

impl EngineConfig {
    /// The Node the engine starts from when none is given: its name, the kubelet's default
    /// labels (hostname, os, arch) and `pods` allocatable.
    pub fn initial_node(&self) -> Node {
        let os = std::env::consts::OS;
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let labels = [
            ("kubernetes.io/hostname", self.node_name.as_str()),
            ("kubernetes.io/os", os),
            ("kubernetes.io/arch", arch),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Node {
            metadata: ObjectMeta {
                name: Some(self.node_name.clone()),
                labels: Some(labels),
                ..Default::default()
            },
            status: Some(NodeStatus {
                allocatable: Some(
                    [(
                        "pods".to_string(),
                        k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                            self.max_pods.to_string(),
                        ),
                    )]
                    .into(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// Upstream `relistThreshold`: PLEG is unhealthy when its last successful relist is older.
pub const PLEG_RELIST_THRESHOLD: Duration = Duration::from_secs(180);
/// Upstream `eventedPlegRelistThreshold`: the same while following container events (the
/// safety-net relist runs every [`EVENTED_RELIST_PERIOD`]).
pub const PLEG_EVENTED_RELIST_THRESHOLD: Duration = Duration::from_secs(600);

/// Liveness of the sync loop (for `/healthz`) and of PLEG (for the node's Ready condition).
#[derive(Debug, Default)]
pub struct Health {
    last_loop: AtomicI64,
    pleg: Mutex<PlegHealth>,
}

#[derive(Debug, Default)]
struct PlegHealth {
    /// When a relist last succeeded.
    last_relist: Option<tokio::time::Instant>,
    /// Whether PLEG follows the runtime's events (a longer threshold, as upstream).
    evented: bool,
}

impl Health {
    fn touch(&self) {
        self.last_loop
            .store(Timestamp::now().as_second(), Ordering::Relaxed);
    }

    /// Seconds since the sync loop last ran, if it ever ran.
    pub fn since_last_loop(&self) -> Option<i64> {
        let last = self.last_loop.load(Ordering::Relaxed);
        (last > 0).then(|| Timestamp::now().as_second() - last)
    }

    fn pleg(&self) -> std::sync::MutexGuard<'_, PlegHealth> {
        self.pleg.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pleg_relisted(&self) {
        self.pleg().last_relist = Some(tokio::time::Instant::now());
    }

    fn pleg_evented(&self, evented: bool) {
        self.pleg().evented = evented;
    }

    /// Why PLEG is not healthy, in upstream's words (`pleg has yet to be successful`, `pleg
    /// was last seen active 3m0.1s ago; threshold is 3m0s`); `None` when it is. The node's
    /// Ready condition reports it as `PLEG is not healthy: <this>`.
    pub fn pleg_error(&self) -> Option<String> {
        let pleg = self.pleg();
        let Some(last) = pleg.last_relist else {
            return Some("pleg has yet to be successful".into());
        };
        let threshold = match pleg.evented {
            true => PLEG_EVENTED_RELIST_THRESHOLD,
            false => PLEG_RELIST_THRESHOLD,
        };
        let elapsed = last.elapsed();
        (elapsed > threshold).then(|| {
            format!(
                "pleg was last seen active {} ago; threshold is {}",
                go_duration(elapsed),
                go_duration(threshold)
            )
        })
    }
}

/// A duration as Go's `time.Duration.String` writes it (`3m0.093s`, `10m0s`, `1h2m3s`,
/// `250ms`), at millisecond precision.
pub fn go_duration(d: Duration) -> String {
    let millis = d.as_millis();
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let (h, m) = (millis / 3_600_000, (millis / 60_000) % 60);
    let (s, ms) = ((millis / 1000) % 60, millis % 1000);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&s.to_string());
    if ms > 0 {
        let fraction = format!("{ms:03}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push('s');
    out
}

/// The runtime's readiness as last read (upstream `runtimeState`): why the runtime, and why its
/// network, are not ready.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    /// Why the runtime is not ready (down, or `RuntimeReady` false).
    pub runtime: Option<String>,
    /// Why the pod network is not ready (`NetworkReady` false).
    pub network: Option<String>,
}

impl Readiness {
    /// Reads the runtime's readiness; a runtime without a status call counts as ready.
    pub async fn read(runtime: &dyn Runtime) -> Readiness {
        match runtime.status().await {
            Ok(status) => Readiness {
                runtime: status.runtime_error(),
                network: status.network_error(),
            },
            Err(RuntimeError::Unsupported(_)) => Readiness::default(),
            Err(e) => {
                debug!(error = %e, "reading the runtime's status");
                Readiness {
                    runtime: Some("container runtime is down".into()),
                    network: None,
                }
            }
        }
    }
}

/// Shared by the loop and the pod syncer.
struct Shared {
    /// The runtime's readiness, `None` until first read.
    readiness: watch::Sender<Option<Readiness>>,
    runtime: Arc<dyn Runtime>,
    volumes: OnceLock<Arc<dyn VolumeManager>>,
    /// An orphan clean-up round is running.
    cleaning: AtomicBool,
    recorder: Arc<dyn EventRecorder>,
    pods: Arc<PodManager>,
    statuses: Arc<StatusManager>,
    /// The errors of each pod's last sync, by container (upstream's reason cache): kept in
    /// its status until the next sync's result replaces them.
    errors: Mutex<HashMap<String, HashMap<String, SyncError>>>,
    /// The admission chain, in order.
    admit_handlers: RwLock<Vec<Arc<dyn PodAdmitHandler>>>,
    /// The node admission checks pods against.
    node: Arc<NodeView>,
    /// The kubelet's metrics, when the binary asked for them.
    metrics: OnceLock<Arc<KubeletMetrics>>,
    /// The probes, when the binary asked for them.
    prober: OnceLock<crate::prober::ProbeManager>,
    /// The pod cgroups, whose QoS classes housekeeping keeps up to date.
    pod_cgroups: OnceLock<Arc<dyn crate::runtime::PodCgroups>>,
    /// The resources allocated to each pod (in-place resize).
    allocations: crate::resize::Allocations,
    config: EngineConfig,
}

impl Shared {
    /// The runtime's readiness, once it was read.
    async fn readiness(&self) -> Readiness {
        let mut rx = self.readiness.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(r) => r.clone().unwrap_or_default(),
            Err(_) => Readiness::default(),
        }
    }

    fn errors_of(&self, uid: &str) -> HashMap<String, SyncError> {
        self.errors
            .lock()
            .map(|e| e.get(uid).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Records the pod's sync errors; whether they changed.
    fn set_errors(&self, uid: &str, errors: HashMap<String, SyncError>) -> bool {
        let Ok(mut all) = self.errors.lock() else {
            return false;
        };
        let changed = all
            .get(uid)
            .map_or(!errors.is_empty(), |old| *old != errors);
        if errors.is_empty() {
            all.remove(uid);
        } else {
            all.insert(uid.to_string(), errors);
        }
        changed
    }

    fn add_admit_handler(&self, handler: Arc<dyn PodAdmitHandler>) {
        self.admit_handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(handler);
    }

    /// Forgets a pod the workers forgot.
    fn forget(&self, uid: &str) {
        if let Some(prober) = self.prober.get() {
            prober.remove_pod(uid);
        }
        self.statuses.remove(uid);
        self.allocations.forget(uid);
        if let Ok(mut all) = self.errors.lock() {
            all.remove(uid);
        }
    }

    /// Decides on a change of `pod`'s resources (in-place resize) and returns the pod as the
    /// runtime must run it (`None`: as its spec says), with the resize still pending.
    fn allocate(&self, pod: &Pod) -> (Option<Pod>, Option<crate::resize::Pending>) {
        if self.allocations.changed(pod) {
            let id = uid(pod);
            let others: Vec<Pod> = self
                .pods
                .pods()
                .iter()
                .filter(|p| uid(p) != id && !self.statuses.is_terminal(uid(p)))
                .map(|p| {
                    self.allocations
                        .allocated_pod(p)
                        .unwrap_or_else(|| p.clone())
                })
                .collect();
            let allocatable = crate::admission::allocatable_of(&self.node.get());
            self.allocations.resize(pod, &others, &allocatable);
        }
        (
            self.allocations.allocated_pod(pod),
            self.allocations.pending(pod),
        )
    }
}

impl PodStateProvider for PodManager {
    fn should_pod_content_be_removed(&self, uid: &PodUid) -> bool {
        !self.contains(uid.as_str())
    }
}

/// The kubelet engine.
pub struct Kubelet {
    shared: Arc<Shared>,
    workers: Arc<PodWorkers>,
    health: Arc<Health>,
    /// The pods whose probe results changed (with a prober).
    probe_updates: Option<mpsc::Receiver<PodUid>>,
}

impl std::fmt::Debug for Kubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubelet")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Kubelet {
    /// An engine on `runtime`, recording events to `recorder`.
    pub fn new(
        runtime: Arc<dyn Runtime>,
        recorder: Arc<dyn EventRecorder>,
        config: EngineConfig,
    ) -> Self {
        let timing = WorkerTiming {
            resync: config.sync_frequency,
            backoff: BACKOFF_PERIOD,
        };
        let node = config
            .node
            .clone()
            .unwrap_or_else(|| NodeView::new(config.initial_node()));
        let sysctls = SysctlAllowlist::new(&config.allowed_unsafe_sysctls).unwrap_or_else(|e| {
            error!(error = %e, "allowedUnsafeSysctls: ignored; only the safe sysctls are allowed");
            SysctlAllowlist::new(&[]).unwrap_or_default()
        });
        let shared = Arc::new(Shared {
            readiness: watch::Sender::new(None),
            runtime,
            volumes: OnceLock::new(),
            cleaning: AtomicBool::new(false),
            recorder,
            pods: Arc::new(PodManager::new()),
            statuses: Arc::new(StatusManager::new()),
            errors: Mutex::default(),
            admit_handlers: RwLock::default(),
            node: node.clone(),
            metrics: OnceLock::new(),
            prober: OnceLock::new(),
            pod_cgroups: OnceLock::new(),
            allocations: crate::resize::Allocations::default(),
            config,
        });
        let workers = PodWorkers::new(
            Arc::new(EngineSyncer {
                shared: shared.clone(),
            }),
            timing,
        );
        let preemption = Arc::new(CriticalPodPreemption {
            workers: Arc::downgrade(&workers),
            recorder: shared.recorder.clone(),
        });
        shared.add_admit_handler(Arc::new(sysctls));
        shared.add_admit_handler(Arc::new(PredicateAdmitHandler::new(node, Some(preemption))));
        Kubelet {
            shared,
            workers,
            health: Arc::new(Health::default()),
            probe_updates: None,
        }
    }

    /// Runs the pods' liveness, readiness and startup probes with `prober`, keeping their
    /// results in `results` (give the same to the runtime, which kills containers that fail
    /// liveness or startup probes). Call after [`Kubelet::with_metrics`] for the probe
    /// metrics. A second call is ignored.
    pub fn with_prober(
        mut self,
        prober: Arc<dyn crate::prober::Prober>,
        results: Arc<crate::prober::ProbeResults>,
    ) -> Self {
        let (manager, updates) = crate::prober::ProbeManager::new(
            self.shared.statuses.clone(),
            prober,
            self.shared.recorder.clone(),
            results,
            self.shared.metrics.get().cloned(),
        );
        if self.shared.prober.set(manager).is_err() {
            warn!("the engine has a prober already; keeping the first");
        } else {
            self.probe_updates = Some(updates);
        }
        self
    }

    /// Keeps the QoS cgroups (`kubepods/burstable`'s CPU shares) in line with the active pods,
    /// at each housekeeping (every 2 s).
    pub fn with_pod_cgroups(self, cgroups: Arc<dyn crate::runtime::PodCgroups>) -> Self {
        let _ = self.shared.pod_cgroups.set(cgroups);
        self
    }

    /// Sets the pods' volumes up with `volumes` before their containers start, and tears them
    /// down once they terminated (the runtime takes the same manager for container mounts).
    /// Without one, pods run without volumes. A second call is ignored.
    pub fn with_volume_manager(self, volumes: Arc<dyn VolumeManager>) -> Self {
        if self.shared.volumes.set(volumes).is_err() {
            warn!("the engine has a volume manager already; keeping the first");
        }
        self
    }

    /// Records the engine's metrics (PLEG relists, running pods and containers, pod worker
    /// and pod start durations) into `metrics`. A second call is ignored.
    pub fn with_metrics(self, metrics: Arc<KubeletMetrics>) -> Self {
        if self.shared.metrics.set(metrics).is_err() {
            warn!("the engine has metrics already; keeping the first");
        }
        self
    }

    /// Adds a handler at the end of the admission chain (after the sysctl and predicate
    /// handlers).
    pub fn add_admit_handler(&self, handler: Arc<dyn PodAdmitHandler>) {
        self.shared.add_admit_handler(handler);
    }

    /// The Node admission checks pods against; set it when the API server's copy changes.
    pub fn node_view(&self) -> Arc<NodeView> {
        self.shared.node.clone()
    }

    /// The desired pods.
    pub fn pod_manager(&self) -> Arc<PodManager> {
        self.shared.pods.clone()
    }

    /// The pods' statuses.
    pub fn status_manager(&self) -> Arc<StatusManager> {
        self.shared.statuses.clone()
    }

    /// The pod workers: which pods sync, terminate or are finished.
    pub fn pod_workers(&self) -> Arc<PodWorkers> {
        self.workers.clone()
    }

    /// The sync loop's liveness.
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// Runs the sync loop until `shutdown` completes or the updates channel closes. Until
    /// every pod source has reported once, no pod the runtime runs is treated as orphaned.
    /// Pods are left running on return.
    pub async fn run(
        self,
        mut updates: PodUpdates,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let Kubelet {
            shared,
            workers,
            health,
            probe_updates,
        } = self;
        // Without a prober, a channel that never delivers.
        let (_no_probes, idle) = mpsc::channel::<PodUid>(1);
        let mut probe_rx = probe_updates.unwrap_or(idle);
        let (pleg_tx, mut pleg_rx) = mpsc::channel::<PodUid>(1000);
        let pleg = tokio::spawn(run_pleg(
            shared.runtime.clone(),
            pleg_tx,
            health.clone(),
            shared.metrics.get().cloned(),
        ));
        let readiness = tokio::spawn(watch_readiness(shared.clone()));
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING_PERIOD);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut gc = tokio::time::interval_at(
            tokio::time::Instant::now() + CONTAINER_GC_PERIOD,
            CONTAINER_GC_PERIOD,
        );
        tokio::pin!(shutdown);
        info!(node = %shared.config.node_name, "sync loop started");
        loop {
            health.touch();
            tokio::select! {
                _ = &mut shutdown => break,
                update = updates.recv() => {
                    let Some(update) = update else {
                        info!("pod update channel closed; leaving the sync loop");
                        break;
                    };
                    handle_update(&shared, &workers, update);
                }
                Some(uid) = probe_rx.recv() => {
                    if let Some(pod) = shared.pods.get(uid.as_str()) {
                        // Readiness reaches the status at once, as upstream's
                        // SetContainerReadiness; the sync does the rest (kills, started).
                        if let Some(prober) = shared.prober.get()
                            && let Some(mut status) = shared.statuses.get(uid.as_str())
                            && crate::status::refresh_readiness(&pod, &mut status, |c| {
                                prober.readiness_of(uid.as_str(), c)
                            })
                        {
                            shared.statuses.set(uid.as_str(), status);
                        }
                        workers.update_pod(UpdatePodOptions::new(UpdateType::Sync, pod));
                    }
                }
                Some(uid) = pleg_rx.recv() => {
                    // Upstream: only pods the configuration holds are synced on PLEG events.
                    if let Some(pod) = shared.pods.get(uid.as_str()) {
                        workers.update_pod(UpdatePodOptions::new(UpdateType::Sync, pod));
                    }
                }
                _ = housekeeping.tick() => {
                    let started = Instant::now();
                    housekeep(&shared, &workers, updates.seen_all_sources()).await;
                    if started.elapsed() > Duration::from_secs(1) {
                        warn!(elapsed_ms = started.elapsed().as_millis() as u64, "Housekeeping took longer than expected");
                    }
                }
                _ = gc.tick() => {
                    let runtime = shared.runtime.clone();
                    let workers = workers.clone();
                    let policy = shared.config.gc_policy.clone();
                    let ready = updates.seen_all_sources();
                    tokio::spawn(async move {
                        if let Err(e) = runtime.garbage_collect(&policy, workers.as_ref(), ready).await {
                            warn!(error = %e, "container garbage collection failed");
                        }
                    });
                }
            }
        }
        pleg.abort();
        readiness.abort();
        workers.stop();
        info!("sync loop stopped; pods are left running");
    }
}

/// The pods admitted and still active, but `pod` (upstream `filterOutInactivePods`): not
/// known terminated, and not terminal unless still terminating.
fn active_pods(shared: &Shared, workers: &PodWorkers, pod: &Pod) -> Vec<Pod> {
    shared
        .pods
        .pods()
        .into_iter()
        .filter(|p| {
            let id = uid(p);
            id != uid(pod)
                && !workers.is_pod_known_terminated(id)
                && (!shared.statuses.is_terminal(id) || workers.is_pod_termination_requested(id))
        })
        // As allocated (in-place resize): a resize that waits holds no room yet.
        .map(|p| shared.allocations.allocated_pod(&p).unwrap_or(p))
        .collect()
}

/// Runs the admission chain on `pod`: the first handler that refuses it rejects it.
fn admit(shared: &Shared, workers: &PodWorkers, pod: &Pod) -> Result<(), Rejection> {
    let others = active_pods(shared, workers, pod);
    let attrs = AdmitAttributes {
        pod,
        other_pods: &others,
    };
    let handlers = shared
        .admit_handlers
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    handlers.iter().try_for_each(|h| h.admit(&attrs))
}

/// Upstream's `CriticalPodAdmissionHandler`: a critical pod (static, mirror, system critical
/// priority) that lacks only resources is admitted after the pods that free them are evicted
/// (Failed, `Preempting`, with a `DisruptionTarget` condition). Unlike upstream the kill is
/// not awaited: the sync loop never blocks on a pod's grace period.
struct CriticalPodPreemption {
    workers: std::sync::Weak<PodWorkers>,
    recorder: Arc<dyn EventRecorder>,
}

/// Upstream preemption's message.
const PREEMPTION_MESSAGE: &str = "Preempted in order to admit critical pod";

impl AdmissionFailureHandler for CriticalPodPreemption {
    fn handle_admission_failure(
        &self,
        pod: &Pod,
        other_pods: &[Pod],
        failures: Vec<PredicateFailure>,
    ) -> Result<Vec<PredicateFailure>, String> {
        if !is_critical_pod(pod) {
            return Ok(failures);
        }
        let Some(requirements) = preemption_requirements(&failures) else {
            // Only the reasons preemption cannot help with.
            return Ok(failures
                .into_iter()
                .filter(|f| matches!(f, PredicateFailure::Predicate { .. }))
                .collect());
        };
        let victims = pods_to_preempt(pod, other_pods, &requirements)
            .map_err(|e| format!("preemption: error finding a set of pods to preempt: {e}"))?;
        let Some(workers) = self.workers.upgrade() else {
            return Err("the pod workers are gone".into());
        };
        for victim in victims {
            info!(pod = %full_name(victim), critical = %full_name(pod), "evicting a pod to admit a critical pod");
            self.recorder.record(
                &EventObject::pod(victim),
                EventType::Warning,
                reasons::PREEMPTING,
                PREEMPTION_MESSAGE,
            );
            let status_fn: crate::pod_workers::StatusFn = Arc::new(|status: &mut ApiPodStatus| {
                crate::status::fail_by_kubelet(
                    status,
                    reasons::PREEMPTING,
                    PREEMPTION_MESSAGE,
                    true,
                );
            });
            workers.update_pod(UpdatePodOptions::kill(
                victim.clone(),
                KillPodOptions {
                    status_fn: Some(status_fn),
                    evict: true,
                    ..Default::default()
                },
            ));
        }
        Ok(Vec::new())
    }
}

fn handle_update(shared: &Arc<Shared>, workers: &Arc<PodWorkers>, update: PodUpdate) {
    let op = update.op;
    if !update.pods.is_empty() {
        info!(
            op = ?op,
            source = %update.source,
            pods = ?update.pods.iter().map(full_name).collect::<Vec<_>>(),
            "SyncLoop update"
        );
    }
    let mut pods = update.pods;
    if op == PodOperation::Add {
        // Upstream admits new pods oldest first.
        pods.sort_by(|a, b| {
            let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            created(a).cmp(&created(b))
        });
    }
    for pod in pods {
        let id = uid(&pod).to_string();
        // Mirror pods are the API server's view of static pods: recorded, never run.
        if is_mirror_pod(&pod) {
            match op {
                PodOperation::Remove => shared.pods.remove_mirror(&id),
                _ => shared.pods.set_mirror(pod),
            }
            continue;
        }
        match op {
            PodOperation::Add => {
                if shared.pods.contains(&id) {
                    shared.pods.add(pod.clone());
                    workers.update_pod(UpdatePodOptions::new(UpdateType::Update, pod));
                    continue;
                }
                if let Err(Rejection { reason, message }) = admit(shared, workers, &pod) {
                    shared.recorder.record(
                        &EventObject::pod(&pod),
                        EventType::Warning,
                        &reason,
                        &message,
                    );
                    shared.pods.add(pod.clone());
                    shared.statuses.set(
                        &id,
                        ApiPodStatus {
                            phase: Some("Failed".into()),
                            reason: Some(reason),
                            message: Some(format!("Pod was rejected: {message}")),
                            qos_class: Some(crate::qos::pod_qos(&pod).as_str().into()),
                            ..Default::default()
                        },
                    );
                    continue;
                }
                shared.pods.add(pod.clone());
                shared.allocations.admit(&pod);
                workers.update_pod(UpdatePodOptions::new(UpdateType::Create, pod));
            }
            PodOperation::Update | PodOperation::Delete => {
                shared.pods.add(pod.clone());
                // A deletion timestamp makes the workers terminate the pod.
                workers.update_pod(UpdatePodOptions::new(UpdateType::Update, pod));
            }
            PodOperation::Remove => {
                shared.pods.remove(&id);
                retry_pending_resizes(shared, workers);
                if workers.state(&id).is_some() {
                    // An API pod leaves the API server before the kubelet deleted it only when
                    // it was force-deleted (grace period 0): it stops at once.
                    let forced = is_api_source(&pod).then_some(1);
                    workers.update_pod(UpdatePodOptions::kill(
                        pod,
                        KillPodOptions {
                            grace_period_override: forced,
                            ..Default::default()
                        },
                    ));
                } else {
                    shared.forget(&id);
                }
            }
            PodOperation::Reconcile => {
                // The status alone changed (conditions set by others): the pod manager keeps
                // it, and a pod whose readiness gates now say otherwise syncs at once
                // (upstream `HandlePodReconcile`).
                if !shared.pods.contains(&id) {
                    continue;
                }
                shared.pods.add(pod.clone());
                if crate::status::need_to_reconcile_readiness(&pod) {
                    workers.update_pod(UpdatePodOptions::new(UpdateType::Sync, pod));
                }
            }
        }
    }
}

/// A pod left: the resizes that waited for room are tried again (upstream
/// `RetryPendingResizes`).
fn retry_pending_resizes(shared: &Shared, workers: &Arc<PodWorkers>) {
    for id in shared.allocations.pending_uids() {
        if let Some(pod) = shared.pods.get(&id) {
            workers.update_pod(UpdatePodOptions::new(UpdateType::Sync, pod));
        }
    }
}

/// The engine's work for each state of a pod worker (upstream kubelet's `SyncPod`,
/// `SyncTerminatingPod`, `SyncTerminatingRuntimePod`, `SyncTerminatedPod`).
struct EngineSyncer {
    shared: Arc<Shared>,
}

impl EngineSyncer {
    async fn status_of(&self, pod: &Pod) -> Result<crate::runtime::PodStatus, RuntimeError> {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        self.shared
            .runtime
            .get_pod_status(&PodUid::of(pod), name, namespace)
            .await
    }
}

#[async_trait]
impl PodSyncer for EngineSyncer {
    async fn sync_pod(
        &self,
        update: UpdateType,
        pod: &Pod,
        cancel: &Cancel,
    ) -> Result<SyncOutcome, WorkerError> {
        let shared = &self.shared;
        let _timer = shared.metrics.get().map(|m| {
            m.pod_worker_duration
                .with_label_values(&[update_type_label(update)])
                .start_timer()
        });
        if let Some(prober) = shared.prober.get() {
            prober.add_pod(pod);
        }
        // The runtime runs the pod with its allocated resources (in-place resize).
        let (allocated, resize_pending) = shared.allocate(pod);
        let pod = allocated.as_ref().unwrap_or(pod);
        let id = uid(pod).to_string();
        let status = match self.status_of(pod).await {
            Ok(s) => s,
            Err(e) => {
                shared.recorder.record(
                    &EventObject::pod(pod),
                    EventType::Warning,
                    reasons::FAILED_SYNC,
                    &format!("error determining status: {e}"),
                );
                return Err(Box::new(e));
            }
        };
        let old = shared.statuses.get(&id);
        let mut api = generate_pod_status(
            pod,
            &status,
            &shared.errors_of(&id),
            &shared.config.node_ips,
            StatusContext {
                old: old.as_ref(),
                terminal: false,
                probes: shared.prober.get(),
                resize_pending: resize_pending.as_ref(),
            },
        );
        // activeDeadlineSeconds: past it, the pod fails (upstream's active deadline handler).
        let deadline_left = active_deadline_left(pod, old.as_ref());
        if deadline_left == Some(Duration::ZERO) && !is_terminal(&api) {
            api.phase = Some("Failed".into());
            api.reason = Some(reasons::DEADLINE_EXCEEDED.into());
            api.message = Some(ACTIVE_DEADLINE_MESSAGE.into());
            shared.recorder.record(
                &EventObject::pod(pod),
                EventType::Normal,
                reasons::DEADLINE_EXCEEDED,
                ACTIVE_DEADLINE_MESSAGE,
            );
        }
        if let Some(m) = shared.metrics.get() {
            observe_pod_start(m, pod, old.as_ref(), &api);
        }
        let terminal = is_terminal(&api);
        shared.statuses.set(&id, api);
        if terminal {
            return Ok(SyncOutcome::Terminal);
        }
        // No sandbox churn while the runtime or its network is not ready (upstream skips the
        // loop on runtime errors, and fails the sync of pods on the pod network).
        let readiness = tokio::select! {
            r = shared.readiness() => r,
            _ = cancel.cancelled() => return Ok(SyncOutcome::Continue(None)),
        };
        if let Some(why) = readiness.runtime {
            debug!(pod = %full_name(pod), reason = %why, "skipping pod synchronization");
            return Err(why.into());
        }
        if let Some(why) = readiness.network
            && !is_host_network(pod)
        {
            let message = format!("{NETWORK_NOT_READY_MESSAGE}: {why}");
            shared.recorder.record(
                &EventObject::pod(pod),
                EventType::Warning,
                reasons::NETWORK_NOT_READY,
                &message,
            );
            return Err(message.into());
        }
        // Volumes first: the containers mount them.
        if let Some(volumes) = shared.volumes.get() {
            let mounted = tokio::select! {
                mounted = volumes.wait_for_attach_and_mount(pod) => mounted,
                _ = cancel.cancelled() => {
                    debug!(pod = %full_name(pod), "volume set-up cancelled: the pod is to stop");
                    return Ok(SyncOutcome::Continue(None));
                }
            };
            if let Err(e) = mounted {
                // A timeout was preceded by an event per failed set-up; other errors get one.
                if let VolumeError::PodDirs { .. } = e {
                    shared.recorder.record(
                        &EventObject::pod(pod),
                        EventType::Warning,
                        reasons::FAILED_TO_MAKE_POD_DATA_DIRECTORIES,
                        &e.to_string(),
                    );
                } else if !e.is_timeout() {
                    shared.recorder.record(
                        &EventObject::pod(pod),
                        EventType::Warning,
                        reasons::FAILED_MOUNT_VOLUME,
                        &format!("Unable to attach or mount volumes: {e}"),
                    );
                }
                warn!(pod = %full_name(pod), error = %e, "Unable to attach or mount volumes for pod; skipping pod");
                return Err(Box::new(e));
            }
        }
        let result = tokio::select! {
            result = shared.runtime.sync_pod(pod, &status) => result,
            _ = cancel.cancelled() => {
                debug!(pod = %full_name(pod), "sync cancelled: the pod is to stop");
                return Ok(SyncOutcome::Continue(None));
            }
        };
        let errors: HashMap<String, SyncError> = result
            .steps
            .iter()
            .filter_map(|s| s.error.clone().map(|e| (s.target.clone(), e)))
            .collect();
        for (target, e) in &errors {
            // Back-offs are the expected state of a crash loop or a failing pull; the status
            // and events say so.
            if e.reason.ends_with("BackOff") {
                debug!(pod = %full_name(pod), %target, reason = %e.reason, message = %e.message, "sync step backing off");
            } else {
                warn!(pod = %full_name(pod), %target, reason = %e.reason, message = %e.message, "Error syncing pod, skipping");
            }
        }
        if shared.set_errors(&id, errors.clone()) {
            let old = shared.statuses.get(&id);
            let api = generate_pod_status(
                pod,
                &status,
                &errors,
                &shared.config.node_ips,
                StatusContext {
                    old: old.as_ref(),
                    terminal: false,
                    probes: shared.prober.get(),
                    resize_pending: resize_pending.as_ref(),
                },
            );
            shared.statuses.set(&id, api);
        }
        let next = match result.retry_after {
            Some(d) => Some(d),
            None if result.error().is_some() => Some(jitter(BACKOFF_PERIOD)),
            None => None,
        };
        // Synced again when the active deadline passes.
        Ok(SyncOutcome::Continue(match (next, deadline_left) {
            (Some(d), Some(left)) => Some(d.min(left)),
            (None, Some(left)) => Some(left.min(jitter(shared.config.sync_frequency))),
            (next, None) => next,
        }))
    }

    async fn sync_terminating_pod(
        &self,
        pod: &Pod,
        grace: i64,
        status_fn: Option<&StatusFn>,
        cancel: &Cancel,
    ) -> Result<(), WorkerError> {
        let shared = &self.shared;
        let _timer = shared.metrics.get().map(|m| {
            m.pod_worker_duration
                .with_label_values(&[update_type_label(UpdateType::Kill)])
                .start_timer()
        });
        if let Some(prober) = shared.prober.get() {
            prober.stop_liveness_and_startup(uid(pod));
        }
        let id = uid(pod).to_string();
        let status = self.status_of(pod).await?;
        let running = status.running_pod(shared.runtime.type_name());
        tokio::select! {
            killed = shared.runtime.kill_pod(Some(pod), &running, Some(grace)) => killed?,
            _ = cancel.cancelled() => {
                debug!(pod = %full_name(pod), "kill cancelled: a shorter grace period came");
                return Ok(());
            }
        }
        // Volumes go only once the runtime confirms nothing of the pod runs (a container
        // started by a cancelled sync may have been missed by the kill).
        let after = self.status_of(pod).await?;
        if after
            .containers
            .iter()
            .any(|c| c.state == ContainerState::Running)
        {
            return Err("detected running containers after a successful KillPod".into());
        }
        let old = shared.statuses.get(&id);
        let mut api = generate_pod_status(
            pod,
            &after,
            &shared.errors_of(&id),
            &shared.config.node_ips,
            StatusContext {
                old: old.as_ref(),
                terminal: true,
                probes: shared.prober.get(),
                resize_pending: None,
            },
        );
        if !shared.pods.contains(&id) && !is_terminal(&api) {
            api.phase = Some("Failed".into());
        }
        if let Some(edit) = status_fn {
            edit(&mut api);
        }
        shared.statuses.set(&id, api);
        Ok(())
    }

    async fn sync_terminating_runtime_pod(&self, running: &RuntimePod) -> Result<(), WorkerError> {
        info!(pod = %format!("{}_{}", running.name, running.namespace), uid = %running.uid, "stopping a pod the node no longer wants");
        self.shared
            .runtime
            .kill_pod(None, running, Some(RUNTIME_POD_GRACE_PERIOD))
            .await?;
        Ok(())
    }

    async fn sync_terminated_pod(&self, pod: &Pod) -> Result<(), WorkerError> {
        // The containers are gone: the volumes can go.
        if let Some(volumes) = self.shared.volumes.get() {
            volumes.unmount_pod_volumes(pod).await?;
        }
        info!(pod = %full_name(pod), "pod terminated");
        Ok(())
    }
}

/// Upstream's message for a pod past its `activeDeadlineSeconds`.
pub const ACTIVE_DEADLINE_MESSAGE: &str =
    "Pod was active on the node longer than the specified deadline";

/// How long the pod may still be active under `activeDeadlineSeconds`, counted from its
/// status's start time (`Duration::ZERO` once past); `None` without a deadline or a start.
fn active_deadline_left(pod: &Pod, status: Option<&ApiPodStatus>) -> Option<Duration> {
    let deadline = pod.spec.as_ref()?.active_deadline_seconds?;
    let start = status?.start_time.as_ref()?.0;
    let allowed = Duration::from_secs(u64::try_from(deadline).unwrap_or(0));
    let active = Timestamp::now().duration_since(start).unsigned_abs();
    Some(allowed.saturating_sub(active))
}

fn is_api_source(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::config::CONFIG_SOURCE_ANNOTATION))
        .is_some_and(|s| s == crate::config::API_SOURCE)
}

fn is_host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// Reads the runtime's readiness now and every [`RUNTIME_STATUS_PERIOD`], logging changes.
async fn watch_readiness(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(RUNTIME_STATUS_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Readiness::read(shared.runtime.as_ref()).await;
        shared.readiness.send_if_modified(|old| {
            if old.as_ref() == Some(&now) {
                return false;
            }
            match (&now.runtime, &now.network) {
                (None, None) => info!("container runtime and network ready"),
                (Some(why), _) => warn!(reason = %why, "container runtime not ready; pods wait"),
                (None, Some(why)) => warn!(reason = %why, "container runtime network not ready; pods on the pod network wait"),
            }
            *old = Some(now.clone());
            true
        });
    }
}

/// Forgets the workers of finished pods no longer wanted; once every source reported, stops
/// through the workers what the runtime runs for pods no worker owns: pods whose manifests
/// vanished (possibly while the kubelet was down) and pods that admission rejected.
async fn housekeep(shared: &Arc<Shared>, workers: &Arc<PodWorkers>, sources_ready: bool) {
    if !sources_ready {
        return;
    }
    let desired: HashSet<String> = shared.pods.uids().into_iter().collect();
    for gone in workers.sync_known_pods(&desired) {
        if !desired.contains(&gone) {
            shared.forget(&gone);
        }
    }
    if let Some(cgroups) = shared.pod_cgroups.get() {
        let active: Vec<Pod> = shared
            .pods
            .pods()
            .into_iter()
            .filter(|p| !workers.is_pod_known_terminated(uid(p)))
            // As allocated: a resize that waits does not count yet.
            .map(|p| shared.allocations.allocated_pod(&p).unwrap_or(p))
            .collect();
        cgroups.update_qos(&active);
    }
    let running = match shared.runtime.get_pods(false).await {
        Ok(pods) => pods,
        Err(e) => {
            warn!(error = %e, "housekeeping cannot list the runtime's pods");
            return;
        }
    };
    let mut active: HashSet<String> = workers.known().into_iter().collect();
    active.extend(running.iter().map(|p| p.uid.to_string()));
    for pod in running {
        if workers.state(pod.uid.as_str()).is_none() && !desired.contains(pod.uid.as_str()) {
            workers.update_pod(UpdatePodOptions::kill_runtime_pod(pod));
        }
    }
    // Directories of pods that are neither wanted nor running, once nothing is mounted there;
    // in the background (removing a large emptyDir takes a while), one round at a time.
    if let Some(volumes) = shared.volumes.get().cloned()
        && !shared.cleaning.swap(true, Ordering::AcqRel)
    {
        let shared = shared.clone();
        tokio::spawn(async move {
            volumes.cleanup_orphaned_pods(&active).await;
            shared.cleaning.store(false, Ordering::Release);
        });
    }
}

/// Upstream's `operation_type` label of a pod worker's sync.
fn update_type_label(update: UpdateType) -> &'static str {
    match update {
        UpdateType::Create => "create",
        UpdateType::Update => "update",
        UpdateType::Sync => "sync",
        UpdateType::Kill => "kill",
    }
}

/// `kubelet_pod_start_duration_seconds`: observed when a pod's phase first turns from Pending
/// (or nothing yet) to Running, measured from when the kubelet first saw it
/// (`kubernetes.io/config.seen`).
fn observe_pod_start(
    metrics: &KubeletMetrics,
    pod: &Pod,
    old: Option<&ApiPodStatus>,
    new: &ApiPodStatus,
) {
    let was_pending = old
        .and_then(|o| o.phase.as_deref())
        .is_none_or(|phase| phase == "Pending");
    if !was_pending || new.phase.as_deref() != Some("Running") {
        return;
    }
    let seen = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::config::CONFIG_SEEN_ANNOTATION))
        .and_then(|t| t.parse::<Timestamp>().ok());
    if let Some(seen) = seen {
        let elapsed = Timestamp::now().duration_since(seen);
        metrics
            .pod_start_duration
            .observe(elapsed.as_secs_f64().max(0.0));
    }
}

/// The pod lifecycle event generator: sends the UID of each pod whose containers changed.
///
/// It follows the runtime's container events, relisting every [`EVENTED_RELIST_PERIOD`] as a
/// safety net. When the stream cannot be opened or ends (the runtime restarted), it relists
/// every [`GENERIC_RELIST_PERIOD`] and tries the stream again with back-off (250 ms doubling to
/// [`MAX_STREAM_RETRY_DELAY`]), for as long as it takes: a runtime restart does not leave the
/// node polling. Only a runtime without events at all makes it relist for good.
async fn run_pleg(
    runtime: Arc<dyn Runtime>,
    tx: mpsc::Sender<PodUid>,
    health: Arc<Health>,
    metrics: Option<Arc<KubeletMetrics>>,
) {
    let mut relister = Relister {
        health,
        metrics,
        ..Default::default()
    };
    let mut delay = FIRST_STREAM_RETRY_DELAY;
    let mut following = false;
    loop {
        match runtime.container_events().await {
            Ok(events) => {
                if !following {
                    info!("PLEG follows the runtime's container events");
                }
                following = true;
                relister.health.pleg_evented(true);
                // What changed while no stream was open.
                relister.relist(runtime.as_ref(), &tx).await;
                let opened = tokio::time::Instant::now();
                let delivered = follow_events(runtime.as_ref(), &tx, events, &mut relister).await;
                if tx.is_closed() {
                    return;
                }
                // A stream that worked for a while earns a quick retry; one that ends at once
                // is retried with growing delays like a failed open.
                if delivered || opened.elapsed() >= MAX_STREAM_RETRY_DELAY {
                    delay = FIRST_STREAM_RETRY_DELAY;
                }
            }
            Err(RuntimeError::Unsupported(what)) => {
                info!(period = ?GENERIC_RELIST_PERIOD, reason = what, "PLEG relists the runtime's pods");
                loop {
                    relister.relist(runtime.as_ref(), &tx).await;
                    if tx.is_closed() {
                        return;
                    }
                    tokio::time::sleep(GENERIC_RELIST_PERIOD).await;
                }
            }
            Err(e) => debug!(error = %e, "cannot open the runtime's container events"),
        }
        if following {
            info!(period = ?GENERIC_RELIST_PERIOD, "PLEG relists the runtime's pods until its container events are back");
            following = false;
            relister.health.pleg_evented(false);
        }
        // Relist until it is time to try the stream again.
        let retry = tokio::time::Instant::now() + delay;
        loop {
            relister.relist(runtime.as_ref(), &tx).await;
            if tx.is_closed() {
                return;
            }
            let now = tokio::time::Instant::now();
            if now >= retry {
                break;
            }
            tokio::time::sleep((retry - now).min(GENERIC_RELIST_PERIOD)).await;
        }
        delay = (delay * 2).min(MAX_STREAM_RETRY_DELAY);
    }
}

/// Forwards the pods of `events` until the stream ends (or the receiver is gone), relisting
/// every [`EVENTED_RELIST_PERIOD`]. Whether any event came.
async fn follow_events(
    runtime: &dyn Runtime,
    tx: &mpsc::Sender<PodUid>,
    mut events: futures::stream::BoxStream<'static, crate::runtime::ContainerEvent>,
    relister: &mut Relister,
) -> bool {
    let mut relist = tokio::time::interval_at(
        tokio::time::Instant::now() + EVENTED_RELIST_PERIOD,
        EVENTED_RELIST_PERIOD,
    );
    let mut delivered = false;
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { return delivered };
                delivered = true;
                if tx.send(event.pod_uid).await.is_err() {
                    return delivered;
                }
            }
            _ = relist.tick() => relister.relist(runtime, tx).await,
        }
    }
}

/// PLEG's relisting: the container states last seen, and whether listing fails (an outage is
/// logged once, not every second).
#[derive(Default)]
struct Relister {
    previous: HashMap<String, (PodUid, ContainerState)>,
    failing: bool,
    health: Arc<Health>,
    metrics: Option<Arc<KubeletMetrics>>,
    /// When the previous relist started (for `kubelet_pleg_relist_interval_seconds`).
    last_start: Option<std::time::Instant>,
}

impl Relister {
    /// Lists the runtime's pods and sends the UIDs of pods whose containers changed state
    /// since the previous listing.
    async fn relist(&mut self, runtime: &dyn Runtime, tx: &mpsc::Sender<PodUid>) {
        let started = std::time::Instant::now();
        if let Some(m) = &self.metrics {
            if let Some(last) = self.last_start {
                m.pleg_relist_interval
                    .observe(started.duration_since(last).as_secs_f64());
            }
            m.pleg_last_seen
                .set(Timestamp::now().as_millisecond() as f64 / 1000.0);
        }
        self.last_start = Some(started);
        let listed = runtime.get_pods(true).await;
        if let Some(m) = &self.metrics {
            m.pleg_relist_duration
                .observe(started.elapsed().as_secs_f64());
        }
        let pods: Vec<RuntimePod> = match listed {
            Ok(p) => p,
            Err(e) => {
                if !self.failing {
                    warn!(error = %e, "PLEG relist failed");
                } else {
                    debug!(error = %e, "PLEG relist failed");
                }
                self.failing = true;
                return;
            }
        };
        self.health.pleg_relisted();
        if let Some(m) = &self.metrics {
            m.set_running_from(&pods);
        }
        if std::mem::take(&mut self.failing) {
            info!("PLEG relists again");
        }
        let mut current = HashMap::new();
        for pod in &pods {
            for c in pod.containers.iter().chain(&pod.sandboxes) {
                current.insert(c.id.id.clone(), (pod.uid.clone(), c.state));
            }
        }
        let mut changed: HashSet<PodUid> = HashSet::new();
        for (id, (uid, state)) in &current {
            if self.previous.get(id).map(|(_, s)| s) != Some(state) {
                changed.insert(uid.clone());
            }
        }
        for (id, (uid, _)) in self.previous.iter() {
            if !current.contains_key(id) {
                changed.insert(uid.clone());
            }
        }
        self.previous = current;
        for uid in changed {
            if tx.try_send(uid).is_err() {
                warn!("Event channel is full, discard this relist() cycle event");
                return;
            }
        }
    }
}

#[cfg(test)]
mod engine_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{
        ContainerEvent, ContainerEventKind, ContainerId, PodStatus, PodSyncResult, RuntimeContainer,
    };
    use async_trait::async_trait;

    /// A runtime whose pods the test changes. Without `evented` it has no container events;
    /// with it, opening them fails while `down` says so and otherwise gives a stream the test
    /// feeds (dropping the feed ends the stream, as a runtime restart does).
    #[derive(Default)]
    struct Fake {
        pods: Mutex<Vec<RuntimePod>>,
        /// Listing fails while set.
        list_fails: AtomicBool,
        evented: bool,
        down: AtomicBool,
        opens: std::sync::atomic::AtomicU32,
        feed: Mutex<Option<mpsc::UnboundedSender<ContainerEvent>>>,
    }

    #[async_trait]
    impl Runtime for Fake {
        fn type_name(&self) -> &str {
            "fake"
        }
        async fn get_pods(&self, _all: bool) -> Result<Vec<RuntimePod>, RuntimeError> {
            if self.list_fails.load(Ordering::SeqCst) {
                return Err(RuntimeError::runtime(std::io::Error::other("list failed")));
            }
            Ok(self.pods.lock().unwrap().clone())
        }
        async fn get_pod_status(
            &self,
            _: &PodUid,
            _: &str,
            _: &str,
        ) -> Result<PodStatus, RuntimeError> {
            Ok(PodStatus::default())
        }
        async fn sync_pod(&self, _: &Pod, _: &PodStatus) -> PodSyncResult {
            PodSyncResult::default()
        }
        async fn kill_pod(
            &self,
            _: Option<&Pod>,
            _: &RuntimePod,
            _: Option<i64>,
        ) -> Result<(), RuntimeError> {
            Ok(())
        }
        async fn garbage_collect(
            &self,
            _: &GcPolicy,
            _: &dyn PodStateProvider,
            _: bool,
        ) -> Result<(), RuntimeError> {
            Ok(())
        }
        async fn container_events(
            &self,
        ) -> Result<futures::stream::BoxStream<'static, ContainerEvent>, RuntimeError> {
            if !self.evented {
                return Err(RuntimeError::Unsupported("container events"));
            }
            self.opens.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(RuntimeError::runtime(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "runtime down",
                )));
            }
            let (tx, rx) = mpsc::unbounded_channel();
            *self.feed.lock().unwrap() = Some(tx);
            Ok(futures::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|e| (e, rx)) },
            )
            .boxed())
        }
    }

    fn pod(uid: &str, state: ContainerState) -> RuntimePod {
        RuntimePod {
            uid: uid.into(),
            containers: vec![RuntimeContainer {
                id: ContainerId {
                    runtime: "fake".into(),
                    id: format!("{uid}-c"),
                },
                name: "c".into(),
                state,
                hash: None,
                termination_grace_period: None,
            }],
            ..Default::default()
        }
    }

    async fn next(rx: &mut mpsc::Receiver<PodUid>) -> Option<String> {
        tokio::time::timeout(Duration::from_secs(3), rx.recv())
            .await
            .ok()
            .flatten()
            .map(String::from)
    }

    #[tokio::test]
    async fn without_container_events_pleg_relists_and_reports_changed_pods() {
        let runtime = Arc::new(Fake::default());
        runtime
            .pods
            .lock()
            .unwrap()
            .push(pod("a", ContainerState::Running));
        let (tx, mut rx) = mpsc::channel(16);
        let metrics = Arc::new(KubeletMetrics::new("n"));
        let pleg = tokio::spawn(run_pleg(
            runtime.clone(),
            tx,
            Arc::default(),
            Some(metrics.clone()),
        ));
        assert_eq!(
            next(&mut rx).await.as_deref(),
            Some("a"),
            "a new pod is reported"
        );
        let containers = |state: &str| metrics.running_containers.with_label_values(&[state]).get();
        assert_eq!(containers("running"), 1);
        assert!(metrics.pleg_relist_duration.get_sample_count() >= 1);

        // Nothing changes: nothing is reported.
        assert_eq!(
            tokio::time::timeout(Duration::from_millis(2500), rx.recv())
                .await
                .ok()
                .flatten(),
            None
        );
        // A container exits, then another pod appears, then the first disappears.
        runtime.pods.lock().unwrap()[0] = pod("a", ContainerState::Exited);
        assert_eq!(next(&mut rx).await.as_deref(), Some("a"));
        assert_eq!((containers("running"), containers("exited")), (0, 1));
        assert!(metrics.pleg_relist_interval.get_sample_count() >= 1);
        runtime
            .pods
            .lock()
            .unwrap()
            .push(pod("b", ContainerState::Running));
        assert_eq!(next(&mut rx).await.as_deref(), Some("b"));
        runtime.pods.lock().unwrap().remove(0);
        assert_eq!(next(&mut rx).await.as_deref(), Some("a"));
        pleg.abort();
    }

    fn event(uid: &str) -> ContainerEvent {
        ContainerEvent {
            container_id: ContainerId {
                runtime: "fake".into(),
                id: format!("{uid}-c"),
            },
            pod_uid: uid.into(),
            kind: ContainerEventKind::Stopped,
        }
    }

    /// Waits (in paused time) until PLEG opened a stream, and returns its feed.
    async fn opened(runtime: &Fake) -> mpsc::UnboundedSender<ContainerEvent> {
        for _ in 0..600 {
            if let Some(feed) = runtime.feed.lock().unwrap().take() {
                return feed;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("PLEG did not open the container events within a minute");
    }

    /// A runtime that is down for a long time (more failed opens than upstream's five) and
    /// then back: PLEG relists meanwhile and returns to the events, again after every restart.
    #[tokio::test(start_paused = true)]
    async fn pleg_returns_to_container_events_after_the_runtime_restarts() {
        let runtime = Arc::new(Fake {
            evented: true,
            ..Default::default()
        });
        runtime.down.store(true, Ordering::SeqCst);
        let (tx, mut rx) = mpsc::channel(16);
        let pleg = tokio::spawn(run_pleg(runtime.clone(), tx, Arc::default(), None));

        // Down for 40 s: PLEG keeps trying (with back-off) and relists meanwhile.
        tokio::time::sleep(Duration::from_secs(40)).await;
        let failed = runtime.opens.load(Ordering::SeqCst);
        assert!(failed > 5, "only {failed} attempts in 40 s");
        assert!(failed < 20, "{failed} attempts in 40 s: no back-off");
        runtime
            .pods
            .lock()
            .unwrap()
            .push(pod("relisted", ContainerState::Running));
        assert_eq!(
            next(&mut rx).await.as_deref(),
            Some("relisted"),
            "the relist reports changes while the events are down"
        );

        // Back: within the longest retry delay the stream is open and events flow.
        runtime.down.store(false, Ordering::SeqCst);
        let back = tokio::time::Instant::now();
        let feed = opened(&runtime).await;
        assert!(back.elapsed() <= MAX_STREAM_RETRY_DELAY + Duration::from_millis(200));
        feed.send(event("a")).unwrap();
        assert_eq!(next(&mut rx).await.as_deref(), Some("a"));

        // A restart: the stream ends, the runtime is down a while, then back again.
        runtime.down.store(true, Ordering::SeqCst);
        drop(feed);
        tokio::time::sleep(Duration::from_secs(10)).await;
        runtime.down.store(false, Ordering::SeqCst);
        let feed = opened(&runtime).await;
        feed.send(event("b")).unwrap();
        assert_eq!(next(&mut rx).await.as_deref(), Some("b"));

        // While events flow, nothing polls: no relist between events.
        let opens = runtime.opens.load(Ordering::SeqCst);
        runtime
            .pods
            .lock()
            .unwrap()
            .push(pod("unseen", ContainerState::Running));
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .ok()
                .flatten(),
            None,
            "no relist within a minute while the events flow"
        );
        assert_eq!(runtime.opens.load(Ordering::SeqCst), opens);
        pleg.abort();
    }

    /// PLEG health as upstream: unhealthy before the first successful relist, healthy while
    /// relists succeed, unhealthy once the last one is older than the threshold (3 minutes
    /// relisting, 10 minutes following events), healthy again when listing works.
    #[tokio::test(start_paused = true)]
    async fn pleg_health_follows_the_last_successful_relist() {
        let health = Arc::new(Health::default());
        assert_eq!(
            health.pleg_error().as_deref(),
            Some("pleg has yet to be successful")
        );
        let runtime = Arc::new(Fake::default());
        let (tx, mut rx) = mpsc::channel(1000);
        let pleg = tokio::spawn(run_pleg(runtime.clone(), tx, health.clone(), None));
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(health.pleg_error(), None);
        runtime.list_fails.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(170)).await;
        assert_eq!(health.pleg_error(), None, "within the threshold");
        tokio::time::sleep(Duration::from_secs(15)).await;
        let error = health.pleg_error().expect("unhealthy after 3 minutes");
        assert!(
            error.starts_with("pleg was last seen active 3m")
                && error.ends_with("ago; threshold is 3m0s"),
            "{error}"
        );
        runtime.list_fails.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(health.pleg_error(), None, "healthy again");

        // Following events, the safety relist every 5 minutes is within the 10-minute threshold.
        let runtime = Arc::new(Fake {
            evented: true,
            ..Default::default()
        });
        let health = Arc::new(Health::default());
        let (tx, mut rx) = mpsc::channel(1000);
        let evented = tokio::spawn(run_pleg(runtime.clone(), tx, health.clone(), None));
        let drain2 = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        tokio::time::sleep(Duration::from_secs(550)).await;
        assert_eq!(health.pleg_error(), None, "{:?}", health.pleg_error());
        runtime.list_fails.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(700)).await;
        let error = health
            .pleg_error()
            .expect("unhealthy after 10 minutes without a relist");
        assert!(error.ends_with("threshold is 10m0s"), "{error}");
        for task in [pleg, drain, evented, drain2] {
            task.abort();
        }
    }

    #[test]
    fn durations_as_go_writes_them() {
        assert_eq!(go_duration(Duration::from_millis(180_093)), "3m0.093s");
        assert_eq!(go_duration(Duration::from_secs(600)), "10m0s");
        assert_eq!(go_duration(Duration::from_millis(3_723_500)), "1h2m3.5s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn jitter_stays_within_half_again() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(10));
            assert!(
                d >= Duration::from_secs(10) && d <= Duration::from_secs(15),
                "{d:?}"
            );
        }
    }
}
