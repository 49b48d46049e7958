//! The server's own latency histograms: every kind of shape request, each
//! transaction applied, each group-commit tick and checkpoint lands in a
//! per-shard summary at `/metrics`, and `POST /metrics/reset` empties them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::harness::database;
use crate::server::Server;
use crate::shape_client::ShapeClient;

/// `name{labels}` → value for every sample of the summaries named.
fn samples(server: &Server, prefix: &str) -> HashMap<String, f64> {
    server
        .get("/metrics")
        .body
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// A summary's count summed over shards, for the series whose labels hold
/// `labels` (e.g. `kind="live"`; "" for every series).
fn count(server: &Server, name: &str, labels: &str) -> f64 {
    samples(server, &format!("{name}_count"))
        .iter()
        .filter(|(series, _)| series.contains(labels))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn requests_applies_ticks_and_checkpoints_are_timed_per_shard() {
    let db = database("latency_metrics");
    let mut pg = db.client();
    pg.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, title text);
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 50) g;",
    )
    .unwrap();
    let server = Server::start(&db, &[]);
    let requests = "shapeshard_request_duration_seconds";
    let mut client = ShapeClient::new("table=items");
    client.sync(&server).unwrap();
    let handle = client.handle.clone().unwrap();
    let catch_up = server.get(&format!(
        "/v1/shape?table=items&offset={}&handle={handle}",
        client.offset
    ));
    assert_eq!(catch_up.status, 200, "{}", catch_up.body);
    let live_url = format!(
        "/v1/shape?table=items&offset={}&handle={handle}&live=true",
        client.offset
    );
    let waiter = {
        let base = server.base_url();
        std::thread::spawn(move || ureq::get(&format!("{base}{live_url}")).call().map(|r| r.status()))
    };
    std::thread::sleep(Duration::from_millis(200));
    pg.batch_execute("INSERT INTO items VALUES (51, 'late')")
        .unwrap();
    assert_eq!(waiter.join().unwrap().unwrap(), 200);

    assert!(count(&server, requests, r#"kind="initial""#) >= 1.0);
    assert!(count(&server, requests, r#"kind="catch_up""#) >= 1.0);
    assert!(count(&server, requests, r#"kind="live""#) >= 1.0);
    // The live request waited for the insert: its time says so.
    let live_sum: f64 = samples(&server, &format!("{requests}_sum"))
        .iter()
        .filter(|(s, _)| s.contains(r#"kind="live""#))
        .map(|(_, v)| v)
        .sum();
    assert!(live_sum >= 0.1, "live requests took {live_sum} s in all");
    // Checkpoints run every second; the insert was applied and committed.
    let deadline = Instant::now() + Duration::from_secs(10);
    for name in [
        "shapeshard_apply_duration_seconds",
        "shapeshard_commit_duration_seconds",
        "shapeshard_checkpoint_duration_seconds",
    ] {
        while count(&server, name, "") < 1.0 {
            assert!(Instant::now() < deadline, "nothing recorded in {name}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // Quantiles are ordered within each series.
    let all = samples(&server, requests);
    for shard in ["0", "1"] {
        let q = |quantile: &str| {
            all.get(&format!(
                r#"{requests}{{shard="{shard}",kind="initial",quantile="{quantile}"}}"#
            ))
            .copied()
        };
        if let (Some(p50), Some(p99), Some(p999)) = (q("0.5"), q("0.99"), q("0.999")) {
            assert!(p50 <= p99 && p99 <= p999, "shard {shard}: {p50} {p99} {p999}");
        }
    }

    let reset = server.request("POST", "/metrics/reset");
    assert_eq!(reset.status, 200);
    assert_eq!(count(&server, requests, ""), 0.0);
    assert_eq!(count(&server, "shapeshard_apply_duration_seconds", ""), 0.0);
    server.get(&format!("/v1/shape?table=items&offset=-1&handle={handle}"));
    assert_eq!(count(&server, requests, r#"kind="initial""#), 1.0);
}
