//! TLS bootstrap of the node's client certificate (upstream
//! `pkg/kubelet/certificate/bootstrap`): when the kubeconfig is missing or its client
//! certificate has expired and a bootstrap kubeconfig is given, the kubelet makes a key,
//! asks for a certificate with a `certificates.k8s.io/v1` CSR (signer
//! `kubernetes.io/kube-apiserver-client-kubelet`, subject `system:node:<node>` /
//! `system:nodes`), waits until it is approved and issued, stores it as upstream's file store
//! does (`<cert-dir>/kubelet-client-<timestamp>.pem`, key and certificate in one file, linked
//! from `kubelet-client-current.pem`) and writes the kubeconfig pointing at it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::config::{
    AuthInfo, Cluster, Context, KubeConfigOptions, Kubeconfig, NamedAuthInfo, NamedCluster,
    NamedContext,
};
use kube::{Api, Client};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use tracing::info;

/// The signer of kubelet client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The link to the current client certificate in the cert dir.
pub const CURRENT_CLIENT_PEM: &str = "kubelet-client-current.pem";
/// The key kept while a CSR is pending, so that a restart reuses it (upstream
/// `tmpPrivateKeyFile`).
pub const PENDING_KEY: &str = "kubelet-client.key.tmp";

/// What can go wrong in the TLS bootstrap; each names the file or the CSR.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootstrapError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A kubeconfig cannot be used.
    #[error("kubeconfig {}: {reason}", path.display())]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key or the request could not be made.
    #[error("making the certificate request: {0}")]
    Request(#[from] rcgen::Error),
    /// The API server refused or failed a call.
    #[error("{what}: {source}")]
    Api {
        /// The call, naming the CSR.
        what: String,
        /// The client's error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The CSR was denied or failed.
    #[error("certificate signing request {name} was {condition}: {message}")]
    Denied {
        /// The CSR.
        name: String,
        /// `Denied` or `Failed`.
        condition: String,
        /// Its reason and message.
        message: String,
    },
    /// An issued certificate could not be put to use.
    #[error("the new certificate {}: {reason}", path.display())]
    Use {
        /// Its file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No certificate was issued in time.
    #[error("timed out waiting for certificate signing request {name} to be approved and issued")]
    Timeout {
        /// The CSR.
        name: String,
    },
}

fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> BootstrapError + '_ {
    move |source| BootstrapError::File {
        path: path.to_path_buf(),
        source,
    }
}

/// The `notAfter` of the first certificate of a PEM text, as seconds since the epoch.
pub fn certificate_not_after(pem: &str) -> Option<i64> {
    let block = x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .filter_map(Result::ok)
        .find(|p| p.label == "CERTIFICATE")?;
    let (_, cert) = x509_parser::parse_x509_certificate(&block.contents).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// Whether the kubeconfig at `path` exists and its client certificate (inline or in a file)
/// has not expired (upstream `isClientConfigStillValid`). A kubeconfig without a client
/// certificate (a token, an exec plugin) counts as valid.
pub fn kubeconfig_still_valid(path: &Path) -> bool {
    let Ok(kubeconfig) = Kubeconfig::read_from(path) else {
        return false;
    };
    let Some(auth) = kubeconfig
        .auth_infos
        .first()
        .and_then(|a| a.auth_info.as_ref())
    else {
        return true;
    };
    let pem = if let Some(data) = &auth.client_certificate_data {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
    } else if let Some(file) = &auth.client_certificate {
        let file = Path::new(file);
        let file = if file.is_relative() {
            path.parent().unwrap_or(Path::new(".")).join(file)
        } else {
            file.to_path_buf()
        };
        std::fs::read_to_string(file).ok()
    } else {
        return true;
    };
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    pem.as_deref()
        .and_then(certificate_not_after)
        .is_some_and(|not_after| not_after > now)
}

/// The key of a pending request: the one kept in `cert_dir`, or a new ECDSA P-256 key.
fn pending_key(cert_dir: &Path) -> Result<KeyPair, BootstrapError> {
    let path = cert_dir.join(PENDING_KEY);
    if let Ok(pem) = std::fs::read_to_string(&path)
        && let Ok(key) = KeyPair::from_pem(&pem)
    {
        return Ok(key);
    }
    let key = KeyPair::generate()?;
    write_private(&path, key.serialize_pem().as_bytes())?;
    Ok(key)
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), BootstrapError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("writing");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(file_error(&tmp))?;
    file.write_all(data).map_err(file_error(&tmp))?;
    file.sync_all().map_err(file_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(file_error(path))
}

/// The signer of kubelet serving certificates (`serverTLSBootstrap`).
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
/// The link to the current serving certificate in the cert dir.
pub const CURRENT_SERVING_PEM: &str = "kubelet-server-current.pem";

/// What a certificate signing request of the node asks for: a client certificate
/// (`system:node:<node>` in `system:nodes`, for the API server) or a serving certificate
/// (the same subject, for the kubelet server, valid for the node's names and addresses), as
/// upstream's certificate managers ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsrProfile {
    /// The signer (`kubernetes.io/kube-apiserver-client-kubelet`, `kubernetes.io/kubelet-serving`).
    pub signer: &'static str,
    /// The key usages asked for.
    pub usages: &'static [&'static str],
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ips: Vec<std::net::IpAddr>,
    /// How the files are named in the cert dir: `<prefix>-<timestamp>.pem`,
    /// `<prefix>-current.pem` (`kubelet-client`, `kubelet-server`).
    pub file_prefix: &'static str,
    /// What it is, for logs and errors (`client`, `serving`).
    pub what: &'static str,
}

impl CsrProfile {
    /// The node's client certificate.
    pub fn client() -> Self {
        CsrProfile {
            signer: KUBELET_CLIENT_SIGNER,
            usages: &["digital signature", "client auth"],
            dns_names: Vec::new(),
            ips: Vec::new(),
            file_prefix: "kubelet-client",
            what: "client",
        }
    }

    /// The node's serving certificate, for `dns_names` (the hostname and DNS addresses of
    /// the node) and `ips` (its InternalIP and ExternalIP addresses). An ECDSA key, so no
    /// `key encipherment`, as upstream asks for such keys.
    pub fn serving(dns_names: Vec<String>, ips: Vec<std::net::IpAddr>) -> Self {
        CsrProfile {
            signer: KUBELET_SERVING_SIGNER,
            usages: &["digital signature", "server auth"],
            dns_names,
            ips,
            file_prefix: "kubelet-server",
            what: "serving",
        }
    }

    /// The link to the current certificate in `cert_dir`.
    pub fn current(&self, cert_dir: &Path) -> PathBuf {
        cert_dir.join(format!("{}-current.pem", self.file_prefix))
    }
}

/// Requests a client certificate for `node` with `client` (the bootstrap credentials) and
/// waits up to `timeout` for it. Returns the key and the certificate chain, PEM.
pub async fn request_client_certificate(
    client: &Client,
    node: &str,
    key: &KeyPair,
    timeout: Duration,
) -> Result<String, BootstrapError> {
    request_certificate(client, node, key, timeout, &CsrProfile::client()).await
}

/// Requests the certificate `profile` describes for `node` with `client` and waits up to
/// `timeout` for it to be approved and issued. Returns the certificate chain, PEM.
pub async fn request_certificate(
    client: &Client,
    node: &str,
    key: &KeyPair,
    timeout: Duration,
    profile: &CsrProfile,
) -> Result<String, BootstrapError> {
    let mut params = CertificateParams::default();
    let mut subject = DistinguishedName::new();
    subject.push(DnType::OrganizationName, "system:nodes");
    subject.push(DnType::CommonName, format!("system:node:{node}"));
    params.distinguished_name = subject;
    for name in &profile.dns_names {
        params
            .subject_alt_names
            .push(rcgen::SanType::DnsName(name.clone().try_into()?));
    }
    for ip in &profile.ips {
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress(*ip));
    }
    let request = params.serialize_request(key)?.pem()?;
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some("csr-".into()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request.into_bytes()),
            signer_name: profile.signer.into(),
            usages: Some(profile.usages.iter().map(|u| u.to_string()).collect()),
            ..Default::default()
        },
        status: None,
    };
    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    let created = csrs
        .create(&PostParams::default(), &csr)
        .await
        .map_err(|e| BootstrapError::Api {
            what: format!("creating a certificate signing request for system:node:{node}"),
            source: Box::new(e),
        })?;
    let name = created.metadata.name.unwrap_or_default();
    let what = profile.what;
    info!(csr = %name, node, "waiting for the {what} certificate to be approved and issued");
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let current = csrs.get(&name).await.map_err(|e| BootstrapError::Api {
            what: format!("reading certificate signing request {name}"),
            source: Box::new(e),
        })?;
        let status = current.status.unwrap_or_default();
        for c in status.conditions.iter().flatten() {
            if (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True" {
                return Err(BootstrapError::Denied {
                    name,
                    condition: c.type_.clone(),
                    message: format!(
                        "{}: {}",
                        c.reason.as_deref().unwrap_or(""),
                        c.message.as_deref().unwrap_or("")
                    ),
                });
            }
        }
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            info!(csr = %name, "{what} certificate issued");
            return String::from_utf8(cert.0).map_err(|_| BootstrapError::Denied {
                name,
                condition: "Failed".into(),
                message: "the issued certificate is not PEM".into(),
            });
        }
        if tokio::time::Instant::now() > deadline {
            return Err(BootstrapError::Timeout { name });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Stores a key and certificate as upstream's file store: `kubelet-client-<timestamp>.pem`
/// (certificate then key) and the `kubelet-client-current.pem` link. Returns the link.
pub fn store_client_certificate(
    cert_dir: &Path,
    certificate_pem: &str,
    key: &KeyPair,
) -> Result<PathBuf, BootstrapError> {
    store_certificate(cert_dir, "kubelet-client", certificate_pem, key)
}

/// Stores a key and certificate as upstream's file store: `<prefix>-<timestamp>.pem`
/// (certificate then key) and the `<prefix>-current.pem` link. Returns the link.
pub fn store_certificate(
    cert_dir: &Path,
    prefix: &str,
    certificate_pem: &str,
    key: &KeyPair,
) -> Result<PathBuf, BootstrapError> {
    std::fs::create_dir_all(cert_dir).map_err(file_error(cert_dir))?;
    let stamp = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%d-%H-%M-%S")
        .to_string();
    let file = cert_dir.join(format!("{prefix}-{stamp}.pem"));
    let mut pem = certificate_pem.trim_end().to_string();
    pem.push('\n');
    pem.push_str(&key.serialize_pem());
    write_private(&file, pem.as_bytes())?;
    let link = cert_dir.join(format!("{prefix}-current.pem"));
    let tmp_link = cert_dir.join(format!("{prefix}-current.pem.tmp"));
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&file, &tmp_link).map_err(file_error(&tmp_link))?;
    std::fs::rename(&tmp_link, &link).map_err(file_error(&link))?;
    Ok(link)
}

/// Writes the kubeconfig the kubelet uses after the bootstrap: the bootstrap kubeconfig's
/// server and CA, and the client certificate and key of `pem` (upstream
/// `writeKubeconfigFromBootstrapping`).
pub fn write_kubeconfig(
    path: &Path,
    bootstrap: &Kubeconfig,
    pem: &Path,
) -> Result<(), BootstrapError> {
    let cluster = bootstrap
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .unwrap_or_default();
    let kubeconfig = Kubeconfig {
        clusters: vec![NamedCluster {
            name: "default-cluster".into(),
            other: Default::default(),
            cluster: Some(Cluster {
                server: cluster.server,
                certificate_authority: cluster.certificate_authority,
                certificate_authority_data: cluster.certificate_authority_data,
                insecure_skip_tls_verify: cluster.insecure_skip_tls_verify,
                ..Default::default()
            }),
        }],
        auth_infos: vec![NamedAuthInfo {
            name: "default-auth".into(),
            other: Default::default(),
            auth_info: Some(AuthInfo {
                client_certificate: Some(pem.display().to_string()),
                client_key: Some(pem.display().to_string()),
                ..Default::default()
            }),
        }],
        contexts: vec![NamedContext {
            name: "default-context".into(),
            other: Default::default(),
            context: Some(Context {
                cluster: "default-cluster".into(),
                user: Some("default-auth".into()),
                namespace: Some("default".into()),
                ..Default::default()
            }),
        }],
        current_context: Some("default-context".into()),
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        ..Default::default()
    };
    // JSON, which every kubeconfig reader takes as YAML.
    let text =
        serde_json::to_string_pretty(&kubeconfig).map_err(|e| BootstrapError::Kubeconfig {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(file_error(dir))?;
    }
    write_private(path, text.as_bytes())
}

/// The TLS bootstrap (upstream `LoadClientCert`): when `kubeconfig` is missing or its
/// certificate has expired, requests a client certificate for `node` with the credentials
/// of `bootstrap_kubeconfig`, stores it in `cert_dir` and writes `kubeconfig`. Returns
/// whether a certificate was requested.
pub async fn bootstrap_client_certificate(
    kubeconfig: &Path,
    bootstrap_kubeconfig: &Path,
    cert_dir: &Path,
    node: &str,
    user_agent: &str,
    timeout: Duration,
) -> Result<bool, BootstrapError> {
    if kubeconfig_still_valid(kubeconfig) {
        info!(kubeconfig = %kubeconfig.display(), "the kubeconfig is valid: no bootstrap needed");
        return Ok(false);
    }
    let kubeconfig_error = |reason: String| BootstrapError::Kubeconfig {
        path: bootstrap_kubeconfig.to_path_buf(),
        reason,
    };
    let bootstrap =
        Kubeconfig::read_from(bootstrap_kubeconfig).map_err(|e| kubeconfig_error(e.to_string()))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(bootstrap.clone(), &KubeConfigOptions::default())
            .await
            .map_err(|e| kubeconfig_error(e.to_string()))?;
    if let Ok(agent) = http::HeaderValue::from_str(user_agent) {
        config.headers.push((http::header::USER_AGENT, agent));
    }
    let client = Client::try_from(config).map_err(|e| kubeconfig_error(e.to_string()))?;
    std::fs::create_dir_all(cert_dir).map_err(file_error(cert_dir))?;
    let key = pending_key(cert_dir)?;
    let certificate = request_client_certificate(&client, node, &key, timeout).await?;
    let pem = store_client_certificate(cert_dir, &certificate, &key)?;
    write_kubeconfig(kubeconfig, &bootstrap, &pem)?;
    let _ = std::fs::remove_file(cert_dir.join(PENDING_KEY));
    info!(kubeconfig = %kubeconfig.display(), certificate = %pem.display(), "wrote the kubeconfig of the node's client certificate");
    Ok(true)
}
