//! Volume ownership for a pod's `fsGroup` (upstream `SetVolumeOwnership`,
//! `pkg/volume/volume_linux.go`): every file and directory of a volume the kubelet manages
//! gets the fsGroup as its group and group read (and write, unless the volume is read-only)
//! permission; directories also get group execute and the setgid bit, so that what the
//! containers create there inherits the group.
//!
//! `fsGroupChangePolicy: OnRootMismatch` skips the walk when the volume's root already has the
//! group and permissions; `Always` (the default) walks every time.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Group read and write.
const RW_MASK: u32 = 0o660;
/// Group read.
const RO_MASK: u32 = 0o440;
/// Group execute (directories).
const EXEC_MASK: u32 = 0o110;
/// The setgid bit (directories).
const SETGID: u32 = 0o2000;

/// When the ownership is changed (`spec.securityContext.fsGroupChangePolicy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChangePolicy {
    /// Walk the whole volume on every set-up.
    #[default]
    Always,
    /// Walk only if the root does not already have the group, permissions and setgid bit.
    OnRootMismatch,
}

impl ChangePolicy {
    /// The policy a pod asks for; `Always` when it names none (or an unknown one, which
    /// validation refuses).
    pub fn of(pod: &k8s_openapi::api::core::v1::Pod) -> Self {
        let policy = pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref())
            .and_then(|sc| sc.fs_group_change_policy.as_deref());
        match policy {
            Some("OnRootMismatch") => ChangePolicy::OnRootMismatch,
            _ => ChangePolicy::Always,
        }
    }
}

/// The pod's `fsGroup`, if it sets one in range.
pub fn fs_group(pod: &k8s_openapi::api::core::v1::Pod) -> Option<u32> {
    let gid = pod.spec.as_ref()?.security_context.as_ref()?.fs_group?;
    u32::try_from(gid).ok()
}

/// Whether `root` lacks what the ownership change gives it (upstream
/// `requiresPermissionChange`): the group, the permission bits, the setgid bit, or is not a
/// directory.
pub fn requires_change(root: &Path, gid: u32, read_only: bool) -> bool {
    let Ok(meta) = std::fs::metadata(root) else {
        return true;
    };
    if meta.gid() != gid || !meta.is_dir() {
        return true;
    }
    let wanted = if read_only { RO_MASK } else { RW_MASK } | EXEC_MASK;
    let mode = meta.permissions().mode();
    mode & wanted != wanted || mode & SETGID == 0
}

/// Gives `root` and everything under it to `gid` as the module docs describe. Symbolic links
/// are re-grouped but not followed, and their targets' modes are left to the walk.
pub fn set_volume_ownership(
    root: &Path,
    gid: u32,
    read_only: bool,
    policy: ChangePolicy,
) -> io::Result<()> {
    if policy == ChangePolicy::OnRootMismatch && !requires_change(root, gid, read_only) {
        return Ok(());
    }
    let mask = if read_only { RO_MASK } else { RW_MASK };
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            &path,
            None,
            Some(nix::unistd::Gid::from_raw(gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("chown {}: {e}", path.display()),
            )
        })?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mut mode = meta.permissions().mode() | mask;
        if meta.is_dir() {
            mode |= SETGID | EXEC_MASK;
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn every_entry_gets_the_group_and_directories_the_setgid_bit() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("vol");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(root.join("sub/file"), "x").unwrap();
        std::fs::set_permissions(
            root.join("sub/file"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        symlink("sub/file", root.join("link")).unwrap();
        assert!(requires_change(&root, 1234, false));
        set_volume_ownership(&root, 1234, false, ChangePolicy::Always).unwrap();
        for p in [&root, &root.join("sub"), &root.join("sub/file")] {
            assert_eq!(std::fs::metadata(p).unwrap().gid(), 1234, "{}", p.display());
        }
        assert_eq!(
            std::fs::symlink_metadata(root.join("link")).unwrap().gid(),
            1234
        );
        assert_eq!(mode(&root), 0o2775);
        assert_eq!(mode(&root.join("sub/file")), 0o660);
        assert!(!requires_change(&root, 1234, false));
        assert!(requires_change(&root, 99, false));

        // Read-only volumes get group read only.
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::write(ro.join("f"), "x").unwrap();
        std::fs::set_permissions(ro.join("f"), std::fs::Permissions::from_mode(0o600)).unwrap();
        set_volume_ownership(&ro, 1234, true, ChangePolicy::Always).unwrap();
        assert_eq!(mode(&ro.join("f")), 0o640);
    }

    #[test]
    fn on_root_mismatch_skips_a_volume_whose_root_already_matches() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("vol");
        std::fs::create_dir(&root).unwrap();
        set_volume_ownership(&root, 1234, false, ChangePolicy::Always).unwrap();
        // A file added since keeps its group under OnRootMismatch, not under Always.
        std::fs::write(root.join("late"), "x").unwrap();
        nix::unistd::chown(
            &root.join("late"),
            None,
            Some(nix::unistd::Gid::from_raw(0)),
        )
        .unwrap();
        set_volume_ownership(&root, 1234, false, ChangePolicy::OnRootMismatch).unwrap();
        assert_eq!(std::fs::metadata(root.join("late")).unwrap().gid(), 0);
        set_volume_ownership(&root, 1234, false, ChangePolicy::Always).unwrap();
        assert_eq!(std::fs::metadata(root.join("late")).unwrap().gid(), 1234);
    }
}
