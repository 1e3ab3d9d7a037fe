//! Loading from files: formats, drop-in merging, flag precedence, relative paths, decode
//! errors and printing the effective configuration.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use node_config::{
    ConfigError, ConfigLoader, FlagOverrides, KubeletConfiguration, Signal, ThresholdValue,
    eviction::parse_threshold_flag, load, parse_taints_flag,
};

const HEADER: &str = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";

fn write(path: &Path, body: &str) -> PathBuf {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, body).unwrap();
    path.to_path_buf()
}

fn write_config(path: &Path, body: &str) -> PathBuf {
    write(path, &format!("{HEADER}{body}"))
}

#[test]
fn yaml_and_json_load_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = write_config(
        &dir.path().join("config.yaml"),
        "maxPods: 42\nsyncFrequency: 1m30s\nclusterDNS:\n- 10.96.0.10\nfeatureGates:\n  Foo: true\n\
         authentication:\n  webhook:\n    cacheTTL: 10s\nkubeReserved:\n  cpu: 100m\n  memory: 1Gi\n",
    );
    let json = write(
        &dir.path().join("config.json"),
        r#"{
          "apiVersion": "kubelet.config.k8s.io/v1beta1",
          "kind": "KubeletConfiguration",
          "maxPods": 42,
          "syncFrequency": "1m30s",
          "clusterDNS": ["10.96.0.10"],
          "featureGates": {"Foo": true},
          "authentication": {"webhook": {"cacheTTL": "10s"}},
          "kubeReserved": {"cpu": "100m", "memory": "1Gi"}
        }"#,
    );
    let from_yaml = load(&yaml).unwrap();
    let from_json = load(&json).unwrap();
    assert_eq!(from_yaml, from_json);
    assert_eq!(from_yaml.max_pods, 42);
    assert_eq!(from_yaml.sync_frequency, Duration::from_secs(90));
    assert_eq!(from_yaml.cluster_dns[0].to_string(), "10.96.0.10");
    assert_eq!(from_yaml.feature_gate("Foo"), Some(true));
    assert_eq!(
        from_yaml.authentication.webhook_cache_ttl,
        Duration::from_secs(10)
    );
    assert_eq!(from_yaml.kube_reserved["cpu"].milli_value(), 100);
    assert_eq!(from_yaml.kube_reserved["memory"].as_bytes(), 1 << 30);
}

#[test]
fn json_file_with_yaml_extension_and_bare_numbers() {
    let dir = tempfile::tempdir().unwrap();
    // Detection is by content; quantities may be bare numbers.
    let path = write(
        &dir.path().join("kubelet.conf"),
        r#"{"apiVersion":"kubelet.config.k8s.io/v1beta1","kind":"KubeletConfiguration",
            "systemReserved":{"cpu":1,"memory":"512Mi"}}"#,
    );
    let c = load(path).unwrap();
    assert_eq!(c.system_reserved["cpu"].to_string(), "1");
    // A YAML flow mapping also starts with `{`.
    let path = write(
        &dir.path().join("flow.yaml"),
        "{apiVersion: kubelet.config.k8s.io/v1beta1, kind: KubeletConfiguration, maxPods: 9}",
    );
    assert_eq!(load(path).unwrap().max_pods, 9);
}

fn precedence_fixture(dir: &Path) -> (PathBuf, PathBuf) {
    let config = write_config(
        &dir.join("config.yaml"),
        "maxPods: 10\nsyncFrequency: 30s\nclusterDNS: [10.0.0.1, 10.0.0.2]\n\
         featureGates:\n  A: true\n  B: false\nclusterDomain: base.local\n",
    );
    let drop_ins = dir.join("conf.d");
    write_config(
        &drop_ins.join("10-first.conf"),
        "maxPods: 20\nclusterDomain: first.local\nfeatureGates:\n  B: true\n",
    );
    write_config(
        &drop_ins.join("15-dir/nested.conf"),
        "maxPods: 25\nregistryBurst: 7\n",
    );
    write_config(
        &drop_ins.join("20-second.conf"),
        "maxPods: 30\nclusterDNS: [10.0.0.3]\n",
    );
    // Not a .conf file: ignored even though it is invalid.
    write(&drop_ins.join("99-ignored.yaml"), "this is: [not valid");
    write(&drop_ins.join("README"), "ignored");
    (config, drop_ins)
}

#[test]
fn file_then_drop_ins_in_lexical_order() {
    let dir = tempfile::tempdir().unwrap();
    let (config, drop_ins) = precedence_fixture(dir.path());
    let c = ConfigLoader::new()
        .file(&config)
        .drop_in_dir(&drop_ins)
        .load()
        .unwrap();
    assert_eq!(c.max_pods, 30, "the last drop-in wins");
    assert_eq!(c.registry_burst, 7, "sub-directories are walked in order");
    assert_eq!(
        c.sync_frequency,
        Duration::from_secs(30),
        "kept from the file"
    );
    assert_eq!(c.cluster_domain.as_deref(), Some("first.local"));
    let dns: Vec<String> = c.cluster_dns.iter().map(ToString::to_string).collect();
    assert_eq!(dns, ["10.0.0.3"], "lists are replaced, not merged");
    let gates: BTreeMap<&str, bool> = c
        .feature_gates
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(
        gates,
        BTreeMap::from([("A", true), ("B", true)]),
        "maps merge key by key"
    );
}

#[test]
fn flags_win_over_file_and_drop_ins() {
    let dir = tempfile::tempdir().unwrap();
    let (config, drop_ins) = precedence_fixture(dir.path());
    let flags = FlagOverrides {
        max_pods: Some(40),
        cluster_dns: Some(vec!["10.0.0.9".parse().unwrap()]),
        feature_gates: Some(BTreeMap::from([("C".to_string(), false)])),
        pod_manifest_path: Some("/etc/kubernetes/manifests".into()),
        container_runtime_endpoint: Some("unix:///tmp/test.sock".into()),
        sync_frequency: Some("45s".parse().unwrap()),
        anonymous_auth: Some(true),
        ..Default::default()
    };
    let c = ConfigLoader::new()
        .file(&config)
        .drop_in_dir(&drop_ins)
        .flags(flags)
        .load()
        .unwrap();
    assert_eq!(c.max_pods, 40);
    assert_eq!(c.cluster_dns[0].to_string(), "10.0.0.9");
    assert_eq!(c.sync_frequency, Duration::from_secs(45));
    assert_eq!(
        c.static_pod_path.as_deref(),
        Some(Path::new("/etc/kubernetes/manifests"))
    );
    assert_eq!(c.container_runtime_endpoint, "unix:///tmp/test.sock");
    assert!(c.authentication.anonymous_enabled);
    assert!(c.authentication.webhook_enabled, "other fields kept");
    assert_eq!(
        c.registry_burst, 7,
        "fields without flags keep drop-in values"
    );
    assert_eq!(
        c.feature_gate("A"),
        Some(true),
        "flag gates merge over file gates"
    );
    assert_eq!(c.feature_gate("B"), Some(true));
    assert_eq!(c.feature_gate("C"), Some(false));
}

#[test]
fn flags_alone_without_file() {
    let c = ConfigLoader::new()
        .flags(FlagOverrides {
            max_pods: Some(12),
            eviction_hard: Some(parse_threshold_flag("memory.available<1Gi").unwrap()),
            register_with_taints: Some(parse_taints_flag("dedicated=edge:NoSchedule").unwrap()),
            ..Default::default()
        })
        .load()
        .unwrap();
    assert_eq!(c.max_pods, 12);
    assert_eq!(
        c.eviction_hard.len(),
        1,
        "a map flag replaces the whole map"
    );
    assert_eq!(c.register_with_taints[0].key, "dedicated");
}

#[test]
fn drop_in_maps_merge_into_defaulted_base() {
    // Upstream defaults the base file (evictionHard included) before merging drop-ins, so a
    // drop-in evictionHard changes one signal and keeps the others.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&dir.path().join("config.yaml"), "");
    write_config(
        &dir.path().join("d/10.conf"),
        "evictionHard:\n  memory.available: 500Mi\n  nodefs.available: null\n",
    );
    let c = ConfigLoader::new()
        .file(&config)
        .drop_in_dir(dir.path().join("d"))
        .load()
        .unwrap();
    assert_eq!(
        c.eviction_hard[&Signal::MemoryAvailable],
        ThresholdValue::Quantity("500Mi".parse().unwrap())
    );
    assert!(
        !c.eviction_hard.contains_key(&Signal::NodeFsAvailable),
        "null removes a key"
    );
    assert_eq!(c.eviction_hard.len(), 4);
}

#[test]
fn drop_in_null_restores_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&dir.path().join("config.yaml"), "maxPods: 12\n");
    write_config(&dir.path().join("d/10.conf"), "maxPods: null\n");
    let c = ConfigLoader::new()
        .file(&config)
        .drop_in_dir(dir.path().join("d"))
        .load()
        .unwrap();
    assert_eq!(c.max_pods, 110);
}

#[test]
fn drop_ins_without_base_file() {
    let dir = tempfile::tempdir().unwrap();
    write_config(&dir.path().join("10.conf"), "maxPods: 77\n");
    let c = ConfigLoader::new().drop_in_dir(dir.path()).load().unwrap();
    assert_eq!(c.max_pods, 77);
    assert_eq!(c.port, 10250);
}

#[test]
fn relative_paths_resolve_against_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("etc/kubelet");
    let config = write_config(
        &base.join("config.yaml"),
        "staticPodPath: manifests\ntlsCertFile: ../pki/kubelet.crt\n\
         tlsPrivateKeyFile: /abs/kubelet.key\nresolvConf: ./resolv.conf\npodLogsDir: logs\n\
         volumePluginDir: plugins\nauthentication:\n  x509:\n    clientCAFile: ca.crt\n",
    );
    write_config(&dir.path().join("drop/10.conf"), "staticPodPath: static\n");
    let c = load(&config).unwrap();
    assert_eq!(c.static_pod_path, Some(base.join("manifests")));
    assert_eq!(
        c.tls_cert_file,
        Some(dir.path().join("etc/pki/kubelet.crt"))
    );
    assert_eq!(
        c.tls_private_key_file,
        Some(PathBuf::from("/abs/kubelet.key"))
    );
    assert_eq!(c.resolv_conf, Some(base.join("resolv.conf")));
    assert_eq!(c.pod_logs_dir, base.join("logs"));
    assert_eq!(c.volume_plugin_dir, base.join("plugins"));
    assert_eq!(c.authentication.client_ca_file, Some(base.join("ca.crt")));

    // A drop-in's relative paths resolve against the drop-in's own directory.
    let c = ConfigLoader::new()
        .file(&config)
        .drop_in_dir(dir.path().join("drop"))
        .load()
        .unwrap();
    assert_eq!(c.static_pod_path, Some(dir.path().join("drop/static")));
    assert_eq!(c.pod_logs_dir, base.join("logs"));
}

#[test]
fn relative_config_path_is_made_absolute() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        &dir.path().join("config.yaml"),
        "staticPodPath: manifests\n",
    );
    let cwd = std::env::current_dir().unwrap();
    let relative = pathdiff(dir.path(), &cwd).join("config.yaml");
    let c = load(&relative).unwrap();
    assert!(c.static_pod_path.unwrap().is_absolute());
}

/// A relative path from `base` to `target` (both absolute), through the root if needed.
fn pathdiff(target: &Path, base: &Path) -> PathBuf {
    let mut up = PathBuf::new();
    for _ in base.components().skip(1) {
        up.push("..");
    }
    up.join(target.strip_prefix("/").unwrap())
}

fn decode_error(body: &str) -> ConfigError {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir.path().join("config.yaml"), body);
    load(path).unwrap_err()
}

#[test]
fn unknown_fields_are_rejected_with_their_path() {
    for (body, field) in [
        ("maxPodz: 3\n", "maxPodz"),
        (
            "authentication:\n  webhook:\n    cacheTtl: 1m\n",
            "authentication.webhook.cacheTtl",
        ),
        ("authorization:\n  mod: Webhook\n", "authorization.mod"),
    ] {
        let err = decode_error(&format!("{HEADER}{body}"));
        match &err {
            ConfigError::Decode {
                field: f, message, ..
            } => {
                assert_eq!(f, field, "{err}");
                assert!(message.starts_with("unknown field"), "{err}");
                assert!(!message.contains("expected one of"), "{err}");
            }
            other => panic!("expected a decode error, got {other}"),
        }
    }
}

#[test]
fn mistyped_fields_are_rejected_with_their_path() {
    for (body, field) in [
        ("maxPods: many\n", "maxPods"),
        ("maxPods: 1.5\n", "maxPods"),
        ("syncFrequency: 10\n", "syncFrequency"),
        ("syncFrequency: 10 minutes\n", "syncFrequency"),
        (
            "authentication:\n  webhook:\n    cacheTTL: 5\n",
            "authentication.webhook.cacheTTL",
        ),
        ("kubeReserved:\n  memory: lots\n", "kubeReserved.memory"),
        ("clusterDNS: 10.0.0.1\n", "clusterDNS"),
        (
            "registerWithTaints:\n- key: a\n  effect: 5\n",
            "registerWithTaints[0].effect",
        ),
    ] {
        let err = decode_error(&format!("{HEADER}{body}"));
        assert!(
            matches!(&err, ConfigError::Decode { field: f, .. } if f == field),
            "{body}: {err}"
        );
    }
}

#[test]
fn wrong_api_version_or_kind_is_rejected() {
    let err =
        decode_error("apiVersion: kubelet.config.k8s.io/v1alpha1\nkind: KubeletConfiguration\n");
    assert!(err.names_field("apiVersion"), "{err}");
    assert!(err.to_string().contains("v1alpha1"), "{err}");
    let err = decode_error("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: Pod\n");
    assert!(err.names_field("kind"), "{err}");
    let err = decode_error("kind: KubeletConfiguration\nmaxPods: 3\n");
    assert!(
        matches!(
            &err,
            ConfigError::TypeMeta {
                field: "apiVersion",
                found: None,
                ..
            }
        ),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&dir.path().join("config.yaml"), "");
    write(&dir.path().join("d/10.conf"), "maxPods: 3\n");
    let err = ConfigLoader::new()
        .file(&config)
        .drop_in_dir(dir.path().join("d"))
        .load()
        .unwrap_err();
    match err {
        ConfigError::TypeMeta { path, field, .. } => {
            assert_eq!(field, "apiVersion");
            assert!(path.ends_with("d/10.conf"));
        }
        other => panic!("{other}"),
    }
}

#[test]
fn drop_in_errors_name_the_drop_in() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&dir.path().join("config.yaml"), "");
    write_config(&dir.path().join("d/10.conf"), "maxPodz: 3\n");
    let err = ConfigLoader::new()
        .file(&config)
        .drop_in_dir(dir.path().join("d"))
        .load()
        .unwrap_err();
    match &err {
        ConfigError::Decode { path, field, .. } => {
            assert!(path.ends_with("d/10.conf"), "{err}");
            assert_eq!(field, "maxPodz");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn io_and_syntax_errors() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        load(dir.path().join("missing.yaml")),
        Err(ConfigError::Read { .. })
    ));
    let empty = write(&dir.path().join("empty.yaml"), "  \n");
    assert!(matches!(load(empty), Err(ConfigError::Empty { .. })));
    let bad_yaml = write(&dir.path().join("bad.yaml"), "a: [unclosed\n");
    assert!(matches!(load(bad_yaml), Err(ConfigError::Syntax { .. })));
    let bad_json = write(&dir.path().join("bad.json"), "{\"apiVersion\": ");
    assert!(matches!(load(bad_json), Err(ConfigError::Syntax { .. })));
    let list = write(&dir.path().join("list.yaml"), "- a\n- b\n");
    assert!(matches!(load(list), Err(ConfigError::Decode { .. })));
    let err = ConfigLoader::new()
        .drop_in_dir(dir.path().join("no-such-dir"))
        .load()
        .unwrap_err();
    assert!(matches!(err, ConfigError::ReadDir { .. }), "{err}");
}

#[test]
fn upstream_fields_we_do_not_interpret_are_accepted_and_kept() {
    // The shape kubeadm writes.
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir.path().join("config.yaml"),
        r#"authentication:
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
cgroupDriver: systemd
clusterDNS:
- 10.96.0.10
clusterDomain: cluster.local
containerRuntimeEndpoint: ""
cpuManagerReconcilePeriod: 0s
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
      infoBufferSize: "0"
    text:
      infoBufferSize: "0"
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
"#,
    );
    let c = load(&path).unwrap();
    assert_eq!(c.cgroup_driver, node_config::CgroupDriver::Systemd);
    assert_eq!(c.sync_frequency, Duration::from_secs(60));
    assert_eq!(c.node_status_report_frequency, Duration::from_secs(300));
    assert!(c.rotate_certificates);
    assert_eq!(c.uninterpreted["logging"]["verbosity"], 0);
    assert_eq!(c.swap_behavior, node_config::SwapBehavior::NoSwap);
    let again: KubeletConfiguration = c.to_yaml().unwrap().parse().unwrap();
    assert_eq!(again, c);
    assert!(
        c.to_yaml()
            .unwrap()
            .contains("streamingConnectionIdleTimeout")
    );
}

fn rich_config() -> KubeletConfiguration {
    format!(
        "{HEADER}{}",
        r#"staticPodPath: /etc/kubernetes/manifests
staticPodURL: http://127.0.0.1:8080/pods
staticPodURLHeader:
  Authorization: ["Bearer x"]
address: 192.168.0.8
port: 20250
readOnlyPort: 10255
clusterDNS: ["10.96.0.10", "fd00::a"]
clusterDomain: cluster.local
maxPods: 64
podPidsLimit: 4096
podCIDR: 10.244.0.0/24
serializeImagePulls: false
maxParallelImagePulls: 3
imageMaximumGCAge: 72h
evictionHard:
  memory.available: 256Mi
  nodefs.available: 7.5%
evictionSoft:
  memory.available: 1.5Gi
evictionSoftGracePeriod:
  memory.available: 1m30s
evictionMinimumReclaim:
  memory.available: 100Mi
evictionMaxPodGracePeriod: 30
kubeReserved:
  cpu: 250m
  memory: 0.5Gi
systemReserved:
  ephemeral-storage: 1G
enforceNodeAllocatable: [pods, kube-reserved]
kubeReservedCgroup: /kube.slice
registerWithTaints:
- key: node-role.kubernetes.io/edge
  value: "true"
  effect: NoSchedule
featureGates:
  SomeGate: true
shutdownGracePeriod: 30s
shutdownGracePeriodCriticalPods: 10s
containerLogMaxSize: 50Mi
containerLogMaxFiles: 3
resolvConf: ""
imageServiceEndpoint: unix:///run/images.sock
hairpinMode: hairpin-veth
cgroupRoot: /
tlsCipherSuites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
"#
    )
    .parse()
    .unwrap_or_else(|e: ConfigError| panic!("{e}"))
}

#[test]
fn to_yaml_loads_back_equal() {
    let c = rich_config();
    assert_eq!(c.port, 20250);
    assert_eq!(c.kube_reserved["memory"].to_string(), "512Mi");
    let yaml = c.to_yaml().unwrap();
    assert!(
        yaml.starts_with("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"),
        "{yaml}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir.path().join("effective.yaml"), &yaml);
    assert_eq!(load(&path).unwrap(), c, "{yaml}");
    assert_eq!(load(&path).unwrap().to_yaml().unwrap(), yaml);

    let defaults = KubeletConfiguration::default();
    let path = write(
        &dir.path().join("defaults.yaml"),
        &defaults.to_yaml().unwrap(),
    );
    assert_eq!(load(&path).unwrap(), defaults);
}

#[test]
fn to_json_loads_back_equal() {
    let c = rich_config();
    let json = c.to_json();
    assert!(
        json.trim_start().starts_with("{\n  \"apiVersion\""),
        "{json}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir.path().join("effective.json"), &json);
    assert_eq!(load(&path).unwrap(), c);
    let back: KubeletConfiguration = json.parse().unwrap();
    assert_eq!(back, c);
}

#[test]
fn eviction_thresholds_from_a_file() {
    let c = rich_config();
    let thresholds = c.eviction_thresholds().unwrap();
    assert_eq!(thresholds.len(), 3);
    let soft = thresholds.iter().find(|t| !t.is_hard()).unwrap();
    assert_eq!(soft.signal, Signal::MemoryAvailable);
    assert_eq!(soft.grace_period, Duration::from_secs(90));
    assert_eq!(soft.value.to_string(), "1536Mi");
    assert_eq!(soft.min_reclaim.unwrap().to_string(), "100Mi");
}

#[test]
fn validation_errors_from_a_file_are_all_reported() {
    let err = decode_error(&format!(
        "{HEADER}port: 70000\nimageGCHighThresholdPercent: 50\nimageGCLowThresholdPercent: 60\n\
         cgroupDriver: upstart\nevictionHard:\n  memory.available: 120%\n"
    ));
    for field in [
        "port",
        "imageGCLowThresholdPercent",
        "cgroupDriver",
        "evictionHard[memory.available]",
    ] {
        assert!(err.names_field(field), "{field} missing from: {err}");
    }
    assert_eq!(err.field_errors().len(), 4, "{err}");
}

#[test]
fn sets_field_tells_configured_from_defaulted() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(&dir.path().join("config.yaml"), "maxPods: 12\n");
    let loader = ConfigLoader::new().file(&file);
    assert!(loader.sets_field("maxPods").unwrap());
    assert!(!loader.sets_field("containerRuntimeEndpoint").unwrap());
    // It still takes its default in the loaded configuration.
    assert_eq!(
        loader.load().unwrap().container_runtime_endpoint,
        "unix:///run/containerd/containerd.sock"
    );

    write(
        &dir.path().join("conf.d/10-runtime.conf"),
        &format!("{HEADER}containerRuntimeEndpoint: unix:///run/x.sock\n"),
    );
    let with_drop_in = ConfigLoader::new()
        .file(&file)
        .drop_in_dir(dir.path().join("conf.d"));
    assert!(with_drop_in.sets_field("containerRuntimeEndpoint").unwrap());

    let by_flag = ConfigLoader::new().flags(FlagOverrides {
        container_runtime_endpoint: Some("unix:///run/y.sock".into()),
        ..Default::default()
    });
    assert!(by_flag.sets_field("containerRuntimeEndpoint").unwrap());
    assert!(
        !ConfigLoader::new()
            .sets_field("containerRuntimeEndpoint")
            .unwrap()
    );
}
