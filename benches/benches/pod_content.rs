//! What each part of the kubelet's pod configuration costs the runtime: 30 pods started
//! concurrently straight through CRI (no kubelet), made by the functions the kubelet's CRI
//! runtime uses, with one part left out at a time, against the harness's minimal pods. Each
//! round runs every variant once, in turn, so that the VM's drift weighs on all alike
//! (`POD_CONTENT_ROUNDS`, default 5). The figures tell which part of the distance between the
//! kubelet's pods and the minimal floor is the pods' content, not the kubelet's work.
//!
//! `cargo bench -p benches --bench pod_content`

use std::path::Path;
use std::time::{Duration, Instant};

use benches::{
    StartedPod, Tweaks, bench_node_context, bench_pods, remove_pod, start_pod,
    start_pod_as_kubelet_with,
};
use futures::future::try_join_all;
use node_cri::{CriClient, ManagedContainerd};

const PODS: usize = 30;

/// The variants, by name: `None` is the harness's minimal pod.
fn variants() -> Vec<(&'static str, Option<Tweaks>)> {
    let all = Tweaks {
        sandbox_unconfined: true,
        flat_cgroup: true,
        no_resources: true,
        no_mounts: true,
        no_dns: true,
    };
    vec![
        ("minimal", None),
        ("kubelet's pods", Some(Tweaks::default())),
        (
            "- sandbox seccomp",
            Some(Tweaks {
                sandbox_unconfined: true,
                ..Tweaks::default()
            }),
        ),
        (
            "- QoS cgroup nesting",
            Some(Tweaks {
                flat_cgroup: true,
                ..Tweaks::default()
            }),
        ),
        (
            "- resources",
            Some(Tweaks {
                no_resources: true,
                ..Tweaks::default()
            }),
        ),
        (
            "- bind mounts",
            Some(Tweaks {
                no_mounts: true,
                ..Tweaks::default()
            }),
        ),
        (
            "- DNS config",
            Some(Tweaks {
                no_dns: true,
                ..Tweaks::default()
            }),
        ),
        ("- all five", Some(all)),
    ]
}

async fn run_variant(
    client: &CriClient,
    dir: &Path,
    image_id: &str,
    pods: &[k8s_openapi::api::core::v1::Pod],
    tweaks: Option<Tweaks>,
) -> Duration {
    let node = bench_node_context(&dir.join("content-logs"));
    let files = dir.join("content-files");
    let logs = dir.join("content-minimal-logs");
    let t = Instant::now();
    let started: Vec<StartedPod> = try_join_all(pods.iter().map(|pod| {
        let (node, files, logs) = (&node, &files, &logs);
        async move {
            match tweaks {
                None => start_pod(client, logs, "content")
                    .await
                    .map_err(|e| e.to_string()),
                Some(tw) => start_pod_as_kubelet_with(client, node, pod, image_id, files, &tw)
                    .await
                    .map_err(|e| e.to_string()),
            }
        }
    }))
    .await
    .expect("start pods");
    let elapsed = t.elapsed();
    try_join_all(started.iter().map(|p| remove_pod(client, p)))
        .await
        .expect("remove pods");
    elapsed
}

fn main() {
    let rounds: usize = std::env::var("POD_CONTENT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let containerd = rt.block_on(async {
        let config = node_cri::harness::test_config("content").expect("harness config");
        ManagedContainerd::start(config)
            .await
            .unwrap_or_else(|e| panic!("cannot start the managed containerd: {e}"))
    });
    let client = containerd.client().clone();
    let dir = containerd.config().dir.clone();
    let image_id = rt
        .block_on(client.image_status(node_images::oci::BUSYBOX_IMAGE))
        .expect("ImageStatus")
        .expect("the busybox image is loaded")
        .id;
    let pods = bench_pods(&dir.join("manifests"), PODS);
    let variants = variants();
    let mut times = vec![Vec::new(); variants.len()];
    // One warm-up round, not counted.
    for round in 0..=rounds {
        for (i, (_, tweaks)) in variants.iter().enumerate() {
            let d = rt.block_on(run_variant(&client, &dir, &image_id, &pods, *tweaks));
            if round > 0 {
                times[i].push(d.as_secs_f64());
            }
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let minimal = mean(&times[0]);
    let kubelet = mean(&times[1]);
    for ((name, _), t) in variants.iter().zip(&times) {
        let m = mean(t);
        println!(
            "pod_content: {PODS} pods, {name:<22} {:>6.0} ms  vs minimal {:.3}  vs kubelet's pods {:.3}  (rounds: {})",
            m * 1000.0,
            m / minimal,
            m / kubelet,
            t.iter()
                .map(|s| format!("{:.0}", s * 1000.0))
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    rt.block_on(async move {
        containerd.stop().await.expect("stop containerd");
        node_cri::harness::detach_mounts_under(&dir);
    });
}
