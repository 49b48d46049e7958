//! A shape's where clause as the registry evaluates it: the shards crate's
//! parser and evaluator, typed against the table's columns.

use std::collections::BTreeMap;

use shards::shape::registry::RowFilter;
use shards::shape::where_clause::{WhereClause, WhereColumn};

use super::catalog::TableInfo;
use crate::http::shape::reply::ShapeReply;

#[derive(Clone, Debug)]
pub struct Filter(WhereClause);

/// Parses and type-checks `sql` against the table; errors are Electric's
/// `{"where": [...]}` 400s.
pub fn compile(
    sql: &str,
    info: &TableInfo,
    params: &BTreeMap<usize, String>,
) -> Result<Filter, ShapeReply> {
    let columns: Vec<WhereColumn> = info
        .schema
        .columns
        .iter()
        .zip(&info.is_enum)
        .map(|(c, &is_enum)| WhereColumn {
            name: c.name.clone(),
            type_name: c.type_name.clone(),
            dims: c.dims,
            is_enum,
        })
        .collect();
    WhereClause::parse(sql, &columns, params)
        .map(Filter)
        .map_err(|e| ShapeReply::invalid(&[(e.field.as_str(), e.message)]))
}

impl Filter {
    /// The clause as SQL with `$n` placeholders, and the values to bind.
    pub fn to_sql(&self) -> (String, Vec<String>) {
        self.0.to_sql()
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
