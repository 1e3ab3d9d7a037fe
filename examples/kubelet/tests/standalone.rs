//! The standalone kubelet end to end: the kubelet binary runs static pods on a real containerd
//! (one per test, started by the harness), driven through manifests and observed through
//! `/pods` and the CRI, as a user would.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use node_cri::harness::{self, eventually};
use node_cri::{CriClient, ManagedContainerd, cri};

const KUBELET: &str = env!("CARGO_BIN_EXE_kubelet");
const NODE: &str = "test-node";

/// A kubelet process with its own containerd, manifest directory and port.
struct Node {
    dir: PathBuf,
    containerd: Option<ManagedContainerd>,
    client: CriClient,
    port: u16,
    config: PathBuf,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

impl Node {
    /// Starts containerd and the kubelet; `extra` is appended to the kubelet's config.
    async fn start(tag: &str, extra: &str) -> Node {
        let config = harness::test_config(tag).expect("harness config");
        let dir = config.dir.clone();
        let containerd = ManagedContainerd::start(config)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let client = containerd.client().clone();
        let port = free_port();
        std::fs::create_dir_all(dir.join("manifests")).unwrap();
        let config = dir.join("kubelet.yaml");
        std::fs::write(
            &config,
            format!(
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
                 staticPodPath: {manifests}\ncontainerRuntimeEndpoint: {endpoint}\n\
                 healthzPort: 0\nreadOnlyPort: {port}\naddress: 127.0.0.1\nport: {server}\n\
                 podLogsDir: {logs}\ncgroupRoot: /node-agent-test/{pid}\n\
                 syncFrequency: 10s\n{extra}",
                manifests = dir.join("manifests").display(),
                endpoint = containerd.endpoint(),
                logs = dir.join("logs").display(),
                pid = std::process::id(),
                server = free_port(),
            ),
        )
        .unwrap();
        let mut node = Node {
            dir,
            containerd: Some(containerd),
            client,
            port,
            config,
            child: None,
            log: Arc::default(),
        };
        node.spawn_kubelet();
        node
    }

    fn spawn_kubelet(&mut self) {
        let mut child = Command::new(KUBELET)
            .arg("--config")
            .arg(&self.config)
            .arg("--root-dir")
            .arg(self.dir.join("root"))
            .arg("--cert-dir")
            .arg(self.dir.join("pki"))
            .args(["--hostname-override", NODE, "--node-ip", "127.0.0.1"])
            // Memory only: the default disk thresholds would put the node under DiskPressure
            // (reclaiming dead containers and images) on a build machine whose disk is nearly
            // full.
            .arg("--eviction-hard=memory.available<100Mi")
            // TEST_KUBELET_LOG (a RUST_LOG filter) makes the kubelets of these tests chattier.
            .env(
                "RUST_LOG",
                std::env::var("TEST_KUBELET_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the kubelet");
        let stderr = child.stderr.take().unwrap();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        });
        self.child = Some(child);
    }

    /// SIGTERM, and wait for a clean exit.
    fn stop_kubelet(&mut self) {
        let mut child = self.child.take().expect("kubelet running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "kubelet exit status {status}; log:\n{}",
            self.log_text()
        );
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    fn manifest(&self, name: &str) -> PathBuf {
        self.dir.join("manifests").join(name)
    }

    fn write(&self, name: &str, body: &str) {
        // Write then rename, as editors and config managers do.
        let tmp = self.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(&tmp, self.manifest(name)).unwrap();
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .ok()?;
        conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut raw = String::new();
        conn.read_to_string(&mut raw).await.ok()?;
        let (head, body) = raw.split_once("\r\n\r\n")?;
        let code = head.split(' ').nth(1)?.parse().ok()?;
        Some((code, body.to_string()))
    }

    async fn pods(&self) -> Option<Vec<Pod>> {
        let (code, body) = self.get("/pods").await?;
        if code != 200 {
            return None;
        }
        let list: serde_json::Value = serde_json::from_str(&body).ok()?;
        assert_eq!(list["kind"], "PodList");
        assert_eq!(list["apiVersion"], "v1");
        serde_json::from_value(list["items"].clone()).ok()
    }

    /// Waits until pod `name` (without the node suffix) satisfies `check`.
    async fn wait_pod(&self, name: &str, what: &str, check: impl Fn(&Pod) -> bool) -> Pod {
        let full = format!("{name}-{NODE}");
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let pods = self.pods().await.unwrap_or_default();
            if let Some(pod) = pods
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(&full))
                && check(pod)
            {
                return pod.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "pod {full} never became {what}; pods: {}\nkubelet log:\n{}",
                    serde_json::to_string_pretty(&pods).unwrap_or_default(),
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn wait_gone(&self, name: &str) {
        let full = format!("{name}-{NODE}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while self
            .pods()
            .await
            .unwrap_or_default()
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some(&full))
        {
            assert!(
                Instant::now() < deadline,
                "pod {full} still listed; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The runtime's containers of pod `uid`.
    async fn containers_of(&self, uid: &str) -> Vec<cri::Container> {
        self.client
            .list_containers(Some(cri::ContainerFilter {
                label_selector: [("io.kubernetes.pod.uid".to_string(), uid.to_string())].into(),
                ..Default::default()
            }))
            .await
            .unwrap()
    }

    async fn running_containers_of(&self, uid: &str) -> usize {
        self.containers_of(uid)
            .await
            .iter()
            .filter(|c| c.state == cri::ContainerState::ContainerRunning as i32)
            .count()
    }

    /// `sh -c cmd` in container `name` of `pod`, which must exit 0.
    async fn exec(&self, pod: &Pod, name: &str, cmd: &str) {
        let id = container_status(pod, name)
            .container_id
            .unwrap_or_else(|| panic!("container {name} has no id"));
        let id = id.split_once("://").map_or(id.as_str(), |(_, id)| id);
        let out = self
            .client
            .exec_sync(
                id,
                vec!["sh".into(), "-c".into(), cmd.into()],
                Duration::from_secs(5),
            )
            .await
            .unwrap_or_else(|e| panic!("exec {cmd:?} in {name}: {e}"));
        assert_eq!(
            out.exit_code,
            0,
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the kubelet, removes every pod from the runtime, stops containerd.
    async fn shutdown(mut self) {
        if self.child.is_some() {
            self.stop_kubelet();
        }
        for s in self.client.list_pod_sandbox(None).await.unwrap_or_default() {
            let _ = self.client.stop_pod_sandbox(&s.id).await;
            let _ = self.client.remove_pod_sandbox(&s.id).await;
        }
        if let Some(c) = self.containerd.take() {
            let _ = c.stop().await;
        }
        harness::detach_mounts_under(&self.dir);
        // The kubelet's QoS cgroups under this test's cgroup root (what the runtime made is
        // gone with its containers).
        for controller in ["cpu", "cpuacct", "memory", "pids"] {
            let root = format!(
                "/sys/fs/cgroup/{controller}/node-agent-test/{}",
                std::process::id()
            );
            for sub in ["kubepods/burstable", "kubepods/besteffort", "kubepods"] {
                let _ = std::fs::remove_dir(format!("{root}/{sub}"));
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn phase(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

fn running(pod: &Pod) -> bool {
    phase(pod) == "Running"
        && pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| cs.iter().all(|c| c.ready))
}

fn container_status(pod: &Pod, name: &str) -> k8s_openapi::api::core::v1::ContainerStatus {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == name))
        .cloned()
        .unwrap_or_else(|| panic!("no status of container {name}: {pod:?}"))
}

fn busybox_pod(name: &str, policy: &str, command: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: {policy}\n{extra_spec}  containers:\n  - name: main\n    image: docker.io/library/busybox:1.35\n    command: [\"sh\", \"-c\", {command:?}]\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn manifests_added_changed_and_removed_drive_pods_and_pods_shows_their_status() {
    let node = Node::start("crud", "").await;
    // sleep as PID 1 ignores SIGTERM: a short grace period keeps the test short.
    let grace = "  terminationGracePeriodSeconds: 1\n";
    node.write(
        "web.yaml",
        &busybox_pod("web", "Always", "echo hello-log; exec sleep 3600", grace),
    );
    let pod = node.wait_pod("web", "running", running).await;
    let first = uid(&pod);
    // The container's output lands in <podLogsDir>/<ns>_<name>_<uid>/<container>/<restartCount>.log.
    let log = node
        .dir
        .join("logs")
        .join(format!("default_web-{NODE}_{first}"))
        .join("main/0.log");
    let text = eventually(
        Duration::from_secs(10),
        "the container log file",
        || async {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|t| t.contains("hello-log"))
        },
    )
    .await;
    assert!(
        text.contains(" stdout F hello-log"),
        "CRI log format: {text}"
    );

    // /pods shows the upstream status fields.
    let status = pod.status.clone().unwrap();
    let conditions = status.conditions.clone().unwrap();
    for kind in [
        "PodReadyToStartContainers",
        "Initialized",
        "ContainersReady",
        "Ready",
        "PodScheduled",
    ] {
        let c = conditions
            .iter()
            .find(|c| c.type_ == kind)
            .unwrap_or_else(|| panic!("condition {kind} in {conditions:?}"));
        assert_eq!(c.status, "True", "{kind}");
        assert!(
            c.last_transition_time.is_some(),
            "{kind} has a lastTransitionTime"
        );
    }
    let ip: std::net::Ipv4Addr = status.pod_ip.clone().expect("podIP").parse().unwrap();
    let net = node.containerd.as_ref().unwrap().config().network.clone();
    let mask = u32::MAX << (32 - net.prefix_len);
    assert_eq!(
        u32::from(ip) & mask,
        u32::from(net.subnet),
        "pod IP {ip} from the runtime's network {}",
        net.cidr()
    );
    assert_eq!(status.pod_ips.as_ref().map(Vec::len), Some(1));
    assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
    assert!(status.start_time.is_some());
    assert_eq!(status.qos_class.as_deref(), Some("BestEffort"));
    let main = container_status(&pod, "main");
    assert!(main.ready && main.started == Some(true));
    assert_eq!(main.restart_count, 0);
    assert_eq!(main.image, "docker.io/library/busybox:1.35");
    assert!(main.image_id.starts_with("sha256:"), "{}", main.image_id);
    assert!(
        main.container_id
            .as_deref()
            .unwrap_or_default()
            .starts_with("containerd://")
    );
    assert!(
        main.state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .is_some_and(|r| r.started_at.is_some())
    );
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("kubernetes.io/config.source")
            .map(String::as_str),
        Some("file")
    );
    assert_eq!(annotations.get("kubernetes.io/config.hash"), Some(&first));
    assert!(annotations.contains_key("kubernetes.io/config.seen"));
    assert_eq!(
        node.get("/healthz")
            .await
            .map(|(c, b)| (c, b.trim().to_string())),
        Some((200, "ok".into()))
    );

    // A changed manifest is a new pod; the old one is stopped.
    node.write(
        "web.yaml",
        &busybox_pod("web", "Always", "exec sleep 3601", grace),
    );
    let pod = node
        .wait_pod("web", "replaced", |p| uid(p) != first && running(p))
        .await;
    let second = uid(&pod);
    assert_eq!(
        node.running_containers_of(&first).await,
        0,
        "old pod's containers stopped"
    );

    // A removed manifest stops the pod.
    std::fs::remove_file(node.manifest("web.yaml")).unwrap();
    node.wait_gone("web").await;
    eventually(
        Duration::from_secs(30),
        "the removed pod's containers to stop",
        || async { (node.running_containers_of(&second).await == 0).then_some(()) },
    )
    .await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_url_source_serving_a_pod_list_runs_its_pods() {
    use axum::routing::get;
    let seen_header = Arc::new(Mutex::new(None::<String>));
    let seen = seen_header.clone();
    let list = serde_json::json!({
        "apiVersion": "v1",
        "kind": "PodList",
        "items": [
            serde_yaml_pod("alpha", "exec sleep 3600"),
            serde_yaml_pod("beta", "exec sleep 3600"),
        ]
    });
    let app = axum::Router::new().route(
        "/pods.json",
        get(move |headers: axum::http::HeaderMap| {
            let seen = seen.clone();
            let list = list.clone();
            async move {
                *seen.lock().unwrap() = headers
                    .get("x-test")
                    .and_then(|v| v.to_str().ok())
                    .map(String::from);
                axum::Json(list)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/pods.json", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let node = Node::start(
        "url",
        &format!("staticPodURL: {url}\nhttpCheckFrequency: 1s\nstaticPodURLHeader:\n  X-Test: [\"yes\"]\n"),
    )
    .await;
    for name in ["alpha", "beta"] {
        let pod = node.wait_pod(name, "running", running).await;
        let source = pod
            .metadata
            .annotations
            .unwrap_or_default()
            .get("kubernetes.io/config.source")
            .cloned();
        assert_eq!(source.as_deref(), Some("http"));
    }
    assert_eq!(seen_header.lock().unwrap().as_deref(), Some("yes"));
    server.abort();
    node.shutdown().await;
}

fn serde_yaml_pod(name: &str, command: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "main", "image": "docker.io/library/busybox:1.35", "command": ["sh", "-c", command]}]}
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashing_container_is_restarted_with_growing_back_off() {
    let node = Node::start("crash", "").await;
    node.write(
        "crash.yaml",
        &busybox_pod("crash", "Always", "sleep 1; exit 1", ""),
    );
    let mut messages = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    // The first failure restarts at once; then back-off 10s, then 20s.
    while !messages
        .iter()
        .any(|m: &String| m.starts_with("back-off 20s"))
    {
        assert!(
            Instant::now() < deadline,
            "back-off messages so far: {messages:?}\n{}",
            node.log_text()
        );
        if let Some(pod) = node.pods().await.and_then(|p| {
            p.into_iter()
                .find(|p| p.metadata.name.as_deref() == Some("crash-test-node"))
        }) {
            let s = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first().cloned());
            if let Some(waiting) = s
                .as_ref()
                .and_then(|s| s.state.as_ref())
                .and_then(|st| st.waiting.clone())
                && waiting.reason.as_deref() == Some("CrashLoopBackOff")
            {
                let message = waiting.message.unwrap_or_default();
                let last = s
                    .as_ref()
                    .and_then(|s| s.last_state.as_ref())
                    .and_then(|l| l.terminated.clone());
                assert_eq!(
                    last.map(|t| t.exit_code),
                    Some(1),
                    "last state shows the failure"
                );
                assert!(
                    message
                        .contains("restarting failed container=main pod=crash-test-node_default("),
                    "{message}"
                );
                if !messages.contains(&message) {
                    messages.push(message);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(messages[0].starts_with("back-off 10s"), "{messages:?}");
    let pod = node
        .wait_pod("crash", "restarted at least twice", |p| {
            container_status(p, "main").restart_count >= 2
        })
        .await;
    assert!(container_status(&pod, "main").restart_count >= 2);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_policy_never_ends_in_succeeded_or_failed_with_exit_codes() {
    let node = Node::start("never", "").await;
    node.write("ok.yaml", &busybox_pod("ok", "Never", "exit 0", ""));
    node.write("bad.yaml", &busybox_pod("bad", "Never", "exit 3", ""));
    let ok = node
        .wait_pod("ok", "Succeeded", |p| phase(p) == "Succeeded")
        .await;
    let t = container_status(&ok, "main")
        .state
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
    let bad = node
        .wait_pod("bad", "Failed", |p| phase(p) == "Failed")
        .await;
    let s = container_status(&bad, "main");
    let t = s.state.unwrap().terminated.unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (3, Some("Error")));
    assert_eq!(s.restart_count, 0, "never restarted");
    let ready = bad
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref()),
        ("False", Some("PodFailed"))
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn init_containers_finish_in_order_before_the_app_container_starts() {
    let node = Node::start("init", "").await;
    let manifest = r#"apiVersion: v1
kind: Pod
metadata:
  name: ordered
spec:
  initContainers:
  - name: first
    image: docker.io/library/busybox:1.35
    command: ["sleep", "1"]
  - name: second
    image: docker.io/library/busybox:1.35
    command: ["sleep", "1"]
  containers:
  - name: app
    image: docker.io/library/busybox:1.35
    command: ["sleep", "3600"]
"#;
    node.write("ordered.yaml", manifest);
    let pod = node.wait_pod("ordered", "running", running).await;
    let status = pod.status.clone().unwrap();
    let init = status.init_container_statuses.clone().unwrap();
    let term = |i: usize| init[i].state.clone().unwrap().terminated.unwrap();
    assert_eq!(init[0].name, "first");
    assert_eq!(init[1].name, "second");
    let (first, second) = (term(0), term(1));
    assert_eq!((first.exit_code, second.exit_code), (0, 0));
    let app_started = container_status(&pod, "app")
        .state
        .unwrap()
        .running
        .unwrap()
        .started_at
        .unwrap();
    assert!(
        first.finished_at.clone().unwrap().0 <= second.started_at.clone().unwrap().0,
        "first before second"
    );
    assert!(
        second.finished_at.clone().unwrap().0 <= app_started.0,
        "second before app"
    );
    let initialized = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Initialized")
        .unwrap();
    assert_eq!(initialized.status, "True");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_kubelet_adopts_running_pods_and_stops_those_whose_manifests_vanished() {
    let mut node = Node::start("adopt", "").await;
    // sleep as PID 1 ignores SIGTERM: a short grace period keeps the test short.
    let grace = "  terminationGracePeriodSeconds: 1\n";
    // Each pod has a memory-backed emptyDir the container writes to.
    let with_volume = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{grace}  volumes:\n  - name: mem\n    emptyDir: {{medium: Memory}}\n  containers:\n  - name: main\n    image: docker.io/library/busybox:1.35\n    command: [\"sh\", \"-c\", \"echo {name} > /mem/data; exec sleep 3600\"]\n    volumeMounts: [{{name: mem, mountPath: /mem}}]\n"
        )
    };
    node.write("keep.yaml", &with_volume("keep"));
    node.write("gone.yaml", &with_volume("gone"));
    let keep = node.wait_pod("keep", "running", running).await;
    let gone = node.wait_pod("gone", "running", running).await;
    let before = container_status(&keep, "main").container_id.unwrap();
    let volume = |pod: &Pod| {
        node.dir
            .join("root/pods")
            .join(uid(pod))
            .join("volumes/kubernetes.io~empty-dir/mem")
    };
    let (keep_volume, gone_volume) = (volume(&keep), volume(&gone));
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(keep_volume.join("data"))
        .ok()
        .as_deref()
        != Some("keep\n")
    {
        assert!(
            Instant::now() < deadline,
            "the container's write never showed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let keep_mount = mount_id(&keep_volume).expect("the keep pod's tmpfs");
    assert!(mount_id(&gone_volume).is_some(), "the gone pod's tmpfs");

    // SIGTERM leaves the pods running.
    node.stop_kubelet();
    assert_eq!(node.running_containers_of(&uid(&keep)).await, 1);
    assert_eq!(node.running_containers_of(&uid(&gone)).await, 1);
    std::fs::remove_file(node.manifest("gone.yaml")).unwrap();

    node.spawn_kubelet();
    let adopted = node.wait_pod("keep", "running again", running).await;
    let s = container_status(&adopted, "main");
    assert_eq!(
        s.container_id.unwrap(),
        before,
        "the same container, not a new one"
    );
    assert_eq!(s.restart_count, 0);
    assert_eq!(uid(&adopted), uid(&keep));
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.running_containers_of(&uid(&gone)).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the vanished pod's containers still run; kubelet log:\n{}",
            node.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The vanished pod's volume and directory are cleaned up once its containers stopped.
    let gone_dir = node.dir.join("root/pods").join(uid(&gone));
    let deadline = Instant::now() + Duration::from_secs(30);
    while gone_dir.exists() {
        assert!(
            Instant::now() < deadline,
            "{} left behind; kubelet log:\n{}",
            gone_dir.display(),
            node.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(mount_id(&gone_volume), None);
    // Still the same container a few resyncs later, its volume neither remounted nor touched.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = node.wait_pod("keep", "running", running).await;
    assert_eq!(container_status(&again, "main").container_id, Some(before));
    assert_eq!(mount_id(&keep_volume), Some(keep_mount), "not remounted");
    assert_eq!(
        std::fs::read_to_string(keep_volume.join("data")).unwrap(),
        "keep\n"
    );
    node.shutdown().await;
}

/// The id of the mount at `path` (the topmost), if it is a mount point.
fn mount_id(path: &std::path::Path) -> Option<u32> {
    let path = path.canonicalize().ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().rev().find_map(|l| {
        let mut fields = l.split(' ');
        let id = fields.next()?.parse().ok()?;
        let point = fields.nth(3)?;
        (std::path::Path::new(point) == path).then_some(id)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_manifest_is_rejected_by_name_and_field_and_others_run() {
    let node = Node::start("malformed", "").await;
    node.write(
        "good.yaml",
        &busybox_pod("good", "Always", "exec sleep 3600", ""),
    );
    node.write(
        "dup.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: dup\nspec:\n  containers:\n  - name: a\n    image: docker.io/library/busybox:1.35\n  - name: a\n    image: docker.io/library/busybox:1.35\n",
    );
    node.write(
        "broken.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: [this is not\n",
    );
    node.write(
        "unmasked.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: unmasked\nspec:\n  containers:\n  - name: a\n    image: docker.io/library/busybox:1.35\n    securityContext:\n      procMount: Unmasked\n",
    );
    node.write(
        "probe.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: probe\nspec:\n  containers:\n  - name: a\n    image: docker.io/library/busybox:1.35\n    livenessProbe:\n      tcpSocket:\n        port: web\n",
    );
    node.wait_pod("good", "running", running).await;
    let names: Vec<String> = node
        .pods()
        .await
        .unwrap()
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(names, ["good-test-node"]);
    let log = node.log_text();
    assert!(
        log.lines().any(|l| l.contains("dup.yaml")
            && l.contains("spec.containers[1].name")
            && l.contains("Duplicate value")),
        "rejection of dup.yaml names the field:\n{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("broken.yaml")),
        "rejection of broken.yaml:\n{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("probe.yaml")
            && l.contains(
                "spec.containers[0].livenessProbe.tcpSocket.port: Invalid value: \"web\""
            )),
        "rejection of probe.yaml names the probe's field:\n{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("unmasked.yaml")
            && l.contains(
                "spec.containers[0].securityContext.procMount: Invalid value: \"Unmasked\": `hostUsers` must be false to use `Unmasked`"
            )),
        "rejection of unmasked.yaml names procMount:\n{log}"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn termination_honours_the_grace_period() {
    let node = Node::start("grace", "").await;
    // Exits 2s after SIGTERM, well within its 10s grace period.
    node.write(
        "polite.yaml",
        &busybox_pod(
            "polite",
            "Always",
            "trap 'sleep 2; exit 0' TERM; while :; do sleep 1 & wait $!; done",
            "  terminationGracePeriodSeconds: 10\n",
        ),
    );
    // Ignores SIGTERM: killed when its 3s grace period ends.
    node.write(
        "stubborn.yaml",
        &busybox_pod(
            "stubborn",
            "Always",
            "trap '' TERM; while :; do sleep 1; done",
            "  terminationGracePeriodSeconds: 3\n",
        ),
    );
    let polite = uid(&node.wait_pod("polite", "running", running).await);
    let stubborn = uid(&node.wait_pod("stubborn", "running", running).await);
    let removed_at = std::time::SystemTime::now();
    std::fs::remove_file(node.manifest("polite.yaml")).unwrap();
    std::fs::remove_file(node.manifest("stubborn.yaml")).unwrap();
    let finished = |uid: String| {
        let node = &node;
        async move {
            let c = node.containers_of(&uid).await.into_iter().next()?;
            let s = node.client.container_status(&c.id, false).await.ok()?;
            (s.state == cri::ContainerState::ContainerExited as i32).then_some(s)
        }
    };
    let p = eventually(Duration::from_secs(30), "polite to exit", || {
        finished(polite.clone())
    })
    .await;
    let s = eventually(Duration::from_secs(30), "stubborn to be killed", || {
        finished(stubborn.clone())
    })
    .await;
    let after = |nanos: i64| {
        (std::time::UNIX_EPOCH + Duration::from_nanos(nanos as u64))
            .duration_since(removed_at)
            .unwrap_or_default()
    };
    assert_eq!(p.exit_code, 0, "polite exited on its own");
    assert!(
        after(p.finished_at) >= Duration::from_millis(1500),
        "polite ran its 2s trap: {:?}",
        after(p.finished_at)
    );
    assert!(after(p.finished_at) < Duration::from_secs(9));
    assert_eq!(s.exit_code, 137, "stubborn was killed");
    assert!(
        after(s.finished_at) >= Duration::from_millis(2500),
        "stubborn got its 3s: {:?}",
        after(s.finished_at)
    );
    assert!(after(s.finished_at) < Duration::from_secs(9));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn max_pods_rejects_the_pod_beyond_capacity() {
    let node = Node::start("maxpods", "maxPods: 1\n").await;
    node.write(
        "one.yaml",
        &busybox_pod("one", "Always", "exec sleep 3600", ""),
    );
    node.wait_pod("one", "running", running).await;
    node.write(
        "two.yaml",
        &busybox_pod("two", "Always", "exec sleep 3600", ""),
    );
    let two = node
        .wait_pod("two", "rejected", |p| phase(p) == "Failed")
        .await;
    // Static pods are critical: as upstream, admission tries to preempt others for the pod
    // and, the only other pod being critical too, fails with upstream's error.
    let status = two.status.clone().unwrap();
    assert_eq!(status.reason.as_deref(), Some("UnexpectedAdmissionError"));
    assert_eq!(
        status.message.as_deref(),
        Some(
            "Pod was rejected: Unexpected error while attempting to recover from admission failure: \
             preemption: error finding a set of pods to preempt: no set of running pods found to \
             reclaim resources: [(res: pods, q: 1), ]"
        )
    );
    assert_eq!(node.running_containers_of(&uid(&two)).await, 0);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_deleted_while_it_starts_is_stopped_cleanly() {
    let node = Node::start("flash", "").await;
    let grace = "  terminationGracePeriodSeconds: 1\n";
    node.write(
        "flash.yaml",
        &busybox_pod("flash", "Always", "exec sleep 3600", grace),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::remove_file(node.manifest("flash.yaml")).unwrap();
    node.wait_gone("flash").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running = node
            .client
            .list_containers(None)
            .await
            .unwrap()
            .into_iter()
            .filter(|c| c.state == cri::ContainerState::ContainerRunning as i32)
            .count();
        let ready = node
            .client
            .list_pod_sandbox(Some(cri::PodSandboxFilter {
                state: Some(cri::PodSandboxStateValue {
                    state: cri::PodSandboxState::SandboxReady as i32,
                }),
                ..Default::default()
            }))
            .await
            .unwrap()
            .len();
        if running == 0 && ready == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{running} containers and {ready} sandboxes still run; log:\n{}",
            node.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(node.pods().await.unwrap().is_empty());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn volumes_are_mounted_reported_and_cleaned_up_by_the_binary() {
    let node = Node::start("volumes", "").await;
    node.write(
        "vol.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: vol\nspec:\n  restartPolicy: Never\n  volumes:\n  - name: work\n    emptyDir: {}\n  initContainers:\n  - name: prepare\n    image: docker.io/library/busybox:1.35\n    command: [\"sh\", \"-c\", \"echo prepared > /work/state\"]\n    volumeMounts: [{name: work, mountPath: /work}]\n  containers:\n  - name: main\n    image: docker.io/library/busybox:1.35\n    command: [\"sh\", \"-c\", \"cat /work/state > /dev/termination-log; exit 2\"]\n    volumeMounts: [{name: work, mountPath: /work}]\n",
    );
    // A standalone node has no configMaps: a required one fails to mount, naming it.
    node.write(
        "cfg.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: cfg\nspec:\n  volumes:\n  - name: settings\n    configMap: {name: app-settings}\n  containers:\n  - name: main\n    image: docker.io/library/busybox:1.35\n    command: [\"sleep\", \"3600\"]\n    volumeMounts: [{name: settings, mountPath: /settings}]\n",
    );
    let pod = node
        .wait_pod("vol", "Failed", |p| phase(p) == "Failed")
        .await;
    let t = container_status(&pod, "main")
        .state
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(t.exit_code, 2);
    assert_eq!(
        t.message.as_deref(),
        Some("prepared\n"),
        "the init container's file, read back"
    );
    // The upstream pod directory layout; the emptyDir is torn down once the pod terminated.
    let pod_dir = node.dir.join("root/pods").join(uid(&pod));
    for sub in [
        "etc-hosts",
        "plugins",
        "containers/main",
        "containers/prepare",
    ] {
        assert!(pod_dir.join(sub).exists(), "{sub} in {}", pod_dir.display());
    }
    let work = pod_dir.join("volumes/kubernetes.io~empty-dir/work");
    let deadline = Instant::now() + Duration::from_secs(30);
    while work.exists() {
        assert!(
            Instant::now() < deadline,
            "{} not torn down",
            work.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cfg = node
        .wait_pod("cfg", "waiting", |p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|c| !c.is_empty())
        })
        .await;
    assert_eq!(
        container_status(&cfg, "main")
            .state
            .unwrap()
            .waiting
            .unwrap()
            .reason
            .as_deref(),
        Some("ContainerCreating")
    );
    let expected = "MountVolume.SetUp failed for volume \"settings\" : cannot get configmap default/app-settings: the node runs standalone, with no API server to read it from";
    let deadline = Instant::now() + Duration::from_secs(30);
    while !node.log_text().contains(expected) {
        assert!(
            Instant::now() < deadline,
            "no FailedMount in the log:\n{}",
            node.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Removing the manifest removes the pod's directory.
    std::fs::remove_file(node.manifest("vol.yaml")).unwrap();
    node.wait_gone("vol").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while pod_dir.exists() {
        assert!(
            Instant::now() < deadline,
            "{} left behind",
            pod_dir.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    node.shutdown().await;
}

/// Stops container `name` of `pod` with SIGKILL behind the kubelet's back, as a crash.
async fn kill_behind_the_kubelets_back(node: &Node, pod: &Pod, name: &str) -> String {
    let id = container_status(pod, name)
        .container_id
        .unwrap_or_else(|| panic!("container {name} has no id: {pod:?}"));
    let id = id.rsplit("://").next().unwrap_or_default().to_string();
    node.client.stop_container(&id, 0).await.unwrap();
    let status = node.client.container_status(&id, false).await.unwrap();
    assert_eq!(
        status.state,
        cri::ContainerState::ContainerExited as i32,
        "container {id} of {} exited",
        uid(pod)
    );
    id
}

/// The waiting reason and message of container `name`, if it waits.
fn waiting(pod: &Pod, name: &str) -> Option<(String, String)> {
    let w = pod
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == name)?
        .state
        .clone()?
        .waiting?;
    Some((w.reason.unwrap_or_default(), w.message.unwrap_or_default()))
}

/// Waits until container `name` of pod `name`-node runs in a container other than `old`,
/// failing if it is reported in CrashLoopBackOff meanwhile.
async fn wait_restarted_without_back_off(node: &Node, pod: &str, name: &str, old: &str) -> Pod {
    let full = format!("{pod}-{NODE}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = node
            .pods()
            .await
            .unwrap_or_default()
            .into_iter()
            .find(|p| p.metadata.name.as_deref() == Some(&full));
        if let Some(p) = found {
            if let Some((reason, message)) = waiting(&p, name) {
                assert_ne!(
                    reason,
                    "CrashLoopBackOff",
                    "{message}: the kubelet's own stops were counted as crashes; log:\n{}",
                    node.log_text()
                );
            }
            if running(&p)
                && container_status(&p, name)
                    .container_id
                    .is_some_and(|id| !id.ends_with(old))
            {
                return p;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{full} never ran again; log:\n{}",
            node.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The kubelet's own stops never count as crashes: a pod removed and put back three times (the
/// same manifest, so the same UID) restarts a killed container at once, and a crash of its own
/// right after that backs off as upstream (10 s).
#[tokio::test(flavor = "multi_thread")]
async fn a_pod_removed_and_put_back_restarts_a_killed_container_at_once() {
    let node = Node::start("readd", "").await;
    let body = busybox_pod(
        "again",
        "Always",
        "exec sleep 3600",
        "  terminationGracePeriodSeconds: 0\n",
    );
    node.write("again.yaml", &body);
    let pod = node.wait_pod("again", "running", running).await;
    let first_uid = uid(&pod);
    // A first crash: restarted at once.
    let old = kill_behind_the_kubelets_back(&node, &pod, "main").await;
    wait_restarted_without_back_off(&node, "again", "main", &old).await;

    let mut pod = node.wait_pod("again", "running", running).await;
    for _ in 0..3 {
        let before = container_status(&pod, "main").container_id;
        std::fs::remove_file(node.manifest("again.yaml")).unwrap();
        node.wait_gone("again").await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while node.running_containers_of(&first_uid).await > 0 {
            assert!(
                Instant::now() < deadline,
                "the removed pod still runs; log:\n{}",
                node.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        node.write("again.yaml", &body);
        pod = node
            .wait_pod("again", "running in a new container", |p| {
                running(p) && container_status(p, "main").container_id != before
            })
            .await;
    }
    assert_eq!(uid(&pod), first_uid, "the same manifest gives the same UID");

    // The first crash of the pod that came back: restarted at once.
    let killed = Instant::now();
    let old = kill_behind_the_kubelets_back(&node, &pod, "main").await;
    let pod = wait_restarted_without_back_off(&node, "again", "main", &old).await;
    println!(
        "killed container running again after {:?}",
        killed.elapsed()
    );

    // A second crash of its own: back-off 10 s, as upstream.
    kill_behind_the_kubelets_back(&node, &pod, "main").await;
    let backing_off = node
        .wait_pod("again", "in CrashLoopBackOff", |p| {
            waiting(p, "main").is_some_and(|(reason, _)| reason == "CrashLoopBackOff")
        })
        .await;
    let (_, message) = waiting(&backing_off, "main").unwrap();
    assert!(message.starts_with("back-off 10s"), "{message}");
    node.shutdown().await;
}

/// containerd stopped under a running kubelet for 10 s and started again: the kubelet keeps
/// its pods, relists while the runtime is away, then follows the runtime's container events
/// again instead of relisting for good; a container killed after that is restarted.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_runtime_restart_pleg_follows_container_events_again() {
    let mut node = Node::start("pleg-restart", "").await;
    node.write(
        "steady.yaml",
        &busybox_pod(
            "steady",
            "Always",
            "exec sleep 3600",
            "  terminationGracePeriodSeconds: 0\n",
        ),
    );
    node.wait_pod("steady", "running", running).await;
    let count = |node: &Node, text: &str| {
        node.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(text))
            .count()
    };
    const FOLLOWS: &str = "PLEG follows the runtime's container events";
    const RELISTS: &str = "PLEG relists the runtime's pods until its container events are back";
    assert_eq!(count(&node, FOLLOWS), 1, "{}", node.log_text());

    let containerd = node.containerd.take().expect("containerd");
    let config = containerd.config().clone();
    containerd.stop().await.expect("stop containerd");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(count(&node, RELISTS), 1, "{}", node.log_text());
    let containerd = ManagedContainerd::start(config)
        .await
        .unwrap_or_else(|e| panic!("cannot start containerd again: {e}"));
    node.client = containerd.client().clone();
    node.containerd = Some(containerd);

    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&node, FOLLOWS) < 2 {
        assert!(
            Instant::now() < deadline,
            "PLEG did not return to the container events; log:\n{}",
            node.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pod = node.wait_pod("steady", "still running", running).await;
    assert_eq!(
        container_status(&pod, "main").restart_count,
        0,
        "the pod kept its container"
    );
    let old = kill_behind_the_kubelets_back(&node, &pod, "main").await;
    wait_restarted_without_back_off(&node, "steady", "main", &old).await;
    assert_eq!(count(&node, RELISTS), 1, "{}", node.log_text());
    node.shutdown().await;
}

fn read_u64(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

/// `value` lies between the two readings (in either order), widened by `slack`.
fn between(value: u64, a: u64, b: u64, slack: u64, what: &str) {
    let (lo, hi) = (a.min(b).saturating_sub(slack), a.max(b) + slack);
    assert!(
        (lo..=hi).contains(&value),
        "{what}: {value} not within [{lo}, {hi}]"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_summary_reports_node_and_pod_figures_consistent_with_proc_and_the_cgroups() {
    let node = Node::start("stats", "").await;
    node.write(
        "fill.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: fill\nspec:\n  terminationGracePeriodSeconds: 1\n  volumes:\n  - name: cache\n    emptyDir: {}\n  containers:\n  - name: main\n    image: docker.io/library/busybox:1.35\n    command: [\"sh\", \"-c\", \"dd if=/dev/zero of=/cache/blob bs=1024 count=1024 && echo filled && exec sleep 3600\"]\n    volumeMounts: [{name: cache, mountPath: /cache}]\n",
    );
    let pod = node.wait_pod("fill", "running", running).await;
    let uid = uid(&pod);
    let cgroups = PathBuf::from("/sys/fs/cgroup");
    let pod_cgroup = format!(
        "node-agent-test/{}/kubepods/besteffort/pod{uid}",
        std::process::id()
    );
    let summary = || async {
        let (code, body) = node.get("/stats/summary").await?;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).ok()
    };
    // Wait until the container's log holds its line and the pod is in the summary.
    eventually(
        Duration::from_secs(30),
        "the pod in the summary",
        || async {
            let s = summary().await?;
            let logs = &s["pods"][0]["containers"][0]["logs"]["usedBytes"];
            (logs.as_u64()? > 0).then_some(s)
        },
    )
    .await;
    // Once the shell has written "filled" it execs sleep: the processes are settled.
    let log = node
        .dir
        .join("logs")
        .join(format!("default_fill-{NODE}_{uid}/main/0.log"));
    eventually(
        Duration::from_secs(30),
        "the container's last line",
        || async {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|t| t.contains("filled"))
        },
    )
    .await;
    let pids = cgroups.join("pids").join(&pod_cgroup).join("pids.current");

    let node_memory = cgroups.join("memory/memory.usage_in_bytes");
    let node_cpu = cgroups.join("cpuacct/cpuacct.usage");
    let pod_memory = cgroups
        .join("memory")
        .join(&pod_cgroup)
        .join("memory.usage_in_bytes");
    let pod_cpu = cgroups
        .join("cpuacct")
        .join(&pod_cgroup)
        .join("cpuacct.usage");
    let main_id = node.containers_of(&uid).await[0].id.clone();
    let main_cpu = cgroups
        .join("cpuacct")
        .join(&pod_cgroup)
        .join(&main_id)
        .join("cpuacct.usage");
    let paths = [
        &node_memory,
        &node_cpu,
        &pod_memory,
        &pod_cpu,
        &pids,
        &main_cpu,
    ];
    let before = paths.map(|p| read_u64(p));
    let s = summary().await.expect("a second summary");
    let after = paths.map(|p| read_u64(p));

    // The node: root cgroup, /proc, statfs.
    let n = &s["node"];
    assert_eq!(n["nodeName"], NODE);
    let usage = n["memory"]["usageBytes"].as_u64().unwrap();
    between(
        usage,
        before[0],
        after[0],
        64 << 20,
        "node memory usage vs the root cgroup",
    );
    let working_set = n["memory"]["workingSetBytes"].as_u64().unwrap();
    assert!(working_set <= usage);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert_eq!(
        n["memory"]["availableBytes"].as_u64().unwrap() + working_set,
        total_kib * 1024,
        "available = capacity - working set"
    );
    let cpu = n["cpu"]["usageCoreNanoSeconds"].as_u64().unwrap();
    between(
        cpu,
        before[1],
        after[1],
        0,
        "node cpu vs the root cgroup's cpuacct.usage",
    );
    assert!(
        n["cpu"]["usageNanoCores"].as_u64().is_some(),
        "a rate on the second summary: {}",
        n["cpu"]
    );
    let root = nix::sys::statvfs::statvfs(&node.dir.join("root")).unwrap();
    assert_eq!(
        n["fs"]["capacityBytes"].as_u64().unwrap(),
        root.blocks() * root.fragment_size(),
        "nodefs is statfs of the root dir"
    );
    assert_eq!(n["fs"]["inodes"].as_u64().unwrap(), root.files());
    let pid_max = read_u64(std::path::Path::new("/proc/sys/kernel/pid_max"));
    let threads_max = read_u64(std::path::Path::new("/proc/sys/kernel/threads-max"));
    assert_eq!(
        n["rlimit"]["maxpid"].as_u64().unwrap(),
        pid_max.min(threads_max)
    );
    assert!(n["rlimit"]["curproc"].as_u64().unwrap() > 0);
    let image_fs = &n["runtime"]["imageFs"];
    // containerd refreshes its snapshot usage every 10 s: right after its start it may say 0.
    assert!(image_fs["usedBytes"].as_u64().is_some(), "{image_fs}");
    assert!(
        image_fs["capacityBytes"].as_u64().unwrap() > 0,
        "{image_fs}"
    );
    assert_eq!(n["systemContainers"][0]["name"], "pods");

    // The pod: its cgroup, its processes, its logs, its volume.
    let p = &s["pods"][0];
    assert_eq!(p["podRef"]["name"], format!("fill-{NODE}"));
    assert_eq!(p["podRef"]["namespace"], "default");
    assert_eq!(p["podRef"]["uid"], uid.as_str());
    between(
        p["memory"]["usageBytes"].as_u64().unwrap(),
        before[2],
        after[2],
        1 << 20,
        "pod memory vs its cgroup",
    );
    between(
        p["cpu"]["usageCoreNanoSeconds"].as_u64().unwrap(),
        before[3],
        after[3],
        0,
        "pod cpu vs its cgroup",
    );
    between(
        p["process_stats"]["process_count"].as_u64().unwrap(),
        before[4],
        after[4],
        0,
        "the pod's processes vs its pids.current",
    );
    let main = &p["containers"][0];
    assert_eq!(main["name"], "main");
    between(
        main["cpu"]["usageCoreNanoSeconds"].as_u64().unwrap(),
        before[5],
        after[5],
        0,
        "the container's cpu vs its own cgroup, read at the summary",
    );
    assert!(main["rootfs"]["usedBytes"].as_u64().is_some(), "{main}");
    let logs = main["logs"]["usedBytes"].as_u64().unwrap();
    let volume = &p["volume"][0];
    assert_eq!(volume["name"], "cache");
    let cache = volume["usedBytes"].as_u64().unwrap();
    assert!(cache >= 1 << 20, "the 1 MiB blob in the emptyDir: {volume}");
    let ephemeral = p["ephemeral-storage"]["usedBytes"].as_u64().unwrap();
    assert!(
        ephemeral >= cache + logs,
        "ephemeral storage {ephemeral} holds the volume {cache} and the logs {logs}"
    );
    assert_eq!(p["network"]["name"], "eth0", "{}", p["network"]);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chatty_containers_log_is_rotated_compressed_and_bounded() {
    let node = Node::start(
        "logrotate",
        "containerLogMaxSize: 4Ki\ncontainerLogMaxFiles: 3\ncontainerLogMonitorInterval: 3s\n",
    )
    .await;
    node.write(
        "chatty.yaml",
        &busybox_pod(
            "chatty",
            "Always",
            "i=0; while true; do i=$((i+1)); echo line-$i-0123456789012345678901234567890123456789; sleep 0.01; done",
            "  terminationGracePeriodSeconds: 1\n",
        ),
    );
    let pod = node.wait_pod("chatty", "running", running).await;
    let dir = node
        .dir
        .join("logs")
        .join(format!("default_chatty-{NODE}_{}", uid(&pod)))
        .join("main");
    // Several rotations: rotated files appear, older ones compressed, never more than
    // containerLogMaxFiles of them, none much beyond the size limit.
    let files = eventually(
        Duration::from_secs(30),
        "compressed rotated logs",
        || async {
            let names: Vec<String> = std::fs::read_dir(&dir)
                .ok()?
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.iter().any(|n| n.ends_with(".gz")).then_some(names)
        },
    )
    .await;
    for _ in 0..5 {
        let entries: Vec<(String, u64)> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().map(|m| m.len()).unwrap_or(0),
                )
            })
            .collect();
        assert!(
            entries.len() <= 3,
            "at most containerLogMaxFiles files: {entries:?}"
        );
        for (name, size) in &entries {
            // The limit plus what 3 s of chatter add before the next check.
            assert!(*size < 64 * 1024, "{name} is {size} bytes: {entries:?}");
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert!(files.iter().any(|n| n == "0.log"), "{files:?}");
    node.shutdown().await;
}

/// The samples of a Prometheus text-format body; panics naming `what` if it does not parse.
fn scrape(body: &str, what: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("{what} does not parse: {e}\n{body}"))
}

/// The value of the sample `name` whose labels include `labels`.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .and_then(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
}

/// A histogram's `_count`, read from the text (the parser folds histograms).
fn histogram_count(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{name}_count"))
                .filter(|rest| rest.starts_with(' ') || rest.starts_with('{'))
                .and_then(|rest| rest.rsplit(' ').next()?.parse().ok())
        })
        .unwrap_or_else(|| panic!("no {name}_count in\n{body}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_and_agree_with_pods_and_the_cgroups() {
    let node = Node::start("metrics", "").await;
    node.write(
        "pair.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: pair\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: one\n    image: docker.io/library/busybox:1.35\n    command: [\"sleep\", \"3600\"]\n  - name: two\n    image: docker.io/library/busybox:1.35\n    command: [\"sleep\", \"3600\"]\n",
    );
    node.write("done.yaml", &busybox_pod("done", "Never", "exit 0", ""));
    let pair = node.wait_pod("pair", "running", running).await;
    node.wait_pod("done", "succeeded", |p| phase(p) == "Succeeded")
        .await;
    // The first summaries, at once: they share one measurement of the writable layers.
    for answer in futures::future::join_all((0..4).map(|_| node.get("/stats/summary"))).await {
        assert_eq!(answer.expect("a summary").0, 200);
    }

    // /metrics: its running pods and containers are those /pods shows.
    let (metrics, text) = eventually(
        Duration::from_secs(30),
        "/metrics agreeing with /pods",
        || async {
            let pods = node.pods().await?;
            let (code, body) = node.get("/metrics").await?;
            assert_eq!(code, 200, "{body}");
            let metrics = scrape(&body, "/metrics");
            let statuses: Vec<_> = pods
                .iter()
                .flat_map(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.container_statuses.clone())
                        .unwrap_or_default()
                })
                .collect();
            let count = |f: &dyn Fn(&k8s_openapi::api::core::v1::ContainerState) -> bool| {
                statuses
                    .iter()
                    .filter(|s| s.state.as_ref().is_some_and(f))
                    .count() as f64
            };
            let running_pods = pods.iter().filter(|p| phase(p) == "Running").count() as f64;
            let expected = [
                ("running", count(&|s| s.running.is_some())),
                ("exited", count(&|s| s.terminated.is_some())),
            ];
            let agrees = sample(&metrics, "kubelet_running_pods", &[]) == Some(running_pods)
                && expected.iter().all(|(state, n)| {
                    sample(
                        &metrics,
                        "kubelet_running_containers",
                        &[("container_state", state)],
                    ) == Some(*n)
                });
            (agrees && running_pods == 1.0 && expected[0].1 == 2.0 && expected[1].1 == 1.0)
                .then_some((metrics, body))
        },
    )
    .await;
    assert_eq!(
        sample(&metrics, "kubelet_node_name", &[("node", NODE)]),
        Some(1.0)
    );
    assert!(sample(&metrics, "process_resident_memory_bytes", &[]).unwrap() > 0.0);
    for operation in ["run_podsandbox", "create_container", "start_container"] {
        let n = sample(
            &metrics,
            "kubelet_runtime_operations_total",
            &[("operation_type", operation)],
        );
        assert!(n >= Some(2.0), "{operation}: {n:?}");
    }
    assert!(histogram_count(&text, "kubelet_pod_start_duration_seconds") >= 1.0);
    assert!(histogram_count(&text, "kubelet_pleg_relist_duration_seconds") >= 1.0);
    assert!(
        sample(
            &metrics,
            "kubelet_http_requests_total",
            &[
                ("path", "pods"),
                ("server_type", "readonly"),
                ("method", "get")
            ],
        ) >= Some(1.0),
        "/pods requests counted"
    );

    // /metrics/resource: the pod's CPU is its cgroup's, with the time it was read.
    let pod_cgroup = format!(
        "/sys/fs/cgroup/cpuacct/node-agent-test/{}/kubepods/besteffort/pod{}/cpuacct.usage",
        std::process::id(),
        uid(&pair)
    );
    let before = read_u64(std::path::Path::new(&pod_cgroup));
    let (code, body) = node
        .get("/metrics/resource")
        .await
        .expect("/metrics/resource");
    let after = read_u64(std::path::Path::new(&pod_cgroup));
    assert_eq!(code, 200, "{body}");
    let resource = scrape(&body, "/metrics/resource");
    let pod = format!("pair-{NODE}");
    let pod_labels = [("namespace", "default"), ("pod", pod.as_str())];
    let cpu = sample(&resource, "pod_cpu_usage_seconds_total", &pod_labels).expect("pod cpu");
    between(
        (cpu * 1e9).round() as u64,
        before,
        after,
        1000,
        "pod_cpu_usage_seconds_total vs the pod's cpuacct.usage",
    );
    assert!(sample(&resource, "pod_memory_working_set_bytes", &pod_labels).unwrap() > 0.0);
    assert_eq!(sample(&resource, "scrape_error", &[]), Some(0.0));
    for container in ["one", "two"] {
        let labels = [pod_labels[0], pod_labels[1], ("container", container)];
        assert!(sample(&resource, "container_memory_working_set_bytes", &labels).unwrap() > 0.0);
        assert!(sample(&resource, "container_cpu_usage_seconds_total", &labels).is_some());
        let started = sample(&resource, "container_start_time_seconds", &labels).unwrap();
        let status = container_status(&pair, container);
        let reported = status.state.unwrap().running.unwrap().started_at.unwrap().0;
        // The summary's start time is the container's creation (as cAdvisor's), the API's
        // its start: apart by the start's duration, across a second boundary at times.
        assert!(
            (started - reported.as_second() as f64).abs() <= 1.0,
            "{container} start time: {started} vs {reported}"
        );
    }
    // metrics-server needs the samples' timestamps.
    let node_cpu = body
        .lines()
        .find(|l| l.starts_with("node_cpu_usage_seconds_total "))
        .unwrap_or_else(|| panic!("no node cpu in\n{body}"));
    assert_eq!(
        node_cpu.split(' ').count(),
        3,
        "value and timestamp: {node_cpu}"
    );

    // /metrics/cadvisor: the container series dashboards read.
    let (code, body) = node
        .get("/metrics/cadvisor")
        .await
        .expect("/metrics/cadvisor");
    assert_eq!(code, 200, "{body}");
    let cadvisor = scrape(&body, "/metrics/cadvisor");
    let labels = [pod_labels[0], pod_labels[1], ("container", "one")];
    assert!(sample(&cadvisor, "container_memory_working_set_bytes", &labels).unwrap() > 0.0);
    assert!(
        sample(
            &cadvisor,
            "container_cpu_usage_seconds_total",
            &[("id", "/")]
        )
        .unwrap()
            > 0.0
    );

    // Seven summaries were made (four at once, resource, cadvisor, one more now): none asked
    // containerd for its sandbox stats (seconds with a hundred pods), and the writable layers
    // were measured once (kept for a minute).
    node.get("/stats/summary").await.expect("a summary");
    let (_, body) = node.get("/metrics").await.expect("/metrics");
    let metrics = scrape(&body, "/metrics");
    let calls = |operation: &str| {
        sample(
            &metrics,
            "kubelet_runtime_operations_total",
            &[("operation_type", operation)],
        )
    };
    assert_eq!(calls("list_podsandbox_stats"), None);
    assert_eq!(calls("list_container_stats"), Some(1.0));
    node.shutdown().await;
}

fn condition_status(pod: &Pod, kind: &str) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_liveness_exec_probe_restarts_the_container_and_says_why() {
    let node = Node::start("liveness", "").await;
    // Healthy for three seconds, then the file the probe reads is gone.
    node.write(
        "live.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: live\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: docker.io/library/busybox:1.35\n    command: [\"sh\", \"-c\", \"touch /tmp/healthy; sleep 3; rm /tmp/healthy; exec sleep 3600\"]\n    livenessProbe:\n      exec:\n        command: [\"cat\", \"/tmp/healthy\"]\n      periodSeconds: 1\n      failureThreshold: 2\n",
    );
    let first = node.wait_pod("live", "running", running).await;
    let first_id = container_status(&first, "main").container_id.unwrap();
    let restarted = node
        .wait_pod("live", "restarted after failing its liveness probe", |p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.iter().find(|c| c.name == "main"))
                .is_some_and(|c| c.restart_count >= 1)
        })
        .await;
    assert_ne!(
        container_status(&restarted, "main").container_id.unwrap(),
        first_id
    );
    let log = node.log_text();
    assert!(
        log.contains(
            "Liveness probe failed: cat: can't open '/tmp/healthy': No such file or directory"
        ),
        "the Unhealthy event carries the probe's output:\n{log}"
    );
    assert!(
        log.contains("Container main failed liveness probe, will be restarted"),
        "the Killing event says why:\n{log}"
    );
    let (_, probes) = node.get("/metrics/probes").await.expect("/metrics/probes");
    let probes = scrape(&probes, "/metrics/probes");
    let failed = sample(
        &probes,
        "prober_probe_total",
        &[
            ("probe_type", "Liveness"),
            ("result", "failed"),
            ("container", "main"),
        ],
    );
    assert!(failed >= Some(2.0), "{failed:?}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_readiness_http_probe_follows_busybox_httpd() {
    let node = Node::start("readiness", "").await;
    node.write(
        "web.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: main\n    image: docker.io/library/busybox:1.35\n    command: [\"sh\", \"-c\", \"mkdir -p /www && exec httpd -f -p 8080 -h /www\"]\n    ports:\n    - name: http\n      containerPort: 8080\n    readinessProbe:\n      httpGet:\n        path: /ready\n        port: http\n      periodSeconds: 1\n      failureThreshold: 1\n",
    );
    // Running but not ready: /ready is a 404.
    let up = |p: &Pod| {
        phase(p) == "Running"
            && container_status(p, "main")
                .state
                .is_some_and(|s| s.running.is_some())
    };
    node.wait_pod("web", "running", up).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pod = node.wait_pod("web", "running", up).await;
    assert!(!container_status(&pod, "main").ready);
    assert_eq!(condition_status(&pod, "Ready").as_deref(), Some("False"));
    node.exec(&pod, "main", "echo ok > /www/ready").await;
    let ready = node
        .wait_pod("web", "ready", |p| {
            container_status(p, "main").ready
                && condition_status(p, "Ready").as_deref() == Some("True")
                && condition_status(p, "ContainersReady").as_deref() == Some("True")
        })
        .await;
    assert_eq!(container_status(&ready, "main").started, Some(true));
    node.exec(&pod, "main", "rm /www/ready").await;
    node.wait_pod("web", "unready again", |p| {
        !container_status(p, "main").ready
            && condition_status(p, "Ready").as_deref() == Some("False")
    })
    .await;
    let log = node.log_text();
    assert!(
        log.contains("Readiness probe failed: HTTP probe failed with statuscode: 404"),
        "{log}"
    );
    node.shutdown().await;
}

fn ready(pod: &Pod, name: &str) -> bool {
    container_status(pod, name).ready
}

fn restarts(pod: &Pod, name: &str) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == name))
        .map_or(0, |c| c.restart_count)
}

/// A gRPC health server on 127.0.0.1 (what a hostNetwork pod's gRPC probe reaches with
/// `--node-ip 127.0.0.1`), with the reporter that sets its status.
async fn grpc_health_server() -> (
    u16,
    tonic_health::server::HealthReporter,
    tokio::task::JoinHandle<()>,
) {
    let (reporter, service) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let incoming = futures::stream::unfold(listener, |l| async move {
        Some((l.accept().await.map(|(s, _)| s), l))
    });
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await;
    });
    (port, reporter, task)
}

/// An HTTP server on 127.0.0.1 that redirects every request to another host.
async fn redirecting_server() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body = "moved";
                let answer = format!(
                    "HTTP/1.1 302 Found\r\nLocation: http://elsewhere.invalid:{port}/\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_and_grpc_probes_follow_their_servers_and_a_redirect_elsewhere_warns() {
    let node = Node::start("probe-kinds", "").await;
    let (grpc, reporter, grpc_task) = grpc_health_server().await;
    let redirect = redirecting_server().await;
    // On the host's network: the probes reach the test's servers on the node IP, 127.0.0.1.
    node.write(
        "host.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: host\nspec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: grpc\n    image: docker.io/library/busybox:1.35\n    command: [\"sleep\", \"3600\"]\n    readinessProbe:\n      grpc:\n        port: {grpc}\n      periodSeconds: 1\n      failureThreshold: 1\n  - name: redirect\n    image: docker.io/library/busybox:1.35\n    command: [\"sleep\", \"3600\"]\n    readinessProbe:\n      httpGet:\n        port: {redirect}\n        path: /\n      periodSeconds: 1\n"
        ),
    );
    // In its own network namespace: a TCP server the test starts and stops in the container.
    node.write(
        "tcp.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: tcp\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: main\n    image: docker.io/library/busybox:1.35\n    command: [\"sh\", \"-c\", \"while true; do if [ -f /tmp/up ]; then httpd -f -p 9000 -h /tmp; fi; sleep 0.2; done\"]\n    readinessProbe:\n      tcpSocket:\n        port: 9000\n      periodSeconds: 1\n      failureThreshold: 1\n",
    );
    node.wait_pod("host", "ready", |p| {
        ready(p, "grpc") && ready(p, "redirect")
    })
    .await;
    reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    node.wait_pod("host", "unready: NOT_SERVING", |p| !ready(p, "grpc"))
        .await;
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    node.wait_pod("host", "ready: SERVING again", |p| ready(p, "grpc"))
        .await;
    grpc_task.abort();
    node.wait_pod("host", "unready: server gone", |p| !ready(p, "grpc"))
        .await;

    let up = |p: &Pod| {
        container_status(p, "main")
            .state
            .is_some_and(|s| s.running.is_some())
    };
    let pod = node.wait_pod("tcp", "running", up).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!ready(&node.wait_pod("tcp", "running", up).await, "main"));
    node.exec(&pod, "main", "touch /tmp/up").await;
    node.wait_pod("tcp", "ready: listening", |p| ready(p, "main"))
        .await;
    node.exec(&pod, "main", "rm /tmp/up; killall httpd").await;
    let gone = node
        .wait_pod("tcp", "unready: not listening", |p| !ready(p, "main"))
        .await;
    let ip = gone.status.and_then(|s| s.pod_ip).expect("the pod's IP");

    let log = node.log_text();
    for line in [
        "Readiness probe failed: service unhealthy (responded with \"NOT_SERVING\")".to_string(),
        format!(
            "Readiness probe failed: error: health rpc probe failed: rpc error: code = Unavailable desc = connection error: dial tcp 127.0.0.1:{grpc}: connect: connection refused"
        ),
        format!("Readiness probe failed: dial tcp {ip}:9000: connect: connection refused"),
        "Readiness probe warning: Probe terminated redirects, Response body: moved".to_string(),
    ] {
        assert!(log.contains(&line), "missing {line:?}:\n{log}");
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_startup_probe_holds_liveness_back_and_hung_or_failing_probes_restart_their_containers() {
    let node = Node::start("startup", "").await;
    // gated: liveness always fails, but only once the startup probe passed.
    // never: its startup probe never passes: killed after failureThreshold x periodSeconds.
    // hung: its liveness command hangs and is cut at timeoutSeconds, a failure.
    node.write(
        "slow.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: slow\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: gated\n    image: docker.io/library/busybox:1.35\n    command: [\"sleep\", \"3600\"]\n    startupProbe:\n      exec:\n        command: [\"cat\", \"/tmp/started\"]\n      periodSeconds: 1\n      failureThreshold: 600\n    livenessProbe:\n      exec:\n        command: [\"cat\", \"/tmp/alive\"]\n      periodSeconds: 1\n      failureThreshold: 3\n  - name: never\n    image: docker.io/library/busybox:1.35\n    command: [\"sleep\", \"3600\"]\n    startupProbe:\n      exec:\n        command: [\"false\"]\n      periodSeconds: 1\n      failureThreshold: 3\n  - name: hung\n    image: docker.io/library/busybox:1.35\n    command: [\"sleep\", \"3600\"]\n    livenessProbe:\n      exec:\n        command: [\"sleep\", \"100\"]\n      timeoutSeconds: 1\n      periodSeconds: 2\n      failureThreshold: 1\n",
    );
    let started = Instant::now();
    let pod = node
        .wait_pod("slow", "restarted: never and hung", |p| {
            restarts(p, "never") >= 1 && restarts(p, "hung") >= 1
        })
        .await;
    // Three failed startup probes, one a second, come before the kill.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        restarts(&pod, "gated"),
        0,
        "liveness ran before startup passed"
    );
    assert_eq!(container_status(&pod, "gated").started, Some(false));
    assert!(!ready(&pod, "gated"));
    node.exec(&pod, "gated", "touch /tmp/started").await;
    node.wait_pod("slow", "gated started", |p| {
        container_status(p, "gated").started == Some(true) && ready(p, "gated")
    })
    .await;
    node.wait_pod("slow", "gated restarted by its liveness probe", |p| {
        restarts(p, "gated") == 1 && container_status(p, "gated").started == Some(false)
    })
    .await;
    let log = node.log_text();
    for line in [
        "Startup probe failed: ",
        "Container never failed startup probe, will be restarted",
        "Liveness probe failed: command \"sleep 100\" timed out",
        "Container hung failed liveness probe, will be restarted",
        "Liveness probe failed: cat: can't open '/tmp/alive': No such file or directory",
        "Container gated failed liveness probe, will be restarted",
    ] {
        assert!(log.contains(line), "missing {line:?}:\n{log}");
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_is_probed_while_the_pod_terminates() {
    let node = Node::start("terminating-readiness", "").await;
    // Ready while /tmp/ready exists; its TERM handler removes it, then takes its time.
    node.write(
        "draining.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: draining\nspec:\n  terminationGracePeriodSeconds: 10\n  containers:\n  - name: main\n    image: docker.io/library/busybox:1.35\n    command: [\"sh\", \"-c\", \"trap 'rm -f /tmp/ready; sleep 30' TERM; touch /tmp/ready; while true; do sleep 0.2; done\"]\n    readinessProbe:\n      exec:\n        command: [\"cat\", \"/tmp/ready\"]\n      periodSeconds: 1\n      failureThreshold: 1\n",
    );
    let pod = node
        .wait_pod("draining", "ready", |p| ready(p, "main"))
        .await;
    std::fs::remove_file(node.manifest("draining.yaml")).unwrap();
    // The probe fails once the TERM handler removed the file, while the container stops.
    eventually(
        Duration::from_secs(8),
        "a failed readiness probe while terminating",
        || async {
            node.log_text()
                .contains("Readiness probe failed: cat: can't open '/tmp/ready'")
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        node.running_containers_of(&uid(&pod)).await,
        1,
        "still stopping"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn post_start_runs_before_the_container_counts_as_started_and_pre_stop_before_the_stop_signal()
 {
    let node = Node::start("hooks", "").await;
    // The main process waits for the postStart hook's file, then logs each signal it gets.
    node.write(
        "hooked.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: hooked\nspec:\n  terminationGracePeriodSeconds: 10\n  containers:\n  - name: main\n    image: docker.io/library/busybox:1.35\n    command: [\"sh\", \"-c\", \"trap 'echo got-term; exit 0' TERM; while [ ! -f /tmp/started ]; do sleep 0.1; done; echo saw-post-start; while true; do sleep 0.2; done\"]\n    lifecycle:\n      postStart:\n        exec:\n          command: [\"sh\", \"-c\", \"echo hook > /tmp/started\"]\n      preStop:\n        exec:\n          command: [\"sh\", \"-c\", \"echo pre-stop > /proc/1/fd/1; sleep 2\"]\n",
    );
    let pod = node.wait_pod("hooked", "running", running).await;
    let uid = uid(&pod);
    let log = node
        .dir
        .join("logs")
        .join(format!("default_hooked-{NODE}_{uid}/main/0.log"));
    eventually(
        Duration::from_secs(20),
        "the postStart hook's file seen",
        || async {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|t| t.contains("saw-post-start"))
        },
    )
    .await;
    // Removed: preStop runs (2 s), then the stop signal.
    let t = Instant::now();
    std::fs::remove_file(node.manifest("hooked.yaml")).unwrap();
    eventually(Duration::from_secs(30), "the container stopped", || async {
        (node.running_containers_of(&uid).await == 0).then_some(())
    })
    .await;
    let took = t.elapsed();
    let text = std::fs::read_to_string(&log).unwrap();
    let (pre_stop, term) = (text.find("pre-stop"), text.find("got-term"));
    assert!(
        pre_stop.is_some() && term.is_some() && pre_stop < term,
        "preStop before SIGTERM:\n{text}"
    );
    assert!(took >= Duration::from_secs(2), "the hook's time: {took:?}");
    assert!(
        took < Duration::from_secs(10),
        "within the grace period: {took:?}"
    );

    // A failing postStart kills the container, which is restarted.
    node.write(
        "failing.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: failing\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: docker.io/library/busybox:1.35\n    command: [\"sleep\", \"3600\"]\n    lifecycle:\n      postStart:\n        exec:\n          command: [\"sh\", \"-c\", \"exit 3\"]\n",
    );
    node.wait_pod(
        "failing",
        "restarted after its postStart hook failed",
        |p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.restart_count >= 1))
        },
    )
    .await;
    let kubelet_log = node.log_text();
    assert!(
        kubelet_log.contains("PostStartHook failed"),
        "the FailedPostStartHook event:\n{kubelet_log}"
    );
    assert!(kubelet_log.contains("FailedPostStartHook"), "{kubelet_log}");
    node.shutdown().await;
}

/// The CRI log of container `name` of `pod` (its first instance).
fn container_log(node: &Node, pod: &Pod, name: &str) -> PathBuf {
    node.dir.join("logs").join(format!(
        "default_{}_{}/{name}/0.log",
        pod.metadata.name.as_deref().unwrap_or_default(),
        uid(pod)
    ))
}

/// Waits until pod `pod` has no running container left.
async fn wait_stopped(node: &Node, pod: &Pod) {
    let uid = uid(pod);
    eventually(
        Duration::from_secs(30),
        "the pod's containers stopped",
        || async { (node.running_containers_of(&uid).await == 0).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_and_sleep_pre_stop_hooks_run_before_the_stop_signal_none_at_grace_zero_and_orphans_get_theirs()
 {
    let mut node = Node::start("pre-stop", "").await;
    // Each process logs the stop signal; "web" also logs the requests it gets.
    let trap = "trap 'echo got-term; exit 0' TERM";
    node.write(
        "hooks.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: hooks\nspec:\n  terminationGracePeriodSeconds: 10\n  containers:\n  - name: web\n    image: docker.io/library/busybox:1.35\n    command: [\"sh\", \"-c\", \"{trap}; mkdir -p /www; httpd -f -vv -p 8080 -h /www & wait\"]\n    lifecycle:\n      preStop:\n        httpGet:\n          path: /prestop\n          port: 8080\n  - name: nap\n    image: docker.io/library/busybox:1.35\n    command: [\"sh\", \"-c\", \"{trap}; while true; do sleep 0.2; done\"]\n    lifecycle:\n      preStop:\n        sleep:\n          seconds: 3\n  - name: broken\n    image: docker.io/library/busybox:1.35\n    command: [\"sh\", \"-c\", \"{trap}; while true; do sleep 0.2; done\"]\n    lifecycle:\n      preStop:\n        exec:\n          command: [\"sh\", \"-c\", \"exit 7\"]\n"
        ),
    );
    let marked = |name: &str, grace: u32| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: {grace}\n  containers:\n  - name: main\n    image: docker.io/library/busybox:1.35\n    command: [\"sh\", \"-c\", \"{trap}; while true; do sleep 0.2; done\"]\n    lifecycle:\n      preStop:\n        exec:\n          command: [\"sh\", \"-c\", \"echo pre-stop-ran > /proc/1/fd/1\"]\n"
        )
    };
    node.write("quick.yaml", &marked("quick", 0));
    node.write("orphan.yaml", &marked("orphan", 10));
    let hooks = node.wait_pod("hooks", "running", running).await;
    let quick = node.wait_pod("quick", "running", running).await;
    let orphan = node.wait_pod("orphan", "running", running).await;

    // HTTP and sleep hooks: the request, then the signal; the sleep inside the grace period.
    let removed = k8s_openapi::jiff::Timestamp::now();
    std::fs::remove_file(node.manifest("hooks.yaml")).unwrap();
    wait_stopped(&node, &hooks).await;
    let web = std::fs::read_to_string(container_log(&node, &hooks, "web")).unwrap();
    let (request, term) = (web.find("/prestop"), web.find("got-term"));
    assert!(
        request.is_some() && term.is_some() && request < term,
        "the preStop request before SIGTERM:\n{web}"
    );
    let nap = container_log(&node, &hooks, "nap");
    let signalled = logged_at(&nap, "got-term").expect("nap got SIGTERM within its grace period");
    let waited = signalled.duration_since(removed).as_secs_f64();
    assert!(
        (2.9..10.0).contains(&waited),
        "SIGTERM {waited:.1} s after removal, after the 3 s sleep hook"
    );

    // A failing hook is an event, and the stop goes on.
    let broken = std::fs::read_to_string(container_log(&node, &hooks, "broken")).unwrap();
    assert!(broken.contains("got-term"), "{broken}");
    let log = node.log_text();
    let failed = format!(
        "Exec lifecycle hook ([sh -c exit 7]) for Container \"broken\" in Pod \"hooks-{NODE}_default({})\" failed - error: command 'sh -c exit 7' exited with 7: , message: \"\"",
        uid(&hooks)
    );
    assert!(
        log.lines()
            .any(|l| l.contains(&failed) && l.contains("FailedPreStopHook")),
        "missing {failed:?}:\n{log}"
    );

    // Grace period 0: no preStop hook at all, as upstream.
    std::fs::remove_file(node.manifest("quick.yaml")).unwrap();
    wait_stopped(&node, &quick).await;
    let text = std::fs::read_to_string(container_log(&node, &quick, "main")).unwrap();
    assert!(!text.contains("pre-stop-ran"), "{text}");

    // Removed while the kubelet was down: its hook is restored from the container's
    // annotations and runs before the signal.
    node.stop_kubelet();
    std::fs::remove_file(node.manifest("orphan.yaml")).unwrap();
    node.spawn_kubelet();
    wait_stopped(&node, &orphan).await;
    let text = std::fs::read_to_string(container_log(&node, &orphan, "main")).unwrap();
    let (ran, term) = (text.find("pre-stop-ran"), text.find("got-term"));
    assert!(
        ran.is_some() && term.is_some() && ran < term,
        "the orphan's preStop before SIGTERM:\n{text}"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_container_stop_signals_a_containers_stop_signal_stops_it() {
    let node = Node::start(
        "stop-signal",
        "featureGates:\n  ContainerStopSignals: true\n",
    )
    .await;
    // SIGUSR1 ends it at once; SIGTERM (the image's signal) would only be logged.
    node.write(
        "usr1.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: usr1\nspec:\n  os:\n    name: linux\n  terminationGracePeriodSeconds: 30\n  containers:\n  - name: main\n    image: docker.io/library/busybox:1.35\n    command: [\"sh\", \"-c\", \"trap 'echo got-usr1; exit 0' USR1; trap 'echo got-term' TERM; while true; do sleep 0.2; done\"]\n    lifecycle:\n      stopSignal: SIGUSR1\n",
    );
    let pod = node.wait_pod("usr1", "running", running).await;
    let t = Instant::now();
    std::fs::remove_file(node.manifest("usr1.yaml")).unwrap();
    wait_stopped(&node, &pod).await;
    let took = t.elapsed();
    let text = std::fs::read_to_string(container_log(&node, &pod, "main")).unwrap();
    assert!(text.contains("got-usr1"), "{text}");
    assert!(!text.contains("got-term"), "{text}");
    assert!(
        took < Duration::from_secs(10),
        "stopped by its signal, not killed after 30 s: {took:?}"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_get_cgroups_under_their_qos_class_with_their_limits_and_lose_them_when_removed() {
    let node = Node::start("pod-cgroups", "podPidsLimit: 100\n").await;
    let with = |name: &str, resources: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: main\n    image: docker.io/library/busybox:1.35\n    command: [\"sleep\", \"3600\"]\n{resources}"
        )
    };
    node.write(
        "guaranteed.yaml",
        &with(
            "guaranteed",
            "    resources:\n      limits:\n        cpu: 500m\n        memory: 64Mi\n",
        ),
    );
    node.write(
        "burstable.yaml",
        &with(
            "burstable",
            "    resources:\n      requests:\n        cpu: 250m\n",
        ),
    );
    node.write("besteffort.yaml", &with("besteffort", ""));
    let root = format!(
        "/sys/fs/cgroup/%s/node-agent-test/{}/kubepods",
        std::process::id()
    );
    let dir = |controller: &str, rest: &str| {
        std::path::PathBuf::from(root.replace("%s", controller)).join(rest)
    };
    let read = |p: std::path::PathBuf| {
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .trim()
            .to_string()
    };
    let mut uids = Vec::new();
    for (name, place) in [
        ("guaranteed", ""),
        ("burstable", "burstable/"),
        ("besteffort", "besteffort/"),
    ] {
        let pod = node.wait_pod(name, "running", running).await;
        let uid = uid(&pod);
        let pod_dir = |controller: &str| dir(controller, &format!("{place}pod{uid}"));
        assert_eq!(read(pod_dir("pids").join("pids.max")), "100", "{name}");
        // The container runs inside the pod's cgroup.
        let id = container_status(&pod, "main").container_id.unwrap();
        let id = id.split_once("://").unwrap().1.to_string();
        assert!(
            pod_dir("memory").join(&id).is_dir(),
            "{name}: the container's cgroup under the pod's"
        );
        match name {
            "guaranteed" => {
                assert_eq!(
                    read(pod_dir("memory").join("memory.limit_in_bytes")),
                    (64u64 << 20).to_string()
                );
                assert_eq!(read(pod_dir("cpu").join("cpu.cfs_quota_us")), "50000");
                assert_eq!(read(pod_dir("cpu").join("cpu.shares")), "512");
            }
            "burstable" => assert_eq!(read(pod_dir("cpu").join("cpu.shares")), "256"),
            _ => assert_eq!(read(pod_dir("cpu").join("cpu.shares")), "2"),
        }
        uids.push((place, uid));
    }
    assert_eq!(read(dir("cpu", "besteffort/cpu.shares")), "2");
    // The Burstable class's shares follow its pods' requests (housekeeping, every 2 s).
    let burstable_shares = dir("cpu", "burstable/cpu.shares");
    eventually(
        Duration::from_secs(10),
        "burstable shares of 250m",
        || async {
            (std::fs::read_to_string(&burstable_shares).ok()?.trim() == "256").then_some(())
        },
    )
    .await;
    for name in ["guaranteed.yaml", "burstable.yaml", "besteffort.yaml"] {
        std::fs::remove_file(node.manifest(name)).unwrap();
    }
    for (place, uid) in uids {
        let gone = dir("memory", &format!("{place}pod{uid}"));
        eventually(
            Duration::from_secs(60),
            "the pod's cgroup removed",
            || async { (!gone.exists()).then_some(()) },
        )
        .await;
    }
    // The runtime's view of what it applied matches what the kubelet asked for at creation:
    // no container is "resized" to what it already has.
    let log = node.log_text();
    assert!(
        !log.contains("resizing the container in place"),
        "a spurious in-place resize:\n{log}"
    );
    node.shutdown().await;
}

/// The time of the first line of a CRI log holding `text`.
fn logged_at(log: &std::path::Path, text: &str) -> Option<k8s_openapi::jiff::Timestamp> {
    std::fs::read_to_string(log)
        .ok()?
        .lines()
        .find(|l| l.contains(text))?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sidecar_outlives_the_app_container_during_termination() {
    let node = Node::start("sidecar-stop", "").await;
    // The app takes two seconds to stop; the sidecar logs when it is told to.
    node.write(
        "pair.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: pair\nspec:\n  terminationGracePeriodSeconds: 10\n  initContainers:\n  - name: side\n    image: docker.io/library/busybox:1.35\n    restartPolicy: Always\n    command: [\"sh\", \"-c\", \"trap 'echo side-term; exit 0' TERM; while true; do sleep 0.2; done\"]\n  containers:\n  - name: app\n    image: docker.io/library/busybox:1.35\n    command: [\"sh\", \"-c\", \"trap 'sleep 2; echo app-term; exit 0' TERM; while true; do sleep 0.2; done\"]\n",
    );
    let pod = node.wait_pod("pair", "running", running).await;
    let uid = uid(&pod);
    std::fs::remove_file(node.manifest("pair.yaml")).unwrap();
    eventually(
        Duration::from_secs(30),
        "both containers stopped",
        || async { (node.running_containers_of(&uid).await == 0).then_some(()) },
    )
    .await;
    let logs = node
        .dir
        .join("logs")
        .join(format!("default_pair-{NODE}_{uid}"));
    let app = logged_at(&logs.join("app/0.log"), "app-term").expect("the app stopped cleanly");
    let side = logged_at(&logs.join("side/0.log"), "side-term").expect("the sidecar was told");
    assert!(
        side > app,
        "the sidecar is stopped after the app exited: app {app}, sidecar {side}"
    );
    assert!(
        !node.log_text().contains("resizing the container in place"),
        "a spurious in-place resize of the sidecar or the app"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sidecar_startup_probe_holds_the_next_init_container_back() {
    let node = Node::start("sidecar-start", "").await;
    // The sidecar becomes "started" three seconds after it runs; the next init container
    // must not start before.
    node.write(
        "gated.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: gated\nspec:\n  terminationGracePeriodSeconds: 0\n  initContainers:\n  - name: side\n    image: docker.io/library/busybox:1.35\n    restartPolicy: Always\n    command: [\"sh\", \"-c\", \"sleep 3; touch /tmp/up; exec sleep 3600\"]\n    startupProbe:\n      exec:\n        command: [\"test\", \"-f\", \"/tmp/up\"]\n      periodSeconds: 1\n      failureThreshold: 30\n  - name: setup\n    image: docker.io/library/busybox:1.35\n    command: [\"true\"]\n  containers:\n  - name: app\n    image: docker.io/library/busybox:1.35\n    command: [\"sleep\", \"3600\"]\n",
    );
    let pod = node.wait_pod("gated", "running", running).await;
    let status = pod.status.unwrap();
    let init = status.init_container_statuses.unwrap();
    let started = |name: &str| {
        let s = init.iter().find(|s| s.name == name).unwrap();
        let state = s.state.clone().unwrap();
        state
            .running
            .and_then(|r| r.started_at)
            .or_else(|| state.terminated.and_then(|t| t.started_at))
            .unwrap()
            .0
    };
    let gap = started("setup").duration_since(started("side"));
    assert!(
        gap.as_secs_f64() >= 3.0,
        "setup started {gap:?} after the sidecar, before its startup probe could succeed"
    );
    node.shutdown().await;
}

/// A pod of one busybox container sleeping, with `container_extra` under the container and
/// `spec_extra` under the spec (both indented already).
fn sleeper(name: &str, spec_extra: &str, container_extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 0\n{spec_extra}  containers:\n  - name: main\n    image: docker.io/library/busybox:1.35\n    command: [\"sleep\", \"3600\"]\n{container_extra}"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn seccomp_default_localhost_profiles_masked_paths_and_fs_group_apply_in_containers() {
    let node = Node::start("security", "seccompDefault: true\n").await;
    // A profile that refuses mkdir, under <rootDir>/seccomp.
    let profiles = node.dir.join("root/seccomp/profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(
        profiles.join("no-mkdir.json"),
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    node.write("plain.yaml", &sleeper("plain", "", ""));
    node.write(
        "local.yaml",
        &sleeper(
            "local",
            "",
            "    securityContext:\n      seccompProfile:\n        type: Localhost\n        localhostProfile: profiles/no-mkdir.json\n",
        ),
    );
    node.write(
        "missing.yaml",
        &sleeper(
            "missing",
            "",
            "    securityContext:\n      seccompProfile:\n        type: Localhost\n        localhostProfile: profiles/absent.json\n",
        ),
    );
    node.write(
        "group.yaml",
        &sleeper(
            "group",
            "  securityContext:\n    runAsUser: 1000\n    runAsGroup: 1000\n    fsGroup: 2000\n  volumes:\n  - name: data\n    emptyDir: {}\n",
            "    volumeMounts:\n    - name: data\n      mountPath: /data\n",
        ),
    );
    // seccompDefault: a container naming no profile runs under the runtime's default filter;
    // the masked and read-only paths are in place.
    let plain = node.wait_pod("plain", "running", running).await;
    node.exec(
        &plain,
        "main",
        "grep -Eq '^Seccomp:[[:space:]]+2$' /proc/self/status",
    )
    .await;
    node.exec(
        &plain,
        "main",
        "[ -z \"$(cat /proc/timer_list)\" ] && mkdir /tmp/allowed",
    )
    .await;
    node.exec(
        &plain,
        "main",
        "! sh -c 'echo 1 > /proc/sysrq-trigger' 2>/dev/null",
    )
    .await;
    // The Localhost profile refuses mkdir and nothing else.
    let local = node.wait_pod("local", "running", running).await;
    node.exec(
        &local,
        "main",
        "! mkdir /tmp/refused 2>/dev/null && touch /tmp/file",
    )
    .await;
    // A missing profile fails the container's creation.
    let missing = node
        .wait_pod("missing", "CreateContainerError", |p| {
            waiting(p, "main").is_some_and(|(reason, _)| reason == "CreateContainerError")
        })
        .await;
    let (_, message) = waiting(&missing, "main").unwrap();
    assert!(message.contains("absent.json"), "{message}");
    // fsGroup: the emptyDir belongs to group 2000 with the setgid bit, so a file the
    // non-root container makes there is group 2000 too.
    let group = node.wait_pod("group", "running", running).await;
    node.exec(
        &group,
        "main",
        "[ \"$(stat -c %g /data)\" = 2000 ] && [ \"$(stat -c %a /data)\" = 2777 ] && touch /data/f && [ \"$(stat -c %g /data/f)\" = 2000 ] && [ \"$(id -u)\" = 1000 ]",
    )
    .await;
    // containerd 1.7 does not report the identity it applied (ContainerStatus.user): the
    // status conversion is unit-tested in node-core.
    node.shutdown().await;
}

/// The CRI containers of pod `uid` named `name`, any state.
async fn instances(node: &Node, uid: &str, name: &str) -> Vec<cri::Container> {
    node.containers_of(uid)
        .await
        .into_iter()
        .filter(|c| c.metadata.as_ref().is_some_and(|m| m.name == name))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn container_restart_policies_and_rules_override_the_pods() {
    let node = Node::start("container-restart", "").await;
    // An Always pod: `once` (Never) stays down, `retried` (Never, but exit 42 restarts) comes
    // back, `server` runs on.
    node.write(
        "mixed.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: mixed\nspec:\n  restartPolicy: Always\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: once\n    image: docker.io/library/busybox:1.35\n    command: [\"sh\", \"-c\", \"exit 3\"]\n    restartPolicy: Never\n  - name: retried\n    image: docker.io/library/busybox:1.35\n    command: [\"sh\", \"-c\", \"exit 42\"]\n    restartPolicy: Never\n    restartPolicyRules:\n    - action: Restart\n      exitCodes:\n        operator: In\n        values: [42]\n  - name: server\n    image: docker.io/library/busybox:1.35\n    command: [\"sleep\", \"3600\"]\n",
    );
    let pod = node
        .wait_pod("mixed", "once exited, retried restarted", |p| {
            let once = container_status(p, "once");
            let done = once
                .state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .is_some_and(|t| t.exit_code == 3);
            done && container_status(p, "retried").restart_count >= 1
        })
        .await;
    // Give a wrong restart time to happen: the first restart of a crash is immediate.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let uid = uid(&pod);
    assert_eq!(
        instances(&node, &uid, "once").await.len(),
        1,
        "`once` ran once"
    );
    let pod = node
        .wait_pod("mixed", "Running", |p| phase(p) == "Running")
        .await;
    assert_eq!(container_status(&pod, "once").restart_count, 0);
    assert!(container_status(&pod, "server").ready);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_garbage_collected_init_container_is_not_run_again_when_the_app_restarts() {
    let node = Node::start("init-gc", "").await;
    node.write(
        "inits.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: inits\nspec:\n  terminationGracePeriodSeconds: 0\n  initContainers:\n  - name: first\n    image: docker.io/library/busybox:1.35\n    command: [\"true\"]\n  - name: second\n    image: docker.io/library/busybox:1.35\n    command: [\"true\"]\n  containers:\n  - name: app\n    image: docker.io/library/busybox:1.35\n    command: [\"sleep\", \"3600\"]\n",
    );
    let pod = node.wait_pod("inits", "running", running).await;
    let uid = uid(&pod);
    // The runtime loses the first init container (as GC would remove it), then the app dies.
    for c in instances(&node, &uid, "first").await {
        node.client.remove_container(&c.id).await.unwrap();
    }
    let old = kill_behind_the_kubelets_back(&node, &pod, "app").await;
    let pod = wait_restarted_without_back_off(&node, "inits", "app", &old).await;
    assert_eq!(container_status(&pod, "app").restart_count, 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        instances(&node, &uid, "first").await.is_empty(),
        "the completed init container ran again"
    );
    assert_eq!(instances(&node, &uid, "second").await.len(), 1);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_network_pods_ip_is_the_nodes() {
    let node = Node::start("host-ip", "").await;
    node.write(
        "host.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: host\nspec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: main\n    image: docker.io/library/busybox:1.35\n    command: [\"sleep\", \"3600\"]\n    env:\n    - name: POD_IP\n      valueFrom:\n        fieldRef:\n          fieldPath: status.podIP\n    - name: POD_IPS\n      valueFrom:\n        fieldRef:\n          fieldPath: status.podIPs\n    - name: HOST_IP\n      valueFrom:\n        fieldRef:\n          fieldPath: status.hostIP\n",
    );
    let pod = node.wait_pod("host", "running", running).await;
    node.exec(
        &pod,
        "main",
        "[ \"$POD_IP\" = 127.0.0.1 ] && [ \"$POD_IPS\" = 127.0.0.1 ] && [ \"$HOST_IP\" = \"$POD_IP\" ]",
    )
    .await;
    assert_eq!(
        pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()),
        Some("127.0.0.1")
    );
    node.shutdown().await;
}

/// Stops (SIGSTOP) the containerd shim serving a container; continues it when dropped.
struct StoppedShim(u32);

impl StoppedShim {
    async fn of(node: &Node, id: &str) -> Self {
        let pid = node
            .client
            .container_pid(id)
            .await
            .unwrap()
            .expect("a running container has a pid");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // The fields after the command's closing parenthesis: state, then the parent's pid.
        let after = stat.rsplit_once(')').unwrap().1;
        let shim: u32 = after.split_whitespace().nth(1).unwrap().parse().unwrap();
        let comm = std::fs::read_to_string(format!("/proc/{shim}/comm")).unwrap();
        assert!(comm.starts_with("containerd-shim"), "parent is {comm}");
        let status = Command::new("kill")
            .args(["-STOP", &shim.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        StoppedShim(shim)
    }
}

impl Drop for StoppedShim {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_whose_stop_failed_is_not_started_a_second_time() {
    // A short runtime request timeout: a stop that does not finish fails after grace + 3 s.
    let node = Node::start("stuck-stop", "runtimeRequestTimeout: 3s\n").await;
    node.write(
        "stuck.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: stuck\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: docker.io/library/busybox:1.35\n    command: [\"sleep\", \"3600\"]\n    livenessProbe:\n      exec:\n        command: [\"true\"]\n      periodSeconds: 1\n      timeoutSeconds: 1\n      failureThreshold: 1\n",
    );
    let pod = node.wait_pod("stuck", "running", running).await;
    let uid = uid(&pod);
    let id = container_status(&pod, "main").container_id.unwrap();
    let id = id.rsplit("://").next().unwrap().to_string();
    // With its shim stopped the container answers no probe (the exec times out) and cannot be
    // stopped: the kubelet kills it for failing liveness, and the stop fails at its deadline.
    // containerd itself still answers, so a second container could be created beside it.
    let shim = StoppedShim::of(&node, &id).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !node.log_text().contains("KillContainerError") {
        assert!(
            Instant::now() < deadline,
            "no failed stop:\n{}",
            node.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The syncs that follow retry the stop; none makes a second copy beside the stuck one.
    for _ in 0..20 {
        let all = instances(&node, &uid, "main").await;
        assert_eq!(all.len(), 1, "a second copy was made: {all:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Continued, the shim lets the stop through and the container is replaced.
    drop(shim);
    node.wait_pod("stuck", "replaced", |p| {
        running(p) && container_status(p, "main").restart_count >= 1
    })
    .await;
    let running_now = instances(&node, &uid, "main")
        .await
        .into_iter()
        .filter(|c| c.state == cri::ContainerState::ContainerRunning as i32)
        .count();
    assert_eq!(running_now, 1);
    node.shutdown().await;
}
