//! Pod status as the API shows it, generated from the spec and the runtime's view (upstream
//! `generateAPIPodStatus` / `getPhase` / `status/generate.go`), and the status manager that
//! keeps it (conditions keep their `lastTransitionTime`, `startTime` is set once).

use crate::pod_manager::{container_should_restart, is_sidecar};
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
    /// Ready false: a readiness gate's condition is missing or not true.
    pub const READINESS_GATES_NOT_READY: &str = "ReadinessGatesNotReady";
}

/// Why the pod's readiness gates hold it back, in upstream's words; `None` when every gate's
/// condition (set on the pod by others) is true.
fn readiness_gates_not_ready(pod: &Pod) -> Option<String> {
    let gates = pod.spec.as_ref()?.readiness_gates.as_deref()?;
    let conditions = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let mut all = Vec::new();
    for gate in gates {
        match conditions.iter().find(|c| c.type_ == gate.condition_type) {
            None => all.push(format!(
                "corresponding condition of pod readiness gate \"{}\" does not exist.",
                gate.condition_type
            )),
            Some(c) if c.status != "True" => all.push(format!(
                "the status of pod readiness gate \"{}\" is not \"True\", but {}.",
                gate.condition_type, c.status
            )),
            Some(_) => {}
        }
    }
    (!all.is_empty()).then(|| all.join(", "))
}

/// Whether the pod's Ready condition, as its status has it, disagrees with its readiness
/// gates (upstream `NeedToReconcilePodReadiness`): a pod with gates whose containers are
/// ready is Ready exactly when every gate's condition is true.
pub fn need_to_reconcile_readiness(pod: &Pod) -> bool {
    let has_gates = pod
        .spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_ref())
        .is_some_and(|g| !g.is_empty());
    if !has_gates {
        return false;
    }
    let conditions = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let status_of = |kind: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == kind)
            .map(|c| (c.status.as_str(), c.message.as_deref()))
    };
    let Some((ready, message)) = status_of("Ready") else {
        return false;
    };
    if status_of("ContainersReady").map(|c| c.0) != Some("True") {
        return false;
    }
    match readiness_gates_not_ready(pod) {
        None => ready != "True",
        Some(expected) => ready == "True" || message != Some(expected.as_str()),
    }
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
        out.user = newest
            .user
            .as_ref()
            .map(|u| k8s_openapi::api::core::v1::ContainerUser {
                linux: Some(k8s_openapi::api::core::v1::LinuxContainerUser {
                    uid: u.uid,
                    gid: u.gid,
                    supplemental_groups: Some(u.supplemental_groups.clone())
                        .filter(|g| !g.is_empty()),
                }),
            });
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
            Some(s) if s.state == ContainerState::Exited => {
                (init && is_sidecar(spec))
                    || container_should_restart(spec, restart_policy, s.exit_code)
            }
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

/// The phase, as upstream's `getPhase`: regular init containers pending (or sidecars not
/// started before the pod initialized) keep the pod Pending; a failed init container fails a
/// `restartPolicy: Never` pod; a pod the kubelet terminated (`pod_is_terminal`, not static)
/// ends Succeeded when every container exited 0 and Failed otherwise, whatever its restart
/// policy. `has_initialized`: a regular container runs (upstream
/// `HasAnyActiveRegularContainerStarted`).
pub fn phase(
    pod: &Pod,
    init: &[ApiContainerStatus],
    regular: &[ApiContainerStatus],
    pod_is_terminal: bool,
    has_initialized: bool,
) -> &'static str {
    let spec = pod.spec.as_ref();
    let policy = spec
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    let init_specs = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default();
    let containers = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
    fn state(s: &ApiContainerStatus) -> (bool, Option<&ContainerStateTerminated>, bool) {
        let st = s.state.as_ref();
        (
            st.is_some_and(|st| st.running.is_some()),
            st.and_then(|st| st.terminated.as_ref()),
            st.is_some_and(|st| st.waiting.is_some()),
        )
    }
    fn last_terminated(s: &ApiContainerStatus) -> Option<&ContainerStateTerminated> {
        s.last_state.as_ref().and_then(|st| st.terminated.as_ref())
    }

    let (mut pending_regular_init, mut pending_sidecars, mut failed_init) = (0, 0, 0);
    for spec in init_specs.iter().filter(|c| !is_sidecar(c)) {
        let Some(s) = init.iter().find(|s| s.name == spec.name) else {
            pending_regular_init += 1;
            continue;
        };
        match state(s) {
            (true, _, _) => pending_regular_init += 1,
            (_, Some(t), _) => {
                if t.exit_code != 0 {
                    failed_init += 1;
                }
            }
            (_, _, true) => match last_terminated(s) {
                Some(t) if t.exit_code != 0 => failed_init += 1,
                Some(_) => {}
                None => pending_regular_init += 1,
            },
            _ => pending_regular_init += 1,
        }
    }
    let (mut unknown, mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0, 0);
    // Whether a stopped regular container will be started again (its own restart policy and
    // rules, else the pod's).
    let mut restarting = false;
    for spec in init_specs.iter().filter(|c| is_sidecar(c)) {
        let Some(s) = init.iter().find(|s| s.name == spec.name) else {
            unknown += 1;
            continue;
        };
        match state(s) {
            (true, _, _) => {
                if s.started != Some(true) {
                    pending_sidecars += 1;
                }
                running += 1;
            }
            // Stopped sidecars do not count for the phase.
            (_, Some(_), _) => {}
            (_, _, true) => {
                if last_terminated(s).is_none() {
                    pending_sidecars += 1;
                    waiting += 1;
                }
            }
            _ => {
                pending_sidecars += 1;
                unknown += 1;
            }
        }
    }
    for spec in containers {
        let Some(s) = regular.iter().find(|s| s.name == spec.name) else {
            unknown += 1;
            continue;
        };
        match state(s) {
            (true, _, _) => running += 1,
            (_, Some(t), _) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
                restarting |= container_should_restart(spec, policy, t.exit_code);
            }
            (_, _, true) => {
                if let Some(t) = last_terminated(s) {
                    stopped += 1;
                    restarting |= container_should_restart(spec, policy, t.exit_code);
                } else {
                    waiting += 1;
                }
            }
            _ => unknown += 1,
        }
    }
    if failed_init > 0 && policy == "Never" {
        return "Failed";
    }
    if pending_regular_init > 0 || (pending_sidecars > 0 && !has_initialized) {
        return "Pending";
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 && unknown == 0 {
        return "Running";
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        if pod_is_terminal && !crate::pod_workers::is_static_pod(pod) {
            return if stopped == succeeded {
                "Succeeded"
            } else {
                "Failed"
            };
        }
        // Upstream, with ContainerRestartRules: Running while a container is restarting (with
        // no container-level policies this is the pod's policy's rule), else Succeeded when
        // every container exited 0 and Failed otherwise.
        return if restarting {
            "Running"
        } else if stopped == succeeded {
            "Succeeded"
        } else {
            "Failed"
        };
    }
    "Pending"
}

/// Upstream's reason and message for a container the runtime no longer knows after it ran.
const STATUS_UNKNOWN_REASON: &str = "ContainerStatusUnknown";
const STATUS_UNKNOWN_MESSAGE: &str =
    "The container could not be located when the pod was terminated";

fn status_unknown() -> ApiContainerState {
    ApiContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: 137,
            reason: Some(STATUS_UNKNOWN_REASON.into()),
            message: Some(STATUS_UNKNOWN_MESSAGE.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What status generation needs besides the pod and the runtime: the previous status, and
/// whether the pod is terminated by the kubelet (its final status).
#[derive(Clone, Copy, Debug, Default)]
pub struct StatusContext<'a> {
    /// The pod's previous status.
    pub old: Option<&'a ApiPodStatus>,
    /// The final status of a pod whose containers the kubelet stopped (upstream
    /// `podIsTerminal`, then `TerminatePod`).
    pub terminal: bool,
    /// The probes, which decide the containers' `started` and `ready` (none: a running
    /// container is both).
    pub probes: Option<&'a crate::prober::ProbeManager>,
    /// A resize of the pod the node did not allocate (`PodResizePending`).
    pub resize_pending: Option<&'a crate::resize::Pending>,
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

/// The ContainersReady and Ready conditions from the container statuses (upstream
/// `GenerateContainersReadyCondition`, `GeneratePodReadyCondition`).
fn readiness_conditions(
    pod: &Pod,
    init: &[ApiContainerStatus],
    regular: &[ApiContainerStatus],
    phase: &str,
) -> (PodCondition, PodCondition) {
    let spec = pod.spec.as_ref();
    let init_specs = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default();
    let containers = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
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
    if ready.status == "True"
        && let Some(message) = readiness_gates_not_ready(pod)
    {
        ready = condition(
            "Ready",
            false,
            Some(reasons::READINESS_GATES_NOT_READY),
            Some(message),
        );
    }

    (containers_ready, ready)
}

/// Upstream's `SetContainerReadiness`: a readiness result that changed is written into the
/// pod's current status at once (the container's `ready`, then ContainersReady and Ready),
/// without waiting for the pod worker, which may be busy stopping the pod: readiness is
/// probed until the containers stop, and EndpointSlices' `serving` follows it. `ready_of`
/// gives a running container's readiness by its status. Whether anything changed.
pub fn refresh_readiness(
    pod: &Pod,
    status: &mut ApiPodStatus,
    ready_of: impl Fn(&ApiContainerStatus) -> Option<bool>,
) -> bool {
    let mut changed = false;
    let lists = [
        status.init_container_statuses.iter_mut().flatten(),
        status.container_statuses.iter_mut().flatten(),
    ];
    for s in lists.into_iter().flatten() {
        if let Some(ready) = ready_of(s)
            && s.ready != ready
        {
            s.ready = ready;
            changed = true;
        }
    }
    if !changed {
        return false;
    }
    let phase = status.phase.clone().unwrap_or_default();
    let (containers_ready, ready) = readiness_conditions(
        pod,
        status
            .init_container_statuses
            .as_deref()
            .unwrap_or_default(),
        status.container_statuses.as_deref().unwrap_or_default(),
        &phase,
    );
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    for mut new in [containers_ready, ready] {
        new.observed_generation = pod.metadata.generation;
        match conditions.iter_mut().find(|c| c.type_ == new.type_) {
            Some(c) => *c = new,
            None => conditions.push(new),
        }
    }
    true
}

/// Generates the API status of `pod` from its runtime status and the errors of its last sync
/// (container name -> error).
pub fn generate_pod_status(
    pod: &Pod,
    runtime: &PodStatus,
    errors: &HashMap<String, SyncError>,
    node_ips: &[String],
    ctx: StatusContext<'_>,
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
    let mut init: Vec<ApiContainerStatus> = init_specs
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
    let ephemeral: Vec<ApiContainerStatus> = spec
        .and_then(|s| s.ephemeral_containers.as_deref())
        .unwrap_or_default()
        .iter()
        .filter_map(crate::pod_manager::ephemeral_as_container)
        .map(|c| {
            container_status(
                &c,
                &statuses_of(&c.name),
                errors.get(&c.name),
                reasons::CONTAINER_CREATING,
                "Never",
                false,
            )
        })
        .collect();

    // A container the runtime no longer knows after it ran was not "never started": one that
    // had ended keeps its old status (a completed init container the runtime removed), one
    // that ran ended in an unknown state (upstream keeps run-once pods from running twice
    // that way).
    let old_status = |name: &str, init: bool| -> Option<&ApiContainerStatus> {
        let old = ctx.old?;
        let list = if init {
            old.init_container_statuses.as_deref()
        } else {
            old.container_statuses.as_deref()
        };
        list?.iter().find(|s| s.name == name)
    };
    for (list, is_init) in [(&mut init, true), (&mut regular, false)] {
        for status in list.iter_mut() {
            if runtime.containers_named(&status.name).next().is_some() {
                continue;
            }
            let Some(old) = old_status(&status.name, is_init) else {
                continue;
            };
            let state = old.state.as_ref();
            if state.is_some_and(|st| st.terminated.is_some()) {
                *status = old.clone();
            } else if state.is_some_and(|st| st.running.is_some()) {
                status.state = Some(status_unknown());
                status.restart_count = old.restart_count.saturating_add(1);
                status.ready = false;
                status.started = Some(false);
            }
        }
    }
    if let Some(probes) = ctx.probes {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        probes.update_container_statuses(uid, &mut regular);
        probes.update_container_statuses(uid, &mut init);
    }
    let has_initialized = runtime
        .containers
        .iter()
        .any(|c| c.state == ContainerState::Running && containers.iter().any(|s| s.name == c.name));
    if ctx.terminal {
        // Upstream's TerminatePod: once the pod initialized, a container without a final
        // state ended in an unknown one; so did started init containers.
        let initialized = has_initialized
            || regular.iter().any(|s| {
                s.state.as_ref().is_some_and(|st| st.waiting.is_none()) || s.last_state.is_some()
            });
        let mark = |s: &mut ApiContainerStatus| {
            if s.state.as_ref().is_none_or(|st| st.terminated.is_none()) {
                s.state = Some(status_unknown());
                s.ready = false;
                s.started = Some(false);
            }
        };
        if initialized {
            regular.iter_mut().for_each(mark);
        }
        init.iter_mut()
            .filter(|s| {
                s.state.as_ref().is_some_and(|st| st.running.is_some()) || s.last_state.is_some()
            })
            .for_each(mark);
    }

    let mut phase = phase(pod, &init, &regular, ctx.terminal, has_initialized);
    if ctx.terminal
        && !crate::pod_workers::is_static_pod(pod)
        && !matches!(phase, "Succeeded" | "Failed")
    {
        phase = "Failed";
    }

    let (containers_ready, ready) = readiness_conditions(pod, &init, &regular, phase);

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
    let generation = pod.metadata.generation;
    let mut conditions = vec![
        condition("PodReadyToStartContainers", sandbox_ready, None, None),
        initialized,
        ready,
        containers_ready,
        condition("PodScheduled", true, None, None),
    ];
    for c in &mut conditions {
        c.observed_generation = generation;
    }
    if !ctx.terminal {
        let regular_specs: Vec<&Container> = containers.iter().collect();
        let sidecars: Vec<&Container> = init_specs.iter().filter(|c| is_sidecar(c)).collect();
        let in_progress = resize::fill(&regular_specs, runtime, &mut regular)
            | resize::fill(&sidecars, runtime, &mut init);
        let failed = errors.values().find(|e| e.reason == resize::RESIZE_ERROR);
        resize::conditions(
            ctx.resize_pending,
            in_progress,
            failed,
            &mut conditions,
            generation,
        );
    }

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
        observed_generation: generation,
        init_container_statuses: (!init.is_empty()).then_some(init),
        container_statuses: Some(regular),
        ephemeral_container_statuses: (!ephemeral.is_empty()).then_some(ephemeral),
        ..Default::default()
    }
}

/// A pod the kubelet itself ends (eviction, preemption): phase `Failed` with `reason` and
/// `message`, and with `disruption` a `DisruptionTarget` condition (reason
/// `TerminationByKubelet`, the same message) replacing any earlier one.
pub fn fail_by_kubelet(status: &mut ApiPodStatus, reason: &str, message: &str, disruption: bool) {
    status.phase = Some("Failed".into());
    status.reason = Some(reason.into());
    status.message = Some(message.into());
    if !disruption {
        return;
    }
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    conditions.retain(|c| c.type_ != "DisruptionTarget");
    conditions.push(PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        reason: Some("TerminationByKubelet".into()),
        message: Some(message.into()),
        last_transition_time: Some(Time(Timestamp::now())),
        ..Default::default()
    });
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
    /// Woken when a status changes (the API status sync waits on it).
    changed: tokio::sync::Notify,
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
        if let Some(old) = old.filter(|o| is_terminal(o)) {
            if status.phase != old.phase {
                status.phase = old.phase.clone();
            }
            // Why it ended (DeadlineExceeded, Evicted) stays with the terminal phase.
            if status.reason.is_none() {
                status.reason = old.reason.clone();
                status.message = old.message.clone();
            }
        }
        // The pod's IPs stay once its sandbox is gone (a stopped pod keeps its podIP).
        if status.pod_ips.is_none()
            && let Some(old) = old
        {
            status.pod_ip = old.pod_ip.clone();
            status.pod_ips = old.pod_ips.clone();
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
        let changed = map.get(uid) != Some(&status);
        map.insert(uid.to_string(), status);
        drop(map);
        if changed {
            self.changed.notify_one();
        }
    }

    /// Completes when a status changed since the last call (or at once if one did).
    pub async fn changed(&self) {
        self.changed.notified().await;
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

mod resize;
#[cfg(test)]
mod tests;
