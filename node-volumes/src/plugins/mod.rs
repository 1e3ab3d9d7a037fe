//! The standard volume plugins.

use std::path::Path;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

use crate::mount;
use crate::plugin::{NodeFacts, PluginError, VolumePlugin};

mod api_data;
mod empty_dir;
mod host_path;

pub use api_data::{ConfigMapPlugin, DownwardApiPlugin, ProjectedPlugin, SecretPlugin};
pub use empty_dir::EmptyDirPlugin;
pub use host_path::HostPathPlugin;

/// The standard plugins, one of each.
pub fn defaults() -> Vec<Arc<dyn VolumePlugin>> {
    vec![
        Arc::new(EmptyDirPlugin),
        Arc::new(HostPathPlugin),
        Arc::new(ConfigMapPlugin),
        Arc::new(SecretPlugin),
        Arc::new(DownwardApiPlugin),
        Arc::new(ProjectedPlugin),
    ]
}

/// A quantity in bytes, when it parses.
pub(crate) fn quantity_bytes(q: &ApiQuantity) -> Option<u64> {
    q.0.parse::<node_config::Quantity>()
        .ok()
        .map(|q| q.value())
        .and_then(|v| u64::try_from(v).ok())
}

/// The size of a memory-backed volume (upstream `calculateEmptyDirMemorySize`): the node's
/// allocatable memory, or the pod's memory limit when every container has one (whichever is
/// smaller), or the volume's sizeLimit when it is set and smaller still.
pub(crate) fn memory_volume_size(pod: &Pod, size_limit: Option<u64>, node: &NodeFacts) -> u64 {
    let mut size = node.allocatable_memory_bytes;
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let limits: Option<Vec<u64>> = containers
        .iter()
        .map(|c| {
            c.resources
                .as_ref()
                .and_then(|r| r.limits.as_ref())
                .and_then(|l| l.get("memory"))
                .and_then(quantity_bytes)
        })
        .collect();
    if let Some(limits) = limits.filter(|l| !l.is_empty()) {
        let pod_limit: u64 = limits.iter().sum();
        if pod_limit > 0 && (size == 0 || pod_limit < size) {
            size = pod_limit;
        }
    }
    match size_limit.filter(|l| *l > 0) {
        Some(limit) if size == 0 || limit < size => limit,
        _ => size,
    }
}

/// Creates `dir` (and its parents) when missing.
pub(crate) fn make_dir(dir: &Path) -> Result<(), PluginError> {
    std::fs::create_dir_all(dir).map_err(|e| PluginError::io("cannot create", dir, &e))
}

/// Mounts a tmpfs of `size` bytes at `dir` unless one is mounted there already.
pub(crate) fn ensure_tmpfs(dir: &Path, size: u64) -> Result<(), PluginError> {
    make_dir(dir)?;
    let mounted = mount::is_mount_point(dir)
        .map_err(|e| PluginError::io("cannot read the mount table for", dir, &e))?;
    if !mounted {
        let size = (size > 0).then_some(size);
        mount::mount_tmpfs(dir, size, 0o1777).map_err(|e| {
            PluginError::new(format!("cannot mount a tmpfs at {}: {e}", dir.display()))
        })?;
    }
    Ok(())
}

/// Unmounts whatever is mounted at or below `dir` and removes it. Refuses to remove a tree
/// that still has mounts in it.
pub(crate) fn remove_volume_dir(dir: &Path) -> Result<(), PluginError> {
    if !dir.exists() {
        return Ok(());
    }
    let mounts = mount::mounts_under(dir)
        .map_err(|e| PluginError::io("cannot read the mount table for", dir, &e))?;
    for m in &mounts {
        mount::unmount(m)
            .map_err(|e| PluginError::new(format!("cannot unmount {}: {e}", m.display())))?;
    }
    let left = mount::mounts_under(dir)
        .map_err(|e| PluginError::io("cannot read the mount table for", dir, &e))?;
    if let Some(m) = left.first() {
        return Err(PluginError::new(format!(
            "{} is still mounted; {} is kept",
            m.display(),
            dir.display()
        )));
    }
    std::fs::remove_dir_all(dir).map_err(|e| PluginError::io("cannot remove", dir, &e))
}
