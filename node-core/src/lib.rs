//! The engine and shared vocabulary of a Kubernetes node agent.
//!
//! node-core owns what every other crate of the workspace talks in terms of: the `Runtime`,
//! `StreamingRuntime` and `CommandRunner` traits with the runtime-neutral types (pods,
//! containers, their statuses, images, runtime status); pod sources (manifest directory,
//! HTTP URL, API server) and their merge; the pod manager; per-pod workers; the sync loop;
//! the pod lifecycle event generator (PLEG); probes; the status manager and events. The seams
//! it needs from volumes, eviction, status and images are traits declared here, so a custom
//! agent can replace any one of them.
//!
//! This crate is being built in order: the foundation issue set up the workspace around it;
//! the runtime traits, pod sources, pod workers, sync loop and PLEG arrive with the
//! standalone-kubelet issue (see the README's status section).
#![forbid(unsafe_code)]

/// The version of the node agent crates, reported by the example kubelet.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
