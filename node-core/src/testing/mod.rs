//! Test harnesses (feature `control-plane`): real components the node agent's API-facing code is
//! tested against.
//!
//! - [`control_plane`]: etcd, kube-apiserver and, on request, kube-controller-manager on private
//!   ports with a throwaway CA, as controller-runtime's envtest starts them, plus the
//!   credentials (client certificates, bootstrap tokens, kubeconfig files) a node needs and the
//!   API server's audit log.

pub mod control_plane;
