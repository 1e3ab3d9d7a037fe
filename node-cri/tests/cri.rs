//! CRI client against a real containerd (one per test binary, started by the harness).

use std::net::Ipv4Addr;
use std::time::Duration;

use futures::StreamExt;
use node_cri::cri;
use node_cri::harness::{self, busybox_container, eventually, sandbox_config, unique};
use node_cri::{ClientOptions, CriClient, CriError};
use node_images::oci::{BUSYBOX_IMAGE, PAUSE_IMAGE};

const NS: &str = "cri-test";

/// Runs a sandbox for a new pod named after `name`; returns (pod name, sandbox id, config).
async fn run_sandbox(client: &CriClient, name: &str) -> (String, String, cri::PodSandboxConfig) {
    let shared = harness::shared();
    let pod = unique(name);
    let log_dir = shared.dir().join("logs").join(&pod);
    std::fs::create_dir_all(&log_dir).unwrap();
    let config = sandbox_config(NS, &pod, &log_dir, &[("test", name)]);
    let id = client
        .run_pod_sandbox(config.clone(), "")
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox for {pod}: {e}"));
    (pod, id, config)
}

async fn start_busybox(
    client: &CriClient,
    sandbox: &str,
    sandbox_config: &cri::PodSandboxConfig,
    name: &str,
    command: &[&str],
    labels: &[(&str, &str)],
) -> String {
    let id = client
        .create_container(
            sandbox,
            busybox_container(name, command, labels),
            sandbox_config.clone(),
        )
        .await
        .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}"));
    client
        .start_container(&id)
        .await
        .unwrap_or_else(|e| panic!("StartContainer {name}: {e}"));
    id
}

async fn wait_exited(client: &CriClient, id: &str) -> cri::ContainerStatus {
    eventually(Duration::from_secs(30), "container to exit", || async {
        let status = client.container_status(id, false).await.ok()?;
        (status.state == cri::ContainerState::ContainerExited as i32).then_some(status)
    })
    .await
}

#[tokio::test]
async fn version_and_status_report_a_ready_containerd() {
    let client = harness::shared().client();
    let version = client.version().await.unwrap();
    assert_eq!(version.runtime_name, "containerd");
    assert_eq!(version.runtime_api_version, "v1");
    assert!(
        version.runtime_version.starts_with("1.7")
            || version.runtime_version.starts_with("v1.7")
            || version.runtime_version.starts_with("v2")
            || version.runtime_version.starts_with('2'),
        "containerd >= 1.7 expected, got {}",
        version.runtime_version
    );
    let status = client.status(false).await.unwrap().status.unwrap();
    for kind in ["RuntimeReady", "NetworkReady"] {
        let c = status
            .conditions
            .iter()
            .find(|c| c.r#type == kind)
            .unwrap_or_else(|| panic!("no {kind} condition in {status:?}"));
        assert!(c.status, "{kind} is false: {} {}", c.reason, c.message);
    }
}

#[tokio::test]
async fn local_images_are_imported_and_the_sandbox_image_is_pinned() {
    let client = harness::shared().client();
    let busybox = client.image_status(BUSYBOX_IMAGE).await.unwrap();
    let busybox = busybox.unwrap_or_else(|| panic!("{BUSYBOX_IMAGE} was not imported"));
    assert!(busybox.repo_tags.iter().any(|t| t == BUSYBOX_IMAGE));
    assert!(busybox.size > 0);
    let pause = client.image_status(PAUSE_IMAGE).await.unwrap().unwrap();
    assert!(pause.pinned, "the sandbox image must be pinned");
    let listed = client.list_images(None).await.unwrap();
    assert!(listed.iter().any(|i| i.id == busybox.id));
    let fs = client.image_fs_info().await.unwrap();
    assert!(
        fs.image_filesystems.iter().any(|f| f.used_bytes.is_some()),
        "ImageFsInfo reports usage: {fs:?}"
    );
}

#[tokio::test]
async fn a_pod_sandbox_gets_an_address_from_the_harness_network() {
    let client = harness::shared().client();
    let (pod, id, _) = run_sandbox(&client, "net").await;
    let status = client.pod_sandbox_status(&id, false).await.unwrap();
    let status = status.status.unwrap();
    assert_eq!(status.state, cri::PodSandboxState::SandboxReady as i32);
    assert_eq!(status.metadata.as_ref().unwrap().name, pod);
    let ip: Ipv4Addr = status
        .network
        .as_ref()
        .map(|n| {
            n.ip.parse()
                .unwrap_or_else(|e| panic!("pod IP {:?}: {e}", n.ip))
        })
        .expect("sandbox has a network status");
    let net = harness::shared().network();
    let mask = u32::MAX << (32 - net.prefix_len);
    assert_eq!(
        u32::from(ip) & mask,
        u32::from(net.subnet),
        "pod IP {ip} is outside the harness range {}",
        net.cidr()
    );
    // Listed with its labels, then gone after removal.
    let listed = client
        .list_pod_sandbox(Some(cri::PodSandboxFilter {
            id: id.clone(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].labels.get("test").map(String::as_str),
        Some("net")
    );
    client.stop_pod_sandbox(&id).await.unwrap();
    client.remove_pod_sandbox(&id).await.unwrap();
    let err = client.pod_sandbox_status(&id, false).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test]
async fn a_busybox_container_is_created_started_stopped_and_removed() {
    let client = harness::shared().client();
    let (pod, sandbox, config) = run_sandbox(&client, "lifecycle").await;
    let id = client
        .create_container(
            &sandbox,
            busybox_container("sleeper", &["sleep", "3600"], &[]),
            config.clone(),
        )
        .await
        .unwrap();
    let status = client.container_status(&id, false).await.unwrap();
    assert_eq!(status.state, cri::ContainerState::ContainerCreated as i32);
    client.start_container(&id).await.unwrap();
    let status = client.container_status(&id, false).await.unwrap();
    assert_eq!(status.state, cri::ContainerState::ContainerRunning as i32);
    assert!(status.started_at > 0);
    assert!(!status.image_ref.is_empty());
    // sleep ignores nothing: SIGTERM ends it well within the grace period.
    client.stop_container(&id, 10).await.unwrap();
    let status = client.container_status(&id, false).await.unwrap();
    assert_eq!(status.state, cri::ContainerState::ContainerExited as i32);
    assert!(status.finished_at >= status.started_at);
    client.remove_container(&id).await.unwrap();
    let err = client.container_status(&id, false).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    harness::remove_pods(&client, &pod).await.unwrap();
}

#[tokio::test]
async fn exec_sync_returns_stdout_stderr_and_exit_code() {
    let client = harness::shared().client();
    let (pod, sandbox, config) = run_sandbox(&client, "exec").await;
    let id = start_busybox(&client, &sandbox, &config, "shell", &["sleep", "3600"], &[]).await;
    let out = client
        .exec_sync(
            &id,
            vec![
                "sh".into(),
                "-c".into(),
                "echo out; echo err >&2; exit 3".into(),
            ],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert_eq!(out.exit_code, 3);
    // The streaming calls hand out URLs of the runtime's streaming server on loopback.
    let url = client
        .exec(cri::ExecRequest {
            container_id: id.clone(),
            cmd: vec!["sh".into()],
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let url = client.port_forward(&sandbox, vec![80]).await.unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    harness::remove_pods(&client, &pod).await.unwrap();
}

#[tokio::test]
async fn list_containers_filters_by_label_and_state() {
    let client = harness::shared().client();
    let (pod, sandbox, config) = run_sandbox(&client, "list").await;
    let running = start_busybox(
        &client,
        &sandbox,
        &config,
        "runs",
        &["sleep", "3600"],
        &[("role", "a")],
    )
    .await;
    let exited = start_busybox(
        &client,
        &sandbox,
        &config,
        "exits",
        &["true"],
        &[("role", "b")],
    )
    .await;
    wait_exited(&client, &exited).await;

    let by_label = |role: &str| cri::ContainerFilter {
        pod_sandbox_id: sandbox.clone(),
        label_selector: [("role".to_string(), role.to_string())].into(),
        ..Default::default()
    };
    let a = client.list_containers(Some(by_label("a"))).await.unwrap();
    assert_eq!(
        a.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        [running.as_str()]
    );
    let b = client.list_containers(Some(by_label("b"))).await.unwrap();
    assert_eq!(
        b.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        [exited.as_str()]
    );

    let by_state = |state: cri::ContainerState| cri::ContainerFilter {
        pod_sandbox_id: sandbox.clone(),
        state: Some(cri::ContainerStateValue {
            state: state as i32,
        }),
        ..Default::default()
    };
    let run = client
        .list_containers(Some(by_state(cri::ContainerState::ContainerRunning)))
        .await
        .unwrap();
    assert_eq!(
        run.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        [running.as_str()]
    );
    let ex = client
        .list_containers(Some(by_state(cri::ContainerState::ContainerExited)))
        .await
        .unwrap();
    assert_eq!(
        ex.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        [exited.as_str()]
    );
    harness::remove_pods(&client, &pod).await.unwrap();
}

#[tokio::test]
async fn an_exited_container_shows_its_exit_code_and_reason() {
    let client = harness::shared().client();
    let (pod, sandbox, config) = run_sandbox(&client, "exit").await;
    let failed = start_busybox(
        &client,
        &sandbox,
        &config,
        "fails",
        &["sh", "-c", "exit 7"],
        &[],
    )
    .await;
    let ok = start_busybox(&client, &sandbox, &config, "succeeds", &["true"], &[]).await;
    let failed = wait_exited(&client, &failed).await;
    assert_eq!(failed.exit_code, 7);
    assert_eq!(failed.reason, "Error");
    let ok = wait_exited(&client, &ok).await;
    assert_eq!(ok.exit_code, 0);
    assert_eq!(ok.reason, "Completed");
    harness::remove_pods(&client, &pod).await.unwrap();
}

#[tokio::test]
async fn container_stats_report_cpu_and_memory() {
    let client = harness::shared().client();
    let (pod, sandbox, config) = run_sandbox(&client, "stats").await;
    // Burn a little CPU and hold some memory.
    let id = start_busybox(
        &client,
        &sandbox,
        &config,
        "busy",
        &[
            "sh",
            "-c",
            "x=$(head -c 2000000 /dev/zero | tr '\\0' a); while :; do :; done",
        ],
        &[],
    )
    .await;
    let stats = eventually(
        Duration::from_secs(20),
        "CPU usage to be reported",
        || async {
            let s = client.container_stats(&id).await.ok()?;
            let cpu = s.cpu.as_ref()?.usage_core_nano_seconds.as_ref()?.value;
            (cpu > 0).then_some(s)
        },
    )
    .await;
    let memory = stats.memory.as_ref().expect("memory stats");
    assert!(
        memory
            .working_set_bytes
            .as_ref()
            .is_some_and(|v| v.value > 0),
        "working set reported: {memory:?}"
    );
    assert_eq!(stats.attributes.as_ref().unwrap().id, id);
    let listed = client
        .list_container_stats(Some(cri::ContainerStatsFilter {
            pod_sandbox_id: sandbox.clone(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert!(
        listed
            .iter()
            .any(|s| s.attributes.as_ref().is_some_and(|a| a.id == id))
    );
    harness::remove_pods(&client, &pod).await.unwrap();
}

#[tokio::test]
async fn container_events_deliver_started_and_stopped() {
    let client = harness::shared().client();
    let mut events = client.container_events().await.unwrap();
    let (pod, sandbox, config) = run_sandbox(&client, "events").await;
    let id = start_busybox(&client, &sandbox, &config, "short", &["sleep", "3600"], &[]).await;
    client.stop_container(&id, 5).await.unwrap();

    let mut seen = Vec::new();
    let wanted = [
        cri::ContainerEventType::ContainerStartedEvent as i32,
        cri::ContainerEventType::ContainerStoppedEvent as i32,
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !wanted.iter().all(|w| seen.contains(w)) {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("events for {id} within 30s; saw {seen:?}"))
            .expect("event stream ended")
            .unwrap();
        if event.container_id == id {
            seen.push(event.container_event_type);
        }
    }
    let started = seen.iter().position(|e| *e == wanted[0]).unwrap();
    let stopped = seen.iter().position(|e| *e == wanted[1]).unwrap();
    assert!(started < stopped, "started before stopped: {seen:?}");
    harness::remove_pods(&client, &pod).await.unwrap();
}

#[tokio::test]
async fn a_missing_image_gives_a_clear_error() {
    let client = harness::shared().client();
    let missing = "docker.io/library/no-such-image:0.0.1";
    assert!(client.image_status(missing).await.unwrap().is_none());

    let (pod, sandbox, config) = run_sandbox(&client, "missing").await;
    let mut container = busybox_container("ghost", &["true"], &[]);
    container.image = Some(node_cri::client::image_spec(missing));
    let err = client
        .create_container(&sandbox, container, config)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("CRI CreateContainer container \"ghost\""),
        "{text}"
    );
    assert!(text.contains("no-such-image"), "{text}");
    assert!(err.is_not_found(), "{text}");

    // A pull from a registry that is not there (a closed port on loopback) names the image.
    let image = "127.0.0.1:9/missing/image:1";
    let err = client.pull_image(image, None, None).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("CRI PullImage image \"127.0.0.1:9/missing/image:1\""),
        "{text}"
    );
    harness::remove_pods(&client, &pod).await.unwrap();
}

#[tokio::test]
async fn a_wrong_socket_path_gives_a_clear_error() {
    let err = CriClient::connect(
        "unix:///tmp/na-nowhere/containerd.sock",
        ClientOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            CriError::Unreachable {
                call: "Version",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "CRI Version: runtime endpoint unix:///tmp/na-nowhere/containerd.sock is unreachable: no such socket"
    );
    let err = CriClient::connect("tcp://127.0.0.1:1", ClientOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, CriError::InvalidEndpoint { .. }), "{err:?}");
}

#[tokio::test]
async fn update_container_resources_changes_the_memory_limit() {
    let client = harness::shared().client();
    let (pod, sandbox, config) = run_sandbox(&client, "update").await;
    let id = start_busybox(
        &client,
        &sandbox,
        &config,
        "limited",
        &["sleep", "3600"],
        &[],
    )
    .await;
    let limit = 64 * 1024 * 1024;
    client
        .update_container_resources(
            &id,
            Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: limit,
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    let status = client.container_status(&id, false).await.unwrap();
    let applied = status
        .resources
        .and_then(|r| r.linux)
        .map(|l| l.memory_limit_in_bytes);
    assert_eq!(applied, Some(limit));
    harness::remove_pods(&client, &pod).await.unwrap();
}

#[tokio::test]
async fn sandbox_stats_and_runtime_config_answer() {
    let client = harness::shared().client();
    let (pod, sandbox, config) = run_sandbox(&client, "sbstats").await;
    start_busybox(&client, &sandbox, &config, "idle", &["sleep", "3600"], &[]).await;
    let stats = client.pod_sandbox_stats(&sandbox).await.unwrap();
    assert_eq!(stats.attributes.as_ref().unwrap().id, sandbox);
    // containerd 1.7 predates RuntimeConfig: the kubelet then uses its own cgroupDriver, as
    // upstream does; 2.x reports the driver it was configured with.
    let version = client.version().await.unwrap().runtime_version;
    match client.runtime_config().await {
        Err(err) if version.trim_start_matches('v').starts_with("1.") => {
            assert!(err.is_unimplemented(), "{err}")
        }
        Err(err) => panic!("RuntimeConfig on containerd {version}: {err}"),
        Ok(rc) => {
            let driver = rc.linux.map(|l| l.cgroup_driver).unwrap_or_default();
            assert_eq!(driver, cri::CgroupDriver::Cgroupfs as i32);
        }
    }
    client.update_runtime_config("10.244.0.0/24").await.unwrap();
    harness::remove_pods(&client, &pod).await.unwrap();
}

#[tokio::test]
async fn the_node_reaches_a_pod_on_its_address_and_the_pod_has_no_default_route() {
    let client = harness::shared().client();
    let (pod, sandbox, config) = run_sandbox(&client, "reach").await;
    let id = start_busybox(
        &client,
        &sandbox,
        &config,
        "web",
        &["sh", "-c", "mkdir -p /www && echo hello-from-pod > /www/index.html && exec httpd -f -p 8080 -h /www"],
        &[],
    )
    .await;
    let ip = client
        .pod_sandbox_status(&sandbox, false)
        .await
        .unwrap()
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .unwrap();
    // Traffic only to the pod's address, in the network namespace this test created.
    let body = eventually(
        Duration::from_secs(20),
        "the pod's web server to answer",
        || {
            let ip = ip.clone();
            async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut conn = tokio::net::TcpStream::connect((ip.as_str(), 8080))
                    .await
                    .ok()?;
                conn.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
                    .await
                    .ok()?;
                let mut response = String::new();
                conn.read_to_string(&mut response).await.ok()?;
                Some(response)
            }
        },
    )
    .await;
    assert!(body.contains("hello-from-pod"), "{body}");

    let routes = client
        .exec_sync(
            &id,
            vec!["ip".into(), "route".into()],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
    assert!(
        routes.contains(&harness::shared().network().cidr()),
        "{routes}"
    );
    assert!(
        !routes.contains("default"),
        "pod traffic must stay on the node: {routes}"
    );
    harness::remove_pods(&client, &pod).await.unwrap();
}

#[tokio::test]
async fn remove_image_deletes_an_imported_image() {
    let shared = harness::shared();
    let client = shared.client();
    let reference = format!("example.invalid/removable:{}", std::process::id());
    let archive = shared.dir().join("removable.tar");
    node_images::oci::busybox_image(
        std::path::Path::new(node_images::oci::DEFAULT_BUSYBOX_PATH),
        &reference,
    )
    // Content of its own: RemoveImage removes every tag of an image id, and an identical
    // image would share busybox's id.
    .label("node-agent.test/removable", &reference)
    .build()
    .unwrap()
    .write_to(&archive)
    .unwrap();
    let out = std::process::Command::new("ctr")
        .arg("--address")
        .arg(shared.dir().join("containerd.sock"))
        .args(["--namespace", "k8s.io", "images", "import"])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let image = eventually(
        Duration::from_secs(10),
        "the CRI plugin to see the import",
        || async { client.image_status(&reference).await.ok().flatten() },
    )
    .await;
    assert!(image.repo_tags.contains(&reference));
    client.remove_image(&reference).await.unwrap();
    assert!(client.image_status(&reference).await.unwrap().is_none());
}

#[tokio::test]
async fn calls_give_up_at_their_deadline() {
    // A "runtime" that accepts connections and never answers.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("silent.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    let endpoint = format!("unix://{}", socket.display());
    let options = ClientOptions {
        request_timeout: Duration::from_millis(200),
        pull_timeout: Some(Duration::from_millis(300)),
    };
    let client = CriClient::connect_lazy(&endpoint, &endpoint, options).unwrap();
    let err = client.list_containers(None).await.unwrap_err();
    assert!(
        matches!(err, CriError::Timeout { call: "ListContainers", timeout, .. } if timeout == Duration::from_millis(200)),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "CRI ListContainers timed out after 200ms");
    let err = client
        .pull_image(BUSYBOX_IMAGE, None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CriError::Timeout { call: "PullImage", timeout, .. } if timeout == Duration::from_millis(300)),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("CRI PullImage image"), "{err}");
    // Sandbox creation (network set-up included) gets twice the request timeout.
    let err = client
        .run_pod_sandbox(cri::PodSandboxConfig::default(), "")
        .await
        .unwrap_err();
    assert!(
        matches!(err, CriError::Timeout { call: "RunPodSandbox", timeout, .. } if timeout == Duration::from_millis(400)),
        "{err:?}"
    );
    silent.abort();
}

#[tokio::test]
async fn attach_and_sandbox_stats_listing_answer() {
    let client = harness::shared().client();
    let (pod, sandbox, config) = run_sandbox(&client, "attach").await;
    let id = start_busybox(&client, &sandbox, &config, "idle", &["sleep", "3600"], &[]).await;
    let url = client
        .attach(cri::AttachRequest {
            container_id: id.clone(),
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let stats = client
        .list_pod_sandbox_stats(Some(cri::PodSandboxStatsFilter {
            id: sandbox.clone(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].attributes.as_ref().unwrap().id, sandbox);
    client.reopen_container_log(&id).await.unwrap();
    harness::remove_pods(&client, &pod).await.unwrap();
}
