//! Fan-out encodes once: long-polls waiting at one offset of one shape get
//! the same bytes when the log grows, read and encoded for the first of
//! them only; and each shard sends the owner one read for all of its
//! waiting requests (the others join it).

use std::sync::{Arc, Barrier};
use std::time::Duration;

use crate::harness::database;
use crate::server::Server;
use crate::shape_client::ShapeClient;

const WAITING: usize = 50;

#[test]
fn long_polls_at_one_offset_share_one_encoded_body() {
    let db = database("live_fanout");
    let mut pg = db.client();
    pg.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, title text);
         INSERT INTO items VALUES (1, 'one');",
    )
    .unwrap();
    let server = Arc::new(Server::start(&db, &[]));
    let mut client = ShapeClient::new("table=items");
    client.sync(&*server).unwrap();
    let url = format!(
        "/v1/shape?table=items&offset={}&handle={}&live=true",
        client.offset,
        client.handle.clone().unwrap()
    );
    let built_before = server.metric("shapeshard_live_bodies_built_total");
    let shared_before = server.metric("shapeshard_live_bodies_shared_total");
    let joined_before = server.metric("shapeshard_live_reads_joined_total");
    let ready = Arc::new(Barrier::new(WAITING + 1));
    let polls: Vec<_> = (0..WAITING)
        .map(|_| {
            let (server, url, ready) = (server.clone(), url.clone(), ready.clone());
            std::thread::spawn(move || {
                ready.wait();
                server.get(&url)
            })
        })
        .collect();
    ready.wait();
    // Let the requests park before the change.
    std::thread::sleep(Duration::from_millis(300));
    pg.batch_execute("INSERT INTO items VALUES (2, 'two')")
        .unwrap();
    let replies: Vec<_> = polls.into_iter().map(|p| p.join().unwrap()).collect();
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body, replies[0].body, "one body for all");
    }
    assert!(replies[0].body.contains("\"two\""), "{}", replies[0].body);
    let built = server.metric("shapeshard_live_bodies_built_total") - built_before;
    let shared = server.metric("shapeshard_live_bodies_shared_total") - shared_before;
    let joined = server.metric("shapeshard_live_reads_joined_total") - joined_before;
    // Every request was answered by an owner read of its own or joined one.
    assert_eq!(built + shared + joined, WAITING as u64);
    assert!(
        built <= 2,
        "encoded {built} times for {WAITING} waiting requests"
    );
    assert!(
        built + shared <= 2,
        "one owner read per shard, the rest joined: {joined} joined of {WAITING}"
    );
}
