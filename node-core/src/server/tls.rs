//! The serving certificate and the TLS configuration of the kubelet server (upstream
//! `InitializeTLS`): the configured `tlsCertFile`/`tlsPrivateKeyFile`, else a self-signed
//! certificate kept as `kubelet.crt`/`kubelet.key` in the certificate directory and reused on
//! the next start; client certificates verified against `authentication.x509.clientCAFile`
//! when one is given (optional: requests without one go on to token or anonymous
//! authentication); `tlsMinVersion` and `tlsCipherSuites` by their Go names.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// A TLS set-up error, naming the file or setting.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no usable certificate or key.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A setting is not supported.
    #[error("{setting}: {reason}")]
    Setting {
        /// The setting, e.g. `tlsMinVersion`.
        setting: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The certificate could not be generated.
    #[error("generating the self-signed serving certificate: {0}")]
    Generate(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The file names of the self-signed certificate in the certificate directory.
pub const SELF_SIGNED_CERT: &str = "kubelet.crt";
/// See [`SELF_SIGNED_CERT`].
pub const SELF_SIGNED_KEY: &str = "kubelet.key";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The serving certificate and key: the configured pair, else `kubelet.crt`/`kubelet.key` in
/// `cert_dir`, generated (self-signed, for `hostname` and `addresses`) when they cannot be
/// read, as upstream.
pub fn serving_cert_paths(
    tls_cert_file: Option<&Path>,
    tls_private_key_file: Option<&Path>,
    cert_dir: &Path,
    hostname: &str,
    addresses: &[std::net::IpAddr],
) -> Result<(PathBuf, PathBuf), TlsError> {
    if let (Some(cert), Some(key)) = (tls_cert_file, tls_private_key_file) {
        return Ok((cert.to_path_buf(), key.to_path_buf()));
    }
    let cert = cert_dir.join(SELF_SIGNED_CERT);
    let key = cert_dir.join(SELF_SIGNED_KEY);
    if load_certs(&cert).is_ok() && load_key(&key).is_ok() {
        return Ok((cert, key));
    }
    let (cert_pem, key_pem) = self_signed(hostname, addresses)?;
    std::fs::create_dir_all(cert_dir).map_err(io(cert_dir))?;
    write_private(&cert, cert_pem.as_bytes(), 0o644)?;
    write_private(&key, key_pem.as_bytes(), 0o600)?;
    tracing::info!(cert = %cert.display(), "generated a self-signed serving certificate");
    Ok((cert, key))
}

fn write_private(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // A name of this writer's own: two processes may write the same directory.
    let tmp = path.with_extension(format!(
        "tmp.{}.{}",
        std::process::id(),
        jiff::Timestamp::now().as_nanosecond()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// A self-signed serving certificate as upstream's `GenerateSelfSignedCertKey`: a CA
/// `<host>-ca@<unix time>` and a certificate `<host>@<unix time>` it signs, valid for a year,
/// for the host name (or IP) and `addresses`; the PEM holds the certificate then the CA.
pub fn self_signed(
    hostname: &str,
    addresses: &[std::net::IpAddr],
) -> Result<(String, String), TlsError> {
    let generate = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let now = jiff::Timestamp::now();
    let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
    let validity = |params: &mut CertificateParams| {
        let from = today.yesterday().unwrap_or(today);
        params.not_before =
            rcgen::date_time_ymd(from.year().into(), from.month() as u8, from.day() as u8);
        params.not_after = rcgen::date_time_ymd(
            i32::from(today.year()) + 1,
            today.month() as u8,
            today.day().min(28) as u8,
        );
    };
    let ca_key = KeyPair::generate().map_err(generate)?;
    let mut ca = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("{hostname}-ca@{}", now.as_second()),
    );
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    validity(&mut ca);
    let ca_cert = ca.self_signed(&ca_key).map_err(generate)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().map_err(generate)?;
    let mut leaf = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("{hostname}@{}", now.as_second()),
    );
    leaf.distinguished_name = dn;
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let mut names = Vec::new();
    match hostname.parse::<std::net::IpAddr>() {
        Ok(ip) => names.push(SanType::IpAddress(ip)),
        Err(_) => {
            names.push(SanType::DnsName(hostname.try_into().map_err(
                |e: rcgen::Error| TlsError::Generate(format!("{hostname}: {e}")),
            )?))
        }
    }
    for ip in addresses {
        let san = SanType::IpAddress(*ip);
        if !names.contains(&san) {
            names.push(san);
        }
    }
    leaf.subject_alt_names = names;
    leaf.use_authority_key_identifier_extension = true;
    validity(&mut leaf);
    let cert = leaf.signed_by(&key, &issuer).map_err(generate)?;
    Ok((
        format!("{}{}", cert.pem(), ca_cert.pem()),
        key.serialize_pem(),
    ))
}

/// The certificates of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(io(path))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            reason: "no certificate in the file".into(),
        });
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(io(path))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        reason: format!("no private key in the file: {e}"),
    })
}

/// The certificate the server presents, replaceable while it serves: the configured or
/// self-signed pair loaded once, or the certificate the node requests by CSR
/// (`serverTLSBootstrap`), replaced at each rotation. Until one is loaded, handshakes fail
/// (upstream's kubelet serves nothing before its serving certificate is issued either).
#[derive(Debug, Default)]
pub struct ServingCertificate {
    current: std::sync::RwLock<Option<Arc<rustls::sign::CertifiedKey>>>,
}

impl ServingCertificate {
    /// None yet.
    pub fn empty() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The pair in `cert_file` and `key_file` (they may be the same file).
    pub fn from_files(cert_file: &Path, key_file: &Path) -> Result<Arc<Self>, TlsError> {
        let serving = Self::empty();
        serving.load(cert_file, key_file)?;
        Ok(serving)
    }

    /// Replaces the certificate with the pair in `cert_file` and `key_file`; on error the
    /// one served so far stays.
    pub fn load(&self, cert_file: &Path, key_file: &Path) -> Result<(), TlsError> {
        let chain = load_certs(cert_file)?;
        let key = load_key(key_file)?;
        #[allow(deprecated)]
        let signing =
            rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| TlsError::Pem {
                path: key_file.to_path_buf(),
                reason: e.to_string(),
            })?;
        let certified = rustls::sign::CertifiedKey::new(chain, signing);
        certified.keys_match().map_err(|e| TlsError::Pem {
            path: key_file.to_path_buf(),
            reason: format!("the key does not match the certificate: {e}"),
        })?;
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        *current = Some(Arc::new(certified));
        Ok(())
    }

    /// Whether a certificate is loaded.
    pub fn is_loaded(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}

impl rustls::server::ResolvesServerCert for ServingCertificate {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The TLS settings of the server.
#[derive(Clone, Debug, Default)]
pub struct TlsSettings {
    /// The serving certificate (with its chain) and key.
    pub certificate: Arc<ServingCertificate>,
    /// `authentication.x509.clientCAFile`.
    pub client_ca_file: Option<PathBuf>,
    /// `tlsMinVersion` (`VersionTLS12`, `VersionTLS13`); none: TLS 1.2.
    pub min_version: Option<String>,
    /// `tlsCipherSuites` by their IANA/Go names; empty: rustls's defaults.
    pub cipher_suites: Vec<String>,
}

fn cipher_suite(name: &str) -> Option<rustls::SupportedCipherSuite> {
    use rustls::crypto::ring::cipher_suite as cs;
    Some(match name {
        "TLS_AES_128_GCM_SHA256" => cs::TLS13_AES_128_GCM_SHA256,
        "TLS_AES_256_GCM_SHA384" => cs::TLS13_AES_256_GCM_SHA384,
        "TLS_CHACHA20_POLY1305_SHA256" => cs::TLS13_CHACHA20_POLY1305_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305"
        | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        _ => return None,
    })
}

/// The rustls configuration of the server (HTTP/1.1).
pub fn server_config(settings: &TlsSettings) -> Result<rustls::ServerConfig, TlsError> {
    // ring, as the API client's TLS (kube's `ring` feature); rustls marks the ring provider
    // deprecated only for its lack of post-quantum key exchange.
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    if !settings.cipher_suites.is_empty() {
        let mut suites = Vec::new();
        let mut unknown = Vec::new();
        for name in &settings.cipher_suites {
            match cipher_suite(name) {
                Some(s) => suites.push(s),
                None => unknown.push(name.as_str()),
            }
        }
        if !unknown.is_empty() {
            return Err(TlsError::Setting {
                setting: "tlsCipherSuites",
                reason: format!("unsupported cipher suites: {}", unknown.join(", ")),
            });
        }
        // TLS 1.3 needs one of its own suites.
        if !suites
            .iter()
            .any(|s| s.version() == &rustls::version::TLS13)
        {
            suites.push(rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256);
        }
        provider.cipher_suites = suites;
    }
    let versions: &[&'static rustls::SupportedProtocolVersion] =
        match settings.min_version.as_deref() {
            None | Some("") | Some("VersionTLS12") => {
                &[&rustls::version::TLS13, &rustls::version::TLS12]
            }
            Some("VersionTLS13") => &[&rustls::version::TLS13],
            Some(v @ ("VersionTLS10" | "VersionTLS11")) => {
                return Err(TlsError::Setting {
                    setting: "tlsMinVersion",
                    reason: format!("{v} is not supported by this server (TLS 1.2 is the oldest)"),
                });
            }
            Some(other) => {
                return Err(TlsError::Setting {
                    setting: "tlsMinVersion",
                    reason: format!("unknown version {other:?} (VersionTLS12 or VersionTLS13)"),
                });
            }
        };
    let provider = Arc::new(provider);
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)?;
    let builder = match &settings.client_ca_file {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in load_certs(ca)? {
                roots.add(cert).map_err(|e| TlsError::Pem {
                    path: ca.clone(),
                    reason: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Pem {
                    path: ca.clone(),
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(settings.certificate.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, stem: &str, host: &str) -> (PathBuf, PathBuf) {
        let (pem, key) = self_signed(host, &["127.0.0.1".parse().unwrap()]).unwrap();
        let (c, k) = (
            dir.join(format!("{stem}.crt")),
            dir.join(format!("{stem}.key")),
        );
        std::fs::write(&c, pem).unwrap();
        std::fs::write(&k, key).unwrap();
        (c, k)
    }

    #[test]
    fn a_configured_pair_is_served_else_a_self_signed_one_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = write_pair(dir.path(), "mine", "node-a");
        let certs = dir.path().join("pki");
        assert_eq!(
            serving_cert_paths(Some(&c), Some(&k), &certs, "node-a", &[]).unwrap(),
            (c.clone(), k.clone())
        );
        assert!(
            !certs.exists(),
            "nothing generated when a pair is configured"
        );
        let (gc, gk) = serving_cert_paths(None, None, &certs, "node-a", &[]).unwrap();
        assert_eq!(gc, certs.join(SELF_SIGNED_CERT));
        let first = std::fs::read(&gc).unwrap();
        serving_cert_paths(None, None, &certs, "node-a", &[]).unwrap();
        assert_eq!(std::fs::read(&gc).unwrap(), first, "kept, not made again");
        assert_eq!(
            std::fs::metadata(&gk).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // The leaf names the host; the CA follows it in the file.
        let certs = load_certs(&gc).unwrap();
        assert_eq!(certs.len(), 2);
        let (_, leaf) = x509_parser::parse_x509_certificate(certs[0].as_ref()).unwrap();
        let san = leaf.subject_alternative_name().unwrap().unwrap();
        assert!(format!("{:?}", san.value).contains("node-a"));
    }

    use std::os::unix::fs::PermissionsExt;

    async fn handshake(server: rustls::ServerConfig, tls12_only: bool, ca: &Path) -> bool {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let _ = acceptor.accept(s).await;
        });
        let mut roots = RootCertStore::empty();
        for c in load_certs(ca).unwrap() {
            roots.add(c).unwrap();
        }
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&'static rustls::SupportedProtocolVersion] = if tls12_only {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(
                rustls::pki_types::ServerName::try_from("node-a").unwrap(),
                tcp,
            )
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn the_serving_certificate_is_replaced_while_serving_and_none_fails_the_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let (c1, k1) = write_pair(dir.path(), "one", "node-a");
        let (c2, k2) = write_pair(dir.path(), "two", "node-a");
        let certificate = ServingCertificate::empty();
        let config = server_config(&TlsSettings {
            certificate: certificate.clone(),
            ..Default::default()
        })
        .unwrap();
        assert!(
            !handshake(config.clone(), false, &c1).await,
            "no certificate yet"
        );
        certificate.load(&c1, &k1).unwrap();
        assert!(handshake(config.clone(), false, &c1).await);
        // A key of another certificate is refused and the served one stays.
        let err = certificate.load(&c2, &k1).unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
        assert!(handshake(config.clone(), false, &c1).await);
        // Rotated: the same server config now presents the new certificate.
        certificate.load(&c2, &k2).unwrap();
        assert!(handshake(config.clone(), false, &c2).await);
        assert!(!handshake(config, false, &c1).await);
    }

    #[tokio::test]
    async fn tls_min_version_and_cipher_suites_are_honoured_and_bad_names_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = write_pair(dir.path(), "srv", "node-a");
        let certificate = ServingCertificate::from_files(&c, &k).unwrap();
        let settings = |min: Option<&str>, suites: &[&str]| TlsSettings {
            certificate: certificate.clone(),
            client_ca_file: None,
            min_version: min.map(str::to_string),
            cipher_suites: suites.iter().map(|s| s.to_string()).collect(),
        };
        assert!(handshake(server_config(&settings(None, &[])).unwrap(), true, &c).await);
        assert!(
            !handshake(
                server_config(&settings(Some("VersionTLS13"), &[])).unwrap(),
                true,
                &c
            )
            .await,
            "a TLS 1.2 client is refused by tlsMinVersion VersionTLS13"
        );
        assert!(
            handshake(
                server_config(&settings(Some("VersionTLS13"), &[])).unwrap(),
                false,
                &c
            )
            .await
        );
        let err = server_config(&settings(Some("VersionTLS10"), &[])).unwrap_err();
        assert!(err.to_string().starts_with("tlsMinVersion: "), "{err}");
        let err = server_config(&settings(None, &["TLS_RSA_WITH_RC4_128_SHA"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tlsCipherSuites: unsupported cipher suites: TLS_RSA_WITH_RC4_128_SHA"
        );
        // A TLS 1.2 client with only ECDSA/AES-GCM suites configured still connects.
        assert!(
            handshake(
                server_config(&settings(
                    None,
                    &["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"]
                ))
                .unwrap(),
                true,
                &c
            )
            .await
        );
    }
}
