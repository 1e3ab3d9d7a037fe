//! The flags that are not configuration fields, and the logging flags.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use super::FlagError;
use super::values::{bool_value, config_value};
use crate::Duration;
use crate::cli::table::FlagKind;

/// Upstream's default `--root-dir`.
pub const DEFAULT_ROOT_DIR: &str = "/var/lib/kubelet";
/// Upstream's default `--cert-dir`.
pub const DEFAULT_CERT_DIR: &str = "/var/lib/kubelet/pki";

/// The kubelet's flags that are not `KubeletConfiguration` fields (upstream `KubeletFlags`
/// and `ContainerRuntimeOptions`), with upstream's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFlags {
    /// `--kubeconfig`: how to reach the API server; without it the kubelet is standalone.
    pub kubeconfig: Option<PathBuf>,
    /// `--bootstrap-kubeconfig`: used to request a client certificate when the kubeconfig
    /// does not exist (TLS bootstrap).
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// `--config`: the KubeletConfiguration file.
    pub config: Option<PathBuf>,
    /// `--config-dir`: the drop-in directory.
    pub config_dir: Option<PathBuf>,
    /// `--hostname-override`.
    pub hostname_override: Option<String>,
    /// `--node-ip`.
    pub node_ip: Option<NodeIp>,
    /// `--cert-dir` (default `/var/lib/kubelet/pki`).
    pub cert_dir: PathBuf,
    /// `--root-dir` (default `/var/lib/kubelet`).
    pub root_dir: PathBuf,
    /// `--cloud-provider`: empty or `external`.
    pub cloud_provider: String,
    /// `--node-labels`: labels added at registration.
    pub node_labels: BTreeMap<String, String>,
    /// `--lock-file`.
    pub lock_file: Option<PathBuf>,
    /// `--exit-on-lock-contention`.
    pub exit_on_lock_contention: bool,
    /// `--runtime-cgroups`: the cgroup of the container runtime.
    pub runtime_cgroups: Option<String>,
    /// `--image-credential-provider-config`.
    pub image_credential_provider_config: Option<PathBuf>,
    /// `--image-credential-provider-bin-dir`.
    pub image_credential_provider_bin_dir: Option<PathBuf>,
    /// `--minimum-container-ttl-duration` (deprecated).
    pub minimum_container_ttl_duration: Duration,
    /// `--maximum-dead-containers-per-container` (deprecated; default 1).
    pub maximum_dead_containers_per_container: i32,
    /// `--maximum-dead-containers` (deprecated; default -1, no limit).
    pub maximum_dead_containers: i32,
    /// `--experimental-mounter-path`.
    pub experimental_mounter_path: Option<PathBuf>,
    /// `--experimental-allocatable-ignore-eviction`.
    pub experimental_allocatable_ignore_eviction: bool,
}

impl Default for NodeFlags {
    fn default() -> Self {
        NodeFlags {
            kubeconfig: None,
            bootstrap_kubeconfig: None,
            config: None,
            config_dir: None,
            hostname_override: None,
            node_ip: None,
            cert_dir: DEFAULT_CERT_DIR.into(),
            root_dir: DEFAULT_ROOT_DIR.into(),
            cloud_provider: String::new(),
            node_labels: BTreeMap::new(),
            lock_file: None,
            exit_on_lock_contention: false,
            runtime_cgroups: None,
            image_credential_provider_config: None,
            image_credential_provider_bin_dir: None,
            minimum_container_ttl_duration: Duration::default(),
            maximum_dead_containers_per_container: 1,
            maximum_dead_containers: -1,
            experimental_mounter_path: None,
            experimental_allocatable_ignore_eviction: false,
        }
    }
}

/// `--node-ip`: one address, or an IPv4 and an IPv6 address for a dual-stack node. An
/// unspecified address (`0.0.0.0`, `::`) only picks the family the node's own address is
/// taken from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIp(pub Vec<IpAddr>);

impl NodeIp {
    /// Parses the flag as upstream's `ParseNodeIPArgument`.
    pub fn parse(value: &str) -> Result<NodeIp, String> {
        let ips = value
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<IpAddr>()
                    .map_err(|_| format!("could not parse {:?}", s.trim()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        match ips.as_slice() {
            [_] => {}
            [a, b] => {
                if a.is_ipv4() == b.is_ipv4() {
                    return Err(
                        "must contain either a single IP or a dual-stack pair of IPs".into(),
                    );
                }
                if a.is_unspecified() || b.is_unspecified() {
                    return Err(
                        "dual-stack --node-ip may not include an unspecified address".into(),
                    );
                }
            }
            _ => return Err("must contain either a single IP or a dual-stack pair of IPs".into()),
        }
        Ok(NodeIp(ips))
    }

    /// The addresses given, unspecified ones excluded.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.0.iter().copied().filter(|ip| !ip.is_unspecified())
    }
}

fn path(value: &str) -> Option<PathBuf> {
    (!value.is_empty()).then(|| PathBuf::from(value))
}

fn int32(value: &str) -> Result<i32, String> {
    config_value(FlagKind::Int32, value).map(|v| v.as_i64().unwrap_or_default() as i32)
}

/// Setters of the node flags, one per flag, as the flag table names them.
pub(super) mod set {
    use super::*;

    type R = Result<(), String>;

    pub(in crate::cli) fn kubeconfig(f: &mut NodeFlags, v: &str, _: bool) -> R {
        f.kubeconfig = path(v);
        Ok(())
    }
    pub(in crate::cli) fn bootstrap_kubeconfig(f: &mut NodeFlags, v: &str, _: bool) -> R {
        f.bootstrap_kubeconfig = path(v);
        Ok(())
    }
    pub(in crate::cli) fn config(f: &mut NodeFlags, v: &str, _: bool) -> R {
        f.config = path(v);
        Ok(())
    }
    pub(in crate::cli) fn config_dir(f: &mut NodeFlags, v: &str, _: bool) -> R {
        f.config_dir = path(v);
        Ok(())
    }
    pub(in crate::cli) fn hostname_override(f: &mut NodeFlags, v: &str, _: bool) -> R {
        f.hostname_override = (!v.is_empty()).then(|| v.to_string());
        Ok(())
    }
    pub(in crate::cli) fn node_ip(f: &mut NodeFlags, v: &str, _: bool) -> R {
        f.node_ip = if v.is_empty() {
            None
        } else {
            Some(NodeIp::parse(v)?)
        };
        Ok(())
    }
    pub(in crate::cli) fn cert_dir(f: &mut NodeFlags, v: &str, _: bool) -> R {
        f.cert_dir = v.into();
        Ok(())
    }
    pub(in crate::cli) fn root_dir(f: &mut NodeFlags, v: &str, _: bool) -> R {
        f.root_dir = v.into();
        Ok(())
    }
    pub(in crate::cli) fn cloud_provider(f: &mut NodeFlags, v: &str, _: bool) -> R {
        f.cloud_provider = v.to_string();
        Ok(())
    }
    pub(in crate::cli) fn node_labels(f: &mut NodeFlags, v: &str, _: bool) -> R {
        // Repeated --node-labels merge, as upstream's ConfigurationMap.
        for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, val) = item.split_once('=').unwrap_or((item, ""));
            f.node_labels
                .insert(k.trim().to_string(), val.trim().to_string());
        }
        Ok(())
    }
    pub(in crate::cli) fn lock_file(f: &mut NodeFlags, v: &str, _: bool) -> R {
        f.lock_file = path(v);
        Ok(())
    }
    pub(in crate::cli) fn exit_on_lock_contention(f: &mut NodeFlags, v: &str, _: bool) -> R {
        f.exit_on_lock_contention = bool_value(v)?;
        Ok(())
    }
    pub(in crate::cli) fn runtime_cgroups(f: &mut NodeFlags, v: &str, _: bool) -> R {
        f.runtime_cgroups = (!v.is_empty()).then(|| v.to_string());
        Ok(())
    }
    pub(in crate::cli) fn image_credential_provider_config(
        f: &mut NodeFlags,
        v: &str,
        _: bool,
    ) -> R {
        f.image_credential_provider_config = path(v);
        Ok(())
    }
    pub(in crate::cli) fn image_credential_provider_bin_dir(
        f: &mut NodeFlags,
        v: &str,
        _: bool,
    ) -> R {
        f.image_credential_provider_bin_dir = path(v);
        Ok(())
    }
    pub(in crate::cli) fn minimum_container_ttl_duration(f: &mut NodeFlags, v: &str, _: bool) -> R {
        f.minimum_container_ttl_duration =
            v.parse().map_err(|e: crate::ConfigError| e.to_string())?;
        Ok(())
    }
    pub(in crate::cli) fn maximum_dead_containers_per_container(
        f: &mut NodeFlags,
        v: &str,
        _: bool,
    ) -> R {
        f.maximum_dead_containers_per_container = int32(v)?;
        Ok(())
    }
    pub(in crate::cli) fn maximum_dead_containers(f: &mut NodeFlags, v: &str, _: bool) -> R {
        f.maximum_dead_containers = int32(v)?;
        Ok(())
    }
    pub(in crate::cli) fn experimental_mounter_path(f: &mut NodeFlags, v: &str, _: bool) -> R {
        f.experimental_mounter_path = path(v);
        Ok(())
    }
    pub(in crate::cli) fn experimental_allocatable_ignore_eviction(
        f: &mut NodeFlags,
        v: &str,
        _: bool,
    ) -> R {
        f.experimental_allocatable_ignore_eviction = bool_value(v)?;
        Ok(())
    }
}

/// The label namespaces a kubelet may set labels in (upstream
/// `kubeletapis.KubeletLabelNamespaces`).
pub const KUBELET_LABEL_NAMESPACES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

/// The `kubernetes.io` labels a kubelet may set (upstream `kubeletapis.KubeletLabels`).
pub const KUBELET_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "kubernetes.io/os",
    "kubernetes.io/arch",
];

fn label_namespace(key: &str) -> &str {
    key.split_once('/').map(|(ns, _)| ns).unwrap_or("")
}

fn is_kubernetes_label(key: &str) -> bool {
    let ns = label_namespace(key);
    ns == "kubernetes.io"
        || ns.ends_with(".kubernetes.io")
        || ns == "k8s.io"
        || ns.ends_with(".k8s.io")
}

/// Whether the kubelet may set label `key` on its Node (upstream `IsKubeletLabel`).
pub fn is_kubelet_label(key: &str) -> bool {
    if KUBELET_LABELS.contains(&key) {
        return true;
    }
    let ns = label_namespace(key);
    KUBELET_LABEL_NAMESPACES
        .iter()
        .any(|allowed| ns == *allowed || ns.ends_with(&format!(".{allowed}")))
}

fn is_label_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !name.is_empty()
        && name.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// Whether `key` is a qualified name (`[prefix/]name`), as label keys must be.
pub fn is_qualified_name(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
        None => is_label_name(key),
    }
}

/// Whether `value` may be a label value (empty, or a name of at most 63 characters).
pub fn is_label_value(value: &str) -> bool {
    value.is_empty() || is_label_name(value)
}

impl NodeFlags {
    /// Upstream's `ValidateKubeletFlags` and the cloud-provider check.
    pub(super) fn validate(&self) -> Result<(), FlagError> {
        let unknown: Vec<&str> = self
            .node_labels
            .keys()
            .map(String::as_str)
            .filter(|k| is_kubernetes_label(k) && !is_kubelet_label(k))
            .collect();
        if !unknown.is_empty() {
            return Err(FlagError::Invalid {
                message: format!(
                    "unknown 'kubernetes.io' or 'k8s.io' labels specified with --node-labels: {unknown:?}\n\
                     --node-labels in the 'kubernetes.io' namespace must begin with an allowed prefix ({}) or be in the specifically allowed set ({})",
                    KUBELET_LABEL_NAMESPACES.join(", "),
                    KUBELET_LABELS.join(", ")
                ),
            });
        }
        let invalid: Vec<String> = self
            .node_labels
            .iter()
            .filter_map(|(k, v)| {
                if !is_qualified_name(k) {
                    Some(format!("'{k}' - not a qualified name"))
                } else if !is_label_value(v) {
                    Some(format!("'{v}' - not a valid label value"))
                } else {
                    None
                }
            })
            .collect();
        if !invalid.is_empty() {
            return Err(FlagError::Invalid {
                message: format!("invalid node labels: {}", invalid.join("; ")),
            });
        }
        if !self.cloud_provider.is_empty() && self.cloud_provider != "external" {
            return Err(FlagError::Invalid {
                message: format!(
                    "--cloud-provider={:?}: in-tree cloud providers are not supported; set --cloud-provider=external and run an external cloud provider",
                    self.cloud_provider
                ),
            });
        }
        Ok(())
    }
}

/// The logging flags (upstream `component-base/logs`), which override the config file's
/// `logging` section.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoggingFlags {
    /// `-v` / `--v`: the verbosity (0 by default, as upstream).
    pub verbosity: Option<u32>,
    /// `--vmodule`: `pattern=N,...`.
    pub vmodule: Option<String>,
    /// `--logging-format`: `text` or `json`.
    pub format: Option<String>,
    /// `--log-flush-frequency`.
    pub flush_frequency: Option<Duration>,
    /// `--log-json-split-stream`, `--log-text-split-stream`.
    pub split_stream: Option<bool>,
    /// `--log-json-info-buffer-size`, `--log-text-info-buffer-size`.
    pub info_buffer_size: Option<String>,
}

/// Setters of the logging flags.
pub(super) mod set_log {
    use super::*;

    type R = Result<(), String>;

    pub(in crate::cli) fn verbosity(f: &mut LoggingFlags, v: &str) -> R {
        f.verbosity = Some(
            v.parse()
                .map_err(|_| format!("strconv.ParseUint: parsing {v:?}: invalid syntax"))?,
        );
        Ok(())
    }
    pub(in crate::cli) fn vmodule(f: &mut LoggingFlags, v: &str) -> R {
        for item in v.split(',').filter(|s| !s.is_empty()) {
            let ok = item
                .split_once('=')
                .is_some_and(|(p, n)| !p.is_empty() && n.parse::<u32>().is_ok());
            if !ok {
                return Err(format!("{item:?}: expected pattern=N"));
            }
        }
        // Repeated --vmodule flags add patterns.
        f.vmodule = Some(match f.vmodule.take() {
            Some(earlier) if !earlier.is_empty() => format!("{earlier},{v}"),
            _ => v.to_string(),
        });
        Ok(())
    }
    pub(in crate::cli) fn format(f: &mut LoggingFlags, v: &str) -> R {
        if !matches!(v, "text" | "json") {
            return Err("must be one of: json, text".into());
        }
        f.format = Some(v.to_string());
        Ok(())
    }
    pub(in crate::cli) fn flush_frequency(f: &mut LoggingFlags, v: &str) -> R {
        f.flush_frequency = Some(v.parse().map_err(|e: crate::ConfigError| e.to_string())?);
        Ok(())
    }
    pub(in crate::cli) fn split_stream(f: &mut LoggingFlags, v: &str) -> R {
        f.split_stream = Some(bool_value(v)?);
        Ok(())
    }
    pub(in crate::cli) fn info_buffer_size(f: &mut LoggingFlags, v: &str) -> R {
        v.parse::<crate::Quantity>()
            .map_err(|e: crate::ConfigError| e.to_string())?;
        f.info_buffer_size = Some(v.to_string());
        Ok(())
    }
}
