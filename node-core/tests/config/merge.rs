//! The merger: incremental updates from snapshots.

use std::collections::BTreeMap;

use node_core::config::{
    CONFIG_MIRROR_ANNOTATION, CONFIG_SEEN_ANNOTATION, CONFIG_SOURCE_ANNOTATION, PodConfig,
    PodOperation,
};
use node_core::k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodStatus};
use node_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use node_core::k8s_openapi::jiff::Timestamp;

use crate::{assert_update, next_update, no_update, uids};

fn pod(name: &str, uid: &str, image: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("default".to_owned()),
            uid: Some(uid.to_owned()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".to_owned(),
                image: Some(image.to_owned()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Pending".to_owned()),
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn first_empty_snapshot_is_an_empty_add_and_marks_the_source_seen() {
    let (config, mut updates) = PodConfig::new("node");
    assert!(config.seen_all_sources(), "no source configured");
    let mut file = config.source("file");
    let mut http = config.source("http");
    assert!(!config.seen_all_sources());

    file.send(vec![]).await.unwrap();
    assert!(
        !config.seen_all_sources(),
        "not seen before the consumer received it"
    );
    let update = next_update(&mut updates, 1, "empty add").await;
    assert_update(&update, PodOperation::Add, &[]);
    assert_eq!(update.source, "file");
    assert!(!updates.seen_all_sources(), "http has not reported");

    // An empty snapshot again says nothing.
    file.send(vec![]).await.unwrap();
    no_update(&mut updates, 100).await;

    http.send(vec![pod("a", "uid-a", "nginx")]).await.unwrap();
    let update = next_update(&mut updates, 1, "http add").await;
    assert_update(&update, PodOperation::Add, &["a"]);
    assert_eq!(update.source, "http");
    assert!(updates.seen_all_sources());
    assert!(config.seen_all_sources());
    no_update(&mut updates, 100).await;
}

#[tokio::test]
async fn add_stamps_source_and_seen_and_repeats_are_quiet() {
    let (config, mut updates) = PodConfig::new("node");
    let mut source = config.source("file");
    let snapshot = vec![pod("a", "uid-a", "nginx"), pod("b", "uid-b", "nginx")];
    source.send(snapshot.clone()).await.unwrap();
    let update = next_update(&mut updates, 1, "add").await;
    assert_update(&update, PodOperation::Add, &["a", "b"]);
    for pod in &update.pods {
        let annotations = pod.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations[CONFIG_SOURCE_ANNOTATION], "file");
        let seen = &annotations[CONFIG_SEEN_ANNOTATION];
        seen.parse::<Timestamp>().expect("config.seen is RFC 3339");
        assert!(seen.contains('T'));
    }
    source.send(snapshot).await.unwrap();
    no_update(&mut updates, 100).await;
}

#[tokio::test]
async fn updates_deletes_reconciles_and_removes() {
    let (config, mut updates) = PodConfig::new("node");
    let mut source = config.source("api");
    let a = pod("a", "uid-a", "nginx");
    let b = pod("b", "uid-b", "nginx");
    let c = pod("c", "uid-c", "nginx");
    source
        .send(vec![a.clone(), b.clone(), c.clone()])
        .await
        .unwrap();
    let added = next_update(&mut updates, 1, "add").await;
    let seen_a =
        added.pods[0].metadata.annotations.as_ref().unwrap()[CONFIG_SEEN_ANNOTATION].clone();

    // Label change: UPDATE, with the first-seen time kept.
    let mut a2 = a.clone();
    a2.metadata.labels = Some(BTreeMap::from([("tier".to_owned(), "web".to_owned())]));
    source
        .send(vec![a2.clone(), b.clone(), c.clone()])
        .await
        .unwrap();
    let update = next_update(&mut updates, 1, "update").await;
    assert_update(&update, PodOperation::Update, &["a"]);
    let annotations = update.pods[0].metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations[CONFIG_SEEN_ANNOTATION], seen_a);
    assert_eq!(annotations[CONFIG_SOURCE_ANNOTATION], "api");
    assert_eq!(
        update.pods[0].metadata.labels.as_ref().unwrap()["tier"],
        "web"
    );

    // Only local annotations differ: nothing.
    let mut a3 = a2.clone();
    a3.metadata.annotations = Some(BTreeMap::from([(
        CONFIG_MIRROR_ANNOTATION.to_owned(),
        "x".to_owned(),
    )]));
    source.send(vec![a3, b.clone(), c.clone()]).await.unwrap();
    no_update(&mut updates, 100).await;

    // A non-local annotation differs: UPDATE.
    let mut a4 = a2.clone();
    a4.metadata.annotations = Some(BTreeMap::from([("note".to_owned(), "x".to_owned())]));
    source
        .send(vec![a4.clone(), b.clone(), c.clone()])
        .await
        .unwrap();
    assert_update(
        &next_update(&mut updates, 1, "update").await,
        PodOperation::Update,
        &["a"],
    );

    // Status alone: RECONCILE.
    let mut b2 = b.clone();
    b2.status.as_mut().unwrap().phase = Some("Running".to_owned());
    source
        .send(vec![a4.clone(), b2.clone(), c.clone()])
        .await
        .unwrap();
    let update = next_update(&mut updates, 1, "reconcile").await;
    assert_update(&update, PodOperation::Reconcile, &["b"]);
    assert_eq!(
        update.pods[0].status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );

    // Deletion timestamp: DELETE.
    let mut c2 = c.clone();
    c2.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    c2.metadata.deletion_grace_period_seconds = Some(30);
    source.send(vec![a4.clone(), b2.clone(), c2]).await.unwrap();
    assert_update(
        &next_update(&mut updates, 1, "delete").await,
        PodOperation::Delete,
        &["c"],
    );

    // Gone: REMOVE.
    source.send(vec![a4.clone()]).await.unwrap();
    let update = next_update(&mut updates, 1, "remove").await;
    assert_update(&update, PodOperation::Remove, &["b", "c"]);
    no_update(&mut updates, 100).await;
}

#[tokio::test]
async fn one_snapshot_emits_remove_add_update_delete_reconcile_in_order() {
    let (config, mut updates) = PodConfig::new("node");
    let mut source = config.source("file");
    let (a, b, c, d) = (
        pod("a", "uid-a", "nginx"),
        pod("b", "uid-b", "nginx"),
        pod("c", "uid-c", "nginx"),
        pod("d", "uid-d", "nginx"),
    );
    source
        .send(vec![a.clone(), b.clone(), c.clone()])
        .await
        .unwrap();
    next_update(&mut updates, 1, "add").await;

    let mut b2 = b.clone();
    b2.spec.as_mut().unwrap().containers[0].image = Some("nginx:2".to_owned());
    let mut c2 = c.clone();
    c2.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    let mut d_status = d.clone();
    d_status.status = None;
    // a removed, d added, b updated, c deleted; then reconcile needs a known pod: send again.
    source
        .send(vec![d.clone(), b2.clone(), c2.clone()])
        .await
        .unwrap();
    let ops: Vec<_> = [
        next_update(&mut updates, 1, "remove").await,
        next_update(&mut updates, 1, "add").await,
        next_update(&mut updates, 1, "update").await,
        next_update(&mut updates, 1, "delete").await,
    ]
    .iter()
    .map(|u| (u.op, uids(u)))
    .collect();
    assert_eq!(
        ops,
        [
            (PodOperation::Remove, vec!["uid-a".to_owned()]),
            (PodOperation::Add, vec!["uid-d".to_owned()]),
            (PodOperation::Update, vec!["uid-b".to_owned()]),
            (PodOperation::Delete, vec!["uid-c".to_owned()]),
        ]
    );

    let mut b3 = b2.clone();
    b3.spec.as_mut().unwrap().containers[0].image = Some("nginx:3".to_owned());
    source.send(vec![d_status, b3, c2]).await.unwrap();
    assert_eq!(
        next_update(&mut updates, 1, "update").await.op,
        PodOperation::Update
    );
    assert_eq!(
        next_update(&mut updates, 1, "reconcile").await.op,
        PodOperation::Reconcile
    );
}

#[tokio::test]
async fn duplicate_names_in_a_snapshot_keep_the_first() {
    let (config, mut updates) = PodConfig::new("node");
    let mut source = config.source("http");
    let first = pod("a", "uid-1", "nginx");
    let second = pod("a", "uid-2", "nginx");
    source
        .send(vec![first, second, pod("b", "uid-b", "nginx")])
        .await
        .unwrap();
    let update = next_update(&mut updates, 1, "add").await;
    assert_update(&update, PodOperation::Add, &["a", "b"]);
    assert_eq!(uids(&update), ["uid-1", "uid-b"]);
    let rejected = source.rejected();
    assert_eq!(
        rejected["a_default"],
        "Error validating pod a_default(uid-2) from http due to duplicate pod name \"a\", ignoring"
    );
    // The next clean snapshot clears the rejection.
    source
        .send(vec![pod("a", "uid-1", "nginx"), pod("b", "uid-b", "nginx")])
        .await
        .unwrap();
    assert!(source.rejected().is_empty());
}

#[tokio::test]
async fn closed_receiver_fails_the_send() {
    let (config, updates) = PodConfig::new("node");
    let mut source = config.source("file");
    drop(updates);
    assert!(source.is_closed());
    assert!(source.send(vec![]).await.is_err());
}
