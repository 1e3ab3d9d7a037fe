//! Test harnesses:
//!
//! - [`control_plane`] (feature `control-plane`): etcd, kube-apiserver and, on request,
//!   kube-controller-manager on private ports with a throwaway CA, as controller-runtime's
//!   envtest starts them, plus the credentials (client certificates, bootstrap tokens,
//!   kubeconfig files) a node needs and the API server's audit log.
//! - [`fake`] (feature `testing`): a fake runtime and a fake volume manager, for tests of the
//!   engine under paused time without containerd.

#[cfg(feature = "control-plane")]
pub mod control_plane;
#[cfg(any(test, feature = "testing"))]
pub mod fake;
