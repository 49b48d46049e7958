//! Postgres going away under the server: the replication connection cut
//! again and again under writes (clients end equal to Postgres, no shape
//! lost), and the slot dropped from under it (recreated; every shape is
//! dropped, as in Electric, and clients re-sync to the right rows instead
//! of silently missing what happened while there was no slot).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{database, sorted_texts};
use crate::server::Server;
use crate::shape_client::ShapeClient;

const COLUMNS: &[&str] = &["id", "g", "v"];

fn want(pg: &mut postgres::Client, g: i32) -> Vec<String> {
    sorted_texts(
        pg,
        "SELECT concat_ws('|', id, g, v) FROM items WHERE g = $1",
        &[&g],
    )
}

fn clients() -> Vec<ShapeClient> {
    (0..4)
        .map(|g| ShapeClient::new(&format!("table=items&where=g%20%3D%20{g}")))
        .collect()
}

/// Follows `client` to `want`; a 409 starts it over. Returns the re-syncs.
fn follow(client: &mut ShapeClient, server: &Server, want: &[String]) -> usize {
    client.follow_resyncing(server, COLUMNS, want, |_| false)
}

fn slot_of(db: &crate::harness::TestDb) -> String {
    format!("electric_slot_{}", db.stream_id())
}

#[test]
fn replication_cut_again_and_again_under_writes_loses_nothing() {
    let db = database("pg_cut");
    let mut pg = db.client();
    pg.batch_execute(
        "CREATE TABLE items (id serial PRIMARY KEY, g int NOT NULL, v int NOT NULL);
         INSERT INTO items (g, v) SELECT g % 4, 0 FROM generate_series(1, 40) g;",
    )
    .unwrap();
    let server = Server::start(&db, &[("ELECTRIC_LONG_POLL_TIMEOUT", "500")]);
    let mut clients = clients();
    for (g, client) in clients.iter_mut().enumerate() {
        assert_eq!(follow(client, &server, &want(&mut pg, g as i32)), 0);
    }
    let seconds: u64 = std::env::var("PG_CUT_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, url) = (stop.clone(), db.url.clone());
        std::thread::spawn(move || {
            let mut pg = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                pg.batch_execute(&format!(
                    "INSERT INTO items (g, v) VALUES ({}, {n}); UPDATE items SET v = v + 1 WHERE id = {};",
                    n % 4,
                    n % 40 + 1
                ))
                .unwrap();
                n += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            n
        })
    };
    let slot = slot_of(&db);
    let mut cuts = 0;
    let until = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < until {
        let killed = pg
            .query(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL",
                &[&slot],
            )
            .unwrap();
        cuts += killed.len();
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, Ordering::SeqCst);
    let writes = writer.join().unwrap();
    assert!(cuts >= 3, "the replication connection was cut {cuts} times");
    assert!(writes > 10, "{writes} writes");
    for (g, client) in clients.iter_mut().enumerate() {
        let resyncs = follow(client, &server, &want(&mut pg, g as i32));
        assert_eq!(resyncs, 0, "{}: cuts lose no shape", client.definition);
    }
}

#[test]
fn a_dropped_slot_is_recreated_and_every_client_resyncs() {
    let db = database("pg_slot_drop");
    let mut pg = db.client();
    pg.batch_execute(
        "CREATE TABLE items (id serial PRIMARY KEY, g int NOT NULL, v int NOT NULL);
         INSERT INTO items (g, v) SELECT g % 4, 0 FROM generate_series(1, 20) g;",
    )
    .unwrap();
    let server = Server::start(&db, &[("ELECTRIC_LONG_POLL_TIMEOUT", "500")]);
    let mut clients = clients();
    for (g, client) in clients.iter_mut().enumerate() {
        assert_eq!(follow(client, &server, &want(&mut pg, g as i32)), 0);
    }
    let handles: Vec<String> = clients.iter().map(|c| c.handle.clone().unwrap()).collect();
    // Drop the slot from under the server (its walsender first), and write
    // while there is none: those changes are never streamed.
    let slot = slot_of(&db);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "could not drop the slot");
        pg.query(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL",
            &[&slot],
        )
        .unwrap();
        if pg
            .query("SELECT pg_drop_replication_slot($1)", &[&slot])
            .is_ok()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    pg.batch_execute("INSERT INTO items (g, v) SELECT g % 4, 99 FROM generate_series(1, 8) g")
        .unwrap();
    for (g, client) in clients.iter_mut().enumerate() {
        let resyncs = follow(client, &server, &want(&mut pg, g as i32));
        assert!(resyncs >= 1, "{}: must re-sync", client.definition);
        assert_ne!(client.handle.as_ref(), Some(&handles[g]));
    }
    // The new slot streams: later changes arrive as usual.
    pg.batch_execute("UPDATE items SET v = -1 WHERE g = 2")
        .unwrap();
    let resyncs = follow(&mut clients[2], &server, &want(&mut pg, 2));
    assert_eq!(resyncs, 0);
}

/// Postgres stopped fast, then immediately (crash recovery at its next
/// start), on the same port, while writes go on and a large shape's
/// snapshot is being read: the server reconnects, the interrupted snapshot
/// fails its creating request (the client retries), and every client ends
/// equal to Postgres with its shape kept.
#[test]
fn postgres_restarted_fast_and_immediately_loses_nothing() {
    use shapeshard::devpg::{DevPgOptions, DevPostgres};
    let dir = std::env::temp_dir().join(format!("shapeshard-pg-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut options = DevPgOptions::default();
    options.settings.push(("fsync".into(), "off".into()));
    let mut postgres = DevPostgres::start(&dir, &options).expect("a Postgres of its own");
    options.port = Some(postgres.port());
    let db = crate::harness::TestDb {
        name: "restarts".into(),
        url: postgres.url("postgres"),
    };
    let mut pg = db.client();
    pg.batch_execute(
        "CREATE TABLE items (id serial PRIMARY KEY, g int NOT NULL, v int NOT NULL);
         INSERT INTO items (g, v) SELECT g % 4, 0 FROM generate_series(1, 40) g;
         CREATE TABLE big (id int PRIMARY KEY, pad text);
         INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 100000) g;",
    )
    .unwrap();
    drop(pg);
    let server = Server::start(
        &db,
        &[
            ("ELECTRIC_LONG_POLL_TIMEOUT", "500"),
            // Chunks a test client can read whole.
            ("ELECTRIC_SHAPE_CHUNK_BYTES_THRESHOLD", "2000000"),
        ],
    );
    let mut clients = clients();
    {
        let mut pg = db.client();
        for (g, client) in clients.iter_mut().enumerate() {
            assert_eq!(follow(client, &server, &want(&mut pg, g as i32)), 0);
        }
    }
    for immediate in [false, true] {
        // A large snapshot starts; Postgres goes away under it and under
        // the replication stream.
        let big = {
            let url = server.url("/v1/shape?table=big&offset=-1");
            std::thread::spawn(move || match ureq::get(&url).call() {
                Ok(reply) => Ok(reply.status()),
                Err(ureq::Error::Status(status, _)) => Ok(status),
                Err(e) => Err(e.to_string()),
            })
        };
        std::thread::sleep(Duration::from_millis(150));
        {
            let mut pg = db.client();
            pg.batch_execute(
                "INSERT INTO items (g, v) SELECT g % 4, 1 FROM generate_series(1, 8) g",
            )
            .unwrap();
        }
        if immediate {
            postgres.stop_immediately();
        } else {
            postgres.stop();
        }
        postgres = DevPostgres::start(&dir, &options).expect("Postgres again");
        // The snapshot either finished before or failed: a 5xx, or a 409
        // when the interrupted shape was dropped under the waiting request
        // (both are retried by the client).
        match big.join().unwrap() {
            Ok(status) => assert!(status == 200 || status == 409 || status >= 500, "{status}"),
            Err(e) => panic!("snapshot request: {e}"),
        }
        let mut pg = db.client();
        pg.batch_execute("UPDATE items SET v = v + 10 WHERE g = 1")
            .unwrap();
        for (g, client) in clients.iter_mut().enumerate() {
            let resyncs = follow(client, &server, &want(&mut pg, g as i32));
            assert_eq!(resyncs, 0, "{} (immediate: {immediate})", client.definition);
        }
        // The large shape can be created once Postgres is back.
        let mut big = ShapeClient::new("table=big");
        crate::harness::wait_for("the large shape", Duration::from_secs(60), || {
            big.sync(&server).ok()
        });
        assert_eq!(big.rows.len(), 100_000);
    }
    drop(server);
    postgres.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
