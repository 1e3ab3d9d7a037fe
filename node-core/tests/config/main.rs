//! Tests of the pod sources (`node_core::config`): decoding, defaults, validation, the merger,
//! the file source (inotify) and the HTTP source.

mod decode;
mod file;
mod http;
mod merge;

use std::time::Duration;

use node_core::config::{PodOperation, PodUpdate, PodUpdates};

/// The next update within `secs` seconds, or a panic naming what was expected.
pub async fn next_update(updates: &mut PodUpdates, secs: u64, what: &str) -> PodUpdate {
    match tokio::time::timeout(Duration::from_secs(secs), updates.recv()).await {
        Ok(Some(update)) => update,
        Ok(None) => panic!("update channel closed while waiting for {what}"),
        Err(_) => panic!("no update within {secs}s while waiting for {what}"),
    }
}

/// Asserts that no update arrives within `millis`.
pub async fn no_update(updates: &mut PodUpdates, millis: u64) {
    if let Ok(Some(update)) =
        tokio::time::timeout(Duration::from_millis(millis), updates.recv()).await
    {
        panic!("unexpected update: {:?} {:?}", update.op, names(&update));
    }
}

/// The pod names of an update.
pub fn names(update: &PodUpdate) -> Vec<String> {
    update
        .pods
        .iter()
        .map(|p| p.metadata.name.clone().unwrap_or_default())
        .collect()
}

/// The pod UIDs of an update.
pub fn uids(update: &PodUpdate) -> Vec<String> {
    update
        .pods
        .iter()
        .map(|p| p.metadata.uid.clone().unwrap_or_default())
        .collect()
}

/// Asserts the op and pod names of an update.
pub fn assert_update(update: &PodUpdate, op: PodOperation, expected: &[&str]) {
    assert_eq!(update.op, op, "op of {:?}", names(update));
    assert_eq!(names(update), expected, "pods of a {op} update");
}

/// A minimal pod manifest in YAML.
pub fn manifest(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: main\n    image: {image}\n"
    )
}
