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
