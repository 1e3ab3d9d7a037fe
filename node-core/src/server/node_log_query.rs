//! Node log query (`/logs/?query=…`, upstream's `NodeLogQuery`, with
//! `enableSystemLogQuery`): the logs of a service read through `journalctl` when the journal
//! knows it, else the service's log file under the log root (`<svc>`, `<svc>.log`,
//! `<svc>/<svc>.log`, as upstream's heuristics), or one log file named by a path
//! (`query=/kubelet.log`). Options: `sinceTime`, `untilTime` (RFC 3339), `tailLines` (0 to
//! 100000), `pattern` (a regular expression, case-insensitive), `boot` (0 or less). Bad
//! parameters get upstream's field errors with 400.

use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use tokio::io::AsyncReadExt;

/// Upstream's `maxTailLines`.
const MAX_TAIL_LINES: i64 = 100_000;
/// Upstream's `maxServiceLength`.
const MAX_SERVICE_LENGTH: usize = 256;
/// Upstream's `maxServices`.
const MAX_SERVICES: usize = 4;
/// How long one query may run (upstream's deadline).
const QUERY_DEADLINE: Duration = Duration::from_secs(30);

/// Where service logs come from: the `journalctl` program (found on `PATH` by default).
#[derive(Clone, Debug)]
pub struct LogQueryConfig {
    /// The `journalctl` to run.
    pub journalctl: PathBuf,
}

impl Default for LogQueryConfig {
    fn default() -> Self {
        LogQueryConfig {
            journalctl: PathBuf::from("journalctl"),
        }
    }
}

/// The options of a query (upstream's `options`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueryOptions {
    /// `sinceTime`.
    pub since: Option<Timestamp>,
    /// `untilTime`.
    pub until: Option<Timestamp>,
    /// `tailLines`.
    pub tail_lines: Option<i64>,
    /// `boot`.
    pub boot: Option<i64>,
    /// `pattern`.
    pub pattern: String,
}

impl QueryOptions {
    fn is_empty(&self) -> bool {
        *self == QueryOptions::default()
    }
}

/// A parsed node log query (upstream's `nodeLogQuery`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeLogQuery {
    /// Services (queries without `/` or `\`).
    pub services: Vec<String>,
    /// Files (queries with a `/` or `\`).
    pub files: Vec<String>,
    /// The options.
    pub options: QueryOptions,
}

/// A field error as upstream's `field.Error` writes it.
fn invalid(field: &str, value: &str, detail: &str) -> String {
    format!("{field}: Invalid value: {value}: {detail}")
}

/// Go's `%q` of a string, near enough for messages.
fn quoted(s: &str) -> String {
    format!("{s:?}")
}

/// Go's `%#v` of a `[]string`.
fn go_strings(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| quoted(s)).collect();
    format!("[]string{{{}}}", inner.join(", "))
}

/// Upstream's aggregate of several errors.
fn aggregate(errors: Vec<String>) -> String {
    match errors.len() {
        1 => errors.into_iter().next().unwrap_or_default(),
        _ => format!("[{}]", errors.join(", ")),
    }
}

fn parse_int(field: &str, value: &str) -> Result<i64, String> {
    value.parse::<i64>().map_err(|_| {
        invalid(
            field,
            &quoted(value),
            &format!("strconv.Atoi: parsing {}: invalid syntax", quoted(value)),
        )
    })
}

impl NodeLogQuery {
    /// Parses the query parameters (upstream's `newNodeLogQuery`): `Ok(None)` when none of
    /// them is a log query's (the request is then a plain file request).
    pub fn parse(params: &[(String, String)]) -> Result<Option<Self>, String> {
        let mut errors = Vec::new();
        let mut q = NodeLogQuery::default();
        let first = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .filter(|v| !v.is_empty())
        };
        let queries: Vec<&String> = params
            .iter()
            .filter(|(k, _)| k == "query")
            .map(|(_, v)| v)
            .collect();
        for item in &queries {
            if item.contains(['/', '\\']) {
                q.files.push(item.to_string());
            } else if !item.trim().is_empty() {
                q.services.push(item.to_string());
            }
        }
        if !queries.is_empty() && q.files.is_empty() && q.services.is_empty() {
            let all: Vec<String> = queries.iter().map(|s| s.to_string()).collect();
            errors.push(invalid("query", &go_strings(&all), "query cannot be empty"));
        }
        for (name, slot) in [
            ("sinceTime", &mut q.options.since),
            ("untilTime", &mut q.options.until),
        ] {
            if let Some(v) = first(name) {
                match v.parse::<Timestamp>() {
                    Ok(t) => *slot = Some(t),
                    Err(_) => errors.push(invalid(name, &quoted(v), "invalid time format")),
                }
            }
        }
        if let Some(v) = first("boot") {
            match parse_int("boot", v) {
                Ok(n) => q.options.boot = Some(n),
                Err(e) => errors.push(e),
            }
        }
        if let Some(v) = first("tailLines") {
            match parse_int("tailLines", v) {
                Ok(n) => q.options.tail_lines = Some(n),
                Err(e) => errors.push(e),
            }
        }
        if let Some(v) = first("pattern") {
            q.options.pattern = v.to_string();
        }
        if !errors.is_empty() {
            return Err(aggregate(errors));
        }
        Ok((q != NodeLogQuery::default()).then_some(q))
    }

    /// Checks the query against `root` (upstream's `validate`).
    pub fn validate(&self, root: &Path) -> Result<(), String> {
        let mut errors = Vec::new();
        for s in &self.services {
            if s.len() > MAX_SERVICE_LENGTH {
                errors.push(invalid("query", &quoted(s), "length must be less than 100"));
            } else if !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '@'))
            {
                errors.push(invalid(
                    "query",
                    &quoted(s),
                    "input contains unsupported characters",
                ));
            }
        }
        if self.services.len() > MAX_SERVICES {
            errors.push(format!(
                "query: Too many: {}: must have at most {MAX_SERVICES} items",
                self.services.len()
            ));
        }
        let files = go_strings(&self.files);
        match (self.files.len(), self.services.len()) {
            (0, 0) => errors.push("query: Required value: cannot be empty with options".into()),
            (f, s) if f > 0 && s > 0 => errors.push(invalid(
                "query",
                &quoted(&format!(
                    "[{}], [{}]",
                    self.files.join(" "),
                    self.services.join(" ")
                )),
                "cannot specify a file and service",
            )),
            (f, _) if f > 1 => errors.push(invalid(
                "query",
                &files,
                "cannot specify more than one file",
            )),
            (1, _) if !self.options.is_empty() => {
                errors.push(invalid("query", &files, "cannot specify file with options"))
            }
            (1, _) => {
                let path = secure_join(root, &self.files[0]);
                if let Err(e) = confined_metadata(root, &path) {
                    errors.push(invalid(
                        "query",
                        &files,
                        &format!("stat {}: {}", path.display(), os_error_text(&e)),
                    ));
                }
            }
            _ => {}
        }
        if let (Some(since), Some(until)) = (self.options.since, self.options.until)
            && since > until
        {
            errors.push(invalid(
                "untilTime",
                &until.to_string(),
                "must be after `sinceTime`",
            ));
        }
        if let Some(boot) = self.options.boot
            && boot > 0
        {
            errors.push(invalid("boot", &boot.to_string(), "must be less than 1"));
        }
        if let Some(n) = self.options.tail_lines
            && !(0..=MAX_TAIL_LINES).contains(&n)
        {
            errors.push(invalid(
                "tailLines",
                &n.to_string(),
                &format!("must be between 0 and {MAX_TAIL_LINES}, inclusive"),
            ));
        }
        if let Err(e) = regex::Regex::new(&self.options.pattern) {
            errors.push(invalid(
                "pattern",
                &quoted(&self.options.pattern),
                &e.to_string(),
            ));
        }
        match errors.is_empty() {
            true => Ok(()),
            false => Err(aggregate(errors)),
        }
    }

    /// `journalctl`'s arguments for `services` (upstream's `getLoggingCmd` on Linux).
    pub fn journalctl_args(&self, services: &[String]) -> Vec<String> {
        let mut args: Vec<String> = ["--utc", "--no-pager", "--output=short-precise"]
            .map(String::from)
            .into();
        // Go's "2006-1-2 15:4:5" layout, in UTC.
        let layout = |t: Timestamp| t.strftime("%Y-%-m-%-d %-H:%-M:%-S").to_string();
        if let Some(since) = self.options.since {
            args.push(format!("--since={}", layout(since)));
        }
        if let Some(until) = self.options.until {
            args.push(format!("--until={}", layout(until)));
        }
        if let Some(n) = self.options.tail_lines {
            args.push("--pager-end".into());
            args.push(format!("--lines={n}"));
        }
        for service in services.iter().filter(|s| !s.is_empty()) {
            args.push(format!("--unit={service}"));
        }
        if !self.options.pattern.is_empty() {
            args.push(format!("--grep={}", self.options.pattern));
            args.push("--case-sensitive=false".into());
        }
        if let Some(boot) = self.options.boot {
            args.push("--boot".into());
            args.push(boot.to_string());
        }
        args
    }
}

/// The text Go gives an OS error (`no such file or directory`).
fn os_error_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_lowercase(),
        None => e.to_string(),
    }
}

/// `path` under `root` as securejoin joins it: `..` cannot climb above the root and an
/// absolute path is taken relative to it.
fn secure_join(root: &Path, path: &str) -> PathBuf {
    let mut clean = PathBuf::new();
    for c in Path::new(&path.replace('\\', "/")).components() {
        match c {
            Component::Normal(part) => clean.push(part),
            Component::ParentDir => {
                clean.pop();
            }
            _ => {}
        }
    }
    root.join(clean)
}

/// The metadata of `path` (under `root`); a symbolic link leading out of the root is
/// answered as a path that does not exist.
fn confined_metadata(root: &Path, path: &Path) -> std::io::Result<std::fs::Metadata> {
    if let (Ok(real), Ok(real_root)) = (std::fs::canonicalize(path), std::fs::canonicalize(root))
        && !real.starts_with(&real_root)
    {
        return Err(std::io::Error::from_raw_os_error(
            nix::errno::Errno::ENOENT as i32,
        ));
    }
    std::fs::metadata(path)
}

fn text(code: StatusCode, message: String) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain;charset=UTF-8")],
        message,
    )
        .into_response()
}

/// Answers a log query: 400 with upstream's errors for a bad one, else the logs, streamed.
pub async fn answer(
    config: &LogQueryConfig,
    root: &Path,
    params: &[(String, String)],
) -> Option<Response> {
    let query = match NodeLogQuery::parse(params) {
        Ok(Some(q)) => q,
        Ok(None) => return None,
        Err(e) => return Some(text(StatusCode::BAD_REQUEST, e)),
    };
    if let Err(e) = query.validate(root) {
        return Some(text(StatusCode::BAD_REQUEST, e));
    }
    let deadline = tokio::time::Instant::now() + QUERY_DEADLINE;
    let body = if let [file] = query.files.as_slice() {
        Body::from_stream(read_stream(
            tokio::fs::File::open(secure_join(root, file)).await.ok(),
            deadline,
        ))
    } else {
        let mut native = Vec::new();
        let mut from_files = Vec::new();
        for service in &query.services {
            match journal_knows(&config.journalctl, service, deadline).await {
                true => native.push(service.clone()),
                false => from_files.push(service.clone()),
            }
        }
        let mut parts: Vec<Body> = Vec::new();
        if !native.is_empty() {
            parts.push(journal_body(
                config,
                &query.journalctl_args(&native),
                deadline,
            ));
        }
        if !from_files.is_empty() && !query.options.is_empty() {
            parts.push(Body::from(format!(
                "\noptions present and query resolved to log files for [{}]\ntry without specifying options\n",
                from_files.join(" ")
            )));
        } else {
            for service in &from_files {
                parts.push(service_file(root, service, deadline).await);
            }
        }
        concat(parts)
    };
    Some(([(header::CONTENT_TYPE, "text/plain;charset=UTF-8")], body).into_response())
}

/// Bodies one after the other.
fn concat(parts: Vec<Body>) -> Body {
    use futures::StreamExt;
    Body::from_stream(
        futures::stream::iter(parts.into_iter().map(Body::into_data_stream)).flatten(),
    )
}

/// Whether the journal has entries of `service` (upstream: `journalctl --field
/// _SYSTEMD_UNIT` lists it). No journalctl, or a failing one: no.
async fn journal_knows(journalctl: &Path, service: &str, deadline: tokio::time::Instant) -> bool {
    let run = tokio::process::Command::new(journalctl)
        .args(["--field", "_SYSTEMD_UNIT"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout_at(deadline, run).await {
        Ok(Ok(out)) if out.status.success() => {
            String::from_utf8_lossy(&out.stdout).contains(service)
        }
        _ => false,
    }
}

/// `journalctl args`, its output (stdout, then stderr) streamed until the deadline.
fn journal_body(config: &LogQueryConfig, args: &[String], deadline: tokio::time::Instant) -> Body {
    let child = tokio::process::Command::new(&config.journalctl)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(_) => return Body::from("\nerror: journal output not available\n"),
    };
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    // The child is killed when the body (which owns it) is dropped.
    let tail = futures::stream::once(async move {
        let _ = child.wait().await;
        Ok::<Vec<u8>, std::io::Error>(Vec::new())
    });
    use futures::StreamExt;
    Body::from_stream(
        read_stream(stdout, deadline)
            .chain(read_stream(stderr, deadline))
            .chain(tail),
    )
}

/// A reader as a stream of chunks, ending at `deadline`.
fn read_stream<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    reader: Option<R>,
    deadline: tokio::time::Instant,
) -> impl futures::Stream<Item = std::io::Result<Vec<u8>>> + Send {
    futures::stream::unfold(reader, move |reader| async move {
        let mut reader = reader?;
        let mut buf = vec![0u8; 64 * 1024];
        match tokio::time::timeout_at(deadline, reader.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => None,
            Ok(Ok(n)) => {
                buf.truncate(n);
                Some((Ok(buf), Some(reader)))
            }
            Ok(Err(e)) => Some((Err(e), None)),
        }
    })
}

/// A service's log file by upstream's heuristics: `<root>/<svc>`, `<root>/<svc>.log`,
/// `<root>/<svc>/<svc>.log`, the first that is a file.
async fn service_file(root: &Path, service: &str, deadline: tokio::time::Instant) -> Body {
    for name in [
        service.to_string(),
        format!("{service}.log"),
        format!("{service}/{service}.log"),
    ] {
        let path = secure_join(root, &name);
        match confined_metadata(root, &path) {
            Ok(meta) if meta.is_file() => {
                return match tokio::fs::File::open(&path).await {
                    Ok(file) => Body::from_stream(read_stream(Some(file), deadline)),
                    Err(e) => Body::from(format!("\nerror getting log for {service}: {e}\n")),
                };
            }
            _ => continue,
        }
    }
    Body::from(format!("\nlog not found for {service}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> Vec<(String, String)> {
        q.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    fn parse(q: &str) -> Result<Option<NodeLogQuery>, String> {
        NodeLogQuery::parse(&params(q))
    }

    #[test]
    fn parameters_are_parsed_and_bad_ones_refused_with_upstreams_messages() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("unknown=1").unwrap(), None, "not a log query");
        let q = parse("query=kubelet&query=/var/x.log&tailLines=5&boot=-1&pattern=err")
            .unwrap()
            .unwrap();
        assert_eq!(q.services, ["kubelet"]);
        assert_eq!(q.files, ["/var/x.log"]);
        assert_eq!(q.options.tail_lines, Some(5));
        assert_eq!(q.options.boot, Some(-1));
        assert_eq!(
            parse("query= ").unwrap_err(),
            "query: Invalid value: []string{\" \"}: query cannot be empty"
        );
        assert_eq!(
            parse("query=a&sinceTime=yesterday").unwrap_err(),
            "sinceTime: Invalid value: \"yesterday\": invalid time format"
        );
        assert_eq!(
            parse("query=a&tailLines=x&boot=y").unwrap_err(),
            "[boot: Invalid value: \"y\": strconv.Atoi: parsing \"y\": invalid syntax, tailLines: Invalid value: \"x\": strconv.Atoi: parsing \"x\": invalid syntax]"
        );
    }

    #[test]
    fn validation_follows_upstream() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.log"), "x\n").unwrap();
        let check = |q: &str| parse(q).unwrap().unwrap().validate(dir.path());
        assert!(check("query=kubelet&tailLines=10&boot=0&pattern=a.*b").is_ok());
        assert!(check("query=/x.log").is_ok());
        assert_eq!(
            check("query=kube%let").unwrap_err(),
            "query: Invalid value: \"kube%let\": input contains unsupported characters"
        );
        assert_eq!(
            check("query=a&query=b&query=c&query=d&query=e").unwrap_err(),
            "query: Too many: 5: must have at most 4 items"
        );
        assert_eq!(
            check("tailLines=3").unwrap_err(),
            "query: Required value: cannot be empty with options"
        );
        assert_eq!(
            check("query=/x.log&tailLines=3").unwrap_err(),
            "query: Invalid value: []string{\"/x.log\"}: cannot specify file with options"
        );
        assert_eq!(
            check("query=/x.log&query=/y.log").unwrap_err(),
            "query: Invalid value: []string{\"/x.log\", \"/y.log\"}: cannot specify more than one file"
        );
        let missing = check("query=/../../etc/passwd").unwrap_err();
        assert!(
            missing.contains("stat ") && missing.contains("no such file or directory"),
            "`..` stays under the root: {missing}"
        );
        assert_eq!(
            check("query=a&tailLines=100001").unwrap_err(),
            "tailLines: Invalid value: 100001: must be between 0 and 100000, inclusive"
        );
        assert_eq!(
            check("query=a&boot=1").unwrap_err(),
            "boot: Invalid value: 1: must be less than 1"
        );
        assert!(
            check("query=a&sinceTime=2024-01-02T00:00:00Z&untilTime=2024-01-01T00:00:00Z")
                .unwrap_err()
                .ends_with("must be after `sinceTime`")
        );
        assert!(
            check("query=a&pattern=(")
                .unwrap_err()
                .starts_with("pattern: Invalid value: \"(\": ")
        );
    }

    #[test]
    fn journalctl_gets_upstreams_arguments() {
        let q = parse(
            "query=kubelet&query=containerd&sinceTime=2024-01-02T03:04:05Z&untilTime=2024-01-02T13:14:15Z&tailLines=10&pattern=err&boot=-1",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            q.journalctl_args(&q.services),
            [
                "--utc",
                "--no-pager",
                "--output=short-precise",
                "--since=2024-1-2 3:4:5",
                "--until=2024-1-2 13:14:15",
                "--pager-end",
                "--lines=10",
                "--unit=kubelet",
                "--unit=containerd",
                "--grep=err",
                "--case-sensitive=false",
                "--boot",
                "-1",
            ]
        );
    }

    async fn body(r: Response) -> (StatusCode, String) {
        let code = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (code, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn services_are_read_from_the_journal_when_it_knows_them_else_from_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("log");
        std::fs::create_dir_all(root.join("kube-proxy")).unwrap();
        std::fs::write(root.join("cloud-init.log"), "cloud line\n").unwrap();
        std::fs::write(root.join("kube-proxy/kube-proxy.log"), "proxy line\n").unwrap();
        std::fs::write(root.join("kubelet.log"), "file line\n").unwrap();
        // A journal that knows the kubelet and prints the arguments it was given.
        let journalctl = dir.path().join("journalctl");
        std::fs::write(
            &journalctl,
            "#!/bin/sh\nif [ \"$1\" = --field ]; then echo kubelet.service; exit 0; fi\necho \"journal: $*\"\necho warning >&2\n",
        )
        .unwrap();
        std::fs::set_permissions(&journalctl, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = LogQueryConfig { journalctl };
        let ask = |q: &str| {
            let (config, root, q) = (config.clone(), root.clone(), params(q));
            async move { body(answer(&config, &root, &q).await.unwrap()).await }
        };

        let (code, out) = ask("query=kubelet&tailLines=2").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(
            out,
            "journal: --utc --no-pager --output=short-precise --pager-end --lines=2 --unit=kubelet\nwarning\n"
        );
        assert_eq!(ask("query=cloud-init").await.1, "cloud line\n");
        assert_eq!(ask("query=kube-proxy").await.1, "proxy line\n");
        assert_eq!(ask("query=/kubelet.log").await.1, "file line\n");
        assert_eq!(
            ask("query=nothing").await.1,
            "\nlog not found for nothing\n"
        );
        assert_eq!(
            ask("query=cloud-init&tailLines=1").await.1,
            "\noptions present and query resolved to log files for [cloud-init]\ntry without specifying options\n"
        );
        let (code, out) = ask("query=/kubelet.log&pattern=x").await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert!(out.contains("cannot specify file with options"), "{out}");
        // Not a log query at all: left to the file server.
        assert!(answer(&config, &root, &params("other=1")).await.is_none());
    }
}
