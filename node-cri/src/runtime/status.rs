//! From CRI listings and statuses to the engine's runtime types.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use node_core::runtime::{
    ContainerId, ContainerState, ContainerStatus, NamespaceMode, PodStatus, PodUid,
    RuntimeContainer, RuntimePod, SandboxState, SandboxStatus,
};

use super::labels::{self, ContainerInfo};
use crate::cri;

pub(crate) fn timestamp(nanos: i64) -> Option<Timestamp> {
    (nanos > 0)
        .then(|| Timestamp::from_nanosecond(i128::from(nanos)).ok())
        .flatten()
}

pub(crate) fn container_state(state: i32) -> ContainerState {
    match cri::ContainerState::try_from(state) {
        Ok(cri::ContainerState::ContainerCreated) => ContainerState::Created,
        Ok(cri::ContainerState::ContainerRunning) => ContainerState::Running,
        Ok(cri::ContainerState::ContainerExited) => ContainerState::Exited,
        _ => ContainerState::Unknown,
    }
}

fn namespace_mode(mode: i32) -> NamespaceMode {
    match cri::NamespaceMode::try_from(mode) {
        Ok(cri::NamespaceMode::Node) => NamespaceMode::Node,
        Ok(cri::NamespaceMode::Container) => NamespaceMode::Container,
        _ => NamespaceMode::Pod,
    }
}

pub(crate) fn container_id(runtime: &str, id: &str) -> ContainerId {
    ContainerId {
        runtime: runtime.into(),
        id: id.into(),
    }
}

/// A CRI container status as the engine's.
pub(crate) fn convert_container_status(runtime: &str, s: &cri::ContainerStatus) -> ContainerStatus {
    let info = ContainerInfo::summary(&s.labels, &s.annotations);
    let name = s
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_else(|| info.container_name.clone());
    ContainerStatus {
        id: container_id(runtime, &s.id),
        name,
        state: container_state(s.state),
        created_at: timestamp(s.created_at),
        started_at: timestamp(s.started_at),
        finished_at: timestamp(s.finished_at),
        exit_code: s.exit_code,
        image: s
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default(),
        image_ref: s.image_ref.clone(),
        hash: info.hash,
        restart_count: info.restart_count,
        reason: s.reason.clone(),
        message: if s.state == cri::ContainerState::ContainerExited as i32 {
            let written = super::mounts::termination_message(s, &info);
            match (s.message.is_empty(), written.is_empty()) {
                (_, true) => s.message.clone(),
                (true, false) => written,
                (false, false) => format!("{}: {written}", s.message),
            }
        } else {
            s.message.clone()
        },
        log_path: s.log_path.clone(),
        user: s.user.as_ref().and_then(|u| u.linux.as_ref()).map(|l| {
            node_core::runtime::ContainerUser {
                uid: l.uid,
                gid: l.gid,
                supplemental_groups: l.supplemental_groups.clone(),
            }
        }),
        resources: s
            .resources
            .as_ref()
            .and_then(|r| r.linux.as_ref())
            .map(|l| node_core::runtime::ContainerResources {
                cpu_shares: l.cpu_shares,
                cpu_quota: l.cpu_quota,
                cpu_period: l.cpu_period,
                memory_limit: l.memory_limit_in_bytes,
            }),
    }
}

/// A CRI sandbox status as the engine's.
pub(crate) fn convert_sandbox_status(s: &cri::PodSandboxStatus) -> SandboxStatus {
    let network = s.network.as_ref();
    let mut ips: Vec<String> = network
        .map(|n| n.ip.clone())
        .into_iter()
        .filter(|ip| !ip.is_empty())
        .collect();
    if let Some(n) = network {
        ips.extend(n.additional_ips.iter().map(|ip| ip.ip.clone()));
    }
    let network_mode = s
        .linux
        .as_ref()
        .and_then(|l| l.namespaces.as_ref())
        .and_then(|n| n.options.as_ref())
        .map(|o| namespace_mode(o.network))
        .unwrap_or(NamespaceMode::Pod);
    SandboxStatus {
        id: s.id.clone(),
        state: if s.state == cri::PodSandboxState::SandboxReady as i32 {
            SandboxState::Ready
        } else {
            SandboxState::NotReady
        },
        attempt: s.metadata.as_ref().map(|m| m.attempt).unwrap_or_default(),
        created_at: timestamp(s.created_at),
        ips,
        network_mode,
    }
}

/// Groups listed sandboxes and containers into pods by UID (sandbox metadata, container
/// label), as upstream's `GetPods`.
pub(crate) fn group_pods(
    runtime: &str,
    sandboxes: &[cri::PodSandbox],
    containers: &[cri::Container],
) -> Vec<RuntimePod> {
    let mut pods: BTreeMap<String, RuntimePod> = BTreeMap::new();
    for s in sandboxes {
        let Some(m) = &s.metadata else { continue };
        let pod = pods.entry(m.uid.clone()).or_insert_with(|| RuntimePod {
            uid: m.uid.clone().into(),
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            ..Default::default()
        });
        pod.sandboxes.push(RuntimeContainer {
            id: container_id(runtime, &s.id),
            name: String::new(),
            state: if s.state == cri::PodSandboxState::SandboxReady as i32 {
                ContainerState::Running
            } else {
                ContainerState::Exited
            },
            hash: None,
            termination_grace_period: None,
        });
    }
    for c in containers {
        let info = ContainerInfo::summary(&c.labels, &c.annotations);
        if info.pod_uid.is_empty() {
            tracing::debug!(container = %c.id, "container without the {} label: not ours", labels::POD_UID_LABEL);
            continue;
        }
        let pod = pods
            .entry(info.pod_uid.clone())
            .or_insert_with(|| RuntimePod {
                uid: info.pod_uid.clone().into(),
                name: info.pod_name.clone(),
                namespace: info.pod_namespace.clone(),
                ..Default::default()
            });
        pod.containers.push(RuntimeContainer {
            id: container_id(runtime, &c.id),
            name: c
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or(info.container_name),
            state: container_state(c.state),
            hash: info.hash,
            // The pod's deletion grace period, when it was being deleted, wins over its spec's
            // (upstream `setTerminationGracePeriod` on restored specs).
            termination_grace_period: info
                .pod_deletion_grace_period
                .or(info.termination_grace_period),
        });
    }
    pods.into_values().collect()
}

/// Assembles a pod's status, newest sandboxes and containers first.
pub(crate) fn pod_status(
    uid: &PodUid,
    name: &str,
    namespace: &str,
    mut sandboxes: Vec<SandboxStatus>,
    mut containers: Vec<ContainerStatus>,
) -> PodStatus {
    sandboxes.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    containers.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    let ips = sandboxes
        .iter()
        .find(|s| s.state == SandboxState::Ready)
        .map(|s| s.ips.clone())
        .unwrap_or_default();
    PodStatus {
        uid: uid.clone(),
        name: name.into(),
        namespace: namespace.into(),
        ips,
        sandboxes,
        containers,
    }
}
