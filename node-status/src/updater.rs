//! Posting the node status (upstream `syncNodeStatus` / `tryUpdateNodeStatus`): every
//! `nodeStatusUpdateFrequency` the status is computed, and sent only when it changed or when
//! `nodeStatusReportFrequency` has passed since the last report, as a strategic-merge patch
//! of the `status` subresource (so that conditions other components own, such as
//! NetworkUnavailable, are left alone).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, NodeStatus};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, WatchEvent, WatchParams};
use kube::{Api, Client};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::error::StatusError;
use crate::status::{NodeStatusInputs, node_status, status_changed};

/// Whether the conditions the kubelet owns differ in status, reason or message between the
/// API server's copy and the computed status.
fn owned_conditions_differ(server: &NodeStatus, computed: &NodeStatus) -> bool {
    let key = |s: &NodeStatus, kind: &str| {
        s.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == kind)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    computed
        .conditions
        .iter()
        .flatten()
        .any(|c| key(server, &c.type_) != key(computed, &c.type_))
}

/// Keeps `server` up to date with the Node as the API server has it: a read, then a watch of
/// that one object (re-read after `410 Gone`), re-opened when it ends or fails.
async fn watch_node(
    nodes: Api<Node>,
    name: String,
    server: Arc<Mutex<Option<NodeStatus>>>,
    observer: Option<NodeObserver>,
) {
    let seen = |node: &Node| {
        if let Some(observe) = &observer {
            observe(node);
        }
    };
    let set = |status: Option<NodeStatus>| {
        if let Ok(mut server) = server.lock() {
            *server = status;
        }
    };
    let mut version: Option<String> = None;
    loop {
        let Some(from) = version.clone() else {
            match nodes.get_opt(&name).await {
                Ok(Some(node)) => {
                    version = node.metadata.resource_version.clone();
                    seen(&node);
                    set(node.status);
                }
                Ok(None) => set(None),
                Err(e) => debug!(node = %name, error = %e, "cannot read the node"),
            }
            if version.is_none() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            continue;
        };
        let params = WatchParams::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(290);
        let stream = match nodes.watch(&params, &from).await {
            Ok(stream) => stream,
            Err(e) => {
                debug!(node = %name, error = %e, "cannot watch the node");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(WatchEvent::Added(node) | WatchEvent::Modified(node)) => {
                    version = node.metadata.resource_version.clone();
                    seen(&node);
                    set(node.status);
                }
                Ok(WatchEvent::Deleted(node)) => {
                    version = node.metadata.resource_version.clone();
                    set(None);
                }
                Ok(WatchEvent::Bookmark(bookmark)) => {
                    version = Some(bookmark.metadata.resource_version);
                }
                Ok(WatchEvent::Error(e)) => {
                    if e.code == 410 {
                        version = None;
                    }
                    break;
                }
                Err(e) => {
                    debug!(node = %name, error = %e, "the node watch failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}

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
    if old.features != new.features {
        out.push("features");
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
    /// The node's status as the API server has it (kept by a watch of the Node while
    /// [`run`](NodeStatusUpdater::run) runs): when another component changed the conditions
    /// the kubelet owns (the node lifecycle controller marking them Unknown), the status is
    /// sent again at once, as upstream compares against its informer's copy.
    server: Arc<Mutex<Option<NodeStatus>>>,
    /// Told of every copy of the Node the watch receives.
    observer: Option<NodeObserver>,
}

/// Called with each copy of the Node the updater's watch receives (the engine's admission
/// follows the node's labels, taints and allocatable this way, as upstream's node informer).
pub type NodeObserver = Arc<dyn Fn(&Node) + Send + Sync>;

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
            server: Arc::new(Mutex::new(None)),
            observer: None,
        }
    }

    /// Tells `observer` of each copy of the Node the watch receives.
    pub fn with_node_observer(mut self, observer: NodeObserver) -> Self {
        self.observer = Some(observer);
        self
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
        let server_differs = self
            .server
            .lock()
            .ok()
            .and_then(|server| server.as_ref().map(|s| owned_conditions_differ(s, &status)))
            .unwrap_or(false);
        if let Some((sent, at)) = &self.sent
            && !status_changed(sent, &status)
            && !server_differs
            && at.elapsed() < self.report_frequency
        {
            return Ok(false);
        }
        // Addresses are keyed by type in a strategic merge, which would merge a dual-stack
        // node's two InternalIPs with the old ones: when they change (and on the first
        // report) they are replaced whole with a JSON merge patch, as upstream rewrites its
        // patch; everything else goes in the strategic merge patch.
        let replace_addresses = self
            .sent
            .as_ref()
            .is_none_or(|(sent, _)| sent.addresses != status.addresses);
        let timeout = self.update_frequency.max(Duration::from_secs(1));
        if replace_addresses {
            let addresses = Node {
                status: Some(NodeStatus {
                    addresses: status.addresses.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            crate::error::within(
                timeout,
                "update node addresses",
                &self.node,
                self.nodes.patch_status(
                    &self.node,
                    &PatchParams::default(),
                    &Patch::Merge(&addresses),
                ),
            )
            .await?;
        }
        let patch = Node {
            status: Some(NodeStatus {
                addresses: None,
                ..status.clone()
            }),
            ..Default::default()
        };
        crate::error::within(
            timeout,
            "update node status",
            &self.node,
            self.nodes.patch_status(
                &self.node,
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            ),
        )
        .await?;
        debug!(node = %self.node, changed = ?self.sent.as_ref().map(|(sent, _)| changed_fields(sent, &status)), "node status sent");
        self.sent = Some((status, Instant::now()));
        Ok(true)
    }

    /// Updates every `update_frequency` until `stop`, each update tried up to
    /// [`NODE_STATUS_UPDATE_RETRY`] times, while a watch of the Node keeps the API server's
    /// view of it.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        let watch = tokio::spawn(watch_node(
            self.nodes.clone(),
            self.node.clone(),
            self.server.clone(),
            self.observer.clone(),
        ));
        self.run_updates(stop).await;
        watch.abort();
    }

    async fn update_with_retries(&mut self) {
        for attempt in 1..=NODE_STATUS_UPDATE_RETRY {
            match self.update().await {
                Ok(_) => return,
                Err(e) => {
                    warn!(node = %self.node, attempt, error = %e, "error updating node status, will retry");
                }
            }
        }
    }

    async fn run_updates(&mut self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            // Stopping does not wait for an API server that is away.
            tokio::select! {
                () = &mut stop => return,
                () = self.update_with_retries() => {}
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(self.update_frequency) => {}
            }
        }
    }
}
