//! hostPath: a file or directory of the node, checked against the volume's type.

use std::path::PathBuf;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Volume;

use crate::host_path::{HostPathType, check_host_path};
use crate::plugin::{Attributes, PluginError, VolumeContext, VolumePlugin};

/// The hostPath plugin (`kubernetes.io/host-path`).
#[derive(Clone, Copy, Debug, Default)]
pub struct HostPathPlugin;

#[async_trait]
impl VolumePlugin for HostPathPlugin {
    fn name(&self) -> &str {
        "kubernetes.io/host-path"
    }

    fn can_support(&self, volume: &Volume) -> bool {
        volume.host_path.is_some()
    }

    fn attributes(&self, _volume: &Volume) -> Attributes {
        Attributes {
            read_only: false,
            managed: false,
        }
    }

    fn path(&self, ctx: &VolumeContext<'_>) -> PathBuf {
        ctx.volume
            .host_path
            .as_ref()
            .map(|h| PathBuf::from(&h.path))
            .unwrap_or_default()
    }

    async fn set_up(&self, ctx: &VolumeContext<'_>) -> Result<(), PluginError> {
        let source = ctx.volume.host_path.as_ref().ok_or_else(|| {
            PluginError::new(format!(
                "volume {:?} is not a hostPath volume",
                ctx.volume.name
            ))
        })?;
        let ty = HostPathType::parse(source.type_.as_deref()).map_err(PluginError::new)?;
        check_host_path(&self.path(ctx), ty).map_err(PluginError::new)
    }

    async fn tear_down(&self, _ctx: &VolumeContext<'_>) -> Result<(), PluginError> {
        // The node's data outlives the pod.
        Ok(())
    }
}
