//! The logical replication slot: created once, reused across restarts.

use shards::Lsn;

use crate::pg::conn::Connection;
use crate::pg::error::PgError;
use crate::pg::sql::{quote_ident, quote_literal};

/// SQLSTATE duplicate_object (the slot exists).
const DUPLICATE_OBJECT: &str = "42710";

/// What the server told us when the replication session started.
#[derive(Debug, Clone)]
pub struct SlotState {
    pub system_id: String,
    pub timeline: u32,
    /// Where the stream resumes: everything before it was confirmed durable.
    pub confirmed_flush: Lsn,
    pub created: bool,
}

/// On a replication connection: IDENTIFY_SYSTEM, then create the slot or
/// read where the existing one stands.
pub async fn prepare(conn: &mut Connection, slot: &str) -> Result<SlotState, PgError> {
    let identity = conn.query_rows("IDENTIFY_SYSTEM").await?;
    let row = identity
        .first()
        .ok_or_else(|| PgError::Protocol("IDENTIFY_SYSTEM returned no row".into()))?;
    let system_id = row.get(0).unwrap_or_default().to_string();
    let timeline = row.try_get::<u32>(1)?.unwrap_or(0);

    let existing = confirmed_flush(conn, slot).await?;
    if let Some(confirmed_flush) = existing {
        return Ok(SlotState {
            system_id,
            timeline,
            confirmed_flush,
            created: false,
        });
    }
    let created = conn
        .query_rows(&format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput NOEXPORT_SNAPSHOT",
            quote_ident(slot)
        ))
        .await;
    match created {
        Ok(rows) => {
            let consistent_point = rows
                .first()
                .and_then(|r| r.get_by_name("consistent_point"))
                .ok_or_else(|| {
                    PgError::Protocol("CREATE_REPLICATION_SLOT returned no consistent_point".into())
                })?;
            let confirmed_flush = consistent_point
                .parse::<Lsn>()
                .map_err(|e| PgError::Protocol(e.to_string()))?;
            Ok(SlotState {
                system_id,
                timeline,
                confirmed_flush,
                created: true,
            })
        }
        // Another instance created it between our check and our create.
        Err(e) if e.code() == Some(DUPLICATE_OBJECT) => {
            let confirmed_flush = confirmed_flush(conn, slot).await?.unwrap_or_default();
            Ok(SlotState {
                system_id,
                timeline,
                confirmed_flush,
                created: false,
            })
        }
        Err(e) => Err(e),
    }
}

async fn confirmed_flush(conn: &mut Connection, slot: &str) -> Result<Option<Lsn>, PgError> {
    let rows = conn
        .query_rows(&format!(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = {}",
            quote_literal(slot)
        ))
        .await?;
    match rows.first().and_then(|r| r.get(0)) {
        None => Ok(None),
        Some(text) => text
            .parse::<Lsn>()
            .map(Some)
            .map_err(|e| PgError::Protocol(e.to_string())),
    }
}

/// Terminates the walsender that holds `slot`, if the slot is active and
/// its holder is a walsender; returns its pid. Only for a caller that knows
/// the holder is stale: a process of this server that is gone (SIGKILL, a
/// crash) leaves its walsender holding the slot until Postgres notices the
/// dead connection, which can take up to `wal_sender_timeout` (60 s by
/// default). The server calls it holding its storage directory's lock, so
/// no live instance of its own shares the slot (instances that scale out
/// each have their own stream id, so their own slot).
pub async fn terminate_stale_holder(
    conn: &mut Connection,
    slot: &str,
) -> Result<Option<i32>, PgError> {
    let rows = conn
        .query_rows(&format!(
            "SELECT a.pid, pg_terminate_backend(a.pid) \
             FROM pg_replication_slots s JOIN pg_stat_activity a ON a.pid = s.active_pid \
             WHERE s.slot_name = {} AND s.active AND a.backend_type = 'walsender'",
            quote_literal(slot)
        ))
        .await?;
    Ok(rows
        .first()
        .and_then(|r| r.try_get::<i32>(0).ok().flatten()))
}
