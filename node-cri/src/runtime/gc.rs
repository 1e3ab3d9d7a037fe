//! Garbage collection of dead containers, sandboxes and pod log directories (upstream
//! `kuberuntime_gc.go`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::SystemTime;

use node_core::runtime::{GcPolicy, PodStateProvider, PodUid};
use tracing::{debug, info};

use super::labels::ContainerInfo;
use crate::client::CriClient;
use crate::cri;
use crate::error::CriError;

/// Removes what may go; returns the UIDs of pods whose content was removed entirely.
pub(crate) async fn collect(
    client: &CriClient,
    pod_logs_dir: &Path,
    policy: &GcPolicy,
    pods: &dyn PodStateProvider,
    all_sources_ready: bool,
) -> Result<Vec<String>, CriError> {
    let now = SystemTime::now();
    let min_created = now
        .checked_sub(policy.min_age)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let containers = client.list_containers(None).await?;

    // Dead containers grouped by (pod UID, container name), newest first.
    let mut units: BTreeMap<(String, String), Vec<&cri::Container>> = BTreeMap::new();
    let mut pods_with_containers: BTreeSet<String> = BTreeSet::new();
    for c in &containers {
        let info = ContainerInfo::summary(&c.labels, &c.annotations);
        if info.pod_uid.is_empty() {
            continue;
        }
        pods_with_containers.insert(info.pod_uid.clone());
        if c.state == cri::ContainerState::ContainerRunning as i32 {
            continue;
        }
        let created = SystemTime::UNIX_EPOCH
            + std::time::Duration::from_nanos(u64::try_from(c.created_at).unwrap_or(0));
        if created > min_created {
            continue;
        }
        let name = c
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or(info.container_name);
        units.entry((info.pod_uid, name)).or_default().push(c);
    }
    let mut removed_containers = 0;
    for ((uid, _), mut dead) in units {
        dead.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        let keep = if all_sources_ready && pods.should_pod_content_be_removed(&PodUid::new(uid)) {
            0
        } else {
            policy.max_per_pod_container
        };
        for c in dead.into_iter().skip(keep) {
            match client.remove_container(&c.id).await {
                Ok(()) => removed_containers += 1,
                Err(e) if e.is_not_found() => {}
                // One failure must not stop the rest of the collection.
                Err(e) => {
                    tracing::warn!(container = %c.id, error = %e, "cannot remove a dead container")
                }
            }
        }
    }

    // Sandboxes: active ones (ready, or with containers) stay; of the inactive ones the newest
    // stays unless the pod's content may go.
    let containers = client.list_containers(None).await?;
    let with_containers: BTreeSet<&str> = containers
        .iter()
        .map(|c| c.pod_sandbox_id.as_str())
        .collect();
    let sandboxes = client.list_pod_sandbox(None).await?;
    let mut by_pod: BTreeMap<String, Vec<&cri::PodSandbox>> = BTreeMap::new();
    for s in &sandboxes {
        if let Some(m) = &s.metadata {
            by_pod.entry(m.uid.clone()).or_default().push(s);
        }
    }
    let mut gone = Vec::new();
    let mut removed_sandboxes = 0;
    for (uid, mut list) in by_pod {
        list.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        let removable =
            all_sources_ready && pods.should_pod_content_be_removed(&PodUid::new(uid.clone()));
        let inactive: Vec<&cri::PodSandbox> = list
            .iter()
            .copied()
            .filter(|s| {
                s.state != cri::PodSandboxState::SandboxReady as i32
                    && !with_containers.contains(s.id.as_str())
            })
            .collect();
        let skip = usize::from(!removable);
        for s in inactive.iter().skip(skip) {
            match client.remove_pod_sandbox(&s.id).await {
                Ok(()) => removed_sandboxes += 1,
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::warn!(sandbox = %s.id, error = %e, "cannot remove a dead sandbox")
                }
            }
        }
        if removable && inactive.len() == list.len() {
            gone.push(uid);
        }
    }

    // Log directories of pods whose content may go.
    if all_sources_ready && let Ok(entries) = std::fs::read_dir(pod_logs_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(uid) = name.rsplit('_').next() else {
                continue;
            };
            if name.matches('_').count() >= 2
                && pods.should_pod_content_be_removed(&PodUid::new(uid))
                && !pods_with_containers.contains(uid)
            {
                debug!(dir = %entry.path().display(), "removing pod log directory");
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    if removed_containers + removed_sandboxes > 0 {
        info!(removed_containers, removed_sandboxes, "garbage collected");
    }
    Ok(gone)
}
