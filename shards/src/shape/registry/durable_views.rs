//! What lets a subquery shape survive a crash (issue 17 §3, the SIGKILL
//! part). The log is durable like any shape's; what is not derived from
//! the WAL alone is made durable with it, or read again:
//! - the *client views* (what the log reflects): a `ViewSet` record at
//!   seeding, a `ViewMove` record per value moved, in the same flush as
//!   the move's log items, and the whole views in LMDB at checkpoints
//!   (with the log states), so recovery rebuilds them at the durable point;
//! - the first transaction a shape *holds* (a move-in in flight): a
//!   `HeldFrom` record when it changes, and the shard's published durable
//!   position stays below it (`Registry::held_floor`), so Postgres sends
//!   held transactions again after a crash;
//! - the shard's processed position per flush (`Position` record): a shape
//!   resumes from there, or from the transaction it first held;
//! - the *truth* (materializers) is read again after the restart in a
//!   fresh snapshot (`Registry::reseed_later` / `reseeded`; the edge runs
//!   the seeding queries, `src/shapes/reseed.rs`); transactions that snapshot saw are skipped by the
//!   materializers only. Moves are then "compare the two views" as always:
//!   an unspliced move-in is simply redone. Equivalent to the inner changes
//!   between the durable point and the re-read arriving at once.
//! - the log past the durable point is never served (`ShapeLog::served`),
//!   since what replaces it after a crash differs.
//!
//! Client-state bytes: version, the held-from LSN, per dependency its
//! values (`kept_views::put_value`).

use std::rc::Rc;
use std::sync::Arc;

use crate::change::Transaction;
use crate::lsn::Lsn;
use crate::shape::encode::PgSnapshot;
use crate::shape::offset::LogOffset;
use crate::storage::record::{self, Kind};

use super::kept_views::{put_header, put_u32, put_value, Reader};
use super::shape::{Gate, Held, Shape, ShapeId, ShapeState};
use super::subquery::{as_refs, set_add, set_present, ClientView, Due, SubqueryState};
use super::Registry;

const VERSION: u8 = 1;

/// A view record's payload at most (a record is bounded, views are not):
/// larger views are journaled as an empty `ViewSet` and `ViewMove`
/// records of this size each.
const VIEW_RECORD_BYTES: usize = 1 << 20;

impl SubqueryState {
    /// The first transaction held and not applied yet, if any.
    pub(super) fn held_from(&self) -> Lsn {
        if self.reseeding {
            return self.resume_after;
        }
        self.moving
            .as_ref()
            .and_then(|m| m.held.first())
            .map_or(Lsn::ZERO, |h| h.tx.commit_lsn)
    }

    fn encode_client(&self) -> Vec<u8> {
        self.encode_client_with(true)
    }

    /// The client state, its values left out unless `values`.
    fn encode_client_with(&self, values: bool) -> Vec<u8> {
        let mut out = Vec::new();
        put_header(&mut out, VERSION, self.held_from(), self.client.len());
        let bases = self.bases();
        for (client, base) in self.client.iter().zip(&bases) {
            if !values {
                put_u32(&mut out, 0);
                continue;
            }
            let values: Vec<_> = client.view(base).counted_texts().collect();
            put_u32(&mut out, values.len());
            for (value, _) in values {
                put_value(&mut out, &value);
            }
        }
        out
    }

    /// Sets the client views (and the held-from position) from
    /// `encode_client`'s bytes.
    fn decode_client(&mut self, bytes: &[u8]) -> Result<(), &'static str> {
        let mut r = Reader(bytes);
        let held = r.header(VERSION, self.client.len())?;
        for d in 0..self.client.len() {
            let mut view = self.client[d].empty_like();
            for _ in 0..r.u32()? {
                set_add(&mut view, &as_refs(&r.value()?));
            }
            self.client[d] = ClientView::Own(view);
        }
        r.end()?;
        self.restored_held_from = held;
        self.views_restored = true;
        Ok(())
    }
}

impl Shape {
    fn journal(&self, lsn: Lsn, kind: Kind, payload: &[u8]) {
        record::encode(
            &mut self.journal.borrow_mut(),
            lsn.0,
            self.id,
            kind,
            payload,
        );
    }

    /// Journals the whole client views (at seeding).
    pub(super) fn journal_view_set(&self, sub: &mut SubqueryState) {
        sub.views_version += 1;
        let whole = sub.encode_client();
        if whole.len() <= VIEW_RECORD_BYTES {
            self.journal(Lsn::ZERO, Kind::ViewSet, &whole);
            return;
        }
        self.journal(Lsn::ZERO, Kind::ViewSet, &sub.encode_client_with(false));
        let bases = sub.bases();
        for (d, (client, base)) in sub.client.iter().zip(&bases).enumerate() {
            let mut payload = Vec::new();
            for (value, _) in client.view(base).counted_texts() {
                if payload.is_empty() {
                    put_u32(&mut payload, d);
                    payload.push(1);
                }
                put_value(&mut payload, &value);
                if payload.len() >= VIEW_RECORD_BYTES {
                    self.journal(Lsn::ZERO, Kind::ViewMove, &payload);
                    payload.clear();
                }
            }
            if !payload.is_empty() {
                self.journal(Lsn::ZERO, Kind::ViewMove, &payload);
            }
        }
    }

    /// Moves `value` into or out of dependency `d`'s client view, and
    /// journals it with the move's items.
    pub(super) fn move_client(
        &self,
        sub: &mut SubqueryState,
        spec: &super::SubquerySpec,
        d: usize,
        value: &[Option<String>],
        due: Due,
    ) {
        let value = value.to_vec();
        sub.move_client(spec, d, &value, due);
        sub.views_version += 1;
        let add = (due == Due::In) != spec.dependencies[d].negated;
        let mut payload = Vec::new();
        put_u32(&mut payload, d);
        payload.push(add as u8);
        put_value(&mut payload, &value);
        self.journal(Lsn::ZERO, Kind::ViewMove, &payload);
    }

    /// Journals the first held transaction if it changed since last time
    /// (after each step that may hold or release transactions).
    pub(super) fn journal_held(&self, state: &mut ShapeState) {
        let Some(sub) = state.subquery.as_mut() else {
            return;
        };
        let held = sub.held_from();
        if held != sub.held_journaled {
            sub.held_journaled = held;
            self.journal(held, Kind::HeldFrom, &[]);
        }
    }

    /// Recovery: the client views as a checkpoint kept them.
    pub fn restore_client_views(&self, bytes: &[u8]) -> Result<(), &'static str> {
        let mut state = self.state.borrow_mut();
        let sub = state.subquery.as_mut().ok_or("not a subquery shape")?;
        sub.decode_client(bytes)
    }

    /// Recovery: a `ViewSet` record.
    pub fn replay_view_set(&self, payload: &[u8]) -> Result<(), &'static str> {
        self.restore_client_views(payload)
    }

    /// Recovery: a `ViewMove` record (one value moved, or a large view's
    /// values added in turn after its `ViewSet`).
    pub fn replay_view_move(&self, payload: &[u8]) -> Result<(), &'static str> {
        let mut state = self.state.borrow_mut();
        let sub = state.subquery.as_mut().ok_or("not a subquery shape")?;
        let mut r = Reader(payload);
        let d = r.u32()?;
        let add = r.u8()? != 0;
        let view = sub
            .client
            .get_mut(d)
            .ok_or("a view move of no dependency")?
            .own_mut()
            .ok_or("a view move of a shared truth")?;
        while !r.0.is_empty() {
            let value = r.value()?;
            set_present(view, &as_refs(&value), add);
        }
        Ok(())
    }

    /// Recovery: a `HeldFrom` record.
    pub fn replay_held_from(&self, lsn: Lsn) {
        if let Some(sub) = self.state.borrow_mut().subquery.as_mut() {
            sub.restored_held_from = lsn;
        }
    }

    /// Recovery after a crash: whether this shape can resume, its client
    /// views having been restored and `position` being the shard's last
    /// durable processed position. It then takes no transaction it had
    /// applied (below the first one it held, or `position`), holds the
    /// rest until `finish_reseed`, and serves what it has (durable).
    pub fn prepare_reseed(&self, position: Lsn) -> Result<(), &'static str> {
        let mut state = self.state.borrow_mut();
        if state.snapshot_end.is_none() {
            return Err("its snapshot had not finished");
        }
        let sub = state.subquery.as_mut().ok_or("not a subquery shape")?;
        if !sub.views_restored {
            return Err("its client views were not kept (created by an older version)");
        }
        let resume = match sub.restored_held_from {
            Lsn::ZERO => position,
            held => held,
        };
        if resume == Lsn::ZERO {
            return Err("no processed position in the segment log");
        }
        sub.streaming = false;
        sub.seeded = None;
        sub.resume_after = resume;
        sub.reseeding = true;
        sub.held_journaled = resume;
        // Move items written before any resent transaction sort after
        // every durable item and before that transaction's entries.
        state.last_lsn = state.last_lsn.max(Lsn(resume.0 - 1));
        let before = std::mem::replace(&mut state.gate, Gate::Pending(Held::default()));
        if let Some(sub) = state.subquery.as_mut() {
            sub.gate_after_reseed = Some(before);
        }
        drop(state);
        // A crash during the re-read resumes from the same place.
        self.journal(resume, Kind::HeldFrom, &[]);
        Ok(())
    }

    /// The truth is read again (seeded in `snapshot`): transactions that
    /// snapshot saw are skipped by the materializers; values whose two views
    /// differ are due (move-outs written now, a move-in started). Returns
    /// the transactions held meanwhile, to apply in order.
    fn finish_reseed(&self, snapshot: PgSnapshot) -> Result<Vec<Arc<Transaction>>, &'static str> {
        let spec = self.subquery_spec().ok_or("not a subquery shape")?;
        let mut state = self.state.borrow_mut();
        let after = state
            .subquery
            .as_mut()
            .and_then(|sub| sub.gate_after_reseed.take())
            .unwrap_or(Gate::Open);
        let held = match std::mem::replace(&mut state.gate, after) {
            Gate::Pending(held) => held.txs,
            other => {
                state.gate = other;
                Vec::new()
            }
        };
        let sub = state.subquery.as_mut().ok_or("not a subquery shape")?;
        sub.reseeding = false;
        sub.reseed_filter = Some(snapshot);
        for d in 0..sub.client.len() {
            let values: Vec<Vec<Option<String>>> = {
                let base = sub.truths[d].base();
                base.counted_texts()
                    .chain(sub.client[d].view(&base).counted_texts())
                    .map(|(value, _)| value.iter().map(|t| t.map(str::to_string)).collect())
                    .collect()
            };
            for value in values {
                if sub.due(spec, d, &value) != Due::None {
                    sub.pending[d].entry(value).or_default();
                }
            }
        }
        self.write_pending_moves(&mut state, spec)?;
        self.journal_held(&mut state);
        self.recount(&state);
        Ok(held)
    }
}
impl Registry {
    /// The subquery shapes with items journaled since the last call, and
    /// their last offsets: taken with the journal, served after its flush.
    pub fn take_unpublished(&mut self) -> Vec<(Rc<Shape>, LogOffset)> {
        let ids: Vec<ShapeId> = self.unpublished.borrow_mut().drain().collect();
        ids.into_iter()
            .filter_map(|id| self.shapes.get(&id))
            .map(|shape| (shape.clone(), shape.state.borrow().log.last_offset()))
            .collect()
    }

    /// A flush failed: its shapes' items are served after the retry.
    pub fn requeue_unpublished(&mut self, taken: &[(Rc<Shape>, LogOffset)]) {
        let mut unpublished = self.unpublished.borrow_mut();
        for (shape, _) in taken {
            unpublished.insert(shape.id);
        }
    }

    /// The lowest commit LSN a shape holds without having applied it (a
    /// move-in in flight, a re-read after a restart): the shard's
    /// published durable position must not pass it, or a crash would lose
    /// those transactions (Postgres would not send them again).
    pub fn held_floor(&self) -> Option<Lsn> {
        self.moving
            .iter()
            .chain(self.reseeding.iter())
            .filter_map(|id| self.shapes.get(id))
            .filter_map(|shape| {
                let state = shape.state.borrow();
                let held = state.subquery.as_ref()?.held_from();
                (held > Lsn::ZERO).then_some(held)
            })
            .min()
    }

    /// Recovery: `id` resumes once its truth is read again (the edge runs
    /// its seeding queries, then calls `reseeded`).
    pub fn reseed_later(&mut self, id: ShapeId) {
        self.reseeding.insert(id);
    }

    /// Shapes waiting for their truth to be read again.
    pub fn reseeding(&self) -> Vec<ShapeId> {
        self.reseeding.iter().copied().collect()
    }

    /// The truth of `id` was read again in `snapshot` (or could not be:
    /// the shape goes, its clients re-sync).
    pub fn reseeded(&mut self, id: ShapeId, result: Result<PgSnapshot, String>) {
        self.reseeding.remove(&id);
        let Some(shape) = self.shapes.get(&id).cloned() else {
            return;
        };
        let snapshot = match result {
            Ok(snapshot) => snapshot,
            Err(e) => {
                tracing::warn!(
                    shard = self.shard,
                    handle = shape.handle(),
                    "cannot read a subquery shape's values again after the restart: {e}"
                );
                return self.remove(id, "its subquery values could not be read again");
            }
        };
        let held = match shape.finish_reseed(snapshot) {
            Ok(held) => held,
            Err(why) => return self.remove(id, why),
        };
        shape.changed.notify_all();
        self.route_restored_by_values(id);
        for tx in &held {
            self.apply_one(&shape, tx, None);
        }
        self.run_moves();
        self.wake_flush();
    }

    /// Checkpoint: the client views of subquery shapes that changed since
    /// the last successful one, with what `views_saved` then records.
    pub fn capture_client_views(&self) -> Vec<(Rc<Shape>, (u64, Lsn), Vec<u8>)> {
        self.shapes
            .values()
            .filter_map(|shape| {
                let state = shape.state.borrow();
                let sub = state.subquery.as_ref()?;
                if state.gone {
                    return None;
                }
                let now = (sub.views_version, sub.held_from());
                (sub.saved != Some(now)).then(|| (shape.clone(), now, sub.encode_client()))
            })
            .collect()
    }
}

impl Shape {
    /// A checkpoint wrote these client views.
    pub fn views_saved(&self, saved: (u64, Lsn)) {
        if let Some(sub) = self.state.borrow_mut().subquery.as_mut() {
            sub.saved = Some(saved);
        }
    }
}
