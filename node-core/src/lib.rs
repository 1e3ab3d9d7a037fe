//! The engine and shared vocabulary of a Kubernetes node agent.
//!
//! node-core owns what every other crate of the workspace talks in terms of: the
//! [`Runtime`](runtime::Runtime) trait with the runtime-neutral types (pods, containers, their
//! statuses, runtime status); pod sources (manifest directory, HTTP URL) and their merge; the
//! pod manager; per-pod workers; the sync loop; the pod lifecycle event generator (PLEG); pod
//! status generation and the read-only HTTP endpoints. The seams it needs from volumes,
//! eviction, status and images are traits declared here, so a custom agent can replace any one
//! of them.
#![forbid(unsafe_code)]

pub mod admission;
#[cfg(feature = "api")]
#[cfg(feature = "api")]
pub mod api_events;
#[cfg(feature = "api")]
pub mod api_status;
pub mod config;
pub mod container_logs;
pub mod downward;
pub mod events;
pub mod expansion;
pub mod kubelet;
#[cfg(feature = "api")]
pub mod listers;
pub mod metrics;
pub mod objects;
pub mod pod_manager;
pub mod pod_workers;
pub mod prober;
pub mod qos;
pub mod resize;
pub mod runtime;
pub mod server;
#[cfg(feature = "api")]
pub mod services;
pub mod stats;
pub mod status;
#[cfg(any(test, feature = "testing", feature = "control-plane"))]
pub mod testing;
pub mod volumes;

pub use k8s_openapi;

/// The version of the node agent crates, reported by the example kubelet.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
