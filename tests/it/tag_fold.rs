//! A raw client of one subquery shape for the wire tests: every message
//! in order, and the rows folded as a tag-tracking client folds them
//! (Electric's `TagTracker` rules: a move pattern `(pos, hash)` sets
//! position `pos` of the rows whose tag holds `hash` there, active on
//! `move-in`, inactive on `move-out`; after a move-out a row without a
//! fully active disjunct is dropped). Comparing the fold with Postgres
//! checks the stream as a client sees it, not only message by message.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::harness::TestDb;
use crate::server::Server;

pub struct Stream {
    definition: String,
    pub handle: Option<String>,
    pub offset: String,
    up_to_date: bool,
    pub messages: Vec<Value>,
    pub rows: BTreeMap<String, Row>,
}

/// Why a stream stopped short of converging.
#[derive(Debug)]
pub enum Diverged {
    /// The server answered 409: the shape is gone, its client re-syncs.
    Gone(String),
    /// Anything else: another status, a handle changing without a 409, a
    /// message a correct stream never sends, or a fold still differing at
    /// the deadline.
    Failed(String),
}

impl std::fmt::Display for Diverged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Diverged::Gone(e) | Diverged::Failed(e) => f.write_str(e),
        }
    }
}

pub struct Row {
    pub value: Map<String, Value>,
    pub tags: Vec<String>,
    pub active: Vec<bool>,
}

impl Row {
    /// Whether some tag has every position it holds (its disjunct) active.
    fn included(&self) -> bool {
        self.tags.iter().any(|tag| {
            tag.split('/')
                .enumerate()
                .filter(|(_, slot)| !slot.is_empty())
                .all(|(p, _)| self.active.get(p).copied().unwrap_or(false))
        })
    }

    fn matches(&self, pos: usize, hash: &str) -> bool {
        self.tags
            .iter()
            .any(|tag| tag.split('/').nth(pos) == Some(hash))
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn bools(v: &Value) -> Vec<bool> {
    v.as_array()
        .map(|a| a.iter().map(|b| b.as_bool().unwrap()).collect())
        .unwrap_or_default()
}

/// A move event's patterns as `(pos, hash)`, in the order sent.
pub fn patterns(event: &Value) -> Vec<(usize, String)> {
    event["headers"]["patterns"]
        .as_array()
        .unwrap_or_else(|| panic!("no patterns in {event}"))
        .iter()
        .map(|p| {
            (
                p["pos"].as_u64().unwrap() as usize,
                p["value"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

impl Stream {
    pub fn new(definition: &str) -> Stream {
        Stream {
            definition: definition.to_string(),
            handle: None,
            offset: "-1".into(),
            up_to_date: false,
            messages: Vec::new(),
            rows: BTreeMap::new(),
        }
    }

    fn url(&self) -> String {
        let mut url = format!("/v1/shape?{}&offset={}", self.definition, self.offset);
        if let Some(handle) = &self.handle {
            url.push_str(&format!("&handle={handle}"));
        }
        url
    }

    /// One request (live once up to date); panics on anything but 200.
    pub fn poll(&mut self, server: &Server) {
        let live = self.up_to_date;
        if let Err(e) = self.try_poll(server, live) {
            panic!(
                "{e}\nserver warnings:\n{}",
                server
                    .log()
                    .lines()
                    .filter(|l| l.contains("WARN") || l.contains("removed"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }

    /// One request, `live` or not; a 409 is `Diverged::Gone`, any other
    /// status, a handle changing without one, or a message a correct
    /// stream never sends is `Diverged::Failed`.
    pub fn try_poll(&mut self, server: &Server, live: bool) -> Result<(), Diverged> {
        let mut url = self.url();
        if live {
            url.push_str("&live=true");
        }
        let reply = server
            .try_get(&url)
            .map_err(|e| Diverged::Failed(format!("GET {url}: {e}")))?;
        match reply.status {
            200 => {}
            409 => return Err(Diverged::Gone(format!("GET {url}: 409 {}", reply.body))),
            status => {
                return Err(Diverged::Failed(format!(
                    "GET {url}: {status} {}",
                    reply.body
                )))
            }
        }
        let handle = reply.header("electric-handle").map(str::to_string);
        if self.handle.is_some() && handle != self.handle {
            return Err(Diverged::Failed(format!(
                "GET {url}: the handle changed to {handle:?} without a 409"
            )));
        }
        self.handle = handle;
        self.offset = reply
            .header("electric-offset")
            .ok_or_else(|| Diverged::Failed(format!("GET {url}: no electric-offset")))?
            .to_string();
        for message in reply.json().as_array().unwrap() {
            if message["headers"]["control"] == "up-to-date" {
                self.up_to_date = true;
                continue;
            }
            self.fold(message)
                .map_err(|e| Diverged::Failed(format!("GET {url}: {e}: {message}")))?;
            self.messages.push(message.clone());
        }
        Ok(())
    }

    /// Polls until up to date with the folded rows equal to `expected` (as
    /// `Stream::view`): first a catch-up request (no wait at the tip),
    /// then live ones while they differ, for at most `timeout`.
    pub fn try_converge(
        &mut self,
        server: &Server,
        columns: &[&str],
        expected: &[String],
        timeout: Duration,
    ) -> Result<(), Diverged> {
        let deadline = Instant::now() + timeout;
        self.try_poll(server, false)?;
        loop {
            let got = self.view(columns);
            if self.up_to_date && got == expected {
                return Ok(());
            }
            if Instant::now() > deadline {
                let missing: Vec<_> = expected.iter().filter(|w| !got.contains(w)).collect();
                let extra: Vec<_> = got.iter().filter(|g| !expected.contains(g)).collect();
                let tail = self.messages.len().saturating_sub(40);
                return Err(Diverged::Failed(format!(
                    "not converged after {timeout:?}: {} rows vs {} expected; missing {missing:?}, extra {extra:?}; last messages: {:#?}",
                    got.len(),
                    expected.len(),
                    &self.messages[tail..]
                )));
            }
            let live = self.up_to_date;
            self.try_poll(server, live)?;
        }
    }

    /// The status of a non-live request where the stream is.
    pub fn status(&self, server: &Server) -> u16 {
        server.get(&self.url()).status
    }

    fn fold(&mut self, message: &Value) -> Result<(), String> {
        let headers = &message["headers"];
        if let Some(event) = headers["event"].as_str() {
            for row in self.rows.values_mut() {
                for (pos, hash) in patterns(message) {
                    if row.matches(pos, &hash) {
                        if let Some(slot) = row.active.get_mut(pos) {
                            *slot = event == "move-in";
                        }
                    }
                }
            }
            if event == "move-out" {
                self.rows.retain(|_, row| row.included());
            }
            return Ok(());
        }
        let Some(operation) = headers["operation"].as_str() else {
            return Ok(());
        };
        let key = message["key"].as_str().unwrap().to_string();
        let value = message["value"].as_object().cloned().unwrap_or_default();
        match operation {
            "insert" => {
                if self.rows.contains_key(&key) {
                    return Err(format!("insert of a row already held ({key})"));
                }
                self.rows.insert(
                    key,
                    Row {
                        value,
                        tags: strings(&headers["tags"]),
                        active: bools(&headers["active_conditions"]),
                    },
                );
            }
            "update" => {
                let Some(row) = self.rows.get_mut(&key) else {
                    return Err(format!("update of a row not held ({key})"));
                };
                row.value.extend(value);
                row.tags = strings(&headers["tags"]);
                row.active = bools(&headers["active_conditions"]);
            }
            "delete" => {
                if self.rows.remove(&key).is_none() {
                    return Err(format!("delete of a row not held ({key})"));
                }
            }
            other => return Err(format!("operation {other}")),
        }
        Ok(())
    }

    /// Polls until up to date, then until `done` holds for the messages
    /// received since `from` (live polls return as the log grows).
    pub fn until(&mut self, server: &Server, from: usize, done: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.poll(server);
            if self.up_to_date && done(&self.messages[from..]) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out; messages since {from}: {:#?}",
                &self.messages[from..]
            );
        }
    }

    /// Polls until the folded rows equal `expected` (as `Stream::view`).
    pub fn converge(&mut self, server: &Server, columns: &[&str], expected: &[String]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.poll(server);
            if self.up_to_date && self.view(columns) == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not converged:\n got {:?}\nwant {:?}\nmessages: {:#?}",
                self.view(columns),
                expected,
                self.messages
            );
        }
    }

    /// The folded rows' `columns` joined by `|` (NULL for null), sorted.
    pub fn view(&self, columns: &[&str]) -> Vec<String> {
        let mut out: Vec<String> = self
            .rows
            .values()
            .map(|row| {
                columns
                    .iter()
                    .map(|c| row.value.get(*c).and_then(Value::as_str).unwrap_or("NULL"))
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect();
        out.sort();
        out
    }
}

/// Postgres' rows for `sql` (text columns), joined like `Stream::view`.
pub fn pg_rows(db: &TestDb, sql: &str) -> Vec<String> {
    joined_rows(&mut db.client(), sql)
}

/// Every row of `sql`, its text columns joined by `|` (`NULL` for a
/// NULL), sorted: what a fold's view is compared with.
pub fn joined_rows(client: &mut postgres::Client, sql: &str) -> Vec<String> {
    let mut out: Vec<String> = client
        .query(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| row.get::<_, Option<String>>(i).unwrap_or("NULL".into()))
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    out.sort();
    out
}

/// Electric's tag hash of a single column's value for this shape (`NULL`
/// for a NULL), computed by Postgres' md5.
pub fn value_hash(db: &TestDb, handle: &str, value: Option<&str>) -> String {
    db.client()
        .query_one(
            "SELECT md5('single_stack' || $1 || CASE WHEN $2::text IS NULL THEN 'NULL' ELSE 'v:' || $2 END)",
            &[&handle, &value],
        )
        .unwrap()
        .get(0)
}

/// Whether `messages` hold a `snapshot-end` (a move-in's end).
pub fn snapshot_end(messages: &[Value]) -> bool {
    messages
        .iter()
        .any(|m| m["headers"]["control"] == "snapshot-end")
}

/// The message kinds in order: an event's or control's name, else
/// `operation:id`.
pub fn ops(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| {
            let h = &m["headers"];
            if let Some(e) = h["event"].as_str() {
                e.to_string()
            } else if let Some(c) = h["control"].as_str() {
                c.to_string()
            } else {
                format!("{}:{}", h["operation"].as_str().unwrap(), m["value"]["id"])
            }
        })
        .collect()
}
