//! A shape's where clause as the registry evaluates it: the shards crate's
//! parser and evaluator, typed against the table's columns.

use std::collections::BTreeMap;
use std::sync::Arc;

use shards::shape::definition::TableName;
use shards::shape::registry::RowFilter;
use shards::shape::where_clause::{WhereClause, WhereColumn};

use super::catalog::{self, TableInfo};
use crate::http::shape::reply::ShapeReply;
use crate::pg::conn::Connection;
use crate::pg::error::PgError;

#[derive(Clone, Debug)]
pub struct Filter(Arc<WhereClause>);

/// Parses and type-checks `sql` against the table; errors are Electric's
/// `{"where": [...]}` 400s.
pub fn compile(
    sql: &str,
    info: &TableInfo,
    params: &BTreeMap<usize, String>,
) -> Result<Filter, ShapeReply> {
    compile_with_tables(sql, info, params, &BTreeMap::new())
}

/// As [`compile`], with the tables the clause's subqueries read
/// (`subquery_tables`; an absent one does not exist).
pub fn compile_with_tables(
    sql: &str,
    info: &TableInfo,
    params: &BTreeMap<usize, String>,
    tables: &BTreeMap<TableName, TableInfo>,
) -> Result<Filter, ShapeReply> {
    let lookup = |table: &TableName| tables.get(table).map(where_columns);
    WhereClause::parse_with_tables(sql, &where_columns(info), params, &lookup)
        .map(|clause| Filter(Arc::new(clause)))
        .map_err(|e| ShapeReply::invalid(&[(e.field.as_str(), e.message)]))
}

/// The table's columns as a where clause may reference them.
pub fn where_columns(info: &TableInfo) -> Vec<WhereColumn> {
    info.schema
        .columns
        .iter()
        .zip(&info.is_enum)
        .map(|(c, &is_enum)| WhereColumn {
            name: c.name.clone(),
            type_name: c.type_name.clone(),
            dims: c.dims,
            is_enum,
        })
        .collect()
}

/// The tables a where clause's subqueries read, from the catalog (those
/// that exist); none for a clause without subqueries.
pub async fn subquery_tables(
    conn: &mut Connection,
    sql: &str,
) -> Result<BTreeMap<TableName, TableInfo>, PgError> {
    let mut tables = BTreeMap::new();
    for table in WhereClause::subquery_tables(sql) {
        if let Some(info) = catalog::load_table(conn, &table).await? {
            tables.insert(table, info);
        }
    }
    Ok(tables)
}

impl Filter {
    /// The clause as SQL with `$n` placeholders, and the values to bind.
    pub fn to_sql(&self) -> (String, Vec<String>) {
        self.0.to_sql()
    }

    /// The typed clause (subquery shapes evaluate it against views).
    pub fn clause(&self) -> &WhereClause {
        &self.0
    }

    /// The typed clause, shared (a subquery shape's spec and filter, and
    /// its dependencies' materializers, hold one copy).
    pub fn shared(&self) -> Arc<WhereClause> {
        Arc::clone(&self.0)
    }
}

impl RowFilter for Filter {
    fn matches<'v>(&self, value: &dyn Fn(usize) -> Option<&'v str>) -> bool {
        self.0.matches(value)
    }

    fn index_key(&self) -> Option<(usize, Vec<String>)> {
        self.0.index_key()
    }
}
