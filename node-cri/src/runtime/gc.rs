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

/// The shortest stop the kubelet gives a container (upstream `minimumGracePeriodInSeconds`).
const MINIMUM_GRACE_PERIOD: i64 = 2;

/// A dead container that may be collected.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Dead {
    id: String,
    created_at: i64,
    /// In an unknown state: it may still run, so it is stopped before its removal.
    unknown: bool,
    /// The grace period recorded in its annotations.
    grace: Option<i64>,
}

/// Which dead containers go (upstream `evictContainers`): all of a pod whose content may be
/// removed; beyond `max_per_pod_container` per (pod, container name), the oldest; and when the
/// node keeps more than `max_containers`, first an equal share per unit (at least one), then
/// the oldest over all.
fn containers_to_evict(
    units: BTreeMap<(String, String), Vec<Dead>>,
    policy: &GcPolicy,
    removable: impl Fn(&str) -> bool,
) -> Vec<Dead> {
    let mut evict = Vec::new();
    let mut kept: Vec<Vec<Dead>> = Vec::new();
    for ((uid, _), mut dead) in units {
        // Newest first.
        dead.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        let keep = if removable(&uid) {
            0
        } else {
            policy.max_per_pod_container
        };
        if dead.len() > keep {
            evict.extend(dead.split_off(keep));
        }
        if !dead.is_empty() {
            kept.push(dead);
        }
    }
    if let Some(max) = policy.max_containers {
        let total: usize = kept.iter().map(Vec::len).sum();
        if total > max {
            let share = (max / kept.len().max(1)).max(1);
            for unit in &mut kept {
                if unit.len() > share {
                    evict.extend(unit.split_off(share));
                }
            }
            let mut rest: Vec<Dead> = kept.into_iter().flatten().collect();
            if rest.len() > max {
                rest.sort_by_key(|c| std::cmp::Reverse(c.created_at));
                evict.extend(rest.split_off(max));
            }
        }
    }
    evict
}

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

    // Dead containers grouped by (pod UID, container name).
    let mut units: BTreeMap<(String, String), Vec<Dead>> = BTreeMap::new();
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
        units.entry((info.pod_uid, name)).or_default().push(Dead {
            id: c.id.clone(),
            created_at: c.created_at,
            unknown: c.state == cri::ContainerState::ContainerUnknown as i32,
            grace: info
                .pod_deletion_grace_period
                .or(info.termination_grace_period),
        });
    }
    let removable =
        |uid: &str| all_sources_ready && pods.should_pod_content_be_removed(&PodUid::new(uid));
    let mut removed_containers = 0;
    for c in containers_to_evict(units, policy, removable) {
        // A container in an unknown state may still run: stopped first, as upstream.
        if c.unknown {
            let grace = c.grace.unwrap_or(0).max(MINIMUM_GRACE_PERIOD);
            if let Err(e) = client.stop_container(&c.id, grace).await
                && !e.is_not_found()
            {
                tracing::warn!(container = %c.id, error = %e, "cannot stop a container in an unknown state before removing it");
                continue;
            }
        }
        match client.remove_container(&c.id).await {
            Ok(()) => removed_containers += 1,
            Err(e) if e.is_not_found() => {}
            // One failure must not stop the rest of the collection.
            Err(e) => {
                tracing::warn!(container = %c.id, error = %e, "cannot remove a dead container")
            }
        }
    }

    // Sandboxes: active ones (ready, or with containers) stay; the pod's newest sandbox
    // stays unless the pod's content may go; the other inactive ones go (upstream
    // `evictSandboxes`).
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
        let removable = removable(&uid);
        let active = |s: &cri::PodSandbox| {
            s.state == cri::PodSandboxState::SandboxReady as i32
                || with_containers.contains(s.id.as_str())
        };
        let inactive = list.iter().filter(|s| !active(s)).count();
        let skip = usize::from(!removable);
        for s in list.iter().skip(skip).filter(|s| !active(s)) {
            match client.remove_pod_sandbox(&s.id).await {
                Ok(()) => removed_sandboxes += 1,
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::warn!(sandbox = %s.id, error = %e, "cannot remove a dead sandbox")
                }
            }
        }
        if removable && inactive == list.len() {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn dead(id: &str, created_at: i64) -> Dead {
        Dead {
            id: id.into(),
            created_at,
            unknown: false,
            grace: None,
        }
    }

    fn ids(mut v: Vec<Dead>) -> Vec<String> {
        v.sort_by_key(|d| d.created_at);
        v.into_iter().map(|d| d.id).collect()
    }

    fn units() -> BTreeMap<(String, String), Vec<Dead>> {
        BTreeMap::from([
            (
                ("pod-a".into(), "app".into()),
                vec![dead("a1", 1), dead("a3", 3), dead("a5", 5)],
            ),
            (
                ("pod-b".into(), "app".into()),
                vec![dead("b2", 2), dead("b4", 4)],
            ),
            (("pod-c".into(), "app".into()), vec![dead("c6", 6)]),
        ])
    }

    #[test]
    fn the_newest_per_container_stay_and_a_removed_pods_all_go() {
        let policy = GcPolicy::default();
        assert_eq!(
            ids(containers_to_evict(units(), &policy, |_| false)),
            ["a1", "b2", "a3"]
        );
        let gone = containers_to_evict(units(), &policy, |uid| uid == "pod-c");
        assert_eq!(ids(gone), ["a1", "b2", "a3", "c6"]);
    }

    #[test]
    fn max_containers_keeps_an_equal_share_then_the_newest() {
        let policy = GcPolicy {
            max_per_pod_container: 3,
            max_containers: Some(3),
            ..GcPolicy::default()
        };
        // 6 kept per unit at most 3: over 3 in all, each of the 3 units keeps 1 (its newest).
        assert_eq!(
            ids(containers_to_evict(units(), &policy, |_| false)),
            ["a1", "b2", "a3"]
        );
        let policy = GcPolicy {
            max_per_pod_container: 3,
            max_containers: Some(2),
            ..GcPolicy::default()
        };
        // A share of 1 each leaves 3: then the oldest of those (b4) goes too.
        assert_eq!(
            ids(containers_to_evict(units(), &policy, |_| false)),
            ["a1", "b2", "a3", "b4"]
        );
    }
}
