//! A containerd that the node agent starts, configures and supervises itself.
//!
//! For edge nodes that should come up with no other set-up, and for tests: everything lives
//! under one directory (config, root, state, socket, CNI config and IPAM data, registry host
//! config, an images directory), nothing touches the machine's global containerd.
//!
//! ```text
//! <dir>/config.toml            containerd config (CRI plugin, runc, cgroup driver, sandbox image)
//! <dir>/containerd.sock        the CRI endpoint
//! <dir>/root, <dir>/state      containerd's root and state
//! <dir>/cni/net.d              a bridge + host-local network of its own name (no masquerade)
//! <dir>/cni/networks           host-local IPAM data
//! <dir>/certs.d                registry hosts (plain HTTP for local registries)
//! <dir>/images                 OCI image archives imported at every start (air-gapped nodes)
//! <dir>/containerd.log         containerd's output
//! ```

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::client::{ClientOptions, CriClient};
use crate::error::{CriError, Result};

/// The cgroup driver the runtime uses; must match the kubelet's `cgroupDriver` (the
/// configuration's type).
pub use node_config::CgroupDriver;

/// The pod network of a managed containerd: a Linux bridge with host-local IPAM.
///
/// Pods get addresses from `subnet`; the bridge holds the gateway address so the node reaches
/// its pods. There is no masquerade and no default route: pod traffic stays on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodNetwork {
    /// The CNI network name.
    pub name: String,
    /// The bridge device name (at most 15 bytes).
    pub bridge: String,
    /// The IPv4 subnet pods get addresses from.
    pub subnet: Ipv4Addr,
    /// The subnet's prefix length (8 to 30).
    pub prefix_len: u8,
}

impl Default for PodNetwork {
    fn default() -> Self {
        PodNetwork {
            name: "node-agent".into(),
            bridge: format!("{}0", PodNetwork::BRIDGE_PREFIX),
            subnet: Ipv4Addr::new(10, 88, 0, 0),
            prefix_len: 16,
        }
    }
}

impl PodNetwork {
    /// How the bridges of managed containerds are named (`na0`, `na<hash>`): the node's
    /// address detection skips them.
    pub const BRIDGE_PREFIX: &'static str = "na";

    /// The subnet in CIDR notation.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.subnet, self.prefix_len)
    }

    /// A network whose name, bridge and /24 subnet (in 10.200.0.0/13) are derived from `seed`,
    /// so that several managed containerds on one machine do not collide.
    pub fn derived(seed: &str) -> Self {
        let h = seed.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let second = 200 + (h % 8) as u8;
        let third = ((h >> 8) % 256) as u8;
        PodNetwork {
            name: format!("na-{:06x}", h & 0xff_ffff),
            bridge: format!("{}{:06x}", PodNetwork::BRIDGE_PREFIX, h & 0xff_ffff),
            subnet: Ipv4Addr::new(10, second, third, 0),
            prefix_len: 24,
        }
    }
}

/// Configuration of a [`ManagedContainerd`].
#[derive(Clone, Debug)]
pub struct ManagedContainerdConfig {
    /// The directory everything lives under (see the module docs).
    pub dir: PathBuf,
    /// The containerd binary (looked up in `PATH` when relative).
    pub containerd_binary: PathBuf,
    /// The ctr binary used to import image archives.
    pub ctr_binary: PathBuf,
    /// The cgroup driver.
    pub cgroup_driver: CgroupDriver,
    /// The image of pod sandboxes.
    pub sandbox_image: String,
    /// Where the CNI plugin binaries are.
    pub cni_bin_dir: PathBuf,
    /// The pod network.
    pub network: PodNetwork,
    /// Directory of OCI image archives (`*.tar`) imported at every start; `<dir>/images` when
    /// `None`.
    pub images_dir: Option<PathBuf>,
    /// Registries (`host:port`) reached over plain HTTP, e.g. a local registry on 127.0.0.1.
    pub plain_http_registries: Vec<String>,
    /// How long to wait for the runtime to report RuntimeReady and NetworkReady.
    pub ready_timeout: Duration,
    /// First delay before restarting a containerd that died; doubles up to `max_restart_delay`.
    pub restart_delay: Duration,
    /// Longest delay between restarts.
    pub max_restart_delay: Duration,
    /// containerd's log level.
    pub log_level: String,
    /// Options of the CRI client the managed containerd hands out.
    pub client: ClientOptions,
}

impl ManagedContainerdConfig {
    /// Defaults for a managed containerd under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ManagedContainerdConfig {
            dir: dir.into(),
            containerd_binary: "containerd".into(),
            ctr_binary: "ctr".into(),
            cgroup_driver: CgroupDriver::Cgroupfs,
            sandbox_image: node_images::oci::PAUSE_IMAGE.into(),
            cni_bin_dir: "/usr/lib/cni".into(),
            network: PodNetwork::default(),
            images_dir: None,
            plain_http_registries: Vec::new(),
            ready_timeout: Duration::from_secs(60),
            restart_delay: Duration::from_secs(1),
            max_restart_delay: Duration::from_secs(30),
            log_level: "warn".into(),
            client: ClientOptions::default(),
        }
    }

    /// The CRI socket path.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// The CRI endpoint (`unix://...`).
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket_path().display())
    }

    /// The directory of image archives imported at start.
    pub fn images_dir(&self) -> PathBuf {
        self.images_dir
            .clone()
            .unwrap_or_else(|| self.dir.join("images"))
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    fn cni_conf_dir(&self) -> PathBuf {
        self.dir.join("cni/net.d")
    }

    fn certs_dir(&self) -> PathBuf {
        self.dir.join("certs.d")
    }

    /// The containerd configuration file (config version 2, containerd 1.7).
    pub fn containerd_toml(&self) -> String {
        let d = &self.dir;
        let systemd = self.cgroup_driver == CgroupDriver::Systemd;
        let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = write!(
            s,
            r#"# Written by node-cri's managed containerd; rewritten at every start.
version = 2
root = {root:?}
state = {state:?}
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = {sock:?}

[ttrpc]
  address = {ttrpc:?}

[debug]
  level = {level:?}

[plugins."io.containerd.internal.v1.opt"]
  path = {opt:?}

[{cri}]
  sandbox_image = {sandbox:?}
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_cdi = false

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = {systemd}

[{cri}.cni]
  bin_dir = {cni_bin:?}
  conf_dir = {cni_conf:?}
  max_conf_num = 1

[{cri}.registry]
  config_path = {certs:?}
"#,
            root = d.join("root").display().to_string(),
            state = d.join("state").display().to_string(),
            sock = self.socket_path().display().to_string(),
            ttrpc = d.join("containerd.sock.ttrpc").display().to_string(),
            level = self.log_level,
            opt = d.join("opt").display().to_string(),
            sandbox = self.sandbox_image,
            cni_bin = self.cni_bin_dir.display().to_string(),
            cni_conf = self.cni_conf_dir().display().to_string(),
            certs = self.certs_dir().display().to_string(),
        );
        s
    }

    /// The CNI network configuration list (bridge + host-local).
    pub fn cni_conflist(&self) -> String {
        let n = &self.network;
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": n.name,
            "plugins": [{
                "type": "bridge",
                "bridge": n.bridge,
                "isGateway": true,
                "isDefaultGateway": false,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": n.cidr() }]],
                    "dataDir": self.dir.join("cni/networks").display().to_string(),
                }
            }]
        });
        // Serializing a json! value cannot fail.
        serde_json::to_string_pretty(&conf).unwrap_or_default()
    }
}

/// Writes the registry host config that makes containerd reach `host` (`host:port`) over plain
/// HTTP. containerd reads it at every pull, so this works while it runs.
pub fn write_plain_http_registry(certs_dir: &Path, host: &str) -> Result<()> {
    let dir = certs_dir.join(host);
    let toml = format!(
        "server = \"http://{host}\"\n\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n  skip_verify = true\n"
    );
    write_file(
        &dir.join("hosts.toml"),
        toml.as_bytes(),
        "writing registry host config",
    )
}

fn create_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|source| CriError::Io {
        context: "creating directory",
        path: path.to_path_buf(),
        source,
    })
}

fn write_file(path: &Path, contents: &[u8], context: &'static str) -> Result<()> {
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    std::fs::write(path, contents).map_err(|source| CriError::Io {
        context,
        path: path.to_path_buf(),
        source,
    })
}

/// The state of a managed containerd, as its supervisor sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerdState {
    /// Running and ready.
    Running {
        /// containerd's process id.
        pid: u32,
        /// How many times it was restarted after dying.
        restarts: u32,
    },
    /// Died; waiting to restart.
    Restarting {
        /// Restarts so far.
        restarts: u32,
    },
    /// Stopped by [`ManagedContainerd::stop`].
    Stopped,
}

/// A containerd started and supervised by this process.
///
/// Dropping it asks the supervisor to stop containerd; [`ManagedContainerd::stop`] waits for
/// that. Containers keep running across a containerd stop or restart (their shims outlive
/// containerd), as with a system containerd.
#[derive(Debug)]
pub struct ManagedContainerd {
    config: Arc<ManagedContainerdConfig>,
    client: CriClient,
    state: watch::Receiver<ContainerdState>,
    stop: watch::Sender<bool>,
    supervisor: Option<tokio::task::JoinHandle<()>>,
}

impl ManagedContainerd {
    /// Writes the configuration, starts containerd, waits until CRI `Status` reports
    /// RuntimeReady and NetworkReady, imports the image archives, and starts supervising it.
    pub async fn start(config: ManagedContainerdConfig) -> Result<Self> {
        let config = Arc::new(config);
        prepare(&config)?;
        let client = CriClient::connect_lazy(
            &config.endpoint(),
            &config.endpoint(),
            config.client.clone(),
        )?;
        let started = Instant::now();
        let mut child = spawn(&config)?;
        if let Err(err) = wait_ready(&config, &client, &mut child).await {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(err);
        }
        import_images(&config).await?;
        let pid = child.id().unwrap_or_default();
        info!(
            dir = %config.dir.display(),
            pid,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "managed containerd ready"
        );
        let (state_tx, state) = watch::channel(ContainerdState::Running { pid, restarts: 0 });
        let (stop, stop_rx) = watch::channel(false);
        let supervisor = tokio::spawn(supervise(
            config.clone(),
            client.clone(),
            child,
            state_tx,
            stop_rx,
        ));
        Ok(ManagedContainerd {
            config,
            client,
            state,
            stop,
            supervisor: Some(supervisor),
        })
    }

    /// The CRI endpoint (`unix://<dir>/containerd.sock`).
    pub fn endpoint(&self) -> String {
        self.config.endpoint()
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &ManagedContainerdConfig {
        &self.config
    }

    /// A CRI client of this containerd (it reconnects after restarts).
    pub fn client(&self) -> &CriClient {
        &self.client
    }

    /// The current state.
    pub fn state(&self) -> ContainerdState {
        self.state.borrow().clone()
    }

    /// A receiver of state changes.
    pub fn watch_state(&self) -> watch::Receiver<ContainerdState> {
        self.state.clone()
    }

    /// containerd's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        match *self.state.borrow() {
            ContainerdState::Running { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// Makes containerd reach `host` (`host:port`) over plain HTTP from now on.
    pub fn add_plain_http_registry(&self, host: &str) -> Result<()> {
        write_plain_http_registry(&self.config.certs_dir(), host)
    }

    /// Stops containerd (SIGTERM, then SIGKILL after 10 s) and waits for the supervisor.
    /// Running containers are left to their shims.
    pub async fn stop(mut self) -> Result<()> {
        let _ = self.stop.send(true);
        if let Some(task) = self.supervisor.take() {
            task.await.map_err(|e| CriError::Containerd {
                root: self.config.dir.clone(),
                reason: format!("supervisor task failed: {e}"),
            })?;
        }
        Ok(())
    }
}

impl Drop for ManagedContainerd {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn prepare(config: &ManagedContainerdConfig) -> Result<()> {
    let socket = config.socket_path();
    // sun_path holds 108 bytes including the terminating NUL.
    if socket.as_os_str().len() > 100 {
        return Err(CriError::Containerd {
            root: config.dir.clone(),
            reason: format!(
                "socket path {} is too long for a unix socket",
                socket.display()
            ),
        });
    }
    if config.network.bridge.len() > 15 {
        return Err(CriError::Containerd {
            root: config.dir.clone(),
            reason: format!(
                "bridge name {:?} is longer than 15 bytes",
                config.network.bridge
            ),
        });
    }
    for sub in ["root", "state", "opt", "cni/networks", "certs.d"] {
        create_dir(&config.dir.join(sub))?;
    }
    create_dir(&config.images_dir())?;
    write_file(
        &config.config_path(),
        config.containerd_toml().as_bytes(),
        "writing containerd config",
    )?;
    // Only our network in the conf dir: containerd picks the first file.
    let conf_dir = config.cni_conf_dir();
    create_dir(&conf_dir)?;
    if let Ok(entries) = std::fs::read_dir(&conf_dir) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    write_file(
        &conf_dir.join(format!("10-{}.conflist", config.network.name)),
        config.cni_conflist().as_bytes(),
        "writing CNI config",
    )?;
    for host in &config.plain_http_registries {
        write_plain_http_registry(&config.certs_dir(), host)?;
    }
    // A socket left by a containerd that was killed would make the new one fail to listen.
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// Makes the child die with the thread that spawned it, so a managed containerd never outlives
/// the node agent that manages it (as k3s does with its embedded containerd).
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which
    // is async-signal-safe; it touches no memory shared with the parent.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
}

fn spawn(config: &ManagedContainerdConfig) -> Result<Child> {
    let log_path = config.log_path();
    let open_log = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| CriError::Io {
                context: "opening containerd log",
                path: log_path.clone(),
                source,
            })
    };
    let mut command = Command::new(&config.containerd_binary);
    command
        .arg("--config")
        .arg(config.config_path())
        .stdin(Stdio::null())
        .stdout(open_log()?)
        .stderr(open_log()?)
        // Its own process group: a terminal's ^C goes to the node agent, which stops it.
        .process_group(0)
        .kill_on_drop(true);
    die_with_parent(&mut command);
    command.spawn().map_err(|source| CriError::Containerd {
        root: config.dir.clone(),
        reason: format!(
            "cannot run {}: {source}",
            config.containerd_binary.display()
        ),
    })
}

fn log_tail(config: &ManagedContainerdConfig) -> String {
    let text = std::fs::read_to_string(config.log_path()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(8);
    lines[start..].join("\n")
}

/// Waits until `Status` reports RuntimeReady and NetworkReady, failing early if containerd
/// exits.
async fn wait_ready(
    config: &ManagedContainerdConfig,
    client: &CriClient,
    child: &mut Child,
) -> Result<()> {
    let deadline = Instant::now() + config.ready_timeout;
    let mut last = String::from("no answer yet");
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(CriError::Containerd {
                root: config.dir.clone(),
                reason: format!(
                    "containerd exited with {status} before it was ready; its log ends with:\n{}",
                    log_tail(config)
                ),
            });
        }
        if config.socket_path().exists() {
            match client.status(false).await {
                Ok(resp) => {
                    let conditions = resp.status.map(|s| s.conditions).unwrap_or_default();
                    let ready =
                        |kind: &str| conditions.iter().any(|c| c.r#type == kind && c.status);
                    if ready("RuntimeReady") && ready("NetworkReady") {
                        return Ok(());
                    }
                    last = conditions
                        .iter()
                        .filter(|c| !c.status)
                        .map(|c| format!("{} is false ({}: {})", c.r#type, c.reason, c.message))
                        .collect::<Vec<_>>()
                        .join("; ");
                }
                Err(err) => last = err.to_string(),
            }
        }
        if Instant::now() >= deadline {
            return Err(CriError::Containerd {
                root: config.dir.clone(),
                reason: format!(
                    "not ready after {:?}: {last}; its log ends with:\n{}",
                    config.ready_timeout,
                    log_tail(config)
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Imports every `*.tar` OCI/Docker image archive in the images directory into containerd's
/// `k8s.io` namespace, where the CRI plugin sees it.
async fn import_images(config: &ManagedContainerdConfig) -> Result<()> {
    let dir = config.images_dir();
    let mut archives: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "tar"))
            .collect(),
        Err(source) => {
            return Err(CriError::Io {
                context: "reading images directory",
                path: dir,
                source,
            });
        }
    };
    archives.sort();
    for archive in archives {
        let started = Instant::now();
        let output = Command::new(&config.ctr_binary)
            .arg("--address")
            .arg(config.socket_path())
            .args(["--namespace", "k8s.io", "images", "import"])
            .arg(&archive)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|source| CriError::ImageImport {
                path: archive.clone(),
                reason: format!("cannot run {}: {source}", config.ctr_binary.display()),
            })?;
        if !output.status.success() {
            return Err(CriError::ImageImport {
                path: archive,
                reason: format!(
                    "ctr exited with {}: {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            });
        }
        debug!(
            archive = %archive.display(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "imported image archive"
        );
    }
    Ok(())
}

async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}

async fn supervise(
    config: Arc<ManagedContainerdConfig>,
    client: CriClient,
    mut child: Child,
    state: watch::Sender<ContainerdState>,
    mut stop: watch::Receiver<bool>,
) {
    let mut restarts = 0u32;
    let mut delay = config.restart_delay;
    let mut running_since = Instant::now();
    loop {
        tokio::select! {
            exit = child.wait() => {
                let ran = running_since.elapsed();
                warn!(
                    dir = %config.dir.display(),
                    status = ?exit,
                    ran_secs = ran.as_secs(),
                    "managed containerd exited; restarting"
                );
                if ran >= Duration::from_secs(60) {
                    delay = config.restart_delay;
                }
                let _ = state.send(ContainerdState::Restarting { restarts });
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => {
                            let _ = state.send(ContainerdState::Stopped);
                            return;
                        }
                    }
                    delay = (delay * 2).min(config.max_restart_delay);
                    let spawned = prepare(&config).and_then(|()| spawn(&config));
                    match spawned {
                        Ok(mut new_child) => {
                            match wait_ready(&config, &client, &mut new_child).await {
                                Ok(()) => {
                                    child = new_child;
                                    break;
                                }
                                Err(err) => {
                                    warn!(error = %err, "restarted containerd did not become ready");
                                    terminate(&mut new_child).await;
                                }
                            }
                        }
                        Err(err) => warn!(error = %err, "cannot restart managed containerd"),
                    }
                }
                restarts += 1;
                running_since = Instant::now();
                let pid = child.id().unwrap_or_default();
                info!(dir = %config.dir.display(), pid, restarts, "managed containerd restarted");
                let _ = state.send(ContainerdState::Running { pid, restarts });
            }
            _ = stop.changed() => {
                terminate(&mut child).await;
                let _ = state.send(ContainerdState::Stopped);
                info!(dir = %config.dir.display(), "managed containerd stopped");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_private_paths_and_sandbox_image() {
        let mut c = ManagedContainerdConfig::new("/tmp/na-x");
        c.cgroup_driver = CgroupDriver::Systemd;
        let toml = c.containerd_toml();
        assert!(toml.contains(r#"address = "/tmp/na-x/containerd.sock""#));
        assert!(toml.contains(r#"root = "/tmp/na-x/root""#));
        assert!(toml.contains(r#"sandbox_image = "registry.k8s.io/pause:3.10""#));
        assert!(toml.contains("SystemdCgroup = true"));
        assert!(toml.contains("restrict_oom_score_adj = true"));
        assert!(toml.contains(r#"conf_dir = "/tmp/na-x/cni/net.d""#));
    }

    #[test]
    fn cni_has_no_masquerade_and_own_ipam_dir() {
        let c = ManagedContainerdConfig::new("/tmp/na-x");
        let v: serde_json::Value = serde_json::from_str(&c.cni_conflist()).unwrap();
        let bridge = &v["plugins"][0];
        assert_eq!(bridge["ipMasq"], false);
        assert_eq!(bridge["isDefaultGateway"], false);
        assert_eq!(bridge["ipam"]["dataDir"], "/tmp/na-x/cni/networks");
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.88.0.0/16");
    }

    #[test]
    fn derived_networks_differ_and_fit() {
        let a = PodNetwork::derived("/tmp/a");
        let b = PodNetwork::derived("/tmp/b");
        assert_ne!(a.bridge, b.bridge);
        assert!(a.bridge.len() <= 15);
        assert_eq!(a.subnet.octets()[0], 10);
        assert!((200..208).contains(&a.subnet.octets()[1]));
    }

    #[test]
    fn long_socket_path_is_refused() {
        let c = ManagedContainerdConfig::new(format!("/tmp/{}", "x".repeat(120)));
        let err = prepare(&c).unwrap_err();
        assert!(err.to_string().contains("too long"), "{err}");
    }
}
