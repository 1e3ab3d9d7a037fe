//! The probe handlers, as upstream's `pkg/probe`: exec through the runtime, HTTP(S) GET and
//! TCP connect. Outcomes carry upstream's output and messages (`HTTP probe failed with
//! statuscode: 500`, `dial tcp 10.88.0.5:8080: connect: connection refused`).

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Outcome;
use crate::runtime::{CommandRunner, ContainerId, RuntimeError};

/// The body an HTTP probe reads at most (upstream `maxRespBodyLength`).
pub const MAX_BODY: usize = 10 * 1024;
/// Redirects an HTTP probe follows at most, as Go's client.
const MAX_REDIRECTS: usize = 10;

/// `User-Agent` of HTTP probes: `kube-probe/<major>.<minor>` of the Kubernetes version this
/// kubelet implements.
pub const USER_AGENT: &str = "kube-probe/1.36";

/// Runs `probe` of `container` (the pod at `pod_ip`, the runtime's container `container_id`).
pub async fn run(
    runner: &dyn CommandRunner,
    probe: &Probe,
    pod_ip: &str,
    container: &Container,
    container_id: &str,
    timeout: Duration,
) -> Result<Outcome, String> {
    if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        return exec_probe(runner, container_id, command, timeout).await;
    }
    if let Some(get) = &probe.http_get {
        let port = resolve_port(&get.port, container)?;
        return Ok(http_probe(get, pod_ip, port, timeout).await);
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = resolve_port(&tcp.port, container)?;
        let host = tcp
            .host
            .as_deref()
            .filter(|h| !h.is_empty())
            .unwrap_or(pod_ip);
        return Ok(tcp_probe(host, port, timeout).await);
    }
    if let Some(grpc) = &probe.grpc {
        let port = u16::try_from(grpc.port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("invalid port number: {}", grpc.port))?;
        let service = grpc.service.as_deref().unwrap_or_default();
        return Ok(grpc_probe(pod_ip, port, service, timeout).await);
    }
    Err("missing probe handler".into())
}

/// A probe's port: a number, or the name of one of the container's ports.
pub fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => match name.parse::<i32>() {
            Ok(n) => n,
            Err(_) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| format!("couldn't find port: {name} in {}", container.name))?,
        },
    };
    u16::try_from(number)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port number: {number}"))
}

/// `command` in the container: exit 0 passes; its output (stdout then stderr) is the probe's.
pub async fn exec_probe(
    runner: &dyn CommandRunner,
    container_id: &str,
    command: Vec<String>,
    timeout: Duration,
) -> Result<Outcome, String> {
    let (runtime, id) = container_id.split_once("://").unwrap_or(("", container_id));
    let id = ContainerId {
        runtime: runtime.to_string(),
        id: id.to_string(),
    };
    match runner.run_in_container(&id, command.clone(), timeout).await {
        Ok(out) => {
            let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
            output.push_str(&String::from_utf8_lossy(&out.stderr));
            Ok(match out.exit_code {
                0 => Outcome::Success(output),
                _ => Outcome::Failure(output),
            })
        }
        Err(RuntimeError::DeadlineExceeded(_)) => Ok(Outcome::Failure(format!(
            "command {:?} timed out",
            command.join(" ")
        ))),
        Err(e) => Err(e.to_string()),
    }
}

/// Go's text of a connection error (`connect: connection refused`).
fn connect_error(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => format!(
            "connect: {}",
            nix::errno::Errno::from_raw(code).desc().to_lowercase()
        ),
        None => e.to_string(),
    }
}

fn host_port(host: &str, port: u16) -> String {
    match host.contains(':') {
        true => format!("[{host}]:{port}"),
        false => format!("{host}:{port}"),
    }
}

/// A TCP connection within `timeout`: success, or upstream's failure message.
pub async fn tcp_probe(host: &str, port: u16, timeout: Duration) -> Outcome {
    let addr = host_port(host, port);
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
        Ok(Ok(_)) => Outcome::Success(String::new()),
        Ok(Err(e)) => Outcome::Failure(format!("dial tcp {addr}: {}", connect_error(&e))),
        Err(_) => Outcome::Failure(format!("dial tcp {addr}: i/o timeout")),
    }
}

/// The innermost cause of `e`, as Go's text where it is an OS error
/// (`connect: connection refused`).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    match cause.downcast_ref::<std::io::Error>() {
        Some(io) => connect_error(io),
        None => cause.to_string(),
    }
}

/// Go's text of a duration of whole or fractional seconds (`1s`, `1.5s`).
fn go_seconds(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// `grpc.health.v1.Health/Check` of `service` ("" is the server as a whole) on `host:port`,
/// plaintext, within `timeout`: `SERVING` passes. The outputs are upstream's
/// (`pkg/probe/grpc`): "service healthy", "service unhealthy (responded with \"NOT_SERVING\")",
/// the timeouts' and an unimplemented health service's messages.
pub async fn grpc_probe(host: &str, port: u16, service: &str, timeout: Duration) -> Outcome {
    use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient};
    let addr = host_port(host, port);
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{addr}")) {
        Ok(e) => e.connect_timeout(timeout).timeout(timeout),
        Err(e) => {
            return Outcome::Failure(format!("error: failed to connect service at {addr:?}: {e}"));
        }
    };
    let endpoint = match endpoint.user_agent(USER_AGENT) {
        Ok(e) => e,
        Err(e) => {
            return Outcome::Failure(format!("error: failed to connect service at {addr:?}: {e}"));
        }
    };
    let started = tokio::time::Instant::now();
    let channel = match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(channel)) => channel,
        Ok(Err(e)) => {
            let cause = root_cause(&e);
            return Outcome::Failure(format!(
                "error: health rpc probe failed: rpc error: code = Unavailable desc = connection error: dial tcp {addr}: {cause}"
            ));
        }
        Err(_) => {
            return Outcome::Failure(format!(
                "timeout: failed to connect service {addr:?} within {}: context deadline exceeded",
                go_seconds(timeout)
            ));
        }
    };
    let left = timeout.saturating_sub(started.elapsed());
    let request = tonic_health::pb::HealthCheckRequest {
        service: service.to_string(),
    };
    let mut client = HealthClient::new(channel);
    let check = client.check(request);
    let response = match tokio::time::timeout(left, check).await {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) => {
            return Outcome::Failure(match status.code() {
                tonic::Code::Unimplemented => format!(
                    "this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
                    status.message()
                ),
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => format!(
                    "timeout: health rpc did not complete within {}",
                    go_seconds(timeout)
                ),
                code => format!(
                    "error: health rpc probe failed: rpc error: code = {code:?} desc = {}",
                    status.message()
                ),
            });
        }
        Err(_) => {
            return Outcome::Failure(format!(
                "timeout: health rpc did not complete within {}",
                go_seconds(timeout)
            ));
        }
    };
    match ServingStatus::try_from(response.status) {
        Ok(ServingStatus::Serving) => Outcome::Success("service healthy".into()),
        status => Outcome::Failure(format!(
            "service unhealthy (responded with {:?})",
            status.map(|s| s.as_str_name()).unwrap_or("UNKNOWN")
        )),
    }
}

/// A certificate verifier that accepts any certificate: probes and hooks do not verify, as
/// upstream's (`InsecureSkipVerify`).
#[derive(Debug)]
struct AnyCertificate(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn insecure_tls() -> Result<tokio_rustls::TlsConnector, String> {
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}

/// `User-Agent` of HTTP lifecycle hooks.
pub const HOOK_USER_AGENT: &str = "kube-lifecycle/1.36";

/// An HTTP(S) GET lifecycle hook (postStart, preStop): the request is sent and its answer
/// read; only a failure to get one is an error (upstream ignores the status code). No
/// certificate verification, as upstream.
pub async fn http_hook(get: &HTTPGetAction, pod_ip: &str, port: u16) -> Result<(), String> {
    let (url, mut headers, host_header) = request_parts(get, pod_ip, port);
    let uri = url
        .parse::<http::Uri>()
        .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("user-agent"))
    {
        headers.push(("User-Agent".into(), HOOK_USER_AGENT.into()));
    }
    get_once(&uri, host_header.as_deref(), &headers)
        .await
        .map(drop)
        .map_err(|e| format!("Get {url:?}: {e}"))
}

/// The URL, the headers and the `Host` header of a GET action.
fn request_parts(
    get: &HTTPGetAction,
    pod_ip: &str,
    port: u16,
) -> (String, Vec<(String, String)>, Option<String>) {
    let scheme = match get.scheme.as_deref() {
        Some(s) if s.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    let host = get
        .host
        .as_deref()
        .filter(|h| !h.is_empty())
        .unwrap_or(pod_ip);
    let mut path = get.path.clone().unwrap_or_default();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let url = format!("{scheme}://{}{path}", host_port(host, port));
    let headers: Vec<(String, String)> = get
        .http_headers
        .iter()
        .flatten()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    let host_header = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.clone());
    (url, headers, host_header)
}

/// One GET: its status, `Location` and (at most [`MAX_BODY`] of) its body.
async fn get_once(
    uri: &http::Uri,
    host_header: Option<&str>,
    headers: &[(String, String)],
) -> Result<(u16, Option<String>, String), String> {
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let addr = host_port(host, port);
    let tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|e| format!("dial tcp {addr}: {}", connect_error(&e)))?;
    let _ = tcp.set_nodelay(true);
    let request = {
        let mut builder =
            hyper::Request::get(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
        builder = builder.header(
            "host",
            host_header
                .map(str::to_string)
                .unwrap_or_else(|| host_port(host, port)),
        );
        let given = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
        if !given("user-agent") {
            builder = builder.header("user-agent", USER_AGENT);
        }
        if !given("accept") {
            builder = builder.header("accept", "*/*");
        }
        builder = builder.header("connection", "close");
        for (name, value) in headers {
            if !name.eq_ignore_ascii_case("host") {
                builder = builder.header(name.as_str(), value.as_str());
            }
        }
        builder
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?
    };
    let response = if https {
        let name =
            rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
        let tls = insecure_tls()?
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        send(TokioIo::new(tls), request).await?
    } else {
        send(TokioIo::new(tcp), request).await?
    };
    let code = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .map(str::to_string);
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while bytes.len() < MAX_BODY {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    bytes.extend_from_slice(data);
                }
            }
            Some(Err(e)) => return Err(e.to_string()),
            None => break,
        }
    }
    bytes.truncate(MAX_BODY);
    Ok((code, location, String::from_utf8_lossy(&bytes).into_owned()))
}

async fn send<T>(
    io: T,
    request: hyper::Request<Empty<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

/// The URL `location` points to from `base`.
fn follow(base: &http::Uri, location: &str) -> Option<http::Uri> {
    let target: http::Uri = location.parse().ok()?;
    if target.scheme().is_some() {
        return Some(target);
    }
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(location.parse().ok()?);
    http::Uri::from_parts(parts).ok()
}

/// An HTTP(S) GET probe (upstream `DoHTTPProbe`): 200–399 passes; redirects are followed to
/// the same host only, a redirect elsewhere passes with a warning; the body (at most 10 KiB)
/// is the output.
pub async fn http_probe(
    get: &HTTPGetAction,
    pod_ip: &str,
    port: u16,
    timeout: Duration,
) -> Outcome {
    let (url, headers, host_header) = request_parts(get, pod_ip, port);
    let Ok(first) = url.parse::<http::Uri>() else {
        return Outcome::Failure(format!("invalid URL {url:?}"));
    };
    let run = async {
        let mut uri = first.clone();
        for _ in 0..=MAX_REDIRECTS {
            let (code, location, body) = get_once(&uri, host_header.as_deref(), &headers)
                .await
                .map_err(|e| format!("Get {:?}: {e}", uri.to_string()))?;
            if (300..400).contains(&code)
                && let Some(next) = location.as_deref().and_then(|l| follow(&uri, l))
            {
                if next.host() == first.host() {
                    uri = next;
                    continue;
                }
                return Ok(Outcome::Warning(format!(
                    "Probe terminated redirects, Response body: {body}"
                )));
            }
            return Ok(match code {
                200..=299 => Outcome::Success(body),
                300..=399 => {
                    Outcome::Warning(format!("Probe terminated redirects, Response body: {body}"))
                }
                _ => Outcome::Failure(format!("HTTP probe failed with statuscode: {code}")),
            });
        }
        Err(format!(
            "Get {url:?}: stopped after {MAX_REDIRECTS} redirects"
        ))
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(message)) => Outcome::Failure(message),
        Err(_) => Outcome::Failure(format!(
            "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::HTTPHeader;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-shot-per-connection HTTP server on 127.0.0.1 answering each request with
    /// `respond(request head)`; the heads it saw are kept.
    async fn server(
        respond: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (respond, log) = (Arc::new(respond), seen.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (respond, log) = (respond.clone(), log.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut head = String::new();
                    while !head.contains("\r\n\r\n") {
                        let Ok(n) = s.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        head.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                    let answer = respond(&head);
                    log.lock().unwrap().push(head);
                    let _ = s.write_all(answer.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        (port, seen)
    }

    use std::sync::Arc;

    fn response(code: u16, extra: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {code} X\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{body}",
            body.len()
        )
    }

    fn get(path: &str, headers: &[(&str, &str)]) -> HTTPGetAction {
        HTTPGetAction {
            path: Some(path.into()),
            http_headers: Some(
                headers
                    .iter()
                    .map(|(n, v)| HTTPHeader {
                        name: n.to_string(),
                        value: v.to_string(),
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn http_probes_pass_on_2xx_fail_otherwise_and_send_upstreams_headers() {
        let (port, seen) = server(|head| match head.split(' ').nth(1) {
            Some("/ok") => response(200, "", "fine"),
            Some("/big") => response(200, "", &"x".repeat(20_000)),
            _ => response(500, "", "boom"),
        })
        .await;
        let t = Duration::from_secs(2);
        assert_eq!(
            http_probe(&get("/ok", &[]), "127.0.0.1", port, t).await,
            Outcome::Success("fine".into())
        );
        let head = seen.lock().unwrap().last().cloned().unwrap();
        assert!(head.contains("user-agent: kube-probe/1.36\r\n"), "{head}");
        assert!(head.contains("accept: */*\r\n"), "{head}");
        assert!(
            head.contains(&format!("host: 127.0.0.1:{port}\r\n")),
            "{head}"
        );
        assert_eq!(
            http_probe(&get("/err", &[]), "127.0.0.1", port, t).await,
            Outcome::Failure("HTTP probe failed with statuscode: 500".into())
        );
        // A Host header of the probe's replaces the default; others are sent as given.
        http_probe(
            &get("/ok", &[("Host", "example.test"), ("X-Custom", "1")]),
            "127.0.0.1",
            port,
            t,
        )
        .await;
        let head = seen.lock().unwrap().last().cloned().unwrap();
        assert!(head.contains("host: example.test\r\n"), "{head}");
        assert!(head.contains("x-custom: 1\r\n"), "{head}");
        // At most 10 KiB of body is read.
        let Outcome::Success(body) = http_probe(&get("/big", &[]), "127.0.0.1", port, t).await
        else {
            panic!("the big page passes")
        };
        assert_eq!(body.len(), MAX_BODY);
    }

    #[tokio::test]
    async fn redirects_are_followed_on_the_same_host_and_a_warning_elsewhere() {
        let (port, seen) = server(move |head| match head.split(' ').nth(1) {
            Some("/old") => response(302, "location: /new\r\n", ""),
            Some("/new") => response(200, "", "moved"),
            Some("/away") => response(301, "location: http://elsewhere.test/\r\n", "bye"),
            _ => response(404, "", ""),
        })
        .await;
        let t = Duration::from_secs(2);
        assert_eq!(
            http_probe(&get("/old", &[]), "127.0.0.1", port, t).await,
            Outcome::Success("moved".into())
        );
        assert_eq!(
            http_probe(&get("/away", &[]), "127.0.0.1", port, t).await,
            Outcome::Warning("Probe terminated redirects, Response body: bye".into())
        );
        assert!(
            seen.lock()
                .unwrap()
                .iter()
                .all(|h| !h.contains("elsewhere")),
            "the other host is not asked"
        );
    }

    #[tokio::test]
    async fn tcp_probes_and_refused_connections_give_upstreams_messages() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let t = Duration::from_secs(1);
        assert_eq!(
            tcp_probe("127.0.0.1", port, t).await,
            Outcome::Success(String::new())
        );
        drop(listener);
        assert_eq!(
            tcp_probe("127.0.0.1", port, t).await,
            Outcome::Failure(format!(
                "dial tcp 127.0.0.1:{port}: connect: connection refused"
            ))
        );
        let Outcome::Failure(message) = http_probe(&get("/", &[]), "127.0.0.1", port, t).await
        else {
            panic!("a closed port fails")
        };
        assert_eq!(
            message,
            format!(
                "Get \"http://127.0.0.1:{port}/\": dial tcp 127.0.0.1:{port}: connect: connection refused"
            )
        );
    }

    /// A runner whose command hangs past any timeout, or exits with the given code.
    struct Runner(Option<i32>);

    #[async_trait::async_trait]
    impl CommandRunner for Runner {
        async fn run_in_container(
            &self,
            _id: &ContainerId,
            _cmd: Vec<String>,
            timeout: Duration,
        ) -> Result<crate::runtime::ExecOutput, RuntimeError> {
            match self.0 {
                Some(code) => Ok(crate::runtime::ExecOutput {
                    stdout: b"out ".to_vec(),
                    stderr: b"err".to_vec(),
                    exit_code: code,
                }),
                None => Err(RuntimeError::DeadlineExceeded(
                    format!("{timeout:?}").into(),
                )),
            }
        }
    }

    #[tokio::test]
    async fn exec_probes_pass_on_exit_0_and_a_hung_command_fails_at_its_timeout() {
        let cmd = || vec!["sh".to_string(), "-c".into(), "sleep 100".into()];
        let t = Duration::from_secs(1);
        assert_eq!(
            exec_probe(&Runner(Some(0)), "containerd://c", cmd(), t).await,
            Ok(Outcome::Success("out err".into()))
        );
        assert_eq!(
            exec_probe(&Runner(Some(1)), "containerd://c", cmd(), t).await,
            Ok(Outcome::Failure("out err".into()))
        );
        assert_eq!(
            exec_probe(&Runner(None), "containerd://c", cmd(), t).await,
            Ok(Outcome::Failure(
                "command \"sh -c sleep 100\" timed out".into()
            ))
        );
    }

    #[test]
    fn ports_resolve_by_number_or_name() {
        let c = Container {
            name: "web".into(),
            ports: Some(vec![k8s_openapi::api::core::v1::ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(resolve_port(&IntOrString::Int(80), &c), Ok(80));
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &c),
            Ok(8080)
        );
        assert_eq!(
            resolve_port(&IntOrString::String("nope".into()), &c),
            Err("couldn't find port: nope in web".into())
        );
        assert!(resolve_port(&IntOrString::Int(70000), &c).is_err());
    }

    /// A gRPC health server on 127.0.0.1 whose reporter the test drives; aborted on drop of
    /// the handle.
    async fn grpc_server() -> (
        u16,
        tonic_health::server::HealthReporter,
        tokio::task::JoinHandle<()>,
    ) {
        let (reporter, service) = tonic_health::server::health_reporter();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let incoming = tokio_stream_from(listener);
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        (port, reporter, task)
    }

    fn tokio_stream_from(
        listener: tokio::net::TcpListener,
    ) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
        futures::stream::unfold(listener, |l| async move {
            let accepted = l.accept().await.map(|(s, _)| s);
            Some((accepted, l))
        })
    }

    #[tokio::test]
    async fn a_grpc_probe_passes_on_serving_and_fails_otherwise_with_upstreams_messages() {
        use tonic_health::ServingStatus;
        let (port, reporter, task) = grpc_server().await;
        let t = Duration::from_secs(1);
        assert_eq!(
            grpc_probe("127.0.0.1", port, "", t).await,
            Outcome::Success("service healthy".into())
        );
        reporter
            .set_service_status("db", ServingStatus::NotServing)
            .await;
        assert_eq!(
            grpc_probe("127.0.0.1", port, "db", t).await,
            Outcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
        reporter
            .set_service_status("db", ServingStatus::Serving)
            .await;
        assert_eq!(
            grpc_probe("127.0.0.1", port, "db", t).await,
            Outcome::Success("service healthy".into())
        );
        // A service the server does not know is NotFound, a failure.
        let Outcome::Failure(out) = grpc_probe("127.0.0.1", port, "nope", t).await else {
            panic!("an unknown service passed");
        };
        assert!(
            out.starts_with("error: health rpc probe failed: rpc error: code = NotFound"),
            "{out}"
        );
        // The server gone: connection refused, a failure naming the address.
        task.abort();
        let _ = task.await;
        let Outcome::Failure(out) = grpc_probe("127.0.0.1", port, "", t).await else {
            panic!("a probe of a stopped server passed");
        };
        assert!(
            out.ends_with(&format!(
                "dial tcp 127.0.0.1:{port}: connect: connection refused"
            )),
            "{out}"
        );
    }

    #[tokio::test]
    async fn a_grpc_probe_of_a_server_without_the_health_service_says_so() {
        // An HTTP/2 server that answers every RPC with Unimplemented: tonic's router with no
        // services.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let router =
            tonic::transport::Server::builder().add_routes(tonic::service::Routes::default());
        let incoming = tokio_stream_from(listener);
        let task = tokio::spawn(async move {
            let _ = router.serve_with_incoming(incoming).await;
        });
        let out = grpc_probe("127.0.0.1", port, "", Duration::from_secs(1)).await;
        task.abort();
        let Outcome::Failure(out) = out else {
            panic!("a server without the health service passed");
        };
        assert!(
            out.starts_with(
                "this server does not implement the grpc health protocol (grpc.health.v1.Health)"
            ),
            "{out}"
        );
    }

    #[tokio::test]
    async fn a_grpc_probe_of_a_silent_server_times_out() {
        // Accepts connections and never speaks: the HTTP/2 handshake never completes.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let out = grpc_probe("127.0.0.1", port, "", Duration::from_millis(300)).await;
        task.abort();
        let Outcome::Failure(out) = out else {
            panic!("a silent server passed");
        };
        assert!(out.starts_with("timeout: "), "{out}");
        assert!(out.contains("within 0.3s"), "{out}");
    }
}
