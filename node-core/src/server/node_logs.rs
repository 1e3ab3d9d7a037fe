//! `/logs/` (upstream's system log handler, `enableSystemLogHandler`): the node's `/var/log`
//! served as upstream's file server does: a directory as an HTML list of links, a file as it
//! is. Paths are confined to the root: `..` is refused (400), and a link leading out of the
//! root is not followed (404). With a log query configured (`enableSystemLogQuery`), a
//! request with a log query's parameters is answered by [`super::node_log_query`].

use std::path::{Component, Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::node_log_query::LogQueryConfig;

#[derive(Clone)]
struct NodeLogs {
    root: PathBuf,
    query: Option<LogQueryConfig>,
}

/// The router of `/logs/` over `root` (`/var/log` on a node); with `query`, log queries
/// (`?query=…`) are answered too.
pub fn router(root: PathBuf, query: Option<LogQueryConfig>) -> Router {
    Router::new()
        .route("/logs/", get(list_root))
        .route("/logs/{*path}", get(serve))
        .with_state(NodeLogs { root, query })
}

async fn log_query(logs: &NodeLogs, raw: Option<String>) -> Option<Response> {
    let config = logs.query.as_ref()?;
    let params = super::streaming::parse_query(raw);
    if params.is_empty() {
        return None;
    }
    super::node_log_query::answer(config, &logs.root, &params).await
}

async fn list_root(State(logs): State<NodeLogs>, RawQuery(raw): RawQuery) -> Response {
    match log_query(&logs, raw).await {
        Some(answer) => answer,
        None => serve_path(&logs.root, "").await,
    }
}

async fn serve(
    State(logs): State<NodeLogs>,
    UrlPath(path): UrlPath<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    match log_query(&logs, raw).await {
        Some(answer) => answer,
        None => serve_path(&logs.root, &path).await,
    }
}

fn text(code: StatusCode, message: &str) -> Response {
    (code, message.to_string()).into_response()
}

/// Escapes a name for HTML, as Go's `htmlReplacer`.
fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

async fn serve_path(root: &Path, path: &str) -> Response {
    let relative = Path::new(path);
    if relative.components().any(|c| {
        !matches!(
            c,
            Component::Normal(_) | Component::CurDir | Component::RootDir
        )
    }) {
        return text(StatusCode::BAD_REQUEST, "invalid URL path");
    }
    let joined = root.join(path.trim_start_matches('/'));
    let (Ok(real), Ok(real_root)) = (
        tokio::fs::canonicalize(&joined).await,
        tokio::fs::canonicalize(root).await,
    ) else {
        return text(StatusCode::NOT_FOUND, "404 page not found");
    };
    if !real.starts_with(&real_root) {
        return text(StatusCode::NOT_FOUND, "404 page not found");
    }
    let Ok(meta) = tokio::fs::metadata(&real).await else {
        return text(StatusCode::NOT_FOUND, "404 page not found");
    };
    if meta.is_dir() {
        if !path.is_empty() && !path.ends_with('/') {
            let location = format!("/logs/{path}/");
            return (
                StatusCode::MOVED_PERMANENTLY,
                [(header::LOCATION, location)],
            )
                .into_response();
        }
        let Ok(mut entries) = tokio::fs::read_dir(&real).await else {
            return text(StatusCode::INTERNAL_SERVER_ERROR, "Error reading directory");
        };
        let mut names = Vec::new();
        while let Ok(Some(entry)) = entries.next_entry().await {
            let mut name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().await.is_ok_and(|t| t.is_dir()) {
                name.push('/');
            }
            names.push(name);
        }
        names.sort();
        let mut body = String::from(
            "<!doctype html>\n<meta name=\"viewport\" content=\"width=device-width\">\n<pre>\n",
        );
        for name in names {
            let escaped = html_escape(&name);
            body.push_str(&format!("<a href=\"{escaped}\">{escaped}</a>\n"));
        }
        body.push_str("</pre>\n");
        return ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response();
    }
    match tokio::fs::File::open(&real).await {
        Ok(file) => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            Body::from_stream(file_stream(file)),
        )
            .into_response(),
        Err(_) => text(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

/// The file as a stream of chunks.
fn file_stream(file: tokio::fs::File) -> impl futures::Stream<Item = std::io::Result<Vec<u8>>> {
    use tokio::io::AsyncReadExt;
    futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(r: Response) -> (StatusCode, String) {
        let code = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (code, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn files_and_listings_under_the_root_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("log");
        std::fs::create_dir_all(root.join("apt")).unwrap();
        std::fs::write(root.join("syslog"), "line one\n").unwrap();
        std::fs::write(root.join("apt/history.log"), "installed\n").unwrap();
        std::fs::write(dir.path().join("secret"), "no\n").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("escape")).unwrap();

        let (code, listing) = body(serve_path(&root, "").await).await;
        assert_eq!(code, StatusCode::OK);
        assert!(listing.contains("<a href=\"apt/\">apt/</a>"), "{listing}");
        assert!(
            listing.contains("<a href=\"syslog\">syslog</a>"),
            "{listing}"
        );
        assert_eq!(
            body(serve_path(&root, "syslog").await).await,
            (StatusCode::OK, "line one\n".to_string())
        );
        assert_eq!(
            body(serve_path(&root, "apt/history.log").await).await,
            (StatusCode::OK, "installed\n".to_string())
        );
        assert_eq!(
            serve_path(&root, "apt").await.status(),
            StatusCode::MOVED_PERMANENTLY
        );
        assert_eq!(
            body(serve_path(&root, "../secret").await).await.0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            body(serve_path(&root, "apt/../../secret").await).await.0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            body(serve_path(&root, "escape").await).await.0,
            StatusCode::NOT_FOUND,
            "a link out of the root is not followed"
        );
        assert_eq!(
            body(serve_path(&root, "missing").await).await.0,
            StatusCode::NOT_FOUND
        );
    }
}
