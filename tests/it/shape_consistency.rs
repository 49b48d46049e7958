//! Snapshot/log consistency under concurrent writes: 8 writers commit while
//! 50 shapes are created; every client's view must end equal to the
//! Postgres query for its shape — no missing row, no duplicate, no
//! insert of a present key or update of a missing one along the way.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::{database, sorted_texts};
use crate::rng::Rng;
use crate::server::Server;
use crate::shape_client::ShapeClient;

const GROUPS: i32 = 50;
const WRITERS: usize = 8;

#[test]
fn fifty_shapes_created_under_eight_writers_end_equal_to_postgres() {
    let db = database("consistency");
    db.client()
        .batch_execute(
            "CREATE TABLE rows (id bigserial PRIMARY KEY, g int NOT NULL, v int NOT NULL, note text);
             INSERT INTO rows (g, v, note)
               SELECT g % 50, 0, 'seed ' || g FROM generate_series(1, 2000) g;",
        )
        .unwrap();
    let server = Server::start(&db, &[("ELECTRIC_LONG_POLL_TIMEOUT", "1000")]);

    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (url, stop, commits) = (db.url.clone(), stop.clone(), commits.clone());
            std::thread::spawn(move || {
                let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (w as u64 + 1));
                while !stop.load(Ordering::Relaxed) {
                    let mut tx = client.transaction().unwrap();
                    for _ in 0..1 + rng.below(4) {
                        let g = rng.below(GROUPS as u64) as i32;
                        let id = 1 + rng.below(2500) as i64;
                        match rng.below(4) {
                            0 => {
                                tx.execute(
                                    "INSERT INTO rows (g, v, note) VALUES ($1, 1, 'new')",
                                    &[&g],
                                )
                                .unwrap();
                            }
                            1 => {
                                tx.execute("UPDATE rows SET v = v + 1 WHERE id = $1", &[&id])
                                    .unwrap();
                            }
                            // Moves a row from one shape to another.
                            2 => {
                                tx.execute("UPDATE rows SET g = $1 WHERE id = $2", &[&g, &id])
                                    .unwrap();
                            }
                            _ => {
                                tx.execute("DELETE FROM rows WHERE id = $1", &[&id])
                                    .unwrap();
                            }
                        }
                    }
                    tx.commit().unwrap();
                    commits.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // Shapes are created one after another while the writers run, each
    // synced to up-to-date right away.
    let mut clients: Vec<ShapeClient> = Vec::new();
    for g in 0..GROUPS {
        let mut client = ShapeClient::new(&format!("table=rows&where=g%20%3D%20{g}"));
        client
            .sync(&server)
            .unwrap_or_else(|e| panic!("shape g = {g}: {e}"));
        clients.push(client);
    }
    let during = commits.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().unwrap();
    }
    assert!(
        during > 50,
        "writers committed only {during} transactions meanwhile"
    );

    let mut pg = db.client();
    for (g, client) in clients.iter_mut().enumerate() {
        let want = sorted_texts(
            &mut pg,
            "SELECT concat_ws('|', id, g, v) FROM rows WHERE g = $1",
            &[&(g as i32)],
        );
        client
            .converge(&server, &["id", "g", "v"], &want, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("shape g = {g} never converged: {e}"));
    }
}
