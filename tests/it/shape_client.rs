//! A strict shape client: follows a shape over HTTP as Electric's client
//! does and materialises its rows, failing on anything a correct server
//! never sends (an insert of a present key, an update or delete of a missing
//! one, a 409 for a shape that still exists).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::replay::Recorded;
use crate::server::{Reply, Server};

/// Where a client sends its requests: the server itself, or a proxy in
/// front of it.
pub trait Endpoint {
    fn url(&self, path_and_query: &str) -> String;

    fn try_get(&self, path_and_query: &str) -> Result<Reply, String> {
        match ureq::get(&self.url(path_and_query))
            .timeout(std::time::Duration::from_secs(60))
            .call()
        {
            Err(ureq::Error::Transport(e)) => Err(format!("GET {path_and_query}: {e}")),
            result => Ok(Reply::from(result)),
        }
    }
}

impl Endpoint for Server {
    fn url(&self, path_and_query: &str) -> String {
        Server::url(self, path_and_query)
    }

    fn try_get(&self, path_and_query: &str) -> Result<Reply, String> {
        Server::try_get(self, path_and_query)
    }
}

pub struct ShapeClient {
    /// The query string defining the shape (`table=...&where=...`).
    pub definition: String,
    pub handle: Option<String>,
    pub offset: String,
    pub up_to_date: bool,
    pub rows: BTreeMap<String, Map<String, Value>>,
    /// Requests made, for paging assertions.
    pub requests: usize,
    /// Every change applied: (request offset, operation, key, lsn, op).
    pub history: Vec<(String, String, String, String, u64)>,
    /// When set, every non-live 200 response is kept in `recorded` (for
    /// byte comparisons across restarts, `replay.rs`).
    pub record: bool,
    pub recorded: Vec<Recorded>,
    /// Live requests as server-sent events (`live_sse=true`): each poll
    /// reads a stream until its first `up-to-date`, then hangs up.
    pub sse: bool,
    /// SSE responses read (streams and one-shot answers).
    pub sse_requests: usize,
    cursor: Option<String>,
}

impl ShapeClient {
    pub fn new(definition: &str) -> ShapeClient {
        ShapeClient {
            definition: definition.to_string(),
            handle: None,
            offset: "-1".into(),
            up_to_date: false,
            rows: BTreeMap::new(),
            requests: 0,
            history: Vec::new(),
            record: false,
            recorded: Vec::new(),
            sse: false,
            sse_requests: 0,
            cursor: None,
        }
    }

    /// A client whose live requests are SSE streams.
    pub fn sse(definition: &str) -> ShapeClient {
        ShapeClient {
            sse: true,
            ..ShapeClient::new(definition)
        }
    }

    /// One request; `live` only once up to date (as the client does).
    /// Returns an error message on anything unexpected.
    pub fn poll(&mut self, server: &dyn Endpoint) -> Result<(), String> {
        let live = self.up_to_date;
        if live && self.sse {
            return self.poll_sse(server);
        }
        let mut url = format!("/v1/shape?{}&offset={}", self.definition, self.offset);
        if let Some(handle) = &self.handle {
            url.push_str(&format!("&handle={handle}"));
        }
        if live {
            url.push_str("&live=true");
            if let Some(cursor) = &self.cursor {
                url.push_str(&format!("&cursor={cursor}"));
            }
        }
        let reply = server.try_get(&url)?;
        self.requests += 1;
        if reply.status != 200 {
            return Err(format!("GET {url} → {} {}", reply.status, reply.body));
        }
        let handle = reply
            .header("electric-handle")
            .ok_or("no electric-handle")?
            .to_string();
        if let Some(old) = &self.handle {
            if *old != handle {
                return Err(format!(
                    "handle changed from {old} to {handle} without a 409"
                ));
            }
        }
        if self.record && !live {
            self.recorded.push(Recorded::new(
                &self.definition,
                &handle,
                &self.offset,
                &reply,
            )?);
        }
        self.handle = Some(handle);
        self.offset = reply
            .header("electric-offset")
            .ok_or("no electric-offset")?
            .to_string();
        self.cursor = reply.header("electric-cursor").map(str::to_string);
        if reply.header("electric-up-to-date").is_some() {
            self.up_to_date = true;
        }
        let messages: Vec<Value> = serde_json::from_str(&reply.body)
            .map_err(|e| format!("bad body ({e}): {}", reply.body))?;
        let request_offset = url.clone();
        for message in messages {
            if let Some(op) = message["headers"]["operation"].as_str() {
                self.history.push((
                    request_offset.clone(),
                    op.to_string(),
                    message["key"].as_str().unwrap_or("").to_string(),
                    message["headers"]["lsn"]
                        .as_str()
                        .unwrap_or("snapshot")
                        .to_string(),
                    message["headers"]["op_position"].as_u64().unwrap_or(0),
                ));
            }
            if let Err(e) = self.apply(&message) {
                let key = message["key"].as_str().unwrap_or("");
                let seen: Vec<_> = self.history.iter().filter(|h| h.2 == key).collect();
                return Err(format!("{e}; history of that key: {seen:#?}"));
            }
        }
        Ok(())
    }

    fn apply(&mut self, message: &Value) -> Result<(), String> {
        let headers = message.get("headers").ok_or("message without headers")?;
        let Some(operation) = headers.get("operation").and_then(Value::as_str) else {
            return Ok(()); // control message
        };
        let key = message
            .get("key")
            .and_then(Value::as_str)
            .ok_or("change without key")?
            .to_string();
        let value = message
            .get("value")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        match operation {
            "insert" => {
                if self.rows.insert(key.clone(), value).is_some() {
                    return Err(format!("insert of present key {key}"));
                }
            }
            "update" => {
                let row = self
                    .rows
                    .get_mut(&key)
                    .ok_or_else(|| format!("update of missing key {key}"))?;
                row.extend(value);
            }
            "delete" => {
                if self.rows.remove(&key).is_none() {
                    return Err(format!("delete of missing key {key}"));
                }
            }
            other => return Err(format!("unknown operation {other}")),
        }
        Ok(())
    }

    /// One SSE request: applies events until the first `up-to-date` (or
    /// the end of the stream), then hangs up. The offset moves to the last
    /// change applied, read from its `lsn` and `op_position` (Electric's
    /// client resumes at `<lsn>_0`, re-receiving later changes of that
    /// transaction; a strict client must not).
    fn poll_sse(&mut self, server: &dyn Endpoint) -> Result<(), String> {
        use std::io::BufRead;
        let handle = self.handle.clone().ok_or("SSE before a handle")?;
        let mut url = format!(
            "/v1/shape?{}&offset={}&handle={handle}&live=true&live_sse=true",
            self.definition, self.offset
        );
        if let Some(cursor) = &self.cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        self.requests += 1;
        let response = match ureq::get(&server.url(&url))
            .timeout(std::time::Duration::from_secs(120))
            .call()
        {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => {
                let reply = Reply::from(Ok(response));
                return Err(format!("GET {url} → {} {}", reply.status, reply.body));
            }
            Err(e) => return Err(format!("GET {url}: {e}")),
        };
        if response.content_type() != "text/event-stream" {
            return Err(format!(
                "GET {url}: content-type {}",
                response.content_type()
            ));
        }
        self.sse_requests += 1;
        if response.header("electric-handle") != Some(handle.as_str()) {
            return Err(format!("GET {url}: handle changed without a 409"));
        }
        if let Some(cursor) = response.header("electric-cursor") {
            self.cursor = Some(cursor.to_string());
        }
        let reader = std::io::BufReader::new(response.into_reader());
        for line in reader.lines() {
            let line = line.map_err(|e| format!("GET {url}: reading the stream: {e}"))?;
            if line.is_empty() || line.starts_with(':') {
                continue;
            }
            let data = line
                .strip_prefix("data: ")
                .ok_or_else(|| format!("not an SSE line: {line:?}"))?;
            let message: Value =
                serde_json::from_str(data).map_err(|e| format!("bad event ({e}): {data}"))?;
            if message["headers"]["control"] == "up-to-date" {
                return Ok(());
            }
            if let (Some(lsn), Some(op)) = (
                message["headers"]["lsn"].as_str(),
                message["headers"]["op_position"].as_u64(),
            ) {
                self.history.push((
                    url.clone(),
                    message["headers"]["operation"]
                        .as_str()
                        .unwrap_or("")
                        .into(),
                    message["key"].as_str().unwrap_or("").into(),
                    lsn.into(),
                    op,
                ));
                self.offset = format!("{lsn}_{op}");
            }
            if let Err(e) = self.apply(&message) {
                let key = message["key"].as_str().unwrap_or("");
                let seen: Vec<_> = self.history.iter().filter(|h| h.2 == key).collect();
                return Err(format!("{e}; history of that key: {seen:#?}"));
            }
        }
        // The stream ended (its timeout, or the shape went away: the next
        // request says which).
        Ok(())
    }

    /// Polls until up to date (the initial sync, or catching up).
    pub fn sync(&mut self, server: &dyn Endpoint) -> Result<(), String> {
        self.up_to_date = false;
        for _ in 0..10_000 {
            // Once up to date, a non-live request catches up fully.
            let live_before = self.up_to_date;
            self.poll(server)?;
            if self.up_to_date && !live_before {
                return Ok(());
            }
        }
        Err("never became up to date".into())
    }

    /// The rows, each as its `columns` joined by `|` with NULLs and absent
    /// columns left out (what `concat_ws('|', columns)` gives in Postgres),
    /// sorted.
    pub fn view(&self, columns: &[&str]) -> Vec<String> {
        let mut rows: Vec<String> = self
            .rows
            .values()
            .map(|row| {
                columns
                    .iter()
                    .filter_map(|c| row.get(*c).and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect();
        rows.sort();
        rows
    }

    /// Polls until `view(columns)` equals `want` (sorted), or says how it
    /// differs once `timeout` has passed.
    pub fn converge(
        &mut self,
        server: &dyn Endpoint,
        columns: &[&str],
        want: &[String],
        timeout: std::time::Duration,
    ) -> Result<(), String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let got = self.view(columns);
            if got == want {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                let missing: Vec<_> = want.iter().filter(|w| !got.contains(w)).take(5).collect();
                let extra: Vec<_> = got.iter().filter(|g| !want.contains(g)).take(5).collect();
                return Err(format!(
                    "{} rows vs {} expected; missing {missing:?}, extra {extra:?}",
                    got.len(),
                    want.len()
                ));
            }
            self.poll(server)?;
        }
    }

    /// Polls until up to date with `view(columns) == want` (60 s at most).
    /// A 409 starts the client over with a cache-buster, as Electric's
    /// client does (a cache may still hold the lost shape's first answer);
    /// errors `transient` accepts are retried; any other error panics.
    /// Returns the number of re-syncs.
    pub fn follow_resyncing(
        &mut self,
        server: &dyn Endpoint,
        columns: &[&str],
        want: &[String],
        transient: impl Fn(&str) -> bool,
    ) -> usize {
        let mut resyncs = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if self.up_to_date && self.view(columns) == want {
                return resyncs;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{}: never converged; got {} rows, want {}",
                self.definition,
                self.rows.len(),
                want.len()
            );
            match self.poll(server) {
                Ok(()) => {}
                Err(e) if e.contains("→ 409") => {
                    resyncs += 1;
                    let base = self.definition.split("&cache-buster=").next().unwrap();
                    *self = ShapeClient::new(&format!("{base}&cache-buster={resyncs}"));
                }
                Err(e) if transient(&e) => std::thread::sleep(std::time::Duration::from_millis(50)),
                Err(e) => panic!("{}: {e}", self.definition),
            }
        }
    }

    /// Rows as `column → text` maps, for comparing with a query.
    pub fn values(&self, column: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .rows
            .values()
            .map(|r| {
                r.get(column)
                    .and_then(Value::as_str)
                    .unwrap_or("NULL")
                    .to_string()
            })
            .collect();
        out.sort();
        out
    }
}
