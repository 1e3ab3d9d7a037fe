//! Posting the node status (upstream `syncNodeStatus` / `tryUpdateNodeStatus`): every
//! `nodeStatusUpdateFrequency` the status is computed, and sent only when it changed or when
//! `nodeStatusReportFrequency` has passed since the last report, as a strategic-merge patch
//! of the `status` subresource (so that conditions other components own, such as
//! NetworkUnavailable, are left alone).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Node, NodeStatus};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::error::StatusError;
use crate::status::{NodeStatusInputs, node_status, status_changed};

/// The names of the status fields that differ (for the log).
fn changed_fields(old: &NodeStatus, new: &NodeStatus) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.addresses != new.addresses {
        out.push("addresses");
    }
    if old.capacity != new.capacity || old.allocatable != new.allocatable {
        out.push("capacity");
    }
    if status_changed(
        &NodeStatus {
            conditions: old.conditions.clone(),
            ..Default::default()
        },
        &NodeStatus {
            conditions: new.conditions.clone(),
            ..Default::default()
        },
    ) {
        out.push("conditions");
    }
    if old.images != new.images {
        out.push("images");
    }
    if old.node_info != new.node_info {
        out.push("nodeInfo");
    }
    if old.runtime_handlers != new.runtime_handlers {
        out.push("runtimeHandlers");
    }
    out
}

/// How many times one status update is tried (upstream `nodeStatusUpdateRetry`).
pub const NODE_STATUS_UPDATE_RETRY: usize = 5;

/// Where the node status comes from: the machine, the runtime, the eviction manager, the
/// engine's health. The binary composes it from the node's parts.
#[async_trait]
pub trait NodeStatusSource: Send + Sync {
    /// The inputs of the status, as they are now.
    async fn inputs(&self) -> NodeStatusInputs;
}

/// Computes and posts the node status.
pub struct NodeStatusUpdater {
    nodes: Api<Node>,
    node: String,
    source: Arc<dyn NodeStatusSource>,
    update_frequency: Duration,
    report_frequency: Duration,
    /// The status last computed (its conditions' transition times carry over).
    previous: Option<NodeStatus>,
    /// The status last sent, and when.
    sent: Option<(NodeStatus, Instant)>,
}

impl NodeStatusUpdater {
    /// An updater of `node`'s status every `update_frequency`, reporting an unchanged status
    /// every `report_frequency`.
    pub fn new(
        client: Client,
        node: &str,
        source: Arc<dyn NodeStatusSource>,
        update_frequency: Duration,
        report_frequency: Duration,
    ) -> Self {
        NodeStatusUpdater {
            nodes: Api::all(client),
            node: node.to_string(),
            source,
            update_frequency,
            report_frequency,
            previous: None,
            sent: None,
        }
    }

    /// Starts from the Node as registered, so that a restarted kubelet keeps the conditions'
    /// transition times.
    pub fn with_registered(mut self, node: &Node) -> Self {
        self.previous = node.status.clone();
        self
    }

    /// One update: computes the status and sends it when it changed or the report is due.
    /// Returns whether it was sent.
    pub async fn update(&mut self) -> Result<bool, StatusError> {
        let inputs = self.source.inputs().await;
        let status = node_status(self.previous.as_ref(), &inputs, Timestamp::now());
        self.previous = Some(status.clone());
        if let Some((sent, at)) = &self.sent
            && !status_changed(sent, &status)
            && at.elapsed() < self.report_frequency
        {
            return Ok(false);
        }
        let patch = Node {
            status: Some(status.clone()),
            ..Default::default()
        };
        self.nodes
            .patch_status(
                &self.node,
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
            .map_err(|e| StatusError::api("update node status", &self.node, e))?;
        debug!(node = %self.node, changed = ?self.sent.as_ref().map(|(sent, _)| changed_fields(sent, &status)), "node status sent");
        self.sent = Some((status, Instant::now()));
        Ok(true)
    }

    /// Updates every `update_frequency` until `stop`, each update tried up to
    /// [`NODE_STATUS_UPDATE_RETRY`] times.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            for attempt in 1..=NODE_STATUS_UPDATE_RETRY {
                match self.update().await {
                    Ok(_) => break,
                    Err(e) => {
                        warn!(node = %self.node, attempt, error = %e, "error updating node status, will retry");
                    }
                }
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(self.update_frequency) => {}
            }
        }
    }
}
