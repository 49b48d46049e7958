//! A shape's where clause as the registry evaluates it.

use std::collections::BTreeMap;

use shards::shape::registry::RowFilter;

use super::catalog::TableInfo;
use crate::http::shape::reply::ShapeReply;

#[derive(Clone, Debug)]
pub struct Filter {}

pub fn compile(
    _sql: &str,
    _info: &TableInfo,
    _params: &BTreeMap<usize, String>,
) -> Result<Filter, ShapeReply> {
    Err(ShapeReply::invalid(&[(
        "where",
        "where clauses are not supported yet".into(),
    )]))
}

impl Filter {
    pub fn to_sql(&self) -> (String, Vec<String>) {
        (String::from("true"), Vec::new())
    }
}

impl RowFilter for Filter {
    fn matches<'v>(&self, _value: &dyn Fn(usize) -> Option<&'v str>) -> bool {
        true
    }

    fn index_key(&self) -> Option<(usize, Vec<String>)> {
        None
    }
}
