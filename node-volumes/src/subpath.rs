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
        return Err(format!("subPath {subpath:?} must be a relative path"));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(format!("subPath {subpath:?} must not contain '..'"));
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
pub fn prepare_subpath(volume: &Path, subpath: &str, target: &Path) -> Result<PathBuf, String> {
    validate_subpath(subpath)?;
    let base = volume
        .canonicalize()
        .map_err(|e| format!("cannot resolve the volume path {}: {e}", volume.display()))?;
    let relative = Path::new(subpath);
    if std::fs::symlink_metadata(base.join(relative)).is_err() {
        make_dirs_within(&base, relative)?;
    }
    let resolved = base
        .join(relative)
        .canonicalize()
        .map_err(|e| format!("cannot resolve subpath {subpath:?}: {e}"))?;
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
        assert!(validate_subpath("/etc").unwrap_err().contains("relative"));
        assert!(validate_subpath("a/../../b").unwrap_err().contains("'..'"));
    }

    #[test]
    fn subpath_expressions_expand_from_the_environment() {
        let env = [("POD".to_string(), "web-0".to_string())].into();
        assert_eq!(expand_subpath_expr("logs/$(POD)", &env), "logs/web-0");
        assert_eq!(expand_subpath_expr("$(MISSING)/x", &env), "$(MISSING)/x");
        assert_eq!(expand_subpath_expr("a$$(POD)", &env), "a$(POD)");
    }
}
