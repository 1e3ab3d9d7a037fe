//! Volumes of API data written as files with the atomic writer: configMap, secret (on tmpfs,
//! never on disk), downwardAPI, and projected (on tmpfs). Their content follows the source:
//! every pod sync writes it again, and the `..data` symlink swap makes a change appear at once.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, Pod, Secret, ServiceAccountTokenProjection, Volume,
};
use node_core::downward::{NodeAllocatable, container_by_name, container_resource, object_field};

use super::{ensure_tmpfs, make_dir, memory_volume_size, remove_volume_dir};
use crate::atomic_writer::{AtomicWriter, FileProjection};
use crate::payload::{
    ProjectedSources, config_map_payload, file_mode, projected_payload, secret_payload,
};
use crate::plugin::{Attributes, PluginError, VolumeContext, VolumePlugin};
use crate::source::SourceError;

/// Upstream's default file mode of API-data volumes.
const DEFAULT_MODE: i32 = 0o644;

fn api_data_attributes() -> Attributes {
    Attributes {
        read_only: true,
        managed: true,
    }
}

fn namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

fn write(
    ctx: &VolumeContext<'_>,
    payload: &BTreeMap<String, FileProjection>,
) -> Result<(), PluginError> {
    AtomicWriter::new(ctx.dir)
        .write(payload)
        .map(|_| ())
        .map_err(|e| {
            PluginError::new(format!(
                "error writing the payload to {}: {e}",
                ctx.dir.display()
            ))
        })
}

/// The configMap plugin (`kubernetes.io/configmap`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ConfigMapPlugin;

#[async_trait]
impl VolumePlugin for ConfigMapPlugin {
    fn name(&self) -> &str {
        "kubernetes.io/configmap"
    }

    fn can_support(&self, volume: &Volume) -> bool {
        volume.config_map.is_some()
    }

    fn requires_remount(&self, _volume: &Volume) -> bool {
        true
    }

    fn attributes(&self, _volume: &Volume) -> Attributes {
        api_data_attributes()
    }

    async fn set_up(&self, ctx: &VolumeContext<'_>) -> Result<(), PluginError> {
        let source = ctx.volume.config_map.as_ref().ok_or_else(|| {
            PluginError::new(format!(
                "volume {:?} is not a configMap volume",
                ctx.volume.name
            ))
        })?;
        let optional = source.optional.unwrap_or(false);
        let config_map = match ctx
            .sources
            .config_map(namespace(ctx.pod), &source.name)
            .await
        {
            Ok(c) => c,
            Err(e) if optional && e.is_absent() => ConfigMap::default(),
            Err(e) => return Err(PluginError::new(e.to_string())),
        };
        let payload = config_map_payload(source, &config_map).map_err(PluginError::new)?;
        make_dir(ctx.dir)?;
        write(ctx, &payload)
    }

    async fn tear_down(&self, ctx: &VolumeContext<'_>) -> Result<(), PluginError> {
        remove_volume_dir(ctx.dir)
    }
}

/// The secret plugin (`kubernetes.io/secret`): the files live on a tmpfs.
#[derive(Clone, Copy, Debug, Default)]
pub struct SecretPlugin;

#[async_trait]
impl VolumePlugin for SecretPlugin {
    fn name(&self) -> &str {
        "kubernetes.io/secret"
    }

    fn can_support(&self, volume: &Volume) -> bool {
        volume.secret.is_some()
    }

    fn requires_remount(&self, _volume: &Volume) -> bool {
        true
    }

    fn attributes(&self, _volume: &Volume) -> Attributes {
        api_data_attributes()
    }

    async fn set_up(&self, ctx: &VolumeContext<'_>) -> Result<(), PluginError> {
        let source = ctx.volume.secret.as_ref().ok_or_else(|| {
            PluginError::new(format!(
                "volume {:?} is not a secret volume",
                ctx.volume.name
            ))
        })?;
        let optional = source.optional.unwrap_or(false);
        let name = source.secret_name.as_deref().unwrap_or_default();
        let secret = match ctx.sources.secret(namespace(ctx.pod), name).await {
            Ok(s) => s,
            Err(e) if optional && e.is_absent() => Secret::default(),
            Err(e) => return Err(PluginError::new(e.to_string())),
        };
        let payload = secret_payload(source, &secret).map_err(PluginError::new)?;
        ensure_tmpfs(ctx.dir, memory_volume_size(ctx.pod, None, ctx.node))?;
        write(ctx, &payload)
    }

    async fn tear_down(&self, ctx: &VolumeContext<'_>) -> Result<(), PluginError> {
        remove_volume_dir(ctx.dir)
    }
}

/// The downward API's files: each item's field or container resource, with its mode.
pub(crate) fn downward_payload(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: i32,
    node: &NodeAllocatable,
) -> Result<BTreeMap<String, FileProjection>, String> {
    let mut payload = BTreeMap::new();
    for item in items {
        let data = if let Some(field) = &item.field_ref {
            object_field(field, pod).map_err(|e| format!("{}: {e}", item.path))?
        } else if let Some(resource) = &item.resource_field_ref {
            let name = resource.container_name.as_deref().unwrap_or_default();
            let container = container_by_name(pod, name).ok_or_else(|| {
                format!("{}: cannot find container {name:?} in the pod", item.path)
            })?;
            container_resource(resource, container, node)
                .map_err(|e| format!("{}: {e}", item.path))?
        } else {
            return Err(format!(
                "{}: neither fieldRef nor resourceFieldRef",
                item.path
            ));
        };
        let mode = file_mode(item.mode.unwrap_or(default_mode))?;
        payload.insert(
            item.path.clone(),
            FileProjection {
                data: data.into_bytes(),
                mode,
            },
        );
    }
    Ok(payload)
}

/// The downwardAPI plugin (`kubernetes.io/downward-api`).
#[derive(Clone, Copy, Debug, Default)]
pub struct DownwardApiPlugin;

#[async_trait]
impl VolumePlugin for DownwardApiPlugin {
    fn name(&self) -> &str {
        "kubernetes.io/downward-api"
    }

    fn can_support(&self, volume: &Volume) -> bool {
        volume.downward_api.is_some()
    }

    fn requires_remount(&self, _volume: &Volume) -> bool {
        true
    }

    fn attributes(&self, _volume: &Volume) -> Attributes {
        api_data_attributes()
    }

    async fn set_up(&self, ctx: &VolumeContext<'_>) -> Result<(), PluginError> {
        let source = ctx.volume.downward_api.as_ref().ok_or_else(|| {
            PluginError::new(format!(
                "volume {:?} is not a downwardAPI volume",
                ctx.volume.name
            ))
        })?;
        let payload = downward_payload(
            ctx.pod,
            source.items.as_deref().unwrap_or_default(),
            source.default_mode.unwrap_or(DEFAULT_MODE),
            ctx.node,
        )
        .map_err(PluginError::new)?;
        make_dir(ctx.dir)?;
        write(ctx, &payload)
    }

    async fn tear_down(&self, ctx: &VolumeContext<'_>) -> Result<(), PluginError> {
        remove_volume_dir(ctx.dir)
    }
}

/// The objects of a projected volume, fetched before its payload is built.
struct Fetched<'a> {
    pod: &'a Pod,
    node: &'a NodeAllocatable,
    config_maps: BTreeMap<String, Result<ConfigMap, SourceError>>,
    secrets: BTreeMap<String, Result<Secret, SourceError>>,
    tokens: Vec<(ServiceAccountTokenProjection, Result<Vec<u8>, SourceError>)>,
}

/// A standalone node cannot have the object: an optional projection goes without it, a
/// required one fails with the standalone message rather than "not found".
fn absent_unless_required<T>(
    got: Result<T, SourceError>,
    optional: bool,
) -> Result<T, SourceError> {
    match got {
        Err(SourceError::Standalone(_)) if optional => Err(SourceError::NotFound {
            resource: "object",
            name: String::new(),
        }),
        other => other,
    }
}

impl ProjectedSources for Fetched<'_> {
    fn fs_group_set(&self) -> bool {
        crate::ownership::fs_group(self.pod).is_some()
    }

    fn config_map(&self, name: &str) -> Result<Option<ConfigMap>, String> {
        match self.config_maps.get(name) {
            Some(Ok(c)) => Ok(Some(c.clone())),
            Some(Err(SourceError::NotFound { .. })) => Ok(None),
            Some(Err(e)) => Err(e.to_string()),
            None => Ok(None),
        }
    }

    fn secret(&self, name: &str) -> Result<Option<Secret>, String> {
        match self.secrets.get(name) {
            Some(Ok(s)) => Ok(Some(s.clone())),
            Some(Err(SourceError::NotFound { .. })) => Ok(None),
            Some(Err(e)) => Err(e.to_string()),
            None => Ok(None),
        }
    }

    fn downward_api(
        &self,
        items: &[DownwardAPIVolumeFile],
        default_mode: i32,
    ) -> Result<BTreeMap<String, FileProjection>, String> {
        downward_payload(self.pod, items, default_mode, self.node)
    }

    fn service_account_token(
        &self,
        source: &ServiceAccountTokenProjection,
    ) -> Result<Vec<u8>, String> {
        self.tokens
            .iter()
            .find(|(s, _)| s == source)
            .map(|(_, t)| t.clone().map_err(|e| e.to_string()))
            .unwrap_or_else(|| Err(format!("no token for {}", source.path)))
    }
}

/// The projected plugin (`kubernetes.io/projected`): the files live on a tmpfs.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProjectedPlugin;

#[async_trait]
impl VolumePlugin for ProjectedPlugin {
    fn name(&self) -> &str {
        "kubernetes.io/projected"
    }

    fn can_support(&self, volume: &Volume) -> bool {
        volume.projected.is_some()
    }

    fn requires_remount(&self, _volume: &Volume) -> bool {
        true
    }

    fn attributes(&self, _volume: &Volume) -> Attributes {
        api_data_attributes()
    }

    async fn set_up(&self, ctx: &VolumeContext<'_>) -> Result<(), PluginError> {
        let source = ctx.volume.projected.as_ref().ok_or_else(|| {
            PluginError::new(format!(
                "volume {:?} is not a projected volume",
                ctx.volume.name
            ))
        })?;
        let ns = namespace(ctx.pod);
        let mut fetched = Fetched {
            pod: ctx.pod,
            node: ctx.node,
            config_maps: BTreeMap::new(),
            secrets: BTreeMap::new(),
            tokens: Vec::new(),
        };
        for projection in source.sources.iter().flatten() {
            if let Some(c) = &projection.config_map {
                let got = ctx.sources.config_map(ns, &c.name).await;
                let got = absent_unless_required(got, c.optional.unwrap_or(false));
                fetched.config_maps.insert(c.name.clone(), got);
            }
            if let Some(s) = &projection.secret {
                let got = ctx.sources.secret(ns, &s.name).await;
                let got = absent_unless_required(got, s.optional.unwrap_or(false));
                fetched.secrets.insert(s.name.clone(), got);
            }
            if let Some(t) = &projection.service_account_token {
                let got = ctx.sources.service_account_token(ctx.pod, t).await;
                fetched.tokens.push((t.clone(), got));
            }
        }
        let payload = projected_payload(source, &fetched).map_err(PluginError::new)?;
        ensure_tmpfs(ctx.dir, memory_volume_size(ctx.pod, None, ctx.node))?;
        write(ctx, &payload)
    }

    async fn tear_down(&self, ctx: &VolumeContext<'_>) -> Result<(), PluginError> {
        remove_volume_dir(ctx.dir)
    }
}
