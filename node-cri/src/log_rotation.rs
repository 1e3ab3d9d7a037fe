//! Container log rotation (upstream `pkg/kubelet/logs` container log manager): every
//! `containerLogMonitorInterval` the running containers' CRI log files are checked; one that
//! reached `containerLogMaxSize` is renamed `<log>.<YYYYMMDD-hhmmss>` and the runtime is asked
//! to reopen the log (CRI `ReopenContainerLog`); older rotated files are gzip-compressed
//! (`.gz`), and only `containerLogMaxFiles - 2` of them are kept beside the newest rotated one
//! and the live file, oldest removed first. Logs of removed containers go with them (the
//! runtime removes its log on container removal).

use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tracing::{debug, warn};

use crate::client::CriClient;
use k8s_cri::v1 as cri;

/// The rotation policy.
#[derive(Clone, Copy, Debug)]
pub struct LogRotationPolicy {
    /// `containerLogMaxSize`, bytes.
    pub max_size: u64,
    /// `containerLogMaxFiles` (at least 2: the live file and one rotated).
    pub max_files: usize,
    /// `containerLogMaxWorkers`.
    pub max_workers: usize,
    /// `containerLogMonitorInterval`.
    pub interval: Duration,
}

/// What rotation needs of the runtime.
#[async_trait]
pub trait LogRuntime: Send + Sync {
    /// The running containers' ids.
    async fn running(&self) -> Result<Vec<String>, String>;
    /// A container's log path (asked once per container: it does not change).
    async fn log_path(&self, id: &str) -> Result<Option<PathBuf>, String>;
    /// Asks the runtime to reopen the container's log file.
    async fn reopen(&self, id: &str) -> Result<(), String>;
}

#[async_trait]
impl LogRuntime for CriClient {
    async fn running(&self) -> Result<Vec<String>, String> {
        let running = self
            .list_containers(Some(cri::ContainerFilter {
                state: Some(cri::ContainerStateValue {
                    state: cri::ContainerState::ContainerRunning as i32,
                }),
                ..Default::default()
            }))
            .await
            .map_err(|e| e.to_string())?;
        Ok(running.into_iter().map(|c| c.id).collect())
    }

    async fn log_path(&self, id: &str) -> Result<Option<PathBuf>, String> {
        let status = self
            .container_status(id, false)
            .await
            .map_err(|e| e.to_string())?;
        Ok((!status.log_path.is_empty()).then(|| PathBuf::from(status.log_path)))
    }

    async fn reopen(&self, id: &str) -> Result<(), String> {
        self.reopen_container_log(id)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Rotates the running containers' logs per a policy.
pub struct ContainerLogManager {
    runtime: Arc<dyn LogRuntime>,
    policy: LogRotationPolicy,
    /// The running containers' log paths, learnt once per container (upstream asks the
    /// runtime for every container's status every pass).
    paths: std::sync::Mutex<std::collections::HashMap<String, PathBuf>>,
}

const COMPRESSED: &str = ".gz";
const TMP: &str = ".tmp";

impl ContainerLogManager {
    /// A manager of `runtime`'s container logs.
    pub fn new(runtime: Arc<dyn LogRuntime>, mut policy: LogRotationPolicy) -> Self {
        policy.max_files = policy.max_files.max(2);
        policy.max_workers = policy.max_workers.max(1);
        ContainerLogManager {
            runtime,
            policy,
            paths: Default::default(),
        }
    }

    /// Rotates every `interval`, forever.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(self.policy.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.rotate_once().await;
        }
    }

    /// One pass over the running containers.
    pub async fn rotate_once(&self) {
        let running = match self.runtime.running().await {
            Ok(ids) => ids,
            Err(e) => {
                warn!(error = %e, "log rotation cannot list the running containers");
                return;
            }
        };
        let known: Vec<String> = {
            let mut paths = self.paths.lock().unwrap_or_else(|e| e.into_inner());
            paths.retain(|id, _| running.contains(id));
            running
                .iter()
                .filter(|id| !paths.contains_key(*id))
                .cloned()
                .collect()
        };
        for id in known {
            match self.runtime.log_path(&id).await {
                Ok(Some(path)) => {
                    self.paths
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id, path);
                }
                Ok(None) => {}
                Err(e) => debug!(container = %id, error = %e, "no status for log rotation"),
            }
        }
        let logs: Vec<(String, PathBuf)> = self
            .paths
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, path)| (id.clone(), path.clone()))
            .collect();
        // Every size in one blocking task.
        let sized = tokio::task::spawn_blocking(move || {
            logs.into_iter()
                .map(|(id, path)| {
                    let size = std::fs::metadata(&path).map(|m| m.len());
                    (id, path, size)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let max_size = self.policy.max_size;
        let due = sized.into_iter().filter(|(_, _, size)| match size {
            Ok(size) => *size >= max_size,
            Err(_) => true,
        });
        futures::stream::iter(due)
            .for_each_concurrent(self.policy.max_workers, |(id, path, size)| async move {
                if let Err(e) = self.check(&id, &path, size).await {
                    warn!(container = %id, path = %path.display(), error = %e, "failed to rotate the container's log");
                }
            })
            .await;
    }

    async fn check(&self, id: &str, path: &Path, size: std::io::Result<u64>) -> Result<(), String> {
        let size = match size {
            Ok(size) => size,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A failed reopen may have lost the live file: ask again.
                self.runtime.reopen(id).await?;
                return Ok(());
            }
            Err(e) => return Err(e.to_string()),
        };
        if size < self.policy.max_size {
            return Ok(());
        }
        let path = path.to_path_buf();
        let max_files = self.policy.max_files;
        tokio::task::spawn_blocking({
            let path = path.clone();
            move || prepare_rotation(&path, max_files)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        let rotated = rotated_name(&path, jiff::Timestamp::now());
        std::fs::rename(&path, &rotated).map_err(|e| e.to_string())?;
        if let Err(e) = self.runtime.reopen(id).await {
            // Put it back: the next round tries again.
            let _ = std::fs::rename(&rotated, &path);
            return Err(format!("ReopenContainerLog: {e}"));
        }
        debug!(container = %id, rotated = %rotated.display(), "rotated a container log");
        Ok(())
    }
}

/// `<log>.<YYYYMMDD-hhmmss>` (upstream's timestamp format, UTC).
pub fn rotated_name(log: &Path, now: jiff::Timestamp) -> PathBuf {
    let stamp = now.strftime("%Y%m%d-%H%M%S");
    PathBuf::from(format!("{}.{stamp}", log.display()))
}

/// The rotated files of `log` (`<log>.*`), oldest first (the timestamps sort).
pub fn rotated_files(log: &Path) -> std::io::Result<Vec<PathBuf>> {
    let Some(dir) = log.parent() else {
        return Ok(Vec::new());
    };
    let prefix = format!(
        "{}.",
        log.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    );
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().starts_with(&prefix))
                .unwrap_or(false)
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Before a rotation: leftovers of an interrupted compression removed, the oldest rotated files
/// removed so that at most `max_files - 2` remain, and all of them compressed.
pub fn prepare_rotation(log: &Path, max_files: usize) -> std::io::Result<()> {
    let mut logs = Vec::new();
    let all = rotated_files(log)?;
    for l in &all {
        let name = l.to_string_lossy();
        if name.ends_with(TMP) {
            std::fs::remove_file(l)?;
            continue;
        }
        // An uncompressed file whose compressed copy exists was being compressed: drop it.
        let compressed = format!("{name}{COMPRESSED}");
        if !name.ends_with(COMPRESSED) && all.iter().any(|o| o.as_os_str() == compressed.as_str()) {
            std::fs::remove_file(l)?;
            continue;
        }
        logs.push(l.clone());
    }
    let keep = max_files.saturating_sub(2);
    let excess = logs.len().saturating_sub(keep);
    for l in logs.drain(..excess) {
        std::fs::remove_file(&l)?;
    }
    for l in logs {
        if !l.to_string_lossy().ends_with(COMPRESSED) {
            compress(&l)?;
        }
    }
    Ok(())
}

fn compress(log: &Path) -> std::io::Result<()> {
    let tmp = PathBuf::from(format!("{}{COMPRESSED}{TMP}", log.display()));
    let done = PathBuf::from(format!("{}{COMPRESSED}", log.display()));
    {
        let mut input = BufReader::new(std::fs::File::open(log)?);
        let out = BufWriter::new(std::fs::File::create(&tmp)?);
        let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
        std::io::copy(&mut input, &mut gz)?;
        gz.finish()?
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()?;
    }
    std::fs::rename(&tmp, &done)?;
    std::fs::remove_file(log)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Fake {
        log: PathBuf,
        reopened: Mutex<usize>,
    }

    #[async_trait]
    impl LogRuntime for Fake {
        async fn running(&self) -> Result<Vec<String>, String> {
            Ok(vec!["c1".into()])
        }
        async fn log_path(&self, _: &str) -> Result<Option<PathBuf>, String> {
            Ok(Some(self.log.clone()))
        }
        async fn reopen(&self, _: &str) -> Result<(), String> {
            *self.reopened.lock().unwrap() += 1;
            std::fs::write(&self.log, b"").map_err(|e| e.to_string())
        }
    }

    #[tokio::test]
    async fn a_full_log_is_rotated_older_ones_compressed_and_the_oldest_removed() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        // Three rotated files already (one of them compressed), and a leftover temp file.
        for (i, name) in [
            "0.log.20240101-000001.gz",
            "0.log.20240101-000002",
            "0.log.20240101-000003",
            "0.log.20240101-000002.gz.tmp",
        ]
        .iter()
        .enumerate()
        {
            std::fs::write(dir.path().join(name), format!("old {i}\n")).unwrap();
        }
        std::fs::write(&log, vec![b'x'; 2048]).unwrap();
        let fake = Arc::new(Fake {
            log: log.clone(),
            reopened: Mutex::new(0),
        });
        let manager = ContainerLogManager::new(
            fake.clone(),
            LogRotationPolicy {
                max_size: 1024,
                max_files: 4,
                max_workers: 1,
                interval: Duration::from_secs(10),
            },
        );
        manager.rotate_once().await;
        assert_eq!(*fake.reopened.lock().unwrap(), 1);
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        // max_files 4: the live file, the new rotated one, and 2 older ones, compressed.
        assert_eq!(names.len(), 4, "{names:?}");
        assert_eq!(names[0], "0.log");
        assert_eq!(names[1], "0.log.20240101-000002.gz");
        assert_eq!(names[2], "0.log.20240101-000003.gz");
        assert!(
            names[3].starts_with("0.log.20") && !names[3].ends_with(".gz"),
            "{names:?}"
        );
        assert_eq!(
            std::fs::metadata(&log).unwrap().len(),
            0,
            "the runtime reopened it"
        );
        let mut text = String::new();
        use std::io::Read;
        flate2::read::GzDecoder::new(std::fs::File::open(dir.path().join(&names[2])).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "old 2\n");
        // A small log is left alone.
        manager.rotate_once().await;
        assert_eq!(*fake.reopened.lock().unwrap(), 1);
    }

    #[test]
    fn rotated_names_carry_upstreams_timestamp() {
        let t: jiff::Timestamp = "2024-03-05T06:07:08Z".parse().unwrap();
        assert_eq!(
            rotated_name(Path::new("/l/0.log"), t),
            PathBuf::from("/l/0.log.20240305-060708")
        );
    }
}
