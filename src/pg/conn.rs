//! The Postgres wire client: one connection over TCP or a Unix socket,
//! running inside a shard executor (through `shards::runtime`). It speaks the simple query protocol
//! (admin SQL, snapshots via COPY TO STDOUT) and COPY BOTH for the logical
//! replication stream; the caller decodes the replication sub-messages.
//!
//! Reads are cancel-safe: a message is taken out of the read buffer only
//! once it is complete, so a read raced against a timer and dropped loses
//! nothing. Writes drain the write buffer as the socket accepts bytes, so a
//! dropped write is completed by the next one.

// PgError carries the server's error report inline (128 bytes), which is the
// shape callers match on; errors are the cold path, so the size is fine.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::str::FromStr;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use shards::runtime::net::{TcpStream, UnixStream};

use super::connstr::{ConnConfig, Host, Keepalive, SslMode};
use super::error::{DbError, PgError};

const READ_CHUNK: usize = 64 * 1024;
/// Postgres itself caps a message at 1 GiB; anything larger is garbage.
const MAX_MESSAGE: usize = 1 << 30;
/// Output formats of values, sent at start-up on every connection.
pub const DISPLAY_SETTINGS: &[(&str, &str)] = &[
    ("bytea_output", "hex"),
    ("DateStyle", "ISO, DMY"),
    ("TimeZone", "UTC"),
    ("extra_float_digits", "1"),
    ("IntervalStyle", "iso_8601"),
];
/// How long `close` waits to hand Terminate to the socket.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// The result of one statement of a simple query.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// Empty for statements that return no rows.
    pub columns: Rc<[String]>,
    pub rows: Vec<Row>,
    /// E.g. `SELECT 3`, `INSERT 0 1`, `CREATE_REPLICATION_SLOT`.
    pub command_tag: String,
}

/// One row in text format. It shares the socket read buffer its DataRow
/// came in (like tokio-postgres' rows), so decoding a row copies no values;
/// a row kept alive keeps that buffer chunk (up to ~64 KiB) alive with it.
#[derive(Clone)]
pub struct Row {
    columns: Rc<[String]>,
    /// The DataRow body after its column count.
    body: Bytes,
    /// Per column, the value's bytes in `body` (validated UTF-8).
    spans: Vec<Span>,
}

/// A value's place in a DataRow body; `start == u32::MAX` for NULL. Bodies
/// are under 1 GiB, so u32 offsets suffice and a span is 8 bytes.
#[derive(Clone, Copy)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    const NULL: Span = Span {
        start: u32::MAX,
        end: 0,
    };
}

impl Row {
    /// Decodes a DataRow body after its column count: per column an i32
    /// length (-1 for NULL) and that many bytes.
    fn decode(columns: Rc<[String]>, body: &Bytes) -> Result<Row, PgError> {
        let bytes: &[u8] = body;
        if bytes.len() > MAX_MESSAGE {
            return Err(PgError::Protocol("DataRow over the 1 GiB limit".into()));
        }
        let mut spans = Vec::with_capacity(columns.len());
        let mut pos = 0;
        while pos < bytes.len() {
            let Some(&[a, b, c, d]) = bytes.get(pos..pos + 4) else {
                return Err(PgError::Protocol("DataRow truncated".into()));
            };
            let len = i32::from_be_bytes([a, b, c, d]);
            pos += 4;
            if len == -1 {
                spans.push(Span::NULL);
                continue;
            }
            if len < 0 {
                return Err(PgError::Protocol(format!("DataRow value length {len}")));
            }
            let end = pos + len as usize;
            let value = bytes
                .get(pos..end)
                .ok_or_else(|| PgError::Protocol("DataRow value runs past the message".into()))?;
            if std::str::from_utf8(value).is_err() {
                let name = columns.get(spans.len()).map_or("?", |c| c.as_str());
                return Err(PgError::Protocol(format!(
                    "column {name:?} is not valid UTF-8"
                )));
            }
            spans.push(Span {
                start: pos as u32,
                end: end as u32,
            });
            pos = end;
        }
        if spans.len() != columns.len() {
            return Err(PgError::Protocol(format!(
                "DataRow has {} values for {} columns",
                spans.len(),
                columns.len()
            )));
        }
        Ok(Row {
            columns,
            body: body.clone(),
            spans,
        })
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The value of column `idx`; None for NULL or no such column.
    pub fn get(&self, idx: usize) -> Option<&str> {
        let span = *self.spans.get(idx)?;
        if span.start == u32::MAX {
            return None;
        }
        let value = &self.body[span.start as usize..span.end as usize];
        // SAFETY: `decode` checked that every non-NULL span is UTF-8, and
        // neither `body` nor `spans` change after that.
        Some(unsafe { std::str::from_utf8_unchecked(value) })
    }

    /// The value of the first column called `name`.
    pub fn get_by_name(&self, name: &str) -> Option<&str> {
        let idx = self.columns.iter().position(|c| c == name)?;
        self.get(idx)
    }

    /// The value of column `idx` parsed as `T`; Ok(None) for NULL.
    pub fn try_get<T: FromStr>(&self, idx: usize) -> Result<Option<T>, PgError> {
        let Some(name) = self.columns.get(idx) else {
            return Err(PgError::Protocol(format!(
                "no column {idx}: the row has {} columns",
                self.len()
            )));
        };
        let Some(value) = self.get(idx) else {
            return Ok(None);
        };
        value.parse().map(Some).map_err(|_| {
            let shown: String = value.chars().take(64).collect();
            PgError::Protocol(format!(
                "column {name:?}: cannot parse {shown:?} as {}",
                std::any::type_name::<T>()
            ))
        })
    }
}

impl fmt::Debug for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries((0..self.len()).map(|i| (&self.columns[i], self.get(i))))
            .finish()
    }
}

/// A COPY ... TO STDOUT in progress; see [`Connection::copy_out`].
pub struct CopyOut<'a> {
    conn: &'a mut Connection,
    command_tag: Option<String>,
    done: bool,
}

impl CopyOut<'_> {
    /// The next CopyData payload (a row, in text or CSV format, or a chunk
    /// of binary COPY); None once the COPY is complete.
    pub async fn next(&mut self) -> Result<Option<Bytes>, PgError> {
        while !self.done {
            match self.conn.recv().await? {
                Backend::Message(Message::CopyData(body)) => return Ok(Some(body.into_bytes())),
                Backend::Message(Message::CopyDone) => {}
                Backend::Message(Message::CommandComplete(body)) => {
                    self.command_tag = body.tag().ok().map(str::to_string);
                }
                Backend::Message(Message::ReadyForQuery(_)) => {
                    self.conn.state = State::Idle;
                    self.done = true;
                }
                Backend::Error(e) => {
                    self.done = true;
                    self.conn.finish_pending().await?;
                    return Err(PgError::Db(e));
                }
                other => return Err(unexpected(&other, "COPY TO STDOUT")),
            }
        }
        Ok(None)
    }

    /// E.g. `COPY 1000`, once `next` has returned None.
    pub fn command_tag(&self) -> Option<&str> {
        self.command_tag.as_deref()
    }
}

/// The rows of a statement started by [`Connection::query_stream`].
pub struct RowStream<'a> {
    conn: &'a mut Connection,
    columns: Rc<[String]>,
    done: bool,
}

impl RowStream<'_> {
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The next row; None once the statement completed.
    pub async fn next(&mut self) -> Result<Option<Row>, PgError> {
        while !self.done {
            match self.conn.recv().await? {
                Backend::Message(Message::DataRow(body)) => {
                    let row = Row::decode(self.columns.clone(), body.buffer_bytes());
                    if row.is_err() {
                        self.done = true;
                        self.conn.finish_pending().await?;
                    }
                    return row.map(Some);
                }
                Backend::Message(
                    Message::CommandComplete(_)
                    | Message::EmptyQueryResponse
                    | Message::PortalSuspended,
                ) => {}
                Backend::Message(Message::ReadyForQuery(_)) => {
                    self.conn.state = State::Idle;
                    self.done = true;
                }
                Backend::Error(e) => {
                    self.done = true;
                    self.conn.finish_pending().await?;
                    return Err(PgError::Db(e));
                }
                other => {
                    self.done = true;
                    let what = other.name();
                    self.conn.abandon(other).await?;
                    return Err(PgError::Protocol(format!(
                        "unexpected {what} while reading rows"
                    )));
                }
            }
        }
        Ok(None)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    /// A query was sent and its responses are not yet read up to
    /// ReadyForQuery (possibly because the caller dropped the future).
    Busy,
    /// Replication streaming; `server_done` once the server sent CopyDone.
    CopyBoth {
        server_done: bool,
    },
}

enum Transport {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// Boxed: the TLS state is large beside a socket.
    Tls(Box<futures_rustls::client::TlsStream<TcpStream>>),
}

impl Transport {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.read(buf).await,
            Transport::Unix(s) => s.read(buf).await,
            Transport::Tls(s) => s.read(buf).await,
        }
    }

    async fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.write(buf).await,
            Transport::Unix(s) => s.write(buf).await,
            Transport::Tls(s) => {
                let n = s.write(buf).await?;
                // rustls buffers what it encrypts: push it to the socket.
                s.flush().await?;
                Ok(n)
            }
        }
    }
}

pub struct Connection {
    transport: Transport,
    read_buf: BytesMut,
    /// Socket reads land here first and move to `read_buf` only when the
    /// read completed, which is what makes a dropped read harmless.
    scratch: Box<[u8]>,
    write_buf: BytesMut,
    parameters: HashMap<String, String>,
    backend_pid: i32,
    state: State,
}

impl Connection {
    /// Connects, authenticates and waits until the server is ready, all
    /// within `cfg.connect_timeout`.
    pub async fn connect(cfg: &ConnConfig) -> Result<Connection, PgError> {
        Connection::connect_with(cfg, false).await
    }

    /// A walsender connection (`replication=database`): accepts
    /// IDENTIFY_SYSTEM, CREATE_REPLICATION_SLOT, START_REPLICATION and SQL.
    pub async fn connect_replication(cfg: &ConnConfig) -> Result<Connection, PgError> {
        Connection::connect_with(cfg, true).await
    }

    async fn connect_with(cfg: &ConnConfig, replication: bool) -> Result<Connection, PgError> {
        let work = async {
            let transport = open(cfg).await?;
            let mut conn = Connection {
                transport,
                read_buf: BytesMut::with_capacity(READ_CHUNK),
                scratch: vec![0; READ_CHUNK].into_boxed_slice(),
                write_buf: BytesMut::with_capacity(1024),
                parameters: HashMap::new(),
                backend_pid: 0,
                state: State::Busy,
            };
            conn.startup(cfg, replication).await?;
            tracing::debug!(
                endpoint = %cfg.endpoint(),
                pid = conn.backend_pid,
                replication,
                "connected to Postgres"
            );
            Ok(conn)
        };
        if cfg.connect_timeout.is_zero() {
            return work.await;
        }
        futures_lite::future::or(work, async {
            shards::runtime::sleep(cfg.connect_timeout).await;
            Err(PgError::Timeout(
                "connecting to Postgres (see connect_timeout)",
            ))
        })
        .await
    }

    /// A server parameter as last reported (server_version, TimeZone, ...).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).map(String::as_str)
    }

    pub fn backend_pid(&self) -> i32 {
        self.backend_pid
    }

    /// The socket's keepalive settings as the kernel has them: (on, idle
    /// seconds, interval seconds, count); None on a Unix socket.
    pub fn tcp_keepalive(&self) -> Option<(bool, i32, i32, i32)> {
        use std::os::fd::AsRawFd;
        let fd = match &self.transport {
            Transport::Tcp(s) => s.as_raw_fd(),
            Transport::Tls(s) => s.get_ref().0.as_raw_fd(),
            Transport::Unix(_) => return None,
        };
        let get = |level: libc::c_int, name: libc::c_int| -> i32 {
            let mut value: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: reads one int option into a local.
            unsafe {
                libc::getsockopt(
                    fd,
                    level,
                    name,
                    (&mut value as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            value
        };
        Some((
            get(libc::SOL_SOCKET, libc::SO_KEEPALIVE) != 0,
            get(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE),
            get(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL),
            get(libc::IPPROTO_TCP, libc::TCP_KEEPCNT),
        ))
    }

    /// Runs `sql` (one or more statements) with the simple query protocol.
    /// Statements outside an explicit BEGIN/COMMIT run together as one
    /// implicit transaction (Postgres' rule for a multi-statement Query).
    /// On an ErrorResponse the rest of the response is still read, so the
    /// connection stays usable.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<QueryResult>, PgError> {
        self.send_query(sql).await?;
        self.collect().await
    }

    /// The rows of the last statement in `sql`.
    pub async fn query_rows(&mut self, sql: &str) -> Result<Vec<Row>, PgError> {
        let results = self.simple_query(sql).await?;
        Ok(results
            .into_iter()
            .last()
            .map(|r| r.rows)
            .unwrap_or_default())
    }

    pub async fn execute(&mut self, sql: &str) -> Result<(), PgError> {
        self.simple_query(sql).await.map(drop)
    }

    /// Runs one statement with `$n` parameters bound as text (never
    /// spliced into the SQL) and returns all its rows.
    pub async fn query_params(
        &mut self,
        sql: &str,
        params: &[Option<&str>],
    ) -> Result<Vec<Row>, PgError> {
        let mut stream = self.query_stream(sql, params).await?;
        let mut rows = Vec::new();
        while let Some(row) = stream.next().await? {
            rows.push(row);
        }
        Ok(rows)
    }

    /// Starts one statement with bound text parameters through the
    /// extended protocol and streams its rows as they arrive, so a large
    /// result is never held whole. Errors in parsing, planning or binding
    /// come back here; errors while executing come from `RowStream::next`.
    /// A stream dropped early is drained by the next call.
    pub async fn query_stream(
        &mut self,
        sql: &str,
        params: &[Option<&str>],
    ) -> Result<RowStream<'_>, PgError> {
        self.finish_pending().await?;
        self.encode("the statement", |buf| {
            frontend::parse("", sql, std::iter::empty(), buf)
        })?;
        let before = self.write_buf.len();
        let bound = frontend::bind(
            "",
            "",
            std::iter::empty(),
            params.iter(),
            |value, buf| match value {
                Some(text) => {
                    buf.extend_from_slice(text.as_bytes());
                    Ok(postgres_protocol::IsNull::No)
                }
                None => Ok(postgres_protocol::IsNull::Yes),
            },
            std::iter::empty(),
            &mut self.write_buf,
        );
        if bound.is_err() {
            self.write_buf.clear();
            return Err(PgError::Protocol(format!(
                "cannot encode {} parameters",
                params.len()
            )));
        }
        debug_assert!(self.write_buf.len() > before);
        self.encode("Describe", |buf| frontend::describe(b'P', "", buf))?;
        self.encode("Execute", |buf| frontend::execute("", 0, buf))?;
        frontend::sync(&mut self.write_buf);
        self.state = State::Busy;
        self.flush().await?;
        loop {
            match self.recv().await? {
                Backend::Message(Message::ParseComplete | Message::BindComplete) => {}
                Backend::RowDescription(columns) => {
                    return Ok(RowStream {
                        conn: self,
                        columns,
                        done: false,
                    })
                }
                Backend::Message(Message::NoData) => {
                    return Ok(RowStream {
                        conn: self,
                        columns: Rc::from(Vec::new()),
                        done: false,
                    })
                }
                Backend::Error(e) => {
                    self.finish_pending().await?;
                    return Err(PgError::Db(e));
                }
                other => {
                    let what = other.name();
                    self.abandon(other).await?;
                    return Err(PgError::Protocol(format!(
                        "unexpected {what} while starting a statement"
                    )));
                }
            }
        }
    }

    /// Starts `COPY ... TO STDOUT` and streams its data. If the CopyOut is
    /// dropped early, the next call on this connection first reads (and
    /// discards) the rest of the COPY.
    pub async fn copy_out(&mut self, sql: &str) -> Result<CopyOut<'_>, PgError> {
        self.send_query(sql).await?;
        match self.recv().await? {
            Backend::Message(Message::CopyOutResponse(_)) => Ok(CopyOut {
                conn: self,
                command_tag: None,
                done: false,
            }),
            Backend::Error(e) => {
                self.finish_pending().await?;
                Err(PgError::Db(e))
            }
            other => {
                self.abandon(other).await?;
                Err(PgError::Protocol(
                    "copy_out needs a COPY ... TO STDOUT statement".into(),
                ))
            }
        }
    }

    /// Sends `sql` (START_REPLICATION ...) and waits for CopyBothResponse.
    pub async fn start_copy_both(&mut self, sql: &str) -> Result<(), PgError> {
        self.send_query(sql).await?;
        match self.recv().await? {
            Backend::CopyBothResponse => {
                self.state = State::CopyBoth { server_done: false };
                Ok(())
            }
            Backend::Error(e) => {
                self.finish_pending().await?;
                Err(PgError::Db(e))
            }
            other => {
                let what = other.name();
                self.abandon(other).await?;
                Err(PgError::Protocol(format!(
                    "expected CopyBothResponse after START_REPLICATION, got {what}"
                )))
            }
        }
    }

    /// The next CopyData payload of the COPY BOTH stream; None once the
    /// server ended it. Cancel-safe: it may be raced against a timer and
    /// called again.
    pub async fn read_copy_data(&mut self) -> Result<Option<Bytes>, PgError> {
        match self.state {
            State::CopyBoth { server_done: false } => {}
            State::CopyBoth { server_done: true } => return Ok(None),
            State::Idle | State::Busy => {
                return Err(PgError::Protocol(
                    "read_copy_data outside COPY BOTH mode: call start_copy_both first".into(),
                ))
            }
        }
        match self.recv().await? {
            Backend::Message(Message::CopyData(body)) => Ok(Some(body.into_bytes())),
            Backend::Message(Message::CopyDone) => {
                self.state = State::CopyBoth { server_done: true };
                Ok(None)
            }
            Backend::Message(Message::CommandComplete(_)) => {
                self.state = State::Busy;
                Ok(None)
            }
            Backend::Message(Message::ReadyForQuery(_)) => {
                self.state = State::Idle;
                Ok(None)
            }
            Backend::Error(e) => {
                // ReadyForQuery follows unless the walsender exits.
                self.state = State::Busy;
                Err(PgError::Db(e))
            }
            other => Err(unexpected(&other, "COPY BOTH")),
        }
    }

    /// Sends one CopyData message (a standby status update, say) and flushes.
    pub async fn write_copy_data(&mut self, payload: &[u8]) -> Result<(), PgError> {
        if !matches!(self.state, State::CopyBoth { .. }) {
            return Err(PgError::Protocol(
                "write_copy_data outside COPY BOTH mode: call start_copy_both first".into(),
            ));
        }
        let message = frontend::CopyData::new(payload)
            .map_err(|e| PgError::Protocol(format!("cannot send CopyData: {e}")))?;
        message.write(&mut self.write_buf);
        self.flush().await
    }

    /// Ends COPY BOTH cleanly: sends CopyDone and reads (discarding any
    /// further CopyData) until the server is ready for queries again.
    pub async fn end_copy_both(&mut self) -> Result<(), PgError> {
        if let State::CopyBoth { .. } = self.state {
            frontend::copy_done(&mut self.write_buf);
            self.state = State::Busy;
            self.flush().await?;
        }
        self.finish_pending().await
    }

    /// Says goodbye (Terminate) and closes the socket; errors are moot here.
    pub async fn close(mut self) {
        frontend::terminate(&mut self.write_buf);
        futures_lite::future::or(
            async {
                let _ = self.flush().await;
            },
            shards::runtime::sleep(CLOSE_TIMEOUT),
        )
        .await;
    }

    async fn startup(&mut self, cfg: &ConnConfig, replication: bool) -> Result<(), PgError> {
        let mut params = vec![
            ("user", cfg.user.as_str()),
            ("database", cfg.dbname.as_str()),
            // Row values become &str: have the server send UTF-8.
            ("client_encoding", "UTF8"),
        ];
        // Values go to clients as Postgres prints them; these settings make
        // snapshot rows and the replication stream print them alike, as
        // Electric's clients expect.
        params.extend_from_slice(DISPLAY_SETTINGS);
        if !cfg.application_name.is_empty() {
            params.push(("application_name", cfg.application_name.as_str()));
        }
        if replication {
            params.push(("replication", "database"));
        }
        params.extend(cfg.options.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        self.encode("the startup parameters", |buf| {
            frontend::startup_message(params, buf)
        })?;
        self.flush().await?;
        self.authenticate(cfg).await?;
        loop {
            match self.recv().await? {
                Backend::Message(Message::BackendKeyData(body)) => {
                    self.backend_pid = body.process_id();
                }
                Backend::Message(Message::ReadyForQuery(_)) => {
                    self.state = State::Idle;
                    return Ok(());
                }
                Backend::Error(e) => return Err(PgError::Db(e)),
                other => return Err(unexpected(&other, "start-up")),
            }
        }
    }

    async fn authenticate(&mut self, cfg: &ConnConfig) -> Result<(), PgError> {
        loop {
            match self.recv().await? {
                Backend::Message(Message::AuthenticationOk) => return Ok(()),
                Backend::Message(Message::AuthenticationCleartextPassword) => {
                    let password = password(cfg)?;
                    self.encode("the password", |buf| {
                        frontend::password_message(password.as_bytes(), buf)
                    })?;
                    self.flush().await?;
                }
                Backend::Message(Message::AuthenticationMd5Password(body)) => {
                    let hash =
                        md5_hash(cfg.user.as_bytes(), password(cfg)?.as_bytes(), body.salt());
                    self.encode("the password", |buf| {
                        frontend::password_message(hash.as_bytes(), buf)
                    })?;
                    self.flush().await?;
                }
                Backend::SaslMechanisms(mechanisms) => self.scram(cfg, &mechanisms).await?,
                Backend::Error(e) => return Err(PgError::Db(e)),
                Backend::Message(Message::AuthenticationGss)
                | Backend::Message(Message::AuthenticationGssContinue(_)) => {
                    return Err(unsupported_auth("GSSAPI"))
                }
                Backend::Message(Message::AuthenticationSspi) => {
                    return Err(unsupported_auth("SSPI"))
                }
                Backend::Message(Message::AuthenticationKerberosV5) => {
                    return Err(unsupported_auth("Kerberos V5"))
                }
                Backend::Message(Message::AuthenticationScmCredential) => {
                    return Err(unsupported_auth("SCM credential"))
                }
                other => return Err(unexpected(&other, "authentication")),
            }
        }
    }

    /// SCRAM-SHA-256 without channel binding (that needs TLS). Leaves the
    /// final AuthenticationOk to the caller.
    async fn scram(&mut self, cfg: &ConnConfig, mechanisms: &[String]) -> Result<(), PgError> {
        const MECHANISM: &str = "SCRAM-SHA-256";
        if !mechanisms.iter().any(|m| m == MECHANISM) {
            return Err(PgError::Auth(format!(
                "the server offers SASL mechanisms {mechanisms:?}, but only {MECHANISM} without channel binding is supported"
            )));
        }
        let password = password(cfg)?;
        let mut scram =
            sasl::ScramSha256::new(password.as_bytes(), sasl::ChannelBinding::unsupported());
        self.encode("the SCRAM message", |buf| {
            frontend::sasl_initial_response(MECHANISM, scram.message(), buf)
        })?;
        self.flush().await?;

        let body = match self.recv().await? {
            Backend::Message(Message::AuthenticationSaslContinue(body)) => body,
            Backend::Error(e) => return Err(PgError::Db(e)),
            other => return Err(unexpected(&other, "SCRAM authentication")),
        };
        scram
            .update(body.data())
            .map_err(|e| PgError::Auth(format!("invalid SCRAM message from the server: {e}")))?;
        self.encode("the SCRAM message", |buf| {
            frontend::sasl_response(scram.message(), buf)
        })?;
        self.flush().await?;

        match self.recv().await? {
            // The server proves it knows the password too.
            Backend::Message(Message::AuthenticationSaslFinal(body)) => {
                scram.finish(body.data()).map_err(|e| {
                    PgError::Auth(format!("the server's SCRAM proof did not verify ({e})"))
                })
            }
            Backend::Error(e) => Err(PgError::Db(e)),
            other => Err(unexpected(&other, "SCRAM authentication")),
        }
    }

    async fn send_query(&mut self, sql: &str) -> Result<(), PgError> {
        self.finish_pending().await?;
        self.encode("the query", |buf| frontend::query(sql, buf))?;
        self.state = State::Busy;
        self.flush().await
    }

    /// Reads the responses to a query up to ReadyForQuery.
    async fn collect(&mut self) -> Result<Vec<QueryResult>, PgError> {
        let mut results = Vec::new();
        let mut columns: Option<Rc<[String]>> = None;
        let mut rows = Vec::new();
        // The first error wins; we keep reading so the connection stays in
        // step with the server.
        let mut error = None;
        loop {
            let message = match self.recv().await {
                Ok(message) => message,
                // A FATAL error is followed by the server hanging up: report
                // the error, not the hang-up.
                Err(e) => return Err(error.unwrap_or(e)),
            };
            match message {
                Backend::RowDescription(c) => {
                    columns = Some(c);
                    rows = Vec::new();
                }
                Backend::Message(Message::DataRow(body)) => {
                    // No columns happens when draining a response whose
                    // RowDescription a caller already took (see `abandon`).
                    let Some(c) = &columns else {
                        error.get_or_insert(PgError::Protocol(
                            "DataRow without RowDescription".into(),
                        ));
                        continue;
                    };
                    match Row::decode(c.clone(), body.buffer_bytes()) {
                        Ok(row) => rows.push(row),
                        Err(e) => {
                            error.get_or_insert(e);
                        }
                    }
                }
                Backend::Message(Message::CommandComplete(body)) => {
                    let command_tag = body
                        .tag()
                        .map_err(|e| PgError::Protocol(format!("bad CommandComplete: {e}")))?
                        .to_string();
                    results.push(QueryResult {
                        columns: columns.take().unwrap_or_else(|| Rc::from(Vec::new())),
                        rows: std::mem::take(&mut rows),
                        command_tag,
                    });
                }
                Backend::Message(Message::EmptyQueryResponse) => {}
                Backend::Error(e) => {
                    error.get_or_insert(PgError::Db(e));
                }
                Backend::Message(Message::CopyInResponse(_)) => {
                    self.encode("CopyFail", |buf| {
                        frontend::copy_fail("COPY FROM STDIN is not supported here", buf)
                    })?;
                    self.flush().await?;
                }
                Backend::Message(Message::CopyOutResponse(_)) => {
                    error.get_or_insert(PgError::Protocol(
                        "COPY TO STDOUT needs copy_out, not simple_query".into(),
                    ));
                }
                Backend::CopyBothResponse => {
                    // Ask the server to end the stream so we get back in step.
                    frontend::copy_done(&mut self.write_buf);
                    self.flush().await?;
                    error.get_or_insert(PgError::Protocol(
                        "replication streaming needs start_copy_both, not simple_query".into(),
                    ));
                }
                Backend::Message(Message::CopyData(_)) | Backend::Message(Message::CopyDone) => {}
                // Extended-protocol acknowledgements of an abandoned stream.
                Backend::Message(
                    Message::ParseComplete
                    | Message::BindComplete
                    | Message::NoData
                    | Message::PortalSuspended
                    | Message::CloseComplete,
                ) => {}
                Backend::Message(Message::ReadyForQuery(_)) => {
                    self.state = State::Idle;
                    return match error {
                        Some(e) => Err(e),
                        None => Ok(results),
                    };
                }
                other => return Err(unexpected(&other, "a query")),
            }
        }
    }

    /// Gets back in step after an abandoned query or COPY: whatever it
    /// returned is discarded.
    async fn finish_pending(&mut self) -> Result<(), PgError> {
        match self.state {
            State::Idle => Ok(()),
            State::Busy => {
                let result = self.collect().await;
                match self.state {
                    State::Idle => Ok(()),
                    _ => result.map(drop),
                }
            }
            State::CopyBoth { .. } => Err(PgError::Protocol(
                "the connection is streaming replication: call end_copy_both or use another connection".into(),
            )),
        }
    }

    /// Like `finish_pending`, for when `message` (the first response) was
    /// already read and was not what the caller wanted.
    async fn abandon(&mut self, message: Backend) -> Result<(), PgError> {
        match message {
            Backend::Message(Message::ReadyForQuery(_)) => self.state = State::Idle,
            Backend::Message(Message::CopyInResponse(_)) => {
                self.encode("CopyFail", |buf| {
                    frontend::copy_fail("unexpected COPY FROM STDIN", buf)
                })?;
                self.flush().await?;
            }
            Backend::CopyBothResponse => {
                frontend::copy_done(&mut self.write_buf);
                self.flush().await?;
            }
            _ => {}
        }
        self.finish_pending().await
    }

    /// Encodes a message into the write buffer; on failure (a NUL byte in a
    /// string, say) nothing of it stays there.
    fn encode(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut BytesMut) -> io::Result<()>,
    ) -> Result<(), PgError> {
        let before = self.write_buf.len();
        f(&mut self.write_buf).map_err(|e| {
            self.write_buf.truncate(before);
            PgError::Protocol(format!("cannot encode {what}: {e}"))
        })
    }

    async fn flush(&mut self) -> Result<(), PgError> {
        while !self.write_buf.is_empty() {
            let n = self.transport.write(&self.write_buf).await?;
            if n == 0 {
                return Err(PgError::Closed);
            }
            self.write_buf.advance(n);
        }
        Ok(())
    }

    /// The next message, after handling those that may come at any time
    /// (notices, parameter changes, notifications).
    async fn recv(&mut self) -> Result<Backend, PgError> {
        loop {
            match self.read_message().await? {
                Backend::Notice(notice) => {
                    tracing::debug!(
                        severity = %notice.severity,
                        code = %notice.code,
                        "Postgres notice: {}",
                        notice.message
                    );
                }
                Backend::Message(Message::ParameterStatus(body)) => {
                    if let (Ok(name), Ok(value)) = (body.name(), body.value()) {
                        self.parameters.insert(name.to_string(), value.to_string());
                    }
                }
                Backend::Message(Message::NotificationResponse(body)) => {
                    tracing::debug!(channel = ?body.channel().ok(), "ignoring NOTIFY");
                }
                other => return Ok(other),
            }
        }
    }

    async fn read_message(&mut self) -> Result<Backend, PgError> {
        loop {
            if let Some(message) = parse_frame(&mut self.read_buf)? {
                return Ok(message);
            }
            let n = self.transport.read(&mut self.scratch).await?;
            if n == 0 {
                return Err(PgError::Closed);
            }
            self.read_buf.extend_from_slice(&self.scratch[..n]);
        }
    }
}

/// A backend message. postgres-protocol 0.6 cannot parse CopyBothResponse,
/// and its RowDescription, ErrorResponse and SASL bodies are only readable
/// through `fallible-iterator` (not a dependency here), so those are decoded
/// in this file.
enum Backend {
    Message(Message),
    RowDescription(Rc<[String]>),
    Error(DbError),
    Notice(DbError),
    CopyBothResponse,
    SaslMechanisms(Vec<String>),
}

impl Backend {
    fn name(&self) -> String {
        match self {
            Backend::RowDescription(_) => "RowDescription".into(),
            Backend::Error(e) => format!("ErrorResponse ({e})"),
            Backend::Notice(_) => "NoticeResponse".into(),
            Backend::CopyBothResponse => "CopyBothResponse".into(),
            Backend::SaslMechanisms(_) => "AuthenticationSASL".into(),
            Backend::Message(m) => match m {
                Message::AuthenticationOk => "AuthenticationOk",
                Message::BackendKeyData(_) => "BackendKeyData",
                Message::CommandComplete(_) => "CommandComplete",
                Message::CopyData(_) => "CopyData",
                Message::CopyDone => "CopyDone",
                Message::CopyInResponse(_) => "CopyInResponse",
                Message::CopyOutResponse(_) => "CopyOutResponse",
                Message::DataRow(_) => "DataRow",
                Message::EmptyQueryResponse => "EmptyQueryResponse",
                Message::ReadyForQuery(_) => "ReadyForQuery",
                Message::AuthenticationSaslContinue(_) => "AuthenticationSASLContinue",
                Message::AuthenticationSaslFinal(_) => "AuthenticationSASLFinal",
                _ => "an unexpected message",
            }
            .into(),
        }
    }
}

fn unexpected(message: &Backend, during: &str) -> PgError {
    PgError::Protocol(format!("unexpected {} during {during}", message.name()))
}

fn unsupported_auth(method: &str) -> PgError {
    PgError::Auth(format!(
        "the server asks for {method} authentication, which is not supported; use scram-sha-256, md5, password or trust in pg_hba.conf"
    ))
}

fn password(cfg: &ConnConfig) -> Result<&str, PgError> {
    cfg.password.as_deref().ok_or_else(|| {
        PgError::Auth(format!(
            "server asked for a password for user {} but none was given",
            cfg.user
        ))
    })
}

/// Takes one complete message off the front of `buf`, or returns None (and
/// leaves `buf` as it was) if it is not all there yet.
fn parse_frame(buf: &mut BytesMut) -> Result<Option<Backend>, PgError> {
    let Some(header) = buf.get(..5) else {
        return Ok(None);
    };
    let tag = header[0];
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len < 4 {
        return Err(PgError::Protocol(format!(
            "message {:?} has an invalid length {len}",
            tag as char
        )));
    }
    if len > MAX_MESSAGE {
        return Err(PgError::Protocol(format!(
            "message {:?} of {len} bytes is over the 1 GiB limit",
            tag as char
        )));
    }
    let total = len + 1;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let is_sasl = tag == b'R' && total >= 9 && buf[5..9] == 10u32.to_be_bytes();
    if matches!(tag, b'W' | b'T' | b'E' | b'N') || is_sasl {
        let frame = buf.split_to(total);
        let body = &frame[5..];
        let message = match tag {
            // Same layout as CopyOutResponse; for replication the format
            // and column count carry nothing we need.
            b'W' => Backend::CopyBothResponse,
            b'T' => Backend::RowDescription(parse_row_description(body)?),
            b'E' => Backend::Error(DbError::parse(body)),
            b'N' => Backend::Notice(DbError::parse(body)),
            _ => Backend::SaslMechanisms(parse_sasl_mechanisms(&body[4..])?),
        };
        return Ok(Some(message));
    }
    match Message::parse(buf) {
        Ok(Some(message)) => Ok(Some(Backend::Message(message))),
        Ok(None) => Err(PgError::Protocol(format!(
            "message {:?} could not be framed",
            tag as char
        ))),
        Err(e) => Err(PgError::Protocol(format!(
            "cannot decode message {:?}: {e}",
            tag as char
        ))),
    }
}

/// Column names from a RowDescription body: an i16 count, then per field
/// a name and 18 bytes of type information.
fn parse_row_description(mut body: &[u8]) -> Result<Rc<[String]>, PgError> {
    let bad = || PgError::Protocol("RowDescription truncated".into());
    if body.len() < 2 {
        return Err(bad());
    }
    let count = body.get_u16() as usize;
    let mut names = Vec::with_capacity(count);
    for _ in 0..count {
        let (name, rest) = split_cstr(body).ok_or_else(bad)?;
        names.push(name);
        body = rest.get(18..).ok_or_else(bad)?;
    }
    Ok(names.into())
}

/// The mechanism list of AuthenticationSASL: names, then an empty name.
fn parse_sasl_mechanisms(mut body: &[u8]) -> Result<Vec<String>, PgError> {
    let mut names = Vec::new();
    loop {
        let (name, rest) = split_cstr(body)
            .ok_or_else(|| PgError::Protocol("AuthenticationSASL truncated".into()))?;
        if name.is_empty() {
            return Ok(names);
        }
        names.push(name);
        body = rest;
    }
}

fn split_cstr(bytes: &[u8]) -> Option<(String, &[u8])> {
    let end = bytes.iter().position(|&b| b == 0)?;
    let text = String::from_utf8_lossy(&bytes[..end]).into_owned();
    Some((text, &bytes[end + 1..]))
}

/// Opens the socket, and over TCP negotiates TLS as `sslmode` asks (Unix
/// sockets never use TLS, as in libpq, whatever the mode).
async fn open(cfg: &ConnConfig) -> Result<Transport, PgError> {
    match &cfg.host {
        Host::Unix(_) => {
            let path = cfg.socket_path().unwrap_or_default();
            let stream = UnixStream::connect(&path)
                .await
                .map_err(|e| connect_error(&cfg.endpoint(), e.into()))?;
            Ok(Transport::Unix(stream))
        }
        Host::Tcp(host) => {
            let mut last_error = None;
            for addr in by_family(resolve(host, cfg.port).await?, cfg.prefer_ipv6) {
                match open_tcp(addr, host, cfg).await {
                    Ok(transport) => return Ok(transport),
                    // Like libpq, try the next address (::1 then 127.0.0.1).
                    Err(PgError::Io(e)) => last_error = Some(PgError::Io(e)),
                    Err(e) => return Err(e),
                }
            }
            Err(last_error.unwrap_or_else(|| {
                connect_error(
                    &cfg.endpoint(),
                    io::Error::new(io::ErrorKind::NotFound, "the host has no addresses"),
                )
            }))
        }
    }
}

async fn open_tcp(addr: SocketAddr, host: &str, cfg: &ConnConfig) -> Result<Transport, PgError> {
    let mut stream = tcp(addr, &cfg.keepalive).await?;
    if cfg.sslmode == SslMode::Disable {
        return Ok(Transport::Tcp(stream));
    }
    // Everything TLS needs is checked before a byte is sent: a bad root
    // file is a configuration error, not a connection one.
    let config = super::tls::client_config(cfg)?;
    let name = super::tls::server_name(host)?;
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    let mut answer = [0u8; 1];
    let negotiated = async {
        stream.write_all(&request).await?;
        // Exactly one byte: anything after it would be unencrypted data
        // injected ahead of the handshake (CVE-2021-23222).
        stream.read_exact(&mut answer).await
    };
    negotiated
        .await
        .map_err(|e| connect_error(&addr.to_string(), e))?;
    match answer[0] {
        b'N' if cfg.sslmode == SslMode::Prefer => Ok(Transport::Tcp(stream)),
        b'N' => Err(PgError::Tls(format!(
            "sslmode={}: the server at {addr} does not accept TLS connections (enable ssl in Postgres, or use sslmode=prefer or disable)",
            cfg.sslmode
        ))),
        b'S' => {
            let tls = futures_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await
                .map_err(|e| {
                    PgError::Tls(format!(
                        "TLS handshake with {host} ({addr}) failed under sslmode={}: {e}",
                        cfg.sslmode
                    ))
                })?;
            Ok(Transport::Tls(Box::new(tls)))
        }
        other => Err(PgError::Protocol(format!(
            "unexpected answer {:?} to SSLRequest from {addr}; try sslmode=disable",
            other as char
        ))),
    }
}

async fn tcp(addr: SocketAddr, keepalive: &Keepalive) -> Result<TcpStream, PgError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| connect_error(&addr.to_string(), e.into()))?;
    // Without it a small write waits for the previous one's ACK: a 44 ms
    // stall per round trip was measured.
    stream
        .set_nodelay(true)
        .map_err(|e| connect_error(&addr.to_string(), e.into()))?;
    // A peer that vanished (a failover, a NAT dropping the flow) is found
    // by the kernel's probes instead of a read that never returns.
    set_keepalive(&stream, keepalive).map_err(|e| connect_error(&addr.to_string(), e))?;
    Ok(stream)
}

fn set_keepalive(stream: &TcpStream, keepalive: &Keepalive) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int| -> io::Result<()> {
        // SAFETY: a plain int option on a socket we own.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    if let Some(idle) = keepalive.idle_s {
        set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, idle as libc::c_int)?;
    }
    if let Some(interval) = keepalive.interval_s {
        set(
            libc::IPPROTO_TCP,
            libc::TCP_KEEPINTVL,
            interval as libc::c_int,
        )?;
    }
    if let Some(count) = keepalive.count {
        set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, count as libc::c_int)?;
    }
    Ok(())
}

/// `addrs` with the preferred family first, each family in resolver order.
fn by_family(mut addrs: Vec<SocketAddr>, prefer_ipv6: bool) -> Vec<SocketAddr> {
    addrs.sort_by_key(|a| a.is_ipv6() != prefer_ipv6);
    addrs
}

async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, PgError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let name = host.to_string();
    // getaddrinfo blocks; keep it off the executor thread.
    let resolved = shards::runtime::dma::blocking(move || {
        (name.as_str(), port).to_socket_addrs().map(Vec::from_iter)
    })
    .await;
    resolved.map_err(|e| {
        PgError::Io(io::Error::new(
            e.kind(),
            format!("cannot resolve Postgres host {host}: {e}"),
        ))
    })
}

fn connect_error(endpoint: &str, e: io::Error) -> PgError {
    PgError::Io(io::Error::new(
        e.kind(),
        format!("cannot connect to Postgres at {endpoint}: {e}"),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses_are_tried_preferred_family_first() {
        let v4a: std::net::SocketAddr = "10.0.0.1:5432".parse().unwrap();
        let v4b: std::net::SocketAddr = "10.0.0.2:5432".parse().unwrap();
        let v6a: std::net::SocketAddr = "[fd00::1]:5432".parse().unwrap();
        let v6b: std::net::SocketAddr = "[fd00::2]:5432".parse().unwrap();
        let resolved = vec![v6a, v4a, v6b, v4b];
        assert_eq!(
            super::by_family(resolved.clone(), false),
            vec![v4a, v4b, v6a, v6b]
        );
        assert_eq!(super::by_family(resolved, true), vec![v6a, v6b, v4a, v4b]);
    }

    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn row_description(names: &[&str]) -> Vec<u8> {
        let mut body = (names.len() as u16).to_be_bytes().to_vec();
        for name in names {
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            body.extend_from_slice(&[0; 18]);
        }
        frame(b'T', &body)
    }

    fn data_row(values: &[Option<&str>]) -> Vec<u8> {
        let mut body = (values.len() as u16).to_be_bytes().to_vec();
        for value in values {
            match value {
                None => body.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    body.extend_from_slice(v.as_bytes());
                }
            }
        }
        frame(b'D', &body)
    }

    #[test]
    fn partial_frames_stay_in_the_buffer() {
        let whole = frame(b'd', b"hello");
        let mut buf = BytesMut::new();
        for (i, byte) in whole.iter().enumerate() {
            assert!(parse_frame(&mut buf).unwrap().is_none());
            assert_eq!(buf.len(), i);
            buf.extend_from_slice(&[*byte]);
        }
        buf.extend_from_slice(&frame(b'c', b""));
        match parse_frame(&mut buf).unwrap() {
            Some(Backend::Message(Message::CopyData(body))) => assert_eq!(body.data(), b"hello"),
            _ => panic!("expected CopyData"),
        }
        assert!(matches!(
            parse_frame(&mut buf).unwrap(),
            Some(Backend::Message(Message::CopyDone))
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn copy_both_response_is_parsed_here() {
        let mut buf = BytesMut::from(&frame(b'W', &[0, 0, 0])[..]);
        assert!(matches!(
            parse_frame(&mut buf).unwrap(),
            Some(Backend::CopyBothResponse)
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_bad_lengths() {
        let mut buf = BytesMut::from(&[b'd', 0, 0, 0, 3][..]);
        assert!(matches!(parse_frame(&mut buf), Err(PgError::Protocol(_))));
        let mut buf = BytesMut::from(&[b'd', 0x7f, 0xff, 0xff, 0xff][..]);
        let e = parse_frame(&mut buf).err().unwrap().to_string();
        assert!(e.contains("1 GiB"), "{e}");
        // An unknown tag is an error, not a panic.
        let mut buf = BytesMut::from(&frame(b'?', b"x")[..]);
        assert!(matches!(parse_frame(&mut buf), Err(PgError::Protocol(_))));
    }

    #[test]
    fn error_and_notice_responses() {
        let body = b"SERROR\0VERROR\0C42601\0Msyntax error at or near \"SELEC\"\0P1\0\0";
        let mut buf = BytesMut::from(&frame(b'E', body)[..]);
        buf.extend_from_slice(&frame(b'N', b"SNOTICE\0C00000\0Mhi\0\0"));
        match parse_frame(&mut buf).unwrap() {
            Some(Backend::Error(e)) => {
                assert_eq!(e.code, "42601");
                assert_eq!(
                    e.to_string(),
                    "ERROR 42601: syntax error at or near \"SELEC\" (at position 1)"
                );
            }
            _ => panic!("expected ErrorResponse"),
        }
        assert!(matches!(
            parse_frame(&mut buf).unwrap(),
            Some(Backend::Notice(n)) if n.message == "hi"
        ));
    }

    #[test]
    fn sasl_mechanisms() {
        let mut body = 10u32.to_be_bytes().to_vec();
        body.extend_from_slice(b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0");
        let mut buf = BytesMut::from(&frame(b'R', &body)[..]);
        match parse_frame(&mut buf).unwrap() {
            Some(Backend::SaslMechanisms(m)) => {
                assert_eq!(m, vec!["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"])
            }
            _ => panic!("expected AuthenticationSASL"),
        }
        // Other authentication requests still go through postgres-protocol.
        let mut buf = BytesMut::from(&frame(b'R', &[0, 0, 0, 0])[..]);
        assert!(matches!(
            parse_frame(&mut buf).unwrap(),
            Some(Backend::Message(Message::AuthenticationOk))
        ));
        let mut buf = BytesMut::from(&frame(b'R', &[0, 0, 0, 10, b'x'])[..]);
        assert!(matches!(parse_frame(&mut buf), Err(PgError::Protocol(_))));
        // A short 'R' followed by bytes that look like a SASL subtype.
        let mut buf = BytesMut::from(&frame(b'R', &[])[..]);
        buf.extend_from_slice(&[0, 0, 0, 10]);
        assert!(matches!(parse_frame(&mut buf), Err(PgError::Protocol(_))));
    }

    #[test]
    fn rows_decode_with_nulls_and_names() {
        let mut buf = BytesMut::from(&row_description(&["id", "name", "n"])[..]);
        buf.extend_from_slice(&data_row(&[Some("7"), None, Some("héllo")]));
        let Some(Backend::RowDescription(columns)) = parse_frame(&mut buf).unwrap() else {
            panic!("expected RowDescription");
        };
        assert_eq!(&columns[..], ["id", "name", "n"]);
        let Some(Backend::Message(Message::DataRow(body))) = parse_frame(&mut buf).unwrap() else {
            panic!("expected DataRow");
        };
        let row = Row::decode(columns, body.buffer_bytes()).unwrap();
        assert_eq!(row.len(), 3);
        assert_eq!(row.get(0), Some("7"));
        assert_eq!(row.get(1), None);
        assert_eq!(row.get(3), None);
        assert_eq!(row.get_by_name("n"), Some("héllo"));
        assert_eq!(row.try_get::<u32>(0).unwrap(), Some(7));
        assert_eq!(row.try_get::<u32>(1).unwrap(), None);
        let e = row.try_get::<u32>(2).unwrap_err().to_string();
        assert!(e.contains("column \"n\"") && e.contains("u32"), "{e}");
        assert!(row.try_get::<u32>(9).is_err());
        assert_eq!(
            format!("{row:?}"),
            r#"{"id": Some("7"), "name": None, "n": Some("héllo")}"#
        );
    }

    #[test]
    fn malformed_rows_are_errors() {
        let columns: Rc<[String]> = vec!["a".to_string()].into();
        for body in [
            &[0, 0, 0][..],                      // truncated length
            &[0, 0, 0, 5, b'x'][..],             // value past the end
            &[0, 0, 0, 1, 0xff][..],             // not UTF-8
            &[0, 0, 0, 1, b'x', 0, 0, 0, 0][..], // too many values
            &[][..],                             // too few
        ] {
            let body = Bytes::copy_from_slice(body);
            assert!(Row::decode(columns.clone(), &body).is_err(), "{body:?}");
        }
        assert!(parse_row_description(&[0, 1, b'a']).is_err());
        assert!(parse_row_description(&[0, 1, b'a', 0, 1, 2]).is_err());
    }
}
