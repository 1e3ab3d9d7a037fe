//! Eviction reaction: how long after the node's memory crosses a hard `memory.available`
//! threshold the kubelet starts evicting the pod that filled it, with the memory threshold
//! notifier (`kernelMemcgNotification`, on by default here: cgroup v1 memory events) and with
//! the 10 s poll alone, rounds interleaved on one control plane.
//!
//! The crossing is measured from outside, as upstream's signal is computed: every 5 ms the
//! root memory cgroup's working set (usage minus inactive file pages) against MemTotal; the
//! eviction's start is the kubelet's "evicting pod" log line (just before it asks the pod
//! worker to stop the pod). Each round gets a fresh kubelet; the pod fills a memory-backed
//! emptyDir 64 MiB at a time until it is evicted.
//!
//! `KUBEBUILDER_ASSETS=... cargo bench -p kubelet --features apiserver-tests --bench eviction`
//! (`EVICTION_ROUNDS` changes the 3 rounds per mode.)

#![allow(missing_docs)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::PostParams;
use node_core::testing::control_plane::ControlPlane;
use node_cri::harness::node_memory_available as memory_available;

const KUBELET: &str = env!("CARGO_BIN_EXE_kubelet");
const NODE: &str = "localhost";
const MI: u64 = 1 << 20;

fn hog(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": NODE,
            "automountServiceAccountToken": false,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "volumes": [{"name": "fill", "emptyDir": {"medium": "Memory"}}],
            "containers": [{
                "name": "hog",
                "image": "docker.io/library/busybox:1.35",
                "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "i=0; while true; do i=$((i+1)); head -c 67108864 /dev/zero > /fill/$i; sleep 0.05; done"],
                "volumeMounts": [{"name": "fill", "mountPath": "/fill"}]
            }]
        }
    }))
    .unwrap()
}

/// One round: a fresh kubelet, a pod filling memory; the seconds from the crossing to the
/// eviction's start.
async fn round(cp: &ControlPlane, notifier: bool, n: usize) -> f64 {
    let kubeconfig = cp
        .kubeconfig_for_client_cert(&format!("system:node:{NODE}"), &["system:nodes"])
        .expect("node kubeconfig");
    let root = std::path::PathBuf::from(format!("/tmp/na-{}-evict-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    // The threshold 1 GiB below what is free now.
    let threshold = memory_available() - 1024 * MI;
    let mut kubelet = Command::new(KUBELET)
        .arg(format!(
            "--eviction-hard=memory.available<{}Mi",
            threshold / MI
        ))
        .arg(format!("--kernel-memcg-notification={notifier}"))
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--root-dir={}", root.display()))
        .arg(format!("--hostname-override={NODE}"))
        .arg("--address=127.0.0.1")
        .arg("--healthz-port=0")
        .arg(format!("--cert-dir={}", root.join("pki").display()))
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the kubelet");
    let evicting: Arc<Mutex<Option<k8s_openapi::jiff::Timestamp>>> = Arc::default();
    let stderr = kubelet.stderr.take().unwrap();
    {
        let evicting = evicting.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("eviction manager: evicting pod")
                    && let Some(t) = line.split_whitespace().next().and_then(|t| t.parse().ok())
                {
                    evicting.lock().unwrap().get_or_insert(t);
                }
            }
        });
    }
    let admin = cp.admin_client();
    let nodes: Api<Node> = Api::all(admin.clone());
    let deadline = Instant::now() + Duration::from_secs(120);
    while !nodes.get_opt(NODE).await.ok().flatten().is_some_and(|n| {
        n.status
            .and_then(|s| s.conditions)
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    }) {
        assert!(Instant::now() < deadline, "the node did not turn Ready");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    // The crossing, watched from outside every 5 ms.
    let crossed: Arc<Mutex<Option<k8s_openapi::jiff::Timestamp>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (crossed, stop) = (crossed.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if memory_available() < threshold {
                    crossed
                        .lock()
                        .unwrap()
                        .get_or_insert_with(k8s_openapi::jiff::Timestamp::now);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let name = format!("hog-{n}");
    pods.create(&PostParams::default(), &hog(&name))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while evicting.lock().unwrap().is_none() {
        assert!(Instant::now() < deadline, "no eviction within 120 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let (at, started) = (
        crossed.lock().unwrap().expect("the threshold was crossed"),
        evicting.lock().unwrap().unwrap(),
    );
    // Let the pod go and its memory be freed before the next round.
    let deadline = Instant::now() + Duration::from_secs(60);
    while memory_available() < threshold + 512 * MI && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(kubelet.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = kubelet.wait();
    node_cri::harness::detach_mounts_under(&root);
    let _ = std::fs::remove_dir_all(&root);
    started.duration_since(at).as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::var("EVICTION_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        node_cri::harness::clean_stale_dirs();
        let cp = ControlPlane::start()
            .await
            .unwrap_or_else(|e| panic!("cannot start the control plane: {e:#}"));
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for r in 0..rounds {
            let a = round(&cp, true, 2 * r).await;
            let b = round(&cp, false, 2 * r + 1).await;
            println!("round {r}: notifier {a:.3} s, 10 s poll alone {b:.3} s");
            with.push(a);
            without.push(b);
        }
        let (a, b) = (median(with), median(without));
        println!(
            "eviction reaction (threshold crossed -> evicting), median of {rounds}: notifier {a:.3} s vs poll alone {b:.3} s (ratio {:.3}; target under 1 s with the notifier)",
            a / b
        );
        cp.stop().await;
    });
}
