//! The error type of this crate.

use std::path::PathBuf;
use std::time::Duration;

/// An error from the CRI client or the managed containerd.
///
/// Every variant names the call and the object it was about, so a log line says which runtime
/// request failed, on what, and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CriError {
    /// The runtime endpoint is not a `unix://` URL or an absolute socket path.
    #[error("invalid runtime endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The runtime could not be reached on its socket.
    #[error(
        "CRI {call}{}: runtime endpoint {endpoint} is unreachable: {reason}",
        on(object)
    )]
    Unreachable {
        /// The CRI call, e.g. `Version`.
        call: &'static str,
        /// The object the call was about (may be empty).
        object: String,
        /// The endpoint that was dialled.
        endpoint: String,
        /// Why it could not be reached.
        reason: String,
    },

    /// The call did not finish within its deadline.
    #[error("CRI {call}{} timed out after {timeout:?}", on(object))]
    Timeout {
        /// The CRI call.
        call: &'static str,
        /// The object the call was about (may be empty).
        object: String,
        /// The deadline that passed.
        timeout: Duration,
    },

    /// The runtime answered with an error status.
    #[error("CRI {call}{}: {code:?}: {message}", on(object))]
    Status {
        /// The CRI call.
        call: &'static str,
        /// The object the call was about (may be empty).
        object: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// The runtime's message.
        message: String,
    },

    /// The runtime answered, but without a field the call needs.
    #[error("CRI {call}{}: response has no {field}", on(object))]
    MissingField {
        /// The CRI call.
        call: &'static str,
        /// The object the call was about (may be empty).
        object: String,
        /// The missing field.
        field: &'static str,
    },

    /// A file or directory of the managed containerd could not be used.
    #[error("{context} {path}")]
    Io {
        /// What was being done, e.g. `writing containerd config`.
        context: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The managed containerd could not be started or did not become ready.
    #[error("managed containerd at {root}: {reason}")]
    Containerd {
        /// The managed containerd's root directory.
        root: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// Importing an image archive into the managed containerd failed.
    #[error("importing image archive {path}: {reason}")]
    ImageImport {
        /// The archive.
        path: PathBuf,
        /// What went wrong (ctr's output).
        reason: String,
    },

    /// Building the locally provided images failed.
    #[error("building local images")]
    LocalImages(#[source] node_images::oci::OciImageError),
}

fn on(object: &str) -> String {
    if object.is_empty() {
        String::new()
    } else {
        format!(" {object}")
    }
}

impl CriError {
    /// The gRPC code when the runtime answered with an error status.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            CriError::Status { code, .. } => Some(*code),
            CriError::Timeout { .. } => Some(tonic::Code::DeadlineExceeded),
            CriError::Unreachable { .. } => Some(tonic::Code::Unavailable),
            _ => None,
        }
    }

    /// Whether the runtime reported that the object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(tonic::Code::NotFound)
    }

    /// Whether the runtime does not implement the call (for example `GetContainerEvents` on
    /// containerd 1.6).
    pub fn is_unimplemented(&self) -> bool {
        self.code() == Some(tonic::Code::Unimplemented)
    }
}

/// The one mapping of CRI errors onto the engine's kinds: gRPC `NotFound`, a passed deadline
/// (`DeadlineExceeded`) and an unreachable runtime (`Unavailable`) are told apart; an
/// `Unimplemented` call is [`RuntimeError::Unsupported`] for the callers that test for it.
impl From<CriError> for node_core::runtime::RuntimeError {
    fn from(e: CriError) -> Self {
        use node_core::runtime::RuntimeError;
        match e.code() {
            Some(tonic::Code::NotFound) => RuntimeError::NotFound(Box::new(e)),
            Some(tonic::Code::DeadlineExceeded) => RuntimeError::DeadlineExceeded(Box::new(e)),
            Some(tonic::Code::Unavailable) => RuntimeError::Unavailable(Box::new(e)),
            _ => RuntimeError::Runtime(Box::new(e)),
        }
    }
}

/// A `Result` with [`CriError`].
pub type Result<T, E = CriError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use node_core::runtime::RuntimeError;

    fn status(code: tonic::Code) -> CriError {
        CriError::Status {
            call: "ContainerStatus",
            object: "container c1".into(),
            code,
            message: "m".into(),
        }
    }

    #[test]
    fn cri_errors_map_once_onto_the_runtime_kinds() {
        assert!(RuntimeError::from(status(tonic::Code::NotFound)).is_not_found());
        let timeout = CriError::Timeout {
            call: "ExecSync",
            object: "container c1".into(),
            timeout: Duration::from_secs(1),
        };
        let mapped = RuntimeError::from(timeout);
        assert!(mapped.is_deadline_exceeded());
        assert_eq!(
            mapped.to_string(),
            "CRI ExecSync container c1 timed out after 1s"
        );
        let down = CriError::Unreachable {
            call: "Version",
            object: String::new(),
            endpoint: "unix:///run/containerd.sock".into(),
            reason: "connection refused".into(),
        };
        assert!(RuntimeError::from(down).is_unavailable());
        assert!(RuntimeError::from(status(tonic::Code::Unavailable)).is_unavailable());
        assert!(matches!(
            RuntimeError::from(status(tonic::Code::Internal)),
            RuntimeError::Runtime(_)
        ));
    }
}
