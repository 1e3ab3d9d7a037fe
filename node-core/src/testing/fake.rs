//! A fake [`Runtime`] and a fake [`VolumeManager`] (feature `testing`): the engine's state
//! machine, grace periods, cancellation and final statuses are tested with them under paused
//! tokio time, without containerd.
//!
//! [`FakeRuntime`] keeps pods in memory: `sync_pod` creates the sandbox and starts every
//! container of the spec that is not running (containers that exited stay exited unless the
//! restart policy restarts them), `kill_pod` takes the grace period (paused time) when
//! [`FakeRuntime::set_ignore_sigterm`] says the containers ignore SIGTERM, then marks them
//! exited (137, or 0 when they stopped on SIGTERM); tests make containers exit with
//! [`FakeRuntime::exit`]. Every call is recorded.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::Notify;

use crate::pod_manager::uid;
use crate::runtime::{
    ContainerId, ContainerState, ContainerStatus, GcPolicy, PodStateProvider, PodStatus,
    PodSyncResult, PodUid, Runtime, RuntimeCondition, RuntimeContainer, RuntimeError, RuntimePod,
    RuntimeStatus, SandboxState, SandboxStatus, SyncAction,
};
use crate::volumes::{ContainerContext, ContainerOptions, VolumeError, VolumeManager};

/// A call the fake runtime received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuntimeCall {
    /// `sync_pod` of the pod with this UID.
    SyncPod(String),
    /// `kill_pod` of the pod with this UID, with the grace period override.
    KillPod(String, Option<i64>),
    /// `garbage_collect`, with the UIDs whose content the engine said may go.
    GarbageCollect(Vec<String>),
}

#[derive(Clone, Debug)]
struct FakeContainer {
    id: String,
    name: String,
    state: ContainerState,
    exit_code: i32,
    restart_count: u32,
}

#[derive(Clone, Debug)]
struct FakePod {
    name: String,
    namespace: String,
    sandbox_ready: bool,
    containers: Vec<FakeContainer>,
}

#[derive(Default)]
struct State {
    pods: HashMap<String, FakePod>,
    calls: Vec<RuntimeCall>,
    next_id: u64,
}

/// The fake runtime.
#[derive(Default)]
pub struct FakeRuntime {
    state: Mutex<State>,
    ignore_sigterm: AtomicBool,
    status_fails: AtomicBool,
    network_ready: AtomicBool,
    changed: Notify,
}

impl std::fmt::Debug for FakeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeRuntime").finish_non_exhaustive()
    }
}

impl FakeRuntime {
    /// An empty runtime, ready, with its network ready.
    pub fn new() -> Arc<Self> {
        let fake = FakeRuntime::default();
        fake.network_ready.store(true, Ordering::SeqCst);
        Arc::new(fake)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Containers ignore SIGTERM: a kill takes the whole grace period.
    pub fn set_ignore_sigterm(&self, ignore: bool) {
        self.ignore_sigterm.store(ignore, Ordering::SeqCst);
    }

    /// `get_pod_status` fails while set (the runtime unavailable).
    pub fn set_status_fails(&self, fails: bool) {
        self.status_fails.store(fails, Ordering::SeqCst);
    }

    /// The runtime's `NetworkReady` condition.
    pub fn set_network_ready(&self, ready: bool) {
        self.network_ready.store(ready, Ordering::SeqCst);
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<RuntimeCall> {
        self.lock().calls.clone()
    }

    /// How many `sync_pod` calls pod `uid` got.
    pub fn syncs_of(&self, uid: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| matches!(c, RuntimeCall::SyncPod(u) if u == uid))
            .count()
    }

    /// The grace periods `kill_pod` got for pod `uid`.
    pub fn kills_of(&self, uid: &str) -> Vec<Option<i64>> {
        self.calls()
            .iter()
            .filter_map(|c| match c {
                RuntimeCall::KillPod(u, g) if u == uid => Some(*g),
                _ => None,
            })
            .collect()
    }

    /// Puts a running pod in the runtime that no configuration owns (an orphan).
    pub fn add_running_pod(&self, uid: &str, name: &str, containers: &[&str]) {
        let mut state = self.lock();
        let mut pod = FakePod {
            name: name.into(),
            namespace: "default".into(),
            sandbox_ready: true,
            containers: Vec::new(),
        };
        for c in containers {
            state.next_id += 1;
            pod.containers.push(FakeContainer {
                id: format!("c{}", state.next_id),
                name: (*c).into(),
                state: ContainerState::Running,
                exit_code: 0,
                restart_count: 0,
            });
        }
        state.pods.insert(uid.into(), pod);
    }

    /// Makes container `name` of pod `uid` exit with `code`.
    pub fn exit(&self, uid: &str, name: &str, code: i32) {
        let mut state = self.lock();
        if let Some(c) = state
            .pods
            .get_mut(uid)
            .and_then(|p| p.containers.iter_mut().find(|c| c.name == name))
        {
            c.state = ContainerState::Exited;
            c.exit_code = code;
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// Whether any container of pod `uid` runs.
    pub fn is_running(&self, uid: &str) -> bool {
        self.lock().pods.get(uid).is_some_and(|p| {
            p.containers
                .iter()
                .any(|c| c.state == ContainerState::Running)
        })
    }

    fn restarts(pod: &Pod, container: &FakeContainer) -> bool {
        let policy = pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            .unwrap_or("Always");
        match policy {
            "Never" => false,
            "OnFailure" => container.exit_code != 0,
            _ => true,
        }
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    fn type_name(&self) -> &str {
        "fake"
    }

    async fn get_pods(&self, all: bool) -> Result<Vec<RuntimePod>, RuntimeError> {
        let state = self.lock();
        Ok(state
            .pods
            .iter()
            .filter(|(_, p)| {
                all || p.sandbox_ready
                    || p.containers
                        .iter()
                        .any(|c| c.state == ContainerState::Running)
            })
            .map(|(uid, p)| RuntimePod {
                uid: uid.as_str().into(),
                name: p.name.clone(),
                namespace: p.namespace.clone(),
                containers: p
                    .containers
                    .iter()
                    .map(|c| RuntimeContainer {
                        id: ContainerId {
                            runtime: "fake".into(),
                            id: c.id.clone(),
                        },
                        name: c.name.clone(),
                        state: c.state,
                        hash: None,
                        termination_grace_period: None,
                    })
                    .collect(),
                sandboxes: Vec::new(),
            })
            .collect())
    }

    async fn get_pod_status(
        &self,
        uid: &PodUid,
        name: &str,
        namespace: &str,
    ) -> Result<PodStatus, RuntimeError> {
        if self.status_fails.load(Ordering::SeqCst) {
            return Err(RuntimeError::runtime(std::io::Error::other(
                "runtime unavailable",
            )));
        }
        let state = self.lock();
        let mut status = PodStatus {
            uid: uid.clone(),
            name: name.into(),
            namespace: namespace.into(),
            ..Default::default()
        };
        if let Some(pod) = state.pods.get(uid.as_str()) {
            status.ips = vec!["10.88.0.10".into()];
            status.sandboxes.push(SandboxStatus {
                id: format!("sandbox-{uid}"),
                state: if pod.sandbox_ready {
                    SandboxState::Ready
                } else {
                    SandboxState::NotReady
                },
                attempt: 0,
                created_at: Some(Timestamp::UNIX_EPOCH),
                ips: status.ips.clone(),
                network_mode: crate::runtime::NamespaceMode::Pod,
            });
            for c in &pod.containers {
                status.containers.push(ContainerStatus {
                    id: ContainerId {
                        runtime: "fake".into(),
                        id: c.id.clone(),
                    },
                    name: c.name.clone(),
                    state: c.state,
                    created_at: Some(Timestamp::UNIX_EPOCH),
                    started_at: Some(Timestamp::UNIX_EPOCH),
                    finished_at: (c.state == ContainerState::Exited)
                        .then_some(Timestamp::UNIX_EPOCH),
                    exit_code: c.exit_code,
                    image: "busybox".into(),
                    image_ref: "sha256:busybox".into(),
                    hash: None,
                    restart_count: c.restart_count,
                    reason: if c.state == ContainerState::Exited {
                        if c.exit_code == 0 {
                            "Completed".into()
                        } else {
                            "Error".into()
                        }
                    } else {
                        String::new()
                    },
                    message: String::new(),
                    log_path: String::new(),
                    user: None,
                    resources: None,
                });
            }
        }
        Ok(status)
    }

    async fn sync_pod(&self, pod: &Pod, _status: &PodStatus) -> PodSyncResult {
        let id = uid(pod).to_string();
        let mut result = PodSyncResult::default();
        let mut state = self.lock();
        state.calls.push(RuntimeCall::SyncPod(id.clone()));
        let containers: Vec<Container> = pod
            .spec
            .as_ref()
            .map(|s| s.containers.clone())
            .unwrap_or_default();
        let mut next_id = state.next_id;
        let entry = state.pods.entry(id).or_insert_with(|| FakePod {
            name: pod.metadata.name.clone().unwrap_or_default(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            sandbox_ready: true,
            containers: Vec::new(),
        });
        if !entry.sandbox_ready {
            entry.sandbox_ready = true;
            result.push(SyncAction::CreatePodSandbox, "pod", None);
        }
        for spec in containers {
            match entry.containers.iter_mut().find(|c| c.name == spec.name) {
                Some(c) if c.state == ContainerState::Running => {}
                Some(c) => {
                    if FakeRuntime::restarts(pod, c) {
                        c.state = ContainerState::Running;
                        c.restart_count += 1;
                        result.push(SyncAction::StartContainer, spec.name.clone(), None);
                    }
                }
                None => {
                    next_id += 1;
                    entry.containers.push(FakeContainer {
                        id: format!("c{next_id}"),
                        name: spec.name.clone(),
                        state: ContainerState::Running,
                        exit_code: 0,
                        restart_count: 0,
                    });
                    result.push(SyncAction::StartContainer, spec.name.clone(), None);
                }
            }
        }
        state.next_id = next_id;
        result
    }

    async fn kill_pod(
        &self,
        _pod: Option<&Pod>,
        running: &RuntimePod,
        grace_period_override: Option<i64>,
    ) -> Result<(), RuntimeError> {
        self.lock().calls.push(RuntimeCall::KillPod(
            running.uid.to_string(),
            grace_period_override,
        ));
        let stubborn = self.ignore_sigterm.load(Ordering::SeqCst);
        if stubborn {
            let grace = grace_period_override.unwrap_or(30).max(0) as u64;
            tokio::time::sleep(Duration::from_secs(grace)).await;
        }
        let mut state = self.lock();
        if let Some(pod) = state.pods.get_mut(running.uid.as_str()) {
            pod.sandbox_ready = false;
            for c in &mut pod.containers {
                if c.state == ContainerState::Running {
                    c.state = ContainerState::Exited;
                    c.exit_code = if stubborn { 137 } else { 0 };
                }
            }
        }
        Ok(())
    }

    async fn garbage_collect(
        &self,
        _policy: &GcPolicy,
        pods: &dyn PodStateProvider,
        _all_sources_ready: bool,
    ) -> Result<(), RuntimeError> {
        let mut state = self.lock();
        let mut removable: Vec<String> = state
            .pods
            .keys()
            .filter(|u| pods.should_pod_content_be_removed(&PodUid::new(u.as_str())))
            .cloned()
            .collect();
        removable.sort();
        for u in &removable {
            if state.pods.get(u).is_some_and(|p| {
                p.containers
                    .iter()
                    .all(|c| c.state != ContainerState::Running)
            }) {
                state.pods.remove(u);
            }
        }
        state.calls.push(RuntimeCall::GarbageCollect(removable));
        Ok(())
    }

    async fn status(&self) -> Result<RuntimeStatus, RuntimeError> {
        let network = self.network_ready.load(Ordering::SeqCst);
        Ok(RuntimeStatus {
            conditions: vec![
                RuntimeCondition {
                    kind: "RuntimeReady".into(),
                    status: true,
                    reason: String::new(),
                    message: String::new(),
                },
                RuntimeCondition {
                    kind: "NetworkReady".into(),
                    status: network,
                    reason: if network {
                        String::new()
                    } else {
                        "NetworkPluginNotReady".into()
                    },
                    message: if network {
                        String::new()
                    } else {
                        "Network plugin returns error: cni plugin not initialized".into()
                    },
                },
            ],
            ..Default::default()
        })
    }
}

/// A volume call the fake volume manager received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeCall {
    /// `wait_for_attach_and_mount` of the pod with this UID.
    Mount(String),
    /// `unmount_pod_volumes` of the pod with this UID.
    Unmount(String),
}

/// A volume manager that records its calls; mounts of the UIDs in `hang` never finish, those
/// in `fail` fail.
#[derive(Debug, Default)]
pub struct FakeVolumeManager {
    calls: Mutex<Vec<VolumeCall>>,
    hang: Mutex<HashSet<String>>,
    fail: Mutex<HashSet<String>>,
}

impl FakeVolumeManager {
    /// An empty manager.
    pub fn new() -> Arc<Self> {
        Arc::new(FakeVolumeManager::default())
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<VolumeCall> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Mounts of pod `uid` never finish.
    pub fn hang(&self, uid: &str) {
        self.hang
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid.into());
    }

    /// Mounts of pod `uid` fail.
    pub fn fail(&self, uid: &str) {
        self.fail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid.into());
    }
}

#[async_trait]
impl VolumeManager for FakeVolumeManager {
    async fn wait_for_attach_and_mount(&self, pod: &Pod) -> Result<(), VolumeError> {
        let id = uid(pod).to_string();
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(VolumeCall::Mount(id.clone()));
        if self
            .hang
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id)
        {
            std::future::pending::<()>().await;
        }
        if self
            .fail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id)
        {
            return Err(VolumeError::Mounts {
                pod: id.clone(),
                container: String::new(),
                reason: format!("volume data of pod {id}: no such source"),
            });
        }
        Ok(())
    }

    async fn unmount_pod_volumes(&self, pod: &Pod) -> Result<(), VolumeError> {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(VolumeCall::Unmount(uid(pod).to_string()));
        Ok(())
    }

    fn container_options(
        &self,
        _pod: &Pod,
        _container: &Container,
        _context: &ContainerContext<'_>,
    ) -> Result<ContainerOptions, VolumeError> {
        Ok(ContainerOptions::default())
    }

    async fn cleanup_orphaned_pods(&self, _active: &HashSet<String>) {}
}
