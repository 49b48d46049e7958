//! A dependency's values kept on the shard of a shape that depends on them
//! (`outer IN (SELECT c FROM t WHERE ..)`): the multiset of `c` over the
//! rows of `t` that match the inner where, updated from the same
//! replication transactions, in the same order, as the outer shape itself.
//! Each transaction's net effect on the set is its moves: a value whose
//! count went 0 → 1 moved in, 1 → 0 moved out (a value that went in and
//! out again within one transaction did not move, as Electric cancels
//! such pairs).
//!
//! No key → value index is kept: shapes run with `REPLICA IDENTITY FULL`,
//! so every update and delete carries its old row, whose value is
//! decremented if that row matched. A change without its old row cannot be
//! counted, and the dependency (so its outer shapes) is invalidated rather
//! than silently wrong.

use std::collections::HashSet;

use crate::change::{Change, OldTupleKind, RelationId, Transaction, Xid};

use super::convert::values;
use super::nested::Mirror;
use super::registry::RowFilter;
use super::where_clause::{SubqueryView, ValueKey, WhereClause};

/// A value of the dependency: its text per selected column, NULL as None.
pub type ValueText = Vec<Option<String>>;

/// What one transaction did to the set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MoveBatch {
    pub moved_in: Vec<ValueText>,
    pub moved_out: Vec<ValueText>,
    /// The transaction's xid (Electric's `txids` on the move events).
    pub txids: Vec<Xid>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Materialized {
    /// The set did not change (or the transaction did not touch it).
    Unchanged,
    Moved(MoveBatch),
    /// The set can no longer be kept exactly: its shapes must refetch.
    Invalidated(&'static str),
}

pub struct Materializer {
    relation: RelationId,
    /// The inner where; None selects every row (a middle level's where is
    /// its mirror's).
    filter: Option<Box<dyn RowFilter>>,
    /// Table column indices of the selected columns, in subquery order.
    selected: Vec<usize>,
    view: SubqueryView,
    /// A middle level of a nested subquery: its table's rows and its own
    /// subqueries' values (see `nested.rs`). None for an innermost level.
    mirror: Option<Box<Mirror>>,
}

/// One 0↔1 crossing of a value's count: its text, and whether it entered.
type Crossing = (ValueText, bool);

/// Counts a row's value in or out of `view`, noting a crossing.
fn count(view: &mut SubqueryView, value: &[Option<&str>], add: bool, out: &mut Vec<Crossing>) {
    let crossed = if add {
        view.add(value)
    } else {
        view.remove(value)
    };
    if crossed {
        out.push((value.iter().map(|t| t.map(str::to_string)).collect(), add));
    }
}

impl Materializer {
    /// An empty set over `relation`; `view` is typed as the selected
    /// columns (`WhereClause::new_view`).
    pub fn new(
        relation: RelationId,
        filter: Option<Box<dyn RowFilter>>,
        selected: Vec<usize>,
        view: SubqueryView,
    ) -> Materializer {
        Materializer {
            relation,
            filter,
            selected,
            view,
            mirror: None,
        }
    }

    /// A middle level: `clause` (with subqueries, one child per subquery)
    /// decides which of the table's rows give values; `kept` the table
    /// columns mirrored per row (what `clause` reads, and `selected`).
    pub fn nested(
        relation: RelationId,
        clause: std::sync::Arc<WhereClause>,
        selected: Vec<usize>,
        kept: Vec<usize>,
        children: Vec<Materializer>,
        view: SubqueryView,
    ) -> Materializer {
        let mirror = Mirror::new(clause, kept, &selected, children);
        Materializer {
            relation,
            filter: None,
            selected,
            view,
            mirror: Some(Box::new(mirror)),
        }
    }

    pub fn relation(&self) -> RelationId {
        self.relation
    }

    pub fn view(&self) -> &SubqueryView {
        &self.view
    }

    /// Whether this level mirrors its table (a middle level).
    pub fn is_nested(&self) -> bool {
        self.mirror.is_some()
    }

    /// Counts one row of the seeding query (which already applied the
    /// inner where): the selected columns' texts.
    pub fn seed(&mut self, value: &[Option<&str>]) {
        self.view.add(value);
    }

    /// Counts one seeding row of the level at `path` below this one
    /// (empty: this one): an innermost level's selected texts, or a middle
    /// level's kept columns (every row of its table).
    pub fn seed_at(&mut self, path: &[usize], row: &[Option<&str>]) {
        match (path.split_first(), self.mirror.as_deref_mut()) {
            (None, None) => self.seed(row),
            (None, Some(mirror)) => mirror.seed_row(row),
            (Some((&child, rest)), Some(mirror)) => {
                if let Some(child) = mirror.children.get_mut(child) {
                    child.seed_at(rest, row);
                }
            }
            (Some(_), None) => {}
        }
    }

    /// Every seeding row is in: a middle level computes its values from
    /// its rows and its children's values.
    pub fn finish_seed(&mut self) -> Result<(), &'static str> {
        let Materializer { view, mirror, .. } = self;
        match mirror.as_deref_mut() {
            Some(mirror) => mirror.finish_seed(&mut |value, add| {
                count(view, value, add, &mut Vec::new());
            }),
            None => Ok(()),
        }
    }

    fn matches(&self, row: &[Option<&str>]) -> bool {
        self.filter
            .as_deref()
            .is_none_or(|f| f.matches(&|i| row.get(i).copied().flatten()))
    }

    fn value_of<'r>(&self, row: &[Option<&'r str>]) -> Vec<Option<&'r str>> {
        self.selected
            .iter()
            .map(|&i| row.get(i).copied().flatten())
            .collect()
    }

    /// Applies one change to this level (and, for a middle level, to its
    /// children first): the values whose count crossed 0↔1, in order.
    fn apply_change(&mut self, change: &Change) -> Result<Vec<Crossing>, &'static str> {
        let mut out = Vec::new();
        if let Some(mirror) = self.mirror.as_deref_mut() {
            for child in 0..mirror.children.len() {
                let moved = mirror.children[child].apply_change(change)?;
                for (value, entered) in moved {
                    let text: Vec<Option<&str>> = value.iter().map(|t| t.as_deref()).collect();
                    let view = &mut self.view;
                    mirror.child_moved(child, &text, entered, &mut |v, add| {
                        count(view, v, add, &mut out)
                    });
                }
            }
        }
        let (old, new) = match change {
            Change::Truncate { relations, .. } => {
                if relations.iter().any(|r| r.id == self.relation) {
                    return Err("a subquery's table was truncated");
                }
                return Ok(out);
            }
            Change::Insert { relation, new } if relation.id == self.relation => {
                (None, Some(values(new, None)))
            }
            Change::Delete { relation, old } if relation.id == self.relation => {
                if old.0 != OldTupleKind::Full {
                    return Err(
                        "a subquery's table does not send old rows (REPLICA IDENTITY FULL)",
                    );
                }
                (Some(values(&old.1, None)), None)
            }
            Change::Update { relation, old, new } if relation.id == self.relation => {
                let Some((OldTupleKind::Full, old)) = old else {
                    return Err(
                        "a subquery's table does not send old rows (REPLICA IDENTITY FULL)",
                    );
                };
                (Some(values(old, None)), Some(values(new, Some(old))))
            }
            _ => return Ok(out),
        };
        for (row, add) in [(old, false), (new, true)] {
            let Some(row) = row else {
                continue;
            };
            let Materializer { view, mirror, .. } = self;
            if let Some(mirror) = mirror.as_deref_mut() {
                mirror.row(&row, add, &mut |v, add| count(view, v, add, &mut out))?;
                continue;
            }
            if !self.matches(&row) {
                continue;
            }
            let value = self.value_of(&row);
            count(&mut self.view, &value, add, &mut out);
        }
        Ok(out)
    }

    /// Applies the transaction's changes on the dependency's tables (its
    /// own, and for a middle level its children's); its moves are the
    /// values whose presence differs before and after.
    pub fn apply(&mut self, tx: &Transaction) -> Materialized {
        // Presence before the transaction of every value that crossed,
        // with the text first seen for it, in first-crossed order.
        let mut touched: HashSet<ValueKey> = HashSet::new();
        let mut order: Vec<(ValueKey, bool, ValueText)> = Vec::new();
        for change in &tx.changes {
            let crossings = match self.apply_change(change) {
                Ok(c) => c,
                Err(why) => return Materialized::Invalidated(why),
            };
            for (text, entered) in crossings {
                let refs: Vec<Option<&str>> = text.iter().map(|t| t.as_deref()).collect();
                let Some(key) = self.view.key_of(&refs) else {
                    continue;
                };
                if touched.insert(key.clone()) {
                    order.push((key, !entered, text));
                }
            }
        }
        let mut batch = MoveBatch::default();
        for (key, before, text) in order {
            match (before, self.view.holds(&key)) {
                (false, true) => batch.moved_in.push(text),
                (true, false) => batch.moved_out.push(text),
                _ => {}
            }
        }
        if batch.moved_in.is_empty() && batch.moved_out.is_empty() {
            return Materialized::Unchanged;
        }
        batch.txids.push(tx.xid);
        Materialized::Moved(batch)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::change::{Column, Datum, Relation, ReplicaIdentity};
    use crate::lsn::Lsn;
    use crate::shape::definition::TableName;
    use crate::shape::where_clause::{WhereClause, WhereColumn};

    /// `members (user_id int4, project_id int4)`.
    fn members() -> Arc<Relation> {
        let column = |name: &str| Column {
            name: name.into(),
            type_oid: 23,
            type_modifier: -1,
            is_key: false,
        };
        Arc::new(Relation {
            id: 7,
            schema: "public".into(),
            name: "members".into(),
            replica_identity: ReplicaIdentity::Full,
            columns: vec![column("user_id"), column("project_id")],
        })
    }

    fn member_columns() -> Vec<WhereColumn> {
        ["user_id", "project_id"]
            .map(|name| WhereColumn {
                name: name.into(),
                type_name: "int4".into(),
                dims: 0,
                is_enum: false,
            })
            .to_vec()
    }

    struct Filter(WhereClause);

    impl RowFilter for Filter {
        fn matches<'v>(&self, value: &dyn Fn(usize) -> Option<&'v str>) -> bool {
            self.0.matches(value)
        }

        fn index_key(&self) -> Option<(usize, Vec<String>)> {
            None
        }
    }

    /// `project_id IN (SELECT project_id FROM members WHERE user_id = 1)`,
    /// materialised.
    pub(crate) fn materializer() -> Materializer {
        materialized(
            "project_id IN (SELECT project_id FROM members WHERE user_id = 1)",
            vec![1],
        )
    }

    /// `clause`'s one subquery over `members` as a materializer taking the
    /// member columns `selected` (the ones the subquery selects, in order).
    fn materialized(clause: &str, selected: Vec<usize>) -> Materializer {
        let tables = |t: &TableName| (t.name == "members").then(member_columns);
        let outer =
            WhereClause::parse_with_tables(clause, &member_columns(), &BTreeMap::new(), &tables)
                .expect("clause");
        let dependency = &outer.dependencies()[0];
        let names: Vec<String> = selected
            .iter()
            .map(|&i| member_columns()[i].name.clone())
            .collect();
        assert_eq!(dependency.columns, names);
        let inner = WhereClause::parse_with_tables(
            dependency.where_sql.as_deref().expect("inner where"),
            &member_columns(),
            &dependency.params,
            &tables,
        )
        .expect("inner clause");
        Materializer::new(
            7,
            Some(Box::new(Filter(inner))),
            selected,
            outer.new_view(0).expect("view"),
        )
    }

    fn row(user: u32, project: Option<u32>) -> Vec<Datum> {
        vec![
            Datum::Text(user.to_string().into()),
            project.map_or(Datum::Null, |p| Datum::Text(p.to_string().into())),
        ]
    }

    pub(crate) fn tx(xid: u32, changes: Vec<Change>) -> Transaction {
        Transaction {
            xid,
            commit_lsn: Lsn(u64::from(xid) * 100),
            end_lsn: Lsn(u64::from(xid) * 100 + 1),
            commit_time_micros: 0,
            changes,
        }
    }

    pub(crate) fn insert(user: u32, project: Option<u32>) -> Change {
        Change::Insert {
            relation: members(),
            new: row(user, project),
        }
    }

    pub(crate) fn delete(user: u32, project: Option<u32>) -> Change {
        Change::Delete {
            relation: members(),
            old: (OldTupleKind::Full, row(user, project)),
        }
    }

    fn update(old: (u32, Option<u32>), new: (u32, Option<u32>)) -> Change {
        Change::Update {
            relation: members(),
            old: Some((OldTupleKind::Full, row(old.0, old.1))),
            new: row(new.0, new.1),
        }
    }

    fn values(texts: &[&str]) -> Vec<ValueText> {
        texts.iter().map(|t| vec![Some(t.to_string())]).collect()
    }

    fn moved(xid: u32, moved_in: &[&str], moved_out: &[&str]) -> Materialized {
        Materialized::Moved(MoveBatch {
            moved_in: values(moved_in),
            moved_out: values(moved_out),
            txids: vec![xid],
        })
    }

    #[test]
    fn materializer_moves_are_count_transitions_of_matching_rows() {
        let mut m = materializer();
        m.seed(&[Some("10")]);
        // Another user's membership does not match the inner where.
        assert_eq!(
            m.apply(&tx(1, vec![insert(2, Some(11))])),
            Materialized::Unchanged
        );
        // A second row with a held value moves nothing; a new value moves in.
        assert_eq!(
            m.apply(&tx(2, vec![insert(1, Some(10)), insert(1, Some(11))])),
            moved(2, &["11"], &[])
        );
        // The last row of a value going moves it out; not the first.
        assert_eq!(
            m.apply(&tx(3, vec![delete(1, Some(10))])),
            Materialized::Unchanged
        );
        assert_eq!(
            m.apply(&tx(4, vec![delete(1, Some(10))])),
            moved(4, &[], &["10"])
        );
        // An update moving a row between values moves both; one leaving
        // the inner where moves its value out.
        assert_eq!(
            m.apply(&tx(5, vec![update((1, Some(11)), (1, Some(12)))])),
            moved(5, &["12"], &["11"])
        );
        assert_eq!(
            m.apply(&tx(6, vec![update((1, Some(12)), (2, Some(12)))])),
            moved(6, &[], &["12"])
        );
        // In and out within one transaction cancel.
        assert_eq!(
            m.apply(&tx(7, vec![insert(1, Some(13)), delete(1, Some(13))])),
            Materialized::Unchanged
        );
        assert!(m.view().is_empty());
        // NULL is a value like any (it makes NOT IN unknown).
        assert_eq!(
            m.apply(&tx(8, vec![insert(1, None)])),
            Materialized::Moved(MoveBatch {
                moved_in: vec![vec![None]],
                moved_out: Vec::new(),
                txids: vec![8],
            })
        );
    }

    /// `(user_id, project_id) IN (SELECT user_id, project_id FROM members
    /// WHERE user_id <> 0)`, materialised: values are pairs.
    fn pairs() -> Materializer {
        materialized(
            "(user_id, project_id) IN (SELECT user_id, project_id FROM members WHERE user_id <> 0)",
            vec![0, 1],
        )
    }

    fn pair(user: &str, project: Option<&str>) -> ValueText {
        vec![Some(user.to_string()), project.map(str::to_string)]
    }

    #[test]
    fn materializer_row_form_moves_pairs() {
        let mut m = pairs();
        m.seed(&[Some("1"), Some("10")]);
        // The same project for another user is another pair.
        assert_eq!(
            m.apply(&tx(1, vec![insert(2, Some(10))])),
            Materialized::Moved(MoveBatch {
                moved_in: vec![pair("2", Some("10"))],
                moved_out: Vec::new(),
                txids: vec![1],
            })
        );
        // Changing one column of a pair moves the old pair out and the new
        // one in; leaving the inner where moves it out only.
        assert_eq!(
            m.apply(&tx(2, vec![update((1, Some(10)), (1, Some(11)))])),
            Materialized::Moved(MoveBatch {
                moved_in: vec![pair("1", Some("11"))],
                moved_out: vec![pair("1", Some("10"))],
                txids: vec![2],
            })
        );
        assert_eq!(
            m.apply(&tx(3, vec![update((1, Some(11)), (0, Some(11)))])),
            Materialized::Moved(MoveBatch {
                moved_in: Vec::new(),
                moved_out: vec![pair("1", Some("11"))],
                txids: vec![3],
            })
        );
        // A pair with a NULL is a value (it makes `NOT IN` unknown for some
        // rows), kept like any.
        assert_eq!(
            m.apply(&tx(4, vec![insert(3, None)])),
            Materialized::Moved(MoveBatch {
                moved_in: vec![pair("3", None)],
                moved_out: Vec::new(),
                txids: vec![4],
            })
        );
        assert!(m.view().has_null());
        assert_eq!(m.view().len(), 2);
    }

    #[test]
    fn materializer_refuses_what_it_cannot_count() {
        let mut m = materializer();
        let truncate = Change::Truncate {
            relations: vec![members()],
            cascade: false,
            restart_identity: false,
        };
        assert!(matches!(
            m.apply(&tx(1, vec![truncate])),
            Materialized::Invalidated(_)
        ));
        let key_only = Change::Update {
            relation: members(),
            old: None,
            new: row(1, Some(3)),
        };
        assert!(matches!(
            m.apply(&tx(2, vec![key_only])),
            Materialized::Invalidated(_)
        ));
        // Other tables' changes are not its business.
        let mut other = (*members()).clone();
        other.id = 8;
        let elsewhere = Change::Insert {
            relation: Arc::new(other),
            new: row(1, Some(3)),
        };
        assert_eq!(m.apply(&tx(3, vec![elsewhere])), Materialized::Unchanged);
    }
}
