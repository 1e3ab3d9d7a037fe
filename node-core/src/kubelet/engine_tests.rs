//! The engine with a fake runtime and a fake volume manager, under paused time: pods from a
//! source through the workers to the runtime and back to their statuses.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Node, NodeStatus, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::{EngineConfig, Kubelet};
use crate::admission::NodeView;
use crate::config::{PodConfig, SourceSender};
use crate::events::{EventType, MemoryRecorder};
use crate::runtime::GcPolicy;
use crate::status::StatusManager;
use crate::testing::fake::{FakeRuntime, FakeVolumeManager, RuntimeCall, VolumeCall};

struct Engine {
    runtime: Arc<FakeRuntime>,
    events: Arc<MemoryRecorder>,
    volumes: Arc<FakeVolumeManager>,
    statuses: Arc<StatusManager>,
    source: SourceSender,
    others: Vec<SourceSender>,
    node: Arc<NodeView>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An engine on the fakes, fed by one API source.
fn engine() -> Engine {
    engine_with(crate::config::API_SOURCE)
}

/// An engine on the fakes, fed by one source named `source` (`file` for static pods).
fn engine_with(source: &str) -> Engine {
    engine_from(&[source])
}

/// An engine on the fakes, fed by the sources `names` (the first is `Engine::source`, the
/// others `Engine::others`).
fn engine_from(names: &[&str]) -> Engine {
    let node = NodeView::new(test_node());
    let runtime = FakeRuntime::new();
    let volumes = FakeVolumeManager::new();
    let events = Arc::new(MemoryRecorder::default());
    let kubelet = Kubelet::new(
        runtime.clone(),
        events.clone(),
        EngineConfig {
            node_name: "node".into(),
            node_ips: vec!["10.0.0.1".into()],
            sync_frequency: Duration::from_secs(60),
            max_pods: 110,
            gc_policy: GcPolicy::default(),
            node: Some(node.clone()),
            allowed_unsafe_sysctls: Vec::new(),
        },
    )
    .with_volume_manager(volumes.clone());
    let statuses = kubelet.status_manager();
    let (sources, updates) = PodConfig::new("node");
    let mut senders = names.iter().map(|n| sources.source(n));
    let source = senders.next().expect("a source");
    let others = senders.collect();
    let task = tokio::spawn(async move {
        let _sources = sources;
        kubelet.run(updates, std::future::pending()).await;
    });
    Engine {
        runtime,
        events,
        volumes,
        statuses,
        source,
        others,
        node,
        task,
    }
}

/// The node the engine admits pods to: 2 cpus, 4 GiB, 110 pods, Linux, zone a.
fn test_node() -> Node {
    let quantity = |q: &str| k8s_openapi::apimachinery::pkg::api::resource::Quantity(q.into());
    Node {
        metadata: ObjectMeta {
            name: Some("node".into()),
            labels: Some(
                [("kubernetes.io/os", "linux"), ("zone", "a")]
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        status: Some(NodeStatus {
            allocatable: Some(
                [
                    ("cpu".to_string(), quantity("2")),
                    ("memory".to_string(), quantity("4Gi")),
                    ("pods".to_string(), quantity("110")),
                ]
                .into(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod(name: &str, grace: i64, policy: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("u-{name}")),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some("node".into()),
            restart_policy: Some(policy.into()),
            termination_grace_period_seconds: Some(grace),
            containers: vec![Container {
                name: "main".into(),
                image: Some("busybox".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn deleted(mut p: Pod, grace: i64) -> Pod {
    p.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    p.metadata.deletion_grace_period_seconds = Some(grace);
    p
}

async fn run_for(secs: f64) {
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
}

fn phase(e: &Engine, uid: &str) -> Option<String> {
    e.statuses.get(uid).and_then(|s| s.phase)
}

#[tokio::test(start_paused = true)]
async fn a_removed_pod_is_killed_with_its_grace_period_then_unmounted_and_forgotten() {
    // A static pod whose manifest goes: stopped with its own grace period.
    let mut e = engine_with(crate::config::FILE_SOURCE);
    e.source.send(vec![pod("web", 7, "Always")]).await.unwrap();
    // Started at the first sync; Running once PLEG's relist reports the new containers.
    run_for(3.0).await;
    assert!(e.runtime.is_running("u-web"));
    assert_eq!(phase(&e, "u-web").as_deref(), Some("Running"));
    assert!(
        e.volumes
            .calls()
            .iter()
            .all(|c| *c == VolumeCall::Mount("u-web".into())),
        "volumes set up before each sync: {:?}",
        e.volumes.calls()
    );

    e.source.send(vec![]).await.unwrap();
    run_for(3.0).await;
    assert_eq!(e.runtime.kills_of("u-web"), [Some(7)]);
    assert!(!e.runtime.is_running("u-web"));
    assert_eq!(
        e.volumes.calls().last(),
        Some(&VolumeCall::Unmount("u-web".into())),
        "volumes go after the containers"
    );
    assert_eq!(phase(&e, "u-web"), None, "the status is forgotten");
}

#[tokio::test(start_paused = true)]
async fn a_deletion_honours_its_grace_period_and_a_force_delete_cuts_it_short() {
    let mut e = engine();
    e.runtime.set_ignore_sigterm(true);
    let web = pod("web", 30, "Always");
    e.source.send(vec![web.clone()]).await.unwrap();
    run_for(1.0).await;
    e.source.send(vec![deleted(web.clone(), 20)]).await.unwrap();
    run_for(5.0).await;
    assert_eq!(e.runtime.kills_of("u-web"), [Some(20)]);
    assert!(
        e.runtime.is_running("u-web"),
        "still within its grace period"
    );
    // kubectl delete --force --grace-period 0: the kill restarts with 1 second.
    e.source.send(vec![deleted(web, 0)]).await.unwrap();
    run_for(2.0).await;
    assert_eq!(e.runtime.kills_of("u-web"), [Some(20), Some(1)]);
    assert!(!e.runtime.is_running("u-web"), "stopped at once");
}

#[tokio::test(start_paused = true)]
async fn a_pod_arriving_deleted_is_never_started() {
    let mut e = engine();
    e.source
        .send(vec![deleted(pod("late", 30, "Always"), 10)])
        .await
        .unwrap();
    run_for(12.0).await;
    assert_eq!(e.runtime.syncs_of("u-late"), 0, "{:?}", e.runtime.calls());
    assert_eq!(e.volumes.calls(), [VolumeCall::Unmount("u-late".into())]);
}

#[tokio::test(start_paused = true)]
async fn a_pod_whose_containers_succeed_ends_succeeded_and_keeps_them() {
    let mut e = engine();
    e.source.send(vec![pod("job", 30, "Never")]).await.unwrap();
    run_for(1.0).await;
    e.runtime.exit("u-job", "main", 0);
    // PLEG relists every second (the fake has no events): the worker sees the exit.
    run_for(3.0).await;
    assert_eq!(phase(&e, "u-job").as_deref(), Some("Succeeded"));
    assert_eq!(
        e.runtime.kills_of("u-job").len(),
        1,
        "its sandbox is stopped"
    );
    assert_eq!(e.runtime.syncs_of("u-job"), 1, "not restarted");
    // Garbage collection keeps a finished pod's containers while the pod is wanted.
    run_for(61.0).await;
    let gc: Vec<RuntimeCall> = e
        .runtime
        .calls()
        .into_iter()
        .filter(|c| matches!(c, RuntimeCall::GarbageCollect(_)))
        .collect();
    assert_eq!(gc, [RuntimeCall::GarbageCollect(Vec::new())]);
    assert_eq!(phase(&e, "u-job").as_deref(), Some("Succeeded"));
}

#[tokio::test(start_paused = true)]
async fn pods_only_the_runtime_runs_are_stopped_with_grace_1_once_sources_are_seen() {
    let mut e = engine();
    e.runtime.add_running_pod("u-orphan", "old", &["main"]);
    run_for(5.0).await;
    assert!(
        e.runtime.kills_of("u-orphan").is_empty(),
        "not before every source reported"
    );
    e.source.send(vec![]).await.unwrap();
    run_for(3.0).await;
    assert_eq!(e.runtime.kills_of("u-orphan"), [Some(1)]);
    assert!(!e.runtime.is_running("u-orphan"));
}

#[tokio::test(start_paused = true)]
async fn a_removal_cancels_a_volume_set_up_that_hangs() {
    let mut e = engine_with(crate::config::FILE_SOURCE);
    e.volumes.hang("u-stuck");
    e.source
        .send(vec![pod("stuck", 5, "Always")])
        .await
        .unwrap();
    run_for(10.0).await;
    assert_eq!(e.runtime.syncs_of("u-stuck"), 0);
    e.source.send(vec![]).await.unwrap();
    run_for(2.0).await;
    assert_eq!(e.runtime.kills_of("u-stuck"), [Some(5)]);
    assert_eq!(
        e.volumes.calls().last(),
        Some(&VolumeCall::Unmount("u-stuck".into()))
    );
}

#[tokio::test(start_paused = true)]
async fn a_runtime_that_fails_status_calls_is_retried_after_the_back_off() {
    let mut e = engine();
    e.runtime.set_status_fails(true);
    e.source.send(vec![pod("web", 5, "Always")]).await.unwrap();
    run_for(5.0).await;
    assert!(!e.runtime.is_running("u-web"));
    e.runtime.set_status_fails(false);
    run_for(16.0).await;
    assert!(e.runtime.is_running("u-web"), "synced after the back-off");
}

#[tokio::test(start_paused = true)]
async fn pods_on_the_pod_network_wait_for_the_network_and_host_network_pods_do_not() {
    let mut e = engine();
    e.runtime.set_network_ready(false);
    let mut host = pod("host", 5, "Always");
    host.spec.as_mut().unwrap().host_network = Some(true);
    e.source
        .send(vec![pod("web", 5, "Always"), host])
        .await
        .unwrap();
    run_for(3.0).await;
    assert!(e.runtime.is_running("u-host"), "host network pods start");
    assert_eq!(
        e.runtime.syncs_of("u-web"),
        0,
        "no sandbox while the network is down"
    );
    let event = e
        .events
        .events()
        .into_iter()
        .find(|ev| ev.reason == "NetworkNotReady")
        .expect("a NetworkNotReady event");
    assert_eq!(event.event_type, EventType::Warning);
    assert_eq!(event.object.name, "web");
    assert_eq!(
        event.message,
        "network is not ready: container runtime network not ready: NetworkReady=false \
         reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized"
    );
    e.runtime.set_network_ready(true);
    // Seen within the 5 s status period; the pod's worker retries after its back-off.
    run_for(21.0).await;
    assert!(e.runtime.is_running("u-web"));
}

#[tokio::test(start_paused = true)]
async fn an_api_pod_gone_from_the_api_server_was_force_deleted_and_stops_at_once() {
    let mut e = engine();
    e.runtime.set_ignore_sigterm(true);
    e.source.send(vec![pod("web", 30, "Always")]).await.unwrap();
    run_for(1.0).await;
    e.source.send(vec![]).await.unwrap();
    run_for(2.0).await;
    assert_eq!(e.runtime.kills_of("u-web"), [Some(1)]);
    assert!(!e.runtime.is_running("u-web"));
}

/// Real time: the deadline counts from the status's start time, a wall-clock time.
#[tokio::test]
async fn a_pod_past_its_active_deadline_fails_with_deadline_exceeded() {
    let mut e = engine();
    let mut p = pod("job", 30, "Never");
    p.spec.as_mut().unwrap().active_deadline_seconds = Some(2);
    e.source.send(vec![p]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(e.runtime.is_running("u-job"));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let status = e.statuses.get("u-job").unwrap();
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    assert_eq!(status.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(
        status.message.as_deref(),
        Some("Pod was active on the node longer than the specified deadline")
    );
    assert_eq!(
        e.runtime.kills_of("u-job").len(),
        1,
        "its containers stopped"
    );
    assert!(!e.runtime.is_running("u-job"));
    assert!(
        e.events
            .events()
            .iter()
            .any(|ev| ev.reason == "DeadlineExceeded" && ev.event_type == EventType::Normal)
    );
}

#[tokio::test(start_paused = true)]
async fn pods_for_another_os_are_rejected_and_never_started() {
    let mut e = engine();
    let mut windows = pod("win", 30, "Always");
    windows.spec.as_mut().unwrap().os = Some(k8s_openapi::api::core::v1::PodOS {
        name: "windows".into(),
    });
    // Upstream compares the pod's `kubernetes.io/os` label with the node's.
    let mut labelled = pod("sel", 30, "Always");
    labelled.metadata.labels =
        Some([("kubernetes.io/os".to_string(), "windows".to_string())].into());
    // A node selector for another OS is a node affinity mismatch.
    let mut selected = pod("aff", 30, "Always");
    selected.spec.as_mut().unwrap().node_selector =
        Some([("kubernetes.io/os".to_string(), "windows".to_string())].into());
    e.source
        .send(vec![windows, labelled, selected])
        .await
        .unwrap();
    run_for(2.0).await;
    assert_eq!(
        e.runtime.syncs_of("u-win") + e.runtime.syncs_of("u-sel") + e.runtime.syncs_of("u-aff"),
        0
    );
    let aff = e.statuses.get("u-aff").unwrap();
    assert_eq!(aff.reason.as_deref(), Some("NodeAffinity"));
    assert_eq!(
        aff.message.as_deref(),
        Some(
            "Pod was rejected: Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector"
        )
    );
    let win = e.statuses.get("u-win").unwrap();
    assert_eq!(win.phase.as_deref(), Some("Failed"));
    assert_eq!(win.reason.as_deref(), Some("PodOSNotSupported"));
    assert_eq!(
        win.message.as_deref(),
        Some("Pod was rejected: Failed to admit pod as the OS field doesn't match node OS")
    );
    let sel = e.statuses.get("u-sel").unwrap();
    assert_eq!(
        sel.reason.as_deref(),
        Some("PodOSSelectorNodeLabelDoesNotMatch")
    );
}

#[tokio::test(start_paused = true)]
async fn a_pod_larger_than_the_node_is_rejected_out_of_memory() {
    let mut e = engine();
    let mut big = pod("big", 30, "Always");
    big.spec.as_mut().unwrap().containers[0].resources =
        Some(k8s_openapi::api::core::v1::ResourceRequirements {
            requests: Some(
                [(
                    "memory".to_string(),
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity("8Gi".into()),
                )]
                .into(),
            ),
            ..Default::default()
        });
    e.source
        .send(vec![pod("small", 30, "Always"), big])
        .await
        .unwrap();
    run_for(2.0).await;
    assert!(e.runtime.is_running("u-small"));
    assert_eq!(e.runtime.syncs_of("u-big"), 0);
    let status = e.statuses.get("u-big").unwrap();
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    assert_eq!(status.reason.as_deref(), Some("OutOfmemory"));
    assert_eq!(
        status.message.as_deref(),
        Some(
            "Pod was rejected: Node didn't have enough resource: memory, requested: 8589934592, used: 0, capacity: 4294967296"
        )
    );
}

fn requesting(mut p: Pod, memory: &str, created: i64) -> Pod {
    p.spec.as_mut().unwrap().containers[0].resources =
        Some(k8s_openapi::api::core::v1::ResourceRequirements {
            requests: Some(
                [(
                    "memory".to_string(),
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity(memory.into()),
                )]
                .into(),
            ),
            ..Default::default()
        });
    p.metadata.creation_timestamp = Some(Time(
        k8s_openapi::jiff::Timestamp::from_second(created).unwrap(),
    ));
    p
}

#[tokio::test(start_paused = true)]
async fn pods_arriving_together_are_admitted_oldest_first() {
    let mut e = engine();
    // Only one of the two fits; the older one wins though it comes second.
    let newer = requesting(pod("newer", 30, "Always"), "3Gi", 2_000);
    let older = requesting(pod("older", 30, "Always"), "3Gi", 1_000);
    e.source.send(vec![newer, older]).await.unwrap();
    run_for(2.0).await;
    assert!(e.runtime.is_running("u-older"));
    assert_eq!(e.runtime.syncs_of("u-newer"), 0);
    assert_eq!(
        e.statuses.get("u-newer").and_then(|s| s.reason).as_deref(),
        Some("OutOfmemory")
    );
}

#[tokio::test(start_paused = true)]
async fn a_static_pod_that_lacks_memory_preempts_an_api_pod_as_upstream() {
    let mut e = engine_from(&[crate::config::API_SOURCE, crate::config::FILE_SOURCE]);
    e.source
        .send(vec![requesting(pod("api", 30, "Always"), "3Gi", 1_000)])
        .await
        .unwrap();
    run_for(3.0).await;
    assert!(e.runtime.is_running("u-api"));
    let mut critical = requesting(pod("static", 30, "Always"), "2Gi", 2_000);
    critical.metadata.annotations = Some(
        [(
            crate::config::CONFIG_SOURCE_ANNOTATION.to_string(),
            crate::config::FILE_SOURCE.to_string(),
        )]
        .into(),
    );
    e.others[0].send(vec![critical]).await.unwrap();
    run_for(40.0).await;
    assert!(e.runtime.is_running("u-static"), "the critical pod runs");
    assert!(!e.runtime.is_running("u-api"), "the API pod was stopped");
    let victim = e.statuses.get("u-api").unwrap();
    assert_eq!(victim.phase.as_deref(), Some("Failed"));
    assert_eq!(victim.reason.as_deref(), Some("Preempting"));
    assert_eq!(
        victim.message.as_deref(),
        Some("Preempted in order to admit critical pod")
    );
    let disruption = victim
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionTarget")
        .expect("a DisruptionTarget condition");
    assert_eq!(disruption.reason.as_deref(), Some("TerminationByKubelet"));
    assert!(e.events.events().iter().any(|ev| ev.reason == "Preempting"
        && ev.event_type == EventType::Warning
        && ev.message == "Preempted in order to admit critical pod"));
    // An ordinary pod that lacks memory preempts nothing.
    e.source
        .send(vec![requesting(pod("late", 30, "Always"), "3Gi", 3_000)])
        .await
        .unwrap();
    run_for(2.0).await;
    assert!(e.runtime.is_running("u-static"));
    assert_eq!(
        e.statuses.get("u-late").and_then(|s| s.reason).as_deref(),
        Some("OutOfmemory")
    );
}

#[tokio::test(start_paused = true)]
async fn admission_follows_the_node_as_its_view_changes() {
    let mut e = engine();
    let mut gpu = pod("gpu", 30, "Always");
    gpu.spec.as_mut().unwrap().node_selector =
        Some([("accelerator".to_string(), "yes".to_string())].into());
    e.source.send(vec![gpu.clone()]).await.unwrap();
    run_for(1.0).await;
    assert_eq!(
        e.statuses.get("u-gpu").and_then(|s| s.reason).as_deref(),
        Some("NodeAffinity")
    );
    // The node gains the label (and a NoExecute taint): a new pod with the selector runs,
    // one that does not tolerate the taint is refused.
    let mut node = test_node();
    node.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("accelerator".into(), "yes".into());
    node.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
        taints: Some(vec![k8s_openapi::api::core::v1::Taint {
            key: "dedicated".into(),
            value: Some("gpu".into()),
            effect: "NoExecute".into(),
            time_added: None,
        }]),
        ..Default::default()
    });
    e.node.set(node);
    let mut tolerating = gpu.clone();
    tolerating.metadata.name = Some("gpu2".into());
    tolerating.metadata.uid = Some("u-gpu2".into());
    tolerating.spec.as_mut().unwrap().tolerations =
        Some(vec![k8s_openapi::api::core::v1::Toleration {
            key: Some("dedicated".into()),
            operator: Some("Exists".into()),
            ..Default::default()
        }]);
    let mut intolerant = gpu;
    intolerant.metadata.name = Some("gpu3".into());
    intolerant.metadata.uid = Some("u-gpu3".into());
    e.source.send(vec![tolerating, intolerant]).await.unwrap();
    run_for(2.0).await;
    assert!(e.runtime.is_running("u-gpu2"));
    assert_eq!(
        e.statuses.get("u-gpu3").and_then(|s| s.reason).as_deref(),
        Some("TaintToleration")
    );
}

#[tokio::test(start_paused = true)]
async fn a_readiness_gate_set_by_another_component_makes_the_pod_ready() {
    use k8s_openapi::api::core::v1::{PodCondition, PodReadinessGate, PodStatus};
    let mut e = engine();
    let mut gated = pod("gated", 30, "Always");
    gated.spec.as_mut().unwrap().readiness_gates = Some(vec![PodReadinessGate {
        condition_type: "example.com/lb".into(),
    }]);
    e.source.send(vec![gated.clone()]).await.unwrap();
    run_for(3.0).await;
    let ready_of = |e: &Engine| {
        e.statuses
            .get("u-gated")
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap()
    };
    let before = ready_of(&e);
    assert_eq!(before.status, "False");
    assert_eq!(before.reason.as_deref(), Some("ReadinessGatesNotReady"));
    // The load balancer controller sets its condition: the API server's copy of the pod now
    // carries it beside the kubelet's conditions; only the status changed.
    let mut conditions = e
        .statuses
        .get("u-gated")
        .and_then(|s| s.conditions)
        .unwrap();
    conditions.push(PodCondition {
        type_: "example.com/lb".into(),
        status: "True".into(),
        ..Default::default()
    });
    gated.status = Some(PodStatus {
        conditions: Some(conditions),
        ..e.statuses.get("u-gated").unwrap()
    });
    e.source.send(vec![gated]).await.unwrap();
    run_for(0.5).await;
    assert_eq!(
        ready_of(&e).status,
        "True",
        "Ready follows the gate at once"
    );
}
