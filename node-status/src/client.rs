//! The API client of a node, from its kubeconfig file.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::error::StatusError;

/// A client of the kubeconfig file at `path`; see [`config_from_kubeconfig`].
pub async fn client_from_kubeconfig(
    path: &Path,
    user_agent: &str,
) -> Result<kube::Client, StatusError> {
    let config = config_from_kubeconfig(path, user_agent).await?;
    kube::Client::try_from(config).map_err(|e| StatusError::Kubeconfig {
        path: path.to_path_buf(),
        source: Box::new(e),
    })
}

/// The client configuration of the kubeconfig file at `path` (client certificates, bearer
/// tokens and token files, exec plugins, the cluster CA), over rustls, with the kubelet's
/// user agent. A missing or malformed file is an error naming it.
pub async fn config_from_kubeconfig(
    path: &Path,
    user_agent: &str,
) -> Result<kube::Config, StatusError> {
    let kubeconfig_error =
        |source: Box<dyn std::error::Error + Send + Sync>| StatusError::Kubeconfig {
            path: path.to_path_buf(),
            source,
        };
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| kubeconfig_error(Box::new(e)))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| kubeconfig_error(Box::new(e)))?;
    let mut config = config;
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_str(user_agent).map_err(|e| kubeconfig_error(Box::new(e)))?,
    ));
    Ok(config)
}
