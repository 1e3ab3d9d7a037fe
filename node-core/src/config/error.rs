//! Errors of the pod sources.

use std::fmt;
use std::path::PathBuf;

/// Where a manifest came from: it names the manifest in errors and feeds the UID hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ManifestOrigin {
    /// A manifest file (its full path, as the file source found it).
    File(PathBuf),
    /// The body served at a URL.
    Url(String),
    /// One item of a `PodList` served at a URL.
    UrlItem {
        /// The URL.
        url: String,
        /// The index of the item in `items`.
        index: usize,
    },
}

impl ManifestOrigin {
    /// Whether the manifest came from a file (file pods get the NoExecute toleration).
    pub fn is_file(&self) -> bool {
        matches!(self, ManifestOrigin::File(_))
    }
}

impl fmt::Display for ManifestOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestOrigin::File(path) => write!(f, "manifest {}", path.display()),
            ManifestOrigin::Url(url) => write!(f, "url {url}"),
            ManifestOrigin::UrlItem { url, index } => write!(f, "url {url} items[{index}]"),
        }
    }
}

/// One validation error: the field path and what is wrong with it, formatted like upstream's
/// `field.Error` (`spec.containers[0].image: Required value`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field path, e.g. `spec.containers[1].name`.
    pub field: String,
    /// What is wrong, e.g. `Duplicate value: "web"`.
    pub message: String,
}

impl FieldError {
    /// `<field>: Required value[: <detail>]`.
    pub(crate) fn required(field: impl Into<String>, detail: &str) -> Self {
        Self::with_detail(field, "Required value".to_owned(), detail)
    }

    /// `<field>: Invalid value: <value>[: <detail>]`; `value` is already formatted.
    pub(crate) fn invalid(
        field: impl Into<String>,
        value: impl fmt::Display,
        detail: &str,
    ) -> Self {
        Self::with_detail(field, format!("Invalid value: {value}"), detail)
    }

    /// `<field>: Invalid value: "<value>"[: <detail>]` for a string value.
    pub(crate) fn invalid_str(field: impl Into<String>, value: &str, detail: &str) -> Self {
        Self::invalid(field, format_args!("{value:?}"), detail)
    }

    /// `<field>: Duplicate value: "<value>"`.
    pub(crate) fn duplicate(field: impl Into<String>, value: &str) -> Self {
        FieldError {
            field: field.into(),
            message: format!("Duplicate value: {value:?}"),
        }
    }

    /// `<field>: Unsupported value: "<value>": supported values: "a", "b"`.
    pub(crate) fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        let supported = supported
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        FieldError {
            field: field.into(),
            message: format!("Unsupported value: {value:?}: supported values: {supported}"),
        }
    }

    /// `<field>: Forbidden: <detail>`.
    pub(crate) fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        FieldError {
            field: field.into(),
            message: format!("Forbidden: {detail}"),
        }
    }

    fn with_detail(field: impl Into<String>, mut message: String, detail: &str) -> Self {
        if !detail.is_empty() {
            message.push_str(": ");
            message.push_str(detail);
        }
        FieldError {
            field: field.into(),
            message,
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The field errors of a rejected pod, joined like `[err1, err2]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldErrors<'a>(pub(crate) &'a [FieldError]);

impl fmt::Display for FieldErrors<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{error}")?;
        }
        f.write_str("]")
    }
}

/// An error of a pod source: a manifest that cannot be read, decoded or validated, or a URL
/// that cannot be fetched. Each names the manifest (file or URL) it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PodSourceError {
    /// The manifest could not be read.
    #[error("{origin}: could not read")]
    Read {
        /// The manifest.
        origin: ManifestOrigin,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The manifest path is neither a regular file nor a directory.
    #[error("{origin}: not a directory or regular file")]
    NotAFile {
        /// The manifest.
        origin: ManifestOrigin,
    },
    /// The manifest is larger than [`MAX_MANIFEST_SIZE`](super::MAX_MANIFEST_SIZE).
    #[error("{origin}: larger than the limit of {limit} bytes")]
    TooLarge {
        /// The manifest.
        origin: ManifestOrigin,
        /// The limit in bytes.
        limit: usize,
    },
    /// The manifest is empty (or holds only YAML comments).
    #[error("{origin}: zero-length data")]
    Empty {
        /// The manifest.
        origin: ManifestOrigin,
    },
    /// The manifest is neither valid YAML nor valid JSON.
    #[error("{origin}: could not parse as YAML or JSON: {message}")]
    Syntax {
        /// The manifest.
        origin: ManifestOrigin,
        /// The parser's message.
        message: String,
    },
    /// The manifest is not an object with the expected `kind` and `apiVersion`.
    #[error("{origin}: {message}")]
    Kind {
        /// The manifest.
        origin: ManifestOrigin,
        /// What is wrong, e.g. `kind "Service" is not "Pod"`.
        message: String,
    },
    /// A field has the wrong type (a string where a number belongs, ...).
    #[error("{origin}: {field}: {message}")]
    Field {
        /// The manifest.
        origin: ManifestOrigin,
        /// The field path, e.g. `spec.containers[0].ports[0].containerPort`.
        field: String,
        /// The decoder's message.
        message: String,
    },
    /// The pod has no `metadata.name`.
    #[error("{origin}: invalid pod: name is needed for the pod")]
    MissingName {
        /// The manifest.
        origin: ManifestOrigin,
    },
    /// The pod failed validation.
    #[error("{origin}: invalid pod: {}", FieldErrors(.errors))]
    Invalid {
        /// The manifest.
        origin: ManifestOrigin,
        /// Every validation error, in upstream's order.
        errors: Vec<FieldError>,
    },
    /// Two manifest files declare the same pod (namespace/name); the first in path order wins.
    #[error("{origin}: pod {pod:?} is already declared by {}", .first.display())]
    DuplicatePod {
        /// The rejected manifest.
        origin: ManifestOrigin,
        /// The pod's `namespace/name`.
        pod: String,
        /// The manifest whose pod was kept.
        first: PathBuf,
    },
    /// The URL is not an `http://` URL. `https://` is not supported yet.
    #[error("url {url}: unsupported scheme (only http:// is supported)")]
    UnsupportedScheme {
        /// The URL.
        url: String,
    },
    /// The URL or a header of the HTTP source is malformed.
    #[error("url {url}: {message}")]
    InvalidRequest {
        /// The URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The GET request failed (connection refused, ...).
    #[error("url {url}: request failed")]
    Request {
        /// The URL.
        url: String,
        /// The client error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The GET request did not finish within the timeout.
    #[error("url {url}: no response within {seconds}s")]
    Timeout {
        /// The URL.
        url: String,
        /// The timeout.
        seconds: u64,
    },
    /// The server answered with a status other than 200.
    #[error("url {url}: {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status line, e.g. `500 Internal Server Error`.
        status: String,
    },
    /// The receiver of pod updates is gone; the source stops.
    #[error("pod update receiver is closed")]
    Closed,
}

/// An error with all its sources, `": "`-joined, for logs and the rejection maps.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
