//! The crate's error type.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong while parsing, loading or validating a kubelet configuration.
///
/// Variants carry the file and the field they are about. A configuration that decodes but
/// breaks validation rules is reported once, as [`ConfigError::Invalid`], listing every
/// problem found rather than only the first.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A configuration file or drop-in file could not be read.
    #[error("failed to read kubelet config file {path}")]
    Read {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The drop-in directory (`--config-dir`) could not be listed.
    #[error("failed to read kubelet drop-in config directory {path}")]
    ReadDir {
        /// The directory that could not be listed.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A configuration file is empty; upstream rejects empty files because some fields are
    /// required.
    #[error("kubelet config file {path} is empty")]
    Empty {
        /// The empty file.
        path: PathBuf,
    },

    /// A configuration file is neither valid YAML nor valid JSON.
    #[error("failed to parse kubelet config file {path}")]
    Syntax {
        /// The file (or `<inline>` for text given directly).
        path: PathBuf,
        /// The YAML or JSON parser's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// `apiVersion` or `kind` is missing or not `kubelet.config.k8s.io/v1beta1` /
    /// `KubeletConfiguration`.
    #[error("{path}: {field} must be {expected:?}, found {}", found_text(found))]
    TypeMeta {
        /// The file (or `<inline>`).
        path: PathBuf,
        /// `apiVersion` or `kind`.
        field: &'static str,
        /// The value that was expected.
        expected: &'static str,
        /// The value found, `None` when the field is absent.
        found: Option<String>,
    },

    /// A field is unknown, or its value has the wrong type or cannot be parsed.
    #[error("{path}: field {field}: {message}")]
    Decode {
        /// The file (or `<inline>`, or `<merged>` for the result of merging drop-ins).
        path: PathBuf,
        /// Dotted path of the offending field, e.g. `authentication.webhook.cacheTTL`.
        field: String,
        /// What is wrong with it.
        message: String,
    },

    /// The configuration decoded but breaks one or more validation rules.
    #[error("invalid kubelet configuration: {}", FieldErrors(errors))]
    Invalid {
        /// Every problem found, each naming its field.
        errors: Vec<FieldError>,
    },

    /// A Go-style duration string (`1m30s`) could not be parsed.
    #[error("invalid duration {input:?}: {reason}")]
    InvalidDuration {
        /// The text that was parsed.
        input: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A Kubernetes quantity (`100Mi`, `500m`) could not be parsed.
    #[error("invalid quantity {input:?}: {reason}")]
    InvalidQuantity {
        /// The text that was parsed.
        input: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A command-line flag value (`key=value,...`, taints, booleans) could not be parsed.
    #[error("invalid flag value {input:?}: {reason}")]
    InvalidFlag {
        /// The text that was parsed.
        input: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A value is not one of the names an enumerated field accepts.
    #[error("invalid value {input:?}, expected one of: {}", expected.join(", "))]
    InvalidEnum {
        /// The text that was parsed.
        input: String,
        /// The accepted names.
        expected: Vec<&'static str>,
    },

    /// An eviction threshold (signal or value) could not be parsed.
    #[error("invalid eviction threshold {input:?}: {reason}")]
    InvalidThreshold {
        /// The text that was parsed.
        input: String,
        /// Why it was rejected.
        reason: String,
    },
}

impl ConfigError {
    /// The individual field errors of an [`ConfigError::Invalid`], or an empty slice.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            ConfigError::Invalid { errors } => errors,
            _ => &[],
        }
    }

    /// Whether this error concerns the named field (exactly, or as a prefix followed by `.` or
    /// `[`). Useful in tests and for callers that highlight a field.
    pub fn names_field(&self, field: &str) -> bool {
        let matches = |candidate: &str| {
            candidate == field
                || candidate
                    .strip_prefix(field)
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        };
        match self {
            ConfigError::Invalid { errors } => errors.iter().any(|e| matches(&e.field)),
            ConfigError::Decode { field: f, .. } => matches(f),
            ConfigError::TypeMeta { field: f, .. } => *f == field,
            _ => false,
        }
    }
}

fn found_text(found: &Option<String>) -> String {
    match found {
        Some(value) => format!("{value:?}"),
        None => "nothing".to_string(),
    }
}

/// One validation problem: the field path (upstream style, e.g. `imageGCHighThresholdPercent`
/// or `evictionHard[memory.available]`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, using the camelCase names of the file format.
    pub field: String,
    /// Lowercase description of the problem.
    pub message: String,
}

impl FieldError {
    /// Creates a field error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

struct FieldErrors<'a>(&'a [FieldError]);

impl fmt::Display for FieldErrors<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
