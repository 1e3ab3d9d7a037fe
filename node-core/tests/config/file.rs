//! The file source against a real temp directory: listing, inotify, editors' write patterns.
//! The re-list period is 60s everywhere, so every delivery within seconds comes from inotify.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use node_core::config::{PodConfig, PodOperation, PodUpdates, SourceHandle};

use crate::{assert_update, manifest, names, next_update, no_update, uids};

const NODE: &str = "node-a";
const PERIOD: Duration = Duration::from_secs(60);
/// Seconds to wait for an inotify-driven update (far below the 60s re-list).
const SOON: u64 = 5;

fn start(path: &Path) -> (PodConfig, PodUpdates, SourceHandle) {
    let (config, updates) = PodConfig::new(NODE);
    let handle = config.file_source(path, PERIOD);
    (config, updates, handle)
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_good_pods_beside_bad_hidden_and_nested_ones() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("a.yaml"), &manifest("web", "nginx"));
    let bad = dir.path().join("b.yaml");
    write(
        &bad,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: broken}\nspec:\n  containers: [{name: web, image: a}, {name: web, image: b}]\n",
    );
    write(&dir.path().join("c.json"), "\u{0}\u{1}junk");
    write(
        &dir.path().join(".hidden.yaml"),
        &manifest("hidden", "nginx"),
    );
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    write(
        &dir.path().join("sub/nested.yaml"),
        &manifest("nested", "nginx"),
    );

    let (config, mut updates, handle) = start(dir.path());
    let update = next_update(&mut updates, SOON, "initial list").await;
    assert_update(&update, PodOperation::Add, &["web-node-a"]);
    assert_eq!(update.source, "file");
    assert!(config.seen_all_sources());

    let rejected = handle.rejected();
    assert_eq!(rejected.len(), 2, "{rejected:#?}");
    let key = bad.display().to_string();
    assert_eq!(
        rejected[&key],
        format!("manifest {key}: invalid pod: [spec.containers[1].name: Duplicate value: \"web\"]")
    );
    let junk = dir.path().join("c.json").display().to_string();
    assert!(
        rejected[&junk].starts_with(&format!("manifest {junk}: ")),
        "{rejected:#?}"
    );
    no_update(&mut updates, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inotify_add_modify_rename_truncate_delete() {
    let dir = tempfile::tempdir().unwrap();
    let (_config, mut updates, handle) = start(dir.path());
    assert_update(
        &next_update(&mut updates, SOON, "empty first snapshot").await,
        PodOperation::Add,
        &[],
    );

    // A new manifest.
    let web = dir.path().join("web.yaml");
    write(&web, &manifest("web", "nginx:1"));
    let added = next_update(&mut updates, SOON, "add of web").await;
    assert_update(&added, PodOperation::Add, &["web-node-a"]);
    let uid1 = uids(&added);

    // Content change: a new pod (REMOVE old UID, ADD new UID).
    write(&web, &manifest("web", "nginx:2"));
    let removed = next_update(&mut updates, SOON, "remove of web v1").await;
    assert_update(&removed, PodOperation::Remove, &["web-node-a"]);
    assert_eq!(uids(&removed), uid1);
    let added = next_update(&mut updates, SOON, "add of web v2").await;
    assert_update(&added, PodOperation::Add, &["web-node-a"]);
    let uid2 = uids(&added);
    assert_ne!(uid1, uid2);
    let image = added.pods[0].spec.as_ref().unwrap().containers[0]
        .image
        .clone();
    assert_eq!(image.as_deref(), Some("nginx:2"));

    // Same bytes again (touch, chmod, rewrite): nothing.
    write(&web, &manifest("web", "nginx:2"));
    no_update(&mut updates, 300).await;

    // Editor pattern 1: write a hidden temp file, rename it into place.
    let temp = dir.path().join(".web.yaml.swp");
    write(&temp, &manifest("web", "nginx:3"));
    std::fs::rename(&temp, &web).unwrap();
    let removed = next_update(&mut updates, SOON, "remove of web v2").await;
    assert_eq!(uids(&removed), uid2);
    let added = next_update(&mut updates, SOON, "add of web v3").await;
    assert_update(&added, PodOperation::Add, &["web-node-a"]);
    let uid3 = uids(&added);

    // Editor pattern 2: truncate and write in place, slowly; one read at close.
    {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&web)
            .unwrap();
        let text = manifest("web", "nginx:4");
        let (head, tail) = text.split_at(text.len() / 2);
        file.write_all(head.as_bytes()).unwrap();
        file.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        file.write_all(tail.as_bytes()).unwrap();
    }
    let removed = next_update(&mut updates, SOON, "remove of web v3").await;
    assert_eq!(uids(&removed), uid3);
    let added = next_update(&mut updates, SOON, "add of web v4").await;
    let uid4 = uids(&added);
    assert!(handle.rejected().is_empty(), "{:?}", handle.rejected());

    // A second pod by rename from outside the directory.
    let outside = tempfile::tempdir().unwrap();
    let db_outside = outside.path().join("db.yaml");
    write(&db_outside, &manifest("db", "postgres:16"));
    let db = dir.path().join("db.yaml");
    std::fs::rename(&db_outside, &db).unwrap();
    assert_update(
        &next_update(&mut updates, SOON, "add of db").await,
        PodOperation::Add,
        &["db-node-a"],
    );

    // Rename out of the directory: REMOVE.
    std::fs::rename(&db, outside.path().join("db.yaml")).unwrap();
    assert_update(
        &next_update(&mut updates, SOON, "remove of db").await,
        PodOperation::Remove,
        &["db-node-a"],
    );

    // Delete: REMOVE.
    std::fs::remove_file(&web).unwrap();
    let removed = next_update(&mut updates, SOON, "remove of web v4").await;
    assert_update(&removed, PodOperation::Remove, &["web-node-a"]);
    assert_eq!(uids(&removed), uid4);
    no_update(&mut updates, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewriting_the_same_bytes_in_place_never_drops_the_pod() {
    // Truncate-and-write of unchanged content, many times in a row: a read that raced a
    // truncate would see an empty file and remove the pod.
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yaml");
    let text = manifest("web", "nginx:1");
    write(&web, &text);
    let (_config, mut updates, handle) = start(dir.path());
    assert_update(
        &next_update(&mut updates, SOON, "initial").await,
        PodOperation::Add,
        &["web-node-a"],
    );
    let writer = {
        let web = web.clone();
        std::thread::spawn(move || {
            for _ in 0..300 {
                std::fs::write(&web, &text).unwrap();
            }
        })
    };
    no_update(&mut updates, 1500).await;
    writer.join().unwrap();
    no_update(&mut updates, 300).await;
    assert!(handle.rejected().is_empty(), "{:?}", handle.rejected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_turning_bad_is_rejected_and_its_pod_removed() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yaml");
    write(&web, &manifest("web", "nginx"));
    write(&dir.path().join("db.yaml"), &manifest("db", "postgres"));
    let (_config, mut updates, handle) = start(dir.path());
    let update = next_update(&mut updates, SOON, "initial").await;
    assert_update(&update, PodOperation::Add, &["db-node-a", "web-node-a"]);

    write(
        &web,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: web}]\n",
    );
    let update = next_update(&mut updates, SOON, "remove of web").await;
    assert_update(&update, PodOperation::Remove, &["web-node-a"]);
    let key = web.display().to_string();
    assert_eq!(
        handle.rejected()[&key],
        format!("manifest {key}: invalid pod: [spec.containers[0].image: Required value]")
    );

    write(&web, &manifest("web", "nginx"));
    assert_update(
        &next_update(&mut updates, SOON, "web back").await,
        PodOperation::Add,
        &["web-node-a"],
    );
    assert!(handle.rejected().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_files_and_subdirectories_are_ignored_by_the_watch() {
    let dir = tempfile::tempdir().unwrap();
    let (_config, mut updates, handle) = start(dir.path());
    next_update(&mut updates, SOON, "empty first snapshot").await;
    write(
        &dir.path().join(".hidden.yaml"),
        &manifest("hidden", "nginx"),
    );
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    write(
        &dir.path().join("sub/pod.yaml"),
        &manifest("nested", "nginx"),
    );
    write(&dir.path().join(".bad"), "junk: [");
    no_update(&mut updates, 500).await;
    assert!(handle.rejected().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_pod_in_two_files_keeps_the_first_in_path_order() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("a.yaml"), &manifest("web", "nginx:1"));
    let second = dir.path().join("b.yaml");
    write(&second, &manifest("web", "nginx:2"));
    let (_config, mut updates, handle) = start(dir.path());
    let update = next_update(&mut updates, SOON, "initial").await;
    assert_update(&update, PodOperation::Add, &["web-node-a"]);
    let image = update.pods[0].spec.as_ref().unwrap().containers[0]
        .image
        .clone();
    assert_eq!(image.as_deref(), Some("nginx:1"));
    let key = second.display().to_string();
    let first = dir.path().join("a.yaml");
    assert_eq!(
        handle.rejected()[&key],
        format!(
            "manifest {key}: pod \"default/web-node-a\" is already declared by {}",
            first.display()
        )
    );

    // The first goes away: the second takes over.
    std::fs::remove_file(&first).unwrap();
    assert_eq!(
        next_update(&mut updates, SOON, "remove").await.op,
        PodOperation::Remove
    );
    let update = next_update(&mut updates, SOON, "add of b").await;
    let image = update.pods[0].spec.as_ref().unwrap().containers[0]
        .image
        .clone();
    assert_eq!(image.as_deref(), Some("nginx:2"));
    assert!(handle.rejected().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_directory_is_seen_empty_then_picked_up() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("etc/manifests");
    let (config, mut updates, _handle) = start(&dir);
    let update = next_update(&mut updates, SOON, "empty snapshot of a missing dir").await;
    assert_update(&update, PodOperation::Add, &[]);
    assert!(config.seen_all_sources());

    std::fs::create_dir(root.path().join("etc")).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::create_dir(&dir).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    write(&dir.join("web.yaml"), &manifest("web", "nginx"));
    let update = next_update(&mut updates, SOON, "add after the dir appeared").await;
    assert_update(&update, PodOperation::Add, &["web-node-a"]);

    // The directory goes away: its pods are removed; it comes back: they return.
    std::fs::remove_dir_all(&dir).unwrap();
    assert_update(
        &next_update(&mut updates, SOON, "remove with the dir").await,
        PodOperation::Remove,
        &["web-node-a"],
    );
    std::fs::create_dir(&dir).unwrap();
    write(&dir.join("web.yaml"), &manifest("web", "nginx"));
    assert_update(
        &next_update(&mut updates, SOON, "add in the new dir").await,
        PodOperation::Add,
        &["web-node-a"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_created_in_one_go_is_picked_up() {
    // The directory appears by rename, already holding its manifest.
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("manifests");
    let (_config, mut updates, _handle) = start(&dir);
    next_update(&mut updates, SOON, "empty first snapshot").await;
    let staging = root.path().join(".staging");
    std::fs::create_dir(&staging).unwrap();
    write(&staging.join("web.yaml"), &manifest("web", "nginx"));
    std::fs::rename(&staging, &dir).unwrap();
    assert_update(
        &next_update(&mut updates, SOON, "add").await,
        PodOperation::Add,
        &["web-node-a"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_manifest_file_as_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.yaml");
    write(&file, &manifest("web", "nginx:1"));
    write(&dir.path().join("other.yaml"), &manifest("other", "nginx"));
    let (_config, mut updates, _handle) = start(&file);
    let added = next_update(&mut updates, SOON, "initial").await;
    assert_update(&added, PodOperation::Add, &["web-node-a"]);

    // Siblings do not matter.
    write(&dir.path().join("third.yaml"), &manifest("third", "nginx"));
    no_update(&mut updates, 300).await;

    // Atomic replace of the file itself.
    let temp = dir.path().join(".web.tmp");
    write(&temp, &manifest("web", "nginx:2"));
    std::fs::rename(&temp, &file).unwrap();
    let removed = next_update(&mut updates, SOON, "remove").await;
    assert_eq!(uids(&removed), uids(&added));
    assert_update(
        &next_update(&mut updates, SOON, "add").await,
        PodOperation::Add,
        &["web-node-a"],
    );

    std::fs::remove_file(&file).unwrap();
    assert_update(
        &next_update(&mut updates, SOON, "remove").await,
        PodOperation::Remove,
        &["web-node-a"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_relist_catches_what_inotify_cannot_see() {
    // A manifest symlinked from elsewhere changes behind the link: only the re-list sees it.
    let dir = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let target = store.path().join("web.yaml");
    write(&target, &manifest("web", "nginx:1"));
    std::os::unix::fs::symlink(&target, dir.path().join("web.yaml")).unwrap();
    let (config, mut updates) = PodConfig::new(NODE);
    let _handle = config.file_source(dir.path(), Duration::from_millis(300));
    assert_update(
        &next_update(&mut updates, SOON, "initial").await,
        PodOperation::Add,
        &["web-node-a"],
    );
    write(&target, &manifest("web", "nginx:2"));
    assert_eq!(
        next_update(&mut updates, SOON, "remove").await.op,
        PodOperation::Remove
    );
    let added = next_update(&mut updates, SOON, "add").await;
    assert_eq!(names(&added), ["web-node-a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_handle_stops_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let (_config, mut updates, handle) = start(dir.path());
    next_update(&mut updates, SOON, "empty first snapshot").await;
    handle.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    write(&dir.path().join("web.yaml"), &manifest("web", "nginx"));
    no_update(&mut updates, 500).await;
}
