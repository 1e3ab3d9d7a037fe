//! Certificate rotation: the client certificate (upstream `rotateCertificates`,
//! `pkg/kubelet/certificate`'s client manager) and the serving certificate
//! (`serverTLSBootstrap`, its server manager: signer `kubernetes.io/kubelet-serving`, the
//! node's names and addresses as subject alternative names). For the client certificate: at a random point between 70% and 90% of the current certificate's
//! lifetime the node requests a new one with its current credentials (a CSR for itself, which
//! the controller-manager approves for nodes), stores it as the bootstrap does, and its API
//! client switches to it without a restart. The client given out by [`RotatingClient`] sends
//! each request through the newest credentials; requests in flight (a watch) finish on the
//! connection they started on.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use rcgen::KeyPair;
use tracing::{info, warn};

use crate::certificate::{BootstrapError, CsrProfile, request_certificate, store_certificate};
use crate::ratelimit::TokenBucket;

/// A kube client whose credentials can be replaced while it is in use, its requests held to
/// a rate limit when one is set.
#[derive(Clone)]
pub struct RotatingClient {
    current: Arc<RwLock<kube::Client>>,
    config: kube::Config,
    limit: Option<Arc<TokenBucket>>,
}

#[derive(Clone)]
struct Current(Arc<RwLock<kube::Client>>, Option<Arc<TokenBucket>>);

impl tower::Service<http::Request<kube::client::Body>> for Current {
    type Response = http::Response<kube::client::Body>;
    type Error = kube::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<kube::client::Body>) -> Self::Future {
        let client = match self.0.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let limit = self.1.clone();
        Box::pin(async move {
            if let Some(limit) = limit {
                limit.acquire().await;
            }
            client.send(request).await
        })
    }
}

impl RotatingClient {
    /// Starts from `config` (the kubeconfig's: server, CA, current credentials).
    pub fn new(config: kube::Config) -> Result<Self, kube::Error> {
        let client = kube::Client::try_from(config.clone())?;
        Ok(RotatingClient {
            current: Arc::new(RwLock::new(client)),
            config,
            limit: None,
        })
    }

    /// Holds requests to `qps` per second with bursts of `burst` (`kubeAPIQPS`,
    /// `kubeAPIBurst`); a `qps` of 0 leaves them unlimited.
    pub fn with_rate_limit(mut self, qps: u32, burst: u32) -> Self {
        self.limit = (qps > 0).then(|| Arc::new(TokenBucket::new(f64::from(qps), burst)));
        self
    }

    /// The client to hand out: every request goes through the newest credentials.
    pub fn client(&self) -> kube::Client {
        kube::Client::new(
            Current(self.current.clone(), self.limit.clone()),
            self.config.default_namespace.clone(),
        )
    }

    /// Switches to the certificate and key of the PEM file `pem`.
    pub fn use_certificate(&self, pem: &Path) -> Result<(), kube::Error> {
        let mut config = self.config.clone();
        config.auth_info.client_certificate = Some(pem.display().to_string());
        config.auth_info.client_key = Some(pem.display().to_string());
        config.auth_info.client_certificate_data = None;
        config.auth_info.client_key_data = None;
        let client = kube::Client::try_from(config)?;
        match self.current.write() {
            Ok(mut current) => *current = client,
            Err(poisoned) => *poisoned.into_inner() = client,
        }
        Ok(())
    }
}

/// The validity of the first certificate of a PEM text: (notBefore, notAfter), seconds.
pub fn certificate_validity(pem: &str) -> Option<(i64, i64)> {
    let block = x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .filter_map(Result::ok)
        .find(|p| p.label == "CERTIFICATE")?;
    let (_, cert) = x509_parser::parse_x509_certificate(&block.contents).ok()?;
    Some((
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    ))
}

/// When to rotate a certificate valid from `not_before` to `not_after` (seconds): at
/// `fraction` of its lifetime, upstream's jittered 70–90% (`fraction` in 0.7..=0.9).
pub fn rotation_deadline(not_before: i64, not_after: i64, fraction: f64) -> i64 {
    let life = (not_after - not_before).max(0) as f64;
    not_before + (life * fraction) as i64
}

/// A jitter fraction in 0.7..=0.9 from the clock's nanoseconds.
fn jittered_fraction() -> f64 {
    let nanos = Timestamp::now().subsec_nanosecond().unsigned_abs();
    0.7 + 0.2 * f64::from(nanos % 1_000_000) / 1_000_000.0
}

/// What is done with a new certificate: the API client switches to it, or a callback takes
/// it (the kubelet server loads it).
type OnNew = Arc<dyn Fn(&Path) -> Result<(), String> + Send + Sync>;

/// Keeps one of the node's certificates fresh: its client certificate (upstream
/// `rotateCertificates`) or its serving certificate (`serverTLSBootstrap`).
pub struct CertificateRotation {
    client: RotatingClient,
    cert_dir: PathBuf,
    node: String,
    profile: CsrProfile,
    /// `None`: switch `client` to the new certificate.
    on_new: Option<OnNew>,
    /// The longest a CSR is waited for.
    pub csr_timeout: Duration,
}

impl CertificateRotation {
    /// Rotation of the client certificate in `cert_dir` (`kubelet-client-current.pem`) for
    /// `node`, switching `client`.
    pub fn new(client: RotatingClient, cert_dir: &Path, node: &str) -> Self {
        CertificateRotation {
            client,
            cert_dir: cert_dir.to_path_buf(),
            node: node.to_string(),
            profile: CsrProfile::client(),
            on_new: None,
            csr_timeout: Duration::from_secs(15 * 60),
        }
    }

    /// The serving certificate (`kubelet-server-current.pem` in `cert_dir`) for `node`,
    /// valid for `profile`'s names and addresses ([`CsrProfile::serving`]): requested with
    /// `client` at once when there is none, then rotated as the client certificate is;
    /// `on_new` gets each new file (the kubelet server loads it). The CSRs of this signer
    /// are approved by the cluster's operator or an approver of its own, not by the
    /// controller-manager: until then the kubelet waits (and retries after
    /// `csr_timeout`).
    pub fn serving(
        client: RotatingClient,
        cert_dir: &Path,
        node: &str,
        profile: CsrProfile,
        on_new: OnNew,
    ) -> Self {
        CertificateRotation {
            profile,
            on_new: Some(on_new),
            ..Self::new(client, cert_dir, node)
        }
    }

    /// One rotation now: a new key, a CSR made with the current credentials, the new
    /// certificate stored and put to use. Returns the new file.
    pub async fn rotate(&self) -> Result<PathBuf, BootstrapError> {
        let key = KeyPair::generate()?;
        let certificate = request_certificate(
            &self.client.client(),
            &self.node,
            &key,
            self.csr_timeout,
            &self.profile,
        )
        .await?;
        let link = store_certificate(&self.cert_dir, self.profile.file_prefix, &certificate, &key)?;
        let using = |reason: String| BootstrapError::Use {
            path: link.clone(),
            reason,
        };
        match &self.on_new {
            None => self
                .client
                .use_certificate(&link)
                .map_err(|e| using(e.to_string()))?,
            Some(on_new) => on_new(&link).map_err(using)?,
        }
        let what = self.profile.what;
        info!(node = %self.node, certificate = %link.display(), "rotated the {what} certificate");
        Ok(link)
    }

    /// Rotates at 70–90% of each certificate's lifetime, forever; a failed rotation is
    /// tried again with back-off (1 s doubling to 5 min). Never sooner than a tenth of the
    /// lifetime after the previous rotation, so that very short certificates do not make it
    /// spin.
    pub async fn run(self) {
        let current = self.profile.current(&self.cert_dir);
        let what = self.profile.what;
        let mut backoff = Duration::from_secs(1);
        let mut last_rotation: Option<i64> = None;
        loop {
            let validity = std::fs::read_to_string(&current)
                .ok()
                .as_deref()
                .and_then(certificate_validity);
            match validity {
                Some((not_before, not_after)) => {
                    let mut deadline =
                        rotation_deadline(not_before, not_after, jittered_fraction());
                    if let Some(last) = last_rotation {
                        deadline = deadline.max(last + (not_after - not_before) / 10);
                    }
                    let wait = (deadline - Timestamp::now().as_second()).max(0);
                    info!(node = %self.node, rotation_in_seconds = wait, "{what} certificate rotation scheduled");
                    tokio::time::sleep(Duration::from_secs(u64::try_from(wait).unwrap_or(0))).await;
                }
                // No serving certificate yet: request the first one now.
                None if self.on_new.is_some() => {
                    info!(node = %self.node, certificate = %current.display(), "requesting a {what} certificate");
                }
                None => {
                    warn!(certificate = %current.display(), "no {what} certificate to rotate");
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    continue;
                }
            }
            match self.rotate().await {
                Ok(_) => {
                    backoff = Duration::from_secs(1);
                    last_rotation = Some(Timestamp::now().as_second());
                }
                Err(e) => {
                    warn!(node = %self.node, error = %e, retry_in = ?backoff, "{what} certificate rotation failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(300));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_lies_at_the_fraction_of_the_lifetime() {
        assert_eq!(rotation_deadline(1000, 2000, 0.7), 1700);
        assert_eq!(rotation_deadline(1000, 2000, 0.9), 1900);
        assert_eq!(rotation_deadline(2000, 1000, 0.8), 2000);
        for _ in 0..100 {
            let f = jittered_fraction();
            assert!((0.7..=0.9).contains(&f), "{f}");
        }
    }
}
