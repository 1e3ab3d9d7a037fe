//! The runtime's side of the summary API: the pods and containers the runtime runs, the
//! writable layers' usage from CRI `ListContainerStats` and the filesystems from
//! `ImageFsInfo`, as node-core's `stats/v1alpha1` figures.
//!
//! The CRI stats calls are the runtime's most expensive: with 110 pods containerd 1.7 takes
//! about 4 s for `ListPodSandboxStats` (it enters each sandbox's network namespace) and 0.65 s
//! for `ListContainerStats` (it measures each writable layer). Neither is made on a summary's
//! path: the pod figures (CPU, memory, processes, network) come from the pods' cgroups and
//! `/proc` (node-status reads them, as upstream's cAdvisor does), and the writable layers'
//! usage, which changes slowly, from a `ListContainerStats` kept for up to a minute and
//! refreshed in the background (upstream's cAdvisor measures layers about as often). Only
//! the first summary waits for it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use node_core::runtime::RuntimeError;
use node_core::stats::{
    ContainerStats, CpuStats, FsStats, InterfaceStats, MemoryStats, NetworkStats, PodReference,
    PodStats, ProcessStats, RuntimeFilesystem, RuntimeFilesystems, RuntimeStatsSource,
    time_from_nanos,
};

use super::CriRuntime;
use crate::cri;

/// How old the writable layers' usage may get before it is measured again.
pub const CONTAINER_STATS_MAX_AGE: Duration = Duration::from_secs(60);

/// The last `ListContainerStats`, refreshed in the background when stale (one refresh at a
/// time).
#[derive(Default)]
pub struct ContainerStatsCache {
    last: Mutex<Option<(Instant, Arc<Vec<cri::ContainerStats>>)>>,
    refreshing: Arc<AtomicBool>,
    /// Held while the first measurement is made: concurrent first summaries wait for it
    /// instead of each asking the runtime.
    first: tokio::sync::Mutex<()>,
}

impl ContainerStatsCache {
    fn get(&self) -> Option<(Instant, Arc<Vec<cri::ContainerStats>>)> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, stats: Vec<cri::ContainerStats>) -> Arc<Vec<cri::ContainerStats>> {
        let stats = Arc::new(stats);
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), stats.clone()));
        stats
    }

    /// The container stats: measured now the first time, else the last ones, with a
    /// background refresh started when they are older than `max_age`. Containers of
    /// `running` the last ones do not have (started since) are measured now, one
    /// `ContainerStats` each.
    async fn stats(
        self: &Arc<Self>,
        client: &crate::CriClient,
        max_age: Duration,
        running: &[cri::Container],
    ) -> Result<Arc<Vec<cri::ContainerStats>>, RuntimeError> {
        let stats = self.cached_stats(client, max_age).await?;
        let known = |id: &str| {
            stats
                .iter()
                .any(|s| s.attributes.as_ref().is_some_and(|a| a.id == id))
        };
        let missing: Vec<&str> = running
            .iter()
            .map(|c| c.id.as_str())
            .filter(|id| !known(id))
            .collect();
        if missing.is_empty() {
            return Ok(stats);
        }
        let mut merged = (*stats).clone();
        for id in missing {
            match client.container_stats(id).await {
                Ok(s) => merged.push(s),
                Err(e) => tracing::debug!(container = id, error = %e, "stats of a new container"),
            }
        }
        let merged = Arc::new(merged);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, _)) = last.as_ref() {
            // Keep the time of the full listing: the periodic refresh stays on schedule.
            *last = Some((*at, merged.clone()));
        }
        Ok(merged)
    }

    async fn cached_stats(
        self: &Arc<Self>,
        client: &crate::CriClient,
        max_age: Duration,
    ) -> Result<Arc<Vec<cri::ContainerStats>>, RuntimeError> {
        let cached = match self.get() {
            Some(cached) => cached,
            None => {
                let _first = self.first.lock().await;
                match self.get() {
                    Some(cached) => cached,
                    None => {
                        let stats = client
                            .list_container_stats(None)
                            .await
                            .map_err(RuntimeError::from)?;
                        return Ok(self.set(stats));
                    }
                }
            }
        };
        let (at, stats) = cached;
        if at.elapsed() > max_age && !self.refreshing.swap(true, Ordering::AcqRel) {
            let (cache, client) = (self.clone(), client.clone());
            tokio::spawn(async move {
                match client.list_container_stats(None).await {
                    Ok(stats) => {
                        cache.set(stats);
                    }
                    Err(e) => tracing::debug!(error = %e, "refreshing the container stats"),
                }
                cache.refreshing.store(false, Ordering::Release);
            });
        }
        Ok(stats)
    }
}

#[async_trait]
impl RuntimeStatsSource for CriRuntime {
    async fn pod_stats(&self) -> Result<Vec<PodStats>, RuntimeError> {
        let sandboxes = self
            .client
            .list_pod_sandbox(Some(cri::PodSandboxFilter {
                state: Some(cri::PodSandboxStateValue {
                    state: cri::PodSandboxState::SandboxReady as i32,
                }),
                ..Default::default()
            }))
            .await
            .map_err(RuntimeError::from)?;
        let containers = self
            .client
            .list_containers(Some(cri::ContainerFilter {
                state: Some(cri::ContainerStateValue {
                    state: cri::ContainerState::ContainerRunning as i32,
                }),
                ..Default::default()
            }))
            .await
            .map_err(RuntimeError::from)?;
        let container_stats = self
            .container_stats
            .stats(&self.client, CONTAINER_STATS_MAX_AGE, &containers)
            .await?;
        Ok(pod_stats(&sandboxes, &containers, &[], &container_stats))
    }

    async fn filesystems(&self) -> Result<RuntimeFilesystems, RuntimeError> {
        let info = self
            .client
            .image_fs_info()
            .await
            .map_err(RuntimeError::from)?;
        Ok(RuntimeFilesystems {
            image: info.image_filesystems.first().map(filesystem),
            container: info.container_filesystems.first().map(filesystem),
        })
    }
}

fn value(v: &Option<cri::UInt64Value>) -> Option<u64> {
    v.as_ref().map(|v| v.value)
}

fn filesystem(fs: &cri::FilesystemUsage) -> RuntimeFilesystem {
    RuntimeFilesystem {
        mountpoint: PathBuf::from(
            fs.fs_id
                .as_ref()
                .map(|id| id.mountpoint.as_str())
                .unwrap_or_default(),
        ),
        used_bytes: value(&fs.used_bytes),
        inodes_used: value(&fs.inodes_used),
    }
}

fn cpu(usage: &cri::CpuUsage) -> CpuStats {
    CpuStats {
        time: time_from_nanos(usage.timestamp),
        usage_nano_cores: value(&usage.usage_nano_cores),
        usage_core_nano_seconds: value(&usage.usage_core_nano_seconds),
    }
}

fn memory(usage: &cri::MemoryUsage) -> MemoryStats {
    MemoryStats {
        time: time_from_nanos(usage.timestamp),
        available_bytes: value(&usage.available_bytes),
        usage_bytes: value(&usage.usage_bytes),
        working_set_bytes: value(&usage.working_set_bytes),
        rss_bytes: value(&usage.rss_bytes),
        page_faults: value(&usage.page_faults),
        major_page_faults: value(&usage.major_page_faults),
    }
}

fn interface(usage: &cri::NetworkInterfaceUsage) -> InterfaceStats {
    InterfaceStats {
        name: usage.name.clone(),
        rx_bytes: value(&usage.rx_bytes),
        rx_errors: value(&usage.rx_errors),
        tx_bytes: value(&usage.tx_bytes),
        tx_errors: value(&usage.tx_errors),
    }
}

fn network(usage: &cri::NetworkUsage) -> NetworkStats {
    NetworkStats {
        time: time_from_nanos(usage.timestamp),
        default: usage
            .default_interface
            .as_ref()
            .map(interface)
            .unwrap_or_default(),
        interfaces: usage.interfaces.iter().map(interface).collect(),
    }
}

/// The pods' figures: one per ready sandbox (the newest when a pod has several), its running
/// containers with their CPU, memory and writable layer, and the sandbox's CPU, memory,
/// network and process count where the runtime measures them.
pub fn pod_stats(
    sandboxes: &[cri::PodSandbox],
    containers: &[cri::Container],
    sandbox_stats: &[cri::PodSandboxStats],
    container_stats: &[cri::ContainerStats],
) -> Vec<PodStats> {
    let mut newest: HashMap<&str, &cri::PodSandbox> = HashMap::new();
    for sandbox in sandboxes {
        let Some(uid) = sandbox.metadata.as_ref().map(|m| m.uid.as_str()) else {
            continue;
        };
        let entry = newest.entry(uid).or_insert(sandbox);
        if sandbox.created_at > entry.created_at {
            *entry = sandbox;
        }
    }
    let by_sandbox: HashMap<&str, &cri::PodSandboxStats> = sandbox_stats
        .iter()
        .filter_map(|s| s.attributes.as_ref().map(|a| (a.id.as_str(), s)))
        .collect();
    let by_container: HashMap<&str, &cri::ContainerStats> = container_stats
        .iter()
        .filter_map(|s| s.attributes.as_ref().map(|a| (a.id.as_str(), s)))
        .collect();
    let mut pods: Vec<PodStats> = newest
        .into_values()
        .map(|sandbox| {
            let metadata = sandbox.metadata.clone().unwrap_or_default();
            let mut pod = PodStats {
                pod_ref: PodReference {
                    name: metadata.name,
                    namespace: metadata.namespace,
                    uid: metadata.uid,
                },
                start_time: time_from_nanos(sandbox.created_at),
                ..Default::default()
            };
            let linux = by_sandbox
                .get(sandbox.id.as_str())
                .and_then(|s| s.linux.as_ref());
            if let Some(linux) = linux {
                pod.cpu = linux.cpu.as_ref().map(cpu);
                pod.memory = linux.memory.as_ref().map(memory);
                pod.network = linux.network.as_ref().map(network);
                pod.process_stats = linux.process.as_ref().map(|p| ProcessStats {
                    process_count: value(&p.process_count),
                });
            }
            pod.containers = containers
                .iter()
                .filter(|c| c.pod_sandbox_id == sandbox.id)
                .map(|c| {
                    let stats = by_container.get(c.id.as_str());
                    ContainerStats {
                        name: c
                            .metadata
                            .as_ref()
                            .map(|m| m.name.clone())
                            .unwrap_or_default(),
                        start_time: time_from_nanos(c.created_at),
                        cpu: stats.and_then(|s| s.cpu.as_ref()).map(cpu),
                        memory: stats.and_then(|s| s.memory.as_ref()).map(memory),
                        rootfs: stats
                            .and_then(|s| s.writable_layer.as_ref())
                            .map(|fs| FsStats {
                                time: time_from_nanos(fs.timestamp),
                                used_bytes: value(&fs.used_bytes),
                                inodes_used: value(&fs.inodes_used),
                                ..Default::default()
                            }),
                        logs: None,
                        container_id: Some(c.id.clone()),
                    }
                })
                .collect();
            pod.containers.sort_by(|a, b| a.name.cmp(&b.name));
            pod
        })
        .collect();
    pods.sort_by(|a, b| {
        (&a.pod_ref.namespace, &a.pod_ref.name).cmp(&(&b.pod_ref.namespace, &b.pod_ref.name))
    });
    pods
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(id: &str, uid: &str, created_at: i64) -> cri::PodSandbox {
        cri::PodSandbox {
            id: id.into(),
            metadata: Some(cri::PodSandboxMetadata {
                name: format!("pod-{uid}"),
                uid: uid.into(),
                namespace: "ns".into(),
                attempt: 0,
            }),
            created_at,
            ..Default::default()
        }
    }

    fn container(id: &str, sandbox: &str, name: &str) -> cri::Container {
        cri::Container {
            id: id.into(),
            pod_sandbox_id: sandbox.into(),
            metadata: Some(cri::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            created_at: 2_000_000_000,
            ..Default::default()
        }
    }

    fn v(value: u64) -> Option<cri::UInt64Value> {
        Some(cri::UInt64Value { value })
    }

    #[test]
    fn pods_carry_their_containers_and_the_sandbox_figures() {
        let sandboxes = [
            sandbox("old", "a", 1_000_000_000),
            sandbox("new", "a", 3_000_000_000),
            sandbox("b1", "b", 1_000_000_000),
        ];
        let containers = [
            container("c1", "new", "main"),
            container("c2", "new", "sidecar"),
            container("c3", "old", "stale"),
        ];
        let sandbox_stats = [cri::PodSandboxStats {
            attributes: Some(cri::PodSandboxAttributes {
                id: "new".into(),
                ..Default::default()
            }),
            linux: Some(cri::LinuxPodSandboxStats {
                cpu: Some(cri::CpuUsage {
                    timestamp: 5_000_000_000,
                    usage_core_nano_seconds: v(900),
                    usage_nano_cores: None,
                }),
                memory: Some(cri::MemoryUsage {
                    working_set_bytes: v(4096),
                    ..Default::default()
                }),
                network: Some(cri::NetworkUsage {
                    default_interface: Some(cri::NetworkInterfaceUsage {
                        name: "eth0".into(),
                        rx_bytes: v(10),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                process: Some(cri::ProcessUsage {
                    timestamp: 1,
                    process_count: v(3),
                }),
                containers: Vec::new(),
            }),
            windows: None,
        }];
        let container_stats = [cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: "c1".into(),
                ..Default::default()
            }),
            cpu: Some(cri::CpuUsage {
                timestamp: 5_000_000_000,
                usage_core_nano_seconds: v(500),
                usage_nano_cores: v(7),
            }),
            writable_layer: Some(cri::FilesystemUsage {
                used_bytes: v(8192),
                inodes_used: v(4),
                ..Default::default()
            }),
            ..Default::default()
        }];
        let pods = pod_stats(&sandboxes, &containers, &sandbox_stats, &container_stats);
        assert_eq!(pods.len(), 2, "one entry per pod: {pods:?}");
        let a = &pods[0];
        assert_eq!(a.pod_ref.uid, "a");
        assert_eq!(
            a.start_time,
            time_from_nanos(3_000_000_000),
            "the newest sandbox"
        );
        let names: Vec<&str> = a.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["main", "sidecar"],
            "the stale sandbox's container is left out"
        );
        assert_eq!(a.cpu.as_ref().unwrap().usage_core_nano_seconds, Some(900));
        assert_eq!(a.memory.as_ref().unwrap().working_set_bytes, Some(4096));
        assert_eq!(a.network.as_ref().unwrap().default.rx_bytes, Some(10));
        assert_eq!(a.process_stats.as_ref().unwrap().process_count, Some(3));
        let main = &a.containers[0];
        assert_eq!(main.cpu.as_ref().unwrap().usage_nano_cores, Some(7));
        assert_eq!(main.rootfs.as_ref().unwrap().used_bytes, Some(8192));
        assert_eq!(main.rootfs.as_ref().unwrap().inodes_used, Some(4));
        assert!(a.containers[1].cpu.is_none(), "no figures: left out, not 0");
        let b = &pods[1];
        assert!(b.cpu.is_none() && b.containers.is_empty());
    }
}
