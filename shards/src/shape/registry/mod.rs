//! A shard's shapes: lookup by handle and by definition, a per-relation
//! index that finds the shapes a change may concern without asking every
//! one, and the application of transactions to their logs.
//!
//! Owned by one shard and touched only on its executor (shapes are `Rc`);
//! nothing here crosses shards.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use crate::change::{Change, Relation, RelationId, Transaction};
use crate::lsn::Lsn;
use crate::notify::Notify;
use crate::routes::RouteTable;
use crate::storage::meta::MetaStore;
use crate::storage::record::{self, Kind};

use super::definition::{canonical_selects_all, definition_hash};
use super::encode::PgSnapshot;
use super::log::ShapeLog;
use super::relation_index::{
    table_fingerprint, RelationColumns, RelationShapes, BROAD_ABOVE_VALUES, NARROW_BELOW_VALUES,
};

pub use super::relation_index::schema_fingerprint;

mod capture;
mod cold;
mod durable_views;
mod kept_views;
mod liveness;
mod memory;
mod moves;
mod shape;
mod subquery;
mod truths;

use cold::Cold;
pub use cold::{SWEEP_PER_CHECKPOINT, UNLOAD_PER_CHECKPOINT};
pub use liveness::Liveness;
pub use memory::wait_for_memory;
use shape::{Applied, Gate, Held, MetaDirty, MoveJobs, ShapeState, Unpublished};
pub use shape::{Journal, RowFilter, Shape, ShapeId, ShapeSpec, SpecLoader, MAX_HELD_TRANSACTIONS};
pub use subquery::{
    DependencySpec, MoveInJob, MoveInRows, SubquerySpec, DEFAULT_BUFFER_MAX_TRANSACTIONS,
    MAX_MOVE_IN_BYTES,
};

/// Transactions between two sweeps of the subquery shapes waiting to
/// share their truths (`Registry::share_truths`).
const SHARE_SWEEP_EVERY: usize = 256;
/// Or after this long, whichever comes first (a shard that receives every
/// transaction hears of no LSN tick while they flow).
const SHARE_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

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
    /// Journal bytes the segment writer holds after a failed flush (taken
    /// from the journal, not yet durable): still counted against the
    /// budget, so a storage outage backs the feed up instead of growing.
    unflushed: usize,
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
    /// Subquery shapes whose new items wait for a flush to be served.
    unpublished: Unpublished,
    /// Wakes the group commit (an idle one ticks slowly) when items wait
    /// for a flush to be served outside the feed's applies (a splice).
    flush_wake: Option<Rc<Notify>>,
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
    /// Subquery shapes by the relations their subqueries read: changes on
    /// those reach the shape's mirror of the dependency's values. Indexed
    /// like shapes on their own relation, by the inner where's equality
    /// column (`user_id = $1`): a membership change reaches the shapes of
    /// that user only, however many users' shapes there are.
    by_dependency: HashMap<RelationId, RelationShapes>,
    /// Move-in queries shapes asked for during an apply.
    move_jobs: MoveJobs,
    /// Runs a move-in query (spawns it; the result comes back through
    /// `move_in_done`). None: move-ins invalidate their shape.
    move_runner: Option<Box<dyn Fn(MoveInJob)>>,
    /// Shapes with a move-in in flight, retried for their splice as the
    /// shard's position moves.
    moving: BTreeSet<ShapeId>,
    /// Subquery shapes resuming after a crash whose truth is being read
    /// again (`durable_views.rs`).
    reseeding: BTreeSet<ShapeId>,
    /// Flags of shapes other shards keep replies of (built or cold; made
    /// on first ask), ended when the shape goes.
    liveness: HashMap<ShapeId, Liveness>,
    /// Dependency truths shared by definition (`truths.rs`), and the
    /// subquery shapes not reading shared ones yet.
    truths: truths::Truths,
    unshared: BTreeSet<ShapeId>,
    /// The last commit every waiting shape was looked at, and the
    /// transactions since.
    share_swept_at: Lsn,
    since_share_sweep: usize,
    share_swept_when: std::time::Instant,
    /// Commit position of the last transaction applied.
    last_commit: Lsn,
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
            unflushed: 0,
            freed: Notify::new(),
            memory_pressure: false,
            memory_waits: 0,
            journal: Rc::default(),
            by_read: BTreeSet::new(),
            files_dir: files_dir.to_path_buf(),
            meta_dirty: MetaDirty::default(),
            unpublished: Unpublished::default(),
            flush_wake: None,
            meta_removed: Vec::new(),
            read_stamps: HashMap::new(),
            doomed_files: Vec::new(),
            cold: HashMap::new(),
            loader: None,
            epoch: 0,
            unloaded: 0,
            sweep: Vec::new(),
            by_dependency: HashMap::new(),
            move_jobs: Rc::default(),
            move_runner: None,
            moving: BTreeSet::new(),
            reseeding: BTreeSet::new(),
            liveness: HashMap::new(),
            truths: Rc::default(),
            unshared: BTreeSet::new(),
            share_swept_at: Lsn::ZERO,
            since_share_sweep: 0,
            share_swept_when: std::time::Instant::now(),
            last_commit: Lsn::ZERO,
        }
    }

    /// Subquery shapes taking every row of their table, having too many
    /// values to be routed by them.
    pub fn broad_subquery_shapes(&self) -> usize {
        self.by_relation
            .values()
            .map(RelationShapes::broad_count)
            .sum()
    }

    /// Shared dependency truths, and the subquery shapes reading them.
    pub fn shared_truths(&self) -> (usize, usize) {
        self.truths.borrow().counts()
    }

    /// Subquery shapes at the shard's position join the shared truths of
    /// their dependencies (one materializer per definition per shard).
    ///
    /// Shapes that applied something or finished a move are looked at
    /// then (`share_truths_of`); the others (quiet ones whose snapshot or
    /// re-read the shard has since passed) by a sweep of every waiting
    /// shape at LSN ticks and every `SHARE_SWEEP_EVERY` transactions or
    /// `SHARE_SWEEP_INTERVAL`, so
    /// thousands of shapes waiting to be read again cost no transaction
    /// a scan of them all.
    fn share_truths(&mut self) {
        if self.unshared.is_empty() || self.last_commit <= self.share_swept_at {
            return;
        }
        self.share_swept_at = self.last_commit;
        self.since_share_sweep = 0;
        self.share_swept_when = std::time::Instant::now();
        let last_commit = self.last_commit;
        let shapes = &self.shapes;
        let truths = &self.truths;
        self.unshared.retain(|id| {
            shapes
                .get(id)
                .is_some_and(|shape| !shape.share_truths(truths, last_commit))
        });
    }

    /// [`Registry::share_truths`] for the shapes `ids` only.
    fn share_truths_of(&mut self, ids: &[ShapeId]) {
        if self.unshared.is_empty() {
            return;
        }
        for id in ids {
            if !self.unshared.contains(id) {
                continue;
            }
            let done = self
                .shapes
                .get(id)
                .is_none_or(|shape| shape.share_truths(&self.truths, self.last_commit));
            if done {
                self.unshared.remove(id);
            }
        }
    }

    /// What runs subquery shapes' move-in queries (the edge: Postgres).
    pub fn set_move_runner(&mut self, runner: Box<dyn Fn(MoveInJob)>) {
        self.move_runner = Some(runner);
    }

    /// Where cold shapes' creation records are read from, and how they
    /// become specs.
    pub fn set_loader(&mut self, meta: MetaStore, loader: SpecLoader) {
        self.loader = Some((meta, loader));
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

    /// The flag other shards read to know shape `id` still lives (None if
    /// it does not).
    pub fn liveness(&mut self, id: ShapeId) -> Option<Liveness> {
        if !self.shapes.contains_key(&id) && !self.cold.contains_key(&id) {
            return None;
        }
        Some(
            self.liveness
                .entry(id)
                .or_insert_with(Liveness::new)
                .clone(),
        )
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
        if shape.spec.subqueries.is_some() {
            self.unshared.insert(id);
        }
        let replaced = self.by_definition.insert(shape.spec.canonical.clone(), id);
        assert!(replaced.is_none(), "two live shapes for one definition");
        self.by_handle.insert(shape.handle().to_string(), id);
        let shapes = self.by_relation.entry(relation).or_default();
        match routed_by_values(&shape.spec) {
            // Routed by its subquery's values from its snapshot on (while
            // pending it takes every transaction on the relation anyway).
            Some((column, fixed)) => shapes.add_subquery(id, column, fixed),
            None => shapes.add(id, index_key),
        }
        if pending {
            shapes.pending.push(id);
        }
        self.shapes.insert(id, shape.clone());
        self.by_read.insert((read_stamp, id));
        self.routes.subscribe(relation, self.shard);
        self.route_dependencies(id, &shape);
        shape
    }

    /// Routes a subquery shape's inner relations to it (none for a plain
    /// shape).
    fn route_dependencies(&mut self, id: ShapeId, shape: &Shape) {
        for (dependency, key) in shape.dependency_relations() {
            self.by_dependency
                .entry(dependency)
                .or_default()
                .add(id, key);
            self.routes.subscribe(dependency, self.shard);
        }
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
            unpublished: self.unpublished.clone(),
            column_names,
            state: RefCell::new(ShapeState {
                log: {
                    let mut log = ShapeLog::new(&self.files_dir, id, self.chunk_bytes_max);
                    if spec.subqueries.is_some() {
                        log.serve_durable_only();
                    }
                    log
                },
                snapshot_end: None,
                gate,
                gone: false,
                last_lsn: Lsn::ZERO,
                relation: None,
                subquery: spec.subqueries.as_deref().map(subquery::SubqueryState::new),
            }),
            changed: Notify::new(),
            memory: self.memory.clone(),
            counted: Cell::new(0),
            snapshot_journaled: Cell::new(0),
            move_jobs: self.move_jobs.clone(),
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
        if let Some(flag) = self.liveness.remove(&id) {
            flag.end();
        }
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
        for (dependency, _) in shape.dependency_relations() {
            if let Some(shapes) = self.by_dependency.get_mut(&dependency) {
                shapes.remove(id);
                if shapes.count == 0 {
                    self.by_dependency.remove(&dependency);
                }
            }
            self.routes.unsubscribe(dependency, self.shard);
        }
        self.moving.remove(&id);
        self.reseeding.remove(&id);
        {
            let mut state = shape.state.borrow_mut();
            // Its tail leaves the shard's total now (readers may still hold
            // the shape, but it takes nothing more).
            self.memory.set(self.memory.get() - shape.counted.get());
            shape.counted.set(0);
            state.gone = true;
            state.gate = Gate::Open;
            // Its views (and its hold on a shared truth) go now, not when
            // its last reader lets go of it.
            state.subquery = None;
        }
        shape.changed.notify_all();
    }

    /// The snapshot's visibility is known: replay what was held, dropping
    /// what the snapshot already contains.
    pub fn snapshot_taken(&mut self, id: ShapeId, snapshot: PgSnapshot) {
        let Some(shape) = self.shapes.get(&id).cloned() else {
            return;
        };
        // Its views are seeded: routed by their values before it stops
        // taking every transaction on the relation.
        self.route_by_values(&shape, true);
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
        self.run_moves();
        self.share_truths_of(&[id]);
    }

    /// Starts the move-in queries shapes asked for, and splices those whose
    /// rows and boundary are known; again while splices start new ones.
    fn run_moves(&mut self) {
        let mut settled = Vec::new();
        loop {
            let jobs = std::mem::take(&mut *self.move_jobs.borrow_mut());
            for job in jobs {
                let id = job.shape;
                self.moving.insert(id);
                match &self.move_runner {
                    Some(runner) => runner(job),
                    None => self.remove(id, "no move-in runner on this shard"),
                }
            }
            for id in self.moving.clone() {
                let Some(shape) = self.shapes.get(&id).cloned() else {
                    self.moving.remove(&id);
                    continue;
                };
                let last_seen = self.last_seen;
                match shape.try_splice(last_seen) {
                    Applied::Nothing => {}
                    Applied::Grew => shape.changed.notify_all(),
                    Applied::Invalidated(why) => {
                        self.remove(id, why);
                        continue;
                    }
                }
                self.route_by_values(&shape, false);
                if !shape.is_moving() {
                    self.moving.remove(&id);
                    settled.push(id);
                }
            }
            if self.move_jobs.borrow().is_empty() {
                break;
            }
        }
        self.share_truths_of(&settled);
    }

    /// A move-in query finished: its rows (or its failure, which
    /// invalidates the shape: Electric does the same).
    pub fn move_in_done(
        &mut self,
        id: ShapeId,
        generation: u64,
        result: Result<MoveInRows, String>,
    ) {
        let Some(shape) = self.shapes.get(&id).cloned() else {
            return;
        };
        match result {
            Ok(rows) => shape.move_in_result(generation, rows),
            Err(e) => {
                tracing::warn!(
                    shard = self.shard,
                    handle = shape.handle(),
                    "move-in query failed: {e}"
                );
                self.remove(id, "its move-in query failed");
            }
        }
        self.run_moves();
        self.wake_flush();
    }

    /// The group commit's wake-up (see `flush_wake`).
    pub fn set_flush_wake(&mut self, wake: Rc<Notify>) {
        self.flush_wake = Some(wake);
    }

    /// Items wait to be served: let the group commit flush them now.
    pub fn wake_flush(&self) {
        if let Some(wake) = &self.flush_wake {
            if !self.unpublished.borrow().is_empty() {
                wake.notify_all();
            }
        }
    }

    fn apply_one(&mut self, shape: &Rc<Shape>, tx: &Arc<Transaction>, indices: Option<&[usize]>) {
        match shape.apply(tx, indices) {
            Applied::Nothing => {}
            Applied::Grew => shape.changed.notify_all(),
            Applied::Invalidated(why) => return self.remove(shape.id, why),
        }
        self.route_by_values(shape, false);
    }

    /// Moves a subquery shape's routing by value (see
    /// `Shape::index_changes`) to what its views hold now.
    fn route_by_values(&mut self, shape: &Rc<Shape>, all: bool) {
        if shape.spec.subqueries.is_none() {
            return;
        }
        let Some(shapes) = self.by_relation.get_mut(&shape.relation_id()) else {
            return;
        };
        // A shape with many values takes every row instead (see
        // `BROAD_ABOVE_VALUES`), and is keyed again, by all its values,
        // once it has few.
        let mut all = all;
        match (shape.keyed_values(), shapes.is_broad(shape.id)) {
            (Some(n), false) if n > BROAD_ABOVE_VALUES => shapes.broaden(shape.id),
            (Some(n), true) if n < NARROW_BELOW_VALUES => {
                shapes.narrow(shape.id);
                all = true;
            }
            _ => {}
        }
        if shapes.is_broad(shape.id) {
            // Every row comes anyway: what its values did is not needed.
            shape.forget_key_changes();
            return;
        }
        let (keep, drop) = shape.index_changes(all);
        for value in &keep {
            shapes.key_value(shape.id, value);
        }
        for value in &drop {
            shapes.unkey_value(shape.id, value);
        }
    }

    /// Recovery restored a subquery shape's views: it is routed by their
    /// values from now (it was restored unindexed, taking everything).
    pub fn route_restored_by_values(&mut self, id: ShapeId) {
        let Some(shape) = self.shapes.get(&id).cloned() else {
            return;
        };
        let Some((column, fixed)) = routed_by_values(&shape.spec) else {
            return;
        };
        if let Some(shapes) = self.by_relation.get_mut(&shape.relation_id()) {
            shapes.add_subquery(id, column, fixed);
        }
        self.route_by_values(&shape, true);
    }

    /// Applies a committed transaction to every shape it concerns.
    pub fn apply_transaction(&mut self, tx: &Arc<Transaction>) {
        self.last_seen = self.last_seen.max(tx.end_lsn).max(tx.commit_lsn);
        self.last_commit = self.last_commit.max(tx.commit_lsn);
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
            if !self.by_dependency.is_empty() {
                self.dependency_candidates(change, &mut candidates);
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
        for &id in &ids {
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
        if !self.moving.is_empty() || !self.move_jobs.borrow().is_empty() {
            self.run_moves();
        }
        if !self.unshared.is_empty() {
            self.share_truths_of(&ids);
            self.since_share_sweep += 1;
            if self.since_share_sweep >= SHARE_SWEEP_EVERY
                || self.share_swept_when.elapsed() >= SHARE_SWEEP_INTERVAL
            {
                self.share_truths();
            }
        }
    }

    /// Subquery shapes a change on a table their subqueries read may move.
    fn dependency_candidates(&self, change: &Change, out: &mut Vec<ShapeId>) {
        match change {
            Change::Truncate { relations, .. } => {
                for relation in relations {
                    if let Some(shapes) = self.by_dependency.get(&relation.id) {
                        out.extend(shapes.all());
                    }
                }
            }
            Change::Insert { relation, new } => {
                if let Some(shapes) = self.by_dependency.get(&relation.id) {
                    shapes.candidates(new, None, out);
                }
            }
            Change::Delete { relation, old } => {
                if let Some(shapes) = self.by_dependency.get(&relation.id) {
                    shapes.candidates(&old.1, None, out);
                }
            }
            Change::Update { relation, old, new } => {
                if let Some(shapes) = self.by_dependency.get(&relation.id) {
                    let old_tuple = old.as_ref().map(|(_, t)| t);
                    shapes.candidates(new, old_tuple, out);
                    if let Some(old) = old_tuple {
                        shapes.candidates(old, None, out);
                    }
                }
            }
        }
    }

    /// A relation's new description: shapes on it whose columns no longer
    /// match are invalidated now rather than at their next change.
    pub fn apply_relation(&mut self, relation: &Arc<Relation>) {
        // pgoutput re-sends a table's Relation at every session start and
        // after cache invalidations: the same one again changes nothing.
        let columns = RelationColumns::of(relation);
        if self
            .relations_seen
            .insert(relation.id, columns.fingerprint())
            == Some(columns.fingerprint())
        {
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
        // Subquery shapes reading this table: their mirror reads columns
        // by position, so a change to those invalidates them.
        let stale: Vec<ShapeId> = self
            .by_dependency
            .get(&relation.id)
            .into_iter()
            .flat_map(|shapes| shapes.all())
            .filter(|id| {
                self.shapes.get(id).is_some_and(|shape| {
                    !shape
                        .dependency_fingerprints(relation.id)
                        .all(|fingerprint| columns.keeps(fingerprint, false))
                })
            })
            .collect();
        for id in stale {
            self.remove(id, "a subquery's table's columns changed");
        }
    }

    /// WAL progress with no transaction for this shard.
    pub fn advance(&mut self, lsn: Lsn) {
        self.last_seen = self.last_seen.max(lsn);
        // A move-in whose snapshot saw every transaction held so far
        // splices once the shard is past the snapshot's WAL position.
        if !self.moving.is_empty() {
            self.run_moves();
        }
        self.share_truths();
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

    /// Ids of the shapes, built or cold, whose canonical definition
    /// satisfies `pick` (recovery's one-off upgrades).
    pub fn ids_where(&self, pick: impl Fn(&str) -> bool) -> Vec<ShapeId> {
        let mut ids: Vec<ShapeId> = self
            .shapes
            .values()
            .filter(|s| pick(&s.spec.canonical))
            .map(|s| s.id)
            .chain(
                self.cold
                    .iter()
                    .filter(|(_, c)| pick(&c.canonical))
                    .map(|(&id, _)| id),
            )
            .collect();
        ids.sort_unstable();
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

/// The column a shape's changes are routed by the values of its subquery
/// (see `SubquerySpec::key`), unless its where has a fixed equality key,
/// which routes tighter and never moves.
fn routed_by_values(spec: &ShapeSpec) -> Option<(usize, Vec<(usize, Vec<String>)>)> {
    if spec.filter.as_ref().and_then(|f| f.index_key()).is_some() {
        return None;
    }
    spec.subqueries
        .as_deref()
        .and_then(|s| s.routing())
        .map(|(column, _, fixed)| (column, fixed))
}
