//! One replicated change → the log entries one shape gets for it, by
//! Electric's rules: where-clause membership decides insert/update/delete,
//! the replica mode decides which columns go out, and a primary-key change
//! becomes a delete/insert pair.

use crate::change::{Change, Datum, OldTupleKind, Tuple};

use super::definition::Replica;
use super::encode::{self, EntrySpec, KeyChange, Layout, OpenEntry, Operation, TxContext};

/// Whether a row (table-width text values) is in a shape.
pub type RowPredicate<'a> = dyn Fn(&[Option<&str>]) -> bool + 'a;

/// The parts of a shape conversion needs.
pub struct Converter<'a> {
    pub layout: Layout<'a>,
    pub replica: Replica,
    /// Whether a row is in the shape; None means every row is.
    pub filter: Option<&'a RowPredicate<'a>>,
}

impl Converter<'_> {
    fn in_shape(&self, row: &[Option<&str>]) -> bool {
        self.filter.is_none_or(|f| f(row))
    }

    /// Entries for change number `index` of a transaction (not yet closed:
    /// `last` is decided by the caller). Truncates yield nothing here; the
    /// registry invalidates the shape for them.
    pub fn convert(&self, tx: TxContext, index: usize, change: &Change, out: &mut Vec<OpenEntry>) {
        let op = 2 * index as u64;
        match change {
            Change::Insert { new, .. } => {
                let row = values(new, None);
                if self.in_shape(&row) {
                    out.push(self.whole_row(tx, Operation::Insert, &row, KeyChange::None, op));
                }
            }
            Change::Delete { old: (_, old), .. } => {
                let row = values(old, None);
                if self.in_shape(&row) {
                    out.push(self.deletion(tx, &row, KeyChange::None, op));
                }
            }
            Change::Update { old, new, .. } => {
                let old_tuple = old.as_ref().map(|(kind, t)| (*kind, t));
                let new_row = values(new, old_tuple.map(|(_, t)| t));
                // Without an old tuple the key did not change and the old
                // row's other columns are unknown: treat it as the new row's
                // twin (never happens under REPLICA IDENTITY FULL, which
                // shape creation sets).
                let old_row = match old_tuple {
                    Some((OldTupleKind::Full, t)) => values(t, None),
                    Some((OldTupleKind::Key, t)) => {
                        let key_only = values(t, None);
                        new_row
                            .iter()
                            .zip(&key_only)
                            .enumerate()
                            .map(|(i, (n, k))| if self.layout.key.contains(&i) { *k } else { *n })
                            .collect()
                    }
                    None => new_row.clone(),
                };
                self.update(tx, &old_row, &new_row, op, out);
            }
            Change::Truncate { .. } => {}
        }
    }

    fn update(
        &self,
        tx: TxContext,
        old: &[Option<&str>],
        new: &[Option<&str>],
        op: u64,
        out: &mut Vec<OpenEntry>,
    ) {
        match (self.in_shape(old), self.in_shape(new)) {
            (false, false) => {}
            (false, true) => {
                out.push(self.whole_row(tx, Operation::Insert, new, KeyChange::None, op))
            }
            (true, false) => out.push(self.deletion(tx, old, KeyChange::None, op)),
            (true, true) => {
                let key_changed = self.layout.key.iter().any(|&i| old[i] != new[i]);
                if key_changed {
                    let old_key = encode::row_key(&self.layout, old);
                    let new_key = encode::row_key(&self.layout, new);
                    out.push(self.deletion(tx, old, KeyChange::To(&new_key), op));
                    out.push(self.whole_row(
                        tx,
                        Operation::Insert,
                        new,
                        KeyChange::From(&old_key),
                        op + 1,
                    ));
                    return;
                }
                let changed: Vec<usize> = self
                    .layout
                    .selected
                    .iter()
                    .copied()
                    .filter(|&i| old[i] != new[i])
                    .collect();
                if changed.is_empty() {
                    return;
                }
                let key = encode::row_key(&self.layout, new);
                let entry = match self.replica {
                    Replica::Default => {
                        let value: Vec<usize> = self
                            .layout
                            .selected
                            .iter()
                            .copied()
                            .filter(|i| changed.contains(i) || self.layout.key.contains(i))
                            .collect();
                        encode::change(
                            &self.layout,
                            tx,
                            EntrySpec {
                                operation: Operation::Update,
                                key: &key,
                                row: new,
                                value_columns: &value,
                                old_value: None,
                                key_change: KeyChange::None,
                                op,
                                tagging: None,
                            },
                        )
                    }
                    Replica::Full => encode::change(
                        &self.layout,
                        tx,
                        EntrySpec {
                            operation: Operation::Update,
                            key: &key,
                            row: new,
                            value_columns: self.layout.selected,
                            old_value: Some((old, &changed)),
                            key_change: KeyChange::None,
                            op,
                            tagging: None,
                        },
                    ),
                };
                out.push(entry);
            }
        }
    }

    fn whole_row(
        &self,
        tx: TxContext,
        operation: Operation,
        row: &[Option<&str>],
        key_change: KeyChange,
        op: u64,
    ) -> OpenEntry {
        let key = encode::row_key(&self.layout, row);
        encode::change(
            &self.layout,
            tx,
            EntrySpec {
                operation,
                key: &key,
                row,
                value_columns: self.layout.selected,
                old_value: None,
                key_change,
                op,
                tagging: None,
            },
        )
    }

    fn deletion(
        &self,
        tx: TxContext,
        row: &[Option<&str>],
        key_change: KeyChange,
        op: u64,
    ) -> OpenEntry {
        let key = encode::row_key(&self.layout, row);
        // replica=default deletes carry the primary key only (every selected
        // column for tables without one); full carries the whole old row.
        let value: Vec<usize> = match self.replica {
            Replica::Default if self.layout.has_primary_key => self
                .layout
                .selected
                .iter()
                .copied()
                .filter(|i| self.layout.key.contains(i))
                .collect(),
            _ => self.layout.selected.to_vec(),
        };
        encode::change(
            &self.layout,
            tx,
            EntrySpec {
                operation: Operation::Delete,
                key: &key,
                row,
                value_columns: &value,
                old_value: None,
                key_change,
                op,
                tagging: None,
            },
        )
    }
}

/// A tuple's values as text. An unchanged TOASTed value is taken from the
/// old tuple when there is one (REPLICA IDENTITY FULL always sends it).
pub fn values<'t>(tuple: &'t Tuple, old: Option<&'t Tuple>) -> Vec<Option<&'t str>> {
    (0..tuple.len()).map(|i| value_at(tuple, old, i)).collect()
}

/// One column of `values`, without building the row.
pub fn value_at<'t>(tuple: &'t Tuple, old: Option<&'t Tuple>, i: usize) -> Option<&'t str> {
    match tuple.get(i)? {
        datum @ Datum::Text(_) => datum.as_str(),
        Datum::Null => None,
        Datum::UnchangedToast => old.and_then(|o| o.get(i)).and_then(Datum::as_str),
    }
}
