//! Authentication and authorization of the kubelet server, as upstream's: x509 client
//! certificates (verified by TLS against `authentication.x509.clientCAFile`; CN is the user,
//! O the groups), bearer tokens through a [`TokenReviewer`] (the TokenReview webhook), else
//! `system:anonymous` when `authentication.anonymous.enabled`, else 401 `Unauthorized`. Then
//! each request's attributes (upstream `GetRequestAttributes`: `nodes/<subresource>` with the
//! verb of the HTTP method) go to the [`Authorizer`] (AlwaysAllow or the SubjectAccessReview
//! webhook); none allowed: 403 `Forbidden (user=…, verb=…, resource=nodes, subresource=…)`.

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rustls::pki_types::CertificateDer;

/// Who made a request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct UserInfo {
    /// The user name (`system:node:x`, `kube-apiserver-kubelet-client`, ...).
    pub name: String,
    /// The UID, when the authenticator knows one.
    pub uid: String,
    /// The groups.
    pub groups: Vec<String>,
}

/// `system:anonymous`, as upstream's anonymous authenticator names it.
pub const ANONYMOUS_USER: &str = "system:anonymous";
/// The group of unauthenticated requests.
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
/// The group every authenticated user gets.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// The verified client certificate chain of a TLS connection (leaf first), put in each
/// request's extensions by the server.
#[derive(Clone, Debug)]
pub struct PeerCertificates(pub Arc<Vec<CertificateDer<'static>>>);

/// Checks bearer tokens (the TokenReview webhook, feature `api`).
#[async_trait]
pub trait TokenReviewer: Send + Sync {
    /// The user the token belongs to; `Ok(None)` when it is not valid.
    async fn review(&self, token: &str) -> Result<Option<UserInfo>, String>;
}

/// The attributes of a request, as upstream's `AttributesRecord` for the kubelet API.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Attributes {
    /// The user.
    pub user: UserInfo,
    /// `get`, `create`, `update`, `patch`, `delete`.
    pub verb: String,
    /// Always `nodes`.
    pub resource: &'static str,
    /// `proxy`, `stats`, `metrics`, `log`, `checkpoint`, `pods`, `healthz`, `configz`.
    pub subresource: &'static str,
    /// The node's name.
    pub name: String,
}

/// Decides whether a request may go on.
#[async_trait]
pub trait Authorizer: Send + Sync {
    /// Whether `attrs` are allowed; an error when the decision could not be made.
    async fn authorize(&self, attrs: &Attributes) -> Result<bool, String>;
}

/// `authorization.mode: AlwaysAllow`.
#[derive(Clone, Copy, Debug, Default)]
pub struct AlwaysAllow;

#[async_trait]
impl Authorizer for AlwaysAllow {
    async fn authorize(&self, _: &Attributes) -> Result<bool, String> {
        Ok(true)
    }
}

/// An authorizer set once the API client exists (the SubjectAccessReview webhook of a cluster
/// node); until then every decision is an error (500 `Authorization error`).
#[derive(Default)]
pub struct DeferredAuthorizer {
    inner: std::sync::OnceLock<Arc<dyn Authorizer>>,
}

impl DeferredAuthorizer {
    /// Sets the authorizer (the first call wins).
    pub fn set(&self, authorizer: Arc<dyn Authorizer>) {
        let _ = self.inner.set(authorizer);
    }
}

#[async_trait]
impl Authorizer for DeferredAuthorizer {
    async fn authorize(&self, attrs: &Attributes) -> Result<bool, String> {
        match self.inner.get() {
            Some(a) => a.authorize(attrs).await,
            None => Err("authorization.mode Webhook: there is no API client (yet)".into()),
        }
    }
}

/// A token reviewer set once the API client exists; until then tokens do not authenticate.
#[derive(Default)]
pub struct DeferredTokenReviewer {
    inner: std::sync::OnceLock<Arc<dyn TokenReviewer>>,
}

impl DeferredTokenReviewer {
    /// Sets the reviewer (the first call wins).
    pub fn set(&self, reviewer: Arc<dyn TokenReviewer>) {
        let _ = self.inner.set(reviewer);
    }
}

#[async_trait]
impl TokenReviewer for DeferredTokenReviewer {
    async fn review(&self, token: &str) -> Result<Option<UserInfo>, String> {
        match self.inner.get() {
            Some(r) => r.review(token).await,
            None => Err("authentication.webhook: there is no API client (yet)".into()),
        }
    }
}

fn is_subpath(subpath: &str, path: &str) -> bool {
    let path = path.trim_end_matches('/');
    subpath == path
        || (subpath.starts_with(path) && subpath.as_bytes().get(path.len()) == Some(&b'/'))
}

/// The attributes to authorize a request by, most specific first; allowed when any is
/// (upstream's with fine-grained kubelet authorization: `/pods`, `/runningpods/`, `/healthz`
/// and `/configz` fall back to `nodes/proxy`).
pub fn request_attributes(
    user: &UserInfo,
    method: &Method,
    path: &str,
    node: &str,
) -> Vec<Attributes> {
    let verb = match *method {
        Method::POST => "create",
        Method::GET | Method::HEAD => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    };
    let attrs = |subresource: &'static str| Attributes {
        user: user.clone(),
        verb: verb.to_string(),
        resource: "nodes",
        subresource,
        name: node.to_string(),
    };
    let specific = if is_subpath(path, "/stats/") {
        return vec![attrs("stats")];
    } else if is_subpath(path, "/metrics") {
        return vec![attrs("metrics")];
    } else if is_subpath(path, "/logs/") {
        return vec![attrs("log")];
    } else if is_subpath(path, "/checkpoint/") {
        return vec![attrs("checkpoint")];
    } else if is_subpath(path, "/pods") || is_subpath(path, "/runningpods/") {
        Some("pods")
    } else if is_subpath(path, "/healthz") {
        Some("healthz")
    } else if is_subpath(path, "/configz") {
        Some("configz")
    } else {
        None
    };
    specific
        .into_iter()
        .chain(Some("proxy"))
        .map(attrs)
        .collect()
}

/// The user of a verified client certificate: CN the name, each O a group.
pub fn user_of_certificate(cert: &CertificateDer<'_>) -> Option<UserInfo> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_string)
        .collect();
    Some(UserInfo {
        name,
        uid: String::new(),
        groups,
    })
}

/// The server's authentication and authorization.
#[derive(Clone)]
pub struct Auth {
    node: String,
    tokens: Option<Arc<dyn TokenReviewer>>,
    anonymous: bool,
    authorizer: Arc<dyn Authorizer>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("node", &self.node)
            .field("tokens", &self.tokens.is_some())
            .field("anonymous", &self.anonymous)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Requests to node `node`: client certificates (when the TLS configuration verifies
    /// them), tokens through `tokens`, anonymous ones when `anonymous`; authorized by
    /// `authorizer`.
    pub fn new(
        node: &str,
        tokens: Option<Arc<dyn TokenReviewer>>,
        anonymous: bool,
        authorizer: Arc<dyn Authorizer>,
    ) -> Self {
        Auth {
            node: node.to_string(),
            tokens,
            anonymous,
            authorizer,
        }
    }

    /// The request's user; `None`: 401.
    pub async fn authenticate(
        &self,
        peer: Option<&PeerCertificates>,
        headers: &HeaderMap,
    ) -> Option<UserInfo> {
        let with_authenticated = |mut user: UserInfo| {
            if !user.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
                user.groups.push(AUTHENTICATED_GROUP.into());
            }
            user
        };
        if let Some(user) = peer.and_then(|p| p.0.first()).and_then(user_of_certificate) {
            return Some(with_authenticated(user));
        }
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        if let (Some(token), Some(tokens)) = (bearer, &self.tokens) {
            match tokens.review(token).await {
                Ok(Some(user)) => return Some(with_authenticated(user)),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "token review failed"),
            }
            // A token that does not authenticate is not anonymous.
            return None;
        }
        self.anonymous.then(|| UserInfo {
            name: ANONYMOUS_USER.into(),
            uid: String::new(),
            groups: vec![UNAUTHENTICATED_GROUP.into()],
        })
    }

    /// Authorizes `user` for a request: `Ok` or the response to send.
    pub async fn authorize(
        &self,
        user: &UserInfo,
        method: &Method,
        path: &str,
    ) -> Result<(), Response> {
        let attrs = request_attributes(user, method, path, &self.node);
        for a in &attrs {
            match self.authorizer.authorize(a).await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    let msg = format!(
                        "Authorization error (user={}, verb={}, resource={}, subresource={})",
                        user.name, a.verb, a.resource, a.subresource
                    );
                    tracing::error!(error = %e, "{msg}");
                    return Err((StatusCode::INTERNAL_SERVER_ERROR, msg).into_response());
                }
            }
        }
        let first = &attrs[0];
        Err((
            StatusCode::FORBIDDEN,
            format!(
                "Forbidden (user={}, verb={}, resource={}, subresource={})",
                user.name, first.verb, first.resource, first.subresource
            ),
        )
            .into_response())
    }
}

/// The axum middleware: authenticates, authorizes, and puts the [`UserInfo`] in the request's
/// extensions for the handlers.
pub async fn middleware(State(auth): State<Auth>, mut req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<PeerCertificates>().cloned();
    let Some(user) = auth.authenticate(peer.as_ref(), req.headers()).await else {
        return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
    };
    if let Err(denied) = auth.authorize(&user, req.method(), req.uri().path()).await {
        return denied;
    }
    req.extensions_mut().insert(user);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::cache::TtlCache;
    use std::time::Duration;

    fn user() -> UserInfo {
        UserInfo {
            name: "alice".into(),
            uid: String::new(),
            groups: vec![],
        }
    }

    #[test]
    fn paths_map_to_upstreams_subresources() {
        let sub = |m: Method, p: &str| {
            request_attributes(&user(), &m, p, "n1")
                .into_iter()
                .map(|a| (a.verb, a.subresource))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            sub(Method::GET, "/stats/summary"),
            [("get".into(), "stats")]
        );
        assert_eq!(
            sub(Method::GET, "/metrics/cadvisor"),
            [("get".into(), "metrics")]
        );
        assert_eq!(sub(Method::GET, "/logs/syslog"), [("get".into(), "log")]);
        assert_eq!(
            sub(Method::GET, "/pods"),
            [("get".into(), "pods"), ("get".into(), "proxy")]
        );
        assert_eq!(
            sub(Method::GET, "/healthz/ping"),
            [("get".into(), "healthz"), ("get".into(), "proxy")]
        );
        assert_eq!(
            sub(Method::GET, "/configz"),
            [("get".into(), "configz"), ("get".into(), "proxy")]
        );
        assert_eq!(
            sub(Method::POST, "/exec/ns/pod/c"),
            [("create".into(), "proxy")]
        );
        assert_eq!(
            sub(Method::GET, "/containerLogs/ns/pod/c"),
            [("get".into(), "proxy")]
        );
        // A path merely starting like another is not under it.
        assert_eq!(sub(Method::GET, "/podsx"), [("get".into(), "proxy")]);
        assert_eq!(
            sub(Method::POST, "/checkpoint/ns/p/c"),
            [("create".into(), "checkpoint")]
        );
    }

    struct Deny;
    #[async_trait]
    impl Authorizer for Deny {
        async fn authorize(&self, a: &Attributes) -> Result<bool, String> {
            Ok(a.subresource == "proxy" && a.user.name == "proxy-user")
        }
    }

    #[tokio::test]
    async fn anonymous_requests_are_401_unless_allowed_and_denials_name_the_attributes() {
        let closed = Auth::new("n1", None, false, Arc::new(AlwaysAllow));
        assert_eq!(closed.authenticate(None, &HeaderMap::new()).await, None);
        let open = Auth::new("n1", None, true, Arc::new(Deny));
        let anon = open.authenticate(None, &HeaderMap::new()).await.unwrap();
        assert_eq!(anon.name, ANONYMOUS_USER);
        assert_eq!(anon.groups, [UNAUTHENTICATED_GROUP]);
        let denied = open
            .authorize(&anon, &Method::GET, "/pods")
            .await
            .unwrap_err();
        assert_eq!(denied.status(), StatusCode::FORBIDDEN);
        let body = axum::body::to_bytes(denied.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(
            body,
            "Forbidden (user=system:anonymous, verb=get, resource=nodes, subresource=pods)"
        );
        // Any of the attributes allowed is enough (here the nodes/proxy fallback).
        let proxy = UserInfo {
            name: "proxy-user".into(),
            ..Default::default()
        };
        assert!(open.authorize(&proxy, &Method::GET, "/pods").await.is_ok());
    }

    #[test]
    fn the_cache_forgets_expired_entries_and_stays_bounded() {
        let cache = TtlCache::new(2);
        cache.put("a", 1, Duration::from_secs(60));
        cache.put("b", 2, Duration::from_secs(30));
        cache.put("c", 3, Duration::from_secs(90));
        assert_eq!(cache.get(&"b"), None, "the first to expire made room");
        assert_eq!(cache.get(&"a"), Some(1));
        assert_eq!(cache.get(&"c"), Some(3));
        cache.put("d", 4, Duration::ZERO);
        assert_eq!(cache.get(&"d"), None);
    }
}
