//! Scale-out on existing engines: two instances, each with its own storage
//! and replication slot, behind nginx routing by shape definition
//! (`deploy/nginx-scale-out.conf`). Shapes spread over both; when one
//! instance dies its clients get a 409 from the survivor and re-sync there,
//! and every client ends equal to Postgres.

use std::time::Duration;

use crate::harness::{database, sorted_texts};
use crate::nginx::Nginx;
use crate::server::Server;
use crate::shape_client::{Endpoint, ShapeClient};

const SHAPES: usize = 100;
const COLUMNS: &[&str] = &["id", "grp", "title"];

fn shapes_on(server: &Server) -> u64 {
    server.metric("shapeshard_shapes_built") + server.metric("shapeshard_shapes_cold")
}

/// Follows `client` to `want` through nginx; a lost instance's connection
/// errors are retried. Returns the re-syncs.
fn follow(client: &mut ShapeClient, nginx: &dyn Endpoint, want: &[String]) -> usize {
    client.follow_resyncing(nginx, COLUMNS, want, |e| {
        e.contains("502") || e.contains("Connection")
    })
}

#[test]
fn shapes_spread_over_two_instances_and_survive_losing_one() {
    let db = database("scale_out");
    let mut pg = db.client();
    pg.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, grp int NOT NULL, title text);
         INSERT INTO items SELECT g, g % 100, 'item ' || g FROM generate_series(1, 1000) g;",
    )
    .unwrap();
    let env = [("ELECTRIC_LONG_POLL_TIMEOUT", "1000")];
    let first = Server::start(&db, &env);
    let second_stream = format!("{}_b", db.stream_id());
    let mut second = Server::start(
        &db,
        &[
            ("ELECTRIC_LONG_POLL_TIMEOUT", "1000"),
            ("ELECTRIC_REPLICATION_STREAM_ID", second_stream.as_str()),
        ],
    );
    let nginx = Nginx::start(
        "nginx-scale-out.conf",
        &[
            (
                "shapeshard-1.internal:3000",
                format!("127.0.0.1:{}", first.port),
            ),
            (
                "shapeshard-2.internal:3000",
                format!("127.0.0.1:{}", second.port),
            ),
        ],
    );
    let want = |pg: &mut postgres::Client, g: usize| {
        sorted_texts(
            pg,
            "SELECT concat_ws('|', id, grp, title) FROM items WHERE grp = $1",
            &[&(g as i32)],
        )
    };
    // The npm client's form of params: params[1]=<value>.
    let mut clients: Vec<ShapeClient> = (0..SHAPES)
        .map(|g| {
            ShapeClient::new(&format!(
                "table=items&where=grp%20%3D%20%241&params%5B1%5D={g}"
            ))
        })
        .collect();
    for (g, client) in clients.iter_mut().enumerate() {
        let resyncs = follow(client, &nginx, &want(&mut pg, g));
        assert_eq!(resyncs, 0, "{}", client.definition);
    }
    // Routed by definition: each shape on one instance, both in use (the
    // gauges follow within a tick).
    let (on_first, on_second) =
        crate::harness::wait_for("every shape counted", Duration::from_secs(10), || {
            let counts = (shapes_on(&first), shapes_on(&second));
            (counts.0 + counts.1 == SHAPES as u64).then_some(counts)
        });
    assert!(
        on_first >= 10 && on_second >= 10,
        "shapes spread: {on_first} and {on_second}"
    );

    // Changes reach every client through its instance.
    pg.batch_execute(
        "UPDATE items SET title = title || ' v2' WHERE id % 7 = 0;
         INSERT INTO items SELECT g, g % 100, 'new ' || g FROM generate_series(1001, 1200) g;",
    )
    .unwrap();
    for (g, client) in clients.iter_mut().enumerate() {
        assert_eq!(follow(client, &nginx, &want(&mut pg, g)), 0);
    }

    // One instance dies; writes go on.
    second.kill();
    pg.batch_execute(
        "UPDATE items SET title = title || ' v3' WHERE id % 5 = 0;
         DELETE FROM items WHERE id % 11 = 0;",
    )
    .unwrap();
    let mut resynced = 0;
    for (g, client) in clients.iter_mut().enumerate() {
        resynced += usize::from(follow(client, &nginx, &want(&mut pg, g)) > 0);
    }
    assert_eq!(
        resynced as u64, on_second,
        "exactly the dead instance's clients re-synced"
    );
    // The gauges follow within a tick.
    crate::harness::wait_for(
        "the survivor to hold every shape",
        Duration::from_secs(10),
        || (shapes_on(&first) == SHAPES as u64).then_some(()),
    );
}
