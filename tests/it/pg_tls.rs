//! TLS to Postgres: a cluster started with `ssl=on` and a CA and server
//! certificate generated here; every `sslmode` connects as libpq's would
//! or fails saying why; the whole server (replication, catalog reads,
//! snapshots) syncs a shape over `verify-full`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use shapeshard::devpg::{DevPgOptions, DevPostgres};
use shapeshard::pg::conn::Connection;
use shapeshard::pg::connstr::ConnConfig;

use crate::harness::{block_on, cluster, TestDb};
use crate::server::Server;
use crate::shape_client::ShapeClient;

struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    other_ca: PathBuf,
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert, key)
}

/// A CA, a server certificate it signs for `localhost` only (not for
/// 127.0.0.1), and an unrelated CA; files readable by the `postgres` user.
fn pki(dir: &Path) -> Pki {
    std::fs::create_dir_all(dir).unwrap();
    let (ca_cert, ca_key) = ca("shapeshard test CA");
    let (other, _) = ca("some other CA");
    let params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = params.signed_by(&server_key, &ca_cert, &ca_key).unwrap();
    let write = |name: &str, text: String, mode: u32| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    };
    let ca = write("ca.pem", ca_cert.pem(), 0o644);
    let other_ca = write("other-ca.pem", other.pem(), 0o644);
    write("server.crt", server.pem(), 0o644);
    write("server.key", server_key.serialize_pem(), 0o600);
    // Postgres refuses a key another user can read, and runs as `postgres`
    // when we are root.
    if unsafe { libc::geteuid() } == 0 {
        let status = std::process::Command::new("chown")
            .args(["-R", "postgres", &dir.display().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
    Pki {
        dir: dir.to_path_buf(),
        ca,
        other_ca,
    }
}

fn connect(url: &str) -> Result<String, String> {
    let cfg: ConnConfig = url.parse().map_err(|e| format!("{e}"))?;
    block_on(move || async move {
        let mut conn = Connection::connect(&cfg).await.map_err(|e| e.to_string())?;
        let rows = conn
            .query_rows("SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .await
            .map_err(|e| e.to_string())?;
        Ok(rows[0].get(0).unwrap_or("?").to_string())
    })
}

fn connect_replication(url: &str) -> Result<(), String> {
    let cfg: ConnConfig = url.parse().map_err(|e| format!("{e}"))?;
    block_on(move || async move {
        let mut conn = Connection::connect_replication(&cfg)
            .await
            .map_err(|e| e.to_string())?;
        conn.simple_query("IDENTIFY_SYSTEM")
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    })
}

#[test]
fn every_sslmode_connects_or_says_why() {
    let base = std::env::temp_dir().join(format!("shapeshard-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let pki = pki(&base.join("pki"));
    let mut options = DevPgOptions::default();
    for (name, value) in [
        ("ssl", "on".to_string()),
        (
            "ssl_cert_file",
            pki.dir.join("server.crt").display().to_string(),
        ),
        (
            "ssl_key_file",
            pki.dir.join("server.key").display().to_string(),
        ),
    ] {
        options.settings.push((name.into(), value));
    }
    let mut pg = DevPostgres::start(&base.join("pg"), &options).expect("TLS Postgres");
    let port = pg.port();
    let url =
        |host: &str, query: &str| format!("postgresql://postgres@{host}:{port}/postgres?{query}");
    let ca = pki.ca.display().to_string();
    let other = pki.other_ca.display().to_string();

    assert_eq!(
        connect(&url("localhost", "sslmode=disable")).unwrap(),
        "false"
    );
    assert_eq!(
        connect(&url("localhost", "sslmode=prefer")).unwrap(),
        "true",
        "prefer uses TLS when the server offers it"
    );
    assert_eq!(
        connect(&url("127.0.0.1", "sslmode=require")).unwrap(),
        "true"
    );
    assert_eq!(
        connect(&url(
            "127.0.0.1",
            &format!("sslmode=verify-ca&sslrootcert={ca}")
        ))
        .unwrap(),
        "true",
        "verify-ca checks the chain, not the name"
    );
    assert_eq!(
        connect(&url(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={ca}")
        ))
        .unwrap(),
        "true"
    );
    connect_replication(&url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .expect("replication connections use TLS too");

    let wrong_ca = connect(&url(
        "localhost",
        &format!("sslmode=verify-ca&sslrootcert={other}"),
    ))
    .unwrap_err();
    assert!(
        wrong_ca.contains("TLS handshake") && wrong_ca.contains("verify-ca"),
        "{wrong_ca}"
    );
    let wrong_name = connect(&url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .unwrap_err();
    assert!(
        wrong_name.contains("TLS handshake") && wrong_name.to_lowercase().contains("not valid for"),
        "{wrong_name}"
    );
    // `require` with a root file verifies the chain, as in libpq.
    assert!(connect(&url(
        "127.0.0.1",
        &format!("sslmode=require&sslrootcert={other}")
    ))
    .is_err());

    // A server without TLS (the shared test cluster): require refuses,
    // prefer falls back.
    let plain = cluster().port;
    let plain_url =
        |query: &str| format!("postgresql://postgres@127.0.0.1:{plain}/postgres?{query}");
    let refused = connect(&plain_url("sslmode=require")).unwrap_err();
    assert!(refused.contains("does not accept TLS"), "{refused}");
    assert_eq!(connect(&plain_url("sslmode=prefer")).unwrap(), "false");

    // The whole server over verify-full: replication, catalog, snapshot.
    let mut admin =
        postgres::Client::connect(&url("localhost", "sslmode=disable"), postgres::NoTls).unwrap();
    admin
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, title text);
             INSERT INTO items VALUES (1, 'over tls');",
        )
        .unwrap();
    let db = TestDb {
        name: "tls".into(),
        url: url(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
    };
    let server = Server::start(&db, &[]);
    let mut client = ShapeClient::new("table=items");
    client.sync(&server).unwrap();
    admin
        .batch_execute("INSERT INTO items VALUES (2, 'live over tls')")
        .unwrap();
    client
        .converge(
            &server,
            &["id", "title"],
            &["1|over tls".to_string(), "2|live over tls".to_string()],
            Duration::from_secs(20),
        )
        .unwrap();
    let tls_backends: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE s.ssl AND a.application_name = 'shapeshard'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        tls_backends >= 2,
        "replication and pool connections use TLS ({tls_backends})"
    );
    server.stop();
    pg.stop();
    let _ = std::fs::remove_dir_all(&base);
}
