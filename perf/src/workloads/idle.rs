//! Idle cost: the CPU an idle server uses (utime + stime of its process
//! from /proc over a window) with no shapes, with 10k and 100k idle shapes,
//! and with 1,000 and 10,000 long-polls parked on it; and its resident
//! memory per idle shape.

use std::time::Duration;

use crate::bench::{shape_query, Bench, Size};
use crate::loadgen::{create_shapes, runtime, sync, Conn, Timings};
use crate::psql::psql;
use crate::report::{self, Headline};

const WORKLOAD: &str = "idle";

pub struct Args {
    pub shapes: Vec<usize>,
    pub polls: Vec<usize>,
    pub window: Duration,
    /// Quiet time before each window (creation's checkpoints and unloads).
    pub settle: Duration,
}

impl Args {
    pub fn sized(size: Size) -> Args {
        Args {
            shapes: size.pick(vec![10_000], vec![10_000, 100_000]),
            polls: vec![1_000, 10_000],
            window: Duration::from_secs(size.pick(4, 10)),
            settle: Duration::from_secs(size.pick(3, 5)),
        }
    }
}

struct Point {
    state: String,
    cores: f64,
    rss_mib: f64,
    per_shape_bytes: Option<f64>,
    own_cores: f64,
}

/// Cores this process (the load generator holding the polls) used over a
/// window, read beside the server's.
fn own_ticks() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let (_, rest) = s.rsplit_once(')')?;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f[11].parse::<u64>().ok()? + f[12].parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

fn measure(bench: &Bench, args: &Args, state: String, base_rss: f64, shapes: usize) -> Point {
    std::thread::sleep(args.settle);
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let before = own_ticks();
    let cores = bench.server_cores(args.window);
    let own_cores = (own_ticks() - before) as f64 / tick / args.window.as_secs_f64();
    let rss_mib = bench.server.rss_kib() as f64 / 1024.0;
    eprintln!(
        "  {state}: server {:.1} % of a core, RSS {rss_mib:.0} MiB",
        cores * 100.0
    );
    Point {
        state,
        cores,
        rss_mib,
        per_shape_bytes: (shapes > 0)
            .then(|| (rss_mib - base_rss) * 1024.0 * 1024.0 / shapes as f64),
        own_cores,
    }
}

pub fn run(args: Args) -> String {
    let bench = Bench::start(WORKLOAD, &[], &[], |url| {
        psql(url, "CREATE TABLE bench (id int8 PRIMARY KEY, g int4 NOT NULL, note text); CREATE INDEX bench_g ON bench (g)");
    });
    let rt = runtime(1);
    let mut points = Vec::new();
    let mut errors = Timings::default();
    let base = measure(&bench, &args, "no shapes, no clients".into(), 0.0, 0);
    let base_rss = base.rss_mib;
    points.push(base);
    let query = |k: usize| shape_query("bench", Some(&format!("g = {k}")));
    let mut created = 0;
    let first = args.shapes.first().copied().unwrap_or(0);
    for &n in &args.shapes {
        eprintln!("[{n} shapes] creating {}", n - created);
        let (t, _) = rt.block_on(create_shapes(
            bench.addr,
            (created..n).map(query).collect(),
            32,
        ));
        errors.add(&t);
        created = n;
        points.push(measure(
            &bench,
            &args,
            format!("{n} idle shapes, no clients"),
            base_rss,
            n,
        ));
        if n != first {
            continue;
        }
        // Parked long-polls on the first count's shapes (one each, on
        // different shapes), held open through the window.
        let mut held: Vec<tokio::task::JoinHandle<()>> = Vec::new();
        let returned = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for &polls in &args.polls {
            let more = polls.saturating_sub(held.len());
            eprintln!("[{n} shapes] parking {polls} long-polls");
            let (tasks, failed) = rt.block_on(async {
                let mut tasks = Vec::new();
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<(), String>>();
                let start = held.len();
                for i in start..start + more {
                    let (q, tx, addr, returned) =
                        (query(i % n), tx.clone(), bench.addr, returned.clone());
                    tasks.push(tokio::spawn(async move {
                        let mut conn = match Conn::connect(addr).await {
                            Ok(c) => c,
                            Err(e) => {
                                let _ = tx.send(Err(e.to_string()));
                                return;
                            }
                        };
                        let at = match sync(&mut conn, &q, false).await {
                            Ok((at, _, _)) => at,
                            Err(e) => {
                                let _ = tx.send(Err(e));
                                return;
                            }
                        };
                        let _ = tx.send(Ok(()));
                        // Parked until the window is over (the long-poll
                        // timeout is 40 s); what comes back is not timed.
                        let _ = conn.get(&at.next(&q, true)).await;
                        // Not parked after all: counted in the report.
                        returned.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        std::future::pending::<()>().await;
                    }));
                }
                drop(tx);
                let mut failed = Timings::default();
                // Every task says once whether it is caught up (the senders
                // live on in the parked tasks).
                for _ in 0..more {
                    match rx.recv().await {
                        Some(Err(e)) => failed.error(e),
                        Some(Ok(())) => {}
                        None => break,
                    }
                }
                // A moment for the last requests to be parked.
                tokio::time::sleep(Duration::from_millis(500)).await;
                (tasks, failed)
            });
            errors.add(&failed);
            held.extend(tasks);
            let mut point = measure(
                &bench,
                &args,
                format!("{n} idle shapes, {polls} parked long-polls"),
                base_rss,
                0,
            );
            let early = returned.load(std::sync::atomic::Ordering::Relaxed);
            if early > 0 {
                point.state.push_str(&format!(
                    " ({early} of them answered before the window ended)"
                ));
            }
            points.push(point);
        }
        for t in held.drain(..) {
            t.abort();
        }
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(200)).await });
    }
    if errors.errors > 0 {
        report::failure(format!("{WORKLOAD}: {}", errors.error_note()));
    }
    let flags = bench.flags.clone();
    bench.stop();
    render(&args, &flags, &points)
}

fn render(args: &Args, flags: &str, points: &[Point]) -> String {
    let mut out = format!(
        "# Idle cost: CPU and memory of an idle server\n\n\
         Server: {flags}. Shapes `g = k` on an empty table `bench`, created over HTTP; after each step {} s of quiet, \
         then the server process' CPU (utime + stime from `/proc/<pid>/stat`) over {} s, as a share of one core. \
         Parked long-polls: one client per shape, caught up, its `live=true` request held open (long-poll timeout 40 s) \
         through the window. RSS per shape: the server's RSS growth over the empty server, divided by the shapes.\n\n\
         | state | server CPU (% of a core) | server RSS MiB | RSS per idle shape (bytes) | load generator CPU (% of a core) |\n|---|---|---|---|---|\n",
        args.settle.as_secs(),
        args.window.as_secs()
    );
    for p in points {
        out.push_str(&format!(
            "| {} | {:.1} | {:.0} | {} | {:.1} |\n",
            p.state,
            p.cores * 100.0,
            p.rss_mib,
            p.per_shape_bytes.map_or("–".into(), |b| format!("{b:.0}")),
            p.own_cores * 100.0
        ));
        let headline = |measure: String, target: &str| Headline {
            workload: WORKLOAD.into(),
            measure,
            ours: p.cores * 100.0,
            unit: "% of a core".into(),
            limit: None,
            target: target.into(),
            lower_is_better: true,
            errors: 0,
        };
        if p.state.starts_with("no shapes") {
            report::headline(headline(
                "idle server, no shapes, CPU".into(),
                "≈ 0 (4–5 % when the issue was filed)",
            ));
        } else if p.state.contains("1000 parked") {
            report::headline(headline(
                format!("{}, CPU", p.state),
                "≈ 0 (37–42 % when the issue was filed)",
            ));
        } else if p.state.contains("10000 parked")
            || (p.per_shape_bytes.is_some() && p.state.starts_with("100000"))
        {
            report::headline(headline(format!("{}, CPU", p.state), "≈ 0"));
        }
        if let Some(b) = p.per_shape_bytes {
            report::headline(Headline {
                workload: WORKLOAD.into(),
                measure: format!(
                    "RSS per idle shape at {}",
                    p.state.split(' ').next().unwrap_or("")
                ),
                ours: b,
                unit: "bytes".into(),
                limit: None,
                target: "≤ 2 KB (Electric ~600 KB)".into(),
                lower_is_better: true,
                errors: 0,
            });
        }
    }
    out
}
