//! LRU eviction: with `ELECTRIC_MAX_SHAPES=100`, creating 150 shapes keeps
//! the 100 most recently read; the evicted ones answer 409.

use crate::harness::database;
use crate::server::Server;

#[test]
fn over_the_limit_the_least_recently_read_shapes_go() {
    let db = database("evict");
    db.client()
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items SELECT generate_series(1, 200)")
        .unwrap();
    let server = Server::start(&db, &[("ELECTRIC_MAX_SHAPES", "100")]);
    let mut handles = Vec::new();
    for k in 0..150 {
        let reply = server.get(&format!(
            "/v1/shape?table=items&offset=-1&where=id%20%3D%20{k}"
        ));
        assert_eq!(reply.status, 200, "{}", reply.body);
        handles.push(reply.header("electric-handle").unwrap().to_string());
    }
    // The 100 most recently read are all there (checked first: a 409 below
    // re-creates its shape, which evicts again).
    for (k, handle) in handles.iter().enumerate().skip(50) {
        let reply = server.get(&format!(
            "/v1/shape?table=items&offset=0_0&handle={handle}&where=id%20%3D%20{k}"
        ));
        assert_eq!(
            reply.status, 200,
            "shape {k} should be kept: {}",
            reply.body
        );
    }
    for (k, handle) in handles.iter().enumerate().take(50) {
        let reply = server.get(&format!(
            "/v1/shape?table=items&offset=0_0&handle={handle}&where=id%20%3D%20{k}"
        ));
        assert_eq!(reply.status, 409, "shape {k} should be evicted");
    }
    let metrics = server.get("/metrics").body;
    assert!(
        metrics.contains("shapeshard_shapes_evicted_total"),
        "{metrics}"
    );
}

/// Read times are kept across a restart: after one, the shapes read least
/// recently before it are still the ones to go. A clean stop also leaves a
/// clean marker per shard, and a crash does not.
#[test]
fn read_order_and_clean_markers_survive_restarts() {
    let db = database("evict_restart");
    db.client()
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items SELECT generate_series(1, 200)")
        .unwrap();
    let mut server = Server::start(
        &db,
        &[
            ("ELECTRIC_MAX_SHAPES", "40"),
            ("ELECTRIC_LOG_LEVEL", "info"),
        ],
    );
    let path = |k: usize, rest: &str| format!("/v1/shape?table=items&where=id%20%3D%20{k}{rest}");
    let mut handles = Vec::new();
    for k in 0..40 {
        let reply = server.get(&path(k, "&offset=-1"));
        assert_eq!(reply.status, 200, "{}", reply.body);
        handles.push(reply.header("electric-handle").unwrap().to_string());
    }
    // Shapes 0..20 are read again: 20..40 are now the least recently read.
    for (k, handle) in handles.iter().enumerate().take(20) {
        let reply = server.get(&path(k, &format!("&offset=0_0&handle={handle}")));
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let shards = std::fs::read_dir(server.dir.join("shards"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_dir())
        .count();
    assert_eq!(server.log().matches("a clean shutdown").count(), 0);
    server.graceful_restart();
    assert_eq!(
        server.log().matches("a clean shutdown").count(),
        shards,
        "every shard found its clean marker: {}",
        server.log_tail()
    );
    for k in 40..60 {
        let reply = server.get(&path(k, "&offset=-1"));
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    for (k, handle) in handles.iter().enumerate().take(20) {
        let reply = server.get(&path(k, &format!("&offset=0_0&handle={handle}")));
        assert_eq!(reply.status, 200, "shape {k} was read after 20..40: kept");
    }
    for (k, handle) in handles.iter().enumerate().skip(20) {
        let reply = server.get(&path(k, &format!("&offset=0_0&handle={handle}")));
        assert_eq!(
            reply.status, 409,
            "shape {k} was read least recently: evicted"
        );
    }
    assert_eq!(server.log().matches("no clean marker").count(), 0);
    server.crash_and_restart();
    assert_eq!(
        server.log().matches("no clean marker").count(),
        shards,
        "a crash leaves no marker behind"
    );
}
