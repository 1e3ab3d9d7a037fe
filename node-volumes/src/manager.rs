//! The volume manager: desired state (the pods the engine syncs), actual state (what is set
//! up), and the reconciliation between them.
//!
//! The engine drives it: before each sync of a pod, [`wait_for_attach_and_mount`] sets up the
//! volumes that are not yet (and refreshes those whose content follows a source), retrying
//! with exponential back-off and a `FailedMount` event per failed attempt until the timeout;
//! once the pod terminated, [`unmount_pod_volumes`] tears them down; housekeeping calls
//! [`cleanup_orphaned_pods`], which tears down what pods that are gone left on disk and removes
//! their directories once nothing is mounted beneath them.
//!
//! A restarted kubelet re-adopts what is on disk: set-up is idempotent, so the first sync of a
//! pod finds its directories and mounts in place and keeps them and their data.
//!
//! [`wait_for_attach_and_mount`]: VolumeManager::wait_for_attach_and_mount
//! [`unmount_pod_volumes`]: VolumeManager::unmount_pod_volumes
//! [`cleanup_orphaned_pods`]: VolumeManager::cleanup_orphaned_pods

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Container, Pod, Volume};
use node_core::events::{EventObject, EventRecorder, EventType};
use node_core::pod_manager::{full_name, uid};
use node_core::volumes::{
    ContainerContext, ContainerOptions, Mount, MountPropagation, VolumeError, VolumeManager,
};
use tracing::{debug, info, warn};

use crate::hosts;
use crate::layout::PodDirs;
use crate::mount;
use crate::plugin::{
    Attributes, NodeAllocatable, PluginError, PluginRegistry, VolumeContext, VolumePlugin,
};
use crate::source::ObjectSource;
use crate::subpath;

/// Upstream `podAttachAndMountTimeout`.
pub const DEFAULT_MOUNT_TIMEOUT: Duration = Duration::from_secs(123);
/// The first retry of a failed set-up (upstream's exponential back-off starts at 500ms).
const INITIAL_RETRY: Duration = Duration::from_millis(500);
/// The longest pause between set-up attempts (upstream: 2m2s).
const MAX_RETRY: Duration = Duration::from_secs(122);
/// Where the container sees its hosts file.
const ETC_HOSTS: &str = "/etc/hosts";

/// How the default volume manager is set up.
#[derive(Clone, Debug)]
pub struct VolumeManagerConfig {
    /// The kubelet's root directory (`--root-dir`): pod directories live in `<root>/pods`.
    pub root_dir: PathBuf,
    /// How long a pod's sync waits for its volumes (upstream 2m3s).
    pub mount_timeout: Duration,
    /// The node's allocatable resources.
    pub node: NodeAllocatable,
    /// The node's hosts file, the base of host-network pods' `/etc/hosts`.
    pub node_hosts_file: PathBuf,
}

impl VolumeManagerConfig {
    /// The upstream defaults under `root_dir`.
    pub fn new(root_dir: impl Into<PathBuf>) -> Self {
        VolumeManagerConfig {
            root_dir: root_dir.into(),
            mount_timeout: DEFAULT_MOUNT_TIMEOUT,
            node: NodeAllocatable::default(),
            node_hosts_file: PathBuf::from("/etc/hosts"),
        }
    }
}

/// A volume that is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountedVolume {
    /// The plugin that set it up.
    pub plugin: String,
    /// Where its content is on the host.
    pub path: PathBuf,
    /// How containers mount it.
    pub attributes: Attributes,
    /// Its size limit (emptyDir sizeLimit, the tmpfs size of a memory-backed volume).
    pub size_limit: Option<u64>,
}

/// The back-off of one volume's set-up.
#[derive(Clone, Debug)]
struct Retry {
    next: tokio::time::Instant,
    delay: Duration,
}

/// An emptyDir's limit and use, for eviction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmptyDirUsage {
    /// The volume's name.
    pub volume: String,
    /// Its sizeLimit (or the tmpfs size of a memory-backed one).
    pub size_limit: Option<u64>,
    /// Bytes used by the files in it.
    pub used_bytes: u64,
}

/// The default [`VolumeManager`]: the plugins of a [`PluginRegistry`], pod directories under
/// the kubelet's root directory.
pub struct DefaultVolumeManager {
    dirs: PodDirs,
    plugins: PluginRegistry,
    sources: Arc<dyn ObjectSource>,
    recorder: Arc<dyn EventRecorder>,
    config: VolumeManagerConfig,
    /// Actual state: uid -> volume name -> what is set up.
    mounted: Mutex<HashMap<String, BTreeMap<String, MountedVolume>>>,
    /// Desired state: the pods being set up or running, from their first set-up until their
    /// tear-down. Orphan clean-up never touches them.
    desired: Mutex<HashSet<String>>,
    /// Back-off of failed set-ups per (pod uid, volume).
    retries: Mutex<HashMap<(String, String), Retry>>,
    /// Serializes set-up and tear-down per pod.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for DefaultVolumeManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DefaultVolumeManager")
            .field("config", &self.config)
            .field("plugins", &self.plugins)
            .finish_non_exhaustive()
    }
}

fn pod_volumes(pod: &Pod) -> &[Volume] {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default()
}

/// The pod's volumes that some container mounts (upstream skips unused ones: a volume no
/// container uses is neither set up nor waited for).
fn used_volumes(pod: &Pod) -> Vec<&Volume> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .map(|c| (&c.volume_mounts, &c.volume_devices));
    let ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .map(|c| (&c.volume_mounts, &c.volume_devices));
    let used: HashSet<&str> = containers
        .chain(ephemeral)
        .flat_map(|(mounts, devices)| {
            let mounts = mounts.iter().flatten().map(|m| m.name.as_str());
            mounts.chain(devices.iter().flatten().map(|d| d.name.as_str()))
        })
        .collect();
    pod_volumes(pod)
        .iter()
        .filter(|v| used.contains(v.name.as_str()))
        .collect()
}

impl DefaultVolumeManager {
    /// A manager with `plugins`, reading API objects from `sources` and recording events to
    /// `recorder`.
    pub fn new(
        config: VolumeManagerConfig,
        plugins: PluginRegistry,
        sources: Arc<dyn ObjectSource>,
        recorder: Arc<dyn EventRecorder>,
    ) -> Self {
        DefaultVolumeManager {
            dirs: PodDirs::new(&config.root_dir),
            plugins,
            sources,
            recorder,
            config,
            mounted: Mutex::default(),
            desired: Mutex::default(),
            retries: Mutex::default(),
            locks: Mutex::default(),
        }
    }

    /// Prepares the root directory: creates `<root>/pods` and makes the root a shared mount
    /// (as upstream), so that `HostToContainer` and `Bidirectional` mount propagation work for
    /// the volumes below it. Call once before the engine starts.
    pub fn set_up_root_dir(&self) -> Result<(), String> {
        let pods = self.dirs.pods_dir();
        std::fs::create_dir_all(&pods)
            .map_err(|e| format!("cannot create {}: {e}", pods.display()))?;
        mount::make_rshared(self.dirs.root())
            .map_err(|e| format!("cannot make the root directory a shared mount: {e}"))
    }

    /// Creates the pod's directory with its `volumes` and `plugins` directories (upstream
    /// `makePodDataDirs`, mode 0750).
    fn make_pod_dirs(&self, uid: &str) -> Result<(), (PathBuf, String)> {
        use std::os::unix::fs::DirBuilderExt;
        let dirs = [
            self.dirs.pod_dir(uid),
            self.dirs.pod_volumes_dir(uid),
            self.dirs.pod_plugins_dir(uid),
        ];
        for dir in dirs {
            let dir = dir.map_err(|e| (self.dirs.pods_dir().join(uid), e.to_string()))?;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(&dir)
                .map_err(|e| (dir.clone(), format!("cannot create {}: {e}", dir.display())))?;
        }
        Ok(())
    }

    /// Whether anything of the pod is still set up or on disk.
    pub fn pod_volumes_exist(&self, uid: &str) -> bool {
        !self.mounted_volumes(uid).is_empty()
            || self
                .dirs
                .list_volume_dirs(uid)
                .is_ok_and(|dirs| !dirs.is_empty())
    }

    /// The pod directory layout.
    pub fn dirs(&self) -> &PodDirs {
        &self.dirs
    }

    /// What is set up for the pod `uid`.
    pub fn mounted_volumes(&self, uid: &str) -> BTreeMap<String, MountedVolume> {
        self.mounted
            .lock()
            .map(|m| m.get(uid).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    /// The size limit and the bytes in use of each emptyDir of the pod `uid`, for eviction.
    pub fn empty_dir_usage(&self, uid: &str) -> Vec<EmptyDirUsage> {
        self.mounted_volumes(uid)
            .into_iter()
            .filter(|(_, v)| v.plugin == "kubernetes.io/empty-dir")
            .map(|(name, v)| EmptyDirUsage {
                volume: name,
                size_limit: v.size_limit,
                used_bytes: disk_usage(&v.path),
            })
            .collect()
    }

    fn pod_lock(&self, uid: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(uid.to_owned()).or_default().clone()
    }

    fn context<'a>(&'a self, pod: &'a Pod, volume: &'a Volume, dir: &'a Path) -> VolumeContext<'a> {
        VolumeContext {
            pod,
            volume,
            dir,
            sources: self.sources.as_ref(),
            node: &self.config.node,
        }
    }

    fn volume_dir(
        &self,
        pod: &Pod,
        plugin: &dyn VolumePlugin,
        volume: &str,
    ) -> Result<PathBuf, String> {
        self.dirs
            .pod_volume_dir(uid(pod), plugin.name(), volume)
            .map_err(|e| e.to_string())
    }

    /// One pass over the pod's used volumes: sets up those not set up and refreshes those
    /// that follow a source, each no sooner than its back-off allows. Returns the names of the
    /// volumes that are not set up.
    async fn mount_pass(&self, pod: &Pod) -> Vec<String> {
        let id = uid(pod).to_owned();
        let already = self.mounted_volumes(&id);
        let mut failed = Vec::new();
        for volume in used_volumes(pod) {
            let is_mounted = already.contains_key(&volume.name);
            let Ok(plugin) = self.plugins.find(volume) else {
                failed.push(volume.name.clone());
                continue;
            };
            let key = (id.clone(), volume.name.clone());
            let skip = (is_mounted && !plugin.requires_remount(volume)) || self.backing_off(&key);
            let dir = match self.volume_dir(pod, plugin.as_ref(), &volume.name) {
                Ok(dir) if !skip => dir,
                _ => {
                    if !is_mounted {
                        failed.push(volume.name.clone());
                    }
                    continue;
                }
            };
            let ctx = self.context(pod, volume, &dir);
            match plugin
                .set_up(&ctx)
                .await
                .and_then(|()| apply_fs_group(plugin.as_ref(), &ctx))
            {
                Ok(()) => {
                    self.clear_back_off(&key);
                    if !is_mounted {
                        debug!(pod = %full_name(pod), volume = %volume.name, plugin = plugin.name(), "volume set up");
                    }
                }
                Err(e) => {
                    self.recorder.record(
                        &EventObject::pod(pod),
                        EventType::Warning,
                        node_core::events::reasons::FAILED_MOUNT_VOLUME,
                        &format!(
                            "MountVolume.SetUp failed for volume {:?} : {e}",
                            volume.name
                        ),
                    );
                    self.back_off(key);
                    // A refresh that fails leaves the volume as it was: still mounted. After
                    // a restart, content a previous set-up wrote counts as mounted too.
                    if is_mounted {
                        continue;
                    }
                    if !(plugin.requires_remount(volume) && dir.join("..data").exists()) {
                        failed.push(volume.name.clone());
                        continue;
                    }
                }
            }
            let entry = MountedVolume {
                plugin: plugin.name().to_owned(),
                path: plugin.path(&ctx),
                attributes: plugin.attributes(volume),
                size_limit: plugin.size_limit(&ctx),
            };
            if let Ok(mut m) = self.mounted.lock() {
                m.entry(id.clone())
                    .or_default()
                    .insert(volume.name.clone(), entry);
            }
        }
        failed
    }

    /// Whether a volume's next set-up attempt is not due yet.
    fn backing_off(&self, key: &(String, String)) -> bool {
        self.retries.lock().is_ok_and(|r| {
            r.get(key)
                .is_some_and(|r| r.next > tokio::time::Instant::now())
        })
    }

    /// Records a failed attempt: the next one waits twice as long as the last (upstream's
    /// exponential back-off, 500ms to 2m2s), across syncs.
    fn back_off(&self, key: (String, String)) {
        if let Ok(mut retries) = self.retries.lock() {
            let delay = retries
                .get(&key)
                .map_or(INITIAL_RETRY, |r| (r.delay * 2).min(MAX_RETRY));
            retries.insert(
                key,
                Retry {
                    next: tokio::time::Instant::now() + delay,
                    delay,
                },
            );
        }
    }

    fn clear_back_off(&self, key: &(String, String)) {
        if let Ok(mut retries) = self.retries.lock() {
            retries.remove(key);
        }
    }

    /// When the earliest of the pod's backed-off volumes may be tried again.
    fn next_retry(&self, id: &str) -> Option<tokio::time::Instant> {
        let retries = self.retries.lock().ok()?;
        retries
            .iter()
            .filter(|((uid, _), _)| uid == id)
            .map(|(_, r)| r.next)
            .min()
    }

    /// Tears down every volume of the pod `id` that is set up or on disk; `pod` gives the
    /// specs when the pod is known.
    /// Tears down every volume of pod `id`; the failures with their volume and directory.
    async fn tear_down_pod(
        &self,
        id: &str,
        pod: Option<&Pod>,
    ) -> Result<(), Vec<(String, PathBuf, String)>> {
        let mut errors: Vec<(String, PathBuf, String)> = Vec::new();
        // subPath bind mounts first: they pin the volumes.
        let subpaths = self
            .dirs
            .volume_subpaths_dir(id)
            .map_err(|e| vec![(String::new(), self.dirs.pods_dir().join(id), e.to_string())])?;
        if let Err(e) = subpath::clean_subpaths(&subpaths) {
            errors.push((String::new(), subpaths.clone(), e));
        }
        let on_disk = self.dirs.list_volume_dirs(id).unwrap_or_default();
        let known = self.mounted_volumes(id);
        let mut done: HashSet<(String, String)> = HashSet::new();
        let specs: HashMap<&str, &Volume> = pod
            .map(|p| {
                pod_volumes(p)
                    .iter()
                    .map(|v| (v.name.as_str(), v))
                    .collect()
            })
            .unwrap_or_default();
        let empty_pod = Pod::default();
        let pod_ref = pod.unwrap_or(&empty_pod);
        let mut targets: Vec<(String, String, PathBuf)> = known
            .iter()
            .map(|(name, v)| {
                let dir = self
                    .dirs
                    .pod_volume_dir(id, &v.plugin, name)
                    .unwrap_or_default();
                (v.plugin.clone(), name.clone(), dir)
            })
            .collect();
        targets.extend(
            on_disk
                .into_iter()
                .map(|d| (d.plugin_name, d.volume_name, d.path)),
        );
        for (plugin_name, name, dir) in targets {
            if !done.insert((plugin_name.clone(), name.clone())) {
                continue;
            }
            let Some(plugin) = self.plugins.by_name(&plugin_name) else {
                errors.push((
                    name.clone(),
                    dir.clone(),
                    format!(
                        "volume {name:?} of pod {id} was set up by plugin {plugin_name:?}, which is not registered"
                    ),
                ));
                continue;
            };
            let reconstructed = Volume {
                name: name.clone(),
                ..Default::default()
            };
            let volume = specs.get(name.as_str()).copied().unwrap_or(&reconstructed);
            let ctx = self.context(pod_ref, volume, &dir);
            match plugin.tear_down(&ctx).await {
                Ok(()) => {
                    debug!(uid = %id, volume = %name, "volume torn down");
                    if let Ok(mut m) = self.mounted.lock()
                        && let Some(v) = m.get_mut(id)
                    {
                        v.remove(&name);
                    }
                }
                Err(e) => errors.push((
                    name.clone(),
                    dir.clone(),
                    format!("UnmountVolume.TearDown failed for volume {name:?}: {e}"),
                )),
            }
        }
        if let Ok(mut retries) = self.retries.lock() {
            retries.retain(|(uid, _), _| uid != id);
        }
        if errors.is_empty() {
            if let Ok(mut m) = self.mounted.lock() {
                m.remove(id);
            }
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn mounts_for(
        &self,
        pod: &Pod,
        container: &Container,
        context: &ContainerContext<'_>,
    ) -> Result<Vec<Mount>, String> {
        let id = uid(pod);
        let volumes = self.mounted_volumes(id);
        let privileged = container
            .security_context
            .as_ref()
            .and_then(|s| s.privileged)
            .unwrap_or(false);
        let mut mounts = Vec::new();
        let mut mount_hosts = true;
        for (index, vm) in container.volume_mounts.iter().flatten().enumerate() {
            if vm.mount_path == ETC_HOSTS {
                mount_hosts = false;
            }
            let volume = volumes.get(&vm.name).ok_or_else(|| {
                format!(
                    "cannot find volume {:?} to mount into container {:?}",
                    vm.name, container.name
                )
            })?;
            let subpath = match (vm.sub_path.as_deref(), vm.sub_path_expr.as_deref()) {
                (Some(p), _) if !p.is_empty() => Some(p.to_owned()),
                (_, Some(expr)) if !expr.is_empty() => {
                    Some(subpath::expand_subpath_expr(expr, context.env)?)
                }
                _ => None,
            };
            let host_path = match subpath {
                Some(sub) => {
                    let target = self
                        .dirs
                        .volume_subpath_dir(id, &vm.name, &container.name, index)
                        .map_err(|e| e.to_string())?;
                    subpath::prepare_subpath(&volume.path, &sub, &target).map_err(|e| {
                        // As upstream, details that name host paths stay in the log.
                        warn!(pod = %full_name(pod), container = %container.name, volume = %vm.name, error = %e, "cannot prepare a subPath");
                        match e {
                            subpath::SubpathError::Invalid(message) => message,
                            subpath::SubpathError::Create(_) => format!(
                                "failed to create subPath directory for volumeMount {:?} of container {:?}",
                                vm.name, container.name
                            ),
                            subpath::SubpathError::Prepare(_) => format!(
                                "failed to prepare subPath for volumeMount {:?} of container {:?}",
                                vm.name, container.name
                            ),
                        }
                    })?
                }
                None => volume.path.clone(),
            };
            let propagation = match vm.mount_propagation.as_deref() {
                None | Some("" | "None") => MountPropagation::Private,
                Some("HostToContainer") => MountPropagation::HostToContainer,
                Some("Bidirectional") if privileged => MountPropagation::Bidirectional,
                Some("Bidirectional") => {
                    return Err(
                        "Bidirectional mount propagation is available only to privileged containers"
                            .into(),
                    );
                }
                Some(other) => return Err(format!("invalid MountPropagation mode: {other:?}")),
            };
            // Recursive read-only needs runtime support this node does not claim:
            // `IfPossible` falls back to a plain read-only mount, `Enabled` is refused.
            if vm.recursive_read_only.as_deref() == Some("Enabled") {
                return Err(format!(
                    "failed to resolve recursive read-only mode: volume {:?} requested recursive read-only mode, but it is not supported by the runtime",
                    vm.name
                ));
            }
            mounts.push(Mount {
                name: vm.name.clone(),
                container_path: vm.mount_path.clone(),
                host_path,
                read_only: vm.read_only.unwrap_or(false) || volume.attributes.read_only,
                selinux_relabel: volume.attributes.managed,
                propagation,
            });
        }
        // As upstream: only once the pod has IPs (a host-network pod has the node's).
        if mount_hosts && !context.pod_ips.is_empty() {
            let host_network = pod
                .spec
                .as_ref()
                .and_then(|s| s.host_network)
                .unwrap_or(false);
            mounts.push(self.hosts_mount(pod, context, host_network)?);
        }
        Ok(mounts)
    }

    fn hosts_mount(
        &self,
        pod: &Pod,
        context: &ContainerContext<'_>,
        host_network: bool,
    ) -> Result<Mount, String> {
        let aliases = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_aliases.as_deref())
            .unwrap_or_default();
        let content = if host_network {
            hosts::host_network_hosts(&self.config.node_hosts_file, aliases).map_err(|e| {
                format!(
                    "cannot read the node's hosts file {}: {e}",
                    self.config.node_hosts_file.display()
                )
            })?
        } else {
            hosts::managed_hosts(
                context.pod_ips,
                context.hostname,
                context.host_domain,
                aliases,
            )
        };
        let path = self
            .dirs
            .etc_hosts_path(uid(pod))
            .map_err(|e| e.to_string())?;
        // The pod directory exists: every sync makes it before containers start.
        std::fs::write(&path, content)
            .map_err(|e| format!("cannot write the hosts file {}: {e}", path.display()))?;
        Ok(Mount {
            name: "k8s-managed-etc-hosts".into(),
            container_path: ETC_HOSTS.into(),
            host_path: path,
            read_only: false,
            selinux_relabel: true,
            propagation: MountPropagation::Private,
        })
    }
}

/// `namespace/name` of a pod, for errors.
fn pod_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

#[async_trait]
impl VolumeManager for DefaultVolumeManager {
    async fn wait_for_attach_and_mount(&self, pod: &Pod) -> Result<(), VolumeError> {
        let lock = self.pod_lock(uid(pod));
        let _guard = lock.lock().await;
        if let Ok(mut desired) = self.desired.lock() {
            desired.insert(uid(pod).to_owned());
        }
        self.make_pod_dirs(uid(pod))
            .map_err(|(path, reason)| VolumeError::PodDirs {
                pod: pod_name(pod),
                path,
                reason,
            })?;
        if used_volumes(pod).is_empty() {
            return Ok(());
        }
        let start = tokio::time::Instant::now();
        let deadline = start
            .checked_add(self.config.mount_timeout)
            .unwrap_or(start + MAX_RETRY);
        loop {
            let failed = self.mount_pass(pod).await;
            if failed.is_empty() {
                return Ok(());
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                let mut unmounted = failed;
                unmounted.sort();
                return Err(VolumeError::NotMounted {
                    unmounted,
                    unattached: Vec::new(),
                    reason: "context deadline exceeded".into(),
                });
            }
            let wake = self
                .next_retry(uid(pod))
                .unwrap_or(now + INITIAL_RETRY)
                .clamp(now + Duration::from_millis(10), deadline);
            tokio::time::sleep_until(wake).await;
        }
    }

    async fn unmount_pod_volumes(&self, pod: &Pod) -> Result<(), VolumeError> {
        let id = uid(pod).to_owned();
        let lock = self.pod_lock(&id);
        let _guard = lock.lock().await;
        self.tear_down_pod(&id, Some(pod))
            .await
            .map_err(|failures| {
                let (volume, path) = failures
                    .first()
                    .map(|(v, p, _)| (v.clone(), p.clone()))
                    .unwrap_or_default();
                VolumeError::TearDown {
                    pod: pod_name(pod),
                    volume,
                    path,
                    reason: failures
                        .iter()
                        .map(|(_, _, r)| r.as_str())
                        .collect::<Vec<_>>()
                        .join("; "),
                }
            })?;
        if let Ok(mut desired) = self.desired.lock() {
            desired.remove(&id);
        }
        Ok(())
    }

    fn container_options(
        &self,
        pod: &Pod,
        container: &Container,
        context: &ContainerContext<'_>,
    ) -> Result<ContainerOptions, VolumeError> {
        let mounts_error = |reason: String| VolumeError::Mounts {
            pod: pod_name(pod),
            container: container.name.clone(),
            reason,
        };
        let mounts = self
            .mounts_for(pod, container, context)
            .map_err(mounts_error)?;
        let pod_container_dir = self
            .dirs
            .pod_container_dir(uid(pod), &container.name)
            .map_err(|e| mounts_error(e.to_string()))?;
        Ok(ContainerOptions {
            mounts,
            pod_container_dir: Some(pod_container_dir),
        })
    }

    async fn cleanup_orphaned_pods(&self, active: &HashSet<String>) {
        let uids = match self.dirs.list_pod_uids() {
            Ok(u) => u,
            Err(e) => {
                warn!(dir = %self.dirs.pods_dir().display(), error = %e, "cannot list pod directories");
                return;
            }
        };
        for id in uids.into_iter().filter(|u| !active.contains(u)) {
            let lock = self.pod_lock(&id);
            let Ok(_guard) = lock.try_lock() else {
                continue;
            };
            if self.desired.lock().map(|d| d.contains(&id)).unwrap_or(true) {
                continue;
            }
            if let Err(failures) = self.tear_down_pod(&id, None).await {
                for (volume, path, reason) in failures {
                    warn!(uid = %id, volume = %volume, path = %path.display(), error = %reason, "orphaned pod found, but its volumes could not be torn down");
                }
                continue;
            }
            let Ok(dir) = self.dirs.pod_dir(&id) else {
                continue;
            };
            match mount::mounts_under(&dir) {
                Ok(left) if left.is_empty() => match mount::remove_all_one_filesystem(&dir) {
                    Ok(()) => info!(uid = %id, "removed the directory of an orphaned pod"),
                    Err(e) => {
                        warn!(uid = %id, error = %e, "cannot remove an orphaned pod's directory")
                    }
                },
                Ok(left) => warn!(
                    uid = %id,
                    mounts = ?left,
                    "orphaned pod found, but volumes are still mounted on disk; its directory is kept"
                ),
                Err(e) => warn!(uid = %id, error = %e, "cannot read the mount table"),
            }
            if let Ok(mut locks) = self.locks.lock() {
                locks.remove(&id);
            }
        }
    }
}

/// Bytes used by the files below `path` (not crossing into other filesystems' mounts).
fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(root) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let device = root.dev();
    let mut total = 0u64;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.dev() != device {
                continue;
            }
            total += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    total
}

/// Gives a volume the kubelet manages to the pod's `fsGroup` after its set-up
/// ([`crate::ownership`]); nothing without an fsGroup or for a volume the kubelet does not own
/// (hostPath).
fn apply_fs_group(plugin: &dyn VolumePlugin, ctx: &VolumeContext<'_>) -> Result<(), PluginError> {
    let Some(gid) = crate::ownership::fs_group(ctx.pod) else {
        return Ok(());
    };
    let attributes = plugin.attributes(ctx.volume);
    if !attributes.managed {
        return Ok(());
    }
    let path = plugin.path(ctx);
    // Content the kubelet rewrites from a source (configMap, secret, downwardAPI, projected)
    // gets every new file re-owned, whatever the pod's policy (upstream passes no policy for
    // these); kept data (emptyDir) follows `fsGroupChangePolicy`.
    let policy = if plugin.requires_remount(ctx.volume) {
        crate::ownership::ChangePolicy::Always
    } else {
        crate::ownership::ChangePolicy::of(ctx.pod)
    };
    crate::ownership::set_volume_ownership(&path, gid, attributes.read_only, policy)
        .map_err(|e| PluginError::io("setting the fsGroup ownership of", &path, &e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Standalone;
    use k8s_openapi::api::core::v1::{
        ConfigMapVolumeSource, EmptyDirVolumeSource, PodSpec, VolumeMount,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use node_core::events::MemoryRecorder;

    fn manager(root: &Path) -> DefaultVolumeManager {
        manager_with(
            root,
            Duration::from_millis(600),
            PluginRegistry::with_defaults(),
        )
        .0
    }

    /// A standalone manager with this timeout and these plugins, and its events.
    fn manager_with(
        root: &Path,
        timeout: Duration,
        plugins: PluginRegistry,
    ) -> (DefaultVolumeManager, Arc<MemoryRecorder>) {
        let recorder = Arc::new(MemoryRecorder::default());
        let manager = DefaultVolumeManager::new(
            VolumeManagerConfig {
                mount_timeout: timeout,
                node: NodeAllocatable {
                    memory_bytes: 1 << 30,
                    cpu_millis: 1000,
                },
                ..VolumeManagerConfig::new(root)
            },
            plugins,
            Arc::new(Standalone),
            recorder.clone(),
        );
        (manager, recorder)
    }

    fn empty_dir(name: &str, medium: Option<&str>, limit: Option<&str>) -> Volume {
        Volume {
            name: name.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: medium.map(Into::into),
                size_limit: limit.map(|l| Quantity(l.into())),
            }),
            ..Default::default()
        }
    }

    fn pod(uid: &str, volumes: Vec<Volume>, mounts: Vec<VolumeMount>) -> Pod {
        Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("p".into()),
                namespace: Some("default".into()),
                uid: Some(uid.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                volumes: Some(volumes),
                containers: vec![Container {
                    name: "c".into(),
                    volume_mounts: Some(mounts),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn mount(name: &str, path: &str) -> VolumeMount {
        VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn volume_errors_name_the_pod_the_container_and_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The pods directory is a file: the pod's directories cannot be made.
        std::fs::write(dir.path().join("pods"), "").unwrap();
        let m = manager(dir.path());
        let p = pod("u-err", vec![], vec![mount("missing", "/data")]);
        match m.wait_for_attach_and_mount(&p).await {
            Err(VolumeError::PodDirs { pod, path, reason }) => {
                assert_eq!(pod, "default/p");
                assert!(
                    path.starts_with(dir.path().join("pods")),
                    "{}",
                    path.display()
                );
                assert!(reason.contains(&path.display().to_string()), "{reason}");
            }
            other => panic!("expected PodDirs, got {other:?}"),
        }
        std::fs::remove_file(dir.path().join("pods")).unwrap();
        m.wait_for_attach_and_mount(&p).await.unwrap();
        let env = BTreeMap::new();
        let ips = Vec::new();
        let container = &p.spec.as_ref().unwrap().containers[0];
        match m.container_options(&p, container, &context(&env, &ips)) {
            Err(VolumeError::Mounts {
                pod,
                container,
                reason,
            }) => {
                assert_eq!((pod.as_str(), container.as_str()), ("default/p", "c"));
                assert!(reason.contains("missing"), "{reason}");
            }
            other => panic!("expected Mounts, got {other:?}"),
        }
    }

    /// Unmounts whatever a test left below its directory, even when it fails.
    struct Cleanup(PathBuf);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            for m in mount::mounts_under(&self.0).unwrap_or_default() {
                let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }

    fn context<'a>(env: &'a BTreeMap<String, String>, ips: &'a [String]) -> ContainerContext<'a> {
        ContainerContext {
            pod_ips: ips,
            hostname: "p",
            host_domain: "",
            env,
        }
    }

    #[tokio::test]
    async fn empty_dir_usage_reports_limit_and_bytes_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _cleanup = Cleanup(dir.path().to_path_buf());
        let m = manager(dir.path());
        let p = pod(
            "u1",
            vec![
                empty_dir("disk", None, Some("10Mi")),
                empty_dir("mem", Some("Memory"), Some("4Mi")),
            ],
            vec![mount("disk", "/disk"), mount("mem", "/mem")],
        );
        m.wait_for_attach_and_mount(&p).await.expect("mounted");
        let disk = m
            .dirs()
            .pod_volume_dir("u1", "kubernetes.io/empty-dir", "disk")
            .expect("dir");
        std::fs::write(disk.join("blob"), vec![7u8; 1 << 20]).expect("write");
        let usage = m.empty_dir_usage("u1");
        assert_eq!(usage.len(), 2);
        assert_eq!(usage[0].volume, "disk");
        assert_eq!(usage[0].size_limit, Some(10 << 20));
        assert!(usage[0].used_bytes >= 1 << 20, "{usage:?}");
        assert_eq!(usage[1].size_limit, Some(4 << 20), "the tmpfs size");
        m.unmount_pod_volumes(&p).await.expect("torn down");
        assert!(!disk.exists());
        assert!(!m.pod_volumes_exist("u1"));
    }

    #[tokio::test]
    async fn orphans_are_removed_only_when_nothing_is_mounted_beneath() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _cleanup = Cleanup(dir.path().to_path_buf());
        let m = manager(dir.path());
        // An orphan from before a restart: data on disk and a memory emptyDir.
        let orphan = pod(
            "gone",
            vec![
                empty_dir("d", None, None),
                empty_dir("t", Some("Memory"), None),
            ],
            vec![mount("d", "/d"), mount("t", "/t")],
        );
        m.wait_for_attach_and_mount(&orphan).await.expect("mounted");
        let restarted = manager(dir.path());
        // An orphan with a mount no plugin of ours made.
        let foreign = dir.path().join("pods/foreign/containers/c/mounted");
        std::fs::create_dir_all(&foreign).expect("foreign dir");
        mount::mount_tmpfs(&foreign, Some(1 << 20), 0o755).expect("foreign mount");
        // A pod that is still wanted.
        let active_dir = dir
            .path()
            .join("pods/active/volumes/kubernetes.io~empty-dir/x");
        std::fs::create_dir_all(&active_dir).expect("active dir");

        let active: HashSet<String> = ["active".to_string()].into();
        restarted.cleanup_orphaned_pods(&active).await;
        assert!(
            !dir.path().join("pods/gone").exists(),
            "the orphan is removed"
        );
        assert!(
            foreign.exists(),
            "a pod directory with a foreign mount is kept"
        );
        assert!(mount::is_mount_point(&foreign).expect("mount table"));
        assert!(active_dir.exists(), "active pods are left alone");
    }

    #[tokio::test]
    async fn container_mounts_resolve_volumes_read_only_data_and_hosts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _cleanup = Cleanup(dir.path().to_path_buf());
        let m = manager(dir.path());
        let p = pod(
            "u2",
            vec![
                empty_dir("data", None, None),
                Volume {
                    name: "cfg".into(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: "absent".into(),
                        optional: Some(true),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ],
            vec![mount("data", "/data"), mount("cfg", "/cfg")],
        );
        m.wait_for_attach_and_mount(&p).await.expect("mounted");
        let env = BTreeMap::new();
        let ips = vec!["10.88.0.9".to_string()];
        let container = &p.spec.as_ref().expect("spec").containers[0];
        let options = m
            .container_options(&p, container, &context(&env, &ips))
            .expect("options");
        let got: Vec<(&str, bool)> = options
            .mounts
            .iter()
            .map(|m| (m.container_path.as_str(), m.read_only))
            .collect();
        assert_eq!(
            got,
            [("/data", false), ("/cfg", true), ("/etc/hosts", false)]
        );
        let hosts = std::fs::read_to_string(&options.mounts[2].host_path).expect("hosts");
        assert!(hosts.ends_with("10.88.0.9\tp\n"), "{hosts}");
        assert_eq!(
            options.pod_container_dir,
            Some(dir.path().join("pods/u2/containers/c"))
        );
        for sub in ["volumes", "plugins"] {
            assert!(dir.path().join("pods/u2").join(sub).is_dir(), "{sub}");
        }

        // No hosts file without pod IPs, or when the container mounts its own.
        let none = m
            .container_options(&p, container, &context(&env, &[]))
            .expect("options");
        assert!(none.mounts.iter().all(|m| m.container_path != "/etc/hosts"));

        let mut own_hosts = container.clone();
        own_hosts.volume_mounts = Some(vec![mount("data", "/etc/hosts")]);
        let own = m
            .container_options(&p, &own_hosts, &context(&env, &ips))
            .expect("options");
        assert_eq!(own.mounts.len(), 1, "the container's own /etc/hosts only");
        assert!(own.mounts[0].host_path.ends_with("data"));

        // A mount of a volume the pod does not have names both.
        let mut bad = container.clone();
        bad.volume_mounts = Some(vec![mount("nope", "/x")]);
        let err = m
            .container_options(&p, &bad, &context(&env, &ips))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot find volume \"nope\" to mount into container \"c\""
        );
    }

    /// A plugin a custom agent brings: CSI volumes of one driver, set up as a marker file.
    struct MarkerPlugin;

    #[async_trait]
    impl VolumePlugin for MarkerPlugin {
        fn name(&self) -> &str {
            "example.com/marker"
        }

        fn can_support(&self, volume: &Volume) -> bool {
            volume
                .csi
                .as_ref()
                .is_some_and(|c| c.driver == "marker.example.com")
        }

        async fn set_up(&self, ctx: &VolumeContext<'_>) -> Result<(), crate::plugin::PluginError> {
            std::fs::create_dir_all(ctx.dir)
                .map_err(|e| crate::plugin::PluginError::io("cannot create", ctx.dir, &e))?;
            std::fs::write(ctx.dir.join("marker"), &ctx.volume.name)
                .map_err(|e| crate::plugin::PluginError::io("cannot write", ctx.dir, &e))
        }

        async fn tear_down(
            &self,
            ctx: &VolumeContext<'_>,
        ) -> Result<(), crate::plugin::PluginError> {
            std::fs::remove_dir_all(ctx.dir)
                .map_err(|e| crate::plugin::PluginError::io("cannot remove", ctx.dir, &e))
        }
    }

    #[tokio::test]
    async fn a_registered_custom_plugin_serves_its_volumes() {
        use k8s_openapi::api::core::v1::CSIVolumeSource;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut plugins = PluginRegistry::with_defaults();
        plugins
            .register(Arc::new(MarkerPlugin))
            .expect("registered");
        assert_eq!(
            plugins.register(Arc::new(MarkerPlugin)).unwrap_err(),
            crate::plugin::RegistryError::Duplicate("example.com/marker".into())
        );
        let (m, _) = manager_with(dir.path(), DEFAULT_MOUNT_TIMEOUT, plugins);
        let csi = |driver: &str| Volume {
            name: "fancy".into(),
            csi: Some(CSIVolumeSource {
                driver: driver.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let p = pod(
            "u4",
            vec![csi("marker.example.com")],
            vec![mount("fancy", "/fancy")],
        );
        m.wait_for_attach_and_mount(&p)
            .await
            .expect("mounted by the custom plugin");
        let volume = dir.path().join("pods/u4/volumes/example.com~marker/fancy");
        assert_eq!(
            std::fs::read_to_string(volume.join("marker")).expect("marker"),
            "fancy"
        );
        let env = BTreeMap::new();
        let options = m
            .container_options(
                &p,
                &p.spec.as_ref().expect("spec").containers[0],
                &context(&env, &[]),
            )
            .expect("options");
        assert_eq!(options.mounts[0].host_path, volume);
        m.unmount_pod_volumes(&p).await.expect("torn down");
        assert!(!volume.exists());

        // A volume no plugin supports fails to mount, with upstream's message.
        let other = pod(
            "u5",
            vec![csi("unknown.example.com")],
            vec![mount("fancy", "/f")],
        );
        let (m, _) = manager_with(
            dir.path(),
            Duration::from_millis(100),
            PluginRegistry::with_defaults(),
        );
        let err = m.wait_for_attach_and_mount(&other).await.unwrap_err();
        assert!(
            err.to_string().starts_with("unmounted volumes=[fancy]"),
            "{err}"
        );
        assert_eq!(
            PluginRegistry::with_defaults().find(&csi("x")).err(),
            Some(crate::plugin::RegistryError::NoMatch("fancy".into()))
        );
    }

    #[tokio::test]
    async fn standalone_projected_volumes_go_without_optional_sources_only() {
        use k8s_openapi::api::core::v1::{
            ConfigMapProjection, DownwardAPIProjection, DownwardAPIVolumeFile, ObjectFieldSelector,
            ProjectedVolumeSource, VolumeProjection,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let _cleanup = Cleanup(dir.path().to_path_buf());
        let (m, recorder) = manager_with(
            dir.path(),
            Duration::from_millis(100),
            PluginRegistry::with_defaults(),
        );
        let projected = |optional: bool| Volume {
            name: "all".into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![
                    VolumeProjection {
                        config_map: Some(ConfigMapProjection {
                            name: "settings".into(),
                            optional: Some(optional),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    VolumeProjection {
                        downward_api: Some(DownwardAPIProjection {
                            items: Some(vec![DownwardAPIVolumeFile {
                                path: "name".into(),
                                field_ref: Some(ObjectFieldSelector {
                                    field_path: "metadata.name".into(),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            }]),
                        }),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let optional = pod("u6", vec![projected(true)], vec![mount("all", "/all")]);
        m.wait_for_attach_and_mount(&optional)
            .await
            .expect("mounted");
        let volume = dir
            .path()
            .join("pods/u6/volumes/kubernetes.io~projected/all");
        assert_eq!(
            std::fs::read_to_string(volume.join("name")).expect("name"),
            "p"
        );
        assert!(!volume.join("settings").exists());
        m.unmount_pod_volumes(&optional).await.expect("torn down");

        let required = pod("u7", vec![projected(false)], vec![mount("all", "/all")]);
        m.wait_for_attach_and_mount(&required).await.unwrap_err();
        let event = recorder.events().pop().expect("an event");
        assert!(
            event
                .message
                .contains("cannot get configmap default/settings: the node runs standalone"),
            "{}",
            event.message
        );
    }

    #[tokio::test]
    async fn failed_set_up_times_out_with_upstreams_message_and_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (m, recorder) = manager_with(
            dir.path(),
            Duration::from_millis(800),
            PluginRegistry::with_defaults(),
        );
        let p = pod(
            "u3",
            vec![Volume {
                name: "cfg".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: "settings".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            vec![mount("cfg", "/cfg")],
        );
        let err = m.wait_for_attach_and_mount(&p).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "unmounted volumes=[cfg], unattached volumes=[], failed to process volumes=[]: context deadline exceeded"
        );
        let events = recorder.events();
        assert!(events.len() >= 2, "one event per attempt: {events:?}");
        assert_eq!(
            events[0].reason,
            node_core::events::reasons::FAILED_MOUNT_VOLUME
        );
        assert_eq!(
            events[0].message,
            "MountVolume.SetUp failed for volume \"cfg\" : cannot get configmap default/settings: the node runs standalone, with no API server to read it from"
        );
    }
}
