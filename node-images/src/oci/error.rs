//! The error type of the [`oci`](super) module.

use std::io;
use std::path::PathBuf;

/// Errors from building, writing and reading OCI image archives.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OciImageError {
    /// The image reference cannot be used to name a locally built image.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A layer entry has an unusable path, target or type.
    #[error("invalid layer entry {path:?}: {reason}")]
    InvalidEntry {
        /// The path inside the image as given.
        path: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A host file that should be copied into a layer could not be read.
    #[error("failed to read host file {path}")]
    ReadHostFile {
        /// The host path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// `<busybox> --list` could not be started.
    #[error("failed to run {path} --list")]
    RunBusybox {
        /// The busybox binary.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// `<busybox> --list` ran but did not give a usable applet list.
    #[error("{path} --list did not list applets: {reason}")]
    BusyboxApplets {
        /// The busybox binary.
        path: PathBuf,
        /// What was wrong: its exit status and stderr, or its output.
        reason: String,
    },

    /// An image document could not be assembled with `oci-spec`.
    #[error("failed to assemble the image {what} for {reference}")]
    Spec {
        /// Which document: `config`, `manifest`, `index`, ...
        what: &'static str,
        /// The image reference being built.
        reference: String,
        /// The underlying error.
        #[source]
        source: oci_spec::OciSpecError,
    },

    /// An image document could not be serialized to JSON.
    #[error("failed to serialize the image {what} for {reference}")]
    Serialize {
        /// Which document: `config`, `manifest`, `index`, ...
        what: &'static str,
        /// The image reference being built.
        reference: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },

    /// Writing a layer or archive into memory failed.
    #[error("failed to assemble the {what} of {reference}")]
    Assemble {
        /// `layer` or `archive`.
        what: &'static str,
        /// The image reference being built.
        reference: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// An archive file name for [`LocalImages`](super::LocalImages) is not a plain file name.
    #[error("invalid image archive file name {file_name:?}: it must be a plain file name")]
    InvalidFileName {
        /// The file name as given.
        file_name: String,
    },

    /// The directory for image archives could not be created.
    #[error("failed to create directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// An image archive could not be written or moved into place.
    #[error("failed to write image archive {path}")]
    Write {
        /// The archive path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// An image archive could not be opened or read.
    #[error("failed to read image archive {path}")]
    Read {
        /// The archive path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// An image archive's `index.json` is not a valid OCI image index.
    #[error("invalid index.json in image archive {path}")]
    ParseIndex {
        /// The archive path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: oci_spec::OciSpecError,
    },

    /// An image archive is not an OCI image layout.
    #[error("invalid image archive {path}: {reason}")]
    InvalidArchive {
        /// The archive path.
        path: PathBuf,
        /// What is missing or wrong.
        reason: &'static str,
    },
}

/// Result type of the [`oci`](super) module.
pub type Result<T, E = OciImageError> = std::result::Result<T, E>;
