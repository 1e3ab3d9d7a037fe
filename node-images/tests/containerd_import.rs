//! The archives against a real containerd: `ctr -n k8s.io images import` names them after the
//! index annotations, unpacks the layers with the overlayfs snapshotter, and the images run.
//!
//! The test starts its own containerd (CRI plugin disabled) with root, state and socket in a
//! temporary directory, so it does not touch a containerd the host may run. It needs root,
//! containerd, ctr and runc, like the rest of the project's runtime tests; it fails (never
//! skips) without them.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use node_images::oci::{BUSYBOX_IMAGE, DEFAULT_BUSYBOX_PATH, LocalImages, PAUSE_IMAGE};

const CONTAINERD: &str = "/usr/bin/containerd";
const CTR: &str = "/usr/bin/ctr";

/// Runs `command` to completion, killing it after `timeout`.
fn run(mut command: Command, timeout: Duration) -> Output {
    let description = format!("{command:?}");
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("failed to start {description}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(output) => output.unwrap_or_else(|e| panic!("{description}: {e}")),
        Err(_) => {
            kill(pid, "KILL");
            panic!("{description} did not finish within {timeout:?}");
        }
    }
}

/// Sends `signal` to `pid`, a process this test started.
fn kill(pid: u32, signal: &str) {
    let _ = Command::new(DEFAULT_BUSYBOX_PATH)
        .args(["kill", &format!("-{signal}"), &pid.to_string()])
        .status();
}

struct Containerd {
    child: Child,
    address: PathBuf,
    containers: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Containerd {
    fn start() -> Self {
        for tool in [CONTAINERD, CTR, "/usr/sbin/runc", DEFAULT_BUSYBOX_PATH] {
            assert!(
                Path::new(tool).is_file(),
                "{tool} is missing: the project's setup script installs containerd, runc and busybox-static"
            );
        }
        let uid = std::fs::metadata("/proc/self").expect("/proc/self").uid();
        assert_eq!(uid, 0, "this test runs containerd and needs root");

        let dir = tempfile::tempdir().unwrap();
        let address = dir.path().join("containerd.sock");
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = {root:?}\nstate = {state:?}\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = {address:?}\n[ttrpc]\n  address = {ttrpc:?}\n",
                root = dir.path().join("root"),
                state = dir.path().join("state"),
                ttrpc = dir.path().join("containerd.sock.ttrpc"),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("containerd.log")).unwrap();
        let child = Command::new(CONTAINERD)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let containerd = Self {
            child,
            address,
            containers: Vec::new(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if containerd.address.exists() && containerd.ctr(&["version"]).status.success() {
                break containerd;
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not come up; log:\n{}",
                containerd.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("containerd.log")).unwrap_or_default()
    }

    fn ctr_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(CTR);
        command
            .arg("--address")
            .arg(&self.address)
            .args(["--namespace", "k8s.io"])
            .args(args);
        command
    }

    fn ctr(&self, args: &[&str]) -> Output {
        run(self.ctr_command(args), Duration::from_secs(60))
    }

    fn ctr_ok(&self, args: &[&str]) -> String {
        let output = self.ctr(args);
        assert!(
            output.status.success(),
            "ctr {args:?} failed: {}\ncontainerd log:\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
        String::from_utf8(output.stdout).unwrap()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Containers first, so no shim outlives this containerd.
        for id in std::mem::take(&mut self.containers) {
            let _ = self.ctr(&["tasks", "kill", "--signal", "SIGKILL", &id]);
            let _ = self.ctr(&["tasks", "delete", "--force", &id]);
            let _ = self.ctr(&["containers", "delete", &id]);
        }
        kill(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn containerd_imports_and_runs_the_images() {
    assert!(
        Path::new(DEFAULT_BUSYBOX_PATH).is_file(),
        "{DEFAULT_BUSYBOX_PATH} is missing: install Debian's busybox-static package"
    );
    let images_dir = tempfile::tempdir().unwrap();
    let images = LocalImages::with_defaults(images_dir.path(), DEFAULT_BUSYBOX_PATH)
        .write()
        .unwrap();

    let mut containerd = Containerd::start();
    for image in &images {
        containerd.ctr_ok(&["images", "import", image.path.to_str().unwrap()]);
    }

    // Named by io.containerd.image.name, with our manifest digest, unpacked for this platform.
    let listing = containerd.ctr_ok(&["images", "list"]);
    let mut names = Vec::new();
    for line in listing.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        names.push(fields[0].to_owned());
        let image = images
            .iter()
            .find(|i| i.reference == fields[0])
            .unwrap_or_else(|| panic!("unexpected image {line}"));
        assert_eq!(fields[2], image.manifest_digest.to_string(), "{line}");
    }
    names.sort();
    assert_eq!(names, [BUSYBOX_IMAGE, PAUSE_IMAGE]);
    assert!(
        containerd
            .ctr_ok(&["images", "check"])
            .lines()
            .skip(1)
            .all(|l| l.contains("complete")),
        "all content present"
    );

    // busybox runs; links, modes and passwd came through the overlay snapshotter.
    let busybox_id = format!("node-images-test-busybox-{}", std::process::id());
    containerd.containers.push(busybox_id.clone());
    let out = containerd.ctr_ok(&[
        "run",
        "--rm",
        BUSYBOX_IMAGE,
        &busybox_id,
        "sh",
        "-c",
        "readlink /bin/sh; stat -c %a /tmp; head -n1 /etc/passwd; echo $PATH",
    ]);
    assert_eq!(
        out,
        "busybox\n1777\nroot:x:0:0:root:/root:/bin/sh\n\
         /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
    );

    // pause runs as PID 1 and exits 0 promptly on SIGTERM; `ctr run` returns its exit code.
    let pause_id = format!("node-images-test-pause-{}", std::process::id());
    containerd.containers.push(pause_id.clone());
    let mut run_pause = containerd.ctr_command(&["run", "--rm", PAUSE_IMAGE, &pause_id]);
    let (tx, rx) = mpsc::channel();
    let pause = run_pause
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ctr run");
    let ctr_pid = pause.id();
    std::thread::spawn(move || {
        let _ = tx.send(pause.wait_with_output());
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !containerd
        .ctr_ok(&["tasks", "list"])
        .lines()
        .any(|l| l.starts_with(&pause_id) && l.contains("RUNNING"))
    {
        assert!(Instant::now() < deadline, "pause task never ran");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Give the shell time to install its trap.
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    containerd.ctr_ok(&["tasks", "kill", "--signal", "SIGTERM", &pause_id]);
    let output = match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            kill(ctr_pid, "KILL");
            panic!("pause did not exit within 10s of SIGTERM");
        }
    };
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "pause took {:?} to exit",
        started.elapsed()
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "pause exits 0 on SIGTERM: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
