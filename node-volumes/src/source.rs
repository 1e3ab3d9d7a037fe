//! Where the content of API-data volumes comes from: the [`ObjectSource`] seam.
//!
//! configMap, secret and projected volumes (and their serviceAccountToken sources) need API
//! objects. A node attached to an API server reads them from there (the cluster issue brings
//! that source); a standalone node has none: [`Standalone`] answers every lookup with an error
//! that says so, so such a volume fails to mount with that reason unless it is optional.

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccountTokenProjection};

/// Why an object could not be had. Its message is the volume's `FailedMount` reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The object does not exist (the kubelet's message, e.g. `configmap "cfg" not found`);
    /// an optional volume or projection then mounts without it.
    #[error("{resource} {name:?} not found")]
    NotFound {
        /// The resource, singular as the kubelet's object managers name it (`configmap`,
        /// `secret`).
        resource: &'static str,
        /// The object's name.
        name: String,
    },
    /// The node has no API server to read objects from: an optional volume or projection
    /// mounts without the object, a required one fails with this message.
    #[error("{0}")]
    Standalone(String),
    /// The source cannot answer now (a transport error, a timeout): the mount is retried.
    #[error("{0}")]
    Unavailable(String),
}

impl SourceError {
    /// Whether the object cannot be had for good (it does not exist, or there is no API
    /// server), as opposed to not reachable now. Optional volumes mount without such objects.
    pub fn is_absent(&self) -> bool {
        matches!(
            self,
            SourceError::NotFound { .. } | SourceError::Standalone(_)
        )
    }
}

/// The API objects volumes are made from.
#[async_trait]
pub trait ObjectSource: Send + Sync {
    /// The configMap `namespace/name`.
    async fn config_map(&self, namespace: &str, name: &str) -> Result<ConfigMap, SourceError>;

    /// The secret `namespace/name`.
    async fn secret(&self, namespace: &str, name: &str) -> Result<Secret, SourceError>;

    /// A token for the pod's service account, as a projected volume asks for it.
    async fn service_account_token(
        &self,
        pod: &Pod,
        projection: &ServiceAccountTokenProjection,
    ) -> Result<Vec<u8>, SourceError>;
}

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
