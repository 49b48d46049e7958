//! The publication the replication stream reads: created empty at start-up,
//! tables added when the first shape on them is created.

use crate::pg::conn::Connection;
use crate::pg::error::PgError;
use crate::pg::sql::{quote_ident, quote_literal};

/// SQLSTATE duplicate_object: the publication or membership already exists.
const DUPLICATE_OBJECT: &str = "42710";

pub async fn ensure_exists(conn: &mut Connection, publication: &str) -> Result<(), PgError> {
    match conn
        .execute(&format!("CREATE PUBLICATION {}", quote_ident(publication)))
        .await
    {
        Err(e) if e.code() == Some(DUPLICATE_OBJECT) => Ok(()),
        other => other,
    }
}

/// Adds `schema.table` to the publication and makes its replica identity
/// FULL, so updates and deletes carry whole old rows (needed for
/// `replica=full`, for rows moving out of a where clause, and for old values
/// of unchanged TOASTed columns).
pub async fn add_table(
    conn: &mut Connection,
    publication: &str,
    schema: &str,
    table: &str,
) -> Result<(), PgError> {
    let qualified = format!("{}.{}", quote_ident(schema), quote_ident(table));
    let rows = conn
        .query_rows(&format!(
            "SELECT c.relreplident::text, EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid WHERE p.pubname = {} AND pr.prrelid = c.oid) FROM pg_class c WHERE c.oid = {}::regclass",
            quote_literal(publication),
            quote_literal(&qualified)
        ))
        .await?;
    let row = rows
        .first()
        .ok_or_else(|| PgError::Protocol(format!("table {qualified} not found in pg_class")))?;
    let identity_full = row.get(0) == Some("f");
    let published = row.get(1) == Some("t");
    if !published {
        match conn
            .execute(&format!(
                "ALTER PUBLICATION {} ADD TABLE {qualified}",
                quote_ident(publication)
            ))
            .await
        {
            Err(e) if e.code() == Some(DUPLICATE_OBJECT) => {}
            other => other?,
        }
    }
    if !identity_full {
        conn.execute(&format!("ALTER TABLE {qualified} REPLICA IDENTITY FULL"))
            .await?;
    }
    Ok(())
}
