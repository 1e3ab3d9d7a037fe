//! Container mounts in CRI form, and the termination-message file: created for each container
//! instance under the pod's container directory, mounted at `terminationMessagePath`, and read
//! back into the terminated state's message (with `FallbackToLogsOnError`, the log's tail).

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use k8s_openapi::api::core::v1::Container;
use node_core::volumes::{Mount, MountPropagation};

use super::labels::{ContainerInfo, DEFAULT_TERMINATION_MESSAGE_PATH};
use crate::cri;

/// Upstream `MaxContainerTerminationMessageLength`: the file's last 4 KiB are read.
const MAX_MESSAGE_BYTES: u64 = 4 * 1024;
/// Upstream `MaxContainerTerminationMessageLogLength`.
const MAX_LOG_MESSAGE_BYTES: usize = 2 * 1024;
/// Upstream `MaxContainerTerminationMessageLogLines`.
const MAX_LOG_MESSAGE_LINES: usize = 80;

/// A volume manager's mount as a CRI mount.
pub(crate) fn cri_mount(m: &Mount) -> cri::Mount {
    let propagation = match m.propagation {
        MountPropagation::Private => cri::MountPropagation::PropagationPrivate,
        MountPropagation::HostToContainer => cri::MountPropagation::PropagationHostToContainer,
        MountPropagation::Bidirectional => cri::MountPropagation::PropagationBidirectional,
    };
    cri::Mount {
        container_path: m.container_path.clone(),
        host_path: m.host_path.display().to_string(),
        readonly: m.read_only,
        selinux_relabel: m.selinux_relabel,
        propagation: propagation as i32,
        ..Default::default()
    }
}

/// Creates this container instance's termination-message file under `dir`
/// (`<pod>/containers/<name>`), world-writable whatever the umask, and its mount at the
/// container's `terminationMessagePath`. `None` when the container has no such path.
pub(crate) fn termination_message_mount(
    dir: &Path,
    container: &Container,
) -> std::io::Result<Option<cri::Mount>> {
    let path = container
        .termination_message_path
        .as_deref()
        .unwrap_or(DEFAULT_TERMINATION_MESSAGE_PATH);
    if path.is_empty() {
        return Ok(None);
    }
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)?;
    }
    // The pod directory and container name are unique; a random id tells instances apart.
    let file = dir.join(format!("{:08x}", rand_u32()));
    std::fs::File::create(&file)?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666))?;
    Ok(Some(cri::Mount {
        container_path: path.to_owned(),
        host_path: file.display().to_string(),
        ..Default::default()
    }))
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish() as u32
}

/// The last `max` bytes of a file.
fn read_tail(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len > max {
        file.seek(SeekFrom::Start(len - max))?;
    }
    let mut data = Vec::with_capacity(len.min(max) as usize);
    file.take(max).read_to_end(&mut data)?;
    Ok(data)
}

/// The message of an exited container (upstream `getTerminationMessage` and
/// `readLastStringFromContainerLogs`): what it wrote to its termination-message file, or, with
/// `FallbackToLogsOnError` and a failure exit code, the tail of its log when the file is empty.
pub(crate) fn termination_message(s: &cri::ContainerStatus, info: &ContainerInfo) -> String {
    let fallback = info.termination_message_policy == "FallbackToLogsOnError"
        && s.exit_code != 0
        && s.reason != "ContainerCannotRun";
    let mut check_logs = fallback;
    let mut message = String::new();
    if !info.termination_message_path.is_empty()
        && let Some(m) = s
            .mounts
            .iter()
            .find(|m| m.container_path == info.termination_message_path)
    {
        match read_tail(Path::new(&m.host_path), MAX_MESSAGE_BYTES) {
            Ok(data) => {
                check_logs = fallback && data.is_empty();
                message = String::from_utf8_lossy(&data).into_owned();
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return format!("Error on reading termination log {}: {e}", m.host_path);
            }
        }
    }
    if check_logs && !s.log_path.is_empty() {
        message = log_tail(Path::new(&s.log_path));
    }
    message
}

/// The last lines of a CRI log file, their content only (`<time> <stream> <tag> <content>`).
fn log_tail(path: &Path) -> String {
    let Ok(data) = read_tail(path, (MAX_LOG_MESSAGE_BYTES * 8) as u64) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&data);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(MAX_LOG_MESSAGE_LINES);
    let mut out = String::new();
    for line in &lines[start..] {
        let mut parts = line.splitn(4, ' ');
        let (_time, _stream, tag, content) =
            (parts.next(), parts.next(), parts.next(), parts.next());
        out.push_str(content.unwrap_or_default());
        // A full line ends with a newline; a partial (`P`) one continues.
        if tag != Some("P") {
            out.push('\n');
        }
    }
    if out.len() > MAX_LOG_MESSAGE_BYTES {
        let mut cut = out.len() - MAX_LOG_MESSAGE_BYTES;
        while !out.is_char_boundary(cut) {
            cut += 1;
        }
        out = out[cut..].to_owned();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(mounts: Vec<cri::Mount>, exit_code: i32, log_path: &Path) -> cri::ContainerStatus {
        cri::ContainerStatus {
            mounts,
            exit_code,
            log_path: log_path.display().to_string(),
            ..Default::default()
        }
    }

    fn info(policy: &str) -> ContainerInfo {
        ContainerInfo {
            termination_message_path: "/dev/termination-log".into(),
            termination_message_policy: policy.into(),
            ..Default::default()
        }
    }

    #[test]
    fn message_comes_from_the_file_then_from_the_log_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let container = Container {
            name: "main".into(),
            ..Default::default()
        };
        let mount = termination_message_mount(dir.path(), &container)
            .expect("create")
            .expect("a mount");
        assert_eq!(mount.container_path, "/dev/termination-log");
        let mode = std::fs::metadata(&mount.host_path)
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o666);
        let log = dir.path().join("0.log");
        std::fs::write(
            &log,
            "2026-01-01T00:00:00.1Z stdout F first\n2026-01-01T00:00:00.2Z stderr P part\n2026-01-01T00:00:00.3Z stderr F ial\n",
        )
        .expect("log");

        // Empty file, File policy: no message.
        let s = status(vec![mount.clone()], 1, &log);
        assert_eq!(termination_message(&s, &info("File")), "");
        // Empty file, fallback, failure: the log's tail.
        assert_eq!(
            termination_message(&s, &info("FallbackToLogsOnError")),
            "first\npartial\n"
        );
        // Success never falls back.
        let ok = status(vec![mount.clone()], 0, &log);
        assert_eq!(termination_message(&ok, &info("FallbackToLogsOnError")), "");
        // What the container wrote wins, its last 4 KiB.
        let long = format!("{}{}", "x".repeat(5000), "the end");
        std::fs::write(&mount.host_path, &long).expect("write");
        let got = termination_message(&s, &info("FallbackToLogsOnError"));
        assert_eq!(got.len(), 4096);
        assert!(got.ends_with("the end"));
    }

    #[test]
    fn mounts_keep_their_propagation_and_mode() {
        let m = cri_mount(&Mount {
            name: "data".into(),
            container_path: "/data".into(),
            host_path: "/var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/data".into(),
            read_only: true,
            selinux_relabel: true,
            propagation: MountPropagation::HostToContainer,
        });
        assert!(m.readonly && m.selinux_relabel);
        assert_eq!(
            m.propagation,
            cri::MountPropagation::PropagationHostToContainer as i32
        );
    }
}
