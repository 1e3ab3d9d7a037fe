//! The example kubelet: upstream flags and KubeletConfiguration file -> wiring -> run.
//!
//! With no runtime endpoint given (neither `--container-runtime-endpoint` nor
//! `containerRuntimeEndpoint` in the config), it runs its embedded default: a managed
//! containerd under `<root-dir>/containerd` with the locally built busybox and pause images.

mod cluster;
mod server;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use node_config::cli::{self, Action, CommandLine, NodeFlags};
use node_config::{ConfigLoader, KubeletConfiguration};
use node_core::admission::{NodeView, SysctlAllowlist};
use node_core::api_events::ApiEventRecorder;
use node_core::config::PodConfig;
use node_core::events::{EventRecorder, LogRecorder};
use node_core::kubelet::{EngineConfig, Kubelet};
use node_core::listers::RuntimeClassLister;
use node_core::metrics::KubeletMetrics;
use node_core::runtime::GcPolicy;
use node_core::services::ServiceLister;
use node_core::volumes::VolumeManager;
use node_cri::runtime::CriRuntime;
use node_cri::runtime::host::{self, SwapController, SwapSettings};
use node_cri::runtime::sandbox::NodeContext;
use node_cri::{
    ClientOptions, CriClient, CriImageService, ManagedContainerd, ManagedContainerdConfig,
    PodNetwork,
};
use node_images::credentials::Keyring;
use node_images::gc::{IMAGE_GC_PERIOD, ImageGcManager, ImageGcPolicy, StatvfsImageFsStats};
use node_images::manager::{ImageManager, PullConcurrency};
use node_images::oci::{DEFAULT_BUSYBOX_PATH, LocalImages};
use node_status::machine;
use node_status::stats::{LinuxStatsConfig, LinuxStatsProvider};
use node_volumes::api::DeferredSource;
use node_volumes::manager::{DefaultVolumeManager, VolumeManagerConfig};
use node_volumes::plugin::{NodeAllocatable, PluginRegistry};
use node_volumes::source::{ObjectSource, Standalone};
use tracing::info;

/// The demo static pod of the embedded default: busybox serving a page on port 8080.
const DEMO_POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: demo
  labels:
    app: demo
spec:
  dnsPolicy: Default
  containers:
  - name: web
    image: docker.io/library/busybox:1.35
    command: ["sh", "-c", "mkdir -p /www && echo \"hello from $(POD_NAME) on $(NODE_NAME)\" > /www/index.html && exec httpd -f -p 8080 -h /www"]
    env:
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: NODE_NAME
      valueFrom:
        fieldRef:
          fieldPath: spec.nodeName
    ports:
    - containerPort: 8080
"#;

fn init_logging(verbosity: u32) {
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

fn node_name(flags: &NodeFlags) -> Result<String> {
    if let Some(name) = &flags.hostname_override {
        return Ok(name.trim().to_lowercase());
    }
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("reading the hostname from /proc/sys/kernel/hostname")?;
    Ok(name.trim().to_lowercase())
}

fn load_config(cl: &CommandLine) -> Result<(KubeletConfiguration, bool)> {
    let mut loader = ConfigLoader::new().command_line(cl);
    if let Some(file) = &cl.node.config {
        loader = loader.file(file);
    }
    if let Some(dir) = &cl.node.config_dir {
        loader = loader.drop_in_dir(dir);
    }
    let endpoint_given = loader.sets_field("containerRuntimeEndpoint")?;
    let config = loader.load()?;
    Ok((config, endpoint_given))
}

/// The log verbosity: `-v`, else the config file's `logging.verbosity`, else 0 (upstream's
/// default).
fn verbosity(cl: &CommandLine, config: Option<&KubeletConfiguration>) -> u32 {
    cl.logging.verbosity.unwrap_or_else(|| {
        config
            .and_then(|c| c.uninterpreted.get("logging"))
            .and_then(|l| l.get("verbosity"))
            .and_then(|v| v.as_u64())
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0)
    })
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
    flags: &NodeFlags,
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
    // A bridge of its own per root directory; pods get podCIDR (standalone mode), or
    // 10.88.0.0/16.
    let derived = PodNetwork::derived(&dir.display().to_string());
    managed.network.name = derived.name;
    managed.network.bridge = derived.bridge;
    if let Some(cidr) = &config.pod_cidr {
        let (ip, len) = cidr
            .split_once('/')
            .and_then(|(ip, len)| Some((ip.parse().ok()?, len.parse().ok()?)))
            .with_context(|| format!("podCIDR {cidr:?} is not an IPv4 CIDR"))?;
        managed.network.subnet = ip;
        managed.network.prefix_len = len;
    }
    managed.cgroup_driver = config.cgroup_driver;
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

/// SIGTERM and SIGINT, installed at start so that a signal during start-up is not fatal.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

fn main() -> std::process::ExitCode {
    use std::process::ExitCode;
    let cl = match CommandLine::parse(std::env::args_os().skip(1)) {
        Ok(cl) => cl,
        Err(err) => {
            eprintln!("kubelet: failed to parse kubelet flag: {err}");
            return ExitCode::FAILURE;
        }
    };
    // As upstream's flag parser: one line per deprecated flag given, on stderr.
    for warning in cl.warnings() {
        eprintln!("{warning}");
    }
    let version = cl
        .version_override
        .clone()
        .unwrap_or_else(cli::kubelet_version);
    match cl.action {
        Action::Help => {
            print!("{}", cli::usage());
            return ExitCode::SUCCESS;
        }
        Action::Version => {
            println!("Kubernetes {version}");
            return ExitCode::SUCCESS;
        }
        Action::VersionRaw => {
            println!(
                "version.Info{{Major:\"1\", Minor:\"36\", GitVersion:\"{version}\", GitCommit:\"\", GitTreeState:\"\", BuildDate:\"\", GoVersion:\"\", Compiler:\"rustc\", Platform:\"{}/{}\"}}",
                std::env::consts::OS,
                match std::env::consts::ARCH {
                    "x86_64" => "amd64",
                    "aarch64" => "arm64",
                    other => other,
                }
            );
            return ExitCode::SUCCESS;
        }
        Action::Run => {}
    }
    let loaded = load_config(&cl);
    init_logging(verbosity(&cl, loaded.as_ref().ok().map(|(c, _)| c)));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    let outcome = loaded.and_then(|loaded| {
        runtime
            .context("building the tokio runtime")
            .and_then(|rt| rt.block_on(run(cl, loaded, version)))
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kubelet: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    cl: CommandLine,
    (config, endpoint_given): (KubeletConfiguration, bool),
    version: String,
) -> Result<()> {
    let mut signals = Signals::install()?;
    let flags = &cl.node;
    let node_name = node_name(flags)?;
    info!(node = %node_name, %version, "starting kubelet");
    tracing::debug!(config = %config.to_yaml()?, "effective configuration");
    // Upstream refuses to start with an allowedUnsafeSysctls entry that is not namespaced.
    SysctlAllowlist::new(&config.allowed_unsafe_sysctls)
        .map_err(|e| anyhow::anyhow!("allowedUnsafeSysctls: {e}"))?;

    let memory = machine::memory_capacity_bytes(Path::new(machine::MEMINFO_PATH));
    let allocatable = NodeAllocatable {
        cpu_millis: machine::cpu_capacity_millis(),
        memory_bytes: memory,
    };
    // Events: logged on a standalone node, also posted to the API server on a cluster node
    // (once the API client exists).
    let api_events = flags
        .kubeconfig
        .is_some()
        .then(|| ApiEventRecorder::new(&node_name, config.event_record_qps, config.event_burst));
    let recorder: Arc<dyn EventRecorder> = match &api_events {
        Some(events) => events.clone(),
        None => Arc::new(LogRecorder),
    };
    let api_objects = flags.kubeconfig.is_some().then(DeferredSource::new);
    let services = flags.kubeconfig.is_some().then(ServiceLister::new);
    let runtime_classes = flags.kubeconfig.is_some().then(RuntimeClassLister::new);
    // Volumes under <root-dir>/pods; a standalone node has no API objects for configMap,
    // secret and projected volumes (they fail to mount unless optional); a cluster node reads
    // them from the API server once its client exists. The root directory
    // is set up first, as upstream's setupDataDirs: a shared mount (for volume mount
    // propagation) before a managed containerd mounts anything below it.
    let volumes = Arc::new(DefaultVolumeManager::new(
        VolumeManagerConfig {
            node: allocatable,
            ..VolumeManagerConfig::new(&flags.root_dir)
        },
        PluginRegistry::with_defaults(),
        match &api_objects {
            Some(deferred) => deferred.clone() as Arc<dyn ObjectSource>,
            None => Arc::new(Standalone),
        },
        recorder.clone(),
    ));
    volumes
        .set_up_root_dir()
        .map_err(anyhow::Error::msg)
        .with_context(|| {
            format!(
                "configuring the root directory {}",
                flags.root_dir.display()
            )
        })?;
    let volumes: Arc<dyn VolumeManager> = volumes;
    let runtime = start_runtime(flags, &config, endpoint_given).await?;
    // The kubelet's metrics (/metrics): the engine, the CRI client and the server record
    // into them; the process collector adds process_resident_memory_bytes and the like.
    let metrics = Arc::new(KubeletMetrics::new(&node_name));
    if let Err(e) = metrics.registry().register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    )) {
        tracing::warn!(error = %e, "the process metrics are not collected");
    }
    let client = &runtime.client().clone().with_metrics(metrics.clone());
    let runtime_version = client.version().await?;
    let status = client.status(false).await?;
    info!(
        runtime = %runtime_version.runtime_name,
        runtime_version = %runtime_version.runtime_version,
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
    let given: Vec<IpAddr> = flags.node_ip.iter().flat_map(|ip| ip.addresses()).collect();
    let node_ips = match given.is_empty() {
        false => given,
        true => machine::node_ips(|name| {
            name.starts_with(PodNetwork::BRIDGE_PREFIX) || name.starts_with("veth")
        }),
    };
    let mut static_pod_path = config.static_pod_path.clone();
    if static_pod_path.is_none() && matches!(runtime, RuntimeEndpoint::Managed(_)) {
        let dir = flags.root_dir.join("manifests");
        if !dir.exists() {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::write(dir.join("demo.yaml"), DEMO_POD)
                .with_context(|| format!("writing the demo pod into {}", dir.display()))?;
        }
        info!(dir = %dir.display(), "running the static pods of the embedded default");
        static_pod_path = Some(dir);
    }

    let cgroup_v2 = node_status::stats::cgroup::Cgroups::detect("/sys/fs/cgroup").version() == 2;
    if !cgroup_v2 && config.single_process_oom_kill == Some(false) {
        anyhow::bail!(
            "invalid configuration: singleProcessOOMKill must not be explicitly set to false when using cgroup v1"
        );
    }
    let node = NodeContext {
        node_name: node_name.clone(),
        node_ips: node_ips.clone(),
        cluster_dns: config.cluster_dns.clone(),
        cluster_domain: config.cluster_domain.clone().unwrap_or_default(),
        resolv_conf: config.resolv_conf.clone(),
        pod_logs_dir: config.pod_logs_dir.clone(),
        cgroup_driver: config.cgroup_driver,
        cgroups_per_qos: config.cgroups_per_qos,
        cgroup_root: config.cgroup_root.clone().unwrap_or_else(|| "/".into()),
        allocatable,
        machine_memory_capacity_bytes: memory,
        // MemoryQoS: alpha upstream, cgroup v2 only.
        memory_qos: (config.feature_enabled("MemoryQoS") && cgroup_v2)
            .then_some(config.memory_throttling_factor),
        seccomp_default: config.seccomp_default,
        seccomp_root: flags.root_dir.join("seccomp"),
        cpu_cfs_quota: config.cpu_cfs_quota,
        cpu_cfs_quota_period_us: i64::try_from(config.cpu_cfs_quota_period.as_micros())
            .unwrap_or(node_cri::runtime::container::CPU_PERIOD_US),
        swap: SwapSettings {
            controller: SwapController::detect(Path::new("/sys/fs/cgroup")),
            behavior: config.swap_behavior,
            capacity_bytes: machine::swap_capacity_bytes(Path::new("/proc/meminfo")),
        },
        oom_group: cgroup_v2 && config.single_process_oom_kill != Some(true),
        hugepage_sizes: host::hugepage_sizes(Path::new(host::HUGEPAGES_DIR)),
        masked_paths: host::default_masked_paths(host::usable_cpus()),
    };
    let concurrency = if config.serialize_image_pulls {
        PullConcurrency::Serial
    } else {
        PullConcurrency::Parallel(
            config
                .max_parallel_image_pulls
                .and_then(|n| usize::try_from(n).ok()),
        )
    };
    let keyring = Keyring::from_node_files(&flags.root_dir)
        .context("reading the node's registry credentials")?;
    let image_service = Arc::new(CriImageService::new(client.clone()));
    let images = Arc::new(
        ImageManager::new(image_service.clone(), recorder.clone(), concurrency)
            .with_node_keyring(keyring),
    );
    // Image GC every 5 minutes on the filesystem the runtime keeps its images on.
    let image_fs = image_service
        .image_fs_mountpoint()
        .await
        .unwrap_or_else(|| PathBuf::from("/var/lib/containerd"));
    let image_gc = ImageGcManager::new(
        image_service.clone(),
        Arc::new(StatvfsImageFsStats::new(&image_fs)),
        image_service.clone(),
        ImageGcPolicy {
            high_threshold_percent: config.image_gc_high_threshold_percent,
            low_threshold_percent: config.image_gc_low_threshold_percent,
            min_age: config.image_minimum_gc_age,
            max_age: config.image_maximum_gc_age,
        },
        recorder.clone(),
        node_name.clone(),
    )
    .context("image garbage collection policy")?;
    info!(filesystem = %image_fs.display(), "image garbage collection every 5m");
    let image_gc = Arc::new(image_gc);
    let _image_gc = image_gc.clone().run(IMAGE_GC_PERIOD);
    let stats_config = LinuxStatsConfig {
        pod_logs_dir: config.pod_logs_dir.clone(),
        cgroup_root: node.cgroup_root.clone(),
        cgroup_driver: config.cgroup_driver,
        memory_capacity: u64::try_from(memory).unwrap_or(0),
        ..LinuxStatsConfig::new(&node_name, &flags.root_dir)
    };
    // The probes' results: the engine's prober writes them, the runtime kills containers
    // that failed liveness or startup probes.
    let probe_results = Arc::new(node_core::prober::ProbeResults::default());
    let cri_runtime = match (&api_objects, &services, &runtime_classes) {
        (Some(objects), Some(services), Some(classes)) => {
            CriRuntime::new(client.clone(), node, recorder.clone())
                .with_object_source(objects.clone())
                .with_service_env(services.clone())
                .with_runtime_classes(classes.clone())
        }
        _ => CriRuntime::new(client.clone(), node, recorder.clone()),
    }
    .with_image_manager(images)
    .with_volume_manager(volumes.clone())
    .with_probe_results(probe_results.clone())
    .with_stop_signals(config.feature_enabled("ContainerStopSignals"));
    let cri_runtime = match config.max_container_restart_period {
        Some(max) if config.feature_enabled("KubeletCrashLoopBackOffMax") => {
            cri_runtime.with_max_container_restart_period(max)
        }
        _ => cri_runtime,
    };
    // cgroupsPerQOS: kubepods sized to node allocatable, a cgroup per pod under its QoS class.
    let pod_cgroups: Option<Arc<dyn node_core::runtime::PodCgroups>> = match config.cgroups_per_qos
    {
        true => {
            let pod_cgroups = node_status::pod_cgroups::LinuxPodCgroups::new(
                stats_config.cgroups.clone(),
                stats_config.cgroup_root.clone(),
                config.cgroup_driver,
                config.pod_pids_limit,
                config.cpu_cfs_quota,
            )
            .with_cfs_period(
                i64::try_from(config.cpu_cfs_quota_period.as_micros())
                    .unwrap_or(node_core::qos::CFS_PERIOD_US),
            )
            .with_memory_qos(config.feature_enabled("MemoryQoS"));
            pod_cgroups
                .setup(kubepods_allocatable(&config, allocatable))
                .map_err(|e| anyhow::anyhow!("pod cgroups: {e}"))?;
            enforce_reservations(&config, &pod_cgroups)?;
            Some(Arc::new(pod_cgroups))
        }
        false => None,
    };
    let cri_runtime = Arc::new(match &pod_cgroups {
        Some(cgroups) => cri_runtime.with_pod_cgroups(cgroups.clone()),
        None => cri_runtime,
    });
    // Container logs rotated at containerLogMaxSize, containerLogMaxFiles kept.
    let rotation = node_cri::log_rotation::ContainerLogManager::new(
        Arc::new(client.clone()),
        node_cri::log_rotation::LogRotationPolicy {
            max_size: u64::try_from(config.container_log_max_size.value()).unwrap_or(u64::MAX),
            max_files: usize::try_from(config.container_log_max_files).unwrap_or(5),
            max_workers: usize::try_from(config.container_log_max_workers).unwrap_or(1),
            interval: config.container_log_monitor_interval,
        },
    );
    tokio::spawn(rotation.run());
    info!(
        cgroup_version = stats_config.cgroups.version(),
        "node and pod statistics from the cgroups, /proc and the runtime"
    );
    let cgroups = stats_config.cgroups.clone();
    let proc_fs = stats_config.proc.clone();
    let pods_cgroup = node_core::qos::pods_cgroup(&stats_config.cgroup_root, config.cgroup_driver);
    let stats = Arc::new(LinuxStatsProvider::new(stats_config, cri_runtime.clone()));
    let kubelet = Kubelet::new(
        cri_runtime.clone(),
        recorder.clone(),
        EngineConfig {
            node_name: node_name.clone(),
            node_ips: node_ips.iter().map(ToString::to_string).collect(),
            sync_frequency: config.sync_frequency,
            max_pods: usize::try_from(config.max_pods).unwrap_or(0),
            // The deprecated flags upstream still honours; negative numbers mean no limit.
            gc_policy: GcPolicy {
                min_age: flags
                    .minimum_container_ttl_duration
                    .to_std()
                    .unwrap_or_default(),
                max_per_pod_container: usize::try_from(flags.maximum_dead_containers_per_container)
                    .unwrap_or(usize::MAX),
                max_containers: usize::try_from(flags.maximum_dead_containers).ok(),
            },
            node: Some(NodeView::new(cluster::initial_node(
                flags, &config, &node_name, &node_ips, &version,
            )?)),
            allowed_unsafe_sysctls: config.allowed_unsafe_sysctls.clone(),
        },
    )
    .with_volume_manager(volumes)
    .with_metrics(metrics.clone())
    .with_prober(
        Arc::new(node_core::prober::DefaultProber::new(cri_runtime.clone())),
        probe_results,
    );
    let eviction = eviction_manager(
        &config,
        EvictionParts {
            stats: stats.clone(),
            kubelet: &kubelet,
            runtime: cri_runtime.clone(),
            image_gc: image_gc.clone(),
            recorder,
            metrics: metrics.clone(),
            cgroups,
            proc_fs,
            pods_cgroup,
        },
    )?;
    kubelet.add_admit_handler(eviction.clone());
    tokio::spawn(eviction.clone().run());
    let kubelet = match pod_cgroups {
        Some(cgroups) => kubelet.with_pod_cgroups(cgroups),
        None => kubelet,
    };
    let (sources, updates) = PodConfig::new(&node_name);
    // The server's webhooks are set once the API client exists (the server starts later).
    let (webhooks_tx, webhooks_rx) = match flags.kubeconfig.is_some() {
        true => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (Some(tx), Some(rx))
        }
        false => (None, None),
    };
    cluster::start(cluster::Node {
        flags,
        config: &config,
        name: &node_name,
        ips: &node_ips,
        version: &version,
        runtime: cri_runtime.clone(),
        health: kubelet.health(),
        pressure: eviction.clone(),
        images: image_service.clone(),
        engine: flags.kubeconfig.is_some().then(|| cluster::Engine {
            source: sources.source(node_core::config::API_SOURCE),
            pods: kubelet.pod_manager(),
            statuses: kubelet.status_manager(),
            workers: kubelet.pod_workers(),
            objects: api_objects.clone(),
            events: api_events.clone(),
            services: services.clone(),
            runtime_classes: runtime_classes.clone(),
            node: kubelet.node_view(),
            webhooks: webhooks_rx,
            authentication_cache_ttl: config.authentication.webhook_cache_ttl,
            authorization_cache_ttls: (
                config.authorization.webhook_cache_authorized_ttl,
                config.authorization.webhook_cache_unauthorized_ttl,
            ),
        }),
    })
    .await?;
    let _file = static_pod_path
        .as_ref()
        .map(|path| sources.file_source(path, config.file_check_frequency));
    let _http = match &config.static_pod_url {
        Some(url) => Some(
            sources
                .http_source(
                    url,
                    &config.static_pod_url_header,
                    config.http_check_frequency,
                )
                .with_context(|| format!("staticPodURL {url}"))?,
        ),
        None => None,
    };
    let read_only = node_core::server::router(
        kubelet.pod_manager(),
        kubelet.status_manager(),
        kubelet.health(),
        config.sync_frequency,
    )
    .merge(node_status::stats::router(stats))
    .merge(node_core::server::metrics_router(
        metrics.clone(),
        cri_runtime.clone(),
    ));
    let routers = server::Routers {
        full: read_only
            .clone()
            .merge(node_core::server::logs_router(
                kubelet.pod_manager(),
                cri_runtime.clone(),
            ))
            .merge(node_core::server::streaming::router(
                kubelet.pod_manager(),
                cri_runtime.clone(),
                cri_runtime.clone(),
                node_core::server::streaming::StreamingLimits {
                    idle_timeout: config.streaming_connection_idle_timeout,
                    ..Default::default()
                },
            ))
            .merge(node_core::server::configz_router(config.to_json_value()))
            .merge(node_core::server::running_pods_router(cri_runtime.clone()))
            .merge(if config.enable_system_log_handler {
                node_core::server::node_logs::router(
                    PathBuf::from("/var/log"),
                    // Node log query: enableSystemLogQuery (validated to need the NodeLogQuery
                    // feature gate).
                    config
                        .enable_system_log_query
                        .then(node_core::server::node_log_query::LogQueryConfig::default),
                )
            } else {
                axum::Router::new()
            }),
        read_only,
        healthz: node_core::server::healthz_router(kubelet.health(), config.sync_frequency),
    };
    let webhooks = server::start(&config, flags, &node_name, &node_ips, routers, metrics).await?;
    if let Some(webhooks_tx) = webhooks_tx {
        let _ = webhooks_tx.send(webhooks);
    }

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<&'static str>();
    tokio::spawn(async move {
        let _ = stop_tx.send(signals.recv().await);
        // A second signal exits at once, as upstream.
        let second = signals.recv().await;
        eprintln!("kubelet: second {second}: exiting now");
        std::process::exit(1);
    });
    let mut signal = None;
    kubelet
        .run(updates, async {
            signal = stop_rx.await.ok();
        })
        .await;
    let signal = signal.unwrap_or("shutdown");
    info!(signal, "shutting down; pods are left running");
    if let RuntimeEndpoint::Managed(containerd) = runtime {
        containerd.stop().await?;
    }
    Ok(())
}

/// What the eviction manager is built from.
struct EvictionParts<'a> {
    stats: Arc<LinuxStatsProvider>,
    kubelet: &'a Kubelet,
    runtime: Arc<CriRuntime>,
    image_gc: Arc<ImageGcManager>,
    recorder: Arc<dyn EventRecorder>,
    metrics: Arc<node_core::metrics::KubeletMetrics>,
    cgroups: node_status::stats::cgroup::Cgroups,
    proc_fs: node_status::stats::host::ProcFs,
    pods_cgroup: String,
}

/// The eviction manager on the engine, with a memory threshold notifier for each memory
/// signal that has thresholds: cgroup v1 memory events, or a poll on v2.
fn eviction_manager(
    config: &node_config::KubeletConfiguration,
    parts: EvictionParts<'_>,
) -> anyhow::Result<Arc<node_eviction::EvictionManager>> {
    use node_config::Signal;
    use node_eviction::{MemcgNotifier, PollNotifier, ThresholdNotifier};
    let eviction_config =
        node_eviction::EvictionConfig::from_config(config).context("eviction thresholds")?;
    let pods = parts.kubelet.pod_manager();
    let evictor = node_eviction::engine::EnginePods::new(
        pods.clone(),
        parts.kubelet.pod_workers(),
        parts.kubelet.status_manager(),
    );
    let reclaimer =
        node_eviction::engine::RuntimeReclaimer::new(parts.runtime, pods, Some(parts.image_gc));
    let has = |signal| {
        eviction_config
            .thresholds
            .iter()
            .any(|t| t.signal == signal)
    };
    let (memory, allocatable) = (
        has(Signal::MemoryAvailable),
        has(Signal::AllocatableMemoryAvailable),
    );
    let mut manager = node_eviction::EvictionManager::new(
        eviction_config,
        parts.stats,
        Arc::new(evictor),
        parts.recorder,
    )
    .with_reclaimer(Arc::new(reclaimer))
    .with_metrics(parts.metrics);
    let cgroups = parts.cgroups;
    let notifier = |cgroup: &str, what: &str| -> Arc<dyn ThresholdNotifier> {
        match cgroups.version() {
            1 => Arc::new(MemcgNotifier::new(cgroups.dir("memory", cgroup))),
            _ if cgroup == "/" => {
                let proc_fs = parts.proc_fs.clone();
                Arc::new(PollNotifier::new(what.to_string(), move || {
                    proc_fs.node_memory().ok().map(|m| m.usage)
                }))
            }
            _ => {
                let (cgroups, cgroup) = (cgroups.clone(), cgroup.to_string());
                Arc::new(PollNotifier::new(what.to_string(), move || {
                    cgroups.memory(&cgroup).ok().map(|m| m.usage)
                }))
            }
        }
    };
    if !config.kernel_memcg_notification {
        info!("kernelMemcgNotification: false: memory thresholds are seen at the 10 s passes only");
        return Ok(Arc::new(manager));
    }
    if memory {
        manager = manager.with_notifier(
            Signal::MemoryAvailable,
            notifier("/", "the node's memory usage (/proc/meminfo)"),
        );
    }
    if allocatable && cgroups.exists(&parts.pods_cgroup) {
        manager = manager.with_notifier(
            Signal::AllocatableMemoryAvailable,
            notifier(&parts.pods_cgroup, "the pods' cgroup memory.current"),
        );
    }
    if !memory && !allocatable {
        info!("no memory eviction thresholds: no memory threshold notifier");
    }
    Ok(Arc::new(manager))
}

/// What `kubepods` is sized to: the machine less `kubeReserved` and `systemReserved` when
/// `enforceNodeAllocatable` names `pods` (upstream's allocatable for the pods cgroup, without
/// the eviction thresholds), else the machine.
fn kubepods_allocatable(
    config: &node_config::KubeletConfiguration,
    machine: node_core::downward::NodeAllocatable,
) -> node_status::pod_cgroups::Allocatable {
    let enforced = config
        .enforce_node_allocatable
        .contains(&node_config::NodeAllocatableEnforcement::Pods);
    let reserved = |name: &str, milli: bool| -> i64 {
        if !enforced {
            return 0;
        }
        [&config.kube_reserved, &config.system_reserved]
            .iter()
            .filter_map(|m| m.get(name))
            .map(|q| if milli { q.milli_value() } else { q.value() })
            .sum()
    };
    let pids = [&config.kube_reserved, &config.system_reserved]
        .iter()
        .any(|m| m.contains_key("pid"))
        .then(|| {
            node_status::stats::host::ProcFs::new("/proc")
                .max_pid()
                .ok()
                .and_then(|m| i64::try_from(m).ok())
                .map(|m| m - reserved("pid", false))
        })
        .flatten()
        .filter(|_| enforced);
    node_status::pod_cgroups::Allocatable {
        cpu_milli: machine.cpu_millis - reserved("cpu", true),
        memory: (machine.memory_bytes > 0)
            .then(|| machine.memory_bytes - reserved("memory", false)),
        pids,
    }
}

/// `systemReserved` and `kubeReserved` on their cgroups where `enforceNodeAllocatable` names
/// them (validation made sure the cgroups are configured).
fn enforce_reservations(
    config: &node_config::KubeletConfiguration,
    cgroups: &node_status::pod_cgroups::LinuxPodCgroups,
) -> anyhow::Result<()> {
    use node_config::NodeAllocatableEnforcement as E;
    let amounts = |m: &std::collections::BTreeMap<String, node_config::Quantity>| {
        (
            m.get("cpu").map_or(0, |q| q.milli_value()),
            m.get("memory").map(|q| q.value()),
        )
    };
    for enforcement in &config.enforce_node_allocatable {
        let (cgroup, reserved, compressible, field) = match enforcement {
            E::SystemReserved => (
                &config.system_reserved_cgroup,
                &config.system_reserved,
                false,
                "systemReservedCgroup",
            ),
            E::SystemReservedCompressible => (
                &config.system_reserved_cgroup,
                &config.system_reserved,
                true,
                "systemReservedCgroup",
            ),
            E::KubeReserved => (
                &config.kube_reserved_cgroup,
                &config.kube_reserved,
                false,
                "kubeReservedCgroup",
            ),
            E::KubeReservedCompressible => (
                &config.kube_reserved_cgroup,
                &config.kube_reserved,
                true,
                "kubeReservedCgroup",
            ),
            _ => continue,
        };
        let Some(cgroup) = cgroup else { continue };
        let (cpu, memory) = amounts(reserved);
        cgroups
            .enforce_reserved(cgroup, cpu, memory.filter(|_| !compressible))
            .map_err(|e| anyhow::anyhow!("{field} {cgroup}: {e}"))?;
    }
    Ok(())
}
