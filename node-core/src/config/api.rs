//! The API server pod source (feature `api`): the pods bound to this node, watched with
//! kube-runtime's watcher (`fieldSelector spec.nodeName=<node>`; it resumes from the last
//! resourceVersion, re-lists after `410 Gone`, and backs off on errors) into a reflector
//! store, whose snapshot goes to the `api` source of [`PodConfig`](super::PodConfig) after the
//! initial list and after every change. The merger turns snapshots into Add / Update / Delete /
//! Remove updates, as for the other sources.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use tracing::{debug, info, warn};

use super::SourceSender;

/// Watches the pods bound to `node_name` and sends each snapshot to `sender` (a source named
/// [`API_SOURCE`](super::API_SOURCE)); returns when the receiver of updates is gone.
pub async fn run_api_source(client: Client, node_name: &str, mut sender: SourceSender) {
    let pods: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let (store, writer) = reflector::store::<Pod>();
    let stream = reflector(writer, watcher(pods, config).default_backoff());
    futures::pin_mut!(stream);
    let mut listed = false;
    info!(node = %node_name, "watching the node's pods on the API server");
    while let Some(event) = stream.next().await {
        let changed = match event {
            Ok(watcher::Event::InitDone) => {
                if !listed {
                    info!(
                        pods = store.len(),
                        "the node's pods listed from the API server"
                    );
                }
                listed = true;
                true
            }
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => false,
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => listed,
            Err(e) => {
                warn!(error = %e, "watching the node's pods failed; retrying");
                false
            }
        };
        if !changed {
            continue;
        }
        let snapshot: Vec<Pod> = store.state().iter().map(|p| Pod::clone(p)).collect();
        debug!(pods = snapshot.len(), "API pod snapshot");
        if sender.send(snapshot).await.is_err() {
            return;
        }
    }
}
