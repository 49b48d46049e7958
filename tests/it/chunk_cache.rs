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

/// A shape's first response (`offset=-1`, no handle) is kept by the shard
/// holding the connection, so repeats spread over every core; once the
/// shape is deleted no shard answers from its copy: the next first request
/// gets the new shape, and a read naming the old handle gets a 409.
#[test]
fn first_responses_are_kept_by_every_shard_until_the_shape_goes() {
    let db = database("chunk_cache_first");
    let mut pg = db.client();
    pg.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, title text);
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 50) g;",
    )
    .unwrap();
    // Several snapshot chunks: the second is a sealed chunk read by handle.
    let server = Server::start(&db, &[("ELECTRIC_SHAPE_CHUNK_BYTES_THRESHOLD", "1000")]);
    let first = server.get("/v1/shape?table=items&offset=-1");
    assert_eq!(first.status, 200, "{}", first.body);
    let handle = first.header("electric-handle").unwrap().to_string();
    let reused = server.metric("shapeshard_replies_reused_total");
    // New connection each time: the kernel spreads them over the shards.
    for _ in 0..40 {
        let again = server.get("/v1/shape?table=items&offset=-1");
        assert_eq!(again.status, 200);
        assert_eq!(again.header("electric-handle"), Some(handle.as_str()));
        assert_eq!(again.header("etag"), first.header("etag"));
        assert_eq!(again.body, first.body, "the same first chunk");
    }
    assert!(
        server.metric("shapeshard_replies_reused_total") > reused,
        "a shard other than the owner answered from its copy"
    );
    // Kept copies with the handle given, too (sealed-chunk replies).
    let next = format!(
        "/v1/shape?table=items&offset={}&handle={handle}",
        first.header("electric-offset").unwrap()
    );
    let second = server.get(&next);
    assert_eq!(second.status, 200, "{}", second.body);
    for _ in 0..10 {
        assert_eq!(server.get(&next).body, second.body);
    }

    let deleted = server.request("DELETE", &format!("/v1/shape?table=items&handle={handle}"));
    assert_eq!(deleted.status, 202);
    for _ in 0..20 {
        let old = server.get(&next);
        assert_eq!(old.status, 409, "the old handle is gone on every shard");
    }
    let mut new_handle = None;
    for _ in 0..20 {
        let fresh = server.get("/v1/shape?table=items&offset=-1");
        assert_eq!(fresh.status, 200);
        let h = fresh.header("electric-handle").unwrap().to_string();
        assert_ne!(h, handle, "no shard answers with the deleted shape");
        assert_eq!(
            *new_handle.get_or_insert_with(|| h.clone()),
            h,
            "one new shape"
        );
    }
}
