//! Pulling 8 images from a local registry (`docker-registry` on 127.0.0.1) through the image
//! manager, serialized (`serializeImagePulls: true`) versus in parallel, in the same run on the
//! same managed containerd. Prints the ratio serial / parallel.
//!
//! `cargo bench -p benches --bench image_pull`

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use node_core::events::LogRecorder;
use node_cri::harness::Registry;
use node_cri::{CriImageService, ManagedContainerd};
use node_images::credentials::Keyring;
use node_images::manager::{ImageManager, PullConcurrency};
use node_images::oci::{DEFAULT_BUSYBOX_PATH, busybox_image};

const IMAGES: usize = 8;

fn pod(i: usize, image: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("pull-{i}")),
            namespace: Some("default".into()),
            uid: Some(format!("pull-{i}")),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".into(),
                image: Some(image.into()),
                image_pull_policy: Some("IfNotPresent".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pulls(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut config = node_cri::harness::test_config("pull").expect("harness config");
    let registry = Registry::start("pull", None).unwrap_or_else(|e| panic!("{e}"));
    config.plain_http_registries = vec![registry.host().into()];
    // Eight images with layers of their own (4 MiB of distinct content each).
    let images: Vec<String> = (0..IMAGES)
        .map(|i| {
            let archive = config.dir.join(format!("img{i}.tar"));
            let filler: Vec<u8> = (0..4 << 20)
                .map(|b: u32| (b.wrapping_mul(2654435761).wrapping_add(i as u32) >> 13) as u8)
                .collect();
            busybox_image(
                std::path::Path::new(DEFAULT_BUSYBOX_PATH),
                &format!("example.invalid/img{i}:1"),
            )
            .file("/filler", filler, 0o644)
            .build()
            .expect("build image")
            .write_to(&archive)
            .expect("write image");
            registry
                .push(&archive, &format!("bench/img{i}:1"))
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    let containerd = rt.block_on(async {
        ManagedContainerd::start(config)
            .await
            .unwrap_or_else(|e| panic!("cannot start the managed containerd: {e}"))
    });
    let client = containerd.client().clone();
    let pods: Arc<Vec<Pod>> = Arc::new(
        images
            .iter()
            .enumerate()
            .map(|(i, img)| pod(i, img))
            .collect(),
    );

    let mut group = c.benchmark_group("image_pull");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    let mut means = Vec::new();
    for (name, concurrency) in [
        ("serial/8", PullConcurrency::Serial),
        ("parallel/8", PullConcurrency::Parallel(None)),
    ] {
        let manager = Arc::new(ImageManager::new(
            Arc::new(CriImageService::new(client.clone())),
            Arc::new(LogRecorder),
            concurrency,
        ));
        let times = Arc::new(Mutex::new(Vec::new()));
        let recorded = times.clone();
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (manager, client, pods, images, times) = (
                    manager.clone(),
                    client.clone(),
                    pods.clone(),
                    images.clone(),
                    recorded.clone(),
                );
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        for image in &images {
                            let _ = client.remove_image(image).await;
                        }
                        let keyring = Keyring::new();
                        let t = Instant::now();
                        let results = futures::future::join_all(pods.iter().map(|p| {
                            manager.ensure_image_exists(
                                p,
                                &p.spec.as_ref().expect("spec").containers[0],
                                &keyring,
                            )
                        }))
                        .await;
                        let took = t.elapsed();
                        for r in results {
                            r.unwrap_or_else(|e| panic!("{e}"));
                        }
                        total += took;
                        times.lock().expect("times").push(took);
                    }
                    total
                }
            });
        });
        let t = times.lock().expect("times");
        means.push(t.iter().sum::<Duration>().as_secs_f64() / t.len().max(1) as f64);
    }
    group.finish();
    println!(
        "image_pull: {IMAGES} images: serial {:.0} ms, parallel {:.0} ms, ratio serial/parallel {:.2}",
        means[0] * 1000.0,
        means[1] * 1000.0,
        means[0] / means[1]
    );
    rt.block_on(async move { containerd.stop().await.expect("stop containerd") });
    drop(registry);
}

criterion_group!(benches, pulls);
criterion_main!(benches);
