//! emptyDir: a directory the pod starts with, empty, on the node's disk or (medium `Memory`)
//! on a tmpfs sized by `sizeLimit`, the pod's memory limit or the node's allocatable memory.

use std::os::unix::fs::PermissionsExt;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Volume;

use super::{ensure_tmpfs, make_dir, memory_volume_size, quantity_bytes, remove_volume_dir};
use crate::plugin::{PluginError, VolumeContext, VolumePlugin};

/// The emptyDir plugin (`kubernetes.io/empty-dir`).
#[derive(Clone, Copy, Debug, Default)]
pub struct EmptyDirPlugin;

/// The storage medium of an emptyDir.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Medium {
    Disk,
    Memory,
}

fn medium(volume: &Volume) -> Result<Medium, PluginError> {
    match volume
        .empty_dir
        .as_ref()
        .and_then(|e| e.medium.as_deref())
        .unwrap_or("")
    {
        "" => Ok(Medium::Disk),
        "Memory" => Ok(Medium::Memory),
        other => Err(PluginError::new(format!(
            "emptyDir medium {other:?} is not supported on this node"
        ))),
    }
}

#[async_trait]
impl VolumePlugin for EmptyDirPlugin {
    fn name(&self) -> &str {
        "kubernetes.io/empty-dir"
    }

    fn can_support(&self, volume: &Volume) -> bool {
        volume.empty_dir.is_some()
    }

    fn size_limit(&self, ctx: &VolumeContext<'_>) -> Option<u64> {
        let limit = ctx
            .volume
            .empty_dir
            .as_ref()
            .and_then(|e| e.size_limit.as_ref())
            .and_then(quantity_bytes);
        match medium(ctx.volume) {
            Ok(Medium::Memory) => Some(memory_volume_size(ctx.pod, limit, ctx.node)),
            _ => limit,
        }
    }

    async fn set_up(&self, ctx: &VolumeContext<'_>) -> Result<(), PluginError> {
        match medium(ctx.volume)? {
            Medium::Disk => {
                make_dir(ctx.dir)?;
                // World-writable, as upstream: containers run as any user.
                std::fs::set_permissions(ctx.dir, std::fs::Permissions::from_mode(0o777))
                    .map_err(|e| PluginError::io("cannot set the mode of", ctx.dir, &e))
            }
            Medium::Memory => {
                let size = self.size_limit(ctx).unwrap_or(0);
                ensure_tmpfs(ctx.dir, size)
            }
        }
    }

    async fn tear_down(&self, ctx: &VolumeContext<'_>) -> Result<(), PluginError> {
        remove_volume_dir(ctx.dir)
    }
}
