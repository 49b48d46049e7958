//! How a transaction applies to a subquery shape, and the moves it causes:
//! `move-out` events written before the transaction's own changes,
//! move-ins started as queries and spliced into the log when their rows
//! and their place among the held transactions are both known (see
//! `subquery.rs` for the two views these keep together).
//!
//! Offsets: entries keep `(commit LSN, 2 × index)`. A move item takes the
//! position right after the log's last item, or `(last applied commit
//! LSN, 0)` when that transaction wrote nothing, so it sorts after every
//! earlier item and before the next transaction's (whose commit LSN is
//! higher). They are not derived from the WAL alone, so after a crash
//! they are not made again identically: these shapes serve only durable
//! items (`durable_views.rs`).

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::change::{RelationId, Transaction};
use crate::lsn::Lsn;
use crate::shape::convert::{Converter, RowTags};
use crate::shape::encode::{self, Move, Tagging};
use crate::shape::materializer::{Materialized, MoveBatch, ValueText};
use crate::shape::offset::LogOffset;
use crate::shape::where_clause::{TagSalt, ViewRef};

use super::shape::{Applied, Shape, ShapeState};
use super::subquery::{
    as_refs, boundary, ActiveMove, DependencySpec, Due, HeldTx, MoveInJob, MoveInRows,
    SubquerySpec, SubqueryState,
};

type Step = Result<bool, &'static str>;

impl Shape {
    pub(super) fn subquery_spec(&self) -> Option<&SubquerySpec> {
        self.spec.subqueries.as_deref()
    }

    fn salt(&self) -> TagSalt<'_> {
        TagSalt {
            stack_id: self
                .subquery_spec()
                .map_or("single_stack", |s| s.stack_id.as_str()),
            handle: self.handle(),
        }
    }

    /// A snapshot or move-in row of a subquery shape, tagged and with its
    /// active conditions under the client views; false (nothing written)
    /// for a plain shape.
    pub(super) fn tagged_row(
        &self,
        out: &mut Vec<u8>,
        row: &[Option<&str>],
        move_in: bool,
    ) -> bool {
        let state = self.state.borrow();
        let (Some(spec), Some(sub)) = (self.subquery_spec(), state.subquery.as_ref()) else {
            return false;
        };
        let bases = sub.bases();
        let views: Vec<Option<ViewRef>> = match (&sub.seeded, move_in) {
            (Some(seeded), false) => seeded.iter().map(|v| Some(v.into())).collect(),
            _ => sub.views(&bases),
        };
        self.encode_tagged(spec, &views, out, row, move_in);
        true
    }

    /// One row's JSON with its tags and its active conditions under `views`.
    fn encode_tagged(
        &self,
        spec: &SubquerySpec,
        views: &[Option<ViewRef>],
        out: &mut Vec<u8>,
        row: &[Option<&str>],
        move_in: bool,
    ) {
        let value = |i: usize| row.get(i).copied().flatten();
        let tags = spec.clause.tags(&value, &self.salt());
        let active = spec.clause.active_conditions(&value, views);
        let tagging = Tagging {
            tags: &tags,
            removed_tags: None,
            active_conditions: &active,
        };
        encode::tagged_row(out, &self.layout(), row, tagging, move_in);
    }

    /// Counts a row of a seeding query (run in the shape's snapshot
    /// transaction, before any transaction is applied): `path` names the
    /// level, the outer clause's dependency first, then the subquery of
    /// each middle level's where (see `Materializer::seed_at`).
    pub fn seed_dependency(&self, path: &[usize], value: &[Option<&str>]) {
        let mut state = self.state.borrow_mut();
        let Some(sub) = state.subquery.as_mut() else {
            return;
        };
        let Some((&d, rest)) = path.split_first() else {
            return;
        };
        let Some(m) = sub.truths.get_mut(d).and_then(|t| t.private_mut()) else {
            return;
        };
        m.seed_at(rest, value);
        if m.is_nested() || sub.reseeding {
            // Its values come once every level is seeded; a re-read after
            // a restart seeds the truth only (the client views are durable).
            return;
        }
        if let Some(client) = sub.client.get_mut(d).and_then(|c| c.own_mut()) {
            super::subquery::set_add(client, value);
        }
    }

    /// Every seeding row is in: middle levels compute their values, and
    /// the outer level's views take those of nested dependencies.
    pub fn finish_seeds(&self) -> Result<(), &'static str> {
        let mut state = self.state.borrow_mut();
        let Some(sub) = state.subquery.as_mut() else {
            return Ok(());
        };
        for d in 0..sub.truths.len() {
            let Some(m) = sub.truths[d].private_mut().filter(|m| m.is_nested()) else {
                continue;
            };
            m.finish_seed()?;
            if sub.reseeding {
                continue;
            }
            for value in crate::shape::nested::distinct_values(m.view()) {
                let text = as_refs(&value);
                if let Some(client) = sub.client[d].own_mut() {
                    super::subquery::set_add(client, &text);
                }
            }
        }
        if !sub.reseeding {
            self.journal_view_set(sub);
        }
        Ok(())
    }

    /// The relations this shape's subqueries read at every level (each
    /// once), with the index key changes on it are routed by: an
    /// innermost level's where's (its equality column), when it alone
    /// reads that relation. A middle level mirrors every row of its table.
    pub(super) fn dependency_relations(&self) -> Vec<(RelationId, Option<(usize, Vec<String>)>)> {
        let Some(spec) = self.subquery_spec() else {
            return Vec::new();
        };
        let levels: Vec<&DependencySpec> =
            spec.dependencies.iter().flat_map(|d| d.levels()).collect();
        let mut relations: Vec<RelationId> = levels.iter().map(|d| d.relation).collect();
        relations.sort_unstable();
        relations.dedup();
        relations
            .into_iter()
            .map(|relation| {
                let mut reading = levels.iter().filter(|d| d.relation == relation);
                let key = match (reading.next(), reading.next()) {
                    (Some(only), None) if only.children.is_empty() => {
                        only.filter.as_ref().and_then(|f| f.index_key())
                    }
                    _ => None,
                };
                (relation, key)
            })
            .collect()
    }

    /// The stored fingerprints of the subqueries reading `relation`, at
    /// every level.
    pub(super) fn dependency_fingerprints(
        &self,
        relation: RelationId,
    ) -> impl Iterator<Item = u64> + '_ {
        self.subquery_spec()
            .into_iter()
            .flat_map(|s| s.dependencies.iter())
            .flat_map(|d| d.levels())
            .filter(move |d| d.relation == relation)
            .map(|d| d.fingerprint)
    }

    /// The snapshot's rows are all written: its seeded views can go.
    pub(super) fn drop_seeded_views(&self) {
        if let Some(sub) = self.state.borrow_mut().subquery.as_mut() {
            sub.streaming = false;
            sub.seeded = None;
        }
    }

    /// How many values the dependency this shape is routed by holds (the
    /// larger of its two views), if it is routed by one.
    pub(super) fn keyed_values(&self) -> Option<usize> {
        let state = self.state.borrow();
        let sub = state.subquery.as_ref()?;
        let d = sub.keyed?;
        // A client view kept over the truth is about as large (counting
        // it would read every value in flight).
        let base = sub.truths[d].base();
        let client = sub.client[d].whole_len().unwrap_or(0);
        Some(base.len().max(client))
    }

    /// Forgets the values whose routing may have changed (a broad shape,
    /// routed every row, has no use for them).
    pub(super) fn forget_key_changes(&self) {
        if let Some(sub) = self.state.borrow_mut().subquery.as_mut() {
            sub.key_touched.clear();
        }
    }

    /// The routing by value this shape asks of the registry since it last
    /// asked: values to route to it, values to stop routing. A value is
    /// routed while either view holds it or a move of it is pending, and
    /// kept while a move-in is in flight (a held transaction is applied
    /// later under views the splice changes). `all`: every value of its
    /// views (after seeding or a restore).
    pub(super) fn index_changes(&self, all: bool) -> (Vec<String>, Vec<String>) {
        let mut state = self.state.borrow_mut();
        let Some(sub) = state.subquery.as_mut() else {
            return (Vec::new(), Vec::new());
        };
        let Some(d) = sub.keyed else {
            return (Vec::new(), Vec::new());
        };
        // Every value of the views or pending is routed (no copy of the
        // values on the way: views may hold millions).
        let mut keep: Vec<String> = Vec::new();
        if all {
            keep = {
                let base = sub.truths[d].base();
                sub.client[d]
                    .view(&base)
                    .counted_texts()
                    .chain(base.counted_texts())
                    .filter_map(|(value, _)| value.first().copied().flatten().map(str::to_string))
                    .collect()
            };
            keep.extend(
                sub.pending[d]
                    .keys()
                    .filter_map(|value| value.first().cloned().flatten()),
            );
            keep.sort_unstable();
            keep.dedup();
        }
        if sub.key_touched.is_empty() {
            return (keep, Vec::new());
        }
        let at_rest = sub.moving.is_none();
        let mut drop = Vec::new();
        let mut later = Vec::new();
        for value in std::mem::take(&mut sub.key_touched) {
            // A NULL matches no row under `IN`: never routed.
            let Some(Some(text)) = value.first().cloned() else {
                continue;
            };
            let refs = super::subquery::as_refs(&value);
            let key = sub.truths[d].base().key_of(&refs);
            let held = key.is_some_and(|k| sub.client_holds(d, &k) || sub.truths[d].holds(&k))
                || sub.pending[d].contains_key(&value);
            if held {
                keep.push(text);
            } else if at_rest {
                drop.push(text);
            } else {
                later.push(value);
            }
        }
        sub.key_touched = later;
        (keep, drop)
    }

    /// Joins the shard's shared truths once this shape is at the shard's
    /// position (`truths.rs`): its snapshot's filter is over (or the shard
    /// is past the snapshot's WAL position), nothing is held or read
    /// again, and a restored shape's skip is behind. `last_commit`: the
    /// shard's last applied transaction. True when nothing is left to join.
    pub(super) fn share_truths(&self, truths: &super::truths::Truths, last_commit: Lsn) -> bool {
        let mut state = self.state.borrow_mut();
        let Some(spec) = self.subquery_spec().filter(|_| !state.gone) else {
            return true;
        };
        let caught_up = match &state.gate {
            super::shape::Gate::Open => true,
            super::shape::Gate::Filtering(s) => s.wal_lsn.is_some_and(|w| w <= last_commit.0),
            super::shape::Gate::Pending(_) => false,
        };
        let Some(sub) = state.subquery.as_mut() else {
            return true;
        };
        // A re-read's snapshot holds no transaction from the shard's
        // position on once the shard is past its WAL position: its filter
        // is over even if no transaction reached this shape since.
        if sub
            .reseed_filter
            .as_ref()
            .is_some_and(|s| s.wal_lsn.is_some_and(|w| w <= last_commit.0))
        {
            sub.reseed_filter = None;
        }
        if !caught_up
            || last_commit == Lsn::ZERO
            || sub.moving.is_some()
            || sub.reseeding
            || sub.reseed_filter.is_some()
            || sub.resume_after > last_commit
        {
            return false;
        }
        for (d, truth) in sub.truths.iter_mut().enumerate() {
            if truth.is_shared() {
                continue;
            }
            let Some(view) = spec.clause.new_view(d) else {
                continue;
            };
            truth.share(truths, spec.dependencies[d].definition(&view), last_commit);
        }
        sub.share_client_views();
        true
    }

    /// Whether a move-in is in flight (queried or waiting to splice).
    pub fn is_moving(&self) -> bool {
        self.state
            .borrow()
            .subquery
            .as_ref()
            .is_some_and(|s| s.moving.is_some())
    }

    pub(super) fn apply_subquery(
        &self,
        state: &mut ShapeState,
        tx: &Arc<Transaction>,
        indices: Option<&[usize]>,
    ) -> Applied {
        let Some(spec) = self.subquery_spec() else {
            return Applied::Invalidated("a subquery shape without its subqueries");
        };
        let result = self.route(state, spec, tx, indices, None);
        self.journal_held(state);
        self.recount(state);
        match result {
            Ok(true) => Applied::Grew,
            Ok(false) => Applied::Nothing,
            Err(why) => Applied::Invalidated(why),
        }
    }

    /// A transaction in order: held while a move-in is in flight (bounded:
    /// Electric's `ELECTRIC_SUBQUERY_BUFFER_MAX_TRANSACTIONS`, then the
    /// shape is invalidated rather than memory grow or rows go wrong),
    /// applied otherwise.
    fn route(
        &self,
        state: &mut ShapeState,
        spec: &SubquerySpec,
        tx: &Arc<Transaction>,
        indices: Option<&[usize]>,
        moves: Option<Vec<Option<MoveBatch>>>,
    ) -> Step {
        let sub = state.subquery.as_mut().ok_or("no subquery state")?;
        if tx.commit_lsn < sub.resume_after {
            return Ok(false);
        }
        let SubqueryState {
            moving,
            truths,
            client,
            ..
        } = sub;
        if let Some(active) = moving.as_mut() {
            // Once the move-in's snapshot is known, a transaction it saw
            // goes before the splice whatever comes next: apply it now
            // (its moves deferred) rather than hold it. A shard lagging
            // behind a busy database would otherwise hold everything
            // between its position and the snapshot.
            let seen = active.held.is_empty()
                && active
                    .result
                    .as_ref()
                    .is_some_and(|r| r.snapshot.holds(tx.xid, tx.commit_lsn.0));
            if seen {
                return self.process(state, spec, tx, indices, moves, true);
            }
            if active.held.len() >= spec.buffer_max {
                return Err("subquery buffer overflow");
            }
            // A shared truth moves on with the shard: what it made of the
            // transaction is kept for when the shape applies it.
            let moves = match moves {
                Some(moves) => moves,
                None => {
                    let mut moves = Vec::with_capacity(truths.len());
                    for (truth, client) in truths.iter_mut().zip(client.iter_mut()) {
                        let batch = truth.capture(tx)?;
                        if let Some(batch) = &batch {
                            client.base_moved(batch);
                        }
                        moves.push(batch);
                    }
                    moves
                }
            };
            active.held.push(HeldTx {
                tx: tx.clone(),
                indices: indices.map(<[usize]>::to_vec),
                moves,
            });
            return Ok(false);
        }
        self.process(state, spec, tx, indices, moves, false)
    }

    /// Applies one transaction: the dependencies' truths (or the moves
    /// they made of it when it arrived held, `moves`), then (unless
    /// `deferred`, inside a splice) the due move-outs, then the
    /// transaction's own changes against the client views, then (unless
    /// deferred) a move-in if one is due.
    fn process(
        &self,
        state: &mut ShapeState,
        spec: &SubquerySpec,
        tx: &Transaction,
        indices: Option<&[usize]>,
        mut moves: Option<Vec<Option<MoveBatch>>>,
        deferred: bool,
    ) -> Step {
        let all: Vec<usize>;
        let indices = match indices {
            Some(i) => i,
            None => {
                all = (0..tx.changes.len()).collect();
                &all
            }
        };
        if let Some(why) = self.check_changes(state, tx, indices) {
            return Err(why);
        }
        let sub = state.subquery.as_mut().ok_or("no subquery state")?;
        // After a restart the truth was read again in a snapshot: the
        // transactions it saw are in it already.
        let seen = match &sub.reseed_filter {
            Some(s) if s.holds(tx.xid, tx.commit_lsn.0) => true,
            Some(s) => {
                if s.ends_filtering(tx.xid, tx.commit_lsn.0) {
                    sub.reseed_filter = None;
                }
                false
            }
            None => false,
        };
        for (d, truth) in sub.truths.iter_mut().enumerate() {
            let captured = moves
                .as_mut()
                .and_then(|m| m.get_mut(d))
                .and_then(Option::take);
            if let Some(batch) = &captured {
                truth.release(batch, tx);
            }
            if seen {
                continue;
            }
            let result = match captured {
                Some(batch) if batch.moved_in.is_empty() && batch.moved_out.is_empty() => {
                    Materialized::Unchanged
                }
                Some(batch) => Materialized::Moved(batch),
                None => {
                    let result = truth.apply(tx);
                    if let Materialized::Moved(batch) = &result {
                        sub.client[d].base_moved(batch);
                    }
                    result
                }
            };
            match result {
                Materialized::Unchanged => {}
                Materialized::Invalidated(why) => return Err(why),
                Materialized::Moved(batch) => {
                    for value in batch.moved_in.into_iter().chain(batch.moved_out) {
                        if sub.keyed == Some(d) {
                            sub.key_touched.push(value.clone());
                        }
                        let xids = sub.pending[d].entry(value).or_default();
                        for &xid in &batch.txids {
                            if !xids.contains(&xid) {
                                xids.push(xid);
                            }
                        }
                    }
                }
            }
        }
        let mut grew = false;
        if !deferred {
            grew |= self.write_move_outs(state, spec, Some(tx.commit_lsn))?;
        }
        {
            let ShapeState { log, subquery, .. } = &mut *state;
            let sub = subquery.as_ref().ok_or("no subquery state")?;
            let bases = sub.bases();
            let views = sub.views(&bases);
            let clause = &spec.clause;
            let salt = self.salt();
            let filter = |row: &[Option<&str>]| {
                clause.matches_with(&|i| row.get(i).copied().flatten(), &views)
            };
            let tagger = |row: &[Option<&str>]| {
                let value = |i: usize| row.get(i).copied().flatten();
                RowTags {
                    tags: clause.tags(&value, &salt),
                    active_conditions: clause.active_conditions(&value, &views),
                }
            };
            let converter = Converter {
                layout: self.layout(),
                replica: self.spec.definition.replica,
                filter: Some(&filter),
                tagger: Some(&tagger),
            };
            grew |= self.append_converted(log, tx, indices, &converter);
        }
        state.last_lsn = tx.commit_lsn;
        if !deferred {
            self.start_move_in(state, spec)?;
        }
        Ok(grew)
    }

    /// The offset of the next move item (see the module doc); `current` is
    /// the transaction being applied, if any.
    fn next_move_offset(
        state: &ShapeState,
        current: Option<Lsn>,
    ) -> Result<LogOffset, &'static str> {
        let last = state.log.last_offset();
        if last.tx() > 0 && last.tx() >= state.last_lsn.0 {
            let op = last
                .op()
                .checked_add(1)
                .ok_or("a move past the last offset")?;
            return Ok(LogOffset::At { tx: last.tx(), op });
        }
        if state.last_lsn.0 > 0 {
            return Ok(LogOffset::At {
                tx: state.last_lsn.0,
                op: 0,
            });
        }
        match current {
            Some(lsn) if lsn.0 > 1 => Ok(LogOffset::At {
                tx: lsn.0 - 1,
                op: 0,
            }),
            _ => Err("no log position for a move"),
        }
    }

    fn append_move_item(&self, state: &mut ShapeState, current: Option<Lsn>, bytes: &[u8]) -> Step {
        let offset = Self::next_move_offset(state, current)?;
        self.append_item(&mut state.log, Lsn(offset.tx()), offset, bytes);
        Ok(true)
    }

    /// Patterns of a move of `values` of dependency `d`: every position
    /// testing it with the hash of every row the move decides, by
    /// position. That is each value's own hash (Electric's pattern), but
    /// SQL's NULLs decide which rows a value moves:
    /// - under `IN`, a value with a NULL equals no row, so it has none
    ///   (its pattern would activate a held row's NULL position);
    /// - under `NOT IN`, rows with NULLs where the value has none do not
    ///   surely differ from it either, so each such variant is a pattern
    ///   too when `NOT IN` `view` holds for it (`view` being the client
    ///   view before a move-out, after a move-in: the variants whose
    ///   rows this move takes out or brings back). For a single column
    ///   that is NULL while the set is empty.
    fn patterns(
        &self,
        spec: &SubquerySpec,
        d: usize,
        values: &[ValueText],
        view: ViewRef,
    ) -> Result<Vec<(usize, String)>, &'static str> {
        let salt = self.salt();
        let negated = spec.dependencies[d].negated;
        let mut patterns: Vec<(usize, String)> = Vec::new();
        for value in values {
            let text = as_refs(value);
            let has_null = text.iter().any(Option::is_none);
            if !negated && has_null {
                continue;
            }
            patterns.extend(spec.clause.move_patterns(d, &text, &salt));
            if negated && !has_null {
                let variants = view
                    .null_variants_not_in(&text)
                    .ok_or("a NOT IN row form with too many columns to move")?;
                for variant in variants {
                    patterns.extend(spec.clause.move_patterns(d, &variant, &salt));
                }
            }
        }
        patterns.sort();
        patterns.dedup();
        Ok(patterns)
    }

    /// Writes one `move-out` event per dependency with values due to move
    /// out, and moves them out of the client view; drops pending values
    /// whose views agree again.
    fn write_move_outs(
        &self,
        state: &mut ShapeState,
        spec: &SubquerySpec,
        current: Option<Lsn>,
    ) -> Step {
        let mut grew = false;
        for d in 0..spec.dependencies.len() {
            let sub = state.subquery.as_mut().ok_or("no subquery state")?;
            let mut patterns: Vec<(usize, String)> = Vec::new();
            let mut txids: BTreeSet<u64> = BTreeSet::new();
            let pending: Vec<ValueText> = sub.pending[d].keys().cloned().collect();
            for value in pending {
                match sub.due(spec, d, &value) {
                    Due::None => {
                        sub.pending[d].remove(&value);
                    }
                    Due::In => {}
                    Due::Out => {
                        // A value with a NULL entering a `NOT IN` set
                        // makes the test unknown for every row (a
                        // column) or every row agreeing with its other
                        // columns (a row): no finite set of patterns
                        // names them.
                        if spec.dependencies[d].negated && value.iter().any(Option::is_none) {
                            return Err("a NULL entered a NOT IN subquery's values");
                        }
                        if let Some(xids) = sub.pending[d].remove(&value) {
                            txids.extend(xids.into_iter().map(u64::from));
                        }
                        // Against the view before this value moves: the
                        // values before it in this event already took
                        // out the rows they decide.
                        let before = {
                            let base = sub.truths[d].base();
                            self.patterns(
                                spec,
                                d,
                                std::slice::from_ref(&value),
                                sub.client[d].view(&base),
                            )?
                        };
                        patterns.extend(before);
                        self.move_client(sub, spec, d, &value, Due::Out);
                    }
                }
            }
            // Values that decide no row (a NULL under `IN`) move silently.
            if patterns.is_empty() {
                continue;
            }
            patterns.sort();
            patterns.dedup();
            let txids: Vec<u64> = txids.into_iter().collect();
            let event = encode::move_event(Move::Out, &patterns, &txids);
            grew |= self.append_move_item(state, current, &event)?;
        }
        Ok(grew)
    }

    /// Starts a move-in for the first dependency with values due to move
    /// in (one at a time per shape, as Electric): the client views stay as
    /// they are until its splice; a job for the registry's runner is queued.
    fn start_move_in(
        &self,
        state: &mut ShapeState,
        spec: &SubquerySpec,
    ) -> Result<(), &'static str> {
        let sub = state.subquery.as_mut().ok_or("no subquery state")?;
        if sub.moving.is_some() {
            return Ok(());
        }
        for d in 0..spec.dependencies.len() {
            let values: Vec<ValueText> = sub.pending[d]
                .keys()
                .filter(|v| sub.due(spec, d, v) == Due::In)
                .cloned()
                .collect();
            if values.is_empty() {
                continue;
            }
            let mut txids: BTreeSet<u32> = BTreeSet::new();
            for value in &values {
                if let Some(xids) = sub.pending[d].remove(value) {
                    txids.extend(xids);
                }
            }
            let mut moved = spec.clause.new_view(d).ok_or("no view for a subquery")?;
            let bases = sub.bases();
            let mut after = sub.client[d].detached();
            for value in &values {
                let text = as_refs(value);
                moved.add(&text);
                after.set(&bases[d], &text, !spec.dependencies[d].negated);
            }
            let (where_sql, params) = {
                let pre = sub.views(&bases);
                spec.clause
                    .move_in_where(d, (&moved).into(), after.view(&bases[d]), &pre)
                    .ok_or("no move-in query for a subquery")?
            };
            drop(bases);
            sub.generation += 1;
            let generation = sub.generation;
            sub.moving = Some(ActiveMove {
                generation,
                dependency: d,
                values,
                txids: txids.into_iter().collect(),
                held: Vec::new(),
                result: None,
            });
            self.move_jobs.borrow_mut().push(MoveInJob {
                shape: self.id,
                generation,
                where_sql,
                params,
            });
            return Ok(());
        }
        Ok(())
    }

    /// The move-in query of `generation` returned: keep its rows for the
    /// splice (a result for an older move is ignored).
    pub(super) fn move_in_result(&self, generation: u64, rows: MoveInRows) {
        let mut state = self.state.borrow_mut();
        if let Some(active) = state
            .subquery
            .as_mut()
            .and_then(|s| s.moving.as_mut())
            .filter(|a| a.generation == generation)
        {
            active.result = Some(rows);
        }
    }

    /// Splices the move-in when its rows and its boundary are known:
    /// the held transactions its snapshot saw (client views before the
    /// move), the `move-in` event, its rows, `snapshot-end` when there are
    /// rows, then the moves that queued meanwhile and the later held
    /// transactions (client views after the move).
    pub(super) fn try_splice(&self, last_seen: Lsn) -> Applied {
        let mut state = self.state.borrow_mut();
        if state.gone {
            return Applied::Nothing;
        }
        let Some(spec) = self.subquery_spec() else {
            return Applied::Nothing;
        };
        let Some(sub) = state.subquery.as_mut() else {
            return Applied::Nothing;
        };
        let Some(active) = sub.moving.as_mut().filter(|a| a.result.is_some()) else {
            return Applied::Nothing;
        };
        let result = match boundary(active, last_seen) {
            Some(at) => match sub.moving.take() {
                Some(active) => self.splice(&mut state, spec, active, at),
                None => Ok(false),
            },
            None => {
                // Every transaction held so far was seen by the move-in's
                // snapshot: they precede the splice, apply them now.
                let held = std::mem::take(&mut active.held);
                let mut grew = false;
                let mut step = Ok(false);
                for h in held {
                    let HeldTx { tx, indices, moves } = h;
                    match self.process(&mut state, spec, &tx, indices.as_deref(), Some(moves), true)
                    {
                        Ok(g) => grew |= g,
                        Err(why) => {
                            step = Err(why);
                            break;
                        }
                    }
                }
                step.map(|_| grew)
            }
        };
        self.journal_held(&mut state);
        self.recount(&state);
        match result {
            Ok(true) => Applied::Grew,
            Ok(false) => Applied::Nothing,
            Err(why) => Applied::Invalidated(why),
        }
    }

    /// Writes the due move-outs and starts a due move-in, outside any
    /// transaction (after a restart's re-read).
    pub(super) fn write_pending_moves(
        &self,
        state: &mut ShapeState,
        spec: &SubquerySpec,
    ) -> Result<bool, &'static str> {
        let grew = self.write_move_outs(state, spec, None)?;
        self.start_move_in(state, spec)?;
        Ok(grew)
    }

    fn splice(
        &self,
        state: &mut ShapeState,
        spec: &SubquerySpec,
        active: ActiveMove,
        at: usize,
    ) -> Step {
        let ActiveMove {
            dependency: d,
            values,
            txids,
            mut held,
            result,
            ..
        } = active;
        let rows = result.ok_or("a splice without rows")?;
        let post = held.split_off(at);
        for HeldTx { tx, indices, moves } in held {
            self.process(state, spec, &tx, indices.as_deref(), Some(moves), true)?;
        }
        let patterns = {
            let sub = state.subquery.as_mut().ok_or("no subquery state")?;
            for value in &values {
                self.move_client(sub, spec, d, value, Due::In);
            }
            let base = sub.truths[d].base();
            self.patterns(spec, d, &values, sub.client[d].view(&base))?
        };
        let txids: Vec<u64> = txids.into_iter().map(u64::from).collect();
        self.append_move_item(
            state,
            None,
            &encode::move_event(Move::In, &patterns, &txids),
        )?;
        let mut grew = true;
        let mut scratch = Vec::new();
        for row in &rows.rows {
            let row: Vec<Option<&str>> = row.iter().map(|t| t.as_deref()).collect();
            scratch.clear();
            {
                let sub = state.subquery.as_ref().ok_or("no subquery state")?;
                let bases = sub.bases();
                self.encode_tagged(spec, &sub.views(&bases), &mut scratch, &row, true);
            }
            self.append_move_item(state, None, &scratch)?;
        }
        if !rows.rows.is_empty() {
            let end = rows.snapshot.end_message();
            self.append_move_item(state, None, end.as_bytes())?;
        }
        grew |= self.write_move_outs(state, spec, None)?;
        self.start_move_in(state, spec)?;
        for HeldTx { tx, indices, moves } in post {
            grew |= self.route(state, spec, &tx, indices.as_deref(), Some(moves))?;
        }
        Ok(grew)
    }
}
