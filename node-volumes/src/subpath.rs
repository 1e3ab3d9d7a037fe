//! `subPath` and `subPathExpr`: a path inside a volume, bind-mounted on its own so that the
//! container sees only that part, resolved safely.
//!
//! As upstream: the path is resolved (symlinks followed) and must stay inside the volume;
//! then every component is opened again from the volume root without following symlinks, and
//! the bind mount is made from the opened file descriptor (`/proc/self/fd/<n>`), so a symlink
//! swapped in after the check cannot redirect the mount outside the volume.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use crate::mount;

/// Checks a `subPath` (or an expanded `subPathExpr`) as the API does: relative, with no `..`.
pub fn validate_subpath(subpath: &str) -> Result<(), String> {
    let path = Path::new(subpath);
    if path.is_absolute() {
        return Err(format!(
            "error SubPath `{subpath}` must not be an absolute path"
        ));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(format!(
            "unable to provision SubPath `{subpath}`: must not contain '..'"
        ));
    }
    Ok(())
}

/// Expands `$(VAR)` in a `subPathExpr` from the container's environment (upstream
/// `ExpandContainerVolumeMounts`): a variable that is missing or empty is an error naming it.
pub fn expand_subpath_expr(
    expr: &str,
    env: &std::collections::BTreeMap<String, String>,
) -> Result<String, String> {
    let missing = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let expanded = node_core::expansion::expand(expr, |name| match env.get(name) {
        Some(v) if !v.is_empty() => Some(v.clone()),
        _ => {
            missing.borrow_mut().insert(name.to_owned());
            Some(String::new())
        }
    });
    let missing = missing.into_inner();
    if missing.is_empty() {
        Ok(expanded)
    } else {
        Err(format!(
            "missing value for {}",
            missing.into_iter().collect::<Vec<_>>().join(", ")
        ))
    }
}

/// What an opened path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Dir,
    Other,
}

/// Opens `target`, a resolved path below the resolved `base`, one component at a time from
/// `base` without following symlinks, and checks what each opened descriptor is: a symlink
/// (swapped in after the path was resolved) is refused, every component but the last must be
/// a directory (upstream `doSafeOpen`).
#[cfg(target_os = "linux")]
fn open_within(base: &Path, target: &Path) -> Result<(OwnedFd, Kind), String> {
    use nix::fcntl::{OFlag, open, openat};
    use nix::sys::stat::{Mode, SFlag, fstat};

    let relative = target
        .strip_prefix(base)
        .map_err(|_| format!("{} is not below {}", target.display(), base.display()))?;
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let kind_of = |fd: &OwnedFd, path: &Path| -> Result<Kind, String> {
        let stat = fstat(fd.as_fd()).map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
        let format = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
        if format == SFlag::S_IFLNK {
            return Err(format!("unexpected symlink found {}", path.display()));
        }
        Ok(if format == SFlag::S_IFDIR {
            Kind::Dir
        } else {
            Kind::Other
        })
    };
    let mut fd = open(base, flags | OFlag::O_DIRECTORY, Mode::empty())
        .map_err(|e| format!("cannot open {}: {e}", base.display()))?;
    let mut kind = kind_of(&fd, base)?;
    let mut current = base.to_path_buf();
    for component in relative.components() {
        let Component::Normal(name) = component else {
            return Err(format!("unexpected component in {}", relative.display()));
        };
        if kind != Kind::Dir {
            return Err(format!("{} is not a directory", current.display()));
        }
        current.push(name);
        fd = openat(fd.as_fd(), name, flags, Mode::empty())
            .map_err(|e| format!("cannot open {}: {e}", current.display()))?;
        kind = kind_of(&fd, &current)?;
    }
    Ok((fd, kind))
}

#[cfg(not(target_os = "linux"))]
fn open_within(_base: &Path, _target: &Path) -> Result<(OwnedFd, Kind), String> {
    Err("subPath mounts are supported on Linux only".into())
}

/// Creates the missing directories of `subpath` inside the resolved `base` (upstream
/// `SafeMakeDir`): the existing part is resolved and must stay inside the volume, then opened
/// safely; each missing directory is made with `mkdirat` on the parent's descriptor and given
/// the volume root's mode with `fchmod`, whatever the umask.
#[cfg(target_os = "linux")]
fn make_dirs_within(base: &Path, subpath: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;

    use nix::fcntl::{OFlag, openat};
    use nix::sys::stat::{Mode, fchmod, mkdirat};

    let names: Vec<&std::ffi::OsStr> = subpath
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name),
            _ => None,
        })
        .collect();
    let existing = names
        .iter()
        .take_while({
            let mut probe = base.to_path_buf();
            move |name| {
                probe.push(name);
                std::fs::symlink_metadata(&probe).is_ok()
            }
        })
        .count();
    let prefix: PathBuf = names[..existing].iter().collect();
    let resolved = base
        .join(&prefix)
        .canonicalize()
        .map_err(|e| format!("cannot resolve {}: {e}", base.join(&prefix).display()))?;
    if !resolved.starts_with(base) {
        return Err(format!(
            "subpath {:?} not within volume path {:?}",
            resolved.display().to_string(),
            base.display().to_string()
        ));
    }
    let perm = std::fs::metadata(base)
        .map_err(|e| format!("cannot stat {}: {e}", base.display()))?
        .permissions()
        .mode()
        & 0o7777;
    let mode = Mode::from_bits_truncate(perm);
    let (mut fd, kind) = open_within(base, &resolved)?;
    if kind != Kind::Dir {
        return Err(format!("{} is not a directory", resolved.display()));
    }
    let mut current = resolved;
    for name in &names[existing..] {
        current.push(name);
        mkdirat(fd.as_fd(), *name, mode)
            .map_err(|e| format!("cannot create {}: {e}", current.display()))?;
        fd = openat(
            fd.as_fd(),
            *name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("cannot open {}: {e}", current.display()))?;
        fchmod(fd.as_fd(), mode)
            .map_err(|e| format!("cannot set the mode of {}: {e}", current.display()))?;
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn make_dirs_within(_base: &Path, _subpath: &Path) -> Result<(), String> {
    Err("subPath mounts are supported on Linux only".into())
}

/// Bind-mounts `subpath` of the volume at `volume` onto `target` (a path under the pod's
/// `volume-subpaths` directory) and returns `target`. Missing directories of the subpath are
/// created (with the volume's mode); a subpath that resolves outside the volume is refused.
/// A target that is mounted already (a restarted container) is used as it is.
pub fn prepare_subpath(
    volume: &Path,
    subpath: &str,
    target: &Path,
) -> Result<PathBuf, SubpathError> {
    validate_subpath(subpath).map_err(SubpathError::Invalid)?;
    let base = volume.canonicalize().map_err(|e| {
        SubpathError::Create(format!(
            "cannot resolve the volume path {}: {e}",
            volume.display()
        ))
    })?;
    let relative = Path::new(subpath);
    if std::fs::symlink_metadata(base.join(relative)).is_err() {
        make_dirs_within(&base, relative).map_err(SubpathError::Create)?;
    }
    bind_subpath(&base, relative, target).map_err(SubpathError::Prepare)
}

/// Why a subPath could not be mounted. As upstream, only [`SubpathError::Invalid`]'s detail is
/// for the user; the others are logged and reported without host paths.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubpathError {
    /// The subPath itself is invalid (absolute, or with `..`).
    #[error("{0}")]
    Invalid(String),
    /// Its missing directories could not be created inside the volume.
    #[error("{0}")]
    Create(String),
    /// It resolves outside the volume, or the bind mount failed.
    #[error("{0}")]
    Prepare(String),
}

fn bind_subpath(base: &Path, relative: &Path, target: &Path) -> Result<PathBuf, String> {
    let subpath = relative.display();
    let base = base.to_path_buf();
    let resolved = base
        .join(relative)
        .canonicalize()
        .map_err(|e| format!("cannot resolve subpath {subpath}: {e}"))?;
    if !resolved.starts_with(&base) {
        return Err(format!(
            "subpath {:?} not within volume path {:?}",
            resolved.display().to_string(),
            base.display().to_string()
        ));
    }
    if mount::is_mount_point(target).unwrap_or(false) {
        return Ok(target.to_path_buf());
    }
    let (fd, kind) = open_within(&base, &resolved)?;
    let is_dir = kind == Kind::Dir;
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    if is_dir {
        std::fs::create_dir_all(target)
    } else {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(target)
            .map(|_| ())
    }
    .map_err(|e| format!("cannot create the mount point {}: {e}", target.display()))?;
    let source = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    mount::bind_mount(&source, target, false).map_err(|e| {
        format!(
            "cannot bind-mount subpath {} at {}: {e}",
            resolved.display(),
            target.display()
        )
    })?;
    Ok(target.to_path_buf())
}

/// Unmounts and removes every subPath bind mount under `dir` (a pod's `volume-subpaths`).
pub fn clean_subpaths(dir: &Path) -> Result<(), String> {
    mount::unmount_and_remove(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subpaths_must_be_relative_and_stay_inside() {
        assert!(validate_subpath("a/b").is_ok());
        assert_eq!(
            validate_subpath("/etc").unwrap_err(),
            "error SubPath `/etc` must not be an absolute path"
        );
        assert!(validate_subpath("a/../../b").unwrap_err().contains("'..'"));
    }

    /// Unmounts what a test bound below its directory, even when it fails.
    struct Cleanup(PathBuf);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            for m in mount::mounts_under(&self.0).unwrap_or_default() {
                let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }

    #[test]
    fn subpaths_are_bound_inside_the_volume_and_escapes_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _cleanup = Cleanup(dir.path().to_path_buf());
        let volume = dir.path().join("volume");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(volume.join("inside")).expect("inside");
        std::fs::create_dir_all(&outside).expect("outside");
        std::fs::write(outside.join("secret"), "host").expect("secret");
        std::fs::write(volume.join("inside/file"), "data").expect("file");
        std::os::unix::fs::symlink("inside", volume.join("ok")).expect("link in");
        std::os::unix::fs::symlink(&outside, volume.join("escape")).expect("link out");
        std::os::unix::fs::symlink("../outside", volume.join("relative-escape")).expect("link up");
        let targets = dir.path().join("volume-subpaths");

        // A symlink that stays inside resolves to its target, bound on its own.
        let t = prepare_subpath(&volume, "ok", &targets.join("0")).expect("inside");
        assert!(mount::is_mount_point(&t).expect("mount table"));
        assert_eq!(
            std::fs::read_to_string(t.join("file")).expect("read"),
            "data"
        );
        // A file works too, and a second preparation reuses the mount.
        let f = prepare_subpath(&volume, "inside/file", &targets.join("1")).expect("file");
        assert_eq!(std::fs::read_to_string(&f).expect("read"), "data");
        prepare_subpath(&volume, "inside/file", &targets.join("1")).expect("again");
        assert_eq!(
            mount::mounts_under(&targets.join("1"))
                .expect("mounts")
                .len(),
            1
        );
        // Missing directories are created inside the volume.
        let created = prepare_subpath(&volume, "new/deeper", &targets.join("2")).expect("new");
        assert!(volume.join("new/deeper").is_dir() && created.is_dir());

        for escape in ["escape", "relative-escape", "escape/secret"] {
            let target = targets.join(escape.replace('/', "-"));
            match prepare_subpath(&volume, escape, &target) {
                Err(SubpathError::Prepare(message)) => {
                    assert!(message.contains("not within volume path"), "{message}")
                }
                other => panic!("{escape}: {other:?}"),
            }
            assert!(
                !mount::is_mount_point(&target).unwrap_or(false),
                "{escape} not mounted"
            );
        }
        // Creating through an escaping symlink is refused too.
        match prepare_subpath(&volume, "escape/made", &targets.join("3")) {
            Err(SubpathError::Create(message)) => {
                assert!(message.contains("not within volume path"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        assert!(
            !outside.join("made").exists(),
            "nothing created outside the volume"
        );

        clean_subpaths(&targets).expect("clean");
        assert!(!targets.exists());
        assert_eq!(
            std::fs::read_to_string(volume.join("inside/file")).expect("kept"),
            "data"
        );
    }

    #[test]
    fn open_within_refuses_symlinks_swapped_in_after_resolution() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().canonicalize().expect("base");
        std::fs::create_dir_all(base.join("d")).expect("d");
        std::fs::write(base.join("d/file"), "x").expect("file");
        // As if another container replaced resolved components with symlinks.
        std::os::unix::fs::symlink("/etc", base.join("link")).expect("link");
        std::os::unix::fs::symlink("d", base.join("dlink")).expect("dlink");
        for path in ["link", "dlink/file"] {
            let err = open_within(&base, &base.join(path)).unwrap_err();
            assert!(err.contains("unexpected symlink found"), "{path}: {err}");
        }
        assert_eq!(
            open_within(&base, &base.join("d")).expect("dir").1,
            Kind::Dir
        );
        assert_eq!(
            open_within(&base, &base.join("d/file")).expect("file").1,
            Kind::Other
        );
        let err = open_within(&base, &base.join("d/file/deeper")).unwrap_err();
        assert!(err.contains("is not a directory"), "{err}");
    }

    #[test]
    fn created_subpath_directories_take_the_volume_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().canonicalize().expect("base");
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        make_dirs_within(&base, Path::new("web-0/logs")).expect("made");
        for sub in ["web-0", "web-0/logs"] {
            let mode = std::fs::metadata(base.join(sub))
                .expect(sub)
                .permissions()
                .mode();
            assert_eq!(
                mode & 0o777,
                0o777,
                "{sub} has the volume's mode, not the umask's"
            );
        }
    }

    #[test]
    fn subpath_expressions_expand_from_the_environment() {
        let env = [
            ("POD".to_string(), "web-0".to_string()),
            ("EMPTY".to_string(), String::new()),
        ]
        .into();
        assert_eq!(
            expand_subpath_expr("logs/$(POD)", &env).unwrap(),
            "logs/web-0"
        );
        assert_eq!(expand_subpath_expr("a$$(POD)", &env).unwrap(), "a$(POD)");
        assert_eq!(
            expand_subpath_expr("$(MISSING)/$(EMPTY)/$(POD)", &env).unwrap_err(),
            "missing value for EMPTY, MISSING"
        );
    }
}
