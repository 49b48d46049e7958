//! Decoding of pgoutput, Postgres' logical replication output plugin
//! (protocol version 1), into the domain types of `shards::change`.
//!
//! Two layers: [`parse`] turns one XLogData payload into a [`PgOutputMessage`]
//! that mirrors the wire; [`Decoder`] keeps the state that spans messages (the
//! relation cache and the open transaction) and yields [`DecodedEvent`]s.
//!
//! The payload comes from the network, so every length and count is checked
//! against what is left of it: bad input is a [`DecodeError`], never a panic.
//! Column values are slices of the received payload, so decoding a row costs
//! one `Vec` of datums and no copy of the values.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use shards::change::{
    Change, Column, Datum, OldTupleKind, Relation, RelationId, ReplicaIdentity, Transaction, Tuple,
    Xid,
};
use shards::Lsn;

const TAG_BEGIN: u8 = b'B';
const TAG_COMMIT: u8 = b'C';
const TAG_ORIGIN: u8 = b'O';
const TAG_RELATION: u8 = b'R';
const TAG_TYPE: u8 = b'Y';
const TAG_INSERT: u8 = b'I';
const TAG_UPDATE: u8 = b'U';
const TAG_DELETE: u8 = b'D';
const TAG_TRUNCATE: u8 = b'T';
const TAG_MESSAGE: u8 = b'M';

const TUPLE_NEW: u8 = b'N';
const TUPLE_OLD_KEY: u8 = b'K';
const TUPLE_OLD_FULL: u8 = b'O';

const COLUMN_NULL: u8 = b'n';
const COLUMN_UNCHANGED_TOAST: u8 = b'u';
const COLUMN_TEXT: u8 = b't';
const COLUMN_BINARY: u8 = b'b';

const COLUMN_FLAG_KEY: u8 = 1;
const MESSAGE_FLAG_TRANSACTIONAL: u8 = 1;

/// Truncate option bit: `TRUNCATE ... CASCADE`.
pub const TRUNCATE_CASCADE: u8 = 1;
/// Truncate option bit: `TRUNCATE ... RESTART IDENTITY`.
pub const TRUNCATE_RESTART_IDENTITY: u8 = 2;

/// Smallest encoding of one Relation column: flags, empty name (just its
/// NUL), type oid, type modifier. Used to reject a column count the payload
/// cannot hold before allocating for it.
const MIN_RELATION_COLUMN_LEN: usize = 1 + 1 + 4 + 4;

/// One pgoutput message, field for field as it was on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PgOutputMessage {
    Begin {
        /// LSN of the transaction's commit record.
        final_lsn: Lsn,
        commit_time_micros: i64,
        xid: Xid,
    },
    Commit {
        flags: u8,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time_micros: i64,
    },
    Origin {
        commit_lsn: Lsn,
        name: String,
    },
    Relation(Relation),
    Type {
        oid: u32,
        schema: String,
        name: String,
    },
    Insert {
        relation_id: RelationId,
        new: Tuple,
    },
    Update {
        relation_id: RelationId,
        old: Option<(OldTupleKind, Tuple)>,
        new: Tuple,
    },
    Delete {
        relation_id: RelationId,
        old: (OldTupleKind, Tuple),
    },
    Truncate {
        /// Bit set of [`TRUNCATE_CASCADE`] and [`TRUNCATE_RESTART_IDENTITY`].
        options: u8,
        relation_ids: Vec<RelationId>,
    },
    Message {
        transactional: bool,
        lsn: Lsn,
        prefix: String,
        content: Bytes,
    },
}

/// Why a payload (or a sequence of them) could not be decoded. Every variant
/// names the message kind by its tag byte so the error is actionable without
/// a packet capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The payload had no bytes, not even a tag.
    Empty,
    /// The tag byte is not a protocol version 1 message.
    UnknownTag(u8),
    /// The payload ended inside `field`, which starts at byte `offset`.
    Truncated {
        tag: u8,
        field: &'static str,
        offset: usize,
        payload_len: usize,
    },
    /// `field`, at byte `offset`, holds a value the protocol does not allow.
    Invalid {
        tag: u8,
        field: &'static str,
        offset: usize,
        detail: String,
    },
    /// The message was complete but bytes followed it: the payload was not
    /// the message we think it was, so none of its fields can be trusted.
    TrailingBytes { tag: u8, count: usize },
    /// A change names a relation no Relation message has described.
    UnknownRelation { tag: u8, relation_id: RelationId },
    /// A tuple's column count disagrees with its relation's.
    ColumnCountMismatch {
        tag: u8,
        relation_id: RelationId,
        expected: usize,
        actual: usize,
    },
    /// A change or Commit arrived without a Begin before it.
    NotInTransaction { tag: u8 },
    /// A Begin arrived while another transaction was still open.
    NestedBegin { open_xid: Xid, xid: Xid },
    /// The Commit's LSN is not the one its Begin announced.
    CommitLsnMismatch {
        xid: Xid,
        begin_final_lsn: Lsn,
        commit_lsn: Lsn,
    },
    /// The open transaction exceeded the decoder's change limit.
    TransactionTooLarge { xid: Xid, limit: usize },
}

fn tag_name(tag: u8) -> &'static str {
    match tag {
        TAG_BEGIN => "Begin",
        TAG_COMMIT => "Commit",
        TAG_ORIGIN => "Origin",
        TAG_RELATION => "Relation",
        TAG_TYPE => "Type",
        TAG_INSERT => "Insert",
        TAG_UPDATE => "Update",
        TAG_DELETE => "Delete",
        TAG_TRUNCATE => "Truncate",
        TAG_MESSAGE => "Message",
        _ => "unknown",
    }
}

/// Formats a tag as `Insert ('I')`.
struct TagDisplay(u8);

impl fmt::Display for TagDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ('{}')",
            tag_name(self.0),
            (self.0 as char).escape_default()
        )
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Empty => write!(f, "empty pgoutput payload: no message tag"),
            DecodeError::UnknownTag(tag) => write!(
                f,
                "unknown pgoutput message tag '{}' (0x{tag:02x}); only protocol version 1 \
                 messages are supported",
                (*tag as char).escape_default()
            ),
            DecodeError::Truncated {
                tag,
                field,
                offset,
                payload_len,
            } => write!(
                f,
                "truncated pgoutput {} message: {field} at byte {offset} runs past the end of \
                 the {payload_len}-byte payload",
                TagDisplay(*tag)
            ),
            DecodeError::Invalid {
                tag,
                field,
                offset,
                detail,
            } => write!(
                f,
                "malformed pgoutput {} message: {field} at byte {offset}: {detail}",
                TagDisplay(*tag)
            ),
            DecodeError::TrailingBytes { tag, count } => write!(
                f,
                "malformed pgoutput {} message: {count} unexpected byte(s) after its last field",
                TagDisplay(*tag)
            ),
            DecodeError::UnknownRelation { tag, relation_id } => write!(
                f,
                "pgoutput {} message for relation {relation_id}, which no Relation message \
                 has described",
                TagDisplay(*tag)
            ),
            DecodeError::ColumnCountMismatch {
                tag,
                relation_id,
                expected,
                actual,
            } => write!(
                f,
                "pgoutput {} message for relation {relation_id} has a tuple of {actual} \
                 column(s), but the relation has {expected}",
                TagDisplay(*tag)
            ),
            DecodeError::NotInTransaction { tag } => write!(
                f,
                "pgoutput {} message outside a transaction (no Begin before it)",
                TagDisplay(*tag)
            ),
            DecodeError::NestedBegin { open_xid, xid } => write!(
                f,
                "pgoutput Begin ('B') of transaction {xid} while transaction {open_xid} is \
                 still open"
            ),
            DecodeError::CommitLsnMismatch {
                xid,
                begin_final_lsn,
                commit_lsn,
            } => write!(
                f,
                "pgoutput Commit ('C') of transaction {xid} at LSN {commit_lsn}, but its Begin \
                 announced {begin_final_lsn}"
            ),
            DecodeError::TransactionTooLarge { xid, limit } => write!(
                f,
                "transaction {xid} has more than {limit} changes, the decoder's limit"
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

/// The byte labels of one tuple's fields, so errors say which tuple of an
/// Update broke without formatting on the happy path.
struct TupleFields {
    count: &'static str,
    kind: &'static str,
    len: &'static str,
    value: &'static str,
}

const NEW_TUPLE: TupleFields = TupleFields {
    count: "new tuple column count",
    kind: "new tuple column kind",
    len: "new tuple column length",
    value: "new tuple column value",
};

const OLD_TUPLE: TupleFields = TupleFields {
    count: "old tuple column count",
    kind: "old tuple column kind",
    len: "old tuple column length",
    value: "old tuple column value",
};

/// Reads big-endian fields off one payload, tagging every error with the
/// message it was reading.
struct Cursor {
    buf: Bytes,
    pos: usize,
    tag: u8,
}

impl Cursor {
    fn new(data: Bytes) -> Result<Cursor, DecodeError> {
        match data.first() {
            Some(&tag) => Ok(Cursor {
                buf: data,
                pos: 1,
                tag,
            }),
            None => Err(DecodeError::Empty),
        }
    }

    #[cold]
    #[inline(never)]
    fn truncated(&self, field: &'static str) -> DecodeError {
        DecodeError::Truncated {
            tag: self.tag,
            field,
            offset: self.pos,
            payload_len: self.buf.len(),
        }
    }

    #[cold]
    #[inline(never)]
    fn invalid(&self, field: &'static str, detail: String) -> DecodeError {
        DecodeError::Invalid {
            tag: self.tag,
            field,
            offset: self.pos,
            detail,
        }
    }

    #[inline]
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    #[inline]
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        // `pos <= len` always holds, so `pos + N` cannot overflow.
        match self.buf.get(self.pos..self.pos + N) {
            Some(src) => {
                let mut out = [0u8; N];
                out.copy_from_slice(src);
                self.pos += N;
                Ok(out)
            }
            None => Err(self.truncated(field)),
        }
    }

    #[inline]
    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        match self.buf.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(self.truncated(field)),
        }
    }

    #[inline]
    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.array(field).map(u16::from_be_bytes)
    }

    #[inline]
    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_be_bytes)
    }

    #[inline]
    fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        self.array(field).map(i32::from_be_bytes)
    }

    #[inline]
    fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        self.array(field).map(i64::from_be_bytes)
    }

    #[inline]
    fn lsn(&mut self, field: &'static str) -> Result<Lsn, DecodeError> {
        self.array(field).map(|b| Lsn(u64::from_be_bytes(b)))
    }

    /// `len` bytes as a slice of the payload: a reference count, not a copy.
    #[inline]
    fn bytes(&mut self, len: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        match self.pos.checked_add(len) {
            Some(end) if end <= self.buf.len() => {
                let out = self.buf.slice(self.pos..end);
                self.pos = end;
                Ok(out)
            }
            _ => Err(self.truncated(field)),
        }
    }

    /// A NUL-terminated string. Names are few and small and the shared types
    /// own them, so this one does allocate.
    fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let rest = &self.buf[self.pos..];
        let Some(nul) = rest.iter().position(|&b| b == 0) else {
            return Err(self.truncated(field));
        };
        match std::str::from_utf8(&rest[..nul]) {
            Ok(s) => {
                let s = s.to_owned();
                self.pos += nul + 1;
                Ok(s)
            }
            Err(e) => Err(self.invalid(field, format!("not valid UTF-8 ({e})"))),
        }
    }

    fn tuple(&mut self, fields: &TupleFields) -> Result<Tuple, DecodeError> {
        let count = self.u16(fields.count)? as usize;
        // Every column takes at least its kind byte; checking that first
        // keeps a bogus count from allocating before the loop notices.
        if self.remaining() < count {
            return Err(self.truncated(fields.kind));
        }
        let mut tuple = Vec::with_capacity(count);
        // This is the per-row hot loop: a local position stays in a register
        // across the refcount call inside `Bytes::slice`, where `self.pos`
        // would be stored and reloaded around it.
        let buf: &[u8] = &self.buf;
        let mut pos = self.pos;
        for index in 0..count {
            let Some(&kind) = buf.get(pos) else {
                self.pos = pos;
                return Err(self.truncated(fields.kind));
            };
            // Binary values only come when the subscriber asks for them,
            // which we never do; should one appear, its bytes are kept as
            // they are rather than failing the stream.
            if kind == COLUMN_TEXT || kind == COLUMN_BINARY {
                // `pos < len`, so `pos + 5` cannot overflow.
                let Some(&[a, b, c, d]) = buf.get(pos + 1..pos + 5) else {
                    self.pos = pos + 1;
                    return Err(self.truncated(fields.len));
                };
                let start = pos + 5;
                let len = u32::from_be_bytes([a, b, c, d]) as usize;
                match start.checked_add(len) {
                    Some(end) if end <= buf.len() => {
                        tuple.push(Datum::Text(self.buf.slice(start..end)));
                        pos = end;
                    }
                    _ => {
                        self.pos = start;
                        return Err(self.truncated(fields.value));
                    }
                }
                continue;
            }
            tuple.push(match kind {
                COLUMN_NULL => Datum::Null,
                COLUMN_UNCHANGED_TOAST => Datum::UnchangedToast,
                other => {
                    self.pos = pos;
                    return Err(self.invalid(
                        fields.kind,
                        format!(
                            "column {index} has kind '{}' (0x{other:02x}); expected 'n', 'u', \
                             't' or 'b'",
                            (other as char).escape_default()
                        ),
                    ));
                }
            });
            pos += 1;
        }
        self.pos = pos;
        Ok(tuple)
    }

    /// The 'K' / 'O' marker and tuple of an old row.
    fn old_tuple(&mut self, marker: u8) -> Result<(OldTupleKind, Tuple), DecodeError> {
        let kind = match marker {
            TUPLE_OLD_KEY => OldTupleKind::Key,
            TUPLE_OLD_FULL => OldTupleKind::Full,
            other => {
                self.pos -= 1;
                return Err(self.invalid(
                    "old tuple marker",
                    format!(
                        "'{}' (0x{other:02x}); expected 'K' or 'O'",
                        (other as char).escape_default()
                    ),
                ));
            }
        };
        Ok((kind, self.tuple(&OLD_TUPLE)?))
    }

    fn expect_new_marker(&mut self, marker: u8) -> Result<(), DecodeError> {
        if marker == TUPLE_NEW {
            return Ok(());
        }
        self.pos -= 1;
        Err(self.invalid(
            "new tuple marker",
            format!(
                "'{}' (0x{marker:02x}); expected 'N'",
                (marker as char).escape_default()
            ),
        ))
    }

    fn insert_body(&mut self) -> Result<(RelationId, Tuple), DecodeError> {
        let relation_id = self.u32("relation id")?;
        let marker = self.u8("new tuple marker")?;
        self.expect_new_marker(marker)?;
        Ok((relation_id, self.tuple(&NEW_TUPLE)?))
    }

    #[allow(clippy::type_complexity)]
    fn update_body(
        &mut self,
    ) -> Result<(RelationId, Option<(OldTupleKind, Tuple)>, Tuple), DecodeError> {
        let relation_id = self.u32("relation id")?;
        let marker = self.u8("tuple marker")?;
        let old = if marker == TUPLE_NEW {
            None
        } else {
            let old = self.old_tuple(marker)?;
            let marker = self.u8("new tuple marker")?;
            self.expect_new_marker(marker)?;
            Some(old)
        };
        Ok((relation_id, old, self.tuple(&NEW_TUPLE)?))
    }

    fn delete_body(&mut self) -> Result<(RelationId, (OldTupleKind, Tuple)), DecodeError> {
        let relation_id = self.u32("relation id")?;
        let marker = self.u8("old tuple marker")?;
        Ok((relation_id, self.old_tuple(marker)?))
    }

    fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes {
                tag: self.tag,
                count,
            }),
        }
    }
}

/// Parses the pgoutput payload of one XLogData message (without the 'w'
/// header). Column values in the result share `data`'s buffer.
pub fn parse(data: Bytes) -> Result<PgOutputMessage, DecodeError> {
    let mut c = Cursor::new(data)?;
    let message = message_body(&mut c)?;
    c.finish()?;
    Ok(message)
}

/// Everything after the tag; the caller checks nothing is left over.
fn message_body(c: &mut Cursor) -> Result<PgOutputMessage, DecodeError> {
    let tag = c.tag;
    Ok(match tag {
        TAG_INSERT => {
            let (relation_id, new) = c.insert_body()?;
            PgOutputMessage::Insert { relation_id, new }
        }
        TAG_UPDATE => {
            let (relation_id, old, new) = c.update_body()?;
            PgOutputMessage::Update {
                relation_id,
                old,
                new,
            }
        }
        TAG_DELETE => {
            let (relation_id, old) = c.delete_body()?;
            PgOutputMessage::Delete { relation_id, old }
        }
        TAG_BEGIN => PgOutputMessage::Begin {
            final_lsn: c.lsn("final LSN")?,
            commit_time_micros: c.i64("commit timestamp")?,
            xid: c.u32("xid")?,
        },
        TAG_COMMIT => PgOutputMessage::Commit {
            flags: c.u8("flags")?,
            commit_lsn: c.lsn("commit LSN")?,
            end_lsn: c.lsn("end LSN")?,
            commit_time_micros: c.i64("commit timestamp")?,
        },
        TAG_RELATION => PgOutputMessage::Relation(parse_relation(c)?),
        TAG_TRUNCATE => {
            let count = c.u32("relation count")? as usize;
            let options = c.u8("options")?;
            // Check the count against the payload before allocating for it.
            if count.checked_mul(4).is_none_or(|n| n > c.remaining()) {
                return Err(DecodeError::Truncated {
                    tag,
                    field: "relation ids",
                    offset: c.pos,
                    payload_len: c.buf.len(),
                });
            }
            let mut relation_ids = Vec::with_capacity(count);
            for _ in 0..count {
                relation_ids.push(c.u32("relation id")?);
            }
            PgOutputMessage::Truncate {
                options,
                relation_ids,
            }
        }
        TAG_ORIGIN => PgOutputMessage::Origin {
            commit_lsn: c.lsn("commit LSN")?,
            name: c.string("origin name")?,
        },
        TAG_TYPE => PgOutputMessage::Type {
            oid: c.u32("type oid")?,
            schema: c.string("namespace")?,
            name: c.string("type name")?,
        },
        TAG_MESSAGE => {
            let flags = c.u8("flags")?;
            let lsn = c.lsn("LSN")?;
            let prefix = c.string("prefix")?;
            let len = c.u32("content length")? as usize;
            PgOutputMessage::Message {
                transactional: flags & MESSAGE_FLAG_TRANSACTIONAL != 0,
                lsn,
                prefix,
                content: c.bytes(len, "content")?,
            }
        }
        other => return Err(DecodeError::UnknownTag(other)),
    })
}

fn parse_relation(c: &mut Cursor) -> Result<Relation, DecodeError> {
    let id = c.u32("relation id")?;
    let schema = c.string("namespace")?;
    let name = c.string("relation name")?;
    let identity = c.u8("replica identity")?;
    let Some(replica_identity) = ReplicaIdentity::from_byte(identity) else {
        c.pos -= 1;
        return Err(c.invalid(
            "replica identity",
            format!(
                "'{}' (0x{identity:02x}); expected 'd', 'n', 'f' or 'i'",
                (identity as char).escape_default()
            ),
        ));
    };
    let count = c.u16("column count")? as usize;
    if count * MIN_RELATION_COLUMN_LEN > c.remaining() {
        return Err(DecodeError::Truncated {
            tag: c.tag,
            field: "columns",
            offset: c.pos,
            payload_len: c.buf.len(),
        });
    }
    let mut columns = Vec::with_capacity(count);
    for _ in 0..count {
        let flags = c.u8("column flags")?;
        columns.push(Column {
            name: c.string("column name")?,
            type_oid: c.u32("column type oid")?,
            type_modifier: c.i32("column type modifier")?,
            is_key: flags & COLUMN_FLAG_KEY != 0,
        });
    }
    Ok(Relation {
        id,
        schema,
        name,
        replica_identity,
        columns,
    })
}

/// What the decoder hands on: a relation (re)description, or a whole
/// committed transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodedEvent {
    Relation(Arc<Relation>),
    Transaction(Transaction),
}

/// Relation ids are OIDs from our own Postgres, not attacker-chosen, so
/// SipHash's flooding resistance buys nothing on the per-change lookup. The
/// multiply (FxHash's) spreads small sequential OIDs into the high bits the
/// std map takes its control bytes from.
#[derive(Clone, Copy, Debug, Default)]
struct RelationIdHasher(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for RelationIdHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(FX_SEED);
        }
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(n)).wrapping_mul(FX_SEED);
    }
}

type RelationCache = HashMap<RelationId, Arc<Relation>, BuildHasherDefault<RelationIdHasher>>;

#[derive(Debug)]
struct OpenTransaction {
    xid: Xid,
    final_lsn: Lsn,
    changes: Vec<Change>,
}

/// Turns a stream of pgoutput payloads into relations and committed
/// transactions.
///
/// After any error the open transaction is dropped: the stream is no longer
/// trustworthy, and the caller is expected to reconnect and resume from its
/// last confirmed LSN (the relation cache survives, and Postgres describes
/// every relation again on a new session anyway).
#[derive(Debug)]
pub struct Decoder {
    relations: RelationCache,
    tx: Option<OpenTransaction>,
    max_transaction_changes: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(10_000_000)
    }
}

impl Decoder {
    /// `max_transaction_changes` bounds the changes buffered for one
    /// transaction: the whole transaction is held until its Commit, so without
    /// a bound one huge transaction could exhaust memory.
    pub fn new(max_transaction_changes: usize) -> Decoder {
        Decoder {
            relations: RelationCache::default(),
            tx: None,
            max_transaction_changes,
        }
    }

    pub fn relation(&self, id: RelationId) -> Option<&Arc<Relation>> {
        self.relations.get(&id)
    }

    pub fn in_transaction(&self) -> bool {
        self.tx.is_some()
    }

    /// Decodes one XLogData payload. `Some` for a Relation message and for the
    /// Commit that completes a transaction; `None` for everything else.
    pub fn decode(&mut self, data: Bytes) -> Result<Option<DecodedEvent>, DecodeError> {
        let result = self.apply(data);
        if result.is_err() {
            self.tx = None;
        }
        result
    }

    fn apply(&mut self, data: Bytes) -> Result<Option<DecodedEvent>, DecodeError> {
        let mut c = Cursor::new(data)?;
        // Row changes are nearly every message: decode them straight into a
        // `Change` rather than building a `PgOutputMessage` only to take it
        // apart again.
        match c.tag {
            TAG_INSERT => {
                let (relation_id, new) = c.insert_body()?;
                c.finish()?;
                self.insert(relation_id, new)?;
                Ok(None)
            }
            TAG_UPDATE => {
                let (relation_id, old, new) = c.update_body()?;
                c.finish()?;
                self.update(relation_id, old, new)?;
                Ok(None)
            }
            TAG_DELETE => {
                let (relation_id, old) = c.delete_body()?;
                c.finish()?;
                self.delete(relation_id, old)?;
                Ok(None)
            }
            _ => {
                let message = message_body(&mut c)?;
                c.finish()?;
                self.apply_message(message)
            }
        }
    }

    fn insert(&mut self, relation_id: RelationId, new: Tuple) -> Result<(), DecodeError> {
        let tx = open(&mut self.tx, TAG_INSERT)?;
        let relation = lookup(&self.relations, relation_id, TAG_INSERT)?;
        check_columns(&relation, &new, TAG_INSERT)?;
        push(
            tx,
            self.max_transaction_changes,
            Change::Insert { relation, new },
        )
    }

    fn update(
        &mut self,
        relation_id: RelationId,
        old: Option<(OldTupleKind, Tuple)>,
        mut new: Tuple,
    ) -> Result<(), DecodeError> {
        let tx = open(&mut self.tx, TAG_UPDATE)?;
        let relation = lookup(&self.relations, relation_id, TAG_UPDATE)?;
        check_columns(&relation, &new, TAG_UPDATE)?;
        if let Some((kind, old)) = &old {
            check_columns(&relation, old, TAG_UPDATE)?;
            // Only a FULL old row carries the values an unchanged TOAST
            // column still has; a key-only one has NULLs there.
            if *kind == OldTupleKind::Full {
                fill_unchanged_toast(&mut new, old);
            }
        }
        push(
            tx,
            self.max_transaction_changes,
            Change::Update { relation, old, new },
        )
    }

    fn delete(
        &mut self,
        relation_id: RelationId,
        old: (OldTupleKind, Tuple),
    ) -> Result<(), DecodeError> {
        let tx = open(&mut self.tx, TAG_DELETE)?;
        let relation = lookup(&self.relations, relation_id, TAG_DELETE)?;
        check_columns(&relation, &old.1, TAG_DELETE)?;
        push(
            tx,
            self.max_transaction_changes,
            Change::Delete { relation, old },
        )
    }

    fn apply_message(
        &mut self,
        message: PgOutputMessage,
    ) -> Result<Option<DecodedEvent>, DecodeError> {
        match message {
            // `apply` takes these before they become messages; handled here
            // too so the match needs no unreachable arm.
            PgOutputMessage::Insert { relation_id, new } => self.insert(relation_id, new)?,
            PgOutputMessage::Update {
                relation_id,
                old,
                new,
            } => self.update(relation_id, old, new)?,
            PgOutputMessage::Delete { relation_id, old } => self.delete(relation_id, old)?,
            PgOutputMessage::Truncate {
                options,
                relation_ids,
            } => {
                let tx = open(&mut self.tx, TAG_TRUNCATE)?;
                let relations = relation_ids
                    .into_iter()
                    .map(|id| lookup(&self.relations, id, TAG_TRUNCATE))
                    .collect::<Result<Vec<_>, _>>()?;
                push(
                    tx,
                    self.max_transaction_changes,
                    Change::Truncate {
                        relations,
                        cascade: options & TRUNCATE_CASCADE != 0,
                        restart_identity: options & TRUNCATE_RESTART_IDENTITY != 0,
                    },
                )?;
            }
            PgOutputMessage::Begin {
                final_lsn,
                commit_time_micros: _,
                xid,
            } => {
                if let Some(open) = &self.tx {
                    return Err(DecodeError::NestedBegin {
                        open_xid: open.xid,
                        xid,
                    });
                }
                self.tx = Some(OpenTransaction {
                    xid,
                    final_lsn,
                    changes: Vec::new(),
                });
            }
            PgOutputMessage::Commit {
                flags: _,
                commit_lsn,
                end_lsn,
                commit_time_micros,
            } => {
                let Some(tx) = self.tx.take() else {
                    return Err(DecodeError::NotInTransaction { tag: TAG_COMMIT });
                };
                // Postgres' own apply worker makes the same check: a mismatch
                // means we paired a Commit with the wrong Begin.
                if commit_lsn != tx.final_lsn {
                    return Err(DecodeError::CommitLsnMismatch {
                        xid: tx.xid,
                        begin_final_lsn: tx.final_lsn,
                        commit_lsn,
                    });
                }
                return Ok(Some(DecodedEvent::Transaction(Transaction {
                    xid: tx.xid,
                    commit_lsn,
                    end_lsn,
                    commit_time_micros,
                    changes: tx.changes,
                })));
            }
            PgOutputMessage::Relation(relation) => {
                // Changes already buffered keep the Arc of the description
                // they were sent under; later ones get this one.
                let relation = Arc::new(relation);
                self.relations.insert(relation.id, Arc::clone(&relation));
                return Ok(Some(DecodedEvent::Relation(relation)));
            }
            PgOutputMessage::Type { .. }
            | PgOutputMessage::Origin { .. }
            | PgOutputMessage::Message { .. } => {}
        }
        Ok(None)
    }
}

#[inline]
fn open(tx: &mut Option<OpenTransaction>, tag: u8) -> Result<&mut OpenTransaction, DecodeError> {
    tx.as_mut().ok_or(DecodeError::NotInTransaction { tag })
}

#[inline]
fn lookup(
    relations: &RelationCache,
    relation_id: RelationId,
    tag: u8,
) -> Result<Arc<Relation>, DecodeError> {
    relations
        .get(&relation_id)
        .cloned()
        .ok_or(DecodeError::UnknownRelation { tag, relation_id })
}

#[inline]
fn check_columns(relation: &Relation, tuple: &Tuple, tag: u8) -> Result<(), DecodeError> {
    if tuple.len() == relation.columns.len() {
        return Ok(());
    }
    Err(DecodeError::ColumnCountMismatch {
        tag,
        relation_id: relation.id,
        expected: relation.columns.len(),
        actual: tuple.len(),
    })
}

#[inline]
fn push(tx: &mut OpenTransaction, limit: usize, change: Change) -> Result<(), DecodeError> {
    if tx.changes.len() >= limit {
        return Err(DecodeError::TransactionTooLarge { xid: tx.xid, limit });
    }
    tx.changes.push(change);
    Ok(())
}

fn fill_unchanged_toast(new: &mut Tuple, old: &Tuple) {
    for (new, old) in new.iter_mut().zip(old) {
        if let (Datum::UnchangedToast, Datum::Text(value)) = (&*new, old) {
            *new = Datum::Text(value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds pgoutput payloads byte by byte, independently of the parser.
    #[derive(Default)]
    struct Enc(Vec<u8>);

    impl Enc {
        fn tag(tag: u8) -> Enc {
            Enc(vec![tag])
        }
        fn u8(mut self, v: u8) -> Self {
            self.0.push(v);
            self
        }
        fn u16(mut self, v: u16) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn u32(mut self, v: u32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i32(mut self, v: i32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn u64(mut self, v: u64) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i64(mut self, v: i64) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn str(mut self, s: &str) -> Self {
            self.0.extend_from_slice(s.as_bytes());
            self.0.push(0);
            self
        }
        fn raw(mut self, b: &[u8]) -> Self {
            self.0.extend_from_slice(b);
            self
        }
        fn tuple(mut self, cols: &[Col]) -> Self {
            self = self.u16(cols.len() as u16);
            for col in cols {
                self = match col {
                    Col::N => self.u8(b'n'),
                    Col::U => self.u8(b'u'),
                    Col::T(s) => self.u8(b't').u32(s.len() as u32).raw(s.as_bytes()),
                    Col::B(b) => self.u8(b'b').u32(b.len() as u32).raw(b),
                };
            }
            self
        }
        fn bytes(self) -> Bytes {
            Bytes::from(self.0)
        }
    }

    enum Col<'a> {
        N,
        U,
        T(&'a str),
        B(&'a [u8]),
    }

    fn begin(final_lsn: u64, ts: i64, xid: u32) -> Bytes {
        Enc::tag(b'B').u64(final_lsn).i64(ts).u32(xid).bytes()
    }

    fn commit(commit_lsn: u64, end_lsn: u64, ts: i64) -> Bytes {
        Enc::tag(b'C')
            .u8(0)
            .u64(commit_lsn)
            .u64(end_lsn)
            .i64(ts)
            .bytes()
    }

    /// (flags, name, type oid, typmod)
    fn relation(
        id: u32,
        schema: &str,
        name: &str,
        ident: u8,
        cols: &[(u8, &str, u32, i32)],
    ) -> Bytes {
        let mut e = Enc::tag(b'R')
            .u32(id)
            .str(schema)
            .str(name)
            .u8(ident)
            .u16(cols.len() as u16);
        for &(flags, name, oid, typmod) in cols {
            e = e.u8(flags).str(name).u32(oid).i32(typmod);
        }
        e.bytes()
    }

    fn insert(rel: u32, cols: &[Col]) -> Bytes {
        Enc::tag(b'I').u32(rel).u8(b'N').tuple(cols).bytes()
    }

    fn update(rel: u32, old: Option<(u8, &[Col])>, new: &[Col]) -> Bytes {
        let mut e = Enc::tag(b'U').u32(rel);
        if let Some((marker, cols)) = old {
            e = e.u8(marker).tuple(cols);
        }
        e.u8(b'N').tuple(new).bytes()
    }

    fn delete(rel: u32, marker: u8, old: &[Col]) -> Bytes {
        Enc::tag(b'D').u32(rel).u8(marker).tuple(old).bytes()
    }

    fn truncate(options: u8, ids: &[u32]) -> Bytes {
        let mut e = Enc::tag(b'T').u32(ids.len() as u32).u8(options);
        for &id in ids {
            e = e.u32(id);
        }
        e.bytes()
    }

    fn text(s: &str) -> Datum {
        Datum::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    /// A two-column table `public.items (id int4 key, body text)`.
    fn items(id: u32) -> Bytes {
        relation(
            id,
            "public",
            "items",
            b'd',
            &[(1, "id", 23, -1), (0, "body", 25, -1)],
        )
    }

    fn decoder_with_items() -> Decoder {
        let mut d = Decoder::default();
        d.decode(items(16384)).unwrap();
        d
    }

    fn decode_tx(d: &mut Decoder, msgs: Vec<Bytes>) -> Transaction {
        let mut last = None;
        for m in msgs {
            last = d.decode(m).unwrap();
        }
        match last {
            Some(DecodedEvent::Transaction(tx)) => tx,
            other => panic!("expected a transaction, got {other:?}"),
        }
    }

    #[test]
    fn parses_begin() {
        let msg = parse(begin(0x1_0000_00AB, 747_000_000_123, 4242)).unwrap();
        assert_eq!(
            msg,
            PgOutputMessage::Begin {
                final_lsn: Lsn(0x1_0000_00AB),
                commit_time_micros: 747_000_000_123,
                xid: 4242,
            }
        );
    }

    #[test]
    fn parses_commit() {
        let payload = Enc::tag(b'C')
            .u8(0)
            .u64(0x16B3748)
            .u64(0x16B3780)
            .i64(-5)
            .bytes();
        assert_eq!(
            parse(payload).unwrap(),
            PgOutputMessage::Commit {
                flags: 0,
                commit_lsn: Lsn(0x16B3748),
                end_lsn: Lsn(0x16B3780),
                commit_time_micros: -5,
            }
        );
    }

    #[test]
    fn parses_origin() {
        let payload = Enc::tag(b'O').u64(77).str("pg_16399").bytes();
        assert_eq!(
            parse(payload).unwrap(),
            PgOutputMessage::Origin {
                commit_lsn: Lsn(77),
                name: "pg_16399".to_string(),
            }
        );
    }

    #[test]
    fn parses_relation() {
        let payload = relation(
            16384,
            "",
            "tbl",
            b'f',
            &[(1, "id", 23, -1), (0, "name", 1043, 68), (3, "k2", 20, -1)],
        );
        let msg = parse(payload).unwrap();
        assert_eq!(
            msg,
            PgOutputMessage::Relation(Relation {
                id: 16384,
                schema: String::new(),
                name: "tbl".to_string(),
                replica_identity: ReplicaIdentity::Full,
                columns: vec![
                    Column {
                        name: "id".into(),
                        type_oid: 23,
                        type_modifier: -1,
                        is_key: true
                    },
                    Column {
                        name: "name".into(),
                        type_oid: 1043,
                        type_modifier: 68,
                        is_key: false
                    },
                    Column {
                        name: "k2".into(),
                        type_oid: 20,
                        type_modifier: -1,
                        is_key: true
                    },
                ],
            })
        );
        for (byte, identity) in [
            (b'd', ReplicaIdentity::Default),
            (b'n', ReplicaIdentity::Nothing),
            (b'i', ReplicaIdentity::Index),
        ] {
            match parse(relation(1, "s", "t", byte, &[])).unwrap() {
                PgOutputMessage::Relation(r) => {
                    assert_eq!(r.replica_identity, identity);
                    assert!(r.columns.is_empty());
                }
                other => panic!("expected a relation, got {other:?}"),
            }
        }
    }

    #[test]
    fn rejects_bad_replica_identity_and_utf8() {
        let err = parse(relation(1, "s", "t", b'x', &[])).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Invalid {
                    tag: b'R',
                    field: "replica identity",
                    ..
                }
            ),
            "{err:?}"
        );
        let payload = Enc::tag(b'R')
            .u32(1)
            .raw(&[0xff, 0xfe, 0])
            .str("t")
            .u8(b'd')
            .u16(0)
            .bytes();
        let err = parse(payload).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Invalid {
                    field: "namespace",
                    offset: 5,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn rejects_relation_column_count_larger_than_payload() {
        let payload = Enc::tag(b'R')
            .u32(1)
            .str("s")
            .str("t")
            .u8(b'd')
            .u16(u16::MAX)
            .bytes();
        let err = parse(payload).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Truncated {
                    field: "columns",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn parses_type() {
        let payload = Enc::tag(b'Y').u32(90210).str("public").str("mood").bytes();
        assert_eq!(
            parse(payload).unwrap(),
            PgOutputMessage::Type {
                oid: 90210,
                schema: "public".into(),
                name: "mood".into()
            }
        );
    }

    #[test]
    fn parses_insert_with_every_column_kind() {
        let payload = insert(
            16384,
            &[
                Col::T("42"),
                Col::N,
                Col::U,
                Col::T(""),
                Col::B(b"\x00\x01"),
                Col::T("héllo"),
            ],
        );
        assert_eq!(
            parse(payload).unwrap(),
            PgOutputMessage::Insert {
                relation_id: 16384,
                new: vec![
                    text("42"),
                    Datum::Null,
                    Datum::UnchangedToast,
                    text(""),
                    Datum::Text(Bytes::from_static(b"\x00\x01")),
                    text("héllo"),
                ],
            }
        );
    }

    #[test]
    fn datum_values_share_the_payload_buffer() {
        let payload = insert(1, &[Col::T("abcdef"), Col::T("xyz")]);
        let range = payload.as_ptr() as usize..payload.as_ptr() as usize + payload.len();
        let PgOutputMessage::Insert { new, .. } = parse(payload.clone()).unwrap() else {
            panic!("expected an insert");
        };
        assert_eq!(new.len(), 2);
        for datum in &new {
            let Datum::Text(b) = datum else {
                panic!("expected text, got {datum:?}");
            };
            let start = b.as_ptr() as usize;
            assert!(
                range.contains(&start),
                "datum was copied out of the payload"
            );
            assert!(start + b.len() <= range.end);
        }
        assert_eq!(new[0].as_str(), Some("abcdef"));
        assert_eq!(new[1].as_str(), Some("xyz"));
    }

    #[test]
    fn parses_update_without_old_tuple() {
        let payload = update(7, None, &[Col::T("1"), Col::U]);
        assert_eq!(
            parse(payload).unwrap(),
            PgOutputMessage::Update {
                relation_id: 7,
                old: None,
                new: vec![text("1"), Datum::UnchangedToast],
            }
        );
    }

    #[test]
    fn parses_update_with_key_and_full_old_tuples() {
        let payload = update(
            7,
            Some((b'K', &[Col::T("1"), Col::N])),
            &[Col::T("2"), Col::T("b")],
        );
        assert_eq!(
            parse(payload).unwrap(),
            PgOutputMessage::Update {
                relation_id: 7,
                old: Some((OldTupleKind::Key, vec![text("1"), Datum::Null])),
                new: vec![text("2"), text("b")],
            }
        );
        let payload = update(
            7,
            Some((b'O', &[Col::T("1"), Col::T("a")])),
            &[Col::T("1"), Col::U],
        );
        assert_eq!(
            parse(payload).unwrap(),
            PgOutputMessage::Update {
                relation_id: 7,
                old: Some((OldTupleKind::Full, vec![text("1"), text("a")])),
                new: vec![text("1"), Datum::UnchangedToast],
            }
        );
    }

    #[test]
    fn rejects_bad_tuple_markers() {
        let payload = update(7, Some((b'X', &[Col::T("1")])), &[Col::T("1")]);
        let err = parse(payload).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Invalid {
                    tag: b'U',
                    field: "old tuple marker",
                    offset: 5,
                    ..
                }
            ),
            "{err:?}"
        );
        // An old tuple must be followed by 'N', not another old tuple.
        let payload = Enc::tag(b'U')
            .u32(7)
            .u8(b'K')
            .tuple(&[Col::T("1")])
            .u8(b'K')
            .tuple(&[Col::T("1")])
            .bytes();
        let err = parse(payload).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Invalid {
                    field: "new tuple marker",
                    ..
                }
            ),
            "{err:?}"
        );
        let payload = Enc::tag(b'I').u32(7).u8(b'O').tuple(&[Col::N]).bytes();
        let err = parse(payload).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Invalid {
                    tag: b'I',
                    field: "new tuple marker",
                    ..
                }
            ),
            "{err:?}"
        );
        let payload = delete(7, b'N', &[Col::N]);
        assert!(matches!(
            parse(payload).unwrap_err(),
            DecodeError::Invalid {
                tag: b'D',
                field: "old tuple marker",
                ..
            }
        ));
    }

    #[test]
    fn parses_delete_with_key_and_full_old_tuples() {
        assert_eq!(
            parse(delete(9, b'K', &[Col::T("5"), Col::N])).unwrap(),
            PgOutputMessage::Delete {
                relation_id: 9,
                old: (OldTupleKind::Key, vec![text("5"), Datum::Null]),
            }
        );
        assert_eq!(
            parse(delete(9, b'O', &[Col::T("5"), Col::T("x")])).unwrap(),
            PgOutputMessage::Delete {
                relation_id: 9,
                old: (OldTupleKind::Full, vec![text("5"), text("x")]),
            }
        );
    }

    #[test]
    fn parses_truncate_with_options() {
        for options in [0u8, 1, 2, 3] {
            assert_eq!(
                parse(truncate(options, &[16384, 16390])).unwrap(),
                PgOutputMessage::Truncate {
                    options,
                    relation_ids: vec![16384, 16390],
                }
            );
        }
        let too_many = Enc::tag(b'T').u32(u32::MAX).u8(0).u32(1).bytes();
        assert!(matches!(
            parse(too_many).unwrap_err(),
            DecodeError::Truncated {
                tag: b'T',
                field: "relation ids",
                ..
            }
        ));
    }

    #[test]
    fn parses_logical_message() {
        let payload = Enc::tag(b'M')
            .u8(1)
            .u64(0xABCDEF)
            .str("app")
            .u32(3)
            .raw(b"\x00hi")
            .bytes();
        assert_eq!(
            parse(payload).unwrap(),
            PgOutputMessage::Message {
                transactional: true,
                lsn: Lsn(0xABCDEF),
                prefix: "app".into(),
                content: Bytes::from_static(b"\x00hi"),
            }
        );
        let payload = Enc::tag(b'M').u8(0).u64(1).str("").u32(0).bytes();
        assert_eq!(
            parse(payload).unwrap(),
            PgOutputMessage::Message {
                transactional: false,
                lsn: Lsn(1),
                prefix: String::new(),
                content: Bytes::new(),
            }
        );
    }

    #[test]
    fn rejects_empty_unknown_tag_and_trailing_bytes() {
        assert_eq!(parse(Bytes::new()).unwrap_err(), DecodeError::Empty);
        // 'S' is protocol version 2's Stream Start.
        let err = parse(Bytes::from_static(b"S\x00\x00\x00\x01\x01")).unwrap_err();
        assert_eq!(err, DecodeError::UnknownTag(b'S'));
        assert!(err.to_string().contains("'S'"), "{err}");
        let mut payload = begin(1, 2, 3).to_vec();
        payload.push(0);
        assert_eq!(
            parse(Bytes::from(payload)).unwrap_err(),
            DecodeError::TrailingBytes {
                tag: b'B',
                count: 1
            }
        );
    }

    #[test]
    fn rejects_unknown_column_kind() {
        let payload = Enc::tag(b'I')
            .u32(1)
            .u8(b'N')
            .u16(2)
            .u8(b'n')
            .u8(b'x')
            .bytes();
        let err = parse(payload).unwrap_err();
        assert_eq!(
            err,
            DecodeError::Invalid {
                tag: b'I',
                field: "new tuple column kind",
                offset: 9,
                detail: "column 1 has kind 'x' (0x78); expected 'n', 'u', 't' or 'b'".into(),
            }
        );
    }

    #[test]
    fn every_truncation_of_an_insert_is_an_error() {
        let payload = insert(
            16384,
            &[Col::T("42"), Col::N, Col::U, Col::T("hello world")],
        );
        assert!(parse(payload.clone()).is_ok());
        for cut in 0..payload.len() {
            let result = parse(payload.slice(..cut));
            assert!(result.is_err(), "prefix of {cut} bytes parsed: {result:?}");
        }
        // The same through the decoder, inside a transaction.
        for cut in 0..payload.len() {
            let mut d = decoder_with_items();
            d.decode(begin(1, 1, 1)).unwrap();
            assert!(d.decode(payload.slice(..cut)).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn every_truncation_of_every_message_kind_is_an_error() {
        let payloads = [
            begin(1, 2, 3),
            commit(1, 2, 3),
            Enc::tag(b'O').u64(1).str("o").bytes(),
            items(5),
            Enc::tag(b'Y').u32(1).str("s").str("t").bytes(),
            update(
                1,
                Some((b'O', &[Col::T("a"), Col::U])),
                &[Col::N, Col::T("b")],
            ),
            delete(1, b'K', &[Col::T("a"), Col::N]),
            truncate(3, &[1, 2]),
            Enc::tag(b'M')
                .u8(1)
                .u64(1)
                .str("p")
                .u32(2)
                .raw(b"ab")
                .bytes(),
        ];
        for payload in payloads {
            assert!(parse(payload.clone()).is_ok(), "{payload:?}");
            for cut in 0..payload.len() {
                let err = parse(payload.slice(..cut)).unwrap_err();
                if cut > 0 {
                    assert!(
                        matches!(err, DecodeError::Truncated { tag, .. } if tag == payload[0]),
                        "cut {cut} of {payload:?}: {err:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn truncation_error_names_the_message_and_field() {
        let payload = insert(1, &[Col::T("hello")]);
        let err = parse(payload.slice(..payload.len() - 1)).unwrap_err();
        assert_eq!(
            err,
            DecodeError::Truncated {
                tag: b'I',
                field: "new tuple column value",
                offset: 13,
                payload_len: 17,
            }
        );
        let text = err.to_string();
        assert!(text.contains("Insert ('I')"), "{text}");
        assert!(text.contains("new tuple column value"), "{text}");
    }

    #[test]
    fn mutated_payloads_never_panic() {
        let seeds = [
            insert(16384, &[Col::T("42"), Col::N, Col::U]),
            update(
                16384,
                Some((b'O', &[Col::T("1"), Col::T("a")])),
                &[Col::T("1"), Col::U],
            ),
            items(16384),
            truncate(1, &[16384]),
            Enc::tag(b'M')
                .u8(1)
                .u64(1)
                .str("p")
                .u32(2)
                .raw(b"ab")
                .bytes(),
        ];
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut errors = 0;
        for seed in &seeds {
            for _ in 0..2000 {
                let mut bytes = seed.to_vec();
                let flips = 1 + next() % 3;
                for _ in 0..flips {
                    let i = (next() % bytes.len() as u64) as usize;
                    bytes[i] = next() as u8;
                }
                let mut d = decoder_with_items();
                d.decode(begin(1, 1, 1)).unwrap();
                if d.decode(Bytes::from(bytes)).is_err() {
                    errors += 1;
                }
            }
        }
        // Sanity: the mutations do reach the error paths.
        assert!(
            errors > 1000,
            "only {errors} mutated payloads were rejected"
        );
    }

    #[test]
    fn decodes_a_transaction() {
        let mut d = Decoder::default();
        let rel = match d.decode(items(16384)).unwrap() {
            Some(DecodedEvent::Relation(rel)) => rel,
            other => panic!("expected a relation, got {other:?}"),
        };
        assert_eq!(rel.name, "items");
        assert!(Arc::ptr_eq(d.relation(16384).unwrap(), &rel));
        assert!(d.relation(1).is_none());
        assert!(!d.in_transaction());

        assert_eq!(d.decode(begin(0x500, 111, 77)).unwrap(), None);
        assert!(d.in_transaction());
        let steps = [
            insert(16384, &[Col::T("1"), Col::T("a")]),
            update(16384, None, &[Col::T("1"), Col::N]),
            delete(16384, b'K', &[Col::T("1"), Col::N]),
            truncate(TRUNCATE_CASCADE, &[16384]),
            truncate(TRUNCATE_RESTART_IDENTITY, &[16384]),
        ];
        for step in steps {
            assert_eq!(d.decode(step).unwrap(), None);
        }
        let tx = match d.decode(commit(0x500, 0x530, 222)).unwrap() {
            Some(DecodedEvent::Transaction(tx)) => tx,
            other => panic!("expected a transaction, got {other:?}"),
        };
        assert!(!d.in_transaction());
        assert_eq!(
            tx,
            Transaction {
                xid: 77,
                commit_lsn: Lsn(0x500),
                end_lsn: Lsn(0x530),
                commit_time_micros: 222,
                changes: vec![
                    Change::Insert {
                        relation: rel.clone(),
                        new: vec![text("1"), text("a")],
                    },
                    Change::Update {
                        relation: rel.clone(),
                        old: None,
                        new: vec![text("1"), Datum::Null],
                    },
                    Change::Delete {
                        relation: rel.clone(),
                        old: (OldTupleKind::Key, vec![text("1"), Datum::Null]),
                    },
                    Change::Truncate {
                        relations: vec![rel.clone()],
                        cascade: true,
                        restart_identity: false,
                    },
                    Change::Truncate {
                        relations: vec![rel.clone()],
                        cascade: false,
                        restart_identity: true,
                    },
                ],
            }
        );
        assert!(tx.changes[..3]
            .iter()
            .all(|c| matches!(c, Change::Insert { relation, .. } | Change::Update { relation, .. } | Change::Delete { relation, .. } if Arc::ptr_eq(relation, &rel))));
    }

    #[test]
    fn truncate_of_several_relations_keeps_their_order() {
        let mut d = decoder_with_items();
        d.decode(relation(20000, "s", "other", b'd', &[(1, "k", 23, -1)]))
            .unwrap();
        let tx = decode_tx(
            &mut d,
            vec![
                begin(9, 0, 1),
                truncate(3, &[20000, 16384]),
                commit(9, 10, 0),
            ],
        );
        match &tx.changes[..] {
            [Change::Truncate {
                relations,
                cascade: true,
                restart_identity: true,
            }] => {
                let ids: Vec<_> = relations.iter().map(|r| r.id).collect();
                assert_eq!(ids, vec![20000, 16384]);
            }
            other => panic!("unexpected changes {other:?}"),
        }
    }

    #[test]
    fn empty_transaction_commits() {
        let mut d = Decoder::new(0);
        let tx = decode_tx(&mut d, vec![begin(5, 1, 2), commit(5, 6, 3)]);
        assert_eq!(
            tx,
            Transaction {
                xid: 2,
                commit_lsn: Lsn(5),
                end_lsn: Lsn(6),
                commit_time_micros: 3,
                changes: vec![],
            }
        );
    }

    #[test]
    fn relation_mid_transaction_updates_cache_and_keeps_transaction_open() {
        let mut d = decoder_with_items();
        let old_rel = d.relation(16384).unwrap().clone();
        d.decode(begin(0x900, 0, 5)).unwrap();
        d.decode(insert(16384, &[Col::T("1"), Col::T("a")]))
            .unwrap();
        // The table gains a column mid-transaction.
        let event = d
            .decode(relation(
                16384,
                "public",
                "items",
                b'f',
                &[(1, "id", 23, -1), (0, "body", 25, -1), (0, "n", 20, -1)],
            ))
            .unwrap();
        let new_rel = match event {
            Some(DecodedEvent::Relation(r)) => r,
            other => panic!("expected a relation, got {other:?}"),
        };
        assert!(d.in_transaction());
        assert_eq!(new_rel.columns.len(), 3);
        assert!(Arc::ptr_eq(d.relation(16384).unwrap(), &new_rel));
        // A tuple shaped for the old description no longer fits.
        let err = d
            .decode(insert(16384, &[Col::T("2"), Col::T("b")]))
            .unwrap_err();
        assert_eq!(
            err,
            DecodeError::ColumnCountMismatch {
                tag: b'I',
                relation_id: 16384,
                expected: 3,
                actual: 2,
            }
        );
        // The error dropped the transaction; replay it as Postgres would.
        assert!(!d.in_transaction());
        d.decode(begin(0x900, 0, 5)).unwrap();
        d.decode(items(16384)).unwrap();
        let old_rel2 = d.relation(16384).unwrap().clone();
        d.decode(insert(16384, &[Col::T("1"), Col::T("a")]))
            .unwrap();
        d.decode(new_rel_message()).unwrap();
        d.decode(insert(16384, &[Col::T("2"), Col::T("b"), Col::N]))
            .unwrap();
        assert!(d.in_transaction());
        let tx = match d.decode(commit(0x900, 0x950, 1)).unwrap() {
            Some(DecodedEvent::Transaction(tx)) => tx,
            other => panic!("expected a transaction, got {other:?}"),
        };
        assert_eq!(tx.changes.len(), 2);
        match (&tx.changes[0], &tx.changes[1]) {
            (
                Change::Insert {
                    relation: a,
                    new: na,
                },
                Change::Insert {
                    relation: b,
                    new: nb,
                },
            ) => {
                assert!(Arc::ptr_eq(a, &old_rel2));
                assert_eq!(a.columns.len(), 2);
                assert_eq!(na.len(), 2);
                assert_eq!(b.columns.len(), 3);
                assert_eq!(b.replica_identity, ReplicaIdentity::Full);
                assert_eq!(nb, &vec![text("2"), text("b"), Datum::Null]);
            }
            other => panic!("unexpected changes {other:?}"),
        }
        assert_eq!(*old_rel, *old_rel2);
    }

    fn new_rel_message() -> Bytes {
        relation(
            16384,
            "public",
            "items",
            b'f',
            &[(1, "id", 23, -1), (0, "body", 25, -1), (0, "n", 20, -1)],
        )
    }

    #[test]
    fn full_old_tuple_fills_unchanged_toast() {
        let mut d = decoder_with_items();
        let tx = decode_tx(
            &mut d,
            vec![
                begin(1, 0, 1),
                update(
                    16384,
                    Some((b'O', &[Col::T("1"), Col::T("big toasted text")])),
                    &[Col::T("1"), Col::U],
                ),
                commit(1, 2, 0),
            ],
        );
        match &tx.changes[..] {
            [Change::Update { old, new, .. }] => {
                assert_eq!(new, &vec![text("1"), text("big toasted text")]);
                assert_eq!(
                    old,
                    &Some((
                        OldTupleKind::Full,
                        vec![text("1"), text("big toasted text")]
                    ))
                );
            }
            other => panic!("unexpected changes {other:?}"),
        }
    }

    #[test]
    fn full_old_tuple_without_text_leaves_unchanged_toast() {
        // The old row's value is itself unchanged TOAST or NULL: nothing to fill.
        let mut d = decoder_with_items();
        let tx = decode_tx(
            &mut d,
            vec![
                begin(1, 0, 1),
                update(
                    16384,
                    Some((b'O', &[Col::T("1"), Col::U])),
                    &[Col::T("1"), Col::U],
                ),
                update(
                    16384,
                    Some((b'O', &[Col::T("1"), Col::N])),
                    &[Col::T("1"), Col::U],
                ),
                commit(1, 2, 0),
            ],
        );
        for change in &tx.changes {
            let Change::Update { new, .. } = change else {
                panic!("expected an update, got {change:?}");
            };
            assert_eq!(new, &vec![text("1"), Datum::UnchangedToast]);
        }
        assert_eq!(tx.changes.len(), 2);
    }

    #[test]
    fn key_old_tuple_or_none_leaves_unchanged_toast() {
        let mut d = decoder_with_items();
        let tx = decode_tx(
            &mut d,
            vec![
                begin(1, 0, 1),
                // A key-only old row carries NULL for the toasted column, but
                // a (bogus) text value there must not be used either.
                update(
                    16384,
                    Some((b'K', &[Col::T("0"), Col::T("stale")])),
                    &[Col::T("1"), Col::U],
                ),
                update(16384, None, &[Col::T("1"), Col::U]),
                commit(1, 2, 0),
            ],
        );
        assert_eq!(tx.changes.len(), 2);
        for change in &tx.changes {
            let Change::Update { new, .. } = change else {
                panic!("expected an update, got {change:?}");
            };
            assert_eq!(new, &vec![text("1"), Datum::UnchangedToast]);
        }
        match &tx.changes[0] {
            Change::Update {
                old: Some((kind, old)),
                ..
            } => {
                assert_eq!(*kind, OldTupleKind::Key);
                assert_eq!(old, &vec![text("0"), text("stale")]);
            }
            other => panic!("unexpected change {other:?}"),
        }
    }

    #[test]
    fn full_old_delete_is_kept() {
        let mut d = decoder_with_items();
        let tx = decode_tx(
            &mut d,
            vec![
                begin(1, 0, 1),
                delete(16384, b'O', &[Col::T("1"), Col::T("body")]),
                commit(1, 2, 0),
            ],
        );
        match &tx.changes[..] {
            [Change::Delete { old, relation }] => {
                assert_eq!(relation.id, 16384);
                assert_eq!(old, &(OldTupleKind::Full, vec![text("1"), text("body")]));
            }
            other => panic!("unexpected changes {other:?}"),
        }
    }

    #[test]
    fn changes_and_commit_outside_a_transaction_are_errors() {
        let mut d = decoder_with_items();
        let cases = [
            (insert(16384, &[Col::T("1"), Col::N]), b'I'),
            (update(16384, None, &[Col::T("1"), Col::N]), b'U'),
            (delete(16384, b'K', &[Col::T("1"), Col::N]), b'D'),
            (truncate(0, &[16384]), b'T'),
            (commit(1, 2, 3), b'C'),
        ];
        for (payload, tag) in cases {
            let err = d.decode(payload).unwrap_err();
            assert_eq!(err, DecodeError::NotInTransaction { tag });
            assert!(err.to_string().contains("outside a transaction"), "{err}");
        }
    }

    #[test]
    fn begin_inside_a_transaction_is_an_error() {
        let mut d = Decoder::default();
        d.decode(begin(1, 0, 10)).unwrap();
        assert_eq!(
            d.decode(begin(2, 0, 11)).unwrap_err(),
            DecodeError::NestedBegin {
                open_xid: 10,
                xid: 11
            }
        );
        assert!(!d.in_transaction());
    }

    #[test]
    fn unknown_relation_is_an_error() {
        let mut d = decoder_with_items();
        d.decode(begin(1, 0, 1)).unwrap();
        let err = d.decode(insert(999, &[Col::T("1"), Col::N])).unwrap_err();
        assert_eq!(
            err,
            DecodeError::UnknownRelation {
                tag: b'I',
                relation_id: 999
            }
        );
        assert!(err.to_string().contains("999"), "{err}");
        d.decode(begin(1, 0, 1)).unwrap();
        assert_eq!(
            d.decode(truncate(0, &[16384, 999])).unwrap_err(),
            DecodeError::UnknownRelation {
                tag: b'T',
                relation_id: 999
            }
        );
        d.decode(begin(1, 0, 1)).unwrap();
        assert_eq!(
            d.decode(delete(998, b'K', &[Col::N])).unwrap_err(),
            DecodeError::UnknownRelation {
                tag: b'D',
                relation_id: 998
            }
        );
    }

    #[test]
    fn column_count_mismatch_is_an_error() {
        let mut d = decoder_with_items();
        d.decode(begin(1, 0, 1)).unwrap();
        // The old tuple is checked too, not just the new one.
        let err = d
            .decode(update(
                16384,
                Some((b'O', &[Col::T("1")])),
                &[Col::T("1"), Col::N],
            ))
            .unwrap_err();
        assert_eq!(
            err,
            DecodeError::ColumnCountMismatch {
                tag: b'U',
                relation_id: 16384,
                expected: 2,
                actual: 1
            }
        );
        d.decode(begin(1, 0, 1)).unwrap();
        assert!(matches!(
            d.decode(delete(16384, b'K', &[Col::T("1"), Col::N, Col::N]))
                .unwrap_err(),
            DecodeError::ColumnCountMismatch {
                tag: b'D',
                actual: 3,
                ..
            }
        ));
    }

    #[test]
    fn commit_lsn_must_match_begin() {
        let mut d = Decoder::default();
        d.decode(begin(100, 0, 1)).unwrap();
        assert_eq!(
            d.decode(commit(101, 120, 0)).unwrap_err(),
            DecodeError::CommitLsnMismatch {
                xid: 1,
                begin_final_lsn: Lsn(100),
                commit_lsn: Lsn(101)
            }
        );
        assert!(!d.in_transaction());
    }

    #[test]
    fn transaction_change_limit() {
        let mut d = Decoder::new(2);
        d.decode(items(16384)).unwrap();
        d.decode(begin(1, 0, 3)).unwrap();
        d.decode(insert(16384, &[Col::T("1"), Col::N])).unwrap();
        d.decode(truncate(0, &[16384])).unwrap();
        let err = d.decode(insert(16384, &[Col::T("2"), Col::N])).unwrap_err();
        assert_eq!(err, DecodeError::TransactionTooLarge { xid: 3, limit: 2 });
        assert!(!d.in_transaction());
        // Exactly at the limit is fine.
        let tx = decode_tx(
            &mut d,
            vec![
                begin(1, 0, 4),
                insert(16384, &[Col::T("1"), Col::N]),
                insert(16384, &[Col::T("2"), Col::N]),
                commit(1, 2, 0),
            ],
        );
        assert_eq!(tx.changes.len(), 2);
        assert_eq!(Decoder::default().max_transaction_changes, 10_000_000);
    }

    #[test]
    fn type_origin_and_message_are_consumed() {
        let mut d = decoder_with_items();
        let typ = Enc::tag(b'Y').u32(1).str("s").str("t").bytes();
        let origin = Enc::tag(b'O').u64(1).str("o").bytes();
        let tx_msg = Enc::tag(b'M')
            .u8(1)
            .u64(1)
            .str("p")
            .u32(1)
            .raw(b"x")
            .bytes();
        let plain_msg = Enc::tag(b'M')
            .u8(0)
            .u64(1)
            .str("p")
            .u32(1)
            .raw(b"x")
            .bytes();
        assert_eq!(d.decode(typ.clone()).unwrap(), None);
        assert_eq!(d.decode(plain_msg.clone()).unwrap(), None);
        assert!(!d.in_transaction());
        let tx = decode_tx(
            &mut d,
            vec![
                begin(1, 0, 1),
                origin,
                typ,
                tx_msg,
                plain_msg,
                insert(16384, &[Col::T("1"), Col::N]),
                commit(1, 2, 0),
            ],
        );
        assert_eq!(tx.changes.len(), 1);
        assert!(matches!(tx.changes[0], Change::Insert { .. }));
    }

    #[test]
    fn errors_display_the_message_kind() {
        let cases: Vec<(DecodeError, &str)> = vec![
            (DecodeError::Empty, "empty"),
            (DecodeError::UnknownTag(0), "0x00"),
            (
                DecodeError::TrailingBytes {
                    tag: b'C',
                    count: 2,
                },
                "Commit ('C')",
            ),
            (
                DecodeError::NestedBegin {
                    open_xid: 1,
                    xid: 2,
                },
                "transaction 1 is still open",
            ),
            (
                DecodeError::CommitLsnMismatch {
                    xid: 1,
                    begin_final_lsn: Lsn(0x16B3748),
                    commit_lsn: Lsn(1),
                },
                "0/16B3748",
            ),
            (
                DecodeError::TransactionTooLarge { xid: 1, limit: 5 },
                "more than 5 changes",
            ),
            (
                DecodeError::ColumnCountMismatch {
                    tag: b'U',
                    relation_id: 7,
                    expected: 2,
                    actual: 3,
                },
                "Update ('U') message for relation 7 has a tuple of 3",
            ),
        ];
        for (err, needle) in cases {
            let text = err.to_string();
            assert!(text.contains(needle), "{text:?} lacks {needle:?}");
        }
        let boxed: Box<dyn std::error::Error> = Box::new(DecodeError::Empty);
        assert!(boxed.source().is_none());
    }
}
