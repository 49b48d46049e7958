//! Workloads 4, 5 and 6: one write reaching many live clients.
//!
//! - `fanout` (Electric's `write_fanout`): one shape, 10 / 100 / 1,000
//!   clients, long-polling (`live=true`) or on SSE (`live_sse=true`);
//! - `diverse-fanout` (`diverse_shape_fanout`): 750 overlapping shapes
//!   (`g <= k`), a long-poll client each;
//! - `many-shapes-one-client` (`many_shapes_one_client`): one client
//!   long-polling 1,500 overlapping shapes; what counts is when the last
//!   of them got the write.
//!
//! Each round every client has its live request parked (or its SSE stream
//! open), one row is inserted and committed, and each client's receipt is
//! timed from `COMMIT` returning; every live response must hold exactly that
//! one insert. The limit: the same number of loopback connections, each
//! sent a 256-byte message by one thread at the moment of the "commit" (a
//! loopback broadcast), received by the same load generator.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::bench::{client, shape_query, Bench, Size};
use crate::loadgen::{live, runtime, sync, take_sse_events, Conn, Timings};
use crate::psql::psql;
use crate::report::{self, number, Headline, QUANTILE_HEADER};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    LongPoll,
    Sse,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::LongPoll => "long-poll",
            Mode::Sse => "SSE",
        }
    }
}

pub struct Args {
    pub workload: &'static str,
    pub title: &'static str,
    /// (shapes, clients per shape) per level.
    pub levels: Vec<(usize, usize)>,
    pub modes: Vec<Mode>,
    /// Writes per level and mode.
    pub rounds: usize,
    /// Whether the headline is the last client of each write (one client
    /// on many shapes) or every client's latency.
    pub last_counts: bool,
    pub target: &'static str,
}

impl Args {
    pub fn one_shape(size: Size) -> Args {
        Args {
            workload: "fanout",
            title: "4. Fan-out: one shape, many live clients, one write",
            levels: vec![(1, 10), (1, 100), (1, 1000)],
            modes: vec![Mode::LongPoll, Mode::Sse],
            rounds: size.pick(10, 40),
            last_counts: false,
            target: "1,000 clients p99 ≤ 20 ms (Electric 335 ms)",
        }
    }

    pub fn diverse(size: Size) -> Args {
        Args {
            workload: "diverse-fanout",
            title: "5. Diverse fan-out: many overlapping shapes, a client each, one write",
            levels: size.pick(vec![(750, 1)], vec![(50, 1), (250, 1), (750, 1)]),
            modes: vec![Mode::LongPoll],
            rounds: size.pick(10, 30),
            last_counts: false,
            target: "750 shapes p99 ≤ 50 ms (Electric 2.4 s)",
        }
    }

    pub fn one_client(size: Size) -> Args {
        Args {
            workload: "many-shapes-one-client",
            title: "6. One client on many overlapping shapes, one write",
            levels: size.pick(vec![(1500, 1)], vec![(100, 1), (500, 1), (1500, 1)]),
            modes: vec![Mode::LongPoll],
            rounds: size.pick(10, 30),
            last_counts: true,
            target: "1,500 shapes ≤ 50 ms (Electric 4.1 s)",
        }
    }
}

struct Measured {
    /// Every client's receipt, from COMMIT returning.
    each: Timings,
    /// The last client of each write.
    last: Histogram<u64>,
    commit: Histogram<u64>,
}

fn where_of(shapes: usize, k: usize) -> Option<String> {
    (shapes > 1).then(|| format!("g <= {k}"))
}

/// Inserts one row (`g = 0`: in every shape) and commits; the moment
/// COMMIT returned and how long the round trip took.
async fn write(pg: postgres::Client, id: i64) -> (postgres::Client, Instant, Duration) {
    tokio::task::spawn_blocking(move || {
        let mut pg = pg;
        let asked = Instant::now();
        pg.execute("INSERT INTO fan VALUES ($1, 0, 'fan-out')", &[&id])
            .expect("INSERT");
        let committed = Instant::now();
        (pg, committed, committed - asked)
    })
    .await
    .expect("writer")
}

/// One level in one mode against the server.
async fn measure(
    addr: SocketAddr,
    url: &str,
    queries: &[String],
    clients_per_shape: usize,
    mode: Mode,
    rounds: usize,
    next_id: &mut i64,
) -> Measured {
    let total = queries.len() * clients_per_shape;
    let armed = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Result<Instant, String>)>();
    let mut tasks = Vec::new();
    // Connect and catch up every client first (concurrently), then go live.
    let ready = Arc::new(tokio::sync::Barrier::new(total + 1));
    for query in queries {
        for _ in 0..clients_per_shape {
            let (query, armed, tx, ready) =
                (query.clone(), armed.clone(), tx.clone(), ready.clone());
            tasks.push(tokio::spawn(async move {
                let mut conn = Conn::connect(addr).await.expect("connect");
                let (mut at, _, _) = sync(&mut conn, &query, false).await.expect("initial sync");
                ready.wait().await;
                match mode {
                    Mode::LongPoll => {
                        for round in 0..rounds {
                            armed.fetch_add(1, Ordering::SeqCst);
                            let result = match live(&mut conn, &query, &mut at).await {
                                Ok(reply) if reply.inserts == 1 => Ok(Instant::now()),
                                Ok(reply) => Err(format!(
                                    "{} inserts in a live reply (expected 1)",
                                    reply.inserts
                                )),
                                Err(e) => Err(e),
                            };
                            let failed = result.is_err();
                            let _ = tx.send((round, result));
                            if failed {
                                return;
                            }
                        }
                    }
                    Mode::Sse => {
                        let path = format!("{}&live_sse=true", at.next(&query, true));
                        let head = match conn.open_stream(&path).await {
                            Ok(h) => h,
                            Err(e) => {
                                let _ = tx.send((0, Err(e.to_string())));
                                return;
                            }
                        };
                        if head.status != 200 {
                            let _ = tx.send((0, Err(format!("SSE status {}", head.status))));
                            return;
                        }
                        armed.fetch_add(1, Ordering::SeqCst);
                        let mut buf = Vec::new();
                        let mut seen = 0;
                        while seen < rounds {
                            match conn.read_more(&mut buf).await {
                                Ok(true) => {}
                                Ok(false) => {
                                    let _ = tx.send((seen, Err("SSE stream ended".into())));
                                    return;
                                }
                                Err(e) => {
                                    let _ = tx.send((seen, Err(e.to_string())));
                                    return;
                                }
                            }
                            let now = Instant::now();
                            for event in take_sse_events(&mut buf) {
                                let parsed: Result<serde_json::Value, _> =
                                    serde_json::from_str(&event);
                                match parsed {
                                    Ok(v) if v["headers"]["operation"] == "insert" => {
                                        let _ = tx.send((seen, Ok(now)));
                                        seen += 1;
                                    }
                                    Ok(_) => {}
                                    Err(e) => {
                                        let _ = tx.send((
                                            seen,
                                            Err(format!("SSE event is not JSON: {e}")),
                                        ));
                                        return;
                                    }
                                }
                            }
                        }
                    }
                }
            }));
        }
    }
    drop(tx);
    ready.wait().await;
    // The blocking client has a runtime of its own: made and dropped off
    // this one.
    let url = url.to_string();
    let mut pg = Some(
        tokio::task::spawn_blocking(move || client(&url))
            .await
            .expect("connect"),
    );
    let mut m = Measured {
        each: Timings::default(),
        last: Histogram::new(3).unwrap(),
        commit: Histogram::new(3).unwrap(),
    };
    let mut early: Vec<(usize, Result<Instant, String>)> = Vec::new();
    for round in 0..rounds {
        // Every client's request for this round sent, then a moment for
        // the server to park them.
        let want = match mode {
            Mode::LongPoll => total * (round + 1),
            Mode::Sse => total,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while armed.load(Ordering::SeqCst) < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(20 + total as u64 / 20)).await;
        let id = *next_id;
        *next_id += 1;
        let (back, committed, took) = write(pg.take().unwrap(), id).await;
        pg = Some(back);
        m.commit.record(took.as_micros().max(1) as u64).unwrap();
        let mut got = 0;
        let mut last = committed;
        let mut handle = |result: Result<Instant, String>, m: &mut Measured| match result {
            Ok(t) => {
                m.each.ok(t.saturating_duration_since(committed));
                last = last.max(t);
            }
            Err(e) => m.each.error(e),
        };
        for (r, result) in std::mem::take(&mut early) {
            if r == round {
                handle(result, &mut m);
                got += 1;
            } else {
                early.push((r, result));
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while got < total {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((r, result))) if r == round => {
                    handle(result, &mut m);
                    got += 1;
                }
                Ok(Some((r, result))) if r < round || result.is_err() => {
                    // A failure of an earlier round, or a client that gave up.
                    if let Err(e) = result {
                        m.each.error(e);
                    }
                    got += 1;
                }
                Ok(Some(other)) => early.push(other),
                Ok(None) | Err(_) => {
                    for _ in got..total {
                        m.each.error(format!(
                            "no receipt within 10 s of the commit (round {round})"
                        ));
                    }
                    break;
                }
            }
        }
        m.last
            .record((last - committed).as_micros().max(1) as u64)
            .unwrap();
    }
    for t in tasks {
        t.abort();
    }
    if let Some(pg) = pg {
        let _ = tokio::task::spawn_blocking(move || drop(pg)).await;
    }
    m
}

/// The limit: `total` loopback connections, one thread writing 256 bytes
/// to each at the trigger; each receipt timed from the trigger.
async fn loopback_broadcast(total: usize, rounds: usize) -> Measured {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap();
    let (trigger_tx, trigger_rx) = std::sync::mpsc::channel::<()>();
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<Instant>();
    let server = std::thread::spawn(move || {
        let mut sockets = Vec::with_capacity(total);
        for _ in 0..total {
            let (s, _) = listener.accept().expect("accept");
            s.set_nodelay(true).unwrap();
            sockets.push(s);
        }
        let message = [b'x'; 256];
        while trigger_rx.recv().is_ok() {
            let at = Instant::now();
            let _ = sent_tx.send(at);
            for s in &mut sockets {
                s.write_all(&message).expect("broadcast");
            }
        }
    });
    let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
    let mut tasks = Vec::new();
    for _ in 0..total {
        let tx = tx.clone();
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        tasks.push(tokio::spawn(async move {
            let mut buf = [0u8; 256];
            loop {
                if stream.read_exact(&mut buf).await.is_err() {
                    return;
                }
                let _ = tx.send(Instant::now());
            }
        }));
    }
    drop(tx);
    let mut m = Measured {
        each: Timings::default(),
        last: Histogram::new(3).unwrap(),
        commit: Histogram::new(3).unwrap(),
    };
    for _ in 0..rounds {
        tokio::time::sleep(Duration::from_millis(20)).await;
        trigger_tx.send(()).unwrap();
        let at = sent_rx.recv().await.expect("broadcast started");
        let mut last = at;
        for _ in 0..total {
            let t = rx.recv().await.expect("receipt");
            m.each.ok(t.saturating_duration_since(at));
            last = last.max(t);
        }
        m.last
            .record((last - at).as_micros().max(1) as u64)
            .unwrap();
    }
    drop(trigger_tx);
    for t in tasks {
        t.abort();
    }
    let _ = server.join();
    m
}

/// Loopback HTTP-sized round trip: one connection, 64-byte ping-pong.
fn loopback_round_trip(n: usize) -> Histogram<u64> {
    use std::io::Read;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = [0u8; 64];
        while s.read_exact(&mut buf).is_ok() {
            if s.write_all(&buf).is_err() {
                return;
            }
        }
    });
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    let mut h = Histogram::<u64>::new(3).unwrap();
    let mut buf = [0u8; 64];
    for _ in 0..n {
        let t = Instant::now();
        c.write_all(&buf).unwrap();
        c.read_exact(&mut buf).unwrap();
        h.record(t.elapsed().as_micros().max(1) as u64).unwrap();
    }
    drop(c);
    let _ = echo.join();
    h
}

pub fn run(args: Args) -> String {
    let max_shapes = args.levels.iter().map(|l| l.0).max().unwrap_or(1);
    let bench = Bench::start(args.workload, &[], &[], |url| {
        psql(
            url,
            "CREATE TABLE fan (id int8 PRIMARY KEY, g int4 NOT NULL, note text)",
        );
    });
    let rtt = loopback_round_trip(2000);
    let rt = runtime(1);
    let mut next_id = 1i64;
    let mut results = Vec::new();
    for &(shapes, per_shape) in &args.levels {
        let queries: Vec<String> = (0..shapes)
            .map(|k| shape_query("fan", where_of(max_shapes.max(shapes), k).as_deref()))
            .collect();
        let total = shapes * per_shape;
        for &mode in &args.modes {
            eprintln!(
                "[{shapes} shapes × {per_shape} clients, {}] {} writes",
                mode.label(),
                args.rounds
            );
            let m = rt.block_on(measure(
                bench.addr,
                &bench.url,
                &queries,
                per_shape,
                mode,
                args.rounds,
                &mut next_id,
            ));
            bench.server_latency(&format!(
                "{shapes} shapes × {per_shape} clients, {}",
                mode.label()
            ));
            results.push((shapes, total, Some(mode), m));
        }
        eprintln!("[{total} connections] loopback broadcast");
        let limit = rt.block_on(loopback_broadcast(total, args.rounds));
        results.push((shapes, total, None, limit));
    }
    let flags = bench.flags.clone();
    // Every row the shapes hold, checked against Postgres at the end.
    let rows: usize = psql(&bench.url, "SELECT count(*) FROM fan")
        .parse()
        .unwrap();
    let synced = rt.block_on(async {
        let mut conn = Conn::connect(bench.addr).await.expect("connect");
        sync(
            &mut conn,
            &shape_query("fan", where_of(max_shapes, 0).as_deref()),
            false,
        )
        .await
        .map(|s| s.1)
    });
    if synced.as_ref().ok() != Some(&rows) {
        report::failure(format!(
            "{}: a fresh sync of shape 0 has {synced:?} rows, Postgres {rows}",
            args.workload
        ));
    }
    bench.stop();
    render(&args, &flags, &rtt, &results)
}

type Result4 = (usize, usize, Option<Mode>, Measured);

fn render(args: &Args, flags: &str, rtt: &Histogram<u64>, results: &[Result4]) -> String {
    let mut out = format!(
        "# {}\n\nServer: {flags}. Table `fan (id int8 primary key, g int4, note text)`; {}. \
         Load generator: ours, one thread (tokio current-thread), a connection per client. Each write is one `INSERT` \
         (autocommit) of a row with `g = 0`, in every shape; a client's latency runs from `COMMIT` returning to \
         the client having read the live response holding it (long-poll: the whole response, checked: 200, \
         Electric headers, JSON, exactly 1 insert; SSE: the event with the insert, parsed). Before each write every client's \
         live request has been sent, plus 20 ms (+1 ms per 20 clients) for the server to park them. {} writes per row. \
         Limit: the same number of loopback connections, a 256-byte message written to each by one thread at the \
         trigger (the loopback broadcast); loopback round trip (64 bytes, one connection) p50 {} ms, p99 {} ms.\n\n",
        args.title,
        if args.levels.iter().any(|l| l.0 > 1) {
            "shapes `g <= 0`, `g <= 1`, …, `g <= S-1` (overlapping: each write is in all of them)"
        } else {
            "one shape: the whole table"
        },
        args.rounds,
        number(rtt.value_at_quantile(0.5) as f64 / 1000.0),
        number(rtt.value_at_quantile(0.99) as f64 / 1000.0),
    );
    out.push_str(&format!(
        "| shapes | clients | what | {QUANTILE_HEADER} | last client per write p50 ms | p99 ms | max ms | commit p50 ms | errors |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    ));
    let ms = |us: u64| number(us as f64 / 1000.0);
    for (shapes, total, mode, m) in results {
        let what = match mode {
            Some(mode) => format!("ours, {}", mode.label()),
            None => "loopback broadcast (limit)".into(),
        };
        out.push_str(&format!(
            "| {shapes} | {total} | {what} | {} | {} | {} | {} | {} | {} |\n",
            report::quantile_cells(&m.each.latency),
            ms(m.last.value_at_quantile(0.5)),
            ms(m.last.value_at_quantile(0.99)),
            ms(m.last.max()),
            if mode.is_some() {
                ms(m.commit.value_at_quantile(0.5))
            } else {
                "–".into()
            },
            m.each.errors,
        ));
    }
    for (shapes, total, mode, m) in results {
        if m.each.errors > 0 {
            out.push_str(&format!(
                "\n{shapes} shapes, {total} clients, {}: {}\n",
                mode.map_or("limit", |m| m.label()),
                m.each.error_note()
            ));
        }
    }
    // Files, plots and headlines.
    let mut by_mode: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let totals: Vec<usize> = {
        let mut t: Vec<usize> = results.iter().map(|r| r.1).collect();
        t.dedup();
        t
    };
    for &total in &totals {
        let at: Vec<&Result4> = results.iter().filter(|r| r.1 == total).collect();
        let limit = at.iter().find(|r| r.2.is_none()).map(|r| &r.3);
        let mut curves = Vec::new();
        for r in &at {
            let name = r.2.map_or(
                "loopback",
                |m| if m == Mode::Sse { "sse" } else { "long-poll" },
            );
            let h = if args.last_counts {
                &r.3.last
            } else {
                &r.3.each.latency
            };
            report::histogram(&format!("{name}-{total}"), h);
            if args.last_counts {
                report::histogram(&format!("{name}-{total}-each"), &r.3.each.latency);
            }
            curves.push((
                match r.2 {
                    Some(Mode::LongPoll) => "ours, long-poll",
                    Some(Mode::Sse) => "ours, SSE",
                    None => "loopback broadcast (limit)",
                },
                h,
            ));
            let label = r.2.map_or("loopback broadcast (limit)".to_string(), |m| {
                format!("ours, {}", m.label())
            });
            let p99 = h.value_at_quantile(0.99) as f64 / 1000.0;
            match by_mode.iter_mut().find(|(l, _)| *l == label) {
                Some((_, v)) => v.push((total as f64, p99)),
                None => by_mode.push((label, vec![(total as f64, p99)])),
            }
        }
        report::percentile_plot(
            &format!("latency-{total}"),
            &format!(
                "{}: {total} {}, write → {}",
                args.workload,
                if at[0].0 > 1 { "shapes" } else { "clients" },
                if args.last_counts {
                    "last shape"
                } else {
                    "each client"
                }
            ),
            &curves,
        );
        if total == *totals.iter().max().unwrap() {
            for r in at.iter().filter(|r| r.2.is_some()) {
                let mode = r.2.unwrap();
                let (ours, lim, what) = if args.last_counts {
                    (
                        &r.3.last,
                        limit.map(|l| &l.last),
                        "write → last shape received, p99",
                    )
                } else {
                    (
                        &r.3.each.latency,
                        limit.map(|l| &l.each.latency),
                        "write → each client, p99",
                    )
                };
                report::headline(
                    Headline::latency(
                        args.workload,
                        &format!("{} × {total}, {what}", mode.label()),
                        ours.value_at_quantile(0.99),
                        lim.map(|l| ("loopback broadcast p99", l.value_at_quantile(0.99))),
                        args.target,
                    )
                    .with_errors(r.3.each.errors),
                );
            }
        }
    }
    if totals.len() > 1 {
        report::xy_plot(
            "latency-vs-clients",
            &format!("{}: p99 vs clients", args.workload),
            if results[0].0 > 1 {
                "shapes (a client each)"
            } else {
                "clients"
            },
            "p99 write → client (ms)",
            &by_mode,
        );
    }
    out
}
