//! The example kubelet: upstream flags and KubeletConfiguration file -> wiring -> run.
//!
//! With no runtime endpoint given (neither `--container-runtime-endpoint` nor
//! `containerRuntimeEndpoint` in the config), it runs its embedded default: a managed
//! containerd under `<root-dir>/containerd` with the locally built busybox and pause images.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use node_config::{ConfigLoader, FlagOverrides, KubeletConfiguration};
use node_cri::{ClientOptions, CriClient, ManagedContainerd, ManagedContainerdConfig};
use node_images::oci::{DEFAULT_BUSYBOX_PATH, LocalImages};
use tracing::{info, warn};

/// Command-line flags; names follow the upstream kubelet where they exist.
#[derive(Debug, Parser)]
#[command(name = "kubelet", version, about = "A Kubernetes node agent")]
struct Flags {
    /// The KubeletConfiguration file (YAML or JSON).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A directory of `*.conf` drop-in configuration files merged over --config.
    #[arg(long = "config-dir")]
    config_dir: Option<PathBuf>,
    /// The node name to use instead of the hostname.
    #[arg(long = "hostname-override")]
    hostname_override: Option<String>,
    /// The node's IP address.
    #[arg(long = "node-ip")]
    node_ip: Option<IpAddr>,
    /// Directory of the kubelet's files (pods, volumes, plugins, the managed containerd).
    #[arg(long = "root-dir", default_value = "/var/lib/kubelet")]
    root_dir: PathBuf,
    /// The CRI endpoint (`unix:///path/to.sock`); without it the kubelet runs its own
    /// containerd.
    #[arg(long = "container-runtime-endpoint")]
    container_runtime_endpoint: Option<String>,
    /// Directory of static pod manifests (staticPodPath).
    #[arg(long = "pod-manifest-path")]
    pod_manifest_path: Option<PathBuf>,
    /// The kubeconfig of the API server (cluster mode).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Log verbosity (0-10, as upstream's -v); RUST_LOG overrides it.
    #[arg(short = 'v', long = "v", default_value_t = 2)]
    verbosity: u8,
}

fn init_logging(verbosity: u8) {
    use tracing_subscriber::EnvFilter;
    let level = match verbosity {
        0..=2 => "info",
        3..=4 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

fn node_name(flags: &Flags) -> Result<String> {
    if let Some(name) = &flags.hostname_override {
        return Ok(name.trim().to_lowercase());
    }
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("reading the hostname from /proc/sys/kernel/hostname")?;
    Ok(name.trim().to_lowercase())
}

fn load_config(flags: &Flags) -> Result<(KubeletConfiguration, bool)> {
    let overrides = FlagOverrides {
        pod_manifest_path: flags.pod_manifest_path.clone(),
        container_runtime_endpoint: flags.container_runtime_endpoint.clone(),
        ..Default::default()
    };
    let mut loader = ConfigLoader::new().flags(overrides);
    if let Some(file) = &flags.config {
        loader = loader.file(file);
    }
    if let Some(dir) = &flags.config_dir {
        loader = loader.drop_in_dir(dir);
    }
    let endpoint_given = loader.sets_field("containerRuntimeEndpoint")?;
    let config = loader.load()?;
    Ok((config, endpoint_given))
}

/// The runtime the kubelet talks to: its own managed containerd, or an existing one.
enum RuntimeEndpoint {
    Managed(ManagedContainerd),
    External(CriClient),
}

impl RuntimeEndpoint {
    fn client(&self) -> &CriClient {
        match self {
            RuntimeEndpoint::Managed(m) => m.client(),
            RuntimeEndpoint::External(c) => c,
        }
    }
}

async fn start_runtime(
    flags: &Flags,
    config: &KubeletConfiguration,
    endpoint_given: bool,
) -> Result<RuntimeEndpoint> {
    let options = ClientOptions {
        request_timeout: config.runtime_request_timeout,
        ..Default::default()
    };
    if endpoint_given {
        let endpoint = &config.container_runtime_endpoint;
        let client = CriClient::connect(endpoint, options)
            .await
            .with_context(|| format!("connecting to the container runtime at {endpoint}"))?;
        return Ok(RuntimeEndpoint::External(client));
    }
    let dir = flags.root_dir.join("containerd");
    let mut managed = ManagedContainerdConfig::new(&dir);
    managed.client = options;
    managed.cgroup_driver = match config.cgroup_driver {
        node_config::CgroupDriver::Systemd => node_cri::CgroupDriver::Systemd,
        _ => node_cri::CgroupDriver::Cgroupfs,
    };
    let images = LocalImages::with_defaults(managed.images_dir(), DEFAULT_BUSYBOX_PATH)
        .write()
        .context("building the local busybox and pause images")?;
    for image in &images {
        info!(reference = %image.reference, archive = %image.path.display(), "local image");
    }
    info!(dir = %dir.display(), "starting the managed containerd");
    let containerd = ManagedContainerd::start(managed)
        .await
        .context("starting the managed containerd")?;
    Ok(RuntimeEndpoint::Managed(containerd))
}

async fn wait_for_signal() -> Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

fn main() -> std::process::ExitCode {
    let flags = Flags::parse();
    init_logging(flags.verbosity);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    let outcome = runtime
        .context("building the tokio runtime")
        .and_then(|rt| rt.block_on(run(flags)));
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kubelet: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(flags: Flags) -> Result<()> {
    let (config, endpoint_given) = load_config(&flags)?;
    let node = node_name(&flags)?;
    info!(node = %node, version = node_core::VERSION, "starting kubelet");
    tracing::debug!(config = %config.to_yaml()?, "effective configuration");
    if flags.kubeconfig.is_some() {
        warn!(
            "--kubeconfig is accepted but cluster mode is not implemented yet: running standalone"
        );
    }

    let runtime = start_runtime(&flags, &config, endpoint_given).await?;
    let client = runtime.client();
    let version = client.version().await?;
    let status = client.status(false).await?;
    info!(
        runtime = %version.runtime_name,
        runtime_version = %version.runtime_version,
        endpoint = %client.runtime_socket().display(),
        "container runtime ready"
    );
    for condition in status.status.map(|s| s.conditions).unwrap_or_default() {
        info!(
            condition = %condition.r#type,
            status = condition.status,
            reason = %condition.reason,
            "runtime condition"
        );
    }
    let signal = wait_for_signal().await?;
    info!(signal, "shutting down; pods are left running");
    if let RuntimeEndpoint::Managed(containerd) = runtime {
        containerd.stop().await?;
    }
    Ok(())
}
