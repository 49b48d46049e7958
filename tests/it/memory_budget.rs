//! A shard's memory while durability stalls: with group commits slowed
//! (fault injection) under a burst of writes, what waits in memory for the
//! disk (journal + log tails) stays near the configured budget instead of
//! growing with the burst, the backlog waits in Postgres, and once writes
//! catch up every change arrives.

use std::time::{Duration, Instant};

use crate::harness::{database, sorted_texts};
use crate::server::Server;
use crate::shape_client::ShapeClient;

const BUDGET: u64 = 2 << 20;

fn peak(server: &Server) -> u64 {
    let text = server.get("/metrics").body;
    text.lines()
        .filter(|l| l.starts_with("shapeshard_shard_memory_peak_bytes{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .max()
        .unwrap_or_else(|| panic!("no memory peak in {text}"))
}

#[test]
fn a_stalled_disk_holds_memory_to_the_budget_and_loses_nothing() {
    let db = database("memory_budget");
    let mut pg = db.client();
    pg.batch_execute("CREATE TABLE big (id int PRIMARY KEY, payload text)")
        .unwrap();
    let server = Server::start(
        &db,
        &[
            ("SHAPESHARD_SHARD_MEMORY_BYTES", &BUDGET.to_string()),
            ("SHAPESHARD_FAULT_FLUSH_DELAY_MS", "50"),
            ("SHAPESHARD_CHECKPOINT_INTERVAL_MS", "5000"),
            ("ELECTRIC_SHAPE_CHUNK_BYTES_THRESHOLD", "1048576"),
        ],
    );
    let mut client = ShapeClient::new("table=big");
    client.sync(&server).unwrap();

    // ~24 MB of changes, twelve times the budget, much faster than the
    // slowed disk and the checkpoints take them.
    for batch in 0..24 {
        pg.batch_execute(&format!(
            "INSERT INTO big SELECT g, repeat('x', 1000) FROM generate_series({}, {}) g",
            batch * 1000,
            batch * 1000 + 999
        ))
        .unwrap();
    }
    let want = sorted_texts(
        &mut pg,
        "SELECT concat_ws('|', id, length(payload)) FROM big",
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        client.poll(&server).unwrap();
        let got: Vec<String> = {
            let mut rows: Vec<String> = client
                .rows
                .values()
                .map(|r| {
                    format!(
                        "{}|{}",
                        r["id"].as_str().unwrap(),
                        r["payload"].as_str().unwrap().len()
                    )
                })
                .collect();
            rows.sort();
            rows
        };
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} rows after two minutes",
            got.len(),
            want.len()
        );
    }
    // One transaction is applied whole, so the peak may pass the budget by
    // about one, counted twice (its journal records and its log tail):
    // 1,000 rows of ~1 KB here. Without the budget it is the whole burst.
    let peak = peak(&server);
    assert!(
        peak <= BUDGET + (3 << 20),
        "memory waiting for the disk peaked at {peak} bytes, budget {BUDGET}"
    );
    assert!(
        server.metric("shapeshard_shard_memory_waits_total") > 0,
        "the burst never reached the budget: the test proves nothing"
    );
    server.stop();
}
