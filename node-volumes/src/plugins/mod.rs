//! The standard volume plugins.

use std::path::Path;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

use crate::mount;
use crate::plugin::{NodeAllocatable, PluginError, VolumePlugin};

mod api_data;
mod empty_dir;
mod host_path;
#[cfg(test)]
mod tests;

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

/// A container's memory limit in bytes.
fn memory_limit(c: &k8s_openapi::api::core::v1::Container) -> Option<u64> {
    c.resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get("memory"))
        .and_then(quantity_bytes)
}

/// The pod's memory limit as upstream's `ResourceConfigForPod` reckons it: the larger of the
/// app containers plus the sidecars, and each init container plus the sidecars started before
/// it. `None` when some container has no memory limit.
pub(crate) fn pod_memory_limit(pod: &Pod) -> Option<u64> {
    let spec = pod.spec.as_ref()?;
    let mut sidecars: u64 = 0;
    let mut init_peak: u64 = 0;
    for c in spec.init_containers.iter().flatten() {
        let limit = memory_limit(c)?;
        if node_core::pod_manager::is_sidecar(c) {
            sidecars = sidecars.saturating_add(limit);
        } else {
            init_peak = init_peak.max(limit.saturating_add(sidecars));
        }
    }
    let mut apps: u64 = 0;
    for c in &spec.containers {
        apps = apps.saturating_add(memory_limit(c)?);
    }
    Some(apps.saturating_add(sidecars).max(init_peak))
}

/// The size of a memory-backed volume (upstream `calculateEmptyDirMemorySize`): the node's
/// allocatable memory, or the pod's memory limit when it has one and it is smaller, or the
/// volume's sizeLimit when it is set and smaller still.
pub(crate) fn memory_volume_size(
    pod: &Pod,
    size_limit: Option<u64>,
    node: &NodeAllocatable,
) -> u64 {
    let mut size = u64::try_from(node.memory_bytes).unwrap_or(0);
    if let Some(pod_limit) = pod_memory_limit(pod).filter(|l| *l > 0)
        && (size == 0 || pod_limit < size)
    {
        size = pod_limit;
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

/// Unmounts whatever is mounted at or below `dir` and removes it (see
/// [`mount::unmount_and_remove`]).
pub(crate) fn remove_volume_dir(dir: &Path) -> Result<(), PluginError> {
    mount::unmount_and_remove(dir).map_err(PluginError::new)
}
