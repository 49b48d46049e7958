//! A shard's shapes: lookup by handle and by definition, a per-relation
//! index that finds the shapes a change may concern without asking every
//! one, and the application of transactions to their logs.
//!
//! Owned by one shard and touched only on its executor (shapes are `Rc`);
//! nothing here crosses shards.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use crate::change::{Change, Relation, RelationId, Transaction};
use crate::lsn::Lsn;
use crate::notify::{Listener, Notify};
use crate::routes::RouteTable;
use crate::storage::meta::{LogRecord, MetaBatch, MetaStore, ShapeRecord};
use crate::storage::record::{self, Kind};

use super::convert::Converter;
use super::definition::{canonical_selects_all, definition_hash, ShapeDefinition, ShapeHandle};
use super::encode::{self, Layout, OpenEntry, PgSnapshot, TxContext};
use super::log::{Captured, LogRead, ShapeLog};
use super::offset::LogOffset;
use super::relation_index::{table_fingerprint, RelationColumns, RelationShapes};
use super::schema::TableSchema;

pub use super::relation_index::schema_fingerprint;

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
}

/// Shapes unloaded per checkpoint at most: an unload frees a built shape
/// and allocates its cold form (a few µs each), and the sweep runs on the
/// shard's executor, so a mass of idle shapes goes cold over several
/// checkpoints rather than in one long pause.
pub const UNLOAD_PER_CHECKPOINT: usize = 1024;

/// Built shapes the unload sweep looks at per checkpoint (it walks them in
/// turn, so a shard with many busy shapes does not scan them all at once).
pub const SWEEP_PER_CHECKPOINT: usize = 16_384;

/// Transactions a shape holds while its snapshot's visibility is unknown
/// (normally a few milliseconds' worth). Past it the snapshot is stuck and
/// the shape is dropped: its clients re-sync rather than memory grow.
pub const MAX_HELD_TRANSACTIONS: usize = 10_000;

/// Whether a shape takes a transaction yet.
enum Gate {
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
struct Held {
    txs: Vec<Arc<Transaction>>,
    bytes: usize,
}

struct ShapeState {
    log: ShapeLog,
    /// The `snapshot-end` message once the snapshot completed.
    snapshot_end: Option<Vec<u8>>,
    gate: Gate,
    gone: bool,
    /// Commit LSN of the newest transaction applied: replays are skipped.
    last_lsn: Lsn,
    /// The relation description last checked against `spec.schema`.
    relation: Option<Arc<Relation>>,
}

/// Records for the shard's segment log, framed, waiting for the next group
/// commit. Shared by the registry and its shapes (one executor).
pub type Journal = Rc<RefCell<Vec<u8>>>;

/// Shapes whose metadata record must be rewritten at the next tick.
type MetaDirty = Rc<RefCell<HashSet<ShapeId>>>;

pub struct Shape {
    pub id: ShapeId,
    pub spec: ShapeSpec,
    journal: Journal,
    meta_dirty: MetaDirty,
    /// When it was last read, on the server-wide read clock (for LRU).
    read_stamp: Cell<u64>,
    /// The registry's checkpoint epoch when it was last used (unloading).
    active: Cell<u64>,
    /// Milliseconds since the Unix epoch.
    created_ms: u64,
    column_names: Vec<String>,
    state: RefCell<ShapeState>,
    changed: Rc<Notify>,
    /// The shard's total of memory tails, and this shape's part of it.
    memory: Rc<Cell<usize>>,
    counted: Cell<usize>,
}

impl Shape {
    /// Brings the shard's memory total up to date with this shape's tail
    /// (after anything that appended or trimmed it).
    fn recount(&self, state: &ShapeState) {
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

    pub fn last_offset(&self) -> LogOffset {
        self.state.borrow().log.last_offset()
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
    pub fn push_snapshot_row(&self, row: &[Option<&str>], scratch: &mut Vec<u8>) {
        scratch.clear();
        encode::snapshot_row(scratch, &self.layout(), row);
        record::encode(
            &mut self.journal.borrow_mut(),
            0,
            self.id,
            Kind::SnapshotItem,
            scratch,
        );
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

    /// Ends the snapshot with `snapshot-end`.
    pub fn finish_snapshot(&self, snapshot: &PgSnapshot) {
        let stored = snapshot.stored_end();
        record::encode(
            &mut self.journal.borrow_mut(),
            0,
            self.id,
            Kind::SnapshotEnd,
            &stored,
        );
        {
            let mut state = self.state.borrow_mut();
            state.log.finish_snapshot(PgSnapshot::served_end(&stored));
            state.snapshot_end = Some(stored);
            self.recount(&state);
        }
        self.meta_dirty.borrow_mut().insert(self.id);
        self.changed.notify_all();
    }

    /// Recovery: a snapshot row as the log holds it.
    pub fn restore_snapshot_item(&self, item: &[u8]) {
        let mut state = self.state.borrow_mut();
        state.log.push_snapshot_item(item);
        self.recount(&state);
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
    fn to_cold(&self) -> Option<Box<Cold>> {
        let state = self.state.borrow();
        if state.gone
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
    fn apply(&self, tx: &Arc<Transaction>, indices: Option<&[usize]>) -> Applied {
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
        let all: Vec<usize>;
        let indices = match indices {
            Some(i) => i,
            None => {
                all = (0..tx.changes.len()).collect();
                &all
            }
        };
        // Schema and truncate checks before any entry is written: a shape
        // whose table changed under it must refetch, not get odd rows.
        for &i in indices {
            match &tx.changes[i] {
                Change::Truncate { relations, .. } => {
                    if relations.iter().any(|r| r.id == self.relation_id()) {
                        return Applied::Invalidated("truncated");
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
                            return Applied::Invalidated("its table's columns changed");
                        }
                        state.relation = Some(relation.clone());
                    }
                }
            }
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
        };
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
        state.last_lsn = tx.commit_lsn;
        if entries.is_empty() {
            return Applied::Nothing;
        }
        let count = entries.len();
        let mut journal = self.journal.borrow_mut();
        let mut payload = Vec::new();
        for (n, entry) in entries.into_iter().enumerate() {
            let (offset, bytes) = entry.finish(n + 1 == count);
            // Payload: the entry's offset (tx, op) then its JSON, so the log
            // is rebuilt byte for byte from the segments.
            record::entry_payload(&mut payload, offset.tx(), offset.op(), &bytes);
            record::encode(
                &mut journal,
                tx.commit_lsn.0,
                self.id,
                Kind::Entry,
                &payload,
            );
            state.log.push_entry(offset, &bytes);
        }
        self.recount(&state);
        Applied::Grew
    }
}

enum Applied {
    Nothing,
    Grew,
    Invalidated(&'static str),
}

/// Builds a shape's spec from its creation record (the edge owns the
/// format: catalog columns, where-clause compiler).
pub type SpecLoader = Box<dyn Fn(&[u8]) -> Result<ShapeSpec, String>>;

/// While the shard is over its memory budget, waits for a flush or a
/// checkpoint (asked to come early) to write some out; gives up when
/// `stop()` says so. Used by the feed consumer and by snapshot writers, so
/// the backlog stays in Postgres rather than in memory.
pub async fn wait_for_memory(registry: &RefCell<Registry>, stop: impl Fn() -> bool) {
    loop {
        let freed = {
            let mut registry = registry.borrow_mut();
            if !registry.over_budget() || stop() {
                return;
            }
            registry.memory_pressure = true;
            registry.memory_waits += 1;
            registry.freed.listen()
        };
        // Bounded: re-check even if no wake-up comes.
        crate::runtime::timeout(std::time::Duration::from_millis(100), freed).await;
    }
}

/// Reads of a creation record tried before giving up on the metadata.
const META_READ_ATTEMPTS: u32 = 3;

/// A cold shape's creation record. A read that keeps failing is a storage
/// failure, not a reason to delete the shape: the process stops (as on any
/// storage failure) and recovery rebuilds from the segment log, rather than
/// the shape's clients losing it or a change for it being skipped.
fn read_persisted(meta: &MetaStore, id: ShapeId) -> Option<Vec<u8>> {
    let mut last_error = None;
    for _ in 0..META_READ_ATTEMPTS {
        match meta.persisted(id) {
            Ok(found) => return found,
            Err(e) => last_error = Some(e),
        }
    }
    panic!(
        "shard metadata unreadable (shape {id}): {}; stopping so that recovery rebuilds from the segment log",
        last_error.map_or_else(String::new, |e| e.to_string())
    );
}

/// A shape restored from LMDB and not used since, or unloaded after being
/// idle: routed and looked up like any other, but its spec, filter and log
/// state are built only when a request or a change next needs them, so a
/// restart costs O(records) and an idle shape keeps a few hundred bytes.
struct Cold {
    handle: Box<str>,
    canonical: Box<str>,
    relation: RelationId,
    /// `schema_fingerprint` of the table the shape was validated against.
    fingerprint: u64,
    read_stamp: u64,
    created_ms: u64,
    log: LogRecord,
}

pub struct Registry {
    shard: usize,
    routes: Arc<RouteTable>,
    chunk_bytes_max: usize,
    next_id: ShapeId,
    shapes: HashMap<ShapeId, Rc<Shape>>,
    by_handle: HashMap<String, ShapeId>,
    by_definition: HashMap<String, ShapeId>,
    by_relation: HashMap<RelationId, RelationShapes>,
    /// The newest WAL position this shard has processed.
    last_seen: Lsn,
    /// The fingerprint of each table's last Relation message.
    relations_seen: HashMap<RelationId, u64>,
    /// Cold shapes built since start (by a read, a change, a Relation).
    rebuilt: u64,
    /// Bytes of the shapes' memory tails (each shape keeps its part).
    memory: Rc<Cell<usize>>,
    /// Tails plus journal above this: the feed and snapshots wait.
    memory_budget: usize,
    /// Pinged when memory is freed (a flush, a checkpoint's trim).
    freed: Rc<Notify>,
    /// Someone waits on the budget: the next tick checkpoints (trimming
    /// tails) without waiting for its interval.
    memory_pressure: bool,
    /// Waits on the budget so far (feed and snapshots).
    memory_waits: u64,
    journal: Journal,
    /// Shapes by last read, oldest first (LRU eviction).
    by_read: BTreeSet<(u64, ShapeId)>,
    /// Where the shapes' serving files live.
    files_dir: PathBuf,
    /// Shapes whose metadata record changed since the last tick's commit
    /// (shared with the shapes: a finished snapshot marks itself).
    meta_dirty: MetaDirty,
    /// `(id, definition hash)` of shapes removed since the last commit.
    meta_removed: Vec<(ShapeId, u64)>,
    /// Read stamps set since the last checkpoint (one per shape at most).
    read_stamps: HashMap<ShapeId, u64>,
    /// Serving files of removed shapes, deleted after the next checkpoint.
    doomed_files: Vec<PathBuf>,
    /// Boxed: the map churns as shapes are built and unloaded, and its
    /// in-place rehash moves every entry.
    cold: HashMap<ShapeId, Box<Cold>>,
    loader: Option<(MetaStore, SpecLoader)>,
    /// Checkpoints so far: the clock shapes' idleness is measured on.
    epoch: u64,
    /// Built shapes unloaded to cold since start.
    unloaded: u64,
    /// Built shapes the unload sweep has yet to look at in this round.
    sweep: Vec<ShapeId>,
}

impl Registry {
    /// `files_dir`: where the shapes' serving files go (created if needed).
    pub fn new(
        shard: usize,
        routes: Arc<RouteTable>,
        chunk_bytes_max: usize,
        files_dir: &Path,
    ) -> Registry {
        if let Err(e) = std::fs::create_dir_all(files_dir) {
            tracing::error!(shard, "cannot create {}: {e}", files_dir.display());
        }
        Registry {
            shard,
            routes,
            chunk_bytes_max,
            next_id: 1,
            shapes: HashMap::new(),
            by_handle: HashMap::new(),
            by_definition: HashMap::new(),
            by_relation: HashMap::new(),
            last_seen: Lsn::ZERO,
            relations_seen: HashMap::new(),
            rebuilt: 0,
            memory: Rc::default(),
            memory_budget: usize::MAX,
            freed: Notify::new(),
            memory_pressure: false,
            memory_waits: 0,
            journal: Rc::default(),
            by_read: BTreeSet::new(),
            files_dir: files_dir.to_path_buf(),
            meta_dirty: MetaDirty::default(),
            meta_removed: Vec::new(),
            read_stamps: HashMap::new(),
            doomed_files: Vec::new(),
            cold: HashMap::new(),
            loader: None,
            epoch: 0,
            unloaded: 0,
            sweep: Vec::new(),
        }
    }

    /// Where cold shapes' creation records are read from, and how they
    /// become specs.
    pub fn set_loader(&mut self, meta: MetaStore, loader: SpecLoader) {
        self.loader = Some((meta, loader));
    }

    /// Recovery: registers a shape from its LMDB record without building
    /// it (see `Cold`). Returns false when its definition is already taken.
    pub fn restore_cold(&mut self, record: &ShapeRecord, log: LogRecord) -> bool {
        self.next_id = self.next_id.max(record.id + 1);
        if self.by_definition.contains_key(record.canonical.as_str()) {
            return false;
        }
        let id = record.id;
        self.by_definition.insert(record.canonical.clone(), id);
        self.by_handle.insert(record.handle.clone(), id);
        let key = record
            .index_key
            .as_ref()
            .map(|(column, values)| (*column as usize, values.clone()));
        self.by_relation
            .entry(record.relation_id)
            .or_default()
            .add(id, key);
        self.by_read.insert((record.last_read, id));
        self.routes.subscribe(record.relation_id, self.shard);
        self.cold.insert(
            id,
            Box::new(Cold {
                handle: record.handle.as_str().into(),
                canonical: record.canonical.as_str().into(),
                relation: record.relation_id,
                fingerprint: record.schema_fingerprint,
                read_stamp: record.last_read,
                created_ms: record.created_ms,
                log,
            }),
        );
        true
    }

    /// Shapes whose snapshot never completed (recovery drops them).
    pub fn unfinished_snapshots(&self) -> Vec<ShapeId> {
        let mut ids: Vec<ShapeId> = self
            .shapes
            .values()
            .filter(|s| !s.snapshot_done())
            .map(|s| s.id)
            .chain(
                self.cold
                    .iter()
                    .filter(|(_, c)| c.log.snapshot_end.is_none())
                    .map(|(&id, _)| id),
            )
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Shapes not built since the restart.
    pub fn cold_count(&self) -> usize {
        self.cold.len()
    }

    /// The shape `id`, built first if it is cold. A cold shape that cannot
    /// be built (its record unreadable) is removed: its clients re-sync.
    fn warm(&mut self, id: ShapeId) -> Option<Rc<Shape>> {
        if let Some(shape) = self.shapes.get(&id) {
            shape.active.set(self.epoch);
            return Some(shape.clone());
        }
        let cold = self.cold.get(&id)?;
        let built = match &self.loader {
            Some((meta, loader)) => match read_persisted(meta, id) {
                Some(persisted) => loader(&persisted),
                None => Err("its metadata record is missing".to_string()),
            },
            None => Err("no loader for restored shapes".to_string()),
        };
        let built = built.and_then(|spec| {
            if spec.canonical.as_str() == &*cold.canonical {
                Ok(spec)
            } else {
                Err("its creation record names another definition".to_string())
            }
        });
        let spec = match built {
            Ok(spec) => spec,
            Err(e) => {
                tracing::warn!(
                    shard = self.shard,
                    handle = &*cold.handle,
                    "cannot rebuild shape: {e}"
                );
                self.remove(id, "its stored definition could not be rebuilt");
                return None;
            }
        };
        let cold = self.cold.remove(&id).expect("checked above");
        self.rebuilt += 1;
        let shape = self.build(id, spec, Gate::Open, cold.created_ms, cold.read_stamp);
        shape.restore_log(&cold.log);
        self.shapes.insert(id, shape.clone());
        Some(shape)
    }

    /// Called once per checkpoint, as it starts (the previous one has
    /// completed): unloads the built shapes unused for more than
    /// `idle_checkpoints` checkpoints back to cold, so an idle shape costs
    /// what a restored one does. Only a shape nothing else holds (no reader,
    /// long-poll, snapshot or checkpoint in flight) whose items are all in
    /// its files goes cold, and only with a loader to rebuild it. A shape
    /// idle for a whole checkpoint had its creation record committed to
    /// LMDB, where rebuilding reads it. 0 never unloads. Each call looks at
    /// the next `SWEEP_PER_CHECKPOINT` built shapes and unloads at most
    /// `UNLOAD_PER_CHECKPOINT`. Returns how many.
    pub fn unload_idle(&mut self, idle_checkpoints: u64) -> usize {
        self.epoch += 1;
        if idle_checkpoints == 0 || self.loader.is_none() {
            return 0;
        }
        if self.sweep.is_empty() {
            self.sweep = self.shapes.keys().copied().collect();
        }
        let dirty = self.meta_dirty.clone();
        let dirty = dirty.borrow();
        let (mut visited, mut unloaded) = (0, 0);
        while visited < SWEEP_PER_CHECKPOINT && unloaded < UNLOAD_PER_CHECKPOINT {
            let Some(id) = self.sweep.pop() else { break };
            visited += 1;
            let Some(shape) = self.shapes.get(&id) else {
                continue;
            };
            if self.epoch - shape.active.get() <= idle_checkpoints
                || Rc::strong_count(shape) > 1
                || dirty.contains(&id)
            {
                continue;
            }
            if let Some(cold) = shape.to_cold() {
                self.shapes.remove(&id);
                self.cold.insert(id, cold);
                unloaded += 1;
            }
        }
        self.unloaded += unloaded as u64;
        unloaded
    }

    /// Built shapes unloaded to cold since start.
    /// Sets the shard's memory budget (journal + tails), in bytes.
    pub fn set_memory_budget(&mut self, bytes: usize) {
        self.memory_budget = bytes;
    }

    pub fn memory_budget(&self) -> usize {
        self.memory_budget
    }

    /// Bytes held in memory waiting for durability or a checkpoint: the
    /// journal not yet flushed, and the shapes' tails not yet in files.
    pub fn memory_bytes(&self) -> usize {
        self.memory.get() + self.journal.borrow().len()
    }

    /// Over the budget: take nothing more (feed, snapshot rows) until
    /// `freed` fires.
    pub fn over_budget(&self) -> bool {
        self.memory_bytes() > self.memory_budget
    }

    /// Fires when a flush or a checkpoint freed memory.
    pub fn freed(&self) -> Rc<Notify> {
        self.freed.clone()
    }

    /// Whether someone waited on the budget since the last call.
    pub fn take_memory_pressure(&mut self) -> bool {
        std::mem::take(&mut self.memory_pressure)
    }

    pub fn memory_waits(&self) -> u64 {
        self.memory_waits
    }

    /// Cold shapes built since start.
    pub fn rebuilt_count(&self) -> u64 {
        self.rebuilt
    }

    pub fn unloaded_count(&self) -> u64 {
        self.unloaded
    }

    /// Built (in-memory) shapes.
    pub fn built_count(&self) -> usize {
        self.shapes.len()
    }

    pub fn files_dir(&self) -> &Path {
        &self.files_dir
    }

    /// This tick's metadata mutations (taken together with the journal, so
    /// they describe exactly what the tick's fdatasync makes durable).
    pub fn take_meta_batch(&mut self) -> MetaBatch {
        let mut ids: Vec<ShapeId> = self.meta_dirty.borrow_mut().drain().collect();
        ids.sort_unstable();
        MetaBatch {
            put: ids
                .iter()
                .filter_map(|id| self.shapes.get(id))
                .map(|s| s.meta_record())
                .collect(),
            remove: std::mem::take(&mut self.meta_removed),
        }
    }

    /// Checkpoint: every shape with log items not in its files yet, with
    /// its writes and resulting state. Taken with the journal (same
    /// position in the segment log).
    pub fn capture_logs(&self) -> Vec<(Rc<Shape>, Captured, LogRecord)> {
        self.shapes
            .values()
            .filter(|shape| shape.state.borrow().log.has_tail())
            .map(|shape| {
                let (captured, record) = shape.capture();
                (shape.clone(), captured, record)
            })
            .collect()
    }

    /// Serving files of shapes removed so far (delete them once the
    /// removals are checkpointed).
    pub fn take_doomed_files(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.doomed_files)
    }

    /// Records a read of `id` at `stamp` (a server-wide, growing clock).
    pub fn touch(&mut self, id: ShapeId, stamp: u64) {
        if let Some(shape) = self.warm(id) {
            self.by_read.remove(&(shape.read_stamp.get(), id));
            shape.read_stamp.set(stamp);
            self.by_read.insert((stamp, id));
            // Not a metadata rewrite per read: the stamp goes to LMDB's
            // small stamp table at the next checkpoint.
            self.read_stamps.insert(id, stamp);
        }
    }

    /// Checkpoint: the read stamps set since the last one.
    pub fn take_read_stamps(&mut self) -> Vec<(u64, u64)> {
        let mut stamps: Vec<(u64, u64)> = self.read_stamps.drain().collect();
        stamps.sort_unstable();
        stamps
    }

    /// The read stamp of the least recently read shape, if any.
    pub fn oldest_read(&self) -> Option<(u64, ShapeId)> {
        self.by_read.first().copied()
    }

    /// The records waiting for the shard's next group commit.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Live shapes, built and cold.
    pub fn len(&self) -> usize {
        self.shapes.len() + self.cold.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn by_handle(&mut self, handle: &str) -> Option<Rc<Shape>> {
        let id = *self.by_handle.get(handle)?;
        self.warm(id)
    }

    pub fn by_definition(&mut self, canonical: &str) -> Option<Rc<Shape>> {
        let id = *self.by_definition.get(canonical)?;
        self.warm(id)
    }

    /// Whether a live shape (built or cold) has this definition.
    pub fn has_definition(&self, canonical: &str) -> bool {
        self.by_definition.contains_key(canonical)
    }

    /// The newest WAL position processed (`global_last_seen_lsn`).
    pub fn last_seen(&self) -> Lsn {
        self.last_seen
    }

    /// Registers a shape whose snapshot is about to be taken: from now on
    /// the ingest routes its table here and its transactions are held until
    /// `snapshot_taken`.
    pub fn insert(&mut self, spec: ShapeSpec) -> Rc<Shape> {
        let id = self.next_id;
        self.next_id += 1;
        record::encode(
            &mut self.journal.borrow_mut(),
            self.last_seen.0,
            id,
            Kind::ShapeCreated,
            &spec.persisted,
        );
        let created_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.meta_dirty.borrow_mut().insert(id);
        self.add(id, spec, Gate::Pending(Held::default()), created_ms, 0)
    }

    /// Rebuilds a shape from its creation record during recovery: same id,
    /// nothing journaled, taking transactions at once (its snapshot, if it
    /// completed, is replayed from the log).
    pub fn restore(&mut self, id: ShapeId, spec: ShapeSpec) -> Rc<Shape> {
        self.next_id = self.next_id.max(id + 1);
        // Not in the metadata store yet (its creation was in the log tail).
        self.meta_dirty.borrow_mut().insert(id);
        self.add(id, spec, Gate::Open, 0, 0)
    }

    fn add(
        &mut self,
        id: ShapeId,
        spec: ShapeSpec,
        gate: Gate,
        created_ms: u64,
        read_stamp: u64,
    ) -> Rc<Shape> {
        let relation = spec.schema.relation_id;
        let pending = matches!(gate, Gate::Pending(_));
        let index_key = spec.filter.as_ref().and_then(|f| f.index_key());
        let shape = self.build(id, spec, gate, created_ms, read_stamp);
        let replaced = self.by_definition.insert(shape.spec.canonical.clone(), id);
        assert!(replaced.is_none(), "two live shapes for one definition");
        self.by_handle.insert(shape.handle().to_string(), id);
        let shapes = self.by_relation.entry(relation).or_default();
        shapes.add(id, index_key);
        if pending {
            shapes.pending.push(id);
        }
        self.shapes.insert(id, shape.clone());
        self.by_read.insert((read_stamp, id));
        self.routes.subscribe(relation, self.shard);
        shape
    }

    fn build(
        &self,
        id: ShapeId,
        spec: ShapeSpec,
        gate: Gate,
        created_ms: u64,
        read_stamp: u64,
    ) -> Rc<Shape> {
        let column_names = spec.schema.columns.iter().map(|c| c.name.clone()).collect();
        Rc::new(Shape {
            id,
            read_stamp: Cell::new(read_stamp),
            active: Cell::new(self.epoch),
            created_ms,
            journal: self.journal.clone(),
            meta_dirty: self.meta_dirty.clone(),
            column_names,
            state: RefCell::new(ShapeState {
                log: ShapeLog::new(&self.files_dir, id, self.chunk_bytes_max),
                snapshot_end: None,
                gate,
                gone: false,
                last_lsn: Lsn::ZERO,
                relation: None,
            }),
            changed: Notify::new(),
            memory: self.memory.clone(),
            counted: Cell::new(0),
            spec,
        })
    }

    /// Removes a shape: its readers wake up to find it gone (409).
    pub fn remove(&mut self, id: ShapeId, why: &str) {
        if self.shapes.contains_key(&id) || self.cold.contains_key(&id) {
            record::encode(
                &mut self.journal.borrow_mut(),
                self.last_seen.0,
                id,
                Kind::ShapeRemoved,
                why.as_bytes(),
            );
        }
        self.forget(id, why);
    }

    /// Recovery: a metadata record that cannot become a shape is deleted
    /// at the next commit.
    pub fn forget_record(&mut self, id: ShapeId, definition_hash: u64) {
        self.next_id = self.next_id.max(id + 1);
        self.meta_removed.push((id, definition_hash));
    }

    /// Removes a shape without journaling it (replaying a removal).
    pub fn forget(&mut self, id: ShapeId, why: &str) {
        if let Some(cold) = self.cold.remove(&id) {
            self.forget_cold(id, &cold, why);
            return;
        }
        let Some(shape) = self.shapes.remove(&id) else {
            return;
        };
        tracing::info!(
            shard = self.shard,
            handle = shape.handle(),
            "shape removed: {why}"
        );
        self.by_read.remove(&(shape.read_stamp.get(), id));
        self.meta_dirty.borrow_mut().remove(&id);
        self.read_stamps.remove(&id);
        self.meta_removed
            .push((id, definition_hash(&shape.spec.canonical)));
        self.doomed_files.extend(shape.file_paths());
        self.by_handle.remove(shape.handle());
        if self.by_definition.get(&shape.spec.canonical) == Some(&id) {
            self.by_definition.remove(&shape.spec.canonical);
        }
        let relation = shape.relation_id();
        if let Some(shapes) = self.by_relation.get_mut(&relation) {
            shapes.remove(id);
            if shapes.count == 0 {
                self.by_relation.remove(&relation);
            }
        }
        self.routes.unsubscribe(relation, self.shard);
        {
            let mut state = shape.state.borrow_mut();
            // Its tail leaves the shard's total now (readers may still hold
            // the shape, but it takes nothing more).
            self.memory.set(self.memory.get() - shape.counted.get());
            shape.counted.set(0);
            state.gone = true;
            state.gate = Gate::Open;
        }
        shape.changed.notify_all();
    }

    fn forget_cold(&mut self, id: ShapeId, cold: &Cold, why: &str) {
        tracing::info!(
            shard = self.shard,
            handle = &*cold.handle,
            "shape removed: {why}"
        );
        self.by_read.remove(&(cold.read_stamp, id));
        self.read_stamps.remove(&id);
        self.meta_removed
            .push((id, definition_hash(&cold.canonical)));
        let log = ShapeLog::new(&self.files_dir, id, 1);
        self.doomed_files
            .extend(log.paths().iter().map(|p| p.to_path_buf()));
        self.by_handle.remove(&*cold.handle);
        if self.by_definition.get(&*cold.canonical) == Some(&id) {
            self.by_definition.remove(&*cold.canonical);
        }
        if let Some(shapes) = self.by_relation.get_mut(&cold.relation) {
            shapes.remove(id);
            if shapes.count == 0 {
                self.by_relation.remove(&cold.relation);
            }
        }
        self.routes.unsubscribe(cold.relation, self.shard);
    }

    /// The snapshot's visibility is known: replay what was held, dropping
    /// what the snapshot already contains.
    pub fn snapshot_taken(&mut self, id: ShapeId, snapshot: PgSnapshot) {
        let Some(shape) = self.shapes.get(&id).cloned() else {
            return;
        };
        if let Some(shapes) = self.by_relation.get_mut(&shape.relation_id()) {
            shapes.pending.retain(|&s| s != id);
        }
        let held = {
            let mut state = shape.state.borrow_mut();
            match std::mem::replace(&mut state.gate, Gate::Filtering(snapshot)) {
                Gate::Pending(held) => {
                    shape.recount(&state);
                    held.txs
                }
                other => {
                    state.gate = other;
                    return;
                }
            }
        };
        for tx in held {
            self.apply_one(&shape, &tx, None);
        }
    }

    fn apply_one(&mut self, shape: &Rc<Shape>, tx: &Arc<Transaction>, indices: Option<&[usize]>) {
        match shape.apply(tx, indices) {
            Applied::Nothing => {}
            Applied::Grew => shape.changed.notify_all(),
            Applied::Invalidated(why) => self.remove(shape.id, why),
        }
    }

    /// Applies a committed transaction to every shape it concerns.
    pub fn apply_transaction(&mut self, tx: &Arc<Transaction>) {
        self.last_seen = self.last_seen.max(tx.end_lsn).max(tx.commit_lsn);
        // Per shape, the indices of the changes that may concern it.
        let mut per_shape: HashMap<ShapeId, Vec<usize>> = HashMap::new();
        let mut candidates = Vec::new();
        for (i, change) in tx.changes.iter().enumerate() {
            candidates.clear();
            match change {
                Change::Truncate { relations, .. } => {
                    for relation in relations {
                        if self.by_relation.contains_key(&relation.id) {
                            candidates.extend(self.shapes_on(relation.id));
                        }
                    }
                }
                Change::Insert { relation, new } => {
                    if let Some(shapes) = self.by_relation.get(&relation.id) {
                        shapes.candidates(new, None, &mut candidates);
                    }
                }
                Change::Delete { relation, old } => {
                    if let Some(shapes) = self.by_relation.get(&relation.id) {
                        shapes.candidates(&old.1, None, &mut candidates);
                    }
                }
                Change::Update { relation, old, new } => {
                    if let Some(shapes) = self.by_relation.get(&relation.id) {
                        let old_tuple = old.as_ref().map(|(_, t)| t);
                        shapes.candidates(new, old_tuple, &mut candidates);
                        if let Some(old) = old_tuple {
                            shapes.candidates(old, None, &mut candidates);
                        }
                    }
                }
            }
            candidates.sort_unstable();
            candidates.dedup();
            for &id in &candidates {
                per_shape.entry(id).or_default().push(i);
            }
        }
        // Schema changes are detected per shape on the relation, even for
        // shapes whose index excluded every row of this transaction.
        let mut ids: Vec<ShapeId> = per_shape.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(shape) = self.warm(id) {
                let indices = &per_shape[&id];
                self.apply_one(&shape, tx, Some(indices));
            }
        }
        // Shapes still waiting for their snapshot hold every transaction on
        // their table, whatever the index said.
        let mut relations: Vec<RelationId> =
            tx.changes.iter().flat_map(|c| c.relation_ids()).collect();
        relations.sort_unstable();
        relations.dedup();
        let pending: Vec<Rc<Shape>> = relations
            .iter()
            .filter_map(|r| self.by_relation.get(r))
            .flat_map(|shapes| shapes.pending.iter())
            .filter(|id| !per_shape.contains_key(id))
            .filter_map(|id| self.shapes.get(id).cloned())
            .collect();
        for shape in pending {
            self.apply_one(&shape, tx, None);
        }
    }

    /// A relation's new description: shapes on it whose columns no longer
    /// match are invalidated now rather than at their next change.
    pub fn apply_relation(&mut self, relation: &Arc<Relation>) {
        // pgoutput re-sends a table's Relation at every session start and
        // after cache invalidations: the same one again changes nothing.
        let columns = RelationColumns::of(relation);
        if self.relations_seen.insert(relation.id, columns.fingerprint()) == Some(columns.fingerprint()) {
            return;
        }
        // Decided from the stored fingerprint and definition: no shape is
        // built for this (a table with 100k cold shapes would stall the
        // shard building them).
        let stale: Vec<ShapeId> = self
            .shapes_on(relation.id)
            .into_iter()
            .filter(|id| match (self.shapes.get(id), self.cold.get(id)) {
                (Some(shape), _) => !columns.keeps(
                    table_fingerprint(&shape.spec.schema),
                    shape.spec.definition.columns.is_none(),
                ),
                (None, Some(cold)) => {
                    !columns.keeps(cold.fingerprint, canonical_selects_all(&cold.canonical))
                }
                (None, None) => false,
            })
            .collect();
        for id in stale {
            self.remove(id, "its table's columns changed");
        }
    }

    /// WAL progress with no transaction for this shard.
    pub fn advance(&mut self, lsn: Lsn) {
        self.last_seen = self.last_seen.max(lsn);
    }

    /// The shapes on `relation`, built or cold, from the per-relation
    /// index (not a scan of every shape).
    fn shapes_on(&self, relation: RelationId) -> Vec<ShapeId> {
        let Some(on) = self.by_relation.get(&relation) else {
            return Vec::new();
        };
        let mut ids: Vec<ShapeId> = on.all().collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Every shape (for DELETE by definition, metrics, shutdown).
    pub fn shapes(&self) -> impl Iterator<Item = &Rc<Shape>> {
        self.shapes.values()
    }

    /// The shape `id`, built first if it is cold.
    pub fn get(&mut self, id: ShapeId) -> Option<Rc<Shape>> {
        self.warm(id)
    }

    /// Whether `id` is a live shape (built or cold).
    pub fn contains(&self, id: ShapeId) -> bool {
        self.shapes.contains_key(&id) || self.cold.contains_key(&id)
    }
}
