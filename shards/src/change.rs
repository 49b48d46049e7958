//! Decoded replication data as the shards consume it: relations, tuples and
//! committed transactions. Produced once by the ingest (pgoutput decoding in
//! `src/pg`), shared with the shards behind `Arc` without re-encoding.

use std::sync::Arc;

use bytes::Bytes;

use crate::lsn::Lsn;

/// Postgres relation (table) id.
pub type RelationId = u32;

/// Postgres transaction id (32-bit, as pgoutput sends it).
pub type Xid = u32;

/// A table's replica identity (`pg_class.relreplident`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaIdentity {
    /// `d`: the primary key.
    Default,
    /// `n`: nothing.
    Nothing,
    /// `f`: all columns.
    Full,
    /// `i`: a unique index.
    Index,
}

impl ReplicaIdentity {
    pub fn from_byte(b: u8) -> Option<ReplicaIdentity> {
        Some(match b {
            b'd' => ReplicaIdentity::Default,
            b'n' => ReplicaIdentity::Nothing,
            b'f' => ReplicaIdentity::Full,
            b'i' => ReplicaIdentity::Index,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
    /// Part of the replica identity key (pgoutput column flag 1).
    pub is_key: bool,
}

/// A relation as described by a pgoutput Relation message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relation {
    pub id: RelationId,
    pub schema: String,
    pub name: String,
    pub replica_identity: ReplicaIdentity,
    pub columns: Vec<Column>,
}

/// One column value of a tuple, as pgoutput sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Datum {
    Null,
    /// A TOASTed value the update did not change; its value is not in the stream.
    UnchangedToast,
    /// The value in Postgres text output format (UTF-8 bytes, shared with the
    /// received message: no copy per value).
    Text(Bytes),
}

impl Datum {
    /// The text value, if any; `None` for NULL and unchanged TOAST.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Datum::Text(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

/// A row: one datum per column of the relation, in column order.
pub type Tuple = Vec<Datum>;

/// Which old tuple an update or delete carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OldTupleKind {
    /// `K`: only the replica identity key columns are set (others are NULL).
    Key,
    /// `O`: the whole old row (REPLICA IDENTITY FULL).
    Full,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Insert {
        relation: Arc<Relation>,
        new: Tuple,
    },
    Update {
        relation: Arc<Relation>,
        /// Absent when the key did not change and the identity is not FULL.
        old: Option<(OldTupleKind, Tuple)>,
        new: Tuple,
    },
    Delete {
        relation: Arc<Relation>,
        old: (OldTupleKind, Tuple),
    },
    Truncate {
        relations: Vec<Arc<Relation>>,
        cascade: bool,
        restart_identity: bool,
    },
}

impl Change {
    /// Relation ids this change touches.
    pub fn relation_ids(&self) -> impl Iterator<Item = RelationId> + '_ {
        let (single, many): (Option<RelationId>, &[Arc<Relation>]) = match self {
            Change::Insert { relation, .. }
            | Change::Update { relation, .. }
            | Change::Delete { relation, .. } => (Some(relation.id), &[]),
            Change::Truncate { relations, .. } => (None, relations.as_slice()),
        };
        single.into_iter().chain(many.iter().map(|r| r.id))
    }
}

/// A committed transaction, decoded once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub xid: Xid,
    /// LSN of the commit record: the `tx` part of every offset in it.
    pub commit_lsn: Lsn,
    /// LSN just past the commit record: confirming it to Postgres means
    /// "never send this transaction again".
    pub end_lsn: Lsn,
    /// Commit time, microseconds since 2000-01-01 (Postgres epoch).
    pub commit_time_micros: i64,
    pub changes: Vec<Change>,
}

impl Transaction {
    /// Roughly the bytes this transaction keeps alive: its values plus a
    /// fixed cost per datum and change (for memory budgets, not billing).
    pub fn approx_bytes(&self) -> usize {
        fn tuple(t: &Tuple) -> usize {
            t.iter()
                .map(|d| match d {
                    Datum::Text(b) => b.len() + 32,
                    _ => 32,
                })
                .sum()
        }
        let changes: usize = self
            .changes
            .iter()
            .map(|c| {
                64 + match c {
                    Change::Insert { new, .. } => tuple(new),
                    Change::Update { old, new, .. } => {
                        tuple(new) + old.as_ref().map_or(0, |(_, t)| tuple(t))
                    }
                    Change::Delete { old, .. } => tuple(&old.1),
                    Change::Truncate { relations, .. } => 8 * relations.len(),
                }
            })
            .sum();
        std::mem::size_of::<Transaction>() + changes
    }

    /// Whether any change touches `relation`.
    pub fn touches(&self, relation: RelationId) -> bool {
        self.changes
            .iter()
            .any(|c| c.relation_ids().any(|r| r == relation))
    }
}
