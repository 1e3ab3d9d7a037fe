//! Test and benchmark harness (feature `harness`): a real containerd with the locally built
//! images, and builders of CRI objects.
//!
//! [`shared`] starts one managed containerd per process (per test binary), on a thread of its
//! own that lives as long as the process, so every `#[tokio::test]` (each with its own runtime)
//! can connect its own [`CriClient`] to it. containerd dies with the process. Directories left
//! by earlier runs whose process is gone are cleaned up (mounts detached, processes killed)
//! before a new one starts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use node_images::oci::{DEFAULT_BUSYBOX_PATH, LocalImages};

use crate::client::{ClientOptions, CriClient};
use crate::containerd::{ManagedContainerd, ManagedContainerdConfig, PodNetwork};
use crate::cri;
use crate::error::{CriError, Result};

/// Prefix of the harness's directories under `/tmp` (short: unix socket paths are limited).
const DIR_PREFIX: &str = "na-";

/// The label every harness-made sandbox and container carries, for clean-up.
pub const HARNESS_LABEL: &str = "node-agent.test/harness";

/// A containerd shared by the tests of this process.
#[derive(Debug)]
pub struct SharedContainerd {
    endpoint: String,
    dir: PathBuf,
    network: PodNetwork,
}

impl SharedContainerd {
    /// The CRI endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its pod network.
    pub fn network(&self) -> &PodNetwork {
        &self.network
    }

    /// A new client (for the caller's tokio runtime).
    pub fn client(&self) -> CriClient {
        // The endpoint was accepted when containerd started, so it parses.
        CriClient::connect_lazy(&self.endpoint, &self.endpoint, ClientOptions::default())
            .unwrap_or_else(|e| panic!("harness endpoint {}: {e}", self.endpoint))
    }
}

/// The containerd shared by this process's tests, started on first use.
///
/// # Panics
/// When containerd cannot be started: the tests that need it cannot run, and the panic message
/// says why (missing binary, not root, log tail).
pub fn shared() -> &'static SharedContainerd {
    static SHARED: OnceLock<SharedContainerd> = OnceLock::new();
    SHARED.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("harness-containerd".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(format!("cannot build a tokio runtime: {e}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let config = match test_config("shared") {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let dir = config.dir.clone();
                    let network = config.network.clone();
                    match ManagedContainerd::start(config).await {
                        Ok(containerd) => {
                            let _ = tx.send(Ok(SharedContainerd {
                                endpoint: containerd.endpoint(),
                                dir,
                                network,
                            }));
                            // This thread spawned containerd and must outlive every test: it
                            // dies with it (PR_SET_PDEATHSIG).
                            std::future::pending::<()>().await;
                            drop(containerd);
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                        }
                    }
                });
            })
            .unwrap_or_else(|e| panic!("cannot spawn the harness thread: {e}"));
        match rx.recv() {
            Ok(Ok(shared)) => shared,
            Ok(Err(reason)) => panic!("the test harness could not start containerd: {reason}"),
            Err(_) => panic!("the test harness thread died while starting containerd"),
        }
    })
}

/// A configuration for a private managed containerd in a fresh `/tmp/na-<pid>-<n>-<tag>`
/// directory, with the locally built images in its images directory.
pub fn test_config(tag: &str) -> Result<ManagedContainerdConfig> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    clean_stale_dirs();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = PathBuf::from(format!("/tmp/{DIR_PREFIX}{}-{n}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = ManagedContainerdConfig::new(&dir);
    config.network = PodNetwork::derived(&dir.display().to_string());
    config.images_dir = Some(dir.join("images"));
    config.log_level = "info".into();
    LocalImages::with_defaults(dir.join("images"), DEFAULT_BUSYBOX_PATH)
        .write()
        .map_err(CriError::LocalImages)?;
    Ok(config)
}

fn pid_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes harness directories of processes that are gone: detaches mounts beneath them, kills
/// processes (shims) that name them, deletes them.
pub fn clean_stale_dirs() {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(DIR_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if pid == std::process::id() as i32 || pid_alive(pid) {
            continue;
        }
        let dir = entry.path();
        kill_processes_naming(&dir);
        kill_cgroup_tree(pid);
        detach_mounts_under(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        let bridge = PodNetwork::derived(&dir.display().to_string()).bridge;
        let _ = std::process::Command::new("ip")
            .args(["link", "delete", &bridge])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The cgroup parent of the harness's pods in process `pid`: containers left by a test that
/// failed before cleaning up are found (and killed) through it.
fn cgroup_parent(pid: u32) -> String {
    format!("/node-agent-test/{pid}")
}

/// Kills every process in the cgroups of process `pid`'s harness pods and removes the cgroups,
/// in every mounted hierarchy (cgroup v1 controllers and the v2 unified tree).
fn kill_cgroup_tree(pid: i32) {
    let rel = cgroup_parent(pid as u32);
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        roots.extend(entries.flatten().map(|e| e.path()));
    }
    for root in roots {
        let top = root.join(rel.trim_start_matches('/'));
        if top.is_dir() {
            kill_and_remove_cgroup(&top);
        }
    }
}

fn kill_and_remove_cgroup(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                kill_and_remove_cgroup(&e.path());
            }
        }
    }
    for _ in 0..50 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<i32> = procs
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if pids.is_empty() {
            break;
        }
        for p in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir(dir);
}

fn kill_processes_naming(dir: &Path) {
    let needle = dir.display().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The node's memory available as the kubelet computes it on cgroup v1 (this machine's
/// hierarchy): MemTotal minus the root memory cgroup's working set (usage minus inactive file
/// pages). For eviction tests and benchmarks, which set thresholds relative to it.
pub fn node_memory_available() -> u64 {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{p}: {e}"));
    let total = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .expect("MemTotal in /proc/meminfo")
        * 1024;
    let usage: u64 = read("/sys/fs/cgroup/memory/memory.usage_in_bytes")
        .trim()
        .parse()
        .expect("the root memory cgroup's usage");
    let inactive = read("/sys/fs/cgroup/memory/memory.stat")
        .lines()
        .find_map(|l| l.strip_prefix("total_inactive_file "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("total_inactive_file in the root memory.stat");
    total.saturating_sub(usage.saturating_sub(inactive))
}

/// Detaches every mount at or below `dir`, deepest first (what a test's kubelet left: its
/// shared root directory, volume tmpfs and subPath binds).
pub fn detach_mounts_under(dir: &Path) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    // Deepest first.
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A unique-enough suffix for object names in one test run.
pub fn unique(name: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A pod sandbox config for pod `namespace/name` with pod networking, carrying
/// [`HARNESS_LABEL`] and the given extra labels.
pub fn sandbox_config(
    namespace: &str,
    name: &str,
    log_dir: &Path,
    labels: &[(&str, &str)],
) -> cri::PodSandboxConfig {
    let mut all: HashMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all.insert(HARNESS_LABEL.into(), "true".into());
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: namespace.into(),
            attempt: 0,
        }),
        hostname: name.chars().take(63).collect(),
        log_directory: log_dir.display().to_string(),
        labels: all,
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: format!("{}/{name}", cgroup_parent(std::process::id())),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Pod as i32,
                    pid: cri::NamespaceMode::Container as i32,
                    ipc: cri::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A busybox container running `command`, logging to `<name>.log` in the sandbox's log
/// directory.
pub fn busybox_container(
    name: &str,
    command: &[&str],
    labels: &[(&str, &str)],
) -> cri::ContainerConfig {
    let mut all: HashMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all.insert(HARNESS_LABEL.into(), "true".into());
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(crate::client::image_spec(node_images::oci::BUSYBOX_IMAGE)),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        labels: all,
        linux: Some(cri::LinuxContainerConfig::default()),
        ..Default::default()
    }
}

/// Stops and removes every sandbox carrying [`HARNESS_LABEL`] whose pod name starts with
/// `prefix` (with its containers).
pub async fn remove_pods(client: &CriClient, prefix: &str) -> Result<()> {
    let sandboxes = client
        .list_pod_sandbox(Some(cri::PodSandboxFilter {
            label_selector: [(HARNESS_LABEL.to_string(), "true".to_string())].into(),
            ..Default::default()
        }))
        .await?;
    for s in sandboxes {
        if s.metadata
            .as_ref()
            .is_some_and(|m| m.name.starts_with(prefix))
        {
            client.stop_pod_sandbox(&s.id).await?;
            client.remove_pod_sandbox(&s.id).await?;
        }
    }
    Ok(())
}

/// Polls `check` every 50 ms until it returns `Some`, or fails after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A private OCI distribution registry (`docker-registry`) on a free port of 127.0.0.1, with
/// optional htpasswd basic auth. Killed when dropped.
#[derive(Debug)]
pub struct Registry {
    host: String,
    dir: PathBuf,
    child: std::process::Child,
    credentials: Option<(String, String)>,
}

impl Registry {
    /// Starts a registry; with `credentials`, pulls and pushes need them.
    pub fn start(
        tag: &str,
        credentials: Option<(&str, &str)>,
    ) -> std::result::Result<Self, String> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        clean_stale_dirs();
        let dir = PathBuf::from(format!(
            "/tmp/{DIR_PREFIX}{}-r{}-{tag}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data"))
            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("finding a free port: {e}"))?
            .port();
        let host = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
            dir.join("data").display()
        );
        if let Some((user, password)) = credentials {
            let out = std::process::Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .map_err(|e| format!("running htpasswd (apache2-utils): {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "htpasswd failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            std::fs::write(dir.join("htpasswd"), &out.stdout)
                .map_err(|e| format!("writing htpasswd: {e}"))?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: node-agent-test\n    path: {}\n",
                dir.join("htpasswd").display()
            ));
        }
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, config)
            .map_err(|e| format!("writing registry config: {e}"))?;
        let log = std::fs::File::create(dir.join("registry.log"))
            .map_err(|e| format!("registry log: {e}"))?;
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("running docker-registry (package docker-registry): {e}"))?;
        let registry = Registry {
            host,
            dir,
            child,
            credentials: credentials.map(|(u, p)| (u.to_string(), p.to_string())),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if std::time::Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(registry.dir.join("registry.log")).unwrap_or_default();
                return Err(format!(
                    "docker-registry did not listen on {} in 20s: {log}",
                    registry.host
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(registry)
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Pushes an OCI archive as `<host>/<name>` (e.g. `library/busybox:1.35`) with skopeo.
    pub fn push(&self, archive: &Path, name: &str) -> std::result::Result<String, String> {
        let reference = format!("{}/{name}", self.host);
        let mut command = std::process::Command::new("skopeo");
        command
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://{reference}"));
        if let Some((u, p)) = &self.credentials {
            command.arg("--dest-creds").arg(format!("{u}:{p}"));
        }
        let out = command
            .output()
            .map_err(|e| format!("running skopeo (package skopeo): {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "skopeo copy to {reference}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(reference)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
