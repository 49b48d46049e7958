//! Password authentication against a cluster configured for md5,
//! SCRAM-SHA-256 and cleartext, through our own wire client.

use std::time::Duration;

use shapeshard::pg::conn::Connection;
use shapeshard::pg::connstr::ConnConfig;
use shapeshard::pg::error::PgError;

use crate::harness::{block_on, cluster, database};

fn connect(
    port: u16,
    user: &str,
    password: Option<&str>,
    db: &str,
) -> Result<String, Box<PgError>> {
    let url = match password {
        Some(p) => format!("postgresql://{user}:{p}@127.0.0.1:{port}/{db}?sslmode=disable"),
        None => format!("postgresql://{user}@127.0.0.1:{port}/{db}?sslmode=disable"),
    };
    let config: ConnConfig = url.parse().unwrap();
    block_on(move || async move {
        let mut conn = Connection::connect(&config).await.map_err(Box::new)?;
        let rows = conn
            .query_rows("SELECT current_user")
            .await
            .map_err(Box::new)?;
        let user = rows[0].get(0).unwrap_or_default().to_string();
        conn.close().await;
        Ok(user)
    })
}

#[test]
fn md5_scram_and_cleartext_logins() {
    let db = database("auth");
    let mut client = db.client();
    client
        .batch_execute(
            "SET password_encryption = 'md5';
             CREATE ROLE ss_md5_user LOGIN PASSWORD 'md5 secret';
             SET password_encryption = 'scram-sha-256';
             CREATE ROLE ss_scram_user LOGIN PASSWORD 'sc''ram:secret/@';
             CREATE ROLE ss_plain_user LOGIN PASSWORD 'plain';",
        )
        .unwrap();
    let hba = cluster().dir.join("pgdata").join("pg_hba.conf");
    let original = std::fs::read_to_string(&hba).unwrap();
    if !original.contains("ss_md5_user") {
        let rules = "host all ss_md5_user 127.0.0.1/32 md5\n\
                     host all ss_scram_user 127.0.0.1/32 scram-sha-256\n\
                     host all ss_plain_user 127.0.0.1/32 password\n";
        std::fs::write(&hba, format!("{rules}{original}")).unwrap();
    }
    client.batch_execute("SELECT pg_reload_conf()").unwrap();
    // The postmaster reloads asynchronously.
    crate::harness::wait_for("pg_hba.conf reload", Duration::from_secs(10), || {
        let rows = client
            .query(
                "SELECT 1 FROM pg_hba_file_rules WHERE 'ss_md5_user' = ANY(user_name)",
                &[],
            )
            .unwrap();
        (!rows.is_empty()).then_some(())
    });
    std::thread::sleep(Duration::from_millis(200));

    let port = cluster().port;
    assert_eq!(
        connect(port, "ss_md5_user", Some("md5%20secret"), &db.name).unwrap(),
        "ss_md5_user"
    );
    assert_eq!(
        connect(
            port,
            "ss_scram_user",
            Some("sc'ram%3Asecret%2F%40"),
            &db.name
        )
        .unwrap(),
        "ss_scram_user"
    );
    assert_eq!(
        connect(port, "ss_plain_user", Some("plain"), &db.name).unwrap(),
        "ss_plain_user"
    );

    for user in ["ss_md5_user", "ss_scram_user", "ss_plain_user"] {
        let err = connect(port, user, Some("wrong"), &db.name).unwrap_err();
        assert_eq!(err.code(), Some("28P01"), "{user}: {err}");
        let message = err.to_string();
        assert!(
            message.contains("password authentication failed"),
            "{message}"
        );
        assert!(
            !message.contains("wrong"),
            "no password in errors: {message}"
        );
    }
    let err = connect(port, "ss_scram_user", None, &db.name).unwrap_err();
    assert!(matches!(*err, PgError::Auth(_)), "{err:?}");
    assert!(err.to_string().contains("password"), "{err}");
}
