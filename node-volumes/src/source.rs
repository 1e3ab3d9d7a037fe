//! Where the content of API-data volumes comes from: the [`ObjectSource`] seam.
//!
//! configMap, secret and projected volumes (and their serviceAccountToken sources) need API
//! objects. A node attached to an API server reads them from there (the cluster issue brings
//! that source); a standalone node has none: [`Standalone`] answers every lookup with an error
//! that says so, so such a volume fails to mount with that reason unless it is optional.

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccountTokenProjection};

pub use node_core::objects::{ObjectSource, SourceError};

/// The source of a node without an API server: nothing can be had.
#[derive(Clone, Copy, Debug, Default)]
pub struct Standalone;

fn standalone(what: &str, namespace: &str, name: &str) -> SourceError {
    SourceError::Standalone(format!(
        "cannot get {what} {namespace}/{name}: the node runs standalone, with no API server to read it from"
    ))
}

#[async_trait]
impl ObjectSource for Standalone {
    async fn config_map(&self, namespace: &str, name: &str) -> Result<ConfigMap, SourceError> {
        Err(standalone("configmap", namespace, name))
    }

    async fn secret(&self, namespace: &str, name: &str) -> Result<Secret, SourceError> {
        Err(standalone("secret", namespace, name))
    }

    async fn service_account_token(
        &self,
        pod: &Pod,
        _projection: &ServiceAccountTokenProjection,
    ) -> Result<Vec<u8>, SourceError> {
        let account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.as_deref())
            .filter(|n| !n.is_empty())
            .unwrap_or("default");
        Err(standalone(
            "a token for service account",
            pod.metadata.namespace.as_deref().unwrap_or("default"),
            account,
        ))
    }
}
