//! A shape whose where clause has subqueries (issue 17, slices 1 and 2:
//! one level, `AND`/`OR`/`NOT`, a column or a row of columns `IN`, whose
//! values are then tuples): the per-shard mirror of each dependency's
//! values, the client's view of them, and the moves that keep the two
//! together (Electric's move-out events and move-in splices).
//!
//! Two views per dependency, because they differ while a move is pending:
//! - the *materializer* is the truth: the dependency's value multiset as
//!   of the last transaction this shape applied (same transactions, same
//!   order, same shard: no barrier with any other shard);
//! - the *client view* is what the shape's log so far reflects: rows are
//!   converted, tagged and evaluated against it. It changes only when a
//!   move is written to the log (a `move-out` event, or a move-in splice).
//!
//! Values whose two views may differ are *pending* (touched by a
//! transaction, not yet moved). Outside a move-in every pending move-out
//! is written at once (before the transaction's own changes, as Electric
//! orders them) and pending move-ins start a move-in query for one
//! dependency; during one, transactions routed to the shape are held
//! (bounded; once the query's snapshot is known, those it saw are applied
//! at once instead, their moves deferred), and the query's rows are
//! spliced between the transactions its snapshot saw and those it did not. Electric's queue
//! rules fall out of comparing the two views when a move is due: the last
//! state per value wins and moves that cancel out are dropped.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::change::{RelationId, Transaction, Xid};
use crate::lsn::Lsn;
use crate::shape::encode::PgSnapshot;
use crate::shape::materializer::{Materializer, MoveBatch, ValueText};
use crate::shape::where_clause::ValueKey;
use crate::shape::where_clause::{SubqueryView, ViewRef, WhereClause};

use super::shape::{RowFilter, ShapeId};
use super::truths::{Base, Source};

/// Electric's `ELECTRIC_SUBQUERY_BUFFER_MAX_TRANSACTIONS` default.
pub const DEFAULT_BUFFER_MAX_TRANSACTIONS: usize = 1000;

/// Rows of one move-in held in memory before they are spliced (the rest of
/// the shape waits for them); over it the shape is invalidated.
pub const MAX_MOVE_IN_BYTES: usize = 64 * 1024 * 1024;

/// What a subquery shape is, beyond a plain shape (fixed at creation).
pub struct SubquerySpec {
    /// The outer where clause, typed with its subqueries (shared with the
    /// shape's filter).
    pub clause: Arc<WhereClause>,
    /// `ELECTRIC_DATABASE_ID`: the tags' salt with the shape's handle.
    pub stack_id: String,
    /// Transactions held during a move-in before the shape is invalidated.
    pub buffer_max: usize,
    /// One per subquery of `clause`, in `WhereClause::dependencies` order.
    pub dependencies: Vec<DependencySpec>,
}

impl SubquerySpec {
    /// The outer column and the dependency whose values route this
    /// shape's rows: a positive `col IN (SELECT ..)` every matching row
    /// must satisfy (`WhereClause::subquery_key`).
    pub fn key(&self) -> Option<(usize, usize)> {
        self.routing().map(|(column, d, _)| (column, d))
    }

    /// [`SubquerySpec::key`] with the fixed keys of an `OR`'s other arms
    /// (`WhereClause::subquery_routing`): rows reach the shape by either.
    pub fn routing(&self) -> Option<(usize, usize, Vec<(usize, Vec<String>)>)> {
        self.clause
            .subquery_routing()
            .filter(|&(_, d, _)| self.dependencies.get(d).is_some_and(|dep| !dep.negated))
    }
}

/// One subquery: the inner table and how a row of it gives a value.
pub struct DependencySpec {
    pub relation: RelationId,
    /// The inner table's fingerprint when the shape was created (a Relation
    /// message that changes those columns invalidates the shape).
    pub fingerprint: u64,
    /// The inner where (its parameters bound); None selects every row.
    /// Shared with its materializer.
    pub filter: Option<Arc<WhereClause>>,
    /// Inner table column indices of the selected columns.
    pub selected: Vec<usize>,
    /// Whether the clause tests this subquery through `NOT`: a value
    /// entering the set moves rows out, one leaving moves rows in (the
    /// outer level's only: a middle level evaluates its where instead).
    pub negated: bool,
    /// A middle level of a nested subquery: one per subquery of `filter`
    /// (its values decide which rows of this table count). Empty for an
    /// innermost level.
    pub children: Vec<DependencySpec>,
    /// A middle level's mirrored columns (ascending): what `filter` reads
    /// and `selected`. Empty for an innermost level.
    pub kept: Vec<usize>,
}

impl DependencySpec {
    /// This level's materializer (and its children's, for a middle level),
    /// its values typed as `view`.
    pub(super) fn materializer(&self, view: SubqueryView) -> Materializer {
        match (&self.filter, self.children.is_empty()) {
            (Some(clause), false) => {
                let children = self
                    .children
                    .iter()
                    .enumerate()
                    .map(|(i, child)| {
                        child.materializer(clause.new_view(i).expect("a view per subquery"))
                    })
                    .collect();
                Materializer::nested(
                    self.relation,
                    Arc::clone(clause),
                    self.selected.clone(),
                    self.kept.clone(),
                    children,
                    view,
                )
            }
            _ => Materializer::new(
                self.relation,
                self.filter
                    .clone()
                    .map(|f| Box::new(f) as Box<dyn RowFilter>),
                self.selected.clone(),
                view,
            ),
        }
    }

    /// This level and every level below it, depth first.
    pub(super) fn levels(&self) -> Vec<&DependencySpec> {
        let mut all = vec![self];
        for child in &self.children {
            all.extend(child.levels());
        }
        all
    }
}

impl RowFilter for Arc<WhereClause> {
    fn matches<'v>(&self, value: &dyn Fn(usize) -> Option<&'v str>) -> bool {
        WhereClause::matches(self, value)
    }

    fn index_key(&self) -> Option<(usize, Vec<String>)> {
        WhereClause::index_key(self)
    }
}

/// A move-in query to run: the shape's select with this where, in a fresh
/// `REPEATABLE READ` snapshot; its result comes back through
/// `Registry::move_in_done` with the same `generation`.
#[derive(Clone, Debug)]
pub struct MoveInJob {
    pub shape: ShapeId,
    pub generation: u64,
    pub where_sql: String,
    pub params: Vec<String>,
}

/// A move-in query's result: its snapshot (with the WAL insert position
/// read after it) and its rows, table-width text.
#[derive(Clone, Debug)]
pub struct MoveInRows {
    pub snapshot: PgSnapshot,
    pub rows: Vec<Vec<Option<String>>>,
}

/// A transaction a move-in holds: its changes routed to the shape (None:
/// all), and per dependency the moves a shared truth made of it when it
/// arrived (None: the private materializer applies it when it is applied).
pub(super) struct HeldTx {
    pub(super) tx: Arc<Transaction>,
    pub(super) indices: Option<Vec<usize>>,
    pub(super) moves: Vec<Option<MoveBatch>>,
}

/// The move-in in flight.
pub(super) struct ActiveMove {
    pub(super) generation: u64,
    pub(super) dependency: usize,
    /// The dependency values that move (entering the set, or leaving a
    /// negated one's).
    pub(super) values: Vec<ValueText>,
    pub(super) txids: Vec<Xid>,
    /// Transactions routed to the shape since the move started, in order.
    pub(super) held: Vec<HeldTx>,
    pub(super) result: Option<MoveInRows>,
}

pub(super) struct SubqueryState {
    /// Per dependency: the truth, the shard's shared one once this shape
    /// is at the shard's position (`truths.rs`).
    pub(super) truths: Vec<Source>,
    /// Per dependency: the values the shape's log reflects.
    pub(super) client: Vec<ClientView>,
    /// Per dependency: values touched since they last agreed, with the
    /// xids that touched them (ordered: deterministic event contents).
    pub(super) pending: Vec<BTreeMap<ValueText, Vec<Xid>>>,
    pub(super) moving: Option<ActiveMove>,
    pub(super) generation: u64,
    /// Until the snapshot's rows are all written, a snapshot row's active
    /// conditions are those of the snapshot's time: the views as seeded.
    /// Transactions after the snapshot may move the client views while
    /// rows still stream, so the first such move keeps a copy of them
    /// first (`seeded`); most snapshots end before any move.
    pub(super) streaming: bool,
    pub(super) seeded: Option<Vec<SubqueryView>>,
    /// Restored from a clean stop's views (`kept_views.rs`): the shard had
    /// processed every transaction committed below this position before
    /// the stop, so one sent again (Postgres resends from the fence, the
    /// minimum over shards) is skipped whole. Its outer changes may have
    /// been filtered out under the client views of its time; evaluated
    /// again under today's, they could enter twice.
    pub(super) resume_after: Lsn,
    /// The dependency the registry routes this shape's rows by (see
    /// `WhereClause::subquery_key`), if any, and its values whose routing
    /// may have to change: touched by a transaction or a move since the
    /// registry last looked (`Shape::index_changes`).
    pub(super) keyed: Option<usize>,
    pub(super) key_touched: Vec<ValueText>,
    /// What a crash must find (`durable_views.rs`): the client views'
    /// version (bumped by every move) and the first transaction held, as
    /// last journaled and as the last successful checkpoint wrote them.
    pub(super) views_version: u64,
    pub(super) held_journaled: Lsn,
    pub(super) saved: Option<(u64, Lsn)>,
    /// Recovery: the client views were restored (from the checkpoint or
    /// the segment log), and the first transaction the shape held then.
    pub(super) views_restored: bool,
    pub(super) restored_held_from: Lsn,
    /// After a crash: the truth is being read again (`Registry::reseed`);
    /// transactions are held by the gate meanwhile. Then the snapshot it
    /// was read in, whose transactions the materializers skip.
    pub(super) reseeding: bool,
    pub(super) reseed_filter: Option<PgSnapshot>,
    /// The gate the shape had before its re-read (its own snapshot's
    /// filter, still dropping transactions that snapshot saw), back after.
    pub(super) gate_after_reseed: Option<super::shape::Gate>,
}

impl SubqueryState {
    pub(super) fn new(spec: &SubquerySpec) -> SubqueryState {
        let n = spec.dependencies.len();
        let view = |i: usize| {
            spec.clause
                .new_view(i)
                .expect("one dependency per subquery of the clause")
        };
        SubqueryState {
            truths: spec
                .dependencies
                .iter()
                .enumerate()
                .map(|(i, d)| Source::Private(d.materializer(view(i))))
                .collect(),
            client: (0..n).map(|i| ClientView::Own(view(i))).collect(),
            pending: vec![BTreeMap::new(); n],
            moving: None,
            generation: 0,
            streaming: true,
            seeded: None,
            resume_after: Lsn::ZERO,
            keyed: spec.key().map(|(_, d)| d),
            key_touched: Vec::new(),
            views_version: 0,
            held_journaled: Lsn::ZERO,
            saved: None,
            views_restored: false,
            restored_held_from: Lsn::ZERO,
            reseeding: false,
            reseed_filter: None,
            gate_after_reseed: None,
        }
    }

    /// Notes that dependency `d`'s `value` may have entered or left its
    /// views (for the registry's routing by value).
    pub(super) fn touch(&mut self, d: usize, value: &ValueText) {
        if self.keyed == Some(d) {
            self.key_touched.push(value.clone());
        }
    }

    /// Each dependency's truth's own view, to read client views over.
    pub(super) fn bases(&self) -> Vec<Base<'_>> {
        self.truths.iter().map(Source::base).collect()
    }

    /// The client views, as the clause's evaluation takes them (`bases`
    /// from [`SubqueryState::bases`]).
    pub(super) fn views<'a>(&'a self, bases: &'a [Base<'a>]) -> Vec<Option<ViewRef<'a>>> {
        self.client
            .iter()
            .zip(bases)
            .map(|(client, base)| Some(client.view(base)))
            .collect()
    }

    /// A whole copy of every client view.
    fn whole_client_views(&self) -> Vec<SubqueryView> {
        let bases = self.bases();
        self.client
            .iter()
            .zip(&bases)
            .map(|(client, base)| match client {
                ClientView::Own(view) => view.clone(),
                ClientView::Over { .. } => {
                    let mut whole = client.empty_like();
                    for (value, _) in client.view(base).counted_texts() {
                        set_add(&mut whole, &value);
                    }
                    whole
                }
            })
            .collect()
    }

    /// Whether dependency `d`'s client view holds `key`.
    pub(super) fn client_holds(&self, d: usize, key: &ValueKey) -> bool {
        let base = self.truths[d].base();
        let holds = self.client[d].view(&base).holds(key);
        if let ClientView::Over {
            whole: Some(whole), ..
        } = &self.client[d]
        {
            assert_eq!(
                holds,
                whole.holds(key),
                "client view over its truth: {key:?}"
            );
        }
        holds
    }

    /// Client views of dependencies whose truth is now shared are kept
    /// over it (they were whole while it was private).
    pub(super) fn share_client_views(&mut self) {
        for ((truth, client), pending) in
            self.truths.iter().zip(&mut self.client).zip(&self.pending)
        {
            if truth.is_shared() {
                client.keep_over(&truth.base(), pending);
            }
        }
    }
}

/// A shape's client view of one dependency.
pub(super) enum ClientView {
    /// Kept whole, while the shape's truth is its own (seeding, restored,
    /// read again after a crash).
    Own(SubqueryView),
    /// Kept over the shared truth's view, as the values whose presence
    /// differs from it: they are equal at rest, so each more shape with
    /// the same subquery costs next to nothing per value. Every move of
    /// the shared truth that this shape applies or captures flips those
    /// values back (`ClientView::base_moved`).
    Over {
        flips: SubqueryView,
        /// Debug builds: the whole view, kept too, to check reads against.
        whole: Option<Box<SubqueryView>>,
    },
}

impl ClientView {
    /// The view as evaluation reads it; `base` is the truth's own view.
    pub(super) fn view<'a>(&'a self, base: &'a SubqueryView) -> ViewRef<'a> {
        match self {
            ClientView::Own(view) => view.into(),
            ClientView::Over { flips, whole } => {
                let view = ViewRef::over(base, flips);
                // (Not while many values are in flight: each read would
                // be as long as they are.)
                if let Some(whole) = whole.as_ref().filter(|_| flips.len() <= 256) {
                    assert_same(view, whole, 64);
                }
                view
            }
        }
    }

    /// The whole view, while it is kept whole (seeding, restoring).
    pub(super) fn own_mut(&mut self) -> Option<&mut SubqueryView> {
        match self {
            ClientView::Own(view) => Some(view),
            ClientView::Over { .. } => None,
        }
    }

    /// Its number of values while it is kept whole.
    pub(super) fn whole_len(&self) -> Option<usize> {
        match self {
            ClientView::Own(view) => Some(view.len()),
            ClientView::Over { .. } => None,
        }
    }

    /// An empty view of the same types.
    pub(super) fn empty_like(&self) -> SubqueryView {
        match self {
            ClientView::Own(view) => view.empty_like(),
            ClientView::Over { flips, .. } => flips.empty_like(),
        }
    }

    /// Makes `value` present or absent (a move written to the log).
    pub(super) fn set(&mut self, base: &SubqueryView, value: &[Option<&str>], present: bool) {
        match self {
            ClientView::Own(view) => set_present(view, value, present),
            ClientView::Over { flips, whole } => {
                let Some(key) = base.key_of(value) else {
                    return;
                };
                if ViewRef::over(base, flips).holds(&key) != present {
                    flips.toggle(value);
                }
                if let Some(whole) = whole {
                    set_present(whole, value, present);
                }
            }
        }
    }

    /// A copy to change (a move-in's view after it), without the debug
    /// builds' whole view.
    pub(super) fn detached(&self) -> ClientView {
        match self {
            ClientView::Own(view) => ClientView::Own(view.clone()),
            ClientView::Over { flips, .. } => ClientView::Over {
                flips: flips.clone(),
                whole: None,
            },
        }
    }

    /// The shared truth this view is kept over moved `batch` (the shape
    /// applied or captured it): the view stays as it was.
    pub(super) fn base_moved(&mut self, batch: &MoveBatch) {
        if let ClientView::Over { flips, .. } = self {
            for value in batch.moved_in.iter().chain(&batch.moved_out) {
                flips.toggle(&as_refs(value));
            }
        }
    }

    /// Keeps a whole view over `base` from now (its truth became shared).
    /// The two differ at most on `pending` values (every other value's
    /// views agree: that is what pending means), so only those are looked
    /// at; a value set of a million costs no pass over it on the shard.
    fn keep_over(&mut self, base: &SubqueryView, pending: &BTreeMap<ValueText, Vec<Xid>>) {
        let ClientView::Own(own) = self else {
            return;
        };
        let mut flips = own.empty_like();
        for value in pending.keys() {
            let text = as_refs(value);
            if base
                .key_of(&text)
                .is_some_and(|k| own.holds(&k) != base.holds(&k))
            {
                flips.add(&text);
            }
        }
        if cfg!(debug_assertions) {
            assert_same(ViewRef::over(base, &flips), own, usize::MAX);
        }
        let whole = std::mem::replace(own, flips.empty_like());
        *self = ClientView::Over {
            flips,
            whole: Some(whole).filter(|_| cfg!(debug_assertions)).map(Box::new),
        };
    }
}

/// Debug checks: a client view kept over its truth is the whole view it
/// stands for (its size, and each value when there are at most `up_to`).
fn assert_same(over: ViewRef, whole: &SubqueryView, up_to: usize) {
    assert_eq!(over.len(), whole.len(), "client view over its truth");
    if whole.len() <= up_to {
        for (value, _) in whole.counted_texts() {
            let key = whole.key_of(&value).expect("a kept value has a key");
            assert!(
                over.holds(&key),
                "client view over its truth lost {value:?}"
            );
        }
    }
}

/// How a value's two views differ, as the shape sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Due {
    /// They agree: nothing to do.
    None,
    /// Rows with this value leave the shape (a move-out event).
    Out,
    /// Rows with this value enter it (a move-in query).
    In,
}

/// Adds a value to a view kept as a set (the client's).
pub(super) fn set_add(view: &mut SubqueryView, value: &[Option<&str>]) {
    if view.key_of(value).is_some_and(|k| !view.holds(&k)) {
        view.add(value);
    }
}

/// Adds or removes a value of a view kept as a set.
pub(super) fn set_present(view: &mut SubqueryView, value: &[Option<&str>], present: bool) {
    if present {
        set_add(view, value);
    } else {
        view.remove(value);
    }
}

pub(super) fn as_refs(value: &ValueText) -> Vec<Option<&str>> {
    value.iter().map(|t| t.as_deref()).collect()
}

impl SubqueryState {
    /// What a pending value of dependency `d` calls for now.
    pub(super) fn due(&self, spec: &SubquerySpec, d: usize, value: &ValueText) -> Due {
        let text = as_refs(value);
        let Some(key) = self.truths[d].base().key_of(&text) else {
            return Due::None;
        };
        let truth = self.truths[d].holds(&key);
        let client = self.client_holds(d, &key);
        let negated = spec.dependencies[d].negated;
        match (truth, client) {
            (true, false) if negated => Due::Out,
            (true, false) => Due::In,
            (false, true) if negated => Due::In,
            (false, true) => Due::Out,
            _ => Due::None,
        }
    }

    /// Writes a move into the client view of dependency `d`.
    pub(super) fn move_client(
        &mut self,
        spec: &SubquerySpec,
        d: usize,
        value: &ValueText,
        due: Due,
    ) {
        if self.streaming && self.seeded.is_none() {
            tracing::debug!(
                "a move while the snapshot's rows stream: the views as seeded are kept"
            );
            self.seeded = Some(self.whole_client_views());
        }
        self.touch(d, value);
        let text = as_refs(value);
        // Positive: moving in adds the value; negated: removes it.
        let add = (due == Due::In) != spec.dependencies[d].negated;
        let base = self.truths[d].base();
        self.client[d].set(&base, &text, add);
    }
}

/// The splice boundary of a finished move-in: how many held transactions
/// precede it (seen by the query's snapshot), or None while that cannot be
/// known yet (every held one was seen, and a later one may still come).
pub(super) fn boundary(active: &ActiveMove, last_seen: Lsn) -> Option<usize> {
    let result = active.result.as_ref()?;
    let snapshot = &result.snapshot;
    if let Some(n) = active
        .held
        .iter()
        .position(|h| !snapshot.holds(h.tx.xid, h.tx.commit_lsn.0))
    {
        return Some(n);
    }
    // Every transaction the snapshot saw committed below its WAL position:
    // once the shard has processed that far, none is still to come.
    match snapshot.wal_lsn {
        Some(lsn) if last_seen.0 >= lsn => Some(active.held.len()),
        _ => None,
    }
}
