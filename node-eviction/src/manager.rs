//! The eviction manager (upstream `pkg/kubelet/eviction` `managerImpl`): a pass every
//! monitoring interval and at once when a notifier fires; the pressure conditions; one pod
//! evicted per pass; admission under pressure.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use node_config::{EvictionThreshold, Signal};
use node_core::admission::{AdmitAttributes, PodAdmitHandler, Rejection, is_critical_pod};
use node_core::events::{EventObject, EventRecorder, EventType};
use node_core::pod_workers::StatusFn;
use node_core::qos::{QosClass, pod_qos};
use node_status::stats::StatsProvider;
use node_status::status::Pressure;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::notifier::{ThresholdNotifier, usage_level};
use crate::rank::{by_uid, eviction_message, rank};
use crate::signals::{NodeCondition, Observations, by_eviction_priority, observe, thresholds_met};

/// The reason of an eviction (pod status and event), upstream's.
pub const REASON: &str = "Evicted";

/// How the eviction manager is set up (from the kubelet configuration).
#[derive(Clone, Debug)]
pub struct EvictionConfig {
    /// `evictionHard` and `evictionSoft` (with their grace periods and minimum reclaims).
    pub thresholds: Vec<EvictionThreshold>,
    /// `evictionPressureTransitionPeriod`: how long a pressure condition stays after the
    /// pressure ends.
    pub pressure_transition_period: Duration,
    /// `evictionMaxPodGracePeriod`: the longest grace period of a soft eviction (0: the
    /// pod's own).
    pub max_pod_grace_period: i64,
    /// Between passes (upstream `evictionMonitoringPeriod`, 10 s).
    pub interval: Duration,
}

impl EvictionConfig {
    /// From the kubelet configuration.
    pub fn from_config(
        config: &node_config::KubeletConfiguration,
    ) -> Result<Self, node_config::ConfigError> {
        Ok(EvictionConfig {
            thresholds: config.eviction_thresholds()?,
            pressure_transition_period: config.eviction_pressure_transition_period,
            max_pod_grace_period: i64::from(config.eviction_max_pod_grace_period),
            interval: Duration::from_secs(10),
        })
    }
}

/// What the manager evicts through (the pod workers, in the kubelet).
pub trait PodEvictor: Send + Sync {
    /// The pods admitted and not yet terminated.
    fn active_pods(&self) -> Vec<Pod>;
    /// Stops `pod` with `grace_period` seconds, `status` editing its final status.
    fn evict(&self, pod: &Pod, grace_period: i64, status: StatusFn);
    /// Whether an evicted pod is stopped and its resources are free.
    fn is_cleaned_up(&self, pod: &Pod) -> bool;
}

/// How long a pass waits for the pods it evicted to be stopped before the next (upstream
/// `podCleanupTimeout`).
const POD_CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Frees node-level resources before pods are evicted (upstream `reclaimNodeLevelResources`:
/// for disk, dead containers and then unused images).
#[async_trait]
pub trait NodeReclaimer: Send + Sync {
    /// Frees what can be freed for pressure on `signal`.
    async fn reclaim(&self, signal: Signal);
}

#[derive(Default)]
struct State {
    /// When each threshold (by index) was first seen met, in this stretch.
    first_observed: HashMap<usize, Instant>,
    /// The thresholds met past their grace period at the last pass (held until their
    /// minimum reclaim is available).
    met: BTreeSet<usize>,
    /// When each condition was last seen.
    conditions_last_observed: BTreeMap<NodeCondition, Instant>,
    /// The conditions reported.
    conditions: BTreeSet<NodeCondition>,
}

/// The eviction manager.
pub struct EvictionManager {
    config: EvictionConfig,
    stats: Arc<dyn StatsProvider>,
    evictor: Arc<dyn PodEvictor>,
    recorder: Arc<dyn EventRecorder>,
    reclaimer: Option<Arc<dyn NodeReclaimer>>,
    metrics: Option<Arc<node_core::metrics::KubeletMetrics>>,
    notifiers: Vec<(Signal, Arc<dyn ThresholdNotifier>)>,
    state: Mutex<State>,
    wake: tokio::sync::Notify,
}

impl std::fmt::Debug for EvictionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvictionManager")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl EvictionManager {
    /// A manager reading `stats`, evicting through `evictor`, recording events to `recorder`.
    pub fn new(
        config: EvictionConfig,
        stats: Arc<dyn StatsProvider>,
        evictor: Arc<dyn PodEvictor>,
        recorder: Arc<dyn EventRecorder>,
    ) -> Self {
        EvictionManager {
            config,
            stats,
            evictor,
            recorder,
            reclaimer: None,
            metrics: None,
            notifiers: Vec::new(),
            state: Mutex::default(),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Frees node-level resources through `reclaimer` before evicting for disk pressure.
    pub fn with_reclaimer(mut self, reclaimer: Arc<dyn NodeReclaimer>) -> Self {
        self.reclaimer = Some(reclaimer);
        self
    }

    /// Counts evictions in `kubelet_evictions{eviction_signal}`.
    pub fn with_metrics(mut self, metrics: Arc<node_core::metrics::KubeletMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Wakes the manager when `notifier` fires; it is armed for `signal`'s memory thresholds
    /// (`memory.available` on the node's cgroup, `allocatableMemory.available` on the pods').
    pub fn with_notifier(mut self, signal: Signal, notifier: Arc<dyn ThresholdNotifier>) -> Self {
        info!(signal = %signal, notifier = %notifier.describe(), "memory threshold notifier");
        self.notifiers.push((signal, notifier));
        self
    }

    /// The pressure conditions that hold.
    pub fn conditions(&self) -> BTreeSet<NodeCondition> {
        self.lock().conditions.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs passes until the task is dropped: every interval, and at once when a notifier
    /// fires.
    pub async fn run(self: Arc<Self>) {
        for (_, notifier) in &self.notifiers {
            let (me, notifier) = (Arc::downgrade(&self), notifier.clone());
            tokio::spawn(async move {
                loop {
                    notifier.crossed().await;
                    let Some(me) = me.upgrade() else { return };
                    debug!(notifier = %notifier.describe(), "memory threshold crossed");
                    me.wake.notify_one();
                }
            });
        }
        loop {
            let evicted = self.synchronize().await;
            if !evicted.is_empty() {
                self.wait_for_cleanup(&evicted).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.interval) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// Waits (up to [`POD_CLEANUP_TIMEOUT`]) until `pods` are stopped, so that the next pass
    /// sees what their eviction freed (upstream `waitForPodsCleanup`).
    async fn wait_for_cleanup(&self, pods: &[Pod]) {
        let deadline = Instant::now() + POD_CLEANUP_TIMEOUT;
        while Instant::now() < deadline {
            if pods.iter().all(|p| self.evictor.is_cleaned_up(p)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        warn!("eviction manager: timed out waiting for evicted pods to be cleaned up");
    }

    /// One pass (upstream `synchronize`); the pods evicted (at most one).
    pub async fn synchronize(&self) -> Vec<Pod> {
        // The node's figures first; the pods' (a full summary, much dearer with many pods)
        // only when a threshold is met or some pod has local storage limits to check.
        let node = match self.stats.node_summary().await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "eviction manager: failed to get summary stats");
                return Vec::new();
            }
        };
        self.arm_notifiers(&node);
        let ready = self.update_state(&observe(&node), Instant::now());
        let limits = self
            .evictor
            .active_pods()
            .iter()
            .any(crate::rank::has_local_storage_limits);
        if ready.is_empty() && !limits {
            return Vec::new();
        }
        let summary = match self.stats.summary().await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "eviction manager: failed to get summary stats");
                return Vec::new();
            }
        };
        let observations = observe(&summary);
        // Pods over their local storage limits go whatever the node's pressure (upstream
        // `localStorageEviction`; LocalStorageCapacityIsolation is on by default).
        let evicted = self.local_storage_eviction(&summary);
        if !evicted.is_empty() {
            return evicted;
        }
        let mut starved: Vec<EvictionThreshold> = ready
            .iter()
            .map(|i| self.config.thresholds[*i].clone())
            .collect();
        if starved.is_empty() {
            return Vec::new();
        }
        by_eviction_priority(&mut starved);
        let threshold = starved[0].clone();
        // Still met by the full summary's figures, taken a moment after the node's (what an
        // earlier eviction freed may have come back meanwhile)?
        if thresholds_met(std::slice::from_ref(&threshold), &observations, true).is_empty() {
            return Vec::new();
        }
        info!(signal = %threshold.signal, "eviction manager: attempting to reclaim");
        let (summary, observations) = match self.reclaim(&threshold).await {
            Reclaimed::Enough => return Vec::new(),
            Reclaimed::NotEnough(figures) => *figures,
            Reclaimed::Nothing => (summary, observations),
        };
        let stats = by_uid(&summary.pods);
        let mut pods = self.evictor.active_pods();
        rank(&mut pods, threshold.signal, &stats);
        for pod in pods {
            if is_critical_pod(&pod) {
                debug!(
                    pod = pod.metadata.name.as_deref().unwrap_or_default(),
                    "cannot evict a critical pod"
                );
                continue;
            }
            let grace = if threshold.is_hard() {
                // Upstream's immediateEvictionGracePeriodSeconds.
                1
            } else {
                let own = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
                    .unwrap_or(30);
                match self.config.max_pod_grace_period {
                    max if max > 0 => own.min(max),
                    _ => own,
                }
            };
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let message = eviction_message(
                threshold.signal,
                &starved,
                &observations,
                &pod,
                stats.get(uid.as_str()).copied(),
            );
            self.evict(&pod, grace, &message, true);
            if let Some(m) = &self.metrics {
                m.evictions
                    .with_label_values(&[threshold.signal.as_str()])
                    .inc();
            }
            return vec![pod];
        }
        info!("eviction manager: unable to evict any pods from the node");
        Vec::new()
    }

    /// Records the thresholds met and the conditions they set; the thresholds met past their
    /// grace period (by index).
    fn update_state(&self, observations: &Observations, now: Instant) -> BTreeSet<usize> {
        let thresholds = &self.config.thresholds;
        let index = |met: Vec<EvictionThreshold>| -> BTreeSet<usize> {
            thresholds
                .iter()
                .enumerate()
                .filter(|(_, t)| met.contains(t))
                .map(|(i, _)| i)
                .collect()
        };
        let mut state = self.lock();
        let mut met = index(thresholds_met(thresholds, observations, false));
        if !state.met.is_empty() {
            let previous: Vec<EvictionThreshold> =
                state.met.iter().map(|i| thresholds[*i].clone()).collect();
            met.extend(index(thresholds_met(&previous, observations, true)));
        }
        state.first_observed.retain(|i, _| met.contains(i));
        for i in &met {
            state.first_observed.entry(*i).or_insert(now);
        }
        for i in &met {
            state
                .conditions_last_observed
                .insert(NodeCondition::of(thresholds[*i].signal), now);
        }
        let period = self.config.pressure_transition_period;
        state
            .conditions_last_observed
            .retain(|_, seen| now.duration_since(*seen) < period || *seen == now);
        let conditions: BTreeSet<NodeCondition> =
            state.conditions_last_observed.keys().copied().collect();
        if conditions != state.conditions {
            let names: Vec<&str> = conditions.iter().map(|c| c.as_str()).collect();
            info!(conditions = ?names, "eviction manager: node conditions changed");
        }
        state.conditions = conditions;
        let ready: BTreeSet<usize> = met
            .iter()
            .copied()
            .filter(|i| {
                state
                    .first_observed
                    .get(i)
                    .is_some_and(|t| now.duration_since(*t) >= thresholds[*i].grace_period)
            })
            .collect();
        state.met = ready.clone();
        ready
    }

    async fn reclaim(&self, threshold: &EvictionThreshold) -> Reclaimed {
        let Some(reclaimer) = &self.reclaimer else {
            return Reclaimed::Nothing;
        };
        if NodeCondition::of(threshold.signal) != NodeCondition::Disk {
            return Reclaimed::Nothing;
        }
        reclaimer.reclaim(threshold.signal).await;
        let Ok(summary) = self.stats.summary().await else {
            return Reclaimed::Nothing;
        };
        let observations = observe(&summary);
        if thresholds_met(std::slice::from_ref(threshold), &observations, true).is_empty() {
            info!(signal = %threshold.signal, "eviction manager: node-level resources reclaimed, no pod needs to go");
            return Reclaimed::Enough;
        }
        Reclaimed::NotEnough(Box::new((summary, observations)))
    }

    /// Evicts the pods whose emptyDir exceeds its sizeLimit, whose local ephemeral storage
    /// exceeds the sum of their containers' limits, or with a container over its own limit
    /// (grace period 0, no DisruptionTarget condition, as upstream).
    fn local_storage_eviction(&self, summary: &node_core::stats::Summary) -> Vec<Pod> {
        let stats = by_uid(&summary.pods);
        let mut evicted = Vec::new();
        for pod in self.evictor.active_pods() {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let Some(s) = stats.get(uid.as_str()) else {
                continue;
            };
            let Some((message, signal)) = crate::rank::local_storage_violation(&pod, s) else {
                continue;
            };
            if is_critical_pod(&pod) {
                debug!(
                    pod = pod.metadata.name.as_deref().unwrap_or_default(),
                    "cannot evict a critical pod"
                );
                continue;
            }
            self.evict(&pod, 0, &message, false);
            if let Some(m) = &self.metrics {
                m.evictions.with_label_values(&[signal]).inc();
            }
            evicted.push(pod);
        }
        evicted
    }

    fn evict(&self, pod: &Pod, grace: i64, message: &str, disruption_condition: bool) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        info!(pod = %name, grace, message, "eviction manager: evicting pod");
        self.recorder
            .record(&EventObject::pod(pod), EventType::Warning, REASON, message);
        let message = message.to_string();
        let status: StatusFn = Arc::new(move |status: &mut PodStatus| {
            node_core::status::fail_by_kubelet(status, REASON, &message, disruption_condition);
        });
        self.evictor.evict(pod, grace, status);
    }

    /// Arms the notifiers at the usage where their signal's memory thresholds are met.
    fn arm_notifiers(&self, summary: &node_core::stats::Summary) {
        for (signal, notifier) in &self.notifiers {
            let memory = match signal {
                Signal::AllocatableMemoryAvailable => summary
                    .node
                    .system_containers
                    .iter()
                    .find(|c| c.name == node_core::stats::system_container::PODS)
                    .and_then(|c| c.memory.as_ref()),
                _ => summary.node.memory.as_ref(),
            };
            let Some(memory) = memory else { continue };
            // The lowest level at which any of the signal's thresholds is met.
            let level = self
                .config
                .thresholds
                .iter()
                .filter(|t| t.signal == *signal)
                .filter_map(|t| usage_level(t, memory))
                .min();
            if let Some(level) = level
                && let Err(e) = notifier.arm(level)
            {
                warn!(error = %e, "cannot arm the memory threshold notifier");
            }
        }
    }
}

enum Reclaimed {
    /// Nothing to reclaim for this signal.
    Nothing,
    /// The threshold is no longer met.
    Enough,
    /// Still met, with the new figures.
    NotEnough(Box<(node_core::stats::Summary, Observations)>),
}

impl node_status::source::PressureSource for EvictionManager {
    fn pressure(&self) -> Pressure {
        let c = self.conditions();
        Pressure {
            memory: c.contains(&NodeCondition::Memory),
            disk: c.contains(&NodeCondition::Disk),
            pid: c.contains(&NodeCondition::Pid),
        }
    }
}

impl PodAdmitHandler for EvictionManager {
    /// Upstream `Admit`: under MemoryPressure alone, BestEffort pods are rejected unless they
    /// tolerate the memory-pressure taint; under any other pressure every pod is; critical
    /// pods are always admitted.
    fn admit(&self, attrs: &AdmitAttributes<'_>) -> Result<(), Rejection> {
        let conditions = self.conditions();
        if conditions.is_empty() || is_critical_pod(attrs.pod) {
            return Ok(());
        }
        if conditions.len() == 1 && conditions.contains(&NodeCondition::Memory) {
            if pod_qos(attrs.pod) != QosClass::BestEffort {
                return Ok(());
            }
            let tolerates = attrs
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.tolerations.as_ref())
                .into_iter()
                .flatten()
                .any(|t| {
                    let key_ok = match t.key.as_deref() {
                        None | Some("") => t.operator.as_deref() == Some("Exists"),
                        Some(k) => k == "node.kubernetes.io/memory-pressure",
                    };
                    let effect_ok =
                        matches!(t.effect.as_deref(), None | Some("") | Some("NoSchedule"));
                    key_ok && effect_ok
                });
            if tolerates {
                return Ok(());
            }
        }
        let names: Vec<&str> = conditions.iter().map(|c| c.as_str()).collect();
        Err(Rejection {
            reason: REASON.into(),
            message: format!("The node had condition: [{}]. ", names.join(" ")),
        })
    }
}
