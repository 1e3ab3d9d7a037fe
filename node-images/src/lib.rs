//! Images for a Kubernetes node agent.
//!
//! - [`service::ImageService`]: the seam to the runtime's images (list, status, pull with
//!   credentials, remove, filesystem usage). node-cri provides the CRI-backed implementation.
//! - [`manager::ImageManager`]: `ensure_image_exists` as upstream: the default `:latest` tag,
//!   pull policies Always / IfNotPresent / Never, `ErrImagePull` then `ImagePullBackOff` with a
//!   per-image back-off (10s doubling to 300s), serialized or bounded-parallel pulls, and the
//!   `Pulling` / `Pulled` / `Failed` / `BackOff` events.
//! - [`credentials::Keyring`]: pull secrets (`kubernetes.io/dockerconfigjson`,
//!   `kubernetes.io/dockercfg`) and docker config files matched to an image's registry host,
//!   port and path prefix.
//! - [`reference`]: image references, validation, default tag and pull policy.
//! - [`oci`]: deterministic OCI image archives built locally (busybox, pause) for air-gapped
//!   nodes and tests.
//!
//! ```no_run
//! use std::sync::Arc;
//! use node_images::credentials::Keyring;
//! use node_images::manager::{ImageManager, PullConcurrency};
//! # async fn demo(service: Arc<dyn node_images::service::ImageService>,
//! #               pod: node_core::k8s_openapi::api::core::v1::Pod) {
//! let manager = ImageManager::new(service, Arc::new(node_core::events::LogRecorder), PullConcurrency::Serial);
//! let container = &pod.spec.as_ref().unwrap().containers[0];
//! match manager.ensure_image_exists(&pod, container, &Keyring::new()).await {
//!     Ok(image) => println!("ready: {}", image.id),
//!     Err(e) => println!("{}: {}", e.reason, e.message),
//! }
//! # }
//! ```
#![forbid(unsafe_code)]

pub use oci_spec;

pub mod credentials;
pub mod gc;
pub mod manager;
pub mod oci;
pub mod reference;
pub mod service;
