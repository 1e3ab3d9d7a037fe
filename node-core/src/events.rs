//! Events about pods, with upstream reasons (`Pulling`, `Created`, `Started`, `Killing`,
//! `BackOff`, ...). Without an API server they are logged; a recorder that posts them comes
//! with cluster mode.

use std::sync::Mutex;

use k8s_openapi::api::core::v1::Pod;

/// Normal or Warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Something expected happened.
    Normal,
    /// Something went wrong.
    Warning,
}

impl EventType {
    /// The API string.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// The object an event is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventObject {
    /// `Pod` or `Node`.
    pub kind: &'static str,
    /// Namespace (empty for nodes).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// The field, e.g. `spec.containers{web}`.
    pub field_path: String,
}

impl EventObject {
    /// The pod itself.
    pub fn pod(pod: &Pod) -> Self {
        EventObject {
            kind: "Pod",
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            field_path: String::new(),
        }
    }

    /// A container of the pod (`spec.containers{name}` or `spec.initContainers{name}`).
    pub fn container(pod: &Pod, container: &str, init: bool) -> Self {
        let field = if init { "initContainers" } else { "containers" };
        EventObject {
            field_path: format!("spec.{field}{{{container}}}"),
            ..EventObject::pod(pod)
        }
    }

    /// The pod's ephemeral container `container` (`spec.ephemeralContainers{name}`).
    pub fn ephemeral_container(pod: &Pod, container: &str) -> Self {
        EventObject {
            field_path: format!("spec.ephemeralContainers{{{container}}}"),
            ..EventObject::pod(pod)
        }
    }
}

/// One recorded event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// What it is about.
    pub object: EventObject,
    /// Normal or Warning.
    pub event_type: EventType,
    /// Upstream reason.
    pub reason: String,
    /// Message.
    pub message: String,
}

/// Where events go.
pub trait EventRecorder: Send + Sync {
    /// Records an event.
    fn record(&self, object: &EventObject, event_type: EventType, reason: &str, message: &str);
}

/// Logs events with tracing (the standalone default).
#[derive(Clone, Copy, Debug, Default)]
pub struct LogRecorder;

impl EventRecorder for LogRecorder {
    fn record(&self, object: &EventObject, event_type: EventType, reason: &str, message: &str) {
        let pod = format!("{}/{}", object.namespace, object.name);
        match event_type {
            EventType::Normal => tracing::info!(
                pod = %pod,
                object = %object.field_path,
                reason,
                "{message}"
            ),
            EventType::Warning => tracing::warn!(
                pod = %pod,
                object = %object.field_path,
                reason,
                "{message}"
            ),
        }
    }
}

/// Keeps events in memory (and logs them): for tests and for serving recent events.
#[derive(Debug, Default)]
pub struct MemoryRecorder {
    events: Mutex<Vec<Event>>,
}

impl MemoryRecorder {
    /// The events recorded so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

impl EventRecorder for MemoryRecorder {
    fn record(&self, object: &EventObject, event_type: EventType, reason: &str, message: &str) {
        LogRecorder.record(object, event_type, reason, message);
        if let Ok(mut events) = self.events.lock() {
            events.push(Event {
                object: object.clone(),
                event_type,
                reason: reason.into(),
                message: message.into(),
            });
        }
    }
}

/// The event reasons the kubelet records, as upstream names them (`pkg/kubelet/events`). Every
/// crate records with these constants, so that a reason is spelled once.
pub mod reasons {
    /// A container was created.
    pub const CREATED_CONTAINER: &str = "Created";
    /// A container was started.
    pub const STARTED_CONTAINER: &str = "Started";
    /// Creating or starting a container failed; also a failed image pull.
    pub const FAILED_TO_CREATE_CONTAINER: &str = "Failed";
    /// A container is being stopped.
    pub const KILLING_CONTAINER: &str = "Killing";
    /// A container (or an image pull) is in back-off.
    pub const BACK_OFF: &str = "BackOff";
    /// An image is being pulled.
    pub const PULLING_IMAGE: &str = "Pulling";
    /// An image was pulled (or is present).
    pub const PULLED_IMAGE: &str = "Pulled";
    /// The pod's sandbox changed and is recreated.
    pub const SANDBOX_CHANGED: &str = "SandboxChanged";
    /// The pod's sandbox could not be created.
    pub const FAILED_CREATE_POD_SANDBOX: &str = "FailedCreatePodSandBox";
    /// The status of the pod's new sandbox could not be read.
    pub const FAILED_STATUS_POD_SANDBOX: &str = "FailedStatusPodSandBox";
    /// The pod's cgroup could not be created.
    pub const FAILED_TO_CREATE_POD_CONTAINER: &str = "FailedToCreatePodContainer";
    /// The pod's volumes could not be set up.
    pub const FAILED_MOUNT_VOLUME: &str = "FailedMount";
    /// The pod's directories could not be made.
    pub const FAILED_TO_MAKE_POD_DATA_DIRECTORIES: &str = "FailedToMakePodDataDirectories";
    /// The pod's sync failed.
    pub const FAILED_SYNC: &str = "FailedSync";
    /// The pod was not started: the runtime's network is not ready.
    pub const NETWORK_NOT_READY: &str = "NetworkNotReady";
    /// Image garbage collection could not free enough space.
    pub const FREE_DISK_SPACE_FAILED: &str = "FreeDiskSpaceFailed";
    /// The image filesystem reported no capacity.
    pub const INVALID_DISK_CAPACITY: &str = "InvalidDiskCapacity";
    /// Image garbage collection failed repeatedly.
    pub const IMAGE_GC_FAILED: &str = "ImageGCFailed";
    /// Some of the pod's `imagePullSecrets` could not be read.
    pub const FAILED_TO_RETRIEVE_IMAGE_PULL_SECRET: &str = "FailedToRetrieveImagePullSecret";
    /// The pod ran past its `activeDeadlineSeconds`.
    pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
    /// Admission rejected the pod: too many pods.
    pub const OUT_OF_PODS: &str = "OutOfpods";
    /// A postStart hook failed.
    pub const FAILED_POST_START_HOOK: &str = "FailedPostStartHook";
    /// A preStop hook failed.
    pub const FAILED_PRE_STOP_HOOK: &str = "FailedPreStopHook";
    /// A probe failed (upstream `ContainerUnhealthy`).
    pub const UNHEALTHY: &str = "Unhealthy";
    /// A probe passed with a warning (upstream `ContainerProbeWarning`).
    pub const PROBE_WARNING: &str = "ProbeWarning";
    /// The pod was stopped to admit a critical pod (upstream `PreemptContainer`).
    pub const PREEMPTING: &str = "Preempting";
}
