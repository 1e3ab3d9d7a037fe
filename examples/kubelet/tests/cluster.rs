//! The example kubelet joining a real kube-apiserver v1.36 as `system:node:localhost`
//! (run with `--features apiserver-tests`; needs the control plane binaries, see node-core's
//! `testing::control_plane`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use node_core::testing::control_plane::ControlPlane;

const KUBELET: &str = env!("CARGO_BIN_EXE_kubelet");
const NODE: &str = "localhost";

/// The kubelet process, stopped with SIGTERM when dropped; its log kept for messages.
struct Kubelet {
    child: Child,
    log: mpsc::Receiver<String>,
    lines: Vec<String>,
}

/// A port free on 127.0.0.1 now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

impl Kubelet {
    /// Starts the kubelet with `args`, its server on 127.0.0.1 and a port of its own (the API
    /// server reaches it there: the node's daemon endpoint).
    fn start(args: &[String]) -> Kubelet {
        Self::start_on(args, free_port())
    }

    fn start_on(args: &[String], port: u16) -> Kubelet {
        // A certificate directory of its own unless the test names one (the default,
        // /var/lib/kubelet/pki, would be shared by the tests running at once).
        let cert_dir = (!args.iter().any(|a| a.starts_with("--cert-dir")))
            .then(|| format!("--cert-dir=/tmp/na-{}-pki-{port}", std::process::id()));
        // Memory only: the default disk thresholds (nodefs.available<10%, ...) would put every
        // test node under DiskPressure on a build machine whose disk is nearly full.
        let eviction = (!args.iter().any(|a| a.starts_with("--eviction-hard")))
            .then_some("--eviction-hard=memory.available<100Mi");
        let mut child = Command::new(KUBELET)
            .args(args)
            .args(cert_dir)
            .args(eviction)
            .arg("--address=127.0.0.1")
            .arg(format!("--port={port}"))
            .env(
                "RUST_LOG",
                std::env::var("TEST_KUBELET_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, log) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Kubelet {
            child,
            log,
            lines: Vec::new(),
        }
    }

    fn log(&mut self) -> String {
        while let Ok(line) = self.log.try_recv() {
            self.lines.push(line);
        }
        self.lines.join("\n")
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

fn ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The node once it is Ready, within 90 s (else the kubelet's log in the panic).
async fn wait_until_ready(nodes: &Api<Node>, kubelet: &mut Kubelet) -> Node {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(Some(node)) = nodes.get_opt(NODE).await
            && ready(&node)
        {
            return node;
        }
        if Instant::now() > deadline {
            panic!("the node did not turn Ready in 90 s:\n{}", kubelet.log());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn the_kubelet_registers_turns_ready_and_keeps_its_lease() {
    node_cri::harness::clean_stale_dirs();
    let cp = ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("cannot start the control plane: {e:#}"));
    let kubeconfig = cp
        .kubeconfig_for_client_cert(&format!("system:node:{NODE}"), &["system:nodes"])
        .unwrap();
    let root = std::path::PathBuf::from(format!("/tmp/na-{}-cluster", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let config = root.join("config.yaml");
    // Short lease and status periods so that the test sees several of them (a set
    // nodeStatusUpdateFrequency makes the report frequency default to it, as upstream: set
    // that too).
    std::fs::write(
        &config,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         nodeLeaseDurationSeconds: 4\nnodeStatusUpdateFrequency: 1s\nnodeStatusReportFrequency: 5m\n\
         maxPods: 50\n\
         healthzPort: 0\n",
    )
    .unwrap();
    let port = free_port();
    let mut kubelet = Kubelet::start_on(
        &[
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--config={}", config.display()),
            format!("--root-dir={}", root.display()),
            format!("--hostname-override={NODE}"),
            "--node-labels=node.kubernetes.io/pool=edge".into(),
            "--register-with-taints=dedicated=edge:NoSchedule".into(),
        ],
        port,
    );

    let nodes: Api<Node> = Api::all(cp.admin_client());
    let node = wait_until_ready(&nodes, &mut kubelet).await;
    let labels = node.metadata.labels.clone().unwrap();
    assert_eq!(labels["kubernetes.io/hostname"], NODE);
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["node.kubernetes.io/pool"], "edge");
    let taints = node.spec.clone().unwrap().taints.unwrap();
    assert!(
        taints
            .iter()
            .any(|t| t.key == "dedicated" && t.effect == "NoSchedule")
    );
    let status = node.status.clone().unwrap();
    assert_eq!(status.capacity.as_ref().unwrap()["pods"].0, "50");
    assert!(status.allocatable.as_ref().unwrap().contains_key("memory"));
    assert!(
        status
            .allocatable
            .as_ref()
            .unwrap()
            .contains_key("ephemeral-storage")
    );
    let addresses = status.addresses.clone().unwrap();
    assert!(
        addresses
            .iter()
            .any(|a| a.type_ == "Hostname" && a.address == NODE)
    );
    let info = status.node_info.clone().unwrap();
    assert_eq!(
        info.kubelet_version,
        format!("v1.36.0+node-agent.{}", env!("CARGO_PKG_VERSION"))
    );
    assert!(
        info.container_runtime_version
            .starts_with("containerd://1."),
        "{}",
        info.container_runtime_version
    );
    assert!(!info.boot_id.is_empty() && !info.kernel_version.is_empty());
    assert_eq!(
        status
            .daemon_endpoints
            .unwrap()
            .kubelet_endpoint
            .unwrap()
            .port,
        i32::from(port),
        "the server's port, where the API server reaches the kubelet"
    );
    assert!(
        status.images.unwrap().iter().any(|i| i
            .names
            .iter()
            .flatten()
            .any(|n| n.contains("busybox")))
    );

    // Nothing changes for 4 s: the status is checked every second but not sent, while the
    // lease is renewed every second.
    let node_requests = |verb: &str, resource: &str| {
        cp.audit_events()
            .unwrap()
            .iter()
            .filter(|e| {
                e.user == format!("system:node:{NODE}")
                    && e.verb == verb
                    && e.resource.as_deref() == Some(resource)
                    && e.code.is_some_and(|c| c < 300)
            })
            .count()
    };
    let (patches, renewals) = (
        node_requests("patch", "nodes"),
        node_requests("update", "leases"),
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let patches_after = node_requests("patch", "nodes");
    let renewals_after = node_requests("update", "leases");
    assert_eq!(
        patches_after,
        patches,
        "no status patch while nothing changes:\n{}",
        kubelet.log()
    );
    assert!(
        (2..=5).contains(&(renewals_after - renewals)),
        "{} lease renewals in 4 s at 1 s",
        renewals_after - renewals
    );
    let leases: Api<Lease> = Api::namespaced(cp.admin_client(), "kube-node-lease");
    let lease = leases.get(NODE).await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some(NODE));
    let owner = &lease.metadata.owner_references.unwrap()[0];
    assert_eq!(Some(owner.uid.clone()), node.metadata.uid);

    drop(kubelet);
    cp.stop().await;
    node_cri::harness::detach_mounts_under(&root);
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn the_kubelet_bootstraps_its_client_certificate_with_a_bootstrap_token() {
    node_cri::harness::clean_stale_dirs();
    let cp = ControlPlane::builder()
        .controller_manager(true)
        .start()
        .await
        .unwrap_or_else(|e| panic!("cannot start the control plane: {e:#}"));
    let (_token, bootstrap) = cp.create_bootstrap_token().await.expect("bootstrap token");
    let root = std::path::PathBuf::from(format!("/tmp/na-{}-bootstrap", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let kubeconfig = root.join("kubelet.conf");
    let cert_dir = root.join("pki");
    // kubeadm's drop-in: --bootstrap-kubeconfig, --kubeconfig (not there yet), --config.
    let mut kubelet = Kubelet::start(&[
        format!("--bootstrap-kubeconfig={}", bootstrap.display()),
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--cert-dir={}", cert_dir.display()),
        format!("--root-dir={}", root.display()),
        format!("--hostname-override={NODE}"),
        "--healthz-port=0".into(),
    ]);
    let nodes: Api<Node> = Api::all(cp.admin_client());
    wait_until_ready(&nodes, &mut kubelet).await;
    assert!(kubeconfig.exists(), "the kubeconfig is written");
    let current = cert_dir.join("kubelet-client-current.pem");
    assert!(std::fs::read_link(&current).is_ok(), "{}", kubelet.log());
    let events = cp.audit_events().unwrap();
    assert!(
        events.iter().any(|e| e.verb == "create"
            && e.resource.as_deref() == Some("certificatesigningrequests")
            && e.user.starts_with("system:bootstrap:")),
        "the CSR is made with the bootstrap token"
    );
    assert!(
        events
            .iter()
            .any(|e| e.user == format!("system:node:{NODE}")
                && e.verb == "create"
                && e.resource.as_deref() == Some("nodes")),
        "the node registers with its new certificate"
    );
    drop(kubelet);
    cp.stop().await;
    node_cri::harness::detach_mounts_under(&root);
    let _ = std::fs::remove_dir_all(&root);
}

/// The API server away for a minute: the kubelet stays up, its static pod keeps running,
/// and once the API server is back the node posts Ready again and renews its lease.
#[tokio::test]
async fn the_kubelet_rides_out_an_api_server_outage() {
    node_cri::harness::clean_stale_dirs();
    let mut cp = ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("cannot start the control plane: {e:#}"));
    let kubeconfig = cp
        .kubeconfig_for_client_cert(&format!("system:node:{NODE}"), &["system:nodes"])
        .unwrap();
    let root = std::path::PathBuf::from(format!("/tmp/na-{}-outage", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let config = root.join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         nodeLeaseDurationSeconds: 8\nnodeStatusUpdateFrequency: 2s\nnodeStatusReportFrequency: 5m\n\
         healthzPort: 0\n",
    )
    .unwrap();
    let mut kubelet = Kubelet::start(&[
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--config={}", config.display()),
        format!("--root-dir={}", root.display()),
        format!("--hostname-override={NODE}"),
    ]);
    let nodes: Api<Node> = Api::all(cp.admin_client());
    wait_until_ready(&nodes, &mut kubelet).await;
    // The demo static pod's container, running.
    let endpoint = format!("unix://{}/containerd/containerd.sock", root.display());
    let cri = node_cri::CriClient::connect(&endpoint, Default::default())
        .await
        .unwrap();
    let running = || async {
        cri.list_containers(None)
            .await
            .unwrap()
            .into_iter()
            .filter(|c| c.state == node_cri::cri::ContainerState::ContainerRunning as i32)
            .map(|c| c.id)
            .collect::<Vec<_>>()
    };
    // An API pod beside the demo static pod.
    let admin = cp.admin_client();
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(admin.clone(), "default");
    let _ = accounts
        .create(
            &Default::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}})).unwrap(),
        )
        .await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(admin.clone(), "default");
    pods.create(&Default::default(), &api_pod("steady", 1))
        .await
        .unwrap();
    wait_pod(&pods, "steady", 60, &mut kubelet, "ran", |p| {
        phase_of(p) == Some("Running")
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let before = loop {
        let ids = running().await;
        if ids.len() == 2 {
            break ids;
        }
        assert!(
            Instant::now() < deadline,
            "the demo pod and the API pod did not both start: {ids:?}\n{}",
            kubelet.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let steady = running_containers_of(&cri, "steady").await;
    assert_eq!(steady.len(), 1);

    cp.stop_apiserver().await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    // While the API server is away, the API pod's container dies: the kubelet restarts it
    // from what it knows, without the API server.
    cri.stop_container(&steady[0], 0).await.unwrap();
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert!(
        kubelet.child.try_wait().unwrap().is_none(),
        "the kubelet exited while the API server was away:\n{}",
        kubelet.log()
    );
    let now_running = running().await;
    assert_eq!(now_running.len(), 2, "no pod lost:\n{}", kubelet.log());
    let demo = before.iter().find(|id| **id != steady[0]).unwrap();
    assert!(
        now_running.contains(demo) && !now_running.contains(&steady[0]),
        "the static pod kept running, only the stopped container was replaced"
    );
    let back = k8s_openapi::jiff::Timestamp::now();
    cp.start_apiserver_again().await.unwrap();
    // The API pod's status converges: the restart is reported once the API server is back.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(cp.admin_client(), "default");
    wait_pod(
        &pods,
        "steady",
        60,
        &mut kubelet,
        "reported its restart",
        |p| {
            p.and_then(|p| p.status.as_ref())
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|c| c[0].restart_count == 1 && c[0].ready)
        },
    )
    .await;

    // Still Ready (nothing changed: the status is not sent again until it changes or the
    // report is due), and the lease renewed within a few periods.
    let nodes: Api<Node> = Api::all(cp.admin_client());
    let leases: Api<Lease> = Api::namespaced(cp.admin_client(), "kube-node-lease");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let renewed = leases
            .get_opt(NODE)
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.renew_time)
            .is_some_and(|t| t.0 > back);
        let is_ready = nodes
            .get_opt(NODE)
            .await
            .ok()
            .flatten()
            .is_some_and(|n| ready(&n));
        if renewed && is_ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the outage: lease renewed {renewed}, Ready {is_ready}:\n{}",
            kubelet.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        kubelet.log().contains("failed to update the node lease"),
        "the outage was noticed and retried"
    );
    drop(kubelet);
    cp.stop().await;
    node_cri::harness::detach_mounts_under(&root);
    let _ = std::fs::remove_dir_all(&root);
}

/// A busybox pod bound to the node, without a service-account token (the API-backed volume
/// sources come later), sleeping as PID 1 (it ignores SIGTERM: stopping takes the grace).
fn api_pod(name: &str, grace: i64) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": NODE,
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": grace,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{
                "name": "main",
                "image": "docker.io/library/busybox:1.35",
                "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"]
            }]
        }
    }))
    .unwrap()
}

/// [`api_pod`] whose container has `resources` (a `ResourceRequirements` in JSON).
fn api_pod_with_resources(
    name: &str,
    grace: i64,
    resources: serde_json::Value,
) -> k8s_openapi::api::core::v1::Pod {
    let mut pod = api_pod(name, grace);
    pod.spec.as_mut().unwrap().containers[0].resources =
        Some(serde_json::from_value(resources).unwrap());
    pod
}

/// The pod once `check` holds, within `secs` (else the kubelet's log in the panic).
async fn wait_pod(
    pods: &Api<k8s_openapi::api::core::v1::Pod>,
    name: &str,
    secs: u64,
    kubelet: &mut Kubelet,
    what: &str,
    check: impl Fn(Option<&k8s_openapi::api::core::v1::Pod>) -> bool,
) -> Option<k8s_openapi::api::core::v1::Pod> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let pod = pods.get_opt(name).await.unwrap();
        if check(pod.as_ref()) {
            return pod;
        }
        if Instant::now() > deadline {
            panic!(
                "pod {name} never {what} within {secs} s; last: {}\n{}",
                serde_json::to_string_pretty(&pod).unwrap_or_default(),
                kubelet.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn phase_of(pod: Option<&k8s_openapi::api::core::v1::Pod>) -> Option<&str> {
    pod?.status.as_ref()?.phase.as_deref()
}

#[tokio::test]
async fn api_pods_run_report_their_status_and_are_deleted_gracefully_or_at_once() {
    use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
    use kube::api::{DeleteParams, PostParams};

    node_cri::harness::clean_stale_dirs();
    let cp = ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("cannot start the control plane: {e:#}"));
    let kubeconfig = cp
        .kubeconfig_for_client_cert(&format!("system:node:{NODE}"), &["system:nodes"])
        .unwrap();
    let root = std::path::PathBuf::from(format!("/tmp/na-{}-apipods", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let config = root.join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nhealthzPort: 0\n",
    )
    .unwrap();
    let mut kubelet = Kubelet::start(&[
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--config={}", config.display()),
        format!("--root-dir={}", root.display()),
        format!("--hostname-override={NODE}"),
    ]);
    let admin = cp.admin_client();
    let nodes: Api<Node> = Api::all(admin.clone());
    let node = wait_until_ready(&nodes, &mut kubelet).await;
    let internal_ip = node
        .status
        .and_then(|s| s.addresses)
        .unwrap_or_default()
        .into_iter()
        .find(|a| a.type_ == "InternalIP")
        .map(|a| a.address);
    // The ServiceAccount admission plugin wants the namespace's default service account.
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    let _ = accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}})).unwrap(),
        )
        .await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");

    // Created with nodeName: it runs, and its status reaches the API server.
    pods.create(&PostParams::default(), &api_pod("web", 5))
        .await
        .unwrap();
    let pod = wait_pod(&pods, "web", 60, &mut kubelet, "ran", |p| {
        phase_of(p) == Some("Running")
    })
    .await
    .unwrap();
    let status = pod.status.unwrap();
    let ip: std::net::IpAddr = status.pod_ip.as_deref().expect("podIP").parse().unwrap();
    assert!(!ip.is_loopback(), "a pod network address: {ip}");
    assert_eq!(
        status.host_ip, internal_ip,
        "hostIP is the node's InternalIP"
    );
    let main = &status.container_statuses.unwrap()[0];
    assert_eq!(main.name, "main");
    assert!(main.state.as_ref().unwrap().running.is_some());
    let conditions = status.conditions.unwrap();
    for kind in [
        "PodReadyToStartContainers",
        "Initialized",
        "ContainersReady",
        "Ready",
    ] {
        let c = conditions.iter().find(|c| c.type_ == kind).unwrap();
        assert_eq!(c.status, "True", "{kind}");
    }
    assert!(
        conditions.iter().any(|c| c.type_ == "PodScheduled"),
        "the scheduler's condition is kept"
    );

    // The kubelet's events about it, on the API server (kubectl describe shows them).
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(admin.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = events.list(&Default::default()).await.unwrap();
        let about_web: Vec<_> = list
            .items
            .iter()
            .filter(|e| e.involved_object.name.as_deref() == Some("web"))
            .collect();
        let reasons: Vec<&str> = about_web
            .iter()
            .filter_map(|e| e.reason.as_deref())
            .collect();
        if ["Pulled", "Created", "Started"]
            .iter()
            .all(|r| reasons.contains(r))
        {
            let started = about_web
                .iter()
                .find(|e| e.reason.as_deref() == Some("Started"))
                .unwrap();
            assert_eq!(
                started.involved_object.field_path.as_deref(),
                Some("spec.containers{main}")
            );
            let source = started.source.clone().unwrap();
            assert_eq!(source.component.as_deref(), Some("kubelet"));
            assert_eq!(source.host.as_deref(), Some(NODE));
            assert_eq!(started.type_.as_deref(), Some("Normal"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the kubelet's events did not reach the API server: {reasons:?}\n{}",
            kubelet.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // A readiness probe drives the container's ready and the pod's ContainersReady and Ready
    // conditions in the API, with their transition times. It goes on while the pod
    // terminates (as upstream; EndpointSlices' `serving` follows it): the container's TERM
    // handler removes the file, and Ready turns False before the container is gone.
    let mut probed = api_pod("probed", 10);
    probed.spec.as_mut().unwrap().containers[0].command = Some(vec![
        "sh".into(),
        "-c".into(),
        "trap 'rm -f /tmp/ready; sleep 30' TERM; while true; do sleep 0.2; done".into(),
    ]);
    probed.spec.as_mut().unwrap().containers[0].readiness_probe = Some(
        serde_json::from_value(serde_json::json!({
            "exec": {"command": ["cat", "/tmp/ready"]},
            "periodSeconds": 1,
            "failureThreshold": 1
        }))
        .unwrap(),
    );
    pods.create(&PostParams::default(), &probed).await.unwrap();
    let condition = |p: Option<&Pod>, kind: &str| {
        p?.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == kind)
            .map(|c| {
                (
                    c.status.clone(),
                    c.last_transition_time.clone().map(|t| t.0),
                )
            })
    };
    let is = |p: Option<&Pod>, kind: &str, status: &str| {
        condition(p, kind).is_some_and(|(s, _)| s == status)
    };
    let unready = wait_pod(&pods, "probed", 60, &mut kubelet, "ran unready", |p| {
        phase_of(p) == Some("Running")
            && is(p, "Ready", "False")
            && is(p, "ContainersReady", "False")
    })
    .await;
    let (_, unready_at) = condition(unready.as_ref(), "Ready").unwrap();
    let id = unready
        .as_ref()
        .unwrap()
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .container_id
        .clone()
        .unwrap();
    let id = id.split_once("://").unwrap().1.to_string();
    let cri = node_cri::CriClient::connect(
        &format!("unix://{}/containerd/containerd.sock", root.display()),
        Default::default(),
    )
    .await
    .unwrap();
    let sh = |cmd: &str| vec!["sh".to_string(), "-c".to_string(), cmd.to_string()];
    // Transition times have a resolution of a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let out = cri
        .exec_sync(&id, sh("touch /tmp/ready"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0);
    let ready_pod = wait_pod(&pods, "probed", 30, &mut kubelet, "turned ready", |p| {
        is(p, "Ready", "True") && is(p, "ContainersReady", "True")
    })
    .await;
    assert!(
        ready_pod
            .as_ref()
            .unwrap()
            .status
            .as_ref()
            .unwrap()
            .container_statuses
            .as_ref()
            .unwrap()[0]
            .ready
    );
    let (_, ready_at) = condition(ready_pod.as_ref(), "Ready").unwrap();
    assert!(ready_at > unready_at, "{ready_at:?} after {unready_at:?}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let out = cri
        .exec_sync(&id, sh("rm /tmp/ready"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0);
    let unready_again = wait_pod(&pods, "probed", 30, &mut kubelet, "turned unready", |p| {
        is(p, "Ready", "False")
    })
    .await;
    let (_, again_at) = condition(unready_again.as_ref(), "Ready").unwrap();
    assert!(again_at > ready_at, "{again_at:?} after {ready_at:?}");
    // The Unhealthy event on the API server.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = events.list(&Default::default()).await.unwrap();
        let unhealthy = list.items.iter().find(|e| {
            e.involved_object.name.as_deref() == Some("probed")
                && e.reason.as_deref() == Some("Unhealthy")
        });
        if let Some(e) = unhealthy {
            assert_eq!(e.type_.as_deref(), Some("Warning"));
            let message = e.message.as_deref().unwrap_or_default();
            assert!(
                message.starts_with("Readiness probe failed: cat: can't open '/tmp/ready'"),
                "{message}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no Unhealthy event:\n{}",
            kubelet.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Ready again, then deleted: Ready turns False while the container is still stopping.
    let out = cri
        .exec_sync(&id, sh("touch /tmp/ready"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0);
    wait_pod(
        &pods,
        "probed",
        30,
        &mut kubelet,
        "turned ready again",
        |p| is(p, "Ready", "True"),
    )
    .await;
    pods.delete("probed", &DeleteParams::default().grace_period(10))
        .await
        .unwrap();
    wait_pod(
        &pods,
        "probed",
        8,
        &mut kubelet,
        "unready while terminating",
        |p| {
            // Not the final status: the container still runs.
            let running = p
                .and_then(|p| {
                    p.status
                        .as_ref()?
                        .container_statuses
                        .as_ref()?
                        .first()
                        .cloned()
                })
                .is_some_and(|c| c.state.is_some_and(|s| s.running.is_some()));
            p.is_some_and(|p| p.metadata.deletion_timestamp.is_some())
                && running
                && is(p, "Ready", "False")
        },
    )
    .await;
    wait_pod(&pods, "probed", 30, &mut kubelet, "went away", |p| {
        p.is_none()
    })
    .await;

    // kubectl delete --grace-period 5: the container is stopped within the grace period (sleep
    // ignores SIGTERM, so it takes the 5 s), the final status is written, then the kubelet
    // deletes the object.
    let started = Instant::now();
    pods.delete("web", &DeleteParams::default().grace_period(5))
        .await
        .unwrap();
    wait_pod(&pods, "web", 30, &mut kubelet, "went away", |p| p.is_none()).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(15),
        "the graceful deletion took {took:?}"
    );

    // --force --grace-period 0: the object goes at once and the container stops at once.
    pods.create(&PostParams::default(), &api_pod("fast", 30))
        .await
        .unwrap();
    wait_pod(&pods, "fast", 60, &mut kubelet, "ran", |p| {
        phase_of(p) == Some("Running")
    })
    .await;
    let endpoint = format!("unix://{}/containerd/containerd.sock", root.display());
    let cri = node_cri::CriClient::connect(&endpoint, Default::default())
        .await
        .unwrap();
    let fast_running = || async {
        cri.list_containers(None)
            .await
            .unwrap()
            .into_iter()
            .filter(|c| {
                c.state == node_cri::cri::ContainerState::ContainerRunning as i32
                    && c.labels.get("io.kubernetes.pod.name").map(String::as_str) == Some("fast")
            })
            .count()
    };
    assert_eq!(fast_running().await, 1);
    let started = Instant::now();
    pods.delete("fast", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    while fast_running().await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the force-deleted pod's container still runs:\n{}",
            kubelet.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(pods.get_opt("fast").await.unwrap().is_none());

    drop(kubelet);
    cp.stop().await;
    node_cri::harness::detach_mounts_under(&root);
    let _ = std::fs::remove_dir_all(&root);
}

/// The files of the pod's volume `name` of `plugin` (`kubernetes.io~configmap`, ...), whose
/// directory starts with `prefix`, under the kubelet's root directory.
fn volume_dir(
    root: &std::path::Path,
    uid: &str,
    plugin: &str,
    prefix: &str,
) -> Option<std::path::PathBuf> {
    std::fs::read_dir(root.join("pods").join(uid).join("volumes").join(plugin))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
}

#[tokio::test]
async fn pods_get_their_service_account_token_configmap_and_secret_env_and_volumes_that_follow_updates()
 {
    use base64::Engine as _;
    use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
    use kube::api::{Patch, PatchParams, PostParams};

    node_cri::harness::clean_stale_dirs();
    let cp = ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("cannot start the control plane: {e:#}"));
    let kubeconfig = cp
        .kubeconfig_for_client_cert(&format!("system:node:{NODE}"), &["system:nodes"])
        .unwrap();
    let root = std::path::PathBuf::from(format!("/tmp/na-{}-apiobjects", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let config = root.join("config.yaml");
    // A short resync: configMap updates reach volumes at the pod's next sync.
    std::fs::write(
        &config,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nhealthzPort: 0\n\
         syncFrequency: 5s\n",
    )
    .unwrap();
    let mut kubelet = Kubelet::start(&[
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--config={}", config.display()),
        format!("--root-dir={}", root.display()),
        format!("--hostname-override={NODE}"),
    ]);
    let admin = cp.admin_client();
    let nodes: Api<Node> = Api::all(admin.clone());
    wait_until_ready(&nodes, &mut kubelet).await;
    // What kube-controller-manager would have made: the default service account and the
    // namespace's root CA configMap.
    let post = PostParams::default();
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    let _ = accounts
        .create(
            &post,
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}})).unwrap(),
        )
        .await;
    let maps: Api<ConfigMap> = Api::namespaced(admin.clone(), "default");
    maps.create(
        &post,
        &serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kube-root-ca.crt"},
            "data": {"ca.crt": cp.ca_pem()}
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    // This API server's service-account admission also projects a service CA configMap
    // into kube-api-access volumes; publish it as its cluster would.
    maps.create(
        &post,
        &serde_json::from_value(serde_json::json!({
            "metadata": {"name": "openshift-service-ca.crt"},
            "data": {"service-ca.crt": cp.ca_pem()}
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    maps.create(
        &post,
        &serde_json::from_value(serde_json::json!({
            "metadata": {"name": "cfg"}, "data": {"greeting": "hello-1"}
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(admin.clone(), "default");
    secrets
        .create(
            &post,
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "creds"}, "stringData": {"password": "s3cret"}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(admin.clone(), "default");
    let web_svc = services
        .create(
            &post,
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web-svc"},
                "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let web_ip = web_svc.spec.unwrap().cluster_ip.unwrap();
    let master_ip = services
        .get("kubernetes")
        .await
        .unwrap()
        .spec
        .unwrap()
        .cluster_ip
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    // The service-account admission plugin adds the kube-api-access projected volume. The
    // environment comes from the configMap and the secret too.
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "reader", "namespace": "default"},
        "spec": {
            "nodeName": NODE,
            "terminationGracePeriodSeconds": 1,
            "tolerations": [{"operator": "Exists"}],
            "volumes": [{"name": "cfg", "configMap": {"name": "cfg"}}],
            "containers": [{
                "name": "main",
                "image": "docker.io/library/busybox:1.35",
                "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"],
                "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}],
                "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
                "env": [
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                    {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
                    {"name": "ABSENT", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": true}}}
                ]
            }]
        }
    }))
    .unwrap();
    let created = pods.create(&post, &pod).await.unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    let running = wait_pod(&pods, "reader", 90, &mut kubelet, "ran", |p| {
        phase_of(p) == Some("Running")
    })
    .await
    .unwrap();

    // The environment, as the container sees it.
    let id = running.status.unwrap().container_statuses.unwrap()[0]
        .container_id
        .clone()
        .unwrap();
    let id = id.trim_start_matches("containerd://");
    let endpoint = format!("unix://{}/containerd/containerd.sock", root.display());
    let cri = node_cri::CriClient::connect(&endpoint, Default::default())
        .await
        .unwrap();
    let out = cri
        .exec_sync(id, vec!["env".into()], Duration::from_secs(10))
        .await
        .unwrap();
    let env = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in [
        "CFG_greeting=hello-1",
        "PASSWORD=s3cret",
        "GREETING=hello-1",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} in:\n{env}");
    }
    assert!(
        !env.contains("ABSENT="),
        "an optional absent reference is skipped"
    );
    // Service links: the namespace's services and the master service.
    for line in [
        format!("WEB_SVC_SERVICE_HOST={web_ip}"),
        "WEB_SVC_SERVICE_PORT_HTTP=80".to_string(),
        format!("WEB_SVC_PORT=tcp://{web_ip}:80"),
        format!("KUBERNETES_SERVICE_HOST={master_ip}"),
    ] {
        assert!(env.lines().any(|l| l == line), "{line} in:\n{env}");
    }

    // The token: a JWT the API server issued for this pod's service account, bound to the pod.
    let access = volume_dir(&root, &uid, "kubernetes.io~projected", "kube-api-access-")
        .expect("the kube-api-access volume");
    let token = std::fs::read_to_string(access.join("token")).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT: {token}");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], "system:serviceaccount:default:default");
    assert_eq!(claims["kubernetes.io"]["pod"]["name"], "reader");
    assert_eq!(claims["kubernetes.io"]["pod"]["uid"], uid.as_str());
    assert_eq!(
        std::fs::read_to_string(access.join("ca.crt")).unwrap(),
        cp.ca_pem()
    );
    assert_eq!(
        std::fs::read_to_string(access.join("namespace")).unwrap(),
        "default"
    );
    let requests = cp
        .audit_events()
        .unwrap()
        .into_iter()
        .filter(|e| {
            e.user == format!("system:node:{NODE}")
                && e.resource.as_deref() == Some("serviceaccounts")
                && e.subresource.as_deref() == Some("token")
                && e.code == Some(201)
        })
        .count();
    assert!(
        requests >= 1,
        "the token came from a TokenRequest by the node"
    );

    // The configMap volume, and its update reaching the running pod.
    let cfg = volume_dir(&root, &uid, "kubernetes.io~configmap", "cfg").expect("cfg volume");
    assert_eq!(
        std::fs::read_to_string(cfg.join("greeting")).unwrap(),
        "hello-1"
    );
    maps.patch(
        "cfg",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"data": {"greeting": "hello-2"}})),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    while std::fs::read_to_string(cfg.join("greeting"))
        .ok()
        .as_deref()
        != Some("hello-2")
    {
        assert!(
            Instant::now() < deadline,
            "the configMap update did not reach the volume:\n{}",
            kubelet.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // fsGroup: a non-root container reads its token (0600 written, 0640 for the group once
    // the volume is the group's) and its configMap, both the group's; the token stays closed
    // to others.
    let grouped: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "grouped", "namespace": "default"},
        "spec": {
            "nodeName": NODE,
            "terminationGracePeriodSeconds": 1,
            "tolerations": [{"operator": "Exists"}],
            "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 2000},
            "volumes": [{"name": "cfg", "configMap": {"name": "cfg"}}],
            "containers": [{
                "name": "main",
                "image": "docker.io/library/busybox:1.35",
                "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"],
                "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}]
            }]
        }
    }))
    .unwrap();
    pods.create(&post, &grouped).await.unwrap();
    let running = wait_pod(&pods, "grouped", 90, &mut kubelet, "ran", |p| {
        phase_of(p) == Some("Running")
    })
    .await
    .unwrap();
    let id = running.status.unwrap().container_statuses.unwrap()[0]
        .container_id
        .clone()
        .unwrap();
    let id = id.trim_start_matches("containerd://");
    let token = "/var/run/secrets/kubernetes.io/serviceaccount/token";
    let script = format!(
        "head -c 10 {token} >/dev/null && stat -L -c '%g %a' {token} /cfg/greeting && id -G"
    );
    let out = cri
        .exec_sync(
            id,
            vec!["sh".into(), "-c".into(), script],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.exit_code,
        0,
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "2000 640", "the token: {text}");
    assert!(lines[1].starts_with("2000 "), "the configMap file: {text}");
    assert!(
        lines[2].split(' ').any(|g| g == "2000"),
        "the fsGroup is a supplemental group: {text}"
    );

    drop(kubelet);
    cp.stop().await;
    node_cri::harness::detach_mounts_under(&root);
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn a_static_pod_gets_a_mirror_pod_that_comes_back_when_deleted() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::DeleteParams;

    node_cri::harness::clean_stale_dirs();
    let cp = ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("cannot start the control plane: {e:#}"));
    let kubeconfig = cp
        .kubeconfig_for_client_cert(&format!("system:node:{NODE}"), &["system:nodes"])
        .unwrap();
    let root = std::path::PathBuf::from(format!("/tmp/na-{}-mirror", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let config = root.join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nhealthzPort: 0\n",
    )
    .unwrap();
    // The embedded default's demo pod is a static pod from <root>/manifests.
    let mut kubelet = Kubelet::start(&[
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--config={}", config.display()),
        format!("--root-dir={}", root.display()),
        format!("--hostname-override={NODE}"),
    ]);
    let admin = cp.admin_client();
    let nodes: Api<Node> = Api::all(admin.clone());
    let node = wait_until_ready(&nodes, &mut kubelet).await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let name = format!("demo-{NODE}");
    let mirror = wait_pod(
        &pods,
        &name,
        60,
        &mut kubelet,
        "got a running mirror",
        |p| phase_of(p) == Some("Running"),
    )
    .await
    .unwrap();
    let annotations = mirror.metadata.annotations.clone().unwrap();
    assert!(annotations.contains_key("kubernetes.io/config.mirror"));
    let owner = &mirror.metadata.owner_references.clone().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Node", NODE));
    assert_eq!(Some(owner.uid.clone()), node.metadata.uid);
    let status = mirror.status.clone().unwrap();
    let container = &status.container_statuses.unwrap()[0];
    let container_id = container.container_id.clone().unwrap();
    assert_eq!(container.restart_count, 0);

    // Deleted: it comes back (a new object), and the static pod's container runs on untouched.
    pods.delete(&name, &DeleteParams::default()).await.unwrap();
    let old_uid = mirror.metadata.uid.clone();
    let back = wait_pod(&pods, &name, 60, &mut kubelet, "came back", |p| {
        p.is_some_and(|p| p.metadata.uid != old_uid && p.metadata.deletion_timestamp.is_none())
            && phase_of(p) == Some("Running")
    })
    .await
    .unwrap();
    let again = &back.status.unwrap().container_statuses.unwrap()[0];
    assert_eq!(again.container_id.as_deref(), Some(container_id.as_str()));
    assert_eq!(again.restart_count, 0, "the static pod was not restarted");

    // The static pod removed: its mirror goes.
    std::fs::remove_file(root.join("manifests/demo.yaml")).unwrap();
    wait_pod(&pods, &name, 60, &mut kubelet, "went away", |p| p.is_none()).await;

    drop(kubelet);
    cp.stop().await;
    node_cri::harness::detach_mounts_under(&root);
    let _ = std::fs::remove_dir_all(&root);
}

/// The running containers of the pods named `prefix…`, by CRI id.
async fn running_containers_of(cri: &node_cri::CriClient, prefix: &str) -> Vec<String> {
    let mut ids: Vec<String> = cri
        .list_containers(None)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| {
            c.state == node_cri::cri::ContainerState::ContainerRunning as i32
                && c.labels
                    .get("io.kubernetes.pod.name")
                    .is_some_and(|n| n.starts_with(prefix))
        })
        .map(|c| c.id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn deployments_and_jobs_run_through_the_real_scheduler_admission_rejects_and_a_restarted_kubelet_adopts_its_pods()
 {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::{Event, Pod};
    use k8s_openapi::api::node::v1::RuntimeClass;
    use kube::api::{ListParams, PostParams};

    node_cri::harness::clean_stale_dirs();
    let cp = ControlPlane::builder()
        .controller_manager(true)
        .controllers("serviceaccount,serviceaccount-token,deployment,replicaset,job,nodelifecycle")
        .scheduler(true)
        .start()
        .await
        .unwrap_or_else(|e| panic!("cannot start the control plane: {e:#}"));
    let kubeconfig = cp
        .kubeconfig_for_client_cert(&format!("system:node:{NODE}"), &["system:nodes"])
        .unwrap();
    let root = std::path::PathBuf::from(format!("/tmp/na-{}-workloads", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("manifests")).unwrap();
    let config = root.join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nhealthzPort: 0\n",
    )
    .unwrap();
    // A static pod of a RuntimeClass nobody defined (the API server refuses such API pods).
    std::fs::write(
        root.join("manifests/classy.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: classy\n  namespace: default\nspec:\n  \
         runtimeClassName: nope\n  containers:\n  - name: main\n    image: docker.io/library/busybox:1.35\n    \
         imagePullPolicy: IfNotPresent\n    command: [sleep, \"3600\"]\n",
    )
    .unwrap();
    let args = [
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--config={}", config.display()),
        format!("--root-dir={}", root.display()),
        format!("--hostname-override={NODE}"),
    ];
    let mut kubelet = Kubelet::start(&args);
    let admin = cp.admin_client();
    let nodes: Api<Node> = Api::all(admin.clone());
    wait_until_ready(&nodes, &mut kubelet).await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let post = PostParams::default();
    let classes: Api<RuntimeClass> = Api::all(admin.clone());
    classes
        .create(
            &post,
            &serde_json::from_value(serde_json::json!({
                "apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
                "metadata": {"name": "plain"}, "handler": "runc"
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let template = |class: Option<&str>, restart: &str, command: &[&str]| {
        serde_json::json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "automountServiceAccountToken": false,
                "terminationGracePeriodSeconds": 1,
                "restartPolicy": restart,
                "runtimeClassName": class,
                "containers": [{
                    "name": "main",
                    "image": "docker.io/library/busybox:1.35",
                    "imagePullPolicy": "IfNotPresent",
                    "command": command
                }]
            }
        })
    };

    // A Deployment of two replicas: the scheduler binds them to our node, which runs them
    // with their RuntimeClass's handler.
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "default");
    deployments
        .create(
            &post,
            &serde_json::from_value(serde_json::json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web"},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": template(Some("plain"), "Always", &["sleep", "3600"])
                }
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let web = loop {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap();
        let running: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| phase_of(Some(p)) == Some("Running"))
            .collect();
        if running.len() == 2 {
            break running;
        }
        if Instant::now() > deadline {
            let all = pods.list(&ListParams::default()).await.unwrap();
            let d = deployments.get("web").await.unwrap();
            panic!(
                "the deployment's pods did not run: {:?}\npods: {}\ncontroller-manager: {}\nscheduler: {}\n{}",
                d.status,
                serde_json::to_string_pretty(&all.items).unwrap_or_default(),
                std::fs::read_to_string(cp.log_path("kube-controller-manager"))
                    .unwrap_or_default()
                    .lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .join("\n"),
                std::fs::read_to_string(cp.log_path("kube-scheduler"))
                    .unwrap_or_default()
                    .lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .join("\n"),
                kubelet.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for p in &web {
        assert_eq!(p.spec.as_ref().unwrap().node_name.as_deref(), Some(NODE));
    }
    let endpoint = format!("unix://{}/containerd/containerd.sock", root.display());
    let cri = node_cri::CriClient::connect(&endpoint, Default::default())
        .await
        .unwrap();
    let sandboxes = cri.list_pod_sandbox(None).await.unwrap();
    let web_sandbox = sandboxes
        .iter()
        .find(|s| {
            s.metadata
                .as_ref()
                .is_some_and(|m| m.name.starts_with("web-"))
        })
        .expect("a sandbox of the deployment");
    assert_eq!(
        web_sandbox.runtime_handler, "runc",
        "the RuntimeClass's handler"
    );

    // A Job: its pod runs to completion, Succeeded in the API, and the Job completes.
    let jobs: Api<Job> = Api::namespaced(admin.clone(), "default");
    let mut job_template = template(None, "Never", &["sh", "-c", "echo done"]);
    job_template["metadata"]["labels"] = serde_json::json!({"app": "once"});
    jobs.create(
        &post,
        &serde_json::from_value(serde_json::json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "once"},
            "spec": {"backoffLimit": 0, "template": job_template}
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let job = jobs.get("once").await.unwrap();
        if job.status.as_ref().and_then(|s| s.succeeded) == Some(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job did not succeed: {:?}\n{}",
            job.status,
            kubelet.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let job_pods = pods
        .list(&ListParams::default().labels("app=once"))
        .await
        .unwrap();
    assert_eq!(phase_of(job_pods.items.first()), Some("Succeeded"));

    // Pods bound to the node that do not fit it are rejected, with upstream's reasons.
    let mut huge = api_pod("huge", 1);
    huge.spec.as_mut().unwrap().containers[0].resources =
        Some(k8s_openapi::api::core::v1::ResourceRequirements {
            requests: Some(
                [(
                    "memory".to_string(),
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity("1000Gi".into()),
                )]
                .into(),
            ),
            ..Default::default()
        });
    pods.create(&post, &huge).await.unwrap();
    let mut elsewhere = api_pod("elsewhere", 1);
    elsewhere.spec.as_mut().unwrap().node_selector =
        Some([("disktype".to_string(), "ssd".to_string())].into());
    pods.create(&post, &elsewhere).await.unwrap();
    let huge = wait_pod(&pods, "huge", 30, &mut kubelet, "was rejected", |p| {
        phase_of(p) == Some("Failed")
    })
    .await
    .unwrap()
    .status
    .unwrap();
    assert_eq!(huge.reason.as_deref(), Some("OutOfmemory"));
    let message = huge.message.unwrap_or_default();
    assert!(
        message.starts_with(
            "Pod was rejected: Node didn't have enough resource: memory, requested: 1073741824000, used: "
        ),
        "{message}"
    );
    let elsewhere = wait_pod(&pods, "elsewhere", 30, &mut kubelet, "was rejected", |p| {
        phase_of(p) == Some("Failed")
    })
    .await
    .unwrap()
    .status
    .unwrap();
    assert_eq!(elsewhere.reason.as_deref(), Some("NodeAffinity"));

    // The static pod of an unknown RuntimeClass never gets a sandbox; the event says why.
    let events: Api<Event> = Api::namespaced(admin.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = events.list(&Default::default()).await.unwrap();
        if list.items.iter().any(|e| {
            e.reason.as_deref() == Some("FailedCreatePodSandBox")
                && e.message.as_deref()
                    == Some(
                        "Failed to create pod sandbox: runtimeclass.node.k8s.io \"nope\" not found",
                    )
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no FailedCreatePodSandBox event for the unknown RuntimeClass:\n{}",
            kubelet.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        !cri.list_pod_sandbox(None).await.unwrap().iter().any(|s| s
            .metadata
            .as_ref()
            .is_some_and(|m| m.name == "classy-localhost")),
        "no sandbox for the pod of an unknown class"
    );

    // A restarted kubelet adopts the API pods: the same containers, not restarted, statuses
    // unchanged in the API.
    let before = running_containers_of(&cri, "web-").await;
    assert_eq!(before.len(), 2);
    drop(kubelet);
    let mut kubelet = Kubelet::start(&args);
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert!(
        kubelet.child.try_wait().unwrap().is_none(),
        "the restarted kubelet exited:\n{}",
        kubelet.log()
    );
    assert_eq!(
        running_containers_of(&cri, "web-").await,
        before,
        "the deployment's containers run on, untouched:\n{}",
        kubelet.log()
    );
    let list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 2, "no replica replaced");
    for p in &list.items {
        let status = p.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let c = &status.container_statuses.as_ref().unwrap()[0];
        assert_eq!(c.restart_count, 0);
        assert!(c.ready);
        assert!(
            before
                .iter()
                .any(|id| c.container_id.as_deref() == Some(&format!("containerd://{id}")))
        );
    }
    // Housekeeping after the restart did not take the rejected or finished pods for new ones.
    assert_eq!(
        phase_of(pods.get_opt("huge").await.unwrap().as_ref()),
        Some("Failed")
    );

    drop(kubelet);
    cp.stop().await;
    node_cri::harness::detach_mounts_under(&root);
    let _ = std::fs::remove_dir_all(&root);
}

/// A GET to the kubelet server on 127.0.0.1:`port` over TLS, its certificate verified against
/// the CA in `server_ca` (the self-signed `kubelet.crt` holds it), with a client certificate
/// and/or a bearer token: the status and body, or the TLS/IO error.
async fn kubelet_get(
    port: u16,
    path: &str,
    server_ca: &std::path::Path,
    client: Option<(&std::path::Path, &std::path::Path)>,
    bearer: Option<&str>,
) -> Result<(u16, String), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(server_ca).map_err(|e| e.to_string())? {
        roots.add(cert.map_err(|e| e.to_string())?).ok();
    }
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .map_err(|e| e.to_string())?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?,
                PrivateKeyDer::from_pem_file(key).map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?,
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw).await.map_err(|e| e.to_string())?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no HTTP response")?;
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status")?;
    Ok((code, body.to_string()))
}

/// Runs the real kubectl with the admin kubeconfig, `stdin` written to it.
fn kubectl_with_input(cp: &ControlPlane, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let kubectl = node_core::testing::control_plane::find_binary("kubectl").expect("kubectl");
    let mut child = Command::new(kubectl)
        .arg(format!(
            "--kubeconfig={}",
            cp.admin_kubeconfig_path().display()
        ))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs the real kubectl with the admin kubeconfig: its stdout, or a panic with its stderr.
fn kubectl(cp: &ControlPlane, args: &[&str]) -> String {
    let kubectl = node_core::testing::control_plane::find_binary("kubectl").expect("kubectl");
    let out = Command::new(kubectl)
        .arg(format!(
            "--kubeconfig={}",
            cp.admin_kubeconfig_path().display()
        ))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn the_kubelet_server_authenticates_authorizes_and_serves_kubectl_logs() {
    use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
    use kube::api::PostParams;

    node_cri::harness::clean_stale_dirs();
    let cp = ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("cannot start the control plane: {e:#}"));
    let kubeconfig = cp
        .kubeconfig_for_client_cert(&format!("system:node:{NODE}"), &["system:nodes"])
        .unwrap();
    let root = std::path::PathBuf::from(format!("/tmp/na-{}-server", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let config = root.join("config.yaml");
    // kubeadm's authentication and authorization: client certificates of the cluster CA,
    // token and authorization webhooks (the defaults), no anonymous requests.
    std::fs::write(
        &config,
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nhealthzPort: 0\n\
             featureGates:\n  NodeLogQuery: true\nenableSystemLogQuery: true\n\
             authentication:\n  x509:\n    clientCAFile: {}\n",
            cp.ca_cert_path().display()
        ),
    )
    .unwrap();
    let cert_dir = root.join("pki");
    let args = [
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--config={}", config.display()),
        format!("--root-dir={}", root.display()),
        format!("--hostname-override={NODE}"),
        format!("--cert-dir={}", cert_dir.display()),
    ];
    let port = free_port();
    let mut kubelet = Kubelet::start_on(&args, port);
    let admin = cp.admin_client();
    let nodes: Api<Node> = Api::all(admin.clone());
    wait_until_ready(&nodes, &mut kubelet).await;

    // The self-signed serving certificate, for the node's name, kept in the cert dir.
    let served = cert_dir.join("kubelet.crt");
    let first_cert = std::fs::read(&served).expect("kubelet.crt in the cert dir");
    assert!(cert_dir.join("kubelet.key").exists());
    let masters = cp.dir().join("pki/apiserver-kubelet-client.crt");
    let masters_key = cp.dir().join("pki/apiserver-kubelet-client.key");
    let (code, body) = kubelet_get(port, "/pods", &served, Some((&masters, &masters_key)), None)
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"PodList\""), "{body}");
    // No credentials: 401.
    assert_eq!(
        kubelet_get(port, "/pods", &served, None, None)
            .await
            .unwrap(),
        (401, "Unauthorized".to_string())
    );
    // A certificate of another CA does not get through the handshake.
    let stranger = root.join("stranger");
    std::fs::create_dir_all(&stranger).unwrap();
    let (pem, key) = node_core::server::tls::self_signed("stranger", &[]).unwrap();
    std::fs::write(stranger.join("c.crt"), pem).unwrap();
    std::fs::write(stranger.join("c.key"), key).unwrap();
    assert!(
        kubelet_get(
            port,
            "/pods",
            &served,
            Some((&stranger.join("c.crt"), &stranger.join("c.key"))),
            None
        )
        .await
        .is_err(),
        "a client certificate of another CA is refused"
    );
    // A service account's token: authenticated by TokenReview, denied by SubjectAccessReview.
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    let _ = accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}})).unwrap(),
        )
        .await;
    let token = kubectl(&cp, &["create", "token", "default", "-n", "default"]);
    assert_eq!(
        kubelet_get(port, "/pods", &served, None, Some(token.trim()))
            .await
            .unwrap(),
        (
            403,
            "Forbidden (user=system:serviceaccount:default:default, verb=get, resource=nodes, subresource=pods)"
                .to_string()
        )
    );
    assert_eq!(
        kubelet_get(port, "/pods", &served, None, Some("not-a-token"))
            .await
            .unwrap()
            .0,
        401
    );

    // kubectl logs through the API server: a container that counts its own runs (in an
    // emptyDir) and then ticks every second.
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "talker"},
        "spec": {
            "nodeName": NODE,
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 0,
            "tolerations": [{"operator": "Exists"}],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [{
                "name": "main",
                "image": "docker.io/library/busybox:1.35",
                "imagePullPolicy": "IfNotPresent",
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                "command": ["sh", "-c",
                    "n=$(cat /data/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /data/n; \
                     echo run $n; echo to-stderr >&2; i=0; \
                     while true; do i=$((i+1)); echo tick $i; sleep 1; done"]
            }]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    wait_pod(&pods, "talker", 60, &mut kubelet, "ran", |p| {
        phase_of(p) == Some("Running")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let whole = kubectl(&cp, &["logs", "talker"]);
    // stdout and stderr both (their order is the runtime's: two pipes).
    let first_stdout = |log: &str| log.lines().find(|l| *l != "to-stderr").map(str::to_string);
    assert!(
        first_stdout(&whole).as_deref() == Some("run 1")
            && whole.lines().any(|l| l == "to-stderr")
            && whole.lines().any(|l| l == "tick 2"),
        "{whole}\n{}",
        kubelet.log()
    );
    let tail = kubectl(&cp, &["logs", "talker", "--tail=1"]);
    assert_eq!(tail.lines().count(), 1, "{tail}");
    assert!(tail.starts_with("tick "), "{tail}");
    assert_eq!(
        kubectl(&cp, &["logs", "talker", "--limit-bytes=4"]),
        whole[..4],
        "the first 4 bytes"
    );
    let stamped = kubectl(&cp, &["logs", "talker", "--timestamps", "--tail=1"]);
    let (time, rest) = stamped.split_once(' ').unwrap();
    assert!(
        time.parse::<k8s_openapi::jiff::Timestamp>().is_ok() && rest.starts_with("tick "),
        "{stamped}"
    );
    let since = kubectl(&cp, &["logs", "talker", "--since=1h"]);
    assert_eq!(first_stdout(&since).as_deref(), Some("run 1"), "{since}");
    // Follow: new lines arrive as the container writes them.
    let kubectl_bin = node_core::testing::control_plane::find_binary("kubectl").unwrap();
    let mut follow = Command::new(kubectl_bin)
        .arg(format!(
            "--kubeconfig={}",
            cp.admin_kubeconfig_path().display()
        ))
        .args(["logs", "-f", "talker", "--tail=1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let ticks: Vec<u32> = (0..3)
        .map(|_| {
            let line = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("kubectl logs -f delivers new lines");
            line.strip_prefix("tick ").unwrap().parse().unwrap()
        })
        .collect();
    assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "{ticks:?}");
    let _ = follow.kill();
    let _ = follow.wait();

    // --previous after a restart: the first run's log; the current one is the second run's.
    let endpoint = format!("unix://{}/containerd/containerd.sock", root.display());
    let cri = node_cri::CriClient::connect(&endpoint, Default::default())
        .await
        .unwrap();
    let running = running_containers_of(&cri, "talker").await;
    cri.stop_container(&running[0], 0).await.unwrap();
    wait_pod(&pods, "talker", 60, &mut kubelet, "restarted", |p| {
        p.and_then(|p| p.status.as_ref())
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|c| {
                c[0].restart_count == 1 && c[0].state.as_ref().is_some_and(|s| s.running.is_some())
            })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let previous = kubectl(&cp, &["logs", "talker", "--previous"]);
    assert_eq!(
        first_stdout(&previous).as_deref(),
        Some("run 1"),
        "{previous}"
    );
    let current = kubectl(&cp, &["logs", "talker"]);
    assert_eq!(
        first_stdout(&current).as_deref(),
        Some("run 2"),
        "{current}"
    );

    // /configz shows the file's settings; /runningpods/ the runtime's pods; /healthz/*.
    let (code, configz) = kubelet_get(
        port,
        "/configz",
        &served,
        Some((&masters, &masters_key)),
        None,
    )
    .await
    .unwrap();
    assert_eq!(code, 200);
    let configz: serde_json::Value = serde_json::from_str(&configz).unwrap();
    assert_eq!(
        configz["kubeletconfig"]["authentication"]["x509"]["clientCAFile"],
        cp.ca_cert_path().display().to_string()
    );
    assert_eq!(configz["kubeletconfig"]["port"], i64::from(port));
    let (code, running) = kubelet_get(
        port,
        "/runningpods/",
        &served,
        Some((&masters, &masters_key)),
        None,
    )
    .await
    .unwrap();
    assert_eq!(code, 200);
    let running: serde_json::Value = serde_json::from_str(&running).unwrap();
    assert!(
        running["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["metadata"]["name"] == "talker"
                && p["spec"]["containers"][0]["name"] == "main"),
        "{running}"
    );
    // /logs/: the node's /var/log, confined to it.
    let (code, listing) = kubelet_get(
        port,
        "/logs/",
        &served,
        Some((&masters, &masters_key)),
        None,
    )
    .await
    .unwrap();
    assert_eq!(code, 200);
    assert!(listing.starts_with("<!doctype html>"), "{listing}");
    for (path, want) in [("/logs/../etc/passwd", 400), ("/logs//etc/passwd", 404)] {
        assert_eq!(
            kubelet_get(port, path, &served, Some((&masters, &masters_key)), None)
                .await
                .unwrap()
                .0,
            want,
            "{path}"
        );
    }
    // Node log query (NodeLogQuery, enableSystemLogQuery): upstream's answers and errors.
    for (path, want, text) in [
        (
            "/logs/?query=no-such-service",
            200,
            "\nlog not found for no-such-service\n",
        ),
        (
            "/logs/?query=kubelet&boot=1",
            400,
            "boot: Invalid value: 1: must be less than 1",
        ),
        (
            "/logs/?query=/../no-such.log",
            400,
            "stat /var/log/no-such.log: no such file or directory",
        ),
    ] {
        let (code, body) = kubelet_get(port, path, &served, Some((&masters, &masters_key)), None)
            .await
            .unwrap();
        assert_eq!(code, want, "{path}: {body}");
        assert!(body.contains(text), "{path}: {body}");
    }
    for path in [
        "/healthz",
        "/healthz/ping",
        "/healthz/log",
        "/healthz/syncloop",
    ] {
        assert_eq!(
            kubelet_get(port, path, &served, Some((&masters, &masters_key)), None)
                .await
                .unwrap(),
            (200, "ok".to_string()),
            "{path}"
        );
    }

    // kubectl exec through the API server: stdout, stderr and the exit code apart; stdin.
    let out = kubectl_with_input(
        &cp,
        &[
            "exec",
            "talker",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
        "",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "out\n",
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        kubelet.log()
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("err\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3), "the command's exit code");
    let out = kubectl_with_input(
        &cp,
        &["exec", "-i", "talker", "--", "cat"],
        "hello\nworld\n",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\nworld\n");
    assert!(out.status.success());

    // kubectl attach to a container reading its stdin (stdinOnce: it ends with the input).
    let reader: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "reader"},
        "spec": {
            "nodeName": NODE,
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 0,
            "restartPolicy": "Never",
            "tolerations": [{"operator": "Exists"}],
            "containers": [{
                "name": "main",
                "image": "docker.io/library/busybox:1.35",
                "imagePullPolicy": "IfNotPresent",
                "stdin": true,
                "stdinOnce": true,
                "command": ["sh", "-c", "while read l; do echo got $l; done; echo bye"]
            }]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &reader).await.unwrap();
    wait_pod(&pods, "reader", 60, &mut kubelet, "ran", |p| {
        phase_of(p) == Some("Running")
    })
    .await;
    let out = kubectl_with_input(&cp, &["attach", "-i", "reader", "-c", "main"], "hello\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("got hello"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_pod(
        &pods,
        "reader",
        30,
        &mut kubelet,
        "ended with its input",
        |p| phase_of(p) == Some("Succeeded"),
    )
    .await;

    // kubectl debug: an ephemeral container in the running pod, in its target's process
    // namespace, with its status in the API, and exec into it.
    kubectl(
        &cp,
        &[
            "debug",
            "talker",
            "--image=docker.io/library/busybox:1.35",
            "--image-pull-policy=IfNotPresent",
            "--container=dbg",
            "--target=main",
            "--",
            "sleep",
            "3600",
        ],
    );
    wait_pod(
        &pods,
        "talker",
        60,
        &mut kubelet,
        "ran its ephemeral container",
        |p| {
            p.and_then(|p| p.status.as_ref())
                .and_then(|s| s.ephemeral_container_statuses.as_ref())
                .is_some_and(|e| {
                    e.iter().any(|c| {
                        c.name == "dbg" && c.state.as_ref().is_some_and(|s| s.running.is_some())
                    })
                })
        },
    )
    .await;
    let ps = kubectl(
        &cp,
        &["exec", "talker", "-c", "dbg", "--", "ps", "-o", "args"],
    );
    assert!(
        ps.contains("/data/n"),
        "the target's processes are visible: {ps}"
    );
    // Deleted, the pod's ephemeral container is stopped with its own field path.
    pods.delete("talker", &Default::default()).await.unwrap();
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(admin.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = events.list(&Default::default()).await.unwrap();
        if list.items.iter().any(|e| {
            e.reason.as_deref() == Some("Killing")
                && e.involved_object.name.as_deref() == Some("talker")
                && e.involved_object.field_path.as_deref() == Some("spec.ephemeralContainers{dbg}")
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no Killing event for the ephemeral container:\n{}",
            kubelet.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // kubectl port-forward to busybox httpd in a pod; the page fetched on loopback.
    let web: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "pf"},
        "spec": {
            "nodeName": NODE,
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 0,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{
                "name": "httpd",
                "image": "docker.io/library/busybox:1.35",
                "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c",
                    "mkdir -p /www && echo hello-port-forward > /www/index.html && exec httpd -f -p 8080 -h /www"]
            }]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &web).await.unwrap();
    wait_pod(&pods, "pf", 60, &mut kubelet, "ran", |p| {
        phase_of(p) == Some("Running")
    })
    .await;
    let kubectl_bin = node_core::testing::control_plane::find_binary("kubectl").unwrap();
    let mut forward = Command::new(kubectl_bin)
        .arg(format!(
            "--kubeconfig={}",
            cp.admin_kubeconfig_path().display()
        ))
        .args(["port-forward", "pod/pf", ":8080"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(forward.stdout.take().unwrap()).lines();
    // "Forwarding from 127.0.0.1:<port> -> 8080"
    let first = lines.next().unwrap().unwrap();
    let local: u16 = first
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected kubectl output: {first}"));
    let page = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", local))
            .await
            .unwrap();
        conn.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let mut raw = String::new();
        tokio::time::timeout(Duration::from_secs(20), conn.read_to_string(&mut raw))
            .await
            .expect("the page through the forward")
            .unwrap();
        raw
    };
    assert!(
        page.starts_with("HTTP/1.") && page.contains("hello-port-forward"),
        "{page}\n{}",
        kubelet.log()
    );
    let _ = forward.kill();
    let _ = forward.wait();

    // Restarted, the kubelet serves the same certificate.
    drop(kubelet);
    let mut kubelet = Kubelet::start_on(&args, port);
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        match kubelet_get(port, "/pods", &served, Some((&masters, &masters_key)), None).await {
            Ok((code, _)) => break code,
            Err(e) => assert!(
                Instant::now() < deadline,
                "the restarted kubelet does not serve: {e}\n{}",
                kubelet.log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(code, 200, "the same certificate still verifies");
    assert_eq!(std::fs::read(&served).unwrap(), first_cert, "reused");

    drop(kubelet);
    cp.stop().await;
    node_cri::harness::detach_mounts_under(&root);
    let _ = std::fs::remove_dir_all(&root);
}

/// The end-entity certificate the kubelet server on `port` presents (DER), verified against
/// `ca` for the name `localhost`.
async fn served_certificate(port: u16, ca: &std::path::Path) -> Result<Vec<u8>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
        roots.add(cert.map_err(|e| e.to_string())?).ok();
    }
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (_, session) = tls.get_ref();
    session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or_else(|| "no certificate presented".to_string())
}

/// The kubelet-serving CSRs of the node, oldest first.
async fn serving_csrs(
    csrs: &Api<k8s_openapi::api::certificates::v1::CertificateSigningRequest>,
) -> Vec<k8s_openapi::api::certificates::v1::CertificateSigningRequest> {
    let mut list: Vec<_> = csrs
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.spec.signer_name == "kubernetes.io/kubelet-serving")
        .collect();
    list.sort_by_key(|c| c.metadata.creation_timestamp.clone().map(|t| t.0));
    list
}

#[tokio::test]
async fn with_server_tls_bootstrap_the_serving_certificate_is_requested_served_once_issued_and_rotated()
 {
    use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    node_cri::harness::clean_stale_dirs();
    // Certificates valid for a minute (plus the signer's 5 minutes of backdating): the
    // kubelet rotates each soon after it is issued.
    let cp = ControlPlane::builder()
        .controller_manager(true)
        .controllers("csrsigning,serviceaccount,serviceaccount-token")
        .cluster_signing_duration(Duration::from_secs(60))
        .start()
        .await
        .unwrap_or_else(|e| panic!("cannot start the control plane: {e:#}"));
    let kubeconfig = cp
        .kubeconfig_for_client_cert(&format!("system:node:{NODE}"), &["system:nodes"])
        .unwrap();
    let root = std::path::PathBuf::from(format!("/tmp/na-{}-serving", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let config = root.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nhealthzPort: 0\n\
             serverTLSBootstrap: true\nauthentication:\n  x509:\n    clientCAFile: {}\n",
            cp.ca_cert_path().display()
        ),
    )
    .unwrap();
    let cert_dir = root.join("pki");
    let port = free_port();
    let mut kubelet = Kubelet::start_on(
        &[
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--config={}", config.display()),
            format!("--root-dir={}", root.display()),
            format!("--hostname-override={NODE}"),
            format!("--cert-dir={}", cert_dir.display()),
        ],
        port,
    );
    let csrs: Api<CertificateSigningRequest> = Api::all(cp.admin_client());
    let ca = cp.ca_cert_path().to_path_buf();

    // The CSR: the node's own, for the serving signer, with upstream's usages.
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        if let Some(csr) = serving_csrs(&csrs).await.into_iter().next() {
            break csr;
        }
        assert!(
            Instant::now() < deadline,
            "no kubelet-serving CSR in 60 s:\n{}",
            kubelet.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        first.spec.username.as_deref(),
        Some(format!("system:node:{NODE}").as_str())
    );
    assert_eq!(
        first.spec.usages.clone().unwrap_or_default(),
        ["digital signature", "server auth"]
    );
    // Not approved yet: no certificate to serve, and no self-signed one made instead.
    assert!(served_certificate(port, &ca).await.is_err());
    assert!(!cert_dir.join("kubelet.crt").exists());

    // Approved (with the real kubectl) and signed: served, valid for `localhost`.
    let first_name = first.metadata.name.clone().unwrap();
    kubectl(&cp, &["certificate", "approve", &first_name]);
    let issued = |name: String| {
        let csrs = csrs.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let csr = csrs.get(&name).await.unwrap();
                if let Some(pem) = csr.status.and_then(|s| s.certificate) {
                    return CertificateDer::pem_slice_iter(&pem.0)
                        .next()
                        .unwrap()
                        .unwrap()
                        .to_vec();
                }
                assert!(Instant::now() < deadline, "{name} not signed in 30 s");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    let first_der = issued(first_name.clone()).await;
    let served_now = |expected: Vec<u8>, what: &'static str| {
        let ca = ca.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if served_certificate(port, &ca).await.ok().as_ref() == Some(&expected) {
                    return;
                }
                assert!(Instant::now() < deadline, "{what} not served in 30 s");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    served_now(first_der.clone(), "the first certificate").await;
    let masters = cp.dir().join("pki/apiserver-kubelet-client.crt");
    let masters_key = cp.dir().join("pki/apiserver-kubelet-client.key");
    let (code, body) = kubelet_get(port, "/pods", &ca, Some((&masters, &masters_key)), None)
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(
        std::fs::read_link(cert_dir.join("kubelet-server-current.pem")).is_ok(),
        "stored as upstream's file store"
    );

    // Rotated: a second CSR, approved, and its certificate served without a restart.
    let deadline = Instant::now() + Duration::from_secs(90);
    let second = loop {
        if let Some(csr) = serving_csrs(&csrs)
            .await
            .into_iter()
            .find(|c| c.metadata.name.as_deref() != Some(first_name.as_str()))
        {
            break csr;
        }
        assert!(
            Instant::now() < deadline,
            "no rotation CSR in 90 s:\n{}",
            kubelet.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let second_name = second.metadata.name.unwrap();
    kubectl(&cp, &["certificate", "approve", &second_name]);
    let second_der = issued(second_name).await;
    assert_ne!(first_der, second_der);
    served_now(second_der, "the rotated certificate").await;
    drop(kubelet);
    cp.stop().await;
    node_cri::harness::detach_mounts_under(&root);
    let _ = std::fs::remove_dir_all(&root);
}

/// A control plane and a kubelet registered with it as `localhost`: its configuration file
/// (`config`, the lines after the header) under `root`, its root directory `root_dir`, `arg`
/// added to its command line; the namespace's default service account made.
struct ApiNode {
    cp: ControlPlane,
    kubelet: Kubelet,
    nodes: Api<Node>,
    pods: Api<k8s_openapi::api::core::v1::Pod>,
}

impl ApiNode {
    async fn start(
        root: &std::path::Path,
        root_dir: &std::path::Path,
        config: &str,
        arg: &str,
    ) -> ApiNode {
        use k8s_openapi::api::core::v1::ServiceAccount;
        use kube::api::PostParams;
        node_cri::harness::clean_stale_dirs();
        let cp = ControlPlane::start()
            .await
            .unwrap_or_else(|e| panic!("cannot start the control plane: {e:#}"));
        let kubeconfig = cp
            .kubeconfig_for_client_cert(&format!("system:node:{NODE}"), &["system:nodes"])
            .unwrap();
        let file = root.join("config.yaml");
        std::fs::write(
            &file,
            format!(
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nhealthzPort: 0\n{config}"
            ),
        )
        .unwrap();
        let mut kubelet = Kubelet::start(&[
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--config={}", file.display()),
            format!("--root-dir={}", root_dir.display()),
            format!("--hostname-override={NODE}"),
            arg.to_string(),
        ]);
        let admin = cp.admin_client();
        let nodes: Api<Node> = Api::all(admin.clone());
        wait_until_ready(&nodes, &mut kubelet).await;
        let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
        let _ = accounts
            .create(
                &PostParams::default(),
                &serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}}))
                    .unwrap(),
            )
            .await;
        ApiNode {
            cp,
            kubelet,
            nodes,
            pods: Api::namespaced(admin, "default"),
        }
    }
}

fn node_condition(node: &Node, kind: &str) -> Option<String> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.clone())
}

#[tokio::test]
async fn memory_pressure_evicts_a_best_effort_pod_keeps_a_guaranteed_one_and_rejects_new_best_effort_pods_and_an_empty_dir_over_its_size_limit_is_evicted()
 {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::PostParams;

    let root = std::path::PathBuf::from(format!("/tmp/na-{}-eviction", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    // The threshold 1.5 GiB below what is available now; the hog fills 2.5 GiB.
    let threshold_mib = node_cri::harness::node_memory_available() / (1 << 20) - 1536;
    let ApiNode {
        cp,
        mut kubelet,
        nodes,
        pods,
    } = ApiNode::start(
        &root,
        &root,
        "nodeStatusUpdateFrequency: 2s\nevictionPressureTransitionPeriod: 20s\n",
        &format!("--eviction-hard=memory.available<{threshold_mib}Mi"),
    )
    .await;
    let steady = api_pod_with_resources(
        "steady",
        1,
        serde_json::json!({
            "requests": {"cpu": "100m", "memory": "64Mi"},
            "limits": {"cpu": "100m", "memory": "64Mi"}
        }),
    );
    pods.create(&PostParams::default(), &steady).await.unwrap();
    wait_pod(&pods, "steady", 60, &mut kubelet, "ran", |p| {
        phase_of(p) == Some("Running")
    })
    .await;
    // 100 MiB into a memory-backed emptyDir every 0.3 s, 25 times.
    let hog: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hog", "namespace": "default"},
        "spec": {
            "nodeName": NODE,
            "automountServiceAccountToken": false,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 30,
            "tolerations": [{"operator": "Exists"}],
            "volumes": [{"name": "fill", "emptyDir": {"medium": "Memory"}}],
            "containers": [{
                "name": "hog",
                "image": "docker.io/library/busybox:1.35",
                "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "for i in $(seq 1 25); do head -c 104857600 /dev/zero > /fill/$i; sleep 0.3; done; sleep 3600"],
                "volumeMounts": [{"name": "fill", "mountPath": "/fill"}]
            }]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &hog).await.unwrap();
    let evicted = wait_pod(&pods, "hog", 90, &mut kubelet, "evicted", |p| {
        p.and_then(|p| p.status.as_ref()).is_some_and(|s| {
            s.phase.as_deref() == Some("Failed") && s.reason.as_deref() == Some("Evicted")
        })
    })
    .await
    .unwrap();
    let status = evicted.status.unwrap();
    let message = status.message.unwrap_or_default();
    assert!(
        message.starts_with(&format!(
            "The node was low on resource: memory. Threshold quantity: {threshold_mib}Mi, available: "
        )) && message.contains("Container hog was using ")
            && message.ends_with("request is 0, has larger consumption of memory. "),
        "{message}"
    );
    // Its container statuses are kept, terminated.
    let hog_status = status
        .container_statuses
        .clone()
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.name == "hog")
        .expect("the evicted pod keeps its container status");
    assert!(
        hog_status.state.and_then(|s| s.terminated).is_some(),
        "the hog's container is terminated"
    );
    let disruption = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "DisruptionTarget")
        .expect("a DisruptionTarget condition");
    assert_eq!(disruption.reason.as_deref(), Some("TerminationByKubelet"));
    // The node reports MemoryPressure; a new BestEffort pod is rejected, a Guaranteed one is
    // admitted.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let node = nodes.get(NODE).await.unwrap();
        if node_condition(&node, "MemoryPressure").as_deref() == Some("True") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no MemoryPressure on the node:\n{}",
            kubelet.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Without api_pod's blanket toleration, which tolerates the memory-pressure taint too.
    let mut late = api_pod("late", 1);
    late.spec.as_mut().unwrap().tolerations = None;
    pods.create(&PostParams::default(), &late).await.unwrap();
    let mut late_guaranteed = steady.clone();
    late_guaranteed.metadata.name = Some("late-guaranteed".into());
    pods.create(&PostParams::default(), &late_guaranteed)
        .await
        .unwrap();
    let late = wait_pod(&pods, "late", 30, &mut kubelet, "rejected", |p| {
        phase_of(p) == Some("Failed")
    })
    .await
    .unwrap()
    .status
    .unwrap();
    assert_eq!(late.reason.as_deref(), Some("Evicted"));
    assert_eq!(
        late.message.as_deref(),
        Some("Pod was rejected: The node had condition: [MemoryPressure]. ")
    );
    wait_pod(&pods, "late-guaranteed", 60, &mut kubelet, "ran", |p| {
        phase_of(p) == Some("Running")
    })
    .await;
    // The pressure ends once the hog's memory is freed, and the condition clears after the
    // transition period.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let node = nodes.get(NODE).await.unwrap();
        if node_condition(&node, "MemoryPressure").as_deref() == Some("False") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "MemoryPressure never cleared:\n{}",
            kubelet.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let steady = pods.get("steady").await.unwrap();
    assert_eq!(
        phase_of(Some(&steady)),
        Some("Running"),
        "the Guaranteed pod within its request kept running:\n{}",
        kubelet.log()
    );
    // An emptyDir over its sizeLimit: evicted whatever the node's pressure.
    let scratch: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "scratch", "namespace": "default"},
        "spec": {
            "nodeName": NODE,
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 30,
            "volumes": [{"name": "cache", "emptyDir": {"sizeLimit": "10Mi"}}],
            "containers": [{
                "name": "main",
                "image": "docker.io/library/busybox:1.35",
                "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "head -c 20971520 /dev/zero > /cache/big; sleep 3600"],
                "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]
            }]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &scratch).await.unwrap();
    let evicted = wait_pod(&pods, "scratch", 60, &mut kubelet, "evicted", |p| {
        p.and_then(|p| p.status.as_ref()).is_some_and(|s| {
            s.phase.as_deref() == Some("Failed") && s.reason.as_deref() == Some("Evicted")
        })
    })
    .await
    .unwrap();
    assert_eq!(
        evicted.status.unwrap().message.as_deref(),
        Some("Usage of EmptyDir volume \"cache\" exceeds the limit \"10Mi\". ")
    );
    let log = kubelet.log();
    assert!(log.contains("memory threshold notifier"), "{log}");
    drop(kubelet);
    cp.stop().await;
    node_cri::harness::detach_mounts_under(&root);
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn disk_pressure_reclaims_dead_containers_and_images_first_then_evicts_the_pod_filling_the_disk()
 {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::PostParams;

    // The kubelet's root directory (pods, volumes, the managed containerd's images) on a
    // 384 MiB tmpfs: nodefs.available is that filesystem's.
    let root = std::path::PathBuf::from(format!("/tmp/na-{}-disk", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=384m", "tmpfs"])
        .arg(&root)
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a tmpfs at {}", root.display());
    let ApiNode {
        cp,
        mut kubelet,
        nodes,
        pods,
    } = ApiNode::start(
        &root,
        &root.join("kubelet"),
        "nodeStatusUpdateFrequency: 2s\nevictionPressureTransitionPeriod: 10s\n",
        "--eviction-hard=nodefs.available<128Mi,memory.available<100Mi",
    )
    .await;
    // A pod that ran and exited leaves a dead container for the reclaim.
    let mut done = api_pod("done", 1);
    done.spec.as_mut().unwrap().restart_policy = Some("Never".into());
    done.spec.as_mut().unwrap().containers[0].command = Some(vec!["true".into()]);
    pods.create(&PostParams::default(), &done).await.unwrap();
    wait_pod(&pods, "done", 60, &mut kubelet, "succeeded", |p| {
        phase_of(p) == Some("Succeeded")
    })
    .await;
    // 10 MiB every 0.2 s into a disk-backed emptyDir, up to 300 MiB.
    let filler: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "filler", "namespace": "default"},
        "spec": {
            "nodeName": NODE,
            "automountServiceAccountToken": false,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 30,
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [{
                "name": "filler",
                "image": "docker.io/library/busybox:1.35",
                "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "for i in $(seq 1 30); do head -c 10485760 /dev/zero > /data/$i; sleep 0.2; done; sleep 3600"],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]
            }]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &filler).await.unwrap();
    let running = wait_pod(&pods, "filler", 60, &mut kubelet, "ran", |p| {
        phase_of(p) == Some("Running")
    })
    .await
    .unwrap();
    let uid = running.metadata.uid.clone().unwrap();
    let evicted = wait_pod(&pods, "filler", 90, &mut kubelet, "evicted", |p| {
        p.and_then(|p| p.status.as_ref()).is_some_and(|s| {
            s.phase.as_deref() == Some("Failed") && s.reason.as_deref() == Some("Evicted")
        })
    })
    .await
    .unwrap();
    let message = evicted.status.unwrap().message.unwrap_or_default();
    assert!(
        message.starts_with(
            "The node was low on resource: ephemeral-storage. Threshold quantity: 128Mi, available: "
        ),
        "{message}"
    );
    let log = kubelet.log();
    let reclaimed = log
        .find("eviction manager: deleting dead containers")
        .expect("dead containers reclaimed first");
    let images = log
        .find("unused images")
        .expect("unused images reclaimed first");
    let evicting = log.find("eviction manager: evicting pod").unwrap();
    assert!(reclaimed < evicting && images < evicting, "{log}");
    // The dead container of the pod that ran to completion is gone from the runtime.
    let cri = node_cri::CriClient::connect(
        &format!(
            "unix://{}/kubelet/containerd/containerd.sock",
            root.display()
        ),
        Default::default(),
    )
    .await
    .unwrap();
    let dead: Vec<_> = cri
        .list_containers(None)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.labels.get("io.kubernetes.pod.name").map(String::as_str) == Some("done"))
        .collect();
    assert!(dead.is_empty(), "dead containers left: {dead:?}");
    // Its emptyDir goes with it, and the pressure ends.
    let volume = root
        .join("kubelet/pods")
        .join(&uid)
        .join("volumes/kubernetes.io~empty-dir/data");
    let deadline = Instant::now() + Duration::from_secs(60);
    while volume.exists() {
        assert!(
            Instant::now() < deadline,
            "{} still there",
            volume.display()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let node = nodes.get(NODE).await.unwrap();
        if node_condition(&node, "DiskPressure").as_deref() == Some("False") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "DiskPressure never cleared:\n{}",
            kubelet.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(kubelet);
    cp.stop().await;
    node_cri::harness::detach_mounts_under(&root);
    let _ = Command::new("umount")
        .arg("-l")
        .arg(&root)
        .stderr(Stdio::null())
        .status();
    let _ = std::fs::remove_dir_all(&root);
}

/// The memory limit of a container's cgroup (v1) and of its pod's.
fn memory_limits_of(pid: u32) -> (u64, u64) {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = cgroups
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == "memory")
                .then(|| path.to_string())
        })
        .expect("a memory cgroup (v1)");
    let container = std::path::PathBuf::from(format!("/sys/fs/cgroup/memory{path}"));
    let read = |dir: &std::path::Path| -> u64 {
        std::fs::read_to_string(dir.join("memory.limit_in_bytes"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    (read(&container), read(container.parent().unwrap()))
}

fn resize_condition<'a>(
    pod: &'a k8s_openapi::api::core::v1::Pod,
    kind: &str,
) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
}

#[tokio::test]
async fn a_pod_resized_in_place_gets_its_new_memory_limit_without_a_restart_and_a_resize_that_does_not_fit_waits_for_room()
 {
    use kube::api::{Patch, PatchParams, PostParams};

    let root = std::path::PathBuf::from(format!("/tmp/na-{}-resize", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let ApiNode {
        cp: _cp,
        mut kubelet,
        nodes: _nodes,
        pods,
    } = ApiNode::start(&root, &root, "", "--eviction-hard=memory.available<100Mi").await;
    let pod = api_pod_with_resources(
        "grow",
        1,
        serde_json::json!({
            "requests": {"cpu": "100m", "memory": "64Mi"},
            "limits": {"cpu": "200m", "memory": "64Mi"}
        }),
    );
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let running = wait_pod(&pods, "grow", 90, &mut kubelet, "ran", |p| {
        phase_of(p) == Some("Running")
    })
    .await
    .unwrap();
    let status = &running
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    let id = status.container_id.clone().unwrap();
    let id = id.rsplit("://").next().unwrap().to_string();
    let allocated = status.allocated_resources.clone().unwrap_or_default();
    assert_eq!(allocated["memory"].0, "64Mi");
    let cri = node_cri::CriClient::connect(
        &format!("unix://{}/containerd/containerd.sock", root.display()),
        Default::default(),
    )
    .await
    .unwrap();
    let pid = cri.container_pid(&id).await.unwrap().unwrap();
    assert_eq!(memory_limits_of(pid), (64 << 20, 64 << 20));

    // Raise the memory limit through the resize subresource.
    let resize = |requests: &str, limit: &str| {
        Patch::Strategic(serde_json::json!({"spec": {"containers": [{
            "name": "main",
            "resources": {
                "requests": {"cpu": "100m", "memory": requests},
                "limits": {"cpu": "200m", "memory": limit}
            }
        }]}}))
    };
    pods.patch_subresource(
        "resize",
        "grow",
        &PatchParams::default(),
        &resize("64Mi", "128Mi"),
    )
    .await
    .unwrap();
    let resized = wait_pod(&pods, "grow", 60, &mut kubelet, "resized", |p| {
        let Some(p) = p else { return false };
        let limit = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c[0].resources.as_ref())
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("memory"))
            .map(|q| q.0.clone());
        limit.as_deref() == Some(&(128u64 << 20).to_string()) || limit.as_deref() == Some("128Mi")
    })
    .await
    .unwrap();
    let status = &resized
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    assert_eq!(status.restart_count, 0, "resized without a restart");
    assert!(status.container_id.as_deref().unwrap().ends_with(&id));
    assert!(resize_condition(&resized, "PodResizeInProgress").is_none());
    assert!(resize_condition(&resized, "PodResizePending").is_none());
    assert_eq!(memory_limits_of(pid), (128 << 20, 128 << 20));

    // (A resize beyond the node's allocatable is refused by the API server itself, with
    // NodeCapacity: the kubelet's Infeasible is unit-tested.) One that does not fit beside
    // another pod is deferred with upstream's message, and allocated once that pod is gone.
    let node = _nodes.get(NODE).await.unwrap();
    let allocatable: node_config::Quantity = node.status.unwrap().allocatable.unwrap()["memory"]
        .0
        .parse()
        .unwrap();
    let big = api_pod_with_resources(
        "big",
        0,
        serde_json::json!({
            "requests": {"memory": (allocatable.value() - (512 << 20)).to_string()}
        }),
    );
    pods.create(&PostParams::default(), &big).await.unwrap();
    wait_pod(&pods, "big", 90, &mut kubelet, "ran", |p| {
        phase_of(p) == Some("Running")
    })
    .await;
    pods.patch_subresource(
        "resize",
        "grow",
        &PatchParams::default(),
        &resize("1Gi", "1Gi"),
    )
    .await
    .unwrap();
    let pending = wait_pod(&pods, "grow", 60, &mut kubelet, "deferred", |p| {
        p.and_then(|p| resize_condition(p, "PodResizePending"))
            .is_some_and(|c| c.reason.as_deref() == Some("Deferred"))
    })
    .await
    .unwrap();
    let condition = resize_condition(&pending, "PodResizePending").unwrap();
    assert_eq!(
        condition.message.as_deref().unwrap_or_default(),
        format!(
            "Node didn't have enough resource: memory, requested: {}, used: {}, capacity: {}",
            1u64 << 30,
            allocatable.value() - (512 << 20),
            allocatable.value()
        ),
    );
    assert_eq!(memory_limits_of(pid), (128 << 20, 128 << 20));
    let status = &pending
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    assert_eq!(status.restart_count, 0);
    assert_eq!(
        status.allocated_resources.as_ref().unwrap()["memory"].0,
        "64Mi"
    );
    // The other pod leaves: the resize goes through.
    pods.delete("big", &Default::default()).await.unwrap();
    let done = wait_pod(
        &pods,
        "grow",
        60,
        &mut kubelet,
        "resized after the other pod left",
        |p| {
            p.is_some_and(|p| {
                resize_condition(p, "PodResizePending").is_none()
                    && resize_condition(p, "PodResizeInProgress").is_none()
                    && p.status
                        .as_ref()
                        .and_then(|s| s.container_statuses.as_ref())
                        .and_then(|c| c[0].allocated_resources.as_ref())
                        .is_some_and(|a| a["memory"].0 == "1Gi")
            })
        },
    )
    .await
    .unwrap();
    assert_eq!(memory_limits_of(pid), (1 << 30, 1 << 30));
    let status = &done
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    assert_eq!(status.restart_count, 0);

    // Below what the pod uses: 48 MiB in its /dev/shm (64 MiB at most), then a 32Mi limit. The kubelet does not
    // shrink the pod under its usage; the resize shows the error and the container lives on.
    let fill = vec![
        "sh".to_string(),
        "-c".to_string(),
        "dd if=/dev/zero of=/dev/shm/fill bs=1M count=48".to_string(),
    ];
    let out = cri
        .exec_sync(&id, fill, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    pods.patch_subresource(
        "resize",
        "grow",
        &PatchParams::default(),
        &resize("32Mi", "32Mi"),
    )
    .await
    .unwrap();
    let refused = wait_pod(
        &pods,
        "grow",
        60,
        &mut kubelet,
        "refused below usage",
        |p| {
            p.and_then(|p| resize_condition(p, "PodResizeInProgress"))
                .is_some_and(|c| c.reason.as_deref() == Some("Error"))
        },
    )
    .await
    .unwrap();
    let condition = resize_condition(&refused, "PodResizeInProgress").unwrap();
    assert_eq!(
        condition.message.as_deref(),
        Some(
            "aborting attempt to set pod memory limit less than current memory usage for pod grow"
        )
    );
    assert_eq!(memory_limits_of(pid), (1 << 30, 1 << 30));
    let status = &refused
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    assert_eq!(status.restart_count, 0);
}
