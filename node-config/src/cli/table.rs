//! The flag table: every flag of the upstream Linux kubelet v1.36, its value kind, what it
//! sets and its deprecation.

use super::flags::{LoggingFlags, NodeFlags, set, set_log};
use std::string::String as Text;

/// Upstream's deprecation message for the flags that mirror configuration fields.
pub const CONFIG_FILE_DEPRECATION: &str = "This parameter should be set via the config file specified by the Kubelet's --config flag. See https://kubernetes.io/docs/tasks/administer-cluster/kubelet-config-file/ for more information.";

const GC_DEPRECATION: &str =
    "Use --eviction-hard or --eviction-soft instead. Will be removed in a future version.";

/// The syntax of a flag's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagKind {
    /// `--flag`, `--flag=true|false`.
    Bool,
    /// Any text.
    String,
    /// A signed 32-bit integer.
    Int32,
    /// A signed 64-bit integer.
    Int64,
    /// An unsigned 32-bit integer.
    Uint32,
    /// A floating-point number.
    Float,
    /// A Go duration (`1m30s`).
    Duration,
    /// A quantity (`10Mi`).
    Quantity,
    /// An IP address.
    Ip,
    /// Comma-separated strings; repeated flags append.
    StringSlice,
    /// Comma-separated IP addresses; repeated flags append.
    IpSlice,
    /// `key=value,...`; repeated flags merge.
    StringMap,
    /// `key=quantity,...`; repeated flags merge.
    QuantityMap,
    /// `Gate=true,...` (`--feature-gates`); repeated flags merge.
    BoolMap,
    /// `signal<quantity,...` (`--eviction-hard`, `--eviction-soft`); repeated flags merge.
    Thresholds,
    /// `key[=value]:Effect,...` (`--register-with-taints`).
    Taints,
    /// `key:value,...` with repeated keys (`--manifest-url-header`).
    HeaderMap,
    /// One `key=value` per flag, the value may hold commas (`--cpu-manager-policy-options`);
    /// repeated flags merge.
    StringPair,
    /// `numa:resource=quantity,...;numa:...` (`--reserved-memory`); repeated flags append.
    ReservedMemory,
    /// One of a fixed set of words.
    Enum(&'static [&'static str]),
    /// `--help`.
    Help,
    /// `--version`, `--version=raw`.
    Version,
}

impl FlagKind {
    /// Whether a repeated flag adds to the earlier value rather than replacing it.
    pub(super) fn accumulates(self) -> bool {
        matches!(
            self,
            FlagKind::StringSlice
                | FlagKind::IpSlice
                | FlagKind::StringMap
                | FlagKind::QuantityMap
                | FlagKind::BoolMap
                | FlagKind::Thresholds
                | FlagKind::HeaderMap
                | FlagKind::StringPair
                | FlagKind::ReservedMemory
        )
    }

    /// The value's name in the help text, as pflag shows it.
    pub(super) fn value_name(self) -> &'static str {
        match self {
            FlagKind::Bool | FlagKind::Help => "",
            FlagKind::String | FlagKind::Enum(_) => "string",
            FlagKind::Int32 => "int32",
            FlagKind::Int64 => "int",
            FlagKind::Uint32 => "uint32",
            FlagKind::Float => "float",
            FlagKind::Duration => "duration",
            FlagKind::Quantity => "quantity",
            FlagKind::Ip => "ip",
            FlagKind::StringSlice | FlagKind::Taints => "strings",
            FlagKind::IpSlice => "ipSlice",
            FlagKind::StringMap
            | FlagKind::QuantityMap
            | FlagKind::HeaderMap
            | FlagKind::StringPair => "mapStringString",
            FlagKind::BoolMap => "mapStringBool",
            FlagKind::Thresholds => "mapStringString",
            FlagKind::Version => "version[=true]",
            FlagKind::ReservedMemory => "reserved-memory",
        }
    }
}

/// What a flag sets.
#[derive(Clone, Copy)]
pub enum FlagTarget {
    /// A configuration field, by its dotted v1beta1 JSON path (`authentication.x509.clientCAFile`).
    Config(&'static str),
    /// A field of [`NodeFlags`]; the setter gets the value and whether the flag was given
    /// before.
    Node(fn(&mut NodeFlags, &str, bool) -> Result<(), Text>),
    /// A field of [`LoggingFlags`].
    Logging(fn(&mut LoggingFlags, &str) -> Result<(), Text>),
    /// `--help`.
    Help,
    /// `--version`.
    Version,
    /// Accepted and checked, with no effect on this kubelet (upstream flags for features it
    /// leaves to others, such as `--cloud-config` for in-tree providers).
    Accepted,
}

impl std::fmt::Debug for FlagTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlagTarget::Config(path) => write!(f, "Config({path})"),
            FlagTarget::Node(_) => f.write_str("Node"),
            FlagTarget::Logging(_) => f.write_str("Logging"),
            FlagTarget::Help => f.write_str("Help"),
            FlagTarget::Version => f.write_str("Version"),
            FlagTarget::Accepted => f.write_str("Accepted"),
        }
    }
}

/// One flag.
#[derive(Debug, Clone, Copy)]
pub struct FlagSpec {
    /// The long name, without dashes.
    pub name: &'static str,
    /// The one-letter form, if any (`v`, `h`).
    pub shorthand: Option<char>,
    /// The value's syntax.
    pub kind: FlagKind,
    /// What it sets.
    pub target: FlagTarget,
    /// Upstream's deprecation message, printed when the flag is used.
    pub deprecated: Option<&'static str>,
    /// A one-line description (flags that set a configuration field are described by it).
    pub help: &'static str,
}

const fn config(name: &'static str, kind: FlagKind, path: &'static str) -> FlagSpec {
    FlagSpec {
        name,
        shorthand: None,
        kind,
        target: FlagTarget::Config(path),
        deprecated: Some(CONFIG_FILE_DEPRECATION),
        help: "",
    }
}

const fn node(
    name: &'static str,
    kind: FlagKind,
    set: fn(&mut NodeFlags, &str, bool) -> Result<(), Text>,
    help: &'static str,
) -> FlagSpec {
    FlagSpec {
        name,
        shorthand: None,
        kind,
        target: FlagTarget::Node(set),
        deprecated: None,
        help,
    }
}

const fn deprecated(mut spec: FlagSpec, message: Option<&'static str>) -> FlagSpec {
    spec.deprecated = message;
    spec
}

const fn not_deprecated(spec: FlagSpec) -> FlagSpec {
    deprecated(spec, None)
}

const CADVISOR_DEPRECATION: &str = "This is a cadvisor flag that was mistakenly registered with the Kubelet. Due to legacy concerns, it will follow the standard CLI deprecation timeline before being removed.";

/// A cAdvisor flag upstream registers on Linux: accepted, deprecated, without effect here.
const fn cadvisor(name: &'static str, kind: FlagKind) -> FlagSpec {
    FlagSpec {
        name,
        shorthand: None,
        kind,
        target: FlagTarget::Accepted,
        deprecated: Some(CADVISOR_DEPRECATION),
        help: "cAdvisor flag, accepted without effect",
    }
}

const fn logging(
    name: &'static str,
    kind: FlagKind,
    set: fn(&mut LoggingFlags, &str) -> Result<(), Text>,
    help: &'static str,
) -> FlagSpec {
    FlagSpec {
        name,
        shorthand: None,
        kind,
        target: FlagTarget::Logging(set),
        deprecated: None,
        help,
    }
}

use FlagKind::*;

/// Every flag, in upstream's registration order.
pub static FLAGS: &[FlagSpec] = &[
    // ContainerRuntimeOptions and KubeletFlags.
    node(
        "runtime-cgroups",
        String,
        set::runtime_cgroups,
        "The cgroup of the container runtime",
    ),
    node(
        "image-credential-provider-config",
        String,
        set::image_credential_provider_config,
        "The credential provider plugins' configuration file",
    ),
    node(
        "image-credential-provider-bin-dir",
        String,
        set::image_credential_provider_bin_dir,
        "The credential provider plugins' directory",
    ),
    node(
        "config",
        String,
        set::config,
        "The KubeletConfiguration file",
    ),
    node(
        "config-dir",
        String,
        set::config_dir,
        "A directory of drop-in configuration files (*.conf)",
    ),
    node(
        "kubeconfig",
        String,
        set::kubeconfig,
        "The kubeconfig of the API server; without it the kubelet runs standalone",
    ),
    node(
        "bootstrap-kubeconfig",
        String,
        set::bootstrap_kubeconfig,
        "The kubeconfig used to request a client certificate when --kubeconfig does not exist",
    ),
    node(
        "hostname-override",
        String,
        set::hostname_override,
        "The node's name instead of the hostname",
    ),
    node(
        "node-ip",
        String,
        set::node_ip,
        "The node's IP address, or an IPv4 and an IPv6 address",
    ),
    node(
        "cert-dir",
        String,
        set::cert_dir,
        "The directory of the kubelet's certificates",
    ),
    node(
        "cloud-provider",
        String,
        set::cloud_provider,
        "Empty, or 'external'",
    ),
    node(
        "root-dir",
        String,
        set::root_dir,
        "The directory of the kubelet's files",
    ),
    node(
        "node-labels",
        StringMap,
        set::node_labels,
        "Labels added when the node registers (key=value,...)",
    ),
    node(
        "lock-file",
        String,
        set::lock_file,
        "A lock file the kubelet holds",
    ),
    node(
        "exit-on-lock-contention",
        Bool,
        set::exit_on_lock_contention,
        "Exit when another process opens the lock file",
    ),
    deprecated(
        node(
            "minimum-container-ttl-duration",
            Duration,
            set::minimum_container_ttl_duration,
            "Minimum age of a finished container before it is garbage collected",
        ),
        Some(GC_DEPRECATION),
    ),
    deprecated(
        node(
            "maximum-dead-containers-per-container",
            Int32,
            set::maximum_dead_containers_per_container,
            "Dead instances kept per container",
        ),
        Some(GC_DEPRECATION),
    ),
    deprecated(
        node(
            "maximum-dead-containers",
            Int32,
            set::maximum_dead_containers,
            "Dead containers kept in all",
        ),
        Some(GC_DEPRECATION),
    ),
    deprecated(
        node(
            "experimental-mounter-path",
            String,
            set::experimental_mounter_path,
            "The mount binary",
        ),
        Some("will be removed in 1.25 or later. in favor of using CSI."),
    ),
    deprecated(
        node(
            "experimental-allocatable-ignore-eviction",
            Bool,
            set::experimental_allocatable_ignore_eviction,
            "Leave hard eviction thresholds out of node allocatable",
        ),
        Some("will be removed in 1.25 or later."),
    ),
    // KubeletConfiguration fields.
    config("enable-server", Bool, "enableServer"),
    config("fail-swap-on", Bool, "failSwapOn"),
    config("pod-manifest-path", String, "staticPodPath"),
    config("sync-frequency", Duration, "syncFrequency"),
    config("file-check-frequency", Duration, "fileCheckFrequency"),
    config("http-check-frequency", Duration, "httpCheckFrequency"),
    config("manifest-url", String, "staticPodURL"),
    config("manifest-url-header", HeaderMap, "staticPodURLHeader"),
    config("address", Ip, "address"),
    config("port", Int32, "port"),
    config("read-only-port", Int32, "readOnlyPort"),
    not_deprecated(config("fail-cgroupv1", Bool, "failCgroupV1")),
    config(
        "container-runtime-endpoint",
        String,
        "containerRuntimeEndpoint",
    ),
    config("image-service-endpoint", String, "imageServiceEndpoint"),
    config("anonymous-auth", Bool, "authentication.anonymous.enabled"),
    config(
        "authentication-token-webhook",
        Bool,
        "authentication.webhook.enabled",
    ),
    config(
        "authentication-token-webhook-cache-ttl",
        Duration,
        "authentication.webhook.cacheTTL",
    ),
    config("client-ca-file", String, "authentication.x509.clientCAFile"),
    config(
        "authorization-mode",
        Enum(&["AlwaysAllow", "Webhook"]),
        "authorization.mode",
    ),
    config(
        "authorization-webhook-cache-authorized-ttl",
        Duration,
        "authorization.webhook.cacheAuthorizedTTL",
    ),
    config(
        "authorization-webhook-cache-unauthorized-ttl",
        Duration,
        "authorization.webhook.cacheUnauthorizedTTL",
    ),
    config("tls-cert-file", String, "tlsCertFile"),
    config("tls-private-key-file", String, "tlsPrivateKeyFile"),
    config("tls-cipher-suites", StringSlice, "tlsCipherSuites"),
    config(
        "tls-min-version",
        Enum(&[
            "VersionTLS10",
            "VersionTLS11",
            "VersionTLS12",
            "VersionTLS13",
        ]),
        "tlsMinVersion",
    ),
    config("rotate-certificates", Bool, "rotateCertificates"),
    config("rotate-server-certificates", Bool, "serverTLSBootstrap"),
    config("registry-qps", Int32, "registryPullQPS"),
    config("registry-burst", Int32, "registryBurst"),
    config("event-qps", Int32, "eventRecordQPS"),
    config("event-burst", Int32, "eventBurst"),
    config("enable-debugging-handlers", Bool, "enableDebuggingHandlers"),
    config("contention-profiling", Bool, "enableContentionProfiling"),
    config("healthz-port", Int32, "healthzPort"),
    config("healthz-bind-address", Ip, "healthzBindAddress"),
    config("oom-score-adj", Int32, "oomScoreAdj"),
    config("cluster-domain", String, "clusterDomain"),
    config("volume-plugin-dir", String, "volumePluginDir"),
    config("cluster-dns", IpSlice, "clusterDNS"),
    config(
        "streaming-connection-idle-timeout",
        Duration,
        "streamingConnectionIdleTimeout",
    ),
    config(
        "node-status-update-frequency",
        Duration,
        "nodeStatusUpdateFrequency",
    ),
    config("minimum-image-ttl-duration", Duration, "imageMinimumGCAge"),
    config(
        "image-gc-high-threshold",
        Int32,
        "imageGCHighThresholdPercent",
    ),
    config(
        "image-gc-low-threshold",
        Int32,
        "imageGCLowThresholdPercent",
    ),
    config("volume-stats-agg-period", Duration, "volumeStatsAggPeriod"),
    config("feature-gates", BoolMap, "featureGates"),
    config("kubelet-cgroups", String, "kubeletCgroups"),
    config("system-cgroups", String, "systemCgroups"),
    not_deprecated(config("provider-id", String, "providerID")),
    config("cgroups-per-qos", Bool, "cgroupsPerQOS"),
    config(
        "cgroup-driver",
        Enum(&["cgroupfs", "systemd"]),
        "cgroupDriver",
    ),
    config("cgroup-root", String, "cgroupRoot"),
    config("cpu-manager-policy", String, "cpuManagerPolicy"),
    config(
        "cpu-manager-policy-options",
        StringPair,
        "cpuManagerPolicyOptions",
    ),
    config(
        "cpu-manager-reconcile-period",
        Duration,
        "cpuManagerReconcilePeriod",
    ),
    config("qos-reserved", StringMap, "qosReserved"),
    config("topology-manager-policy", String, "topologyManagerPolicy"),
    config(
        "topology-manager-policy-options",
        StringMap,
        "topologyManagerPolicyOptions",
    ),
    config("topology-manager-scope", String, "topologyManagerScope"),
    config("runtime-request-timeout", Duration, "runtimeRequestTimeout"),
    config(
        "hairpin-mode",
        Enum(&["promiscuous-bridge", "hairpin-veth", "none"]),
        "hairpinMode",
    ),
    config("max-pods", Int32, "maxPods"),
    config("pod-cidr", String, "podCIDR"),
    config("pod-max-pids", Int64, "podPidsLimit"),
    config("resolv-conf", String, "resolvConf"),
    config("runonce", Bool, "runOnce"),
    config("cpu-cfs-quota", Bool, "cpuCFSQuota"),
    config("cpu-cfs-quota-period", Duration, "cpuCFSQuotaPeriod"),
    config(
        "enable-controller-attach-detach",
        Bool,
        "enableControllerAttachDetach",
    ),
    config("make-iptables-util-chains", Bool, "makeIPTablesUtilChains"),
    config("container-log-max-size", Quantity, "containerLogMaxSize"),
    config("container-log-max-files", Int32, "containerLogMaxFiles"),
    config(
        "allowed-unsafe-sysctls",
        StringSlice,
        "allowedUnsafeSysctls",
    ),
    config("node-status-max-images", Int32, "nodeStatusMaxImages"),
    config("kernel-memcg-notification", Bool, "kernelMemcgNotification"),
    config(
        "local-storage-capacity-isolation",
        Bool,
        "localStorageCapacityIsolation",
    ),
    config("max-open-files", Int64, "maxOpenFiles"),
    config("serialize-image-pulls", Bool, "serializeImagePulls"),
    config("eviction-hard", Thresholds, "evictionHard"),
    config("eviction-soft", Thresholds, "evictionSoft"),
    config(
        "eviction-soft-grace-period",
        StringMap,
        "evictionSoftGracePeriod",
    ),
    config(
        "eviction-pressure-transition-period",
        Duration,
        "evictionPressureTransitionPeriod",
    ),
    config(
        "eviction-max-pod-grace-period",
        Int32,
        "evictionMaxPodGracePeriod",
    ),
    config(
        "eviction-minimum-reclaim",
        StringMap,
        "evictionMinimumReclaim",
    ),
    config("pods-per-core", Int32, "podsPerCore"),
    config("protect-kernel-defaults", Bool, "protectKernelDefaults"),
    config("reserved-cpus", String, "reservedSystemCPUs"),
    config("system-reserved", QuantityMap, "systemReserved"),
    config("kube-reserved", QuantityMap, "kubeReserved"),
    config("system-reserved-cgroup", String, "systemReservedCgroup"),
    config("kube-reserved-cgroup", String, "kubeReservedCgroup"),
    config(
        "enforce-node-allocatable",
        StringSlice,
        "enforceNodeAllocatable",
    ),
    config("memory-manager-policy", String, "memoryManagerPolicy"),
    config("reserved-memory", ReservedMemory, "reservedMemory"),
    config("register-node", Bool, "registerNode"),
    config("register-with-taints", Taints, "registerWithTaints"),
    config("kube-api-qps", Int32, "kubeAPIQPS"),
    config("kube-api-burst", Int32, "kubeAPIBurst"),
    config("kube-api-content-type", String, "contentType"),
    not_deprecated(config("seccomp-default", Bool, "seccompDefault")),
    // Logging (component-base/logs).
    FlagSpec {
        shorthand: Some('v'),
        ..logging("v", Uint32, set_log::verbosity, "The log verbosity")
    },
    logging(
        "vmodule",
        String,
        set_log::vmodule,
        "Per-file verbosity (pattern=N,...)",
    ),
    logging(
        "log-flush-frequency",
        Duration,
        set_log::flush_frequency,
        "Maximum seconds between log flushes",
    ),
    deprecated(
        logging(
            "logging-format",
            Enum(&["json", "text"]),
            set_log::format,
            "The log format",
        ),
        Some(CONFIG_FILE_DEPRECATION),
    ),
    deprecated(
        logging(
            "log-json-split-stream",
            Bool,
            set_log::split_stream,
            "JSON logs: errors to stderr, info to stdout",
        ),
        Some(CONFIG_FILE_DEPRECATION),
    ),
    deprecated(
        logging(
            "log-json-info-buffer-size",
            Quantity,
            set_log::info_buffer_size,
            "JSON logs: the info stream's buffer",
        ),
        Some(CONFIG_FILE_DEPRECATION),
    ),
    deprecated(
        logging(
            "log-text-split-stream",
            Bool,
            set_log::split_stream,
            "Text logs: errors to stderr, info to stdout",
        ),
        Some(CONFIG_FILE_DEPRECATION),
    ),
    deprecated(
        logging(
            "log-text-info-buffer-size",
            Quantity,
            set_log::info_buffer_size,
            "Text logs: the info stream's buffer",
        ),
        Some(CONFIG_FILE_DEPRECATION),
    ),
    // Global flags: cAdvisor's (Linux), --version, --help.
    FlagSpec {
        name: "housekeeping-interval",
        shorthand: None,
        kind: Duration,
        target: FlagTarget::Accepted,
        deprecated: None,
        help: "cAdvisor's housekeeping interval (the kubelet does not run cAdvisor)",
    },
    cadvisor("application-metrics-count-limit", Int64),
    cadvisor("boot-id-file", String),
    cadvisor("container-hints", String),
    cadvisor("containerd", String),
    cadvisor("enable-load-reader", Bool),
    cadvisor("event-storage-age-limit", String),
    cadvisor("event-storage-event-limit", String),
    cadvisor("global-housekeeping-interval", Duration),
    cadvisor("log-cadvisor-usage", Bool),
    cadvisor("machine-id-file", String),
    cadvisor("storage-driver-user", String),
    cadvisor("storage-driver-password", String),
    cadvisor("storage-driver-host", String),
    cadvisor("storage-driver-db", String),
    cadvisor("storage-driver-table", String),
    cadvisor("storage-driver-secure", Bool),
    cadvisor("storage-driver-buffer-duration", Duration),
    cadvisor("containerd-namespace", String),
    FlagSpec {
        name: "help",
        shorthand: Some('h'),
        kind: Help,
        target: FlagTarget::Help,
        deprecated: None,
        help: "Print this help",
    },
    FlagSpec {
        name: "version",
        shorthand: None,
        kind: Version,
        target: FlagTarget::Version,
        deprecated: None,
        help: "Print the version (--version=raw: in detail)",
    },
];

/// The flag named `name` (already normalised: `_` as `-`).
pub(super) fn lookup(name: &str) -> Option<&'static FlagSpec> {
    FLAGS.iter().find(|f| f.name == name)
}

/// The flag whose one-letter form is `c`.
pub(super) fn lookup_short(c: char) -> Option<&'static FlagSpec> {
    FLAGS.iter().find(|f| f.shorthand == Some(c))
}
