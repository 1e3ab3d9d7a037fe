//! Linux mount utilities: tmpfs and bind mounts, unmounting, and the mount table read from
//! `/proc/self/mountinfo`.
//!
//! The mount table parser ([`MountTable::parse`]) works on any target; the system calls are
//! Linux only, and on other targets the functions return [`MountError::Unsupported`] (or an
//! [`io::ErrorKind::Unsupported`] error).

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// Where the kernel publishes the mount table of the calling process.
pub const MOUNTINFO_PATH: &str = "/proc/self/mountinfo";

/// An error of a mount or unmount.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The system call failed.
    #[error("{op} {path}: {source}", path = .path.display())]
    Sys {
        /// What was attempted, e.g. `mount tmpfs on`.
        op: &'static str,
        /// The mount target.
        path: PathBuf,
        /// The error the kernel returned.
        source: io::Error,
    },
    /// `unmount` was asked to unmount a path that is not a mount point.
    #[error("unmount {path}: not a mount point", path = .0.display())]
    NotMountPoint(PathBuf),
    /// The operation is not available on this platform.
    #[error("{0} is not supported on this platform")]
    Unsupported(&'static str),
}

/// One line of `/proc/<pid>/mountinfo` (see proc(5)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The mount's unique id.
    pub id: u32,
    /// The id of the parent mount.
    pub parent_id: u32,
    /// The directory of the filesystem that forms the root of this mount, unescaped.
    pub root: PathBuf,
    /// The mount point relative to the process's root directory, unescaped.
    pub mount_point: PathBuf,
    /// The per-mount options (`rw,relatime`).
    pub options: String,
    /// The filesystem type (`tmpfs`, `ext4`).
    pub fs_type: String,
    /// The filesystem-specific source (`/dev/vda1`, `tmpfs`), unescaped.
    pub source: String,
}

/// A snapshot of a mount table, in the kernel's order (parents before children, a mount
/// stacked on the same point after the one it covers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountTable {
    entries: Vec<MountEntry>,
}

impl MountTable {
    /// The mount table of the calling process ([`MOUNTINFO_PATH`]).
    pub fn current() -> io::Result<Self> {
        Self::read_from(Path::new(MOUNTINFO_PATH))
    }

    /// Reads and parses a mountinfo file.
    pub fn read_from(path: &Path) -> io::Result<Self> {
        let text = fs::read_to_string(path)
            .map_err(|err| io::Error::new(err.kind(), format!("read {}: {err}", path.display())))?;
        Self::parse(&text).map_err(|err| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("parse {}: {err}", path.display()),
            )
        })
    }

    /// Parses the text of a mountinfo file; the error names the malformed line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let entries = text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(index, line)| {
                parse_line(line).ok_or_else(|| format!("malformed line {}: {line:?}", index + 1))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { entries })
    }

    /// The entries, in the kernel's order.
    pub fn entries(&self) -> &[MountEntry] {
        &self.entries
    }

    /// Whether some mount has `path` as its mount point. `path` is compared as given: pass a
    /// canonical path (see [`is_mount_point`]).
    pub fn is_mount_point(&self, path: &Path) -> bool {
        self.entries.iter().any(|entry| entry.mount_point == path)
    }

    /// Every mount point equal to or below `path` (compared component-wise, as given), deepest
    /// first; mounts stacked on the same point come topmost first, so unmounting in this
    /// order tears everything down. A point with several mounts appears once per mount.
    pub fn mounts_under(&self, path: &Path) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = self
            .entries
            .iter()
            .rev()
            .filter(|entry| entry.mount_point.starts_with(path))
            .map(|entry| entry.mount_point.clone())
            .collect();
        // Stable: equal depths keep the reversed (newest first) kernel order.
        found.sort_by_key(|point| std::cmp::Reverse(point.components().count()));
        found
    }
}

/// Parses `id parent major:minor root mount_point options [optional...] - fstype source
/// super_options`.
fn parse_line(line: &str) -> Option<MountEntry> {
    let mut fields = line.split(' ');
    let id = fields.next()?.parse().ok()?;
    let parent_id = fields.next()?.parse().ok()?;
    let _device = fields.next()?;
    let root = unescape_path(fields.next()?);
    let mount_point = unescape_path(fields.next()?);
    let options = fields.next()?.to_owned();
    // Optional fields (`shared:1`, `master:2`) run up to the `-` separator.
    fields.by_ref().find(|field| *field == "-")?;
    let fs_type = fields.next()?.to_owned();
    let source = String::from_utf8_lossy(&unescape(fields.next()?)).into_owned();
    Some(MountEntry {
        id,
        parent_id,
        root,
        mount_point,
        options,
        fs_type,
        source,
    })
}

fn unescape_path(field: &str) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape(field)))
}

/// Decodes the kernel's `\ooo` octal escapes (`\040` space, `\011` tab, `\012` newline,
/// `\134` backslash); anything else is kept as it is.
fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some(byte) = octal_escape(&bytes[i..]) {
            out.push(byte);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// The byte of a `\ooo` escape at the start of `bytes`, if there is one.
fn octal_escape(bytes: &[u8]) -> Option<u8> {
    let [b'\\', digits @ ..] = bytes.get(..4)? else {
        return None;
    };
    digits.iter().try_fold(0u8, |value, digit| match digit {
        b'0'..=b'7' => value.checked_mul(8)?.checked_add(digit - b'0'),
        _ => None,
    })
}

/// Whether `path` is a mount point of the calling process. `path` is canonicalized first
/// (symlinks resolved), so it must exist.
pub fn is_mount_point(path: &Path) -> io::Result<bool> {
    let canonical = canonicalize(path)?;
    Ok(MountTable::current()?.is_mount_point(&canonical))
}

/// Every mount point equal to or below `path` (canonicalized first), deepest first: the
/// order in which to unmount them (see [`MountTable::mounts_under`]).
pub fn mounts_under(path: &Path) -> io::Result<Vec<PathBuf>> {
    let canonical = canonicalize(path)?;
    Ok(MountTable::current()?.mounts_under(&canonical))
}

fn canonicalize(path: &Path) -> io::Result<PathBuf> {
    fs::canonicalize(path).map_err(|err| {
        io::Error::new(
            err.kind(),
            format!("canonicalize {}: {err}", path.display()),
        )
    })
}

#[cfg(target_os = "linux")]
mod sys {
    use super::MountError;
    use nix::errno::Errno;
    use nix::mount::{MntFlags, MsFlags};
    use std::path::Path;

    fn sys_error(op: &'static str, path: &Path, errno: Errno) -> MountError {
        MountError::Sys {
            op,
            path: path.to_owned(),
            source: errno.into(),
        }
    }

    /// The tmpfs mount data: `size=<n>` only when a size is given, then `mode=<octal>`.
    pub(super) fn tmpfs_options(size_bytes: Option<u64>, mode: u32) -> String {
        let mode = format!("mode={:04o}", mode & 0o7777);
        match size_bytes {
            Some(size) => format!("size={size},{mode}"),
            None => mode,
        }
    }

    pub(super) fn mount_tmpfs(
        target: &Path,
        size_bytes: Option<u64>,
        mode: u32,
    ) -> Result<(), MountError> {
        let options = tmpfs_options(size_bytes, mode);
        nix::mount::mount(
            Some("tmpfs"),
            target,
            Some("tmpfs"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|errno| sys_error("mount tmpfs on", target, errno))?;
        tracing::debug!(target = %target.display(), %options, "mounted tmpfs");
        Ok(())
    }

    pub(super) fn bind_mount(
        source: &Path,
        target: &Path,
        read_only: bool,
    ) -> Result<(), MountError> {
        nix::mount::mount(
            Some(source),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|errno| sys_error("bind mount on", target, errno))?;
        if read_only {
            let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            if let Err(errno) =
                nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
            {
                // Never leave a writable bind behind a failed read-only request.
                if let Err(undo) = nix::mount::umount2(target, MntFlags::MNT_DETACH) {
                    tracing::warn!(target = %target.display(), error = %undo, "undo bind mount");
                }
                return Err(sys_error("remount read-only", target, errno));
            }
        }
        tracing::debug!(
            source = %source.display(),
            target = %target.display(),
            read_only,
            "bind mounted"
        );
        Ok(())
    }

    pub(super) fn make_rshared(path: &Path) -> Result<(), MountError> {
        let canonical = std::fs::canonicalize(path).map_err(|e| MountError::Sys {
            op: "resolve",
            path: path.to_owned(),
            source: e,
        })?;
        let is_mount = super::MountTable::current()
            .map(|t| t.is_mount_point(&canonical))
            .unwrap_or(false);
        if !is_mount {
            // Recursive, so that mounts already below (a managed containerd's, volumes of
            // running pods) stay visible through the new mount.
            nix::mount::mount(
                Some(&canonical),
                &canonical,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|errno| sys_error("bind mount on", &canonical, errno))?;
        }
        nix::mount::mount(
            None::<&str>,
            &canonical,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|errno| sys_error("make rshared", &canonical, errno))?;
        tracing::debug!(path = %canonical.display(), "made rshared");
        Ok(())
    }

    pub(super) fn unmount(target: &Path) -> Result<(), MountError> {
        match nix::mount::umount2(target, MntFlags::empty()) {
            Ok(()) => {
                tracing::debug!(target = %target.display(), "unmounted");
                Ok(())
            }
            Err(Errno::EINVAL) => Err(MountError::NotMountPoint(target.to_owned())),
            Err(errno) => Err(sys_error("unmount", target, errno)),
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use super::MountError;
    use std::path::Path;

    pub(super) fn mount_tmpfs(_: &Path, _: Option<u64>, _: u32) -> Result<(), MountError> {
        Err(MountError::Unsupported("mounting tmpfs"))
    }

    pub(super) fn bind_mount(_: &Path, _: &Path, _: bool) -> Result<(), MountError> {
        Err(MountError::Unsupported("bind mounting"))
    }

    pub(super) fn unmount(_: &Path) -> Result<(), MountError> {
        Err(MountError::Unsupported("unmounting"))
    }

    pub(super) fn make_rshared(_: &Path) -> Result<(), MountError> {
        Err(MountError::Unsupported("shared mounts"))
    }
}

/// Mounts a tmpfs on `target` with options `size=<size_bytes>` (only when given) and
/// `mode=<mode in octal>`.
pub fn mount_tmpfs(target: &Path, size_bytes: Option<u64>, mode: u32) -> Result<(), MountError> {
    sys::mount_tmpfs(target, size_bytes, mode)
}

/// Bind mounts `source` on `target`; when `read_only`, remounts the bind read-only
/// (`MS_BIND|MS_REMOUNT|MS_RDONLY`), undoing the bind if that fails.
pub fn bind_mount(source: &Path, target: &Path, read_only: bool) -> Result<(), MountError> {
    sys::bind_mount(source, target, read_only)
}

/// Makes `path` a shared mount, recursively (upstream kubelet's `MakeRShared` of its root
/// directory): bind-mounts it on itself first when it is not a mount point. Mounts made below
/// it then propagate into containers that mount a volume with `HostToContainer`, and mounts
/// a `Bidirectional` container makes propagate back.
pub fn make_rshared(path: &Path) -> Result<(), MountError> {
    sys::make_rshared(path)
}

/// Unmounts the topmost mount on `target` (`umount2` without flags); a path that is not a
/// mount point gives [`MountError::NotMountPoint`].
pub fn unmount(target: &Path) -> Result<(), MountError> {
    sys::unmount(target)
}

/// Unmounts whatever is mounted at or below `dir`, deepest first, and removes the tree
/// without leaving its filesystem. Refuses to remove a tree that still has mounts in it.
pub fn unmount_and_remove(dir: &Path) -> Result<(), String> {
    if !dir.exists() {
        return Ok(());
    }
    let mounts = mounts_under(dir)
        .map_err(|e| format!("cannot read the mount table for {}: {e}", dir.display()))?;
    for m in &mounts {
        unmount(m).map_err(|e| format!("cannot unmount {}: {e}", m.display()))?;
    }
    let left = mounts_under(dir)
        .map_err(|e| format!("cannot read the mount table for {}: {e}", dir.display()))?;
    if let Some(m) = left.first() {
        return Err(format!(
            "{} is still mounted; {} is kept",
            m.display(),
            dir.display()
        ));
    }
    remove_all_one_filesystem(dir).map_err(|e| format!("cannot remove {}: {e}", dir.display()))
}

/// Removes `path` and what is below it without leaving its filesystem: an entry on another
/// device (a mount that appeared after the mount table was read) stops the removal with an
/// error instead of deleting someone else's data. Symlinks are removed, never followed.
pub fn remove_all_one_filesystem(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let device = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta.dev(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    remove_below(path, device)
}

fn remove_below(path: &Path, device: u64) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path)?;
    if meta.dev() != device {
        return Err(std::io::Error::other(format!(
            "{} is on another filesystem; not removed",
            path.display()
        )));
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            remove_below(&entry?.path(), device)?;
        }
        std::fs::remove_dir(path)
    } else {
        std::fs::remove_file(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 27 0:35 / /var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/cache rw shared:20 master:3 - tmpfs tmpfs rw,size=1024k
41 40 0:36 / /var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/cache/with\\040space\\011tab\\012nl\\134bs rw - tmpfs my\\040src rw
42 27 254:0 /srv/data /var/lib/kubelet/pods/u1/volumes/kubernetes.io~host-path/data ro - ext4 /dev/vda rw
43 40 0:37 / /var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/cache rw - tmpfs tmpfs rw
";

    const POD: &str = "/var/lib/kubelet/pods/u1";

    #[test]
    fn parse_reads_every_field_of_a_fixture() {
        let table = MountTable::parse(FIXTURE).unwrap();
        assert_eq!(table.entries().len(), 6);
        let host_path = &table.entries()[4];
        assert_eq!(
            host_path,
            &MountEntry {
                id: 42,
                parent_id: 27,
                root: "/srv/data".into(),
                mount_point: format!("{POD}/volumes/kubernetes.io~host-path/data").into(),
                options: "ro".into(),
                fs_type: "ext4".into(),
                source: "/dev/vda".into(),
            }
        );
        // Optional fields before the separator are skipped.
        assert_eq!(table.entries()[2].fs_type, "tmpfs");
        assert_eq!(table.entries()[2].source, "tmpfs");
    }

    #[test]
    fn parse_decodes_octal_escapes() {
        let table = MountTable::parse(FIXTURE).unwrap();
        let escaped = &table.entries()[3];
        assert_eq!(
            escaped.mount_point,
            Path::new(&format!(
                "{POD}/volumes/kubernetes.io~empty-dir/cache/with space\ttab\nnl\\bs"
            ))
        );
        assert_eq!(escaped.source, "my src");
        // A backslash not followed by three octal digits is kept.
        assert_eq!(unescape("a\\9b\\04"), b"a\\9b\\04");
    }

    #[test]
    fn parse_names_a_malformed_line() {
        let err = MountTable::parse("22 27 0:21 / /proc rw - proc proc rw\n23 oops\n").unwrap_err();
        assert_eq!(err, "malformed line 2: \"23 oops\"");
        // A line without the `-` separator is malformed too.
        assert!(MountTable::parse("22 27 0:21 / /proc rw proc proc rw").is_err());
    }

    #[test]
    fn read_from_reads_an_injected_file_and_names_it_on_error() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("mountinfo");
        fs::write(&path, FIXTURE).unwrap();
        let table = MountTable::read_from(&path).unwrap();
        assert!(table.is_mount_point(Path::new("/proc")));

        let missing = tmp.path().join("missing");
        let err = MountTable::read_from(&missing).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains(&missing.display().to_string()));
    }

    #[test]
    fn table_is_mount_point_compares_whole_paths() {
        let table = MountTable::parse(FIXTURE).unwrap();
        assert!(table.is_mount_point(Path::new("/")));
        assert!(table.is_mount_point(Path::new(&format!(
            "{POD}/volumes/kubernetes.io~empty-dir/cache"
        ))));
        assert!(!table.is_mount_point(Path::new(POD)));
        assert!(!table.is_mount_point(Path::new(&format!(
            "{POD}/volumes/kubernetes.io~empty-dir/cach"
        ))));
    }

    #[test]
    fn table_mounts_under_lists_deepest_first_topmost_first() {
        let table = MountTable::parse(FIXTURE).unwrap();
        let cache = format!("{POD}/volumes/kubernetes.io~empty-dir/cache");
        let expected: Vec<PathBuf> = vec![
            format!("{cache}/with space\ttab\nnl\\bs").into(),
            // Two mounts are stacked on `cache`: the newer (id 43) first.
            cache.clone().into(),
            cache.clone().into(),
        ];
        let mut under_empty_dir =
            table.mounts_under(Path::new(&format!("{POD}/volumes/kubernetes.io~empty-dir")));
        assert_eq!(under_empty_dir, expected);
        under_empty_dir = table.mounts_under(Path::new(&cache));
        assert_eq!(under_empty_dir, expected);

        let under_pod = table.mounts_under(Path::new(POD));
        assert_eq!(under_pod.len(), 4);
        assert_eq!(under_pod[0], expected[0]);
        // A path prefix that is not a component prefix does not match.
        assert!(table.mounts_under(Path::new("/var/lib/kube")).is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn tmpfs_options_add_size_only_when_given() {
        assert_eq!(sys::tmpfs_options(None, 0o755), "mode=0755");
        assert_eq!(
            sys::tmpfs_options(Some(1 << 20), 0o1777),
            "size=1048576,mode=1777"
        );
    }

    #[cfg(target_os = "linux")]
    mod real {
        use super::super::*;
        use nix::errno::Errno;
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;

        const MIB: u64 = 1 << 20;

        /// Unmounts (lazily) whatever is still mounted under its paths when dropped, so a
        /// failing assertion leaves no mount behind. Declare it after the temp dir so that
        /// it drops first.
        struct MountGuard(PathBuf);

        impl Drop for MountGuard {
            fn drop(&mut self) {
                for point in mounts_under(&self.0).unwrap_or_default() {
                    if let Err(err) = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH)
                    {
                        eprintln!("cleanup: unmount {}: {err}", point.display());
                    }
                }
            }
        }

        fn errno_of(err: &io::Error) -> Option<Errno> {
            err.raw_os_error().map(Errno::from_raw)
        }

        #[test]
        fn make_rshared_binds_recursively_and_marks_shared() {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().join("root");
            let below = root.join("below");
            fs::create_dir_all(&below).unwrap();
            let _guard = MountGuard(root.clone());
            mount_tmpfs(&below, Some(MIB), 0o755).unwrap();
            fs::write(below.join("kept"), "still here").unwrap();

            make_rshared(&root).unwrap();
            // Again: already a mount point, nothing stacked.
            make_rshared(&root).unwrap();
            let root = root.canonicalize().unwrap();
            assert!(is_mount_point(&root).unwrap());
            assert_eq!(
                fs::read_to_string(root.join("below/kept")).unwrap(),
                "still here",
                "the mount below stays visible through the recursive bind"
            );
            let mountinfo = fs::read_to_string(MOUNTINFO_PATH).unwrap();
            let lines: Vec<&str> = mountinfo
                .lines()
                .filter(|l| l.split(' ').nth(4) == Some(root.to_str().unwrap()))
                .collect();
            assert_eq!(lines.len(), 1, "one bind of the root: {lines:?}");
            assert!(lines[0].contains(" shared:"), "{}", lines[0]);
        }

        #[test]
        fn tmpfs_and_read_only_bind_mount_for_real() {
            let tmp = tempfile::tempdir().unwrap();
            let guard = MountGuard(fs::canonicalize(tmp.path()).unwrap());
            let volume = guard.0.join("volume");
            let source = guard.0.join("source");
            fs::create_dir(&volume).unwrap();
            fs::create_dir(&source).unwrap();
            fs::write(source.join("file"), b"hello").unwrap();

            // tmpfs with size=1MiB, mode=0750.
            mount_tmpfs(&volume, Some(MIB), 0o750).unwrap();
            assert!(is_mount_point(&volume).unwrap());
            assert!(!is_mount_point(&guard.0).unwrap());
            let mode = fs::metadata(&volume).unwrap().permissions().mode();
            assert_eq!(mode & 0o7777, 0o750);
            let stats = nix::sys::statvfs::statvfs(&volume).unwrap();
            let total = stats.blocks() * stats.fragment_size();
            assert!(
                (MIB..MIB + 64 * 1024).contains(&total),
                "tmpfs size is {total} bytes, expected about 1 MiB"
            );

            // Writing beyond 1 MiB fails with ENOSPC.
            let mut big = fs::File::create(volume.join("big")).unwrap();
            let err = big.write_all(&vec![b'x'; 2 * MIB as usize]).unwrap_err();
            assert_eq!(errno_of(&err), Some(Errno::ENOSPC), "{err}");
            drop(big);
            fs::remove_file(volume.join("big")).unwrap();

            // A read-only bind inside the tmpfs reads the source but refuses writes.
            let read_only = volume.join("ro");
            fs::create_dir(&read_only).unwrap();
            bind_mount(&source, &read_only, true).unwrap();
            assert!(is_mount_point(&read_only).unwrap());
            assert_eq!(fs::read(read_only.join("file")).unwrap(), b"hello");
            let err = fs::write(read_only.join("file"), b"changed").unwrap_err();
            assert_eq!(errno_of(&err), Some(Errno::EROFS), "{err}");
            fs::write(source.join("file"), b"source stays writable").unwrap();

            // Teardown order: deepest first.
            assert_eq!(
                mounts_under(&guard.0).unwrap(),
                [read_only.clone(), volume.clone()]
            );
            for point in mounts_under(&guard.0).unwrap() {
                unmount(&point).unwrap();
            }
            assert!(!is_mount_point(&volume).unwrap());
            assert!(mounts_under(&guard.0).unwrap().is_empty());

            let err = unmount(&volume).unwrap_err();
            assert!(matches!(err, MountError::NotMountPoint(ref p) if *p == volume));
            assert_eq!(
                err.to_string(),
                format!("unmount {}: not a mount point", volume.display())
            );
        }

        #[test]
        fn read_write_bind_mount_allows_writes() {
            let tmp = tempfile::tempdir().unwrap();
            let guard = MountGuard(fs::canonicalize(tmp.path()).unwrap());
            let source = guard.0.join("source");
            let target = guard.0.join("target");
            fs::create_dir(&source).unwrap();
            fs::create_dir(&target).unwrap();

            bind_mount(&source, &target, false).unwrap();
            fs::write(target.join("file"), b"through the bind").unwrap();
            assert_eq!(fs::read(source.join("file")).unwrap(), b"through the bind");
            unmount(&target).unwrap();
            assert!(!target.join("file").exists());
        }

        #[test]
        fn mount_errors_name_the_target() {
            let tmp = tempfile::tempdir().unwrap();
            let missing = tmp.path().join("missing");
            let err = mount_tmpfs(&missing, None, 0o755).unwrap_err();
            let MountError::Sys { op, path, source } = &err else {
                panic!("unexpected error {err:?}");
            };
            assert_eq!((*op, path), ("mount tmpfs on", &missing));
            assert_eq!(errno_of(source), Some(Errno::ENOENT));
            assert!(err.to_string().contains(&missing.display().to_string()));
        }
    }
}
