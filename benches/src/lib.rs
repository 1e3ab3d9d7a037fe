//! Shared pieces of the workspace's criterion benchmarks.
//!
//! The benchmarks run against a real containerd that the harness starts on private paths
//! (`node_cri::harness`), with the locally built images. `cri_floor` measures the raw CRI
//! floor of starting pods (RunPodSandbox + CreateContainer + StartContainer, no kubelet
//! logic), the yardstick the kubelet's own start-up benchmark is compared against.
#![forbid(unsafe_code)]

use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
use node_core::config::{ManifestOrigin, decode_static_pod};
use node_cri::cri;
use node_cri::harness::{busybox_container, sandbox_config, unique};
use node_cri::runtime::container::{ContainerInputs, ContainerKind, container_config};
use node_cri::runtime::sandbox::{NodeContext, pod_sandbox_config};
use node_cri::{CriClient, CriError};

/// A started pod: its sandbox id.
#[derive(Debug)]
pub struct StartedPod {
    /// The sandbox id.
    pub sandbox: String,
}

/// Starts one pod the way the floor measures it: RunPodSandbox, then CreateContainer and
/// StartContainer for one busybox container that sleeps.
pub async fn start_pod(
    client: &CriClient,
    log_root: &Path,
    prefix: &str,
) -> Result<StartedPod, CriError> {
    let name = unique(prefix);
    let log_dir = log_root.join(&name);
    let _ = std::fs::create_dir_all(&log_dir);
    let config: cri::PodSandboxConfig = sandbox_config("bench", &name, &log_dir, &[]);
    let sandbox = client.run_pod_sandbox(config.clone(), "").await?;
    let id = client
        .create_container(
            &sandbox,
            busybox_container("main", &["sleep", "3600"], &[]),
            config,
        )
        .await?;
    client.start_container(&id).await?;
    Ok(StartedPod { sandbox })
}

/// Starts one pod from the very configurations the kubelet's CRI runtime generates for it
/// (`pod_sandbox_config` and `container_config`, with the image already resolved to its id),
/// with no kubelet logic around them: RunPodSandbox, then CreateContainer and StartContainer
/// for each of its containers in order, each with the two bind mounts the kubelet gives a
/// container without volumes (its `/etc/hosts` and its termination-message file, plain files
/// made under `files`). This is the floor the kubelet's start-up of the same pod is compared
/// against: the runtime does exactly the same work in both.
pub async fn start_pod_as_kubelet(
    client: &CriClient,
    node: &NodeContext,
    pod: &Pod,
    image_id: &str,
    files: &Path,
) -> Result<StartedPod, Box<dyn std::error::Error + Send + Sync>> {
    start_pod_as_kubelet_with(client, node, pod, image_id, files, &Tweaks::default()).await
}

/// Parts of the kubelet's pod configurations left out, to measure what each costs the
/// runtime (`benches/pod_content`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Tweaks {
    /// The sandbox without a seccomp profile (the kubelet asks for RuntimeDefault).
    pub sandbox_unconfined: bool,
    /// The sandbox directly under the cgroup root, not under the QoS class's cgroup.
    pub flat_cgroup: bool,
    /// The containers without resources (shares, OOM score, ...).
    pub no_resources: bool,
    /// The containers without the two bind mounts.
    pub no_mounts: bool,
    /// The sandbox without DNS configuration (no resolv.conf written for it).
    pub no_dns: bool,
}

/// [`start_pod_as_kubelet`] with the parts named in `tweaks` left out.
pub async fn start_pod_as_kubelet_with(
    client: &CriClient,
    node: &NodeContext,
    pod: &Pod,
    image_id: &str,
    files: &Path,
    tweaks: &Tweaks,
) -> Result<StartedPod, Box<dyn std::error::Error + Send + Sync>> {
    let (mut config, _) = pod_sandbox_config(pod, 0, node)?;
    if let Some(linux) = config.linux.as_mut() {
        if tweaks.sandbox_unconfined
            && let Some(sc) = linux.security_context.as_mut()
        {
            sc.seccomp = None;
        }
        if tweaks.flat_cgroup {
            let leaf = linux
                .cgroup_parent
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            linux.cgroup_parent = format!("{}/{leaf}", node.cgroup_root);
        }
    }
    if tweaks.no_dns {
        config.dns_config = None;
    }
    let _ = std::fs::create_dir_all(&config.log_directory);
    let sandbox = client.run_pod_sandbox(config.clone(), "").await?;
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let uid = pod.metadata.uid.as_deref().unwrap_or("pod");
    for container in containers {
        let dir = files.join(uid).join(&container.name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("etc-hosts"), "127.0.0.1\tlocalhost\n")?;
        std::fs::write(dir.join("termination-log"), "")?;
        let mounts = [
            cri::Mount {
                container_path: "/etc/hosts".into(),
                host_path: dir.join("etc-hosts").display().to_string(),
                selinux_relabel: true,
                ..Default::default()
            },
            cri::Mount {
                container_path: "/dev/termination-log".into(),
                host_path: dir.join("termination-log").display().to_string(),
                ..Default::default()
            },
        ];
        let inputs = ContainerInputs {
            pod,
            container,
            kind: ContainerKind::Regular,
            restart_count: 0,
            pod_ips: &[],
            image_ref: image_id,
            image_uid: None,
            image_username: "",
            mounts: &mounts,
        };
        let mut container_config = container_config(&inputs, node)?;
        if tweaks.no_resources
            && let Some(linux) = container_config.linux.as_mut()
        {
            linux.resources = None;
        }
        if tweaks.no_mounts {
            container_config.mounts.clear();
        }
        let _ = std::fs::create_dir_all(Path::new(&config.log_directory).join(&container.name));
        let id = client
            .create_container(&sandbox, container_config, config.clone())
            .await?;
        client.start_container(&id).await?;
    }
    Ok(StartedPod { sandbox })
}

/// The node name of the start-up benchmarks.
pub const BENCH_NODE: &str = "bench-node";

/// The start-up benchmarks' static pod manifest number `i`: busybox `sleep`, grace 1.
pub fn bench_manifest(i: usize) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bench-{i}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: docker.io/library/busybox:1.35\n    command: [\"sleep\", \"3600\"]\n"
    )
}

/// The pods the kubelet makes of the first `n` manifests written as `bench-<i>.yaml` in
/// `manifests` (names, UIDs and annotations as the file source gives them), for the floors.
pub fn bench_pods(manifests: &Path, n: usize) -> Vec<Pod> {
    (0..n)
        .map(|i| {
            let origin = ManifestOrigin::File(manifests.join(format!("bench-{i}.yaml")));
            decode_static_pod(bench_manifest(i).as_bytes(), &origin, BENCH_NODE)
                .expect("bench manifest")
        })
        .collect()
}

/// The node the start-up benchmarks' kubelet and floors run as: cgroupfs, QoS cgroups under a
/// private root, container logs under `logs`.
pub fn bench_node_context(logs: &Path) -> NodeContext {
    NodeContext {
        node_name: BENCH_NODE.into(),
        node_ips: vec!["127.0.0.1".parse().expect("loopback")],
        cluster_dns: Vec::new(),
        cluster_domain: String::new(),
        resolv_conf: Some("/etc/resolv.conf".into()),
        pod_logs_dir: logs.to_path_buf(),
        cgroup_driver: node_cri::CgroupDriver::Cgroupfs,
        cgroups_per_qos: true,
        cgroup_root: format!("/node-agent-test/{}", std::process::id()),
        allocatable: node_core::downward::NodeAllocatable {
            cpu_millis: 2000,
            memory_bytes: 8 << 30,
        },
        machine_memory_capacity_bytes: 8 << 30,
        ..NodeContext::default()
    }
}

/// Tears a pod down: StopPodSandbox (which stops its containers) and RemovePodSandbox.
pub async fn remove_pod(client: &CriClient, pod: &StartedPod) -> Result<(), CriError> {
    client.stop_pod_sandbox(&pod.sandbox).await?;
    client.remove_pod_sandbox(&pod.sandbox).await
}
