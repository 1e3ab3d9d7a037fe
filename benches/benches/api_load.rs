//! API load at rest: the requests the kubelet binary sends to a real kube-apiserver while its
//! node is idle (registered, Ready, nothing changing), counted from the API server's audit
//! log over a window, per minute, by verb and resource, against upstream's cadence at rest:
//! a lease renewal every 10 s (6/min), the node status only on change or every 5 minutes
//! (0.2/min), and a watch of the Node re-opened every 5 to 10 minutes (~0.13/min): 6.33/min.
//!
//! A count over a fixed window, not a timing: a plain `harness = false` program in the
//! `kubelet` package (so that Cargo builds the binary it runs), needing the control plane
//! binaries like the `apiserver-tests` feature it requires.
//!
//! `KUBEBUILDER_ASSETS=... cargo bench -p kubelet --features apiserver-tests --bench api_load`
//! (`API_LOAD_SECONDS` changes the 120 s window.)

#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use node_core::testing::control_plane::ControlPlane;

const KUBELET: &str = env!("CARGO_BIN_EXE_kubelet");
const NODE: &str = "localhost";
/// Upstream's requests per minute at rest (see the module docs).
const UPSTREAM_PER_MINUTE: f64 = 6.0 + 0.2 + 0.13;

fn main() {
    let window = Duration::from_secs(
        std::env::var("API_LOAD_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(120),
    );
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
        let root = std::path::PathBuf::from(format!("/tmp/na-{}-apiload", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mut kubelet = Command::new(KUBELET)
            // Memory only: the default disk thresholds would put the node under DiskPressure
            // on a build machine whose disk is nearly full.
            .arg("--eviction-hard=memory.available<100Mi")
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--root-dir={}", root.display()))
            .arg(format!("--hostname-override={NODE}"))
            .arg("--healthz-port=0")
            .arg("--address=127.0.0.1")
            .arg(format!("--cert-dir={}", root.join("pki").display()))
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .expect("start the kubelet");
        let nodes: Api<Node> = Api::all(cp.admin_client());
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
        // Settle: the demo pod starts, the first status and lease are written.
        tokio::time::sleep(Duration::from_secs(15)).await;
        let count = || {
            let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
            for e in cp.audit_events().expect("audit log") {
                if e.user != format!("system:node:{NODE}") {
                    continue;
                }
                let resource = match (&e.resource, &e.subresource) {
                    (Some(r), Some(s)) => format!("{r}/{s}"),
                    (Some(r), None) => r.clone(),
                    _ => e.request_uri.clone(),
                };
                *by_kind.entry(format!("{} {resource}", e.verb)).or_default() += 1;
            }
            by_kind
        };
        let before = count();
        let t = Instant::now();
        tokio::time::sleep(window).await;
        let after = count();
        let minutes = t.elapsed().as_secs_f64() / 60.0;
        let mut total = 0usize;
        for (kind, n) in &after {
            let d = n - before.get(kind).copied().unwrap_or(0);
            if d > 0 {
                println!("api_load: {kind}: {:.2}/min", d as f64 / minutes);
                total += d;
            }
        }
        let per_minute = total as f64 / minutes;
        println!(
            "api_load: the kubelet at rest sends {per_minute:.2} requests/min over {:.0} s; upstream's cadence {UPSTREAM_PER_MINUTE:.2}/min (ratio {:.3})",
            t.elapsed().as_secs_f64(),
            per_minute / UPSTREAM_PER_MINUTE
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
