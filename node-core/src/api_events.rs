//! Events to the API server (feature `api`), as upstream's kubelet records them: core/v1
//! Events from `source.component: kubelet` on the node's host, repeats of the same event
//! (object, type, reason, message) within [`AGGREGATION_WINDOW`] folded into one Event whose
//! `count` and `lastTimestamp` grow, posted at most `eventRecordQPS` per second (burst
//! `eventBurst`; 0 QPS: no limit, as upstream).
//!
//! Recording never blocks a pod worker: events go through a bounded queue to a background
//! sender (queued until the API client exists, dropped with a log line when the queue is
//! full); every event is also logged.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event as ApiEvent, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::events::{EventObject, EventRecorder, EventType, LogRecorder};

/// Repeats within this window are folded into one Event (upstream's correlator keeps events
/// ten minutes).
pub const AGGREGATION_WINDOW: Duration = Duration::from_secs(600);
/// Events waiting to be sent at most (beyond that they are only logged).
pub const QUEUE_CAPACITY: usize = 1000;
/// Distinct events remembered for folding at most (upstream's LRU of 4096).
const CACHE_CAPACITY: usize = 4096;

struct Queued {
    object: EventObject,
    event_type: EventType,
    reason: String,
    message: String,
    at: Timestamp,
}

/// The recorder: logs every event and queues it for the API server.
pub struct ApiEventRecorder {
    tx: mpsc::Sender<Queued>,
    client: Arc<OnceLock<Client>>,
    ready: Arc<Notify>,
}

impl std::fmt::Debug for ApiEventRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiEventRecorder").finish_non_exhaustive()
    }
}

impl ApiEventRecorder {
    /// A recorder for node `node_name` sending at most `qps` events per second (burst
    /// `burst`); events wait until [`ApiEventRecorder::set_client`].
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime (it starts the sender).
    pub fn new(node_name: &str, qps: u32, burst: u32) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let client = Arc::new(OnceLock::new());
        let ready = Arc::new(Notify::new());
        tokio::spawn(send_events(
            rx,
            client.clone(),
            ready.clone(),
            node_name.to_string(),
            (qps, burst),
        ));
        Arc::new(ApiEventRecorder { tx, client, ready })
    }

    /// Starts sending through `client` (the first call wins).
    pub fn set_client(&self, client: Client) {
        if self.client.set(client).is_ok() {
            self.ready.notify_one();
        }
    }
}

impl EventRecorder for ApiEventRecorder {
    fn record(&self, object: &EventObject, event_type: EventType, reason: &str, message: &str) {
        LogRecorder.record(object, event_type, reason, message);
        let queued = Queued {
            object: object.clone(),
            event_type,
            reason: reason.to_string(),
            message: message.to_string(),
            at: Timestamp::now(),
        };
        if self.tx.try_send(queued).is_err() {
            debug!(reason, "the event queue is full: the event is only logged");
        }
    }
}

/// A sent event, for folding repeats into it.
struct Sent {
    namespace: String,
    name: String,
    count: i32,
    first: Timestamp,
    last_seen: Instant,
}

/// A token bucket of `qps` tokens per second, `burst` deep (0 QPS: unlimited).
struct Bucket {
    qps: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(qps: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Bucket {
            qps: f64::from(qps),
            burst,
            tokens: burst,
            at: Instant::now(),
        }
    }

    async fn take(&mut self) {
        if self.qps <= 0.0 {
            return;
        }
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.qps).min(self.burst);
        self.at = now;
        if self.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.qps);
            tokio::time::sleep(wait).await;
            self.tokens = 1.0;
            self.at = Instant::now();
        }
        self.tokens -= 1.0;
    }
}

/// The API Event for a first occurrence.
fn api_event(q: &Queued, node_name: &str) -> ApiEvent {
    let namespace = if q.object.namespace.is_empty() {
        "default".to_string()
    } else {
        q.object.namespace.clone()
    };
    // Upstream names events `<object>.<unique hex>`.
    let suffix = format!("{:x}", q.at.as_nanosecond());
    ApiEvent {
        metadata: ObjectMeta {
            name: Some(format!("{}.{suffix}", q.object.name)),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some(q.object.kind.to_string()),
            name: Some(q.object.name.clone()),
            namespace: (!q.object.namespace.is_empty()).then(|| q.object.namespace.clone()),
            uid: (!q.object.uid.is_empty()).then(|| q.object.uid.clone()),
            field_path: (!q.object.field_path.is_empty()).then(|| q.object.field_path.clone()),
            ..Default::default()
        },
        reason: Some(q.reason.clone()),
        message: Some(q.message.clone()),
        type_: Some(q.event_type.as_str().into()),
        source: Some(EventSource {
            component: Some("kubelet".into()),
            host: Some(node_name.into()),
        }),
        first_timestamp: Some(Time(q.at)),
        last_timestamp: Some(Time(q.at)),
        event_time: None::<MicroTime>,
        count: Some(1),
        reporting_component: Some("kubelet".into()),
        reporting_instance: Some(node_name.into()),
        ..Default::default()
    }
}

async fn send_events(
    mut rx: mpsc::Receiver<Queued>,
    client: Arc<OnceLock<Client>>,
    ready: Arc<Notify>,
    node_name: String,
    (qps, burst): (u32, u32),
) {
    let client = loop {
        if let Some(c) = client.get() {
            break c.clone();
        }
        ready.notified().await;
    };
    let mut bucket = Bucket::new(qps, burst);
    let mut sent: HashMap<String, Sent> = HashMap::new();
    while let Some(q) = rx.recv().await {
        let key = format!(
            "{}/{}/{}/{}/{}/{}",
            q.object.uid,
            q.object.field_path,
            q.object.name,
            q.event_type.as_str(),
            q.reason,
            q.message
        );
        let now = Instant::now();
        sent.retain(|_, s| now.duration_since(s.last_seen) < AGGREGATION_WINDOW);
        if sent.len() >= CACHE_CAPACITY
            && let Some(oldest) = sent
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| k.clone())
        {
            sent.remove(&oldest);
        }
        bucket.take().await;
        match sent.get_mut(&key) {
            Some(prior) => {
                // A repeat: the count and the last time on the Event already there.
                let patch = ApiEvent {
                    count: Some(prior.count + 1),
                    last_timestamp: Some(Time(q.at)),
                    first_timestamp: Some(Time(prior.first)),
                    ..Default::default()
                };
                let events: Api<ApiEvent> = Api::namespaced(client.clone(), &prior.namespace);
                match events
                    .patch(
                        &prior.name,
                        &PatchParams::default(),
                        &Patch::Strategic(patch),
                    )
                    .await
                {
                    Ok(_) => {
                        prior.count += 1;
                        prior.last_seen = now;
                    }
                    Err(e) => {
                        warn!(reason = %q.reason, error = %e, "updating an event failed; it is dropped");
                    }
                }
            }
            None => {
                let event = api_event(&q, &node_name);
                let namespace = event.metadata.namespace.clone().unwrap_or_default();
                let events: Api<ApiEvent> = Api::namespaced(client.clone(), &namespace);
                match events.create(&PostParams::default(), &event).await {
                    Ok(created) => {
                        sent.insert(
                            key,
                            Sent {
                                namespace,
                                name: created.metadata.name.unwrap_or_default(),
                                count: 1,
                                first: q.at,
                                last_seen: now,
                            },
                        );
                    }
                    Err(e) => {
                        warn!(reason = %q.reason, error = %e, "posting an event failed; it is dropped");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_name_their_object_container_and_source() {
        let q = Queued {
            object: EventObject {
                kind: "Pod",
                namespace: "ns".into(),
                name: "web".into(),
                uid: "u1".into(),
                field_path: "spec.containers{main}".into(),
            },
            event_type: EventType::Normal,
            reason: "Started".into(),
            message: "Started container main".into(),
            at: Timestamp::from_second(1_800_000_000).unwrap(),
        };
        let e = api_event(&q, "node-a");
        assert!(e.metadata.name.as_deref().unwrap().starts_with("web."));
        assert_eq!(e.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(e.involved_object.kind.as_deref(), Some("Pod"));
        assert_eq!(e.involved_object.uid.as_deref(), Some("u1"));
        assert_eq!(
            e.involved_object.field_path.as_deref(),
            Some("spec.containers{main}")
        );
        let source = e.source.unwrap();
        assert_eq!(source.component.as_deref(), Some("kubelet"));
        assert_eq!(source.host.as_deref(), Some("node-a"));
        assert_eq!(e.count, Some(1));
        assert_eq!(e.type_.as_deref(), Some("Normal"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_keeps_to_qps_after_the_burst() {
        let mut bucket = Bucket::new(10, 5);
        let start = Instant::now();
        for _ in 0..5 {
            bucket.take().await;
        }
        assert!(
            start.elapsed() < Duration::from_millis(1),
            "the burst is free"
        );
        for _ in 0..10 {
            bucket.take().await;
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(950) && took <= Duration::from_millis(1100),
            "{took:?}"
        );
        let mut unlimited = Bucket::new(0, 1);
        let start = Instant::now();
        for _ in 0..1000 {
            unlimited.take().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
