//! Test fixtures: a one-column table `public.<name> (id int4 PRIMARY KEY)`,
//! its relation as pgoutput describes it, and shapes on it.

use std::sync::Arc;

use crate::change::{Column, Relation, ReplicaIdentity};

use super::definition::{LogMode, Replica, ShapeDefinition, ShapeHandle, TableName};
use super::registry::{RowFilter, ShapeSpec};
use super::schema::{ColumnInfo, TableSchema};

/// The relation of the id table.
pub fn id_relation(relation_id: u32, name: &str) -> Arc<Relation> {
    Arc::new(Relation {
        id: relation_id,
        schema: "public".into(),
        name: name.into(),
        replica_identity: ReplicaIdentity::Full,
        columns: vec![Column {
            name: "id".into(),
            type_oid: 23,
            type_modifier: -1,
            is_key: true,
        }],
    })
}

/// A shape on the id table; `filter` is the where clause's text and its
/// evaluator (distinct texts make distinct shapes).
pub fn id_shape(
    relation_id: u32,
    name: &str,
    filter: Option<(String, Box<dyn RowFilter>)>,
    created_micros: u64,
) -> ShapeSpec {
    let table = TableName {
        schema: "public".into(),
        name: name.into(),
    };
    let (where_sql, filter) = match filter {
        Some((sql, filter)) => (Some(sql), Some(filter)),
        None => (None, None),
    };
    let definition = ShapeDefinition {
        table: table.clone(),
        where_canonical: where_sql.clone(),
        where_sql,
        params: Default::default(),
        columns: None,
        replica: Replica::Default,
        log_mode: LogMode::Full,
    };
    ShapeSpec {
        handle: ShapeHandle::new(definition.hash(), created_micros),
        canonical: definition.canonical(),
        definition,
        schema: TableSchema {
            relation_id,
            table,
            columns: vec![ColumnInfo {
                name: "id".into(),
                type_name: "int4".into(),
                type_oid: 23,
                dims: 0,
                type_mod: -1,
                not_null: true,
                pk_index: Some(0),
            }],
        },
        selected: vec![0],
        key: vec![0],
        filter,
        schema_header: String::new(),
        persisted: Vec::new(),
        subqueries: None,
    }
}

/// `id = value` on the id table, indexed by its value.
struct IdIs(String);

impl RowFilter for IdIs {
    fn matches<'v>(&self, value: &dyn Fn(usize) -> Option<&'v str>) -> bool {
        value(0) == Some(self.0.as_str())
    }
    fn index_key(&self) -> Option<(usize, Vec<String>)> {
        Some((0, vec![self.0.clone()]))
    }
}

/// The shape `id = n` on table `items` (relation 1); its creation record
/// is `n` as text, so a loader can rebuild it.
pub fn id_equals_shape(n: u64) -> ShapeSpec {
    let filter: Box<dyn RowFilter> = Box::new(IdIs(n.to_string()));
    let mut spec = id_shape(1, "items", Some((format!("id = {n}"), filter)), n);
    spec.persisted = n.to_string().into_bytes();
    spec
}

/// `id_equals_shape(n)` naming its one column (`columns=id`); its
/// creation record is `n:id`.
pub fn id_equals_shape_named(n: u64) -> ShapeSpec {
    let mut spec = id_equals_shape(n);
    spec.definition.columns = Some(vec!["id".into()]);
    spec.canonical = spec.definition.canonical();
    spec.handle = ShapeHandle::new(spec.definition.hash(), n);
    spec.persisted = format!("{n}:id").into_bytes();
    spec
}

/// Rebuilds `id_equals_shape(n)` / `id_equals_shape_named(n)` from its
/// creation record, as the edge's loader rebuilds cold shapes.
pub fn id_equals_loader() -> super::registry::SpecLoader {
    Box::new(|persisted: &[u8]| {
        let text = std::str::from_utf8(persisted).map_err(|_| "bad creation record")?;
        let (n, named) = match text.strip_suffix(":id") {
            Some(n) => (n, true),
            None => (text, false),
        };
        let n = n.parse().map_err(|_| "bad creation record")?;
        Ok(if named {
            id_equals_shape_named(n)
        } else {
            id_equals_shape(n)
        })
    })
}

/// What the group commit does at a tick and a checkpoint, inline: the
/// meta batch to LMDB, every tail to its files (trimmed), the log states
/// and read stamps to LMDB.
pub fn checkpoint(
    registry: &mut super::registry::Registry,
    meta: &crate::storage::meta::MetaStore,
) {
    meta.commit(&registry.take_meta_batch())
        .expect("meta commit");
    let mut logs = Vec::new();
    for (shape, captured, record) in registry.capture_logs() {
        for write in &captured.writes {
            write.apply().expect("file write");
        }
        shape.written(&captured);
        logs.push((shape.id, record));
    }
    meta.checkpoint(&crate::storage::meta::CheckpointBatch {
        client_views: Vec::new(),
        seen: 0,
        logs,
        stamps: registry.take_read_stamps(),
        at: Default::default(),
    })
    .expect("checkpoint");
}
