//! Move-in queries of subquery shapes (issue 17): when values enter a
//! shape's subquery, the rows they bring in are read in a fresh
//! `REPEATABLE READ` snapshot of their own, like a subset (`subset.rs`),
//! and handed back to the registry with that snapshot's visibility, which
//! decides where among the held transactions they are spliced.

use std::rc::{Rc, Weak};

use shards::runtime;
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
            // glommio runs a spawned task at once, and the runner is called
            // with the registry borrowed: step aside before touching it.
            YieldNow(false).await;
            let result = run(&service, &job).await;
            service
                .registry
                .borrow_mut()
                .move_in_done(job.shape, job.generation, result);
        });
    })
}

/// Pending once (waking itself), then ready: the task runs again only
/// after the one that spawned it has yielded.
struct YieldNow(bool);

impl std::future::Future for YieldNow {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
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
    sql.sql.push_str(" WHERE (");
    sql.sql.push_str(&job.where_sql);
    sql.sql.push(')');
    // The move-in where replaces the triggering subquery by its moved
    // values, so parameters only that subquery used are not in it; every
    // bound parameter must have a type, so those get a true no-op of their own.
    let used = used_params(&job.where_sql);
    for n in 1..=job.params.len() {
        if !used.contains(&n) {
            sql.sql
                .push_str(&format!(" AND (${n}::text IS NULL OR true)"));
        }
    }
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
    // Its WAL position bounds how long the splice may wait for held
    // transactions it saw.
    let snapshot = super::create::begin_snapshot(conn).await.map_err(pg)?;
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

/// The `$n` placeholders in rendered SQL, outside quoted literals and
/// identifiers (our renderer quotes with doubling: `''`, `""`; a
/// backslash in an `E''` literal is doubled too, so it never escapes a
/// quote).
fn used_params(sql: &str) -> std::collections::BTreeSet<usize> {
    let mut used = std::collections::BTreeSet::new();
    let bytes = sql.as_bytes();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'\'' || b == b'"' => quote = Some(b),
            None if b == b'$' => {
                let digits = bytes[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_digit())
                    .count();
                if let Ok(n) = sql[i + 1..i + 1 + digits].parse() {
                    used.insert(n);
                }
                i += digits;
            }
            None => {}
        }
        i += 1;
    }
    used
}

#[cfg(test)]
mod tests {
    use super::used_params;

    #[test]
    fn placeholders_outside_quotes() {
        let used: Vec<usize> =
            used_params(r#""a$1" = '$2''$3' AND b = $4::int4 AND c = ANY($12::text[])"#)
                .into_iter()
                .collect();
        assert_eq!(used, [4, 12]);
    }
}
