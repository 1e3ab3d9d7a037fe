//! Layer entries and the deterministic layer tarball.
//!
//! Entries are recorded as given and resolved when the image is built: paths are normalized,
//! missing parent directories are added (mode 0755), host files are read and busybox applets are
//! listed. The tarball then has every directory before its children, no absolute or `..` paths,
//! uid/gid 0, mtime 0 and no user or group names, so the same entries always give the same bytes.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use flate2::{Compression, GzBuilder};
use tar::EntryType;

use super::error::{OciImageError, Result};

/// Mode of directories the builder adds because an entry needs them as a parent.
pub(crate) const PARENT_DIR_MODE: u32 = 0o755;

/// The content of a regular file in a layer.
#[derive(Clone)]
pub(crate) enum Content {
    /// Bytes given to the builder.
    Bytes(Arc<[u8]>),
    /// A host file, read when the image is built.
    HostFile(PathBuf),
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Content::Bytes(bytes) => write!(f, "Bytes({} bytes)", bytes.len()),
            Content::HostFile(path) => f.debug_tuple("HostFile").field(path).finish(),
        }
    }
}

/// One entry as given to the builder, before validation.
#[derive(Clone, Debug)]
pub(crate) enum EntrySpec {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        mode: u32,
        content: Content,
    },
    Symlink {
        path: String,
        target: String,
    },
    HardLink {
        path: String,
        target: String,
    },
    /// `<dir>/<applet> -> busybox` for every applet `<busybox> --list` prints, except `busybox`.
    BusyboxApplets {
        dir: String,
        busybox: PathBuf,
    },
}

/// A validated entry, keyed by its normalized path in [`Entries`].
#[derive(Clone, Debug)]
enum Entry {
    Dir { mode: u32 },
    File { mode: u32, content: Arc<[u8]> },
    Symlink { target: String },
    HardLink { target: String },
}

/// The resolved entries of one layer, sorted by normalized path.
type Entries = BTreeMap<String, Entry>;

/// A built layer: the gzip blob and the digest of the uncompressed tar (the diff id).
pub(crate) struct LayerBlob {
    pub(crate) gzip: Vec<u8>,
    pub(crate) diff_id_hex: String,
}

/// Resolves `specs` and writes the gzip-compressed layer tarball.
pub(crate) fn build_layer(specs: &[EntrySpec], reference: &str) -> Result<LayerBlob> {
    let entries = resolve(specs)?;
    let assemble = |source| OciImageError::Assemble {
        what: "layer",
        reference: reference.to_owned(),
        source,
    };
    let tar = write_tar(&entries).map_err(assemble)?;
    let diff_id_hex = super::sha256_hex(&tar);
    let mut gz = GzBuilder::new()
        .mtime(0)
        .write(Vec::with_capacity(tar.len() / 2), Compression::default());
    gz.write_all(&tar).map_err(assemble)?;
    let gzip = gz.finish().map_err(assemble)?;
    Ok(LayerBlob { gzip, diff_id_hex })
}

/// Normalizes a path inside the image: drops leading `/`, empty and `.` components; rejects
/// `..`, NUL and the root itself.
pub(crate) fn normalize_path(path: &str) -> Result<String> {
    let invalid = |reason: &str| OciImageError::InvalidEntry {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    if path.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    let mut parts = Vec::new();
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err(invalid("`..` is not allowed in image paths")),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(invalid("the image root cannot be an entry"));
    }
    Ok(parts.join("/"))
}

fn check_mode(path: &str, mode: u32) -> Result<()> {
    if mode & !0o7777 != 0 {
        return Err(OciImageError::InvalidEntry {
            path: path.to_owned(),
            reason: format!("mode {mode:#o} has bits outside 0o7777"),
        });
    }
    Ok(())
}

fn check_link_target(path: &str, target: &str) -> Result<()> {
    if target.is_empty() || target.contains('\0') {
        return Err(OciImageError::InvalidEntry {
            path: path.to_owned(),
            reason: "link target is empty or contains a NUL byte".to_owned(),
        });
    }
    Ok(())
}

/// Turns the specs into validated entries, later specs replacing earlier ones at the same path.
fn resolve(specs: &[EntrySpec]) -> Result<Entries> {
    let mut entries = Entries::new();
    for spec in specs {
        match spec {
            EntrySpec::Dir { path, mode } => {
                check_mode(path, *mode)?;
                entries.insert(normalize_path(path)?, Entry::Dir { mode: *mode });
            }
            EntrySpec::File {
                path,
                mode,
                content,
            } => {
                check_mode(path, *mode)?;
                let key = normalize_path(path)?;
                let content = match content {
                    Content::Bytes(bytes) => Arc::clone(bytes),
                    Content::HostFile(host) => std::fs::read(host)
                        .map_err(|source| OciImageError::ReadHostFile {
                            path: host.clone(),
                            source,
                        })?
                        .into(),
                };
                entries.insert(
                    key,
                    Entry::File {
                        mode: *mode,
                        content,
                    },
                );
            }
            EntrySpec::Symlink { path, target } => {
                check_link_target(path, target)?;
                let target = target.clone();
                entries.insert(normalize_path(path)?, Entry::Symlink { target });
            }
            EntrySpec::HardLink { path, target } => {
                check_link_target(path, target)?;
                let key = normalize_path(path)?;
                let target = normalize_path(target).map_err(|_| OciImageError::InvalidEntry {
                    path: path.clone(),
                    reason: format!("hard link target {target:?} is not a path in the image"),
                })?;
                entries.insert(key, Entry::HardLink { target });
            }
            EntrySpec::BusyboxApplets { dir, busybox } => {
                let dir = normalize_path(dir)?;
                for applet in busybox_applets(busybox)? {
                    entries.insert(
                        format!("{dir}/{applet}"),
                        Entry::Symlink {
                            target: "busybox".to_owned(),
                        },
                    );
                }
            }
        }
    }
    add_parents_and_check(&mut entries)?;
    Ok(entries)
}

/// Adds missing parent directories and checks that every parent is a directory and every hard
/// link points at a regular file of this layer.
fn add_parents_and_check(entries: &mut Entries) -> Result<()> {
    let mut missing = Vec::new();
    for (path, entry) in entries.iter() {
        let mut parent = path.as_str();
        while let Some((p, _)) = parent.rsplit_once('/') {
            parent = p;
            match entries.get(parent) {
                Some(Entry::Dir { .. }) => {}
                Some(_) => {
                    return Err(OciImageError::InvalidEntry {
                        path: path.clone(),
                        reason: format!("parent {parent:?} is not a directory"),
                    });
                }
                None => missing.push(parent.to_owned()),
            }
        }
        if let Entry::HardLink { target } = entry
            && !matches!(entries.get(target), Some(Entry::File { .. }))
        {
            return Err(OciImageError::InvalidEntry {
                path: path.clone(),
                reason: format!("hard link target {target:?} is not a regular file of the layer"),
            });
        }
    }
    for parent in missing {
        entries.insert(
            parent,
            Entry::Dir {
                mode: PARENT_DIR_MODE,
            },
        );
    }
    Ok(())
}

/// Runs `<busybox> --list` and returns the applet names, without `busybox` itself.
fn busybox_applets(busybox: &Path) -> Result<Vec<String>> {
    // A bare file name would make Command search PATH instead of using the given file.
    let program = if busybox.components().count() == 1 && busybox.is_relative() {
        Path::new(".").join(busybox)
    } else {
        busybox.to_path_buf()
    };
    let output = Command::new(&program)
        .arg("--list")
        .output()
        .map_err(|source| OciImageError::RunBusybox {
            path: busybox.to_path_buf(),
            source,
        })?;
    let failed = |reason: String| OciImageError::BusyboxApplets {
        path: busybox.to_path_buf(),
        reason,
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(failed(format!("{}: {}", output.status, stderr.trim())));
    }
    let stdout = String::from_utf8(output.stdout)
        .map_err(|_| failed("the output is not UTF-8".to_owned()))?;
    let mut applets = Vec::new();
    for line in stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains('/') || line == "." || line == ".." || line.contains('\0') {
            return Err(failed(format!("unexpected applet name {line:?}")));
        }
        if line != "busybox" {
            applets.push(line.to_owned());
        }
    }
    if applets.is_empty() {
        return Err(failed("the list is empty".to_owned()));
    }
    Ok(applets)
}

/// Writes the entries in path order (parents first), hard links last so their targets precede
/// them.
fn write_tar(entries: &Entries) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut hard_links = Vec::new();
    for (path, entry) in entries {
        match entry {
            Entry::Dir { mode } => {
                let mut h = super::tar_header(EntryType::Directory, *mode, 0);
                tar.append_data(&mut h, format!("{path}/"), std::io::empty())?;
            }
            Entry::File { mode, content } => {
                let mut h = super::tar_header(EntryType::Regular, *mode, content.len() as u64);
                tar.append_data(&mut h, path, &content[..])?;
            }
            Entry::Symlink { target } => {
                let mut h = super::tar_header(EntryType::Symlink, 0o777, 0);
                tar.append_link(&mut h, path, target)?;
            }
            Entry::HardLink { target } => hard_links.push((path, target)),
        }
    }
    for (path, target) in hard_links {
        let mode = match entries.get(target) {
            Some(Entry::File { mode, .. }) => *mode,
            _ => 0o644,
        };
        let mut h = super::tar_header(EntryType::Link, mode, 0);
        tar.append_link(&mut h, path, target)?;
    }
    tar.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, data: &[u8]) -> EntrySpec {
        EntrySpec::File {
            path: path.to_owned(),
            mode: 0o644,
            content: Content::Bytes(data.into()),
        }
    }

    fn tar_listing(specs: &[EntrySpec]) -> Vec<(String, EntryType, u32, Option<String>)> {
        let entries = resolve(specs).unwrap();
        let bytes = write_tar(&entries).unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
                assert_eq!(h.mtime().unwrap(), 0);
                (
                    String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                    h.entry_type(),
                    h.mode().unwrap(),
                    e.link_name_bytes()
                        .map(|l| String::from_utf8(l.into_owned()).unwrap()),
                )
            })
            .collect()
    }

    #[test]
    fn normalizes_paths_and_rejects_escapes() {
        assert_eq!(normalize_path("/usr//bin/./env").unwrap(), "usr/bin/env");
        assert_eq!(normalize_path("etc/passwd").unwrap(), "etc/passwd");
        for bad in ["/", "", ".", "/a/../b", "..", "a\0b"] {
            assert!(
                matches!(normalize_path(bad), Err(OciImageError::InvalidEntry { ref path, .. }) if path == bad),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn parents_come_first_with_mode_0755_and_hard_links_follow_targets() {
        let listing = tar_listing(&[
            file("/usr/local/bin/z", b"z"),
            EntrySpec::HardLink {
                path: "/a/link".to_owned(),
                target: "/usr/local/bin/z".to_owned(),
            },
            EntrySpec::Symlink {
                path: "/usr/bin-x".to_owned(),
                target: "/usr/local/bin/z".to_owned(),
            },
            EntrySpec::Dir {
                path: "/tmp".to_owned(),
                mode: 0o1777,
            },
        ]);
        let names: Vec<&str> = listing.iter().map(|(p, ..)| p.as_str()).collect();
        assert_eq!(
            names,
            [
                "a/",
                "tmp/",
                "usr/",
                "usr/bin-x",
                "usr/local/",
                "usr/local/bin/",
                "usr/local/bin/z",
                "a/link"
            ]
        );
        for (path, ty, mode, link) in &listing {
            match path.as_str() {
                "tmp/" => assert_eq!((*ty, *mode), (EntryType::Directory, 0o1777)),
                "usr/bin-x" => assert_eq!(
                    (*ty, link.as_deref()),
                    (EntryType::Symlink, Some("/usr/local/bin/z"))
                ),
                "a/link" => assert_eq!(
                    (*ty, *mode, link.as_deref()),
                    (EntryType::Link, 0o644, Some("usr/local/bin/z"))
                ),
                "usr/local/bin/z" => assert_eq!((*ty, *mode), (EntryType::Regular, 0o644)),
                _ => assert_eq!((*ty, *mode), (EntryType::Directory, 0o755), "{path}"),
            }
        }
    }

    #[test]
    fn later_entries_replace_earlier_ones() {
        let listing = tar_listing(&[file("/etc/motd", b"one"), file("etc/motd", b"two")]);
        assert_eq!(listing.len(), 2);
    }

    #[test]
    fn long_paths_and_link_targets_are_kept() {
        let long = format!("/{}/{}", "d".repeat(120), "f".repeat(120));
        let target = "t".repeat(200);
        let listing = tar_listing(&[EntrySpec::Symlink {
            path: long.clone(),
            target: target.clone(),
        }]);
        assert_eq!(listing[1].0, long[1..]);
        assert_eq!(listing[1].3.as_deref(), Some(target.as_str()));
    }

    #[test]
    fn rejects_bad_entries() {
        let cases = [
            vec![
                EntrySpec::Symlink {
                    path: "/bin".to_owned(),
                    target: "usr/bin".to_owned(),
                },
                file("/bin/sh", b""),
            ],
            vec![EntrySpec::HardLink {
                path: "/a".to_owned(),
                target: "/missing".to_owned(),
            }],
            vec![EntrySpec::Dir {
                path: "/x".to_owned(),
                mode: 0o10755,
            }],
            vec![EntrySpec::Symlink {
                path: "/x".to_owned(),
                target: String::new(),
            }],
            vec![file("/../etc/passwd", b"")],
        ];
        for specs in cases {
            let err = resolve(&specs).unwrap_err();
            assert!(
                matches!(err, OciImageError::InvalidEntry { .. }),
                "{specs:?}: {err}"
            );
        }
    }

    #[test]
    fn missing_host_file_names_the_path() {
        let err = resolve(&[EntrySpec::File {
            path: "/x".to_owned(),
            mode: 0o644,
            content: Content::HostFile("/nonexistent/host/file".into()),
        }])
        .unwrap_err();
        assert!(
            matches!(&err, OciImageError::ReadHostFile { path, .. } if path == Path::new("/nonexistent/host/file")),
            "{err:?}"
        );
        assert!(err.to_string().contains("/nonexistent/host/file"));
    }
}
