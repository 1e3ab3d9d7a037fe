//! The kubelet server under load, as the API server and Prometheus use it: the kubelet binary
//! runs 110 static pods on a containerd started for the run, and its HTTPS server (the
//! self-signed certificate, anonymous requests allowed, AlwaysAllow) is asked
//!
//! - `/pods` and `/stats/summary` over 4 keep-alive connections for 5 s each: requests per
//!   second and the 50th and 99th percentile latency, as ratios to `/healthz` over the same
//!   connections (the server's own floor);
//! - `/containerLogs?tailLines=100` of a 100 MB log and of a 100 KB one: the latency, and the
//!   bytes the kubelet read per request (`rchar` of `/proc/<kubelet>/io`), which must not
//!   grow with the file;
//! - exec round trips (`echo`, websocket `v4.channel.k8s.io`, until the exit status) through
//!   the kubelet's `/exec` proxy, against the same exec made straight at containerd's
//!   streaming server with CRI `Exec`.
//!
//! A measurement of its own kind (rates and percentiles over fixed windows), run as a plain
//! `harness = false` program of the `kubelet` package so that Cargo builds the release binary.
//!
//! `cargo bench -p kubelet --bench server` (`SERVER_BENCH_PODS` changes the 110 pods).

#![allow(missing_docs)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use node_cri::{CriClient, ManagedContainerd, cri};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

const KUBELET: &str = env!("CARGO_BIN_EXE_kubelet");
const NODE: &str = "bench-node";

fn manifest(i: usize) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: srv-{i}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: main\n    image: docker.io/library/busybox:1.35\n    command: [\"sleep\", \"3600\"]\n"
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn running(client: &CriClient) -> Vec<cri::Container> {
    client
        .list_containers(Some(cri::ContainerFilter {
            state: Some(cri::ContainerStateValue {
                state: cri::ContainerState::ContainerRunning as i32,
            }),
            ..Default::default()
        }))
        .await
        .unwrap_or_default()
}

/// The TLS client of the kubelet's self-signed certificate.
fn tls_connector(cert: &Path) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).expect("kubelet.crt") {
        roots.add(c.expect("a certificate")).expect("a root");
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn tls(connector: &tokio_rustls::TlsConnector, port: u16) -> Tls {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the kubelet");
    tcp.set_nodelay(true).ok();
    connector
        .connect(ServerName::try_from(NODE).unwrap(), tcp)
        .await
        .expect("TLS handshake with the kubelet")
}

/// A keep-alive HTTP/1.1 connection to the kubelet server.
async fn connection(
    connector: &tokio_rustls::TlsConnector,
    port: u16,
) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls(connector, port).await))
            .await
            .expect("HTTP handshake");
    tokio::spawn(conn);
    sender
}

async fn get(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    path: &str,
) -> (u16, Bytes) {
    sender.ready().await.expect("the connection stays open");
    let request = hyper::Request::get(path)
        .header("host", NODE)
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.expect("a response");
    let code = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    (code, body)
}

struct Load {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

impl std::fmt::Display for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
            self.per_second,
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3
        )
    }
}

/// `path` asked over `conns` keep-alive connections for `window`.
async fn load(
    connector: &tokio_rustls::TlsConnector,
    port: u16,
    path: &str,
    conns: usize,
    window: Duration,
) -> Load {
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let mut sender = connection(connector, port).await;
        let path = path.to_string();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let start = Instant::now();
            while start.elapsed() < window {
                let t = Instant::now();
                let (code, body) = get(&mut sender, &path).await;
                assert_eq!(code, 200, "{path}: {}", String::from_utf8_lossy(&body));
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("a load task"));
    }
    all.sort();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Load {
        per_second: all.len() as f64 / window.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

/// Bytes the process has read so far (`rchar`).
fn rchar(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rchar for process {pid}"))
}

/// Appends `bytes` of CRI log lines to `path`.
fn fill_log(path: &Path, bytes: usize) {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("the container's log");
    let mut chunk = Vec::with_capacity(1 << 20);
    let mut written = 0;
    let mut n = 0u64;
    while written < bytes {
        chunk.clear();
        while chunk.len() < (1 << 20) && written + chunk.len() < bytes {
            writeln!(
                chunk,
                "2026-01-01T00:00:00.{:09}Z stdout F line {n:010} of the benchmark's log, padded to about a hundred bytes",
                n % 1_000_000_000
            )
            .unwrap();
            n += 1;
        }
        file.write_all(&chunk).expect("write the log");
        written += chunk.len();
    }
}

/// One exec over a websocket on `stream` at `path` (`v4.channel.k8s.io`): the stdout it
/// printed, once the exit status came and the stream closed.
async fn exec_once<S>(stream: S, host: &str, path: &str) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{host}{path}")
        .into_client_request()
        .expect("a websocket request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v4.channel.k8s.io".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("websocket handshake");
    let mut stdout = String::new();
    while let Some(message) = ws.next().await {
        match message {
            Ok(Message::Binary(data)) if data.first() == Some(&1) => {
                stdout.push_str(&String::from_utf8_lossy(&data[1..]));
            }
            Ok(Message::Close(_)) | Err(_) => break,
            _ => {}
        }
    }
    let _ = ws.close(None).await;
    stdout
}

/// The kubelet process, stopped with SIGTERM however the benchmark ends.
struct Kubelet(std::process::Child);

impl Drop for Kubelet {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

fn main() {
    let pods = std::env::var("SERVER_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(110usize);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let containerd = rt.block_on(async {
        let config = node_cri::harness::test_config("server-bench").expect("harness config");
        ManagedContainerd::start(config)
            .await
            .unwrap_or_else(|e| panic!("cannot start the managed containerd: {e}"))
    });
    let client = containerd.client().clone();
    let dir = containerd.config().dir.clone();
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).expect("manifest dir");
    let port = free_port();
    let config = dir.join("kubelet.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
             staticPodPath: {}\ncontainerRuntimeEndpoint: {}\nhealthzPort: 0\n\
             address: 127.0.0.1\nport: {port}\n\
             podLogsDir: {}\ncgroupRoot: /node-agent-test/{}\nmaxPods: {pods}\n\
             containerLogMaxSize: 1Gi\n\
             authentication:\n  anonymous:\n    enabled: true\n  webhook:\n    enabled: false\n\
             authorization:\n  mode: AlwaysAllow\n",
            manifests.display(),
            containerd.endpoint(),
            dir.join("logs").display(),
            std::process::id(),
        ),
    )
    .expect("kubelet config");
    let cert_dir = dir.join("pki");
    let kubelet = Command::new(KUBELET)
        // Memory only: the default disk thresholds would put the node under DiskPressure
        // on a build machine whose disk is nearly full.
        .arg("--eviction-hard=memory.available<100Mi")
        .arg("--config")
        .arg(&config)
        .arg("--root-dir")
        .arg(dir.join("root"))
        .arg("--cert-dir")
        .arg(&cert_dir)
        .args(["--hostname-override", NODE])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("run the kubelet");
    let kubelet = Kubelet(kubelet);
    for i in 0..pods {
        std::fs::write(manifests.join(format!("srv-{i}.yaml")), manifest(i))
            .expect("write manifest");
    }
    let t = Instant::now();
    let containers = rt.block_on(async {
        loop {
            let c = running(&client).await;
            if c.len() >= pods {
                return c;
            }
            assert!(
                t.elapsed() < Duration::from_secs(300),
                "the {pods} pods did not all run within 5 minutes"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // Let the start-up's aftermath pass.
    std::thread::sleep(Duration::from_secs(5));
    let connector = tls_connector(&cert_dir.join("kubelet.crt"));
    let pid = kubelet.0.id();

    rt.block_on(async {
        let window = Duration::from_secs(5);
        let healthz = load(&connector, port, "/healthz", 4, window).await;
        let pods_load = load(&connector, port, "/pods", 4, window).await;
        let summary = load(&connector, port, "/stats/summary", 4, window).await;
        println!("server: {pods} pods, 4 keep-alive HTTPS connections, 5 s each");
        // Where a summary's time goes: the CRI stats calls, from the kubelet's own metrics.
        let mut sender = connection(&connector, port).await;
        let (_, metrics) = get(&mut sender, "/metrics").await;
        let metrics = String::from_utf8_lossy(&metrics);
        for operation in ["list_podsandbox_stats", "list_container_stats", "image_fs_info"] {
            let value = |suffix: &str| {
                metrics
                    .lines()
                    .find(|l| {
                        l.starts_with(&format!(
                            "kubelet_runtime_operations_duration_seconds_{suffix}{{operation_type=\"{operation}\"}}"
                        ))
                    })
                    .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            let (sum, count) = (value("sum"), value("count"));
            println!(
                "server: CRI {operation}: {count} calls, mean {:.1} ms",
                sum / count.max(1.0) * 1e3
            );
        }
        println!("server: /healthz        {healthz}");
        for (name, l) in [("/pods", &pods_load), ("/stats/summary", &summary)] {
            println!(
                "server: {name:<15} {l} (throughput ratio to /healthz {:.3}, p99 ratio {:.1})",
                l.per_second / healthz.per_second,
                l.p99.as_secs_f64() / healthz.p99.as_secs_f64()
            );
        }

        // Container logs: tailLines=100 of a 100 MB log and of a 100 KB one.
        let log_of = |name: &str| {
            let c = containers
                .iter()
                .find(|c| c.labels.get("io.kubernetes.pod.name").map(String::as_str) == Some(name))
                .unwrap_or_else(|| panic!("no container of {name}"));
            c.id.clone()
        };
        let mut sizes = Vec::new();
        for (pod, bytes) in [("srv-0-bench-node", 100 << 20), ("srv-1-bench-node", 100 << 10)] {
            let status = client
                .container_status(&log_of(pod), false)
                .await
                .expect("container status");
            let path = PathBuf::from(status.log_path);
            fill_log(&path, bytes);
            sizes.push((pod, std::fs::metadata(&path).expect("the log").len()));
        }
        let mut tails = Vec::new();
        for (pod, size) in &sizes {
            let mut sender = connection(&connector, port).await;
            let path = format!("/containerLogs/default/{pod}/main?tailLines=100");
            let (code, body) = get(&mut sender, &path).await;
            assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
            assert_eq!(body.iter().filter(|b| **b == b'\n').count(), 100, "100 lines");
            let n = 50;
            let read_before = rchar(pid);
            let t = Instant::now();
            for _ in 0..n {
                get(&mut sender, &path).await;
            }
            let per_request = t.elapsed() / n;
            let read = (rchar(pid) - read_before) / u64::from(n);
            tails.push((per_request, read));
            println!(
                "server: /containerLogs tailLines=100 of a {:.1} MB log: {:.2} ms per request, {} bytes read per request ({:.5} of the file)",
                *size as f64 / 1e6,
                per_request.as_secs_f64() * 1e3,
                read,
                read as f64 / *size as f64
            );
        }
        println!(
            "server: tail of the 100 MB log vs the 100 KB log: time ratio {:.2}, bytes read ratio {:.2} (targets 1: the file's size does not matter)",
            tails[0].0.as_secs_f64() / tails[1].0.as_secs_f64(),
            tails[0].1 as f64 / tails[1].1.max(1) as f64
        );

        // Exec round trips: through the kubelet's proxy vs straight at containerd.
        let n = 30u32;
        let target = log_of("srv-2-bench-node");
        let t = Instant::now();
        for _ in 0..n {
            let out = exec_once(
                tls(&connector, port).await,
                NODE,
                "/exec/default/srv-2-bench-node/main?command=echo&command=hi&output=1",
            )
            .await;
            assert_eq!(out, "hi\n", "exec through the kubelet");
        }
        let proxied = n as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..n {
            let url = client
                .exec(cri::ExecRequest {
                    container_id: target.clone(),
                    cmd: vec!["echo".into(), "hi".into()],
                    stdout: true,
                    ..Default::default()
                })
                .await
                .expect("CRI Exec");
            let rest = url.strip_prefix("http://").expect("an http streaming URL");
            let (host, path) = rest.split_once('/').expect("a path");
            let tcp = tokio::net::TcpStream::connect(host).await.expect("streaming server");
            let out = exec_once(tcp, host, &format!("/{path}")).await;
            assert_eq!(out, "hi\n", "exec at containerd");
        }
        let direct = n as f64 / t.elapsed().as_secs_f64();
        println!(
            "server: exec round trips: {proxied:.1}/s through the kubelet (TLS, CRI Exec, proxy) vs {direct:.1}/s straight at containerd (ratio {:.3})",
            proxied / direct
        );
    });

    drop(kubelet);
    rt.block_on(async move {
        for s in client.list_pod_sandbox(None).await.unwrap_or_default() {
            let _ = client.stop_pod_sandbox(&s.id).await;
            let _ = client.remove_pod_sandbox(&s.id).await;
        }
        containerd.stop().await.expect("stop containerd");
    });
    node_cri::harness::detach_mounts_under(Path::new(&dir));
}
