//! Status generation against upstream's rules: the phase, containers the runtime lost, the
//! final status of a terminated pod, readiness gates, observed generation, kept pod IPs.

use k8s_openapi::api::core::v1::{
    Container, PodCondition, PodReadinessGate, PodSpec, PodStatus as ApiStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::config::{API_SOURCE, CONFIG_SOURCE_ANNOTATION, FILE_SOURCE};
use crate::runtime::{ContainerId, SandboxState, SandboxStatus};

fn pod(policy: &str, init: &[&str], containers: &[&str], source: &str) -> Pod {
    let c = |name: &&str| Container {
        name: (*name).into(),
        image: Some("busybox".into()),
        ..Default::default()
    };
    Pod {
        metadata: ObjectMeta {
            name: Some("p".into()),
            namespace: Some("default".into()),
            uid: Some("u".into()),
            generation: Some(3),
            annotations: Some([(CONFIG_SOURCE_ANNOTATION.into(), source.into())].into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some(policy.into()),
            init_containers: (!init.is_empty()).then(|| init.iter().map(c).collect()),
            containers: containers.iter().map(c).collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container(name: &str, state: ContainerState, exit_code: i32) -> ContainerStatus {
    ContainerStatus {
        id: ContainerId {
            runtime: "containerd".into(),
            id: format!("id-{name}"),
        },
        name: name.into(),
        state,
        created_at: None,
        started_at: None,
        finished_at: None,
        exit_code,
        image: "busybox".into(),
        image_ref: "sha256:b".into(),
        hash: None,
        restart_count: 0,
        reason: String::new(),
        message: String::new(),
        log_path: String::new(),
        user: None,
        resources: None,
    }
}

fn runtime(containers: Vec<ContainerStatus>, sandbox_ready: bool) -> PodStatus {
    PodStatus {
        uid: "u".into(),
        name: "p".into(),
        namespace: "default".into(),
        ips: if sandbox_ready {
            vec!["10.88.0.5".into()]
        } else {
            Vec::new()
        },
        sandboxes: vec![SandboxStatus {
            id: "s".into(),
            state: if sandbox_ready {
                SandboxState::Ready
            } else {
                SandboxState::NotReady
            },
            attempt: 0,
            created_at: None,
            ips: Vec::new(),
            network_mode: crate::runtime::NamespaceMode::Pod,
        }],
        containers,
    }
}

fn generate(pod: &Pod, rt: &PodStatus, ctx: StatusContext<'_>) -> ApiStatus {
    generate_pod_status(pod, rt, &HashMap::new(), &["10.0.0.1".into()], ctx)
}

fn condition<'a>(s: &'a ApiStatus, kind: &str) -> &'a PodCondition {
    s.conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == kind)
        .unwrap()
}

fn state_of<'a>(s: &'a ApiStatus, name: &str) -> &'a ApiContainerState {
    s.container_statuses
        .iter()
        .chain(s.init_container_statuses.iter())
        .flatten()
        .find(|c| c.name == name)
        .and_then(|c| c.state.as_ref())
        .unwrap()
}

#[test]
fn a_pending_regular_init_container_keeps_the_pod_pending() {
    let p = pod("Always", &["setup"], &["main"], API_SOURCE);
    let s = generate(
        &p,
        &runtime(vec![container("setup", ContainerState::Running, 0)], true),
        StatusContext::default(),
    );
    assert_eq!(s.phase.as_deref(), Some("Pending"));
    let s = generate(
        &p,
        &runtime(
            vec![
                container("setup", ContainerState::Exited, 0),
                container("main", ContainerState::Running, 0),
            ],
            true,
        ),
        StatusContext::default(),
    );
    assert_eq!(s.phase.as_deref(), Some("Running"));
}

#[test]
fn a_failed_init_container_fails_a_never_pod() {
    let p = pod("Never", &["setup"], &["main"], API_SOURCE);
    let s = generate(
        &p,
        &runtime(vec![container("setup", ContainerState::Exited, 2)], true),
        StatusContext::default(),
    );
    assert_eq!(s.phase.as_deref(), Some("Failed"));
}

#[test]
fn every_container_exiting_zero_is_succeeded_for_non_always_pods() {
    let p = pod("OnFailure", &[], &["a", "b"], API_SOURCE);
    let done = runtime(
        vec![
            container("a", ContainerState::Exited, 0),
            container("b", ContainerState::Exited, 0),
        ],
        false,
    );
    assert_eq!(
        generate(&p, &done, StatusContext::default())
            .phase
            .as_deref(),
        Some("Succeeded")
    );
    let p = pod("Always", &[], &["a", "b"], API_SOURCE);
    assert_eq!(
        generate(&p, &done, StatusContext::default())
            .phase
            .as_deref(),
        Some("Running"),
        "restartPolicy Always: restarting"
    );
}

#[test]
fn a_terminated_api_pod_ends_in_a_terminal_phase_whatever_its_restart_policy() {
    let p = pod("Always", &[], &["a"], API_SOURCE);
    let stopped_ok = runtime(vec![container("a", ContainerState::Exited, 0)], false);
    let terminal = StatusContext {
        old: None,
        terminal: true,
        ..Default::default()
    };
    assert_eq!(
        generate(&p, &stopped_ok, terminal).phase.as_deref(),
        Some("Succeeded")
    );
    let killed = runtime(vec![container("a", ContainerState::Exited, 137)], false);
    assert_eq!(
        generate(&p, &killed, terminal).phase.as_deref(),
        Some("Failed")
    );
    // Static pods keep upstream's exception (kubernetes#116484).
    let s = pod("Always", &[], &["a"], FILE_SOURCE);
    assert_eq!(
        generate(&s, &killed, terminal).phase.as_deref(),
        Some("Running")
    );
}

#[test]
fn a_container_lost_after_it_ran_is_terminated_with_status_unknown() {
    let p = pod("Never", &[], &["a"], API_SOURCE);
    let running = generate(
        &p,
        &runtime(vec![container("a", ContainerState::Running, 0)], true),
        StatusContext::default(),
    );
    assert_eq!(running.phase.as_deref(), Some("Running"));
    // The runtime lost the container (removed behind the kubelet's back).
    let s = generate(
        &p,
        &runtime(Vec::new(), true),
        StatusContext {
            old: Some(&running),
            terminal: false,
            ..Default::default()
        },
    );
    let t = state_of(&s, "a").terminated.as_ref().expect("terminated");
    assert_eq!(t.exit_code, 137);
    assert_eq!(t.reason.as_deref(), Some("ContainerStatusUnknown"));
    assert_eq!(
        t.message.as_deref(),
        Some("The container could not be located when the pod was terminated")
    );
    assert_eq!(s.container_statuses.as_ref().unwrap()[0].restart_count, 1);
    assert_eq!(s.phase.as_deref(), Some("Failed"), "not run a second time");
}

#[test]
fn the_final_status_marks_containers_without_a_final_state() {
    let p = pod("Always", &[], &["a", "b"], API_SOURCE);
    // a was killed and its exit recorded; b never started.
    let s = generate(
        &p,
        &runtime(vec![container("a", ContainerState::Exited, 137)], false),
        StatusContext {
            old: None,
            terminal: true,
            ..Default::default()
        },
    );
    assert_eq!(
        state_of(&s, "a").terminated.as_ref().unwrap().exit_code,
        137
    );
    let b = state_of(&s, "b").terminated.as_ref().expect("b marked");
    assert_eq!(b.reason.as_deref(), Some("ContainerStatusUnknown"));
    assert_eq!(s.phase.as_deref(), Some("Failed"));
}

#[test]
fn readiness_gates_hold_ready_back_with_upstreams_message() {
    let mut p = pod("Always", &[], &["a"], API_SOURCE);
    p.spec.as_mut().unwrap().readiness_gates = Some(vec![
        PodReadinessGate {
            condition_type: "example.com/lb".into(),
        },
        PodReadinessGate {
            condition_type: "example.com/dns".into(),
        },
    ]);
    p.status = Some(ApiStatus {
        conditions: Some(vec![PodCondition {
            type_: "example.com/dns".into(),
            status: "False".into(),
            ..Default::default()
        }]),
        ..Default::default()
    });
    let rt = runtime(vec![container("a", ContainerState::Running, 0)], true);
    let s = generate(&p, &rt, StatusContext::default());
    let ready = condition(&s, "Ready");
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason.as_deref(), Some("ReadinessGatesNotReady"));
    assert_eq!(
        ready.message.as_deref(),
        Some(
            "corresponding condition of pod readiness gate \"example.com/lb\" does not exist., \
             the status of pod readiness gate \"example.com/dns\" is not \"True\", but False."
        )
    );
    assert_eq!(condition(&s, "ContainersReady").status, "True");
    for c in s.conditions.as_ref().unwrap() {
        assert_eq!(c.observed_generation, Some(3), "{}", c.type_);
    }
    assert_eq!(s.observed_generation, Some(3));
    // All gates true: Ready.
    p.status = Some(ApiStatus {
        conditions: Some(vec![
            PodCondition {
                type_: "example.com/dns".into(),
                status: "True".into(),
                ..Default::default()
            },
            PodCondition {
                type_: "example.com/lb".into(),
                status: "True".into(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    });
    assert_eq!(
        condition(&generate(&p, &rt, StatusContext::default()), "Ready").status,
        "True"
    );
}

#[test]
fn a_stopped_pod_keeps_its_ips() {
    let p = pod("Never", &[], &["a"], API_SOURCE);
    let manager = StatusManager::new();
    manager.set(
        "u",
        generate(
            &p,
            &runtime(vec![container("a", ContainerState::Running, 0)], true),
            StatusContext::default(),
        ),
    );
    manager.set(
        "u",
        generate(
            &p,
            &runtime(vec![container("a", ContainerState::Exited, 0)], false),
            StatusContext::default(),
        ),
    );
    let s = manager.get("u").unwrap();
    assert_eq!(s.phase.as_deref(), Some("Succeeded"));
    assert_eq!(s.pod_ip.as_deref(), Some("10.88.0.5"));
    assert_eq!(s.pod_ips.unwrap().len(), 1);
}

#[test]
fn a_readiness_change_reaches_the_containers_ready_and_ready_conditions_directly() {
    let p = pod("Always", &[], &["a", "b"], API_SOURCE);
    let rt = runtime(
        vec![
            container("a", ContainerState::Running, 0),
            container("b", ContainerState::Running, 0),
        ],
        true,
    );
    let mut status = generate(&p, &rt, StatusContext::default());
    assert_eq!(condition(&status, "Ready").status, "True");
    // b's readiness probe fails: b unready, both conditions False naming it.
    let b_unready = |c: &ApiContainerStatus| Some(c.name != "b");
    assert!(refresh_readiness(&p, &mut status, b_unready));
    let ready_of = |s: &ApiStatus, name: &str| {
        s.container_statuses
            .iter()
            .flatten()
            .find(|c| c.name == name)
            .unwrap()
            .ready
    };
    assert!(ready_of(&status, "a"));
    assert!(!ready_of(&status, "b"));
    for kind in ["ContainersReady", "Ready"] {
        let c = condition(&status, kind);
        assert_eq!(c.status, "False", "{kind}");
        assert_eq!(c.reason.as_deref(), Some("ContainersNotReady"));
        assert_eq!(
            c.message.as_deref(),
            Some("containers with unready status: [b]")
        );
        assert_eq!(c.observed_generation, Some(3));
    }
    // Nothing changed: nothing to write.
    assert!(!refresh_readiness(&p, &mut status, b_unready));
    // Not running (None): left as it is.
    assert!(!refresh_readiness(&p, &mut status, |_| None));
    assert!(refresh_readiness(&p, &mut status, |_| Some(true)));
    assert_eq!(condition(&status, "Ready").status, "True");
}

#[test]
fn the_identity_the_runtime_applied_is_reported_as_the_containers_user() {
    let p = pod("Always", &[], &["a", "b"], API_SOURCE);
    let mut a = container("a", ContainerState::Running, 0);
    a.user = Some(crate::runtime::ContainerUser {
        uid: 1000,
        gid: 1000,
        supplemental_groups: vec![1000, 2000],
    });
    let b = container("b", ContainerState::Running, 0);
    let status = generate(&p, &runtime(vec![a, b], true), StatusContext::default());
    let of = |name: &str| {
        status
            .container_statuses
            .iter()
            .flatten()
            .find(|c| c.name == name)
            .unwrap()
            .user
            .clone()
    };
    let linux = of("a").unwrap().linux.unwrap();
    assert_eq!((linux.uid, linux.gid), (1000, 1000));
    assert_eq!(linux.supplemental_groups, Some(vec![1000, 2000]));
    assert_eq!(of("b"), None, "nothing reported, nothing claimed");
}

#[test]
fn container_restart_policies_decide_the_phase_of_a_pod_whose_containers_all_stopped() {
    use k8s_openapi::api::core::v1::{ContainerRestartRule, ContainerRestartRuleOnExitCodes};
    let mut p = pod("Always", &[], &["a", "b"], FILE_SOURCE);
    for c in &mut p.spec.as_mut().unwrap().containers {
        c.restart_policy = Some("Never".into());
    }
    let stopped = |a: i32, b: i32| {
        runtime(
            vec![
                container("a", ContainerState::Exited, a),
                container("b", ContainerState::Exited, b),
            ],
            true,
        )
    };
    let phase_of = |p: &Pod, rt: &PodStatus| generate(p, rt, StatusContext::default()).phase;
    assert_eq!(phase_of(&p, &stopped(0, 0)).as_deref(), Some("Succeeded"));
    assert_eq!(phase_of(&p, &stopped(0, 1)).as_deref(), Some("Failed"));
    // A rule that restarts exit code 1 keeps the pod Running.
    p.spec.as_mut().unwrap().containers[1].restart_policy_rules =
        Some(vec![ContainerRestartRule {
            action: "Restart".into(),
            exit_codes: Some(ContainerRestartRuleOnExitCodes {
                operator: "In".into(),
                values: Some(vec![1]),
            }),
        }]);
    assert_eq!(phase_of(&p, &stopped(0, 1)).as_deref(), Some("Running"));
    // Without container policies the pod's Always keeps it Running.
    let plain = pod("Always", &[], &["a", "b"], FILE_SOURCE);
    assert_eq!(phase_of(&plain, &stopped(0, 1)).as_deref(), Some("Running"));
}
