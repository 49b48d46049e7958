//! Subquery shapes on the edge (issue 17, slices 1 to 3): what the
//! catalog and the where clause make of one (its dependencies at every
//! level, typed against their tables, a row form's selected columns in the
//! order written), and the queries that seed its views and its middle
//! levels' mirrors in the snapshot's transaction.

use std::collections::BTreeMap;

use shards::shape::definition::{ShapeDefinition, ShapeHandle, TableName};
use shards::shape::registry::schema_fingerprint;
use shards::shape::registry::{DependencySpec, ShapeSpec, SubquerySpec};
use shards::shape::where_clause::{Dependency, WhereClause};

use super::catalog::TableInfo;
use super::create::{select_columns, snapshot_query, SnapshotSql};
use super::filter;
use super::service::ShapeConfig;
use crate::http::shape::reply::ShapeReply;
use crate::pg::sql::quote_ident;

/// A dependency's seeding query: its selected columns over the rows of
/// its table that match its where, parameters bound.
pub struct SeedSql {
    pub table: TableName,
    pub sql: String,
    pub params: Vec<String>,
    /// Output columns (an innermost level's selected ones, in subquery
    /// order; a middle level's mirrored ones, ascending).
    pub width: usize,
    /// The level (see `Shape::seed_dependency`).
    pub path: Vec<usize>,
}

fn unsupported(message: &str) -> ShapeReply {
    ShapeReply::invalid(&[("where", message.to_string())])
}

/// As `create::build_spec`, for a where clause with subqueries: `tables`
/// are the subqueries' tables as the catalog has them.
pub fn build_spec(
    handle: ShapeHandle,
    definition: ShapeDefinition,
    info: TableInfo,
    tables: &BTreeMap<TableName, TableInfo>,
    config: &ShapeConfig,
) -> Result<(ShapeSpec, SnapshotSql), ShapeReply> {
    let selected = select_columns(&info.schema, definition.columns.as_deref())?;
    let sql = definition.where_sql.as_deref().unwrap_or_default();
    let filter = filter::compile_with_tables(sql, &info, &definition.params, tables)?;
    let clause = filter.shared();
    let dnf = clause
        .dnf()
        .ok_or_else(|| unsupported("a subquery clause without its layout"))?;
    let mut dependencies = Vec::new();
    let mut seeds = Vec::new();
    for (i, dependency) in clause.dependencies().into_iter().enumerate() {
        let positions = dnf.positions_of(i);
        let negated = positions.first().is_some_and(|&p| dnf.is_negated(p));
        if positions.is_empty() || positions.iter().any(|&p| dnf.is_negated(p) != negated) {
            return Err(unsupported(
                "A subquery must be tested directly under AND, OR and NOT, with one polarity",
            ));
        }
        let mut spec = dependency_spec(&dependency, tables, vec![i], &mut seeds)?;
        spec.negated = negated;
        dependencies.push(spec);
    }
    dependencies.shrink_to_fit();
    let persisted = super::persist::encode_with_tables(&handle, &definition, &info, tables);
    let TableInfo { schema, .. } = info;
    let key = schema.key_columns();
    let schema_header = schema.header_json(&selected);
    // Rows carry tags computed from the columns the clause tests, selected
    // or not: the snapshot reads them too.
    let mut read: Vec<usize> = selected.clone();
    read.extend_from_slice(clause.referenced_columns());
    let mut snapshot_sql = snapshot_query(&schema, &read, &key, Some(&filter));
    snapshot_sql.seeds = seeds;
    let spec = ShapeSpec {
        handle,
        canonical: definition.canonical(),
        definition,
        schema,
        selected,
        key,
        filter: Some(Box::new(filter)),
        schema_header,
        persisted,
        subqueries: Some(Box::new(SubquerySpec {
            clause,
            stack_id: config.database_id.clone(),
            buffer_max: config.subquery_buffer_max,
            dependencies,
        })),
    };
    Ok((spec, snapshot_sql))
}

/// One level of a subquery (`path`: the outer clause's dependency, then
/// the subquery of each middle level's where) and, below a middle level,
/// its own subqueries; each level's seeding query goes to `seeds`. An
/// innermost level seeds its values; a middle level (a where with
/// subqueries) mirrors every row of its table, the columns its where reads
/// and it selects (`shards::shape::nested`).
fn dependency_spec(
    dependency: &Dependency,
    tables: &BTreeMap<TableName, TableInfo>,
    path: Vec<usize>,
    seeds: &mut Vec<SeedSql>,
) -> Result<DependencySpec, ShapeReply> {
    let inner = tables.get(&dependency.table).ok_or_else(|| {
        ShapeReply::invalid(&[(
            "table",
            format!(
                "Table {} does not exist. If the table name contains capitals or special characters you must quote it.",
                dependency.table
            ),
        )])
    })?;
    let nested = dependency
        .where_sql
        .as_deref()
        .is_some_and(WhereClause::has_subquery);
    let inner_filter = match &dependency.where_sql {
        Some(sql) if nested => Some(filter::compile_with_tables(
            sql,
            inner,
            &dependency.params,
            tables,
        )?),
        Some(sql) => Some(filter::compile(sql, inner, &dependency.params)?),
        None => None,
    };
    let columns: Vec<usize> = dependency
        .columns
        .iter()
        .map(|name| inner.schema.column_index(name))
        .collect::<Option<_>>()
        .ok_or_else(|| unsupported("a subquery column is missing"))?;
    let table_sql = format!(
        "{}.{}",
        quote_ident(&dependency.table.schema),
        quote_ident(&dependency.table.name)
    );
    let list = |columns: &[usize]| -> String {
        columns
            .iter()
            .map(|&c| quote_ident(&inner.schema.columns[c].name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut children = Vec::new();
    let mut kept = Vec::new();
    match inner_filter.as_ref().filter(|_| nested) {
        Some(f) => {
            let clause = f.clause();
            kept.extend_from_slice(clause.referenced_columns());
            kept.extend_from_slice(&columns);
            for (i, child) in clause.dependencies().iter().enumerate() {
                if let Some(tested) = clause.dnf().and_then(|d| d.tested_columns(i)) {
                    kept.extend(tested);
                }
                let mut child_path = path.clone();
                child_path.push(i);
                children.push(dependency_spec(child, tables, child_path, seeds)?);
            }
            kept.sort_unstable();
            kept.dedup();
            // Every row: which ones count depends on the children's values.
            seeds.push(SeedSql {
                table: dependency.table.clone(),
                sql: format!("SELECT {} FROM {table_sql}", list(&kept)),
                params: Vec::new(),
                width: kept.len(),
                path,
            });
        }
        None => {
            let mut seed_sql = format!("SELECT {} FROM {table_sql}", list(&columns));
            let mut params = Vec::new();
            if let Some(f) = &inner_filter {
                let (where_sql, values) = f.to_sql();
                seed_sql.push_str(" WHERE ");
                seed_sql.push_str(&where_sql);
                params = values;
            }
            seeds.push(SeedSql {
                table: dependency.table.clone(),
                sql: seed_sql,
                params,
                width: columns.len(),
                path,
            });
        }
    }
    Ok(DependencySpec {
        relation: inner.schema.relation_id,
        fingerprint: schema_fingerprint(
            inner
                .schema
                .columns
                .iter()
                .map(|c| (c.name.as_str(), c.type_oid)),
        ),
        filter: inner_filter.map(|f| f.shared()),
        selected: columns,
        negated: false,
        children,
        kept,
    })
}

/// Whether a stored canonical definition may have a subquery in its
/// where (recovery resumes those by their views). Errs on the side of
/// yes: a where merely mentioning `select` is checked too.
pub fn canonical_has_subquery(canonical: &str) -> bool {
    let start = canonical.find("|where=").map_or(0, |i| i + 7);
    let end = canonical[start..]
        .find("|params=")
        .map_or(canonical.len(), |i| start + i);
    canonical[start..end]
        .to_ascii_uppercase()
        .contains("SELECT")
}
