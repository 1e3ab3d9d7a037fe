//! The OCI image layout tar archive: writing it, and reading its `index.json` back.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::{ANNOTATION_REF_NAME, Digest, ImageIndex, MediaType, Platform};
use tar::EntryType;

use super::builder::ANNOTATION_CONTAINERD_IMAGE_NAME;
use super::error::{OciImageError, Result};

/// Upper bound for an `index.json` we are willing to read (ours are a few hundred bytes).
const MAX_INDEX_JSON: u64 = 4 << 20;

/// One manifest (or nested index) listed in an archive's `index.json`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArchivedImage {
    /// The `io.containerd.image.name` annotation: the name containerd gives the image on import.
    pub reference: Option<String>,
    /// The `org.opencontainers.image.ref.name` annotation (usually the tag).
    pub ref_name: Option<String>,
    /// The digest of the manifest the index entry points to.
    pub manifest_digest: Digest,
    /// The media type of that manifest.
    pub media_type: MediaType,
    /// The platform the index entry declares, if any.
    pub platform: Option<Platform>,
}

/// Reads the `index.json` of the OCI image layout tar archive at `path` and lists its entries.
///
/// Only the tar headers up to `index.json` and the index itself are read; blobs are not
/// verified.
pub fn read_archive_index(path: impl AsRef<Path>) -> Result<Vec<ArchivedImage>> {
    let path = path.as_ref();
    let json = read_index_json(path)?.ok_or_else(|| OciImageError::InvalidArchive {
        path: path.to_path_buf(),
        reason: "no index.json",
    })?;
    let index = ImageIndex::from_reader(&json[..]).map_err(|source| OciImageError::ParseIndex {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(index
        .manifests()
        .iter()
        .map(|descriptor| {
            let annotation = |key: &str| {
                descriptor
                    .annotations()
                    .as_ref()
                    .and_then(|a| a.get(key).cloned())
            };
            ArchivedImage {
                reference: annotation(ANNOTATION_CONTAINERD_IMAGE_NAME),
                ref_name: annotation(ANNOTATION_REF_NAME),
                manifest_digest: descriptor.digest().clone(),
                media_type: descriptor.media_type().clone(),
                platform: descriptor.platform().clone(),
            }
        })
        .collect())
}

/// Returns the bytes of `index.json` in the archive at `path`, or `None` if it has none.
pub(crate) fn read_index_json(path: &Path) -> Result<Option<Vec<u8>>> {
    let read_error = |source| OciImageError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read_error)?;
    let mut archive = tar::Archive::new(BufReader::new(file));
    for entry in archive.entries_with_seek().map_err(read_error)? {
        let mut entry = entry.map_err(read_error)?;
        let is_index = {
            let name = entry.path_bytes();
            let name = name.strip_prefix(b"./").unwrap_or(&name);
            name == b"index.json"
        };
        if !is_index || entry.header().entry_type() != EntryType::Regular {
            continue;
        }
        if entry.size() > MAX_INDEX_JSON {
            return Err(OciImageError::InvalidArchive {
                path: path.to_path_buf(),
                reason: "index.json is larger than 4 MiB",
            });
        }
        let mut json = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut json).map_err(read_error)?;
        return Ok(Some(json));
    }
    Ok(None)
}

/// Packs an OCI image layout: `oci-layout` and `index.json` first (so readers of the index stop
/// early), then `blobs/sha256/<hex>` in digest order. Files 0644, directories 0755, uid/gid 0,
/// mtime 0.
pub(crate) fn write_layout(
    layout_json: &[u8],
    index_json: &[u8],
    blobs: &[(String, &[u8])],
) -> io::Result<Vec<u8>> {
    let capacity = blobs.iter().map(|(_, b)| b.len() + 1024).sum::<usize>() + 8192;
    let mut tar = tar::Builder::new(Vec::with_capacity(capacity));
    let file = |tar: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]| {
        let mut h = super::tar_header(EntryType::Regular, 0o644, data.len() as u64);
        tar.append_data(&mut h, name, data)
    };
    let dir = |tar: &mut tar::Builder<Vec<u8>>, name: &str| {
        let mut h = super::tar_header(EntryType::Directory, 0o755, 0);
        tar.append_data(&mut h, name, io::empty())
    };
    file(&mut tar, "oci-layout", layout_json)?;
    file(&mut tar, "index.json", index_json)?;
    dir(&mut tar, "blobs/")?;
    dir(&mut tar, "blobs/sha256/")?;
    let mut blobs: Vec<_> = blobs.iter().collect();
    blobs.sort_by(|a, b| a.0.cmp(&b.0));
    blobs.dedup_by(|a, b| a.0 == b.0);
    for (hex, data) in blobs {
        file(&mut tar, &format!("blobs/sha256/{hex}"), data)?;
    }
    tar.into_inner()
}

/// Whether the file at `path` already holds an archive equal to one with `len` bytes and
/// `index_json`: same size and same `index.json`, which pins every blob by digest. Any read
/// problem counts as "differs".
pub(crate) fn unchanged(path: &Path, len: usize, index_json: &[u8]) -> bool {
    let same_len = std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == len as u64);
    same_len && matches!(read_index_json(path), Ok(Some(json)) if json == index_json)
}

/// Checks that `file_name` is a plain file name for an archive in the images directory.
pub(crate) fn check_file_name(dir: &Path, file_name: &str) -> Result<PathBuf> {
    let plain = !file_name.is_empty()
        && file_name != "."
        && file_name != ".."
        && !file_name.contains('/')
        && !file_name.contains('\0');
    if !plain {
        return Err(OciImageError::InvalidFileName {
            file_name: file_name.to_owned(),
        });
    }
    Ok(dir.join(file_name))
}
