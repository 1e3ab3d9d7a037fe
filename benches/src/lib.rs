//! Shared pieces of the workspace's criterion benchmarks.
//!
//! The benchmarks run against a real containerd that the harness starts on private paths
//! (`node_cri::harness`), with the locally built images. `cri_floor` measures the raw CRI
//! floor of starting pods (RunPodSandbox + CreateContainer + StartContainer, no kubelet
//! logic), the yardstick the kubelet's own start-up benchmark is compared against.
#![forbid(unsafe_code)]

use std::path::Path;

use node_cri::cri;
use node_cri::harness::{busybox_container, sandbox_config, unique};
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

/// Tears a pod down: StopPodSandbox (which stops its containers) and RemovePodSandbox.
pub async fn remove_pod(client: &CriClient, pod: &StartedPod) -> Result<(), CriError> {
    client.stop_pod_sandbox(&pod.sandbox).await?;
    client.remove_pod_sandbox(&pod.sandbox).await
}
