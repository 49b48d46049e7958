//! A restart after SIGKILL reaches `active` in seconds, even while the
//! killed process's walsender still holds the replication slot: Postgres
//! notices a dead client only when its socket says so, or after
//! `wal_sender_timeout` (60 s by default) when it does not (a host crash, a
//! network partition, a proxy that keeps the connection). The restarted
//! server holds the storage lock, so the holder of its slot is stale; it
//! terminates that walsender and streams.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::harness::{cluster, database, sorted_texts, wait_for, TestDb};
use crate::rng::Rng;
use crate::server::Server;
use crate::shape_client::ShapeClient;

const COLUMNS: &[&str] = &["id", "g", "v"];
/// What a restart to `active` may take (recovery, connections, slot).
const RESTART_MAX: Duration = Duration::from_secs(15);

fn want(pg: &mut postgres::Client, g: i32) -> Vec<String> {
    sorted_texts(
        pg,
        "SELECT concat_ws('|', id, g, v) FROM items WHERE g = $1",
        &[&g],
    )
}

fn setup(prefix: &str) -> (TestDb, Vec<ShapeClient>) {
    let db = database(prefix);
    db.client()
        .batch_execute(
            "CREATE TABLE items (id serial PRIMARY KEY, g int NOT NULL, v int NOT NULL);
             INSERT INTO items (g, v) SELECT g % 3, 0 FROM generate_series(1, 30) g;",
        )
        .unwrap();
    let clients = (0..3)
        .map(|g| ShapeClient::new(&format!("table=items&where=g%20%3D%20{g}")))
        .collect();
    (db, clients)
}

fn converge(clients: &mut [ShapeClient], server: &Server, pg: &mut postgres::Client) {
    for (g, client) in clients.iter_mut().enumerate() {
        let resyncs = client.follow_resyncing(server, COLUMNS, &want(pg, g as i32), |_| false);
        assert_eq!(resyncs, 0, "{}: the shape was lost", client.definition);
    }
}

/// Small transactions until stopped.
fn writes(db: &TestDb, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    let url = db.url.clone();
    std::thread::spawn(move || {
        let mut pg = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            pg.batch_execute(&format!(
                "INSERT INTO items (g, v) VALUES ({}, {n}); UPDATE items SET v = v + 1 WHERE id = {};",
                n % 3,
                1 + n % 30
            ))
            .unwrap();
            n += 1;
            std::thread::sleep(Duration::from_millis(3));
        }
        n
    })
}

/// The walsender holding `db`'s slot, if one does.
fn slot_holder(pg: &mut postgres::Client, db: &TestDb) -> Option<i32> {
    pg.query_one(
        "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
        &[&format!("electric_slot_{}", db.stream_id())],
    )
    .unwrap()
    .get(0)
}

/// Kills the server, restarts it and returns how long it took to be
/// active again.
fn timed_crash_restart(server: &mut Server) -> Duration {
    server.kill();
    let started = Instant::now();
    server.restart();
    started.elapsed()
}

#[test]
fn sigkill_restarts_under_writes_are_active_within_seconds() {
    let (db, mut clients) = setup("restart_waits");
    let mut pg = db.client();
    let mut server = Server::start(&db, &[("ELECTRIC_LONG_POLL_TIMEOUT", "500")]);
    converge(&mut clients, &server, &mut pg);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = writes(&db, stop.clone());
    let rounds: usize = std::env::var("SHAPESHARD_RESTART_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let seed = 0x7e57_a7e5;
    let mut rng = Rng(seed);
    let mut slowest = Duration::ZERO;
    for round in 0..rounds {
        // Run (and follow) a random while under writes, then kill.
        let until = Instant::now() + Duration::from_millis(100 + rng.below(900));
        while Instant::now() < until {
            for client in clients.iter_mut() {
                client.poll(&server).unwrap();
            }
        }
        let took = timed_crash_restart(&mut server);
        eprintln!("round {round}: active after {took:?}");
        assert!(
            took < RESTART_MAX,
            "round {round} (seed {seed:#x}): active after {took:?}\nserver log:\n{}",
            server.log_tail()
        );
        slowest = slowest.max(took);
    }
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().unwrap();
    assert!(written > 100, "{written} transactions");
    converge(&mut clients, &server, &mut pg);
    eprintln!("{rounds} restarts, slowest {slowest:?}");
}

/// A TCP proxy to the test cluster that, once `hold` is set, keeps the
/// Postgres side of a connection open after its client went away: what
/// Postgres sees when the client's host dies or the network drops it.
struct HoldingProxy {
    port: u16,
    hold: Arc<AtomicBool>,
    /// Connections whose client is gone, kept open to Postgres.
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl HoldingProxy {
    fn start(upstream: u16) -> HoldingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold = Arc::new(AtomicBool::new(false));
        let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (h, kept) = (hold.clone(), held.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (hold, held) = (h.clone(), kept.clone());
                let (mut client_in, mut server_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut server_in, mut client_out) = (server, client);
                std::thread::spawn(move || {
                    pump(&mut client_in, &mut server_out);
                    if hold.load(Ordering::SeqCst) {
                        held.lock().unwrap().push(server_out);
                    } else {
                        let _ = server_out.shutdown(Shutdown::Both);
                    }
                });
                std::thread::spawn(move || {
                    pump(&mut server_in, &mut client_out);
                    let _ = client_out.shutdown(Shutdown::Both);
                });
            }
        });
        HoldingProxy { port, hold, held }
    }
}

fn pump(from: &mut TcpStream, to: &mut TcpStream) {
    let mut buffer = [0u8; 16384];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buffer[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

#[test]
fn a_stale_walsender_holding_the_slot_is_terminated_on_restart() {
    let (db, mut clients) = setup("stale_walsender");
    let mut pg = db.client();
    let proxy = HoldingProxy::start(cluster().port);
    let url = format!(
        "postgresql://postgres@127.0.0.1:{}/{}?sslmode=disable",
        proxy.port, db.name
    );
    let mut server = Server::start(
        &db,
        &[
            ("DATABASE_URL", &url),
            ("ELECTRIC_LONG_POLL_TIMEOUT", "500"),
        ],
    );
    converge(&mut clients, &server, &mut pg);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = writes(&db, stop.clone());
    std::thread::sleep(Duration::from_millis(500));
    let streaming = slot_holder(&mut pg, &db).expect("the slot is streaming");

    proxy.hold.store(true, Ordering::SeqCst);
    server.kill();
    // The killed server's walsender goes on holding the slot: Postgres
    // cannot tell its client is gone.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        slot_holder(&mut pg, &db),
        Some(streaming),
        "the scenario needs a stale walsender"
    );
    assert!(!proxy.held.lock().unwrap().is_empty());

    let started = Instant::now();
    server.restart();
    let took = started.elapsed();
    assert!(
        took < RESTART_MAX,
        "active after {took:?} (wal_sender_timeout is 60 s)\n{}",
        server.log_tail()
    );
    assert!(
        server.log().contains("held by a stale walsender"),
        "{}",
        server.log_tail()
    );
    let holder = wait_for("the slot to stream again", Duration::from_secs(10), || {
        slot_holder(&mut pg, &db)
    });
    assert_ne!(holder, streaming, "a new walsender streams");
    let gone: i64 = pg
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
            &[&streaming],
        )
        .unwrap()
        .get(0);
    assert_eq!(gone, 0, "the stale walsender was terminated");
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    converge(&mut clients, &server, &mut pg);
    eprintln!("restart with a stale walsender: active after {took:?}");
}
