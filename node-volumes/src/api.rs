//! The [`ObjectSource`] of a node attached to an API server (feature `api`).
//!
//! - configMaps and secrets: a watch-based cache as upstream's default
//!   `configMapAndSecretChangeDetectionStrategy: Watch`: the first read of an object starts a
//!   watch of that one object (`fieldSelector metadata.name=<name>`, which the Node authorizer
//!   allows for objects its pods reference) into a reflector store; later reads are local and
//!   see updates as the API server sends them. Objects not read for [`UNUSED_OBJECT_TTL`] are
//!   dropped with their watch, so the cache holds only what pods use.
//! - serviceAccountToken projections: a TokenRequest for the pod's service account, bound to
//!   the pod, with the projection's audience and expiration; kept and handed out again until
//!   80% of its lifetime (or 24 hours) has passed, as upstream's token manager.
//!
//! [`DeferredSource`] stands in until the API client exists (the TLS bootstrap may take a
//! while): reads fail as retryable until the real source is set.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Pod, Secret, ServiceAccount, ServiceAccountTokenProjection,
};
use kube::api::PostParams;
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::source::{ObjectSource, SourceError};

/// Objects not read for this long are dropped from the cache, with their watch.
pub const UNUSED_OBJECT_TTL: Duration = Duration::from_secs(10 * 60);
/// How long a first read waits for its watch to list the object.
pub const FIRST_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The default `expirationSeconds` of a projected token (upstream: one hour).
pub const DEFAULT_TOKEN_EXPIRATION: i64 = 3600;
/// A token is requested again after this much of its lifetime (upstream: 80%).
const TOKEN_REFRESH_FRACTION: f64 = 0.8;
/// ... or after this long, whatever its lifetime (upstream: 24 hours).
const TOKEN_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

struct Watched<K: Resource + 'static>
where
    K::DynamicType: std::hash::Hash + Eq,
{
    store: Store<K>,
    task: JoinHandle<()>,
    last_used: Instant,
}

/// A cache of single objects of kind `K`, each kept current by its own watch.
struct ObjectCache<K>
where
    K: Resource + 'static,
    K::DynamicType: std::hash::Hash + Eq,
{
    client: Client,
    resource: &'static str,
    entries: Mutex<HashMap<(String, String), Watched<K>>>,
}

impl<K> ObjectCache<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + k8s_openapi::serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    fn new(client: Client, resource: &'static str) -> Self {
        ObjectCache {
            client,
            resource,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(String, String), Watched<K>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn get(&self, namespace: &str, name: &str) -> Result<K, SourceError> {
        let key = (namespace.to_string(), name.to_string());
        let store = {
            let mut entries = self.lock();
            let now = Instant::now();
            entries.retain(|_, w| {
                let keep = now.duration_since(w.last_used) < UNUSED_OBJECT_TTL;
                if !keep {
                    w.task.abort();
                }
                keep
            });
            let entry = entries
                .entry(key.clone())
                .or_insert_with(|| self.watch(namespace, name));
            entry.last_used = now;
            entry.store.clone()
        };
        if tokio::time::timeout(FIRST_READ_TIMEOUT, store.wait_until_ready())
            .await
            .is_err()
        {
            return Err(SourceError::Unavailable(format!(
                "failed to sync {} cache: timed out waiting for the condition",
                self.resource
            )));
        }
        store
            .get(&ObjectRef::new(name).within(namespace))
            .map(|o| K::clone(&o))
            .ok_or_else(|| SourceError::NotFound {
                resource: self.resource,
                name: name.to_string(),
            })
    }

    fn watch(&self, namespace: &str, name: &str) -> Watched<K> {
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let (store, writer) = reflector::store::<K>();
        let stream = reflector(writer, watcher(api, config).default_backoff());
        let (resource, what) = (self.resource, format!("{namespace}/{name}"));
        let task = tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                if let Err(e) = event {
                    warn!(resource, object = %what, error = %e, "watching a volume's object failed; retrying");
                }
            }
        });
        debug!(resource, namespace, name, "watching an object volumes use");
        Watched {
            store,
            task,
            last_used: Instant::now(),
        }
    }
}

impl<K> Drop for ObjectCache<K>
where
    K: Resource + 'static,
    K::DynamicType: std::hash::Hash + Eq,
{
    fn drop(&mut self) {
        for w in self
            .entries
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            w.task.abort();
        }
    }
}

/// A token handed out, and when to request a new one.
#[derive(Clone)]
struct Token {
    value: Vec<u8>,
    refresh_at: std::time::SystemTime,
    expires_at: std::time::SystemTime,
}

/// When a token issued at `issued` expiring at `expires` should be replaced.
fn refresh_time(
    issued: std::time::SystemTime,
    expires: std::time::SystemTime,
) -> std::time::SystemTime {
    let lifetime = expires.duration_since(issued).unwrap_or_default();
    let refresh = lifetime.mul_f64(TOKEN_REFRESH_FRACTION).min(TOKEN_MAX_AGE);
    issued + refresh
}

/// The API-backed object source.
pub struct ApiObjectSource {
    client: Client,
    config_maps: ObjectCache<ConfigMap>,
    secrets: ObjectCache<Secret>,
    tokens: Mutex<HashMap<String, Token>>,
    clock: Clock,
}

/// What the token cache takes the time from.
pub type Clock = Arc<dyn Fn() -> std::time::SystemTime + Send + Sync>;

impl std::fmt::Debug for ApiObjectSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiObjectSource").finish_non_exhaustive()
    }
}

impl ApiObjectSource {
    /// A source reading through `client` (the node's credentials).
    pub fn new(client: Client) -> Self {
        ApiObjectSource {
            config_maps: ObjectCache::new(client.clone(), "configmap"),
            secrets: ObjectCache::new(client.clone(), "secret"),
            client,
            tokens: Mutex::new(HashMap::new()),
            clock: Arc::new(std::time::SystemTime::now),
        }
    }

    /// Takes the time for token refreshes from `clock` (tests move it forward).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn tokens(&self) -> MutexGuard<'_, HashMap<String, Token>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn api_error(what: &str, e: kube::Error) -> SourceError {
    match e {
        kube::Error::Api(s) if s.code == 404 => {
            SourceError::Unavailable(format!("{what}: {}", s.message))
        }
        other => SourceError::Unavailable(format!("{what}: {other}")),
    }
}

#[async_trait]
impl ObjectSource for ApiObjectSource {
    async fn config_map(&self, namespace: &str, name: &str) -> Result<ConfigMap, SourceError> {
        self.config_maps.get(namespace, name).await
    }

    async fn secret(&self, namespace: &str, name: &str) -> Result<Secret, SourceError> {
        self.secrets.get(namespace, name).await
    }

    async fn service_account_token(
        &self,
        pod: &Pod,
        projection: &ServiceAccountTokenProjection,
    ) -> Result<Vec<u8>, SourceError> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
        let account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.as_deref())
            .filter(|s| !s.is_empty())
            .unwrap_or("default");
        let expiration = projection
            .expiration_seconds
            .unwrap_or(DEFAULT_TOKEN_EXPIRATION);
        let audience = projection.audience.clone().unwrap_or_default();
        let key = format!(
            "{}/{account}/{audience}/{expiration}",
            pod.metadata.uid.as_deref().unwrap_or_default()
        );
        let now = (self.clock)();
        {
            let mut tokens = self.tokens();
            tokens.retain(|_, t| t.expires_at > now);
            if let Some(t) = tokens.get(&key)
                && t.refresh_at > now
            {
                return Ok(t.value.clone());
            }
        }
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: (!audience.is_empty()).then(|| vec![audience.clone()]),
                expiration_seconds: Some(expiration),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(pod_name.to_string()),
                    uid: pod.metadata.uid.clone(),
                }),
            }),
            ..Default::default()
        };
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let issued = accounts
            .create_token_request(account, &PostParams::default(), &request)
            .await
            .map_err(|e| {
                api_error(
                    &format!("failed to fetch token for service account {namespace}/{account}"),
                    e,
                )
            })?;
        let status = issued.status.ok_or_else(|| {
            SourceError::Unavailable(format!(
                "failed to fetch token for service account {namespace}/{account}: no status in the answer"
            ))
        })?;
        let expires_in = Duration::from_secs(u64::try_from(expiration).unwrap_or(0));
        let expires_at = status
            .expiration_timestamp
            .and_then(|t| u64::try_from(t.0.as_second()).ok())
            .map(|s| std::time::UNIX_EPOCH + Duration::from_secs(s))
            .unwrap_or(now + expires_in);
        let token = Token {
            value: status.token.unwrap_or_default().into_bytes(),
            refresh_at: refresh_time(now, expires_at),
            expires_at,
        };
        let value = token.value.clone();
        self.tokens().insert(key, token);
        Ok(value)
    }
}

/// An object source set once the API client exists; until then reads are retryable failures.
#[derive(Default)]
pub struct DeferredSource {
    inner: OnceLock<Arc<dyn ObjectSource>>,
}

impl std::fmt::Debug for DeferredSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeferredSource")
            .field("set", &self.inner.get().is_some())
            .finish()
    }
}

impl DeferredSource {
    /// An unset source.
    pub fn new() -> Arc<Self> {
        Arc::new(DeferredSource::default())
    }

    /// Sets the real source (the first call wins).
    pub fn set(&self, source: Arc<dyn ObjectSource>) {
        let _ = self.inner.set(source);
    }

    fn get(&self) -> Result<&Arc<dyn ObjectSource>, SourceError> {
        self.inner
            .get()
            .ok_or_else(|| SourceError::Unavailable("the API client is not ready yet".into()))
    }
}

#[async_trait]
impl ObjectSource for DeferredSource {
    async fn config_map(&self, namespace: &str, name: &str) -> Result<ConfigMap, SourceError> {
        self.get()?.config_map(namespace, name).await
    }

    async fn secret(&self, namespace: &str, name: &str) -> Result<Secret, SourceError> {
        self.get()?.secret(namespace, name).await
    }

    async fn service_account_token(
        &self,
        pod: &Pod,
        projection: &ServiceAccountTokenProjection,
    ) -> Result<Vec<u8>, SourceError> {
        self.get()?.service_account_token(pod, projection).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_renewed_at_80_percent_or_after_a_day() {
        let t0 = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            refresh_time(t0, t0 + Duration::from_secs(3600)),
            t0 + Duration::from_secs(2880)
        );
        assert_eq!(
            refresh_time(t0, t0 + Duration::from_secs(7 * 24 * 3600)),
            t0 + Duration::from_secs(24 * 3600)
        );
    }

    #[tokio::test]
    async fn the_deferred_source_fails_as_retryable_until_set() {
        let source = DeferredSource::new();
        let err = source.config_map("default", "cfg").await.unwrap_err();
        assert!(!err.is_absent(), "retryable: {err}");
        source.set(Arc::new(crate::source::Standalone));
        let err = source.config_map("default", "cfg").await.unwrap_err();
        assert!(err.is_absent(), "now the real source answers: {err}");
    }
}
