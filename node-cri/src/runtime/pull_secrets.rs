//! The pod's `imagePullSecrets` as a keyring (upstream `getPullSecretsForPod`): each secret
//! read from the pod's namespace through the node's object source; those that cannot be read
//! are named in one `FailedToRetrieveImagePullSecret` event and the pull goes on without them.

use k8s_openapi::api::core::v1::Pod;
use node_core::objects::ObjectSource;
use node_images::credentials::Keyring;
use tracing::{info, warn};

/// The keyring of `pod`'s pull secrets, and the names of those that could not be read.
pub async fn pull_keyring(source: &dyn ObjectSource, pod: &Pod) -> (Keyring, Vec<String>) {
    let mut keyring = Keyring::new();
    let mut failed = Vec::new();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let refs = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.as_deref())
        .unwrap_or_default();
    for name in refs
        .iter()
        .map(|r| r.name.as_str())
        .filter(|n| !n.is_empty())
    {
        match source.secret(namespace, name).await {
            Ok(secret) => {
                let data = secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                let kind = secret.type_.as_deref().unwrap_or_default();
                let origin = format!("secret {namespace}/{name}");
                if let Err(e) = keyring.add_secret(kind, &data, &origin) {
                    warn!(secret = %origin, error = %e, "a pull secret holds no usable credentials");
                }
            }
            Err(e) => {
                info!(secret = %name, error = %e, "Unable to retrieve pull secret, the image pull may not succeed.");
                failed.push(name.to_string());
            }
        }
    }
    (keyring, failed)
}

/// Upstream's event message for pull secrets that could not be read.
pub fn failed_message(failed: &[String]) -> String {
    format!(
        "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
        failed.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{
        ConfigMap, LocalObjectReference, PodSpec, Secret, ServiceAccountTokenProjection,
    };
    use node_core::objects::SourceError;

    struct Secrets;

    #[async_trait]
    impl ObjectSource for Secrets {
        async fn config_map(&self, _: &str, name: &str) -> Result<ConfigMap, SourceError> {
            Err(SourceError::NotFound {
                resource: "configmap",
                name: name.into(),
            })
        }
        async fn secret(&self, namespace: &str, name: &str) -> Result<Secret, SourceError> {
            if (namespace, name) != ("team", "regcred") {
                return Err(SourceError::NotFound {
                    resource: "secret",
                    name: name.into(),
                });
            }
            Ok(Secret {
                type_: Some("kubernetes.io/dockerconfigjson".into()),
                data: Some(
                    [(
                        ".dockerconfigjson".to_string(),
                        ByteString(
                            br#"{"auths":{"registry.example.com":{"username":"u","password":"p"}}}"#
                                .to_vec(),
                        ),
                    )]
                    .into(),
                ),
                ..Default::default()
            })
        }
        async fn service_account_token(
            &self,
            _: &Pod,
            _: &ServiceAccountTokenProjection,
        ) -> Result<Vec<u8>, SourceError> {
            Err(SourceError::Standalone("none".into()))
        }
    }

    #[tokio::test]
    async fn pull_secrets_become_a_keyring_and_missing_ones_are_named() {
        let pod = Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                namespace: Some("team".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                image_pull_secrets: Some(vec![
                    LocalObjectReference {
                        name: "regcred".into(),
                    },
                    LocalObjectReference {
                        name: "missing".into(),
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (keyring, failed) = pull_keyring(&Secrets, &pod).await;
        let auth = keyring.lookup("registry.example.com/app:1");
        assert_eq!(auth.len(), 1);
        assert_eq!(
            (auth[0].username.as_str(), auth[0].password.as_str()),
            ("u", "p")
        );
        assert!(keyring.lookup("elsewhere.example.com/app:1").is_empty());
        assert_eq!(failed, ["missing"]);
        assert_eq!(
            failed_message(&failed),
            "Unable to retrieve some image pull secrets (missing); attempting to pull the image may not succeed."
        );
    }
}
