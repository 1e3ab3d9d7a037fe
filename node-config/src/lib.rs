//! `KubeletConfiguration` (`kubelet.config.k8s.io/v1beta1`) for the node agent: the file
//! format, upstream defaults, loading (YAML or JSON, relative paths, a `--config-dir` drop-in
//! directory, command-line flag precedence), validation and printing of the effective
//! configuration.
//!
//! The main type is [`KubeletConfiguration`], a resolved configuration with every field set
//! and typed (`std::time::Duration`, [`Quantity`], `u16` ports, `PathBuf`, `IpAddr`, enums).
//! [`KubeletConfiguration::default()`] is the upstream v1beta1 default configuration (v1.36).
//! The wire form, where every field is optional so that "unset" and "zero" differ, lives in
//! [`v1beta1`].
//!
//! Get a configuration with [`load`] (one file) or [`ConfigLoader`] (file, drop-in directory
//! and [`FlagOverrides`]). Problems are reported as one [`ConfigError`]: decoding errors name
//! the field path (`authentication.webhook.cacheTTL`), validation lists every broken rule
//! with its field (`imageGCHighThresholdPercent`, `evictionHard[memory.available]`).
//!
//! Upstream v1beta1 fields this crate does not model (`logging`, `cpuManagerPolicy`, ...) are
//! accepted and kept verbatim in [`KubeletConfiguration::uninterpreted`], so files written for
//! the upstream kubelet (for example by kubeadm) load; any other unknown field is an error.
//!
//! Besides the configuration itself the crate provides Go-style durations ([`Duration`]),
//! Kubernetes quantities ([`Quantity`]), typed eviction thresholds ([`eviction`]) and the
//! upstream defaulting rules ([`defaults`]).
//!
//! ```
//! use node_config::KubeletConfiguration;
//!
//! let config: KubeletConfiguration = r#"
//! apiVersion: kubelet.config.k8s.io/v1beta1
//! kind: KubeletConfiguration
//! staticPodPath: /etc/kubernetes/manifests
//! maxPods: 50
//! evictionHard:
//!   memory.available: 200Mi
//! "#
//! .parse()?;
//! assert_eq!(config.max_pods, 50);
//! assert_eq!(config.sync_frequency, std::time::Duration::from_secs(60));
//! assert_eq!(config.eviction_thresholds()?.len(), 1);
//!
//! // The effective configuration, loadable again.
//! let yaml = config.to_yaml()?;
//! assert_eq!(yaml.parse::<KubeletConfiguration>()?, config);
//! # Ok::<(), node_config::ConfigError>(())
//! ```

#![forbid(unsafe_code)]

pub mod cli;
pub mod defaults;
mod duration;
mod error;
pub mod eviction;
pub mod features;
mod flags;
mod load;
mod quantity;
mod resolve;
mod types;
pub mod v1beta1;
mod validation;

pub use serde_json;

pub use duration::Duration;
pub use error::{ConfigError, FieldError};
pub use eviction::{EvictionThreshold, Signal, ThresholdValue};
pub use flags::{
    FlagOverrides, parse_bool_flag, parse_feature_gates_flag, parse_map_flag, parse_taints_flag,
};
pub use load::{ConfigLoader, load};
pub use quantity::{Quantity, QuantityFormat};
pub use types::{
    Authentication, Authorization, AuthorizationMode, CgroupDriver, HairpinMode,
    KubeletConfiguration, NodeAllocatableEnforcement, SwapBehavior, Taint, TaintEffect,
};
