//! A middle level of a nested subquery (issue 17, slice 3): in
//! `p IN (SELECT p FROM members WHERE team IN (SELECT team FROM tm WHERE
//! user = 1))` the values of `members` depend on the values of `tm`, so
//! when a team enters or leaves the inner set, the `members` rows of that
//! team enter or leave the middle level, and their `p`s its values.
//!
//! Those rows are not in the replication stream at that moment, so the
//! level keeps them itself: a *mirror* of its table's rows (only the
//! columns its where reads and it selects, counted as a multiset: rows
//! are not told apart by key, as with `REPLICA IDENTITY FULL` every update
//! and delete carries the old row to count out). The level's values are
//! then always `{selected(r) | r in mirror, where(r) under the child
//! sets}`, kept exact change by change in WAL order, with no query and no
//! held transaction: a child's value crossing 0↔1 re-evaluates the rows
//! it can decide (indexed by the tested columns' value), and a row of the
//! level's own table is evaluated against the child sets as they are.
//! The price is memory: the whole table's rows, bounded by
//! [`MAX_MIRROR_BYTES`] (over it the shape is invalidated, never wrong).

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use super::materializer::{Materializer, ValueText};
use super::where_clause::{SubqueryView, ValueKey, ViewRef, WhereClause};

/// Bytes of one level's mirrored rows before its shapes are invalidated.
pub const MAX_MIRROR_BYTES: usize = 64 * 1024 * 1024;

/// Bookkeeping bytes counted per mirrored row and per kept column.
const ROW_OVERHEAD_BYTES: usize = 64;
const COLUMN_OVERHEAD_BYTES: usize = 24;

/// A mirrored row: the kept columns' texts, in `kept` order.
type Row = Rc<[Option<Box<str>>]>;

/// A value of the level changed count: its selected texts and whether a
/// row with it was added (else removed).
pub(crate) type Emit<'e> = dyn FnMut(&[Option<&str>], bool) + 'e;

pub(crate) struct Mirror {
    /// The level's where, with its own subqueries (the children).
    clause: std::sync::Arc<WhereClause>,
    /// Table columns kept per row, ascending: what the where reads and
    /// what the level selects.
    kept: Vec<usize>,
    /// Slots (in `kept`) of the selected columns, in subquery order.
    selected: Vec<usize>,
    /// One per subquery of `clause`, in its `dependencies` order.
    pub(crate) children: Vec<Materializer>,
    /// Each child's values as this level's values reflect them (a set).
    seen: Vec<SubqueryView>,
    /// Per child: slots of the columns it tests, when their texts key its
    /// view (else every row is re-evaluated on its moves).
    keyed: Vec<Option<Vec<usize>>>,
    rows: HashMap<Row, u64>,
    /// Per child: rows by their tested value's key.
    index: Vec<HashMap<ValueKey, HashSet<Row>>>,
    /// Per child: rows its moves may decide whatever the value (a NULL
    /// tested, or no key).
    unkeyed: Vec<HashSet<Row>>,
    bytes: usize,
}

impl Mirror {
    /// `kept` must hold every column `clause` references and `selected`.
    pub(crate) fn new(
        clause: std::sync::Arc<WhereClause>,
        kept: Vec<usize>,
        selected: &[usize],
        children: Vec<Materializer>,
    ) -> Mirror {
        let slot = |c: &usize| kept.binary_search(c).ok();
        let selected = selected
            .iter()
            .map(|c| slot(c).expect("a selected column is kept"))
            .collect();
        let n = children.len();
        let keyed = (0..n)
            .map(|i| {
                clause
                    .keyed_columns(i)
                    .and_then(|cols| cols.iter().map(slot).collect::<Option<Vec<usize>>>())
            })
            .collect();
        let seen = (0..n)
            .map(|i| clause.new_view(i).expect("a view per subquery"))
            .collect();
        Mirror {
            clause,
            kept,
            selected,
            children,
            seen,
            keyed,
            rows: HashMap::new(),
            index: vec![HashMap::new(); n],
            unkeyed: vec![HashSet::new(); n],
            bytes: 0,
        }
    }

    fn matches(&self, row: &[Option<Box<str>>]) -> bool {
        let value = |c: usize| {
            self.kept
                .binary_search(&c)
                .ok()
                .and_then(|s| row[s].as_deref())
        };
        let views: Vec<Option<ViewRef>> = self.seen.iter().map(|v| Some(v.into())).collect();
        self.clause.matches_with(&value, &views)
    }

    fn selected<'r>(&self, row: &'r [Option<Box<str>>]) -> Vec<Option<&'r str>> {
        self.selected.iter().map(|&s| row[s].as_deref()).collect()
    }

    fn key(&self, child: usize, row: &[Option<Box<str>>]) -> Option<ValueKey> {
        let slots = self.keyed[child].as_ref()?;
        let texts: Vec<Option<&str>> = slots.iter().map(|&s| row[s].as_deref()).collect();
        if texts.iter().any(Option::is_none) {
            return None;
        }
        self.seen[child].key_of(&texts)
    }

    fn row_bytes(row: &[Option<Box<str>>]) -> usize {
        ROW_OVERHEAD_BYTES
            + row
                .iter()
                .map(|t| COLUMN_OVERHEAD_BYTES + t.as_ref().map_or(0, |t| t.len()))
                .sum::<usize>()
    }

    fn insert(&mut self, row: Vec<Option<Box<str>>>) {
        if let Some(count) = self.rows.get_mut(row.as_slice()) {
            *count += 1;
            return;
        }
        let row: Row = row.into();
        self.bytes += Self::row_bytes(&row);
        for child in 0..self.children.len() {
            match self.key(child, &row) {
                Some(key) => {
                    self.index[child]
                        .entry(key)
                        .or_default()
                        .insert(row.clone());
                }
                None => {
                    self.unkeyed[child].insert(row.clone());
                }
            }
        }
        self.rows.insert(row, 1);
    }

    /// Counts a row out; false when the mirror did not hold it.
    fn take(&mut self, row: &[Option<Box<str>>]) -> bool {
        let Some(count) = self.rows.get_mut(row) else {
            return false;
        };
        *count -= 1;
        if *count > 0 {
            return true;
        }
        self.rows.remove(row);
        self.bytes -= Self::row_bytes(row);
        for child in 0..self.children.len() {
            match self.key(child, row) {
                Some(key) => {
                    if let Some(rows) = self.index[child].get_mut(&key) {
                        rows.remove(row);
                        if rows.is_empty() {
                            self.index[child].remove(&key);
                        }
                    }
                }
                None => {
                    self.unkeyed[child].remove(row);
                }
            }
        }
        true
    }

    /// Counts one row of the seeding query (the kept columns, in `kept`
    /// order, every row of the table): values come at [`Mirror::finish_seed`].
    pub(crate) fn seed_row(&mut self, row: &[Option<&str>]) {
        self.insert(row.iter().map(|t| t.map(Box::from)).collect());
    }

    /// After every seeding row of this level and its children: the
    /// children's sets as seen, then each row that matches counted into
    /// `emit`.
    pub(crate) fn finish_seed(&mut self, emit: &mut Emit<'_>) -> Result<(), &'static str> {
        for (child, seen) in self.children.iter_mut().zip(&mut self.seen) {
            child.finish_seed()?;
            for value in distinct_values(child.view()) {
                let text: Vec<Option<&str>> = value.iter().map(|t| t.as_deref()).collect();
                seen.add(&text);
            }
        }
        if self.bytes > MAX_MIRROR_BYTES {
            return Err("a nested subquery's middle table is over its mirror's bound");
        }
        for (row, &count) in &self.rows {
            if self.matches(row) {
                let selected = self.selected(row);
                for _ in 0..count {
                    emit(&selected, true);
                }
            }
        }
        Ok(())
    }

    /// A row of the level's table, table-width, added or removed.
    pub(crate) fn row(
        &mut self,
        row: &[Option<&str>],
        add: bool,
        emit: &mut Emit<'_>,
    ) -> Result<(), &'static str> {
        let projected: Vec<Option<Box<str>>> = self
            .kept
            .iter()
            .map(|&c| row.get(c).copied().flatten().map(Box::from))
            .collect();
        let matches = self.matches(&projected);
        if add {
            self.insert(projected.clone());
            if self.bytes > MAX_MIRROR_BYTES {
                return Err("a nested subquery's middle table outgrew its mirror's bound");
            }
        } else if !self.take(&projected) {
            // Only a bug or a stream we misread gets here: the values
            // can no longer be trusted.
            return Err("a nested subquery's mirror missed a row it was told to remove");
        }
        if matches {
            emit(&self.selected(&projected), add);
        }
        Ok(())
    }

    /// Child `child`'s value crossed 0↔1 (`entered`: it is now in the
    /// child's set): the rows it decides are evaluated before and after,
    /// and those that flip counted in or out.
    pub(crate) fn child_moved(
        &mut self,
        child: usize,
        value: &[Option<&str>],
        entered: bool,
        emit: &mut Emit<'_>,
    ) {
        // A NULL moving changes `NOT IN` for every row; rows with a NULL
        // tested or without a key are always candidates.
        let affected: Vec<Row> = if value.iter().any(Option::is_none) || self.keyed[child].is_none()
        {
            self.rows.keys().cloned().collect()
        } else {
            let keyed = self.seen[child]
                .key_of(value)
                .and_then(|key| self.index[child].get(&key))
                .into_iter()
                .flatten();
            keyed.chain(&self.unkeyed[child]).cloned().collect()
        };
        let before: Vec<bool> = affected.iter().map(|r| self.matches(r)).collect();
        if entered {
            self.seen[child].add(value);
        } else {
            self.seen[child].remove(value);
        }
        for (row, was) in affected.iter().zip(before) {
            let now = self.matches(row);
            if now == was {
                continue;
            }
            let count = self.rows.get(row).copied().unwrap_or(0);
            let selected = self.selected(row);
            for _ in 0..count {
                emit(&selected, now);
            }
        }
    }
}

/// A view's distinct values, as texts.
pub(crate) fn distinct_values(view: &SubqueryView) -> Vec<ValueText> {
    let columns = view.column_texts();
    let len = columns.first().map_or(0, Vec::len);
    (0..len)
        .map(|j| columns.iter().map(|c| c[j].map(str::to_string)).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::change::{
        Change, Column, Datum, OldTupleKind, Relation, ReplicaIdentity, Transaction,
    };
    use crate::lsn::Lsn;
    use crate::shape::definition::TableName;
    use crate::shape::materializer::Materialized;
    use crate::shape::registry::RowFilter;
    use crate::shape::where_clause::{Dependency, WhereColumn};

    /// Tables of two int4 columns each: (relation id, name, columns).
    const TABLES: [(u32, &str, [&str; 2]); 4] = [
        (7, "members", ["team_id", "project_id"]),
        (8, "team_members", ["user_id", "team_id"]),
        (9, "teams", ["team_id", "org_id"]),
        (10, "org_members", ["user_id", "org_id"]),
    ];

    fn columns(names: [&str; 2]) -> Vec<WhereColumn> {
        names
            .map(|name| WhereColumn {
                name: name.into(),
                type_name: "int4".into(),
                dims: 0,
                is_enum: false,
            })
            .to_vec()
    }

    fn table(name: &str) -> (u32, [&'static str; 2]) {
        let (id, _, cols) = TABLES.iter().find(|t| t.1 == name).expect("a test table");
        (*id, *cols)
    }

    fn relation(name: &str) -> Arc<Relation> {
        let (id, cols) = table(name);
        Arc::new(Relation {
            id,
            schema: "public".into(),
            name: name.into(),
            replica_identity: ReplicaIdentity::Full,
            columns: cols
                .iter()
                .map(|c| Column {
                    name: (*c).into(),
                    type_oid: 23,
                    type_modifier: -1,
                    is_key: false,
                })
                .collect(),
        })
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

    fn lookup(t: &TableName) -> Option<Vec<WhereColumn>> {
        TABLES.iter().find(|x| x.1 == t.name).map(|x| columns(x.2))
    }

    /// The materializer of one level, built as the edge builds it.
    fn level(dependency: &Dependency, view: SubqueryView) -> Materializer {
        let (id, cols) = table(&dependency.table.name);
        let selected: Vec<usize> = dependency
            .columns
            .iter()
            .map(|c| cols.iter().position(|x| x == c).expect("a column"))
            .collect();
        let clause = dependency.where_sql.as_deref().map(|sql| {
            WhereClause::parse_with_tables(sql, &columns(cols), &dependency.params, &lookup)
                .expect("inner clause")
        });
        match clause {
            Some(clause) if clause.dnf().is_some() => {
                let mut kept: Vec<usize> = clause.referenced_columns().to_vec();
                kept.extend(&selected);
                let children = clause
                    .dependencies()
                    .iter()
                    .enumerate()
                    .map(|(i, d)| {
                        kept.extend(
                            clause
                                .dnf()
                                .and_then(|p| p.tested_columns(i))
                                .unwrap_or_default(),
                        );
                        level(d, clause.new_view(i).expect("view"))
                    })
                    .collect();
                kept.sort_unstable();
                kept.dedup();
                Materializer::nested(
                    id,
                    std::sync::Arc::new(clause),
                    selected,
                    kept,
                    children,
                    view,
                )
            }
            clause => Materializer::new(
                id,
                clause.map(|c| Box::new(Filter(c)) as Box<dyn RowFilter>),
                selected,
                view,
            ),
        }
    }

    /// The outer clause's first dependency, materialised (the outer table
    /// is `members`'s shape: any two int4 columns do).
    fn materializer(outer_sql: &str) -> Materializer {
        let outer = WhereClause::parse_with_tables(
            outer_sql,
            &columns(["id", "project_id"]),
            &BTreeMap::from([(1, "1".to_string())]),
            &lookup,
        )
        .expect("outer clause");
        level(&outer.dependencies()[0], outer.new_view(0).expect("view"))
    }

    type Rows = BTreeMap<&'static str, Vec<[Option<u32>; 2]>>;

    fn datum(v: Option<u32>) -> Datum {
        v.map_or(Datum::Null, |v| Datum::Text(v.to_string().into()))
    }

    fn distinct(values: impl Iterator<Item = Option<u32>>) -> Vec<Option<u32>> {
        let mut v: Vec<Option<u32>> = values.collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// SQL's `x IN set` / `x NOT IN set` with NULLs; None is unknown.
    fn sql_in(x: Option<u32>, set: &[Option<u32>]) -> Option<bool> {
        let x = x?;
        if set.contains(&Some(x)) {
            return Some(true);
        }
        if set.contains(&None) {
            return None;
        }
        Some(false)
    }

    fn sql_not_in(x: Option<u32>, set: &[Option<u32>]) -> Option<bool> {
        if set.is_empty() {
            return Some(true);
        }
        sql_in(x, set).map(|b| !b)
    }

    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// A level to seed: its path below the outer dependency, its table,
    /// and for an innermost one (`user_id = 1` on column 0) its selected
    /// column; a middle level seeds whole rows (both columns are kept).
    type Seed = (&'static [usize], &'static str, Option<usize>);

    /// Random changes on every table of the levels, one to four per
    /// transaction; after each, the materializer's set equals `expected`
    /// over the rows, and its moves are exactly the set's differences.
    fn churn(
        outer_sql: &str,
        seeds: &[Seed],
        expected: &dyn Fn(&Rows) -> Vec<Option<u32>>,
        seed: u64,
    ) {
        let mut rng = Rng(seed);
        let tables: Vec<&'static str> = seeds.iter().map(|s| s.1).collect();
        let mut rows: Rows = tables.iter().map(|t| (*t, Vec::new())).collect();
        let mut m = materializer(outer_sql);
        let value = |rng: &mut Rng| match rng.below(6) {
            0 => None,
            v => Some(v as u32),
        };
        for &t in &tables {
            for _ in 0..5 {
                let row = [value(&mut rng), value(&mut rng)];
                rows.get_mut(t).expect("table").push(row);
            }
        }
        // As the snapshot's seeding queries would.
        for &(path, t, leaf) in seeds {
            for row in &rows[t] {
                let texts: Vec<Option<String>> =
                    row.iter().map(|v| v.map(|v| v.to_string())).collect();
                let refs: Vec<Option<&str>> = texts.iter().map(|t| t.as_deref()).collect();
                match leaf {
                    Some(c) if row[0] == Some(1) => m.seed_at(path, &refs[c..=c]),
                    Some(_) => {}
                    None => m.seed_at(path, &refs),
                }
            }
        }
        m.finish_seed().expect("seeded");
        let mut before = expected(&rows);
        assert_eq!(set_of(m.view()), before, "seed {seed}: seeded");
        for xid in 1..300u32 {
            let mut changes = Vec::new();
            for _ in 0..=rng.below(4) {
                let t = tables[rng.below(tables.len() as u64) as usize];
                let list = rows.get_mut(t).expect("table");
                let new = [value(&mut rng), value(&mut rng)];
                let change = match (rng.below(3), list.is_empty()) {
                    (0, _) | (_, true) => {
                        list.push(new);
                        Change::Insert {
                            relation: relation(t),
                            new: new.map(datum).to_vec(),
                        }
                    }
                    (1, false) => {
                        let old = list.swap_remove(rng.below(list.len() as u64) as usize);
                        Change::Delete {
                            relation: relation(t),
                            old: (OldTupleKind::Full, old.map(datum).to_vec()),
                        }
                    }
                    _ => {
                        let at = rng.below(list.len() as u64) as usize;
                        let old = std::mem::replace(&mut list[at], new);
                        Change::Update {
                            relation: relation(t),
                            old: Some((OldTupleKind::Full, old.map(datum).to_vec())),
                            new: new.map(datum).to_vec(),
                        }
                    }
                };
                changes.push(change);
            }
            let tx = Transaction {
                xid,
                commit_lsn: Lsn(u64::from(xid) * 100),
                end_lsn: Lsn(u64::from(xid) * 100 + 1),
                commit_time_micros: 0,
                changes,
            };
            let after = expected(&rows);
            let (mut moved_in, mut moved_out) = (Vec::new(), Vec::new());
            match m.apply(&tx) {
                Materialized::Unchanged => {}
                Materialized::Moved(batch) => {
                    let parse =
                        |v: &ValueText| v[0].as_deref().map(|t| t.parse::<u32>().expect("int"));
                    moved_in = distinct(batch.moved_in.iter().map(parse));
                    moved_out = distinct(batch.moved_out.iter().map(parse));
                }
                Materialized::Invalidated(why) => panic!("seed {seed} xid {xid}: {why}"),
            }
            assert_eq!(set_of(m.view()), after, "seed {seed} xid {xid}");
            let entered: Vec<Option<u32>> = after
                .iter()
                .filter(|v| !before.contains(v))
                .copied()
                .collect();
            let left: Vec<Option<u32>> = before
                .iter()
                .filter(|v| !after.contains(v))
                .copied()
                .collect();
            assert_eq!(
                (moved_in, moved_out),
                (entered, left),
                "seed {seed} xid {xid}"
            );
            before = after;
        }
    }

    fn set_of(view: &SubqueryView) -> Vec<Option<u32>> {
        distinct(
            distinct_values(view)
                .iter()
                .map(|v| v[0].as_deref().map(|t| t.parse().expect("int"))),
        )
    }

    /// Column `c` of the rows of `t` whose `user_id` (column 0) is 1.
    fn of_user_1(rows: &Rows, t: &str, c: usize) -> Vec<Option<u32>> {
        distinct(rows[t].iter().filter(|r| r[0] == Some(1)).map(|r| r[c]))
    }

    /// Column `c` of the rows of `t` that `test` keeps (SQL: true only).
    fn select(
        rows: &Rows,
        t: &str,
        c: usize,
        test: &dyn Fn(&[Option<u32>; 2]) -> Option<bool>,
    ) -> Vec<Option<u32>> {
        distinct(
            rows[t]
                .iter()
                .filter(|r| test(r) == Some(true))
                .map(|r| r[c]),
        )
    }

    const MEMBERSHIP: &str = "project_id IN (SELECT project_id FROM members WHERE team_id IN (SELECT team_id FROM team_members WHERE user_id = $1))";

    #[test]
    fn two_levels_equal_sql_through_churn_at_every_level() {
        let seeds: &[Seed] = &[(&[], "members", None), (&[0], "team_members", Some(1))];
        for seed in 1..=20 {
            churn(
                MEMBERSHIP,
                seeds,
                &|rows| {
                    let teams = of_user_1(rows, "team_members", 1);
                    select(rows, "members", 1, &|r| sql_in(r[0], &teams))
                },
                seed,
            );
        }
    }

    #[test]
    fn two_levels_under_not_and_or_follow_sql_nulls() {
        let seeds: &[Seed] = &[(&[], "members", None), (&[0], "team_members", Some(1))];
        for seed in 1..=20 {
            churn(
                "project_id IN (SELECT project_id FROM members WHERE team_id NOT IN (SELECT team_id FROM team_members WHERE user_id = $1))",
                seeds,
                &|rows| {
                    let teams = of_user_1(rows, "team_members", 1);
                    select(rows, "members", 1, &|r| sql_not_in(r[0], &teams))
                },
                seed,
            );
            churn(
                "project_id IN (SELECT project_id FROM members WHERE team_id IN (SELECT team_id FROM team_members WHERE user_id = $1) OR project_id = 3)",
                seeds,
                &|rows| {
                    let teams = of_user_1(rows, "team_members", 1);
                    select(rows, "members", 1, &|r| {
                        match (sql_in(r[0], &teams), r[1].map(|p| p == 3)) {
                            (Some(true), _) | (_, Some(true)) => Some(true),
                            (Some(false), Some(false)) => Some(false),
                            _ => None,
                        }
                    })
                },
                seed,
            );
        }
    }

    #[test]
    fn three_levels_equal_sql_through_churn_at_every_level() {
        let seeds: &[Seed] = &[
            (&[], "members", None),
            (&[0], "teams", None),
            (&[0, 0], "org_members", Some(1)),
        ];
        for seed in 1..=20 {
            churn(
                "project_id IN (SELECT project_id FROM members WHERE team_id IN (SELECT team_id FROM teams WHERE org_id IN (SELECT org_id FROM org_members WHERE user_id = $1)))",
                seeds,
                &|rows| {
                    let orgs = of_user_1(rows, "org_members", 1);
                    let teams = select(rows, "teams", 0, &|r| sql_in(r[1], &orgs));
                    select(rows, "members", 1, &|r| sql_in(r[0], &teams))
                },
                seed,
            );
        }
    }

    #[test]
    fn a_row_missing_from_the_mirror_invalidates() {
        let mut m = materializer(MEMBERSHIP);
        m.finish_seed().expect("seeded");
        let tx = Transaction {
            xid: 1,
            commit_lsn: Lsn(100),
            end_lsn: Lsn(101),
            commit_time_micros: 0,
            changes: vec![Change::Delete {
                relation: relation("members"),
                old: (OldTupleKind::Full, vec![datum(Some(1)), datum(Some(2))]),
            }],
        };
        assert!(matches!(m.apply(&tx), Materialized::Invalidated(_)));
    }
}
