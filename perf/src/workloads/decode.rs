//! pgoutput decode throughput, single core, on a recorded stream, beside
//! `pg_recvlogical` draining the same WAL from a twin slot.
//!
//! Usage: decode-bench [ROWS]   (default 500000)

use std::time::{Duration, Instant};

use crate::report::{Machine, Spread};
use bytes::Bytes;
use shapeshard::devpg::{DevPgOptions, DevPostgres};
use shapeshard::pg::conn::Connection;
use shapeshard::pg::connstr::ConnConfig;
use shapeshard::pg::pgoutput::{DecodedEvent, Decoder};
use shapeshard::pg::replication::{self, ReplicationMessage};

const ROWS_PER_TRANSACTION: usize = 100;
const DECODE_RUNS: usize = 5;

/// Rows written and decoded (the binary's default was 500,000).
pub fn run(rows: usize) -> String {
    let dir = std::env::temp_dir().join(format!("shapeshard-decode-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut options = DevPgOptions::default();
    options.settings.push(("fsync".into(), "off".into()));
    let pg = DevPostgres::start(&dir, &options).expect("start Postgres");
    let url = pg.url("postgres");
    let psql = |sql: &str| crate::psql::psql(&url, sql);
    psql("CREATE TABLE bench (id int8 PRIMARY KEY, name text, amount numeric, at timestamptz, flag bool, doc jsonb)");
    psql("CREATE PUBLICATION bench_pub FOR TABLE bench");
    psql("SELECT pg_create_logical_replication_slot('bench_ours', 'pgoutput')");
    psql("SELECT pg_create_logical_replication_slot('bench_recvlogical', 'pgoutput')");
    eprintln!("writing {rows} rows in transactions of {ROWS_PER_TRANSACTION}...");
    let batches = rows.div_ceil(ROWS_PER_TRANSACTION);
    // One psql call, many transactions: a DO block commits per batch.
    psql(&format!(
        "DO $$ BEGIN FOR b IN 0..{} LOOP
           INSERT INTO bench SELECT i, 'name-' || i, i * 1.25, now(), i % 2 = 0, jsonb_build_object('i', i)
             FROM generate_series(b * {ROWS_PER_TRANSACTION} + 1, LEAST((b + 1) * {ROWS_PER_TRANSACTION}, {rows})) i;
           COMMIT;
         END LOOP; END $$",
        batches - 1
    ));
    let end_lsn = psql("SELECT pg_current_wal_insert_lsn()");

    // Ours: drain the slot over our replication client, decoding live, and
    // keep the payloads for the decode-only runs.
    let conn: ConnConfig = url.parse().unwrap();
    let (payloads, drain_time) =
        shards::runtime::spawn_thread(
            "bench-drain",
            move || async move { record(&conn, rows).await },
        )
        .unwrap()
        .join()
        .unwrap()
        .unwrap();

    let mut decode_times = Vec::new();
    for _ in 0..DECODE_RUNS {
        let started = Instant::now();
        let decoded = decode_all(&payloads);
        decode_times.push(started.elapsed());
        assert_eq!(decoded, rows, "every row decoded");
    }

    let started = Instant::now();
    let status = std::process::Command::new("pg_recvlogical")
        .args([
            "-d",
            &url,
            "--slot",
            "bench_recvlogical",
            "--start",
            "--no-loop",
            "-f",
            "/dev/null",
        ])
        .args(["-o", "proto_version=1", "-o", "publication_names=bench_pub"])
        .args(["--endpos", &end_lsn])
        .status()
        .expect("pg_recvlogical on PATH");
    let recvlogical_time = started.elapsed();
    assert!(status.success(), "pg_recvlogical failed");
    drop(pg);
    let _ = std::fs::remove_dir_all(&dir);

    let rate = |d: Duration| rows as f64 / d.as_secs_f64();
    let decode = Spread::of(decode_times.iter().map(|&d| rate(d)).collect());
    crate::report::headline(crate::report::Headline::rate(
        "decode",
        "pgoutput decode, one core (rows/s)",
        decode.median,
        "rows/s",
        Some(("pg_recvlogical drain", rate(recvlogical_time))),
        "decode is never the bottleneck",
    ));
    let report = format!(
        "# pgoutput decode throughput\n\n{}\n\nrows: {rows} ({ROWS_PER_TRANSACTION} per transaction), {} bytes of pgoutput\n\n\
         | measure | rows/s |\n|---|---|\n\
         | decoder alone, recorded stream, 1 core (median of {DECODE_RUNS}; min–max) | {:.0} ({:.0}–{:.0}) |\n\
         | our replication client draining + decoding the slot | {:.0} |\n\
         | pg_recvlogical draining the twin slot to /dev/null (the limit) | {:.0} |\n\n\
         decoder / pg_recvlogical = {:.1}×; drain / pg_recvlogical = {:.2}×\n",
        Machine::describe(),
        payloads.iter().map(|p| p.len()).sum::<usize>(),
        decode.median,
        decode.min,
        decode.max,
        rate(drain_time),
        rate(recvlogical_time),
        decode.median / rate(recvlogical_time),
        rate(drain_time) / rate(recvlogical_time),
    );
    report
}

/// Drains `bench_ours` until `rows` inserts have been decoded.
async fn record(conn: &ConnConfig, rows: usize) -> (Vec<Bytes>, Duration) {
    let mut c = Connection::connect_replication(conn)
        .await
        .expect("replication connection");
    c.start_copy_both("START_REPLICATION SLOT bench_ours LOGICAL 0/0 (proto_version '1', publication_names 'bench_pub')")
        .await
        .expect("START_REPLICATION");
    let started = Instant::now();
    let mut payloads = Vec::new();
    let mut decoder = Decoder::default();
    let mut seen = 0;
    while seen < rows {
        let data = c
            .read_copy_data()
            .await
            .expect("stream")
            .expect("stream open");
        if let ReplicationMessage::XLogData { data, .. } =
            replication::parse(data).expect("replication message")
        {
            payloads.push(data.clone());
            if let Some(DecodedEvent::Transaction(t)) = decoder.decode(data).expect("decode") {
                seen += t.changes.len();
            }
        }
    }
    (payloads, started.elapsed())
}

fn decode_all(payloads: &[Bytes]) -> usize {
    let mut decoder = Decoder::default();
    let mut rows = 0;
    for payload in payloads {
        if let Some(DecodedEvent::Transaction(t)) = decoder.decode(payload.clone()).expect("decode")
        {
            rows += t.changes.len();
        }
    }
    rows
}
