//! One replicated change → the log entries one shape gets for it, by
//! Electric's rules: where-clause membership decides insert/update/delete,
//! the replica mode decides which columns go out, and a primary-key change
//! becomes a delete/insert pair. Rows of a shape with subqueries carry
//! their tags (the new row's; the old row's on a delete), an update the
//! tags its old row had and the new one lost (`removed_tags`), and such an
//! update is kept even when no selected column changed: the client moves
//! the row between tag sets.

use crate::change::{Change, Datum, OldTupleKind, Tuple};

use super::definition::Replica;
use super::encode::{self, EntrySpec, KeyChange, Layout, OpenEntry, Operation, Tagging, TxContext};

/// Whether a row (table-width text values) is in a shape.
pub type RowPredicate<'a> = dyn Fn(&[Option<&str>]) -> bool + 'a;

/// A row's tags and active conditions (shapes with subqueries).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RowTags {
    pub tags: Vec<String>,
    pub active_conditions: Vec<bool>,
}

impl RowTags {
    fn tagging<'a>(&'a self, removed_tags: Option<&'a [String]>) -> Tagging<'a> {
        Tagging {
            tags: &self.tags,
            removed_tags,
            active_conditions: &self.active_conditions,
        }
    }
}

/// Computes a row's tags and active conditions.
pub type RowTagger<'a> = dyn Fn(&[Option<&str>]) -> RowTags + 'a;

/// The parts of a shape conversion needs.
pub struct Converter<'a> {
    pub layout: Layout<'a>,
    pub replica: Replica,
    /// Whether a row is in the shape; None means every row is.
    pub filter: Option<&'a RowPredicate<'a>>,
    /// For a shape with subqueries: its rows' tags.
    pub tagger: Option<&'a RowTagger<'a>>,
}

impl Converter<'_> {
    fn in_shape(&self, row: &[Option<&str>]) -> bool {
        self.filter.is_none_or(|f| f(row))
    }

    fn tags(&self, row: &[Option<&str>]) -> Option<RowTags> {
        self.tagger.map(|t| t(row))
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
                    let tags = self.tags(&row);
                    let tagging = tags.as_ref().map(|t| t.tagging(None));
                    out.push(self.whole_row(
                        tx,
                        Operation::Insert,
                        &row,
                        KeyChange::None,
                        op,
                        tagging,
                    ));
                }
            }
            Change::Delete { old: (_, old), .. } => {
                let row = values(old, None);
                if self.in_shape(&row) {
                    let tags = self.tags(&row);
                    let tagging = tags.as_ref().map(|t| t.tagging(None));
                    out.push(self.deletion(tx, &row, KeyChange::None, op, tagging));
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
                let tags = self.tags(new);
                let tagging = tags.as_ref().map(|t| t.tagging(None));
                out.push(self.whole_row(tx, Operation::Insert, new, KeyChange::None, op, tagging))
            }
            (true, false) => {
                let tags = self.tags(old);
                let tagging = tags.as_ref().map(|t| t.tagging(None));
                out.push(self.deletion(tx, old, KeyChange::None, op, tagging))
            }
            (true, true) => {
                let new_tags = self.tags(new);
                // The old row's tags the new one lacks (a list difference).
                let removed: Vec<String> = match (self.tags(old), &new_tags) {
                    (Some(old_tags), Some(new_tags)) => old_tags
                        .tags
                        .into_iter()
                        .filter(|t| !new_tags.tags.contains(t))
                        .collect(),
                    _ => Vec::new(),
                };
                let key_changed = self.layout.key.iter().any(|&i| old[i] != new[i]);
                if key_changed {
                    let old_key = encode::row_key(&self.layout, old);
                    let new_key = encode::row_key(&self.layout, new);
                    // The delete carries the new tags and the removed ones,
                    // so a client holding the old key under either drops it.
                    let delete_tags = new_tags.as_ref().map(|t| RowTags {
                        tags: t.tags.iter().chain(&removed).cloned().collect(),
                        active_conditions: t.active_conditions.clone(),
                    });
                    out.push(self.deletion(
                        tx,
                        old,
                        KeyChange::To(&new_key),
                        op,
                        delete_tags.as_ref().map(|t| t.tagging(None)),
                    ));
                    out.push(self.whole_row(
                        tx,
                        Operation::Insert,
                        new,
                        KeyChange::From(&old_key),
                        op + 1,
                        new_tags.as_ref().map(|t| t.tagging(None)),
                    ));
                    return;
                }
                let tagging = new_tags.as_ref().map(|t| t.tagging(Some(&removed)));
                let changed: Vec<usize> = self
                    .layout
                    .selected
                    .iter()
                    .copied()
                    .filter(|&i| old[i] != new[i])
                    .collect();
                // An update that only moved the row between tags is kept
                // (with the key alone for a value, as nothing else changed).
                if changed.is_empty() && removed.is_empty() {
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
                                tagging,
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
                            tagging,
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
        tagging: Option<Tagging>,
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
                tagging,
            },
        )
    }

    fn deletion(
        &self,
        tx: TxContext,
        row: &[Option<&str>],
        key_change: KeyChange,
        op: u64,
        tagging: Option<Tagging>,
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
                tagging,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{Column, Datum, Relation, ReplicaIdentity};
    use crate::shape::definition::TableName;
    use std::sync::Arc;

    /// `tasks (id int4 PRIMARY KEY, project_id int4, title text)`, all
    /// selected; tags from `project_id` (as `p IN (SELECT ..)` would).
    fn convert(change: &Change) -> Vec<String> {
        convert_selecting(change, &[0, 1, 2])
    }

    fn convert_selecting(change: &Change, selected: &[usize]) -> Vec<String> {
        let table = TableName {
            schema: "public".into(),
            name: "tasks".into(),
        };
        let names: Vec<String> = ["id", "project_id", "title"].map(String::from).to_vec();
        let layout = Layout {
            table: &table,
            column_names: &names,
            selected,
            key: &[0],
            has_primary_key: true,
        };
        let tagger = |row: &[Option<&str>]| RowTags {
            tags: vec![format!("h{}", row[1].unwrap_or("NULL"))],
            active_conditions: vec![true],
        };
        let converter = Converter {
            layout,
            replica: Replica::Default,
            filter: None,
            tagger: Some(&tagger),
        };
        let mut out = Vec::new();
        let tx = TxContext {
            xid: 5,
            commit_lsn: 100,
        };
        converter.convert(tx, 0, change, &mut out);
        out.into_iter()
            .map(|e| String::from_utf8(e.finish(false).1).unwrap())
            .collect()
    }

    fn relation() -> Arc<Relation> {
        let column = |name: &str, is_key| Column {
            name: name.into(),
            type_oid: 23,
            type_modifier: -1,
            is_key,
        };
        Arc::new(Relation {
            id: 1,
            schema: "public".into(),
            name: "tasks".into(),
            replica_identity: ReplicaIdentity::Full,
            columns: vec![
                column("id", true),
                column("project_id", false),
                column("title", false),
            ],
        })
    }

    fn row(id: &str, project: &str, title: &str) -> Vec<Datum> {
        [id, project, title]
            .map(|v| Datum::Text(v.to_string().into()))
            .to_vec()
    }

    fn update(old: Vec<Datum>, new: Vec<Datum>) -> Change {
        Change::Update {
            relation: relation(),
            old: Some((OldTupleKind::Full, old)),
            new,
        }
    }

    /// The headers' tag fields of an entry.
    fn tag_headers(entry: &str) -> &str {
        let start = entry.find(",\"tags\"").unwrap_or(entry.len());
        &entry[start..]
    }

    #[test]
    fn subquery_rows_carry_their_tags_and_moves_between_them() {
        let insert = convert(&Change::Insert {
            relation: relation(),
            new: row("1", "7", "a"),
        });
        assert_eq!(insert.len(), 1);
        assert_eq!(
            tag_headers(&insert[0]),
            r#","tags":["h7"],"active_conditions":[true]}}"#
        );
        // The referenced column changed: new tags, the old ones removed.
        let moved = convert(&update(row("1", "7", "a"), row("1", "8", "a")));
        assert_eq!(
            tag_headers(&moved[0]),
            r#","tags":["h8"],"removed_tags":["h7"],"active_conditions":[true]}}"#
        );
        // A plain update still says nothing was removed.
        let plain = convert(&update(row("1", "7", "a"), row("1", "7", "b")));
        assert!(
            plain[0].contains(r#""value":{"id":"1","title":"b"}"#),
            "{}",
            plain[0]
        );
        assert!(plain[0].contains(r#""removed_tags":[]"#), "{}", plain[0]);
        // Nothing changed, tags included: nothing to send.
        assert!(convert(&update(row("1", "7", "a"), row("1", "7", "a"))).is_empty());
        // Only the (unselected) referenced column changed: still sent, the
        // key alone as its value, so the client moves the row between tags.
        let unselected =
            convert_selecting(&update(row("1", "7", "a"), row("1", "8", "a")), &[0, 2]);
        assert_eq!(unselected.len(), 1);
        assert!(
            unselected[0].starts_with(r#"{"key":"\"public\".\"tasks\"/\"1\"","value":{"id":"1"},"#),
            "{}",
            unselected[0]
        );
        assert!(unselected[0].contains(r#""removed_tags":["h7"]"#));
        // A key change: the delete carries the new and the removed tags.
        let rekeyed = convert(&update(row("1", "7", "a"), row("2", "8", "a")));
        assert_eq!(rekeyed.len(), 2);
        assert!(rekeyed[0].contains(r#""operation":"delete""#));
        assert!(
            rekeyed[0].contains(r#""tags":["h8","h7"]"#),
            "{}",
            rekeyed[0]
        );
        assert!(rekeyed[1].contains(r#""operation":"insert""#));
        assert_eq!(
            tag_headers(&rekeyed[1]),
            r#","tags":["h8"],"active_conditions":[true]}}"#
        );
        // A delete carries the old row's tags.
        let delete = convert(&Change::Delete {
            relation: relation(),
            old: (OldTupleKind::Full, row("1", "9", "a")),
        });
        assert_eq!(
            tag_headers(&delete[0]),
            r#","tags":["h9"],"active_conditions":[true]}}"#
        );
    }
}
