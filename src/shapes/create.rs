//! Creating a shape on its owner shard: catalog, column and where-clause
//! validation, publication, registration, then the snapshot, streamed into
//! the shape's log as Postgres returns it.

use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use shards::notify::Slot;
use shards::runtime;
use shards::shape::definition::{LogMode, ShapeDefinition, ShapeHandle};
use shards::shape::encode::PgSnapshot;
use shards::shape::registry::{Shape, ShapeSpec};
use shards::shape::schema::TableSchema;
use shards::shape::where_clause::WhereClause;

use super::catalog::{self, TableInfo};
use super::filter;
use super::pool::Pooled;
use super::service::ShapeService;
use crate::http::shape::reply::ShapeReply;
use crate::ingest::publication;
use crate::pg::error::PgError;
use crate::pg::sql::quote_ident;

/// Creates the shape and starts its snapshot; returns once the snapshot
/// query is running (so a query Postgres rejects is this request's 400),
/// while the rows keep streaming in a task of their own.
pub async fn create(
    service: &Rc<ShapeService>,
    definition: ShapeDefinition,
) -> Result<Rc<Shape>, ShapeReply> {
    let mut conn = service.pool.get().await.map_err(|e| unreachable_db(&e))?;
    let info = catalog::load_table(&mut conn, &definition.table)
        .await
        .map_err(|e| db_error(&e))?
        .ok_or_else(|| {
            ShapeReply::invalid(&[(
                "table",
                format!(
                    "Table {} does not exist. If the table name contains capitals or special characters you must quote it.",
                    definition.table
                ),
            )])
        })?;
    // A subquery reads other tables: their catalog entries type it, and
    // the shape mirrors their values (issue 17, slices 1 and 2).
    let subquery_tables = match definition
        .where_sql
        .as_deref()
        .filter(|sql| WhereClause::has_subquery(sql))
    {
        Some(sql) => Some(
            filter::subquery_tables(&mut conn, sql)
                .await
                .map_err(|e| db_error(&e))?,
        ),
        None => None,
    };
    let handle = ShapeHandle::new(definition.hash(), service.next_handle_micros());
    let (spec, snapshot_sql) = match &subquery_tables {
        Some(tables) => {
            super::subquery::build_spec(handle, definition, info, tables, &service.config)?
        }
        None => build_spec(handle, definition, info)?,
    };
    publication::add_table(
        &mut conn,
        &service.config.publication,
        &spec.definition.table.schema,
        &spec.definition.table.name,
    )
    .await
    .map_err(|e| db_error(&e))?;
    // The subqueries' tables too: their changes keep the shape's mirror of
    // their values, and REPLICA IDENTITY FULL gives every update and delete
    // the old row it needs.
    for seed in &snapshot_sql.seeds {
        publication::add_table(
            &mut conn,
            &service.config.publication,
            &seed.table.schema,
            &seed.table.name,
        )
        .await
        .map_err(|e| db_error(&e))?;
    }

    // Registered (and so routed) before the snapshot starts: every
    // transaction the snapshot does not see reaches the shape.
    let shape = service.registry.borrow_mut().insert(spec);
    let started = Started::new();
    {
        let service = service.clone();
        let shape = shape.clone();
        let started = started.clone();
        // The task owns the connection for the whole snapshot, so rows
        // stream straight from the socket into the log.
        runtime::spawn_detached(async move {
            let result = snapshot(&service, &shape, &mut conn, &snapshot_sql, &started).await;
            if let Err(e) = result {
                conn.set_reusable(false);
                service
                    .registry
                    .borrow_mut()
                    .remove(shape.id, "its snapshot failed");
                if !started.is_set() {
                    started.set(Err(snapshot_error(&e, &snapshot_sql)));
                } else {
                    tracing::warn!(
                        shard = service.shard,
                        handle = shape.handle(),
                        "snapshot failed: {e}"
                    );
                }
            }
        });
    }
    started.get().await.map(|()| shape)
}

/// Everything a shape is, from its definition and its table: validates the
/// columns and the where clause (Electric's 400s). Also used to rebuild
/// shapes from their creation records on restart.
pub fn build_spec(
    handle: ShapeHandle,
    definition: ShapeDefinition,
    info: TableInfo,
) -> Result<(ShapeSpec, SnapshotSql), ShapeReply> {
    let selected = select_columns(&info.schema, definition.columns.as_deref())?;
    let filter = match &definition.where_sql {
        Some(sql) => Some(filter::compile(sql, &info, &definition.params)?),
        None => None,
    };
    let persisted = super::persist::encode(&handle, &definition, &info);
    let TableInfo { schema, .. } = info;
    let key = schema.key_columns();
    let schema_header = schema.header_json(&selected);
    let snapshot_sql = snapshot_query(&schema, &selected, &key, filter.as_ref());
    let spec = ShapeSpec {
        handle,
        canonical: definition.canonical(),
        definition,
        schema,
        selected,
        key,
        filter: filter.map(|f| Box::new(f) as Box<_>),
        schema_header,
        persisted,
        subqueries: None,
    };
    Ok((spec, snapshot_sql))
}

/// Set once the snapshot query is running (or could not start).
type Started = Slot<Result<(), ShapeReply>>;

/// The snapshot query: key and selected columns (as text, in table order)
/// and the where clause with its parameters bound.
pub struct SnapshotSql {
    pub sql: String,
    pub params: Vec<String>,
    /// Table column index of each selected output column.
    pub columns: Vec<usize>,
    pub width: usize,
    /// Where the where clause starts in `sql`, for error positions.
    pub where_at: Option<usize>,
    /// A subquery shape's seeding queries, one per dependency, run in the
    /// snapshot's transaction before its rows.
    pub seeds: Vec<super::subquery::SeedSql>,
}

impl SnapshotSql {
    /// `SELECT <key and selected columns, in table order> FROM <table>`:
    /// the head of every query that reads a shape's rows.
    pub(super) fn select(schema: &TableSchema, selected: &[usize], key: &[usize]) -> SnapshotSql {
        let mut columns: Vec<usize> = selected.iter().chain(key).copied().collect();
        columns.sort_unstable();
        columns.dedup();
        let list: Vec<String> = columns
            .iter()
            .map(|&i| quote_ident(&schema.columns[i].name))
            .collect();
        SnapshotSql {
            sql: format!(
                "SELECT {} FROM {}.{}",
                list.join(", "),
                quote_ident(&schema.table.schema),
                quote_ident(&schema.table.name)
            ),
            params: Vec::new(),
            columns,
            width: schema.columns.len(),
            where_at: None,
            seeds: Vec::new(),
        }
    }

    /// A result row spread to table width (the encoders' row layout).
    pub(super) fn table_row<'r>(&self, row: &'r crate::pg::conn::Row) -> Vec<Option<&'r str>> {
        let mut values = vec![None; self.width];
        for (n, &column) in self.columns.iter().enumerate() {
            values[column] = row.get(n);
        }
        values
    }
}

pub(super) fn snapshot_query(
    schema: &TableSchema,
    selected: &[usize],
    key: &[usize],
    filter: Option<&filter::Filter>,
) -> SnapshotSql {
    let SnapshotSql {
        mut sql, columns, ..
    } = SnapshotSql::select(schema, selected, key);
    let mut params = Vec::new();
    let mut where_at = None;
    if let Some(filter) = filter {
        let (where_sql, values) = filter.to_sql();
        sql.push_str(" WHERE ");
        where_at = Some(sql.len());
        sql.push_str(&where_sql);
        params = values;
    }
    SnapshotSql {
        sql,
        params,
        columns,
        width: schema.columns.len(),
        where_at,
        seeds: Vec::new(),
    }
}

/// Opens a `REPEATABLE READ READ ONLY` transaction and reads its snapshot,
/// with the WAL insert position read after it: every commit the snapshot
/// sees is below it (see `PgSnapshot::wal_lsn`).
pub(super) async fn begin_snapshot(conn: &mut Pooled) -> Result<PgSnapshot, PgError> {
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let rows = conn
        .query_rows("SELECT pg_current_snapshot()::text, pg_current_wal_insert_lsn()::text")
        .await?;
    let mut snapshot = rows
        .first()
        .and_then(|r| r.get(0))
        .and_then(PgSnapshot::parse)
        .ok_or_else(|| PgError::Protocol("pg_current_snapshot() returned no snapshot".into()))?;
    let wal_lsn: shards::Lsn = rows
        .first()
        .and_then(|r| r.get(1))
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| PgError::Protocol("pg_current_wal_insert_lsn() returned nothing".into()))?;
    snapshot.wal_lsn = Some(wal_lsn.0);
    Ok(snapshot)
}

/// Runs a subquery shape's seeding queries in the open transaction and
/// counts their rows into its views (`Shape::seed_dependency`), then lets
/// middle levels compute their values.
pub(super) async fn seed_views(
    conn: &mut Pooled,
    shape: &Shape,
    seeds: &[super::subquery::SeedSql],
) -> Result<(), PgError> {
    for seed in seeds {
        let params: Vec<Option<&str>> = seed.params.iter().map(|p| Some(p.as_str())).collect();
        let mut rows = conn.query_stream(&seed.sql, &params).await?;
        while let Some(row) = rows.next().await? {
            if shape.is_gone() {
                break;
            }
            let value: Vec<Option<&str>> = (0..seed.width).map(|i| row.get(i)).collect();
            shape.seed_dependency(&seed.path, &value);
            runtime::yield_if_needed().await;
        }
    }
    shape
        .finish_seeds()
        .map_err(|why| PgError::Protocol(why.to_string()))
}

/// Opens the snapshot transaction, records its visibility, runs the query
/// and writes its rows into the shape's log as they arrive, then
/// `snapshot-end`. `started` is told once the query runs: planning errors
/// (a where clause Postgres rejects) reach the creating request.
async fn snapshot(
    service: &Rc<ShapeService>,
    shape: &Rc<Shape>,
    conn: &mut Pooled,
    sql: &SnapshotSql,
    started: &Started,
) -> Result<(), PgError> {
    conn.set_reusable(false);
    let snapshot = begin_snapshot(conn).await?;
    // A subquery shape's views, as of this snapshot: before any held
    // transaction is applied (those the snapshot saw are then dropped, from
    // the views as from the rows).
    seed_views(conn, shape, &sql.seeds).await?;
    service
        .registry
        .borrow_mut()
        .snapshot_taken(shape.id, snapshot.clone());
    if shape.spec.definition.log_mode == LogMode::ChangesOnly {
        started.set(Ok(()));
    } else {
        let params: Vec<Option<&str>> = sql.params.iter().map(|p| Some(p.as_str())).collect();
        crate::metrics::Metrics::inc(&service.metrics.snapshots_started);
        let mut rows = conn.query_stream(&sql.sql, &params).await?;
        started.set(Ok(()));
        let mut scratch = Vec::with_capacity(256);
        while let Some(row) = rows.next().await? {
            if shape.is_gone() {
                break;
            }
            let values = sql.table_row(&row);
            shape.push_snapshot_row(&values, &mut scratch);
            // Over the shard's memory budget: wait for a flush or a
            // checkpoint to write rows out (Postgres holds the rest).
            shards::shape::registry::wait_for_memory(&service.registry, || shape.is_gone()).await;
            runtime::yield_if_needed().await;
        }
    }
    conn.execute("COMMIT").await?;
    conn.set_reusable(true);
    if !shape.is_gone() {
        if shape.finish_snapshot(&snapshot) {
            service.registry.borrow_mut().request_checkpoint();
        }
        // Its end is served once durable: the next tick, now.
        service.registry.borrow().wake_flush();
    }
    Ok(())
}

/// Table column indices the shape sends, in table order: all, or the
/// requested ones (which must exist and include the primary key).
pub(super) fn select_columns(
    schema: &TableSchema,
    columns: Option<&[String]>,
) -> Result<Vec<usize>, ShapeReply> {
    let Some(columns) = columns else {
        return Ok((0..schema.columns.len()).collect());
    };
    check_column_list(schema, columns, "columns", "columns")?;
    let mut selected: Vec<usize> = columns
        .iter()
        .filter_map(|c| schema.column_index(c))
        .collect();
    selected.sort_unstable();
    selected.dedup();
    Ok(selected)
}

/// A list of column names (`columns`, `queryable_columns`) must include
/// the primary key and name only columns of the table; the 400 names the
/// request field `field` and calls the list `what`.
pub(super) fn check_column_list(
    schema: &TableSchema,
    names: &[String],
    field: &'static str,
    what: &str,
) -> Result<(), ShapeReply> {
    let mut missing_pk: Vec<(usize, &str)> = schema
        .columns
        .iter()
        .filter_map(|c| c.pk_index.map(|k| (k, c.name.as_str())))
        .filter(|(_, name)| !names.iter().any(|c| c == name))
        .collect();
    missing_pk.sort();
    if !missing_pk.is_empty() {
        let missing: Vec<&str> = missing_pk.into_iter().map(|(_, n)| n).collect();
        return Err(ShapeReply::invalid(&[(
            field,
            format!(
                "The list of {what} must include all primary key columns, missing: {}",
                missing.join(", ")
            ),
        )]));
    }
    let unknown: Vec<&str> = names
        .iter()
        .filter(|c| schema.column_index(c).is_none())
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(ShapeReply::invalid(&[(
            field,
            format!(
                "The following columns are not found on the table: {}",
                unknown.join(", ")
            ),
        )]));
    }
    Ok(())
}

pub(super) fn unreachable_db(e: &PgError) -> ShapeReply {
    tracing::warn!("cannot reach Postgres for a shape: {e}");
    ShapeReply::error(
        503,
        r#"{"code":"database_unreachable","error":"Database is unreachable"}"#,
    )
    .header("retry-after", "10")
}

pub(super) fn db_error(e: &PgError) -> ShapeReply {
    match e {
        PgError::Db(db) => ShapeReply::message(400, &db.message),
        other => unreachable_db(other),
    }
}

/// A snapshot Postgres refused: its message, located in the where clause
/// when that is where the problem is.
fn snapshot_error(e: &PgError, sql: &SnapshotSql) -> ShapeReply {
    let PgError::Db(db) = e else {
        return unreachable_db(e);
    };
    let message = match (db.position, sql.where_at) {
        (Some(position), Some(start)) if position as usize > start => {
            format!(
                "At location {}: {}",
                position as usize - start - 1,
                db.message
            )
        }
        _ => db.message.clone(),
    };
    ShapeReply::invalid(&[("where", message)])
}

impl ShapeService {
    /// Microseconds now, strictly above the last handle's: handles are
    /// never reused, even for the same definition within a microsecond.
    pub(super) fn next_handle_micros(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let next = now.max(self.last_handle_micros.get() + 1);
        self.last_handle_micros.set(next);
        next
    }
}
