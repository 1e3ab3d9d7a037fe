//! The HTTP source against an in-process server on 127.0.0.1.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use node_core::config::{PodConfig, PodOperation, PodSourceError};

use crate::{assert_update, manifest, next_update, no_update, uids};

#[derive(Default)]
struct Served {
    status: u16,
    body: String,
    /// Values of `x-static-pod` seen in each request.
    seen_headers: Vec<Vec<String>>,
}

type Shared = Arc<Mutex<Served>>;

async fn serve_pods(State(served): State<Shared>, headers: HeaderMap) -> (StatusCode, String) {
    let mut served = served.lock().unwrap();
    let values = headers
        .get_all("x-static-pod")
        .iter()
        .map(|v| v.to_str().unwrap_or("").to_owned())
        .collect();
    served.seen_headers.push(values);
    (
        StatusCode::from_u16(served.status).unwrap(),
        served.body.clone(),
    )
}

async fn server() -> (String, Shared) {
    let served: Shared = Arc::new(Mutex::new(Served {
        status: 200,
        ..Default::default()
    }));
    let app = axum::Router::new()
        .route("/pods", get(serve_pods))
        .with_state(served.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/pods", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, served)
}

fn set(served: &Shared, status: u16, body: &str) {
    let mut served = served.lock().unwrap();
    served.status = status;
    served.body = body.to_owned();
}

fn pod_json(name: &str) -> String {
    format!(
        r#"{{"metadata":{{"name":"{name}"}},"spec":{{"containers":[{{"name":"main","image":"nginx"}}]}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_then_single_pod_then_errors_then_empty() {
    let (url, served) = server().await;
    let list = format!(
        r#"{{"apiVersion":"v1","kind":"PodList","items":[{},{}]}}"#,
        pod_json("web"),
        pod_json("db")
    );
    set(&served, 200, &list);
    let (config, mut updates) = PodConfig::new("node-h");
    let headers = BTreeMap::from([(
        "X-Static-Pod".to_owned(),
        vec!["one".to_owned(), "two".to_owned()],
    )]);
    let handle = config
        .http_source(&url, &headers, Duration::from_millis(200))
        .unwrap();

    let added = next_update(&mut updates, 5, "add of the list").await;
    assert_update(&added, PodOperation::Add, &["web-node-h", "db-node-h"]);
    assert_eq!(added.source, "http");
    assert!(config.seen_all_sources());
    assert_eq!(served.lock().unwrap().seen_headers[0], ["one", "two"]);
    let tolerations = added.pods[0].spec.as_ref().unwrap().tolerations.clone();
    assert!(
        tolerations.is_none(),
        "no NoExecute toleration for http pods"
    );

    // Unchanged body: nothing, however often it is fetched.
    no_update(&mut updates, 500).await;

    // A single pod with the same content as the list's first item: the same UID, so only db
    // is removed.
    let single = format!(
        r#"{{"apiVersion":"v1","kind":"Pod",{}"#,
        &pod_json("web")[1..]
    );
    set(&served, 200, &single);
    let removed = next_update(&mut updates, 5, "remove of db").await;
    assert_update(&removed, PodOperation::Remove, &["db-node-h"]);
    no_update(&mut updates, 400).await;

    // A server error keeps the pods and records the error.
    set(&served, 500, "boom");
    tokio::time::sleep(Duration::from_millis(700)).await;
    no_update(&mut updates, 100).await;
    let rejected = handle.rejected();
    assert_eq!(
        rejected[&url],
        format!("url {url}: 500 Internal Server Error")
    );

    // Back to the same body: no-op, error cleared.
    set(&served, 200, &single);
    no_update(&mut updates, 600).await;
    assert!(handle.rejected().is_empty());

    // An invalid body keeps the pods too.
    set(&served, 200, &manifest("bad name", "nginx"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    no_update(&mut updates, 100).await;
    let rejected = handle.rejected();
    assert!(
        rejected[&url].starts_with(&format!(
            "url {url}: invalid pod: [metadata.name: Invalid value: \"bad name-node-h\""
        )),
        "{rejected:?}"
    );

    // An empty body: an empty snapshot, the pod goes.
    set(&served, 200, "");
    let removed = next_update(&mut updates, 5, "remove of web").await;
    assert_update(&removed, PodOperation::Remove, &["web-node-h"]);

    // The same pod served again comes back with its UID.
    set(&served, 200, &single);
    let added_again = next_update(&mut updates, 5, "add of web").await;
    assert_update(&added_again, PodOperation::Add, &["web-node-h"]);
    assert_eq!(uids(&added_again)[0], uids(&added)[0]);
    for headers in &served.lock().unwrap().seen_headers {
        assert_eq!(headers, &["one", "two"]);
    }
}

#[tokio::test]
async fn https_and_bad_urls_are_refused_up_front() {
    let (config, _updates) = PodConfig::new("node");
    let error = config
        .http_source(
            "https://127.0.0.1:1/pods",
            &BTreeMap::new(),
            Duration::from_secs(20),
        )
        .unwrap_err();
    assert!(matches!(error, PodSourceError::UnsupportedScheme { .. }));
    assert_eq!(
        error.to_string(),
        "url https://127.0.0.1:1/pods: unsupported scheme (only http:// is supported)"
    );
    assert!(
        config
            .http_source("127.0.0.1/pods", &BTreeMap::new(), Duration::from_secs(20))
            .is_err()
    );
    assert!(
        config.seen_all_sources(),
        "a refused source is not configured"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_url_is_recorded_and_nothing_sent() {
    // Bind then drop a listener to get a port nothing listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/pods");
    let (config, mut updates) = PodConfig::new("node");
    let handle = config
        .http_source(&url, &BTreeMap::new(), Duration::from_millis(200))
        .unwrap();
    no_update(&mut updates, 600).await;
    assert!(!config.seen_all_sources());
    let rejected = handle.rejected();
    assert!(
        rejected[&url].starts_with(&format!("url {url}: request failed")),
        "{rejected:?}"
    );
}
