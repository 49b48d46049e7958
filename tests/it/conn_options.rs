//! Electric's connection options: a separate (pooled) URL for snapshot and
//! catalog queries, while replication stays on DATABASE_URL.

use std::time::Duration;

use crate::harness::database;
use crate::server::Server;
use crate::shape_client::ShapeClient;

#[test]
fn queries_use_the_pooled_url_and_replication_the_main_one() {
    let db = database("conn_options");
    let mut pg = db.client();
    pg.batch_execute("CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items VALUES (1);")
        .unwrap();
    // Electric's legacy name for the pooled URL.
    let pooled = format!("{}&application_name=shapeshard_pool", db.url);
    let server = Server::start(&db, &[("ELECTRIC_QUERY_DATABASE_URL", &pooled)]);
    let mut client = ShapeClient::new("table=items");
    client.sync(&server).unwrap();
    pg.batch_execute("INSERT INTO items VALUES (2)").unwrap();
    client
        .converge(
            &server,
            &["id"],
            &["1".into(), "2".into()],
            Duration::from_secs(20),
        )
        .unwrap();
    let mut by_name = |name: &str, replication: bool| -> i64 {
        pg.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
               AND application_name = $1 AND (backend_type = 'walsender') = $2",
            &[&name, &replication],
        )
        .unwrap()
        .get(0)
    };
    assert!(
        by_name("shapeshard_pool", false) >= 1,
        "the snapshot ran on the pooled URL"
    );
    assert_eq!(
        by_name("shapeshard_pool", true),
        0,
        "replication never uses it"
    );
    assert_eq!(
        by_name("shapeshard", true),
        1,
        "replication on DATABASE_URL"
    );
    assert_eq!(
        by_name("shapeshard", false),
        0,
        "no query connection on DATABASE_URL"
    );
    server.stop();
}

fn check_config(url: &str) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shapeshard"))
        .arg("check-config")
        .env("DATABASE_URL", url)
        .env("ELECTRIC_INSECURE", "true")
        .env(
            "ELECTRIC_STORAGE_DIR",
            std::env::temp_dir().join("shapeshard-check-config"),
        )
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn check_config_says_what_postgres_lacks() {
    let db = database("check_config");
    let (code, out) = check_config(&db.url);
    assert_eq!(code, Some(0), "{out}");
    for line in [
        "ok: wal_level is logical",
        "may replicate",
        "a replication connection works",
    ] {
        assert!(out.contains(line), "{line:?} missing from:\n{out}");
    }
    let mut pg = db.client();
    let role = format!("norep_{}", std::process::id());
    pg.batch_execute(&format!(
        "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN"
    ))
    .unwrap();
    let url = db.url.replacen("postgres@", &format!("{role}@"), 1);
    let (code, out) = check_config(&url);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains(&format!(
            "role {role} lacks REPLICATION: run ALTER ROLE {role} WITH REPLICATION"
        )),
        "{out}"
    );
    let (code, out) =
        check_config("postgresql://postgres@127.0.0.1:1/nope?sslmode=disable&connect_timeout=2");
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("cannot connect"), "{out}");
}

#[test]
fn postgres_sockets_keep_alive_with_the_configured_probes() {
    use shapeshard::pg::conn::Connection;
    let db = database("keepalive");
    let with = format!(
        "{}&keepalives_idle=7&keepalives_interval=3&keepalives_count=4",
        db.url
    );
    let cfg: shapeshard::pg::connstr::ConnConfig = with.parse().unwrap();
    let plain = db.conn_config();
    let (set, default) = crate::harness::block_on(move || async move {
        let tuned = Connection::connect(&cfg).await.unwrap();
        let plain = Connection::connect(&plain).await.unwrap();
        (tuned.tcp_keepalive(), plain.tcp_keepalive())
    });
    assert_eq!(set, Some((true, 7, 3, 4)));
    assert!(
        default.unwrap().0,
        "keepalive is on by default, as in libpq"
    );
    // Electric's variables fill in what the URL leaves out; a bad value is
    // one line and exit code 2.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shapeshard"))
        .env("DATABASE_URL", &db.url)
        .env("ELECTRIC_INSECURE", "true")
        .env("ELECTRIC_DATABASE_TCP_KEEPALIVE_IDLE", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("ELECTRIC_DATABASE_TCP_KEEPALIVE_IDLE must be above 0"));
}

#[test]
fn listens_on_ipv6_and_ipv4_when_asked() {
    let db = database("listen_ipv6");
    // Started and found active over 127.0.0.1: `::` takes IPv4 too.
    let server = crate::server::Server::start(&db, &[("ELECTRIC_LISTEN_ON_IPV6", "true")]);
    let over_v6 = ureq::get(&format!("http://[::1]:{}/v1/health", server.port))
        .timeout(std::time::Duration::from_secs(5))
        .call()
        .expect("the server answers on ::1");
    assert_eq!(over_v6.status(), 200);
    assert_eq!(server.get("/v1/health").status, 200);
}
