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
/// `expansion.Expand`: `$$` is a literal `$`, unknown variables stay as written).
pub fn expand_subpath_expr(expr: &str, env: &std::collections::BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
        {
            let name = &body[..end];
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Creates the missing directories of `subpath` inside `volume`, refusing to go through a
/// symlink that leads out of it.
fn make_dirs_within(volume: &Path, subpath: &Path) -> Result<(), String> {
    let mut current = volume.to_path_buf();
    for component in subpath.components() {
        let Component::Normal(name) = component else {
            continue;
        };
        current.push(name);
        match std::fs::symlink_metadata(&current) {
            Ok(_) => {
                let resolved = current
                    .canonicalize()
                    .map_err(|e| format!("cannot resolve {}: {e}", current.display()))?;
                if !resolved.starts_with(volume) {
                    return Err(format!(
                        "subpath {:?} not within volume path {:?}",
                        resolved.display().to_string(),
                        volume.display().to_string()
                    ));
                }
                current = resolved;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&current)
                    .map_err(|e| format!("cannot create {}: {e}", current.display()))?;
            }
            Err(e) => return Err(format!("cannot inspect {}: {e}", current.display())),
        }
    }
    Ok(())
}

/// Opens `target`, a path below `base` (both resolved), one component at a time without
/// following symlinks.
#[cfg(target_os = "linux")]
fn open_within(base: &Path, target: &Path) -> Result<OwnedFd, String> {
    use nix::fcntl::{OFlag, open, openat};
    use nix::sys::stat::Mode;

    let relative = target
        .strip_prefix(base)
        .map_err(|_| format!("{} is not below {}", target.display(), base.display()))?;
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut fd = open(base, flags | OFlag::O_DIRECTORY, Mode::empty())
        .map_err(|e| format!("cannot open {}: {e}", base.display()))?;
    for component in relative.components() {
        let Component::Normal(name) = component else {
            return Err(format!("unexpected component in {}", relative.display()));
        };
        fd = openat(fd.as_fd(), name, flags, Mode::empty()).map_err(|e| {
            format!(
                "cannot open {} safely (a symlink in the way?): {e}",
                base.join(relative).display()
            )
        })?;
    }
    Ok(fd)
}

#[cfg(not(target_os = "linux"))]
fn open_within(_base: &Path, _target: &Path) -> Result<OwnedFd, String> {
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
    let fd = open_within(&base, &resolved)?;
    let is_dir = resolved.is_dir();
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
    if !dir.exists() {
        return Ok(());
    }
    for m in mount::mounts_under(dir).map_err(|e| format!("cannot read the mount table: {e}"))? {
        mount::unmount(&m).map_err(|e| format!("cannot unmount {}: {e}", m.display()))?;
    }
    if let Some(m) = mount::mounts_under(dir)
        .map_err(|e| format!("cannot read the mount table: {e}"))?
        .first()
    {
        return Err(format!("{} is still mounted", m.display()));
    }
    std::fs::remove_dir_all(dir).map_err(|e| format!("cannot remove {}: {e}", dir.display()))
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
    fn subpath_expressions_expand_from_the_environment() {
        let env = [("POD".to_string(), "web-0".to_string())].into();
        assert_eq!(expand_subpath_expr("logs/$(POD)", &env), "logs/web-0");
        assert_eq!(expand_subpath_expr("$(MISSING)/x", &env), "$(MISSING)/x");
        assert_eq!(expand_subpath_expr("a$$(POD)", &env), "a$(POD)");
    }
}
