//! Eviction for a Kubernetes node agent.
//!
//! node-eviction owns the eviction signals and thresholds (`memory.available`,
//! `nodefs.available`, ... as configured by `evictionHard` / `evictionSoft`), the eviction
//! manager that ranks and evicts pods under pressure, admission of new pods under pressure, and
//! the `ThresholdNotifier` trait with its Linux memory-cgroup implementation (eventfd
//! notifications instead of polling). It reads stats through node-status and reclaims disk
//! through node-images' image GC.
//!
//! Status: the crate is a placeholder in the workspace layout; its implementation is the
//! subject of the eviction issue (see the README's status section).
#![forbid(unsafe_code)]
