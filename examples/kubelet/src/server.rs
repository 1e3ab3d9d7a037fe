//! The kubelet's listeners, as upstream's: the authenticated HTTPS server on `address:port`
//! (every endpoint), the plain healthz listener on `healthzBindAddress:healthzPort` (`/healthz`
//! only; port 0 disables it) and, when `readOnlyPort` is set, the unauthenticated read-only
//! port (`/healthz`, `/pods`, `/stats/summary`, `/metrics`, `/metrics/resource`,
//! `/metrics/cadvisor`). Requests to both servers are counted in the kubelet's metrics.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use node_config::KubeletConfiguration;
use node_config::cli::NodeFlags;
use node_core::metrics::KubeletMetrics;
use node_core::server::auth::{
    AlwaysAllow, Auth, Authorizer, DeferredAuthorizer, DeferredTokenReviewer, TokenReviewer,
};
use node_core::server::serve::{ServerLimits, serve_tls};
use node_core::server::tls::{ServingCertificate, TlsSettings, server_config, serving_cert_paths};
use node_core::server::{ServerType, record_http};
use node_status::certificate::CURRENT_SERVING_PEM;
use tracing::{info, warn};

/// What waits for the API client (set by the cluster side): the webhooks, and the serving
/// certificate requested by CSR.
#[derive(Clone, Default)]
pub(crate) struct Webhooks {
    /// With `serverTLSBootstrap`: the certificate the server presents, loaded by the
    /// serving certificate's rotation.
    pub(crate) serving: Option<Arc<ServingCertificate>>,
    /// The SubjectAccessReview authorizer, with `authorization.mode: Webhook`.
    pub(crate) authorizer: Option<Arc<DeferredAuthorizer>>,
    /// The TokenReview authenticator, with `authentication.webhook.enabled`.
    pub(crate) tokens: Option<Arc<DeferredTokenReviewer>>,
}

/// The routers of the server.
pub(crate) struct Routers {
    /// Everything the authenticated server serves.
    pub(crate) full: Router,
    /// What the read-only port serves.
    pub(crate) read_only: Router,
    /// `/healthz` alone.
    pub(crate) healthz: Router,
}

async fn bind(addr: SocketAddr, what: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("{what}: cannot listen on {addr}"))
}

fn spawn_plain(listener: tokio::net::TcpListener, router: Router, what: &'static str) {
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            warn!(error = %e, "the {what} stopped");
        }
    });
}

/// Starts the listeners; the webhooks they wait for are returned for the cluster side.
pub(crate) async fn start(
    config: &KubeletConfiguration,
    flags: &NodeFlags,
    node_name: &str,
    node_ips: &[IpAddr],
    routers: Routers,
    metrics: Arc<KubeletMetrics>,
) -> Result<Webhooks> {
    if config.healthz_port != 0 {
        let addr = SocketAddr::new(config.healthz_bind_address, config.healthz_port);
        let listener = bind(addr, "healthzPort").await?;
        info!(address = %addr, "serving /healthz");
        spawn_plain(listener, routers.healthz, "healthz listener");
    }
    if config.read_only_port != 0 {
        let addr = SocketAddr::new(config.address, config.read_only_port);
        let listener = bind(addr, "readOnlyPort").await?;
        info!(address = %addr, "serving the read-only port: /healthz, /pods, /stats/summary, /metrics");
        let router = routers
            .read_only
            .layer(axum::middleware::from_fn_with_state(
                (metrics.clone(), ServerType::ReadOnly),
                record_http,
            ));
        spawn_plain(listener, router, "read-only port");
    }
    let mut webhooks = Webhooks::default();
    if !config.enable_server {
        info!("enableServer is false: no kubelet server");
        return Ok(webhooks);
    }
    let certificate = if config.server_tls_bootstrap {
        // Requested by CSR (upstream's server certificate manager, which takes precedence
        // over tlsCertFile); the one of an earlier run is served until it is rotated.
        let certificate = ServingCertificate::empty();
        let current = flags.cert_dir.join(CURRENT_SERVING_PEM);
        if current.exists()
            && let Err(e) = certificate.load(&current, &current)
        {
            warn!(certificate = %current.display(), error = %e, "the serving certificate of an earlier run is not used");
        }
        if flags.kubeconfig.is_none() {
            warn!("serverTLSBootstrap needs an API server to request the serving certificate from");
        } else if !certificate.is_loaded() {
            info!(
                "serverTLSBootstrap: no serving certificate until the CSR is approved and issued"
            );
        }
        webhooks.serving = Some(certificate.clone());
        certificate
    } else {
        let (cert_file, key_file) = serving_cert_paths(
            config.tls_cert_file.as_deref(),
            config.tls_private_key_file.as_deref(),
            &flags.cert_dir,
            node_name,
            node_ips,
        )
        .context("the kubelet server's certificate")?;
        ServingCertificate::from_files(&cert_file, &key_file)
            .context("the kubelet server's certificate")?
    };
    let tls = server_config(&TlsSettings {
        certificate,
        client_ca_file: config.authentication.client_ca_file.clone(),
        min_version: config.tls_min_version.clone(),
        cipher_suites: config.tls_cipher_suites.clone(),
    })
    .context("the kubelet server's TLS")?;
    let authorizer: Arc<dyn Authorizer> = match config.authorization.mode {
        node_config::AuthorizationMode::AlwaysAllow => Arc::new(AlwaysAllow),
        node_config::AuthorizationMode::Webhook => {
            let deferred = Arc::new(DeferredAuthorizer::default());
            webhooks.authorizer = Some(deferred.clone());
            if flags.kubeconfig.is_none() && flags.bootstrap_kubeconfig.is_none() {
                warn!(
                    "authorization.mode is Webhook but there is no API server to ask: every request to the kubelet server is refused (set AlwaysAllow on a standalone node)"
                );
            }
            deferred
        }
    };
    let tokens: Option<Arc<dyn TokenReviewer>> = config.authentication.webhook_enabled.then(|| {
        let deferred = Arc::new(DeferredTokenReviewer::default());
        webhooks.tokens = Some(deferred.clone());
        deferred as Arc<dyn TokenReviewer>
    });
    let auth = Auth::new(
        node_name,
        tokens,
        config.authentication.anonymous_enabled,
        authorizer,
    );
    // Requests are counted whether or not they pass authentication, as upstream's.
    let router = routers
        .full
        .layer(axum::middleware::from_fn_with_state(
            auth,
            node_core::server::auth::middleware,
        ))
        .layer(axum::middleware::from_fn_with_state(
            (metrics, ServerType::ReadWrite),
            record_http,
        ));
    let addr = SocketAddr::new(config.address, config.port);
    let listener = bind(addr, "the kubelet server (address, port)").await?;
    info!(address = %addr, "serving the kubelet API over HTTPS");
    tokio::spawn(serve_tls(
        listener,
        Arc::new(tls),
        router,
        ServerLimits::default(),
    ));
    Ok(webhooks)
}
