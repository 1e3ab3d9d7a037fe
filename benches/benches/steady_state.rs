//! Steady state at 110 pods: the kubelet binary runs 110 static pods (busybox `httpd`) on a
//! containerd started for the run; once they all run and the start-up has settled, nothing
//! changes for a minute while the kubelet's resident memory and CPU (and containerd's, beside
//! it, for scale) are read from `/proc` every second. Also prints the time from the 110
//! manifests written to all containers running (`pod_startup` compares that with the CRI
//! floor of the same pods).
//!
//! Then the same again with a readiness probe on every pod (`httpGet`, period 10 s): the
//! prober's own cost, as the difference and ratio of the two runs.
//!
//! A resource reading over a fixed minute, not a timing repeated per iteration: it runs as a
//! plain `harness = false` program. It is a target of the `kubelet` package (its file lives
//! here with the other benchmarks) so that Cargo builds the release binary it runs.
//!
//! `cargo bench -p kubelet --bench steady_state`
//! (`STEADY_STATE_PODS` and `STEADY_STATE_SECONDS` change the 110 pods and the 60 s.)

#![allow(missing_docs)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use node_cri::{CriClient, ManagedContainerd, cri};

const KUBELET: &str = env!("CARGO_BIN_EXE_kubelet");

fn manifest(i: usize, probe: bool) -> String {
    let probe = match probe {
        true => {
            "    readinessProbe:\n      httpGet:\n        path: /\n        port: 8080\n      periodSeconds: 10\n"
        }
        false => "",
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: steady-{i}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: main\n    image: docker.io/library/busybox:1.35\n    command: [\"sh\", \"-c\", \"mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www\"]\n{probe}"
    )
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn running(client: &CriClient) -> usize {
    client
        .list_containers(Some(cri::ContainerFilter {
            state: Some(cri::ContainerStateValue {
                state: cri::ContainerState::ContainerRunning as i32,
            }),
            ..Default::default()
        }))
        .await
        .map(|c| c.len())
        .unwrap_or(0)
}

/// Resident memory (bytes) and CPU time used so far of process `pid`.
fn usage(pid: u32) -> (u64, Duration) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for process {pid}"));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are the 12th
    // and 13th after it.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<u64> = after
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    (rss_kib * 1024, Duration::from_millis(ticks * 1000 / hz))
}

struct Reading {
    rss_mean: f64,
    rss_max: u64,
    cpu_percent: f64,
}

impl std::fmt::Display for Reading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RSS {:.1} MiB (max {:.1} MiB), CPU {:.2}% of a core",
            self.rss_mean / (1024.0 * 1024.0),
            self.rss_max as f64 / (1024.0 * 1024.0),
            self.cpu_percent
        )
    }
}

/// Reads the processes every second for `window`.
fn watch(pids: &[u32], window: Duration) -> Vec<Reading> {
    let start: Vec<(u64, Duration)> = pids.iter().map(|&p| usage(p)).collect();
    let t = Instant::now();
    let mut samples: Vec<Vec<u64>> = vec![Vec::new(); pids.len()];
    while t.elapsed() < window {
        std::thread::sleep(Duration::from_secs(1));
        for (i, &p) in pids.iter().enumerate() {
            samples[i].push(usage(p).0);
        }
    }
    let elapsed = t.elapsed().as_secs_f64();
    pids.iter()
        .enumerate()
        .map(|(i, &p)| {
            let cpu = usage(p).1.saturating_sub(start[i].1);
            let s = &samples[i];
            Reading {
                rss_mean: s.iter().sum::<u64>() as f64 / s.len().max(1) as f64,
                rss_max: s.iter().copied().max().unwrap_or(0),
                cpu_percent: cpu.as_secs_f64() / elapsed * 100.0,
            }
        })
        .collect()
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let pods = env_or("STEADY_STATE_PODS", 110) as usize;
    let window = Duration::from_secs(env_or("STEADY_STATE_SECONDS", 60));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let plain = run(&rt, pods, window, false);
    let probed = run(&rt, pods, window, true);
    println!(
        "steady_state: the prober with {pods} readiness probes (period 10 s): kubelet CPU {:+.2}% of a core (ratio {:.2}), RSS {:+.1} MiB (ratio {:.3}); targets under 0.5% and 5 MiB",
        probed.cpu_percent - plain.cpu_percent,
        probed.cpu_percent / plain.cpu_percent.max(f64::EPSILON),
        (probed.rss_mean - plain.rss_mean) / (1024.0 * 1024.0),
        probed.rss_mean / plain.rss_mean.max(1.0),
    );
}

/// One kubelet with `pods` pods (`probes`: each with a readiness probe): the kubelet's reading.
fn run(rt: &tokio::runtime::Runtime, pods: usize, window: Duration, probes: bool) -> Reading {
    let tag = if probes { "steady-probes" } else { "steady" };
    let containerd = rt.block_on(async {
        let config = node_cri::harness::test_config(tag).expect("harness config");
        ManagedContainerd::start(config)
            .await
            .unwrap_or_else(|e| panic!("cannot start the managed containerd: {e}"))
    });
    let client = containerd.client().clone();
    let dir = containerd.config().dir.clone();
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).expect("manifest dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let config = dir.join("kubelet.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
             staticPodPath: {}\ncontainerRuntimeEndpoint: {}\nhealthzPort: {port}\n\
             address: 127.0.0.1\nport: {server}\n\
             podLogsDir: {}\ncgroupRoot: /node-agent-test/{}\nmaxPods: {pods}\n",
            manifests.display(),
            containerd.endpoint(),
            dir.join("logs").display(),
            std::process::id(),
            server = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port"),
        ),
    )
    .expect("kubelet config");
    let mut kubelet = Command::new(KUBELET)
        // Memory only: the default disk thresholds would put the node under DiskPressure
        // on a build machine whose disk is nearly full.
        .arg("--eviction-hard=memory.available<100Mi")
        .arg("--config")
        .arg(&config)
        .arg("--root-dir")
        .arg(dir.join("root"))
        .arg("--cert-dir")
        .arg(dir.join("pki"))
        .args(["--hostname-override", "steady-node"])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .expect("run the kubelet");

    let t = Instant::now();
    for i in 0..pods {
        std::fs::write(
            manifests.join(format!("steady-{i}.yaml")),
            manifest(i, probes),
        )
        .expect("write manifest");
    }
    rt.block_on(async {
        while running(&client).await < pods {
            assert!(
                t.elapsed() < Duration::from_secs(300),
                "the {pods} pods did not all run within 5 minutes"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let started = t.elapsed();
    // Let the start-up's aftermath (status reads, PLEG, first housekeeping) pass.
    std::thread::sleep(Duration::from_secs(10));
    let containerd_pid = containerd.pid().expect("containerd runs");
    let readings = watch(&[kubelet.id(), containerd_pid], window);
    let with = if probes { " with readiness probes" } else { "" };
    println!(
        "steady_state: {pods} pods{with}, all running {:.2} s after the manifests were written",
        started.as_secs_f64()
    );
    println!(
        "steady_state: {pods} pods{with}, nothing changing for {} s: kubelet {} (targets 25 MiB, 0.5%); containerd {}",
        window.as_secs(),
        readings[0],
        readings[1]
    );

    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(kubelet.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = kubelet.wait();
    rt.block_on(async move {
        for s in client.list_pod_sandbox(None).await.unwrap_or_default() {
            let _ = client.stop_pod_sandbox(&s.id).await;
            let _ = client.remove_pod_sandbox(&s.id).await;
        }
        containerd.stop().await.expect("stop containerd");
    });
    node_cri::harness::detach_mounts_under(Path::new(&dir));
    readings.into_iter().next().expect("the kubelet's reading")
}
