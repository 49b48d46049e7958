//! Workload 2: one client, one large shape (100k and 1M rows), following
//! chunks from `offset=-1` to up-to-date; each run on a new shape (cold:
//! the server takes the snapshot from Postgres) and then again on the same
//! shape (warm: served from its files). The limit: `COPY (SELECT … WHERE
//! …) TO STDOUT` of the same rows, read by a client to the end.

use std::io::Read;
use std::time::Instant;

use crate::bench::{client, shape_query, Bench, Size};
use crate::loadgen::{runtime, sync, Conn};
use crate::psql::psql;
use crate::report::{self, number, Headline, Spread};

const WORKLOAD: &str = "large-shape";

pub struct Args {
    pub sizes: Vec<usize>,
    pub runs: usize,
}

impl Args {
    pub fn sized(size: Size) -> Args {
        Args {
            sizes: vec![100_000, 1_000_000],
            runs: size.pick(1, 3),
        }
    }
}

struct Run {
    cold: f64,
    warm: f64,
    copy: f64,
    bytes: usize,
    copy_bytes: usize,
    requests: usize,
    rss_mib: f64,
}

pub fn run(args: Args) -> String {
    let rows = args.sizes.iter().copied().max().unwrap_or(0);
    let bench = Bench::start(
        WORKLOAD,
        &[("fsync", "off"), ("autovacuum", "off")],
        &[],
        |url| {
            psql(
            url,
            &format!(
                "CREATE TABLE large (id int8 PRIMARY KEY, g int4 NOT NULL, name text, amount numeric, at timestamptz);
                 INSERT INTO large SELECT i, i % 100, 'name-' || i, i * 1.25, '2026-01-01'::timestamptz + i * interval '1 second'
                   FROM generate_series(1, {rows}) i"
            ),
        );
            psql(url, "VACUUM ANALYZE large");
        },
    );
    let rt = runtime(1);
    let mut points = Vec::new();
    let mut errors = Vec::new();
    for &n in &args.sizes {
        let mut runs = Vec::new();
        for r in 0..args.runs {
            let where_sql = format!("id <= {n} AND id > -{}", r + 1);
            let query = shape_query("large", Some(&where_sql));
            eprintln!(
                "[{n} rows] run {}/{}: a new shape, then again",
                r + 1,
                args.runs
            );
            let (cold, warm, bytes, requests) = rt.block_on(async {
                let mut conn = Conn::connect(bench.addr).await.expect("connect");
                let t = Instant::now();
                let (_, inserts, _) = sync(&mut conn, &query, false)
                    .await
                    .unwrap_or_else(|e| panic!("cold sync: {e}"));
                let cold = t.elapsed().as_secs_f64();
                if inserts != n {
                    errors.push(format!("cold sync of {n} rows had {inserts}"));
                }
                let t = Instant::now();
                let (_, inserts, bodies) = sync(&mut conn, &query, true)
                    .await
                    .unwrap_or_else(|e| panic!("warm sync: {e}"));
                let warm = t.elapsed().as_secs_f64();
                if inserts != n {
                    errors.push(format!("warm sync of {n} rows had {inserts}"));
                }
                (
                    cold,
                    warm,
                    bodies.iter().map(|b| b.len()).sum::<usize>(),
                    bodies.len(),
                )
            });
            bench.server_latency(&format!("{n} rows, run {}: new shape then again", r + 1));
            let rss_mib = bench.server.rss_kib() as f64 / 1024.0;
            let mut pg = client(&bench.url);
            let t = Instant::now();
            let mut reader = pg
                .copy_out(&format!(
                    "COPY (SELECT id, g, name, amount, at FROM large WHERE {where_sql}) TO STDOUT"
                ))
                .expect("COPY");
            let mut sink = vec![0u8; 1 << 20];
            let mut copy_bytes = 0;
            loop {
                let k = reader.read(&mut sink).expect("COPY data");
                if k == 0 {
                    break;
                }
                copy_bytes += k;
            }
            drop(reader);
            let copy = t.elapsed().as_secs_f64();
            eprintln!("  cold {cold:.2} s, warm {warm:.2} s, COPY {copy:.2} s");
            runs.push(Run {
                cold,
                warm,
                copy,
                bytes,
                copy_bytes,
                requests,
                rss_mib,
            });
        }
        points.push((n, runs));
    }
    for e in &errors {
        report::failure(format!("{WORKLOAD}: {e}"));
    }
    let flags = bench.flags.clone();
    bench.stop();
    render(&args, &flags, &points)
}

fn spread(values: Vec<f64>) -> String {
    let s = Spread::of(values);
    if s.min == s.max {
        number(s.median)
    } else {
        format!("{} ({}–{})", number(s.median), number(s.min), number(s.max))
    }
}

fn render(args: &Args, flags: &str, points: &[(usize, Vec<Run>)]) -> String {
    let mut out = format!(
        "# 2. One client, one large shape, beside COPY\n\n\
         Server: {flags}. Table `large (id int8 primary key, g int4, name text, amount numeric, at timestamptz)`. \
         One client (keep-alive HTTP/1.1) syncs `where id <= N AND id > -r` (a new shape each run, the same rows) \
         from `offset=-1` to up-to-date following `electric-offset` (*cold*: the server snapshots from Postgres and serves it), \
         then syncs the same shape again (*warm*). Every response checked (200, headers, JSON array); the inserts must add up to N. \
         Limit: `COPY (SELECT id, g, name, amount, at FROM large WHERE …) TO STDOUT` of the same rows, read to the end by one client. \
         Median of {} runs (min–max), seconds.\n\n\
         | rows | cold s | warm s | COPY s | cold rows/s | COPY rows/s | cold ÷ COPY (rate) | responses | JSON MB | COPY MB | server RSS MiB after |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
        args.runs
    );
    let mut ours_series = Vec::new();
    let mut copy_series = Vec::new();
    for (n, runs) in points {
        let cold = Spread::of(runs.iter().map(|r| r.cold).collect()).median;
        let copy = Spread::of(runs.iter().map(|r| r.copy).collect()).median;
        out.push_str(&format!(
            "| {n} | {} | {} | {} | {} | {} | {:.2} | {} | {:.1} | {:.1} | {:.0} |\n",
            spread(runs.iter().map(|r| r.cold).collect()),
            spread(runs.iter().map(|r| r.warm).collect()),
            spread(runs.iter().map(|r| r.copy).collect()),
            number(*n as f64 / cold),
            number(*n as f64 / copy),
            copy / cold,
            runs[0].requests,
            runs[0].bytes as f64 / 1e6,
            runs[0].copy_bytes as f64 / 1e6,
            runs.iter().map(|r| r.rss_mib).fold(0.0, f64::max),
        ));
        ours_series.push((*n as f64, *n as f64 / cold));
        copy_series.push((*n as f64, *n as f64 / copy));
        if *n == points.iter().map(|p| p.0).max().unwrap() {
            report::headline(Headline::rate(
                WORKLOAD,
                &format!("{n} rows, one client, cold sync (took {:.2} s)", cold),
                *n as f64 / cold,
                "rows/s",
                Some(("COPY TO STDOUT", *n as f64 / copy)),
                "1M rows ≤ 1.5 s; ≥ 0.7× COPY (Electric 7.1 s)",
            ));
        }
    }
    report::xy_plot(
        "rows-per-second",
        "one large shape: rows/s, cold sync vs COPY",
        "rows in the shape",
        "rows/s",
        &[
            ("ours, cold sync".to_string(), ours_series),
            ("COPY TO STDOUT (limit)".to_string(), copy_series),
        ],
    );
    out
}
