//! The default [`node_core::runtime::Runtime`]: pods on a CRI runtime.
//!
//! [`CriRuntime`] brings a pod to its spec the way upstream's kuberuntime manager does:
//! compute the actions (sandbox, init containers one at a time, sidecars, containers, restart
//! policy, changed specs), apply the crash-loop back-off, create containers from the pod spec
//! with upstream's labels and annotations (so a restarted kubelet recognises its containers and
//! their restart counts), stop containers with their grace period, and collect garbage.

mod actions;
mod backoff;
pub mod container;
mod gate;
mod gc;
mod hooks;
pub mod host;
pub mod labels;
mod mounts;
pub mod pull_secrets;
pub mod sandbox;
pub mod stats;
mod status;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::{Container, Lifecycle, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use node_core::events::{EventObject, EventRecorder, EventType, reasons};
use node_core::runtime::{
    CommandRunner, ContainerEvent, ContainerEventKind, ContainerId, ContainerState, ExecOutput,
    GcPolicy, PodStateProvider, PodStatus, PodSyncResult, PodUid, Runtime, RuntimeCondition,
    RuntimeContainer, RuntimeError, RuntimePod, RuntimeStatus, RuntimeVersion, StreamingRuntime,
    Streams, SyncAction, SyncError,
};
use node_core::volumes::{ContainerContext, VolumeManager};
use tracing::{debug, info, instrument, warn};

use self::actions::{compute_pod_actions_with, is_sidecar};
use self::container::{ContainerInputs, ContainerKind, container_config_with_env};
use self::sandbox::{NodeContext, pod_log_directory, pod_sandbox_config};
use crate::client::CriClient;
use crate::cri;
use crate::images::CriImageService;
use node_images::credentials::Keyring;
use node_images::manager::{ImageManager, PullConcurrency};

/// The shortest grace period a container gets when nothing else says (upstream
/// `minimumGracePeriodInSeconds`).
const MINIMUM_GRACE_PERIOD: i64 = 2;

/// Pods on a CRI runtime: the default `Runtime` of the node agent.
pub struct CriRuntime {
    client: CriClient,
    images: Arc<ImageManager>,
    node: NodeContext,
    recorder: Arc<dyn EventRecorder>,
    backoff: Mutex<backoff::BackOff>,
    gate: gate::StartGate,
    runtime_handler: String,
    type_name: String,
    volumes: Option<Arc<dyn VolumeManager>>,
    /// Where configMaps and secrets for environment variables come from (none: standalone).
    objects: Option<Arc<dyn node_core::objects::ObjectSource>>,
    /// Where service environment variables come from (none: standalone).
    services: Option<Arc<dyn node_core::objects::ServiceEnvSource>>,
    /// Where `runtimeClassName`s are resolved (none: standalone, where upstream ignores them).
    runtime_classes: Option<Arc<dyn node_core::objects::RuntimeHandlerSource>>,
    /// The last `ListContainerStats` (the writable layers' usage), refreshed in the
    /// background once it is older than [`stats::CONTAINER_STATS_MAX_AGE`].
    container_stats: Arc<stats::ContainerStatsCache>,
    /// The probes' verdicts: running containers that failed liveness or startup are killed.
    probes: Option<Arc<dyn node_core::prober::ProbeVerdicts>>,
    /// `ContainerStopSignals`: a container's `lifecycle.stopSignal` is what stops it.
    stop_signals: bool,
    /// Pod-level cgroups (`cgroupsPerQOS`), made before each sandbox, removed with the pod.
    pod_cgroups: Option<Arc<dyn node_core::runtime::PodCgroups>>,
}

impl std::fmt::Debug for CriRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CriRuntime")
            .field("client", &self.client)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// The sandbox a pod's containers start in, and what it decided for all of them.
struct SandboxTarget<'a> {
    id: &'a str,
    config: &'a cri::PodSandboxConfig,
    pod_ips: &'a [String],
    /// The pod's hostname and domain (the managed `/etc/hosts` names them).
    hostname: &'a str,
    host_domain: &'a str,
    /// When the sandbox was created (`None` if unknown): container instances older than that
    /// belong to an earlier sandbox of the pod.
    created: Option<SystemTime>,
}

/// A container to stop and how.
struct KillTarget<'a> {
    id: &'a ContainerId,
    name: &'a str,
    /// The grace period recorded in the container's annotations.
    recorded_grace: Option<i64>,
    grace_override: Option<i64>,
    /// The Killing event's message (default `Stopping container <name>`).
    message: Option<&'a str>,
    /// Killed for failing a probe: its end counts as a failure for the restart back-off
    /// (every other kill of the kubelet's does not).
    failure: bool,
}

/// The default bound of [`CriRuntime::with_start_concurrency`]: twice the cores the process
/// may use.
pub fn default_start_concurrency() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get() * 2)
}

/// `name_namespace(uid)`, upstream's `format.Pod`.
pub(crate) fn format_pod(pod: &Pod) -> String {
    labels::PodRef::of(pod).upstream_format()
}

fn sync_error(reason: &str, message: impl Into<String>) -> SyncError {
    SyncError {
        reason: reason.into(),
        message: message.into(),
    }
}

fn system_time(t: Option<k8s_openapi::jiff::Timestamp>) -> SystemTime {
    t.map(SystemTime::from).unwrap_or(SystemTime::UNIX_EPOCH)
}

impl CriRuntime {
    /// A runtime on `client` for the node described by `node`, recording events to
    /// `recorder`.
    pub fn new(client: CriClient, node: NodeContext, recorder: Arc<dyn EventRecorder>) -> Self {
        let images = Arc::new(ImageManager::new(
            Arc::new(CriImageService::new(client.clone())),
            recorder.clone(),
            PullConcurrency::Serial,
        ));
        CriRuntime {
            images,
            client,
            node,
            recorder,
            backoff: Mutex::new(backoff::BackOff::default()),
            gate: gate::StartGate::new(default_start_concurrency()),
            runtime_handler: String::new(),
            type_name: "containerd".into(),
            volumes: None,
            objects: None,
            services: None,
            runtime_classes: None,
            container_stats: Arc::default(),
            probes: None,
            stop_signals: false,
            pod_cgroups: None,
        }
    }

    /// Makes each pod's cgroup with its resources before its sandbox, and removes it once the
    /// pod is gone (`cgroupsPerQOS`).
    pub fn with_pod_cgroups(mut self, cgroups: Arc<dyn node_core::runtime::PodCgroups>) -> Self {
        self.pod_cgroups = Some(cgroups);
        self
    }

    /// `crashLoopBackOff.maxContainerRestartPeriod` (KubeletCrashLoopBackOffMax): the longest
    /// crash-loop back-off instead of 5 minutes; below the initial 10 s it is the initial
    /// delay too, as upstream's `newCrashLoopBackOff`.
    pub fn with_max_container_restart_period(mut self, max: Duration) -> Self {
        self.backoff = Mutex::new(backoff::BackOff::with_max(max));
        self
    }

    /// Honours containers' `lifecycle.stopSignal` (the `ContainerStopSignals` feature gate,
    /// alpha and off by default upstream). The kubelet delivers the signal to the container's
    /// first process itself, waits the grace period for it to exit, then has the runtime kill
    /// it: CRI runtimes before containerd 2.1 ignore the stop signal of the container's
    /// config. The real-time signals (`SIGRTMIN+n`) are not delivered that way; the runtime's
    /// stop signal (the image's) stops those containers.
    pub fn with_stop_signals(mut self, enabled: bool) -> Self {
        self.stop_signals = enabled;
        self
    }

    /// Sends `signal` to container `id`'s first process and waits up to `grace` seconds for
    /// the container to exit; returns the grace period left for `StopContainer` (0 once the
    /// signal was delivered: what is still running then is killed), or `grace` unchanged
    /// when the signal could not be delivered.
    async fn stop_with_signal(
        &self,
        id: &ContainerId,
        name: &str,
        signal: &str,
        grace: i64,
    ) -> i64 {
        let Some(signal) = node_core::runtime::linux_stop_signal(signal)
            .and_then(|n| nix::sys::signal::Signal::try_from(n).ok())
        else {
            warn!(container = %name, signal, "this stop signal is left to the runtime (the image's stop signal applies)");
            return grace;
        };
        let pid = match self.client.container_pid(&id.id).await {
            Ok(Some(pid)) => pid,
            Ok(None) => return grace,
            Err(e) => {
                debug!(container = %name, error = %e, "no process to signal");
                return grace;
            }
        };
        let Ok(pid) = i32::try_from(pid) else {
            return grace;
        };
        if let Err(e) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal) {
            debug!(container = %name, error = %e, "cannot deliver the stop signal");
            return grace;
        }
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(u64::try_from(grace).unwrap_or(0));
        while tokio::time::Instant::now() < deadline {
            match self.client.container_status(&id.id, false).await {
                Ok(s) if s.state == cri::ContainerState::ContainerRunning as i32 => {}
                _ => break,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        0
    }

    /// Kills (and, per the restart policy, restarts) running containers that failed their
    /// liveness or startup probe, as `probes` says (the engine's prober results).
    pub fn with_probe_results(mut self, probes: Arc<dyn node_core::prober::ProbeVerdicts>) -> Self {
        self.probes = Some(probes);
        self
    }

    /// Resolves pods' `runtimeClassName` through `classes` to the handler their sandbox runs
    /// with (without it, as upstream without an API client, the class is not looked up).
    pub fn with_runtime_classes(
        mut self,
        classes: Arc<dyn node_core::objects::RuntimeHandlerSource>,
    ) -> Self {
        self.runtime_classes = Some(classes);
        self
    }

    /// The CRI handler for the pod's sandbox: its RuntimeClass's, else the default.
    fn runtime_handler_of(&self, pod: &Pod) -> Result<String, String> {
        let class = pod
            .spec
            .as_ref()
            .and_then(|s| s.runtime_class_name.as_deref())
            .filter(|c| !c.is_empty());
        match (class, &self.runtime_classes) {
            (Some(class), Some(classes)) => classes.runtime_handler(class),
            _ => Ok(self.runtime_handler.clone()),
        }
    }

    /// Gives containers the service environment variables from `services`.
    pub fn with_service_env(
        mut self,
        services: Arc<dyn node_core::objects::ServiceEnvSource>,
    ) -> Self {
        self.services = Some(services);
        self
    }

    /// Reads the configMaps and secrets environment variables refer to from `objects` (a
    /// cluster node's API source). Without one, such references fail unless optional.
    pub fn with_object_source(
        mut self,
        objects: Arc<dyn node_core::objects::ObjectSource>,
    ) -> Self {
        self.objects = Some(objects);
        self
    }

    /// Uses `images` to ensure images before containers start (default: serialized pulls on
    /// this runtime's image service, no node credentials).
    pub fn with_image_manager(mut self, images: Arc<ImageManager>) -> Self {
        self.images = images;
        self
    }

    /// Takes containers' mounts (volumes, `/etc/hosts`) and the directory of their
    /// termination-message files from `volumes`, the manager the engine sets volumes up with.
    /// Without one, containers get no mounts.
    pub fn with_volume_manager(mut self, volumes: Arc<dyn VolumeManager>) -> Self {
        self.volumes = Some(volumes);
        self
    }

    /// Bounds the pods whose sandbox creation or container starts run at once to `n` (at least
    /// one; default [`default_start_concurrency`]). When many pods arrive together, the first
    /// ones then run while the later ones queue, in arrival order, instead of all of them
    /// sharing the runtime and finishing late together: a burst starts one pod at a time and
    /// the bound opens by one with each piece of work done; a pod keeps its place from its
    /// sandbox through its container starts, and pods coming back for a container go first.
    /// Image pulls (the place is given up meanwhile), status calls and kills are not bounded.
    pub fn with_start_concurrency(mut self, n: usize) -> Self {
        self.gate = gate::StartGate::new(n);
        self
    }

    /// Sets the runtime type name used in container ids (default `containerd`).
    pub fn with_type_name(mut self, name: impl Into<String>) -> Self {
        self.type_name = name.into();
        self
    }

    /// The CRI client.
    pub fn client(&self) -> &CriClient {
        &self.client
    }

    fn event(&self, object: &EventObject, kind: EventType, reason: &str, message: &str) {
        self.recorder.record(object, kind, reason, message);
    }

    fn uid_filter(uid: &str) -> HashMap<String, String> {
        [(labels::POD_UID_LABEL.to_string(), uid.to_string())].into()
    }

    /// The restart count of a container with no status left: one more than the newest
    /// `<n>.log` in its log directory, as upstream.
    fn restart_count_from_logs(&self, pod: &Pod, name: &str) -> u32 {
        let dir = pod_log_directory(
            &self.node.pod_logs_dir,
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default(),
            pod.metadata.uid.as_deref().unwrap_or_default(),
        )
        .join(name);
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".log")?
                    .parse::<u32>()
                    .ok()
            })
            .max()
            .map_or(0, |n| n + 1)
    }

    /// Starts one container: back-off, image, config, create, start, with upstream's events.
    ///
    /// `place` is the pod's place in the start gate: kept from its sandbox creation or an
    /// earlier container of this sync, given up for an image pull, taken when missing.
    #[allow(clippy::too_many_arguments)]
    async fn start_container(
        &self,
        pod: &Pod,
        container: &Container,
        kind: ContainerKind,
        target: &SandboxTarget<'_>,
        status: &PodStatus,
        result: &mut PodSyncResult,
        place: &mut Option<gate::Permit>,
    ) -> Result<(), SyncError> {
        let (sandbox_id, sandbox_config, pod_ips) = (target.id, target.config, target.pod_ips);
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let object = match kind {
            ContainerKind::Ephemeral => EventObject::ephemeral_container(pod, &container.name),
            ContainerKind::Regular => EventObject::container(pod, &container.name, false),
            ContainerKind::Init | ContainerKind::Sidecar => {
                EventObject::container(pod, &container.name, true)
            }
        };
        let previous = status.container(&container.name);
        // The back-off runs from the newest instance that exited, even when a newer one was
        // created but never started (upstream `doBackOff`).
        let exited = status
            .containers
            .iter()
            .find(|c| c.name == container.name && c.state == ContainerState::Exited);
        if let Some(prev) = exited {
            let key = backoff::key(
                uid,
                &container.name,
                container.image.as_deref().unwrap_or_default(),
            );
            let finished = system_time(prev.finished_at);
            let exited = backoff::Exited {
                id: &prev.id.id,
                created: system_time(prev.created_at),
                finished,
            };
            let now = SystemTime::now();
            let decision = self
                .backoff
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .restart(&key, &exited, target.created, now);
            if let Err(left) = decision {
                let window = left + now.duration_since(finished).unwrap_or_default();
                self.event(
                    &object,
                    EventType::Warning,
                    reasons::BACK_OFF,
                    &format!(
                        "Back-off restarting failed container {} in pod {}",
                        container.name,
                        format_pod(pod)
                    ),
                );
                result.retry_within(left);
                return Err(sync_error(
                    "CrashLoopBackOff",
                    format!(
                        "back-off {} restarting failed container={} pod={}",
                        node_config::Duration::from(window),
                        container.name,
                        format_pod(pod)
                    ),
                ));
            }
        }
        let restart_count = match previous {
            Some(p) => p.restart_count + 1,
            None => self.restart_count_from_logs(pod, &container.name),
        };

        let keyring = match &self.objects {
            Some(source) => {
                let (keyring, failed) = pull_secrets::pull_keyring(source.as_ref(), pod).await;
                if !failed.is_empty() {
                    self.event(
                        &EventObject::pod(pod),
                        EventType::Warning,
                        reasons::FAILED_TO_RETRIEVE_IMAGE_PULL_SECRET,
                        &pull_secrets::failed_message(&failed),
                    );
                }
                keyring
            }
            None => Keyring::new(),
        };
        let image = self
            .images
            .ensure_image_exists_then(pod, container, &keyring, || drop(place.take()))
            .await
            .map_err(|e| sync_error(e.reason, e.message))?;
        let config_error = |message: String| {
            self.event(
                &object,
                EventType::Warning,
                reasons::FAILED_TO_CREATE_CONTAINER,
                &format!("Error: {message}"),
            );
            sync_error("CreateContainerConfigError", message)
        };
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut objects = match &self.objects {
            Some(source) => {
                container::EnvObjects::fetch(source.as_ref(), namespace, container).await
            }
            None => container::EnvObjects::default(),
        };
        if let Some(services) = &self.services {
            let links = pod
                .spec
                .as_ref()
                .and_then(|s| s.enable_service_links)
                .unwrap_or(true);
            objects.services = Some(services.service_env(namespace, links));
        }
        let envs = container::make_environment(pod, container, pod_ips, &self.node, &objects)
            .map_err(|e| config_error(e.to_string()))?;
        let mounts = self
            .container_mounts(pod, container, target, &envs)
            .map_err(&config_error)?;
        let inputs = ContainerInputs {
            pod,
            container,
            kind,
            restart_count,
            pod_ips,
            image_ref: &image.id,
            image_uid: image.uid,
            image_username: &image.username,
            mounts: &mounts,
        };
        let mut config = container_config_with_env(&inputs, envs, &self.node)
            .map_err(|e| config_error(e.to_string()))?;
        if kind == ContainerKind::Ephemeral {
            // `targetContainerName`: the target's process namespace, as upstream.
            let target_name = pod
                .spec
                .as_ref()
                .and_then(|s| s.ephemeral_containers.as_ref())
                .and_then(|e| e.iter().find(|e| e.name == container.name))
                .and_then(|e| e.target_container_name.clone());
            if let Some(target_name) = target_name {
                let target_id = status
                    .containers_named(&target_name)
                    .find(|c| c.state == ContainerState::Running)
                    .map(|c| c.id.id.clone())
                    .ok_or_else(|| {
                        config_error(format!("target container {target_name:?} is not running"))
                    })?;
                if let Some(ns) = config
                    .linux
                    .as_mut()
                    .and_then(|l| l.security_context.as_mut())
                    .and_then(|s| s.namespace_options.as_mut())
                {
                    ns.pid = cri::NamespaceMode::Target as i32;
                    ns.target_id = target_id;
                }
            }
        }
        let log_dir = Path::new(&sandbox_config.log_directory).join(&container.name);
        if let Err(e) = tokio::fs::create_dir_all(&log_dir).await {
            warn!(dir = %log_dir.display(), error = %e, "cannot create the container log directory");
        }
        // Creating and starting compete for the runtime: through the gate (ahead of pods that
        // still wait for their sandboxes) unless the pod holds its place already.
        if place.is_none() {
            *place = Some(self.gate.enter(gate::Work::Container).await);
        }
        let id = self
            .client
            .create_container(sandbox_id, config, sandbox_config.clone())
            .await
            .map_err(|e| {
                let message = e.to_string();
                self.event(
                    &object,
                    EventType::Warning,
                    reasons::FAILED_TO_CREATE_CONTAINER,
                    &format!("Error: {message}"),
                );
                sync_error("CreateContainerError", message)
            })?;
        self.event(
            &object,
            EventType::Normal,
            reasons::CREATED_CONTAINER,
            &format!("Created container: {}", container.name),
        );
        self.client.start_container(&id).await.map_err(|e| {
            let message = e.to_string();
            self.event(
                &object,
                EventType::Warning,
                reasons::FAILED_TO_CREATE_CONTAINER,
                &format!("Error: {message}"),
            );
            sync_error("RunContainerError", message)
        })?;
        self.event(
            &object,
            EventType::Normal,
            reasons::STARTED_CONTAINER,
            &format!("Started container {}", container.name),
        );
        // postStart: the container is not reported started until it returns (the status is
        // regenerated after this sync); a failure kills it, and the restart policy applies.
        if let Some(hook) = container
            .lifecycle
            .as_ref()
            .and_then(|l| l.post_start.as_ref())
        {
            let cid = ContainerId {
                runtime: self.type_name.clone(),
                id: id.clone(),
            };
            let pod_ip = pod_ips.first().map(String::as_str).unwrap_or_default();
            if let Err(message) = hooks::run(self, hook, pod, container, &cid, pod_ip).await {
                self.event(
                    &object,
                    EventType::Warning,
                    reasons::FAILED_POST_START_HOOK,
                    "PostStartHook failed",
                );
                let running = RuntimePod {
                    uid: PodUid::from(uid.to_string()),
                    name: pod.metadata.name.clone().unwrap_or_default(),
                    namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                    ..Default::default()
                };
                let killed = self
                    .kill_container(
                        Some(pod),
                        &running,
                        KillTarget {
                            id: &cid,
                            name: &container.name,
                            recorded_grace: None,
                            grace_override: None,
                            message: Some("FailedPostStartHook"),
                            failure: true,
                        },
                    )
                    .await;
                if let Err(e) = killed {
                    warn!(container = %container.name, error = %e.message, "killing the container whose postStart hook failed");
                }
                return Err(sync_error("PostStartHookError", message));
            }
        }
        Ok(())
    }

    /// The pod's IP, from its sandbox (for HTTP hooks without a host).
    async fn pod_ip(&self, running: &RuntimePod) -> String {
        for sandbox in &running.sandboxes {
            if let Ok(status) = self.client.pod_sandbox_status(&sandbox.id.id, false).await
                && let Some(ip) = status
                    .status
                    .and_then(|s| s.network)
                    .map(|n| n.ip)
                    .filter(|ip| !ip.is_empty())
            {
                return ip;
            }
        }
        String::new()
    }

    /// The container's mounts: the volume manager's (volumes, `/etc/hosts`), then the
    /// termination-message file.
    fn container_mounts(
        &self,
        pod: &Pod,
        container: &Container,
        target: &SandboxTarget<'_>,
        envs: &[cri::KeyValue],
    ) -> Result<Vec<cri::Mount>, String> {
        let Some(volumes) = &self.volumes else {
            return Ok(Vec::new());
        };
        let env: std::collections::BTreeMap<String, String> = envs
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone()))
            .collect();
        // A host-network pod's IPs are the node's (the runtime reports none for its sandbox).
        let host_ips: Vec<String>;
        let pod_ips = target.pod_ips;
        let pod_ips = if pod_ips.is_empty()
            && pod
                .spec
                .as_ref()
                .and_then(|s| s.host_network)
                .unwrap_or(false)
        {
            host_ips = self.node.node_ips.iter().map(ToString::to_string).collect();
            &host_ips
        } else {
            pod_ips
        };
        let options = volumes
            .container_options(
                pod,
                container,
                &ContainerContext {
                    pod_ips,
                    hostname: target.hostname,
                    host_domain: target.host_domain,
                    env: &env,
                },
            )
            .map_err(|e| e.to_string())?;
        let mut out: Vec<cri::Mount> = options.mounts.iter().map(mounts::cri_mount).collect();
        if let Some(dir) = &options.pod_container_dir {
            // As upstream, the container starts without it when the file cannot be made.
            match mounts::termination_message_mount(dir, container) {
                Ok(Some(m)) => out.push(m),
                Ok(None) => {}
                Err(e) => warn!(
                    container = %container.name,
                    dir = %dir.display(),
                    error = %e,
                    "cannot create the termination-message file"
                ),
            }
        }
        Ok(out)
    }

    fn grace_period(pod: Option<&Pod>, recorded: Option<i64>, override_: Option<i64>) -> i64 {
        // The pod worker's override has a minimum of one second, as upstream (the stop itself
        // is given at least two).
        if let Some(g) = override_ {
            return g.max(1);
        }
        let from_pod = pod.and_then(|p| {
            p.metadata.deletion_grace_period_seconds.or_else(|| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
        });
        // Not raised to the minimum yet: a grace period of 0 skips the preStop hook.
        from_pod.or(recorded).unwrap_or(MINIMUM_GRACE_PERIOD)
    }

    /// The pod and container spec a kill needs when the pod is unknown (an orphan, or a pod
    /// removed while the kubelet was down), restored from the container's annotations as
    /// upstream's `restoreSpecsFromContainerLabels`: the grace periods, the preStop hook and
    /// the ports it may name. `None` when the runtime cannot say.
    async fn restore_specs(
        &self,
        running: &RuntimePod,
        id: &ContainerId,
        name: &str,
    ) -> Option<(Pod, Container)> {
        let status = match self.client.container_status(&id.id, false).await {
            Ok(status) => status,
            Err(e) => {
                debug!(container = %name, error = %e, "cannot restore the container's spec from its annotations");
                return None;
            }
        };
        let info = labels::ContainerInfo::from_cri(&status.labels, &status.annotations);
        let container = Container {
            name: name.to_string(),
            lifecycle: info.pre_stop_handler.map(|pre_stop| Lifecycle {
                pre_stop: Some(pre_stop),
                ..Default::default()
            }),
            ports: Some(info.container_ports).filter(|p| !p.is_empty()),
            ..Default::default()
        };
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(running.name.clone()),
                namespace: Some(running.namespace.clone()),
                uid: Some(running.uid.to_string()),
                deletion_grace_period_seconds: info.pod_deletion_grace_period,
                ..Default::default()
            },
            spec: Some(PodSpec {
                termination_grace_period_seconds: info.termination_grace_period,
                containers: vec![container.clone()],
                ..Default::default()
            }),
            status: None,
        };
        Some((pod, container))
    }

    /// A sandbox step that failed: a Warning event on the pod (`event`: reason and message)
    /// and the sync's `CreatePodSandbox` error (`reason`, `message`), which ends the sync.
    fn sandbox_failed(
        &self,
        pod: &Pod,
        mut result: PodSyncResult,
        event: (&str, &str),
        reason: &str,
        message: &str,
    ) -> PodSyncResult {
        self.event(&EventObject::pod(pod), EventType::Warning, event.0, event.1);
        result.push(
            SyncAction::CreatePodSandbox,
            format_pod(pod),
            Some(sync_error(reason, message)),
        );
        result
    }

    /// Resizes running containers in place (upstream `doPodResizeAction`): the containers that
    /// shrink first, then the pod's cgroup (to its allocated resources), then the containers
    /// that grow, so that no container is ever above its pod. Returns whether every step
    /// worked; a failure is the container's `ResizeError`.
    async fn resize_containers(
        &self,
        pod: &Pod,
        updates: &[actions::ContainerUpdate],
        result: &mut PodSyncResult,
    ) -> bool {
        // A pod memory limit below what the pod uses now would fail or OOM-kill it: the
        // resize waits (upstream's `doPodResizeAction`, with its message).
        if let Some(cgroups) = &self.pod_cgroups
            && let Some(limit) = cgroups.memory_limit(pod)
            && let Some(usage) = cgroups.memory_usage(pod)
            && u64::try_from(limit).unwrap_or(0) <= usage
        {
            result.push(
                SyncAction::UpdateContainerResources,
                format_pod(pod),
                Some(sync_error(
                    node_core::resize::RESIZE_ERROR,
                    format!(
                        "aborting attempt to set pod memory limit less than current memory usage for pod {}",
                        pod.metadata.name.as_deref().unwrap_or_default()
                    ),
                )),
            );
            return false;
        }
        let (shrinking, growing): (Vec<_>, Vec<_>) = updates.iter().partition(|u| u.shrinks);
        for u in &shrinking {
            if !self.update_resources(u, result).await {
                return false;
            }
        }
        if let Some(cgroups) = &self.pod_cgroups
            && let Err(e) = cgroups.ensure(pod)
        {
            result.push(
                SyncAction::UpdateContainerResources,
                format_pod(pod),
                Some(sync_error(
                    node_core::resize::RESIZE_ERROR,
                    format!("failed to resize the pod's cgroup: {e}"),
                )),
            );
            return false;
        }
        for u in &growing {
            if !self.update_resources(u, result).await {
                return false;
            }
        }
        // A resize makes no container event: the pod syncs again soon so that its status
        // shows the resources applied (and PodResizeInProgress gone).
        result.retry_within(Duration::from_millis(200));
        true
    }

    async fn update_resources(
        &self,
        update: &actions::ContainerUpdate,
        result: &mut PodSyncResult,
    ) -> bool {
        let name = update.name.as_str();
        info!(container = %name, memory_limit = update.resources.memory_limit_in_bytes, cpu_shares = update.resources.cpu_shares, cpu_quota = update.resources.cpu_quota, "resizing the container in place");
        let outcome = self
            .client
            .update_container_resources(&update.id.id, Some(update.resources.clone()))
            .await
            .map_err(|e| sync_error(node_core::resize::RESIZE_ERROR, e.to_string()));
        let ok = outcome.is_ok();
        result.push(
            SyncAction::UpdateContainerResources,
            name.to_string(),
            outcome.err(),
        );
        ok
    }

    async fn kill_container(
        &self,
        pod: Option<&Pod>,
        running: &RuntimePod,
        target: KillTarget<'_>,
    ) -> Result<(), SyncError> {
        let KillTarget {
            id,
            name,
            recorded_grace,
            grace_override,
            message,
            failure,
        } = target;
        let object = match pod {
            Some(p) => match ContainerKind::of(p, name) {
                Some(ContainerKind::Ephemeral) => EventObject::ephemeral_container(p, name),
                Some(ContainerKind::Init | ContainerKind::Sidecar) => {
                    EventObject::container(p, name, true)
                }
                _ => EventObject::container(p, name, false),
            },
            None => EventObject {
                kind: "Pod",
                namespace: running.namespace.clone(),
                name: running.name.clone(),
                uid: running.uid.to_string(),
                field_path: format!("spec.containers{{{name}}}"),
            },
        };
        let default_message = format!("Stopping container {name}");
        self.event(
            &object,
            EventType::Normal,
            reasons::KILLING_CONTAINER,
            message.unwrap_or(&default_message),
        );
        // preStop, for a container still running and a grace period above 0: its time comes
        // out of the grace period (at least the minimum is left for the stop), a failure is
        // an event and the kill goes on.
        let still_running = running
            .containers
            .iter()
            .any(|c| c.id == *id && c.state == ContainerState::Running);
        let restored = match pod {
            None if still_running => self.restore_specs(running, id, name).await,
            _ => None,
        };
        let (pod, spec) = match (pod, &restored) {
            (Some(p), _) => {
                let spec = p.spec.as_ref().and_then(|spec| {
                    spec.containers
                        .iter()
                        .chain(spec.init_containers.iter().flatten())
                        .find(|c| c.name == name)
                });
                (Some(p), spec)
            }
            (None, Some((p, c))) => (Some(p), Some(c)),
            (None, None) => (None, None),
        };
        let mut grace = Self::grace_period(pod, recorded_grace, grace_override);
        // Whether the hook runs depends on the pod's own grace period, as upstream: the pod
        // worker's override (at least 1 s) does not bring back a hook that a pod with
        // terminationGracePeriodSeconds 0 skips.
        let own_grace = Self::grace_period(pod, recorded_grace, None);
        if let (Some(pod), Some(spec)) = (pod, spec)
            && let Some(hook) = spec.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref())
            && still_running
            && own_grace > 0
            && grace > 0
        {
            let started = std::time::Instant::now();
            let pod_ip = match hook.http_get.as_ref().and_then(|g| g.host.as_deref()) {
                Some(host) if !host.is_empty() => String::new(),
                _ if hook.http_get.is_some() => self.pod_ip(running).await,
                _ => String::new(),
            };
            let budget = Duration::from_secs(u64::try_from(grace).unwrap_or(0));
            match tokio::time::timeout(budget, hooks::run(self, hook, pod, spec, id, &pod_ip)).await
            {
                Ok(Ok(())) => {}
                Ok(Err(message)) => self.event(
                    &object,
                    EventType::Warning,
                    reasons::FAILED_PRE_STOP_HOOK,
                    &message,
                ),
                Err(_) => debug!(container = %name, "the preStop hook outlasted the grace period"),
            }
            let spent = i64::try_from(started.elapsed().as_secs()).unwrap_or(i64::MAX);
            grace = grace.saturating_sub(spent);
        }
        // Always a minimal window to shut down, overrides included, as upstream
        // (`minimumGracePeriodInSeconds`).
        grace = grace.max(MINIMUM_GRACE_PERIOD);
        if self.stop_signals
            && still_running
            && let Some(signal) = spec
                .and_then(|c| c.lifecycle.as_ref())
                .and_then(|l| l.stop_signal.as_deref())
        {
            grace = self.stop_with_signal(id, name, signal, grace).await;
        }
        debug!(container = %name, grace, "stopping the container");
        match self.client.stop_container(&id.id, grace).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(sync_error("KillContainerError", e.to_string())),
        }
        // Its exit is the kubelet's doing, not a crash (unless a probe failed).
        if !failure {
            self.backoff
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .stopped_by_kubelet(running.uid.as_str(), &id.id);
        }
        Ok(())
    }

    /// Stops one container of a pod being killed.
    async fn kill_one(
        &self,
        pod: Option<&Pod>,
        running: &RuntimePod,
        c: &RuntimeContainer,
        grace_override: Option<i64>,
    ) -> Result<(), SyncError> {
        self.kill_container(
            pod,
            running,
            KillTarget {
                id: &c.id,
                name: &c.name,
                recorded_grace: c.termination_grace_period,
                grace_override,
                message: None,
                failure: false,
            },
        )
        .await
    }

    async fn kill_pod_inner(
        &self,
        pod: Option<&Pod>,
        running: &RuntimePod,
        grace_override: Option<i64>,
    ) -> Result<(), SyncError> {
        let live: Vec<&RuntimeContainer> = running
            .containers
            .iter()
            .filter(|c| {
                matches!(
                    c.state,
                    ContainerState::Running | ContainerState::Created | ContainerState::Unknown
                )
            })
            .collect();
        // Upstream's termination ordering: regular containers first (at once), then the
        // sidecars, in reverse order of declaration, each once the ones before it exited; all
        // within the pod's grace period.
        let sidecars: Vec<&str> = pod
            .and_then(|p| p.spec.as_ref())
            .map(|s| {
                s.init_containers
                    .iter()
                    .flatten()
                    .filter(|c| is_sidecar(c))
                    .map(|c| c.name.as_str())
                    .rev()
                    .collect()
            })
            .unwrap_or_default();
        let started = std::time::Instant::now();
        let first = live
            .iter()
            .filter(|c| !sidecars.contains(&c.name.as_str()))
            .map(|c| self.kill_one(pod, running, c, grace_override));
        let mut results = futures::future::join_all(first).await;
        let total = Self::grace_period(pod, None, grace_override);
        for name in &sidecars {
            for c in live.iter().filter(|c| c.name == *name) {
                let spent = i64::try_from(started.elapsed().as_secs()).unwrap_or(i64::MAX);
                let left = total.saturating_sub(spent).max(MINIMUM_GRACE_PERIOD);
                results.push(self.kill_one(pod, running, c, Some(left)).await);
            }
        }
        // Every sandbox is stopped even when a container's stop failed, as upstream: the
        // sandbox stop takes what is left with it.
        for sandbox in &running.sandboxes {
            match self.client.stop_pod_sandbox(&sandbox.id.id).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => results.push(Err(sync_error("KillPodSandboxError", e.to_string()))),
            }
        }
        if let Some(err) = results.into_iter().find_map(Result::err) {
            return Err(err);
        }
        // Its cgroup goes with it (a cgroup still busy is removed by a later GC).
        if let Some(cgroups) = &self.pod_cgroups {
            cgroups.remove(running.uid.as_str());
        }
        Ok(())
    }
}

#[async_trait]
impl Runtime for CriRuntime {
    fn type_name(&self) -> &str {
        &self.type_name
    }

    async fn get_pods(&self, all: bool) -> Result<Vec<RuntimePod>, RuntimeError> {
        let sandboxes = self
            .client
            .list_pod_sandbox(None)
            .await
            .map_err(RuntimeError::from)?;
        let containers = self
            .client
            .list_containers(None)
            .await
            .map_err(RuntimeError::from)?;
        let mut pods = status::group_pods(&self.type_name, &sandboxes, &containers);
        if !all {
            pods.retain(RuntimePod::is_running);
        }
        Ok(pods)
    }

    async fn get_pod_status(
        &self,
        uid: &PodUid,
        name: &str,
        namespace: &str,
    ) -> Result<PodStatus, RuntimeError> {
        let sandboxes = self
            .client
            .list_pod_sandbox(Some(cri::PodSandboxFilter {
                label_selector: Self::uid_filter(uid.as_str()),
                ..Default::default()
            }))
            .await
            .map_err(RuntimeError::from)?;
        // Sandbox and container statuses are independent calls: make them concurrently.
        let sandbox_statuses = futures::future::join_all(
            sandboxes
                .iter()
                .map(|s| self.client.pod_sandbox_status(&s.id, false)),
        );
        let containers = self
            .client
            .list_containers(Some(cri::ContainerFilter {
                label_selector: Self::uid_filter(uid.as_str()),
                ..Default::default()
            }))
            .await
            .map_err(RuntimeError::from)?;
        let container_statuses = futures::future::join_all(
            containers
                .iter()
                .map(|c| self.client.container_status(&c.id, false)),
        );
        let (sandbox_statuses, container_statuses) =
            futures::future::join(sandbox_statuses, container_statuses).await;
        let mut sandboxes_out = Vec::with_capacity(sandbox_statuses.len());
        for r in sandbox_statuses {
            match r {
                Ok(resp) => {
                    sandboxes_out.extend(resp.status.as_ref().map(status::convert_sandbox_status))
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(RuntimeError::from(e)),
            }
        }
        let mut containers_out = Vec::with_capacity(container_statuses.len());
        for r in container_statuses {
            match r {
                Ok(st) => {
                    containers_out.push(status::convert_container_status(&self.type_name, &st))
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(RuntimeError::from(e)),
            }
        }
        Ok(status::pod_status(
            uid,
            name,
            namespace,
            sandboxes_out,
            containers_out,
        ))
    }

    #[instrument(skip_all, fields(pod = %format_pod(pod)))]
    async fn sync_pod(&self, pod: &Pod, status: &PodStatus) -> PodSyncResult {
        let mut result = PodSyncResult::default();
        let actions =
            compute_pod_actions_with(pod, status, self.probes.as_deref(), Some(&self.node));
        debug!(?actions, "computed pod actions");
        let pod_object = EventObject::pod(pod);

        if actions.kill_pod {
            if actions.create_sandbox && actions.sandbox_id.is_some() {
                self.event(
                    &pod_object,
                    EventType::Normal,
                    reasons::SANDBOX_CHANGED,
                    "Pod sandbox changed, it will be killed and re-created.",
                );
            }
            let running = status.running_pod(&self.type_name);
            let killed = self.kill_pod_inner(Some(pod), &running, None).await;
            result.push(SyncAction::KillPod, format_pod(pod), killed.err());
            if result.error().is_some() || !actions.create_sandbox {
                return result;
            }
            // A new sandbox runs initialization again: the old init containers must not count
            // as done (upstream purges them).
            let init_names: Vec<&str> = pod
                .spec
                .as_ref()
                .and_then(|s| s.init_containers.as_ref())
                .map(|i| i.iter().map(|c| c.name.as_str()).collect())
                .unwrap_or_default();
            for c in status
                .containers
                .iter()
                .filter(|c| init_names.contains(&c.name.as_str()))
            {
                if let Err(e) = self.client.remove_container(&c.id.id).await
                    && !e.is_not_found()
                {
                    warn!(container = %c.id, error = %e, "cannot remove an old init container");
                }
            }
        } else {
            let running = status.running_pod(&self.type_name);
            for kill in &actions.containers_to_kill {
                let outcome = self
                    .kill_container(
                        Some(pod),
                        &running,
                        KillTarget {
                            id: &kill.id,
                            name: &kill.name,
                            recorded_grace: None,
                            grace_override: kill.grace_override,
                            message: Some(&kill.message),
                            failure: kill.failure,
                        },
                    )
                    .await;
                let failed = outcome.is_err();
                result.push(SyncAction::KillContainer, kill.name.clone(), outcome.err());
                // A container whose stop failed may still run: starting its replacement would
                // make two (upstream ends the sync here too).
                if failed {
                    return result;
                }
            }
            if !actions.containers_to_update.is_empty()
                && !self
                    .resize_containers(pod, &actions.containers_to_update, &mut result)
                    .await
            {
                return result;
            }
        }

        if !actions.create_sandbox
            && actions.init_containers_to_start.is_empty()
            && actions.containers_to_start.is_empty()
            && actions.ephemeral_containers_to_start.is_empty()
        {
            return result;
        }
        let mut pod_ips = status.ips.clone();
        let mut sandbox_id = actions.sandbox_id.clone();
        let mut place: Option<gate::Permit> = None;
        let mut sandbox_created = sandbox_id.as_ref().and_then(|id| {
            status
                .sandboxes
                .iter()
                .find(|s| &s.id == id)
                .and_then(|s| s.created_at)
                .map(SystemTime::from)
        });
        let config = match pod_sandbox_config(pod, actions.attempt, &self.node) {
            Ok((config, warnings)) => {
                if actions.create_sandbox {
                    for w in warnings {
                        self.event(&pod_object, EventType::Warning, w.reason, &w.message);
                    }
                }
                config
            }
            Err(e) => {
                let message = format!(
                    "Failed to generate sandbox config for pod {}: {e}",
                    format_pod(pod)
                );
                let event = (reasons::FAILED_CREATE_POD_SANDBOX, message.as_str());
                return self.sandbox_failed(pod, result, event, "ConfigPodSandboxError", &message);
            }
        };
        if actions.create_sandbox {
            if pod.metadata.deletion_timestamp.is_some() {
                return result;
            }
            // The pod's cgroup, with its resources, is the sandbox's parent.
            if let Some(cgroups) = &self.pod_cgroups
                && let Err(e) = cgroups.ensure(pod)
            {
                let event = format!("unable to ensure pod container exists: {e}");
                let message = format!(
                    "failed to ensure that the pod: {} cgroups exist and are correctly applied: {e}",
                    pod.metadata.uid.as_deref().unwrap_or_default()
                );
                let event = (reasons::FAILED_TO_CREATE_POD_CONTAINER, event.as_str());
                return self.sandbox_failed(pod, result, event, "CreatePodSandboxError", &message);
            }
            let handler = match self.runtime_handler_of(pod) {
                Ok(handler) => handler,
                Err(e) => {
                    let event = format!("Failed to create pod sandbox: {e}");
                    let message = format!(
                        "Failed to create sandbox for pod {:?}: {e}",
                        format_pod(pod)
                    );
                    let event = (reasons::FAILED_CREATE_POD_SANDBOX, event.as_str());
                    return self.sandbox_failed(
                        pod,
                        result,
                        event,
                        "CreatePodSandboxError",
                        &message,
                    );
                }
            };
            if let Err(e) = tokio::fs::create_dir_all(&config.log_directory).await {
                warn!(dir = %config.log_directory, error = %e, "cannot create the pod log directory");
            }
            // The pod keeps its place in the gate through its container starts.
            place = Some(self.gate.enter(gate::Work::Sandbox).await);
            // Every container instance the pod has so far is older than the new sandbox.
            sandbox_created = Some(SystemTime::now());
            match self.client.run_pod_sandbox(config.clone(), &handler).await {
                Ok(id) => {
                    result.push(SyncAction::CreatePodSandbox, format_pod(pod), None);
                    // Without the new sandbox's status its IPs are unknown: the containers
                    // must not start with none (upstream fails the sync the same way).
                    let sandbox_status = match self.client.pod_sandbox_status(&id, false).await {
                        Ok(resp) => resp.status.ok_or_else(|| "no status returned".to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    match sandbox_status {
                        Ok(st) => pod_ips = status::convert_sandbox_status(&st).ips,
                        Err(e) => {
                            let message = format!("Unable to get pod sandbox status: {e}");
                            let event = (reasons::FAILED_STATUS_POD_SANDBOX, message.as_str());
                            return self.sandbox_failed(
                                pod,
                                result,
                                event,
                                "CreatePodSandboxError",
                                &message,
                            );
                        }
                    }
                    sandbox_id = Some(id);
                }
                Err(e) => {
                    let message = format!("Failed to create pod sandbox: {e}");
                    let event = (reasons::FAILED_CREATE_POD_SANDBOX, message.as_str());
                    return self.sandbox_failed(
                        pod,
                        result,
                        event,
                        "CreatePodSandboxError",
                        &message,
                    );
                }
            }
        }
        let Some(sandbox_id) = sandbox_id else {
            return result;
        };
        // A hostNetwork pod's IPs are the node's (`status.podIP(s)` in its environment and
        // downward API), as upstream sets them from the API status it generates.
        if actions::host_network(pod) {
            pod_ips = self.node.node_ips.iter().map(|ip| ip.to_string()).collect();
        }

        // The pod's hostname once for all its containers (their /etc/hosts names it).
        let (hostname, host_domain) =
            sandbox::pod_hostname_and_domain(pod, &self.node.cluster_domain)
                .unwrap_or_else(|_| (config.hostname.clone(), String::new()));
        let target = SandboxTarget {
            id: &sandbox_id,
            config: &config,
            pod_ips: &pod_ips,
            hostname: &hostname,
            host_domain: &host_domain,
            created: sandbox_created,
        };
        let spec = pod.spec.as_ref();
        let init_containers = spec
            .and_then(|s| s.init_containers.as_deref())
            .unwrap_or_default();
        let containers = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
        let ephemeral = spec
            .and_then(|s| s.ephemeral_containers.as_deref())
            .unwrap_or_default();
        for &i in &actions.ephemeral_containers_to_start {
            let Some(c) = ephemeral.get(i).and_then(container::ephemeral_as_container) else {
                continue;
            };
            let started = self
                .start_container(
                    pod,
                    &c,
                    ContainerKind::Ephemeral,
                    &target,
                    status,
                    &mut result,
                    &mut place,
                )
                .await;
            result.push(SyncAction::StartContainer, c.name.clone(), started.err());
        }
        for &i in &actions.init_containers_to_start {
            let Some(c) = init_containers.get(i) else {
                continue;
            };
            let kind = if is_sidecar(c) {
                ContainerKind::Sidecar
            } else {
                ContainerKind::Init
            };
            let started = self
                .start_container(pod, c, kind, &target, status, &mut result, &mut place)
                .await;
            let failed = started.is_err();
            result.push(SyncAction::InitContainer, c.name.clone(), started.err());
            if failed && kind == ContainerKind::Init {
                return result;
            }
        }
        for &i in &actions.containers_to_start {
            let Some(c) = containers.get(i) else {
                continue;
            };
            let started = self
                .start_container(
                    pod,
                    c,
                    ContainerKind::Regular,
                    &target,
                    status,
                    &mut result,
                    &mut place,
                )
                .await;
            result.push(SyncAction::StartContainer, c.name.clone(), started.err());
        }
        result
    }

    async fn kill_pod(
        &self,
        pod: Option<&Pod>,
        running: &RuntimePod,
        grace_period_override: Option<i64>,
    ) -> Result<(), RuntimeError> {
        self.kill_pod_inner(pod, running, grace_period_override)
            .await
            .map_err(|e| {
                RuntimeError::runtime(std::io::Error::other(format!(
                    "{}: {}",
                    e.reason, e.message
                )))
            })?;
        // The pod stopped: whatever it comes back as starts with a clean back-off.
        self.backoff
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget_pod(running.uid.as_str());
        Ok(())
    }

    async fn garbage_collect(
        &self,
        policy: &GcPolicy,
        pods: &dyn PodStateProvider,
        all_sources_ready: bool,
    ) -> Result<(), RuntimeError> {
        let removed = gc::collect(
            &self.client,
            &self.node.pod_logs_dir,
            policy,
            pods,
            all_sources_ready,
        )
        .await
        .map_err(RuntimeError::from)?;
        if let Some(cgroups) = &self.pod_cgroups {
            for uid in &removed {
                cgroups.remove(uid);
            }
        }
        let mut backoff = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        for uid in removed {
            backoff.forget_pod(&uid);
        }
        backoff.gc(SystemTime::now());
        Ok(())
    }

    async fn version(&self) -> Result<RuntimeVersion, RuntimeError> {
        let v = self.client.version().await.map_err(RuntimeError::from)?;
        Ok(RuntimeVersion {
            name: v.runtime_name,
            version: v.runtime_version,
            api_version: v.runtime_api_version,
        })
    }

    async fn status(&self) -> Result<RuntimeStatus, RuntimeError> {
        let s = self
            .client
            .status(false)
            .await
            .map_err(RuntimeError::from)?;
        Ok(RuntimeStatus {
            conditions: s
                .status
                .map(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .map(|c| RuntimeCondition {
                    kind: c.r#type,
                    status: c.status,
                    reason: c.reason,
                    message: c.message,
                })
                .collect(),
            handlers: s
                .runtime_handlers
                .into_iter()
                .map(|h| {
                    let features = h.features.unwrap_or_default();
                    node_core::runtime::RuntimeHandler {
                        name: h.name,
                        recursive_read_only_mounts: features.recursive_read_only_mounts,
                        user_namespaces: features.user_namespaces,
                    }
                })
                .collect(),
            features: s.features.map(|f| node_core::runtime::RuntimeFeatures {
                supplemental_groups_policy: f.supplemental_groups_policy,
            }),
        })
    }

    async fn container_events(&self) -> Result<BoxStream<'static, ContainerEvent>, RuntimeError> {
        let stream = self.client.container_events().await.map_err(|e| {
            if e.is_unimplemented() {
                // containerd 1.6: the engine relists instead.
                RuntimeError::Unsupported("container events")
            } else {
                RuntimeError::from(e)
            }
        })?;
        let type_name = self.type_name.clone();
        Ok(stream
            .take_while(|item| {
                if let Err(e) = item {
                    warn!(error = %e, "container event stream ended");
                }
                futures::future::ready(item.is_ok())
            })
            .filter_map(move |item| {
                let type_name = type_name.clone();
                async move {
                    let event = item.ok()?;
                    let kind =
                        match cri::ContainerEventType::try_from(event.container_event_type).ok()? {
                            cri::ContainerEventType::ContainerCreatedEvent => {
                                ContainerEventKind::Created
                            }
                            cri::ContainerEventType::ContainerStartedEvent => {
                                ContainerEventKind::Started
                            }
                            cri::ContainerEventType::ContainerStoppedEvent => {
                                ContainerEventKind::Stopped
                            }
                            cri::ContainerEventType::ContainerDeletedEvent => {
                                ContainerEventKind::Deleted
                            }
                        };
                    let pod_uid = event
                        .pod_sandbox_status
                        .as_ref()
                        .and_then(|s| s.metadata.as_ref())
                        .map(|m| PodUid::new(m.uid.as_str()))?;
                    Some(ContainerEvent {
                        container_id: ContainerId {
                            runtime: type_name.clone(),
                            id: event.container_id,
                        },
                        pod_uid,
                        kind,
                    })
                }
            })
            .boxed())
    }
}

#[async_trait]
impl CommandRunner for CriRuntime {
    async fn run_in_container(
        &self,
        id: &ContainerId,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let out = self
            .client
            .exec_sync(&id.id, cmd, timeout)
            .await
            .map_err(RuntimeError::from)?;
        Ok(ExecOutput {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
        })
    }
}

#[async_trait]
impl StreamingRuntime for CriRuntime {
    async fn get_exec(
        &self,
        id: &ContainerId,
        cmd: Vec<String>,
        streams: Streams,
    ) -> Result<String, RuntimeError> {
        self.client
            .exec(cri::ExecRequest {
                container_id: id.id.clone(),
                cmd,
                tty: streams.tty,
                stdin: streams.stdin,
                stdout: streams.stdout,
                stderr: streams.stderr,
            })
            .await
            .map_err(RuntimeError::from)
    }

    async fn get_attach(&self, id: &ContainerId, streams: Streams) -> Result<String, RuntimeError> {
        self.client
            .attach(cri::AttachRequest {
                container_id: id.id.clone(),
                stdin: streams.stdin,
                tty: streams.tty,
                stdout: streams.stdout,
                stderr: streams.stderr,
            })
            .await
            .map_err(RuntimeError::from)
    }

    async fn get_port_forward(
        &self,
        pod_uid: &PodUid,
        ports: Vec<i32>,
    ) -> Result<String, RuntimeError> {
        let sandboxes = self
            .client
            .list_pod_sandbox(Some(cri::PodSandboxFilter {
                label_selector: Self::uid_filter(pod_uid.as_str()),
                state: Some(cri::PodSandboxStateValue {
                    state: cri::PodSandboxState::SandboxReady as i32,
                }),
                ..Default::default()
            }))
            .await
            .map_err(RuntimeError::from)?;
        let Some(sandbox) = sandboxes.first() else {
            return Err(RuntimeError::runtime(std::io::Error::other(format!(
                "pod {pod_uid} has no ready sandbox"
            ))));
        };
        self.client
            .port_forward(&sandbox.id, ports)
            .await
            .map_err(RuntimeError::from)
    }
}
