//! The bench table (`id int8 PK, g int4, note text`) as the catalog would
//! describe it, for benches that build shapes without Postgres.

use shapeshard::shapes::catalog::TableInfo;
use shards::shape::definition::{LogMode, Replica, ShapeDefinition, TableName};
use shards::shape::schema::{ColumnInfo, TableSchema};

pub fn bench_table() -> TableInfo {
    let column = |name: &str, type_name: &str, oid: u32, pk: Option<usize>| ColumnInfo {
        name: name.into(),
        type_name: type_name.into(),
        type_oid: oid,
        dims: 0,
        type_mod: -1,
        not_null: pk.is_some(),
        pk_index: pk,
    };
    TableInfo {
        schema: TableSchema {
            relation_id: 16384,
            table: TableName {
                schema: "public".into(),
                name: "bench".into(),
            },
            columns: vec![
                column("id", "int8", 20, Some(0)),
                column("g", "int4", 23, None),
                column("note", "text", 25, None),
            ],
        },
        is_enum: vec![false; 3],
    }
}

/// `g = k` on the bench table.
pub fn g_equals(k: usize) -> ShapeDefinition {
    ShapeDefinition {
        table: bench_table().schema.table,
        where_sql: Some(format!("g = {k}")),
        where_canonical: Some(format!("g = {k}")),
        params: Default::default(),
        columns: None,
        replica: Replica::Default,
        log_mode: LogMode::Full,
    }
}
