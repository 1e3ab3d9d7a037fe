//! The hostPath type checks of upstream's hostPath plugin (`pkg/volume/hostpath/host_path.go`),
//! with its error messages.
//!
//! Paths are followed through symlinks (`stat`, not `lstat`), as upstream does.

use std::fmt;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path};

/// The `type` of a hostPath volume (`HostPathType` of the core v1 API).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum HostPathType {
    /// `""`: no check at all (the default, for backward compatibility).
    #[default]
    Unset,
    /// `DirectoryOrCreate`: a directory, created with mode 0755 (and its parents) if missing.
    DirectoryOrCreate,
    /// `Directory`: a directory must exist.
    Directory,
    /// `FileOrCreate`: a file, created empty with mode 0644 if missing (its parent must exist).
    FileOrCreate,
    /// `File`: a regular file must exist.
    File,
    /// `Socket`: a UNIX socket must exist.
    Socket,
    /// `CharDevice`: a character device must exist.
    CharDevice,
    /// `BlockDevice`: a block device must exist.
    BlockDevice,
}

impl HostPathType {
    /// Parses the API value: `None` and `""` are [`Unset`](Self::Unset); an unknown value
    /// gives upstream's `"<value> is an invalid volume type"`.
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        Ok(match value.unwrap_or_default() {
            "" => Self::Unset,
            "DirectoryOrCreate" => Self::DirectoryOrCreate,
            "Directory" => Self::Directory,
            "FileOrCreate" => Self::FileOrCreate,
            "File" => Self::File,
            "Socket" => Self::Socket,
            "CharDevice" => Self::CharDevice,
            "BlockDevice" => Self::BlockDevice,
            other => return Err(format!("{other} is an invalid volume type")),
        })
    }

    /// The API value (`""` for [`Unset`](Self::Unset)).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unset => "",
            Self::DirectoryOrCreate => "DirectoryOrCreate",
            Self::Directory => "Directory",
            Self::FileOrCreate => "FileOrCreate",
            Self::File => "File",
            Self::Socket => "Socket",
            Self::CharDevice => "CharDevice",
            Self::BlockDevice => "BlockDevice",
        }
    }
}

impl fmt::Display for HostPathType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kinds of file upstream's `GetFileType` recognises, named as its `FileType` strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Directory,
    File,
    Socket,
    CharDevice,
    BlockDevice,
}

impl FileKind {
    fn name(self) -> &'static str {
        match self {
            Self::Directory => "Directory",
            Self::File => "File",
            Self::Socket => "Socket",
            Self::CharDevice => "CharDevice",
            Self::BlockDevice => "BlockDevice",
        }
    }

    /// The description used in "is not a ..." messages.
    fn description(self) -> &'static str {
        match self {
            Self::Directory => "directory",
            Self::File => "file",
            Self::Socket => "socket file",
            Self::CharDevice => "character device",
            Self::BlockDevice => "block device",
        }
    }
}

/// Checks `path` against `ty` as upstream's hostPath mounter `SetUp` does, creating it for
/// the `...OrCreate` types. Errors carry upstream's messages, e.g.
/// `hostPath type check failed: /srv is not a file, it's a Directory`.
pub fn check_host_path(path: &Path, ty: HostPathType) -> Result<(), String> {
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(format!(
            "invalid HostPath `{}`: must not contain '..'",
            path.display()
        ));
    }
    match ty {
        HostPathType::Unset => Ok(()),
        HostPathType::DirectoryOrCreate if !exists(path) => make_dir(path),
        HostPathType::DirectoryOrCreate | HostPathType::Directory => {
            expect_kind(path, FileKind::Directory)
        }
        HostPathType::FileOrCreate if !exists(path) => make_file(path),
        HostPathType::FileOrCreate | HostPathType::File => expect_kind(path, FileKind::File),
        HostPathType::Socket => expect_kind(path, FileKind::Socket),
        HostPathType::CharDevice => expect_kind(path, FileKind::CharDevice),
        HostPathType::BlockDevice => expect_kind(path, FileKind::BlockDevice),
    }
}

/// Whether `stat` succeeds on `path`. Like upstream, a path that cannot be stat'ed (a
/// dangling symlink, a symlink loop) does not exist.
fn exists(path: &Path) -> bool {
    fs::metadata(path).is_ok()
}

/// upstream's `typeMatchedOrError`.
fn expect_kind(path: &Path, expected: FileKind) -> Result<(), String> {
    if !exists(path) {
        return Err(format!("hostPath {} doesn't exist", path.display()));
    }
    match file_kind(path) {
        Ok(actual) if actual == expected => Ok(()),
        Ok(actual) => Err(format!(
            "hostPath type check failed: {} is not a {}, it's a {}",
            path.display(),
            expected.description(),
            actual.name()
        )),
        Err(err) => Err(format!(
            "hostPath type check failed, {} is not a {}, unable to determine its type: {err}",
            path.display(),
            expected.description()
        )),
    }
}

/// upstream's `GetFileType`, following symlinks.
fn file_kind(path: &Path) -> Result<FileKind, String> {
    let file_type = fs::metadata(path)
        .map_err(|err| match err.kind() {
            io::ErrorKind::NotFound => format!("path {:?} does not exist", path.display()),
            _ => err.to_string(),
        })?
        .file_type();
    if file_type.is_dir() {
        Ok(FileKind::Directory)
    } else if file_type.is_socket() {
        Ok(FileKind::Socket)
    } else if file_type.is_char_device() {
        Ok(FileKind::CharDevice)
    } else if file_type.is_block_device() {
        Ok(FileKind::BlockDevice)
    } else if file_type.is_file() {
        Ok(FileKind::File)
    } else {
        Err("only recognise file, directory, socket, block device and character device".into())
    }
}

/// `mkdir -p` with mode 0755 (subject to the umask, as upstream's `os.MkdirAll`).
fn make_dir(path: &Path) -> Result<(), String> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(|err| format!("mkdir {}: {err}", path.display()))?;
    tracing::info!(path = %path.display(), "created hostPath directory");
    Ok(())
}

/// Creates an empty file with mode 0644 (subject to the umask); the parent must exist, as
/// with upstream's `os.OpenFile(path, O_CREATE, 0644)`. An existing file is kept as it is.
fn make_file(path: &Path) -> Result<(), String> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .map_err(|err| format!("open {}: {err}", path.display()))?;
    tracing::info!(path = %path.display(), "created hostPath file");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;

    const ALL_CHECKED: [HostPathType; 7] = [
        HostPathType::DirectoryOrCreate,
        HostPathType::Directory,
        HostPathType::FileOrCreate,
        HostPathType::File,
        HostPathType::Socket,
        HostPathType::CharDevice,
        HostPathType::BlockDevice,
    ];

    /// A tempdir holding one object of each kind but devices.
    struct Objects {
        _tmp: tempfile::TempDir,
        dir: PathBuf,
        file: PathBuf,
        socket: PathBuf,
        _listener: UnixListener,
    }

    fn objects() -> Objects {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dir");
        let file = tmp.path().join("file");
        let socket = tmp.path().join("socket");
        fs::create_dir(&dir).unwrap();
        fs::write(&file, b"content").unwrap();
        let listener = UnixListener::bind(&socket).unwrap();
        Objects {
            _tmp: tmp,
            dir,
            file,
            socket,
            _listener: listener,
        }
    }

    /// The first block device of `/sys/block` that has a node under `/dev`.
    fn block_device() -> PathBuf {
        let mut names: Vec<_> = fs::read_dir("/sys/block")
            .expect("reading /sys/block to find a block device")
            .map(|entry| entry.unwrap().file_name())
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|name| Path::new("/dev").join(name))
            .find(|dev| fs::metadata(dev).is_ok_and(|meta| meta.file_type().is_block_device()))
            .expect("no block device found: no /sys/block entry has a block device node in /dev")
    }

    fn not_a(path: &Path, expected: &str, actual: &str) -> String {
        format!(
            "hostPath type check failed: {} is not a {expected}, it's a {actual}",
            path.display()
        )
    }

    #[test]
    fn parse_accepts_the_api_values() {
        assert_eq!(HostPathType::parse(None), Ok(HostPathType::Unset));
        assert_eq!(HostPathType::parse(Some("")), Ok(HostPathType::Unset));
        for ty in ALL_CHECKED {
            assert_eq!(HostPathType::parse(Some(ty.as_str())), Ok(ty));
            assert_eq!(ty.to_string(), ty.as_str());
        }
        assert_eq!(
            HostPathType::parse(Some("directory")),
            Err("directory is an invalid volume type".to_string())
        );
    }

    #[test]
    fn backsteps_are_rejected_before_any_check() {
        for ty in [HostPathType::Unset, HostPathType::DirectoryOrCreate] {
            assert_eq!(
                check_host_path(Path::new("/tmp/../etc"), ty),
                Err("invalid HostPath `/tmp/../etc`: must not contain '..'".to_string())
            );
        }
        // `..` inside a name is not a backstep.
        let objects = objects();
        let dotted = objects.dir.join("a..b");
        fs::create_dir(&dotted).unwrap();
        assert_eq!(check_host_path(&dotted, HostPathType::Directory), Ok(()));
    }

    #[test]
    fn unset_checks_nothing() {
        let path = Path::new("/nonexistent/host/path");
        assert_eq!(check_host_path(path, HostPathType::Unset), Ok(()));
        assert!(!path.exists());
    }

    #[test]
    fn each_type_accepts_its_own_kind() {
        let o = objects();
        let block = block_device();
        let cases = [
            (&o.dir, HostPathType::Directory),
            (&o.dir, HostPathType::DirectoryOrCreate),
            (&o.file, HostPathType::File),
            (&o.file, HostPathType::FileOrCreate),
            (&o.socket, HostPathType::Socket),
            (&PathBuf::from("/dev/null"), HostPathType::CharDevice),
            (&block, HostPathType::BlockDevice),
        ];
        for (path, ty) in cases {
            assert_eq!(
                check_host_path(path, ty),
                Ok(()),
                "{} as {ty}",
                path.display()
            );
        }
        // Existing objects are left untouched by the create variants.
        assert_eq!(fs::read(&o.file).unwrap(), b"content");
    }

    #[test]
    fn mismatches_name_the_expected_and_actual_types() {
        let o = objects();
        let null = PathBuf::from("/dev/null");
        let block = block_device();
        let cases = [
            (&o.file, HostPathType::Directory, "directory", "File"),
            (
                &o.socket,
                HostPathType::DirectoryOrCreate,
                "directory",
                "Socket",
            ),
            (&o.dir, HostPathType::File, "file", "Directory"),
            (&null, HostPathType::FileOrCreate, "file", "CharDevice"),
            (&o.file, HostPathType::Socket, "socket file", "File"),
            (
                &block,
                HostPathType::CharDevice,
                "character device",
                "BlockDevice",
            ),
            (
                &null,
                HostPathType::BlockDevice,
                "block device",
                "CharDevice",
            ),
            (
                &o.dir,
                HostPathType::BlockDevice,
                "block device",
                "Directory",
            ),
        ];
        for (path, ty, expected, actual) in cases {
            assert_eq!(
                check_host_path(path, ty),
                Err(not_a(path, expected, actual))
            );
        }
    }

    #[test]
    fn missing_paths_do_not_exist() {
        let o = objects();
        let missing = o.dir.join("missing");
        for ty in [
            HostPathType::Directory,
            HostPathType::File,
            HostPathType::Socket,
            HostPathType::CharDevice,
            HostPathType::BlockDevice,
        ] {
            assert_eq!(
                check_host_path(&missing, ty),
                Err(format!("hostPath {} doesn't exist", missing.display()))
            );
        }
        assert!(!missing.exists());
    }

    #[test]
    fn symlinks_are_followed() {
        let o = objects();
        let to_dir = o.dir.join("link-to-dir");
        let to_socket = o.dir.join("link-to-socket");
        std::os::unix::fs::symlink(&o.dir, &to_dir).unwrap();
        std::os::unix::fs::symlink(&o.socket, &to_socket).unwrap();
        assert_eq!(check_host_path(&to_dir, HostPathType::Directory), Ok(()));
        assert_eq!(check_host_path(&to_socket, HostPathType::Socket), Ok(()));

        // A symlink loop cannot be stat'ed: upstream reports it as missing.
        let looped = o.dir.join("loop");
        std::os::unix::fs::symlink(&looped, &looped).unwrap();
        assert_eq!(
            check_host_path(&looped, HostPathType::File),
            Err(format!("hostPath {} doesn't exist", looped.display()))
        );
    }

    #[test]
    fn an_unclassifiable_type_is_reported() {
        let o = objects();
        let fifo = o.dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(
            check_host_path(&fifo, HostPathType::File),
            Err(format!(
                "hostPath type check failed, {} is not a file, unable to determine its type: \
                 only recognise file, directory, socket, block device and character device",
                fifo.display()
            ))
        );
    }

    #[test]
    fn directory_or_create_creates_missing_parents_with_mode_0755() {
        let o = objects();
        let created = o.dir.join("a/b/c");
        assert_eq!(
            check_host_path(&created, HostPathType::DirectoryOrCreate),
            Ok(())
        );
        assert!(created.is_dir());
        let mode = fs::metadata(&created).unwrap().permissions().mode() & 0o777;
        // 0755 as requested, minus whatever the process umask removes.
        assert_eq!(mode & !0o755, 0, "mode {mode:o}");
        assert_eq!(check_host_path(&created, HostPathType::Directory), Ok(()));
    }

    #[test]
    fn file_or_create_creates_an_empty_file_with_mode_0644() {
        let o = objects();
        let created = o.dir.join("new-file");
        assert_eq!(
            check_host_path(&created, HostPathType::FileOrCreate),
            Ok(())
        );
        let meta = fs::metadata(&created).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.len(), 0);
        let mode = meta.permissions().mode() & 0o777;
        assert_eq!(mode & !0o644, 0, "mode {mode:o}");
        assert_eq!(check_host_path(&created, HostPathType::File), Ok(()));
    }

    #[test]
    fn file_or_create_does_not_create_a_missing_parent() {
        let o = objects();
        let parent = o.dir.join("no-such-parent");
        let path = parent.join("file");
        let err = check_host_path(&path, HostPathType::FileOrCreate).unwrap_err();
        assert!(
            err.starts_with(&format!("open {}: ", path.display())),
            "unexpected error: {err}"
        );
        assert!(!parent.exists());
    }
}
