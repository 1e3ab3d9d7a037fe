//! The container runtime as the engine sees it: the [`Runtime`] trait and runtime-neutral
//! types.
//!
//! The engine never speaks CRI itself. It asks a [`Runtime`] for the pods it runs
//! ([`Runtime::get_pods`]), for one pod's detailed status ([`Runtime::get_pod_status`]), to
//! bring a pod to its spec ([`Runtime::sync_pod`]) and to stop one ([`Runtime::kill_pod`]).
//! node-cri provides the CRI implementation; a custom agent can bring its own.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

/// A pod's UID (`metadata.uid`): what the runtime labels a pod's sandboxes and containers
/// with, and what the kubelet keys its pods by. Distinct from names and container ids so that
/// one is never passed for another.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodUid(String);

impl PodUid {
    /// A UID from its text.
    pub fn new(uid: impl Into<String>) -> Self {
        PodUid(uid.into())
    }

    /// The UID of `pod` (empty when it has none).
    pub fn of(pod: &Pod) -> Self {
        PodUid(pod.metadata.uid.clone().unwrap_or_default())
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether it is empty (a pod without a UID).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for PodUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for PodUid {
    fn from(uid: String) -> Self {
        PodUid(uid)
    }
}

impl From<&str> for PodUid {
    fn from(uid: &str) -> Self {
        PodUid(uid.to_string())
    }
}

impl From<PodUid> for String {
    fn from(uid: PodUid) -> Self {
        uid.0
    }
}

impl std::borrow::Borrow<str> for PodUid {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for PodUid {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for PodUid {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for PodUid {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// A container's id, qualified by the runtime type (`containerd://<id>` in API statuses).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId {
    /// The runtime type, e.g. `containerd`.
    pub runtime: String,
    /// The runtime's id.
    pub id: String,
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.runtime, self.id)
    }
}

/// The state of a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContainerState {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited.
    Exited,
    /// The runtime does not know.
    Unknown,
}

/// One container as the runtime reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerStatus {
    /// Its id.
    pub id: ContainerId,
    /// The container's name in the pod spec.
    pub name: String,
    /// Its state.
    pub state: ContainerState,
    /// When it was created.
    pub created_at: Option<Timestamp>,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// When it finished.
    pub finished_at: Option<Timestamp>,
    /// Exit code (meaningful when exited).
    pub exit_code: i32,
    /// The image as specified.
    pub image: String,
    /// The image id the runtime resolved.
    pub image_ref: String,
    /// The hash of the container spec it was created from.
    pub hash: Option<u64>,
    /// How many times it had been restarted when this instance was created.
    pub restart_count: u32,
    /// Short reason (e.g. `Completed`, `Error`, `OOMKilled`).
    pub reason: String,
    /// Longer message.
    pub message: String,
    /// Where the runtime writes its log (CRI format); empty when unknown.
    pub log_path: String,
    /// The identity its first process started with (`uid`, `gid`, supplemental groups), when
    /// the runtime reports it.
    pub user: Option<ContainerUser>,
    /// The Linux resources the runtime applied to it, when it reports them.
    pub resources: Option<ContainerResources>,
}

/// A container's Linux resources as the runtime applied them (CRI `ContainerResources`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContainerResources {
    /// CPU shares (cgroup v1 weight).
    pub cpu_shares: i64,
    /// CFS quota in microseconds; 0 or -1: none.
    pub cpu_quota: i64,
    /// CFS period in microseconds.
    pub cpu_period: i64,
    /// Memory limit in bytes; 0: none.
    pub memory_limit: i64,
}

/// A container's Linux identity as the runtime applied it (`status.containerStatuses[].user`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerUser {
    /// The user id.
    pub uid: i64,
    /// The primary group id.
    pub gid: i64,
    /// The supplemental groups.
    pub supplemental_groups: Vec<i64>,
}

/// A pod sandbox's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SandboxState {
    /// Running, with its network set up.
    Ready,
    /// Stopped or failed.
    NotReady,
}

/// A namespace mode of a sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NamespaceMode {
    /// Its own namespace, shared by the pod's containers.
    Pod,
    /// Per container.
    Container,
    /// The node's namespace.
    Node,
}

/// One pod sandbox as the runtime reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct SandboxStatus {
    /// Its id.
    pub id: String,
    /// Its state.
    pub state: SandboxState,
    /// Its attempt number (how many sandboxes the pod had before).
    pub attempt: u32,
    /// When it was created.
    pub created_at: Option<Timestamp>,
    /// Pod IPs, primary first.
    pub ips: Vec<String>,
    /// The network namespace mode.
    pub network_mode: NamespaceMode,
}

/// The runtime's view of one pod: its sandboxes and containers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodStatus {
    /// The pod's UID.
    pub uid: PodUid,
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Pod IPs from the newest ready sandbox.
    pub ips: Vec<String>,
    /// Sandboxes, newest first.
    pub sandboxes: Vec<SandboxStatus>,
    /// Containers, newest first.
    pub containers: Vec<ContainerStatus>,
}

impl PodStatus {
    /// The newest status of the container `name`.
    pub fn container(&self, name: &str) -> Option<&ContainerStatus> {
        self.containers.iter().find(|c| c.name == name)
    }

    /// Every status of the container `name`, newest first.
    pub fn containers_named(&self, name: &str) -> impl Iterator<Item = &ContainerStatus> {
        let name = name.to_owned();
        self.containers.iter().filter(move |c| c.name == name)
    }
}

/// A container in [`RuntimePod`]: enough to tell what runs, not the full status.
#[derive(Clone, Debug, PartialEq)]
pub struct RuntimeContainer {
    /// Its id.
    pub id: ContainerId,
    /// Its name in the pod spec (for sandboxes, empty).
    pub name: String,
    /// Its state.
    pub state: ContainerState,
    /// The hash of its spec.
    pub hash: Option<u64>,
    /// Grace period recorded at creation (used when the spec is gone).
    pub termination_grace_period: Option<i64>,
}

/// A pod the runtime runs, found by listing (possibly unknown to the kubelet).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuntimePod {
    /// The pod's UID.
    pub uid: PodUid,
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its containers.
    pub containers: Vec<RuntimeContainer>,
    /// Its sandboxes (as containers with state Running when ready).
    pub sandboxes: Vec<RuntimeContainer>,
}

impl RuntimePod {
    /// Whether any container or sandbox still runs.
    pub fn is_running(&self) -> bool {
        self.containers
            .iter()
            .chain(&self.sandboxes)
            .any(|c| c.state == ContainerState::Running)
    }
}

/// One runtime condition (`RuntimeReady`, `NetworkReady`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeCondition {
    /// The condition type.
    pub kind: String,
    /// Whether it holds.
    pub status: bool,
    /// Why not.
    pub reason: String,
    /// Details.
    pub message: String,
}

/// The runtime's conditions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeStatus {
    /// The conditions.
    pub conditions: Vec<RuntimeCondition>,
    /// The runtime handlers it offers, with their features (CRI `runtime_handlers`; empty
    /// where the runtime does not say, as containerd 1.7).
    pub handlers: Vec<RuntimeHandler>,
    /// The runtime's features, where it reports them.
    pub features: Option<RuntimeFeatures>,
}

/// A runtime handler (RuntimeClass handler) and what it supports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeHandler {
    /// The handler's name; empty for the default one.
    pub name: String,
    /// Recursive read-only mounts.
    pub recursive_read_only_mounts: bool,
    /// User namespaces.
    pub user_namespaces: bool,
}

/// Features of the runtime as a whole.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuntimeFeatures {
    /// `supplementalGroupsPolicy: Strict` is honoured.
    pub supplemental_groups_policy: bool,
}

impl RuntimeStatus {
    /// Whether condition `kind` is reported true.
    pub fn holds(&self, kind: &str) -> bool {
        self.conditions.iter().any(|c| c.kind == kind && c.status)
    }

    fn not_ready(&self, kind: &str, what: &str) -> Option<String> {
        if self.holds(kind) {
            return None;
        }
        Some(match self.conditions.iter().find(|c| c.kind == kind) {
            Some(c) => format!(
                "{what}: {kind}=false reason:{} message:{}",
                c.reason, c.message
            ),
            None => format!("{what}: {kind}=false reason: message:"),
        })
    }

    /// Why the runtime is not ready, in upstream's words (`container runtime not ready:
    /// RuntimeReady=false reason:... message:...`); `None` when it is.
    pub fn runtime_error(&self) -> Option<String> {
        self.not_ready("RuntimeReady", "container runtime not ready")
    }

    /// Why the runtime's network is not ready (`container runtime network not ready:
    /// NetworkReady=false reason:... message:...`); `None` when it is.
    pub fn network_error(&self) -> Option<String> {
        self.not_ready("NetworkReady", "container runtime network not ready")
    }
}

/// The runtime's name and version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeVersion {
    /// E.g. `containerd`.
    pub name: String,
    /// E.g. `1.7.24`.
    pub version: String,
    /// The API version, e.g. `v1`.
    pub api_version: String,
}

/// What happened to a container, as a runtime event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerEventKind {
    /// Created.
    Created,
    /// Started.
    Started,
    /// Stopped (exited).
    Stopped,
    /// Deleted.
    Deleted,
}

/// A container lifecycle event pushed by the runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerEvent {
    /// The container (or sandbox) id.
    pub container_id: ContainerId,
    /// The UID of the pod it belongs to.
    pub pod_uid: PodUid,
    /// What happened.
    pub kind: ContainerEventKind,
}

/// The action a sync step took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncAction {
    /// Create a pod sandbox.
    CreatePodSandbox,
    /// Kill a pod.
    KillPod,
    /// Start a container.
    StartContainer,
    /// Kill a container.
    KillContainer,
    /// Start an init container.
    InitContainer,
    /// Resize a running container (or its pod's cgroup) in place.
    UpdateContainerResources,
}

/// A failed sync step: a reason (used as the container's waiting reason, e.g.
/// `CrashLoopBackOff`) and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncError {
    /// Upstream reason string (`CrashLoopBackOff`, `ErrImagePull`, `CreateContainerError`, ...).
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

/// The result of one step of a pod sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncResult {
    /// What was done.
    pub action: SyncAction,
    /// On what (container name or pod).
    pub target: String,
    /// The error, if the step failed.
    pub error: Option<SyncError>,
}

/// The outcome of [`Runtime::sync_pod`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodSyncResult {
    /// Each step taken.
    pub steps: Vec<SyncResult>,
    /// When the pod should be synced again at the latest (e.g. when a crash-loop back-off
    /// ends); `None` leaves it to the regular resync.
    pub retry_after: Option<Duration>,
}

impl PodSyncResult {
    /// The first failed step.
    pub fn error(&self) -> Option<&SyncResult> {
        self.steps.iter().find(|s| s.error.is_some())
    }

    /// Records a step.
    pub fn push(
        &mut self,
        action: SyncAction,
        target: impl Into<String>,
        error: Option<SyncError>,
    ) {
        self.steps.push(SyncResult {
            action,
            target: target.into(),
            error,
        });
    }

    /// Asks for a sync no later than `after`.
    pub fn retry_within(&mut self, after: Duration) {
        self.retry_after = Some(self.retry_after.map_or(after, |d| d.min(after)));
    }
}

/// An error of a [`Runtime`], told apart where the engine and the prober act differently:
/// an object that is gone, a call that ran out of time, a runtime that cannot be reached, and
/// the rest. Implementations map their errors once, at their boundary (node-cri from the gRPC
/// codes).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The container, sandbox or image does not exist.
    #[error("{0}")]
    NotFound(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The call did not finish within its deadline.
    #[error("{0}")]
    DeadlineExceeded(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The runtime cannot be reached (down, restarting).
    #[error("{0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The runtime failed a request otherwise.
    #[error("{0}")]
    Runtime(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The runtime does not support this.
    #[error("the container runtime does not support {0}")]
    Unsupported(&'static str),
}

impl RuntimeError {
    /// Wraps an implementation's error that is none of the specific kinds.
    pub fn runtime(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        RuntimeError::Runtime(Box::new(err))
    }

    /// Whether the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RuntimeError::NotFound(_))
    }

    /// Whether the call ran out of time.
    pub fn is_deadline_exceeded(&self) -> bool {
        matches!(self, RuntimeError::DeadlineExceeded(_))
    }

    /// Whether the runtime cannot be reached.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, RuntimeError::Unavailable(_))
    }
}

/// Which pods' content may be removed (their containers, sandboxes and logs): the engine
/// knows, the runtime's garbage collector asks.
pub trait PodStateProvider: Send + Sync {
    /// Whether the pod with this UID is gone or finished so that its containers and sandboxes
    /// may all be removed.
    fn should_pod_content_be_removed(&self, uid: &PodUid) -> bool;
}

/// Pod-level cgroups (upstream's pod container manager): each pod's cgroup exists with its
/// resources before its sandbox is created, and goes once the pod is gone.
pub trait PodCgroups: Send + Sync {
    /// Creates the pod's cgroup (if missing) and applies its resources.
    fn ensure(&self, pod: &k8s_openapi::api::core::v1::Pod) -> Result<(), String>;
    /// Removes the cgroup of the pod with `uid` (whatever its QoS class); a cgroup still in
    /// use is left for a later call.
    fn remove(&self, uid: &str);
    /// Updates the QoS classes' cgroups for the active `pods` (the Burstable cgroup's CPU
    /// shares are the sum of its pods' requests, as upstream's QoS container manager).
    fn update_qos(&self, pods: &[k8s_openapi::api::core::v1::Pod]) {
        let _ = pods;
    }
    /// The memory the pod's cgroup uses now, in bytes; `None` when unknown (no cgroup).
    fn memory_usage(&self, pod: &k8s_openapi::api::core::v1::Pod) -> Option<u64> {
        let _ = pod;
        None
    }
    /// The memory limit `pod`'s cgroup gets from [`ensure`](Self::ensure), in bytes; `None`
    /// for none.
    fn memory_limit(&self, pod: &k8s_openapi::api::core::v1::Pod) -> Option<i64> {
        let _ = pod;
        None
    }
}

/// The container garbage collection policy (upstream defaults: min age 0, 1 dead container
/// kept per container, no global limit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcPolicy {
    /// Minimum age of a dead container before it may be removed.
    pub min_age: Duration,
    /// Dead containers kept per (pod, container name).
    pub max_per_pod_container: usize,
    /// Dead containers kept on the node in all (`--maximum-dead-containers`); `None`: no
    /// limit.
    pub max_containers: Option<usize>,
}

impl Default for GcPolicy {
    fn default() -> Self {
        GcPolicy {
            min_age: Duration::ZERO,
            max_per_pod_container: 1,
            max_containers: None,
        }
    }
}

/// A container runtime, as the engine needs it.
///
/// Required: listing pods, one pod's status, syncing a pod to its spec, killing a pod,
/// garbage collection. Optional (defaults to [`RuntimeError::Unsupported`]): version,
/// status, container events.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// The runtime type used in container ids (`containerd`).
    fn type_name(&self) -> &str;

    /// Every pod the runtime has; with `all` false only those with something running.
    async fn get_pods(&self, all: bool) -> Result<Vec<RuntimePod>, RuntimeError>;

    /// The detailed status of one pod (its sandboxes and containers, newest first).
    async fn get_pod_status(
        &self,
        uid: &PodUid,
        name: &str,
        namespace: &str,
    ) -> Result<PodStatus, RuntimeError>;

    /// Brings the pod to its spec: sandbox, init containers, sidecars, containers, restart
    /// policy and back-off.
    async fn sync_pod(&self, pod: &Pod, status: &PodStatus) -> PodSyncResult;

    /// Stops the pod's containers (with the grace period: the override, else the pod's, else
    /// what the containers recorded) and its sandboxes.
    async fn kill_pod(
        &self,
        pod: Option<&Pod>,
        running: &RuntimePod,
        grace_period_override: Option<i64>,
    ) -> Result<(), RuntimeError>;

    /// Removes dead containers and sandboxes per `policy`; everything of pods for which
    /// `pods` says the content may be removed.
    async fn garbage_collect(
        &self,
        policy: &GcPolicy,
        pods: &dyn PodStateProvider,
        all_sources_ready: bool,
    ) -> Result<(), RuntimeError>;

    /// The runtime's name and version.
    async fn version(&self) -> Result<RuntimeVersion, RuntimeError> {
        Err(RuntimeError::Unsupported("version"))
    }

    /// The runtime's conditions.
    async fn status(&self) -> Result<RuntimeStatus, RuntimeError> {
        Err(RuntimeError::Unsupported("status"))
    }

    /// A stream of container events; runtimes without one leave the engine to relist.
    async fn container_events(&self) -> Result<BoxStream<'static, ContainerEvent>, RuntimeError> {
        Err(RuntimeError::Unsupported("container events"))
    }
}

/// Output of a command run in a container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
    /// Exit code.
    pub exit_code: i32,
}

/// Runs commands in containers synchronously (exec probes, `kubectl exec` without a stream).
#[async_trait]
pub trait CommandRunner: Send + Sync {
    /// Runs `cmd` in the container and waits for it, at most `timeout` (zero: no limit).
    async fn run_in_container(
        &self,
        id: &ContainerId,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError>;
}

/// Which streams a streaming request wants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Streams {
    /// Attach standard input.
    pub stdin: bool,
    /// Attach standard output.
    pub stdout: bool,
    /// Attach standard error.
    pub stderr: bool,
    /// Allocate a TTY.
    pub tty: bool,
}

/// Streaming exec, attach and port-forward: the runtime hands out a URL of its streaming
/// server, which the kubelet's server redirects or proxies to.
#[async_trait]
pub trait StreamingRuntime: Send + Sync {
    /// A URL that runs `cmd` in the container with the given streams.
    async fn get_exec(
        &self,
        id: &ContainerId,
        cmd: Vec<String>,
        streams: Streams,
    ) -> Result<String, RuntimeError>;

    /// A URL that attaches to the container's main process.
    async fn get_attach(&self, id: &ContainerId, streams: Streams) -> Result<String, RuntimeError>;

    /// A URL that forwards `ports` of the pod's sandbox.
    async fn get_port_forward(
        &self,
        pod_uid: &PodUid,
        ports: Vec<i32>,
    ) -> Result<String, RuntimeError>;
}

impl PodStatus {
    /// What of this pod the runtime runs, for [`Runtime::kill_pod`].
    pub fn running_pod(&self, runtime: &str) -> RuntimePod {
        RuntimePod {
            uid: self.uid.clone(),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            containers: self
                .containers
                .iter()
                .map(|c| RuntimeContainer {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    state: c.state,
                    hash: c.hash,
                    termination_grace_period: None,
                })
                .collect(),
            sandboxes: self
                .sandboxes
                .iter()
                .map(|s| RuntimeContainer {
                    id: ContainerId {
                        runtime: runtime.into(),
                        id: s.id.clone(),
                    },
                    name: String::new(),
                    state: if s.state == SandboxState::Ready {
                        ContainerState::Running
                    } else {
                        ContainerState::Exited
                    },
                    hash: None,
                    termination_grace_period: None,
                })
                .collect(),
        }
    }
}

/// Linux signals by name, with the CRI's numbers.
const LINUX_SIGNALS: &[(&str, i32)] = &[
    ("SIGABRT", 6),
    ("SIGALRM", 14),
    ("SIGBUS", 7),
    ("SIGCHLD", 17),
    ("SIGCLD", 17),
    ("SIGCONT", 18),
    ("SIGFPE", 8),
    ("SIGHUP", 1),
    ("SIGILL", 4),
    ("SIGINT", 2),
    ("SIGIO", 29),
    ("SIGIOT", 6),
    ("SIGKILL", 9),
    ("SIGPIPE", 13),
    ("SIGPOLL", 29),
    ("SIGPROF", 27),
    ("SIGPWR", 30),
    ("SIGQUIT", 3),
    ("SIGSEGV", 11),
    ("SIGSTKFLT", 16),
    ("SIGSTOP", 19),
    ("SIGSYS", 31),
    ("SIGTERM", 15),
    ("SIGTRAP", 5),
    ("SIGTSTP", 20),
    ("SIGTTIN", 21),
    ("SIGTTOU", 22),
    ("SIGURG", 23),
    ("SIGUSR1", 10),
    ("SIGUSR2", 12),
    ("SIGVTALRM", 26),
    ("SIGWINCH", 28),
    ("SIGXCPU", 24),
    ("SIGXFSZ", 25),
];
const SIGRTMIN: i32 = 34;
const SIGRTMAX: i32 = 64;

/// Every name [`linux_stop_signal`] knows, sorted (upstream's list of supported values).
pub fn linux_stop_signal_names() -> Vec<String> {
    let mut names: Vec<String> = LINUX_SIGNALS.iter().map(|(n, _)| n.to_string()).collect();
    names.extend(["SIGRTMIN".to_string(), "SIGRTMAX".to_string()]);
    names.extend((1..=15).map(|n| format!("SIGRTMIN+{n}")));
    names.extend((1..=14).map(|n| format!("SIGRTMAX-{n}")));
    names.sort();
    names
}

/// The signals a Linux container's `lifecycle.stopSignal` may name (upstream's validation
/// list, `ContainerStopSignals`) and their numbers, as the CRI's `Signal` enum numbers them
/// (`SIGRTMIN` is 34, after the two glibc reserves).
pub fn linux_stop_signal(name: &str) -> Option<i32> {
    const RTMIN: i32 = SIGRTMIN;
    const RTMAX: i32 = SIGRTMAX;
    if let Some((_, n)) = LINUX_SIGNALS.iter().find(|(n, _)| *n == name) {
        return Some(*n);
    }
    let offset = |rest: &str, max: i32| {
        rest.parse::<i32>()
            .ok()
            .filter(|n| (1..=max).contains(n) && !rest.starts_with('0'))
    };
    match name {
        "SIGRTMIN" => Some(RTMIN),
        "SIGRTMAX" => Some(RTMAX),
        _ => {
            if let Some(rest) = name.strip_prefix("SIGRTMIN+") {
                offset(rest, 15).map(|n| RTMIN + n)
            } else if let Some(rest) = name.strip_prefix("SIGRTMAX-") {
                offset(rest, 14).map(|n| RTMAX - n)
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod stop_signal_tests {
    use super::linux_stop_signal;

    #[test]
    fn stop_signals_by_name_as_the_cri_numbers_them() {
        assert_eq!(linux_stop_signal("SIGTERM"), Some(15));
        assert_eq!(linux_stop_signal("SIGUSR1"), Some(10));
        assert_eq!(linux_stop_signal("SIGCLD"), Some(17));
        assert_eq!(linux_stop_signal("SIGRTMIN"), Some(34));
        assert_eq!(linux_stop_signal("SIGRTMIN+15"), Some(49));
        assert_eq!(linux_stop_signal("SIGRTMAX-14"), Some(50));
        assert_eq!(linux_stop_signal("SIGRTMAX"), Some(64));
        let names = super::linux_stop_signal_names();
        assert_eq!(names.len(), 34 + 2 + 15 + 14);
        assert!(names.iter().all(|n| linux_stop_signal(n).is_some()));
        for bad in [
            "TERM",
            "sigterm",
            "SIGRTMIN+16",
            "SIGRTMIN+0",
            "SIGRTMAX-15",
            "SIGFOO",
            "",
        ] {
            assert_eq!(linux_stop_signal(bad), None, "{bad}");
        }
    }
}
