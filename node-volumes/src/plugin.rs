//! The [`VolumePlugin`] trait and the [`PluginRegistry`] a custom agent can extend.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Pod, Volume};

use crate::source::ObjectSource;

/// How a plugin's volume is mounted into containers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    /// Always mounted read-only, whatever the `volumeMount` says (API data volumes).
    pub read_only: bool,
    /// The kubelet owns the content (it may relabel it for SELinux).
    pub managed: bool,
}

/// What a plugin is given to set a pod's volume up or tear it down.
#[derive(Clone, Copy)]
pub struct VolumeContext<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// The volume, one of the pod's `spec.volumes`.
    pub volume: &'a Volume,
    /// The volume's directory under the pod directory
    /// (`<rootDir>/pods/<uid>/volumes/<escaped plugin>/<volume>`).
    pub dir: &'a Path,
    /// Where API objects (configMaps, secrets, service account tokens) come from.
    pub sources: &'a dyn ObjectSource,
    /// The node's allocatable resources.
    pub node: &'a NodeAllocatable,
}

impl std::fmt::Debug for VolumeContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeContext")
            .field("volume", &self.volume.name)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// The node's allocatable cpu and memory: memory-backed volumes without a limit are that
/// large, and downwardAPI `limits.*` of containers without limits read them.
pub use node_core::downward::NodeAllocatable;

/// Why a plugin could not set a volume up or tear it down. The message is what the
/// `FailedMount` event shows after `MountVolume.SetUp failed for volume "<name>" : `.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct PluginError {
    message: String,
}

impl PluginError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        PluginError {
            message: message.into(),
        }
    }

    /// An I/O error on `path`, naming what was being done.
    pub fn io(what: &str, path: &Path, e: &std::io::Error) -> Self {
        PluginError::new(format!("{what} {}: {e}", path.display()))
    }
}

/// A volume plugin: one kind of pod volume (emptyDir, hostPath, configMap, ...).
///
/// Set-up must be idempotent: the manager runs it again for a volume that is already set up
/// when [`VolumePlugin::requires_remount`] says its content follows a source, and after a
/// kubelet restart to re-adopt what is on disk. It must then keep the data and the mounts that
/// are there (no remount of a tmpfs that is mounted already).
#[async_trait]
pub trait VolumePlugin: Send + Sync {
    /// The plugin's name, e.g. `kubernetes.io/empty-dir`; its escaped form names the
    /// directory its volumes live in.
    fn name(&self) -> &str;

    /// Whether this plugin handles `volume`.
    fn can_support(&self, volume: &Volume) -> bool;

    /// Whether the volume's content follows a source and is refreshed on every pod sync.
    fn requires_remount(&self, _volume: &Volume) -> bool {
        false
    }

    /// How the volume is mounted into containers.
    fn attributes(&self, _volume: &Volume) -> Attributes {
        Attributes {
            read_only: false,
            managed: true,
        }
    }

    /// Where the volume's content is on the host: the volume directory, unless the plugin
    /// serves a host path itself.
    fn path(&self, ctx: &VolumeContext<'_>) -> PathBuf {
        ctx.dir.to_path_buf()
    }

    /// The memory-backed size limit and the on-disk limit of the volume, for eviction:
    /// `None` when it has none.
    fn size_limit(&self, _ctx: &VolumeContext<'_>) -> Option<u64> {
        None
    }

    /// Sets the volume up at [`VolumePlugin::path`].
    async fn set_up(&self, ctx: &VolumeContext<'_>) -> Result<(), PluginError>;

    /// Tears the volume down after its pod terminated (unmounts and removes what set-up
    /// made; leaves data that outlives the pod alone). `volume` may be a reconstruction with
    /// only its name when the pod spec is gone.
    async fn tear_down(&self, ctx: &VolumeContext<'_>) -> Result<(), PluginError>;
}

/// The volume plugins a node knows, matched against pod volumes.
#[derive(Clone, Default)]
pub struct PluginRegistry {
    plugins: Vec<Arc<dyn VolumePlugin>>,
}

impl std::fmt::Debug for PluginRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.plugins.iter().map(|p| p.name()))
            .finish()
    }
}

/// Why no single plugin serves a volume.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// No plugin supports the volume (upstream's message).
    #[error("no volume plugin matched name: {0}")]
    NoMatch(String),
    /// More than one plugin does.
    #[error("multiple volume plugins matched: {}", .0.join(","))]
    Ambiguous(Vec<String>),
    /// A plugin of that name is registered already.
    #[error("volume plugin {0:?} was registered more than once")]
    Duplicate(String),
}

impl PluginRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        PluginRegistry::default()
    }

    /// The standard plugins: emptyDir, hostPath, configMap, secret, downwardAPI, projected.
    pub fn with_defaults() -> Self {
        let mut registry = PluginRegistry::new();
        for plugin in crate::plugins::defaults() {
            // The defaults have distinct names.
            let _ = registry.register(plugin);
        }
        registry
    }

    /// Adds a plugin; names must be unique.
    pub fn register(&mut self, plugin: Arc<dyn VolumePlugin>) -> Result<(), RegistryError> {
        if self.by_name(plugin.name()).is_some() {
            return Err(RegistryError::Duplicate(plugin.name().to_owned()));
        }
        self.plugins.push(plugin);
        Ok(())
    }

    /// The one plugin that supports `volume`.
    pub fn find(&self, volume: &Volume) -> Result<Arc<dyn VolumePlugin>, RegistryError> {
        let mut matched = self.plugins.iter().filter(|p| p.can_support(volume));
        match (matched.next(), matched.next()) {
            (Some(p), None) => Ok(p.clone()),
            (None, _) => Err(RegistryError::NoMatch(volume.name.clone())),
            (Some(a), Some(b)) => {
                let mut names = vec![a.name().to_owned(), b.name().to_owned()];
                names.extend(
                    self.plugins
                        .iter()
                        .filter(|p| p.can_support(volume))
                        .skip(2)
                        .map(|p| p.name().to_owned()),
                );
                Err(RegistryError::Ambiguous(names))
            }
        }
    }

    /// The plugin of this name.
    pub fn by_name(&self, name: &str) -> Option<Arc<dyn VolumePlugin>> {
        self.plugins.iter().find(|p| p.name() == name).cloned()
    }

    /// The registered plugins' names, in registration order.
    pub fn names(&self) -> Vec<&str> {
        self.plugins.iter().map(|p| p.name()).collect()
    }
}
