//! The managed containerd: supervision, restart, reconnect, clean stop. These tests start
//! containerds of their own (they kill them), separate from the shared one.

use std::time::Duration;

use node_cri::cri;
use node_cri::harness::{self, busybox_container, eventually, sandbox_config, unique};
use node_cri::{ContainerdState, CriError, ManagedContainerd};

#[tokio::test]
async fn a_killed_containerd_is_restarted_and_the_client_reconnects() {
    let mut config = harness::test_config("restart").unwrap();
    config.restart_delay = Duration::from_millis(200);
    let dir = config.dir.clone();
    let containerd = ManagedContainerd::start(config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = containerd.client().clone();

    // A pod running before the crash keeps running through it.
    let pod = unique("survivor");
    let log_dir = dir.join("logs").join(&pod);
    std::fs::create_dir_all(&log_dir).unwrap();
    let sandbox_cfg = sandbox_config("managed", &pod, &log_dir, &[]);
    let sandbox = client
        .run_pod_sandbox(sandbox_cfg.clone(), "")
        .await
        .unwrap();
    let container = client
        .create_container(
            &sandbox,
            busybox_container("sleeper", &["sleep", "3600"], &[]),
            sandbox_cfg,
        )
        .await
        .unwrap();
    client.start_container(&container).await.unwrap();
    let before = client.container_status(&container, false).await.unwrap();

    let old_pid = containerd.pid().expect("running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    let mut states = containerd.watch_state();
    let new_pid = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            states.changed().await.expect("supervisor alive");
            if let ContainerdState::Running { pid, restarts } = *states.borrow() {
                assert_eq!(restarts, 1);
                return pid;
            }
        }
    })
    .await
    .expect("containerd restarted within 60s");
    assert_ne!(new_pid, old_pid);

    // The same client works again (it may need a moment to drop the dead connection).
    let version = eventually(
        Duration::from_secs(10),
        "the client to reconnect",
        || async { client.version().await.ok() },
    )
    .await;
    assert_eq!(version.runtime_name, "containerd");

    let after = client.container_status(&container, false).await.unwrap();
    assert_eq!(after.state, cri::ContainerState::ContainerRunning as i32);
    assert_eq!(
        after.started_at, before.started_at,
        "the container was not restarted"
    );

    client.stop_pod_sandbox(&sandbox).await.unwrap();
    client.remove_pod_sandbox(&sandbox).await.unwrap();
    containerd.stop().await.unwrap();
}

#[tokio::test]
async fn stop_ends_containerd_and_calls_then_fail_clearly() {
    let config = harness::test_config("stop").unwrap();
    let socket = config.socket_path();
    let containerd = ManagedContainerd::start(config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = containerd.client().clone();
    let pid = containerd.pid().unwrap();
    let mut states = containerd.watch_state();
    containerd.stop().await.unwrap();
    assert_eq!(*states.borrow_and_update(), ContainerdState::Stopped);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z ")),
        "containerd {pid} still runs after stop"
    );
    let err = client.version().await.unwrap_err();
    assert!(matches!(err, CriError::Unreachable { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&socket.display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_containerd_binary_is_reported() {
    let mut config = harness::test_config("nobinary").unwrap();
    config.containerd_binary = "/nonexistent/containerd".into();
    let err = ManagedContainerd::start(config).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("cannot run /nonexistent/containerd"),
        "{text}"
    );
}
