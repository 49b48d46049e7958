//! The load generator: a minimal HTTP/1.1 client (keep-alive, content
//! length or chunked bodies, streamed bodies for SSE) on tokio, so one
//! thread holds thousands of connections; and the checks every timed
//! response goes through. A response that fails its check is counted as an
//! error by the caller, never timed as a fast request.

use std::net::SocketAddr;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------- parsing

/// A response's status line and headers (names lower-cased).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    fn content_length(&self) -> Option<usize> {
        self.header("content-length")?.trim().parse().ok()
    }

    fn bodiless(&self) -> bool {
        self.status == 204 || self.status == 304 || (100..200).contains(&self.status)
    }
}

/// Parses a response head at the start of `buf`: `Ok(None)` while it is
/// incomplete, else the head and its length in bytes.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > 64 * 1024 {
            return Err("response head over 64 KiB".into());
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| "response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x status line: {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line: {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line: {line:?}"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok(Some((Head { status, headers }, end + 4)))
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum ChunkState {
    Size,
    Data(usize),
    /// The CRLF after a chunk's data; how many of its bytes were seen.
    DataEnd(u8),
    Trailer,
    Done,
}

/// Decodes a chunked body incrementally, whatever the pieces it arrives in.
#[derive(Clone, Debug)]
pub struct Dechunker {
    state: ChunkState,
    line: Vec<u8>,
}

impl Default for Dechunker {
    fn default() -> Self {
        Dechunker {
            state: ChunkState::Size,
            line: Vec::new(),
        }
    }
}

impl Dechunker {
    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Feeds bytes, appending decoded data to `out`; returns how many were
    /// consumed (less than given only when the body ended).
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<usize, String> {
        let given = input.len();
        while !input.is_empty() && self.state != ChunkState::Done {
            match self.state {
                ChunkState::Size | ChunkState::Trailer => {
                    let Some(i) = input.iter().position(|&b| b == b'\n') else {
                        self.line.extend_from_slice(input);
                        input = &[];
                        if self.line.len() > 4096 {
                            return Err("chunk size line too long".into());
                        }
                        continue;
                    };
                    self.line.extend_from_slice(&input[..i]);
                    input = &input[i + 1..];
                    let line = std::str::from_utf8(&self.line)
                        .map_err(|_| "chunk line is not UTF-8")?
                        .trim_end_matches('\r')
                        .to_string();
                    self.line.clear();
                    if self.state == ChunkState::Trailer {
                        if line.is_empty() {
                            self.state = ChunkState::Done;
                        }
                        continue;
                    }
                    let hex = line.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(hex, 16)
                        .map_err(|_| format!("bad chunk size {hex:?}"))?;
                    self.state = if size == 0 {
                        ChunkState::Trailer
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    let take = left.min(input.len());
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    self.state = if take == left {
                        ChunkState::DataEnd(0)
                    } else {
                        ChunkState::Data(left - take)
                    };
                }
                ChunkState::DataEnd(seen) => {
                    let expected = if seen == 0 { b'\r' } else { b'\n' };
                    if input[0] != expected {
                        return Err("chunk data not followed by CRLF".into());
                    }
                    input = &input[1..];
                    self.state = if seen == 0 {
                        ChunkState::DataEnd(1)
                    } else {
                        ChunkState::Size
                    };
                }
                ChunkState::Done => unreachable!(),
            }
        }
        Ok(given - input.len())
    }
}

// ---------------------------------------------------------------- the client

/// A whole response.
#[derive(Clone, Debug, Default)]
pub struct Response {
    pub head: Head,
    pub body: Vec<u8>,
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet used.
    buf: Vec<u8>,
    host: String,
    /// A streamed body in progress (SSE): its decoder, None when it has a
    /// length or ends with the connection.
    stream_body: Option<Option<Dechunker>>,
}

fn eof() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed")
}

fn invalid(e: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
            host: addr.to_string(),
            stream_body: None,
        })
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 8192 {
            self.buf.reserve(64 * 1024);
        }
        self.stream.read_buf(&mut self.buf).await
    }

    async fn send(&mut self, path: &str, accept: &str) -> std::io::Result<Head> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: {accept}\r\n\r\n",
            self.host
        );
        self.stream.write_all(request.as_bytes()).await?;
        loop {
            if let Some((head, n)) = parse_head(&self.buf).map_err(invalid)? {
                self.buf.drain(..n);
                return Ok(head);
            }
            if self.fill().await? == 0 {
                return Err(eof());
            }
        }
    }

    /// GET `path` and read the whole response.
    pub async fn get(&mut self, path: &str) -> std::io::Result<Response> {
        let head = self.send(path, "*/*").await?;
        let mut body = Vec::new();
        if head.bodiless() {
        } else if head.chunked() {
            let mut chunks = Dechunker::default();
            loop {
                let used = chunks.feed(&self.buf, &mut body).map_err(invalid)?;
                self.buf.drain(..used);
                if chunks.done() {
                    break;
                }
                if self.fill().await? == 0 {
                    return Err(eof());
                }
            }
        } else if let Some(length) = head.content_length() {
            while self.buf.len() < length {
                if self.fill().await? == 0 {
                    return Err(eof());
                }
            }
            body = self.buf.drain(..length).collect();
        } else {
            while self.fill().await? > 0 {}
            body = std::mem::take(&mut self.buf);
        }
        Ok(Response { head, body })
    }

    /// GET `path` for a streamed body (SSE): returns the head; then
    /// [`Conn::read_more`] yields the body as it arrives.
    pub async fn open_stream(&mut self, path: &str) -> std::io::Result<Head> {
        let head = self.send(path, "text/event-stream").await?;
        self.stream_body = Some(head.chunked().then(Dechunker::default));
        Ok(head)
    }

    /// Appends what arrived of a streamed body to `out`; false once it has
    /// ended.
    pub async fn read_more(&mut self, out: &mut Vec<u8>) -> std::io::Result<bool> {
        loop {
            match &mut self.stream_body {
                None => return Ok(false),
                Some(Some(chunks)) => {
                    if !self.buf.is_empty() {
                        let used = chunks.feed(&self.buf, out).map_err(invalid)?;
                        self.buf.drain(..used);
                        if chunks.done() {
                            self.stream_body = None;
                            return Ok(true);
                        }
                        if used > 0 {
                            return Ok(true);
                        }
                    }
                }
                Some(None) => {
                    if !self.buf.is_empty() {
                        out.append(&mut self.buf);
                        return Ok(true);
                    }
                }
            }
            if self.fill().await? == 0 {
                self.stream_body = None;
                return Ok(false);
            }
        }
    }
}

// ---------------------------------------------------------------- checks

/// What a shape response said.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShapeReply {
    pub status: u16,
    pub handle: Option<String>,
    pub offset: Option<String>,
    pub cursor: Option<String>,
    pub up_to_date: bool,
    /// Insert messages in the body.
    pub inserts: usize,
    pub bytes: usize,
}

/// What a timed response must be to count.
#[derive(Clone, Copy, Debug)]
pub struct Expect {
    pub status: u16,
    /// Exact insert messages, if known.
    pub inserts: Option<usize>,
    /// `electric-handle` and `electric-offset` required (a shape server's
    /// response; a static file has none).
    pub electric_headers: bool,
}

impl Expect {
    pub fn shape() -> Expect {
        Expect {
            status: 200,
            inserts: None,
            electric_headers: true,
        }
    }

    pub fn inserts(mut self, n: usize) -> Expect {
        self.inserts = Some(n);
        self
    }

    pub fn static_file(inserts: usize) -> Expect {
        Expect {
            status: 200,
            inserts: Some(inserts),
            electric_headers: false,
        }
    }
}

const INSERT: &[u8] = br#""operation":"insert""#;
const UP_TO_DATE: &[u8] = br#""control":"up-to-date""#;

/// Insert messages in a shape body (a JSON array of messages, or SSE
/// events).
pub fn count_inserts(body: &[u8]) -> usize {
    memchr::memmem::find_iter(body, INSERT).count()
}

/// Bodies below this are parsed as JSON in full; larger ones (initial
/// syncs, chunks of big shapes) have their brackets checked and their
/// inserts counted, so the load generator does not become the bottleneck.
pub const PARSE_BELOW: usize = 8 * 1024;

/// Checks a shape response: status, the Electric headers, a JSON array
/// body (parsed in full below [`PARSE_BELOW`], its brackets checked
/// above), the insert count.
pub fn check_shape(response: &Response, expect: Expect) -> Result<ShapeReply, String> {
    let head = &response.head;
    if head.status != expect.status {
        let snippet = String::from_utf8_lossy(&response.body[..response.body.len().min(200)]);
        return Err(format!(
            "status {} (expected {}): {snippet}",
            head.status, expect.status
        ));
    }
    let body = &response.body;
    let handle = head.header("electric-handle").map(String::from);
    let offset = head.header("electric-offset").map(String::from);
    if expect.electric_headers && (handle.is_none() || offset.is_none()) {
        return Err("no electric-handle / electric-offset header".into());
    }
    let inserts;
    let mut up_to_date = head.header("electric-up-to-date").is_some();
    if head.status == 200 && !body.is_empty() {
        if body.len() < PARSE_BELOW {
            let messages: Vec<serde_json::Value> = serde_json::from_slice(body)
                .map_err(|e| format!("body is not a JSON array of messages: {e}"))?;
            inserts = messages
                .iter()
                .filter(|m| m["headers"]["operation"] == "insert")
                .count();
            up_to_date |= messages
                .iter()
                .any(|m| m["headers"]["control"] == "up-to-date");
        } else {
            let trimmed = body.trim_ascii();
            if trimmed.first() != Some(&b'[') || trimmed.last() != Some(&b']') {
                return Err("body is not a JSON array".into());
            }
            inserts = count_inserts(body);
            up_to_date |=
                memchr::memmem::find(&body[body.len().saturating_sub(4096)..], UP_TO_DATE)
                    .is_some();
        }
    } else {
        inserts = 0;
    }
    if let Some(n) = expect.inserts {
        if inserts != n {
            return Err(format!("{inserts} inserts (expected {n})"));
        }
    }
    Ok(ShapeReply {
        status: head.status,
        handle,
        offset,
        cursor: head.header("electric-cursor").map(String::from),
        up_to_date,
        inserts,
        bytes: body.len(),
    })
}

/// SSE events complete in `buf` (each ends with a blank line), removed
/// from it; each event's `data:` lines joined.
pub fn take_sse_events(buf: &mut Vec<u8>) -> Vec<String> {
    let mut events = Vec::new();
    loop {
        let Some(end) = buf.windows(2).position(|w| w == b"\n\n") else {
            return events;
        };
        let event: Vec<u8> = buf.drain(..end + 2).collect();
        let text = String::from_utf8_lossy(&event);
        let data: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if !data.is_empty() {
            events.push(data.join("\n"));
        }
    }
}

// ---------------------------------------------------------------- recording

/// Latencies (µs) of checked responses and the errors that were not
/// timed.
#[derive(Clone, Debug)]
pub struct Timings {
    pub latency: Histogram<u64>,
    pub errors: u64,
    pub first_errors: Vec<String>,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            latency: Histogram::new(3).unwrap(),
            errors: 0,
            first_errors: Vec::new(),
        }
    }
}

impl Timings {
    pub fn ok(&mut self, took: Duration) {
        self.latency
            .record(took.as_micros().max(1) as u64)
            .expect("latency within range");
    }

    pub fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_errors.len() < 5 {
            self.first_errors.push(e.to_string());
        }
    }

    pub fn add(&mut self, other: &Timings) {
        self.latency.add(&other.latency).unwrap();
        self.errors += other.errors;
        for e in &other.first_errors {
            if self.first_errors.len() < 5 {
                self.first_errors.push(e.clone());
            }
        }
    }

    /// "N errors (first: …)" or "".
    pub fn error_note(&self) -> String {
        if self.errors == 0 {
            String::new()
        } else {
            format!(
                "{} errors (first: {})",
                self.errors,
                self.first_errors.join("; ")
            )
        }
    }
}

/// The load generator's runtime: one thread (current-thread tokio), or
/// `threads` worker threads.
pub fn runtime(threads: usize) -> tokio::runtime::Runtime {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    }
    .enable_all()
    .build()
    .expect("tokio runtime")
}

/// Where a client is in a shape.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct At {
    pub handle: String,
    pub offset: String,
    pub cursor: Option<String>,
}

impl At {
    fn update(&mut self, reply: &ShapeReply) {
        if let Some(h) = &reply.handle {
            self.handle = h.clone();
        }
        if let Some(o) = &reply.offset {
            self.offset = o.clone();
        }
        if reply.cursor.is_some() {
            self.cursor = reply.cursor.clone();
        }
    }

    /// The query of the next request from here (`query` is the shape's
    /// `/v1/shape?table=…[&where=…]`).
    pub fn next(&self, query: &str, live: bool) -> String {
        let mut q = format!("{query}&offset={}&handle={}", self.offset, self.handle);
        if live {
            q.push_str("&live=true");
            if let Some(c) = &self.cursor {
                q.push_str(&format!("&cursor={c}"));
            }
        }
        q
    }
}

/// A whole initial sync: `offset=-1`, then on until up to date; every
/// response checked. Returns where it ended, the inserts seen and the
/// bodies (if `keep`).
pub async fn sync(
    conn: &mut Conn,
    query: &str,
    keep: bool,
) -> Result<(At, usize, Vec<Vec<u8>>), String> {
    let mut at = At::default();
    let mut inserts = 0;
    let mut bodies = Vec::new();
    let mut request = format!("{query}&offset=-1");
    for _ in 0..100_000 {
        let response = conn.get(&request).await.map_err(|e| e.to_string())?;
        let reply = check_shape(&response, Expect::shape())?;
        at.update(&reply);
        inserts += reply.inserts;
        if keep {
            bodies.push(response.body);
        }
        if reply.up_to_date {
            return Ok((at, inserts, bodies));
        }
        request = at.next(query, false);
    }
    Err("never up to date".into())
}

/// Creates a shape per query (`offset=-1`, checked: 200 and the Electric
/// headers) over `concurrency` connections; the creation latencies and the
/// seconds it took. Prints progress every 5 s.
pub async fn create_shapes(
    addr: SocketAddr,
    queries: Vec<String>,
    concurrency: usize,
) -> (Timings, f64) {
    let queries = std::sync::Arc::new(queries);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (queries, next) = (queries.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut t = Timings::default();
            let mut conn = Conn::connect(addr).await.expect("connect");
            let mut last_print = std::time::Instant::now();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(query) = queries.get(i) else {
                    return t;
                };
                let asked = std::time::Instant::now();
                let result = match conn.get(&format!("{query}&offset=-1")).await {
                    Ok(r) => check_shape(&r, Expect::shape()).map(|_| ()),
                    Err(e) => {
                        if let Ok(c) = Conn::connect(addr).await {
                            conn = c;
                        }
                        Err(e.to_string())
                    }
                };
                match result {
                    Ok(()) => t.ok(asked.elapsed()),
                    Err(e) => t.error(format!("creating {query}: {e}")),
                }
                if i % 1000 == 0 && last_print.elapsed() > Duration::from_secs(5) {
                    last_print = std::time::Instant::now();
                    eprintln!("  created {i}/{}", queries.len());
                }
            }
        }));
    }
    let mut all = Timings::default();
    for task in tasks {
        all.add(&task.await.expect("creator"));
    }
    (all, started.elapsed().as_secs_f64())
}

/// One live request (long-poll) from `at`, checked, `at` moved on;
/// retried while it ends up to date with no change (a timeout).
pub async fn live(conn: &mut Conn, query: &str, at: &mut At) -> Result<ShapeReply, String> {
    loop {
        let response = conn
            .get(&at.next(query, true))
            .await
            .map_err(|e| e.to_string())?;
        let status = response.head.status;
        let expect = Expect {
            status: if status == 204 { 204 } else { 200 },
            inserts: None,
            electric_headers: true,
        };
        let reply = check_shape(&response, expect)?;
        at.update(&reply);
        if reply.inserts > 0 {
            return Ok(reply);
        }
    }
}

/// Raises this process' open-file limit to its hard limit (children
/// inherit it: the server and nginx need as many sockets as the clients).
pub fn raise_fd_limit() -> u64 {
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            return limit.rlim_cur;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_requests_carry_handle_offset_and_cursor() {
        let mut at = At::default();
        at.update(&ShapeReply {
            handle: Some("h".into()),
            offset: Some("5_0".into()),
            cursor: Some("9".into()),
            ..ShapeReply::default()
        });
        assert_eq!(
            at.next("/v1/shape?table=t", false),
            "/v1/shape?table=t&offset=5_0&handle=h"
        );
        assert_eq!(
            at.next("/v1/shape?table=t", true),
            "/v1/shape?table=t&offset=5_0&handle=h&live=true&cursor=9"
        );
    }

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
        Response {
            head: Head {
                status,
                headers: headers
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
            },
            body: body.as_bytes().to_vec(),
        }
    }

    const ELECTRIC: &[(&str, &str)] = &[
        ("electric-handle", "h-1"),
        ("electric-offset", "0_0"),
        ("electric-cursor", "7"),
    ];

    #[test]
    fn heads_parse_incrementally() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nElectric-Handle: abc\r\n\r\n[]";
        assert_eq!(parse_head(&raw[..20]).unwrap(), None);
        let (head, n) = parse_head(raw).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.header("electric-handle"), Some("abc"));
        assert_eq!(head.content_length(), Some(2));
        assert_eq!(&raw[n..], b"[]");
        assert!(parse_head(b"SSH-2.0\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 abc\r\n\r\n").is_err());
    }

    #[test]
    fn chunked_bodies_decode_in_any_pieces() {
        let raw = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        for split in 1..raw.len() {
            let mut d = Dechunker::default();
            let mut out = Vec::new();
            let a = d.feed(&raw[..split], &mut out).unwrap();
            assert!(a == split || d.done(), "all of a prefix is consumed");
            let b = d.feed(&raw[split..], &mut out).unwrap();
            assert!(d.done());
            assert_eq!(out, b"hello, world");
            assert_eq!(&raw[a + b..], b"NEXT", "stops at the body's end");
        }
        let mut d = Dechunker::default();
        assert!(d.feed(b"zz\r\n", &mut Vec::new()).is_err());
        let mut d = Dechunker::default();
        assert!(d.feed(b"1\r\nab", &mut Vec::new()).is_err());
    }

    #[test]
    fn a_shape_response_is_checked() {
        let body = r#"[{"headers":{"operation":"insert"},"key":"1","value":{}},{"headers":{"operation":"insert"},"key":"2","value":{}},{"headers":{"control":"up-to-date"}}]"#;
        let ok = check_shape(&response(200, ELECTRIC, body), Expect::shape().inserts(2)).unwrap();
        assert_eq!(ok.inserts, 2);
        assert!(ok.up_to_date);
        assert_eq!(ok.handle.as_deref(), Some("h-1"));
        assert_eq!(ok.cursor.as_deref(), Some("7"));

        // Wrong count, wrong status, missing headers, broken body: errors.
        assert!(check_shape(&response(200, ELECTRIC, body), Expect::shape().inserts(3)).is_err());
        assert!(check_shape(&response(503, ELECTRIC, "overloaded"), Expect::shape()).is_err());
        assert!(check_shape(&response(200, &[], body), Expect::shape()).is_err());
        assert!(check_shape(&response(200, ELECTRIC, "[{\"headers\":"), Expect::shape()).is_err());
        // A static copy needs no Electric headers, only its rows.
        assert!(check_shape(&response(200, &[], body), Expect::static_file(2)).is_ok());
        assert!(check_shape(&response(200, &[], body), Expect::static_file(500)).is_err());
        // An up-to-date header with an empty body (a long-poll timing out).
        let empty = check_shape(
            &response(
                204,
                &[
                    ("electric-handle", "h"),
                    ("electric-offset", "1_0"),
                    ("electric-up-to-date", ""),
                ],
                "",
            ),
            Expect {
                status: 204,
                inserts: Some(0),
                electric_headers: true,
            },
        )
        .unwrap();
        assert!(empty.up_to_date);
    }

    #[test]
    fn large_bodies_are_counted_without_parsing() {
        let one = r#"{"headers":{"operation":"insert"},"key":"1","value":{"note":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}"#;
        let n = 4000;
        let body = format!("[{}]", vec![one; n].join(","));
        assert!(body.len() > PARSE_BELOW);
        let ok = check_shape(&response(200, ELECTRIC, &body), Expect::shape().inserts(n)).unwrap();
        assert_eq!(ok.inserts, n);
        assert!(!ok.up_to_date);
        let truncated = &body[..body.len() - 1];
        assert!(check_shape(&response(200, ELECTRIC, truncated), Expect::shape()).is_err());
    }

    #[test]
    fn sse_events_split_on_blank_lines() {
        let mut buf = b"data: {\"a\":1}\n\n: keep-alive\n\ndata: {\"headers\":{\"operation\":\"insert\"}}\n\ndata: {\"b\"".to_vec();
        let events = take_sse_events(&mut buf);
        assert_eq!(
            events,
            vec![
                r#"{"a":1}"#.to_string(),
                r#"{"headers":{"operation":"insert"}}"#.to_string()
            ]
        );
        assert_eq!(buf, b"data: {\"b\"");
        assert_eq!(count_inserts(events[1].as_bytes()), 1);
    }

    #[test]
    fn errors_are_counted_not_timed() {
        let mut t = Timings::default();
        t.ok(Duration::from_millis(2));
        t.error("status 503");
        assert_eq!(t.latency.len(), 1);
        assert_eq!(t.errors, 1);
        assert!(t.error_note().contains("503"));
    }
}
