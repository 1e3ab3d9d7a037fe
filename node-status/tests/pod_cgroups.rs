//! Pod cgroups on this machine's real hierarchy (cgroup v1 here; the code has the v2 paths
//! too), under a cgroup root of the test's own.

use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
use node_config::CgroupDriver;
use node_core::runtime::PodCgroups;
use node_status::pod_cgroups::{Allocatable, LinuxPodCgroups};
use node_status::stats::cgroup::Cgroups;

fn pod(uid: &str, resources: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": uid, "uid": uid},
        "spec": {"containers": [{"name": "c", "resources": resources}]}
    }))
    .unwrap()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

#[test]
fn pod_cgroups_have_their_qos_place_and_limits_and_go_with_the_pod() {
    let cgroups = Cgroups::detect("/sys/fs/cgroup");
    assert_eq!(
        cgroups.version(),
        1,
        "this machine's hierarchy is v1 (hybrid)"
    );
    let root = format!("/node-status-test-{}", std::process::id());
    let manager = LinuxPodCgroups::new(cgroups.clone(), &root, CgroupDriver::Cgroupfs, 1024, true);
    manager
        .setup(Allocatable {
            cpu_milli: 2000,
            memory: Some(1 << 30),
            pids: None,
        })
        .unwrap();
    let mem = |cgroup: &str| cgroups.dir("memory", &format!("{root}/{cgroup}"));
    let cpu = |cgroup: &str| cgroups.dir("cpu", &format!("{root}/{cgroup}"));
    let pids = |cgroup: &str| cgroups.dir("pids", &format!("{root}/{cgroup}"));
    assert_eq!(
        read(&mem("kubepods").join("memory.limit_in_bytes")),
        (1u64 << 30).to_string()
    );
    assert_eq!(read(&cpu("kubepods").join("cpu.shares")), "2048");
    assert_eq!(read(&cpu("kubepods/besteffort").join("cpu.shares")), "2");

    let guaranteed = pod(
        "g1",
        serde_json::json!({"limits": {"cpu": "500m", "memory": "128Mi"}}),
    );
    let burstable = pod(
        "b1",
        serde_json::json!({"requests": {"cpu": "250m", "memory": "64Mi"}}),
    );
    let best_effort = pod("e1", serde_json::json!({}));
    for p in [&guaranteed, &burstable, &best_effort] {
        manager.ensure(p).unwrap();
    }
    assert_eq!(
        read(&mem("kubepods/podg1").join("memory.limit_in_bytes")),
        (128u64 << 20).to_string()
    );
    assert_eq!(read(&cpu("kubepods/podg1").join("cpu.shares")), "512");
    assert_eq!(
        read(&cpu("kubepods/podg1").join("cpu.cfs_quota_us")),
        "50000"
    );
    assert_eq!(read(&pids("kubepods/podg1").join("pids.max")), "1024");
    assert_eq!(
        read(&cpu("kubepods/burstable/podb1").join("cpu.shares")),
        "256"
    );
    assert_eq!(
        read(&cpu("kubepods/burstable/podb1").join("cpu.cfs_quota_us")),
        "-1"
    );
    let unlimited: u64 = read(&mem("kubepods/burstable/podb1").join("memory.limit_in_bytes"))
        .parse()
        .unwrap();
    assert!(unlimited > 1 << 50, "no memory limit: {unlimited}");
    assert_eq!(
        read(&cpu("kubepods/besteffort/pode1").join("cpu.shares")),
        "2"
    );
    // The Burstable class's shares are its pods' requests.
    let burstable2 = pod("b2", serde_json::json!({"requests": {"cpu": "750m"}}));
    manager.update_qos(&[
        guaranteed.clone(),
        burstable.clone(),
        burstable2,
        best_effort.clone(),
    ]);
    assert_eq!(read(&cpu("kubepods/burstable").join("cpu.shares")), "1024");
    manager.update_qos(std::slice::from_ref(&guaranteed));
    assert_eq!(read(&cpu("kubepods/burstable").join("cpu.shares")), "2");

    for uid in ["g1", "b1", "e1"] {
        manager.remove(uid);
    }
    for dir in [
        mem("kubepods/podg1"),
        cpu("kubepods/burstable/podb1"),
        pids("kubepods/besteffort/pode1"),
    ] {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    // Clean up the test's hierarchy.
    for controller in ["cpu", "cpuacct", "memory", "pids"] {
        for cgroup in ["kubepods/burstable", "kubepods/besteffort", "kubepods", ""] {
            let _ = std::fs::remove_dir(cgroups.dir(controller, &format!("{root}/{cgroup}")));
        }
    }
}

#[test]
fn a_cgroup_that_cannot_be_made_is_reported_by_path() {
    let dir = tempfile::tempdir().unwrap();
    // A v1 layout whose memory "controller" is a plain file: mkdir fails under it.
    for c in ["cpu", "cpuacct", "pids"] {
        std::fs::create_dir_all(dir.path().join(c)).unwrap();
        std::fs::write(dir.path().join(c).join("cgroup.procs"), "").unwrap();
    }
    std::fs::create_dir_all(dir.path().join("memory")).unwrap();
    std::fs::write(dir.path().join("memory").join("cgroup.procs"), "").unwrap();
    std::fs::write(dir.path().join("memory").join("root"), "").unwrap();
    let manager = LinuxPodCgroups::new(
        Cgroups::V1 {
            root: dir.path().to_path_buf(),
        },
        "/root",
        CgroupDriver::Cgroupfs,
        0,
        true,
    );
    let error = manager
        .ensure(&pod("x", serde_json::json!({})))
        .unwrap_err();
    assert!(
        error.contains("memory/root/kubepods/besteffort/podx"),
        "{error}"
    );
}

#[test]
fn reservations_are_enforced_on_existing_cgroups_only() {
    let cgroups = Cgroups::detect("/sys/fs/cgroup");
    let name = format!("/node-status-reserved-{}", std::process::id());
    let manager = LinuxPodCgroups::new(cgroups.clone(), "/", CgroupDriver::Cgroupfs, 0, true);
    let error = manager
        .enforce_reserved(&name, 500, Some(256 << 20))
        .unwrap_err();
    assert!(error.contains("does not exist"), "{error}");
    for c in ["cpu", "cpuacct", "memory", "pids"] {
        std::fs::create_dir_all(cgroups.dir(c, &name)).unwrap();
    }
    let result = manager.enforce_reserved(&name, 500, Some(256 << 20));
    let shares = std::fs::read_to_string(cgroups.dir("cpu", &name).join("cpu.shares"));
    let limit = std::fs::read_to_string(cgroups.dir("memory", &name).join("memory.limit_in_bytes"));
    for c in ["cpu", "cpuacct", "memory", "pids"] {
        let _ = std::fs::remove_dir(cgroups.dir(c, &name));
    }
    result.unwrap();
    assert_eq!(shares.unwrap().trim(), "512");
    assert_eq!(limit.unwrap().trim(), (256u64 << 20).to_string());
}

#[test]
fn on_cgroup_v2_pods_get_weight_max_and_controllers_enabled() {
    // A v2 hierarchy stand-in: plain directories take the writes the kernel would.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cgroup.controllers"), "cpu memory pids").unwrap();
    let cgroups = Cgroups::detect(dir.path());
    assert_eq!(cgroups.version(), 2);
    let manager = LinuxPodCgroups::new(cgroups, "/", CgroupDriver::Cgroupfs, 64, true);
    manager
        .setup(Allocatable {
            cpu_milli: 2000,
            memory: Some(1 << 30),
            pids: Some(1000),
        })
        .unwrap();
    let kubepods = dir.path().join("kubepods");
    assert_eq!(read(&kubepods.join("memory.max")), (1u64 << 30).to_string());
    assert_eq!(read(&kubepods.join("pids.max")), "1000");
    assert_eq!(
        read(&kubepods.join("cgroup.subtree_control")),
        "+cpu +memory +pids"
    );
    assert_eq!(
        read(&dir.path().join("cgroup.subtree_control")),
        "+cpu +memory +pids"
    );
    manager
        .ensure(&pod(
            "g2",
            serde_json::json!({"limits": {"cpu": "500m", "memory": "128Mi"}}),
        ))
        .unwrap();
    let pod_dir = kubepods.join("podg2");
    // 512 shares as runc converts them: 1 + (512 - 2) * 9999 / 262142.
    assert_eq!(read(&pod_dir.join("cpu.weight")), "20");
    assert_eq!(read(&pod_dir.join("cpu.max")), "50000 100000");
    assert_eq!(
        read(&pod_dir.join("memory.max")),
        (128u64 << 20).to_string()
    );
    assert_eq!(read(&pod_dir.join("pids.max")), "64");
    manager.ensure(&pod("e2", serde_json::json!({}))).unwrap();
    let best_effort = kubepods.join("besteffort/pode2");
    assert_eq!(read(&best_effort.join("cpu.max")), "max 100000");
    assert_eq!(read(&best_effort.join("memory.max")), "max");
}

#[test]
fn memory_qos_on_cgroup_v2_sets_memory_min_from_requests() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cgroup.controllers"), "cpu memory pids").unwrap();
    let manager = LinuxPodCgroups::new(
        Cgroups::detect(dir.path()),
        "/",
        CgroupDriver::Cgroupfs,
        0,
        true,
    )
    .with_memory_qos(true);
    manager
        .setup(Allocatable {
            cpu_milli: 2000,
            memory: Some(1 << 30),
            pids: None,
        })
        .unwrap();
    let guaranteed = pod(
        "g3",
        serde_json::json!({
            "requests": {"cpu": "1", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "256Mi"}
        }),
    );
    let burstable = pod("b3", serde_json::json!({"requests": {"memory": "64Mi"}}));
    manager.ensure(&guaranteed).unwrap();
    manager.ensure(&burstable).unwrap();
    let kubepods = dir.path().join("kubepods");
    assert_eq!(
        read(&kubepods.join("podg3/memory.min")),
        (256u64 << 20).to_string()
    );
    assert_eq!(
        read(&kubepods.join("burstable/podb3/memory.min")),
        (64u64 << 20).to_string()
    );
    manager.update_qos(&[guaranteed, burstable]);
    assert_eq!(
        read(&kubepods.join("burstable/memory.min")),
        (64u64 << 20).to_string()
    );
    assert_eq!(
        read(&kubepods.join("memory.min")),
        (320u64 << 20).to_string()
    );
}

#[test]
fn a_custom_cfs_period_is_the_pod_cgroups_period_and_scales_their_quota() {
    let cgroups = Cgroups::detect("/sys/fs/cgroup");
    let root = format!("/node-status-period-{}", std::process::id());
    let manager = LinuxPodCgroups::new(cgroups.clone(), &root, CgroupDriver::Cgroupfs, -1, true)
        .with_cfs_period(50_000);
    manager
        .setup(Allocatable {
            cpu_milli: 2000,
            memory: None,
            pids: None,
        })
        .unwrap();
    let guaranteed = pod(
        "gp",
        serde_json::json!({"limits": {"cpu": "500m", "memory": "64Mi"}}),
    );
    manager.ensure(&guaranteed).unwrap();
    let cpu = cgroups.dir("cpu", &format!("{root}/kubepods/podgp"));
    assert_eq!(read(&cpu.join("cpu.cfs_period_us")), "50000");
    assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "25000");
    // Resized in place: the same call applies the new limits.
    let bigger = pod(
        "gp",
        serde_json::json!({"limits": {"cpu": "1", "memory": "128Mi"}}),
    );
    manager.ensure(&bigger).unwrap();
    assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "50000");
    // What a resize checks before shrinking a pod: its cgroup's limit and usage.
    assert_eq!(manager.memory_limit(&bigger), Some(128 << 20));
    assert_eq!(
        manager.memory_usage(&bigger),
        Some(0),
        "an empty cgroup uses nothing"
    );
    assert_eq!(
        manager.memory_usage(&pod("absent", serde_json::json!({}))),
        None
    );
    let mem = cgroups.dir("memory", &format!("{root}/kubepods/podgp"));
    assert_eq!(
        read(&mem.join("memory.limit_in_bytes")),
        (128u64 << 20).to_string()
    );
    manager.remove("gp");
    for controller in ["cpu", "cpuacct", "memory", "pids"] {
        for cgroup in ["kubepods/burstable", "kubepods/besteffort", "kubepods", ""] {
            let _ = std::fs::remove_dir(cgroups.dir(controller, &format!("{root}/{cgroup}")));
        }
    }
}
