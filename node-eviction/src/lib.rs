//! Eviction for a Kubernetes node agent, as upstream's `pkg/kubelet/eviction`.
//!
//! - [`signals`]: the eviction signals observed from the stats summary (`memory.available`,
//!   `allocatableMemory.available`, `nodefs.*`, `imagefs.*`, `containerfs.*`,
//!   `pid.available`) and the thresholds (`evictionHard`, `evictionSoft`) they meet;
//! - [`rank`]: which pod goes first under each pressure, and upstream's eviction message;
//! - [`manager::EvictionManager`]: a pass every 10 s and at once when a notifier fires; the
//!   MemoryPressure / DiskPressure / PIDPressure conditions (held for
//!   `evictionPressureTransitionPeriod`); node-level reclaim before evicting for disk; one pod
//!   evicted per pass through a [`manager::PodEvictor`] (the pod workers), with status
//!   `Failed`/`Evicted` and a `DisruptionTarget` condition; admission under pressure;
//! - [`engine`]: the manager on the kubelet engine (its pod manager and pod workers; the
//!   runtime's container GC and node-images' image GC for node-level reclaim);
//! - [`notifier`]: the [`notifier::ThresholdNotifier`] trait, with memory cgroup threshold
//!   events on cgroup v1 and a 500 ms poll on v2 (see the module for why).
#![forbid(unsafe_code)]

pub mod engine;
pub mod manager;
pub mod notifier;
pub mod rank;
pub mod signals;

pub use manager::{EvictionConfig, EvictionManager, NodeReclaimer, PodEvictor};
pub use notifier::{MemcgNotifier, PollNotifier, ThresholdNotifier};
