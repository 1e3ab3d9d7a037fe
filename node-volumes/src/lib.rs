//! Volumes for a Kubernetes node agent.
//!
//! node-volumes owns the `VolumePlugin` trait and a registry a custom agent can extend; the
//! standard plugins (emptyDir, hostPath, configMap, secret, downwardAPI, projected); the
//! volume manager that sets volumes up before a pod's containers start and tears them down
//! after it terminates; and the pod directory layout under the kubelet's root directory
//! (`<rootDir>/pods/<uid>/volumes/<plugin>/<volume>`).
//!
//! The engine (node-core) and the CRI runtime (node-cri) take the manager as node-core's
//! `VolumeManager`:
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use node_core::events::LogRecorder;
//! use node_volumes::manager::{DefaultVolumeManager, VolumeManagerConfig};
//! use node_volumes::plugin::PluginRegistry;
//! use node_volumes::source::Standalone;
//!
//! let plugins = PluginRegistry::with_defaults();
//! // plugins.register(Arc::new(MyCsiPlugin))?;  // a custom agent adds its own
//! let volumes = Arc::new(DefaultVolumeManager::new(
//!     VolumeManagerConfig::new("/var/lib/kubelet"),
//!     plugins,
//!     Arc::new(Standalone), // no API server: configMaps and secrets cannot be had
//!     Arc::new(LogRecorder),
//! ));
//! volumes.set_up_root_dir()?; // <root>/pods, and the root a shared mount
//! // Kubelet::new(..).with_volume_manager(volumes.clone());
//! // CriRuntime::new(..).with_volume_manager(volumes);
//! # Ok::<(), String>(())
//! ```
#![forbid(unsafe_code)]

#[cfg(feature = "api")]
pub mod api;
pub mod atomic_writer;
pub mod host_path;
pub mod hosts;
pub mod layout;
pub mod manager;
pub mod mount;
pub mod ownership;
pub mod payload;
pub mod plugin;
pub mod plugins;
pub mod source;
pub mod subpath;
