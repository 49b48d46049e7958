//! Electric's connection options: a separate (pooled) URL for snapshot and
//! catalog queries, while replication stays on DATABASE_URL.

use std::time::Duration;

use crate::harness::database;
use crate::server::Server;
use crate::shape_client::ShapeClient;

#[test]
fn queries_use_the_pooled_url_and_replication_the_main_one() {
    let db = database("conn_options");
    let mut pg = db.client();
    pg.batch_execute("CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items VALUES (1);")
        .unwrap();
    // Electric's legacy name for the pooled URL.
    let pooled = format!("{}&application_name=shapeshard_pool", db.url);
    let server = Server::start(&db, &[("ELECTRIC_QUERY_DATABASE_URL", &pooled)]);
    let mut client = ShapeClient::new("table=items");
    client.sync(&server).unwrap();
    pg.batch_execute("INSERT INTO items VALUES (2)").unwrap();
    client
        .converge(
            &server,
            &["id"],
            &["1".into(), "2".into()],
            Duration::from_secs(20),
        )
        .unwrap();
    let mut by_name = |name: &str, replication: bool| -> i64 {
        pg.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
               AND application_name = $1 AND (backend_type = 'walsender') = $2",
            &[&name, &replication],
        )
        .unwrap()
        .get(0)
    };
    assert!(
        by_name("shapeshard_pool", false) >= 1,
        "the snapshot ran on the pooled URL"
    );
    assert_eq!(
        by_name("shapeshard_pool", true),
        0,
        "replication never uses it"
    );
    assert_eq!(
        by_name("shapeshard", true),
        1,
        "replication on DATABASE_URL"
    );
    assert_eq!(
        by_name("shapeshard", false),
        0,
        "no query connection on DATABASE_URL"
    );
    server.stop();
}
