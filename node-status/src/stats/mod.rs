//! The `StatsProvider` trait, its Linux implementation and the summary API.
//!
//! [`LinuxStatsProvider`] reads the node's figures from the cgroup hierarchy (v1 or v2, see
//! [`cgroup::Cgroups`]), `/proc` ([`host::ProcFs`]) and `statfs` of the kubelet's root
//! directory; the pods' from the runtime ([`node_core::stats::RuntimeStatsSource`]: CRI
//! `ListPodSandboxStats`/`ListContainerStats`/`ImageFsInfo`) with CPU, memory and processes
//! taken from each pod's cgroup, container logs from the pod log directory and volumes from
//! the pods' directories. `usageNanoCores` is the rate since the previous summary (absent on
//! the first). With the `server` feature, [`router`] serves `GET /stats/summary` in
//! upstream's `stats/v1alpha1` JSON, and the same figures as Prometheus metrics
//! ([`metrics`]: `/metrics/resource`, `/metrics/cadvisor`).

pub mod cgroup;
pub mod host;
mod linux;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
mod router;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use node_core::runtime::RuntimeError;
use node_core::stats::Summary;

pub use linux::{LinuxStatsConfig, LinuxStatsProvider};
#[cfg(feature = "server")]
pub use router::router;

/// Node and pod statistics, as the summary API, eviction and `/metrics/resource` read them.
#[async_trait]
pub trait StatsProvider: Send + Sync {
    /// The node's and its pods' figures now.
    async fn summary(&self) -> Result<Summary, StatsError>;

    /// The node's figures only (`pods` empty): what the eviction manager observes at each
    /// pass, at a fraction of a full summary's cost. Defaults to the full summary.
    async fn node_summary(&self) -> Result<Summary, StatsError> {
        self.summary().await
    }
}

/// Why statistics could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatsError {
    /// A file could not be read (or `statfs` failed).
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A file's content is not what the kernel writes.
    #[error("parsing {}: {what}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The runtime failed its stats calls.
    #[error("the container runtime's stats: {0}")]
    Runtime(#[from] RuntimeError),
}

impl StatsError {
    fn parse(path: &Path, what: impl Into<String>) -> Self {
        StatsError::Parse {
            path: path.to_path_buf(),
            what: what.into(),
        }
    }
}
