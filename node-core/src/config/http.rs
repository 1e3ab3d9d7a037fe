//! The `http` source: GET `staticPodURL` every `httpCheckFrequency` (upstream `http.go`).
//!
//! - The body is a single `Pod` or a `PodList`; every pod is decoded like a manifest file.
//! - A status other than 200, a failed request or an invalid body keeps the previous pods and
//!   records the error (under the URL in the source's rejections).
//! - An empty body sends an empty snapshot (the source counts as seen, its pods are removed).
//! - A body identical to the last one is a no-op, so an invalid body is not re-parsed until it
//!   changes.
//! - Only `http://` is supported for now: `https://` needs a TLS stack and a trust
//!   configuration the kubelet does not have yet, so it is refused up front.

use std::collections::BTreeMap;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::MissedTickBehavior;

use super::error::{PodSourceError, chain};
use super::merge::SourceSender;
use super::static_pod::{MAX_MANIFEST_SIZE, decode_static_pods};

/// Timeout of one GET, body included (upstream's `http.Client{Timeout: 10s}`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Failures logged at warn before the source drops to debug (upstream logs 3 at warning).
const LOUD_FAILURES: u32 = 3;

/// A validated URL and header set.
pub(crate) struct Request {
    url: String,
    uri: http::Uri,
    headers: http::HeaderMap,
}

impl Request {
    pub(crate) fn new(
        url: &str,
        headers: &BTreeMap<String, Vec<String>>,
    ) -> Result<Self, PodSourceError> {
        let invalid = |message: String| PodSourceError::InvalidRequest {
            url: url.to_owned(),
            message,
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e| invalid(format!("invalid URL: {e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(_) => {
                return Err(PodSourceError::UnsupportedScheme {
                    url: url.to_owned(),
                });
            }
            None => return Err(invalid("invalid URL: no scheme".to_owned())),
        }
        if uri.host().is_none() {
            return Err(invalid("invalid URL: no host".to_owned()));
        }
        let mut map = http::HeaderMap::new();
        for (name, values) in headers {
            let header = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| invalid(format!("header {name:?}: {e}")))?;
            for value in values {
                let value = http::HeaderValue::from_str(value)
                    .map_err(|e| invalid(format!("header {name:?}: {e}")))?;
                map.append(header.clone(), value);
            }
        }
        Ok(Request {
            url: url.to_owned(),
            uri,
            headers: map,
        })
    }
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

async fn fetch(client: &HttpClient, request: &Request) -> Result<Bytes, PodSourceError> {
    let url = &request.url;
    let exchange = async {
        let mut req = http::Request::new(Empty::<Bytes>::new());
        *req.uri_mut() = request.uri.clone();
        *req.headers_mut() = request.headers.clone();
        let response = client
            .request(req)
            .await
            .map_err(|e| PodSourceError::Request {
                url: url.clone(),
                source: Box::new(e),
            })?;
        let status = response.status();
        // Read the body either way, as upstream does, then judge the status.
        let body = Limited::new(response.into_body(), MAX_MANIFEST_SIZE)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    PodSourceError::TooLarge {
                        origin: super::ManifestOrigin::Url(url.clone()),
                        limit: MAX_MANIFEST_SIZE,
                    }
                } else {
                    PodSourceError::Request {
                        url: url.clone(),
                        source: e,
                    }
                }
            })?
            .to_bytes();
        if status != http::StatusCode::OK {
            return Err(PodSourceError::Status {
                url: url.clone(),
                status: status.to_string(),
            });
        }
        Ok(body)
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(PodSourceError::Timeout {
                url: url.clone(),
                seconds: REQUEST_TIMEOUT.as_secs(),
            })
        })
}

/// The source task.
pub(crate) async fn run(mut sender: SourceSender, request: Request, period: Duration) {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let url = request.url.clone();
    tracing::info!(%url, "watching URL");
    let mut ticker = tokio::time::interval(period.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_body: Option<Bytes> = None;
    // Why the last body was rejected, if it was.
    let mut body_error: Option<String> = None;
    let mut failures = 0u32;
    loop {
        ticker.tick().await;
        if sender.is_closed() {
            return;
        }
        let outcome = match fetch(&client, &request).await {
            Ok(body) if body.is_empty() => {
                // Upstream sends an empty snapshot and reports an error. Forget the last body
                // so that the same pods served again are sent again.
                last_body = None;
                body_error = None;
                if sender.send(Vec::new()).await.is_err() {
                    return;
                }
                Err(format!("url {url}: zero-length data received"))
            }
            // Unchanged: nothing to send, and the body's outcome still holds (an invalid
            // body stays rejected, without being parsed or logged again, until it changes).
            Ok(body) if last_body.as_ref() == Some(&body) => match &body_error {
                None => Ok(()),
                Some(error) => {
                    sender.status().set_source_error(&url, Some(error.clone()));
                    continue;
                }
            },
            Ok(body) => {
                last_body = Some(body.clone());
                let node_name = sender.node_name().to_owned();
                let decode_url = url.clone();
                let decoded = tokio::task::spawn_blocking(move || {
                    decode_static_pods(&body, &decode_url, &node_name)
                })
                .await;
                let decoded = match decoded {
                    Ok(Ok(pods)) => Ok(pods),
                    Ok(Err(e)) => Err(chain(&e)),
                    Err(e) => Err(format!("url {url}: decoding failed: {e}")),
                };
                body_error = decoded.as_ref().err().cloned();
                match decoded {
                    Ok(pods) => {
                        if sender.send(pods).await.is_err() {
                            return;
                        }
                        Ok(())
                    }
                    Err(error) => Err(error),
                }
            }
            Err(e) => Err(chain(&e)),
        };
        match outcome {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(%url, "successfully read pods from URL");
                } else {
                    tracing::debug!(%url, "read pods from URL");
                }
                failures = 0;
                sender.status().set_source_error(&url, None);
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                if failures <= LOUD_FAILURES {
                    tracing::warn!(%url, %error, "unable to read pods from URL");
                    if failures == LOUD_FAILURES {
                        tracing::warn!(%url, "dropping the verbosity of this message to debug");
                    }
                } else {
                    tracing::debug!(%url, %error, "unable to read pods from URL");
                }
                sender.status().set_source_error(&url, Some(error));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_up_front() {
        let headers =
            BTreeMap::from([("X-Token".to_owned(), vec!["a".to_owned(), "b".to_owned()])]);
        let request = Request::new("http://127.0.0.1:8080/pods", &headers).unwrap();
        assert_eq!(request.headers.get_all("x-token").iter().count(), 2);
        assert!(matches!(
            Request::new("https://example.invalid/pods", &BTreeMap::new()),
            Err(PodSourceError::UnsupportedScheme { .. })
        ));
        assert!(matches!(
            Request::new("not a url", &BTreeMap::new()),
            Err(PodSourceError::InvalidRequest { .. })
        ));
        let bad = BTreeMap::from([("bad header".to_owned(), vec!["x".to_owned()])]);
        assert!(matches!(
            Request::new("http://127.0.0.1/", &bad),
            Err(PodSourceError::InvalidRequest { .. })
        ));
    }
}
