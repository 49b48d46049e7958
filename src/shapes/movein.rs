//! Move-in queries of subquery shapes (issue 17): when values enter a
//! shape's subquery, the rows they bring in are read in a fresh
//! `REPEATABLE READ` snapshot of their own, like a subset (`subset.rs`),
//! and handed back to the registry with that snapshot's visibility, which
//! decides where among the held transactions they are spliced.

use std::rc::{Rc, Weak};

use shards::runtime;
use shards::shape::encode::PgSnapshot;
use shards::shape::registry::{MoveInJob, MoveInRows, MAX_MOVE_IN_BYTES};

use super::create::SnapshotSql;
use super::pool::Pooled;
use super::service::ShapeService;
use crate::pg::error::PgError;

/// The registry's move-in runner for this shard's service: each job runs
/// in a task of its own (an apply never awaits); its result, or its error
/// (which invalidates the shape), goes back through `move_in_done`.
pub fn runner(service: Weak<ShapeService>) -> Box<dyn Fn(MoveInJob)> {
    Box::new(move |job: MoveInJob| {
        let Some(service) = service.upgrade() else {
            return;
        };
        runtime::spawn_detached(async move {
            let result = run(&service, &job).await;
            service
                .registry
                .borrow_mut()
                .move_in_done(job.shape, job.generation, result);
        });
    })
}

async fn run(service: &Rc<ShapeService>, job: &MoveInJob) -> Result<MoveInRows, String> {
    let shape = service
        .registry
        .borrow_mut()
        .get(job.shape)
        .ok_or("the shape is gone")?;
    let Some(subqueries) = shape.spec.subqueries.as_deref() else {
        return Err("not a subquery shape".into());
    };
    // The columns rows are sent with, and those their tags are computed from.
    let mut read = shape.spec.selected.clone();
    read.extend_from_slice(subqueries.clause.referenced_columns());
    let mut sql = SnapshotSql::select(&shape.spec.schema, &read, &shape.spec.key);
    sql.sql.push_str(" WHERE ");
    sql.sql.push_str(&job.where_sql);
    let mut conn = service.pool.get().await.map_err(|e| e.to_string())?;
    conn.set_reusable(false);
    let result = query(&mut conn, &sql, &job.params).await;
    if result.is_ok() {
        conn.set_reusable(true);
    }
    result
}

async fn query(
    conn: &mut Pooled,
    sql: &SnapshotSql,
    params: &[String],
) -> Result<MoveInRows, String> {
    let pg = |e: PgError| e.to_string();
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(pg)?;
    // The insert position read after the snapshot: every transaction it
    // sees committed below it (`PgSnapshot::holds`), which bounds how long
    // the splice may wait for held transactions it saw.
    let head = conn
        .query_rows("SELECT pg_current_snapshot()::text, pg_current_wal_insert_lsn()::text")
        .await
        .map_err(pg)?;
    let mut snapshot = head
        .first()
        .and_then(|r| r.get(0))
        .and_then(PgSnapshot::parse)
        .ok_or("pg_current_snapshot() returned no snapshot")?;
    let wal_lsn: shards::Lsn = head
        .first()
        .and_then(|r| r.get(1))
        .and_then(|l| l.parse().ok())
        .ok_or("pg_current_wal_insert_lsn() returned nothing")?;
    snapshot.wal_lsn = Some(wal_lsn.0);
    let bound: Vec<Option<&str>> = params.iter().map(|p| Some(p.as_str())).collect();
    let mut stream = conn.query_stream(&sql.sql, &bound).await.map_err(pg)?;
    let mut rows = Vec::new();
    let mut bytes = 0usize;
    while let Some(row) = stream.next().await.map_err(pg)? {
        let values: Vec<Option<String>> = sql
            .table_row(&row)
            .into_iter()
            .map(|v| v.map(str::to_string))
            .collect();
        bytes += values
            .iter()
            .map(|v| v.as_ref().map_or(8, |t| t.len() + 24))
            .sum::<usize>();
        // Held in memory until spliced: past the bound the shape is
        // invalidated (its clients re-sync) rather than memory grow.
        if bytes > MAX_MOVE_IN_BYTES {
            return Err(format!("a move-in larger than {MAX_MOVE_IN_BYTES} bytes"));
        }
        rows.push(values);
        runtime::yield_if_needed().await;
    }
    conn.execute("COMMIT").await.map_err(pg)?;
    Ok(MoveInRows { snapshot, rows })
}
