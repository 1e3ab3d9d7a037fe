//! The API server's webhooks for the kubelet server (feature `api`): bearer tokens checked
//! with TokenReviews (cached `authentication.webhook.cacheTTL`), requests authorized with
//! SubjectAccessReviews (allowed cached `cacheAuthorizedTTL`, denied `cacheUnauthorizedTTL`).

use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};

use super::auth::{Attributes, Authorizer, TokenReviewer, UserInfo};
use super::cache::TtlCache;

/// Entries each cache holds at most.
const CACHE_CAPACITY: usize = 4096;

/// Tokens reviewed by the API server (`authentication.webhook`).
pub struct WebhookTokenReviewer {
    client: Client,
    ttl: Duration,
    cache: TtlCache<String, Option<UserInfo>>,
}

impl WebhookTokenReviewer {
    /// Reviews through `client`, caching each answer for `ttl`.
    pub fn new(client: Client, ttl: Duration) -> Self {
        WebhookTokenReviewer {
            client,
            ttl,
            cache: TtlCache::new(CACHE_CAPACITY),
        }
    }
}

#[async_trait]
impl TokenReviewer for WebhookTokenReviewer {
    async fn review(&self, token: &str) -> Result<Option<UserInfo>, String> {
        if let Some(known) = self.cache.get(&token.to_string()) {
            return Ok(known);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: None,
            },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| format!("TokenReview: {e}"))?;
        let status = answer.status.unwrap_or_default();
        let user = status
            .authenticated
            .unwrap_or(false)
            .then(|| status.user.unwrap_or_default())
            .map(|u| UserInfo {
                name: u.username.unwrap_or_default(),
                uid: u.uid.unwrap_or_default(),
                groups: u.groups.unwrap_or_default(),
            });
        self.cache.put(token.to_string(), user.clone(), self.ttl);
        Ok(user)
    }
}

/// Requests authorized by the API server (`authorization.mode: Webhook`).
pub struct WebhookAuthorizer {
    client: Client,
    allowed_ttl: Duration,
    denied_ttl: Duration,
    cache: TtlCache<Attributes, bool>,
}

impl WebhookAuthorizer {
    /// Asks through `client`; allowed answers cached `allowed_ttl`, denied ones `denied_ttl`.
    pub fn new(client: Client, allowed_ttl: Duration, denied_ttl: Duration) -> Self {
        WebhookAuthorizer {
            client,
            allowed_ttl,
            denied_ttl,
            cache: TtlCache::new(CACHE_CAPACITY),
        }
    }
}

#[async_trait]
impl Authorizer for WebhookAuthorizer {
    async fn authorize(&self, attrs: &Attributes) -> Result<bool, String> {
        if let Some(known) = self.cache.get(attrs) {
            return Ok(known);
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(attrs.user.name.clone()),
                uid: (!attrs.user.uid.is_empty()).then(|| attrs.user.uid.clone()),
                groups: Some(attrs.user.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(attrs.verb.clone()),
                    group: Some(String::new()),
                    version: Some("v1".into()),
                    resource: Some(attrs.resource.into()),
                    subresource: Some(attrs.subresource.into()),
                    name: Some(attrs.name.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| format!("SubjectAccessReview: {e}"))?;
        let allowed = answer.status.is_some_and(|s| s.allowed);
        let ttl = if allowed {
            self.allowed_ttl
        } else {
            self.denied_ttl
        };
        self.cache.put(attrs.clone(), allowed, ttl);
        Ok(allowed)
    }
}
