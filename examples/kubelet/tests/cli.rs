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
fn bad_eviction_thresholds_are_rejected_at_start_up_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kubelet.yaml");
    let cases = [
        ("evictionHard:\n  memory.free: 100Mi\n", "memory.free"),
        (
            "evictionHard:\n  memory.available: -100Mi\n",
            "evictionHard[memory.available]",
        ),
        (
            "evictionHard:\n  nodefs.available: 150%\n",
            "evictionHard[nodefs.available]",
        ),
        (
            "evictionSoft:\n  memory.available: 1Gi\n",
            "evictionSoftGracePeriod[memory.available]",
        ),
    ];
    for (body, field) in cases {
        std::fs::write(
            &file,
            format!(
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n{body}"
            ),
        )
        .unwrap();
        let out = Command::new(KUBELET)
            .arg("--config")
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{body}: {stderr}");
        assert!(stderr.contains(field), "{body}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
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

/// kubeadm's config file, the flags of its systemd drop-in and of its `kubeadm-flags.env`,
/// unchanged: accepted, with upstream's deprecation warning for the flag that belongs in the
/// config file; the kubelet gets as far as the runtime endpoint the flags name.
#[test]
fn kubeadm_files_and_flags_are_accepted_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous:
    enabled: false
  webhook:
    cacheTTL: 0s
    enabled: true
  x509:
    clientCAFile: /etc/kubernetes/pki/ca.crt
authorization:
  mode: Webhook
  webhook:
    cacheAuthorizedTTL: 0s
    cacheUnauthorizedTTL: 0s
cgroupDriver: cgroupfs
clusterDNS:
- 10.96.0.10
clusterDomain: cluster.local
containerRuntimeEndpoint: \"\"
cpuManagerReconcilePeriod: 0s
crashLoopBackOff: {}
evictionPressureTransitionPeriod: 0s
fileCheckFrequency: 0s
healthzBindAddress: 127.0.0.1
healthzPort: 10248
httpCheckFrequency: 0s
imageMaximumGCAge: 0s
imageMinimumGCAge: 0s
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: \"0\"
    text:
      infoBufferSize: \"0\"
  verbosity: 0
memorySwap: {}
nodeStatusReportFrequency: 0s
nodeStatusUpdateFrequency: 0s
rotateCertificates: true
runtimeRequestTimeout: 0s
shutdownGracePeriod: 0s
shutdownGracePeriodCriticalPods: 0s
staticPodPath: /etc/kubernetes/manifests
streamingConnectionIdleTimeout: 0s
syncFrequency: 0s
volumeStatsAggPeriod: 0s
",
    )
    .unwrap();
    let socket = dir.path().join("containerd.sock");
    // ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS
    // $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
    let out = Command::new(KUBELET)
        .arg("--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf")
        .arg("--kubeconfig=/etc/kubernetes/kubelet.conf")
        .arg(format!("--config={}", config.display()))
        .arg(format!(
            "--container-runtime-endpoint=unix://{}",
            socket.display()
        ))
        .arg("--node-ip=10.0.0.5")
        .arg(format!("--root-dir={}", dir.path().display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "Flag --container-runtime-endpoint has been deprecated, This parameter should be set via the config file"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("unix://{} is unreachable", socket.display())),
        "{stderr}"
    );
    assert!(!stderr.contains("failed to parse"), "{stderr}");
}

#[test]
fn unknown_flags_fail_naming_the_flag() {
    for (args, message) in [
        (
            &["--no-such-flag=1"][..],
            "failed to parse kubelet flag: unknown flag: --no-such-flag",
        ),
        (
            &["--max-pods", "many"][..],
            "invalid argument \"many\" for \"--max-pods\" flag",
        ),
        (
            &["--node-labels=kubernetes.io/role=master"][..],
            "unknown 'kubernetes.io' or 'k8s.io' labels specified with --node-labels",
        ),
        (&["start"][..], "unknown command \"start\""),
    ] {
        let out = Command::new(KUBELET).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

#[test]
fn version_and_help_print_and_exit() {
    let out = Command::new(KUBELET).arg("--version").output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        format!(
            "Kubernetes v1.36.0+node-agent.{}",
            env!("CARGO_PKG_VERSION")
        )
    );
    let out = Command::new(KUBELET).arg("--version=raw").output().unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("version.Info{Major:\"1\", Minor:\"36\"")
    );
    let out = Command::new(KUBELET).arg("-h").output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Usage:\n  kubelet [flags]"), "{stdout}");
    assert!(stdout.contains("--bootstrap-kubeconfig"), "{stdout}");
    assert!(
        stdout.contains("--eviction-hard mapStringString"),
        "{stdout}"
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
