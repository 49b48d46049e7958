//! Idle shapes unloaded to their cold form and rebuilt on next use, in the
//! real server: clients following them see every change exactly once (the
//! strict client fails otherwise), a long-poll in progress keeps its shape
//! built and is woken by the next change, and unloaded shapes survive both
//! kinds of restart. Also the storage series of `/metrics`.

use std::time::Duration;

use crate::harness::{database, sorted_texts, wait_for};
use crate::server::Server;
use crate::shape_client::ShapeClient;

const SHAPES: usize = 30;

#[test]
fn idle_shapes_unload_and_come_back_for_their_clients() {
    let db = database("unload");
    let mut pg = db.client();
    pg.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL);
         INSERT INTO items SELECT g, 0 FROM generate_series(1, 100) g",
    )
    .unwrap();
    // A checkpoint every 20 ms; a shape unused for over one is unloaded.
    let mut server = Server::start(
        &db,
        &[
            ("SHAPESHARD_CHECKPOINT_INTERVAL_MS", "20"),
            ("SHAPESHARD_UNLOAD_IDLE_MS", "1"),
            ("ELECTRIC_LONG_POLL_TIMEOUT", "30000"),
        ],
    );
    let definition = |k: usize| format!("table=items&where=id%20%3D%20{k}");
    let mut clients: Vec<ShapeClient> = (1..=SHAPES)
        .map(|k| ShapeClient::new(&definition(k)))
        .collect();
    for client in &mut clients {
        client.sync(&server).unwrap();
    }
    wait_for("every idle shape unloaded", Duration::from_secs(30), || {
        (server.metric("shapeshard_shapes_cold") == SHAPES as u64).then_some(())
    });
    assert!(server.metric("shapeshard_shapes_unloaded_total") >= SHAPES as u64);
    assert_eq!(server.metric("shapeshard_shapes_built"), 0);

    // A long-poll holds its shape: however long it waits, the shape stays
    // built and the change reaches it (an unloaded shape's waiters would
    // only time out, with no data).
    let poll_url = {
        let c = &clients[0];
        format!(
            "/v1/shape?{}&offset={}&handle={}&live=true",
            c.definition,
            c.offset,
            c.handle.as_deref().unwrap()
        )
    };
    let base = server.base_url();
    let poll = std::thread::spawn(move || {
        ureq::get(&format!("{base}{poll_url}"))
            .timeout(Duration::from_secs(60))
            .call()
            .map(|r| r.into_string().unwrap())
            .map_err(|e| e.to_string())
    });
    wait_for(
        "the long-poll's shape built",
        Duration::from_secs(30),
        || (server.metric("shapeshard_shapes_built") == 1).then_some(()),
    );
    let checkpoints = server.metric("shapeshard_checkpoints_total");
    wait_for("a few idle checkpoints", Duration::from_secs(30), || {
        (server.metric("shapeshard_checkpoints_total") >= checkpoints + 10).then_some(())
    });
    assert_eq!(
        server.metric("shapeshard_shapes_built"),
        1,
        "a shape with a waiting long-poll is not unloaded"
    );
    pg.batch_execute("UPDATE items SET v = 1 WHERE id = 1")
        .unwrap();
    let body = poll.join().unwrap().expect("long-poll reply");
    assert!(
        body.contains("\"update\""),
        "the long-poll got the change, not a timeout: {body}"
    );

    // Changes to unloaded shapes rebuild them; every client converges.
    let check = |clients: &mut Vec<ShapeClient>, server: &Server, pg: &mut postgres::Client| {
        for (k, client) in clients.iter_mut().enumerate() {
            let want = sorted_texts(
                pg,
                &format!(
                    "SELECT concat_ws('|', id, v) FROM items WHERE id = {}",
                    k + 1
                ),
                &[],
            );
            client
                .converge(server, &["id", "v"], &want, Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("shape {}: {e}", k + 1));
        }
    };
    for round in 2..5 {
        pg.batch_execute(&format!(
            "UPDATE items SET v = {round} WHERE id % {round} = 0;
             DELETE FROM items WHERE id = {round} * 7;
             INSERT INTO items VALUES ({round} * 7, {round}) ON CONFLICT DO NOTHING"
        ))
        .unwrap();
        check(&mut clients, &server, &mut pg);
        // Idle again, then the next round finds them cold.
        wait_for(
            "idle shapes unloaded again",
            Duration::from_secs(30),
            || (server.metric("shapeshard_shapes_cold") == SHAPES as u64).then_some(()),
        );
    }
    assert!(server.metric("shapeshard_fdatasyncs_total") > 0);
    assert!(server.metric("shapeshard_durable_lsn") > 0);
    assert!(server.metric("shapeshard_fence_lsn") > 0);

    // Cold shapes come back from both kinds of stop; the clients go on
    // from their offsets (a 409 or a repeated change fails them).
    server.graceful_restart();
    pg.batch_execute("UPDATE items SET v = 10 WHERE id <= 10")
        .unwrap();
    check(&mut clients, &server, &mut pg);
    server.crash_and_restart();
    pg.batch_execute("UPDATE items SET v = 11 WHERE id > 10")
        .unwrap();
    check(&mut clients, &server, &mut pg);
}
