//! The command line over the config file and drop-ins, with upstream's precedence.

use node_config::ConfigLoader;
use node_config::cli::CommandLine;

#[test]
fn flags_over_drop_ins_over_the_file_over_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(
        &file,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         maxPods: 20\nsyncFrequency: 0s\nclusterDomain: file.local\n\
         featureGates:\n  A: true\n  B: true\n\
         evictionHard:\n  memory.available: 300Mi\n  nodefs.available: 7%\n",
    )
    .unwrap();
    let drop_ins = dir.path().join("conf.d");
    std::fs::create_dir(&drop_ins).unwrap();
    std::fs::write(
        drop_ins.join("10-pods.conf"),
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         maxPods: 30\nclusterDomain: dropin.local\n",
    )
    .unwrap();
    let cl = CommandLine::parse([
        "--max-pods=40",
        "--feature-gates=B=false,C=true",
        "--eviction-hard=memory.available<500Mi",
        "--cluster-dns=10.96.0.10",
        "--register-with-taints=dedicated=edge:NoSchedule",
    ])
    .unwrap();
    let config = ConfigLoader::new()
        .file(&file)
        .drop_in_dir(&drop_ins)
        .command_line(&cl)
        .load()
        .unwrap();
    assert_eq!(config.max_pods, 40, "the flag wins");
    assert_eq!(config.cluster_domain.as_deref(), Some("dropin.local"));
    // A zero duration in the file means the default, as upstream's defaulting.
    assert_eq!(config.sync_frequency, std::time::Duration::from_secs(60));
    // --feature-gates merge over the file's gates; map flags replace the whole map.
    assert_eq!(config.feature_gates.get("A"), Some(&true));
    assert_eq!(config.feature_gates.get("B"), Some(&false));
    assert_eq!(config.feature_gates.get("C"), Some(&true));
    let hard = config.eviction_thresholds().unwrap();
    assert_eq!(hard.len(), 1, "{hard:?}");
    assert_eq!(
        config.cluster_dns,
        vec!["10.96.0.10".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(config.register_with_taints.len(), 1);
    assert_eq!(config.register_with_taints[0].key, "dedicated");
}

#[test]
fn a_flag_value_the_config_refuses_names_the_field() {
    let cl = CommandLine::parse([
        "--image-gc-high-threshold=50",
        "--image-gc-low-threshold=70",
    ])
    .unwrap();
    let err = ConfigLoader::new().command_line(&cl).load().unwrap_err();
    assert!(
        err.to_string().contains("imageGCLowThresholdPercent")
            || format!("{err:?}").contains("imageGCLowThresholdPercent"),
        "{err:?}"
    );
}
