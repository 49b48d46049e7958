//! What a shape needs to know about its table, read from the catalog on the
//! connection that then takes the snapshot.

use shards::shape::definition::TableName;
use shards::shape::schema::{ColumnInfo, TableSchema};

use crate::pg::conn::Connection;
use crate::pg::error::PgError;

/// A table's schema plus, per column, whether its type is an enum (where
/// clauses may only use enums cast to text).
pub struct TableInfo {
    pub schema: TableSchema,
    pub is_enum: Vec<bool>,
}

/// The table's columns in attribute order with types, nullability and
/// primary-key positions; None when there is no such table.
pub async fn load_table(
    conn: &mut Connection,
    table: &TableName,
) -> Result<Option<TableInfo>, PgError> {
    let relation = conn
        .query_params(
            "SELECT c.oid::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[Some(&table.schema), Some(&table.name)],
        )
        .await?;
    let Some(oid) = relation
        .first()
        .and_then(|r| r.try_get::<u32>(0).ok().flatten())
    else {
        return Ok(None);
    };
    let oid_text = oid.to_string();
    // For arrays `typname` is the element's (as the schema header wants)
    // and dims at least 1 (attndims is 0 for some array columns).
    let rows = conn
        .query_params(
            "SELECT a.attname, a.atttypid::text, a.atttypmod::text, a.attnotnull::text, \
                    CASE WHEN et.oid IS NOT NULL THEN greatest(a.attndims, 1) ELSE 0 END::text, \
                    coalesce(et.typname, t.typname)::text, \
                    (pk.ord - 1)::text, \
                    (coalesce(et.typtype, t.typtype) = 'e')::text \
             FROM pg_attribute a \
             JOIN pg_type t ON t.oid = a.atttypid \
             LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A' \
             LEFT JOIN (SELECT k.attnum, k.ord FROM pg_index i, \
                        unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
                        WHERE i.indrelid = $1::oid AND i.indisprimary) pk ON pk.attnum = a.attnum \
             WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[Some(&oid_text)],
        )
        .await?;
    let mut columns = Vec::with_capacity(rows.len());
    let mut enums = Vec::with_capacity(rows.len());
    for row in rows {
        let bad = || PgError::Protocol(format!("unexpected catalog row for {table}: {row:?}"));
        columns.push(ColumnInfo {
            name: row.get(0).ok_or_else(bad)?.to_string(),
            type_oid: row.try_get(1)?.ok_or_else(bad)?,
            type_mod: row.try_get(2)?.ok_or_else(bad)?,
            not_null: row.get(3) == Some("true"),
            dims: row.try_get(4)?.ok_or_else(bad)?,
            type_name: row.get(5).ok_or_else(bad)?.to_string(),
            pk_index: row.try_get(6)?,
        });
        enums.push(row.get(7) == Some("true"));
    }
    Ok(Some(TableInfo {
        schema: TableSchema {
            relation_id: oid,
            table: table.clone(),
            columns,
        },
        is_enum: enums,
    }))
}
