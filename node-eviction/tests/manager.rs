//! The eviction manager's passes, conditions, ranking, messages and admission, on stats the
//! test sets (paused time).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{
    Container, Pod, PodSpec, PodStatus, ResourceRequirements, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use node_config::eviction::ThresholdOperator;
use node_config::{EvictionThreshold, Signal, ThresholdValue};
use node_core::admission::{AdmitAttributes, PodAdmitHandler};
use node_core::events::MemoryRecorder;
use node_core::pod_workers::StatusFn;
use node_core::stats::{
    ContainerStats, FsStats, MemoryStats, NodeStats, PodReference, PodStats, ProcessStats,
    RlimitStats, Summary,
};
use node_eviction::manager::{EvictionConfig, EvictionManager, PodEvictor};
use node_status::source::PressureSource;
use node_status::stats::{StatsError, StatsProvider};

const MI: u64 = 1 << 20;

#[derive(Default)]
struct FakeStats(Mutex<Summary>, std::sync::atomic::AtomicUsize);

#[async_trait]
impl StatsProvider for FakeStats {
    async fn summary(&self) -> Result<Summary, StatsError> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(self.0.lock().unwrap().clone())
    }

    async fn node_summary(&self) -> Result<Summary, StatsError> {
        let mut s = self.0.lock().unwrap().clone();
        s.pods.clear();
        Ok(s)
    }
}

impl FakeStats {
    /// Full summaries asked for.
    fn full(&self) -> usize {
        self.1.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[derive(Default)]
struct FakeEvictor {
    pods: Mutex<Vec<Pod>>,
    evicted: Mutex<Vec<(String, i64, PodStatus)>>,
}

impl PodEvictor for FakeEvictor {
    fn active_pods(&self) -> Vec<Pod> {
        self.pods.lock().unwrap().clone()
    }

    fn is_cleaned_up(&self, _pod: &Pod) -> bool {
        true
    }

    fn evict(&self, pod: &Pod, grace: i64, status: StatusFn) {
        let mut s = PodStatus::default();
        status(&mut s);
        self.evicted.lock().unwrap().push((
            pod.metadata.name.clone().unwrap_or_default(),
            grace,
            s,
        ));
    }
}

fn threshold(signal: Signal, value: &str, grace: u64, min: Option<&str>) -> EvictionThreshold {
    EvictionThreshold {
        signal,
        operator: ThresholdOperator::LessThan,
        value: value.parse::<ThresholdValue>().unwrap(),
        grace_period: Duration::from_secs(grace),
        min_reclaim: min.map(|m| m.parse().unwrap()),
    }
}

/// A pod whose one container `name` requests `memory` (none: BestEffort).
fn pod(name: &str, memory: Option<&str>, priority: Option<i32>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        },
        spec: Some(PodSpec {
            priority,
            termination_grace_period_seconds: Some(30),
            containers: vec![Container {
                name: name.into(),
                resources: memory.map(|m| ResourceRequirements {
                    requests: Some(BTreeMap::from([("memory".into(), ApiQuantity(m.into()))])),
                    limits: Some(BTreeMap::from([("memory".into(), ApiQuantity(m.into()))])),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod_stats(name: &str, working_set: u64, disk: u64, processes: u64) -> PodStats {
    PodStats {
        pod_ref: PodReference {
            name: name.into(),
            namespace: "default".into(),
            uid: format!("uid-{name}"),
        },
        containers: vec![ContainerStats {
            name: name.into(),
            memory: Some(MemoryStats {
                working_set_bytes: Some(working_set),
                ..Default::default()
            }),
            rootfs: Some(FsStats {
                used_bytes: Some(disk),
                ..Default::default()
            }),
            logs: Some(FsStats {
                used_bytes: Some(0),
                ..Default::default()
            }),
            ..Default::default()
        }],
        process_stats: Some(ProcessStats {
            process_count: Some(processes),
        }),
        ..Default::default()
    }
}

/// The node with `available` MiB of 1000 MiB memory free, and `disk` GiB of 100 free.
fn node(available_mib: u64, disk_gib: u64, pods: Vec<PodStats>) -> Summary {
    Summary {
        node: NodeStats {
            memory: Some(MemoryStats {
                available_bytes: Some(available_mib * MI),
                working_set_bytes: Some((1000 - available_mib) * MI),
                usage_bytes: Some((1000 - available_mib) * MI),
                ..Default::default()
            }),
            fs: Some(FsStats {
                available_bytes: Some(disk_gib << 30),
                capacity_bytes: Some(100 << 30),
                inodes_free: Some(1_000_000),
                inodes: Some(2_000_000),
                ..Default::default()
            }),
            rlimit: Some(RlimitStats {
                max_pid: Some(1000),
                running_processes: Some(100),
                ..Default::default()
            }),
            ..Default::default()
        },
        pods,
    }
}

struct Setup {
    stats: Arc<FakeStats>,
    evictor: Arc<FakeEvictor>,
    recorder: Arc<MemoryRecorder>,
    manager: EvictionManager,
}

fn setup(thresholds: Vec<EvictionThreshold>, transition: u64, max_grace: i64) -> Setup {
    let stats = Arc::new(FakeStats::default());
    let evictor = Arc::new(FakeEvictor::default());
    let recorder = Arc::new(MemoryRecorder::default());
    let manager = EvictionManager::new(
        EvictionConfig {
            thresholds,
            pressure_transition_period: Duration::from_secs(transition),
            max_pod_grace_period: max_grace,
            interval: Duration::from_secs(10),
        },
        stats.clone(),
        evictor.clone(),
        recorder.clone(),
    );
    Setup {
        stats,
        evictor,
        recorder,
        manager,
    }
}

fn static_pod(name: &str) -> Pod {
    let mut p = pod(name, None, None);
    p.metadata.annotations = Some(BTreeMap::from([(
        "kubernetes.io/config.source".into(),
        "file".into(),
    )]));
    p
}

#[tokio::test(start_paused = true)]
async fn a_hard_memory_threshold_evicts_the_pod_over_its_request_with_upstreams_status() {
    let s = setup(
        vec![threshold(Signal::MemoryAvailable, "100Mi", 0, None)],
        60,
        0,
    );
    *s.evictor.pods.lock().unwrap() = vec![
        pod("small", Some("100Mi"), None),
        static_pod("static"),
        pod("big", None, None),
        pod("guaranteed", Some("400Mi"), None),
    ];
    let pods = vec![
        pod_stats("small", 50 * MI, 0, 1),
        pod_stats("static", 900 * MI, 0, 1),
        pod_stats("big", 300 * MI, 0, 1),
        pod_stats("guaranteed", 350 * MI, 0, 1),
    ];
    // 200 MiB free: no pressure, and no pod figures asked for.
    *s.stats.0.lock().unwrap() = node(200, 50, pods.clone());
    assert!(s.manager.synchronize().await.is_empty());
    assert!(!s.manager.pressure().memory);
    assert_eq!(
        s.stats.full(),
        0,
        "a pass without pressure reads the node only"
    );
    // 80 MiB free: MemoryPressure, and the BestEffort pod using the most goes (the static pod
    // is critical).
    *s.stats.0.lock().unwrap() = node(80, 50, pods);
    let evicted = s.manager.synchronize().await;
    assert_eq!(evicted.len(), 1);
    assert!(s.manager.pressure().memory);
    let (name, grace, status) = s.evictor.evicted.lock().unwrap()[0].clone();
    assert_eq!(name, "big");
    assert_eq!(
        grace, 1,
        "hard thresholds: upstream's immediate grace period"
    );
    let message = "The node was low on resource: memory. Threshold quantity: 100Mi, available: 80Mi. Container big was using 300Mi, request is 0, has larger consumption of memory. ";
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    assert_eq!(status.reason.as_deref(), Some("Evicted"));
    assert_eq!(status.message.as_deref(), Some(message));
    let condition = &status.conditions.unwrap()[0];
    assert_eq!(condition.type_, "DisruptionTarget");
    assert_eq!(condition.reason.as_deref(), Some("TerminationByKubelet"));
    let events = s.recorder.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reason, "Evicted");
    assert_eq!(events[0].message, message);
}

#[tokio::test(start_paused = true)]
async fn a_soft_threshold_waits_for_its_grace_period_and_caps_the_pods_grace() {
    let s = setup(
        vec![threshold(Signal::MemoryAvailable, "100Mi", 30, None)],
        60,
        10,
    );
    *s.evictor.pods.lock().unwrap() = vec![pod("a", None, None)];
    *s.stats.0.lock().unwrap() = node(80, 50, vec![pod_stats("a", 300 * MI, 0, 1)]);
    assert!(s.manager.synchronize().await.is_empty());
    assert!(s.manager.pressure().memory, "the condition comes at once");
    tokio::time::advance(Duration::from_secs(20)).await;
    assert!(s.manager.synchronize().await.is_empty(), "20 s of 30");
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(s.manager.synchronize().await.len(), 1);
    assert_eq!(
        s.evictor.evicted.lock().unwrap()[0].1,
        10,
        "min(30, evictionMaxPodGracePeriod)"
    );
}

#[tokio::test(start_paused = true)]
async fn pressure_is_held_for_the_transition_period_and_min_reclaim_keeps_evicting() {
    let s = setup(
        vec![threshold(Signal::NodeFsAvailable, "10%", 0, Some("5Gi"))],
        30,
        0,
    );
    *s.evictor.pods.lock().unwrap() = vec![pod("a", None, None), pod("b", None, None)];
    let pods = vec![
        pod_stats("a", MI, 5 << 30, 1),
        pod_stats("b", MI, 1 << 30, 1),
    ];
    *s.stats.0.lock().unwrap() = node(500, 8, pods.clone());
    assert_eq!(
        s.manager.synchronize().await[0].metadata.name.as_deref(),
        Some("a"),
        "the biggest disk user"
    );
    assert!(s.manager.pressure().disk);
    // 12 GiB free: above 10%, but not 10% + 5Gi: still met, b goes.
    *s.stats.0.lock().unwrap() = node(500, 12, pods.clone());
    assert_eq!(s.manager.synchronize().await.len(), 1);
    // 20 GiB free: resolved; the condition stays for 30 s.
    *s.stats.0.lock().unwrap() = node(500, 20, pods);
    assert!(s.manager.synchronize().await.is_empty());
    assert!(s.manager.pressure().disk);
    tokio::time::advance(Duration::from_secs(31)).await;
    s.manager.synchronize().await;
    assert!(!s.manager.pressure().disk);
    let messages: Vec<String> = s.recorder.events().into_iter().map(|e| e.message).collect();
    assert!(
        messages[0].starts_with("The node was low on resource: ephemeral-storage. Threshold quantity: 10Gi, available: 8Gi. Container a was using 5Gi, request is 0, has larger consumption of ephemeral-storage. "),
        "{messages:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn pid_pressure_evicts_the_lower_priority_then_the_pod_with_more_processes() {
    let s = setup(vec![threshold(Signal::PidAvailable, "950", 0, None)], 30, 0);
    *s.evictor.pods.lock().unwrap() = vec![
        pod("many-high", None, Some(100)),
        pod("few-low", None, Some(0)),
        pod("many-low", None, Some(0)),
    ];
    *s.stats.0.lock().unwrap() = node(
        500,
        50,
        vec![
            pod_stats("many-high", MI, 0, 80),
            pod_stats("few-low", MI, 0, 2),
            pod_stats("many-low", MI, 0, 20),
        ],
    );
    let evicted = s.manager.synchronize().await;
    assert_eq!(evicted[0].metadata.name.as_deref(), Some("many-low"));
    assert!(s.manager.pressure().pid);
    assert_eq!(
        s.recorder.events()[0].message,
        "The node was low on resource: pids. Threshold quantity: 950, available: 900. "
    );
}

#[tokio::test(start_paused = true)]
async fn admission_under_pressure_follows_upstream() {
    let s = setup(
        vec![
            threshold(Signal::MemoryAvailable, "100Mi", 0, None),
            threshold(Signal::NodeFsAvailable, "10Gi", 0, None),
        ],
        30,
        0,
    );
    let admit = |p: &Pod| {
        s.manager
            .admit(&AdmitAttributes {
                pod: p,
                other_pods: &[],
            })
            .map_err(|r| (r.reason, r.message))
    };
    let best_effort = pod("be", None, None);
    let burstable = pod("bu", Some("10Mi"), None);
    let mut tolerating = pod("tol", None, None);
    tolerating.spec.as_mut().unwrap().tolerations = Some(vec![Toleration {
        key: Some("node.kubernetes.io/memory-pressure".into()),
        operator: Some("Exists".into()),
        effect: Some("NoSchedule".into()),
        ..Default::default()
    }]);
    assert!(admit(&best_effort).is_ok(), "no pressure");
    *s.stats.0.lock().unwrap() = node(80, 50, Vec::new());
    s.manager.synchronize().await;
    assert_eq!(
        admit(&best_effort),
        Err((
            "Evicted".into(),
            "The node had condition: [MemoryPressure]. ".into()
        ))
    );
    assert!(admit(&burstable).is_ok());
    assert!(admit(&tolerating).is_ok());
    assert!(admit(&static_pod("critical")).is_ok());
    // Disk pressure too: every pod but critical ones.
    *s.stats.0.lock().unwrap() = node(80, 5, Vec::new());
    s.manager.synchronize().await;
    assert_eq!(
        admit(&burstable),
        Err((
            "Evicted".into(),
            "The node had condition: [MemoryPressure DiskPressure]. ".into()
        ))
    );
    assert!(admit(&static_pod("critical")).is_ok());
}

#[tokio::test(start_paused = true)]
async fn local_storage_limits_evict_whatever_the_pressure() {
    use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, Volume};
    use node_core::stats::VolumeStats;
    let s = setup(Vec::new(), 30, 0);
    let mut scratch = pod("scratch", None, None);
    scratch.spec.as_mut().unwrap().volumes = Some(vec![Volume {
        name: "cache".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(ApiQuantity("100Mi".into())),
            ..Default::default()
        }),
        ..Default::default()
    }]);
    let mut limited = pod("limited", None, None);
    limited.spec.as_mut().unwrap().containers[0].resources = Some(ResourceRequirements {
        limits: Some(BTreeMap::from([(
            "ephemeral-storage".into(),
            ApiQuantity("1Gi".into()),
        )])),
        ..Default::default()
    });
    let within = pod("within", None, None);
    *s.evictor.pods.lock().unwrap() = vec![scratch, limited, within];
    let mut scratch_stats = pod_stats("scratch", MI, 0, 1);
    scratch_stats.volume_stats = vec![VolumeStats {
        name: "cache".into(),
        fs: FsStats {
            used_bytes: Some(150 * MI),
            ..Default::default()
        },
    }];
    *s.stats.0.lock().unwrap() = node(
        900,
        90,
        vec![
            scratch_stats,
            pod_stats("limited", MI, 2 << 30, 1),
            pod_stats("within", MI, 5 << 30, 1),
        ],
    );
    let evicted: Vec<String> = s
        .manager
        .synchronize()
        .await
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(evicted, ["scratch", "limited"]);
    let done = s.evictor.evicted.lock().unwrap().clone();
    assert_eq!(
        done[0].2.message.as_deref(),
        Some("Usage of EmptyDir volume \"cache\" exceeds the limit \"100Mi\". ")
    );
    assert_eq!(
        done[1].2.message.as_deref(),
        Some("Pod ephemeral local storage usage exceeds the total limit of containers 1Gi. ")
    );
    assert_eq!(done[0].1, 0, "grace period 0");
    assert!(
        done[0].2.conditions.is_none(),
        "no DisruptionTarget, as upstream"
    );
    assert!(!s.manager.pressure().disk, "no pressure involved");
}
