//! API pods against static pods: 30 busybox pods created through a real kube-apiserver (with
//! `nodeName`) until all are Running in the API, against the same 30 pods written at once as
//! static pods until their mirror pods are all Running in the API, on one kubelet, rounds
//! interleaved: the API path's own cost as a ratio. Also the requests the kubelet sends per API
//! pod start, counted from the API server's audit log, against upstream's: its status manager
//! GETs the pod before each status PATCH, and patches once per real change (Pending with its
//! conditions, then Running): 2 GETs + 2 PATCHes; plus the Pulled, Created and Started events.
//!
//! A plain `harness = false` program in the `kubelet` package (Cargo builds the binary it runs),
//! needing the control plane binaries like the `apiserver-tests` feature it requires:
//! `KUBEBUILDER_ASSETS=... cargo bench -p kubelet --features apiserver-tests --bench api_pods`
//! (`API_PODS_ROUNDS` changes the 3 rounds, `API_PODS_COUNT` the 30 pods.)

#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use node_core::testing::control_plane::{AuditEvent, ControlPlane};

const KUBELET: &str = env!("CARGO_BIN_EXE_kubelet");
const NODE: &str = "localhost";
/// Upstream's status requests per pod start: a GET before each of the 2 PATCHes.
const UPSTREAM_STATUS_REQUESTS: f64 = 4.0;
/// Upstream's events per pod start (Pulled, Created, Started).
const UPSTREAM_EVENTS: f64 = 3.0;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pod_json(name: &str, api: bool) -> serde_json::Value {
    let mut spec = serde_json::json!({
        "automountServiceAccountToken": false,
        "terminationGracePeriodSeconds": 0,
        "containers": [{
            "name": "main",
            "image": "docker.io/library/busybox:1.35",
            "imagePullPolicy": "IfNotPresent",
            "command": ["sleep", "3600"]
        }]
    });
    if api {
        spec["nodeName"] = NODE.into();
        spec["tolerations"] = serde_json::json!([{"operator": "Exists"}]);
    }
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec
    })
}

fn running_in_api(list: &[Pod], prefix: &str) -> usize {
    list.iter()
        .filter(|p| {
            p.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(prefix))
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .count()
}

async fn running_in_cri(cri: &node_cri::CriClient, prefix: &str) -> usize {
    cri.list_containers(None)
        .await
        .map(|list| {
            list.iter()
                .filter(|c| {
                    c.state == node_cri::cri::ContainerState::ContainerRunning as i32
                        && c.labels
                            .get("io.kubernetes.pod.name")
                            .is_some_and(|n| n.starts_with(prefix))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Seconds until `n` containers run in the CRI and `n` pods are Running in the API.
async fn wait_running(
    pods: &Api<Pod>,
    cri: &node_cri::CriClient,
    prefix: &str,
    n: usize,
    t0: Instant,
) -> (f64, f64) {
    let (mut cri_at, mut api_at) = (None, None);
    let deadline = t0 + Duration::from_secs(300);
    while cri_at.is_none() || api_at.is_none() {
        assert!(Instant::now() < deadline, "{prefix}: not all {n} running");
        if cri_at.is_none() && running_in_cri(cri, prefix).await >= n {
            cri_at = Some(t0.elapsed().as_secs_f64());
        }
        if api_at.is_none()
            && let Ok(list) = pods.list(&ListParams::default()).await
            && running_in_api(&list.items, prefix) >= n
        {
            api_at = Some(t0.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (cri_at.unwrap_or_default(), api_at.unwrap_or_default())
}

/// Until the pods are gone from the API and their containers stopped (garbage collection
/// removes the dead containers later).
async fn wait_gone(pods: &Api<Pod>, cri: &node_cri::CriClient, prefix: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let in_api = pods.list(&ListParams::default()).await.is_ok_and(|l| {
            l.items.iter().any(|p| {
                p.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with(prefix))
            })
        });
        if !in_api && running_in_cri(cri, prefix).await == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{prefix}: pods not gone");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The node's requests since `from` events in, by "verb resource".
fn node_requests(events: &[AuditEvent], from: usize) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in &events[from.min(events.len())..] {
        if e.user != format!("system:node:{NODE}") {
            continue;
        }
        let resource = match (&e.resource, &e.subresource) {
            (Some(r), Some(s)) => format!("{r}/{s}"),
            (Some(r), None) => r.clone(),
            _ => e.request_uri.clone(),
        };
        *out.entry(format!("{} {resource}", e.verb)).or_default() += 1;
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds = env_or("API_PODS_ROUNDS", 3).max(1);
    let count = env_or("API_PODS_COUNT", 30).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        node_cri::harness::clean_stale_dirs();
        let cp = ControlPlane::start()
            .await
            .unwrap_or_else(|e| panic!("cannot start the control plane: {e:#}"));
        let kubeconfig = cp
            .kubeconfig_for_client_cert(&format!("system:node:{NODE}"), &["system:nodes"])
            .expect("node kubeconfig");
        let root = std::path::PathBuf::from(format!("/tmp/na-{}-apipods", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let manifests = root.join("static");
        std::fs::create_dir_all(&manifests).unwrap();
        let config = root.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
                 healthzPort: 0\nstaticPodPath: {}\nclusterDNS: [10.96.0.10]\n",
                manifests.display()
            ),
        )
        .unwrap();
        let mut kubelet = Command::new(KUBELET)
            // Memory only: the default disk thresholds would put the node under DiskPressure
            // on a build machine whose disk is nearly full.
            .arg("--eviction-hard=memory.available<100Mi")
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--config={}", config.display()))
            .arg(format!("--root-dir={}", root.display()))
            .arg(format!("--hostname-override={NODE}"))
            .arg("--address=127.0.0.1")
            .arg(format!("--cert-dir={}", root.join("pki").display()))
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .expect("start the kubelet");
        let admin = cp.admin_client();
        let nodes: Api<Node> = Api::all(admin.clone());
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let ready = nodes.get_opt(NODE).await.ok().flatten().is_some_and(|n| {
                n.status
                    .and_then(|s| s.conditions)
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            });
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "the node did not turn Ready");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(admin.clone(), "default");
        let _ = accounts
            .create(
                &PostParams::default(),
                &serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}}))
                    .unwrap(),
            )
            .await;
        let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
        let endpoint = format!("unix://{}/containerd/containerd.sock", root.display());
        let cri = node_cri::CriClient::connect(&endpoint, Default::default())
            .await
            .expect("the managed containerd");
        tokio::time::sleep(Duration::from_secs(5)).await;

        let (mut api_cri, mut api_api, mut st_cri, mut st_api) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut status_requests, mut events, mut all_requests) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            // API pods.
            let prefix = format!("a{round}-");
            let audit_from = cp.audit_events().map(|e| e.len()).unwrap_or(0);
            let t0 = Instant::now();
            let creates = (0..count).map(|i| {
                let pods = pods.clone();
                let pod: Pod = serde_json::from_value(pod_json(&format!("{prefix}{i}"), true)).unwrap();
                async move { pods.create(&PostParams::default(), &pod).await }
            });
            for r in futures::future::join_all(creates).await {
                r.expect("create a pod");
            }
            let (c, a) = wait_running(&pods, &cri, &prefix, count, t0).await;
            api_cri.push(c);
            api_api.push(a);
            // Let the last statuses and events land, then count.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let by_kind = node_requests(&cp.audit_events().unwrap_or_default(), audit_from);
            let of = |k: &str| by_kind.get(k).copied().unwrap_or(0) as f64 / count as f64;
            status_requests.push(of("patch pods/status") + of("get pods") + of("update pods/status"));
            events.push(of("create events") + of("patch events"));
            all_requests.push(by_kind.values().sum::<usize>() as f64 / count as f64);
            if round == 0 {
                for (k, n) in &by_kind {
                    println!("api_pods: round 0, API pods: {k}: {n}");
                }
                let events: Api<k8s_openapi::api::core::v1::Event> =
                    Api::namespaced(admin.clone(), "default");
                let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
                for e in events.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default() {
                    if e.involved_object.name.as_deref().is_some_and(|n| n.starts_with(&prefix))
                        && e.source.as_ref().and_then(|s| s.component.as_deref()) == Some("kubelet")
                    {
                        *reasons.entry(e.reason.unwrap_or_default()).or_default() += 1;
                    }
                }
                println!("api_pods: round 0, the kubelet's events by reason: {reasons:?}");
            }
            let deletes = (0..count).map(|i| {
                let pods = pods.clone();
                let name = format!("{prefix}{i}");
                async move { pods.delete(&name, &DeleteParams::default().grace_period(0)).await }
            });
            futures::future::join_all(deletes).await;
            wait_gone(&pods, &cri, &prefix).await;

            // The same pods as static pods.
            let prefix = format!("s{round}-");
            let t0 = Instant::now();
            for i in 0..count {
                let name = format!("{prefix}{i}");
                let yaml = serde_json::to_string(&pod_json(&name, false)).unwrap();
                write_atomically(&manifests.join(format!("{name}.json")), &yaml);
            }
            let (c, a) = wait_running(&pods, &cri, &prefix, count, t0).await;
            st_cri.push(c);
            st_api.push(a);
            for i in 0..count {
                let _ = std::fs::remove_file(manifests.join(format!("{prefix}{i}.json")));
            }
            wait_gone(&pods, &cri, &prefix).await;
            println!(
                "api_pods: round {round}: API pods running {:.2} s (CRI) / {:.2} s (API); static pods {:.2} s (CRI) / {:.2} s (API, mirrors)",
                api_cri[round], api_api[round], st_cri[round], st_api[round]
            );
        }
        let (ac, aa, sc, sa) = (median(api_cri), median(api_api), median(st_cri), median(st_api));
        println!(
            "api_pods: {count} pods, median of {rounds}: API pods all Running in the API {aa:.2} s vs static pods' mirrors {sa:.2} s (ratio {:.3}); containers all running {ac:.2} s vs {sc:.2} s (ratio {:.3})",
            aa / sa,
            ac / sc
        );
        let (sr, ev, all) = (median(status_requests), median(events), median(all_requests));
        println!(
            "api_pods: per API pod start: {sr:.2} status requests vs upstream's {UPSTREAM_STATUS_REQUESTS:.0} (ratio {:.3}); {ev:.2} event requests vs {UPSTREAM_EVENTS:.0} (ratio {:.3}); {all:.2} requests in all",
            sr / UPSTREAM_STATUS_REQUESTS,
            ev / UPSTREAM_EVENTS
        );
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(kubelet.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = kubelet.wait();
        cp.stop().await;
        node_cri::harness::detach_mounts_under(&root);
        let _ = std::fs::remove_dir_all(&root);
    });
}

/// Writes `path` through a temporary name, so the kubelet never reads half a manifest.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
