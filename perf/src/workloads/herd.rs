//! Shape creation latency: a lone `offset=-1` request for a new shape
//! against a herd of concurrent requests for one new shape (all but one
//! join the creation in flight). Runs the release server against a
//! throwaway Postgres; reports HDR percentiles.
//!
//! `cargo run --release -p shapeshard-perf --bin herd-bench [HERD] [ROUNDS]`

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::report::Machine;
use crate::server::{Server, ServerConfig};
use hdrhistogram::Histogram;
use shapeshard::devpg::{free_port, DevPgOptions, DevPostgres};

const ROWS: usize = 1_000;

/// `herd` concurrent requests per round (the binary's default was 1,000),
/// `rounds` rounds (5).
pub fn run(herd: usize, rounds: usize) -> String {
    let (bin, _version) = crate::server::server_binary(None, None);
    let dir = std::env::temp_dir().join(format!("shapeshard-herd-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut options = DevPgOptions::default();
    options.settings.push(("fsync".into(), "off".into()));
    options
        .settings
        .push(("max_connections".into(), "200".into()));
    let pg = DevPostgres::start(&dir.join("pg"), &options).expect("start Postgres");
    let url = pg.url("postgres");
    let psql = |sql: &str| crate::psql::psql(&url, sql);
    let tables = 2 * rounds;
    for t in 0..tables {
        psql(&format!(
            "CREATE TABLE h{t} (id int PRIMARY KEY, v text); INSERT INTO h{t} SELECT g, repeat('x', 64) FROM generate_series(1, {ROWS}) g"
        ));
    }

    let port = free_port().expect("a free port");
    let config = ServerConfig::new(&bin, &url, port, &dir.join("server"))
        .log_level("error")
        .args([
            "--max-concurrent-requests",
            r#"{"initial": 100000, "existing": 100000}"#,
        ]);
    let shards = std::thread::available_parallelism().map_or(1, |n| n.get());
    let server = Server::start(&config, &dir.join("server.log"));
    let base = server.base.clone();

    let mut lone = Histogram::<u64>::new(3).unwrap();
    let mut crowd = Histogram::<u64>::new(3).unwrap();
    for round in 0..rounds {
        let started = Instant::now();
        let reply = ureq::get(&format!("{base}/v1/shape?table=h{}&offset=-1", 2 * round))
            .call()
            .expect("lone request");
        assert_eq!(reply.status(), 200);
        lone.record(started.elapsed().as_micros() as u64).unwrap();

        let barrier = Arc::new(Barrier::new(herd));
        let target = format!("{base}/v1/shape?table=h{}&offset=-1", 2 * round + 1);
        let threads: Vec<_> = (0..herd)
            .map(|_| {
                let (barrier, target) = (barrier.clone(), target.clone());
                std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn(move || {
                        let agent = ureq::AgentBuilder::new()
                            .timeout(Duration::from_secs(60))
                            .build();
                        barrier.wait();
                        let started = Instant::now();
                        let reply = agent.get(&target).call().expect("herd request");
                        assert_eq!(reply.status(), 200);
                        started.elapsed().as_micros() as u64
                    })
                    .unwrap()
            })
            .collect();
        for thread in threads {
            crowd.record(thread.join().unwrap()).unwrap();
        }
    }
    let metrics = ureq::get(&format!("{base}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let creations = metrics
        .lines()
        .find_map(|l| l.strip_prefix("shapeshard_shape_creations_started_total "))
        .unwrap_or("?")
        .to_string();
    let row = |name: &str, h: &Histogram<u64>| {
        format!(
            "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            h.len(),
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.max() as f64 / 1000.0,
            h.mean() / 1000.0
        )
    };
    let report = format!(
        "# Shape creation: lone request vs herd\n\n{}\n\nshards: {shards}; {ROWS} rows of ~70 bytes per table; herd = {herd} concurrent `offset=-1` requests for one new shape, {rounds} rounds (a new table each round, so every request is a creation or joins one).\n\n| workload | requests | p50 ms | p99 ms | max ms | mean ms |\n|---|---|---|---|---|---|\n{}\n{}\n\nshape creations counted by the server: {creations} (expected {}: one per round and workload).\n\nThe client threads run on the same two cores as the server, so herd latency includes scheduling {herd} client threads.\n",
        Machine::describe(),
        row("lone creation", &lone),
        row("herd (joins the creation)", &crowd),
        2 * rounds,
    );
    crate::report::histogram("herd-lone", &lone);
    crate::report::histogram("herd-crowd", &crowd);
    crate::report::percentile_plot(
        "herd",
        "shape creation: herd vs lone request",
        &[
            ("herd (joins one creation)", &crowd),
            ("lone creation (limit)", &lone),
        ],
    );
    crate::report::headline(crate::report::Headline::latency(
        "herd",
        &format!("{herd} concurrent first requests, p99"),
        crowd.value_at_quantile(0.99),
        Some(("a lone creation p99", lone.value_at_quantile(0.99))),
        "≤ 1.2× a lone creation",
    ));
    let mut server = server;
    server.stop();
    drop(pg);
    let _ = std::fs::remove_dir_all(&dir);
    report
}
