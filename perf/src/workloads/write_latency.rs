//! Workload 3: many independent shapes, a write hits one: from `COMMIT`
//! returning to the client (long-polling that shape) having the change.
//! Shapes `g = k` (10k / 100k; indexed) and `note ILIKE '%<k>%'` (1k /
//! 10k; each one evaluated per change). The limit: the Postgres commit
//! latency alone (the same `INSERT`'s round trip, fsync on).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::bench::{client, shape_query, Bench, Size};
use crate::loadgen::{create_shapes, live, runtime, sync, At, Conn, Timings};
use crate::psql::psql;
use crate::report::{self, number, Headline, QUANTILE_HEADER};

const WORKLOAD: &str = "write-latency";
/// Shapes with a client waiting on them, the writes going round them.
const TARGETS: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Equals,
    Ilike,
}

impl Kind {
    fn table(self) -> &'static str {
        match self {
            Kind::Equals => "eq_t",
            Kind::Ilike => "lk_t",
        }
    }

    fn where_sql(self, k: usize) -> String {
        match self {
            Kind::Equals => format!("g = {k}"),
            Kind::Ilike => format!("note ILIKE '%<{k}>%'"),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Equals => "`g = k`",
            Kind::Ilike => "`note ILIKE '%<k>%'`",
        }
    }
}

pub struct Args {
    /// (kind, shape count) in order; counts of a kind increasing (shapes
    /// are added to one server).
    pub levels: Vec<(Kind, usize)>,
    pub writes: usize,
    pub create_concurrency: usize,
}

impl Args {
    pub fn sized(size: Size) -> Args {
        Args {
            levels: size.pick(
                vec![
                    (Kind::Equals, 1_000),
                    (Kind::Equals, 10_000),
                    (Kind::Ilike, 1_000),
                ],
                vec![
                    (Kind::Equals, 10_000),
                    (Kind::Equals, 100_000),
                    (Kind::Ilike, 1_000),
                    (Kind::Ilike, 10_000),
                ],
            ),
            writes: size.pick(100, 500),
            create_concurrency: 32,
        }
    }
}

struct Level {
    kind: Kind,
    shapes: usize,
    creation: Timings,
    creation_seconds: f64,
    rss_mib: f64,
    /// Seconds waited for the server to be quiet before the writes.
    settled: f64,
    latency: Timings,
    commit: Histogram<u64>,
    /// Receipts read before COMMIT had returned to the writer (recorded
    /// as 0).
    before_commit: usize,
}

async fn measure(
    addr: SocketAddr,
    url: &str,
    kind: Kind,
    shapes: usize,
    writes: usize,
    next_id: &mut i64,
) -> (Timings, Histogram<u64>, usize) {
    // Targets spread over the shapes, each with a caught-up client.
    let targets: Vec<usize> = (0..TARGETS)
        .map(|i| i * shapes / TARGETS + shapes / (2 * TARGETS))
        .collect();
    let mut clients: Vec<Option<(String, Conn, At)>> = Vec::new();
    for &k in &targets {
        let query = shape_query(kind.table(), Some(&kind.where_sql(k)));
        let mut conn = Conn::connect(addr).await.expect("connect");
        let (at, _, _) = sync(&mut conn, &query, false).await.expect("catch up");
        clients.push(Some((query, conn, at)));
    }
    let url = url.to_string();
    let mut pg = Some(
        tokio::task::spawn_blocking(move || client(&url))
            .await
            .unwrap(),
    );
    let mut latency = Timings::default();
    let mut commit = Histogram::<u64>::new(3).unwrap();
    let mut before = 0;
    for i in 0..writes {
        let j = i % TARGETS;
        let k = targets[j];
        let (query, mut conn, mut at) = clients[j].take().expect("a client");
        let listener = tokio::spawn(async move {
            let result = live(&mut conn, &query, &mut at).await;
            let got = Instant::now();
            (result, got, query, conn, at)
        });
        tokio::time::sleep(Duration::from_millis(15)).await;
        let id = *next_id;
        *next_id += 1;
        let (back, committed, took) = {
            let pg = pg.take().unwrap();
            tokio::task::spawn_blocking(move || {
                let mut pg = pg;
                let asked = Instant::now();
                match kind {
                    Kind::Equals => pg.execute(
                        "INSERT INTO eq_t VALUES ($1, $2, 'change')",
                        &[&id, &(k as i32)],
                    ),
                    Kind::Ilike => pg.execute(
                        "INSERT INTO lk_t VALUES ($1, $2, $3)",
                        &[&id, &(k as i32), &format!("a <{k}> change")],
                    ),
                }
                .expect("INSERT");
                let committed = Instant::now();
                (pg, committed, committed - asked)
            })
            .await
            .unwrap()
        };
        pg = Some(back);
        commit.record(took.as_micros().max(1) as u64).unwrap();
        match tokio::time::timeout(Duration::from_secs(10), listener).await {
            Ok(Ok((result, got, query, conn, at))) => {
                match result {
                    Ok(reply) if reply.inserts == 1 => {
                        if got < committed {
                            before += 1;
                        }
                        latency.ok(got.saturating_duration_since(committed));
                    }
                    Ok(reply) => latency.error(format!(
                        "{} inserts in the live reply (expected 1)",
                        reply.inserts
                    )),
                    Err(e) => latency.error(e),
                }
                clients[j] = Some((query, conn, at));
            }
            _ => {
                latency.error("no live reply within 10 s of the commit");
                let query = shape_query(kind.table(), Some(&kind.where_sql(k)));
                let mut conn = Conn::connect(addr).await.expect("connect");
                let (at, _, _) = sync(&mut conn, &query, false).await.expect("catch up");
                clients[j] = Some((query, conn, at));
            }
        }
    }
    if let Some(pg) = pg {
        let _ = tokio::task::spawn_blocking(move || drop(pg)).await;
    }
    (latency, commit, before)
}

pub fn run(args: Args) -> String {
    let bench = Bench::start(WORKLOAD, &[], &[], |url| {
        psql(
            url,
            "CREATE TABLE eq_t (id int8 PRIMARY KEY, g int4 NOT NULL, note text); CREATE INDEX eq_t_g ON eq_t (g);
             CREATE TABLE lk_t (id int8 PRIMARY KEY, g int4 NOT NULL, note text)",
        );
    });
    let rt = runtime(1);
    let mut next_id = 1i64;
    let mut levels = Vec::new();
    let mut created = [0usize; 2];
    for &(kind, shapes) in &args.levels {
        let slot = (kind == Kind::Ilike) as usize;
        let queries: Vec<String> = (created[slot]..shapes)
            .map(|k| shape_query(kind.table(), Some(&kind.where_sql(k))))
            .collect();
        eprintln!(
            "[{} {shapes}] creating {} shapes",
            kind.label(),
            queries.len()
        );
        let (creation, creation_seconds) =
            rt.block_on(create_shapes(bench.addr, queries, args.create_concurrency));
        created[slot] = shapes;
        let rss_mib = bench.server.rss_kib() as f64 / 1024.0;
        // The creations' background work (checkpoints, snapshots, unloads)
        // done before the writes: the server back under 15 % of a core.
        let quiet = Instant::now();
        while quiet.elapsed() < Duration::from_secs(90)
            && bench.server_cores(Duration::from_millis(500)) > 0.15
        {}
        let settled = quiet.elapsed().as_secs_f64();
        eprintln!(
            "[{} {shapes}] settled in {settled:.1} s; {} writes",
            kind.label(),
            args.writes
        );
        // Creation and settling are not this level's writes.
        bench.server.reset_latency();
        let (latency, commit, before_commit) = rt.block_on(measure(
            bench.addr,
            &bench.url,
            kind,
            shapes,
            args.writes,
            &mut next_id,
        ));
        bench.server_latency(&format!("{} {shapes}: the writes", kind.label()));
        levels.push(Level {
            kind,
            shapes,
            creation,
            creation_seconds,
            rss_mib,
            settled,
            latency,
            commit,
            before_commit,
        });
    }
    let flags = bench.flags.clone();
    bench.stop();
    render(&args, &flags, &levels)
}

fn render(args: &Args, flags: &str, levels: &[Level]) -> String {
    let mut out = format!(
        "# 3. Write → client latency with many shapes, beside the commit latency\n\n\
         Server: {flags}. Postgres with fsync on. Tables `eq_t` and `lk_t` `(id int8 primary key, g int4, note text)`. \
         Shapes `g = k` on `eq_t` (found through the where-clause index) and `note ILIKE '%<k>%'` on `lk_t` \
         (evaluated for each change); shapes are added to one server in the order of the rows; after each creation the run waits (up to 90 s) \
         until the server uses under 15 % of a core over 0.5 s (*quiet after*). {TARGETS} of the shapes \
         (spread over them) have a client each, caught up; {} writes go round them: the client's long-poll is sent, 15 ms later one \
         `INSERT` (autocommit) of a row in that shape only; latency from `COMMIT` returning to the client having read the live response \
         (checked: 200, Electric headers, JSON, exactly 1 insert). Limit: the same `INSERT`'s round trip (the commit, fsync on).\n\n\
         | shapes | kind | {QUANTILE_HEADER} | ours p99 ÷ commit p99 | commit p50 ms | commit p99 ms | errors | read before COMMIT returned | server RSS MiB | created/s (creation p99 ms) | quiet after (s) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        args.writes
    );
    let ms = |us: u64| number(us as f64 / 1000.0);
    let mut eq_series = Vec::new();
    let mut lk_series = Vec::new();
    for l in levels {
        let h = &l.latency.latency;
        out.push_str(&format!(
            "| {} | {} | {} | {:.2} | {} | {} | {} | {} | {:.0} | {:.0} ({}) | {:.1} |\n",
            l.shapes,
            l.kind.label(),
            report::quantile_cells(h),
            h.value_at_quantile(0.99) as f64 / l.commit.value_at_quantile(0.99).max(1) as f64,
            ms(l.commit.value_at_quantile(0.5)),
            ms(l.commit.value_at_quantile(0.99)),
            l.latency.errors,
            l.before_commit,
            l.rss_mib,
            l.creation.latency.len() as f64 / l.creation_seconds.max(1e-9),
            ms(l.creation.latency.value_at_quantile(0.99)),
            l.settled,
        ));
        let name = match l.kind {
            Kind::Equals => "equals",
            Kind::Ilike => "ilike",
        };
        report::histogram(&format!("{name}-{}", l.shapes), h);
        report::histogram(&format!("{name}-{}-commit", l.shapes), &l.commit);
        report::percentile_plot(
            &format!("latency-{name}-{}", l.shapes),
            &format!("write → client, {} {name} shapes", l.shapes),
            &[
                ("ours: COMMIT returned → client has it", h),
                ("Postgres INSERT+COMMIT (limit)", &l.commit),
            ],
        );
        let point = (l.shapes as f64, h.value_at_quantile(0.99) as f64 / 1000.0);
        match l.kind {
            Kind::Equals => eq_series.push(point),
            Kind::Ilike => lk_series.push(point),
        }
        let last_of_kind = levels
            .iter()
            .filter(|o| o.kind == l.kind)
            .map(|o| o.shapes)
            .max()
            == Some(l.shapes);
        if last_of_kind {
            report::headline(
                Headline::latency(
                    WORKLOAD,
                    &format!(
                        "{} {} shapes, COMMIT → client p99",
                        l.shapes,
                        l.kind.label()
                    ),
                    h.value_at_quantile(0.99),
                    Some(("Postgres commit p99", l.commit.value_at_quantile(0.99))),
                    match l.kind {
                        Kind::Equals => "≤ 1 ms at 100k (Electric ~3 ms)",
                        Kind::Ilike => "≤ 10 ms at 10k (Electric ~140 ms)",
                    },
                )
                .with_errors(l.latency.errors),
            );
        }
        if l.latency.errors > 0 || l.creation.errors > 0 {
            out.push_str(&format!(
                "\n{} {}: {} {}\n",
                l.shapes,
                l.kind.label(),
                l.latency.error_note(),
                l.creation.error_note()
            ));
        }
    }
    let mut series = Vec::new();
    if !eq_series.is_empty() {
        series.push(("`g = k` p99".to_string(), eq_series));
    }
    if !lk_series.is_empty() {
        series.push(("ILIKE p99".to_string(), lk_series));
    }
    report::xy_plot(
        "latency-vs-shapes",
        "write → client p99 vs shape count",
        "shapes",
        "p99 (ms)",
        &series,
    );
    out
}
