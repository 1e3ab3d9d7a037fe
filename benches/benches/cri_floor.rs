//! The raw CRI floor: RunPodSandbox + CreateContainer + StartContainer with no kubelet logic,
//! for 1 pod and for 10 pods concurrently, and the teardown (StopPodSandbox +
//! RemovePodSandbox), against a managed containerd started for this run.
//!
//! `cargo bench -p benches --bench cri_floor`

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use benches::{StartedPod, remove_pod, start_pod};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use futures::future::try_join_all;
use node_cri::ManagedContainerd;

fn floor(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let containerd = rt.block_on(async {
        let config = node_cri::harness::test_config("bench").expect("harness config");
        ManagedContainerd::start(config)
            .await
            .unwrap_or_else(|e| panic!("cannot start the managed containerd: {e}"))
    });
    let client = containerd.client().clone();
    let logs = containerd.config().dir.join("logs");

    let mut group = c.benchmark_group("cri_floor");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    for pods in [1usize, 10] {
        group.bench_with_input(BenchmarkId::new("start", pods), &pods, |b, &pods| {
            b.to_async(&rt).iter_custom(|iters| {
                let client = client.clone();
                let logs = logs.clone();
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t = Instant::now();
                        let started: Vec<StartedPod> =
                            try_join_all((0..pods).map(|_| start_pod(&client, &logs, "floor")))
                                .await
                                .expect("start pods");
                        total += t.elapsed();
                        try_join_all(started.iter().map(|p| remove_pod(&client, p)))
                            .await
                            .expect("remove pods");
                    }
                    total
                }
            });
        });
        group.bench_with_input(BenchmarkId::new("teardown", pods), &pods, |b, &pods| {
            b.to_async(&rt).iter_custom(|iters| {
                let client = client.clone();
                let logs = logs.clone();
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let started: Vec<StartedPod> =
                            try_join_all((0..pods).map(|_| start_pod(&client, &logs, "floor")))
                                .await
                                .expect("start pods");
                        let t = Instant::now();
                        try_join_all(started.iter().map(|p| remove_pod(&client, p)))
                            .await
                            .expect("remove pods");
                        total += t.elapsed();
                    }
                    total
                }
            });
        });
    }
    group.finish();
    rt.block_on(async move { containerd.stop().await.expect("stop containerd") });
}

criterion_group!(benches, floor);
criterion_main!(benches);
