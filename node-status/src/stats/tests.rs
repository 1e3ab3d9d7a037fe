//! The stats readers and the Linux provider over fixture cgroup and `/proc` trees.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use node_config::CgroupDriver;
use node_core::runtime::RuntimeError;
use node_core::stats::{
    ContainerStats, CpuStats, FsStats, PodReference, PodStats, RuntimeFilesystem,
    RuntimeFilesystems, RuntimeStatsSource,
};

use super::cgroup::Cgroups;
use super::host::{ProcFs, parse_net_dev};
use super::{LinuxStatsConfig, LinuxStatsProvider, StatsError, StatsProvider};

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A v1 cgroup `cg` under `root` with the given usage, inactive file pages and cpu time.
fn v1_cgroup(root: &Path, cg: &str, usage: u64, inactive: u64, cpu: u64) {
    let cg = cg.trim_start_matches('/');
    let memory = root.join("memory").join(cg);
    write(&memory.join("memory.usage_in_bytes"), &format!("{usage}\n"));
    write(
        &memory.join("memory.stat"),
        &format!(
            "cache 1\nrss 2\ntotal_cache 100\ntotal_rss {}\ntotal_pgfault 77\ntotal_pgmajfault 3\ntotal_inactive_file {inactive}\n",
            usage / 2
        ),
    );
    write(
        &memory.join("memory.limit_in_bytes"),
        "9223372036854771712\n",
    );
    write(
        &root.join("cpuacct").join(cg).join("cpuacct.usage"),
        &format!("{cpu}\n"),
    );
    write(&root.join("pids").join(cg).join("pids.current"), "4\n");
}

fn v2_cgroup(root: &Path, cg: &str, usage: u64, inactive: u64, usec: u64, max: &str) {
    let dir = root.join(cg.trim_start_matches('/'));
    write(&dir.join("memory.current"), &format!("{usage}\n"));
    write(
        &dir.join("memory.stat"),
        &format!("anon 4096\nfile 8192\ninactive_file {inactive}\npgfault 10\npgmajfault 1\n"),
    );
    write(&dir.join("memory.max"), &format!("{max}\n"));
    write(
        &dir.join("cpu.stat"),
        &format!("usage_usec {usec}\nuser_usec 1\nsystem_usec 2\n"),
    );
    write(&dir.join("pids.current"), "2\n");
}

fn proc_fixture(root: &Path) {
    write(
        &root.join("meminfo"),
        "MemTotal:       8000000 kB\nMemFree:        2000000 kB\nMemAvailable:   5000000 kB\nInactive(file):  1000000 kB\nAnonPages:       500000 kB\n",
    );
    write(
        &root.join("vmstat"),
        "nr_free_pages 1\npgfault 123\npgmajfault 4\n",
    );
    write(
        &root.join("net/dev"),
        "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n  ens3: 5000 10 1 0 0 0 0 0 6000 12 2 0 0 0 0 0\n  eth0: 7000 10 3 0 0 0 0 0 8000 12 4 0 0 0 0 0\nveth12345: 9 1 0 0 0 0 0 0 9 1 0 0 0 0 0 0\n",
    );
    write(&root.join("loadavg"), "0.10 0.20 0.30 2/345 6789\n");
    write(&root.join("sys/kernel/pid_max"), "4194304\n");
    write(&root.join("sys/kernel/threads-max"), "192739\n");
    write(
        &root.join("stat"),
        "cpu  1 2 3\nbtime 1700000000\nprocesses 5\n",
    );
}

#[test]
fn v1_memory_cpu_and_processes() {
    let dir = tempfile::tempdir().unwrap();
    v1_cgroup(dir.path(), "/kubepods/besteffort/podu", 10_000, 4_000, 55);
    let cgroups = Cgroups::detect(dir.path());
    assert_eq!(cgroups.version(), 1);
    let m = cgroups.memory("/kubepods/besteffort/podu").unwrap();
    assert_eq!(m.usage, 10_000);
    assert_eq!(m.working_set, 6_000, "usage - total_inactive_file");
    assert_eq!(m.rss, Some(5_000));
    assert_eq!(m.page_faults, Some(77));
    assert_eq!(m.major_page_faults, Some(3));
    assert_eq!(m.limit, None, "v1's page-rounded i64::MAX is no limit");
    assert_eq!(
        cgroups
            .cpu_usage_nanos("/kubepods/besteffort/podu")
            .unwrap(),
        55
    );
    assert_eq!(cgroups.processes("/kubepods/besteffort/podu").unwrap(), 4);
    assert!(cgroups.exists("/kubepods/besteffort/podu"));
    assert!(!cgroups.exists("/kubepods/podx"));
}

#[test]
fn working_set_never_below_zero() {
    let dir = tempfile::tempdir().unwrap();
    v1_cgroup(dir.path(), "/a", 1_000, 4_000, 1);
    let m = Cgroups::detect(dir.path()).memory("/a").unwrap();
    assert_eq!(m.working_set, 0);
}

#[test]
fn v2_memory_cpu_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("cgroup.controllers"), "cpu memory pids\n");
    v2_cgroup(dir.path(), "/kubepods/podu", 20_000, 5_000, 7, "max");
    v2_cgroup(dir.path(), "/kubepods/podg", 20_000, 5_000, 7, "65536");
    let cgroups = Cgroups::detect(dir.path());
    assert_eq!(cgroups.version(), 2);
    let m = cgroups.memory("/kubepods/podu").unwrap();
    assert_eq!((m.usage, m.working_set), (20_000, 15_000));
    assert_eq!(m.rss, Some(4096));
    assert_eq!((m.page_faults, m.major_page_faults), (Some(10), Some(1)));
    assert_eq!(m.limit, None, "\"max\" is no limit");
    assert_eq!(cgroups.memory("/kubepods/podg").unwrap().limit, Some(65536));
    assert_eq!(cgroups.cpu_usage_nanos("/kubepods/podu").unwrap(), 7_000);
    assert_eq!(cgroups.processes("/kubepods/podu").unwrap(), 2);
}

#[test]
fn unreadable_figures_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cgroups = Cgroups::detect(dir.path());
    let err = cgroups.memory("/missing").unwrap_err().to_string();
    assert!(err.contains("memory.usage_in_bytes"), "{err}");
    write(&dir.path().join("cpuacct/bad/cpuacct.usage"), "lots\n");
    let err = cgroups.cpu_usage_nanos("/bad").unwrap_err();
    assert!(matches!(err, StatsError::Parse { .. }), "{err}");
    assert!(err.to_string().contains("cpuacct.usage"), "{err}");
}

#[test]
fn proc_figures() {
    let dir = tempfile::tempdir().unwrap();
    proc_fixture(dir.path());
    let proc = ProcFs::new(dir.path());
    let m = proc.node_memory().unwrap();
    assert_eq!(m.usage, 6_000_000 * 1024, "MemTotal - MemFree");
    assert_eq!(m.working_set, 5_000_000 * 1024, "usage - Inactive(file)");
    assert_eq!(m.rss, Some(500_000 * 1024));
    assert_eq!((m.page_faults, m.major_page_faults), (Some(123), Some(4)));
    let net = proc.network().unwrap();
    let names: Vec<&str> = net.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["ens3", "eth0"], "loopback and veths are left out");
    assert_eq!(net.default.name, "eth0");
    assert_eq!(net.default.rx_bytes, Some(7000));
    assert_eq!(net.default.rx_errors, Some(3));
    assert_eq!(net.default.tx_bytes, Some(8000));
    assert_eq!(net.default.tx_errors, Some(4));
    assert_eq!(proc.max_pid().unwrap(), 192739, "min(pid_max, threads-max)");
    assert_eq!(proc.tasks().unwrap(), 345);
    assert_eq!(proc.boot_time().unwrap(), 1_700_000_000);
    assert!(
        parse_net_dev("h\nh\neth0: 1 2\n").is_none(),
        "short lines are malformed"
    );
}

/// A runtime reporting fixed pods and filesystems.
struct FakeRuntime {
    pods: Vec<PodStats>,
    image_fs: std::path::PathBuf,
    fail: Mutex<bool>,
}

#[async_trait]
impl RuntimeStatsSource for FakeRuntime {
    async fn pod_stats(&self) -> Result<Vec<PodStats>, RuntimeError> {
        if *self.fail.lock().unwrap() {
            return Err(RuntimeError::Unsupported("pod stats"));
        }
        Ok(self.pods.clone())
    }

    async fn filesystems(&self) -> Result<RuntimeFilesystems, RuntimeError> {
        Ok(RuntimeFilesystems {
            image: Some(RuntimeFilesystem {
                mountpoint: self.image_fs.clone(),
                used_bytes: Some(1234),
                inodes_used: Some(56),
            }),
            container: None,
        })
    }
}

struct Node {
    _dir: tempfile::TempDir,
    cgroups: std::path::PathBuf,
    root: std::path::PathBuf,
    logs: std::path::PathBuf,
    provider: LinuxStatsProvider,
    runtime: Arc<FakeRuntime>,
}

/// A node on cgroup v1 with one BestEffort pod `ns/web` (uid `u1`) whose container `app`
/// has 4 KiB of logs and the pod an emptyDir with 8 KiB.
fn node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let cgroups = dir.path().join("cgroup");
    let proc = dir.path().join("proc");
    let root = dir.path().join("kubelet");
    let logs = dir.path().join("logs");
    proc_fixture(&proc);
    v1_cgroup(&cgroups, "/", 1 << 30, 1 << 28, 1_000_000_000);
    v1_cgroup(&cgroups, "/kubepods", 1 << 20, 0, 500);
    v1_cgroup(
        &cgroups,
        "/kubepods/besteffort/podu1",
        300_000,
        100_000,
        400,
    );
    write(&logs.join("ns_web_u1/app/0.log"), &"x".repeat(4096));
    write(
        &root.join("pods/u1/volumes/kubernetes.io~empty-dir/cache/data"),
        &"y".repeat(8192),
    );
    write(&root.join("pods/u1/etc-hosts"), "127.0.0.1 localhost\n");
    let runtime = Arc::new(FakeRuntime {
        pods: vec![PodStats {
            pod_ref: PodReference {
                name: "web".into(),
                namespace: "ns".into(),
                uid: "u1".into(),
            },
            containers: vec![ContainerStats {
                name: "app".into(),
                cpu: Some(CpuStats {
                    time: None,
                    usage_nano_cores: None,
                    usage_core_nano_seconds: Some(100),
                }),
                rootfs: Some(FsStats {
                    used_bytes: Some(16384),
                    inodes_used: Some(5),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }],
        image_fs: root.clone(),
        fail: Mutex::new(false),
    });
    let config = LinuxStatsConfig {
        node_name: "n1".into(),
        root_dir: root.clone(),
        pod_logs_dir: logs.clone(),
        cgroups: Cgroups::detect(&cgroups),
        proc: ProcFs::new(&proc),
        cgroup_root: "/".into(),
        cgroup_driver: CgroupDriver::Cgroupfs,
        memory_capacity: 2 << 30,
    };
    let provider = LinuxStatsProvider::new(config, runtime.clone());
    Node {
        _dir: dir,
        cgroups,
        root,
        logs,
        provider,
        runtime,
    }
}

#[tokio::test]
async fn summary_of_node_and_pods() {
    let node = node();
    let summary = node.provider.summary().await.unwrap();
    let n = &summary.node;
    assert_eq!(n.node_name, "n1");
    let memory = n.memory.as_ref().unwrap();
    assert_eq!(memory.usage_bytes, Some(1 << 30));
    assert_eq!(memory.working_set_bytes, Some((1 << 30) - (1 << 28)));
    assert_eq!(
        memory.available_bytes,
        Some((2 << 30) - ((1 << 30) - (1 << 28))),
        "capacity - working set"
    );
    let cpu = n.cpu.as_ref().unwrap();
    assert_eq!(cpu.usage_core_nano_seconds, Some(1_000_000_000));
    assert_eq!(
        cpu.usage_nano_cores, None,
        "no rate before a second reading"
    );
    assert_eq!(n.network.as_ref().unwrap().default.name, "eth0");
    let rlimit = n.rlimit.as_ref().unwrap();
    assert_eq!(
        (rlimit.max_pid, rlimit.running_processes),
        (Some(192739), Some(345))
    );
    assert!(n.start_time.is_some());
    let nodefs = n.fs.as_ref().unwrap();
    let whole = super::host::filesystem(&node.root).unwrap();
    assert_eq!(nodefs.capacity_bytes, whole.capacity_bytes);
    let image_fs = n.runtime.as_ref().unwrap().image_fs.as_ref().unwrap();
    assert_eq!(
        image_fs.used_bytes,
        Some(1234),
        "usage as the runtime reports it"
    );
    assert_eq!(
        image_fs.capacity_bytes, whole.capacity_bytes,
        "capacity from statfs"
    );
    assert_eq!(
        n.runtime.as_ref().unwrap().container_fs,
        n.runtime.as_ref().unwrap().image_fs,
        "container fs is the image fs when the runtime does not split them"
    );
    let pods = &n.system_containers;
    assert_eq!(pods[0].name, "pods");
    assert_eq!(pods[0].memory.as_ref().unwrap().usage_bytes, Some(1 << 20));

    let pod = &summary.pods[0];
    let memory = pod.memory.as_ref().unwrap();
    assert_eq!(
        memory.working_set_bytes,
        Some(200_000),
        "from the pod cgroup"
    );
    assert_eq!(memory.available_bytes, None, "no limit, no availableBytes");
    assert_eq!(pod.cpu.as_ref().unwrap().usage_core_nano_seconds, Some(400));
    assert_eq!(pod.process_stats.as_ref().unwrap().process_count, Some(4));
    let app = &pod.containers[0];
    let logs = app.logs.as_ref().unwrap();
    assert!(logs.used_bytes.unwrap() >= 4096, "{logs:?}");
    assert_eq!(logs.inodes_used, Some(2), "the directory and the file");
    assert_eq!(
        logs.capacity_bytes,
        super::host::filesystem(&node.logs).unwrap().capacity_bytes
    );
    assert_eq!(
        app.rootfs.as_ref().unwrap().capacity_bytes,
        whole.capacity_bytes
    );
    let volume = &pod.volume_stats[0];
    assert_eq!(volume.name, "cache");
    assert!(volume.fs.used_bytes.unwrap() >= 8192);
    let ephemeral = pod.ephemeral_storage.as_ref().unwrap();
    let expected = 16384
        + logs.used_bytes.unwrap()
        + volume.fs.used_bytes.unwrap()
        + std::fs::metadata(node.root.join("pods/u1/etc-hosts"))
            .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
            .unwrap();
    assert_eq!(
        ephemeral.used_bytes,
        Some(expected),
        "writable layer + logs + local volumes + etc-hosts"
    );
}

#[tokio::test]
async fn cpu_rate_from_the_previous_summary() {
    let node = node();
    node.provider.summary().await.unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    // 0.05 s of CPU for the node in ~0.1 s: about half a core.
    write(&node.cgroups.join("cpuacct/cpuacct.usage"), "1050000000\n");
    let summary = node.provider.summary().await.unwrap();
    let rate = summary.node.cpu.unwrap().usage_nano_cores.unwrap();
    assert!(
        (100_000_000..=500_000_000).contains(&rate),
        "nanocores {rate}"
    );
    let app = &summary.pods[0].containers[0];
    assert_eq!(
        app.cpu.as_ref().unwrap().usage_nano_cores,
        Some(0),
        "the container's rate from its cumulative time: unchanged"
    );
}

#[tokio::test]
async fn failures_are_errors_not_zeros() {
    let node = node();
    *node.runtime.fail.lock().unwrap() = true;
    let err = node.provider.summary().await.unwrap_err();
    assert!(matches!(err, StatsError::Runtime(_)), "{err}");
    *node.runtime.fail.lock().unwrap() = false;
    std::fs::remove_file(node.cgroups.join("memory/memory.usage_in_bytes")).unwrap();
    let err = node.provider.summary().await.unwrap_err().to_string();
    assert!(err.contains("memory.usage_in_bytes"), "{err}");
    // A pod whose cgroup is gone keeps what the runtime reported, without cgroup figures.
    v1_cgroup(&node.cgroups, "/", 1 << 30, 1 << 28, 1);
    std::fs::remove_dir_all(node.cgroups.join("memory/kubepods/besteffort/podu1")).unwrap();
    let summary = node.provider.summary().await.unwrap();
    assert!(summary.pods[0].memory.is_none());
    assert_eq!(summary.pods[0].containers[0].name, "app");
}

#[cfg(feature = "server")]
#[tokio::test]
async fn router_serves_the_summary() {
    use tower::ServiceExt;
    let node = node();
    let provider: Arc<dyn StatsProvider> = Arc::new(node.provider);
    let response = super::router(provider)
        .oneshot(
            http::Request::get("/stats/summary")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["node"]["nodeName"], "n1");
    assert_eq!(json["pods"][0]["podRef"]["name"], "web");
    assert_eq!(json["pods"][0]["volume"][0]["name"], "cache");
}
