//! The node status source of a node agent built on node-core: the machine (read once), the
//! runtime's version and readiness, the runtime's images, what is reserved from pods.

use std::sync::Arc;

use async_trait::async_trait;
use node_core::kubelet::Health;
use node_core::runtime::{Runtime, RuntimeStatus};

use crate::status::{ImageInfo, NodeStatusInputs};
use crate::updater::NodeStatusSource;

/// The runtime's images, for the node status (the binary lists them through its image
/// service).
#[async_trait]
pub trait ImageSource: Send + Sync {
    /// The images the runtime holds; an error leaves the list empty until the next update.
    async fn images(&self) -> Vec<ImageInfo>;
}

/// Why the runtime makes the node not ready, in upstream's words: its status call failing
/// (`container runtime is down`), `RuntimeReady` or `NetworkReady` false
/// (`container runtime network not ready: NetworkReady=false reason:... message:...`).
pub fn runtime_not_ready(status: Result<&RuntimeStatus, String>) -> Vec<String> {
    let status = match status {
        Ok(status) => status,
        Err(_) => return vec!["container runtime is down".to_string()],
    };
    status
        .runtime_error()
        .into_iter()
        .chain(status.network_error())
        .collect()
}

/// Why the node is not ready, in upstream's order: the runtime down, then PLEG's health check
/// (`PLEG is not healthy: <why>`), then the runtime's and the network's conditions.
pub fn not_ready(status: Result<&RuntimeStatus, String>, pleg: Option<String>) -> Vec<String> {
    let down = status.is_err();
    let mut out = runtime_not_ready(status);
    if let Some(why) = pleg {
        out.insert(usize::from(down), format!("PLEG is not healthy: {why}"));
    }
    out
}

/// A [`NodeStatusSource`] over a node-core [`Runtime`]: the fixed parts of `base` (machine,
/// addresses, limits, versions) with the runtime's version, readiness, handlers, features and
/// images, and the engine's PLEG health, filled in at each update.
pub struct RuntimeStatusSource {
    base: NodeStatusInputs,
    runtime: Arc<dyn Runtime>,
    images: Option<Arc<dyn ImageSource>>,
    health: Option<Arc<Health>>,
    pressure: Option<Arc<dyn PressureSource>>,
}

/// Where the pressure conditions come from (the eviction manager).
pub trait PressureSource: Send + Sync {
    /// The pressure conditions that hold now.
    fn pressure(&self) -> crate::status::Pressure;
}

impl RuntimeStatusSource {
    /// The source; `base` holds everything but the runtime's parts.
    pub fn new(base: NodeStatusInputs, runtime: Arc<dyn Runtime>) -> Self {
        RuntimeStatusSource {
            base,
            runtime,
            images: None,
            health: None,
            pressure: None,
        }
    }

    /// Reports `pressure`'s MemoryPressure, DiskPressure and PIDPressure.
    pub fn with_pressure(mut self, pressure: Arc<dyn PressureSource>) -> Self {
        self.pressure = Some(pressure);
        self
    }

    /// Reports the engine's PLEG health in the Ready condition.
    pub fn with_health(mut self, health: Arc<Health>) -> Self {
        self.health = Some(health);
        self
    }

    /// Lists images through `images`.
    pub fn with_images(mut self, images: Arc<dyn ImageSource>) -> Self {
        self.images = Some(images);
        self
    }
}

#[async_trait]
impl NodeStatusSource for RuntimeStatusSource {
    async fn inputs(&self) -> NodeStatusInputs {
        let mut inputs = self.base.clone();
        if let Ok(v) = self.runtime.version().await {
            inputs.container_runtime_version = format!("{}://{}", v.name, v.version);
        }
        let status = self.runtime.status().await;
        let pleg = self.health.as_ref().and_then(|h| h.pleg_error());
        inputs.not_ready = not_ready(status.as_ref().map_err(ToString::to_string), pleg);
        if let Ok(status) = &status {
            inputs.runtime_handlers = status.handlers.clone();
            inputs.runtime_features = status.features;
        }
        if let Some(images) = &self.images {
            inputs.images = images.images().await;
        }
        if let Some(pressure) = &self.pressure {
            inputs.pressure = pressure.pressure();
        }
        inputs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use node_core::runtime::RuntimeCondition;

    fn condition(kind: &str, status: bool) -> RuntimeCondition {
        RuntimeCondition {
            kind: kind.into(),
            status,
            reason: if status {
                String::new()
            } else {
                "NetworkPluginNotReady".into()
            },
            message: if status {
                String::new()
            } else {
                "Network plugin returns error: cni plugin not initialized".into()
            },
        }
    }

    #[test]
    fn not_ready_messages_as_upstream() {
        let ready = RuntimeStatus {
            conditions: vec![
                condition("RuntimeReady", true),
                condition("NetworkReady", true),
            ],
            ..Default::default()
        };
        assert!(runtime_not_ready(Ok(&ready)).is_empty());
        let no_network = RuntimeStatus {
            conditions: vec![
                condition("RuntimeReady", true),
                condition("NetworkReady", false),
            ],
            ..Default::default()
        };
        assert_eq!(
            runtime_not_ready(Ok(&no_network)),
            [
                "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized"
            ]
        );
        assert_eq!(
            runtime_not_ready(Err("unavailable".into())),
            ["container runtime is down"]
        );
    }

    #[test]
    fn pleg_health_joins_the_reasons_in_upstream_order() {
        let no_network = RuntimeStatus {
            conditions: vec![
                condition("RuntimeReady", true),
                condition("NetworkReady", false),
            ],
            ..Default::default()
        };
        let pleg = || Some("pleg has yet to be successful".to_string());
        let reasons = not_ready(Ok(&no_network), pleg());
        assert_eq!(reasons.len(), 2);
        assert_eq!(
            reasons[0],
            "PLEG is not healthy: pleg has yet to be successful"
        );
        assert!(reasons[1].starts_with("container runtime network not ready"));
        assert_eq!(
            not_ready(Err("unavailable".into()), pleg()),
            [
                "container runtime is down",
                "PLEG is not healthy: pleg has yet to be successful"
            ]
        );
        assert!(
            not_ready(
                Ok(&RuntimeStatus {
                    conditions: vec![
                        condition("RuntimeReady", true),
                        condition("NetworkReady", true)
                    ],
                    ..Default::default()
                }),
                None
            )
            .is_empty()
        );
    }
}
