//! Shapes are identified by our own where-clause parser. Storage written
//! before that keeps `where` shapes under another canonical form (and
//! possibly another owner shard): the first start on it drops those once,
//! so their clients re-sync (409) rather than a request being matched to
//! a shape by a form it no longer computes; other shapes carry on.

use crate::harness::database;
use crate::server::Server;
use crate::shape_client::ShapeClient;

#[test]
fn where_shapes_resync_once_when_identities_are_upgraded() {
    let db = database("identity_upgrade");
    let mut pg = db.client();
    pg.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, title text);
         INSERT INTO items SELECT g, 'item-' || g FROM generate_series(1, 6) g;",
    )
    .unwrap();
    let mut server = Server::start(&db, &[]);

    // Spelling does not make a shape: the same handle for every form.
    let mut filtered = ShapeClient::new("table=items&where=id%20%3E%203");
    filtered.sync(&server).unwrap();
    let handle = filtered.handle.clone().unwrap();
    for spelling in ["ID%3E3", "(id)%20%3E%20(3)", "%22id%22%3E3"] {
        let reply = server.get(&format!("/v1/shape?table=items&where={spelling}&offset=-1"));
        assert_eq!(reply.status, 200, "{spelling}: {}", reply.body);
        assert_eq!(
            reply.header("electric-handle"),
            Some(handle.as_str()),
            "{spelling}"
        );
    }
    let mut plain = ShapeClient::new("table=items");
    plain.sync(&server).unwrap();
    let plain_handle = plain.handle.clone().unwrap();

    // A restart on upgraded storage keeps both.
    server.stop_process();
    server.restart();
    filtered.sync(&server).unwrap();
    plain.sync(&server).unwrap();
    assert_eq!(filtered.handle.as_deref(), Some(handle.as_str()));

    // Storage from before the upgrade (no identity marker).
    server.stop_process();
    std::fs::remove_file(server.dir.join("shards").join("identity")).unwrap();
    server.restart();
    let stale = server.get(&format!(
        "/v1/shape?table=items&where=id%20%3E%203&offset={}&handle={handle}",
        filtered.offset
    ));
    assert_eq!(stale.status, 409, "{}", stale.body);
    let mut again = ShapeClient::new("table=items&where=id%20%3E%203");
    again.sync(&server).unwrap();
    assert_ne!(again.handle.as_deref(), Some(handle.as_str()));
    assert_eq!(again.rows.len(), 3);
    // The old shape is gone, not left behind under its old identity.
    crate::harness::wait_for("the metrics", std::time::Duration::from_secs(10), || {
        let shapes =
            server.metric("shapeshard_shapes_built") + server.metric("shapeshard_shapes_cold");
        (shapes == 2).then_some(())
    });
    // The shape without a where clause kept its identity and its log.
    plain.sync(&server).unwrap();
    assert_eq!(plain.handle.as_deref(), Some(plain_handle.as_str()));
    assert_eq!(plain.rows.len(), 6);

    // Upgraded once: the next restart drops nothing.
    let handle = again.handle.clone().unwrap();
    server.stop_process();
    server.restart();
    again.sync(&server).unwrap();
    assert_eq!(again.handle.as_deref(), Some(handle.as_str()));
    assert!(server.dir.join("shards").join("identity").exists());
}
