//! Pod start-up: N = 30 static pods from manifests written to all containers running (as the
//! runtime reports), against the raw CRI floor (the same 30 sandboxes and containers created
//! and started directly, concurrently), in the same run on the same managed containerd. Prints
//! the ratio kubelet / floor.
//!
//! `cargo bench -p benches --bench pod_startup`

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use benches::{StartedPod, remove_pod, start_pod};
use criterion::{Criterion, criterion_group, criterion_main};
use futures::future::try_join_all;
use node_core::config::PodConfig;
use node_core::events::LogRecorder;
use node_core::kubelet::{EngineConfig, Kubelet};
use node_core::runtime::GcPolicy;
use node_cri::runtime::CriRuntime;
use node_cri::runtime::sandbox::NodeContext;
use node_cri::{CriClient, ManagedContainerd, cri};

const PODS: usize = 30;

fn manifest(i: usize) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bench-{i}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: docker.io/library/busybox:1.35\n    command: [\"sleep\", \"3600\"]\n"
    )
}

async fn running_containers(client: &CriClient) -> usize {
    client
        .list_containers(Some(cri::ContainerFilter {
            state: Some(cri::ContainerStateValue {
                state: cri::ContainerState::ContainerRunning as i32,
            }),
            ..Default::default()
        }))
        .await
        .map(|c| c.len())
        .unwrap_or(0)
}

async fn wait_running(client: &CriClient, n: usize) {
    while running_containers(client).await < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn clear(client: &CriClient) {
    for s in client.list_pod_sandbox(None).await.unwrap_or_default() {
        let _ = client.stop_pod_sandbox(&s.id).await;
        let _ = client.remove_pod_sandbox(&s.id).await;
    }
}

fn node_context(logs: &Path) -> NodeContext {
    NodeContext {
        node_name: "bench-node".into(),
        node_ips: vec!["127.0.0.1".parse().expect("loopback")],
        cluster_dns: Vec::new(),
        cluster_domain: String::new(),
        resolv_conf: Some("/etc/resolv.conf".into()),
        pod_logs_dir: logs.to_path_buf(),
        cgroup_driver: node_cri::CgroupDriver::Cgroupfs,
        cgroups_per_qos: true,
        cgroup_root: format!("/node-agent-test/{}", std::process::id()),
        node_allocatable_cpu_millis: 2000,
        node_allocatable_memory_bytes: 8 << 30,
        machine_memory_capacity_bytes: 8 << 30,
    }
}

fn startup(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let containerd = rt.block_on(async {
        let config = node_cri::harness::test_config("startup").expect("harness config");
        ManagedContainerd::start(config)
            .await
            .unwrap_or_else(|e| panic!("cannot start the managed containerd: {e}"))
    });
    let client = containerd.client().clone();
    let dir = containerd.config().dir.clone();
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).expect("manifest dir");

    let floor_times = Arc::new(Mutex::new(Vec::new()));
    let kubelet_times = Arc::new(Mutex::new(Vec::new()));
    let mut group = c.benchmark_group("pod_startup");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(60));

    let logs = dir.join("floor-logs");
    let times = floor_times.clone();
    group.bench_function("cri_floor/30", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (client, logs, times) = (client.clone(), logs.clone(), times.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let started: Vec<StartedPod> =
                        try_join_all((0..PODS).map(|_| start_pod(&client, &logs, "floor")))
                            .await
                            .expect("start pods");
                    let took = t.elapsed();
                    total += took;
                    times.lock().expect("times").push(took);
                    try_join_all(started.iter().map(|p| remove_pod(&client, p)))
                        .await
                        .expect("remove pods");
                }
                total
            }
        });
    });

    // The kubelet, started after the floor phase (it would stop pods it does not know),
    // watching the manifest directory.
    let _runtime_context = rt.enter();
    let runtime = Arc::new(CriRuntime::new(
        client.clone(),
        node_context(&dir.join("pod-logs")),
        Arc::new(LogRecorder),
    ));
    let (sources, updates) = PodConfig::new("bench-node");
    let _file = sources.file_source(&manifests, Duration::from_secs(20));
    let kubelet = Kubelet::new(
        runtime,
        Arc::new(LogRecorder),
        EngineConfig {
            node_name: "bench-node".into(),
            node_ips: vec!["127.0.0.1".into()],
            sync_frequency: Duration::from_secs(60),
            max_pods: 110,
            gc_policy: GcPolicy::default(),
        },
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let engine = rt.spawn(kubelet.run(updates, async {
        let _ = stop_rx.await;
    }));

    let times = kubelet_times.clone();
    group.bench_function("kubelet/30", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (client, manifests, times) = (client.clone(), manifests.clone(), times.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    for i in 0..PODS {
                        std::fs::write(manifests.join(format!("bench-{i}.yaml")), manifest(i))
                            .expect("write manifest");
                    }
                    wait_running(&client, PODS).await;
                    let took = t.elapsed();
                    total += took;
                    times.lock().expect("times").push(took);
                    for i in 0..PODS {
                        let _ = std::fs::remove_file(manifests.join(format!("bench-{i}.yaml")));
                    }
                    while running_containers(&client).await > 0 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    clear(&client).await;
                }
                total
            }
        });
    });
    group.finish();

    let mean = |v: &Mutex<Vec<Duration>>| {
        let v = v.lock().expect("times");
        v.iter().sum::<Duration>().as_secs_f64() / v.len().max(1) as f64
    };
    let (floor, kubelet) = (mean(&floor_times), mean(&kubelet_times));
    println!(
        "pod_startup: {PODS} pods: kubelet {:.0} ms, CRI floor {:.0} ms, ratio {:.3} (target <= 1.15)",
        kubelet * 1000.0,
        floor * 1000.0,
        kubelet / floor
    );
    let _ = stop_tx.send(());
    rt.block_on(async move {
        let _ = engine.await;
        clear(&client).await;
        containerd.stop().await.expect("stop containerd");
    });
}

criterion_group!(benches, startup);
criterion_main!(benches);
