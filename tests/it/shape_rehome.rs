//! Changing the shard count between runs: the server refuses to start on a
//! storage directory written with another count and names the command
//! that re-homes it; `shapeshard rehome --shards M` moves every shape to
//! its new owner, and clients holding `(handle, offset)` carry on without a
//! 409, a gap or a duplicate (the strict client fails on any of them).
//! Subquery shapes move too: one at rest (its kept views) and a nested one
//! (its client views, its truth read again), followed by tag-folding
//! streams through moves after each re-homing.

use std::time::Duration;

use crate::harness::{database, sorted_texts};
use crate::server::Server;
use crate::shape_client::ShapeClient;
use crate::tag_fold::{pg_rows, Stream};

const SHAPES: usize = 24;

/// Subquery shapes beside them: one level (kept views at a clean stop) and
/// nested (re-read), with the Postgres query each must fold to.
const SUBQUERIES: [(&str, &str); 2] = [
    (
        "table=items&where=id%20IN%20(SELECT%20item_id%20FROM%20picks%20WHERE%20user_id%20%3D%201)",
        "SELECT id::text, v::text FROM items WHERE id IN (SELECT item_id FROM picks WHERE user_id = 1)",
    ),
    (
        "table=items&where=id%20IN%20(SELECT%20item_id%20FROM%20picks%20WHERE%20user_id%20IN%20(SELECT%20id%20FROM%20fans%20WHERE%20team%20%3D%207))",
        "SELECT id::text, v::text FROM items WHERE id IN (SELECT item_id FROM picks WHERE user_id IN (SELECT id FROM fans WHERE team = 7))",
    ),
];

fn check(clients: &mut [ShapeClient], server: &Server, pg: &mut postgres::Client) {
    for (k, client) in clients.iter_mut().enumerate() {
        let clause = if k == 0 {
            "v > 0".to_string()
        } else {
            format!("id = {k}")
        };
        let want = sorted_texts(
            pg,
            &format!("SELECT concat_ws('|', id, v) FROM items WHERE {clause}"),
            &[],
        );
        client
            .converge(server, &["id", "v"], &want, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("shape {k} ({clause}): {e}"));
    }
}

#[test]
fn changing_the_shard_count_rehomes_every_shape() {
    let db = database("rehome");
    let mut pg = db.client();
    pg.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL);
         INSERT INTO items SELECT g, 1 FROM generate_series(1, 100) g;
         CREATE TABLE picks (user_id int, item_id int, PRIMARY KEY (user_id, item_id));
         CREATE TABLE fans (id int PRIMARY KEY, team int);
         INSERT INTO picks VALUES (1, 1), (1, 2), (2, 3), (3, 4);
         INSERT INTO fans VALUES (1, 7), (2, 7), (3, 8);",
    )
    .unwrap();
    let mut server = Server::start(&db, &[("ELECTRIC_LOG_LEVEL", "info")]);
    // Shape 0 is unindexed (every change reaches it), the others `id = k`.
    let mut clients: Vec<ShapeClient> = (0..SHAPES)
        .map(|k| {
            ShapeClient::new(&if k == 0 {
                "table=items&where=v%20%3E%200".to_string()
            } else {
                format!("table=items&where=id%20%3D%20{k}")
            })
        })
        .collect();
    for client in &mut clients {
        client.sync(&server).unwrap();
    }
    let handles: Vec<String> = clients.iter().map(|c| c.handle.clone().unwrap()).collect();
    let mut subqueries: Vec<(Stream, &str)> = SUBQUERIES
        .iter()
        .map(|(definition, sql)| (Stream::new(definition), *sql))
        .collect();
    let subquery_check = |subqueries: &mut Vec<(Stream, &str)>, server: &Server| {
        for (stream, sql) in subqueries.iter_mut() {
            let handle = stream.handle.clone();
            stream.converge(server, &["id", "v"], &pg_rows(&db, sql));
            if handle.is_some() {
                assert_eq!(stream.handle, handle, "{sql}: the same handle");
            }
        }
    };
    subquery_check(&mut subqueries, &server);
    pg.batch_execute("UPDATE items SET v = 2 WHERE id % 2 = 0")
        .unwrap();
    check(&mut clients, &server, &mut pg);

    // 2 → 3 shards: refused, with the command to run.
    server.stop_process();
    server.set_env("SHAPESHARD_SHARDS", "3");
    let status = server.start_expecting_exit();
    assert!(!status.success());
    assert!(
        server.log().contains("shapeshard rehome --shards 3"),
        "the refusal names the command: {}",
        server.log_tail()
    );
    let (status, out, err) = server.command(&["rehome", "--shards", "3"]);
    assert!(status.success(), "rehome failed: {out}{err}");
    assert!(
        out.contains(&format!(
            "re-homed {} shapes from 2 to 3 shards",
            SHAPES + SUBQUERIES.len()
        )),
        "{out}"
    );
    server.restart();
    pg.batch_execute("UPDATE items SET v = 3 WHERE id % 3 = 0; DELETE FROM items WHERE id = 5")
        .unwrap();
    check(&mut clients, &server, &mut pg);
    pg.batch_execute("DELETE FROM picks WHERE item_id = 1; INSERT INTO picks VALUES (1, 7), (2, 8); UPDATE fans SET team = 7 WHERE id = 3")
        .unwrap();
    subquery_check(&mut subqueries, &server);
    let after: Vec<String> = clients.iter().map(|c| c.handle.clone().unwrap()).collect();
    assert_eq!(after, handles, "every shape kept its handle");

    // A crash leaves no clean marker: re-homing refuses until a clean stop.
    server.kill();
    let (status, _, err) = server.command(&["rehome", "--shards", "1"]);
    assert!(!status.success());
    assert!(err.contains("did not stop cleanly"), "{err}");
    server.restart();
    server.stop_process();
    let (status, out, err) = server.command(&["rehome", "--shards", "1"]);
    assert!(status.success(), "rehome failed: {out}{err}");
    server.set_env("SHAPESHARD_SHARDS", "1");
    server.restart();
    pg.batch_execute("UPDATE items SET v = 4 WHERE id <= 12")
        .unwrap();
    check(&mut clients, &server, &mut pg);
    pg.batch_execute("INSERT INTO picks VALUES (1, 1); DELETE FROM fans WHERE id = 2")
        .unwrap();
    subquery_check(&mut subqueries, &server);

    // While a server runs on the directory, re-homing refuses.
    let (status, _, err) = server.command(&["rehome", "--shards", "2"]);
    assert!(!status.success());
    assert!(err.contains("is running"), "{err}");
    let after: Vec<String> = clients.iter().map(|c| c.handle.clone().unwrap()).collect();
    assert_eq!(after, handles, "every shape kept its handle");
}
