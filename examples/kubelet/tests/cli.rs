//! The example kubelet as a user runs it: flags, config errors, the embedded default.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const KUBELET: &str = env!("CARGO_BIN_EXE_kubelet");

#[test]
fn an_invalid_config_is_rejected_naming_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kubelet.yaml");
    std::fs::write(
        &file,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         authentication:\n  webhook:\n    cacheTTl: 1m\n",
    )
    .unwrap();
    let out = Command::new(KUBELET)
        .arg("--config")
        .arg(&file)
        .arg("--root-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    assert!(
        stderr.contains("authentication.webhook.cacheTTl"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    std::fs::write(
        &file,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         imageGCHighThresholdPercent: 50\nimageGCLowThresholdPercent: 70\n",
    )
    .unwrap();
    let out = Command::new(KUBELET)
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("imageGCLowThresholdPercent"), "{stderr}");
}

#[test]
fn an_unreachable_runtime_endpoint_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(KUBELET)
        .args([
            "--container-runtime-endpoint",
            "unix:///tmp/na-absent/containerd.sock",
        ])
        .arg("--root-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unix:///tmp/na-absent/containerd.sock is unreachable: no such socket"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_embedded_default_runs_a_managed_containerd_and_stops_it_on_sigterm() {
    node_cri::harness::clean_stale_dirs();
    let root = std::path::PathBuf::from(format!("/tmp/na-{}-kubelet", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let mut child = Command::new(KUBELET)
        .arg("--root-dir")
        .arg(&root)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !log
        .iter()
        .any(|l: &String| l.contains("container runtime ready"))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => log.push(line),
            Err(_) => panic!(
                "the kubelet did not report a ready runtime in 60s:\n{}",
                log.join("\n")
            ),
        }
    }
    let endpoint = format!("unix://{}/containerd/containerd.sock", root.display());
    let client = node_cri::CriClient::connect(&endpoint, Default::default())
        .await
        .unwrap_or_else(|e| panic!("the managed containerd answers on {endpoint}: {e}"));
    let images = client.list_images(None).await.unwrap();
    for wanted in [
        node_images::oci::BUSYBOX_IMAGE,
        node_images::oci::PAUSE_IMAGE,
    ] {
        assert!(
            images
                .iter()
                .any(|i| i.repo_tags.iter().any(|t| t == wanted)),
            "{wanted} imported"
        );
    }

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "kubelet exit status {status}");
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(2)) {
        log.push(line);
    }
    assert!(
        log.iter()
            .any(|l| l.contains("shutting down") && l.contains("SIGTERM")),
        "{}",
        log.join("\n")
    );
    let err = client.version().await.unwrap_err();
    assert!(
        matches!(err, node_cri::CriError::Unreachable { .. }),
        "containerd stopped with the kubelet: {err}"
    );
}
