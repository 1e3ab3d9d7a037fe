//! Volumes for a Kubernetes node agent.
//!
//! node-volumes owns the `VolumePlugin` trait and a registry a custom agent can extend; the
//! standard plugins (emptyDir, hostPath, configMap, secret, downwardAPI, projected); the
//! volume manager that sets volumes up before a pod's containers start and tears them down
//! after it terminates; and the pod directory layout under the kubelet's root directory
//! (`<rootDir>/pods/<uid>/volumes/<plugin>/<volume>`).
//!
#![forbid(unsafe_code)]

pub mod atomic_writer;
pub mod host_path;
pub mod hosts;
pub mod layout;
pub mod manager;
pub mod mount;
pub mod payload;
pub mod plugin;
pub mod plugins;
pub mod source;
pub mod subpath;
