//! `shapeshard check-config`: the configuration as the server would read
//! it, then Postgres as the server needs it (reachable with its TLS mode,
//! `wal_level=logical`, a role that may replicate and create publications,
//! a replication connection that works), each problem on a line saying
//! what to change.

use crate::config::{Config, Database};
use crate::pg::conn::Connection;
use crate::pg::connstr::ConnConfig;

/// Runs every check; returns the lines to print and whether all passed.
pub fn check(config: &Config) -> (Vec<String>, bool) {
    let mut lines = vec![format!(
        "ok: configuration (storage {}, {} shards, port {})",
        config.storage_dir.display(),
        config.shards,
        config.port
    )];
    let conn = match &config.database {
        Database::Embedded => {
            lines.push("ok: no DATABASE_URL: an embedded Postgres will be started".into());
            return (lines, true);
        }
        Database::External(conn) => (**conn).clone(),
    };
    let pooled = config.pooled_database.clone();
    let problems = shards::runtime::spawn_thread("check-config", move || async move {
        let mut found = Vec::new();
        let mut ok = Vec::new();
        check_database(&conn, "DATABASE_URL", true, &mut ok, &mut found).await;
        if let Some(pooled) = &pooled {
            check_database(
                pooled,
                "ELECTRIC_POOLED_DATABASE_URL",
                false,
                &mut ok,
                &mut found,
            )
            .await;
        }
        (ok, found)
    })
    .map_err(|e| e.to_string())
    .and_then(|handle| {
        handle
            .join()
            .map_err(|_| "the check thread panicked".to_string())?
            .map_err(|e| e.to_string())
    });
    match problems {
        Ok((ok, found)) => {
            let passed = found.is_empty();
            lines.extend(ok);
            lines.extend(found);
            (lines, passed)
        }
        Err(e) => {
            lines.push(format!("error: cannot run the checks: {e}"));
            (lines, false)
        }
    }
}

async fn check_database(
    cfg: &ConnConfig,
    name: &str,
    replication: bool,
    ok: &mut Vec<String>,
    found: &mut Vec<String>,
) {
    let target = cfg.redacted();
    let mut conn = match Connection::connect(cfg).await {
        Ok(conn) => conn,
        Err(e) => {
            found.push(format!("error: {name}: cannot connect to {target}: {e}"));
            return;
        }
    };
    ok.push(format!("ok: {name}: connected to {target}"));
    let one = |rows: Vec<crate::pg::conn::Row>| -> String {
        rows.first()
            .and_then(|r| r.get(0))
            .unwrap_or_default()
            .to_string()
    };
    if !replication {
        return;
    }
    match conn.query_rows("SHOW wal_level").await.map(one) {
        Ok(level) if level == "logical" => ok.push("ok: wal_level is logical".into()),
        Ok(level) => found.push(format!(
            "error: wal_level is {level}: set wal_level = logical in postgresql.conf and restart Postgres"
        )),
        Err(e) => found.push(format!("error: cannot read wal_level: {e}")),
    }
    let role = conn
        .query_rows(
            "SELECT current_user, (rolreplication OR rolsuper)::text FROM pg_roles WHERE rolname = current_user",
        )
        .await;
    match role {
        Ok(rows) => {
            let user = rows
                .first()
                .and_then(|r| r.get(0))
                .unwrap_or("?")
                .to_string();
            if rows.first().and_then(|r| r.get(1)) == Some("true") {
                ok.push(format!("ok: role {user} may replicate"));
            } else {
                found.push(format!(
                    "error: role {user} lacks REPLICATION: run ALTER ROLE {user} WITH REPLICATION (as a superuser), or use a role that has it"
                ));
            }
        }
        Err(e) => found.push(format!("error: cannot read the role: {e}")),
    }
    let create = conn
        .query_rows(
            "SELECT has_database_privilege(current_user, current_database(), 'CREATE')::text",
        )
        .await
        .map(one);
    match create {
        Ok(can) if can == "true" => ok.push("ok: the role may create the publication".into()),
        Ok(_) => found.push(
            "error: the role may not CREATE in this database, so it cannot create the publication: GRANT CREATE ON DATABASE to it".into(),
        ),
        Err(e) => found.push(format!("error: cannot check the CREATE privilege: {e}")),
    }
    match Connection::connect_replication(cfg).await {
        Ok(mut repl) => match repl.simple_query("IDENTIFY_SYSTEM").await {
            Ok(_) => ok.push("ok: a replication connection works".into()),
            Err(e) => found.push(format!("error: IDENTIFY_SYSTEM failed: {e}")),
        },
        Err(e) => found.push(format!(
            "error: a replication connection is refused: {e} (check pg_hba.conf allows replication for this role, and max_wal_senders)"
        )),
    }
}
