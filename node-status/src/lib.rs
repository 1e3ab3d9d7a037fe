//! Node and pod statistics and node status for a Kubernetes node agent.
//!
//! node-status owns the `StatsProvider` trait with its Linux implementation (`/proc`,
//! cgroups v1 and v2, `statfs`, CRI stats), the summary API, the node status setters, node
//! registration and the node lease.
//!
//! Status: [`machine`] (the node's addresses, memory and cpu) is here; the rest comes with
//! the node-status and cluster issues (see the README's status section).
#![forbid(unsafe_code)]

pub mod machine;
