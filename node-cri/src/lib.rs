//! CRI v1 for a Kubernetes node agent: the client, and a containerd it can manage itself.
//!
//! - [`CriClient`]: every RuntimeService and ImageService call of CRI v1 over the runtime's
//!   unix socket, with per-call deadlines (`runtimeRequestTimeout`; pulls have their own),
//!   reconnection after a runtime restart, and errors ([`CriError`]) that say which call failed,
//!   on what object, and why.
//! - [`ManagedContainerd`]: writes a private containerd configuration (CRI plugin, runc,
//!   cgroupfs or systemd driver, sandbox image, a bridge + host-local CNI network of its own,
//!   plain-HTTP local registries), starts containerd on a private socket, root and state, waits
//!   for RuntimeReady and NetworkReady, imports the OCI image archives of an images directory
//!   (air-gapped nodes), restarts it with back-off if it dies, and stops it cleanly.
//!
//! The default `node_core::Runtime` and `node_images::ImageService` implementations built on
//! this client come with the standalone-kubelet and images work.
//!
//! ```no_run
//! use node_cri::{ManagedContainerd, ManagedContainerdConfig};
//!
//! # async fn run() -> Result<(), node_cri::CriError> {
//! let containerd = ManagedContainerd::start(ManagedContainerdConfig::new("/var/lib/node-agent/containerd")).await?;
//! let version = containerd.client().version().await?;
//! println!("{} {}", version.runtime_name, version.runtime_version);
//! containerd.stop().await?;
//! # Ok(()) }
//! ```

pub mod client;
pub mod containerd;
pub mod error;
#[cfg(feature = "harness")]
pub mod harness;
pub mod images;
pub mod log_rotation;
pub mod runtime;

pub use client::{ClientOptions, ContainerEventStream, CriClient};
pub use containerd::{
    CgroupDriver, ContainerdState, ManagedContainerd, ManagedContainerdConfig, PodNetwork,
};
pub use error::CriError;
pub use images::CriImageService;
pub use k8s_cri;
pub use k8s_cri::v1 as cri;
pub use tonic;
