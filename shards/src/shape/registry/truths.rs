//! Dependency truths shared by definition: on one shard, every subquery
//! shape whose subquery is the same (same inner table and columns, same
//! where with the same bound parameters, at every level) reads one
//! materializer instead of each keeping its own copy of the values (and,
//! for a nested subquery, of the middle table's rows).
//!
//! A shared truth is at the shard's position: every transaction that can
//! change it is routed to every shape using it (they have the same
//! dependency, so the same routing), and the first of them to meet the
//! transaction applies it, the others get the same moves back
//! (`Truth::apply_once`). A shape whose own position lags the shard's (a
//! move-in holding transactions) takes each held transaction's moves when
//! it arrives and keeps, until it applies that transaction, the values
//! whose presence differs between the shard's position and its own
//! (`Source::Shared::lag`): what it reads is the shared truth with those
//! flipped.
//!
//! A shape starts with a private materializer (seeded in its snapshot, or
//! restored, or read again after a crash) and joins the shared truth once
//! it is at the shard's position: snapshot filter over, no move in flight,
//! no re-read (`Registry::share_truths`). The first to join gives its
//! materializer to be the shared one. Nothing here crosses a shard.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::{Rc, Weak};

use crate::change::Transaction;
use crate::lsn::Lsn;
use crate::shape::materializer::{Materialized, Materializer, MoveBatch};
use crate::shape::where_clause::{SubqueryView, ValueKey};

use super::subquery::{as_refs, DependencySpec};

/// The shard's shared truths by definition (`DependencySpec::definition`).
#[derive(Default)]
pub(crate) struct TruthTable {
    by_definition: HashMap<Box<str>, Weak<RefCell<Truth>>>,
    /// Table size after the last sweep of dead entries.
    swept: usize,
}

pub(super) type Truths = Rc<RefCell<TruthTable>>;

impl TruthTable {
    /// The live truth of `definition`, or `own` made the shared one.
    fn join(&mut self, definition: Box<str>, own: impl FnOnce() -> Truth) -> Rc<RefCell<Truth>> {
        if let Some(truth) = self
            .by_definition
            .get(&definition)
            .and_then(Weak::upgrade)
            .filter(|t| t.borrow().broken.is_none())
        {
            return truth;
        }
        let truth = Rc::new(RefCell::new(own()));
        self.by_definition.insert(definition, Rc::downgrade(&truth));
        if self.by_definition.len() > 2 * self.swept.max(32) {
            self.by_definition.retain(|_, t| t.strong_count() > 0);
            self.swept = self.by_definition.len();
        }
        truth
    }

    /// Live shared truths, and the shapes reading them.
    pub(crate) fn counts(&self) -> (usize, usize) {
        self.by_definition
            .values()
            .filter(|t| t.strong_count() > 0)
            .fold((0, 0), |(n, users), t| (n + 1, users + t.strong_count()))
    }
}

/// One dependency's materializer, applied once per transaction for every
/// shape reading it.
pub(super) struct Truth {
    materializer: Materializer,
    /// Commit position of the last transaction applied, and its moves.
    applied: Lsn,
    last: Option<MoveBatch>,
    /// Once a transaction could not be counted, every user is invalid.
    broken: Option<&'static str>,
}

impl Truth {
    /// The moves of `tx` (applying it if no user has yet). Transactions
    /// come in commit order; one below the last applied did not touch this
    /// truth (every transaction that does reaches every user when it
    /// arrives).
    fn apply_once(&mut self, tx: &Transaction) -> Materialized {
        if let Some(why) = self.broken {
            return Materialized::Invalidated(why);
        }
        if tx.commit_lsn < self.applied {
            return Materialized::Unchanged;
        }
        if tx.commit_lsn == self.applied {
            return self
                .last
                .clone()
                .map_or(Materialized::Unchanged, Materialized::Moved);
        }
        self.applied = tx.commit_lsn;
        let result = self.materializer.apply(tx);
        self.last = match &result {
            Materialized::Moved(batch) => Some(batch.clone()),
            _ => None,
        };
        if let Materialized::Invalidated(why) = result {
            self.broken = Some(why);
        }
        result
    }
}

/// A truth's view, borrowed for as long as a read takes.
pub(super) enum Base<'a> {
    Own(&'a SubqueryView),
    Shared(std::cell::Ref<'a, Truth>),
}

impl std::ops::Deref for Base<'_> {
    type Target = SubqueryView;

    fn deref(&self) -> &SubqueryView {
        match self {
            Base::Own(view) => view,
            Base::Shared(truth) => truth.materializer.view(),
        }
    }
}

/// Where one subquery shape reads a dependency's truth from.
pub(super) enum Source {
    /// Its own materializer (seeding, restored, re-read, or lagging when
    /// it would have joined).
    Private(Materializer),
    Shared {
        truth: Rc<RefCell<Truth>>,
        /// Values whose presence at this shape's position differs from the
        /// shard's: flipped by the moves of transactions it holds, back
        /// when it applies them.
        lag: HashSet<ValueKey>,
        /// Debug builds: the private materializer this shape had, still
        /// applied as it would be, to check the shared truth against.
        shadow: Option<Box<Materializer>>,
    },
}

impl Source {
    /// Whether the truth at this shape's position holds `key`.
    pub(super) fn holds(&self, key: &ValueKey) -> bool {
        match self {
            Source::Private(m) => m.view().holds(key),
            Source::Shared { truth, lag, shadow } => {
                let holds = truth.borrow().materializer.view().holds(key) != lag.contains(key);
                if let Some(shadow) = shadow {
                    assert_eq!(
                        holds,
                        shadow.view().holds(key),
                        "shared truth {key:?} lag {lag:?}"
                    );
                }
                holds
            }
        }
    }

    /// The truth's own view: a shared truth's at the shard's position
    /// (what a client view over it is kept against, `ClientView::Over`;
    /// other callers read it at rest, when the shape holds nothing).
    pub(super) fn base(&self) -> Base<'_> {
        match self {
            Source::Private(m) => Base::Own(m.view()),
            Source::Shared { truth, .. } => Base::Shared(truth.borrow()),
        }
    }

    /// The private materializer, while there is one (seeding, restoring).
    pub(super) fn private_mut(&mut self) -> Option<&mut Materializer> {
        match self {
            Source::Private(m) => Some(m),
            Source::Shared { .. } => None,
        }
    }

    pub(super) fn is_shared(&self) -> bool {
        matches!(self, Source::Shared { .. })
    }

    /// Applies `tx` at this shape's position (it is applying it now).
    pub(super) fn apply(&mut self, tx: &Transaction) -> Materialized {
        match self {
            Source::Private(m) => m.apply(tx),
            Source::Shared { truth, shadow, .. } => {
                let result = truth.borrow_mut().apply_once(tx);
                if let Some(shadow) = shadow {
                    let moves = |m: Materialized| match m {
                        Materialized::Moved(b) => Ok(sorted(b)),
                        Materialized::Unchanged => Ok(MoveBatch::default()),
                        Materialized::Invalidated(why) => Err(why),
                    };
                    assert_eq!(
                        moves(shadow.apply(tx)),
                        moves(result.clone()),
                        "shared truth applying {}",
                        tx.commit_lsn
                    );
                }
                result
            }
        }
    }

    /// `tx` arrives while the shape holds transactions: a shared truth
    /// moves on with the shard now, and the moves are kept for when the
    /// shape applies `tx` (None: a private materializer applies it then).
    pub(super) fn capture(&mut self, tx: &Transaction) -> Result<Option<MoveBatch>, &'static str> {
        let Source::Shared { truth, lag, .. } = self else {
            return Ok(None);
        };
        let mut truth = truth.borrow_mut();
        match truth.apply_once(tx) {
            Materialized::Unchanged => Ok(Some(MoveBatch::default())),
            Materialized::Invalidated(why) => Err(why),
            Materialized::Moved(batch) => {
                flip(truth.materializer.view(), lag, &batch);
                Ok(Some(batch))
            }
        }
    }

    /// The shape applies a held transaction whose moves were captured: its
    /// position catches up with them.
    pub(super) fn release(&mut self, batch: &MoveBatch, tx: &Transaction) {
        if let Source::Shared { truth, lag, shadow } = self {
            flip(truth.borrow().materializer.view(), lag, batch);
            if let Some(shadow) = shadow {
                let own = match shadow.apply(tx) {
                    Materialized::Moved(b) => sorted(b),
                    _ => MoveBatch::default(),
                };
                let batch = sorted(batch.clone());
                assert_eq!(own.moved_in, batch.moved_in, "held {}", tx.commit_lsn);
                assert_eq!(own.moved_out, batch.moved_out, "held {}", tx.commit_lsn);
            }
        }
    }

    /// Joins the shard's shared truth of `definition` (giving this private
    /// materializer, applied through `position`, if there is none yet).
    pub(super) fn share(&mut self, table: &Truths, definition: Box<str>, position: Lsn) {
        let Source::Private(_) = self else {
            return;
        };
        let Source::Private(own) = std::mem::replace(self, Source::Private(placeholder())) else {
            unreachable!("checked above");
        };
        let mut own = Some(own);
        let truth = table.borrow_mut().join(definition, || Truth {
            materializer: own.take().expect("taken once"),
            applied: position,
            last: None,
            broken: None,
        });
        if let Some(mine) = own.take() {
            // Same transactions, same counts: a mismatch is a bug that
            // would send wrong moves. The shape keeps its own truth then.
            let (mine_len, shared_len) =
                (mine.view().len(), truth.borrow().materializer.view().len());
            if mine_len != shared_len {
                debug_assert_eq!(
                    mine_len, shared_len,
                    "a private truth differs from its shared one"
                );
                tracing::error!(
                    mine = mine_len,
                    shared = shared_len,
                    "a subquery shape's values differ from the shared ones of its subquery: it keeps its own"
                );
                *self = Source::Private(mine);
                return;
            }
            own = Some(mine);
        }
        *self = Source::Shared {
            truth,
            lag: HashSet::new(),
            // Debug builds check every read and every held transaction's
            // moves against the private truth this shape would have kept.
            shadow: own.filter(|_| cfg!(debug_assertions)).map(Box::new),
        };
    }
}

/// An empty stand-in while a materializer changes hands.
fn placeholder() -> Materializer {
    Materializer::new(0, None, Vec::new(), SubqueryView::new(Vec::new()))
}

/// A batch's moves in value order (a nested level finds its crossings in
/// hash order, which differs between two materializers of one definition).
fn sorted(mut batch: MoveBatch) -> MoveBatch {
    batch.moved_in.sort();
    batch.moved_out.sort();
    if batch.moved_in.is_empty() && batch.moved_out.is_empty() {
        batch.txids.clear();
    }
    batch
}

/// Flips the lag of every value a batch moved.
fn flip(view: &SubqueryView, lag: &mut HashSet<ValueKey>, batch: &MoveBatch) {
    for value in batch.moved_in.iter().chain(&batch.moved_out) {
        if let Some(key) = view.key_of(&as_refs(value)) {
            if !lag.remove(&key) {
                lag.insert(key);
            }
        }
    }
}

impl DependencySpec {
    /// The definition a shared truth is found by: every level's table,
    /// its fingerprint and columns, its where with bound parameters, and
    /// the values' types (`view`).
    pub(super) fn definition(&self, view: &SubqueryView) -> Box<str> {
        let mut out = view.type_signature();
        self.describe(&mut out);
        out.into_boxed_str()
    }

    fn describe(&self, out: &mut String) {
        use std::fmt::Write;
        let (sql, params) = self.filter.as_ref().map(|f| f.to_sql()).unwrap_or_default();
        let _ = write!(
            out,
            "|{}:{}:{:?}:{:?}:{}:{:?}(",
            self.relation, self.fingerprint, self.selected, self.kept, sql, params
        );
        for child in &self.children {
            child.describe(out);
        }
        out.push(')');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::materializer::tests::{delete, insert, materializer, tx};

    fn key(source: &Source, value: &str) -> ValueKey {
        source.base().key_of(&[Some(value)]).expect("a key")
    }

    fn seeded() -> Source {
        let mut m = materializer();
        m.seed(&[Some("10")]);
        Source::Private(m)
    }

    #[test]
    fn truths_are_shared_by_definition_and_a_lagging_reader_sees_its_own_position() {
        let table: Truths = Rc::default();
        let (mut a, mut b, mut other) = (seeded(), seeded(), seeded());
        a.share(&table, "members of 1".into(), Lsn(50));
        b.share(&table, "members of 1".into(), Lsn(50));
        other.share(&table, "members of 2".into(), Lsn(50));
        assert!(a.is_shared() && b.is_shared());
        assert_eq!(table.borrow().counts(), (2, 3));

        // `a` applies each transaction as it comes; `b` holds them (a
        // move-in in flight): the truth moves on once, `b` reads its own
        // position through the lag.
        let (tx1, tx2) = (
            tx(1, vec![insert(1, Some(11))]),
            tx(2, vec![delete(1, Some(10))]),
        );
        let (k10, k11) = (key(&a, "10"), key(&a, "11"));
        assert!(matches!(a.apply(&tx1), Materialized::Moved(_)));
        let held1 = b.capture(&tx1).unwrap().expect("a shared truth's moves");
        assert_eq!(held1.moved_in, vec![vec![Some("11".to_string())]]);
        assert!(a.holds(&k11) && !b.holds(&k11));
        let held2 = b.capture(&tx2).unwrap().expect("a shared truth's moves");
        assert!(
            matches!(a.apply(&tx2), Materialized::Moved(_)),
            "the same moves for every reader"
        );
        assert!(!a.holds(&k10) && b.holds(&k10));
        // Applying the held transactions catches `b` up.
        b.release(&held1, &tx1);
        assert!(b.holds(&k11) && b.holds(&k10));
        b.release(&held2, &tx2);
        assert!(b.holds(&k11) && !b.holds(&k10));
        // A transaction below the truth's position did not touch it.
        assert_eq!(b.apply(&tx1), Materialized::Unchanged);
        // The other definition never moved.
        assert!(other.holds(&k10) && !other.holds(&k11));

        drop((a, b));
        assert_eq!(table.borrow().counts(), (1, 1));
        // A private reader joining later finds it gone and gives its own.
        let mut c = seeded();
        c.share(&table, "members of 1".into(), Lsn(300));
        assert!(c.holds(&k10) && !c.holds(&k11));
        assert_eq!(table.borrow().counts(), (2, 2));
    }
}
