//! Atomic projection of a set of files into a directory, as upstream's `AtomicWriter`
//! (`pkg/volume/util/atomic_writer.go`), for configMap, secret, downwardAPI and projected
//! volumes.
//!
//! The files live in a hidden timestamped directory; `..data` is a symlink to it, and every
//! top-level name of the payload is a symlink through `..data`:
//!
//! ```text
//! <target>/..2024_05_01_10_20_30.Ab3dEf/   the current version (mode 0755)
//! <target>/..data -> ..2024_05_01_10_20_30.Ab3dEf
//! <target>/config.yaml -> ..data/config.yaml
//! <target>/nested -> ..data/nested         for the payload path nested/file
//! ```
//!
//! An update writes a new timestamped directory and swaps `..data` with one `rename`, so a
//! reader opening a user-visible path sees one version of that file or the other, never a
//! mix. Two files read one after the other can still come from two versions: consistency
//! across files needs reading through one resolution of `..data`.
//!
//! Names starting with `..` are reserved for the writer; entries of the target directory that
//! the writer did not create (anything but a symlink `<name>` -> `..data/<name>`) are left
//! alone. The writer offers no concurrency guarantee: callers serialise writes to one
//! directory.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

const DATA_DIR_NAME: &str = "..data";
const NEW_DATA_DIR_NAME: &str = "..data_tmp";
const MAX_FILE_NAME_LENGTH: usize = 255;
const MAX_PATH_LENGTH: usize = 4096;
const DIR_MODE: u32 = 0o755;

/// The content and mode of one projected file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    /// The file's bytes.
    pub data: Vec<u8>,
    /// The file's permission bits (`0o644`); bits above `0o7777` are ignored.
    pub mode: u32,
}

/// An error of [`AtomicWriter::write`].
#[derive(Debug, thiserror::Error)]
pub enum AtomicWriteError {
    /// A payload path is not a valid relative path for the writer.
    #[error("invalid payload path {path:?}: {reason}")]
    InvalidPath {
        /// The payload path, as given.
        path: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// A file system operation failed.
    #[error("{op} {path}: {source}", path = .path.display())]
    Io {
        /// The operation, e.g. `write file`.
        op: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Attaches the operation and path to an I/O error.
fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> AtomicWriteError {
    let path = path.to_owned();
    move |source| AtomicWriteError::Io { op, path, source }
}

/// Writes payloads into one target directory atomically (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct AtomicWriter {
    target_dir: PathBuf,
}

impl AtomicWriter {
    /// A writer for `target_dir`, which must exist when [`write`](Self::write) is called.
    pub fn new(target_dir: impl Into<PathBuf>) -> Self {
        Self {
            target_dir: target_dir.into(),
        }
    }

    /// The target directory.
    pub fn target_dir(&self) -> &Path {
        &self.target_dir
    }

    /// Projects `payload` (relative path -> file) into the target directory, replacing the
    /// previous payload. Returns whether anything changed: `false` when the current version
    /// already holds exactly these paths, bytes and modes (missing user-visible symlinks are
    /// still recreated then).
    pub fn write(
        &self,
        payload: &BTreeMap<String, FileProjection>,
    ) -> Result<bool, AtomicWriteError> {
        let payload = validate_payload(payload)?;
        let target = &self.target_dir;
        let target_meta = fs::metadata(target).map_err(io_err("stat target directory", target))?;
        if !target_meta.is_dir() {
            return Err(AtomicWriteError::Io {
                op: "use target directory",
                path: target.clone(),
                source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            });
        }

        let old_ts_name = self.current_ts_dir_name()?;
        if let Some(old) = &old_ts_name
            && holds_exactly(&target.join(old), &payload)?
        {
            tracing::trace!(target = %target.display(), "payload unchanged");
            self.create_user_visible_links(&payload)?;
            return Ok(false);
        }

        let ts_dir = self.new_ts_dir()?;
        write_payload_to(ts_dir.path(), &payload)?;
        let ts_name = file_name_of(ts_dir.path());
        self.swap_data_link(&ts_name)?;
        // From here on, `..data` points at the new directory: keep it.
        let _ = ts_dir.keep();
        tracing::debug!(target = %target.display(), version = %ts_name, "wrote payload");

        self.create_user_visible_links(&payload)?;
        self.remove_stale_user_visible_links(&payload)?;
        if let Some(old) = old_ts_name {
            self.remove_old_ts_dir(&old, &ts_name)?;
        }
        Ok(true)
    }

    /// The timestamped directory `..data` points at; `None` when there is no `..data` yet,
    /// or when it points at something the writer does not create (that is then neither
    /// compared with nor removed, only replaced).
    fn current_ts_dir_name(&self) -> Result<Option<String>, AtomicWriteError> {
        let data_link = self.target_dir.join(DATA_DIR_NAME);
        let name = match fs::read_link(&data_link) {
            Ok(name) => name.to_string_lossy().into_owned(),
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(io_err("read data link", &data_link)(err)),
        };
        if is_ts_dir_name(&name) {
            return Ok(Some(name));
        }
        tracing::warn!(
            link = %data_link.display(),
            points_to = %name,
            "data link does not point at a data directory of the writer; replacing it"
        );
        Ok(None)
    }

    /// Creates `..<UTC timestamp>.<random>` with mode 0755; removed on drop until kept.
    fn new_ts_dir(&self) -> Result<tempfile::TempDir, AtomicWriteError> {
        let prefix = jiff::Timestamp::now()
            .strftime("..%Y_%m_%d_%H_%M_%S.")
            .to_string();
        let dir = tempfile::Builder::new()
            .prefix(&prefix)
            .rand_bytes(10)
            .tempdir_in(&self.target_dir)
            .map_err(io_err("create data directory in", &self.target_dir))?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(DIR_MODE))
            .map_err(io_err("chmod data directory", dir.path()))?;
        Ok(dir)
    }

    /// Points `..data` at `ts_name` atomically: a new symlink `..data_tmp` renamed over it.
    fn swap_data_link(&self, ts_name: &str) -> Result<(), AtomicWriteError> {
        let tmp_link = self.target_dir.join(NEW_DATA_DIR_NAME);
        // A leftover from an interrupted write would make the symlink call fail.
        remove_if_exists(&tmp_link).map_err(io_err("remove stale link", &tmp_link))?;
        std::os::unix::fs::symlink(ts_name, &tmp_link)
            .map_err(io_err("create data link", &tmp_link))?;
        let data_link = self.target_dir.join(DATA_DIR_NAME);
        if let Err(err) = fs::rename(&tmp_link, &data_link) {
            let _ = fs::remove_file(&tmp_link);
            return Err(io_err("rename data link over", &data_link)(err));
        }
        Ok(())
    }

    /// Creates the symlink `<name>` -> `..data/<name>` for every top-level payload name
    /// that has no entry yet.
    fn create_user_visible_links(&self, payload: &Payload<'_>) -> Result<(), AtomicWriteError> {
        for name in top_level_names(payload) {
            let link = self.target_dir.join(name);
            match fs::symlink_metadata(&link) {
                Ok(_) => continue,
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(io_err("stat user-visible path", &link)(err)),
            }
            std::os::unix::fs::symlink(Path::new(DATA_DIR_NAME).join(name), &link)
                .map_err(io_err("create user-visible link", &link))?;
        }
        Ok(())
    }

    /// Removes the writer's user-visible symlinks whose name is no longer in the payload.
    fn remove_stale_user_visible_links(
        &self,
        payload: &Payload<'_>,
    ) -> Result<(), AtomicWriteError> {
        let wanted = top_level_names(payload);
        let target = &self.target_dir;
        let entries = fs::read_dir(target).map_err(io_err("read directory", target))?;
        for entry in entries {
            let entry = entry.map_err(io_err("read directory", target))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with("..") || wanted.contains(name) {
                continue;
            }
            let path = entry.path();
            let Ok(link) = fs::read_link(&path) else {
                continue; // not a symlink: not ours
            };
            if link == Path::new(DATA_DIR_NAME).join(name) {
                tracing::debug!(path = %path.display(), "removing dropped user-visible link");
                fs::remove_file(&path).map_err(io_err("remove user-visible link", &path))?;
            }
        }
        Ok(())
    }

    /// Removes the previous timestamped directory.
    fn remove_old_ts_dir(&self, old: &str, current: &str) -> Result<(), AtomicWriteError> {
        if old == current {
            return Ok(());
        }
        let path = self.target_dir.join(old);
        match fs::remove_dir_all(&path) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                Err(io_err("remove old data directory", &path)(err))
            }
            _ => Ok(()),
        }
    }
}

/// A validated payload: cleaned relative path -> file.
type Payload<'a> = BTreeMap<PathBuf, &'a FileProjection>;

fn validate_payload(
    payload: &BTreeMap<String, FileProjection>,
) -> Result<Payload<'_>, AtomicWriteError> {
    payload
        .iter()
        .map(|(path, file)| Ok((validate_path(path)?, file)))
        .collect()
}

/// Checks one payload path and returns it without `.` components. A path must be relative,
/// non-empty, without empty or `..` components, must not start with `..` (reserved for the
/// writer), with names of at most 255 bytes and at most 4096 bytes in all.
fn validate_path(path: &str) -> Result<PathBuf, AtomicWriteError> {
    let invalid = |reason| AtomicWriteError::InvalidPath {
        path: path.to_owned(),
        reason,
    };
    if path.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if path.starts_with('/') {
        return Err(invalid("must be a relative path"));
    }
    if path.len() > MAX_PATH_LENGTH {
        return Err(invalid("must be at most 4096 characters"));
    }
    let parts: Vec<&str> = path.split('/').collect();
    if parts.iter().any(|part| part.is_empty()) {
        return Err(invalid("must not contain empty components"));
    }
    if parts.contains(&"..") {
        return Err(invalid("must not contain '..'"));
    }
    if parts.iter().any(|part| part.len() > MAX_FILE_NAME_LENGTH) {
        return Err(invalid("file names must be at most 255 characters"));
    }
    if path.contains('\0') {
        return Err(invalid("must not contain a NUL byte"));
    }
    let cleaned: PathBuf = parts.iter().filter(|part| **part != ".").collect();
    let first = cleaned
        .components()
        .next()
        .map(|c| c.as_os_str().to_owned());
    match first {
        None => Err(invalid("must name a file")),
        Some(first) if first.to_string_lossy().starts_with("..") => {
            Err(invalid("must not start with '..'"))
        }
        Some(_) => Ok(cleaned),
    }
}

/// Whether `name` can be a timestamped directory of the writer: one plain name in the target
/// directory, starting with `..`, other than the writer's links.
fn is_ts_dir_name(name: &str) -> bool {
    let mut components = Path::new(name).components();
    let single = matches!(
        (components.next(), components.next()),
        (Some(Component::Normal(_)), None)
    );
    single && name.starts_with("..") && name != DATA_DIR_NAME && name != NEW_DATA_DIR_NAME
}

fn file_name_of(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn top_level_names<'p>(payload: &'p Payload<'_>) -> BTreeSet<&'p str> {
    payload
        .keys()
        .filter_map(|path| path.components().next())
        .filter_map(|first| first.as_os_str().to_str())
        .collect()
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// Whether the timestamped directory `dir` holds exactly the payload: the same file paths,
/// bytes and permission bits. A missing directory holds nothing.
fn holds_exactly(dir: &Path, payload: &Payload<'_>) -> Result<bool, AtomicWriteError> {
    let mut on_disk = BTreeSet::new();
    match collect_files(dir, Path::new(""), &mut on_disk) {
        Err(AtomicWriteError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(false);
        }
        other => other?,
    }
    if on_disk.len() != payload.len() || !payload.keys().all(|path| on_disk.contains(path)) {
        return Ok(false);
    }
    for (rel, file) in payload {
        let path = dir.join(rel);
        let meta = fs::symlink_metadata(&path).map_err(io_err("stat", &path))?;
        if meta.permissions().mode() & 0o7777 != file.mode & 0o7777 {
            return Ok(false);
        }
        if fs::read(&path).map_err(io_err("read", &path))? != file.data {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Collects the relative paths of everything but directories below `dir`.
fn collect_files(
    base: &Path,
    rel: &Path,
    out: &mut BTreeSet<PathBuf>,
) -> Result<(), AtomicWriteError> {
    let dir = base.join(rel);
    for entry in fs::read_dir(&dir).map_err(io_err("read directory", &dir))? {
        let entry = entry.map_err(io_err("read directory", &dir))?;
        let child = rel.join(entry.file_name());
        let file_type = entry.file_type().map_err(io_err("stat", &entry.path()))?;
        if file_type.is_dir() {
            collect_files(base, &child, out)?;
        } else {
            out.insert(child);
        }
    }
    Ok(())
}

/// Writes every file of the payload below `dir`, creating parent directories with mode
/// 0755 and files with their mode, both set explicitly so the umask does not apply.
fn write_payload_to(dir: &Path, payload: &Payload<'_>) -> Result<(), AtomicWriteError> {
    for (rel, file) in payload {
        if let Some(parent) = rel.parent() {
            create_dirs(dir, parent)?;
        }
        write_file(&dir.join(rel), file)?;
    }
    Ok(())
}

/// Creates each component of `rel` below `base` that is missing, with mode 0755.
fn create_dirs(base: &Path, rel: &Path) -> Result<(), AtomicWriteError> {
    let mut path = base.to_owned();
    for component in rel.components() {
        path.push(component);
        match fs::DirBuilder::new().mode(DIR_MODE).create(&path) {
            Ok(()) => fs::set_permissions(&path, fs::Permissions::from_mode(DIR_MODE))
                .map_err(io_err("chmod directory", &path))?,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(io_err("create directory", &path)(err)),
        }
    }
    Ok(())
}

fn write_file(path: &Path, file: &FileProjection) -> Result<(), AtomicWriteError> {
    let mode = file.mode & 0o7777;
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err("create file", path))?;
    out.write_all(&file.data)
        .map_err(io_err("write file", path))?;
    out.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err("chmod file", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    fn file(data: &[u8], mode: u32) -> FileProjection {
        FileProjection {
            data: data.to_vec(),
            mode,
        }
    }

    fn payload(files: &[(&str, &[u8], u32)]) -> BTreeMap<String, FileProjection> {
        files
            .iter()
            .map(|(path, data, mode)| (path.to_string(), file(data, *mode)))
            .collect()
    }

    fn data_target(dir: &Path) -> String {
        fs::read_link(dir.join(DATA_DIR_NAME))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    /// The names in `dir` that start with `..` but are not `..data`.
    fn ts_dirs(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..") && n != DATA_DIR_NAME)
            .collect();
        names.sort();
        names
    }

    #[test]
    fn first_write_creates_the_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let writer = AtomicWriter::new(tmp.path());
        let changed = writer
            .write(&payload(&[
                ("config.yaml", b"a: 1\n", 0o644),
                ("key", b"secret", 0o400),
            ]))
            .unwrap();
        assert!(changed);

        let ts = data_target(tmp.path());
        assert!(
            is_timestamp_name(&ts),
            "unexpected data directory name {ts}"
        );
        assert_eq!(ts_dirs(tmp.path()), [ts.as_str()]);
        assert_eq!(mode_of(&tmp.path().join(&ts)), 0o755);
        for name in ["config.yaml", "key"] {
            assert_eq!(
                fs::read_link(tmp.path().join(name)).unwrap(),
                Path::new("..data").join(name)
            );
        }
        assert_eq!(fs::read(tmp.path().join("config.yaml")).unwrap(), b"a: 1\n");
        assert_eq!(mode_of(&tmp.path().join(&ts).join("config.yaml")), 0o644);
        assert_eq!(mode_of(&tmp.path().join(&ts).join("key")), 0o400);
        assert!(!tmp.path().join(NEW_DATA_DIR_NAME).exists());
    }

    /// `..YYYY_MM_DD_HH_MM_SS.<suffix>` as upstream names its timestamped directories.
    fn is_timestamp_name(name: &str) -> bool {
        let Some(rest) = name.strip_prefix("..") else {
            return false;
        };
        let (stamp, suffix) = rest.split_at(19.min(rest.len()));
        let shape_ok = stamp.char_indices().all(|(i, c)| {
            if [4, 7, 10, 13, 16].contains(&i) {
                c == '_'
            } else {
                c.is_ascii_digit()
            }
        });
        stamp.len() == 19 && shape_ok && suffix.starts_with('.') && suffix.len() > 1
    }

    #[test]
    fn modes_ignore_the_umask() {
        let tmp = tempfile::tempdir().unwrap();
        AtomicWriter::new(tmp.path())
            .write(&payload(&[("dir/world", b"w", 0o777)]))
            .unwrap();
        // The default umask 022 would have given 0755 without the explicit chmod.
        assert_eq!(mode_of(&tmp.path().join("dir/world")), 0o777);
        assert_eq!(mode_of(&tmp.path().join("..data/dir")), 0o755);
    }

    #[test]
    fn identical_rewrite_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let writer = AtomicWriter::new(tmp.path());
        let files = payload(&[("a", b"1", 0o644), ("sub/b", b"2", 0o600)]);
        assert!(writer.write(&files).unwrap());
        let ts = data_target(tmp.path());

        assert!(!writer.write(&files).unwrap());
        assert_eq!(data_target(tmp.path()), ts);
        assert_eq!(ts_dirs(tmp.path()), [ts]);
    }

    #[test]
    fn identical_rewrite_restores_a_missing_user_visible_link() {
        let tmp = tempfile::tempdir().unwrap();
        let writer = AtomicWriter::new(tmp.path());
        let files = payload(&[("a", b"1", 0o644)]);
        writer.write(&files).unwrap();
        fs::remove_file(tmp.path().join("a")).unwrap();

        assert!(!writer.write(&files).unwrap());
        assert_eq!(fs::read(tmp.path().join("a")).unwrap(), b"1");
    }

    #[test]
    fn a_mode_change_alone_is_a_change() {
        let tmp = tempfile::tempdir().unwrap();
        let writer = AtomicWriter::new(tmp.path());
        writer.write(&payload(&[("a", b"1", 0o644)])).unwrap();
        assert!(writer.write(&payload(&[("a", b"1", 0o600)])).unwrap());
        assert_eq!(mode_of(&tmp.path().join("a")), 0o600);
    }

    #[test]
    fn update_replaces_content_and_drops_removed_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let writer = AtomicWriter::new(tmp.path());
        writer
            .write(&payload(&[
                ("keep", b"old", 0o644),
                ("drop", b"x", 0o644),
                ("d/f", b"y", 0o644),
            ]))
            .unwrap();
        let old_ts = data_target(tmp.path());

        assert!(writer.write(&payload(&[("keep", b"new", 0o644)])).unwrap());
        let new_ts = data_target(tmp.path());
        assert_ne!(new_ts, old_ts);
        assert_eq!(fs::read(tmp.path().join("keep")).unwrap(), b"new");
        for dropped in ["drop", "d"] {
            assert!(
                fs::symlink_metadata(tmp.path().join(dropped)).is_err(),
                "{dropped} should be gone"
            );
        }
        assert_eq!(ts_dirs(tmp.path()), [new_ts]);
    }

    #[test]
    fn entries_the_writer_did_not_create_are_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let writer = AtomicWriter::new(tmp.path());
        fs::write(tmp.path().join("user-file"), b"mine").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", tmp.path().join("user-link")).unwrap();
        // Same name as a payload key, but a plain file: not replaced.
        fs::write(tmp.path().join("a"), b"plain").unwrap();

        writer
            .write(&payload(&[("a", b"1", 0o644), ("b", b"2", 0o644)]))
            .unwrap();
        writer.write(&payload(&[("c", b"3", 0o644)])).unwrap();

        assert_eq!(fs::read(tmp.path().join("user-file")).unwrap(), b"mine");
        assert_eq!(
            fs::read_link(tmp.path().join("user-link")).unwrap(),
            Path::new("/etc/hostname")
        );
        assert_eq!(fs::read(tmp.path().join("a")).unwrap(), b"plain");
        assert!(fs::symlink_metadata(tmp.path().join("b")).is_err());
        assert_eq!(fs::read(tmp.path().join("c")).unwrap(), b"3");
    }

    #[test]
    fn a_foreign_data_link_is_replaced_but_its_target_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("a"), b"1").unwrap();
        std::os::unix::fs::symlink(outside.path(), tmp.path().join(DATA_DIR_NAME)).unwrap();

        // Even with the same content behind it, a link the writer did not make is replaced.
        let writer = AtomicWriter::new(tmp.path());
        assert!(writer.write(&payload(&[("a", b"1", 0o644)])).unwrap());
        assert!(is_timestamp_name(&data_target(tmp.path())));
        assert_eq!(fs::read(outside.path().join("a")).unwrap(), b"1");
    }

    #[test]
    fn nested_paths_share_one_top_level_link() {
        let tmp = tempfile::tempdir().unwrap();
        let writer = AtomicWriter::new(tmp.path());
        writer
            .write(&payload(&[
                ("k8s/labels", b"l", 0o644),
                ("k8s/deep/annotations", b"a", 0o644),
                ("./podName", b"p", 0o644),
            ]))
            .unwrap();
        assert_eq!(
            fs::read_link(tmp.path().join("k8s")).unwrap(),
            Path::new("..data/k8s")
        );
        assert_eq!(fs::read(tmp.path().join("k8s/labels")).unwrap(), b"l");
        assert_eq!(
            fs::read(tmp.path().join("k8s/deep/annotations")).unwrap(),
            b"a"
        );
        // `./podName` is cleaned to `podName`.
        assert_eq!(
            fs::read_link(tmp.path().join("podName")).unwrap(),
            Path::new("..data/podName")
        );

        // Dropping one nested file keeps the shared link and removes the file.
        writer
            .write(&payload(&[
                ("k8s/labels", b"l2", 0o644),
                ("podName", b"p", 0o644),
            ]))
            .unwrap();
        assert_eq!(fs::read(tmp.path().join("k8s/labels")).unwrap(), b"l2");
        assert!(!tmp.path().join("k8s/deep").exists());
    }

    #[test]
    fn invalid_paths_are_rejected_before_writing() {
        let tmp = tempfile::tempdir().unwrap();
        let writer = AtomicWriter::new(tmp.path());
        let long = "x".repeat(256);
        let cases: [(&str, &str); 9] = [
            ("", "must not be empty"),
            ("/etc/passwd", "must be a relative path"),
            ("a/../../b", "must not contain '..'"),
            ("..", "must not contain '..'"),
            ("..data", "must not start with '..'"),
            ("..hidden/file", "must not start with '..'"),
            ("a//b", "must not contain empty components"),
            ("a/", "must not contain empty components"),
            (&long, "file names must be at most 255 characters"),
        ];
        for (path, reason) in cases {
            let err = writer
                .write(&payload(&[("ok", b"1", 0o644), (path, b"x", 0o644)]))
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("invalid payload path {path:?}: {reason}")
            );
        }
        assert!(matches!(
            writer.write(&payload(&[(".", b"x", 0o644)])),
            Err(AtomicWriteError::InvalidPath {
                reason: "must name a file",
                ..
            })
        ));
        // Nothing was written.
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
        // A name starting with '..' below the top level is allowed.
        assert!(writer.write(&payload(&[("a/..b", b"x", 0o644)])).unwrap());
    }

    #[test]
    fn a_missing_target_directory_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("missing");
        let err = AtomicWriter::new(&missing)
            .write(&payload(&[("a", b"1", 0o644)]))
            .unwrap_err();
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );
    }

    /// A reader opening user-visible paths while the writer alternates versions sees each
    /// file whole: all its bytes from one version. Two different files may come from two
    /// versions (the reader resolves `..data` once per open), which is expected.
    #[test]
    fn readers_never_see_a_torn_file() {
        const SIZE: usize = 256 * 1024;
        const VERSIONS: usize = 60;
        let tmp = tempfile::tempdir().unwrap();
        let writer = AtomicWriter::new(tmp.path());
        let version = |byte: u8| {
            payload(&[
                ("one", &vec![byte; SIZE], 0o644),
                ("two", &vec![byte; SIZE], 0o644),
            ])
        };
        writer.write(&version(b'A')).unwrap();

        let stop = Arc::new(AtomicBool::new(false));
        let whole_reads = Arc::new(AtomicUsize::new(0));
        let reader = {
            let (stop, whole_reads) = (Arc::clone(&stop), Arc::clone(&whole_reads));
            let dir = tmp.path().to_owned();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for name in ["one", "two"] {
                        match fs::read(dir.join(name)) {
                            Ok(bytes) => {
                                assert_eq!(bytes.len(), SIZE, "{name}: short read");
                                assert!(
                                    bytes.iter().all(|b| *b == bytes[0]),
                                    "{name}: torn read mixing versions"
                                );
                                whole_reads.fetch_add(1, Ordering::Relaxed);
                            }
                            // The old version can vanish between resolving `..data` and
                            // opening the file; the next read sees the new one.
                            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                            Err(err) => panic!("{name}: {err}"),
                        }
                    }
                }
            })
        };

        while whole_reads.load(Ordering::Relaxed) == 0 && !reader.is_finished() {
            std::thread::yield_now();
        }
        let reads_before = whole_reads.load(Ordering::Relaxed);
        for i in 0..VERSIONS {
            let byte = if i % 2 == 0 { b'B' } else { b'A' };
            assert!(writer.write(&version(byte)).unwrap());
        }
        let reads_during = whole_reads.load(Ordering::Relaxed) - reads_before;
        stop.store(true, Ordering::Relaxed);
        reader.join().expect("the reader saw a torn or short file");
        assert!(reads_during > 0, "no read overlapped the writes");
        assert_eq!(ts_dirs(tmp.path()).len(), 1);
    }
}
