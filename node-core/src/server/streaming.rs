//! `/exec`, `/attach` and `/portForward` (upstream's streaming handlers): the container is found
//! in the pod, the runtime is asked for a streaming URL (CRI Exec / Attach / PortForward), and
//! the upgraded connection (SPDY or websocket, whichever subprotocol the client asks for) is
//! proxied to it as it is, as upstream's kubelet proxies to the runtime's streaming server.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use hyper_util::rt::TokioIo;
use tracing::debug;

use crate::pod_manager::PodManager;
use crate::runtime::{ContainerState, PodUid, Runtime, StreamingRuntime, Streams};

#[derive(Clone)]
struct Streaming {
    pods: Arc<PodManager>,
    runtime: Arc<dyn Runtime>,
    streams: Arc<dyn StreamingRuntime>,
    sessions: Arc<tokio::sync::Semaphore>,
    idle_timeout: std::time::Duration,
}

/// Bounds of the streaming sessions.
#[derive(Clone, Copy, Debug)]
pub struct StreamingLimits {
    /// Sessions open at once; one more is refused (429).
    pub max_sessions: usize,
    /// `streamingConnectionIdleTimeout`: a session with no traffic either way for this long
    /// is closed.
    pub idle_timeout: std::time::Duration,
}

impl Default for StreamingLimits {
    fn default() -> Self {
        StreamingLimits {
            max_sessions: 256,
            idle_timeout: std::time::Duration::from_secs(4 * 3600),
        }
    }
}

/// The router of `/exec`, `/attach` (GET and POST, with or without the pod's UID in the
/// path) and `/portForward`.
pub fn router(
    pods: Arc<PodManager>,
    runtime: Arc<dyn Runtime>,
    streams: Arc<dyn StreamingRuntime>,
    limits: StreamingLimits,
) -> Router {
    Router::new()
        .route("/exec/{namespace}/{pod}/{container}", any(exec))
        .route("/exec/{namespace}/{pod}/{uid}/{container}", any(exec_uid))
        .route("/attach/{namespace}/{pod}/{container}", any(attach))
        .route(
            "/attach/{namespace}/{pod}/{uid}/{container}",
            any(attach_uid),
        )
        .route("/portForward/{namespace}/{pod}", any(port_forward))
        .route(
            "/portForward/{namespace}/{pod}/{uid}",
            any(port_forward_uid),
        )
        .with_state(Streaming {
            pods,
            runtime,
            streams,
            sessions: Arc::new(tokio::sync::Semaphore::new(limits.max_sessions.max(1))),
            idle_timeout: limits.idle_timeout,
        })
}

fn fail(code: StatusCode, message: impl Into<String>) -> Response {
    (code, message.into()).into_response()
}

/// A failure before any streaming: its status and message.
type Failure = (StatusCode, String);

/// The query's values of `name`.
fn values<'a>(query: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    query
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn flag(query: &[(String, String)], name: &str) -> bool {
    values(query, name)
        .first()
        .is_some_and(|v| *v == "1" || v.eq_ignore_ascii_case("true"))
}

pub(crate) fn parse_query(raw: Option<String>) -> Vec<(String, String)> {
    raw.map(|q| url_pairs(&q)).unwrap_or_default()
}

fn url_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let decoded = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match decoded {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Upstream `remotecommand.NewOptions`: the streams asked for, by the API server's parameter
/// names (`input`, `output`, `error`, `tty`; the `stdin`/`stdout`/`stderr` spellings of the
/// pod's exec subresource are taken too); a TTY has no separate stderr.
fn streams_of(query: &[(String, String)]) -> Result<Streams, String> {
    let tty = flag(query, "tty");
    let streams = Streams {
        stdin: flag(query, "input") || flag(query, "stdin"),
        stdout: flag(query, "output") || flag(query, "stdout"),
        stderr: (flag(query, "error") || flag(query, "stderr")) && !tty,
        tty,
    };
    if !streams.stdin && !streams.stdout && !streams.stderr {
        return Err("you must specify at least 1 of stdin, stdout, stderr".into());
    }
    Ok(streams)
}

impl Streaming {
    /// Proxies within the session bounds.
    async fn proxy(&self, req: Request, url: &str) -> Response {
        let Ok(permit) = self.sessions.clone().try_acquire_owned() else {
            return fail(
                StatusCode::TOO_MANY_REQUESTS,
                "too many streaming sessions; try again later",
            );
        };
        proxy_with(req, url, Some(permit), self.idle_timeout).await
    }

    /// The pod (checking its UID when the path names one).
    fn pod(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<k8s_openapi::api::core::v1::Pod, Failure> {
        self.pods
            .pods()
            .into_iter()
            .find(|p| {
                p.metadata.namespace.as_deref() == Some(namespace)
                    && p.metadata.name.as_deref() == Some(name)
                    && uid.is_none_or(|u| p.metadata.uid.as_deref() == Some(u))
            })
            .ok_or_else(|| (StatusCode::NOT_FOUND, "pod does not exist".to_string()))
    }

    /// The running instance of `container` in the pod.
    async fn container(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
        container: &str,
    ) -> Result<crate::runtime::ContainerId, Failure> {
        let pod = self.pod(namespace, name, uid)?;
        let status = self
            .runtime
            .get_pod_status(&PodUid::of(&pod), name, namespace)
            .await
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        status
            .containers_named(container)
            .find(|c| c.state == ContainerState::Running)
            .map(|c| c.id.clone())
            .ok_or_else(|| {
                (
                    StatusCode::NOT_FOUND,
                    format!("container not found ({container:?})"),
                )
            })
    }
}

async fn exec_common(
    s: Streaming,
    (namespace, pod, uid, container): (String, String, Option<String>, String),
    query: Vec<(String, String)>,
    req: Request,
) -> Response {
    let streams = match streams_of(&query) {
        Ok(s) => s,
        Err(e) => return fail(StatusCode::BAD_REQUEST, e),
    };
    let command: Vec<String> = values(&query, "command")
        .into_iter()
        .map(str::to_string)
        .collect();
    if command.is_empty() {
        return fail(StatusCode::BAD_REQUEST, "missing command");
    }
    let id = match s
        .container(&namespace, &pod, uid.as_deref(), &container)
        .await
    {
        Ok(id) => id,
        Err(f) => return f.into_response(),
    };
    match s.streams.get_exec(&id, command, streams).await {
        Ok(url) => s.proxy(req, &url).await,
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn exec(
    State(s): State<Streaming>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    req: Request,
) -> Response {
    exec_common(s, (namespace, pod, None, container), parse_query(q), req).await
}

async fn exec_uid(
    State(s): State<Streaming>,
    Path((namespace, pod, uid, container)): Path<(String, String, String, String)>,
    RawQuery(q): RawQuery,
    req: Request,
) -> Response {
    exec_common(
        s,
        (namespace, pod, Some(uid), container),
        parse_query(q),
        req,
    )
    .await
}

async fn attach_common(
    s: Streaming,
    (namespace, pod, uid, container): (String, String, Option<String>, String),
    query: Vec<(String, String)>,
    req: Request,
) -> Response {
    let streams = match streams_of(&query) {
        Ok(s) => s,
        Err(e) => return fail(StatusCode::BAD_REQUEST, e),
    };
    let id = match s
        .container(&namespace, &pod, uid.as_deref(), &container)
        .await
    {
        Ok(id) => id,
        Err(f) => return f.into_response(),
    };
    match s.streams.get_attach(&id, streams).await {
        Ok(url) => s.proxy(req, &url).await,
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn attach(
    State(s): State<Streaming>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    req: Request,
) -> Response {
    attach_common(s, (namespace, pod, None, container), parse_query(q), req).await
}

async fn attach_uid(
    State(s): State<Streaming>,
    Path((namespace, pod, uid, container)): Path<(String, String, String, String)>,
    RawQuery(q): RawQuery,
    req: Request,
) -> Response {
    attach_common(
        s,
        (namespace, pod, Some(uid), container),
        parse_query(q),
        req,
    )
    .await
}

async fn port_forward_common(
    s: Streaming,
    (namespace, pod, uid): (String, String, Option<String>),
    query: Vec<(String, String)>,
    req: Request,
) -> Response {
    let pod = match s.pod(&namespace, &pod, uid.as_deref()) {
        Ok(p) => p,
        Err(f) => return f.into_response(),
    };
    // The websocket form names its ports in the query; SPDY names them per stream.
    let mut ports = Vec::new();
    for v in values(&query, "ports") {
        for p in v.split(',').filter(|p| !p.is_empty()) {
            match p.trim().parse::<u16>() {
                Ok(port) if port > 0 => ports.push(i32::from(port)),
                _ => {
                    return fail(
                        StatusCode::BAD_REQUEST,
                        format!("unable to parse {p:?} as a port"),
                    );
                }
            }
        }
    }
    match s.streams.get_port_forward(&PodUid::of(&pod), ports).await {
        Ok(url) => s.proxy(req, &url).await,
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn port_forward(
    State(s): State<Streaming>,
    Path((namespace, pod)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    req: Request,
) -> Response {
    port_forward_common(s, (namespace, pod, None), parse_query(q), req).await
}

async fn port_forward_uid(
    State(s): State<Streaming>,
    Path((namespace, pod, uid)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    req: Request,
) -> Response {
    port_forward_common(s, (namespace, pod, Some(uid)), parse_query(q), req).await
}

/// Proxies `req` (an upgrade request) to `target` (the runtime's streaming URL), as upstream's
/// upgrade-aware proxy: the request goes on with its headers to the target's path and query;
/// a `101 Switching Protocols` answer is passed back and the two upgraded connections are
/// joined; any other answer is passed back as it is.
pub async fn proxy_upgrade(req: Request, target: &str) -> Response {
    proxy_with(req, target, None, std::time::Duration::from_secs(4 * 3600)).await
}

async fn proxy_with(
    mut req: Request,
    target: &str,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    idle: std::time::Duration,
) -> Response {
    let uri: axum::http::Uri = match target.parse() {
        Ok(u) => u,
        Err(e) => return fail(StatusCode::INTERNAL_SERVER_ERROR, format!("{target}: {e}")),
    };
    if uri.scheme_str() != Some("http") {
        return fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{target}: only http streaming URLs are supported"),
        );
    }
    let Some(authority) = uri.authority().cloned() else {
        return fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{target}: no host"),
        );
    };
    let stream = match tokio::net::TcpStream::connect(authority.as_str()).await {
        Ok(s) => s,
        Err(e) => {
            return fail(
                StatusCode::BAD_GATEWAY,
                format!("the runtime's streaming server {authority}: {e}"),
            );
        }
    };
    // Interactive streams: every small write goes at once.
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(pair) => pair,
        Err(e) => return fail(StatusCode::BAD_GATEWAY, e.to_string()),
    };
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            debug!(error = %e, "streaming connection to the runtime ended");
        }
    });
    let client_upgrade = hyper::upgrade::on(&mut req);
    let mut out = axum::http::Request::builder()
        .method(req.method().clone())
        .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    for (name, value) in req.headers() {
        if name != header::HOST && name != header::AUTHORIZATION {
            out = out.header(name, value);
        }
    }
    out = out.header(header::HOST, authority.as_str());
    let Ok(out) = out.body(Body::empty()) else {
        return fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            "building the proxied request",
        );
    };
    debug!(%target, headers = ?out.headers(), "proxying a streaming request to the runtime");
    let mut answer = match sender.send_request(out).await {
        Ok(r) => r,
        Err(e) => return fail(StatusCode::BAD_GATEWAY, e.to_string()),
    };
    debug!(%target, status = %answer.status(), headers = ?answer.headers(), "the runtime's streaming server answered");
    if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (parts, body) = answer.into_parts();
        return Response::from_parts(parts, Body::new(body));
    }
    let runtime_upgrade = hyper::upgrade::on(&mut answer);
    tokio::spawn(async move {
        let _permit = permit;
        let (client, runtime) = match tokio::join!(client_upgrade, runtime_upgrade) {
            (Ok(c), Ok(r)) => (c, r),
            (c, r) => {
                debug!(
                    client = c.is_ok(),
                    runtime = r.is_ok(),
                    "a streaming upgrade failed"
                );
                return;
            }
        };
        debug!("streaming session joined");
        let (mut client, mut runtime) = (TokioIo::new(client), TokioIo::new(runtime));
        match copy_until_idle(&mut client, &mut runtime, idle).await {
            Ok((up, down)) => debug!(up, down, "a streaming session ended"),
            Err(e) => debug!(error = %e, "a streaming session ended with an error"),
        }
    });
    let mut response = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for (name, value) in answer.headers() {
        response = response.header(name, value);
    }
    response.body(Body::empty()).unwrap_or_else(|_| {
        fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            "building the upgrade answer",
        )
    })
}

/// Copies both ways until both sides finished or nothing moved for `idle`; the bytes each
/// way.
pub async fn copy_until_idle<A, B>(
    a: &mut A,
    b: &mut B,
    idle: std::time::Duration,
) -> std::io::Result<(u64, u64)>
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let (mut abuf, mut bbuf) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    let (mut a_open, mut b_open) = (true, true);
    let (mut up, mut down) = (0u64, 0u64);
    while a_open || b_open {
        tokio::select! {
            r = ar.read(&mut abuf), if a_open => match r? {
                0 => {
                    a_open = false;
                    let _ = bw.shutdown().await;
                }
                n => {
                    bw.write_all(&abuf[..n]).await?;
                    bw.flush().await?;
                    up += n as u64;
                }
            },
            r = br.read(&mut bbuf), if b_open => match r? {
                0 => {
                    b_open = false;
                    let _ = aw.shutdown().await;
                }
                n => {
                    aw.write_all(&bbuf[..n]).await?;
                    aw.flush().await?;
                    down += n as u64;
                }
            },
            () = tokio::time::sleep(idle) => {
                debug!(?idle, "a streaming session was idle too long; closing it");
                break;
            }
        }
    }
    Ok((up, down))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_options_as_upstream_reads_them() {
        let q = url_pairs("command=sh&command=-c&command=echo%20hi&output=1&error=1&tty=1");
        assert_eq!(values(&q, "command"), ["sh", "-c", "echo hi"]);
        let s = streams_of(&q).unwrap();
        assert!(
            s.stdout && s.tty && !s.stderr && !s.stdin,
            "a tty has no stderr"
        );
        let s = streams_of(&url_pairs("command=cat&input=1&output=1&error=1")).unwrap();
        assert!(s.stdin && s.stdout && s.stderr && !s.tty);
        assert!(streams_of(&url_pairs("command=ls")).is_err());
        assert_eq!(percent_decode("a%2Fb+c%zz"), "a/b c%zz");
    }
}

#[cfg(test)]
mod proxy_tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A runtime streaming server that answers 101 and then echoes what it reads, upper-cased.
    async fn upstream() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                s.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            s.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n",
            )
            .await
            .unwrap();
            let mut buf = [0u8; 64];
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    return;
                }
                s.write_all(&buf[..n].to_ascii_uppercase()).await.unwrap();
            }
        });
        format!("http://{addr}/exec/token")
    }

    #[tokio::test]
    async fn an_upgraded_connection_is_joined_to_the_runtimes() {
        let target = upstream().await;
        let app = Router::new().route(
            "/exec",
            any(move |req: Request| {
                let target = target.clone();
                async move { proxy_upgrade(req, &target).await }
            }),
        );
        let auth = crate::server::auth::Auth::new(
            "n",
            None,
            true,
            std::sync::Arc::new(crate::server::auth::AlwaysAllow),
        );
        let app = app.layer(axum::middleware::from_fn_with_state(
            auth,
            crate::server::auth::middleware,
        ));
        // Through the kubelet server's own listener: TLS, then HTTP/1.1.
        let dir = tempfile::tempdir().unwrap();
        let (pem, key) = crate::server::tls::self_signed("localhost", &[]).unwrap();
        std::fs::write(dir.path().join("c.crt"), &pem).unwrap();
        std::fs::write(dir.path().join("c.key"), key).unwrap();
        let tls = crate::server::tls::server_config(&crate::server::tls::TlsSettings {
            certificate: crate::server::tls::ServingCertificate::from_files(
                &dir.path().join("c.crt"),
                &dir.path().join("c.key"),
            )
            .unwrap(),
            ..Default::default()
        })
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(crate::server::serve::serve_tls(
            listener,
            std::sync::Arc::new(tls),
            app,
            crate::server::serve::ServerLimits::default(),
        ));
        let mut roots = rustls::RootCertStore::empty();
        for cert in crate::server::tls::load_certs(&dir.path().join("c.crt")).unwrap() {
            roots.add(cert).unwrap();
        }
        #[allow(deprecated)]
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut c = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client))
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
            .unwrap();
        c.write_all(
            b"POST /exec HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n",
        )
        .await
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            c.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("x-stream-protocol-version: v4.channel.k8s.io")
        );
        c.write_all(b"hello").await.unwrap();
        let mut echoed = [0u8; 5];
        tokio::time::timeout(std::time::Duration::from_secs(5), c.read_exact(&mut echoed))
            .await
            .expect("bytes flow both ways")
            .unwrap();
        assert_eq!(&echoed, b"HELLO");
    }
}

#[cfg(test)]
mod idle_tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_session_quiet_for_the_idle_timeout_is_closed_and_traffic_keeps_it_open() {
        let (mut a, mut a_peer) = tokio::io::duplex(64);
        let (mut b, mut b_peer) = tokio::io::duplex(64);
        let session = tokio::spawn(async move {
            copy_until_idle(&mut a, &mut b, std::time::Duration::from_secs(10)).await
        });
        for _ in 0..3 {
            tokio::time::sleep(std::time::Duration::from_secs(8)).await;
            a_peer.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            b_peer.read_exact(&mut one).await.unwrap();
        }
        assert!(
            !session.is_finished(),
            "24 s of traffic every 8 s: still open"
        );
        tokio::time::sleep(std::time::Duration::from_secs(11)).await;
        let (up, down) = session.await.unwrap().unwrap();
        assert_eq!((up, down), (3, 0));
    }
}
