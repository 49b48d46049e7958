//! Sealed chunks are served from caches of immutable bodies (the owner's,
//! and each shard's copy of the owner's replies): re-reading every chunk of
//! a shape through every shard while the log grows and the owner
//! checkpoints, unloads and rebuilds the shape gives byte-identical bodies,
//! and the repeats are cache hits. With the caches off, the same bytes.

use std::time::Duration;

use crate::harness::database;
use crate::replay::{compare, fetch, Compared};
use crate::server::Server;
use crate::shape_client::ShapeClient;

fn rounds(cache_bytes: &str) -> (u64, u64) {
    let db = database("chunk_cache");
    let mut pg = db.client();
    pg.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, title text);
         INSERT INTO items SELECT g, repeat('x', 40) || g FROM generate_series(1, 400) g;",
    )
    .unwrap();
    let server = Server::start(
        &db,
        &[
            ("ELECTRIC_SHAPE_CHUNK_BYTES_THRESHOLD", "4000"),
            ("SHAPESHARD_CHECKPOINT_INTERVAL_MS", "20"),
            ("SHAPESHARD_UNLOAD_IDLE_MS", "1"),
            ("SHAPESHARD_CHUNK_CACHE_BYTES", cache_bytes),
        ],
    );
    let mut client = ShapeClient::new("table=items");
    client.record = true;
    client.sync(&server).unwrap();
    for round in 0..4 {
        // The log grows (new chunks seal) while old ones are re-read.
        pg.batch_execute(&format!(
            "UPDATE items SET title = title || '{round}' WHERE id % 5 = {round}"
        ))
        .unwrap();
        client.record = true;
        client.sync(&server).unwrap();
        // Idle until unloaded, then rebuilt by the reads.
        let unloaded = server.metric("shapeshard_shapes_unloaded_total");
        crate::harness::wait_for("the shape to unload", Duration::from_secs(20), || {
            (server.metric("shapeshard_shapes_unloaded_total") > unloaded).then_some(())
        });
        for old in &client.recorded {
            let new = fetch(&server, &old.definition, &old.handle, &old.offset).unwrap();
            match compare(old, &new) {
                Compared::Same | Compared::Behind => {}
                Compared::Differs(why) => panic!("round {round}: {why}"),
            }
            if !old.tail {
                assert_eq!(new.body, old.body, "round {round}: a sealed chunk's bytes");
            }
        }
    }
    assert!(
        server.metric("shapeshard_shapes_rebuilt_total") > 0,
        "the shape was unloaded and rebuilt between rounds (cache {cache_bytes})"
    );
    (
        // Repeats answered from a cache: the owner's, or the connection's
        // shard's copy of the owner's reply.
        server.metric("shapeshard_chunk_cache_hits_total")
            + server.metric("shapeshard_replies_reused_total"),
        server.metric("shapeshard_chunk_cache_misses_total"),
    )
}

#[test]
fn sealed_chunks_are_identical_from_the_cache_across_unloads() {
    let (hits, misses) = rounds("67108864");
    assert!(misses > 0, "chunks were built for the cache");
    assert!(
        hits > misses,
        "repeats come from the cache: {hits} hits, {misses} misses"
    );
    // Off: every sealed chunk is built each time, the same bytes.
    let (reused, _) = rounds("0");
    assert_eq!(reused, 0);
}
