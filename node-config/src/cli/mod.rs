//! The upstream kubelet's command line: every flag the Linux kubelet v1.36 accepts, parsed
//! the way upstream's pflag parser does, so that kubeadm's `kubeadm-flags.env`, its systemd
//! drop-in and installers' unit files work unchanged.
//!
//! [`CommandLine::parse`] splits the arguments into:
//! - [`NodeFlags`]: the flags that are not configuration fields (`--kubeconfig`,
//!   `--bootstrap-kubeconfig`, `--cert-dir`, `--hostname-override`, `--node-ip`,
//!   `--node-labels`, `--root-dir`, `--config`, `--config-dir`, ...);
//! - a configuration patch: the deprecated flags that mirror `KubeletConfiguration` fields
//!   (`--max-pods`, `--cgroup-driver`, `--eviction-hard`, ...), which
//!   [`ConfigLoader::command_line`](crate::ConfigLoader::command_line) applies over the file
//!   and drop-ins with upstream's precedence;
//! - [`LoggingFlags`] (`-v`, `--vmodule`, `--logging-format`, ...);
//! - the deprecation warnings upstream prints for the flags given ([`CommandLine::warnings`]),
//!   and what to do ([`Action`]: run, print the help, print the version).
//!
//! Syntax as pflag: `--name=value`, `--name value`, `--bool-flag` (true) or
//! `--bool-flag=false`, `-v=3` / `-v 3` / `-v3`, `--` ending the flags, `_` read as `-` in
//! names (upstream's word-separator normalisation). A scalar flag given twice keeps the last
//! value; list flags append, map flags merge. An unknown flag, a missing or malformed value
//! and a positional argument are errors naming the flag or the argument.
//!
//! ```
//! use node_config::cli::{Action, CommandLine};
//! let cl = CommandLine::parse([
//!     "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
//!     "--kubeconfig=/etc/kubernetes/kubelet.conf",
//!     "--config=/var/lib/kubelet/config.yaml",
//!     "--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock",
//!     "--node-ip=10.0.0.5",
//!     "--max-pods", "50",
//! ])?;
//! assert_eq!(cl.action, Action::Run);
//! assert_eq!(cl.node.config.as_deref(), Some("/var/lib/kubelet/config.yaml".as_ref()));
//! assert_eq!(cl.config_patch()["maxPods"], 50);
//! // --container-runtime-endpoint and --max-pods belong in the config file now.
//! assert_eq!(cl.warnings().len(), 2);
//! assert!(cl.warnings()[1].starts_with("Flag --max-pods has been deprecated"));
//! assert!(CommandLine::parse(["--no-such-flag"]).unwrap_err().to_string().contains("--no-such-flag"));
//! # Ok::<(), node_config::cli::FlagError>(())
//! ```

mod flags;
mod table;
mod values;

use std::collections::BTreeSet;
use std::ffi::OsString;

use serde_json::Value;

pub use flags::{
    DEFAULT_CERT_DIR, DEFAULT_ROOT_DIR, KUBELET_LABEL_NAMESPACES, KUBELET_LABELS, LoggingFlags,
    NodeFlags, NodeIp, is_kubelet_label, is_label_value, is_qualified_name,
};
pub use table::{CONFIG_FILE_DEPRECATION, FLAGS, FlagKind, FlagSpec, FlagTarget};

/// The Kubernetes version whose kubelet this one stands in for.
pub const KUBERNETES_VERSION: &str = "v1.36.0";

/// The version string the kubelet reports (`kubelet --version`, `nodeInfo.kubeletVersion`):
/// upstream's `v1.36.0` with this crate's version as semver build metadata, so that tools
/// that parse it as a Kubernetes version keep working.
pub fn kubelet_version() -> String {
    format!(
        "{KUBERNETES_VERSION}+node-agent.{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run the kubelet.
    Run,
    /// `--help` / `-h`: print [`usage`] and exit 0.
    Help,
    /// `--version`: print `Kubernetes <version>` and exit 0.
    Version,
    /// `--version=raw`: print the version information in detail and exit 0.
    VersionRaw,
}

/// A command line that cannot be parsed; messages as upstream's (`unknown flag: --foo`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlagError {
    /// A flag that the kubelet does not have.
    #[error("unknown flag: {flag}")]
    Unknown {
        /// The flag as given (`--foo`, `-x`).
        flag: String,
    },
    /// A flag that needs a value was last on the line.
    #[error("flag needs an argument: {flag}")]
    MissingValue {
        /// The flag (`--max-pods`).
        flag: String,
    },
    /// A value the flag cannot take.
    #[error("invalid argument {value:?} for \"{flag}\" flag: {reason}")]
    InvalidValue {
        /// The flag (`--max-pods`).
        flag: String,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// An argument that is not a flag (the kubelet takes none).
    #[error("unknown command {argument:?}")]
    Positional {
        /// The argument.
        argument: String,
    },
    /// An argument that is not valid UTF-8.
    #[error("argument {argument:?} is not valid UTF-8")]
    NotUtf8 {
        /// The argument, lossily converted.
        argument: String,
    },
    /// Flags that parse but contradict upstream's rules (`--node-labels` in a reserved
    /// namespace, an unsupported `--cloud-provider`).
    #[error("{message}")]
    Invalid {
        /// Upstream's message.
        message: String,
    },
}

/// A parsed kubelet command line.
#[derive(Debug, Clone)]
pub struct CommandLine {
    /// What to do.
    pub action: Action,
    /// The flags that are not configuration fields.
    pub node: NodeFlags,
    /// The logging flags.
    pub logging: LoggingFlags,
    /// `--version=vX.Y.Z...`: the version to report instead of [`kubelet_version`] (same
    /// major, minor and patch).
    pub version_override: Option<String>,
    patch: Value,
    given: BTreeSet<&'static str>,
    warnings: Vec<String>,
}

impl Default for CommandLine {
    fn default() -> Self {
        CommandLine {
            action: Action::Run,
            node: NodeFlags::default(),
            logging: LoggingFlags::default(),
            version_override: None,
            patch: Value::Object(serde_json::Map::new()),
            given: BTreeSet::new(),
            warnings: Vec::new(),
        }
    }
}

impl CommandLine {
    /// Parses the arguments after the program name.
    pub fn parse<I, S>(args: I) -> Result<CommandLine, FlagError>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let args = args
            .into_iter()
            .map(|a| {
                let a: OsString = a.into();
                a.into_string().map_err(|a| FlagError::NotUtf8 {
                    argument: a.to_string_lossy().into_owned(),
                })
            })
            .collect::<Result<Vec<String>, _>>()?;
        let mut cl = CommandLine::default();
        let mut rest = args.into_iter();
        while let Some(arg) = rest.next() {
            if arg == "--" {
                if let Some(argument) = rest.next() {
                    return Err(FlagError::Positional { argument });
                }
                break;
            }
            let (spec, shown, inline) = if let Some(long) = arg.strip_prefix("--") {
                let (name, inline) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (long, None),
                };
                let normalized = name.replace('_', "-");
                let spec = table::lookup(&normalized).ok_or_else(|| FlagError::Unknown {
                    flag: format!("--{name}"),
                })?;
                (spec, format!("--{}", spec.name), inline)
            } else if let Some(short) = arg.strip_prefix('-').filter(|s| !s.is_empty()) {
                let mut chars = short.chars();
                let c = chars.next().unwrap_or_default();
                let spec = table::lookup_short(c).ok_or_else(|| FlagError::Unknown {
                    flag: format!("-{c}"),
                })?;
                let tail = chars.as_str();
                let inline = match tail.strip_prefix('=') {
                    Some(v) => Some(v.to_string()),
                    None if tail.is_empty() => None,
                    None => Some(tail.to_string()),
                };
                (spec, format!("-{c}, --{}", spec.name), inline)
            } else {
                return Err(FlagError::Positional { argument: arg });
            };
            let value = match inline {
                Some(v) => v,
                // pflag's NoOptDefVal: a bare boolean flag means true.
                None if matches!(
                    spec.kind,
                    FlagKind::Bool | FlagKind::Help | FlagKind::Version
                ) =>
                {
                    "true".to_string()
                }
                None => rest.next().ok_or_else(|| FlagError::MissingValue {
                    flag: shown.clone(),
                })?,
            };
            cl.set(spec, &shown, &value)?;
        }
        cl.node.validate()?;
        Ok(cl)
    }

    fn set(&mut self, spec: &'static FlagSpec, shown: &str, value: &str) -> Result<(), FlagError> {
        let invalid = |reason: String| FlagError::InvalidValue {
            flag: shown.to_string(),
            value: value.to_string(),
            reason,
        };
        let repeated = !self.given.insert(spec.name);
        if !repeated && let Some(message) = spec.deprecated {
            self.warnings.push(format!(
                "Flag --{} has been deprecated, {message}",
                spec.name
            ));
        }
        match &spec.target {
            FlagTarget::Config(path) => {
                let parsed = values::config_value(spec.kind, value).map_err(invalid)?;
                values::set_path(&mut self.patch, path, parsed, spec.kind, repeated);
            }
            FlagTarget::Node(set) => set(&mut self.node, value, repeated).map_err(invalid)?,
            FlagTarget::Logging(set) => set(&mut self.logging, value).map_err(invalid)?,
            FlagTarget::Help => {
                if values::bool_value(value).map_err(invalid)? {
                    self.action = Action::Help;
                }
            }
            FlagTarget::Version => match value {
                "raw" => self.action = Action::VersionRaw,
                v if v.starts_with('v') => {
                    let base = KUBERNETES_VERSION;
                    let same = v.strip_prefix(base).is_some_and(|rest| {
                        rest.is_empty() || rest.starts_with('-') || rest.starts_with('+')
                    });
                    if !same {
                        return Err(invalid(format!(
                            "version {v:?} must match major/minor/patch of default version {base:?}"
                        )));
                    }
                    self.version_override = Some(v.to_string());
                }
                v => {
                    if values::bool_value(v).map_err(invalid)? {
                        self.action = Action::Version;
                    }
                }
            },
            FlagTarget::Accepted => {
                values::config_value(spec.kind, value).map_err(invalid)?;
            }
        }
        Ok(())
    }

    /// The configuration fields set by flags, as a JSON merge patch of the v1beta1 document
    /// (`{"maxPods": 50, "evictionHard": {...}}`). Map-valued fields replace the file's map,
    /// except `featureGates`, which merge (see [`ConfigLoader`](crate::ConfigLoader)).
    pub fn config_patch(&self) -> &Value {
        &self.patch
    }

    /// Whether the flag `name` (without dashes) was given.
    pub fn is_set(&self, name: &str) -> bool {
        self.given.contains(name)
    }

    /// The warnings upstream prints for the deprecated flags given, once per flag, in the
    /// order given: `Flag --max-pods has been deprecated, This parameter should be set via
    /// the config file ...`.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// The text `--help` prints: every flag, its value type, and the configuration field it
/// sets or its deprecation.
pub fn usage() -> String {
    let mut out = String::from(
        "The kubelet is the primary node agent that runs on each node.\n\nUsage:\n  kubelet [flags]\n\nFlags:\n",
    );
    for spec in FLAGS {
        let name = match spec.shorthand {
            Some(c) => format!("  -{c}, --{}", spec.name),
            None => format!("      --{}", spec.name),
        };
        let what = match &spec.target {
            FlagTarget::Config(path) => format!("sets {path}"),
            _ => spec.help.to_string(),
        };
        let deprecated = if spec.deprecated.is_some() {
            " (DEPRECATED)"
        } else {
            ""
        };
        out.push_str(&format!(
            "{name} {}\t{what}{deprecated}\n",
            spec.kind.value_name()
        ));
    }
    out
}

#[cfg(test)]
mod tests;
