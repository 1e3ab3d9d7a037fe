//! The API objects the node reads for its pods: configMaps and secrets (for volumes and
//! environment variables) and service-account tokens (for projected volumes). The seam is
//! declared here so that the volume plugins (node-volumes) and the runtime's environment
//! (node-cri) read through the same source; a node attached to an API server implements it
//! over the API (node-volumes' `api` feature), a standalone node has none.

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

/// The service environment variables of a pod (`enableServiceLinks`): upstream's
/// `getServiceEnvVarMap`, from the node's view of the cluster's Services.
pub trait ServiceEnvSource: Send + Sync {
    /// The variables for a pod in `namespace`: the master service (`kubernetes` in `default`)
    /// always, the namespace's services with `enable_service_links`. An error when the
    /// services were not read yet (upstream fails the container start then, and retries).
    fn service_env(
        &self,
        namespace: &str,
        enable_service_links: bool,
    ) -> Result<std::collections::BTreeMap<String, String>, String>;
}

/// Where a pod's `runtimeClassName` is resolved to the CRI handler its sandbox runs with
/// (upstream `LookupRuntimeHandler`; a cluster node's lister of RuntimeClasses).
pub trait RuntimeHandlerSource: Send + Sync {
    /// The handler of RuntimeClass `class`; an error in upstream's words when there is none
    /// (`runtimeclass.node.k8s.io "x" not found`).
    fn runtime_handler(&self, class: &str) -> Result<String, String>;
}
