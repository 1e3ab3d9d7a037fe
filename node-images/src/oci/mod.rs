//! OCI image archives built locally, without a registry.
//!
//! A node without network access still needs images: a busybox for tests and demos and a pause
//! image for pod sandboxes. [`ImageBuilder`] builds a single-layer image from entries (host
//! files, bytes, directories, symlinks, hard links) and image settings, and packs it as an
//! [OCI image layout](https://github.com/opencontainers/image-spec/blob/main/image-layout.md)
//! tar archive that `ctr -n k8s.io images import <file>` (or `skopeo`, or k3s' airgap image
//! directory) accepts. The index names the image with the `io.containerd.image.name` and
//! `org.opencontainers.image.ref.name` annotations, and the platform is linux on the build
//! host's architecture.
//!
//! Archives are deterministic: mtime 0, uid/gid 0, sorted entries, gzip without name or
//! timestamp, no `created` time and JSON with sorted keys. Building twice gives the same bytes,
//! so [`LocalImages`] only rewrites an archive whose content changed and the manifest digest
//! tells a caller whether a re-import is needed. [`read_archive_index`] lists what an archive
//! holds.
//!
//! ```no_run
//! use std::path::Path;
//! use node_images::oci::{self, LocalImages, DEFAULT_BUSYBOX_PATH};
//!
//! # fn main() -> Result<(), oci::OciImageError> {
//! // busybox.tar and pause.tar, rewritten only when they change.
//! for image in LocalImages::with_defaults("/var/lib/node-agent/images", DEFAULT_BUSYBOX_PATH).write()? {
//!     println!("{} {} {} written={}", image.path.display(), image.reference, image.manifest_digest, image.written);
//! }
//!
//! // A custom image on top of busybox.
//! let archive = oci::busybox_image(Path::new(DEFAULT_BUSYBOX_PATH), "example.com/hello:1")
//!     .file("/etc/motd", "hello\n", 0o644)
//!     .cmd(["cat", "/etc/motd"])
//!     .build()?;
//! archive.write_to("/tmp/hello.tar")?;
//! for entry in oci::read_archive_index("/tmp/hello.tar")? {
//!     println!("{:?} {}", entry.reference, entry.manifest_digest);
//! }
//! # Ok(())
//! # }
//! ```

mod archive;
mod builder;
mod error;
mod layer;
mod local;
mod reference;

pub use archive::{ArchivedImage, read_archive_index};
pub use builder::{ANNOTATION_CONTAINERD_IMAGE_NAME, ImageBuilder, OciArchive, host_arch};
pub use error::{OciImageError, Result};
pub use local::{
    BUSYBOX_ARCHIVE, BUSYBOX_IMAGE, DEFAULT_BUSYBOX_PATH, DEFAULT_PATH_ENV, LocalImage,
    LocalImages, PAUSE_ARCHIVE, PAUSE_IMAGE, PAUSE_SCRIPT, busybox_image, pause_image,
};

use sha2::{Digest as _, Sha256};
use tar::{EntryType, Header};

/// Lowercase hex SHA-256 of `bytes`.
fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A GNU tar header with the fixed metadata every entry we write gets: uid/gid 0, mtime 0.
fn tar_header(entry_type: EntryType, mode: u32, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}
