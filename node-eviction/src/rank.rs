//! Which pod goes first (upstream `rankMemoryPressure`, `rankDiskPressureFunc`,
//! `rankPIDPressure`), and the eviction message (upstream `evictionMessage`).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use node_config::Signal;
use node_core::admission::request_of;
use node_core::stats::PodStats;

use crate::signals::{Observations, format_bytes, resource_of, threshold_quantity};

/// The pods' stats by UID.
pub type StatsByUid<'a> = HashMap<&'a str, &'a PodStats>;

/// Indexes `pods`' stats by UID.
pub fn by_uid(pods: &[PodStats]) -> StatsByUid<'_> {
    pods.iter().map(|p| (p.pod_ref.uid.as_str(), p)).collect()
}

fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// The pod's memory working set (the sum of its containers').
pub fn memory_usage(stats: &PodStats) -> i64 {
    let sum: u64 = stats
        .containers
        .iter()
        .filter_map(|c| c.memory.as_ref()?.working_set_bytes)
        .sum();
    i64::try_from(sum).unwrap_or(i64::MAX)
}

/// The local ephemeral storage the pod uses: its containers' writable layers and logs, and
/// its local volumes (upstream `podLocalEphemeralStorageUsage`).
pub fn disk_usage(stats: &PodStats, pod: &Pod) -> i64 {
    let containers: u64 = stats
        .containers
        .iter()
        .map(|c| {
            let used = |fs: &Option<node_core::stats::FsStats>| {
                fs.as_ref().and_then(|f| f.used_bytes).unwrap_or(0)
            };
            used(&c.rootfs) + used(&c.logs)
        })
        .sum();
    let local: Vec<&str> = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter(|v| {
            v.git_repo.is_some()
                || v.config_map.is_some()
                || v.downward_api.is_some()
                || v.empty_dir
                    .as_ref()
                    .is_some_and(|e| e.medium.as_deref() != Some("Memory"))
        })
        .map(|v| v.name.as_str())
        .collect();
    let volumes: u64 = stats
        .volume_stats
        .iter()
        .filter(|v| local.contains(&v.name.as_str()))
        .filter_map(|v| v.fs.used_bytes)
        .sum();
    i64::try_from(containers + volumes).unwrap_or(i64::MAX)
}

fn process_count(stats: &PodStats) -> i64 {
    stats
        .process_stats
        .as_ref()
        .and_then(|p| p.process_count)
        .map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX))
}

/// Sorts `pods` so that the first is evicted first under pressure on `signal`'s resource.
pub fn rank(pods: &mut [Pod], signal: Signal, stats: &StatsByUid<'_>) {
    let resource = resource_of(signal);
    let usage = |pod: &Pod| -> Option<i64> {
        let s = stats.get(uid(pod))?;
        Some(match resource {
            "memory" => memory_usage(s),
            "pids" => process_count(s),
            // inodes: upstream ranks by inode usage; the summary's per-pod inode figures are
            // not there, so bytes stand in.
            _ => disk_usage(s, pod),
        })
    };
    let request_resource = match resource {
        "memory" => "memory",
        _ => "ephemeral-storage",
    };
    pods.sort_by(|a, b| {
        let (ua, ub) = (usage(a), usage(b));
        // A pod without stats goes first (upstream: "prioritize evicting the pod for which no
        // stats were found").
        let no_stats = ub.is_none().cmp(&ua.is_none());
        if resource == "pids" {
            return no_stats
                .then_with(|| priority(a).cmp(&priority(b)))
                .then_with(|| ub.cmp(&ua));
        }
        let over = |pod: &Pod, u: Option<i64>| u.map(|u| u - request_of(pod, request_resource));
        let (oa, ob) = (over(a, ua), over(b, ub));
        let exceeds = |o: Option<i64>| o.is_some_and(|o| o > 0);
        no_stats
            .then_with(|| exceeds(ob).cmp(&exceeds(oa)))
            .then_with(|| priority(a).cmp(&priority(b)))
            .then_with(|| ob.cmp(&oa))
    });
}

/// Upstream's eviction message: "The node was low on resource: memory. Threshold quantity:
/// 100Mi, available: 80Mi. Container big was using 300Mi, request is 0, has larger
/// consumption of memory. ", and the offending containers (for the event's annotations).
pub fn eviction_message(
    signal: Signal,
    thresholds: &[node_config::EvictionThreshold],
    observations: &Observations,
    pod: &Pod,
    stats: Option<&PodStats>,
) -> String {
    let resource = resource_of(signal);
    let mut message = format!("The node was low on resource: {resource}. ");
    if let Some((t, o)) = thresholds
        .iter()
        .filter(|t| resource_of(t.signal) == resource)
        .find_map(|t| observations.get(&t.signal).map(|o| (t, o)))
    {
        let quantity = threshold_quantity(t, o.capacity);
        let (quantity, available) = match resource {
            "memory" | "ephemeral-storage" => (format_bytes(quantity), format_bytes(o.available)),
            _ => (quantity.to_string(), o.available.to_string()),
        };
        message.push_str(&format!(
            "Threshold quantity: {quantity}, available: {available}. "
        ));
    }
    let Some(stats) = stats else {
        return message;
    };
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    for c in &stats.containers {
        let Some(spec) = containers.iter().find(|s| s.name == c.name) else {
            continue;
        };
        let usage = match resource {
            "memory" => c.memory.as_ref().and_then(|m| m.working_set_bytes),
            "ephemeral-storage" => c
                .rootfs
                .as_ref()
                .and_then(|r| r.used_bytes)
                .zip(c.logs.as_ref().and_then(|l| l.used_bytes))
                .map(|(r, l)| r + l),
            _ => None,
        };
        let Some(usage) = usage.and_then(|u| i64::try_from(u).ok()) else {
            continue;
        };
        let request = spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get(resource))
            .map(|q| q.0.clone());
        let request_bytes = request
            .as_deref()
            .and_then(|q| q.parse::<node_config::Quantity>().ok())
            .map_or(0, |q| q.value());
        if usage > request_bytes {
            message.push_str(&format!(
                "Container {} was using {}, request is {}, has larger consumption of {resource}. ",
                c.name,
                format_bytes(usage),
                request.unwrap_or_else(|| "0".into()),
            ));
        }
    }
    message
}

fn parse_quantity(q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity) -> Option<i64> {
    q.0.parse::<node_config::Quantity>().ok().map(|q| q.value())
}

/// Whether the pod has a local storage limit the eviction manager checks (an emptyDir
/// `sizeLimit`, a container's `ephemeral-storage` limit).
pub fn has_local_storage_limits(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    spec.volumes
        .iter()
        .flatten()
        .any(|v| v.empty_dir.as_ref().is_some_and(|e| e.size_limit.is_some()))
        || spec.containers.iter().any(|c| {
            c.resources
                .as_ref()
                .and_then(|r| r.limits.as_ref())
                .is_some_and(|l| l.contains_key("ephemeral-storage"))
        })
}

/// The pod's first local storage limit exceeded, as upstream's message and the eviction
/// signal label: an emptyDir over its `sizeLimit`, the pod's local ephemeral storage over the
/// sum of its containers' `ephemeral-storage` limits, a container's logs and writable layer
/// over its own limit.
pub fn local_storage_violation(pod: &Pod, stats: &PodStats) -> Option<(String, &'static str)> {
    let spec = pod.spec.as_ref()?;
    for volume in spec.volumes.iter().flatten() {
        let Some(limit) = volume
            .empty_dir
            .as_ref()
            .and_then(|e| e.size_limit.as_ref())
        else {
            continue;
        };
        let Some(size) = parse_quantity(limit).filter(|s| *s > 0) else {
            continue;
        };
        let used = stats
            .volume_stats
            .iter()
            .find(|v| v.name == volume.name)
            .and_then(|v| v.fs.used_bytes)
            .and_then(|u| i64::try_from(u).ok());
        if used.is_some_and(|u| u > size) {
            return Some((
                format!(
                    "Usage of EmptyDir volume {:?} exceeds the limit {:?}. ",
                    volume.name, limit.0
                ),
                "emptydirfs.limit",
            ));
        }
    }
    let limit_of = |c: &k8s_openapi::api::core::v1::Container| {
        c.resources
            .as_ref()?
            .limits
            .as_ref()?
            .get("ephemeral-storage")
            .cloned()
    };
    let limits: Vec<(
        String,
        k8s_openapi::apimachinery::pkg::api::resource::Quantity,
    )> = spec
        .containers
        .iter()
        .filter_map(|c| limit_of(c).map(|l| (c.name.clone(), l)))
        .collect();
    if !limits.is_empty() {
        let total: i64 = limits.iter().filter_map(|(_, l)| parse_quantity(l)).sum();
        if disk_usage(stats, pod) > total {
            return Some((
                format!(
                    "Pod ephemeral local storage usage exceeds the total limit of containers {}. ",
                    format_bytes(total)
                ),
                "ephemeralpodfs.limit",
            ));
        }
    }
    for c in &stats.containers {
        let Some((_, limit)) = limits.iter().find(|(name, _)| *name == c.name) else {
            continue;
        };
        let Some(value) = parse_quantity(limit).filter(|v| *v != 0) else {
            continue;
        };
        let used = |fs: &Option<node_core::stats::FsStats>| {
            fs.as_ref().and_then(|f| f.used_bytes).unwrap_or(0)
        };
        let used = i64::try_from(used(&c.logs) + used(&c.rootfs)).unwrap_or(i64::MAX);
        if used > value {
            return Some((
                format!(
                    "Container {} exceeded its local ephemeral storage limit {:?}. ",
                    c.name, limit.0
                ),
                "ephemeralcontainerfs.limit",
            ));
        }
    }
    None
}
