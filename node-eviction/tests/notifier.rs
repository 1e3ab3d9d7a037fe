//! The memory threshold notifiers: cgroup v1 events on a real memory cgroup (this machine's
//! hierarchy), and the v2 poll on a usage the test sets.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use node_eviction::notifier::{MemcgNotifier, PollNotifier, ThresholdNotifier};

const MI: u64 = 1 << 20;

/// A memory cgroup of the test's own, removed (with its tmpfs files) on drop.
struct TestCgroup {
    dir: std::path::PathBuf,
    files: Vec<std::path::PathBuf>,
}

impl TestCgroup {
    fn new() -> TestCgroup {
        let root = std::path::Path::new("/sys/fs/cgroup/memory");
        assert!(
            root.join("cgroup.event_control").exists(),
            "these tests need the cgroup v1 memory controller at {} (this machine's hierarchy)",
            root.display()
        );
        let dir = root.join(format!("node-eviction-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        TestCgroup {
            dir,
            files: Vec::new(),
        }
    }

    fn usage(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("memory.usage_in_bytes"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Charges `bytes` to the cgroup: a process in it writes a tmpfs file that size.
    fn charge(&mut self, bytes: u64) {
        let file = std::path::PathBuf::from(format!(
            "/dev/shm/node-eviction-test-{}-{}",
            std::process::id(),
            self.files.len()
        ));
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {} && head -c {bytes} /dev/zero > {}",
                self.dir.join("cgroup.procs").display(),
                file.display()
            ))
            .status()
            .unwrap();
        assert!(status.success());
        self.files.push(file);
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

async fn fires_within(notifier: &dyn ThresholdNotifier, within: Duration) -> bool {
    tokio::time::timeout(within, notifier.crossed())
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_memcg_notifier_fires_when_usage_crosses_the_armed_level_and_not_before() {
    let mut cgroup = TestCgroup::new();
    let notifier = Arc::new(MemcgNotifier::new(&cgroup.dir));
    let base = cgroup.usage();
    notifier.arm(base + 20 * MI).unwrap();
    // Below the level: nothing.
    let waiting = {
        let n = notifier.clone();
        tokio::spawn(async move { fires_within(n.as_ref(), Duration::from_secs(1)).await })
    };
    cgroup.charge(10 * MI);
    assert!(!waiting.await.unwrap(), "fired below the level");
    // Across it: within a second.
    let waiting = {
        let n = notifier.clone();
        tokio::spawn(async move { fires_within(n.as_ref(), Duration::from_secs(1)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    cgroup.charge(20 * MI);
    assert!(
        waiting.await.unwrap(),
        "no event when usage crossed the level"
    );

    // Moved up: the old level is gone, the new one fires.
    let now = cgroup.usage();
    notifier.arm(now + 30 * MI).unwrap();
    let waiting = {
        let n = notifier.clone();
        tokio::spawn(async move { fires_within(n.as_ref(), Duration::from_secs(1)).await })
    };
    cgroup.charge(10 * MI);
    assert!(!waiting.await.unwrap(), "fired below the new level");
    let waiting = {
        let n = notifier.clone();
        tokio::spawn(async move { fires_within(n.as_ref(), Duration::from_secs(1)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    cgroup.charge(30 * MI);
    assert!(waiting.await.unwrap(), "no event at the new level");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memcg_notifier_on_a_missing_cgroup_says_which_file() {
    let notifier = MemcgNotifier::new("/sys/fs/cgroup/memory/no-such-cgroup-here");
    let error = notifier.arm(1 << 30).unwrap_err().to_string();
    assert!(
        error.contains("/sys/fs/cgroup/memory/no-such-cgroup-here/memory.usage_in_bytes"),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_poll_notifier_fires_on_a_crossing_either_way() {
    let usage = Arc::new(AtomicU64::new(100));
    let read = {
        let usage = usage.clone();
        move || Some(usage.load(Ordering::SeqCst))
    };
    let notifier = Arc::new(PollNotifier::new("a test figure", read));
    assert!(notifier.describe().contains("500 ms poll of a test figure"));
    // Not armed: never fires.
    assert!(!fires_within(notifier.as_ref(), Duration::from_secs(5)).await);
    notifier.arm(150).unwrap();
    let waiting = {
        let n = notifier.clone();
        tokio::spawn(async move { fires_within(n.as_ref(), Duration::from_secs(5)).await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    usage.store(160, Ordering::SeqCst);
    assert!(waiting.await.unwrap(), "up across the level");
    let waiting = {
        let n = notifier.clone();
        tokio::spawn(async move { fires_within(n.as_ref(), Duration::from_secs(3)).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished(), "no crossing yet");
    usage.store(120, Ordering::SeqCst);
    assert!(waiting.await.unwrap(), "down across the level");
}
