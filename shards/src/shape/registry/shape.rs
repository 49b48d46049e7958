//! A built shape: its spec, its state (log, snapshot gate, held
//! transactions) and how a transaction is applied to it.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use crate::change::{Change, Relation, RelationId, Transaction};
use crate::lsn::Lsn;
use crate::notify::{Listener, Notify};
use crate::storage::meta::{LogRecord, ShapeRecord};
use crate::storage::record::{self, Kind};

use crate::shape::convert::Converter;
use crate::shape::definition::{definition_hash, ShapeDefinition, ShapeHandle};
use crate::shape::encode::{self, Layout, OpenEntry, PgSnapshot, TxContext};
use crate::shape::log::{Captured, LogRead, ShapeLog};
use crate::shape::offset::LogOffset;
use crate::shape::relation_index::{table_fingerprint, RelationColumns};
use crate::shape::schema::TableSchema;

use super::subquery::{MoveInJob, SubquerySpec, SubqueryState};
use super::Cold;

/// A shard-local shape number; never reused within a run.
pub type ShapeId = u64;

/// A shape's row predicate (its where clause), evaluated on text values.
pub trait RowFilter {
    /// `value(i)`: table column `i` as Postgres text, None for NULL.
    fn matches<'v>(&self, value: &dyn Fn(usize) -> Option<&'v str>) -> bool;
    /// `(column, values)` when a row can only match if that column's text is
    /// one of `values`: lets the registry index the shape.
    fn index_key(&self) -> Option<(usize, Vec<String>)>;
}

/// What a shape is, fixed at creation.
pub struct ShapeSpec {
    pub handle: ShapeHandle,
    pub definition: ShapeDefinition,
    /// `definition.canonical()`, kept for the by-definition map.
    pub canonical: String,
    pub schema: TableSchema,
    /// Table column indices sent to clients, in output order.
    pub selected: Vec<usize>,
    /// Table column indices of the row key.
    pub key: Vec<usize>,
    pub filter: Option<Box<dyn RowFilter>>,
    /// The `electric-schema` header value.
    pub schema_header: String,
    /// The creation record written to the segment log (opaque here: the
    /// edge that builds shapes also reads it back on recovery).
    pub persisted: Vec<u8>,
    /// For a where clause with subqueries: its dependencies and the moves'
    /// settings (`filter` then only indexes the shape: membership is the
    /// clause evaluated against the shape's views).
    pub subqueries: Option<Box<SubquerySpec>>,
}

/// Transactions a shape holds while its snapshot's visibility is unknown
/// (normally a few milliseconds' worth). Past it the snapshot is stuck and
/// the shape is dropped: its clients re-sync rather than memory grow.
pub const MAX_HELD_TRANSACTIONS: usize = 10_000;

/// Snapshot row bytes journaled per shape (see `Shape::push_snapshot_row`).
pub const SNAPSHOT_JOURNAL_BYTES: usize = 1 << 20;

/// Whether a shape takes a transaction yet.
pub(super) enum Gate {
    /// The snapshot's visibility is not known yet: hold transactions.
    Pending(Held),
    /// Drop transactions the snapshot already saw, until the first one
    /// that started after it.
    Filtering(PgSnapshot),
    Open,
}

/// Transactions held for a shape whose snapshot has not started, and
/// their size: they count against the shard's memory budget like its log
/// tail (a transaction held by several shapes counts once per shape).
#[derive(Default)]
pub(super) struct Held {
    pub(super) txs: Vec<Arc<Transaction>>,
    pub(super) bytes: usize,
}

pub(super) struct ShapeState {
    pub(super) log: ShapeLog,
    /// The `snapshot-end` message once the snapshot completed.
    pub(super) snapshot_end: Option<Vec<u8>>,
    pub(super) gate: Gate,
    pub(super) gone: bool,
    /// Commit LSN of the newest transaction applied: replays are skipped.
    pub(super) last_lsn: Lsn,
    /// The relation description last checked against `spec.schema`.
    pub(super) relation: Option<Arc<Relation>>,
    /// A subquery shape's views and moves.
    pub(super) subquery: Option<SubqueryState>,
}

/// Records for the shard's segment log, framed, waiting for the next group
/// commit. Shared by the registry and its shapes (one executor).
pub type Journal = Rc<RefCell<Vec<u8>>>;

/// Shapes whose metadata record must be rewritten at the next tick.
pub(super) type MetaDirty = Rc<RefCell<HashSet<ShapeId>>>;

/// Subquery shapes with log items journaled since the last tick took the
/// journal: served once that tick's flush made them durable.
pub(super) type Unpublished = Rc<RefCell<HashSet<ShapeId>>>;

pub struct Shape {
    pub id: ShapeId,
    pub spec: ShapeSpec,
    pub(super) journal: Journal,
    pub(super) meta_dirty: MetaDirty,
    pub(super) unpublished: Unpublished,
    /// When it was last read, on the server-wide read clock (for LRU).
    pub(super) read_stamp: Cell<u64>,
    /// The registry's checkpoint epoch when it was last used (unloading).
    pub(super) active: Cell<u64>,
    /// Milliseconds since the Unix epoch.
    pub(super) created_ms: u64,
    pub(super) column_names: Vec<String>,
    pub(super) state: RefCell<ShapeState>,
    pub(super) changed: Rc<Notify>,
    /// The shard's total of memory tails, and this shape's part of it.
    pub(super) memory: Rc<Cell<usize>>,
    pub(super) counted: Cell<usize>,
    /// Snapshot row bytes journaled so far.
    pub(super) snapshot_journaled: Cell<usize>,
    /// Move-in queries to start (the registry hands them to its runner).
    pub(super) move_jobs: MoveJobs,
}

/// Move-in queries asked for by shapes during an apply, shared by the
/// registry and its shapes (one executor): a shape cannot await.
pub(super) type MoveJobs = Rc<RefCell<Vec<MoveInJob>>>;

impl Shape {
    /// Brings the shard's memory total up to date with this shape's tail
    /// (after anything that appended or trimmed it).
    pub(super) fn recount(&self, state: &ShapeState) {
        if state.gone {
            return;
        }
        let held = match &state.gate {
            Gate::Pending(held) => held.bytes,
            _ => 0,
        };
        let now = state.log.memory_bytes() + held;
        let total = self.memory.get() + now - self.counted.get();
        self.memory.set(total);
        self.counted.set(now);
    }

    pub fn handle(&self) -> &str {
        self.spec.handle.as_str()
    }

    pub fn relation_id(&self) -> RelationId {
        self.spec.schema.relation_id
    }

    pub fn layout(&self) -> Layout<'_> {
        Layout {
            table: &self.spec.definition.table,
            column_names: &self.column_names,
            selected: &self.spec.selected,
            key: &self.spec.key,
            has_primary_key: self.spec.schema.has_primary_key(),
        }
    }

    pub fn is_gone(&self) -> bool {
        self.state.borrow().gone
    }

    /// One consistent view of `(after, chunk end]`; load it after.
    pub fn read(&self, after: LogOffset) -> LogRead {
        self.state.borrow().log.read(after)
    }

    pub fn read_stamp(&self) -> u64 {
        self.read_stamp.get()
    }

    /// The last offset served (see `ShapeLog::served_offset`).
    pub fn last_offset(&self) -> LogOffset {
        self.state.borrow().log.served_offset()
    }

    /// The tick that took the journal holding this shape's items up to
    /// `end` made them durable: serve them, waking its readers.
    /// A snapshot that ended is durable with it unless rows of it were
    /// not journaled (then with the checkpoint that writes them: see
    /// `written`).
    pub fn serve_through(&self, end: LogOffset) {
        let mut state = self.state.borrow_mut();
        let mut grew = state.log.serve_through(end);
        if state.log.snapshot_end_held() && !self.large_snapshot() {
            grew |= state.log.release_snapshot_end();
        }
        drop(state);
        if grew {
            self.changed.notify_all();
        }
    }

    /// Rows of its snapshot were left out of the journal.
    fn large_snapshot(&self) -> bool {
        self.snapshot_journaled.get() >= SNAPSHOT_JOURNAL_BYTES
    }

    pub fn snapshot_done(&self) -> bool {
        self.state.borrow().log.snapshot_done()
    }

    /// Completes at the next change to this shape's log or its removal.
    /// Take it before reading, so a change in between is not missed.
    pub fn listen(&self) -> Listener {
        self.changed.listen()
    }

    /// Appends a snapshot row (table-width values). Wakes readers when a
    /// chunk fills, so the first chunk is served while the rest is read.
    ///
    /// Only the first `SNAPSHOT_JOURNAL_BYTES` of rows are journaled (a
    /// small shape is durable at the next tick, as before); the rest reach
    /// the disk once, through the checkpoint that writes the shape's tail
    /// into its serving file. Writing every row of a large snapshot to the
    /// segment log as well cost about a third of its CPU. A large snapshot
    /// is therefore durable once a checkpoint holds all its rows (one is
    /// asked for when it ends); a crash before that drops the shape like
    /// any interrupted snapshot — its rows came from a query, not from WAL
    /// the fence confirms, so nothing is lost: its clients re-sync.
    pub fn push_snapshot_row(&self, row: &[Option<&str>], scratch: &mut Vec<u8>) {
        scratch.clear();
        if !self.tagged_row(scratch, row, false) {
            encode::snapshot_row(scratch, &self.layout(), row);
        }
        let journaled = self.snapshot_journaled.get();
        if journaled < SNAPSHOT_JOURNAL_BYTES {
            self.snapshot_journaled.set(journaled + scratch.len());
            record::encode(
                &mut self.journal.borrow_mut(),
                0,
                self.id,
                Kind::SnapshotItem,
                scratch,
            );
        }
        let sealed = {
            let mut state = self.state.borrow_mut();
            let sealed = state.log.push_snapshot_item(scratch);
            self.recount(&state);
            sealed
        };
        if sealed {
            self.changed.notify_all();
        }
    }

    /// Ends the snapshot with `snapshot-end`, journaled with its row count
    /// (recovery keeps the snapshot only with every row: see
    /// `push_snapshot_row`). Returns whether rows were left out of the
    /// journal: the snapshot is durable only with the next checkpoint.
    pub fn finish_snapshot(&self, snapshot: &PgSnapshot) -> bool {
        self.drop_seeded_views();
        let stored = snapshot.stored_end();
        let rows = self.state.borrow().log.snapshot_items();
        let mut payload = rows.to_le_bytes().to_vec();
        payload.extend_from_slice(&stored);
        record::encode(
            &mut self.journal.borrow_mut(),
            0,
            self.id,
            Kind::SnapshotEndCounted,
            &payload,
        );
        {
            let mut state = self.state.borrow_mut();
            state.log.finish_snapshot(PgSnapshot::served_end(&stored));
            // Served once durable (`serve_through`, `written`).
            state.log.hold_snapshot_end();
            state.snapshot_end = Some(stored);
            self.recount(&state);
        }
        self.meta_dirty.borrow_mut().insert(self.id);
        self.unpublished.borrow_mut().insert(self.id);
        self.changed.notify_all();
        self.large_snapshot()
    }

    /// Recovery: a snapshot row as the log holds it.
    pub fn restore_snapshot_item(&self, item: &[u8]) {
        let mut state = self.state.borrow_mut();
        state.log.push_snapshot_item(item);
        self.recount(&state);
    }

    /// Recovery: a `SnapshotEndCounted` record. The snapshot ends only if
    /// the log holds all its rows (its checkpointed files and the
    /// journaled ones); otherwise it stays unfinished and the shape is
    /// dropped as interrupted. Returns whether it ended.
    pub fn restore_snapshot_end_counted(&self, payload: &[u8]) -> bool {
        let Some((count, stored)) = payload.split_first_chunk::<8>() else {
            tracing::warn!(handle = self.handle(), "snapshot-end record too short");
            return false;
        };
        let held = self.state.borrow().log.snapshot_items();
        if held != u64::from_le_bytes(*count) {
            return false;
        }
        self.restore_snapshot_end(stored);
        true
    }

    /// Recovery: the snapshot's end message. It also restores the
    /// snapshot's visibility filter: after a crash Postgres re-sends from
    /// the fence, which may predate the snapshot, and transactions the
    /// snapshot already holds must be dropped again.
    pub fn restore_snapshot_end(&self, stored: &[u8]) {
        let mut state = self.state.borrow_mut();
        state.log.finish_snapshot(PgSnapshot::served_end(stored));
        self.restore_snapshot_filter(&mut state, stored);
        self.recount(&state);
    }

    /// Recovery: the snapshot's end (as stored: `PgSnapshot::stored_end`),
    /// and the visibility filter it carries. The filter's WAL position
    /// makes re-arming it harmless: every transaction after the snapshot
    /// passes it by commit LSN, however far xids have moved on.
    fn restore_snapshot_filter(&self, state: &mut ShapeState, stored: &[u8]) {
        state.snapshot_end = Some(stored.to_vec());
        match PgSnapshot::from_stored_end(stored) {
            Some(snapshot) => state.gate = Gate::Filtering(snapshot),
            None => tracing::warn!(handle = self.handle(), "unreadable snapshot-end record"),
        }
    }

    /// Recovery: a transaction entry, from the record that journaled it.
    pub fn restore_entry(&self, commit_lsn: Lsn, offset: LogOffset, item: &[u8]) {
        let mut state = self.state.borrow_mut();
        state.log.push_entry(offset, item);
        state.log.serve_through(offset);
        state.last_lsn = state.last_lsn.max(commit_lsn);
        self.recount(&state);
    }

    /// Log bytes held in memory (not yet in the serving files).
    pub fn log_memory_bytes(&self) -> usize {
        self.state.borrow().log.memory_bytes()
    }

    /// The metadata record of this shape, as of now.
    pub fn meta_record(&self) -> ShapeRecord {
        ShapeRecord {
            id: self.id,
            schema_fingerprint: table_fingerprint(&self.spec.schema),
            handle: self.handle().to_string(),
            canonical: self.spec.canonical.clone(),
            definition_hash: definition_hash(&self.spec.canonical),
            relation_id: self.relation_id(),
            index_key: self
                .spec
                .filter
                .as_ref()
                .and_then(|f| f.index_key())
                .map(|(column, values)| (column as u64, values)),
            persisted: self.spec.persisted.clone(),
            snapshot_end: self.state.borrow().snapshot_end.clone(),
            created_ms: self.created_ms,
            last_read: self.read_stamp.get(),
        }
    }

    /// Checkpoint: the writes that bring the serving files up to date,
    /// with the log state they produce.
    pub fn capture(&self) -> (Captured, LogRecord) {
        let state = self.state.borrow();
        let captured = state.log.capture();
        let record = LogRecord {
            snapshot: captured.records.0.clone(),
            snapshot_end: state.snapshot_end.clone(),
            main: captured.records.1.clone(),
            last_lsn: state.last_lsn.0,
        };
        (captured, record)
    }

    /// Checkpoint: `captured` is in the files; trim the memory tail.
    pub fn written(&self, captured: &Captured) {
        let mut state = self.state.borrow_mut();
        state.log.written(captured);
        self.recount(&state);
        // A large snapshot is durable once a checkpoint holds all its rows.
        let released = state.log.snapshot_end_held()
            && state.log.snapshot_done()
            && state.log.snapshot_on_disk()
            && state.log.release_snapshot_end();
        drop(state);
        if released {
            self.changed.notify_all();
        }
    }

    /// Recovery: the checkpointed log state (the files are already cut to
    /// it), before the segment log's tail is replayed on top.
    pub fn restore_log(&self, record: &LogRecord) {
        let mut state = self.state.borrow_mut();
        state.log.restore(
            &record.snapshot,
            &record.main,
            record.snapshot_end.is_some(),
        );
        state.last_lsn = Lsn(record.last_lsn);
        if let Some(end) = &record.snapshot_end {
            self.restore_snapshot_filter(&mut state, end);
        }
        self.recount(&state);
    }

    /// Unloading: what it must keep to be rebuilt, when it can go cold now
    /// (snapshot done, nothing pending, every item in its files and its
    /// log state checkpointed).
    pub(super) fn to_cold(&self) -> Option<Box<Cold>> {
        let state = self.state.borrow();
        // A subquery shape's truth lives only in memory (it is read again
        // only after a restart), so it stays built.
        if state.gone
            || state.subquery.is_some()
            || state.snapshot_end.is_none()
            || matches!(state.gate, Gate::Pending(_))
            || state.log.has_tail()
        {
            return None;
        }
        let captured = state.log.capture();
        Some(Box::new(Cold {
            handle: self.handle().into(),
            canonical: self.spec.canonical.as_str().into(),
            relation: self.relation_id(),
            fingerprint: table_fingerprint(&self.spec.schema),
            read_stamp: self.read_stamp.get(),
            created_ms: self.created_ms,
            log: LogRecord {
                snapshot: captured.records.0,
                snapshot_end: state.snapshot_end.clone(),
                main: captured.records.1,
                last_lsn: state.last_lsn.0,
            },
        }))
    }

    /// The serving files of this shape.
    pub fn file_paths(&self) -> Vec<PathBuf> {
        let state = self.state.borrow();
        state.log.paths().iter().map(|p| p.to_path_buf()).collect()
    }

    /// Applies `tx` (changes at `indices`, or all of it) to this shape.
    /// Returns whether the log grew.
    pub(super) fn apply(&self, tx: &Arc<Transaction>, indices: Option<&[usize]>) -> Applied {
        let mut state = self.state.borrow_mut();
        if state.gone || tx.commit_lsn <= state.last_lsn {
            return Applied::Nothing;
        }
        match &mut state.gate {
            Gate::Pending(held) => {
                if held.txs.len() >= MAX_HELD_TRANSACTIONS {
                    return Applied::Invalidated("its snapshot did not start in time");
                }
                held.txs.push(tx.clone());
                held.bytes += tx.approx_bytes();
                self.recount(&state);
                return Applied::Nothing;
            }
            Gate::Filtering(snapshot) => {
                if snapshot.holds(tx.xid, tx.commit_lsn.0) {
                    return Applied::Nothing;
                }
                if snapshot.ends_filtering(tx.xid, tx.commit_lsn.0) {
                    state.gate = Gate::Open;
                }
            }
            Gate::Open => {}
        }
        if state.subquery.is_some() {
            return self.apply_subquery(&mut state, tx, indices);
        }
        let all: Vec<usize>;
        let indices = match indices {
            Some(i) => i,
            None => {
                all = (0..tx.changes.len()).collect();
                &all
            }
        };
        if let Some(why) = self.check_changes(&mut state, tx, indices) {
            return Applied::Invalidated(why);
        }
        let filter = self
            .spec
            .filter
            .as_deref()
            .map(|f| move |row: &[Option<&str>]| f.matches(&|i| row.get(i).copied().flatten()));
        let converter = Converter {
            layout: self.layout(),
            replica: self.spec.definition.replica,
            filter: filter
                .as_ref()
                .map(|f| f as &dyn Fn(&[Option<&str>]) -> bool),
            tagger: None,
        };
        let grew = self.append_converted(&mut state.log, tx, indices, &converter);
        state.last_lsn = tx.commit_lsn;
        if !grew {
            return Applied::Nothing;
        }
        self.recount(&state);
        Applied::Grew
    }

    /// Schema and truncate checks before any entry is written: a shape
    /// whose table changed under it must refetch, not get odd rows.
    pub(super) fn check_changes(
        &self,
        state: &mut ShapeState,
        tx: &Transaction,
        indices: &[usize],
    ) -> Option<&'static str> {
        for &i in indices {
            match &tx.changes[i] {
                Change::Truncate { relations, .. } => {
                    if relations.iter().any(|r| r.id == self.relation_id()) {
                        return Some("truncated");
                    }
                }
                Change::Insert { relation, .. }
                | Change::Update { relation, .. }
                | Change::Delete { relation, .. } => {
                    if relation.id != self.relation_id() {
                        continue;
                    }
                    let known = state
                        .relation
                        .as_ref()
                        .is_some_and(|r| Arc::ptr_eq(r, relation));
                    if !known {
                        let holds = RelationColumns::of(relation).keeps(
                            table_fingerprint(&self.spec.schema),
                            self.spec.definition.columns.is_none(),
                        );
                        if !holds {
                            return Some("its table's columns changed");
                        }
                        state.relation = Some(relation.clone());
                    }
                }
            }
        }
        None
    }

    /// Converts the changes at `indices` that are on this shape's table
    /// and appends (and journals) their entries; whether any were.
    pub(super) fn append_converted(
        &self,
        log: &mut ShapeLog,
        tx: &Transaction,
        indices: &[usize],
        converter: &Converter,
    ) -> bool {
        let context = TxContext {
            xid: tx.xid,
            commit_lsn: tx.commit_lsn.0,
        };
        let mut entries: Vec<OpenEntry> = Vec::new();
        for &i in indices {
            let change = &tx.changes[i];
            let ours = change.relation_ids().any(|r| r == self.relation_id());
            if ours {
                converter.convert(context, i, change, &mut entries);
            }
        }
        if entries.is_empty() {
            return false;
        }
        let count = entries.len();
        for (n, entry) in entries.into_iter().enumerate() {
            let (offset, bytes) = entry.finish(n + 1 == count);
            self.append_item(log, tx.commit_lsn, offset, &bytes);
        }
        true
    }

    /// Appends one log item and journals it. Payload: the entry's offset
    /// (tx, op) then its JSON, so the log is rebuilt byte for byte from
    /// the segments.
    pub(super) fn append_item(
        &self,
        log: &mut ShapeLog,
        lsn: Lsn,
        offset: LogOffset,
        bytes: &[u8],
    ) {
        let mut payload = Vec::new();
        record::entry_payload(&mut payload, offset.tx(), offset.op(), bytes);
        record::encode(
            &mut self.journal.borrow_mut(),
            lsn.0,
            self.id,
            Kind::Entry,
            &payload,
        );
        log.push_entry(offset, bytes);
        if self.spec.subqueries.is_some() {
            self.unpublished.borrow_mut().insert(self.id);
        }
    }
}

pub(super) enum Applied {
    Nothing,
    Grew,
    Invalidated(&'static str),
}

/// Builds a shape's spec from its creation record (the edge owns the
/// format: catalog columns, where-clause compiler).
pub type SpecLoader = Box<dyn Fn(&[u8]) -> Result<ShapeSpec, String>>;
