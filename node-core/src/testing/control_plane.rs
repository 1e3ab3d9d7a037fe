//! A real Kubernetes control plane for tests: etcd + kube-apiserver and, on request,
//! kube-controller-manager and kube-scheduler, on private ports of 127.0.0.1 with a throwaway
//! CA, so that the node agent's API-facing code (registration, node status, lease, TLS
//! bootstrap, certificate rotation) meets the real API: its authentication, the Node
//! authorizer and RBAC, NodeRestriction, validation and the certificates API.
//!
//! [`ControlPlane::start`] (or [`ControlPlane::builder`]) makes a fresh directory
//! `$TMPDIR/nacp-<pid>-<n>` and in it:
//!
//! - `pki/`: a CA, the API server's serving certificate (SANs `127.0.0.1`, `localhost` and the
//!   in-cluster `kubernetes.default…` names), an admin client certificate (CN `admin`, O
//!   `system:masters`), the API server's kubelet client certificate (CN
//!   `kube-apiserver-kubelet-client`, O `system:masters`), the service account key pair, a
//!   front proxy CA and client (the aggregation layer, as kubeadm sets it up) and every client
//!   certificate issued later ([`ControlPlane::issue_client_cert`]). All keys are ECDSA
//!   P-256, made with `rcgen`.
//! - etcd with its data directory, listening on `http://127.0.0.1:<free port>` (client and
//!   peer), with `--unsafe-no-fsync` where that etcd has the flag (3.5 and later; Debian 12's
//!   3.4 does not).
//! - kube-apiserver as kubeadm configures it, adapted to tests: `--authorization-mode=Node,RBAC`,
//!   `--enable-admission-plugins=NodeRestriction`, `--enable-bootstrap-token-auth`, service
//!   account issuer [`SERVICE_ACCOUNT_ISSUER`], `--kubelet-preferred-address-types=Hostname`
//!   (test nodes are named `localhost`, so the API server reaches a kubelet on 127.0.0.1;
//!   there is no `--kubelet-certificate-authority`: the kubelet serves a self-signed
//!   certificate), `--endpoint-reconciler-type=none` (the `kubernetes` service would get
//!   127.0.0.1 as endpoint, which validation refuses), and an audit log at level `Metadata`
//!   for every request ([`ControlPlane::audit_events`], e.g. to count a kubelet's requests).
//! - with [`ControlPlaneBuilder::controller_manager`], kube-controller-manager with the CA as
//!   cluster signer (CSR approval and signing for TLS bootstrap and certificate rotation, with
//!   a configurable [`cluster_signing_duration`](ControlPlaneBuilder::cluster_signing_duration)),
//!   service account credentials, and the bootstrap signer and token cleaner controllers
//!   ([`DEFAULT_CONTROLLERS`]). Without it the harness makes the `default/default` service
//!   account itself, so that pods in `default` pass the ServiceAccount admission plugin.
//! - with [`ControlPlaneBuilder::scheduler`], kube-scheduler.
//! - one log file per component (`etcd.log`, `kube-apiserver.log`,
//!   `kube-controller-manager.log`, `kube-scheduler.log`), kubeconfig files
//!   (`admin.kubeconfig`, one per component and per issued identity), the audit policy and
//!   `audit.log`.
//!
//! Start-up waits for etcd's `/health`, the API server's `/readyz` (as admin), the
//! controller-manager's `/healthz` and then its controllers running (the `default` service
//! account appears), and the scheduler's `/healthz`, each for at most
//! [`ControlPlaneBuilder::ready_timeout`] (60 s by default: a first start on a small VM is
//! slow). A component that exits or does not get ready fails the start with the end of its
//! log. On a 2-core VM etcd + kube-apiserver are ready in about 4–6 s, with the
//! controller-manager in about 11–13 s.
//!
//! The harness re-exports the `kube` and `rcgen` it uses, and its clients are `kube` clients
//! (rustls with ring; the caller's code needs a Kubernetes version feature of `k8s-openapi`,
//! as every test of this workspace has).
//!
//! # Finding the binaries
//!
//! As controller-runtime's envtest does, a binary `NAME` (`etcd`, `kube-apiserver`,
//! `kube-controller-manager`, `kube-scheduler`, `kubectl`) is taken from, in this order:
//!
//! 1. the file named by `TEST_ASSET_<NAME>` (upper case, `-` as `_`, e.g.
//!    `TEST_ASSET_KUBE_APISERVER`), when set;
//! 2. the directory named by `KUBEBUILDER_ASSETS` (the upstream server binaries unpacked, or
//!    `setup-envtest use 1.36 -p path`);
//! 3. envtest's default directory `/usr/local/kubebuilder/bin`;
//! 4. `PATH` (where Debian's `etcd-server` package puts `/usr/bin/etcd`).
//!
//! Unlike envtest, a location that does not hold the binary falls through to the next one, so
//! etcd is found on `PATH` when `KUBEBUILDER_ASSETS` holds only the Kubernetes binaries. A
//! missing binary fails the start with [`ControlPlaneError::MissingBinary`], whose message says
//! which binary, where it was looked for and how to provide it:
//!
//! ```sh
//! dir=$(mktemp -d)
//! tar -xJf ../shared/k8s/kubernetes-server-v1.36.2-linux-amd64.tar.xz -C "$dir"
//! export KUBEBUILDER_ASSETS="$dir"      # the archive holds the binaries at its top level
//! apt-get install etcd-server            # or: bash examples/setup-debian.sh
//! ```
//!
//! # Ports, processes and clean-up
//!
//! Free ports are found by binding `127.0.0.1:0` and closing the socket before the component
//! binds it; another process may take the port in between, so a component that exits with
//! "address already in use" is started again on new ports (three attempts). Nothing listens
//! on or talks to any address but 127.0.0.1.
//!
//! The components are killed when the [`ControlPlane`] is dropped (also when a test panics and
//! unwinds) or [stopped](ControlPlane::stop). Where util-linux's `setpriv` is available they
//! are also started with a parent-death signal (SIGKILL), so they die with the thread that
//! started them even if the test process is killed: start the control plane from the test's
//! own thread (or a runtime worker that outlives it), not from a `spawn_blocking` thread,
//! whose exit would kill them. The directory is removed on drop, except when the thread is
//! panicking, [`ControlPlaneBuilder::keep_dir`] is set or the environment has
//! `CONTROL_PLANE_KEEP_DIR=1` ([`KEEP_DIR_VAR`]): then its path is printed to stderr for the
//! logs. Directories of earlier test processes that are gone are removed (and their
//! processes killed) when the next control plane starts.
//!
//! # Example
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use node_core::testing::control_plane::ControlPlane;
//!
//! let cp = ControlPlane::builder().controller_manager(true).start().await?;
//! let admin = cp.admin_client();
//! let node = cp.kubeconfig_for_client_cert("system:node:localhost", &["system:nodes"])?;
//! let (token, bootstrap_kubeconfig) = cp.create_bootstrap_token().await?;
//! # let _ = (admin, node, token, bootstrap_kubeconfig);
//! cp.stop().await;
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

pub use kube;
pub use rcgen;

/// The service account issuer the API server is started with.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The service cluster IP range the API server is started with.
pub const SERVICE_CLUSTER_IP_RANGE: &str = "10.96.0.0/12";

/// The controllers the controller-manager runs by default: all that are on by default, plus
/// the bootstrap signer and the token cleaner (as kubeadm).
pub const DEFAULT_CONTROLLERS: &str = "*,bootstrapsigner,tokencleaner";

/// The extra group of the bootstrap tokens [`ControlPlane::create_bootstrap_token`] makes, as
/// kubeadm's default node token.
pub const BOOTSTRAP_TOKEN_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";

/// The name of the archive of upstream server binaries this project's tests use.
pub const SERVER_ARCHIVE: &str = "kubernetes-server-v1.36.2-linux-amd64.tar.xz";

/// When set (to anything but empty or `0`), control planes keep their directory (logs,
/// certificates, audit log) when dropped, as [`ControlPlaneBuilder::keep_dir`] does.
pub const KEEP_DIR_VAR: &str = "CONTROL_PLANE_KEEP_DIR";

/// Prefix of the harness's directories under the temp directory.
const DIR_PREFIX: &str = "nacp-";

/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(100);

/// How many times a component is started on new ports after an "address already in use".
const PORT_ATTEMPTS: u32 = 3;

/// A result of the harness.
pub type Result<T, E = ControlPlaneError> = std::result::Result<T, E>;

/// Why the control plane (or a credential of it) could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlPlaneError {
    /// A binary was not found.
    #[error("{binary} not found (looked in {looked}); {hint}")]
    MissingBinary {
        /// The binary, e.g. `kube-apiserver`.
        binary: String,
        /// Where it was looked for.
        looked: String,
        /// How to provide it.
        hint: String,
    },

    /// A file or directory could not be used.
    #[error("{context} {}: {source}", path.display())]
    Io {
        /// What was being done.
        context: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A component could not be run at all.
    #[error("cannot run {component} ({}): {source}", binary.display())]
    Spawn {
        /// The component.
        component: &'static str,
        /// Its binary.
        binary: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A component exited before it was ready.
    #[error(
        "{component} exited with {status} before it was ready; its log {} ends with:\n{tail}",
        log.display()
    )]
    Exited {
        /// The component.
        component: &'static str,
        /// Its exit status.
        status: ExitStatus,
        /// Its log file.
        log: PathBuf,
        /// The last lines of its log.
        tail: String,
    },

    /// A component did not get ready in time.
    #[error(
        "{component} was not ready after {timeout:?} (last check: {last}); \
         its log {} ends with:\n{tail}",
        log.display()
    )]
    NotReady {
        /// The component.
        component: &'static str,
        /// How long the harness waited.
        timeout: Duration,
        /// The last readiness check's answer.
        last: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of its log.
        tail: String,
    },

    /// A certificate or key could not be made.
    #[error("making {what}: {source}")]
    Certificate {
        /// Which certificate or key.
        what: String,
        /// The underlying error.
        source: rcgen::Error,
    },

    /// A kubeconfig file could not be loaded into a client.
    #[error("kubeconfig {}: {source}", path.display())]
    Kubeconfig {
        /// The kubeconfig file.
        path: PathBuf,
        /// The underlying error.
        source: kube::config::KubeconfigError,
    },

    /// An API request failed.
    #[error("{context}: {source}")]
    Api {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: kube::Error,
    },

    /// The audit log could not be read.
    #[error("audit log {}, line {line}: {reason}", path.display())]
    AuditLog {
        /// The audit log.
        path: PathBuf,
        /// The line (1-based).
        line: usize,
        /// What is wrong with it.
        reason: String,
    },

    /// An argument of the harness is not usable.
    #[error("{0}")]
    Invalid(String),
}

fn io_error(
    context: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> ControlPlaneError {
    let path = path.to_path_buf();
    move |source| ControlPlaneError::Io {
        context,
        path,
        source,
    }
}

fn api_error(context: impl Into<String>) -> impl FnOnce(kube::Error) -> ControlPlaneError {
    let context = context.into();
    move |source| ControlPlaneError::Api { context, source }
}

fn cert_error(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> ControlPlaneError {
    let what = what.into();
    move |source| ControlPlaneError::Certificate { what, source }
}

// ----------------------------------------------------------------------------------------------
// Binaries

/// Finds binary `name` as envtest does, falling back to `PATH` (see the [module docs](self)).
pub fn find_binary(name: &str) -> Result<PathBuf> {
    let mut looked = Vec::new();
    let var = format!(
        "TEST_ASSET_{}",
        name.to_ascii_uppercase()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    );
    match std::env::var_os(&var) {
        Some(value) => {
            let path = PathBuf::from(value);
            if is_executable(&path) {
                return Ok(path);
            }
            looked.push(format!("${var} = {}", path.display()));
        }
        None => looked.push(format!("${var} (not set)")),
    }
    match std::env::var_os("KUBEBUILDER_ASSETS") {
        Some(dir) => {
            let path = Path::new(&dir).join(name);
            if is_executable(&path) {
                return Ok(path);
            }
            looked.push(format!(
                "$KUBEBUILDER_ASSETS = {}",
                Path::new(&dir).display()
            ));
        }
        None => looked.push("$KUBEBUILDER_ASSETS (not set)".into()),
    }
    let default = Path::new("/usr/local/kubebuilder/bin").join(name);
    if is_executable(&default) {
        return Ok(default);
    }
    looked.push("/usr/local/kubebuilder/bin".into());
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path_var) {
        let path = dir.join(name);
        if is_executable(&path) {
            return Ok(path);
        }
    }
    looked.push(format!("PATH = {}", path_var.to_string_lossy()));
    Err(ControlPlaneError::MissingBinary {
        binary: name.to_string(),
        looked: looked.join(", "),
        hint: install_hint(name),
    })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Where this project keeps the server binaries archive: `../shared/k8s/` beside the
/// workspace, as `/work/shared/k8s/` on the developers' machines.
fn server_archive() -> PathBuf {
    let beside_workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/k8s")
        .join(SERVER_ARCHIVE);
    match beside_workspace.canonicalize() {
        Ok(path) => path,
        Err(_) => Path::new("/work/shared/k8s").join(SERVER_ARCHIVE),
    }
}

fn install_hint(name: &str) -> String {
    if name == "etcd" {
        "install Debian's etcd-server package, which puts etcd in /usr/bin (`apt-get install \
         etcd-server`, or run `bash examples/setup-debian.sh` as root), or put an etcd binary \
         in $KUBEBUILDER_ASSETS"
            .into()
    } else {
        format!(
            "unpack the upstream server binaries and point KUBEBUILDER_ASSETS at them: `tar -xJf \
             {} -C DIR && export KUBEBUILDER_ASSETS=DIR` (the archive holds kube-apiserver, \
             kube-controller-manager, kube-scheduler and kubectl at its top level, so DIR \
             itself is the directory; see ../shared/k8s/README.md), or set TEST_ASSET_{} to \
             the binary",
            server_archive().display(),
            name.to_ascii_uppercase().replace('-', "_")
        )
    }
}

/// `setpriv` with `--pdeathsig`, if util-linux provides it.
fn setpriv() -> Option<&'static Path> {
    static SETPRIV: OnceLock<Option<PathBuf>> = OnceLock::new();
    SETPRIV
        .get_or_init(|| {
            let path = find_binary("setpriv").ok()?;
            let help = Command::new(&path)
                .arg("--help")
                .stdin(Stdio::null())
                .output()
                .ok()?;
            String::from_utf8_lossy(&help.stdout)
                .contains("--pdeathsig")
                .then_some(path)
        })
        .as_deref()
}

/// Whether this etcd has `--unsafe-no-fsync` (3.5 and later).
fn etcd_has_no_fsync(etcd: &Path) -> bool {
    Command::new(etcd)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|out| {
            String::from_utf8_lossy(&out.stdout).contains("unsafe-no-fsync")
                || String::from_utf8_lossy(&out.stderr).contains("unsafe-no-fsync")
        })
}

// ----------------------------------------------------------------------------------------------
// Directories, ports, processes

fn new_dir() -> Result<PathBuf> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    clean_stale_dirs();
    let dir = std::env::temp_dir().join(format!(
        "{DIR_PREFIX}{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("pki/clients"))
        .map_err(io_error("creating control plane directory", &dir))?;
    Ok(dir)
}

/// Removes the directories of earlier harness processes that are gone, killing what still runs
/// from them (a test process killed before it could drop its control plane, where `setpriv`
/// was not there to take its components along).
fn clean_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(DIR_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = entry.path();
        kill_processes_naming(&dir);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn kill_processes_naming(dir: &Path) {
    let needle = format!("{}/", dir.display());
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            // Our components' command lines name files in their harness directory.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A free TCP port of 127.0.0.1. The socket is closed before the caller's component binds the
/// port, so another process may take it in between: components are restarted on new ports
/// when that happens.
fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(io_error("finding a free port on", Path::new("127.0.0.1")))
}

/// A component process, killed when dropped.
struct Process {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    fn spawn(name: &'static str, binary: &Path, args: &[String], dir: &Path) -> Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).map_err(io_error("creating log", &log))?;
        let file2 = file.try_clone().map_err(io_error("opening log", &log))?;
        let mut command = match setpriv() {
            Some(setpriv) => {
                let mut c = Command::new(setpriv);
                c.args(["--pdeathsig", "KILL", "--"]).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        command
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(file2);
        // Everything is on 127.0.0.1; no proxy is wanted between the components.
        for var in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            command.env_remove(var);
        }
        let child = command.spawn().map_err(|source| ControlPlaneError::Spawn {
            component: name,
            binary: binary.to_path_buf(),
            source,
        })?;
        Ok(Process {
            name,
            child: Some(child),
            log,
        })
    }

    /// The exit status, if it exited.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    fn tail(&self) -> String {
        log_tail(&self.log, 15)
    }

    fn exited_error(&self, status: ExitStatus) -> ControlPlaneError {
        ControlPlaneError::Exited {
            component: self.name,
            status,
            log: self.log.clone(),
            tail: self.tail(),
        }
    }

    fn port_conflict(&self) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|l| l.contains("address already in use"))
    }

    /// Polls `probe` until it succeeds, failing when the process exits or `timeout` passes.
    async fn wait_ready<F, Fut>(&mut self, timeout: Duration, mut probe: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Err(self.exited_error(status));
            }
            let last = match tokio::time::timeout(Duration::from_secs(5), probe()).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => e,
                Err(_) => "no answer within 5s".to_string(),
            };
            if Instant::now() >= deadline {
                return Err(ControlPlaneError::NotReady {
                    component: self.name,
                    timeout,
                    last,
                    log: self.log.clone(),
                    tail: self.tail(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGKILL and reap.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILL, then reap without blocking the runtime.
    async fn kill_async(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io_error("writing", path))?;
    file.write_all(contents).map_err(io_error("writing", path))
}

/// A YAML double-quoted scalar (a JSON string is one).
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// A file name part made of `s`'s safe characters.
fn file_stem(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Random characters of `[a-z0-9]` (for bootstrap tokens; not for real secrets).
fn random_token_chars(n: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut out = String::with_capacity(n);
    while out.len() < n {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(COUNTER.fetch_add(1, Ordering::Relaxed));
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        let mut v = hasher.finish();
        for _ in 0..8 {
            out.push(ALPHABET[(v % ALPHABET.len() as u64) as usize] as char);
            v /= ALPHABET.len() as u64;
        }
    }
    out.truncate(n);
    out
}

/// A Go duration string for `d` (whole seconds).
fn go_duration(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

// ----------------------------------------------------------------------------------------------
// Certificates

/// A client certificate issued by the control plane's CA, with its files.
#[derive(Clone, Debug)]
pub struct ClientCertificate {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key (ECDSA P-256, PKCS#8), PEM.
    pub key_pem: String,
    /// The certificate's file.
    pub cert_path: PathBuf,
    /// The key's file (mode 0600).
    pub key_path: PathBuf,
}

/// The credentials of a kubeconfig file [`ControlPlane::write_kubeconfig`] writes.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// A client certificate and its key, by file.
    ClientCertificate {
        /// The certificate file (PEM).
        cert_path: PathBuf,
        /// The key file (PEM).
        key_path: PathBuf,
    },
    /// A bearer token (a bootstrap token, a service account token).
    Token(String),
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_path: PathBuf,
    key_path: PathBuf,
}

/// Validity of every certificate: from yesterday for ten years (clocks of the components and
/// the test agree; the margin only guards against a date change during a run).
fn validity(params: &mut CertificateParams) {
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let from = today.yesterday().unwrap_or(today);
    params.not_before =
        rcgen::date_time_ymd(from.year().into(), from.month() as u8, from.day() as u8);
    params.not_after = rcgen::date_time_ymd(
        i32::from(from.year()) + 10,
        from.month() as u8,
        from.day().min(28) as u8,
    );
}

fn subject(cn: &str, organizations: &[&str]) -> Result<DistinguishedName> {
    // rcgen keeps one value per attribute type; a second organization goes in as the same OID
    // through the custom type, which makes two O attributes in the subject.
    if organizations.len() > 2 {
        return Err(ControlPlaneError::Invalid(format!(
            "a certificate subject made by this harness holds at most two organizations \
             (groups), not {organizations:?}"
        )));
    }
    let mut dn = DistinguishedName::new();
    for (i, org) in organizations.iter().enumerate() {
        let ty = if i == 0 {
            DnType::OrganizationName
        } else {
            DnType::CustomDnType(vec![2, 5, 4, 10])
        };
        dn.push(ty, *org);
    }
    dn.push(DnType::CommonName, cn);
    Ok(dn)
}

impl Ca {
    /// A CA with subject `cn`, written as `<stem>.crt` / `<stem>.key` in `pki`.
    fn new(pki: &Path, stem: &str, cn: &str) -> Result<Self> {
        let key = KeyPair::generate().map_err(cert_error(format!("the key of CA {cn}")))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = subject(cn, &[])?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params);
        let cert = params
            .self_signed(&key)
            .map_err(cert_error(format!("CA {cn}")))?;
        let cert_pem = cert.pem();
        let cert_path = pki.join(format!("{stem}.crt"));
        let key_path = pki.join(format!("{stem}.key"));
        write_file(&cert_path, cert_pem.as_bytes(), 0o644)?;
        write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        Ok(Ca {
            issuer: Issuer::new(params, key),
            cert_pem,
            cert_path,
            key_path,
        })
    }

    /// Issues a certificate and writes `<stem>.crt` / `<stem>.key` in `dir`.
    fn issue(
        &self,
        dir: &Path,
        stem: &str,
        cn: &str,
        organizations: &[&str],
        server_names: &[&str],
    ) -> Result<ClientCertificate> {
        let key = KeyPair::generate().map_err(cert_error(format!("the key of {cn}")))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = subject(cn, organizations)?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if server_names.is_empty() {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        } else {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.subject_alt_names = server_names
                .iter()
                .map(|name| match name.parse() {
                    Ok(ip) => Ok(SanType::IpAddress(ip)),
                    Err(_) => (*name)
                        .try_into()
                        .map(SanType::DnsName)
                        .map_err(cert_error(format!("SAN {name}"))),
                })
                .collect::<Result<_>>()?;
        }
        params.use_authority_key_identifier_extension = true;
        validity(&mut params);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(cert_error(format!("the certificate of {cn}")))?;
        let issued = ClientCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_path: dir.join(format!("{stem}.crt")),
            key_path: dir.join(format!("{stem}.key")),
        };
        write_file(&issued.cert_path, issued.cert_pem.as_bytes(), 0o644)?;
        write_file(&issued.key_path, issued.key_pem.as_bytes(), 0o600)?;
        Ok(issued)
    }
}

// ----------------------------------------------------------------------------------------------
// Audit log

/// One event of the API server's audit log (level `Metadata`).
#[derive(Clone, Debug)]
pub struct AuditEvent {
    /// The authenticated user, e.g. `system:node:localhost`.
    pub user: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// The verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, …
    pub verb: String,
    /// The resource, e.g. `nodes` (none for non-resource URLs such as `/readyz`).
    pub resource: Option<String>,
    /// The subresource, e.g. `status`.
    pub subresource: Option<String>,
    /// The API group (`""` for the core group).
    pub api_group: Option<String>,
    /// The namespace.
    pub namespace: Option<String>,
    /// The object's name.
    pub name: Option<String>,
    /// The request URI, with its query.
    pub request_uri: String,
    /// The stage: `ResponseComplete` for the events [`ControlPlane::audit_events`] returns.
    pub stage: String,
    /// The HTTP status code of the response.
    pub code: Option<u16>,
    /// The client's user agent.
    pub user_agent: Option<String>,
    /// When the API server received the request.
    pub received: Option<jiff::Timestamp>,
    /// The whole event as logged.
    pub raw: serde_json::Value,
}

impl AuditEvent {
    fn from_json(raw: serde_json::Value) -> Self {
        let s = |v: &serde_json::Value| v.as_str().map(str::to_string);
        let object = &raw["objectRef"];
        AuditEvent {
            user: s(&raw["user"]["username"]).unwrap_or_default(),
            groups: raw["user"]["groups"]
                .as_array()
                .map(|g| g.iter().filter_map(s).collect())
                .unwrap_or_default(),
            verb: s(&raw["verb"]).unwrap_or_default(),
            resource: s(&object["resource"]),
            subresource: s(&object["subresource"]),
            api_group: s(&object["apiGroup"]),
            namespace: s(&object["namespace"]),
            name: s(&object["name"]),
            request_uri: s(&raw["requestURI"]).unwrap_or_default(),
            stage: s(&raw["stage"]).unwrap_or_default(),
            code: raw["responseStatus"]["code"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok()),
            user_agent: s(&raw["userAgent"]),
            received: raw["requestReceivedTimestamp"]
                .as_str()
                .and_then(|t| t.parse().ok()),
            raw,
        }
    }
}

// ----------------------------------------------------------------------------------------------
// The control plane

/// Options of a [`ControlPlane`]; [`start`](Self::start) starts it.
#[derive(Clone, Debug)]
pub struct ControlPlaneBuilder {
    controller_manager: bool,
    scheduler: bool,
    scheduler_args: Vec<String>,
    cluster_signing_duration: Duration,
    ready_timeout: Duration,
    apiserver_args: Vec<String>,
    controller_manager_args: Vec<String>,
    controllers: String,
    keep_dir: bool,
}

impl Default for ControlPlaneBuilder {
    fn default() -> Self {
        ControlPlaneBuilder {
            controller_manager: false,
            scheduler: false,
            scheduler_args: Vec::new(),
            cluster_signing_duration: Duration::from_secs(24 * 3600),
            ready_timeout: Duration::from_secs(60),
            apiserver_args: Vec::new(),
            controller_manager_args: Vec::new(),
            controllers: DEFAULT_CONTROLLERS.into(),
            keep_dir: std::env::var_os(KEEP_DIR_VAR).is_some_and(|v| !v.is_empty() && v != "0"),
        }
    }
}

impl ControlPlaneBuilder {
    /// Also start kube-controller-manager (CSR approval and signing, service accounts and the
    /// `kube-root-ca.crt` configMap, bootstrap signer, token cleaner, garbage collection,
    /// workload controllers, node lifecycle). Off by default.
    pub fn controller_manager(mut self, on: bool) -> Self {
        self.controller_manager = on;
        self
    }

    /// The controller-manager's `--cluster-signing-duration`: the longest validity of the
    /// certificates it signs (24 h by default; whole seconds, at least 1 s).
    ///
    /// The flag has no lower bound (1 s is accepted), unlike a CSR's `spec.expirationSeconds`,
    /// which the API refuses under 600 s and which cannot lengthen this. For a duration under
    /// 8 h the signer makes `NotBefore = now − 5 min` and `NotAfter = now + duration`: with a
    /// short duration, a certificate manager that rotates at 70–90 % of the whole validity
    /// (backdate included, as the kubelet's does) rotates almost at once. E.g. 10 minutes give
    /// 15 minutes of validity and a rotation 5.5–8.5 minutes after signing; 1 minute makes
    /// the deadline fall between 0.8 minutes before and 0.4 minutes after signing.
    pub fn cluster_signing_duration(mut self, duration: Duration) -> Self {
        self.cluster_signing_duration = duration;
        self
    }

    /// How long each component may take to get ready (60 s by default).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// An extra kube-apiserver flag (e.g. `--feature-gates=…`); it comes after the harness's
    /// own, so it overrides a flag given twice.
    pub fn apiserver_arg(mut self, arg: impl Into<String>) -> Self {
        self.apiserver_args.push(arg.into());
        self
    }

    /// Also start kube-scheduler, for pods that do not name their node. Off by default.
    pub fn scheduler(mut self, on: bool) -> Self {
        self.scheduler = on;
        self
    }

    /// An extra kube-scheduler flag, after the harness's own.
    pub fn scheduler_arg(mut self, arg: impl Into<String>) -> Self {
        self.scheduler_args.push(arg.into());
        self
    }

    /// The controller-manager's `--controllers` (default [`DEFAULT_CONTROLLERS`]). Fewer
    /// controllers start faster: e.g. `"csrapproving,csrsigning,serviceaccount,\
    /// serviceaccount-token"` is enough for TLS bootstrap and service accounts. The list must
    /// include `serviceaccount`: start-up waits for the `default` service account.
    pub fn controllers(mut self, controllers: impl Into<String>) -> Self {
        self.controllers = controllers.into();
        self
    }

    /// An extra kube-controller-manager flag, after the harness's own.
    pub fn controller_manager_arg(mut self, arg: impl Into<String>) -> Self {
        self.controller_manager_args.push(arg.into());
        self
    }

    /// Keep the directory (certificates, logs, audit log) when the control plane is dropped
    /// (default: whether [`KEEP_DIR_VAR`] is set).
    pub fn keep_dir(mut self, keep: bool) -> Self {
        self.keep_dir = keep;
        self
    }

    /// Makes the certificates and starts the components, waiting until each is ready.
    pub async fn start(self) -> Result<ControlPlane> {
        ControlPlane::start_with(self).await
    }
}

/// A running etcd + kube-apiserver (+ kube-controller-manager); see the [module docs](self).
/// Dropping it kills the components and removes its directory.
pub struct ControlPlane {
    dir: PathBuf,
    keep_dir: bool,
    ca: Ca,
    apiserver_url: String,
    etcd_url: String,
    admin_kubeconfig: PathBuf,
    admin_config: kube::Config,
    audit_log: PathBuf,
    /// In start order; killed in reverse.
    processes: Vec<Process>,
    /// How kube-apiserver was started, to start it again after [`ControlPlane::stop_apiserver`].
    apiserver_command: Option<(PathBuf, Vec<String>)>,
    ready_timeout: Duration,
    controller_manager: bool,
    scheduler: bool,
    started_in: Duration,
}

impl fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlPlane")
            .field("dir", &self.dir)
            .field("apiserver_url", &self.apiserver_url)
            .field("etcd_url", &self.etcd_url)
            .field("controller_manager", &self.controller_manager)
            .field("scheduler", &self.scheduler)
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Options, to start a control plane with a controller-manager, other flags, ….
    pub fn builder() -> ControlPlaneBuilder {
        ControlPlaneBuilder::default()
    }

    /// Starts etcd and kube-apiserver with the default options.
    pub async fn start() -> Result<Self> {
        Self::builder().start().await
    }

    async fn start_with(options: ControlPlaneBuilder) -> Result<Self> {
        let started = Instant::now();
        if options.controller_manager && options.cluster_signing_duration.as_secs() == 0 {
            return Err(ControlPlaneError::Invalid(
                "the cluster signing duration must be at least one second".into(),
            ));
        }
        // Every binary first: a missing one fails before anything starts.
        let etcd_bin = find_binary("etcd")?;
        let apiserver_bin = find_binary("kube-apiserver")?;
        let kcm_bin = if options.controller_manager {
            Some(find_binary("kube-controller-manager")?)
        } else {
            None
        };
        let scheduler_bin = if options.scheduler {
            Some(find_binary("kube-scheduler")?)
        } else {
            None
        };

        let dir = new_dir()?;
        let pki = dir.join("pki");
        let ca = Ca::new(&pki, "ca", "node-agent-test-ca")?;
        // The aggregation layer's front proxy, as kubeadm sets it up: the API server
        // publishes this CA in kube-system/extension-apiserver-authentication, where the
        // controller-manager's delegated authentication looks for it.
        let front_proxy_ca = Ca::new(&pki, "front-proxy-ca", "node-agent-test-front-proxy-ca")?;
        front_proxy_ca.issue(&pki, "front-proxy-client", "front-proxy-client", &[], &[])?;
        ca.issue(
            &pki,
            "apiserver",
            "kube-apiserver",
            &[],
            &[
                "127.0.0.1",
                "localhost",
                "10.96.0.1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
        )?;
        let admin = ca.issue(&pki, "admin", "admin", &["system:masters"], &[])?;
        ca.issue(
            &pki,
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            &["system:masters"],
            &[],
        )?;
        let sa_key = KeyPair::generate().map_err(cert_error("the service account key"))?;
        write_file(
            &pki.join("sa.key"),
            sa_key.serialize_pem().as_bytes(),
            0o600,
        )?;
        write_file(
            &pki.join("sa.pub"),
            sa_key.public_key_pem().as_bytes(),
            0o644,
        )?;

        let mut cp = ControlPlane {
            dir: dir.clone(),
            keep_dir: options.keep_dir,
            ca,
            apiserver_url: String::new(),
            etcd_url: String::new(),
            admin_kubeconfig: dir.join("admin.kubeconfig"),
            // Replaced once the API server's port is known.
            admin_config: kube::Config::new(http::Uri::from_static("https://127.0.0.1")),
            audit_log: dir.join("audit.log"),
            processes: Vec::new(),
            apiserver_command: None,
            ready_timeout: options.ready_timeout,
            controller_manager: options.controller_manager,
            scheduler: options.scheduler,
            started_in: Duration::ZERO,
        };

        let components = async {
            cp.start_etcd(&etcd_bin, options.ready_timeout).await?;
            cp.start_apiserver(&apiserver_bin, &admin, &options).await?;
            if let Some(kcm_bin) = kcm_bin {
                cp.start_controller_manager(&kcm_bin, &options).await?;
            } else {
                // Without the service account controller no namespace has its `default`
                // service account, and the ServiceAccount admission plugin refuses pods
                // without one: make it for the `default` namespace.
                cp.ensure_default_service_account().await?;
            }
            if let Some(scheduler_bin) = scheduler_bin {
                cp.start_scheduler(&scheduler_bin, &options).await?;
            }
            Ok::<_, ControlPlaneError>(())
        };
        if let Err(e) = components.await {
            // The error names log files: keep them.
            cp.keep_dir = true;
            return Err(e);
        }
        cp.started_in = started.elapsed();
        tracing::info!(
            dir = %cp.dir.display(),
            apiserver = %cp.apiserver_url,
            elapsed_ms = cp.started_in.as_millis() as u64,
            "control plane ready"
        );
        Ok(cp)
    }

    async fn start_etcd(&mut self, etcd: &Path, timeout: Duration) -> Result<()> {
        let data_dir = self.dir.join("etcd-data");
        let no_fsync = etcd_has_no_fsync(etcd);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let _ = std::fs::remove_dir_all(&data_dir);
            let client = format!("http://127.0.0.1:{}", free_port()?);
            let peer = format!("http://127.0.0.1:{}", free_port()?);
            let mut args = vec![
                "--name=default".to_string(),
                format!("--data-dir={}", data_dir.display()),
                format!("--listen-client-urls={client}"),
                format!("--advertise-client-urls={client}"),
                format!("--listen-peer-urls={peer}"),
                format!("--initial-advertise-peer-urls={peer}"),
                format!("--initial-cluster=default={peer}"),
                "--initial-cluster-state=new".to_string(),
            ];
            if no_fsync {
                args.push("--unsafe-no-fsync=true".to_string());
            }
            let mut process = Process::spawn("etcd", etcd, &args, &self.dir)?;
            let http =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<http_body_util::Empty<hyper::body::Bytes>>();
            let health: http::Uri = format!("{client}/health")
                .parse()
                .map_err(|e| ControlPlaneError::Invalid(format!("etcd URL {client}: {e}")))?;
            let ready = process
                .wait_ready(timeout, || {
                    let http = http.clone();
                    let health = health.clone();
                    async move {
                        let resp = http.get(health).await.map_err(|e| e.to_string())?;
                        let status = resp.status();
                        let body = resp
                            .into_body()
                            .collect()
                            .await
                            .map_err(|e| e.to_string())?
                            .to_bytes();
                        let body = String::from_utf8_lossy(&body);
                        if status.is_success() && body.contains("\"health\":\"true\"") {
                            Ok(())
                        } else {
                            Err(format!("/health: HTTP {status}: {body}"))
                        }
                    }
                })
                .await;
            match ready {
                Ok(()) => {
                    self.etcd_url = client;
                    self.processes.push(process);
                    return Ok(());
                }
                Err(ControlPlaneError::Exited { .. })
                    if attempt < PORT_ATTEMPTS && process.port_conflict() =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn start_apiserver(
        &mut self,
        apiserver: &Path,
        admin: &ClientCertificate,
        options: &ControlPlaneBuilder,
    ) -> Result<()> {
        let pki = self.dir.join("pki");
        let policy = self.dir.join("audit-policy.yaml");
        write_file(
            &policy,
            b"apiVersion: audit.k8s.io/v1\nkind: Policy\n\
              omitStages: [\"RequestReceived\"]\nrules:\n- level: Metadata\n",
            0o644,
        )?;
        let cert_dir = self.dir.join("apiserver-certs");
        std::fs::create_dir_all(&cert_dir).map_err(io_error("creating", &cert_dir))?;
        let p = |name: &str| pki.join(name).display().to_string();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port()?;
            let url = format!("https://127.0.0.1:{port}");
            let mut args = vec![
                format!("--etcd-servers={}", self.etcd_url),
                format!("--secure-port={port}"),
                "--bind-address=127.0.0.1".to_string(),
                "--advertise-address=127.0.0.1".to_string(),
                format!("--cert-dir={}", cert_dir.display()),
                format!("--tls-cert-file={}", p("apiserver.crt")),
                format!("--tls-private-key-file={}", p("apiserver.key")),
                format!("--client-ca-file={}", p("ca.crt")),
                "--authorization-mode=Node,RBAC".to_string(),
                "--enable-admission-plugins=NodeRestriction".to_string(),
                "--enable-bootstrap-token-auth=true".to_string(),
                format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
                format!("--service-account-key-file={}", p("sa.pub")),
                format!("--service-account-signing-key-file={}", p("sa.key")),
                format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"),
                format!(
                    "--kubelet-client-certificate={}",
                    p("apiserver-kubelet-client.crt")
                ),
                format!("--kubelet-client-key={}", p("apiserver-kubelet-client.key")),
                "--kubelet-preferred-address-types=Hostname".to_string(),
                "--allow-privileged=true".to_string(),
                // The `kubernetes` service's endpoints would be 127.0.0.1, which Endpoints
                // validation refuses (the reconciler would log that every few seconds); nothing
                // in a test reaches the API server through that service.
                "--endpoint-reconciler-type=none".to_string(),
                format!("--requestheader-client-ca-file={}", p("front-proxy-ca.crt")),
                "--requestheader-allowed-names=front-proxy-client".to_string(),
                "--requestheader-username-headers=X-Remote-User".to_string(),
                "--requestheader-group-headers=X-Remote-Group".to_string(),
                "--requestheader-extra-headers-prefix=X-Remote-Extra-".to_string(),
                format!("--proxy-client-cert-file={}", p("front-proxy-client.crt")),
                format!("--proxy-client-key-file={}", p("front-proxy-client.key")),
                format!("--audit-policy-file={}", policy.display()),
                format!("--audit-log-path={}", self.audit_log.display()),
                "--audit-log-format=json".to_string(),
                "--audit-log-mode=blocking".to_string(),
            ];
            args.extend(options.apiserver_args.iter().cloned());
            let mut process = Process::spawn("kube-apiserver", apiserver, &args, &self.dir)?;

            self.apiserver_url = url;
            self.write_kubeconfig_at(
                &self.admin_kubeconfig,
                "admin",
                &Credentials::ClientCertificate {
                    cert_path: admin.cert_path.clone(),
                    key_path: admin.key_path.clone(),
                },
            )?;
            self.admin_config = load_config(&self.admin_kubeconfig).await?;
            let client = kube::Client::try_from(self.admin_config.clone())
                .map_err(api_error("making the admin client"))?;
            let ready = process
                .wait_ready(options.ready_timeout, || probe(&client, "/readyz"))
                .await;
            match ready {
                Ok(()) => {
                    self.processes.push(process);
                    self.apiserver_command = Some((apiserver.to_path_buf(), args));
                    self.ready_timeout = options.ready_timeout;
                    return Ok(());
                }
                Err(ControlPlaneError::Exited { .. })
                    if attempt < PORT_ATTEMPTS && process.port_conflict() =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts a component that talks to the API server as user `user` through its own
    /// kubeconfig, authenticates and authorizes its own clients through the API server, and
    /// serves `/healthz` on `--secure-port` with a self-signed certificate (in its
    /// `--cert-dir`): kube-controller-manager and kube-scheduler. `args` gets the kubeconfig
    /// and the port and returns the component's own flags. Returns once `/healthz` is OK.
    async fn start_serving_component(
        &self,
        name: &'static str,
        binary: &Path,
        user: &str,
        timeout: Duration,
        args: impl Fn(&Path, u16) -> Vec<String>,
    ) -> Result<Process> {
        let cert = self.issue_client_cert(user, &[])?;
        let kubeconfig = self.dir.join(format!("{name}.kubeconfig"));
        self.write_kubeconfig_at(
            &kubeconfig,
            user,
            &Credentials::ClientCertificate {
                cert_path: cert.cert_path,
                key_path: cert.key_path,
            },
        )?;
        let cert_dir = self.dir.join(format!("{name}-certs"));
        std::fs::create_dir_all(&cert_dir).map_err(io_error("creating", &cert_dir))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port()?;
            let mut all = vec![
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--authentication-kubeconfig={}", kubeconfig.display()),
                format!("--authorization-kubeconfig={}", kubeconfig.display()),
                format!("--client-ca-file={}", self.ca.cert_path.display()),
                "--bind-address=127.0.0.1".to_string(),
                format!("--secure-port={port}"),
                format!("--cert-dir={}", cert_dir.display()),
                "--leader-elect=false".to_string(),
            ];
            all.extend(args(&kubeconfig, port));
            let mut process = Process::spawn(name, binary, &all, &self.dir)?;
            // Its serving certificate is self-signed: the admin identity, without verifying
            // the server.
            let mut config = self.admin_config.clone();
            config.cluster_url = format!("https://127.0.0.1:{port}")
                .parse()
                .map_err(|e| ControlPlaneError::Invalid(format!("port {port}: {e}")))?;
            config.root_cert = None;
            config.accept_invalid_certs = true;
            let client = kube::Client::try_from(config)
                .map_err(api_error(format!("making the {name} health client")))?;
            match process
                .wait_ready(timeout, || probe(&client, "/healthz"))
                .await
            {
                Ok(()) => return Ok(process),
                Err(ControlPlaneError::Exited { .. })
                    if attempt < PORT_ATTEMPTS && process.port_conflict() =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn start_controller_manager(
        &mut self,
        kcm: &Path,
        options: &ControlPlaneBuilder,
    ) -> Result<()> {
        let pki = self.dir.join("pki");
        let p = |name: &str| pki.join(name).display().to_string();
        // kubeadm's identity for it: the bootstrap RBAC policy grants what it needs, and with
        // service account credentials each controller acts as its own service account.
        let mut process = self
            .start_serving_component(
                "kube-controller-manager",
                kcm,
                "system:kube-controller-manager",
                options.ready_timeout,
                |_, _| {
                    let mut args = vec![
                        format!("--cluster-signing-cert-file={}", p("ca.crt")),
                        format!("--cluster-signing-key-file={}", p("ca.key")),
                        format!(
                            "--cluster-signing-duration={}",
                            go_duration(options.cluster_signing_duration)
                        ),
                        format!("--root-ca-file={}", p("ca.crt")),
                        format!("--service-account-private-key-file={}", p("sa.key")),
                        "--use-service-account-credentials=true".to_string(),
                        format!("--controllers={}", options.controllers),
                        format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"),
                    ];
                    args.extend(options.controller_manager_args.iter().cloned());
                    args
                },
            )
            .await?;
        // /healthz answers before the controllers run: they are started one after the other
        // (each with its own service account token), which takes seconds, and their informers
        // together after that. The service account controller making `default/default` shows
        // they run.
        let accounts: Api<ServiceAccount> = Api::namespaced(self.admin_client(), "default");
        process
            .wait_ready(options.ready_timeout, || {
                let accounts = accounts.clone();
                async move {
                    match accounts.get_opt("default").await {
                        Ok(Some(_)) => Ok(()),
                        Ok(None) => Err("no service account default/default yet (the \
                                         controllers are not running)"
                            .to_string()),
                        Err(e) => Err(e.to_string()),
                    }
                }
            })
            .await?;
        self.processes.push(process);
        Ok(())
    }

    async fn start_scheduler(
        &mut self,
        scheduler: &Path,
        options: &ControlPlaneBuilder,
    ) -> Result<()> {
        let process = self
            .start_serving_component(
                "kube-scheduler",
                scheduler,
                "system:kube-scheduler",
                options.ready_timeout,
                |_, _| options.scheduler_args.clone(),
            )
            .await?;
        self.processes.push(process);
        Ok(())
    }

    async fn ensure_default_service_account(&self) -> Result<()> {
        let api: Api<ServiceAccount> = Api::namespaced(self.admin_client(), "default");
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some("default".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        // The API server makes the `default` namespace just after it is ready.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match api.create(&PostParams::default(), &account).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 && Instant::now() < deadline => {
                    tokio::time::sleep(POLL).await;
                }
                Err(e) => {
                    return Err(api_error("creating service account default/default")(e));
                }
            }
        }
    }

    /// Stops kube-apiserver (SIGKILL), leaving etcd and the rest running: clients see the
    /// API server away until [`start_apiserver_again`](Self::start_apiserver_again).
    pub async fn stop_apiserver(&mut self) {
        if let Some(i) = self
            .processes
            .iter()
            .position(|p| p.name == "kube-apiserver")
        {
            let mut process = self.processes.remove(i);
            process.kill_async().await;
        }
    }

    /// Starts kube-apiserver again as it was started (same port, same flags, same data in
    /// etcd) and waits until it is ready.
    pub async fn start_apiserver_again(&mut self) -> Result<()> {
        let Some((binary, args)) = self.apiserver_command.clone() else {
            return Err(ControlPlaneError::Invalid(
                "kube-apiserver was never started".into(),
            ));
        };
        if self.processes.iter().any(|p| p.name == "kube-apiserver") {
            return Ok(());
        }
        let mut process = Process::spawn("kube-apiserver", &binary, &args, &self.dir)?;
        let client = self.admin_client();
        process
            .wait_ready(self.ready_timeout, || probe(&client, "/readyz"))
            .await?;
        self.processes.push(process);
        Ok(())
    }

    /// The directory of this control plane (certificates, logs, kubeconfig files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How long [`start`](Self::start) took.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// Whether a kube-controller-manager runs.
    pub fn has_controller_manager(&self) -> bool {
        self.controller_manager
    }

    /// Whether a kube-scheduler runs.
    pub fn has_scheduler(&self) -> bool {
        self.scheduler
    }

    /// `https://127.0.0.1:<port>`.
    pub fn apiserver_url(&self) -> &str {
        &self.apiserver_url
    }

    /// etcd's client URL, `http://127.0.0.1:<port>`.
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    /// The CA certificate, PEM: the API server's serving certificate and every client
    /// certificate chain to it.
    pub fn ca_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    /// The CA certificate's file.
    pub fn ca_cert_path(&self) -> &Path {
        &self.ca.cert_path
    }

    /// The CA key's file (the controller-manager signs with it).
    pub fn ca_key_path(&self) -> &Path {
        &self.ca.key_path
    }

    /// The log file of a component (`etcd`, `kube-apiserver`, `kube-controller-manager`,
    /// `kube-scheduler`).
    pub fn log_path(&self, component: &str) -> PathBuf {
        self.dir.join(format!("{component}.log"))
    }

    /// The admin kubeconfig (CN `admin`, O `system:masters`).
    pub fn admin_kubeconfig_path(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// The admin client configuration.
    pub fn admin_config(&self) -> kube::Config {
        self.admin_config.clone()
    }

    /// A new admin client, for the caller's tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime, or if the admin configuration no longer makes a client (it made
    /// the one start-up used).
    pub fn admin_client(&self) -> kube::Client {
        kube::Client::try_from(self.admin_config.clone())
            .unwrap_or_else(|e| panic!("the admin kubeconfig made a client before: {e}"))
    }

    /// A client from a kubeconfig file (through `kube::Config::from_custom_kubeconfig`).
    pub async fn client_for_kubeconfig(path: &Path) -> Result<kube::Client> {
        let config = load_config(path).await?;
        kube::Client::try_from(config).map_err(api_error(format!(
            "making a client from kubeconfig {}",
            path.display()
        )))
    }

    /// Issues a client certificate for user `cn` in `groups` (at most two), signed by the CA,
    /// and writes it and its key under `pki/clients/`.
    pub fn issue_client_cert(&self, cn: &str, groups: &[&str]) -> Result<ClientCertificate> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let stem = format!(
            "{}-{}",
            file_stem(cn),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        self.ca
            .issue(&self.dir.join("pki/clients"), &stem, cn, groups, &[])
    }

    /// A kubeconfig file for user `cn` in `groups` with a fresh client certificate, e.g.
    /// `("system:node:localhost", &["system:nodes"])` for a node's credentials.
    pub fn kubeconfig_for_client_cert(&self, cn: &str, groups: &[&str]) -> Result<PathBuf> {
        let cert = self.issue_client_cert(cn, groups)?;
        let path = cert.cert_path.with_extension("kubeconfig");
        self.write_kubeconfig_at(
            &path,
            cn,
            &Credentials::ClientCertificate {
                cert_path: cert.cert_path,
                key_path: cert.key_path,
            },
        )?;
        Ok(path)
    }

    /// Writes `<name>.kubeconfig` in the control plane's directory: cluster at
    /// [`apiserver_url`](Self::apiserver_url) trusting the CA, user `name` with `credentials`.
    pub fn write_kubeconfig(&self, name: &str, credentials: &Credentials) -> Result<PathBuf> {
        let path = self.dir.join(format!("{}.kubeconfig", file_stem(name)));
        self.write_kubeconfig_at(&path, name, credentials)?;
        Ok(path)
    }

    fn write_kubeconfig_at(
        &self,
        path: &Path,
        user: &str,
        credentials: &Credentials,
    ) -> Result<()> {
        let user_fields = match credentials {
            Credentials::ClientCertificate {
                cert_path,
                key_path,
            } => format!(
                "    client-certificate: {}\n    client-key: {}\n",
                quoted(&cert_path.display().to_string()),
                quoted(&key_path.display().to_string())
            ),
            Credentials::Token(token) => format!("    token: {}\n", quoted(token)),
        };
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: node-agent-test\n  cluster:\n    \
             server: {server}\n    certificate-authority: {ca}\nusers:\n- name: {user}\n  user:\n\
             {user_fields}contexts:\n- name: node-agent-test\n  context:\n    cluster: \
             node-agent-test\n    user: {user}\ncurrent-context: node-agent-test\n",
            server = quoted(&self.apiserver_url),
            ca = quoted(&self.ca.cert_path.display().to_string()),
            user = quoted(user),
        );
        write_file(path, text.as_bytes(), 0o600)
    }

    /// Creates a bootstrap token as `kubeadm token create` does (Secret
    /// `kube-system/bootstrap-token-<id>`, usable for authentication and signing, extra group
    /// [`BOOTSTRAP_TOKEN_GROUP`]) and, once, kubeadm's RBAC for TLS bootstrap: the token's
    /// group may create CSRs (`system:node-bootstrapper`) and has its node client CSRs
    /// auto-approved (`…:certificatesigningrequests:nodeclient`), and nodes have their renewal
    /// CSRs auto-approved (`…:selfnodeclient` for `system:nodes`). Approval and signing need
    /// the controller-manager.
    ///
    /// Returns the token (`<id>.<secret>`) and a kubeconfig file using it; the token
    /// authenticates when this returns.
    pub async fn create_bootstrap_token(&self) -> Result<(String, PathBuf)> {
        let client = self.admin_client();
        self.ensure_bootstrap_rbac(&client).await?;

        let id = random_token_chars(6);
        let secret = random_token_chars(16);
        let token = format!("{id}.{secret}");
        let data: BTreeMap<String, String> = [
            ("description", "node-agent test bootstrap token"),
            ("token-id", id.as_str()),
            ("token-secret", secret.as_str()),
            ("usage-bootstrap-authentication", "true"),
            ("usage-bootstrap-signing", "true"),
            ("auth-extra-groups", BOOTSTRAP_TOKEN_GROUP),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let object = Secret {
            metadata: ObjectMeta {
                name: Some(format!("bootstrap-token-{id}")),
                namespace: Some("kube-system".into()),
                ..Default::default()
            },
            type_: Some("bootstrap.kubernetes.io/token".into()),
            string_data: Some(data),
            ..Default::default()
        };
        Api::<Secret>::namespaced(client, "kube-system")
            .create(&PostParams::default(), &object)
            .await
            .map_err(api_error(format!(
                "creating secret kube-system/bootstrap-token-{id}"
            )))?;

        let path = self.write_kubeconfig(
            &format!("bootstrap-token-{id}"),
            &Credentials::Token(token.clone()),
        )?;
        // The authenticator reads tokens from an informer: wait until it knows this one.
        let token_client = Self::client_for_kubeconfig(&path).await?;
        let reviews: Api<SelfSubjectReview> = Api::all(token_client);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match reviews
                .create(&PostParams::default(), &SelfSubjectReview::default())
                .await
            {
                Ok(_) => return Ok((token, path)),
                Err(kube::Error::Api(s)) if s.code == 401 && Instant::now() < deadline => {
                    tokio::time::sleep(POLL).await;
                }
                Err(e) => {
                    return Err(api_error(format!(
                        "authenticating with bootstrap token {id}"
                    ))(e));
                }
            }
        }
    }

    async fn ensure_bootstrap_rbac(&self, client: &kube::Client) -> Result<()> {
        let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
        for (name, role, group) in [
            (
                "kubeadm:kubelet-bootstrap",
                "system:node-bootstrapper",
                BOOTSTRAP_TOKEN_GROUP,
            ),
            (
                "kubeadm:node-autoapprove-bootstrap",
                "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
                BOOTSTRAP_TOKEN_GROUP,
            ),
            (
                "kubeadm:node-autoapprove-certificate-rotation",
                "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
                "system:nodes",
            ),
        ] {
            let binding = ClusterRoleBinding {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..Default::default()
                },
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "ClusterRole".into(),
                    name: role.into(),
                },
                subjects: Some(vec![Subject {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "Group".into(),
                    name: group.into(),
                    namespace: None,
                }]),
            };
            match bindings.create(&PostParams::default(), &binding).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => {
                    return Err(api_error(format!("creating clusterrolebinding {name}"))(e));
                }
            }
        }
        Ok(())
    }

    /// The API server's audit log (JSON lines, level `Metadata`, stages `ResponseStarted` and
    /// `ResponseComplete`).
    pub fn audit_log_path(&self) -> &Path {
        &self.audit_log
    }

    /// The audit log's `ResponseComplete` events so far, oldest first: one per finished
    /// request (a watch appears when it ends). The log is written before each response is
    /// sent, so a request whose response the caller has is in it.
    pub fn audit_events(&self) -> Result<Vec<AuditEvent>> {
        let text = match std::fs::read_to_string(&self.audit_log) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("reading audit log", &self.audit_log)(e)),
        };
        let complete = text.ends_with('\n');
        let lines: Vec<&str> = text.lines().collect();
        let mut events = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let value: serde_json::Value = match serde_json::from_str(line) {
                Ok(v) => v,
                // A line being written as we read.
                Err(_) if i + 1 == lines.len() && !complete => break,
                Err(e) => {
                    return Err(ControlPlaneError::AuditLog {
                        path: self.audit_log.clone(),
                        line: i + 1,
                        reason: e.to_string(),
                    });
                }
            };
            if value["stage"] == "ResponseComplete" {
                events.push(AuditEvent::from_json(value));
            }
        }
        Ok(events)
    }

    /// Kills the components (scheduler, controller-manager, API server, etcd) and waits for
    /// them; the
    /// directory goes as on drop.
    pub async fn stop(mut self) {
        while let Some(mut process) = self.processes.pop() {
            process.kill_async().await;
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        while let Some(mut process) = self.processes.pop() {
            process.kill();
        }
        if self.keep_dir || std::thread::panicking() {
            eprintln!(
                "control plane files (logs, certificates, audit log) kept in {}",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

async fn load_config(path: &Path) -> Result<kube::Config> {
    let kubeconfig =
        Kubeconfig::read_from(path).map_err(|source| ControlPlaneError::Kubeconfig {
            path: path.to_path_buf(),
            source,
        })?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|source| ControlPlaneError::Kubeconfig {
            path: path.to_path_buf(),
            source,
        })
}

/// `GET path` with `client`: Ok on 2xx, else the failing checks of the answer.
async fn probe(client: &kube::Client, path: &str) -> Result<(), String> {
    let request = http::Request::get(path)
        .body(kube::client::Body::from(Vec::new()))
        .map_err(|e| e.to_string())?;
    let response = client.send(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    let failing: Vec<&str> = body.lines().filter(|l| l.starts_with("[-]")).collect();
    Err(if failing.is_empty() {
        format!("{path}: HTTP {status}: {}", body.trim())
    } else {
        format!("{path}: HTTP {status}: {}", failing.join("; "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_says_where_it_looked_and_how_to_provide_it() {
        let err = find_binary("kube-apiserver-that-does-not-exist").unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("kube-apiserver-that-does-not-exist not found"),
            "{message}"
        );
        assert!(message.contains("KUBEBUILDER_ASSETS"), "{message}");
        assert!(message.contains("PATH"), "{message}");
        assert!(message.contains(SERVER_ARCHIVE), "{message}");
        let err = install_hint("etcd");
        assert!(err.contains("apt-get install etcd-server"), "{err}");
    }

    #[test]
    fn bootstrap_token_chars_are_lowercase_alphanumeric() {
        let id = random_token_chars(6);
        let secret = random_token_chars(16);
        assert_eq!(id.len(), 6);
        assert_eq!(secret.len(), 16);
        assert!(
            (id.clone() + &secret)
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert_ne!(random_token_chars(16), secret);
    }

    #[test]
    fn quoted_is_a_yaml_double_quoted_scalar() {
        assert_eq!(quoted("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(file_stem("system:node:localhost"), "system-node-localhost");
        assert_eq!(go_duration(Duration::from_secs(600)), "600s");
    }

    #[test]
    fn two_groups_make_two_organizations() {
        let dn = subject("u", &["a", "b"]).unwrap();
        assert_eq!(dn.iter().count(), 3);
        assert!(subject("u", &["a", "b", "c"]).is_err());
    }
}
