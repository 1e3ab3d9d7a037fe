use std::net::IpAddr;

use serde_json::json;

use super::*;

fn parse(args: &[&str]) -> Result<CommandLine, FlagError> {
    CommandLine::parse(args.iter().copied())
}

#[test]
fn pflag_syntax() {
    let cl = parse(&[
        "--max-pods=50",
        "--sync-frequency",
        "30s",
        "--fail-swap-on=false",
        "--register-node",
        "-v=4",
        "--node_ip=10.0.0.5",
    ])
    .unwrap();
    assert_eq!(
        cl.config_patch(),
        &json!({"maxPods": 50, "syncFrequency": "30s", "failSwapOn": false, "registerNode": true})
    );
    assert_eq!(cl.logging.verbosity, Some(4));
    assert_eq!(
        cl.node.node_ip,
        Some(NodeIp(vec!["10.0.0.5".parse().unwrap()]))
    );
    assert!(cl.is_set("node-ip"));
    assert_eq!(parse(&["-v", "3"]).unwrap().logging.verbosity, Some(3));
    assert_eq!(parse(&["-v5"]).unwrap().logging.verbosity, Some(5));
    assert_eq!(parse(&["--v=6"]).unwrap().logging.verbosity, Some(6));
    // A value may start with a dash when it follows the flag.
    assert_eq!(
        parse(&["--oom-score-adj", "-999"]).unwrap().config_patch()["oomScoreAdj"],
        -999
    );
    // `--` ends the flags; nothing may follow it.
    assert!(parse(&["--max-pods=1", "--"]).is_ok());
}

#[test]
fn unknown_flags_and_arguments_are_errors_naming_them() {
    assert_eq!(
        parse(&["--max-pods=1", "--no-such-flag=2"]).unwrap_err(),
        FlagError::Unknown {
            flag: "--no-such-flag".into()
        }
    );
    assert_eq!(
        parse(&["--no-such-flag"]).unwrap_err().to_string(),
        "unknown flag: --no-such-flag"
    );
    assert_eq!(parse(&["-x"]).unwrap_err().to_string(), "unknown flag: -x");
    assert_eq!(
        parse(&["run"]).unwrap_err().to_string(),
        "unknown command \"run\""
    );
    assert_eq!(
        parse(&["--", "run"]).unwrap_err(),
        FlagError::Positional {
            argument: "run".into()
        }
    );
    // Windows-only flags do not exist on Linux.
    assert!(matches!(
        parse(&["--windows-service"]).unwrap_err(),
        FlagError::Unknown { .. }
    ));
}

#[test]
fn bad_values_name_the_flag() {
    let err = parse(&["--max-pods=many"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid argument \"many\" for \"--max-pods\" flag: strconv.ParseInt: parsing \"many\": invalid syntax"
    );
    let err = parse(&["-v", "loud"]).unwrap_err().to_string();
    assert!(err.contains("\"-v, --v\""), "{err}");
    assert_eq!(
        parse(&["--max-pods"]).unwrap_err().to_string(),
        "flag needs an argument: --max-pods"
    );
    for bad in [
        "--sync-frequency=5 minutes",
        "--fail-swap-on=maybe",
        "--cgroup-driver=openrc",
        "--eviction-hard=memory.available",
        "--register-with-taints=a:NoRun",
        "--kube-reserved=cpu=lots",
        "--address=localhost",
        "--cluster-dns=10.96.0.10,dns",
        "--node-ip=10.0.0.1,10.0.0.2",
        "--node-ip=10.0.0.1,::",
        "--node-ip=eth0",
        "--feature-gates=A=yes",
        "--vmodule=foo",
        "--logging-format=xml",
    ] {
        let err = parse(&[bad]).unwrap_err();
        let flag = bad.split('=').next().unwrap();
        assert!(
            matches!(&err, FlagError::InvalidValue { flag: f, .. } if f == flag),
            "{bad}: {err}"
        );
    }
}

#[test]
fn repeated_flags_follow_pflag() {
    let cl = parse(&[
        "--max-pods=10",
        "--max-pods=20",
        "--cluster-dns=10.96.0.10",
        "--cluster-dns=fd00::a",
        "--eviction-hard=memory.available<100Mi",
        "--eviction-hard=nodefs.available<5%",
        "--node-labels=a=1,b=2",
        "--node-labels=c=3",
        "--feature-gates=A=true",
        "--feature-gates=B=false",
    ])
    .unwrap();
    let p = cl.config_patch();
    assert_eq!(p["maxPods"], 20);
    assert_eq!(p["clusterDNS"], json!(["10.96.0.10", "fd00::a"]));
    assert_eq!(
        p["evictionHard"],
        json!({"memory.available": "100Mi", "nodefs.available": "5%"})
    );
    assert_eq!(p["featureGates"], json!({"A": true, "B": false}));
    assert_eq!(cl.node.node_labels.len(), 3);
}

#[test]
fn deprecated_flags_warn_once_as_upstream() {
    let cl = parse(&[
        "--max-pods=10",
        "--max-pods=20",
        "--kubeconfig=/etc/kubernetes/kubelet.conf",
        "--housekeeping-interval=10s",
        "--containerd=/run/containerd/containerd.sock",
        "--maximum-dead-containers=5",
    ])
    .unwrap();
    assert_eq!(
        cl.warnings(),
        [
            format!("Flag --max-pods has been deprecated, {CONFIG_FILE_DEPRECATION}"),
            "Flag --containerd has been deprecated, This is a cadvisor flag that was mistakenly registered with the Kubelet. Due to legacy concerns, it will follow the standard CLI deprecation timeline before being removed.".to_string(),
            "Flag --maximum-dead-containers has been deprecated, Use --eviction-hard or --eviction-soft instead. Will be removed in a future version.".to_string(),
        ]
    );
    assert_eq!(cl.node.maximum_dead_containers, 5);
    // Flags upstream v1.36 no longer has.
    for gone in [
        "--pod-infra-container-image=registry.k8s.io/pause:3.10",
        "--register-schedulable=false",
        "--cloud-config=/etc/cloud.conf",
        "--iptables-masquerade-bit=14",
        "--keep-terminated-pod-volumes",
        "--network-plugin=cni",
        "--logtostderr",
    ] {
        assert!(
            matches!(parse(&[gone]).unwrap_err(), FlagError::Unknown { .. }),
            "{gone}"
        );
    }
    // Not deprecated: the logging verbosity, the provider id, seccomp-default.
    let cl = parse(&[
        "-v=2",
        "--vmodule=a=1",
        "--provider-id=x",
        "--seccomp-default",
        "--fail-cgroupv1=false",
    ])
    .unwrap();
    assert!(cl.warnings().is_empty(), "{:?}", cl.warnings());
    assert_eq!(cl.config_patch()["failCgroupV1"], false);
}

#[test]
fn node_flags_and_their_defaults() {
    let cl = parse(&[]).unwrap();
    assert_eq!(cl.action, Action::Run);
    assert_eq!(cl.node.root_dir, std::path::Path::new("/var/lib/kubelet"));
    assert_eq!(
        cl.node.cert_dir,
        std::path::Path::new("/var/lib/kubelet/pki")
    );
    assert_eq!(cl.config_patch(), &json!({}));
    assert!(cl.warnings().is_empty());

    let cl = parse(&["--node-ip=10.0.0.5,fd00::5", "--cloud-provider=external"]).unwrap();
    let ips: Vec<IpAddr> = cl.node.node_ip.as_ref().unwrap().addresses().collect();
    assert_eq!(ips.len(), 2);
    let cl = parse(&["--node-ip=::"]).unwrap();
    assert_eq!(cl.node.node_ip.as_ref().unwrap().addresses().count(), 0);
}

#[test]
fn node_labels_in_reserved_namespaces_are_refused() {
    assert!(
        parse(&["--node-labels=node-role.kubernetes.io/worker=,node.kubernetes.io/pool=a,topology.kubernetes.io/zone=z1,example.com/x=y"])
            .is_err(),
        "node-role.kubernetes.io is not a kubelet label"
    );
    let ok = parse(&[
        "--node-labels=node.kubernetes.io/pool=a,x.kubelet.kubernetes.io/b=c,topology.kubernetes.io/zone=z1,example.com/x=y",
    ])
    .unwrap();
    assert_eq!(ok.node.node_labels.len(), 4);
    let err = parse(&["--node-labels=kubernetes.io/role=master"]).unwrap_err();
    assert!(
        err.to_string().starts_with(
            "unknown 'kubernetes.io' or 'k8s.io' labels specified with --node-labels: [\"kubernetes.io/role\"]"
        ),
        "{err}"
    );
    let err = parse(&["--node-labels=bad key=v"]).unwrap_err();
    assert!(err.to_string().starts_with("invalid node labels"), "{err}");
    let err = parse(&["--node-labels=k=bad value"]).unwrap_err();
    assert!(err.to_string().contains("'bad value'"), "{err}");
}

#[test]
fn cloud_provider_is_empty_or_external() {
    let err = parse(&["--cloud-provider=aws"]).unwrap_err();
    assert!(
        err.to_string().contains("--cloud-provider=\"aws\""),
        "{err}"
    );
}

#[test]
fn help_and_version() {
    assert_eq!(parse(&["--help"]).unwrap().action, Action::Help);
    assert_eq!(parse(&["-h"]).unwrap().action, Action::Help);
    assert_eq!(parse(&["--version"]).unwrap().action, Action::Version);
    assert_eq!(
        parse(&["--version=raw"]).unwrap().action,
        Action::VersionRaw
    );
    assert_eq!(parse(&["--version=false"]).unwrap().action, Action::Run);
    let cl = parse(&["--version=v1.36.0-custom.1"]).unwrap();
    assert_eq!(cl.action, Action::Run);
    assert_eq!(cl.version_override.as_deref(), Some("v1.36.0-custom.1"));
    assert!(parse(&["--version=v1.35.0"]).is_err());
    assert!(parse(&["--version=maybe"]).is_err());
    let version = kubelet_version();
    assert!(version.starts_with("v1.36.0+node-agent."), "{version}");
    let help = usage();
    for spec in FLAGS {
        assert!(help.contains(&format!("--{} ", spec.name)), "{}", spec.name);
    }
}

#[test]
fn every_flag_is_unique_and_every_config_target_is_a_field() {
    let mut names = std::collections::BTreeSet::new();
    for spec in FLAGS {
        assert!(names.insert(spec.name), "--{} twice", spec.name);
        assert!(
            spec.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        );
    }
    // Each configuration flag's value decodes strictly (modelled fields type-check, the
    // others are upstream fields this crate keeps verbatim; an unknown field is an error).
    for spec in FLAGS {
        let FlagTarget::Config(_) = spec.target else {
            continue;
        };
        let sample = match spec.kind {
            FlagKind::Bool => "true",
            FlagKind::String => "x",
            FlagKind::Int32 | FlagKind::Int64 | FlagKind::Uint32 => "1",
            FlagKind::Duration => "1s",
            FlagKind::Quantity => "10Mi",
            FlagKind::Ip => "127.0.0.1",
            FlagKind::IpSlice => "10.96.0.10",
            FlagKind::StringSlice => "a,b",
            FlagKind::StringMap => "a=b",
            FlagKind::QuantityMap => "cpu=100m",
            FlagKind::BoolMap => "A=true",
            FlagKind::Thresholds => "memory.available<100Mi",
            FlagKind::Taints => "a=b:NoSchedule",
            FlagKind::HeaderMap => "a:b",
            FlagKind::Enum(values) => values[0],
            FlagKind::StringPair => "a=b",
            FlagKind::ReservedMemory => "0:memory=1Gi",
            other => panic!("--{}: {other:?} is not a config kind", spec.name),
        };
        let arg = format!("--{}={sample}", spec.name);
        let cl = CommandLine::parse([arg.as_str()]).unwrap();
        let mut doc = crate::v1beta1::KubeletConfiguration::default().to_value();
        crate::flags::apply_flag_patch(&mut doc, cl.config_patch().clone());
        if let Err(e) = crate::load::decode(doc, std::path::Path::new("<flags>")) {
            panic!("{arg}: {e}");
        }
    }
}
