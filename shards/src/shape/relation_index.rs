//! What a shard knows per relation: the index of its shapes on it (by
//! their where clause's equality/IN column when they have one) and the
//! fingerprint of a table's columns that shapes are checked against.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::change::{Relation, Tuple};
use crate::shape::convert;
use crate::shape::registry::ShapeId;
use crate::shape::schema::TableSchema;

/// A table's shape-relevant schema, as one number: column names and type
/// oids, in order (what a shape was validated against). Kept with cold
/// shapes, so a Relation message is checked without building them.
pub fn schema_fingerprint<'a>(columns: impl Iterator<Item = (&'a str, u32)>) -> u64 {
    prefix_fingerprints(columns)
        .last()
        .copied()
        .unwrap_or(FNV_OFFSET)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The fingerprint of each prefix of `columns` (first column, first two,
/// …): FNV-1a is a running hash, so the fingerprint of a shape validated
/// before columns were appended is one of these.
fn prefix_fingerprints<'a>(columns: impl Iterator<Item = (&'a str, u32)>) -> Vec<u64> {
    // FNV-1a: stable across runs and builds (it is stored).
    let mut hash: u64 = FNV_OFFSET;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash
    };
    columns
        .map(|(name, type_oid)| {
            eat(name.as_bytes());
            eat(&[0]);
            eat(&type_oid.to_le_bytes())
        })
        .collect()
}

pub(crate) fn table_fingerprint(schema: &TableSchema) -> u64 {
    schema_fingerprint(schema.columns.iter().map(|c| (c.name.as_str(), c.type_oid)))
}

/// A table's columns as a Relation message describes them, for deciding
/// which of its shapes still hold.
pub(crate) struct RelationColumns {
    prefixes: Vec<u64>,
}

impl RelationColumns {
    pub(crate) fn of(relation: &Relation) -> Self {
        Self {
            prefixes: prefix_fingerprints(
                relation
                    .columns
                    .iter()
                    .map(|c| (c.name.as_str(), c.type_oid)),
            ),
        }
    }

    /// The fingerprint of the whole table.
    pub(crate) fn fingerprint(&self) -> u64 {
        self.prefixes.last().copied().unwrap_or(FNV_OFFSET)
    }

    /// Whether a shape validated against columns with `fingerprint` still
    /// holds. A shape that selects every column holds only against the same
    /// columns (as Electric: its rows would change shape). One that names
    /// its columns also holds when columns were only appended (`ADD
    /// COLUMN`): every column it uses keeps its name, type and position, so
    /// its filter and row layout stay right and it never sees the new ones.
    pub(crate) fn keeps(&self, fingerprint: u64, selects_all: bool) -> bool {
        if selects_all {
            return self.fingerprint() == fingerprint;
        }
        self.prefixes.contains(&fingerprint)
    }
}

/// The shapes on one relation, indexed by their where clause's
/// equality/IN column when they have one. Adding and removing a shape cost
/// the size of its own key, not the number of shapes on the table (a table
/// losing 100k shapes at once must not be quadratic).
#[derive(Default)]
pub(crate) struct RelationShapes {
    pub(crate) unindexed: BTreeSet<ShapeId>,
    /// column → value text → shapes requiring that value.
    pub(crate) indexed: HashMap<usize, HashMap<Box<str>, Vec<ShapeId>>>,
    /// Where each indexed shape is in `indexed`, for its removal.
    keys: HashMap<ShapeId, (usize, Vec<String>)>,
    /// Shapes still waiting for their snapshot's visibility: they hold
    /// every transaction on the relation, whatever the index says.
    pub(crate) pending: Vec<ShapeId>,
    pub(crate) count: usize,
    /// Subquery shapes keyed by their subquery's values (`col IN (SELECT
    /// ..)`): column → value text → shapes. Unlike `indexed` the values
    /// move (the registry adds and removes them as the shape's views do).
    by_subquery: HashMap<usize, HashMap<Box<str>, Vec<ShapeId>>>,
    /// Each such shape's column and the values it is under, for moves and
    /// its removal.
    subquery_keys: HashMap<ShapeId, (usize, HashSet<Box<str>>)>,
    /// Such shapes' fixed keys in `indexed` too (the plain equalities of
    /// the other arms of an `OR`), for their removal.
    subquery_fixed: HashMap<ShapeId, Vec<(usize, Vec<String>)>>,
    /// Subquery shapes with too many values to key (see
    /// [`BROAD_ABOVE_VALUES`]): they take every row of the relation, as
    /// unindexed shapes do, and their client views decide. Still in
    /// `subquery_keys`, with no value.
    broad: BTreeSet<ShapeId>,
}

/// Values past which a subquery shape is no longer keyed by them: an index
/// entry costs about 200 bytes per value and shape, and a shape holding
/// this many values of the relation's column takes a large part of its
/// rows anyway. Evaluating a row against its view is a hash lookup.
pub(crate) const BROAD_ABOVE_VALUES: usize = 16 * 1024;

/// Values under which a broad subquery shape is keyed again (half the
/// above: a shape near the bound does not swap at every move).
pub(crate) const NARROW_BELOW_VALUES: usize = BROAD_ABOVE_VALUES / 2;

impl RelationShapes {
    pub(crate) fn add(&mut self, id: ShapeId, key: Option<(usize, Vec<String>)>) {
        self.count += 1;
        match key {
            Some((column, values)) => {
                let by_value = self.indexed.entry(column).or_default();
                for value in &values {
                    by_value.entry(value.as_str().into()).or_default().push(id);
                }
                self.keys.insert(id, (column, values));
            }
            None => {
                self.unindexed.insert(id);
            }
        }
    }

    /// A subquery shape routed by the values of column `column` (none
    /// yet: [`RelationShapes::key_value`] adds them), and by `fixed` keys
    /// (an `OR`'s plain arms) like any indexed shape. One already here
    /// unindexed (restored before its views were) moves over.
    pub(crate) fn add_subquery(
        &mut self,
        id: ShapeId,
        column: usize,
        fixed: Vec<(usize, Vec<String>)>,
    ) {
        if self.subquery_keys.contains_key(&id) {
            return;
        }
        if !self.unindexed.remove(&id) {
            self.count += 1;
        }
        self.subquery_keys.insert(id, (column, HashSet::new()));
        if !fixed.is_empty() {
            for (column, values) in &fixed {
                let by_value = self.indexed.entry(*column).or_default();
                for value in values {
                    by_value.entry(value.as_str().into()).or_default().push(id);
                }
            }
            self.subquery_fixed.insert(id, fixed);
        }
    }

    /// Whether `id` is routed by its subquery's values.
    #[cfg(test)]
    pub(crate) fn is_subquery_keyed(&self, id: ShapeId) -> bool {
        self.subquery_keys.contains_key(&id)
    }

    /// Whether subquery shape `id` takes every row (see `broad`).
    pub(crate) fn is_broad(&self, id: ShapeId) -> bool {
        self.broad.contains(&id)
    }

    pub(crate) fn broad_count(&self) -> usize {
        self.broad.len()
    }

    /// Subquery shape `id` takes every row from now: its values are no
    /// longer keyed.
    pub(crate) fn broaden(&mut self, id: ShapeId) {
        let Some((column, values)) = self.subquery_keys.get_mut(&id) else {
            return;
        };
        if !self.broad.insert(id) {
            return;
        }
        let column = *column;
        for value in std::mem::take(values) {
            Self::drop_key(&mut self.by_subquery, column, &value, id);
        }
    }

    /// Broad subquery shape `id` is keyed again, by no value yet (the
    /// caller keys them all).
    pub(crate) fn narrow(&mut self, id: ShapeId) {
        self.broad.remove(&id);
    }

    /// Routes rows whose column prints as `value` to subquery shape `id`
    /// (a broad one takes them all already).
    pub(crate) fn key_value(&mut self, id: ShapeId, value: &str) {
        if self.broad.contains(&id) {
            return;
        }
        let Some((column, values)) = self.subquery_keys.get_mut(&id) else {
            return;
        };
        if values.insert(value.into()) {
            self.by_subquery
                .entry(*column)
                .or_default()
                .entry(value.into())
                .or_default()
                .push(id);
        }
    }

    /// Stops routing rows with `value` to subquery shape `id`.
    pub(crate) fn unkey_value(&mut self, id: ShapeId, value: &str) {
        let Some((column, values)) = self.subquery_keys.get_mut(&id) else {
            return;
        };
        if values.remove(value) {
            Self::drop_key(&mut self.by_subquery, *column, value, id);
        }
    }

    fn drop_key(
        map: &mut HashMap<usize, HashMap<Box<str>, Vec<ShapeId>>>,
        column: usize,
        value: &str,
        id: ShapeId,
    ) {
        if let Some(by_value) = map.get_mut(&column) {
            if let Some(ids) = by_value.get_mut(value) {
                ids.retain(|&s| s != id);
                if ids.is_empty() {
                    by_value.remove(value);
                }
            }
            if by_value.is_empty() {
                map.remove(&column);
            }
        }
    }

    pub(crate) fn remove(&mut self, id: ShapeId) {
        self.count -= 1;
        if !self.pending.is_empty() {
            self.pending.retain(|&s| s != id);
        }
        if self.unindexed.remove(&id) {
            return;
        }
        if let Some((column, values)) = self.subquery_keys.remove(&id) {
            self.broad.remove(&id);
            for value in values {
                Self::drop_key(&mut self.by_subquery, column, &value, id);
            }
            for (column, values) in self.subquery_fixed.remove(&id).unwrap_or_default() {
                for value in values {
                    Self::drop_key(&mut self.indexed, column, &value, id);
                }
            }
            return;
        }
        let Some((column, values)) = self.keys.remove(&id) else {
            return;
        };
        for value in values {
            Self::drop_key(&mut self.indexed, column, &value, id);
        }
    }

    /// Every shape on the relation.
    pub(crate) fn all(&self) -> impl Iterator<Item = ShapeId> + '_ {
        self.unindexed
            .iter()
            .chain(self.keys.keys())
            .chain(self.subquery_keys.keys())
            .chain(self.pending.iter())
            .copied()
    }

    /// Shapes a row may belong to (a shape keyed twice may come twice:
    /// callers dedup). Reads only the indexed columns of the tuple (no row
    /// is built: this runs for every change).
    pub(crate) fn candidates(&self, tuple: &Tuple, old: Option<&Tuple>, out: &mut Vec<ShapeId>) {
        out.extend(self.unindexed.iter().copied());
        out.extend(self.broad.iter().copied());
        for (&column, by_value) in self.indexed.iter().chain(&self.by_subquery) {
            if let Some(value) = convert::value_at(tuple, old, column) {
                if let Some(ids) = by_value.get(value) {
                    out.extend_from_slice(ids);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::Datum;

    fn row(project: &str) -> Tuple {
        vec![
            Datum::Text(bytes::Bytes::from("1")),
            Datum::Text(bytes::Bytes::from(project.to_string())),
        ]
    }

    fn candidates(shapes: &RelationShapes, project: &str) -> Vec<ShapeId> {
        let mut out = Vec::new();
        shapes.candidates(&row(project), None, &mut out);
        out.sort_unstable();
        out
    }

    #[test]
    fn subquery_shapes_are_routed_by_values_that_move() {
        let mut shapes = RelationShapes::default();
        shapes.add(1, None);
        // Restored unindexed first, then keyed: it moves over, counted once.
        shapes.add(2, None);
        shapes.add_subquery(2, 1, Vec::new());
        shapes.add_subquery(3, 1, Vec::new());
        assert_eq!(shapes.count, 3);
        assert!(shapes.is_subquery_keyed(2) && !shapes.is_subquery_keyed(1));
        shapes.key_value(2, "7");
        shapes.key_value(2, "7");
        shapes.key_value(3, "7");
        shapes.key_value(3, "8");
        assert_eq!(
            candidates(&shapes, "7"),
            [1, 2, 3],
            "a value keyed twice routes once"
        );
        assert_eq!(candidates(&shapes, "8"), [1, 3]);
        assert_eq!(candidates(&shapes, "9"), [1], "only the unindexed shape");
        shapes.unkey_value(3, "8");
        assert_eq!(candidates(&shapes, "8"), [1]);
        shapes.remove(2);
        assert_eq!(candidates(&shapes, "7"), [1, 3]);
        shapes.remove(3);
        assert_eq!(shapes.count, 1);
        assert!(shapes.by_subquery.is_empty(), "no value left behind");
        let mut all: Vec<ShapeId> = shapes.all().collect();
        all.sort_unstable();
        assert_eq!(all, [1]);
    }

    #[test]
    fn a_broad_subquery_shape_takes_every_row_until_narrowed() {
        let mut shapes = RelationShapes::default();
        shapes.add_subquery(2, 1, Vec::new());
        shapes.add_subquery(3, 1, Vec::new());
        shapes.key_value(2, "7");
        shapes.key_value(3, "7");
        shapes.broaden(2);
        assert!(shapes.is_broad(2) && !shapes.is_broad(3));
        assert_eq!(candidates(&shapes, "9"), [2], "every row");
        assert_eq!(candidates(&shapes, "7"), [2, 3], "its keys are gone");
        shapes.key_value(2, "8");
        assert!(
            !shapes.by_subquery[&1].contains_key("8"),
            "a broad shape keys nothing"
        );
        shapes.narrow(2);
        assert!(candidates(&shapes, "9").is_empty());
        shapes.key_value(2, "9");
        assert_eq!(candidates(&shapes, "9"), [2]);
        shapes.broaden(2);
        shapes.remove(2);
        shapes.remove(3);
        assert_eq!(shapes.broad_count(), 0);
        assert!(shapes.by_subquery.is_empty() && shapes.all().next().is_none());
    }

    #[test]
    fn an_or_shape_is_routed_by_its_values_and_its_fixed_keys() {
        let mut shapes = RelationShapes::default();
        // `project IN (SELECT ..) OR id = 1`: column 1 by values, column 0
        // by the fixed key.
        shapes.add_subquery(4, 1, vec![(0, vec!["1".into()])]);
        shapes.key_value(4, "7");
        // Row id 1, project 7: by both keys (the registry dedups).
        assert_eq!(candidates(&shapes, "7"), [4, 4]);
        assert_eq!(
            candidates(&shapes, "9"),
            [4],
            "id 1 routes whatever the project"
        );
        let mut other = Vec::new();
        let row2 = vec![
            Datum::Text(bytes::Bytes::from("2")),
            Datum::Text(bytes::Bytes::from("9")),
        ];
        shapes.candidates(&row2, None, &mut other);
        assert!(other.is_empty(), "neither key: not routed");
        assert_eq!(shapes.all().count(), 1);
        shapes.remove(4);
        assert_eq!(shapes.count, 0);
        assert!(shapes.indexed.is_empty() && shapes.by_subquery.is_empty());
    }
}
