//! Crash restarts: the server is SIGKILLed at random moments under a
//! continuous write load; after each restart every client carries on from
//! its `(handle, offset)` — no 409, no gap, no duplicate — and ends equal to
//! Postgres, and every shape's log serves the same bytes it served before
//! (`replay.rs`: complete chunks identical, the open tail only grown).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{database, sorted_texts};
use crate::replay::{self, Recorded};
use crate::rng::Rng;
use crate::server::Server;
use crate::shape_client::ShapeClient;

/// Restarts per run; `SHAPESHARD_CRASH_RESTARTS` raises it for long runs.
fn restarts() -> usize {
    std::env::var("SHAPESHARD_CRASH_RESTARTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

#[test]
fn shapes_survive_sigkill_under_write_load() {
    let db = database("restart");
    db.client()
        .batch_execute(
            "CREATE TABLE items (id bigserial PRIMARY KEY, v int NOT NULL, note text);
             INSERT INTO items (v, note) SELECT g, 'seed' FROM generate_series(1, 300) g;
             CREATE TABLE others (id int PRIMARY KEY, label text);
             INSERT INTO others SELECT g, 'o' || g FROM generate_series(1, 50) g;",
        )
        .unwrap();
    // Small chunks, so the logs have complete chunks (compared byte for
    // byte after each restart) as well as an open tail.
    let mut server = Server::start(
        &db,
        &[
            ("ELECTRIC_LONG_POLL_TIMEOUT", "500"),
            ("ELECTRIC_SHAPE_CHUNK_BYTES_THRESHOLD", "16384"),
        ],
    );
    let mut clients = vec![
        ShapeClient::new("table=items"),
        ShapeClient::new("table=items&replica=full"),
        ShapeClient::new("table=others&columns=id"),
    ];
    for client in &mut clients {
        client.record = true;
        client.sync(&server).unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (url, stop) = (db.url.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut pg = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let mut n: i64 = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                pg.batch_execute(&format!(
                    "BEGIN;
                     INSERT INTO items (v, note) VALUES ({n}, 'w');
                     UPDATE items SET v = v + 1 WHERE id = {};
                     DELETE FROM items WHERE id = {};
                     UPDATE others SET label = 'l{n}' WHERE id = {};
                     COMMIT;",
                    1 + n % 300,
                    1 + (n * 7) % 400,
                    1 + n % 50
                ))
                .unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };

    let mut rng = Rng(0x5eed);
    // Every non-live response seen before a crash: the clients' own
    // (initial sync) and probes at offsets they passed through.
    let mut recorded: Vec<Recorded> = Vec::new();
    for round in 0..restarts() {
        // Follow for a random while, then crash.
        let until = Instant::now() + Duration::from_millis(200 + rng.below(800));
        let mut passed: Vec<Vec<String>> = vec![Vec::new(); clients.len()];
        while Instant::now() < until {
            for (client, passed) in clients.iter_mut().zip(&mut passed) {
                if passed.last() != Some(&client.offset) {
                    passed.push(client.offset.clone());
                }
                client.poll(&server).unwrap_or_else(|e| {
                    panic!(
                        "round {round}: {}: {e}\nserver log:\n{}",
                        client.definition,
                        server.log_tail()
                    )
                });
            }
        }
        for (client, passed) in clients.iter_mut().zip(&passed) {
            recorded.append(&mut client.recorded);
            let handle = client.handle.clone().unwrap();
            // A few offsets spread over this round, and the newest.
            let step = passed.len().div_ceil(6).max(1);
            for offset in passed.iter().step_by(step).chain([&client.offset]) {
                let probe = replay::fetch(&server, &client.definition, &handle, offset)
                    .unwrap_or_else(|e| panic!("round {round}: probe: {e}"));
                recorded.push(probe);
            }
        }
        server.crash_and_restart();
        let started = Instant::now();
        let verified =
            replay::verify(&server, &recorded, Duration::from_secs(30)).unwrap_or_else(|e| {
                panic!(
                    "round {round}: the log after the restart is not the log before it: {e}\n\
                     server log:\n{}",
                    server.log_tail()
                )
            });
        eprintln!(
            "round {round}: {verified:?} of {} responses, in {:?}",
            recorded.len(),
            started.elapsed()
        );
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();

    let mut pg = db.client();
    for (client, (query, columns)) in clients.iter_mut().zip([
        ("SELECT concat_ws('|', id, v) FROM items", &["id", "v"][..]),
        ("SELECT concat_ws('|', id, v) FROM items", &["id", "v"][..]),
        ("SELECT id::text FROM others", &["id"][..]),
    ]) {
        let want = sorted_texts(&mut pg, query, &[]);
        client
            .converge(&server, columns, &want, Duration::from_secs(30))
            .unwrap_or_else(|e| {
                panic!("{} never converged after restarts: {e}", client.definition)
            });
    }
}

#[test]
fn a_different_shard_count_is_refused_with_what_to_do() {
    let db = database("reshard");
    let server = Server::start(&db, &[]);
    let dir = server.dir.clone();
    server.stop_keeping_storage();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_shapeshard"))
        .env("DATABASE_URL", &db.url)
        .env("ELECTRIC_STORAGE_DIR", &dir)
        .env("ELECTRIC_INSECURE", "true")
        .env(
            "ELECTRIC_PORT",
            shapeshard::devpg::free_port().unwrap().to_string(),
        )
        .env("SHAPESHARD_SHARDS", "3")
        .env("SHAPESHARD_PLACEMENT", "unbound")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--shards 2"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_rolling_deploy_waits_for_the_lock_then_takes_over_every_shape() {
    let db = database("rolling");
    db.client()
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, v text); INSERT INTO items VALUES (1, 'a')",
        )
        .unwrap();
    let old = Server::start(
        &db,
        &[
            ("ELECTRIC_LONG_POLL_TIMEOUT", "500"),
            ("ELECTRIC_LOG_LEVEL", "info"),
        ],
    );
    let mut client = ShapeClient::new("table=items");
    client.sync(&old).unwrap();

    let mut new = old.spawn_successor();
    crate::harness::wait_for(
        "the successor to wait for the lock",
        Duration::from_secs(20),
        || {
            new.log_tail()
                .contains("waiting for the storage directory lock")
                .then_some(())
        },
    );
    // Serving read-only meanwhile (tests/it/rolling_deploy.rs): health
    // says it waits.
    let health = crate::harness::wait_for("the read-only phase", Duration::from_secs(20), || {
        new.try_get("/v1/health").ok()
    });
    assert_eq!(health.status, 202, "{}", health.body);
    // The old instance keeps serving meanwhile.
    db.client()
        .batch_execute("INSERT INTO items VALUES (2, 'b')")
        .unwrap();
    crate::harness::wait_for(
        "the old instance to serve the insert",
        Duration::from_secs(20),
        || {
            client.poll(&old).unwrap();
            (client.rows.len() == 2).then_some(())
        },
    );

    old.stop_keeping_storage();
    new.wait_until_active();
    db.client()
        .batch_execute("INSERT INTO items VALUES (3, 'c')")
        .unwrap();
    crate::harness::wait_for(
        "the new instance to carry on",
        Duration::from_secs(30),
        || {
            client.poll(&new).unwrap_or_else(|e| panic!("{e}"));
            (client.rows.len() == 3).then_some(())
        },
    );
    assert!(new.log_tail().contains("storage directory lock acquired"));
}

#[test]
fn a_clean_stop_with_many_shapes_and_a_live_request_takes_under_a_second() {
    const SHAPES: usize = 2_000;
    let db = database("stop");
    db.client()
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items SELECT generate_series(1, 10)")
        .unwrap();
    let server = Server::start(&db, &[]);
    let agent = ureq::AgentBuilder::new().build();
    let mut handle = String::new();
    for k in 0..SHAPES {
        let reply = crate::server::Reply::from(
            agent
                .get(&server.url(&format!(
                    "/v1/shape?table=items&offset=-1&where=id%20%3D%20{k}"
                )))
                .call(),
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
        if k == 1 {
            handle = reply.header("electric-handle").unwrap().to_string();
        }
    }
    // A client long-polling, and the agent's idle keep-alive connection.
    let live_url = server.url(&format!(
        "/v1/shape?table=items&offset=0_inf&handle={handle}&where=id%20%3D%201&live=true"
    ));
    let live = std::thread::spawn(move || ureq::get(&live_url).call().map(|r| r.status()).ok());
    std::thread::sleep(Duration::from_millis(300));
    let took = server.stop_timed();
    assert!(took < Duration::from_secs(1), "stopping took {took:?}");
    assert_eq!(
        live.join().unwrap(),
        Some(200),
        "the live request is answered, not cut"
    );
}

/// A large snapshot reaches the disk once: past its first MiB its rows are
/// not journaled, the checkpoint writes them into the serving file. After
/// that checkpoint a SIGKILL loses nothing: same handle, same rows, the
/// client carries on from its offset.
#[test]
fn a_large_snapshot_is_written_once_and_survives_a_crash() {
    const ROWS: usize = 40_000;
    let db = database("large_snapshot");
    db.client()
        .batch_execute(&format!(
            "CREATE TABLE big (id int PRIMARY KEY, note text NOT NULL);
             INSERT INTO big SELECT g, repeat('n', 120) || g FROM generate_series(1, {ROWS}) g;"
        ))
        .unwrap();
    let mut server = Server::start(&db, &[]);
    let written_before = server.metric("shapeshard_segment_bytes_written_total");
    let mut client = ShapeClient::new("table=big");
    client.sync(&server).unwrap();
    assert_eq!(client.rows.len(), ROWS);
    let handle = client.handle.clone().unwrap();
    // The rows' JSON is ~6 MB; the segment log got the first MiB of it.
    let journaled = server.metric("shapeshard_segment_bytes_written_total") - written_before;
    assert!(
        journaled < 2 << 20,
        "{journaled} bytes journaled for a {ROWS}-row snapshot"
    );
    // The checkpoint asked for at the snapshot's end (and one more, so
    // the first surely began after the end).
    let checkpoints = server.metric("shapeshard_checkpoints_total");
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.metric("shapeshard_checkpoints_total") < checkpoints + 2 {
        assert!(
            Instant::now() < deadline,
            "no checkpoint after the snapshot"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.crash_and_restart();
    db.client()
        .batch_execute("INSERT INTO big VALUES (0, 'after')")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.rows.len() < ROWS + 1 {
        assert!(Instant::now() < deadline, "the insert never arrived");
        client
            .poll(&server)
            .unwrap_or_else(|e| panic!("after the restart: {e}\n{}", server.log_tail()));
    }
    assert_eq!(
        client.handle.as_deref(),
        Some(handle.as_str()),
        "no re-sync"
    );
    let mut fresh = ShapeClient::new("table=big");
    fresh.sync(&server).unwrap();
    assert_eq!(fresh.handle.as_deref(), Some(handle.as_str()));
    assert_eq!(fresh.rows.len(), ROWS + 1);
}
