//! Cluster-wide listers (feature `api`): objects of one kind watched into a reflector store
//! once the API client exists, as upstream's shared informers.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use futures::StreamExt;
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::runtime::reflector::{self, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::objects::RuntimeHandlerSource;

/// Every object of kind `K` in the cluster, kept by a watch (started once with
/// [`start`](WatchedStore::start)); readable once the first list arrived.
pub struct WatchedStore<K: Resource + 'static>
where
    K::DynamicType: Hash + Eq,
{
    store: OnceLock<Store<K>>,
    ready: Arc<AtomicBool>,
}

impl<K: Resource + 'static> Default for WatchedStore<K>
where
    K::DynamicType: Hash + Eq,
{
    fn default() -> Self {
        WatchedStore {
            store: OnceLock::new(),
            ready: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl<K: Resource + 'static> Debug for WatchedStore<K>
where
    K::DynamicType: Hash + Eq,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchedStore")
            .field("started", &self.store.get().is_some())
            .field("synced", &self.ready.load(Ordering::Acquire))
            .finish()
    }
}

impl<K> WatchedStore<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    /// Starts watching every `K` through `client` (the first call wins); `what` names the
    /// objects in the log.
    pub fn start(&self, client: Client, what: &'static str) {
        let (store, writer) = reflector::store::<K>();
        if self.store.set(store).is_err() {
            return;
        }
        let stream = reflector(
            writer,
            watcher(Api::<K>::all(client), watcher::Config::default()).default_backoff(),
        );
        let ready = self.ready.clone();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => ready.store(true, Ordering::Release),
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "watching the cluster's {what} failed; retrying"),
                }
            }
        });
    }

    /// Every object, once the first list is in; `None` before.
    pub fn state(&self) -> Option<Vec<Arc<K>>> {
        self.store
            .get()
            .filter(|_| self.ready.load(Ordering::Acquire))
            .map(Store::state)
    }
}

/// The cluster's RuntimeClasses (upstream `runtimeclass.Manager`): a pod's
/// `runtimeClassName` becomes the CRI handler its sandbox runs with.
#[derive(Debug, Default)]
pub struct RuntimeClassLister {
    classes: WatchedStore<RuntimeClass>,
}

impl RuntimeClassLister {
    /// A lister that knows no classes yet.
    pub fn new() -> Arc<Self> {
        Arc::new(RuntimeClassLister::default())
    }

    /// Starts watching the RuntimeClasses through `client` (the first call wins).
    pub fn start(&self, client: Client) {
        self.classes.start(client, "runtime classes");
    }
}

impl RuntimeHandlerSource for RuntimeClassLister {
    fn runtime_handler(&self, class: &str) -> Result<String, String> {
        let all = self.classes.state().ok_or_else(|| {
            format!("failed to lookup RuntimeClass {class}: runtime classes have not yet been read")
        })?;
        all.iter()
            .find(|rc| rc.metadata.name.as_deref() == Some(class))
            .map(|rc| rc.handler.clone())
            .ok_or_else(|| format!("runtimeclass.node.k8s.io {class:?} not found"))
    }
}
