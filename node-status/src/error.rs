//! The crate's error type.

/// What can go wrong talking to the API server about the node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// An API call failed; names the call and the object.
    #[error("{what} {name}: {source}")]
    Api {
        /// The call (`register node`, `renew lease`).
        what: &'static str,
        /// The object's name.
        name: String,
        /// The client's error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The kubeconfig file cannot be used.
    #[error("kubeconfig {}: {source}", path.display())]
    Kubeconfig {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An API call got no answer in time (a hung API server must not hold the heartbeat).
    #[error("{what} {name}: no answer within {after:?}")]
    Timeout {
        /// The call.
        what: &'static str,
        /// The object's name.
        name: String,
        /// The time allowed.
        after: std::time::Duration,
    },
    /// A value could not be encoded for the API.
    #[error("encoding for the API server: {0}")]
    Encode(#[source] serde_json::Error),
}

/// Runs an API call with a deadline: upstream gives its heartbeat client a timeout, so that
/// a hung API server delays the next lease renewal or status update by at most that much.
pub(crate) async fn within<T>(
    after: std::time::Duration,
    what: &'static str,
    name: &str,
    call: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, StatusError> {
    match tokio::time::timeout(after, call).await {
        Ok(result) => result.map_err(|e| StatusError::api(what, name, e)),
        Err(_) => Err(StatusError::Timeout {
            what,
            name: name.to_string(),
            after,
        }),
    }
}

impl StatusError {
    pub(crate) fn api(what: &'static str, name: &str, source: kube::Error) -> Self {
        StatusError::Api {
            what,
            name: name.to_string(),
            source: Box::new(source),
        }
    }

    /// Whether the API server refused the write because the object changed meanwhile (409),
    /// or was not found (404): the caller reads it again.
    pub fn is_conflict(&self) -> bool {
        self.code() == Some(409)
    }

    /// Whether the object does not exist (404).
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }

    fn code(&self) -> Option<u16> {
        match self {
            StatusError::Api { source, .. } => match source.as_ref() {
                kube::Error::Api(status) => Some(status.code),
                _ => None,
            },
            StatusError::Encode(_)
            | StatusError::Kubeconfig { .. }
            | StatusError::Timeout { .. } => None,
        }
    }
}
