//! Node and pod statistics and node status for a Kubernetes node agent.
//!
//! node-status owns the `StatsProvider` trait with its Linux implementation (`/proc`,
//! cgroups v1 and v2, `statfs`, CRI stats), the summary API, the node status setters, node
//! registration and the node lease.
//!
//! Here now: [`machine`] (the node's addresses, memory and cpu), [`status`] (the node status
//! setters, pure), [`registration`] (the Node as upstream registers and reconciles it),
//! [`updater`] (posting the status when it changed or the report is due), [`lease`] (the
//! node lease) and [`stats`] (the `StatsProvider` trait, its Linux implementation and, with
//! the `server` feature, the `/stats/summary` router).
#![forbid(unsafe_code)]

pub mod certificate;
pub mod client;
mod error;
pub mod lease;
pub mod machine;
pub mod pod_cgroups;
pub mod ratelimit;
pub mod registration;
pub mod rotation;
pub mod source;
pub mod stats;
pub mod status;
pub mod updater;

pub use error::StatusError;
