//! Pod status as the API shows it, generated from the spec and the runtime's view (upstream
//! `generateAPIPodStatus` / `getPhase` / `status/generate.go`), and the status manager that
//! keeps it (conditions keep their `lastTransitionTime`, `startTime` is set once).

use crate::pod_manager::is_sidecar;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{
    Container, ContainerState as ApiContainerState, ContainerStateRunning,
    ContainerStateTerminated, ContainerStateWaiting, ContainerStatus as ApiContainerStatus, Pod,
    PodCondition, PodIP, PodStatus as ApiPodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::qos::pod_qos;
use crate::runtime::{ContainerState, ContainerStatus, PodStatus, SyncError};

/// Upstream condition reasons.
pub mod reasons {
    /// ContainersReady / Ready false: some container is not ready.
    pub const CONTAINERS_NOT_READY: &str = "ContainersNotReady";
    /// Initialized false.
    pub const CONTAINERS_NOT_INITIALIZED: &str = "ContainersNotInitialized";
    /// The pod succeeded.
    pub const POD_COMPLETED: &str = "PodCompleted";
    /// The pod failed.
    pub const POD_FAILED: &str = "PodFailed";
    /// Default waiting reason.
    pub const CONTAINER_CREATING: &str = "ContainerCreating";
    /// Waiting reason of regular containers while init containers run.
    pub const POD_INITIALIZING: &str = "PodInitializing";
}

fn time(t: Option<Timestamp>) -> Option<Time> {
    t.map(Time)
}

/// The API status of one container from its runtime statuses (newest first) and the last sync
/// error about it.
fn container_status(
    spec: &Container,
    statuses: &[&ContainerStatus],
    error: Option<&SyncError>,
    default_reason: &str,
    restart_policy: &str,
    init: bool,
) -> ApiContainerStatus {
    let mut out = ApiContainerStatus {
        name: spec.name.clone(),
        image: spec.image.clone().unwrap_or_default(),
        state: Some(ApiContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(default_reason.into()),
                message: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let to_state = |s: &ContainerStatus| -> ApiContainerState {
        match s.state {
            ContainerState::Running => ApiContainerState {
                running: Some(ContainerStateRunning {
                    started_at: time(s.started_at),
                }),
                ..Default::default()
            },
            ContainerState::Exited => ApiContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: s.exit_code,
                    reason: (!s.reason.is_empty()).then(|| s.reason.clone()),
                    message: (!s.message.is_empty()).then(|| s.message.clone()),
                    started_at: time(s.started_at),
                    finished_at: time(s.finished_at),
                    container_id: Some(s.id.to_string()),
                    signal: None,
                }),
                ..Default::default()
            },
            ContainerState::Created | ContainerState::Unknown => ApiContainerState {
                waiting: Some(ContainerStateWaiting::default()),
                ..Default::default()
            },
        }
    };
    if let Some(newest) = statuses.first() {
        out.state = Some(to_state(newest));
        out.container_id = Some(newest.id.to_string());
        out.image_id = newest.image_ref.clone();
        if !newest.image.is_empty() {
            out.image = newest.image.clone();
        }
        out.restart_count = i32::try_from(newest.restart_count).unwrap_or(i32::MAX);
        let running = newest.state == ContainerState::Running;
        out.started = Some(running);
        // A regular init container is ready once it succeeded; others while they run.
        out.ready = if init && !is_sidecar(spec) {
            newest.state == ContainerState::Exited && newest.exit_code == 0
        } else {
            running
        };
        if let Some(previous) = statuses.get(1) {
            out.last_state = Some(to_state(previous));
        }
    }
    // A container that should restart shows why it has not yet (CrashLoopBackOff, ...).
    if let Some(err) = error {
        let newest = statuses.first();
        let exited = newest.is_some_and(|s| s.state == ContainerState::Exited);
        let succeeded_init = init && newest.is_some_and(|s| s.exit_code == 0) && exited;
        let may_restart = match newest {
            None => true,
            Some(s) if s.state == ContainerState::Exited => match restart_policy {
                "Never" => init && is_sidecar(spec),
                "OnFailure" => s.exit_code != 0 || (init && is_sidecar(spec)),
                _ => true,
            },
            Some(s) => s.state != ContainerState::Running,
        };
        if may_restart && !succeeded_init {
            if exited && let Some(s) = newest {
                out.last_state = Some(to_state(s));
            }
            out.state = Some(ApiContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(err.reason.clone()),
                    message: Some(err.message.clone()),
                }),
                ..Default::default()
            });
            out.ready = false;
        }
    }
    out
}

/// The phase, as upstream's `getPhase`.
pub fn phase(
    pod: &Pod,
    init: &[ApiContainerStatus],
    regular: &[ApiContainerStatus],
) -> &'static str {
    let spec = pod.spec.as_ref();
    let policy = spec
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    let init_specs = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default();
    let containers = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
    fn terminated(s: &ApiContainerStatus) -> Option<&ContainerStateTerminated> {
        s.state.as_ref().and_then(|st| st.terminated.as_ref())
    }
    fn last_terminated(s: &ApiContainerStatus) -> Option<&ContainerStateTerminated> {
        s.last_state.as_ref().and_then(|st| st.terminated.as_ref())
    }
    let running = |s: &ApiContainerStatus| s.state.as_ref().is_some_and(|st| st.running.is_some());
    let waiting = |s: &ApiContainerStatus| s.state.as_ref().is_some_and(|st| st.waiting.is_some());

    let mut pending_init = 0;
    let mut failed_init = 0;
    let (mut n_running, mut n_waiting, mut stopped, mut succeeded, mut unknown) = (0, 0, 0, 0, 0);
    for spec in init_specs {
        let Some(s) = init.iter().find(|s| s.name == spec.name) else {
            if is_sidecar(spec) {
                unknown += 1;
            } else {
                pending_init += 1;
            }
            continue;
        };
        if is_sidecar(spec) {
            if running(s) {
                if s.started == Some(true) {
                    n_running += 1;
                } else {
                    pending_init += 1;
                }
            } else if waiting(s) && last_terminated(s).is_none() {
                pending_init += 1;
                n_waiting += 1;
            }
            continue;
        }
        match terminated(s) {
            Some(t) if t.exit_code == 0 => {}
            Some(_) => failed_init += 1,
            None => {
                if waiting(s) && last_terminated(s).is_some_and(|t| t.exit_code != 0) {
                    failed_init += 1;
                } else {
                    pending_init += 1;
                }
            }
        }
    }
    for spec in containers {
        let Some(s) = regular.iter().find(|s| s.name == spec.name) else {
            unknown += 1;
            continue;
        };
        if running(s) {
            n_running += 1;
        } else if let Some(t) = terminated(s) {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if waiting(s) {
            if let Some(t) = last_terminated(s) {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            } else {
                n_waiting += 1;
            }
        } else {
            unknown += 1;
        }
    }
    let regular_started = regular
        .iter()
        .any(|s| running(s) || terminated(s).is_some() || last_terminated(s).is_some());
    if failed_init > 0 && policy == "Never" {
        return "Failed";
    }
    if (pending_init > 0 && !regular_started) || failed_init > 0 {
        return "Pending";
    }
    if n_waiting > 0 {
        return "Pending";
    }
    if n_running > 0 && unknown == 0 {
        return "Running";
    }
    if n_running == 0 && stopped > 0 && unknown == 0 {
        return match policy {
            "Always" => "Running",
            _ if stopped == succeeded => "Succeeded",
            "Never" => "Failed",
            _ => "Running",
        };
    }
    "Pending"
}

fn condition(kind: &str, ok: bool, reason: Option<&str>, message: Option<String>) -> PodCondition {
    PodCondition {
        type_: kind.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.map(Into::into),
        message,
        ..Default::default()
    }
}

fn names(list: &[String]) -> String {
    format!("[{}]", list.join(" "))
}

/// Generates the API status of `pod` from its runtime status and the errors of its last sync
/// (container name -> error).
pub fn generate_pod_status(
    pod: &Pod,
    runtime: &PodStatus,
    errors: &HashMap<String, SyncError>,
    node_ips: &[String],
) -> ApiPodStatus {
    let spec = pod.spec.as_ref();
    let policy = spec
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    let init_specs = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default();
    let containers = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
    let host_network = spec.and_then(|s| s.host_network) == Some(true);
    let statuses_of =
        |name: &str| -> Vec<&ContainerStatus> { runtime.containers_named(name).take(2).collect() };
    let init: Vec<ApiContainerStatus> = init_specs
        .iter()
        .map(|c| {
            container_status(
                c,
                &statuses_of(&c.name),
                errors.get(&c.name),
                reasons::POD_INITIALIZING,
                policy,
                true,
            )
        })
        .collect();
    let default_reason = if init_specs.is_empty() {
        reasons::CONTAINER_CREATING
    } else {
        reasons::POD_INITIALIZING
    };
    let mut regular: Vec<ApiContainerStatus> = containers
        .iter()
        .map(|c| {
            container_status(
                c,
                &statuses_of(&c.name),
                errors.get(&c.name),
                default_reason,
                policy,
                false,
            )
        })
        .collect();
    regular.sort_by(|a, b| a.name.cmp(&b.name));

    let phase = phase(pod, &init, &regular);

    // ContainersReady covers sidecars and regular containers.
    let mut unready: Vec<String> = init_specs
        .iter()
        .filter(|c| is_sidecar(c))
        .filter(|c| !init.iter().any(|s| s.name == c.name && s.ready))
        .map(|c| c.name.clone())
        .collect();
    unready.extend(
        containers
            .iter()
            .filter(|c| !regular.iter().any(|s| s.name == c.name && s.ready))
            .map(|c| c.name.clone()),
    );
    let containers_ready = if phase == "Succeeded" {
        condition("ContainersReady", false, Some(reasons::POD_COMPLETED), None)
    } else if phase == "Failed" {
        condition("ContainersReady", false, Some(reasons::POD_FAILED), None)
    } else if !unready.is_empty() {
        condition(
            "ContainersReady",
            false,
            Some(reasons::CONTAINERS_NOT_READY),
            Some(format!(
                "containers with unready status: {}",
                names(&unready)
            )),
        )
    } else {
        condition("ContainersReady", true, None, None)
    };
    let mut ready = containers_ready.clone();
    ready.type_ = "Ready".into();

    let regular_started = regular.iter().any(|s| {
        s.state
            .as_ref()
            .is_some_and(|st| st.running.is_some() || st.terminated.is_some())
            || s.last_state
                .as_ref()
                .is_some_and(|st| st.terminated.is_some())
    });
    let incomplete: Vec<String> = init_specs
        .iter()
        .filter(|c| {
            let s = init.iter().find(|s| s.name == c.name);
            if is_sidecar(c) {
                s.is_none_or(|s| s.started != Some(true))
            } else {
                !s.is_some_and(|s| {
                    s.state
                        .as_ref()
                        .and_then(|st| st.terminated.as_ref())
                        .is_some_and(|t| t.exit_code == 0)
                })
            }
        })
        .map(|c| c.name.clone())
        .collect();
    let initialized = if phase == "Succeeded" {
        condition("Initialized", true, Some(reasons::POD_COMPLETED), None)
    } else if regular_started || incomplete.is_empty() {
        condition("Initialized", true, None, None)
    } else {
        condition(
            "Initialized",
            false,
            Some(reasons::CONTAINERS_NOT_INITIALIZED),
            Some(format!(
                "containers with incomplete status: {}",
                names(&incomplete)
            )),
        )
    };
    let sandbox_ready = runtime
        .sandboxes
        .first()
        .is_some_and(|s| s.state == crate::runtime::SandboxState::Ready)
        && (!runtime.ips.is_empty() || host_network);
    let conditions = vec![
        condition("PodReadyToStartContainers", sandbox_ready, None, None),
        initialized,
        ready,
        containers_ready,
        condition("PodScheduled", true, None, None),
    ];

    let ips: Vec<String> = if host_network {
        node_ips.to_vec()
    } else {
        runtime.ips.clone()
    };
    ApiPodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        pod_ip: ips.first().cloned(),
        pod_ips: (!ips.is_empty()).then(|| ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect()),
        host_ip: node_ips.first().cloned(),
        host_ips: (!node_ips.is_empty()).then(|| {
            node_ips
                .iter()
                .map(|ip| k8s_openapi::api::core::v1::HostIP { ip: ip.clone() })
                .collect()
        }),
        qos_class: Some(pod_qos(pod).as_str().into()),
        init_container_statuses: (!init.is_empty()).then_some(init),
        container_statuses: Some(regular),
        ..Default::default()
    }
}

/// Whether a status is in a terminal phase (`Succeeded` or `Failed`).
pub fn is_terminal(status: &ApiPodStatus) -> bool {
    matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"))
}

/// Keeps the latest status of each pod: conditions keep their `lastTransitionTime` while their
/// status is unchanged, `startTime` is set on the first status, a terminal phase is never left.
#[derive(Debug, Default)]
pub struct StatusManager {
    statuses: Mutex<BTreeMap<String, ApiPodStatus>>,
}

impl StatusManager {
    /// An empty manager.
    pub fn new() -> Self {
        StatusManager::default()
    }

    /// Stores the new status of pod `uid`, merged with the previous one.
    pub fn set(&self, uid: &str, mut status: ApiPodStatus) {
        let Ok(mut map) = self.statuses.lock() else {
            return;
        };
        let now = Time(Timestamp::now());
        let old = map.get(uid);
        status.start_time = old
            .and_then(|o| o.start_time.clone())
            .or_else(|| Some(now.clone()));
        if let Some(old) = old.filter(|o| is_terminal(o))
            && status.phase != old.phase
        {
            status.phase = old.phase.clone();
        }
        if let Some(conditions) = status.conditions.as_mut() {
            for c in conditions.iter_mut() {
                let previous = old
                    .and_then(|o| o.conditions.as_ref())
                    .and_then(|cs| cs.iter().find(|p| p.type_ == c.type_));
                c.last_transition_time = match previous {
                    Some(p) if p.status == c.status => p.last_transition_time.clone(),
                    _ => Some(now.clone()),
                };
            }
        }
        map.insert(uid.to_string(), status);
    }

    /// Whether pod `uid` reached a terminal phase (without copying its status).
    pub fn is_terminal(&self, uid: &str) -> bool {
        self.statuses
            .lock()
            .is_ok_and(|m| m.get(uid).is_some_and(is_terminal))
    }

    /// The status of pod `uid`.
    pub fn get(&self, uid: &str) -> Option<ApiPodStatus> {
        self.statuses.lock().ok()?.get(uid).cloned()
    }

    /// Forgets pod `uid`.
    pub fn remove(&self, uid: &str) {
        if let Ok(mut map) = self.statuses.lock() {
            map.remove(uid);
        }
    }
}
