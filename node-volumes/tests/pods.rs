//! Volumes end to end: the kubelet engine, the CRI runtime and the default volume manager on a
//! real containerd (one per test, started by the harness), with real mounts under a private
//! root directory. The engine runs in-process so that a test can bring its own API-object
//! source (a configMap it changes) and restart the engine on the same root directory.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    ConfigMap, ContainerStatus, Pod, PodStatus, Secret, ServiceAccountTokenProjection,
};
use node_core::config::{PodConfig, SourceHandle};
use node_core::events::MemoryRecorder;
use node_core::kubelet::{EngineConfig, Kubelet};
use node_core::pod_manager::PodManager;
use node_core::runtime::GcPolicy;
use node_core::status::StatusManager;
use node_cri::harness::{self, eventually};
use node_cri::runtime::CriRuntime;
use node_cri::runtime::sandbox::NodeContext;
use node_cri::{CriClient, ManagedContainerd};
use node_volumes::manager::{DefaultVolumeManager, VolumeManagerConfig};
use node_volumes::mount::{MountEntry, MountTable};
use node_volumes::plugin::{NodeAllocatable, PluginRegistry};
use node_volumes::source::{ObjectSource, SourceError};

const NODE: &str = "vol-node";
const WAIT: Duration = Duration::from_secs(60);

/// configMaps the test controls; everything else is absent.
#[derive(Default)]
struct TestSource {
    config_maps: Mutex<BTreeMap<String, ConfigMap>>,
    secrets: Mutex<BTreeMap<String, Secret>>,
}

impl TestSource {
    fn set(&self, name: &str, data: &[(&str, String)]) {
        let cm = ConfigMap {
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            ),
            ..Default::default()
        };
        self.config_maps
            .lock()
            .expect("config maps")
            .insert(name.into(), cm);
    }

    fn set_secret(&self, name: &str, data: &[(&str, &str)]) {
        let secret = Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        };
        self.secrets
            .lock()
            .expect("secrets")
            .insert(name.into(), secret);
    }
}

#[async_trait]
impl ObjectSource for TestSource {
    async fn config_map(&self, _namespace: &str, name: &str) -> Result<ConfigMap, SourceError> {
        self.config_maps
            .lock()
            .expect("config maps")
            .get(name)
            .cloned()
            .ok_or(SourceError::NotFound {
                resource: "configmap",
                name: name.into(),
            })
    }

    async fn secret(&self, _namespace: &str, name: &str) -> Result<Secret, SourceError> {
        self.secrets
            .lock()
            .expect("secrets")
            .get(name)
            .cloned()
            .ok_or(SourceError::NotFound {
                resource: "secret",
                name: name.into(),
            })
    }

    async fn service_account_token(
        &self,
        _pod: &Pod,
        _projection: &ServiceAccountTokenProjection,
    ) -> Result<Vec<u8>, SourceError> {
        Err(SourceError::Unavailable("no tokens in this test".into()))
    }
}

struct Engine {
    task: tokio::task::JoinHandle<()>,
    stop: tokio::sync::oneshot::Sender<()>,
    _file: SourceHandle,
    _config: PodConfig,
    pods: Arc<PodManager>,
    statuses: Arc<StatusManager>,
}

/// A node: its containerd, its kubelet root directory, and the engine while it runs.
struct Node {
    containerd: Option<ManagedContainerd>,
    client: CriClient,
    dir: PathBuf,
    recorder: Arc<MemoryRecorder>,
    source: Arc<TestSource>,
    engine: Option<Engine>,
}

impl Node {
    async fn start(tag: &str) -> Node {
        let config = harness::test_config(tag).expect("harness config");
        let dir = config.dir.clone();
        let containerd = ManagedContainerd::start(config)
            .await
            .unwrap_or_else(|e| panic!("cannot start the managed containerd: {e}"));
        std::fs::create_dir_all(dir.join("manifests")).expect("manifest dir");
        let mut node = Node {
            client: containerd.client().clone(),
            containerd: Some(containerd),
            dir,
            recorder: Arc::new(MemoryRecorder::default()),
            source: Arc::new(TestSource::default()),
            engine: None,
        };
        node.start_engine();
        node
    }

    fn root(&self) -> PathBuf {
        self.dir.join("kubelet")
    }

    fn start_engine(&mut self) {
        let volumes = Arc::new(DefaultVolumeManager::new(
            VolumeManagerConfig {
                mount_timeout: Duration::from_secs(3),
                node: NodeAllocatable {
                    memory_bytes: 1 << 30,
                    cpu_millis: 2000,
                },
                ..VolumeManagerConfig::new(self.root())
            },
            PluginRegistry::with_defaults(),
            self.source.clone(),
            self.recorder.clone(),
        ));
        volumes
            .set_up_root_dir()
            .unwrap_or_else(|e| panic!("cannot set up the kubelet root directory: {e}"));
        let node = NodeContext {
            node_name: NODE.into(),
            node_ips: vec!["127.0.0.1".parse().expect("loopback")],
            resolv_conf: Some("/etc/resolv.conf".into()),
            pod_logs_dir: self.dir.join("logs"),
            cgroup_root: format!("/node-agent-test/{}", std::process::id()),
            allocatable: NodeAllocatable {
                cpu_millis: 2000,
                memory_bytes: 1 << 30,
            },
            machine_memory_capacity_bytes: 1 << 30,
            ..NodeContext::default()
        };
        let runtime = Arc::new(
            CriRuntime::new(self.client.clone(), node, self.recorder.clone())
                .with_volume_manager(volumes.clone()),
        );
        let (config, updates) = PodConfig::new(NODE);
        let file = config.file_source(self.dir.join("manifests"), Duration::from_secs(20));
        let kubelet = Kubelet::new(
            runtime,
            self.recorder.clone(),
            EngineConfig {
                node_name: NODE.into(),
                node_ips: vec!["127.0.0.1".into()],
                sync_frequency: Duration::from_secs(1),
                max_pods: 110,
                gc_policy: GcPolicy::default(),
                node: None,
                allowed_unsafe_sysctls: Vec::new(),
            },
        )
        .with_volume_manager(volumes);
        let (pods, statuses) = (kubelet.pod_manager(), kubelet.status_manager());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(kubelet.run(updates, async {
            let _ = stopped.await;
        }));
        self.engine = Some(Engine {
            task,
            stop,
            _file: file,
            _config: config,
            pods,
            statuses,
        });
    }

    async fn stop_engine(&mut self) {
        if let Some(engine) = self.engine.take() {
            let _ = engine.stop.send(());
            let _ = engine.task.await;
        }
    }

    fn write_manifest(&self, name: &str, yaml: &str) {
        let path = self.dir.join("manifests").join(format!("{name}.yaml"));
        std::fs::write(path, yaml).expect("write manifest");
    }

    fn remove_manifest(&self, name: &str) {
        let _ = std::fs::remove_file(self.dir.join("manifests").join(format!("{name}.yaml")));
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("the engine runs")
    }

    fn pod(&self, name: &str) -> Option<Pod> {
        let full = format!("{name}-{NODE}");
        self.engine()
            .pods
            .pods()
            .into_iter()
            .find(|p| p.metadata.name.as_deref() == Some(full.as_str()))
    }

    fn uid(&self, name: &str) -> Option<String> {
        self.pod(name).and_then(|p| p.metadata.uid)
    }

    fn status(&self, name: &str) -> Option<PodStatus> {
        self.uid(name).and_then(|u| self.engine().statuses.get(&u))
    }

    fn container(&self, pod: &str, container: &str) -> Option<ContainerStatus> {
        self.status(pod)
            .and_then(|s| s.container_statuses)
            .into_iter()
            .flatten()
            .find(|c| c.name == container)
    }

    /// Waits for `pod`'s `container` to be running and returns its status.
    async fn running(&self, pod: &str, container: &str) -> ContainerStatus {
        eventually(WAIT, &format!("{pod}/{container} running"), || async {
            self.container(pod, container)
                .filter(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        })
        .await
    }

    /// Waits for `pod`'s `container` to have terminated and returns its status.
    async fn terminated(&self, pod: &str, container: &str) -> ContainerStatus {
        eventually(WAIT, &format!("{pod}/{container} terminated"), || async {
            self.container(pod, container)
                .filter(|c| c.state.as_ref().is_some_and(|s| s.terminated.is_some()))
        })
        .await
    }

    fn volume_dir(&self, uid: &str, plugin: &str, volume: &str) -> PathBuf {
        self.root()
            .join("pods")
            .join(uid)
            .join("volumes")
            .join(plugin)
            .join(volume)
    }

    /// Mounts below the root directory (the root itself is a shared bind mount).
    fn mounts_under_root(&self) -> Vec<PathBuf> {
        let root = self.root().canonicalize().expect("root");
        MountTable::current()
            .expect("mount table")
            .mounts_under(&root)
            .into_iter()
            .filter(|m| *m != root)
            .collect()
    }

    async fn stop(mut self) {
        self.stop_engine().await;
        let _ = harness::remove_pods(&self.client, "").await;
        for sandbox in self.client.list_pod_sandbox(None).await.unwrap_or_default() {
            let _ = self.client.stop_pod_sandbox(&sandbox.id).await;
            let _ = self.client.remove_pod_sandbox(&sandbox.id).await;
        }
        if let Some(c) = self.containerd.take() {
            let _ = c.stop().await;
        }
        // The shared root directory and whatever a failed test left mounted.
        harness::detach_mounts_under(&self.dir);
    }
}

/// The topmost mount at `path`, if it is a mount point.
fn mount_at(path: &Path) -> Option<MountEntry> {
    let canonical = path.canonicalize().ok()?;
    MountTable::current()
        .ok()?
        .entries()
        .iter()
        .rev()
        .find(|e| e.mount_point == canonical)
        .cloned()
}

fn mount_id(path: &Path) -> Option<u32> {
    mount_at(path).map(|e| e.id)
}

fn fs_type(path: &Path) -> Option<String> {
    mount_at(path).map(|e| e.fs_type)
}

fn busybox_pod(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n{spec}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_empty_dir_is_a_sized_tmpfs_shared_by_the_pods_containers() {
    let node = Node::start("vol-emptydir").await;
    node.write_manifest(
        "share",
        &busybox_pod(
            "share",
            r#"  restartPolicy: Never
  volumes:
  - name: cache
    emptyDir:
      medium: Memory
      sizeLimit: 16Mi
  - name: disk
    emptyDir: {}
  containers:
  - name: writer
    image: docker.io/library/busybox:1.35
    command: ["sh", "-c", "echo from-writer > /cache/msg; echo on-disk > /disk/file; sleep 3600"]
    volumeMounts:
    - {name: cache, mountPath: /cache}
    - {name: disk, mountPath: /disk}
  - name: reader
    image: docker.io/library/busybox:1.35
    command: ["sh", "-c", "until [ -f /shared/msg ]; do sleep 0.1; done; cat /shared/msg > /dev/termination-log; df -k /shared | tail -1 | awk '{print $2}' >> /dev/termination-log"]
    volumeMounts:
    - {name: cache, mountPath: /shared, readOnly: true}
"#,
        ),
    );
    let reader = node.terminated("share", "reader").await;
    let terminated = reader.state.and_then(|s| s.terminated).expect("terminated");
    assert_eq!(terminated.exit_code, 0, "{terminated:?}");
    // The reader saw the writer's file, and a 16 MiB filesystem (df's 1K blocks).
    assert_eq!(
        terminated.message.as_deref(),
        Some("from-writer\n16384\n"),
        "termination message of the reader"
    );
    let uid = node.uid("share").expect("uid");
    let cache = node.volume_dir(&uid, "kubernetes.io~empty-dir", "cache");
    let stat = nix::sys::statvfs::statvfs(&cache).expect("statvfs");
    assert_eq!(
        stat.blocks() as u64 * stat.fragment_size() as u64,
        16 << 20,
        "the tmpfs is sized by sizeLimit"
    );
    assert!(
        mount_id(&cache).is_some(),
        "{} is a mount point",
        cache.display()
    );
    let disk = node.volume_dir(&uid, "kubernetes.io~empty-dir", "disk");
    assert_eq!(
        std::fs::read_to_string(disk.join("file")).expect("on-disk emptyDir"),
        "on-disk\n"
    );
    // Deleting the pod leaves no mounts and no directories.
    node.remove_manifest("share");
    let pod_dir = node.root().join("pods").join(&uid);
    eventually(WAIT, "the pod directory removed", || async {
        (!pod_dir.exists()).then_some(())
    })
    .await;
    assert_eq!(node.mounts_under_root(), Vec::<PathBuf>::new());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_path_types_are_checked_and_subpath_escapes_refused() {
    let node = Node::start("vol-hostpath").await;
    let host = node.dir.join("host");
    std::fs::create_dir_all(&host).expect("host dir");
    std::fs::write(host.join("file"), "host data").expect("host file");
    node.write_manifest(
        "hp",
        &busybox_pod(
            "hp",
            &format!(
                r#"  volumes:
  - name: created
    hostPath: {{path: {created}, type: DirectoryOrCreate}}
  - name: file
    hostPath: {{path: {file}, type: File}}
  - name: data
    emptyDir: {{}}
  initContainers:
  - name: link
    image: docker.io/library/busybox:1.35
    command: ["sh", "-c", "mkdir -p /data/inside && ln -s /etc /data/escape && ln -s inside /data/ok"]
    volumeMounts:
    - {{name: data, mountPath: /data}}
  containers:
  - name: main
    image: docker.io/library/busybox:1.35
    command: ["sh", "-c", "cat /host-file > /created/copy; echo sub > /sub/x; sleep 3600"]
    volumeMounts:
    - {{name: created, mountPath: /created}}
    - {{name: file, mountPath: /host-file, readOnly: true}}
    - {{name: data, mountPath: /sub, subPath: ok}}
  - name: escape
    image: docker.io/library/busybox:1.35
    command: ["sleep", "3600"]
    volumeMounts:
    - {{name: data, mountPath: /escaped, subPath: escape}}
"#,
                created = host.join("created").display(),
                file = host.join("file").display(),
            ),
        ),
    );
    node.running("hp", "main").await;
    eventually(WAIT, "the copy in the created host directory", || async {
        std::fs::read_to_string(host.join("created/copy"))
            .ok()
            .filter(|s| s == "host data")
    })
    .await;
    let uid = node.uid("hp").expect("uid");
    let inside = node
        .volume_dir(&uid, "kubernetes.io~empty-dir", "data")
        .join("inside/x");
    eventually(WAIT, "the subPath write inside the volume", || async {
        std::fs::read_to_string(&inside)
            .ok()
            .filter(|s| s == "sub\n")
    })
    .await;
    // The symlink to /etc is refused: the container cannot be created.
    let escape = eventually(WAIT, "the escaping subPath refused", || async {
        node.container("hp", "escape").filter(|c| {
            c.state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .is_some_and(|w| w.reason.as_deref() == Some("CreateContainerConfigError"))
        })
    })
    .await;
    let message = escape
        .state
        .and_then(|s| s.waiting)
        .and_then(|w| w.message)
        .unwrap_or_default();
    // As upstream, the reason names the mount, not host paths (those are logged).
    assert_eq!(
        message,
        "failed to prepare subPath for volumeMount \"data\" of container \"escape\""
    );

    // A missing Directory fails to mount with upstream's message, and the pod does not start.
    node.write_manifest(
        "missing",
        &busybox_pod(
            "missing",
            &format!(
                "  volumes:\n  - name: gone\n    hostPath: {{path: {gone}, type: Directory}}\n  containers:\n  - name: main\n    image: docker.io/library/busybox:1.35\n    command: [\"sleep\", \"3600\"]\n    volumeMounts:\n    - {{name: gone, mountPath: /gone}}\n",
                gone = host.join("gone").display()
            ),
        ),
    );
    let expected = format!(
        "MountVolume.SetUp failed for volume \"gone\" : hostPath {} doesn't exist",
        host.join("gone").display()
    );
    eventually(WAIT, "FailedMount for the missing hostPath", || async {
        node.recorder
            .events()
            .into_iter()
            .find(|e| e.reason == "FailedMount" && e.message == expected)
    })
    .await;
    let waiting = node
        .container("missing", "main")
        .and_then(|c| c.state)
        .and_then(|s| s.waiting)
        .and_then(|w| w.reason);
    assert_eq!(waiting.as_deref(), Some("ContainerCreating"));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_map_updates_are_atomic_and_optional_sources_may_be_missing() {
    let node = Node::start("vol-configmap").await;
    let payload = |c: char| c.to_string().repeat(64 * 1024);
    node.source.set("settings", &[("data", payload('A'))]);
    node.write_manifest(
        "cm",
        &busybox_pod(
            "cm",
            r#"  volumes:
  - name: cfg
    configMap: {name: settings}
  - name: maybe
    configMap: {name: not-there, optional: true}
  - name: out
    emptyDir: {}
  containers:
  - name: main
    image: docker.io/library/busybox:1.35
    command:
    - sh
    - -c
    - |
      while true; do
        v=$(cat /cfg/data)
        c=${v:0:1}
        rest=$(echo "$v" | tr -d "$c")
        [ -n "$rest" ] && echo torn >> /out/torn
        echo "$c" >> /out/seen
      done
    volumeMounts:
    - {name: cfg, mountPath: /cfg}
    - {name: maybe, mountPath: /maybe}
    - {name: out, mountPath: /out}
"#,
        ),
    );
    node.running("cm", "main").await;
    let uid = node.uid("cm").expect("uid");
    let out = node.volume_dir(&uid, "kubernetes.io~empty-dir", "out");
    let cfg = node.volume_dir(&uid, "kubernetes.io~configmap", "cfg");
    assert!(
        std::fs::symlink_metadata(cfg.join("..data")).is_ok_and(|m| m.file_type().is_symlink()),
        "the atomic writer's ..data symlink"
    );
    let maybe = node.volume_dir(&uid, "kubernetes.io~configmap", "maybe");
    assert_eq!(
        std::fs::read_dir(&maybe)
            .expect("optional volume dir")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| !e.file_name().to_string_lossy().starts_with(".."))
            })
            .count(),
        0,
        "the missing optional configMap mounts empty"
    );
    // Each change is seen by the running container, and no read is ever torn.
    for c in ['B', 'C', 'D', 'E', 'F'] {
        node.source.set("settings", &[("data", payload(c))]);
        eventually(
            WAIT,
            &format!("the container reading version {c}"),
            || async {
                std::fs::read_to_string(out.join("seen"))
                    .ok()
                    .filter(|s| s.lines().last() == Some(&c.to_string()))
            },
        )
        .await;
    }
    let seen: HashSet<String> = std::fs::read_to_string(out.join("seen"))
        .expect("seen")
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(seen.len() >= 6, "versions seen: {seen:?}");
    assert!(!out.join("torn").exists(), "a torn read was seen");
    let restarts = node.container("cm", "main").map(|c| c.restart_count);
    assert_eq!(restarts, Some(0));

    // A required configMap that cannot be had fails to mount, naming it.
    node.write_manifest(
        "required",
        &busybox_pod(
            "required",
            "  volumes:\n  - name: cfg\n    configMap: {name: absent}\n  containers:\n  - name: main\n    image: docker.io/library/busybox:1.35\n    command: [\"sleep\", \"3600\"]\n    volumeMounts: [{name: cfg, mountPath: /cfg}]\n",
        ),
    );
    eventually(WAIT, "FailedMount for the absent configMap", || async {
        node.recorder.events().into_iter().find(|e| {
            e.reason == "FailedMount"
                && e.message
                    == "MountVolume.SetUp failed for volume \"cfg\" : configmap \"absent\" not found"
        })
    })
    .await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_engine_readopts_volumes_without_remounting() {
    let mut node = Node::start("vol-restart").await;
    node.write_manifest(
        "keep",
        &busybox_pod(
            "keep",
            r#"  volumes:
  - name: mem
    emptyDir: {medium: Memory}
  containers:
  - name: main
    image: docker.io/library/busybox:1.35
    command: ["sh", "-c", "echo kept > /mem/data; sleep 3600"]
    terminationMessagePolicy: FallbackToLogsOnError
    volumeMounts:
    - {name: mem, mountPath: /mem}
"#,
        ),
    );
    let before = node.running("keep", "main").await;
    let uid = node.uid("keep").expect("uid");
    let mem = node.volume_dir(&uid, "kubernetes.io~empty-dir", "mem");
    eventually(WAIT, "the container's file", || async {
        std::fs::read_to_string(mem.join("data"))
            .ok()
            .filter(|s| s == "kept\n")
    })
    .await;
    let mount_before = mount_id(&mem).expect("the tmpfs is mounted");
    let modified = std::fs::metadata(mem.join("data"))
        .and_then(|m| m.modified())
        .expect("mtime");

    node.stop_engine().await;
    node.start_engine();
    let after = eventually(WAIT, "the pod re-adopted", || async {
        node.container("keep", "main").filter(|c| c.ready)
    })
    .await;
    assert_eq!(
        after.container_id, before.container_id,
        "the container was not restarted"
    );
    assert_eq!(after.restart_count, 0);
    // Give the new engine a few syncs, then check nothing was remounted or rewritten.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        mount_id(&mem),
        Some(mount_before),
        "the tmpfs was not remounted"
    );
    assert_eq!(
        std::fs::read_to_string(mem.join("data")).expect("data"),
        "kept\n"
    );
    assert_eq!(
        std::fs::metadata(mem.join("data"))
            .and_then(|m| m.modified())
            .expect("mtime"),
        modified
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn termination_messages_and_the_managed_hosts_file() {
    let node = Node::start("vol-messages").await;
    node.write_manifest(
        "msg",
        &busybox_pod(
            "msg",
            r#"  restartPolicy: Never
  hostAliases:
  - ip: 10.1.2.3
    hostnames: [db.local, cache.local]
  containers:
  - name: file
    image: docker.io/library/busybox:1.35
    command: ["sh", "-c", "grep -c 'Kubernetes-managed hosts file' /etc/hosts > /dev/termination-log; grep '10.1.2.3' /etc/hosts >> /dev/termination-log"]
  - name: logs
    image: docker.io/library/busybox:1.35
    command: ["sh", "-c", "echo first line; echo last words; exit 3"]
    terminationMessagePolicy: FallbackToLogsOnError
  - name: custom
    image: docker.io/library/busybox:1.35
    command: ["sh", "-c", "echo custom path > /tmp/why; exit 0"]
    terminationMessagePath: /tmp/why
"#,
        ),
    );
    let file = node.terminated("msg", "file").await;
    assert_eq!(
        file.state
            .and_then(|s| s.terminated)
            .and_then(|t| t.message)
            .as_deref(),
        Some("1\n10.1.2.3\tdb.local\tcache.local\n")
    );
    let logs = node.terminated("msg", "logs").await;
    let t = logs.state.and_then(|s| s.terminated).expect("terminated");
    assert_eq!(t.exit_code, 3);
    assert_eq!(t.message.as_deref(), Some("first line\nlast words\n"));
    // A host-network pod gets the node's hosts file, then its aliases.
    node.write_manifest(
        "hostnet",
        &busybox_pod(
            "hostnet",
            r#"  restartPolicy: Never
  hostNetwork: true
  hostAliases:
  - ip: 10.9.9.9
    hostnames: [alias.local]
  containers:
  - name: main
    image: docker.io/library/busybox:1.35
    command: ["sh", "-c", "head -1 /etc/hosts > /dev/termination-log; tail -1 /etc/hosts >> /dev/termination-log"]
"#,
        ),
    );
    let hostnet = node.terminated("hostnet", "main").await;
    assert_eq!(
        hostnet
            .state
            .and_then(|s| s.terminated)
            .and_then(|t| t.message)
            .as_deref(),
        Some("# Kubernetes-managed hosts file (host network).\n10.9.9.9\talias.local\n")
    );
    let custom = node.terminated("msg", "custom").await;
    assert_eq!(
        custom
            .state
            .and_then(|s| s.terminated)
            .and_then(|t| t.message)
            .as_deref(),
        Some("custom path\n")
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_data_volumes_secret_on_tmpfs_downward_api_projected_read_only() {
    let node = Node::start("vol-apidata").await;
    node.source.set_secret("creds", &[("password", "s3cret")]);
    node.source.set("settings", &[("mode", "fast".to_string())]);
    node.write_manifest(
        "data",
        &busybox_pod(
            "data",
            r#"  restartPolicy: Never
  volumes:
  - name: secret
    secret: {secretName: creds, defaultMode: 256}
  - name: info
    downwardAPI:
      items:
      - path: name
        fieldRef: {fieldPath: metadata.name}
      - path: labels
        fieldRef: {fieldPath: metadata.labels}
      - path: mem
        resourceFieldRef: {containerName: main, resource: limits.memory, divisor: 1Mi}
  - name: all
    projected:
      sources:
      - configMap: {name: settings}
      - secret:
          name: creds
          items: [{key: password, path: nested/pw}]
      - downwardAPI:
          items: [{path: ns, fieldRef: {fieldPath: metadata.namespace}}]
  containers:
  - name: main
    image: docker.io/library/busybox:1.35
    resources: {limits: {memory: 64Mi}}
    command:
    - sh
    - -c
    - |
      {
        cat /s/password; echo
        cat /info/name; echo
        cat /info/labels; echo
        cat /info/mem; echo
        cat /all/mode /all/nested/pw /all/ns; echo
        touch /s/new 2>/dev/null && echo writable || echo read-only
      } > /dev/termination-log
    volumeMounts:
    - {name: secret, mountPath: /s}
    - {name: info, mountPath: /info}
    - {name: all, mountPath: /all}
"#,
        ),
    );
    let main = node.terminated("data", "main").await;
    let t = main.state.and_then(|s| s.terminated).expect("terminated");
    assert_eq!(t.exit_code, 0, "{t:?}");
    assert_eq!(
        t.message.as_deref(),
        Some(&*format!(
            "s3cret\ndata-{NODE}\n\n64\nfasts3cretdefault\nread-only\n"
        )),
        "what the container read"
    );
    let uid = node.uid("data").expect("uid");
    let secret = node.volume_dir(&uid, "kubernetes.io~secret", "secret");
    assert_eq!(
        fs_type(&secret).as_deref(),
        Some("tmpfs"),
        "secrets live on tmpfs"
    );
    let projected = node.volume_dir(&uid, "kubernetes.io~projected", "all");
    assert_eq!(fs_type(&projected).as_deref(), Some("tmpfs"));
    let mode = std::fs::metadata(secret.join("password"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .expect("the secret file");
    assert_eq!(mode, 0o400, "defaultMode");
    let downward = node.volume_dir(&uid, "kubernetes.io~downward-api", "info");
    assert_eq!(fs_type(&downward), None, "downwardAPI files are on disk");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_propagation_host_to_container_and_bidirectional() {
    let node = Node::start("vol-propagation").await;
    // Host paths below the kubelet's root directory, which the manager made rshared.
    let host = node.root().join("host");
    let (down, up) = (host.join("down"), host.join("up"));
    std::fs::create_dir_all(&down).expect("down");
    std::fs::create_dir_all(&up).expect("up");
    node.write_manifest(
        "prop",
        &busybox_pod(
            "prop",
            &format!(
                r#"  volumes:
  - name: down
    hostPath: {{path: {down}}}
  - name: up
    hostPath: {{path: {up}}}
  containers:
  - name: slave
    image: docker.io/library/busybox:1.35
    command: ["sh", "-c", "until [ -f /down/inner/file ]; do sleep 0.2; done; cat /down/inner/file > /down-seen; sleep 3600"]
    volumeMounts:
    - {{name: down, mountPath: /down, mountPropagation: HostToContainer}}
  - name: bidi
    image: docker.io/library/busybox:1.35
    securityContext: {{privileged: true}}
    command: ["sh", "-c", "mkdir -p /up/inner && mount -t tmpfs tmpfs /up/inner && echo from-container > /up/inner/file && sleep 3600"]
    volumeMounts:
    - {{name: up, mountPath: /up, mountPropagation: Bidirectional}}
  - name: refused
    image: docker.io/library/busybox:1.35
    command: ["sleep", "3600"]
    volumeMounts:
    - {{name: up, mountPath: /up, mountPropagation: Bidirectional}}
"#,
                down = down.display(),
                up = up.display(),
            ),
        ),
    );
    node.running("prop", "slave").await;
    node.running("prop", "bidi").await;
    // A mount the host makes below the volume reaches the HostToContainer container.
    let inner = down.join("inner");
    std::fs::create_dir_all(&inner).expect("inner");
    node_volumes::mount::mount_tmpfs(&inner, Some(1 << 20), 0o755).expect("host tmpfs");
    std::fs::write(inner.join("file"), "from-host").expect("host file");
    let slave = node.container("prop", "slave").expect("slave");
    let id = slave
        .container_id
        .as_deref()
        .and_then(|c| c.split("://").nth(1))
        .expect("container id")
        .to_string();
    eventually(WAIT, "the host mount seen in the container", || async {
        let out = node
            .client
            .exec_sync(
                &id,
                vec!["cat".into(), "/down-seen".into()],
                Duration::from_secs(5),
            )
            .await
            .ok()?;
        (String::from_utf8_lossy(&out.stdout) == "from-host").then_some(())
    })
    .await;
    // A mount the Bidirectional container makes reaches the host.
    eventually(WAIT, "the container's mount seen on the host", || async {
        std::fs::read_to_string(up.join("inner/file"))
            .ok()
            .filter(|s| s == "from-container\n")
    })
    .await;
    // Bidirectional needs a privileged container.
    let refused = eventually(WAIT, "Bidirectional refused without privilege", || async {
        node.container("prop", "refused")
            .and_then(|c| c.state)
            .and_then(|s| s.waiting)
            .filter(|w| w.reason.as_deref() == Some("CreateContainerConfigError"))
    })
    .await;
    assert_eq!(
        refused.message.as_deref(),
        Some("Bidirectional mount propagation is available only to privileged containers")
    );
    node.stop().await;
}
