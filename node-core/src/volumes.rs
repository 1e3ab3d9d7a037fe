//! The volume seam: what the engine and the runtime need from a volume manager.
//!
//! The engine asks a [`VolumeManager`] to set a pod's volumes up before its containers start
//! ([`VolumeManager::wait_for_attach_and_mount`]), to tear them down once the pod terminated
//! ([`VolumeManager::unmount_pod_volumes`]), and, at housekeeping, to clean the directories of
//! pods that are gone ([`VolumeManager::cleanup_orphaned_pods`]). The runtime asks it for each
//! container's mounts ([`VolumeManager::container_options`]): the pod's `volumeMounts` resolved
//! to host paths (subPath included), the kubelet-managed `/etc/hosts`, and the directory where
//! per-container files such as the termination-message file live.
//!
//! node-volumes provides the default implementation; a custom agent can bring its own.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Container, Pod};

/// How a mount propagates between the host and the container (CRI `MountPropagation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MountPropagation {
    /// No propagation (`None` in the API, `PROPAGATION_PRIVATE` in CRI).
    #[default]
    Private,
    /// Mounts made on the host below the source appear in the container (`rslave`).
    HostToContainer,
    /// Both ways (`rshared`); only for privileged containers.
    Bidirectional,
}

/// One bind mount of a host path into a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The volume (or kubelet-managed file) it comes from, for messages.
    pub name: String,
    /// Where it appears in the container.
    pub container_path: String,
    /// The host path mounted there.
    pub host_path: PathBuf,
    /// Mounted read-only.
    pub read_only: bool,
    /// The runtime should relabel it for SELinux.
    pub selinux_relabel: bool,
    /// Its propagation.
    pub propagation: MountPropagation,
}

/// What the runtime needs, besides the pod spec, to create one container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerOptions {
    /// The container's mounts, in the order of its `volumeMounts`, then `/etc/hosts`.
    pub mounts: Vec<Mount>,
    /// `<rootDir>/pods/<uid>/containers/<name>`: where the runtime keeps per-container files
    /// (the termination-message file). `None` when the manager keeps no pod directories.
    pub pod_container_dir: Option<PathBuf>,
}

/// What the runtime knows about a container it is about to create, beyond the pod spec.
#[derive(Clone, Copy, Debug)]
pub struct ContainerContext<'a> {
    /// The sandbox's IPs, primary first (the managed `/etc/hosts` names them).
    pub pod_ips: &'a [String],
    /// The pod's hostname, as the sandbox got it.
    pub hostname: &'a str,
    /// The pod's domain (`<subdomain>.<namespace>.svc.<clusterDomain>`), or empty.
    pub host_domain: &'a str,
    /// The container's environment, resolved: `subPathExpr` expands `$(VAR)` from it.
    pub env: &'a BTreeMap<String, String>,
}

/// Why a pod's volumes could not be set up or torn down, or a container's mounts made. The
/// message is what the pod's events and status show.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VolumeError {
    /// The pod's volumes were not all mounted in time (upstream's message; `unattached` lists
    /// only volumes of attachable plugins, none of the node-local ones).
    #[error(
        "unmounted volumes=[{}], unattached volumes=[{}], failed to process volumes=[]: {reason}",
        .unmounted.join(" "),
        .unattached.join(" ")
    )]
    NotMounted {
        /// The volumes not set up.
        unmounted: Vec<String>,
        /// The volumes not attached.
        unattached: Vec<String>,
        /// Why: `context deadline exceeded` when the wait timed out.
        reason: String,
    },
    /// The pod's directories could not be made (upstream `FailedToMakePodDataDirectories`).
    #[error("error making pod data directories: {reason}")]
    PodDirs {
        /// The pod (`namespace/name`).
        pod: String,
        /// The directory that could not be made.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A container's mounts could not be made (an unknown volume, a subPath that escapes its
    /// volume, ...); the reason names the container and the mount.
    #[error("{reason}")]
    Mounts {
        /// The pod (`namespace/name`).
        pod: String,
        /// The container.
        container: String,
        /// Why, naming the mount.
        reason: String,
    },
    /// Tearing down failed: the first volume that failed, and every failure's message.
    #[error("{reason}")]
    TearDown {
        /// The pod (`namespace/name`).
        pod: String,
        /// The first volume that could not be torn down (empty when a subPath mount failed).
        volume: String,
        /// Its directory.
        path: PathBuf,
        /// Every failure, joined.
        reason: String,
    },
}

impl VolumeError {
    /// Whether the wait for the pod's volumes timed out (upstream records no event for that,
    /// the set-up failures were recorded as they happened).
    pub fn is_timeout(&self) -> bool {
        matches!(self, VolumeError::NotMounted { .. })
    }
}

/// The volume manager as the engine and the runtime see it.
#[async_trait]
pub trait VolumeManager: Send + Sync {
    /// Adds `pod` to the desired state and waits until all of its volumes are set up, or the
    /// manager's timeout passes. Called before every sync of a running pod: a volume whose
    /// contents follow a source (configMap, secret, downwardAPI, projected) is refreshed.
    async fn wait_for_attach_and_mount(&self, pod: &Pod) -> Result<(), VolumeError>;

    /// Tears down the volumes of a pod whose containers have all stopped, and removes them
    /// from the desired state. Data that outlives the pod (hostPath) is left alone.
    async fn unmount_pod_volumes(&self, pod: &Pod) -> Result<(), VolumeError>;

    /// The mounts and the per-container directory for `container` of `pod`, whose volumes
    /// are set up. May block briefly on the filesystem (subPath bind mounts, the hosts file).
    fn container_options(
        &self,
        pod: &Pod,
        container: &Container,
        context: &ContainerContext<'_>,
    ) -> Result<ContainerOptions, VolumeError>;

    /// Housekeeping: removes the directories of pods not in `active` once nothing is mounted
    /// beneath them (those with mounts left are reported and kept).
    async fn cleanup_orphaned_pods(&self, active: &HashSet<String>);
}
