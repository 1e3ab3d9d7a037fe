use super::*;

fn inputs() -> NodeStatusInputs {
    NodeStatusInputs {
        hostname: "node-a".into(),
        node_ips: vec!["10.0.0.5".parse().unwrap()],
        machine: MachineInfo {
            cpu_millis: 2000,
            memory_bytes: 8 << 30,
            ephemeral_storage_bytes: Some(100 << 30),
            hugepages: vec![("2Mi".into(), 64 << 20)],
            machine_id: "m".into(),
            system_uuid: "u".into(),
            boot_id: "b".into(),
            kernel_version: "6.1.0".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
        },
        max_pods: 110,
        reserved: Reserved {
            cpu_millis: 100,
            memory_bytes: 100 << 20,
            ephemeral_storage_bytes: 10 << 30,
        },
        container_runtime_version: "containerd://1.7.24".into(),
        kubelet_version: "v1.36.0+node-agent.0.1.0".into(),
        kubelet_port: 10250,
        max_images: 50,
        ..Default::default()
    }
}

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

#[test]
fn capacity_allocatable_and_addresses() {
    let s = node_status(None, &inputs(), t(0));
    let cap = s.capacity.unwrap();
    let alloc = s.allocatable.unwrap();
    assert_eq!(cap["cpu"].0, "2");
    assert_eq!(alloc["cpu"].0, "1900m");
    assert_eq!(cap["memory"].0, "8388608Ki");
    // 8 GiB - 100 MiB reserved - 64 MiB of huge pages.
    assert_eq!(
        alloc["memory"].0,
        format!("{}Ki", ((8_i64 << 30) - (164_i64 << 20)) >> 10)
    );
    assert_eq!(cap["pods"].0, "110");
    assert_eq!(alloc["pods"].0, "110");
    assert_eq!(
        alloc["ephemeral-storage"].0,
        format!("{}Ki", (90_i64 << 30) >> 10)
    );
    assert_eq!(cap["hugepages-2Mi"].0, "65536Ki");
    let addrs = s.addresses.unwrap();
    assert_eq!(addrs[0].type_, "InternalIP");
    assert_eq!(addrs[0].address, "10.0.0.5");
    assert_eq!(addrs[1].type_, "Hostname");
    let info = s.node_info.unwrap();
    assert_eq!(info.kubelet_version, "v1.36.0+node-agent.0.1.0");
    assert_eq!(info.container_runtime_version, "containerd://1.7.24");
    assert_eq!(info.kube_proxy_version, "");
    assert_eq!(info.operating_system, "linux");
    assert_eq!(
        s.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port,
        10250
    );
}

#[test]
fn allocatable_never_goes_negative() {
    let mut i = inputs();
    i.reserved.memory_bytes = 100 << 30;
    let (_, alloc) = capacity_and_allocatable(&i);
    assert_eq!(alloc["memory"].0, "0");
}

#[test]
fn conditions_as_upstream_with_transition_times_kept() {
    let i = inputs();
    let first = node_status(None, &i, t(0));
    let c = first.conditions.clone().unwrap();
    let kinds: Vec<&str> = c.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(
        kinds,
        ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
    );
    assert_eq!(c[3].status, "True");
    assert_eq!(c[3].reason.as_deref(), Some("KubeletReady"));
    assert_eq!(
        c[3].message.as_deref(),
        Some("kubelet is posting ready status")
    );
    assert_eq!(c[0].reason.as_deref(), Some("KubeletHasSufficientMemory"));

    // Ten seconds later, nothing changed: new heartbeats, same transitions, not "changed".
    let second = node_status(Some(&first), &i, t(10));
    let c2 = second.conditions.clone().unwrap();
    assert_eq!(c2[3].last_heartbeat_time, Some(Time(t(10))));
    assert_eq!(c2[3].last_transition_time, Some(Time(t(0))));
    assert!(!status_changed(&first, &second));

    // The runtime goes down: Ready turns False naming why, and the transition moves.
    let mut down = i.clone();
    down.not_ready = vec![
        "container runtime is down".into(),
        "PLEG is not healthy: pleg was last seen active 3m0s ago; threshold is 3m0s".into(),
    ];
    down.pressure.memory = true;
    let third = node_status(Some(&second), &down, t(20));
    let c3 = third.conditions.clone().unwrap();
    assert_eq!(c3[3].status, "False");
    assert_eq!(c3[3].reason.as_deref(), Some("KubeletNotReady"));
    assert_eq!(
        c3[3].message.as_deref(),
        Some(
            "container runtime is down, PLEG is not healthy: pleg was last seen active 3m0s ago; threshold is 3m0s"
        )
    );
    assert_eq!(c3[3].last_transition_time, Some(Time(t(20))));
    assert_eq!(c3[0].status, "True");
    assert_eq!(
        c3[0].reason.as_deref(),
        Some("KubeletHasInsufficientMemory")
    );
    assert!(status_changed(&second, &third));
}

#[test]
fn images_largest_first_bounded_with_five_names() {
    let mut i = inputs();
    i.images = (0..60)
        .map(|n| ImageInfo {
            repo_digests: vec![format!("img{n}@sha256:x")],
            repo_tags: (0..6).map(|t| format!("img{n}:t{t}")).collect(),
            size_bytes: n,
        })
        .collect();
    let images = images(&i);
    assert_eq!(images.len(), 50);
    assert_eq!(images[0].size_bytes, Some(59));
    let names = images[0].names.clone().unwrap();
    assert_eq!(names.len(), 5);
    assert_eq!(names[0], "img59@sha256:x");
    i.max_images = 0;
    assert!(node_status(None, &i, t(0)).images.is_none());
    i.max_images = -1;
    assert_eq!(super::images(&i).len(), 60);
}

#[test]
fn node_ips_are_checked_as_upstream() {
    assert_eq!(
        validate_node_ip("127.0.0.1".parse().unwrap()).unwrap_err(),
        "nodeIP can't be loopback address"
    );
    assert!(validate_node_ip("169.254.1.1".parse().unwrap()).is_err());
    assert!(validate_node_ip("fe80::1".parse().unwrap()).is_err());
    assert!(validate_node_ip("224.0.0.1".parse().unwrap()).is_err());
    assert!(validate_node_ip("0.0.0.0".parse().unwrap()).is_err());
    assert!(validate_node_ip("10.0.0.5".parse().unwrap()).is_ok());
}

#[test]
fn reserved_from_config_adds_reservations_and_hard_eviction() {
    let config: node_config::KubeletConfiguration = "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
kubeReserved: {cpu: 100m, memory: 100Mi}
systemReserved: {cpu: 200m, ephemeral-storage: 1Gi}
evictionHard: {memory.available: 100Mi, nodefs.available: 10%}
"
    .parse()
    .unwrap();
    let machine = inputs().machine;
    let r = Reserved::from_config(&config, &machine, false).unwrap();
    assert_eq!(r.cpu_millis, 300);
    assert_eq!(r.memory_bytes, 200 << 20);
    assert_eq!(r.ephemeral_storage_bytes, (1 << 30) + (10 << 30));
    let r = Reserved::from_config(&config, &machine, true).unwrap();
    assert_eq!(r.memory_bytes, 100 << 20);
}

#[test]
fn runtime_handlers_and_features_from_the_runtime() {
    let bare = node_status(None, &inputs(), t(0));
    assert!(bare.runtime_handlers.is_none() && bare.features.is_none());
    let mut with = inputs();
    with.runtime_handlers = vec![
        RuntimeHandler::default(),
        RuntimeHandler {
            name: "runc".into(),
            recursive_read_only_mounts: true,
            user_namespaces: false,
        },
    ];
    with.runtime_features = Some(RuntimeFeatures {
        supplemental_groups_policy: true,
    });
    let s = node_status(None, &with, t(0));
    let handlers = s.runtime_handlers.unwrap();
    assert_eq!(handlers[0].name.as_deref(), Some(""));
    assert_eq!(handlers[1].name.as_deref(), Some("runc"));
    let features = handlers[1].features.as_ref().unwrap();
    assert_eq!(features.recursive_read_only_mounts, Some(true));
    assert_eq!(features.user_namespaces, Some(false));
    assert_eq!(s.features.unwrap().supplemental_groups_policy, Some(true));
}

#[test]
fn pleg_not_healthy_makes_the_node_not_ready() {
    let mut with = inputs();
    with.not_ready = vec!["PLEG is not healthy: pleg has yet to be successful".into()];
    let s = node_status(None, &with, t(0));
    let ready = s
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason.as_deref(), Some("KubeletNotReady"));
    assert_eq!(
        ready.message.as_deref(),
        Some("PLEG is not healthy: pleg has yet to be successful")
    );
}
