//! A rolling deploy without a serving gap: the new instance, while the old
//! one holds the storage lock, serves the old one's checkpointed shapes
//! read-only (health `waiting`, creations 503 + retry-after, live requests
//! up to date), then takes over on the same port with no 409 and no
//! unanswered moment; clients end equal to Postgres.

use std::time::{Duration, Instant};

use crate::harness::{database, sorted_texts};
use crate::server::Server;
use crate::shape_client::ShapeClient;

const COLUMNS: &[&str] = &["id", "title"];

#[test]
fn a_waiting_successor_serves_read_only_and_takes_over_without_a_gap() {
    let db = database("rolling_deploy");
    let mut pg = db.client();
    pg.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, title text);
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 30) g;",
    )
    .unwrap();
    let env = [
        ("ELECTRIC_LONG_POLL_TIMEOUT", "1000"),
        ("SHAPESHARD_CHECKPOINT_INTERVAL_MS", "50"),
    ];
    let mut old = Server::start(&db, &env);
    let want = |pg: &mut postgres::Client, filter: &str| {
        sorted_texts(
            pg,
            &format!("SELECT concat_ws('|', id, title) FROM items WHERE {filter}"),
            &[],
        )
    };
    let filters = ["id <= 10", "id > 10 AND id <= 20", "id > 20"];
    let mut clients: Vec<ShapeClient> = filters
        .iter()
        .map(|f| ShapeClient::new(&format!("table=items&where={}", urlencode(f))))
        .collect();
    for client in &mut clients {
        client.sync(&old).unwrap();
    }
    pg.batch_execute("UPDATE items SET title = title || ' v2' WHERE id % 3 = 0")
        .unwrap();
    for (client, filter) in clients.iter_mut().zip(filters) {
        client
            .converge(
                &old,
                COLUMNS,
                &want(&mut pg, filter),
                Duration::from_secs(20),
            )
            .unwrap();
    }
    let handles: Vec<String> = clients.iter().map(|c| c.handle.clone().unwrap()).collect();
    // Let checkpoints take the snapshots and the update into the serving
    // files and LMDB (the read-only phase serves what they hold).
    let checkpoints = old.metric("shapeshard_checkpoints_total");
    crate::harness::wait_for("two checkpoints", Duration::from_secs(20), || {
        (old.metric("shapeshard_checkpoints_total") >= checkpoints + 4).then_some(())
    });

    // The successor waits for the lock, serving read-only meanwhile.
    let mut new = old.spawn_successor();
    crate::harness::wait_for("the successor to serve", Duration::from_secs(30), || {
        ureq::get(&new.url("/v1/health"))
            .timeout(Duration::from_secs(2))
            .call()
            .ok()
            .map(|r| (r.status(), r.into_string().unwrap_or_default()))
    });
    let health = new.get("/v1/health");
    assert_eq!(health.status, 202, "{}", health.body);
    assert!(health.body.contains("waiting"), "{}", health.body);
    // An existing shape from the start: the same handle and rows as the
    // old instance checkpointed.
    for (client, filter) in clients.iter().zip(filters) {
        let mut fresh = ShapeClient::new(&client.definition);
        fresh
            .sync(&new)
            .unwrap_or_else(|e| panic!("{e}\nsuccessor's log: {}", new.log_tail()));
        assert_eq!(fresh.handle, client.handle);
        assert_eq!(fresh.view(COLUMNS), want(&mut pg, filter), "{filter}");
    }
    // A client carrying on from the old instance's offset is caught up,
    // even one past what the checkpoint holds (it read the writer's tail).
    for offset in [clients[0].offset.clone(), "999999999999_0".to_string()] {
        let mut carried = ShapeClient::new(&clients[0].definition);
        carried.handle = Some(handles[0].clone());
        carried.offset = offset.clone();
        carried.poll(&new).unwrap();
        assert!(carried.up_to_date, "{offset}");
        assert_eq!(carried.offset, offset);
    }
    // A live request is answered up to date (after the long-poll).
    let live = new.get(&format!(
        "/v1/shape?{}&offset={}&handle={}&live=true",
        clients[1].definition, clients[1].offset, handles[1]
    ));
    assert_eq!(live.status, 200, "{}", live.body);
    assert!(live.body.contains("up-to-date"), "{}", live.body);
    // Creating needs the writer: 503, retry.
    let create = new.get("/v1/shape?table=items&where=id%20%3D%207&offset=-1");
    assert_eq!(create.status, 503, "{}", create.body);
    assert!(create.header("retry-after").is_some());

    // The swap: the old instance stops while clients follow on the new
    // port; only 503s (retried) may come, never a 409 or a refused port.
    old.signal_stop();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut retried = 0;
    loop {
        assert!(Instant::now() < deadline, "the successor never took over");
        for client in &mut clients {
            match client.poll(&new) {
                Ok(()) => {}
                Err(e) if e.contains("→ 503") => retried += 1,
                Err(e) => panic!("{}: {e}", client.definition),
            }
        }
        if new.get("/v1/health").status == 200 {
            break;
        }
    }
    assert!(!old.is_running(), "the old instance exited");
    pg.batch_execute(
        "UPDATE items SET title = title || ' v3' WHERE id % 4 = 0;
         INSERT INTO items VALUES (31, 'after the deploy');",
    )
    .unwrap();
    // New shapes can be created again.
    let create = new.get("/v1/shape?table=items&where=id%20%3D%207&offset=-1");
    assert_eq!(create.status, 200, "{}", create.body);
    for ((client, filter), handle) in clients.iter_mut().zip(filters).zip(&handles) {
        client
            .converge(
                &new,
                COLUMNS,
                &want(&mut pg, filter),
                Duration::from_secs(30),
            )
            .unwrap();
        assert_eq!(
            client.handle.as_ref(),
            Some(handle),
            "no 409: the same shape"
        );
    }
    eprintln!("503s retried through the swap: {retried}");
    new.wait_until_active();
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
