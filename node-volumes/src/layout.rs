//! The pod directory layout under the kubelet's root directory, as upstream's kubelet lays it
//! out (`pkg/kubelet/kubelet_getters.go`):
//!
//! ```text
//! <root>/pods/<uid>/
//!     volumes/<escaped plugin>/<volume>
//!     plugins/<escaped plugin>
//!     containers/<container>
//!     etc-hosts
//!     volume-subpaths/<volume>/<container>/<index>
//! ```
//!
//! Plugin names such as `kubernetes.io/empty-dir` are escaped to a single path component
//! (`kubernetes.io~empty-dir`). Every uid and name that becomes a path component is checked
//! first: an empty one, `.`, `..` or one containing `/` or a NUL byte is rejected with a
//! [`LayoutError`], so no input can produce a path outside the root.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A uid or name that cannot be used as a single path component of the layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct LayoutError {
    /// What the value names: `pod uid`, `plugin name`, `volume name` or `container name`.
    pub what: &'static str,
    /// The rejected value.
    pub value: String,
    /// Why it was rejected.
    pub reason: &'static str,
}

impl From<LayoutError> for io::Error {
    fn from(err: LayoutError) -> Self {
        io::Error::new(io::ErrorKind::InvalidInput, err)
    }
}

/// A volume directory found on disk under `<pod>/volumes/<escaped plugin>/<volume>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeDir {
    /// The plugin name, unescaped (`kubernetes.io/empty-dir`).
    pub plugin_name: String,
    /// The volume name (the pod spec's volume name for most plugins).
    pub volume_name: String,
    /// The full path of the volume directory.
    pub path: PathBuf,
}

/// Escapes a plugin name to one path component: every `/` becomes `~`
/// (`kubernetes.io/empty-dir` -> `kubernetes.io~empty-dir`).
pub fn escape_plugin_name(name: &str) -> String {
    name.replace('/', "~")
}

/// Reverses [`escape_plugin_name`]: every `~` becomes `/`.
pub fn unescape_plugin_name(escaped: &str) -> String {
    escaped.replace('~', "/")
}

/// Returns `value` when it is usable as exactly one path component, else a [`LayoutError`].
fn checked<'a>(what: &'static str, value: &'a str) -> Result<&'a str, LayoutError> {
    let reason = if value.is_empty() {
        "must not be empty"
    } else if value == "." || value == ".." {
        "must not be '.' or '..'"
    } else if value.contains('/') {
        "must not contain '/'"
    } else if value.contains('\0') {
        "must not contain a NUL byte"
    } else {
        return Ok(value);
    };
    Err(LayoutError {
        what,
        value: value.to_owned(),
        reason,
    })
}

/// The pod directories under the kubelet's root directory (`--root-dir`, by default
/// `/var/lib/kubelet`).
///
/// Every function taking a uid or a name checks it (see the [module docs](self)); the
/// functions only compute paths, they never touch the disk, except the `list_*` ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDirs {
    root: PathBuf,
}

impl PodDirs {
    /// A layout rooted at `root_dir`.
    pub fn new(root_dir: impl Into<PathBuf>) -> Self {
        Self {
            root: root_dir.into(),
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/pods`.
    pub fn pods_dir(&self) -> PathBuf {
        self.root.join("pods")
    }

    /// `<root>/pods/<uid>`.
    pub fn pod_dir(&self, uid: &str) -> Result<PathBuf, LayoutError> {
        Ok(self.pods_dir().join(checked("pod uid", uid)?))
    }

    /// `<root>/pods/<uid>/volumes`.
    pub fn pod_volumes_dir(&self, uid: &str) -> Result<PathBuf, LayoutError> {
        Ok(self.pod_dir(uid)?.join("volumes"))
    }

    /// `<root>/pods/<uid>/volumes/<escaped plugin>/<volume>`.
    pub fn pod_volume_dir(
        &self,
        uid: &str,
        plugin_name: &str,
        volume_name: &str,
    ) -> Result<PathBuf, LayoutError> {
        let plugin = escape_plugin_name(plugin_name);
        Ok(self
            .pod_volumes_dir(uid)?
            .join(checked("plugin name", &plugin)?)
            .join(checked("volume name", volume_name)?))
    }

    /// `<root>/pods/<uid>/plugins`.
    pub fn pod_plugins_dir(&self, uid: &str) -> Result<PathBuf, LayoutError> {
        Ok(self.pod_dir(uid)?.join("plugins"))
    }

    /// `<root>/pods/<uid>/plugins/<escaped plugin>`.
    pub fn pod_plugin_dir(&self, uid: &str, plugin_name: &str) -> Result<PathBuf, LayoutError> {
        let plugin = escape_plugin_name(plugin_name);
        Ok(self
            .pod_plugins_dir(uid)?
            .join(checked("plugin name", &plugin)?))
    }

    /// `<root>/pods/<uid>/containers`.
    pub fn pod_containers_dir(&self, uid: &str) -> Result<PathBuf, LayoutError> {
        Ok(self.pod_dir(uid)?.join("containers"))
    }

    /// `<root>/pods/<uid>/containers/<container>`.
    pub fn pod_container_dir(
        &self,
        uid: &str,
        container_name: &str,
    ) -> Result<PathBuf, LayoutError> {
        Ok(self
            .pod_containers_dir(uid)?
            .join(checked("container name", container_name)?))
    }

    /// `<root>/pods/<uid>/etc-hosts`, the pod's managed `/etc/hosts`.
    pub fn etc_hosts_path(&self, uid: &str) -> Result<PathBuf, LayoutError> {
        Ok(self.pod_dir(uid)?.join("etc-hosts"))
    }

    /// `<root>/pods/<uid>/volume-subpaths`.
    pub fn volume_subpaths_dir(&self, uid: &str) -> Result<PathBuf, LayoutError> {
        Ok(self.pod_dir(uid)?.join("volume-subpaths"))
    }

    /// `<root>/pods/<uid>/volume-subpaths/<volume>/<container>/<index>`, where `index` is the
    /// index of the volume mount in the container's `volumeMounts`.
    pub fn volume_subpath_dir(
        &self,
        uid: &str,
        volume_name: &str,
        container_name: &str,
        index: usize,
    ) -> Result<PathBuf, LayoutError> {
        Ok(self
            .volume_subpaths_dir(uid)?
            .join(checked("volume name", volume_name)?)
            .join(checked("container name", container_name)?)
            .join(index.to_string()))
    }

    /// The uids of the pods that have a directory under `<root>/pods`, sorted; empty when
    /// that directory does not exist.
    pub fn list_pod_uids(&self) -> io::Result<Vec<String>> {
        list_dir_names(&self.pods_dir(), true)
    }

    /// The volume directories on disk under `<root>/pods/<uid>/volumes/*/*`, sorted by
    /// plugin then volume; empty when the pod or its volumes directory does not exist.
    pub fn list_volume_dirs(&self, uid: &str) -> io::Result<Vec<VolumeDir>> {
        let volumes_dir = self.pod_volumes_dir(uid)?;
        let mut found = Vec::new();
        for escaped in list_dir_names(&volumes_dir, true)? {
            let plugin_dir = volumes_dir.join(&escaped);
            for volume_name in list_dir_names(&plugin_dir, false)? {
                found.push(VolumeDir {
                    plugin_name: unescape_plugin_name(&escaped),
                    path: plugin_dir.join(&volume_name),
                    volume_name,
                });
            }
        }
        Ok(found)
    }
}

/// The sorted UTF-8 entry names of `dir` (only directories when `dirs_only`, symlinks not
/// followed); empty when `dir` does not exist. Errors name the directory.
fn list_dir_names(dir: &Path, dirs_only: bool) -> io::Result<Vec<String>> {
    let with_path = |err: io::Error| {
        io::Error::new(
            err.kind(),
            format!("read directory {}: {err}", dir.display()),
        )
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(with_path(err)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(with_path)?;
        if dirs_only && !entry.file_type().map_err(with_path)?.is_dir() {
            continue;
        }
        match entry.file_name().into_string() {
            Ok(name) => names.push(name),
            Err(name) => tracing::warn!(
                dir = %dir.display(),
                name = ?name,
                "ignoring a directory entry whose name is not UTF-8"
            ),
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0b6b1c3e-1111-4c2e-9a0e-5f1d2b3c4d5e";

    fn dirs() -> PodDirs {
        PodDirs::new("/var/lib/kubelet")
    }

    #[test]
    fn paths_follow_the_upstream_layout() {
        let d = dirs();
        let pod = format!("/var/lib/kubelet/pods/{UID}");
        assert_eq!(d.root(), Path::new("/var/lib/kubelet"));
        assert_eq!(d.pods_dir(), Path::new("/var/lib/kubelet/pods"));
        assert_eq!(d.pod_dir(UID).unwrap(), Path::new(&pod));
        assert_eq!(
            d.pod_volumes_dir(UID).unwrap(),
            Path::new(&format!("{pod}/volumes"))
        );
        assert_eq!(
            d.pod_volume_dir(UID, "kubernetes.io/empty-dir", "cache")
                .unwrap(),
            Path::new(&format!("{pod}/volumes/kubernetes.io~empty-dir/cache"))
        );
        assert_eq!(
            d.pod_plugins_dir(UID).unwrap(),
            Path::new(&format!("{pod}/plugins"))
        );
        assert_eq!(
            d.pod_plugin_dir(UID, "kubernetes.io/csi").unwrap(),
            Path::new(&format!("{pod}/plugins/kubernetes.io~csi"))
        );
        assert_eq!(
            d.pod_containers_dir(UID).unwrap(),
            Path::new(&format!("{pod}/containers"))
        );
        assert_eq!(
            d.pod_container_dir(UID, "app").unwrap(),
            Path::new(&format!("{pod}/containers/app"))
        );
        assert_eq!(
            d.etc_hosts_path(UID).unwrap(),
            Path::new(&format!("{pod}/etc-hosts"))
        );
        assert_eq!(
            d.volume_subpaths_dir(UID).unwrap(),
            Path::new(&format!("{pod}/volume-subpaths"))
        );
        assert_eq!(
            d.volume_subpath_dir(UID, "data", "app", 2).unwrap(),
            Path::new(&format!("{pod}/volume-subpaths/data/app/2"))
        );
    }

    #[test]
    fn plugin_names_escape_and_unescape() {
        assert_eq!(
            escape_plugin_name("kubernetes.io/empty-dir"),
            "kubernetes.io~empty-dir"
        );
        assert_eq!(escape_plugin_name("a/b/c"), "a~b~c");
        assert_eq!(
            unescape_plugin_name("kubernetes.io~empty-dir"),
            "kubernetes.io/empty-dir"
        );
        assert_eq!(
            unescape_plugin_name(&escape_plugin_name("kubernetes.io/host-path")),
            "kubernetes.io/host-path"
        );
    }

    #[test]
    fn components_that_could_escape_the_root_are_rejected() {
        let d = dirs();
        for bad in ["", ".", "..", "a/b", "../x", "/abs", "nul\0"] {
            let err = d.pod_dir(bad).unwrap_err();
            assert_eq!(err.what, "pod uid");
            assert_eq!(err.value, bad);
            assert!(
                d.pod_volume_dir(UID, "kubernetes.io/empty-dir", bad)
                    .is_err()
            );
            assert!(d.pod_container_dir(UID, bad).is_err());
            assert!(d.volume_subpath_dir(UID, bad, "app", 0).is_err());
            assert!(d.volume_subpath_dir(UID, "data", bad, 0).is_err());
            assert!(d.etc_hosts_path(bad).is_err());
        }
        // A '/' in a plugin name is escaped, but '.' and '..' are still rejected.
        assert!(d.pod_plugin_dir(UID, "..").is_err());
        assert!(d.pod_volume_dir(UID, ".", "v").is_err());
        assert_eq!(
            d.pod_dir("..").unwrap_err().to_string(),
            "invalid pod uid \"..\": must not be '.' or '..'"
        );
        assert_eq!(
            d.pod_volume_dir(UID, "p", "a/b").unwrap_err().to_string(),
            "invalid volume name \"a/b\": must not contain '/'"
        );
    }

    #[test]
    fn listing_a_missing_root_is_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let d = PodDirs::new(tmp.path().join("absent"));
        assert!(d.list_pod_uids().unwrap().is_empty());
        assert!(d.list_volume_dirs(UID).unwrap().is_empty());
    }

    #[test]
    fn listing_rejects_an_invalid_uid() {
        let tmp = tempfile::tempdir().unwrap();
        let err = PodDirs::new(tmp.path()).list_volume_dirs("..").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn listing_finds_pods_and_volumes_on_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let d = PodDirs::new(tmp.path());
        let empty_dir = d
            .pod_volume_dir("uid-b", "kubernetes.io/empty-dir", "cache")
            .unwrap();
        let config_map = d
            .pod_volume_dir("uid-b", "kubernetes.io/configmap", "config")
            .unwrap();
        for dir in [&empty_dir, &config_map] {
            fs::create_dir_all(dir).unwrap();
        }
        fs::create_dir_all(d.pod_dir("uid-a").unwrap()).unwrap();
        // Stray files are not pods, and files directly under volumes/ are not plugins.
        fs::write(d.pods_dir().join("stray-file"), b"x").unwrap();
        fs::write(d.pod_volumes_dir("uid-b").unwrap().join("stray"), b"x").unwrap();

        assert_eq!(d.list_pod_uids().unwrap(), ["uid-a", "uid-b"]);
        assert!(d.list_volume_dirs("uid-a").unwrap().is_empty());
        assert_eq!(
            d.list_volume_dirs("uid-b").unwrap(),
            [
                VolumeDir {
                    plugin_name: "kubernetes.io/configmap".into(),
                    volume_name: "config".into(),
                    path: config_map,
                },
                VolumeDir {
                    plugin_name: "kubernetes.io/empty-dir".into(),
                    volume_name: "cache".into(),
                    path: empty_dir,
                },
            ]
        );
    }
}
