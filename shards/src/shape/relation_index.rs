//! What a shard knows per relation: the index of its shapes on it (by
//! their where clause's equality/IN column when they have one) and the
//! fingerprint of a table's columns that shapes are checked against.

use std::collections::{BTreeSet, HashMap};

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
    pub(crate) indexed: HashMap<usize, HashMap<String, Vec<ShapeId>>>,
    /// Where each indexed shape is in `indexed`, for its removal.
    keys: HashMap<ShapeId, (usize, Vec<String>)>,
    /// Shapes still waiting for their snapshot's visibility: they hold
    /// every transaction on the relation, whatever the index says.
    pub(crate) pending: Vec<ShapeId>,
    pub(crate) count: usize,
}

impl RelationShapes {
    pub(crate) fn add(&mut self, id: ShapeId, key: Option<(usize, Vec<String>)>) {
        self.count += 1;
        match key {
            Some((column, values)) => {
                let by_value = self.indexed.entry(column).or_default();
                for value in &values {
                    by_value.entry(value.clone()).or_default().push(id);
                }
                self.keys.insert(id, (column, values));
            }
            None => {
                self.unindexed.insert(id);
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
        let Some((column, values)) = self.keys.remove(&id) else {
            return;
        };
        if let Some(by_value) = self.indexed.get_mut(&column) {
            for value in values {
                if let Some(ids) = by_value.get_mut(&value) {
                    ids.retain(|&s| s != id);
                    if ids.is_empty() {
                        by_value.remove(&value);
                    }
                }
            }
            if by_value.is_empty() {
                self.indexed.remove(&column);
            }
        }
    }

    /// Every shape on the relation.
    pub(crate) fn all(&self) -> impl Iterator<Item = ShapeId> + '_ {
        self.unindexed
            .iter()
            .chain(self.keys.keys())
            .chain(self.pending.iter())
            .copied()
    }

    /// Shapes a row may belong to. Reads only the indexed columns of the
    /// tuple (no row is built: this runs for every change).
    pub(crate) fn candidates(&self, tuple: &Tuple, old: Option<&Tuple>, out: &mut Vec<ShapeId>) {
        out.extend(self.unindexed.iter().copied());
        for (&column, by_value) in &self.indexed {
            if let Some(value) = convert::value_at(tuple, old, column) {
                if let Some(ids) = by_value.get(value) {
                    out.extend_from_slice(ids);
                }
            }
        }
    }
}
