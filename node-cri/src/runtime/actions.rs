//! What a pod sync must do, computed from the spec and the runtime status (upstream
//! `computePodActions`): a pure function, so every rule is unit-tested without a runtime.

use k8s_openapi::api::core::v1::{Container, Pod};
use node_core::runtime::{
    ContainerId, ContainerState, ContainerStatus, NamespaceMode, PodStatus, SandboxState,
};

use node_core::prober::{ProbeType, ProbeVerdicts};

use super::container::{ContainerKind, container_resources};
use super::labels::hash_container;
use super::sandbox::NodeContext;

/// A running container to stop, and why (the Killing event's message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ContainerToKill {
    pub(crate) id: ContainerId,
    pub(crate) name: String,
    pub(crate) message: String,
    /// The probe's own `terminationGracePeriodSeconds` (a failed liveness or startup probe).
    pub(crate) grace_override: Option<i64>,
    /// Killed for failing a probe: its end counts as a failure for the restart back-off.
    pub(crate) failure: bool,
}

/// The actions of one sync.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PodActions {
    /// Stop every container and sandbox of the pod first.
    pub(crate) kill_pod: bool,
    /// Create a new sandbox (after killing the pod).
    pub(crate) create_sandbox: bool,
    /// The current sandbox (when one is kept), or the one being replaced.
    pub(crate) sandbox_id: Option<String>,
    /// The attempt number of the sandbox to create or keep.
    pub(crate) attempt: u32,
    /// Indexes into `spec.initContainers` to start, in order.
    pub(crate) init_containers_to_start: Vec<usize>,
    /// Indexes into `spec.containers` to start.
    pub(crate) containers_to_start: Vec<usize>,
    /// Indexes into `spec.ephemeralContainers` to start (those that never ran: they are never
    /// restarted).
    pub(crate) ephemeral_containers_to_start: Vec<usize>,
    /// Running containers to stop.
    pub(crate) containers_to_kill: Vec<ContainerToKill>,
    /// Running containers to resize in place (an index into `spec.containers`, the resources
    /// to apply, and whether any of them shrinks).
    pub(crate) containers_to_update: Vec<ContainerUpdate>,
}

/// A running container's in-place resize.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ContainerUpdate {
    /// The container's name (a regular container or a sidecar).
    pub(crate) name: String,
    pub(crate) id: ContainerId,
    pub(crate) resources: crate::cri::LinuxContainerResources,
    /// A limit or request goes down: the container shrinks before its pod's cgroup does.
    pub(crate) shrinks: bool,
}

impl Eq for ContainerUpdate {}

/// What a running container's resize needs (upstream `computePodResizeAction`): nothing when
/// the runtime applied what the (allocated) spec says or does not say what it applied; a
/// restart when a changed resource's `resizePolicy` is `RestartContainer`; otherwise an
/// update of its resources.
fn resize_action(
    pod: &Pod,
    container: &Container,
    kind: ContainerKind,
    status: &ContainerStatus,
    ctx: &NodeContext,
) -> Option<Result<ContainerUpdate, ContainerToKill>> {
    let actual = status.resources?;
    let desired = container_resources(pod, container, kind, ctx);
    let quota = |q: i64| if q <= 0 { 0 } else { q };
    let cpu_changed = desired.cpu_shares != actual.cpu_shares
        || quota(desired.cpu_quota) != quota(actual.cpu_quota);
    let memory_changed = desired.memory_limit_in_bytes != actual.memory_limit;
    if !cpu_changed && !memory_changed {
        return None;
    }
    let restart = |resource: &str| {
        container
            .resize_policy
            .iter()
            .flatten()
            .any(|p| p.resource_name == resource && p.restart_policy == "RestartContainer")
    };
    if (cpu_changed && restart("cpu")) || (memory_changed && restart("memory")) {
        let what = if kind == ContainerKind::Sidecar {
            "Init container"
        } else {
            "Container"
        };
        return Some(Err(kill_first(
            status,
            format!("{what} {} resize requires restart", container.name),
        )));
    }
    let unlimited = |v: i64| if v <= 0 { i64::MAX } else { v };
    let shrinks = desired.cpu_shares < actual.cpu_shares
        || unlimited(quota(desired.cpu_quota)) < unlimited(quota(actual.cpu_quota))
        || unlimited(desired.memory_limit_in_bytes) < unlimited(actual.memory_limit);
    Some(Ok(ContainerUpdate {
        name: container.name.clone(),
        id: status.id.clone(),
        resources: desired,
        shrinks,
    }))
}

use node_core::pod_manager::{container_should_restart, restart_policy};

pub(crate) fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

pub(crate) use node_core::pod_manager::is_sidecar;

/// Upstream `PodSandboxChanged`: whether a (new) sandbox is needed, its attempt, and the id of
/// the current one.
pub(crate) fn sandbox_changed(pod: &Pod, status: &PodStatus) -> (bool, u32, Option<String>) {
    let Some(latest) = status.sandboxes.first() else {
        return (true, 0, None);
    };
    let ready = status
        .sandboxes
        .iter()
        .filter(|s| s.state == SandboxState::Ready)
        .count();
    let next = latest.attempt + 1;
    if ready > 1 || latest.state != SandboxState::Ready {
        return (true, next, Some(latest.id.clone()));
    }
    let wanted = if host_network(pod) {
        NamespaceMode::Node
    } else {
        NamespaceMode::Pod
    };
    if latest.network_mode != wanted {
        return (true, next, None);
    }
    if !host_network(pod) && latest.ips.is_empty() {
        return (true, next, Some(latest.id.clone()));
    }
    (false, latest.attempt, Some(latest.id.clone()))
}

/// Upstream `ShouldContainerBeRestarted` for a container that is not running: never once
/// the pod is being deleted; a container that never ran, or was left created or unknown,
/// starts; an exited one as its restart policy and rules say
/// ([`container_should_restart`]).
pub(crate) fn should_restart(
    pod: &Pod,
    container: &Container,
    status: Option<&ContainerStatus>,
) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let Some(status) = status else {
        return true;
    };
    match status.state {
        ContainerState::Running => false,
        ContainerState::Unknown | ContainerState::Created => true,
        ContainerState::Exited => {
            container_should_restart(container, restart_policy(pod), status.exit_code)
        }
    }
}

/// Whether a container killed while running (a failed probe) is started again: its own
/// restart policy, else the pod's, unless that is Never (upstream: restart rules are not
/// consulted, there is no exit code yet).
fn restart_after_kill(pod: &Pod, container: &Container) -> bool {
    container
        .restart_policy
        .as_deref()
        .unwrap_or(restart_policy(pod))
        != "Never"
}

fn kill_first(status: &ContainerStatus, message: String) -> ContainerToKill {
    ContainerToKill {
        id: status.id.clone(),
        name: status.name.clone(),
        message,
        grace_override: None,
        failure: false,
    }
}

/// Upstream `computePodActions`.
#[cfg(test)]
pub(crate) fn compute_pod_actions(pod: &Pod, status: &PodStatus) -> PodActions {
    compute_pod_actions_with(pod, status, None, None)
}

/// A running container that failed its liveness or startup probe: killed, and restarted
/// unless the pod's restart policy is Never (upstream's messages).
fn probe_kill(
    pod: &Pod,
    container: &Container,
    status: &ContainerStatus,
    probes: Option<&dyn ProbeVerdicts>,
) -> Option<(ContainerToKill, bool)> {
    let kind = probes?.failed(&status.id.to_string())?;
    let (what, probe) = match kind {
        ProbeType::Startup => ("startup", container.startup_probe.as_ref()),
        _ => ("liveness", container.liveness_probe.as_ref()),
    };
    let restart = restart_after_kill(pod, container);
    let mut message = format!("Container {} failed {what} probe", container.name);
    if restart {
        message.push_str(", will be restarted");
    }
    Some((
        ContainerToKill {
            grace_override: probe.and_then(|p| p.termination_grace_period_seconds),
            failure: true,
            ..kill_first(status, message)
        },
        restart,
    ))
}

/// Upstream `computePodActions`, with the probes' verdicts on running containers.
pub(crate) fn compute_pod_actions_with(
    pod: &Pod,
    status: &PodStatus,
    probes: Option<&dyn ProbeVerdicts>,
    node: Option<&NodeContext>,
) -> PodActions {
    let spec = pod.spec.clone().unwrap_or_default();
    let init_containers = spec.init_containers.unwrap_or_default();
    let containers = spec.containers;
    let (create_sandbox, attempt, sandbox_id) = sandbox_changed(pod, status);
    let mut actions = PodActions {
        kill_pod: create_sandbox,
        create_sandbox,
        sandbox_id,
        attempt,
        ..Default::default()
    };

    if create_sandbox {
        // A pod that must not restart, whose sandbox died after it ran: only kill it.
        if restart_policy(pod) == "Never" && attempt != 0 && !status.containers.is_empty() {
            actions.create_sandbox = false;
            return actions;
        }
        // Containers that ended for good stay ended: those that succeeded in an OnFailure
        // pod, and those whose own restart policy (and rules) say no.
        let to_start: Vec<usize> = containers
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                let exited = status
                    .container(&c.name)
                    .filter(|s| s.state == ContainerState::Exited);
                match exited {
                    None => true,
                    Some(s) if c.restart_policy.is_some() => {
                        container_should_restart(c, restart_policy(pod), s.exit_code)
                    }
                    Some(s) => !(restart_policy(pod) == "OnFailure" && s.exit_code == 0),
                }
            })
            .map(|(i, _)| i)
            .collect();
        if to_start.is_empty() && init_done(&init_containers, &containers, status) {
            actions.create_sandbox = false;
            return actions;
        }
        if !init_containers.is_empty() {
            actions.init_containers_to_start = vec![0];
            return actions;
        }
        actions.containers_to_start = to_start;
        return actions;
    }

    // Ephemeral containers start even while the pod initializes; never twice.
    actions.ephemeral_containers_to_start = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .enumerate()
        .filter(|(_, e)| status.container(&e.name).is_none())
        .map(|(i, _)| i)
        .collect();

    // Initialization (upstream `computeInitContainerActions`); the regular containers are
    // looked at only once the pod initialized.
    let initialized = compute_init_actions(
        pod,
        &init_containers,
        &containers,
        status,
        (probes, node),
        &mut actions,
    );
    if actions.kill_pod || !initialized {
        return actions;
    }

    let mut keep = 0;
    for (i, container) in containers.iter().enumerate() {
        let current = status.container(&container.name);
        match current {
            Some(s) if s.state == ContainerState::Running => {
                if s.hash.is_some_and(|h| h != hash_container(container)) {
                    actions.containers_to_kill.push(kill_first(
                        s,
                        format!(
                            "Container {} definition changed, will be restarted",
                            container.name
                        ),
                    ));
                    actions.containers_to_start.push(i);
                } else if let Some((kill, restart)) = probe_kill(pod, container, s, probes) {
                    actions.containers_to_kill.push(kill);
                    if restart {
                        actions.containers_to_start.push(i);
                    }
                } else {
                    let kind = ContainerKind::Regular;
                    match node.and_then(|ctx| resize_action(pod, container, kind, s, ctx)) {
                        Some(Err(kill)) => {
                            actions.containers_to_kill.push(kill);
                            actions.containers_to_start.push(i);
                        }
                        Some(Ok(update)) => {
                            actions.containers_to_update.push(update);
                            keep += 1;
                        }
                        None => keep += 1,
                    }
                }
            }
            _ => {
                if should_restart(pod, container, current) {
                    if let Some(s) = current.filter(|s| s.state == ContainerState::Unknown) {
                        actions.containers_to_kill.push(kill_first(
                            s,
                            format!(
                                "Container {} is in \"unknown\" state, try killing it before restart",
                                container.name
                            ),
                        ));
                    }
                    actions.containers_to_start.push(i);
                }
            }
        }
    }
    if keep == 0 && actions.containers_to_start.is_empty() {
        actions.kill_pod = true;
        actions.init_containers_to_start.clear();
    }
    actions
}

/// Upstream `computeInitContainerActions`: the init containers are walked from the last,
/// so that a completed init container the runtime no longer has (garbage-collected) is not
/// run again once a later one ran. Fills `actions.init_containers_to_start` (in spec order)
/// and the kills; returns whether the pod has initialized (a regular container was created
/// or runs, or the last init container is done or, as a sidecar, started).
fn compute_init_actions(
    pod: &Pod,
    init_containers: &[Container],
    containers: &[Container],
    status: &PodStatus,
    (probes, node): (Option<&dyn ProbeVerdicts>, Option<&NodeContext>),
    actions: &mut PodActions,
) -> bool {
    if init_containers.is_empty() {
        return true;
    }
    let mut initialized = regular_started(containers, status);
    // Whether an init container after the current one (in spec order) ran.
    let mut previously = initialized;
    let last = init_containers.len() - 1;
    let mut to_start = Vec::new();
    let unknown = |name: &str| {
        format!("Init container {name} is in \"unknown\" state, try killing it before restart")
    };
    for (i, init) in init_containers.iter().enumerate().rev() {
        let sidecar = is_sidecar(init);
        let Some(current) = status.container(&init.name) else {
            // Its instances are gone: a sidecar of an initialized pod starts again, a
            // completed init container does not.
            if previously && sidecar {
                to_start.push(i);
            }
            continue;
        };
        if previously && !sidecar {
            continue;
        }
        let id = current.id.to_string();
        match current.state {
            // Created but never started (a failed start): start it again.
            ContainerState::Created => to_start.push(i),
            ContainerState::Running if !sidecar => {}
            ContainerState::Running => 'sidecar: {
                let verdict = probes.and_then(|p| p.failed(&id));
                if init.startup_probe.is_some() {
                    if verdict == Some(ProbeType::Startup) {
                        actions
                            .containers_to_kill
                            .push(probe_kill_init(init, current, "startup"));
                        to_start.push(i);
                        break 'sidecar;
                    }
                    // Until its startup probe succeeded the next init container waits.
                    if probes.is_some_and(|p| !p.startup_succeeded(&id)) {
                        break 'sidecar;
                    }
                }
                if i == last {
                    initialized = true;
                } else if !previously {
                    to_start.push(i + 1);
                }
                if current.hash.is_some_and(|h| h != hash_container(init)) {
                    actions.containers_to_kill.push(kill_first(
                        current,
                        format!("Init container {} definition changed", init.name),
                    ));
                    to_start.push(i);
                    break 'sidecar;
                }
                if verdict == Some(ProbeType::Liveness) {
                    actions
                        .containers_to_kill
                        .push(probe_kill_init(init, current, "liveness"));
                    to_start.push(i);
                    break 'sidecar;
                }
                // Sidecars are resized in place too.
                let kind = ContainerKind::Sidecar;
                match node.and_then(|ctx| resize_action(pod, init, kind, current, ctx)) {
                    Some(Err(kill)) => {
                        actions.containers_to_kill.push(kill);
                        to_start.push(i);
                    }
                    Some(Ok(update)) => actions.containers_to_update.push(update),
                    None => {}
                }
            }
            ContainerState::Exited if sidecar => {
                if pod.metadata.deletion_timestamp.is_none() {
                    to_start.push(i);
                }
            }
            ContainerState::Exited if current.exit_code != 0 => {
                if !container_should_restart(init, restart_policy(pod), current.exit_code) {
                    actions.kill_pod = true;
                    actions.init_containers_to_start.clear();
                    return false;
                }
                to_start.push(i);
            }
            ContainerState::Exited => {
                if i == last {
                    initialized = true;
                } else {
                    to_start.push(i + 1);
                }
            }
            ContainerState::Unknown => {
                if !sidecar && !container_should_restart(init, restart_policy(pod), 1) {
                    actions.kill_pod = true;
                    actions.init_containers_to_start.clear();
                    return false;
                }
                actions
                    .containers_to_kill
                    .push(kill_first(current, unknown(&init.name)));
                to_start.push(i);
            }
        }
        previously = true;
    }
    if !previously {
        to_start.push(0);
    }
    to_start.reverse();
    to_start.dedup();
    actions.init_containers_to_start = to_start;
    initialized
}

/// A sidecar that failed its liveness or startup probe: killed and started again (upstream's
/// messages).
fn probe_kill_init(init: &Container, status: &ContainerStatus, what: &str) -> ContainerToKill {
    let probe = match what {
        "startup" => init.startup_probe.as_ref(),
        _ => init.liveness_probe.as_ref(),
    };
    ContainerToKill {
        grace_override: probe.and_then(|p| p.termination_grace_period_seconds),
        failure: true,
        ..kill_first(
            status,
            format!("Init container {} failed {what} probe", init.name),
        )
    }
}

/// Whether a regular container of this pod is created or running.
fn regular_started(containers: &[Container], status: &PodStatus) -> bool {
    containers.iter().any(|c| {
        status
            .container(&c.name)
            .is_some_and(|s| matches!(s.state, ContainerState::Created | ContainerState::Running))
    })
}

/// Whether every regular init container succeeded (or regular containers already run).
fn init_done(init_containers: &[Container], containers: &[Container], status: &PodStatus) -> bool {
    regular_started(containers, status)
        || init_containers.iter().filter(|c| !is_sidecar(c)).all(|c| {
            status
                .container(&c.name)
                .is_some_and(|s| s.state == ContainerState::Exited && s.exit_code == 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use node_core::runtime::SandboxStatus;

    fn container(name: &str) -> Container {
        Container {
            name: name.into(),
            image: Some("busybox".into()),
            ..Default::default()
        }
    }

    fn pod(policy: &str, init: Vec<Container>, containers: Vec<Container>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                restart_policy: Some(policy.into()),
                init_containers: (!init.is_empty()).then_some(init),
                containers,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn sandbox(id: &str, state: SandboxState, attempt: u32) -> SandboxStatus {
        SandboxStatus {
            id: id.into(),
            state,
            attempt,
            created_at: None,
            ips: vec!["10.88.0.2".into()],
            network_mode: NamespaceMode::Pod,
        }
    }

    fn status_of(c: &Container, state: ContainerState, exit: i32) -> ContainerStatus {
        ContainerStatus {
            id: ContainerId {
                runtime: "containerd".into(),
                id: format!("id-{}", c.name),
            },
            name: c.name.clone(),
            state,
            created_at: None,
            started_at: None,
            finished_at: None,
            exit_code: exit,
            image: String::new(),
            image_ref: String::new(),
            hash: Some(hash_container(c)),
            restart_count: 0,
            reason: String::new(),
            message: String::new(),
            log_path: String::new(),
            user: None,
            resources: None,
        }
    }

    fn ready(containers: Vec<ContainerStatus>) -> PodStatus {
        PodStatus {
            sandboxes: vec![sandbox("sb1", SandboxState::Ready, 0)],
            containers,
            ..Default::default()
        }
    }

    #[test]
    fn a_new_pod_gets_a_sandbox_and_all_containers() {
        let p = pod("Always", vec![], vec![container("a"), container("b")]);
        let a = compute_pod_actions(&p, &PodStatus::default());
        assert!(a.create_sandbox && a.kill_pod);
        assert_eq!(a.attempt, 0);
        assert_eq!(a.containers_to_start, [0, 1]);
    }

    #[test]
    fn an_ephemeral_container_starts_once_in_a_running_pod_and_never_again() {
        let c = container("a");
        let mut p = pod("Always", vec![], vec![c.clone()]);
        p.spec.as_mut().unwrap().ephemeral_containers =
            Some(vec![k8s_openapi::api::core::v1::EphemeralContainer {
                name: "debug".into(),
                image: Some("busybox".into()),
                target_container_name: Some("a".into()),
                ..Default::default()
            }]);
        let running = ready(vec![status_of(&c, ContainerState::Running, 0)]);
        let a = compute_pod_actions(&p, &running);
        assert_eq!(a.ephemeral_containers_to_start, [0]);
        assert!(!a.kill_pod && a.containers_to_start.is_empty());
        // Once it ran (even exited), it is never started again.
        let debug = node_core::pod_manager::ephemeral_as_container(
            &p.spec
                .as_ref()
                .unwrap()
                .ephemeral_containers
                .as_ref()
                .unwrap()[0],
        )
        .unwrap();
        assert_eq!(debug.name, "debug");
        let ran = ready(vec![
            status_of(&c, ContainerState::Running, 0),
            status_of(&debug, ContainerState::Exited, 1),
        ]);
        assert!(
            compute_pod_actions(&p, &ran)
                .ephemeral_containers_to_start
                .is_empty()
        );
    }

    /// Verdicts the test sets by container ID.
    struct Verdicts(Vec<(String, ProbeType)>);

    impl ProbeVerdicts for Verdicts {
        fn failed(&self, id: &str) -> Option<ProbeType> {
            self.0.iter().find(|(c, _)| c == id).map(|(_, k)| *k)
        }
        fn startup_succeeded(&self, _: &str) -> bool {
            true
        }
    }

    /// Nothing failed; the startup probes of the containers listed have not succeeded yet.
    struct Starting(Vec<String>);

    impl ProbeVerdicts for Starting {
        fn failed(&self, _: &str) -> Option<ProbeType> {
            None
        }
        fn startup_succeeded(&self, id: &str) -> bool {
            !self.0.iter().any(|c| c == id)
        }
    }

    #[test]
    fn a_sidecar_with_a_startup_probe_holds_the_next_init_container_until_it_started() {
        let mut side = container("side");
        side.restart_policy = Some("Always".into());
        side.startup_probe = Some(k8s_openapi::api::core::v1::Probe::default());
        let setup = container("setup");
        let app = container("app");
        let p = pod("Always", vec![side.clone(), setup], vec![app]);
        let s = ready(vec![status_of(&side, ContainerState::Running, 0)]);
        // Its startup probe has not succeeded yet.
        let pending = Starting(vec!["containerd://id-side".into()]);
        let a = compute_pod_actions_with(&p, &s, Some(&pending), None);
        assert!(a.init_containers_to_start.is_empty(), "{a:?}");
        assert!(a.containers_to_start.is_empty());
        // Started: the next init container goes.
        let started = Starting(vec![]);
        let a = compute_pod_actions_with(&p, &s, Some(&started), None);
        assert_eq!(a.init_containers_to_start, [1]);
    }

    #[test]
    fn a_container_that_failed_liveness_or_startup_is_killed_and_restarted_per_policy() {
        let mut web = container("web");
        web.liveness_probe = Some(k8s_openapi::api::core::v1::Probe {
            termination_grace_period_seconds: Some(7),
            ..Default::default()
        });
        let other = container("other");
        let p = pod("Always", vec![], vec![web.clone(), other.clone()]);
        let s = ready(vec![
            status_of(&web, ContainerState::Running, 0),
            status_of(&other, ContainerState::Running, 0),
        ]);
        let verdicts = Verdicts(vec![("containerd://id-web".into(), ProbeType::Liveness)]);
        let a = compute_pod_actions_with(&p, &s, Some(&verdicts), None);
        assert_eq!(a.containers_to_kill.len(), 1);
        let kill = &a.containers_to_kill[0];
        assert_eq!(
            kill.message,
            "Container web failed liveness probe, will be restarted"
        );
        assert_eq!(kill.grace_override, Some(7), "the probe's own grace period");
        assert!(kill.failure, "counts for the back-off");
        assert_eq!(a.containers_to_start, [0]);
        assert!(!a.kill_pod);
        // Without verdicts nothing happens.
        assert!(compute_pod_actions(&p, &s).containers_to_kill.is_empty());

        // Never: killed, not restarted; with no other container left, the pod is done.
        let p = pod("Never", vec![], vec![web.clone()]);
        let s = ready(vec![status_of(&web, ContainerState::Running, 0)]);
        let verdicts = Verdicts(vec![("containerd://id-web".into(), ProbeType::Startup)]);
        let a = compute_pod_actions_with(&p, &s, Some(&verdicts), None);
        assert_eq!(
            a.containers_to_kill[0].message,
            "Container web failed startup probe"
        );
        assert!(a.containers_to_start.is_empty());
        assert!(a.kill_pod);
    }

    #[test]
    fn a_dead_sandbox_is_recreated_with_the_next_attempt() {
        let p = pod("Always", vec![], vec![container("a")]);
        let mut s = ready(vec![]);
        s.sandboxes[0].state = SandboxState::NotReady;
        s.sandboxes[0].attempt = 2;
        let a = compute_pod_actions(&p, &s);
        assert!(a.create_sandbox);
        assert_eq!(a.attempt, 3);
        assert_eq!(a.sandbox_id.as_deref(), Some("sb1"));
    }

    #[test]
    fn a_never_pod_whose_sandbox_died_is_only_killed() {
        let c = container("a");
        let p = pod("Never", vec![], vec![c.clone()]);
        let mut s = ready(vec![status_of(&c, ContainerState::Exited, 0)]);
        s.sandboxes[0].state = SandboxState::NotReady;
        let a = compute_pod_actions(&p, &s);
        assert!(a.kill_pod);
        assert!(!a.create_sandbox);
    }

    #[test]
    fn running_containers_are_kept_and_missing_ones_started() {
        let (a_c, b_c) = (container("a"), container("b"));
        let p = pod("Always", vec![], vec![a_c.clone(), b_c]);
        let a = compute_pod_actions(
            &p,
            &ready(vec![status_of(&a_c, ContainerState::Running, 0)]),
        );
        assert!(!a.kill_pod && !a.create_sandbox);
        assert_eq!(a.containers_to_start, [1]);
        assert!(a.containers_to_kill.is_empty());
    }

    #[test]
    fn a_changed_spec_hash_kills_and_restarts_the_container() {
        let old = container("a");
        let mut new = old.clone();
        new.image = Some("busybox:other".into());
        let p = pod("Never", vec![], vec![new]);
        let a = compute_pod_actions(
            &p,
            &ready(vec![status_of(&old, ContainerState::Running, 0)]),
        );
        assert_eq!(a.containers_to_start, [0]);
        assert_eq!(a.containers_to_kill.len(), 1);
        assert_eq!(
            a.containers_to_kill[0].message,
            "Container a definition changed, will be restarted"
        );
    }

    #[test]
    fn restart_policies_decide_on_exited_containers() {
        let c = container("a");
        for (policy, exit, restart) in [
            ("Always", 0, true),
            ("Always", 1, true),
            ("OnFailure", 0, false),
            ("OnFailure", 1, true),
            ("Never", 0, false),
            ("Never", 1, false),
        ] {
            let p = pod(policy, vec![], vec![c.clone()]);
            let a = compute_pod_actions(
                &p,
                &ready(vec![status_of(&c, ContainerState::Exited, exit)]),
            );
            assert_eq!(
                !a.containers_to_start.is_empty(),
                restart,
                "{policy} exit {exit}"
            );
            // Nothing left to run or keep: the pod is finished and its sandbox stopped.
            assert_eq!(a.kill_pod, !restart, "{policy} exit {exit}");
        }
    }

    #[test]
    fn init_containers_run_one_at_a_time_before_app_containers() {
        let (i1, i2, app) = (container("i1"), container("i2"), container("app"));
        let p = pod("Always", vec![i1.clone(), i2.clone()], vec![app]);
        // New pod: sandbox, then only the first init container.
        let a = compute_pod_actions(&p, &PodStatus::default());
        assert_eq!(a.init_containers_to_start, [0]);
        assert!(a.containers_to_start.is_empty());
        // First running: wait.
        let a = compute_pod_actions(&p, &ready(vec![status_of(&i1, ContainerState::Running, 0)]));
        assert!(a.init_containers_to_start.is_empty() && a.containers_to_start.is_empty());
        assert!(!a.kill_pod);
        // First done: second.
        let a = compute_pod_actions(&p, &ready(vec![status_of(&i1, ContainerState::Exited, 0)]));
        assert_eq!(a.init_containers_to_start, [1]);
        // Both done: the app container.
        let a = compute_pod_actions(
            &p,
            &ready(vec![
                status_of(&i2, ContainerState::Exited, 0),
                status_of(&i1, ContainerState::Exited, 0),
            ]),
        );
        assert_eq!(a.containers_to_start, [0]);
    }

    #[test]
    fn a_failed_init_container_is_retried_or_fails_the_pod() {
        let (i1, app) = (container("i1"), container("app"));
        let failed = ready(vec![status_of(&i1, ContainerState::Exited, 2)]);
        let a = compute_pod_actions(&pod("Always", vec![i1.clone()], vec![app.clone()]), &failed);
        assert_eq!(a.init_containers_to_start, [0]);
        let a = compute_pod_actions(&pod("Never", vec![i1], vec![app]), &failed);
        assert!(a.kill_pod);
        assert!(a.init_containers_to_start.is_empty());
    }

    #[test]
    fn sidecars_start_in_order_and_are_kept_running() {
        let mut side = container("side");
        side.restart_policy = Some("Always".into());
        let (i1, app) = (container("i1"), container("app"));
        let p = pod("Always", vec![side.clone(), i1.clone()], vec![app.clone()]);
        let a = compute_pod_actions(&p, &ready(vec![]));
        assert_eq!(a.init_containers_to_start, [0]);
        let a = compute_pod_actions(
            &p,
            &ready(vec![status_of(&side, ContainerState::Running, 0)]),
        );
        assert_eq!(a.init_containers_to_start, [1]);
        // A sidecar that exits after the app started is restarted; the app is kept.
        let a = compute_pod_actions(
            &p,
            &ready(vec![
                status_of(&app, ContainerState::Running, 0),
                status_of(&i1, ContainerState::Exited, 0),
                status_of(&side, ContainerState::Exited, 1),
            ]),
        );
        assert_eq!(a.init_containers_to_start, [0]);
        assert!(a.containers_to_start.is_empty() && !a.kill_pod);
    }

    #[test]
    fn a_garbage_collected_init_container_is_not_run_again() {
        let (i1, i2, app) = (container("i1"), container("i2"), container("app"));
        let p = pod("Always", vec![i1.clone(), i2.clone()], vec![app.clone()]);
        // i1's instance is gone, i2 completed: initialization is over, the app starts.
        let a = compute_pod_actions(&p, &ready(vec![status_of(&i2, ContainerState::Exited, 0)]));
        assert!(a.init_containers_to_start.is_empty(), "{a:?}");
        assert_eq!(a.containers_to_start, [0]);
        // i1 completed and i2 never ran: i2 is next.
        let a = compute_pod_actions(&p, &ready(vec![status_of(&i1, ContainerState::Exited, 0)]));
        assert_eq!(a.init_containers_to_start, [1]);
        assert!(a.containers_to_start.is_empty());
        // Nothing ran yet: the first.
        let a = compute_pod_actions(&p, &ready(vec![]));
        assert_eq!(a.init_containers_to_start, [0]);
    }

    #[test]
    fn a_running_sidecar_whose_spec_changed_is_restarted() {
        let mut side = container("side");
        side.restart_policy = Some("Always".into());
        let app = container("app");
        let p = pod("Always", vec![side.clone()], vec![app.clone()]);
        let mut old = status_of(&side, ContainerState::Running, 0);
        old.hash = Some(hash_container(&side) ^ 1);
        let a = compute_pod_actions(
            &p,
            &ready(vec![status_of(&app, ContainerState::Running, 0), old]),
        );
        assert_eq!(a.containers_to_kill.len(), 1);
        assert_eq!(
            a.containers_to_kill[0].message,
            "Init container side definition changed"
        );
        assert_eq!(a.init_containers_to_start, [0]);
        assert!(a.containers_to_start.is_empty() && !a.kill_pod);
    }

    #[test]
    fn a_missing_sidecar_does_not_hold_back_the_regular_containers() {
        let mut side = container("side");
        side.restart_policy = Some("Always".into());
        let (app, job) = (container("app"), container("job"));
        let p = pod("Always", vec![side.clone()], vec![app.clone(), job.clone()]);
        let a = compute_pod_actions(
            &p,
            &ready(vec![
                status_of(&app, ContainerState::Running, 0),
                status_of(&job, ContainerState::Exited, 1),
            ]),
        );
        assert_eq!(a.init_containers_to_start, [0]);
        assert_eq!(
            a.containers_to_start,
            [1],
            "the exited regular container restarts too"
        );
    }

    #[test]
    fn container_restart_policies_and_rules_decide_for_their_container() {
        use k8s_openapi::api::core::v1::{ContainerRestartRule, ContainerRestartRuleOnExitCodes};
        let mut once = container("once");
        once.restart_policy = Some("Never".into());
        let mut retried = container("retried");
        retried.restart_policy = Some("Never".into());
        retried.restart_policy_rules = Some(vec![ContainerRestartRule {
            action: "Restart".into(),
            exit_codes: Some(ContainerRestartRuleOnExitCodes {
                operator: "In".into(),
                values: Some(vec![42]),
            }),
        }]);
        let server = container("server");
        let p = pod(
            "Always",
            vec![],
            vec![once.clone(), retried.clone(), server.clone()],
        );
        let a = compute_pod_actions(
            &p,
            &ready(vec![
                status_of(&once, ContainerState::Exited, 1),
                status_of(&retried, ContainerState::Exited, 42),
                status_of(&server, ContainerState::Running, 0),
            ]),
        );
        assert_eq!(
            a.containers_to_start,
            [1],
            "Never stays down, the rule restarts exit 42"
        );
        let a = compute_pod_actions(
            &p,
            &ready(vec![
                status_of(&once, ContainerState::Exited, 0),
                status_of(&retried, ContainerState::Exited, 3),
                status_of(&server, ContainerState::Exited, 0),
            ]),
        );
        assert_eq!(
            a.containers_to_start,
            [2],
            "the pod's Always for the one without"
        );
        // An OnFailure container in a Never pod is retried after a failure only.
        let mut flaky = container("flaky");
        flaky.restart_policy = Some("OnFailure".into());
        let p = pod("Never", vec![], vec![flaky.clone()]);
        let a = compute_pod_actions(
            &p,
            &ready(vec![status_of(&flaky, ContainerState::Exited, 2)]),
        );
        assert_eq!(a.containers_to_start, [0]);
        let a = compute_pod_actions(
            &p,
            &ready(vec![status_of(&flaky, ContainerState::Exited, 0)]),
        );
        assert!(a.containers_to_start.is_empty() && a.kill_pod);
    }

    #[test]
    fn a_running_container_is_resized_in_place_or_restarted_per_its_resize_policy() {
        use k8s_openapi::api::core::v1::{ContainerResizePolicy, ResourceRequirements};
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let ctx = NodeContext::default();
        let mut app = container("app");
        app.resources = Some(ResourceRequirements {
            limits: Some(
                [
                    ("memory".to_string(), Quantity("128Mi".into())),
                    ("cpu".to_string(), Quantity("500m".into())),
                ]
                .into(),
            ),
            ..Default::default()
        });
        let p = pod("Always", vec![], vec![app.clone()]);
        let mut running = status_of(&app, ContainerState::Running, 0);
        let applied = node_core::runtime::ContainerResources {
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            memory_limit: 64 << 20,
        };
        // Unknown applied resources: nothing to compare, nothing done.
        let a = compute_pod_actions_with(&p, &ready(vec![running.clone()]), None, Some(&ctx));
        assert!(a.containers_to_update.is_empty());
        // The runtime has 64 MiB, the allocation says 128: grown in place.
        running.resources = Some(applied);
        let a = compute_pod_actions_with(&p, &ready(vec![running.clone()]), None, Some(&ctx));
        assert_eq!(a.containers_to_update.len(), 1);
        let update = &a.containers_to_update[0];
        assert_eq!(update.resources.memory_limit_in_bytes, 128 << 20);
        assert!(!update.shrinks);
        assert!(a.containers_to_kill.is_empty() && a.containers_to_start.is_empty() && !a.kill_pod);
        // Applied as allocated: nothing.
        running.resources = Some(node_core::runtime::ContainerResources {
            memory_limit: 128 << 20,
            ..applied
        });
        let a = compute_pod_actions_with(&p, &ready(vec![running.clone()]), None, Some(&ctx));
        assert!(a.containers_to_update.is_empty());
        // Shrinking is flagged; a memory change under RestartContainer restarts instead.
        running.resources = Some(node_core::runtime::ContainerResources {
            memory_limit: 256 << 20,
            ..applied
        });
        let a = compute_pod_actions_with(&p, &ready(vec![running.clone()]), None, Some(&ctx));
        assert!(a.containers_to_update[0].shrinks);
        let mut restarting = app.clone();
        restarting.resize_policy = Some(vec![ContainerResizePolicy {
            resource_name: "memory".into(),
            restart_policy: "RestartContainer".into(),
        }]);
        let p = pod("Always", vec![], vec![restarting]);
        let a = compute_pod_actions_with(&p, &ready(vec![running]), None, Some(&ctx));
        assert!(a.containers_to_update.is_empty());
        assert_eq!(
            a.containers_to_kill[0].message,
            "Container app resize requires restart"
        );
        assert_eq!(a.containers_to_start, [0]);
    }

    #[test]
    fn a_running_sidecar_is_resized_in_place_too() {
        use k8s_openapi::api::core::v1::ResourceRequirements;
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let ctx = NodeContext::default();
        let mut side = container("side");
        side.restart_policy = Some("Always".into());
        side.resources = Some(ResourceRequirements {
            limits: Some([("memory".to_string(), Quantity("96Mi".into()))].into()),
            ..Default::default()
        });
        let app = container("app");
        let p = pod("Always", vec![side.clone()], vec![app.clone()]);
        let mut running_side = status_of(&side, ContainerState::Running, 0);
        running_side.resources = Some(node_core::runtime::ContainerResources {
            cpu_shares: 2,
            memory_limit: 32 << 20,
            ..Default::default()
        });
        let a = compute_pod_actions_with(
            &p,
            &ready(vec![
                status_of(&app, ContainerState::Running, 0),
                running_side,
            ]),
            None,
            Some(&ctx),
        );
        assert_eq!(a.containers_to_update.len(), 1, "{a:?}");
        assert_eq!(a.containers_to_update[0].name, "side");
        assert_eq!(
            a.containers_to_update[0].resources.memory_limit_in_bytes,
            96 << 20
        );
        assert!(a.init_containers_to_start.is_empty() && a.containers_to_kill.is_empty());
    }

    #[test]
    fn exited_app_containers_of_an_old_sandbox_do_not_skip_initialization() {
        let (i1, i2, app) = (container("i1"), container("i2"), container("app"));
        let p = pod("Always", vec![i1.clone(), i2.clone()], vec![app.clone()]);
        // New sandbox: i1 runs again; the app container exited in the old sandbox.
        let s = ready(vec![
            status_of(&i1, ContainerState::Running, 0),
            status_of(&app, ContainerState::Exited, 137),
        ]);
        let a = compute_pod_actions(&p, &s);
        assert!(a.init_containers_to_start.is_empty() && a.containers_to_start.is_empty());
        assert!(!a.kill_pod);
    }

    #[test]
    fn a_created_but_unstarted_init_container_is_started_again() {
        let (i1, app) = (container("i1"), container("app"));
        let p = pod("Always", vec![i1.clone()], vec![app]);
        let a = compute_pod_actions(&p, &ready(vec![status_of(&i1, ContainerState::Created, 0)]));
        assert_eq!(a.init_containers_to_start, [0]);
    }

    #[test]
    fn a_deleted_pod_restarts_nothing() {
        let c = container("a");
        let mut p = pod("Always", vec![], vec![c.clone()]);
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        let a = compute_pod_actions(&p, &ready(vec![status_of(&c, ContainerState::Exited, 1)]));
        assert!(a.containers_to_start.is_empty());
        assert!(a.kill_pod);
    }

    #[test]
    fn a_host_network_change_replaces_the_sandbox() {
        let mut p = pod("Always", vec![], vec![container("a")]);
        p.spec.as_mut().unwrap().host_network = Some(true);
        let a = compute_pod_actions(&p, &ready(vec![]));
        assert!(a.create_sandbox);
        assert_eq!(a.sandbox_id, None);
    }
}
