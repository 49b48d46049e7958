//! Subset snapshots on the owner shard: the shape's where AND the subset's
//! (parameters bound, never interpolated), ordered and limited, in a
//! `REPEATABLE READ` snapshot of its own whose visibility goes back with
//! the rows, so the client can drop stream changes the rows already hold.

use std::rc::Rc;

use bytes::Bytes;
use shards::shape::encode::{self, PgSnapshot};
use shards::shape::offset::LogOffset;
use shards::shape::registry::Shape;
use shards::shape::where_clause::{WhereClause, WhereColumn};
use shards::Lsn;

use super::catalog::{self, TableInfo};
use super::create::SnapshotSql;
use super::filter;
use super::service::ShapeService;
use crate::http::shape::reply::ShapeReply;
use crate::http::shape::request::{ShapeRequest, StartOffset};
use crate::http::shape::subset::Subset;
use crate::pg::error::PgError;
use crate::pg::sql::quote_ident;

/// The largest subset response built in memory; past it the client is told
/// to narrow or page it (`limit`/`offset`).
pub const MAX_SUBSET_BYTES: usize = 256 * 1024 * 1024;

impl ShapeService {
    pub(super) async fn subset(
        &self,
        request: &ShapeRequest,
        subset: &Subset,
        shape: &Rc<Shape>,
    ) -> ShapeReply {
        // Read before the snapshot: every change the snapshot cannot see
        // commits after it, so it is in the log after this offset.
        let offset = match request.offset {
            StartOffset::At(LogOffset::BeforeAll) => "-1".to_string(),
            StartOffset::At(offset) => offset.to_string(),
            StartOffset::Now => shape.last_offset().to_string(),
        };
        let mut conn = match self.pool.get().await {
            Ok(conn) => conn,
            Err(e) => return super::create::unreachable_db(&e),
        };
        let info = match catalog::load_table(&mut conn, &shape.spec.definition.table).await {
            Ok(Some(info)) if info.schema.relation_id == shape.spec.schema.relation_id => info,
            Ok(_) => return ShapeReply::must_refetch(None),
            Err(e) => return super::create::db_error(&e),
        };
        let query = match subset_query(shape, &info, subset, request.queryable.as_deref()) {
            Ok(query) => query,
            Err(reply) => return reply,
        };
        conn.set_reusable(false);
        crate::metrics::Metrics::inc(&self.metrics.subset_snapshots);
        let result = run(&mut conn, shape, &query).await;
        match result {
            Ok(body) => {
                conn.set_reusable(true);
                ShapeReply::new(200, body)
                    .header("electric-snapshot", "true")
                    .header("cache-control", "no-cache")
                    .header("electric-handle", shape.handle())
                    .header("electric-offset", offset)
                    .header("electric-schema", shape.spec.schema_header.clone())
                    .header("electric-has-data", "true")
            }
            Err(RunError::TooLarge) => ShapeReply::invalid_subset(
                "limit",
                &format!(
                    "the subset is larger than {MAX_SUBSET_BYTES} bytes: narrow its where or page it with limit and offset"
                ),
            ),
            // Postgres refused the query (a value it cannot read as its
            // type, say): Electric's 400 with the message as a string.
            Err(RunError::Pg(PgError::Db(db))) => ShapeReply::error(
                400,
                format!(
                    r#"{{"message":"Invalid request","errors":{{"subset":{{"where":{}}}}}}}"#,
                    serde_json::Value::from(db.message)
                ),
            ),
            Err(RunError::Pg(e)) => super::create::unreachable_db(&e),
        }
    }
}

/// Validates the subset against the table (only `queryable_columns` when
/// given) and builds the query.
fn subset_query(
    shape: &Shape,
    info: &TableInfo,
    subset: &Subset,
    queryable: Option<&[String]>,
) -> Result<SnapshotSql, ShapeReply> {
    if shape.spec.subqueries.is_some() {
        // Its rows would need tags and the shape's views as of the subset's
        // snapshot (issue 17, not done yet): refused rather than untagged.
        return Err(ShapeReply::invalid_subset(
            "where",
            "Subsets of shapes with subqueries are not supported yet",
        ));
    }
    let schema = &info.schema;
    if let Some(queryable) = queryable {
        check_queryable(schema, queryable)?;
    }
    let allowed = |name: &str| queryable.is_none_or(|q| q.iter().any(|c| c == name));
    let mut conditions = Vec::new();
    let mut params = Vec::new();
    if let Some(where_sql) = &shape.spec.definition.where_sql {
        let (sql, values) =
            filter::compile(where_sql, info, &shape.spec.definition.params)?.to_sql();
        conditions.push(sql);
        params = values;
    }
    if let Some(where_sql) = &subset.where_sql {
        if WhereClause::has_subquery(where_sql) {
            // Electric's `assert_no_subqueries`: a subset is one query.
            return Err(ShapeReply::invalid_subset(
                "where",
                "Subqueries are not allowed in subsets",
            ));
        }
        // Columns outside the allow-list are unknown to the subset's where.
        let columns: Vec<WhereColumn> = schema
            .columns
            .iter()
            .zip(&info.is_enum)
            .filter(|(c, _)| allowed(&c.name))
            .map(|(c, &is_enum)| WhereColumn {
                name: c.name.clone(),
                type_name: c.type_name.clone(),
                dims: c.dims,
                is_enum,
            })
            .collect();
        let clause = WhereClause::parse_after(where_sql, &columns, &subset.params, params.len())
            .map_err(|e| ShapeReply::invalid_subset(e.field.as_str(), &e.message))?;
        let (sql, values) = clause.to_sql();
        conditions.push(sql);
        params.extend(values);
    }
    let SnapshotSql {
        mut sql, columns, ..
    } = SnapshotSql::select(schema, &shape.spec.selected, &shape.spec.key);
    if !conditions.is_empty() {
        let wrapped: Vec<String> = conditions.iter().map(|c| format!("({c})")).collect();
        sql.push_str(" WHERE ");
        sql.push_str(&wrapped.join(" AND "));
    }
    if let Some(order_by) = &subset.order_by {
        let mut terms = Vec::with_capacity(order_by.len());
        for term in order_by {
            if schema.column_index(&term.column).is_none() || !allowed(&term.column) {
                return Err(ShapeReply::invalid_subset(
                    "order_by",
                    &format!(
                        "At location {}: unknown reference {}",
                        term.location, term.column
                    ),
                ));
            }
            let mut text = quote_ident(&term.column);
            if term.descending {
                text.push_str(" DESC");
            }
            match term.nulls_first {
                Some(true) => text.push_str(" NULLS FIRST"),
                Some(false) => text.push_str(" NULLS LAST"),
                None => {}
            }
            terms.push(text);
        }
        sql.push_str(" ORDER BY ");
        sql.push_str(&terms.join(", "));
    }
    if let Some(limit) = subset.limit {
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    if let Some(offset) = subset.offset {
        sql.push_str(&format!(" OFFSET {offset}"));
    }
    Ok(SnapshotSql {
        sql,
        params,
        columns,
        width: schema.columns.len(),
        where_at: None,
        seeds: Vec::new(),
    })
}

/// `queryable_columns` must name columns of the table, the primary key
/// among them.
pub(super) fn check_queryable(
    schema: &shards::shape::schema::TableSchema,
    queryable: &[String],
) -> Result<(), ShapeReply> {
    super::create::check_column_list(schema, queryable, "queryable_columns", "queryable columns")
}

enum RunError {
    Pg(PgError),
    TooLarge,
}

impl From<PgError> for RunError {
    fn from(e: PgError) -> RunError {
        RunError::Pg(e)
    }
}

/// Runs the query in its own snapshot and builds the response body:
/// `{"metadata":{...}, "data": [rows]}` (Electric's spacing and key order).
async fn run(
    conn: &mut crate::pg::conn::Connection,
    shape: &Shape,
    query: &SnapshotSql,
) -> Result<Bytes, RunError> {
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let rows = conn
        .query_rows("SELECT pg_current_snapshot()::text, pg_current_wal_lsn()::text")
        .await?;
    let row = rows.first();
    let snapshot = row
        .and_then(|r| r.get(0))
        .and_then(PgSnapshot::parse)
        .ok_or_else(|| PgError::Protocol("pg_current_snapshot() returned no snapshot".into()))?;
    let lsn: Lsn = row
        .and_then(|r| r.get(1))
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| PgError::Protocol("pg_current_wal_lsn() returned no LSN".into()))?;
    let mark = snapshot_mark();
    let xip: Vec<String> = snapshot.xip.iter().map(|x| format!("\"{x}\"")).collect();
    let mut body = format!(
        "{{\"metadata\":{{\"database_lsn\":\"{}\",\"snapshot_mark\":{mark},\"xip_list\":[{}],\"xmax\":\"{}\",\"xmin\":\"{}\"}}, \"data\": [",
        lsn.0,
        xip.join(","),
        snapshot.xmax,
        snapshot.xmin
    )
    .into_bytes();
    let params: Vec<Option<&str>> = query.params.iter().map(|p| Some(p.as_str())).collect();
    let mut stream = conn.query_stream(&query.sql, &params).await?;
    let layout = shape.layout();
    let mut first = true;
    while let Some(row) = stream.next().await? {
        let values = query.table_row(&row);
        if !first {
            body.push(b',');
        }
        first = false;
        encode::subset_row(&mut body, &layout, &values, mark);
        if body.len() > MAX_SUBSET_BYTES {
            return Err(RunError::TooLarge);
        }
        shards::runtime::yield_if_needed().await;
    }
    drop(stream);
    conn.execute("COMMIT").await?;
    body.extend_from_slice(b"]}");
    Ok(Bytes::from(body))
}

/// A mark in `0..2^31`, as Electric picks one per subset.
fn snapshot_mark() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (hasher.finish() & 0x7fff_ffff) as u32
}
