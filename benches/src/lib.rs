//! Shared pieces of the workspace's criterion benchmarks.
//!
//! The benchmarks run against a real containerd that the harness starts on private paths
//! (`node_cri::harness`), with the locally built images. `cri_floor` measures the raw CRI
//! floor of starting pods (RunPodSandbox + CreateContainer + StartContainer, no kubelet
//! logic), the yardstick the kubelet's own start-up benchmark is compared against.
#![forbid(unsafe_code)]

use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
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
    let (config, _) = pod_sandbox_config(pod, 0, node)?;
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
        let container_config = container_config(&inputs, node)?;
        let _ = std::fs::create_dir_all(Path::new(&config.log_directory).join(&container.name));
        let id = client
            .create_container(&sandbox, container_config, config.clone())
            .await?;
        client.start_container(&id).await?;
    }
    Ok(StartedPod { sandbox })
}

/// Tears a pod down: StopPodSandbox (which stops its containers) and RemovePodSandbox.
pub async fn remove_pod(client: &CriClient, pod: &StartedPod) -> Result<(), CriError> {
    client.stop_pod_sandbox(&pod.sandbox).await?;
    client.remove_pod_sandbox(&pod.sandbox).await
}
