//! Container logs as the kubelet serves them (upstream `kuberuntime/logs`): the runtime's log
//! file in the CRI format (`<RFC 3339 time> <stdout|stderr> <P|F> <content>`, one physical
//! line each, `P` for a part of a longer line), read with the options of `kubectl logs`:
//! `tailLines` (found from the end of the file, never by reading it all), `sinceTime`,
//! `timestamps`, `limitBytes`, `follow` (until the container stops; a file replaced by
//! rotation is reopened).

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, BufReader};
use tokio::sync::mpsc;

/// The options of a log request (upstream `PodLogOptions`, resolved).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep following the log until the container stops.
    pub follow: bool,
    /// Only the last lines.
    pub tail_lines: Option<u64>,
    /// At most this many bytes.
    pub limit_bytes: Option<u64>,
    /// Only lines from this time on.
    pub since_time: Option<Timestamp>,
    /// Each line prefixed with its time.
    pub timestamps: bool,
}

/// A log request's query parameters, as the API server sends them.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogQuery {
    /// `follow`.
    pub follow: Option<bool>,
    /// `previous`.
    pub previous: Option<bool>,
    /// `sinceSeconds`.
    pub since_seconds: Option<i64>,
    /// `sinceTime` (RFC 3339).
    pub since_time: Option<String>,
    /// `timestamps`.
    pub timestamps: Option<bool>,
    /// `tailLines`.
    pub tail_lines: Option<i64>,
    /// `limitBytes`.
    pub limit_bytes: Option<i64>,
}

impl LogQuery {
    /// The options, validated as upstream's `ValidatePodLogOptions`; the error is the message
    /// of a 422.
    pub fn options(&self, now: Timestamp) -> Result<LogOptions, String> {
        if self.since_seconds.is_some() && self.since_time.is_some() {
            return Err("at most one of `sinceTime` or `sinceSeconds` may be specified".into());
        }
        if let Some(t) = self.tail_lines
            && t < 0
        {
            return Err(format!(
                "tailLines: Invalid value: {t}: must be greater than or equal to 0"
            ));
        }
        if let Some(b) = self.limit_bytes
            && b < 1
        {
            return Err(format!(
                "limitBytes: Invalid value: {b}: must be greater than 0"
            ));
        }
        if let Some(s) = self.since_seconds
            && s < 1
        {
            return Err(format!(
                "sinceSeconds: Invalid value: {s}: must be greater than 0"
            ));
        }
        let since_time = match (&self.since_time, self.since_seconds) {
            (Some(t), _) => Some(
                t.parse::<Timestamp>()
                    .map_err(|e| format!("sinceTime: Invalid value: {t:?}: {e}"))?,
            ),
            (None, Some(s)) => now.checked_sub(jiff::SignedDuration::from_secs(s)).ok(),
            (None, None) => None,
        };
        Ok(LogOptions {
            follow: self.follow.unwrap_or(false),
            tail_lines: self.tail_lines.map(|t| t as u64),
            limit_bytes: self.limit_bytes.map(|b| b as u64),
            since_time,
            timestamps: self.timestamps.unwrap_or(false),
        })
    }
}

/// One physical line of a CRI log file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CriLine<'a> {
    /// Its time.
    pub time: Timestamp,
    /// `stdout` or `stderr`.
    pub stream: &'a str,
    /// A part of a longer line (tag `P`): no newline follows its content.
    pub partial: bool,
    /// The content, without the line's newline.
    pub content: &'a [u8],
}

/// Parses one line (without its newline) of a CRI log file.
pub fn parse_cri_line(line: &[u8]) -> Result<CriLine<'_>, String> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let (Some(time), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("not a CRI log line".into());
    };
    let content = parts.next().unwrap_or_default();
    let time = std::str::from_utf8(time)
        .ok()
        .and_then(|t| t.parse::<Timestamp>().ok())
        .ok_or("unexpected timestamp in a CRI log line")?;
    let stream = match stream {
        b"stdout" => "stdout",
        b"stderr" => "stderr",
        _ => return Err("unexpected stream type in a CRI log line".into()),
    };
    let partial = tag.split(|b| *b == b':').next() == Some(b"P");
    Ok(CriLine {
        time,
        stream,
        partial,
        content,
    })
}

/// The offset of the first of the last `n` lines of `file` (upstream
/// `FindTailLineStartIndex`), reading backwards in blocks.
pub async fn tail_start(file: &mut tokio::fs::File, n: u64) -> std::io::Result<u64> {
    const BLOCK: u64 = 4096;
    let size = file.seek(SeekFrom::End(0)).await?;
    if n == 0 {
        return Ok(size);
    }
    let mut newlines = 0u64;
    let mut end = size;
    let mut buf = vec![0u8; BLOCK as usize];
    // A last line without its newline counts as a line.
    let mut skip_final_newline = true;
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let len = (end - start) as usize;
        file.seek(SeekFrom::Start(start)).await?;
        file.read_exact(&mut buf[..len]).await?;
        for i in (0..len).rev() {
            if buf[i] == b'\n' {
                if skip_final_newline && start + i as u64 == size - 1 {
                    continue;
                }
                newlines += 1;
                if newlines == n {
                    return Ok(start + i as u64 + 1);
                }
            }
            skip_final_newline = false;
        }
        skip_final_newline = false;
        end = start;
    }
    Ok(0)
}

/// How a follow learns whether the container still runs.
pub type StillRunning = Box<dyn Fn() -> futures::future::BoxFuture<'static, bool> + Send + Sync>;

/// How often a follow looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// How often a follow asks whether the container still runs.
const STATE_CHECK: Duration = Duration::from_secs(1);

struct Out {
    tx: mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    left: Option<u64>,
}

impl Out {
    /// Sends bytes within the limit; `false` once the reader should stop.
    async fn send(&mut self, mut bytes: Vec<u8>) -> bool {
        if let Some(left) = self.left.as_mut() {
            if *left == 0 {
                return false;
            }
            if bytes.len() as u64 > *left {
                bytes.truncate(*left as usize);
            }
            *left -= bytes.len() as u64;
        }
        self.tx.send(Ok(bytes)).await.is_ok() && self.left != Some(0)
    }
}

fn render(line: &CriLine<'_>, opts: &LogOptions) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.content.len() + 40);
    if opts.timestamps {
        out.extend_from_slice(
            line.time
                .strftime("%Y-%m-%dT%H:%M:%S%.fZ")
                .to_string()
                .as_bytes(),
        );
        out.push(b' ');
    }
    out.extend_from_slice(line.content);
    if !line.partial {
        out.push(b'\n');
    }
    out
}

fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Streams the log at `path` per `opts` into `tx`, until done (or, when following, until
/// `running` says the container stopped and the file is read to its end).
pub async fn read_logs(
    path: PathBuf,
    opts: LogOptions,
    running: Option<StillRunning>,
    tx: mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
) {
    let mut out = Out {
        tx,
        left: opts.limit_bytes,
    };
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            let _ = out
                .tx
                .send(Err(std::io::Error::new(
                    e.kind(),
                    format!(
                        "failed to open log file {:?}: {e}",
                        path.display().to_string()
                    ),
                )))
                .await;
            return;
        }
    };
    let start = match opts.tail_lines {
        Some(n) => match tail_start(&mut file, n).await {
            Ok(s) => s,
            Err(e) => {
                let _ = out.tx.send(Err(e)).await;
                return;
            }
        },
        None => 0,
    };
    if let Err(e) = file.seek(SeekFrom::Start(start)).await {
        let _ = out.tx.send(Err(e)).await;
        return;
    }
    let mut ino = inode(&path);
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut last_check = tokio::time::Instant::now();
    let mut alive = true;
    loop {
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) => {}
            Ok(_) if line.last() == Some(&b'\n') => {
                line.pop();
                match parse_cri_line(&line) {
                    Ok(l) if opts.since_time.is_none_or(|since| l.time >= since) => {
                        if !out.send(render(&l, &opts)).await {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(path = %path.display(), error = %e, "skipping a log line")
                    }
                }
                line.clear();
                continue;
            }
            // A line still being written: wait for its end.
            Ok(_) => {}
            Err(e) => {
                let _ = out.tx.send(Err(e)).await;
                return;
            }
        }
        // At the end of the file.
        let Some(running) = running.as_ref().filter(|_| opts.follow) else {
            return;
        };
        if !alive {
            return;
        }
        // Rotated: the path names a new file; finish the old one (done: at its end), reopen.
        if let Some(now) = inode(&path)
            && Some(now) != ino
            && let Ok(f) = tokio::fs::File::open(&path).await
        {
            ino = Some(now);
            reader = BufReader::new(f);
            line.clear();
            continue;
        }
        if last_check.elapsed() >= STATE_CHECK {
            last_check = tokio::time::Instant::now();
            // One more pass to the end after the container stopped.
            alive = running().await;
            continue;
        }
        if out.tx.is_closed() {
            return;
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2024-01-01T00:00:01.000000001Z stdout F one\n\
2024-01-01T00:00:02Z stderr F two\n\
2024-01-01T00:00:03Z stdout P thr\n\
2024-01-01T00:00:03.5Z stdout F ee\n\
2024-01-01T00:00:04Z stdout F four\n";

    async fn read(opts: LogOptions) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, LOG).unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        read_logs(path, opts, None, tx).await;
        let mut out = Vec::new();
        while let Some(chunk) = rx.recv().await {
            out.extend(chunk.unwrap());
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn cri_lines_parse_with_their_stream_and_tag() {
        let l = parse_cri_line(b"2024-01-01T00:00:03Z stdout P thr").unwrap();
        assert_eq!(
            (l.stream, l.partial, l.content),
            ("stdout", true, &b"thr"[..])
        );
        let l = parse_cri_line(b"2024-01-01T00:00:03Z stderr F").unwrap();
        assert_eq!((l.partial, l.content), (false, &b""[..]));
        assert!(parse_cri_line(b"garbage").is_err());
        assert!(parse_cri_line(b"2024-01-01T00:00:03Z stdin F x").is_err());
    }

    #[tokio::test]
    async fn whole_tail_since_timestamps_and_limit_as_kubectl_logs_asks() {
        assert_eq!(read(LogOptions::default()).await, "one\ntwo\nthree\nfour\n");
        let tail = |n| LogOptions {
            tail_lines: Some(n),
            ..Default::default()
        };
        assert_eq!(read(tail(1)).await, "four\n");
        // Tail counts the file's lines (a partial line is one).
        assert_eq!(read(tail(2)).await, "ee\nfour\n");
        assert_eq!(read(tail(0)).await, "");
        assert_eq!(read(tail(99)).await, "one\ntwo\nthree\nfour\n");
        let since = LogOptions {
            since_time: Some("2024-01-01T00:00:02Z".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(read(since).await, "two\nthree\nfour\n");
        let stamped = LogOptions {
            timestamps: true,
            tail_lines: Some(1),
            ..Default::default()
        };
        assert_eq!(read(stamped).await, "2024-01-01T00:00:04Z four\n");
        let first = LogOptions {
            timestamps: true,
            limit_bytes: Some(34),
            ..Default::default()
        };
        assert_eq!(read(first).await, "2024-01-01T00:00:01.000000001Z one");
    }

    #[tokio::test]
    async fn tail_start_reads_only_the_end_of_a_large_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.log");
        let line = "2024-01-01T00:00:01Z stdout F 0123456789012345678901234567890123456789\n";
        std::fs::write(&path, line.repeat(100_000)).unwrap();
        let mut f = tokio::fs::File::open(&path).await.unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        let start = tail_start(&mut f, 3).await.unwrap();
        assert_eq!(size - start, 3 * line.len() as u64);
    }

    #[tokio::test]
    async fn a_follow_sees_new_lines_and_a_rotated_file_then_ends_with_the_container() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, "2024-01-01T00:00:01Z stdout F a\n").unwrap();
        let alive = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = alive.clone();
        let running: StillRunning = Box::new(move || {
            let flag = flag.clone();
            Box::pin(async move { flag.load(std::sync::atomic::Ordering::SeqCst) })
        });
        let (tx, mut rx) = mpsc::channel(16);
        let opts = LogOptions {
            follow: true,
            ..Default::default()
        };
        let task = tokio::spawn(read_logs(path.clone(), opts, Some(running), tx));
        assert_eq!(rx.recv().await.unwrap().unwrap(), b"a\n");
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"2024-01-01T00:00:02Z stdout F b\n")
            .unwrap();
        assert_eq!(rx.recv().await.unwrap().unwrap(), b"b\n");
        // Rotation: the file moves away, a new one takes its name.
        std::fs::rename(&path, dir.path().join("0.log.1")).unwrap();
        std::fs::write(&path, "2024-01-01T00:00:03Z stdout F c\n").unwrap();
        assert_eq!(rx.recv().await.unwrap().unwrap(), b"c\n");
        alive.store(false, std::sync::atomic::Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the follow ends once the container stopped")
            .unwrap();
        assert!(rx.recv().await.is_none());
    }

    #[test]
    fn query_validation_as_upstream() {
        let now: Timestamp = "2024-01-01T00:01:00Z".parse().unwrap();
        let q = LogQuery {
            since_seconds: Some(30),
            ..Default::default()
        };
        assert_eq!(
            q.options(now).unwrap().since_time,
            Some("2024-01-01T00:00:30Z".parse().unwrap())
        );
        let both = LogQuery {
            since_seconds: Some(1),
            since_time: Some("2024-01-01T00:00:00Z".into()),
            ..Default::default()
        };
        assert!(both.options(now).is_err());
        let negative = LogQuery {
            tail_lines: Some(-1),
            ..Default::default()
        };
        assert!(negative.options(now).is_err());
    }
}
