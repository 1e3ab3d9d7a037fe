//! Volumes for a Kubernetes node agent.
//!
//! node-volumes owns the `VolumePlugin` trait and a registry a custom agent can extend; the
//! standard plugins (emptyDir, hostPath, configMap, secret, downwardAPI, projected); the
//! volume manager that sets volumes up before a pod's containers start and tears them down
//! after it terminates; and the pod directory layout under the kubelet's root directory
//! (`<rootDir>/pods/<uid>/volumes/<plugin>/<volume>`).
//!
//! Status: the crate is a placeholder in the workspace layout; its implementation is the
//! subject of the volumes issue (see the README's status section).
#![forbid(unsafe_code)]
