//! The node lease (upstream `component-helpers/apimachinery/lease` controller as the kubelet
//! runs it): `kube-node-lease/<node>` held by the node, renewed every quarter of its duration
//! with optimistic concurrency, owned by the Node so that it goes with it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tracing::{debug, warn};

use crate::error::StatusError;

/// The namespace of node leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// Upstream's `nodeLeaseDurationSeconds` default.
pub const DEFAULT_LEASE_DURATION_SECONDS: i32 = 40;
/// How often a failed renewal is retried before waiting for the next period (upstream
/// `maxUpdateRetries`).
pub const MAX_UPDATE_RETRIES: usize = 5;
/// The longest wait between attempts to create or read the lease (upstream `maxBackoff`).
pub const MAX_BACKOFF: Duration = Duration::from_secs(7);

/// Keeps the node's lease.
pub struct NodeLease {
    leases: Api<Lease>,
    nodes: Api<Node>,
    node: String,
    duration_seconds: i32,
    /// The lease as last written or read: the next renewal updates it.
    latest: Option<Lease>,
}

impl NodeLease {
    /// The lease of `node`, lasting `duration_seconds`.
    pub fn new(client: Client, node: &str, duration_seconds: i32) -> Self {
        NodeLease {
            leases: Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE),
            nodes: Api::all(client),
            node: node.to_string(),
            duration_seconds,
            latest: None,
        }
    }

    /// How often the lease is renewed: a quarter of its duration (10 s by default).
    pub fn renew_interval(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.duration_seconds).unwrap_or(40) * 250)
    }

    /// The owner reference to the Node, when the Node exists.
    async fn owner(&self) -> Option<OwnerReference> {
        match self.nodes.get_opt(&self.node).await {
            Ok(Some(node)) => Some(OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: self.node.clone(),
                uid: node.metadata.uid?,
                ..Default::default()
            }),
            Ok(None) => None,
            Err(e) => {
                debug!(node = %self.node, error = %e, "cannot read the node for the lease's owner");
                None
            }
        }
    }

    fn spec(&self, now: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.node.clone()),
            lease_duration_seconds: Some(self.duration_seconds),
            renew_time: Some(MicroTime(now)),
            ..Default::default()
        }
    }

    /// Reads the lease, or creates it (then `true`); the lease returned is the one to renew.
    async fn ensure(&mut self) -> Result<(Lease, bool), StatusError> {
        let name = &self.node;
        match self.leases.get_opt(name).await {
            Ok(Some(lease)) => return Ok((lease, false)),
            Ok(None) => {}
            Err(e) => return Err(StatusError::api("get lease", name, e)),
        }
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(NODE_LEASE_NAMESPACE.into()),
                owner_references: self.owner().await.map(|o| vec![o]),
                ..Default::default()
            },
            spec: Some(self.spec(Timestamp::now())),
        };
        self.leases
            .create(&PostParams::default(), &lease)
            .await
            .map(|lease| (lease, true))
            .map_err(|e| StatusError::api("create lease", name, e))
    }

    /// Reads or creates the lease, retrying with back-off (200 ms doubling to 7 s).
    async fn ensure_with_backoff(&mut self) -> (Lease, bool) {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.ensure().await {
                Ok(found) => return found,
                Err(e) => {
                    warn!(node = %self.node, error = %e, retry_in = ?delay, "failed to ensure the node lease exists");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// One renewal: the latest lease with a new renew time (and the owner reference, if it
    /// lacked one), written with its resourceVersion. A conflict reads the lease again.
    pub async fn renew(&mut self) -> Result<(), StatusError> {
        let mut lease = match self.latest.take() {
            Some(lease) => lease,
            None => match self.ensure_with_backoff().await {
                // Just created with a fresh renew time: nothing to renew yet.
                (lease, true) => {
                    self.latest = Some(lease);
                    return Ok(());
                }
                (lease, false) => lease,
            },
        };
        if lease
            .metadata
            .owner_references
            .as_ref()
            .is_none_or(Vec::is_empty)
            && let Some(owner) = self.owner().await
        {
            lease.metadata.owner_references = Some(vec![owner]);
        }
        lease.spec = Some(LeaseSpec {
            acquire_time: lease.spec.as_ref().and_then(|s| s.acquire_time.clone()),
            lease_transitions: lease.spec.as_ref().and_then(|s| s.lease_transitions),
            ..self.spec(Timestamp::now())
        });
        let renewed = crate::error::within(
            self.renew_interval(),
            "renew lease",
            &self.node,
            self.leases
                .replace(&self.node, &PostParams::default(), &lease),
        )
        .await?;
        self.latest = Some(renewed);
        Ok(())
    }

    /// One renewal tried up to [`MAX_UPDATE_RETRIES`] times, reading the lease again after
    /// each failure.
    async fn renew_with_retries(&mut self) {
        for attempt in 1..=MAX_UPDATE_RETRIES {
            match self.renew().await {
                Ok(()) => return,
                Err(e) => {
                    warn!(node = %self.node, attempt, error = %e, "failed to update the node lease");
                    self.latest = None;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Renews the lease every [`renew_interval`](Self::renew_interval) until `stop`; a
    /// failed renewal is retried at once up to [`MAX_UPDATE_RETRIES`] times (reading the
    /// lease again after a conflict), then at the next period.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let interval = self.renew_interval();
        loop {
            // Stopping does not wait for an API server that is away.
            tokio::select! {
                () = &mut stop => return,
                () = self.renew_with_retries() => {}
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}
