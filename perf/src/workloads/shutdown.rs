//! Clean shutdown and restart with many idle shapes, against the real
//! release server binary and a throwaway Postgres (issue 5: "Clean
//! shutdown … must finish in ≤ 1 s with 10k idle shapes").
//!
//! For each shape count N (default 10,000; shapes are added to one storage
//! directory, in increasing order): N shapes `g = k` are created over HTTP
//! by a pool of client threads; once the server is idle (no creation in
//! flight, nothing written to the segment log or LMDB over two checkpoints
//! of every shard) it gets SIGTERM, timed to its exit. Then it is started
//! again on the same storage, timed to its log's "shapes restored" (every
//! shard) and to the first 200 for an existing shape read with its handle
//! and offset, checked (every shard came back from "a clean shutdown" with
//! all N shapes; a random sample of shapes answers 200, up to date, with
//! the handle and offset a client had caught up to before the stop), left
//! idle and stopped again, timed. Restarts come in three
//! kinds:
//! - cold: only the sample is read, so the rest stay in their restored
//!   (cold) form;
//! - built: every shape is read (and checked) after the restart, so all are
//!   built in memory again, as right after creation;
//! - live: cold, plus long-polling clients (`live=true`) on sampled shapes
//!   held open through the stop.
//!
//! ```sh
//! cargo build --release --bin shapeshard
//! cargo run --release -p shapeshard-perf --bin shutdown-bench            # 10,000
//! cargo run --release -p shapeshard-perf --bin shutdown-bench 10000 100000
//! ```
//! Knobs: `--help`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::psql::create_bench_table;
use crate::report::{Machine, Spread};
use crate::server::{series, server_binary, stamped_after, LogLine, Server, ServerConfig, Stopped};
use crate::shapes::{create_shapes, for_each, get, get_admitted, read_url, Creation, ShapeAt};
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::Value;
use shapeshard::devpg::{free_port, DevPgOptions, DevPostgres};

/// The requirement being checked.
const LIMIT: Duration = Duration::from_secs(1);

#[derive(Parser, Debug)]
#[command(about = "Clean shutdown and restart with many idle shapes")]
pub struct Args {
    /// Shape counts, increasing; shapes are added to one storage directory.
    #[arg(default_values_t = [10_000])]
    shapes: Vec<usize>,
    /// Restarts per shape count where only the sample is read.
    #[arg(long, env = "SHUTDOWN_COLD_RESTARTS", default_value_t = 5)]
    cold_restarts: usize,
    /// Restarts per shape count where every shape is read (built) again.
    #[arg(long, env = "SHUTDOWN_BUILT_RESTARTS", default_value_t = 5)]
    built_restarts: usize,
    /// Restarts per shape count stopped with long-polls open.
    #[arg(long, env = "SHUTDOWN_LIVE_RESTARTS", default_value_t = 2)]
    live_restarts: usize,
    /// Long-polling clients held open through a live stop.
    #[arg(long, env = "SHUTDOWN_LIVE_POLLERS", default_value_t = 100)]
    live_pollers: usize,
    /// Existing shapes read and checked after each restart.
    #[arg(long, env = "SHUTDOWN_SAMPLE", default_value_t = 100)]
    sample: usize,
    /// Concurrent requests while creating shapes or reading them all.
    #[arg(long, env = "SHUTDOWN_CONCURRENCY", default_value_t = 16)]
    concurrency: usize,
    /// Longest wait for an exit before the server is killed.
    #[arg(long, env = "SHUTDOWN_STOP_TIMEOUT_S", default_value_t = 60)]
    stop_timeout_s: u64,
    /// `--shards` for the server (default: its own, one per core).
    #[arg(long, env = "SHUTDOWN_SERVER_SHARDS")]
    server_shards: Option<usize>,
    /// The server binary (default: target/release/shapeshard here).
    #[arg(long, env = "SHUTDOWN_SERVER_BIN")]
    server_bin: Option<PathBuf>,
    /// What the server binary was built from, for the report.
    #[arg(long, env = "SHUTDOWN_SERVER_VERSION")]
    server_version: Option<String>,
    /// Random seed for the samples (default: from the clock).
    #[arg(long, env = "SHUTDOWN_SEED")]
    seed: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Right after the shapes were created (all built).
    Created,
    Cold,
    Built,
    Live,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Created => "after creation",
            Kind::Cold => "cold",
            Kind::Built => "built",
            Kind::Live => "live",
        }
    }
}

struct Ctx {
    args: Args,
    config: ServerConfig,
    shards: usize,
    logs: PathBuf,
    starts: usize,
    rng: Rng,
    /// Every shape's handle and up-to-date offset, by `k`.
    shapes: Vec<ShapeAt>,
    /// Correctness violations; the bench fails after writing its report.
    failures: Vec<String>,
}

pub fn run(args: Args) -> String {
    assert!(
        !args.shapes.is_empty() && args.shapes.windows(2).all(|w| w[0] < w[1]),
        "shape counts must be increasing"
    );
    let (bin, version) = server_binary(args.server_bin.clone(), args.server_version.clone());
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });

    let dir = std::env::temp_dir().join(format!("shapeshard-shutdown-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut options = DevPgOptions::default();
    // Postgres only serves the snapshots and the slot here.
    options.settings.push(("fsync".into(), "off".into()));
    options.settings.push(("autovacuum".into(), "off".into()));
    let pg = DevPostgres::start(&dir.join("pg"), &options).expect("start Postgres");
    let url = pg.url("postgres");
    create_bench_table(&url);

    // Run a copy: a rebuild of the binary during the run must not change
    // what is measured.
    let bin = {
        let copy = dir.join("shapeshard");
        std::fs::copy(&bin, &copy).expect("copy the server binary");
        copy
    };
    let port = free_port().expect("a free port");
    let mut config = ServerConfig::new(&bin, &url, port, &dir.join("server"))
        .log_level("info")
        .args(["--log-format", "json"]);
    if let Some(n) = args.server_shards {
        config = config.args(["--shards".to_string(), n.to_string()]);
    }
    let shards = args
        .server_shards
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut ctx = Ctx {
        args,
        config,
        shards,
        logs,
        starts: 0,
        rng: Rng(seed | 1),
        shapes: Vec::new(),
        failures: Vec::new(),
    };

    let mut points = Vec::new();
    for n in ctx.args.shapes.clone() {
        points.push(point(&mut ctx, n));
    }
    drop(pg);

    let report = render(&ctx, &version, seed, &points);
    for p in &points {
        let mut restored = Histogram::<u64>::new(3).unwrap();
        let mut stops = Histogram::<u64>::new(3).unwrap();
        for r in &p.restarts {
            restored
                .record(r.serving.as_micros().max(1) as u64)
                .unwrap();
        }
        for s in &p.stops {
            stops.record(s.took.as_micros().max(1) as u64).unwrap();
        }
        crate::report::histogram(&format!("restart-serving-{}", p.shapes), &restored);
        crate::report::histogram(&format!("stop-{}", p.shapes), &stops);
        if !restored.is_empty() {
            crate::report::headline(crate::report::Headline::latency(
                "shutdown",
                &format!("restart with {} idle shapes → serving, max", p.shapes),
                restored.max(),
                None,
                "≤ 1 s at 100k (Electric ~7 s per 10k)",
            ));
        }
        crate::report::headline(crate::report::Headline::latency(
            "shutdown",
            &format!("clean shutdown with {} idle shapes, max", p.shapes),
            stops.max(),
            None,
            "≤ 1 s at 10k",
        ));
    }
    if ctx.failures.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        crate::report::failure(format!(
            "shutdown: {} correctness failures (server logs kept in {})",
            ctx.failures.len(),
            ctx.logs.display(),
        ));
    }
    report
}

// ---------------------------------------------------------------- one shape count

struct Point {
    shapes: usize,
    creation: Creation,
    /// What the server's log said (warnings and errors) over all its runs.
    complaints: Vec<String>,
    stops: Vec<Stop>,
    restarts: Vec<Restart>,
    /// Reading every shape after a built restart: seconds.
    read_all: Vec<f64>,
    /// Waiting for idle before each stop: seconds.
    idle_waits: Vec<f64>,
}

fn point(ctx: &mut Ctx, n: usize) -> Point {
    let created = ctx.shapes.len();
    let mut complaints = Vec::new();
    let mut server = if created == 0 {
        let log = next_log(ctx, n);
        Server::start(&ctx.config, &log)
    } else {
        // Back from the previous count's last stop (checked, not timed).
        let (mut server, _) = restart(ctx, created, Kind::Cold);
        server.wait_active(Duration::from_secs(60));
        server
    };
    eprintln!("[{n} shapes] server up on {}", server.base);
    let creation = create_shapes(&server.base, created..n, ctx.args.concurrency);
    // Where a client that caught up is: a read from the creation reply's
    // offset until up to date (`0_0` → `0_inf` for an empty snapshot).
    let base = server.base.clone();
    let caught_up = for_each("caught up", created..n, ctx.args.concurrency, |agent, k| {
        let mut at = creation.shapes[k - created].clone();
        loop {
            let reply = get_admitted(agent, &read_url(&base, k, &at));
            assert_eq!(reply.status, 200, "reading shape g = {k}: {}", reply.body);
            at = reply.at.expect("electric-handle and -offset");
            if reply.up_to_date {
                return at;
            }
        }
    });
    ctx.shapes.extend(caught_up);

    let mut stops = Vec::new();
    let mut restarts = Vec::new();
    let mut read_all = Vec::new();
    let mut idle_waits = vec![wait_idle(&server)];
    stops.push(stop(ctx, &mut server, Kind::Created, &mut complaints, n));
    let kinds = std::iter::repeat_n(Kind::Cold, ctx.args.cold_restarts)
        .chain(std::iter::repeat_n(Kind::Built, ctx.args.built_restarts))
        .chain(std::iter::repeat_n(Kind::Live, ctx.args.live_restarts));
    for kind in kinds {
        let (mut server, restart) = restart(ctx, n, kind);
        restarts.push(restart);
        if kind == Kind::Built {
            read_all.push(read_every_shape(ctx, &server, n));
        }
        idle_waits.push(wait_idle(&server));
        let pollers = (kind == Kind::Live).then(|| Pollers::open(ctx, &server, n));
        let mut stopped = stop(ctx, &mut server, kind, &mut complaints, n);
        if let Some(pollers) = pollers {
            stopped.pollers = Some(pollers.join(ctx, stopped.signalled));
        }
        stops.push(stopped);
    }
    Point {
        shapes: n,
        creation,
        complaints,
        stops,
        restarts,
        read_all,
        idle_waits,
    }
}

fn next_log(ctx: &mut Ctx, n: usize) -> PathBuf {
    ctx.starts += 1;
    ctx.logs.join(format!("{:02}-{n}.log", ctx.starts))
}

/// Waits until the server is idle: no creation in flight, and no segment
/// log or LMDB write since every shard began two more checkpoints (so one
/// whole checkpoint ran after the last change). At least 2 s. Returns
/// seconds waited.
fn wait_idle(server: &Server) -> f64 {
    let started = Instant::now();
    let mut last: Option<(u64, u64)> = None;
    let mut base: Vec<u64> = Vec::new();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let m = server.metrics();
        let in_flight: u64 = series(&m, "shapeshard_shape_creations_in_flight")
            .iter()
            .sum();
        let key = (
            series(&m, "shapeshard_segment_bytes_written_total")
                .iter()
                .sum(),
            series(&m, "shapeshard_metadata_commits_total").iter().sum(),
        );
        let checkpoints = series(&m, "shapeshard_checkpoints_total");
        let has_gauges = !checkpoints.is_empty();
        if !has_gauges || in_flight > 0 || last != Some(key) {
            last = Some(key);
            base = checkpoints;
        } else if started.elapsed() >= Duration::from_secs(2)
            && checkpoints.iter().zip(&base).all(|(c, b)| *c >= b + 2)
        {
            return started.elapsed().as_secs_f64();
        }
        assert!(
            has_gauges || started.elapsed() < Duration::from_secs(5),
            "no shapeshard_checkpoints_total in /metrics: a server without per-shard storage gauges (before e2df85a)?"
        );
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the server was not idle after 300 s"
        );
    }
}

// ---------------------------------------------------------------- stop

struct Stop {
    kind: Kind,
    signalled: Instant,
    took: Duration,
    exit: String,
    built: u64,
    cold: u64,
    rss_kib: u64,
    /// The log from the signal on: ms after it, line.
    log: Vec<(f64, String)>,
    pollers: Option<PollersEnd>,
}

fn stop(
    ctx: &mut Ctx,
    server: &mut Server,
    kind: Kind,
    complaints: &mut Vec<String>,
    n: usize,
) -> Stop {
    server.assert_alive();
    let m = server.metrics();
    let built = series(&m, "shapeshard_shapes_built").iter().sum();
    let cold = series(&m, "shapeshard_shapes_cold").iter().sum();
    let rss_kib = server.rss_kib();
    let stopped: Stopped = server.stop_within(Duration::from_secs(ctx.args.stop_timeout_s));
    let exit = match stopped.status {
        Some(s) if s.success() => "0".to_string(),
        Some(s) => {
            ctx.failures.push(format!(
                "[{n} shapes, {} stop] the server exited with {s}",
                kind.label()
            ));
            s.to_string()
        }
        None => {
            ctx.failures.push(format!(
                "[{n} shapes, {} stop] the server did not exit within {} s; killed",
                kind.label(),
                ctx.args.stop_timeout_s
            ));
            "killed".into()
        }
    };
    let lines = server.lines();
    complaints.extend(
        lines
            .iter()
            .filter(|l| matches!(level(&l.text).as_str(), "WARN" | "ERROR"))
            .map(|l| pretty(&l.text)),
    );
    let log = lines
        .iter()
        .filter(|l| l.at >= stopped.signalled)
        .map(|l| {
            (
                (l.at - stopped.signalled).as_secs_f64() * 1000.0,
                pretty(&l.text),
            )
        })
        .collect();
    eprintln!(
        "[{n} shapes] {} stop: {:.1} ms (exit {exit}; {built} built, {cold} cold)",
        kind.label(),
        stopped.took.as_secs_f64() * 1000.0
    );
    Stop {
        kind,
        signalled: stopped.signalled,
        took: stopped.took,
        exit,
        built,
        cold,
        rss_kib,
        log,
        pollers: None,
    }
}

// ---------------------------------------------------------------- restart

struct Restart {
    kind: Kind,
    /// Spawn → the last shard's "shapes restored" line (its timestamp).
    restored: Duration,
    /// Spawn → the first 200 for an existing shape.
    serving: Duration,
    /// Spawn → `/v1/health` 200 (replication streaming).
    active: Duration,
    /// Each shard's own restore time (its log's `millis`).
    shard_millis: Vec<u64>,
    /// Segment records replayed past the checkpoint, all shards.
    replayed: u64,
    /// Sampled shapes that answered 200 with their handle and offset.
    sample_ok: usize,
    sample: usize,
    /// "after" of each shard's restore line.
    after: Vec<String>,
}

/// Starts the server again on the same storage (which holds `n` shapes),
/// timed, and checks it.
fn restart(ctx: &mut Ctx, n: usize, kind: Kind) -> (Server, Restart) {
    let sample = ctx.rng.sample(n, ctx.args.sample);
    let log = next_log(ctx, n);
    let mut server = Server::spawn(&ctx.config, &log);
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();

    // The first read of an existing shape: retried while the port is not
    // open yet (or admission says 503), never after another answer.
    let probe = sample[0];
    let probe_url = read_url(&server.base, probe, &ctx.shapes[probe]);
    let first = loop {
        server.assert_alive();
        match get(&agent, &probe_url) {
            Ok(reply) if reply.status != 503 => break reply,
            Ok(_) | Err(_) => {
                assert!(
                    server.spawned.elapsed() < Duration::from_secs(120),
                    "no answer 120 s after a restart"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    };
    let serving = server.spawned.elapsed();
    let active = server.wait_active(Duration::from_secs(60)) - server.spawned;

    // Every shard's restore line.
    let deadline = Instant::now() + Duration::from_secs(30);
    let restores: Vec<(LogLine, Value)> = loop {
        let restores: Vec<_> = server
            .lines()
            .into_iter()
            .filter_map(|l| {
                let v: Value = serde_json::from_str(&l.text).ok()?;
                (v["fields"]["message"] == "shapes restored").then_some((l, v))
            })
            .collect();
        if restores.len() >= ctx.shards || Instant::now() > deadline {
            break restores;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let at = format!("[{n} shapes, {} restart {}]", kind.label(), ctx.starts);
    if restores.len() != ctx.shards {
        ctx.failures.push(format!(
            "{at} {} \"shapes restored\" lines for {} shards",
            restores.len(),
            ctx.shards
        ));
    }
    // When the last shard restored, by its line's own timestamp (reading
    // the pipe may lag on busy cores; the arrival is the fallback).
    let restored = restores
        .iter()
        .map(|(l, v)| {
            v["timestamp"]
                .as_str()
                .and_then(|t| stamped_after(t, server.spawned_wall))
                .unwrap_or(l.at - server.spawned)
        })
        .max()
        .unwrap_or_default();
    let field = |v: &Value, f: &str| v["fields"][f].as_u64().unwrap_or(0);
    let after: Vec<String> = restores
        .iter()
        .map(|(_, v)| v["fields"]["after"].as_str().unwrap_or("?").to_string())
        .collect();
    for a in &after {
        if a != "a clean shutdown" {
            ctx.failures.push(format!(
                "{at} a shard came back from {a:?}, not a clean shutdown"
            ));
        }
    }
    let restored_shapes: u64 = restores.iter().map(|(_, v)| field(v, "shapes")).sum();
    if restored_shapes != n as u64 {
        ctx.failures.push(format!(
            "{at} the shards restored {restored_shapes} shapes, not {n}"
        ));
    }

    // The sample: 200, same handle, same offset (nothing was written).
    let mut sample_ok = 0;
    for (i, &k) in sample.iter().enumerate() {
        let reply = if i == 0 {
            first.clone()
        } else {
            get_admitted(&agent, &read_url(&server.base, k, &ctx.shapes[k]))
        };
        match check(&reply, &ctx.shapes[k]) {
            Ok(()) => sample_ok += 1,
            Err(e) => ctx.failures.push(format!("{at} shape g = {k}: {e}")),
        }
    }
    eprintln!(
        "[{n} shapes] {} restart: restored {:.0} ms, serving {:.0} ms, active {:.0} ms; sample {sample_ok}/{}",
        kind.label(),
        restored.as_secs_f64() * 1000.0,
        serving.as_secs_f64() * 1000.0,
        active.as_secs_f64() * 1000.0,
        sample.len()
    );
    let restart = Restart {
        kind,
        restored,
        serving,
        active,
        shard_millis: restores.iter().map(|(_, v)| field(v, "millis")).collect(),
        replayed: restores
            .iter()
            .map(|(_, v)| field(v, "log_records_replayed"))
            .sum(),
        sample_ok,
        sample: sample.len(),
        after,
    };
    (server, restart)
}

/// A read of an existing, unchanged shape at its end: 200, up to date, at
/// the same handle and offset.
fn check(reply: &crate::shapes::Reply, expected: &ShapeAt) -> Result<(), String> {
    if reply.status != 200 {
        return Err(format!("status {} ({})", reply.status, reply.body.trim()));
    }
    match &reply.at {
        Some(at) if at == expected && reply.up_to_date => Ok(()),
        Some(at) => Err(format!(
            "handle {} offset {} (up to date: {}), expected handle {} offset {}",
            at.handle, at.offset, reply.up_to_date, expected.handle, expected.offset
        )),
        None => Err("no electric-handle / electric-offset".into()),
    }
}

/// Reads (and checks) every shape, so every shape is built again. Seconds.
fn read_every_shape(ctx: &mut Ctx, server: &Server, n: usize) -> f64 {
    let started = Instant::now();
    let shapes = &ctx.shapes;
    let base = &server.base;
    let errors: Vec<String> = for_each("read", 0..n, ctx.args.concurrency, |agent, k| {
        let reply = get_admitted(agent, &read_url(base, k, &shapes[k]));
        check(&reply, &shapes[k])
            .err()
            .map(|e| format!("g = {k}: {e}"))
    })
    .into_iter()
    .flatten()
    .collect();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "[{n} shapes] read every shape in {seconds:.1} s ({:.0}/s), {} wrong",
        n as f64 / seconds,
        errors.len()
    );
    for e in errors {
        ctx.failures
            .push(format!("[{n} shapes, read every shape] {e}"));
    }
    seconds
}

// ---------------------------------------------------------------- long-polls

/// Clients long-polling (`live=true`) sampled shapes, one thread each.
struct Pollers {
    threads: Vec<std::thread::JoinHandle<(Instant, Result<u16, String>)>>,
}

/// How the long-polls ended, relative to the signal.
struct PollersEnd {
    count: usize,
    /// Status (or transport error) → how many.
    outcomes: Vec<(String, usize)>,
    /// Signal → the last long-poll's end.
    last_ms: f64,
    /// Long-polls that ended before the signal (should be none).
    early: usize,
}

impl Pollers {
    fn open(ctx: &mut Ctx, server: &Server, n: usize) -> Pollers {
        let sample = ctx.rng.sample(n, ctx.args.live_pollers.min(n));
        let threads = sample
            .into_iter()
            .map(|k| {
                let url = format!("{}&live=true", read_url(&server.base, k, &ctx.shapes[k]));
                std::thread::spawn(move || {
                    let agent = ureq::AgentBuilder::new()
                        .timeout(Duration::from_secs(120))
                        .build();
                    let outcome = match get(&agent, &url) {
                        Ok(reply) => Ok(reply.status),
                        Err(e) => Err(e.kind().to_string()),
                    };
                    (Instant::now(), outcome)
                })
            })
            .collect();
        // Let every request reach the server and start waiting.
        std::thread::sleep(Duration::from_millis(500));
        Pollers { threads }
    }

    fn join(self, ctx: &mut Ctx, signalled: Instant) -> PollersEnd {
        let mut outcomes: Vec<(String, usize)> = Vec::new();
        let (mut last_ms, mut early) = (0.0f64, 0);
        let count = self.threads.len();
        for t in self.threads {
            let (ended, outcome) = t.join().unwrap();
            if ended < signalled {
                early += 1;
            } else {
                last_ms = last_ms.max((ended - signalled).as_secs_f64() * 1000.0);
            }
            let outcome = match outcome {
                Ok(status) => format!("HTTP {status}"),
                Err(e) => e,
            };
            match outcomes.iter_mut().find(|(o, _)| *o == outcome) {
                Some((_, c)) => *c += 1,
                None => outcomes.push((outcome, 1)),
            }
        }
        if early > 0 {
            ctx.failures.push(format!(
                "{early} of {count} long-polls ended before the stop"
            ));
        }
        PollersEnd {
            count,
            outcomes,
            last_ms,
            early,
        }
    }
}

// ---------------------------------------------------------------- log lines

fn level(line: &str) -> String {
    serde_json::from_str::<Value>(line)
        .ok()
        .and_then(|v| v["level"].as_str().map(String::from))
        .unwrap_or_default()
}

/// A JSON log line as `LEVEL thread: message k=v …`.
fn pretty(line: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return line.to_string();
    };
    let mut out = format!(
        "{} {}:",
        v["level"].as_str().unwrap_or("?"),
        v["threadName"].as_str().unwrap_or("?")
    );
    if let Some(fields) = v["fields"].as_object() {
        if let Some(m) = fields.get("message").and_then(|m| m.as_str()) {
            out.push(' ');
            out.push_str(m);
        }
        for (k, val) in fields.iter().filter(|(k, _)| *k != "message") {
            out.push_str(&format!(" {k}={val}"));
        }
    }
    out
}

// ---------------------------------------------------------------- samples

/// xorshift64*: samples without replacement, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// `count` distinct values below `n`.
    fn sample(&mut self, n: usize, count: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        let count = count.min(n).max(1);
        for i in 0..count {
            let j = i + (self.next() % (n - i) as u64) as usize;
            all.swap(i, j);
        }
        all.truncate(count);
        all
    }
}

// ---------------------------------------------------------------- report

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// min / p50 / p90 / max (ms) of durations, through an HDR histogram (µs).
fn quantiles(values: impl Iterator<Item = Duration>) -> (String, usize) {
    let mut h = Histogram::<u64>::new(3).unwrap();
    for v in values {
        h.record(v.as_micros().max(1) as u64).unwrap();
    }
    if h.is_empty() {
        return ("–".into(), 0);
    }
    let q = |us: u64| format!("{:.1}", us as f64 / 1000.0);
    (
        format!(
            "{} | {} | {} | {}",
            q(h.min()),
            q(h.value_at_quantile(0.5)),
            q(h.value_at_quantile(0.9)),
            q(h.max())
        ),
        h.len() as usize,
    )
}

fn render(ctx: &Ctx, version: &str, seed: u64, points: &[Point]) -> String {
    let args = &ctx.args;
    let mut out = format!(
        "# Clean shutdown and restart with idle shapes\n\n{}\n\n\
         Server: {version}, {} shards, its defaults otherwise (group commit every 5 ms, checkpoint every 1 s, \
         built shapes unloaded after 60 s idle, admission control on), `--log-level info --log-format json`. \
         Postgres 15 on the same cores (fsync off, autovacuum off). Table `bench (id int8 primary key, g int4, note text)`, \
         empty; shapes `g = 0` … `g = N-1`, created over HTTP by {} client threads and added to one storage directory.\n\n\
         **What is timed.** *Shutdown*: from `kill(SIGTERM)` on the server process until `waitpid` reports its exit \
         (polled every 0.2 ms), i.e. the whole stop: the signal thread triggers shutdown, HTTP listeners close, the \
         ingest drains its feeds and sends its last standby status, every shard takes its closing checkpoint and \
         writes its clean marker, threads join, the process tears down. Before each stop the server is idle: no \
         creation in flight and nothing written to the segment log or LMDB while every shard ran two checkpoints; \
         no client connection is open (except the long-polls of a *live* stop). *Restart*: from just before \
         `spawn` of the server process (same flags, same storage) to (a) *restored*: the timestamp of the last \
         shard's `shapes restored` log line (the server's wall clock, the same the bench read at spawn), (b) \
         *serving*: the first 200 for a GET of an existing shape with its handle and the offset it was up to date at \
         (`offset=0_inf&handle=<its handle>`, not live; each shape was read once after its creation until up to \
         date, as a client does), retried every 1 ms while the port is closed, and \
         (c) *active*: `/v1/health` 200 (replication streaming again). A shard serves its shapes as soon as it has \
         restored them, so *serving* can come before the last shard's *restored* when the probed shape's owner is \
         the faster shard.\n\n\
         Stops: *after creation* (every shape built in memory, as created), *cold* (after a restart, only the \
         {} sampled shapes read; the rest stay in their restored cold form), *built* (after a restart every shape \
         read again, so built), *live* (cold, with {} long-polls (`live=true`) on sampled shapes open through the \
         stop). Random samples from seed {seed}.\n\n",
        Machine::describe(),
        ctx.shards,
        args.concurrency,
        args.sample,
        args.live_pollers,
    );

    // Verdict.
    for p in points {
        let all: Vec<Duration> = p.stops.iter().map(|s| s.took).collect();
        let idle_max = p
            .stops
            .iter()
            .filter(|s| s.kind != Kind::Live)
            .map(|s| s.took)
            .max()
            .unwrap_or_default();
        let over = p.stops.iter().filter(|s| s.took > LIMIT).count();
        out.push_str(&format!(
            "- **{} shapes**: ≤ 1 s clean shutdown with idle shapes: **{}** (slowest idle stop {:.1} ms; {over} of {} stops over 1 s).\n",
            p.shapes,
            if idle_max <= LIMIT { "met" } else { "NOT met" },
            ms(idle_max),
            all.len(),
        ));
    }
    out.push_str(&format!(
        "- Correctness: {}.\n\n",
        if ctx.failures.is_empty() {
            "every check passed (below)".to_string()
        } else {
            format!("**{} failures** (listed at the end)", ctx.failures.len())
        }
    ));

    out.push_str(
        "## Shutdown: SIGTERM → exit (ms, HDR)\n\n\
         | shapes | stop | stops | min | p50 | p90 | max | ≤ 1 s | shapes built / cold at stop | RSS MiB at stop |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for p in points {
        let mut kinds: Vec<Option<Kind>> = [Kind::Created, Kind::Cold, Kind::Built, Kind::Live]
            .into_iter()
            .filter(|k| p.stops.iter().any(|s| s.kind == *k))
            .map(Some)
            .collect();
        kinds.push(None);
        for kind in kinds {
            let stops: Vec<&Stop> = p
                .stops
                .iter()
                .filter(|s| kind.is_none_or(|k| s.kind == k))
                .collect();
            let (q, count) = quantiles(stops.iter().map(|s| s.took));
            let within = stops.iter().filter(|s| s.took <= LIMIT).count();
            let spread = |f: &dyn Fn(&Stop) -> f64, digits: usize| {
                let s = Spread::of(stops.iter().map(|s| f(s)).collect());
                if s.min == s.max {
                    format!("{:.*}", digits, s.median)
                } else {
                    format!(
                        "{:.*} ({:.*}–{:.*})",
                        digits, s.median, digits, s.min, digits, s.max
                    )
                }
            };
            out.push_str(&format!(
                "| {} | {} | {count} | {q} | {within}/{count} | {} / {} | {} |\n",
                p.shapes,
                kind.map_or("**all**", |k| k.label()),
                spread(&|s| s.built as f64, 0),
                spread(&|s| s.cold as f64, 0),
                spread(&|s| s.rss_kib as f64 / 1024.0, 0),
            ));
        }
    }
    out.push_str("\nEvery stop in order (ms): ");
    for p in points {
        out.push_str(&format!(
            "{} shapes: {}. ",
            p.shapes,
            p.stops
                .iter()
                .map(|s| format!("{:.1} ({}, exit {})", ms(s.took), s.kind.label(), s.exit))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out.push('\n');
    for p in points {
        for s in p.stops.iter().filter(|s| s.pollers.is_some()) {
            let e = s.pollers.as_ref().unwrap();
            out.push_str(&format!(
                "\nLive stop with {} shapes, {:.1} ms: {} long-polls ended {} (the last {:.1} ms after the signal{}).",
                p.shapes,
                ms(s.took),
                e.count,
                e.outcomes
                    .iter()
                    .map(|(o, c)| format!("{c} × {o}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                e.last_ms,
                if e.early > 0 {
                    format!("; {} ended before it", e.early)
                } else {
                    String::new()
                }
            ));
        }
    }
    out.push_str("\n\n## Restart → restored, serving, active (ms, HDR)\n\n\
         | shapes | restarts | restored min | p50 | p90 | max | serving min | p50 | p90 | max | active p50 | each shard's own restore (log `millis`), median (range) | records replayed |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for p in points {
        let r = &p.restarts;
        if r.is_empty() {
            continue;
        }
        let (restored, count) = quantiles(r.iter().map(|r| r.restored));
        let (serving, _) = quantiles(r.iter().map(|r| r.serving));
        let active = Spread::of(r.iter().map(|r| ms(r.active)).collect());
        let shard = Spread::of(
            r.iter()
                .flat_map(|r| r.shard_millis.iter().map(|&m| m as f64))
                .collect(),
        );
        out.push_str(&format!(
            "| {} | {count} | {restored} | {serving} | {:.0} | {:.0} ({:.0}–{:.0}) | {} |\n",
            p.shapes,
            active.median,
            shard.median,
            shard.min,
            shard.max,
            r.iter().map(|r| r.replayed).sum::<u64>(),
        ));
    }
    out.push_str("\nEvery restart in order (restored / serving / active ms): ");
    for p in points {
        out.push_str(&format!(
            "{} shapes: {}. ",
            p.shapes,
            p.restarts
                .iter()
                .map(|r| format!(
                    "{:.0} / {:.0} / {:.0} ({})",
                    ms(r.restored),
                    ms(r.serving),
                    ms(r.active),
                    r.kind.label()
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }

    out.push_str("\n\n## Correctness (asserted; the bench fails after writing this report)\n\n");
    for p in points {
        let r = &p.restarts;
        let clean = r
            .iter()
            .filter(|r| {
                r.after.len() == ctx.shards && r.after.iter().all(|a| a == "a clean shutdown")
            })
            .count();
        out.push_str(&format!(
            "- {} shapes: {clean}/{} restarts had every shard's log say `shapes restored … after=\"a clean shutdown\"` with {} shapes in all; \
             sampled existing shapes answering 200 with their handle and offset, up to date: {}/{}; \
             reading every shape after the built restarts: {} (each 200, same handle and offset); every stop exited 0: {}.\n",
            p.shapes,
            r.len(),
            p.shapes,
            r.iter().map(|r| r.sample_ok).sum::<usize>(),
            r.iter().map(|r| r.sample).sum::<usize>(),
            if p.read_all.is_empty() {
                "not run".to_string()
            } else {
                format!(
                    "{} × {} shapes in {} s",
                    p.read_all.len(),
                    p.shapes,
                    p.read_all
                        .iter()
                        .map(|s| format!("{s:.1}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            if p.stops.iter().all(|s| s.exit == "0") { "yes" } else { "**no**" },
        ));
    }
    if !ctx.failures.is_empty() {
        out.push_str("\nFailures:\n\n");
        for f in ctx.failures.iter().take(50) {
            out.push_str(&format!("- {f}\n"));
        }
        if ctx.failures.len() > 50 {
            out.push_str(&format!("- … and {} more\n", ctx.failures.len() - 50));
        }
    }

    out.push_str(
        "\n## Shape creation over HTTP (`offset=-1`, empty snapshots)\n\n\
         | shapes | new | seconds | creations/s | p50 ms | p99 ms | max ms | waiting for idle before each stop (s) |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for p in points {
        let c = &p.creation;
        let idle = Spread::of(p.idle_waits.clone());
        out.push_str(&format!(
            "| {} | {} | {:.1} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} ({:.1}–{:.1}) |\n",
            p.shapes,
            c.new_shapes,
            c.seconds,
            c.new_shapes as f64 / c.seconds,
            c.latency.value_at_quantile(0.5) as f64 / 1000.0,
            c.latency.value_at_quantile(0.99) as f64 / 1000.0,
            c.latency.max() as f64 / 1000.0,
            idle.median,
            idle.min,
            idle.max,
        ));
    }

    // The slowest idle stop at the largest count, as the server logged it.
    if let Some(p) = points.last() {
        if let Some(s) = p
            .stops
            .iter()
            .filter(|s| s.kind != Kind::Live)
            .max_by_key(|s| s.took)
        {
            out.push_str(&format!(
                "\n## The slowest idle stop at {} shapes ({}, {:.1} ms), as the server logged it\n\n```\n",
                p.shapes,
                s.kind.label(),
                ms(s.took)
            ));
            for (at, line) in &s.log {
                out.push_str(&format!("+{at:7.1} ms  {line}\n"));
            }
            out.push_str(&format!("+{:7.1} ms  (exit {})\n```\n", ms(s.took), s.exit));
        }
    }
    let complaints: Vec<&String> = points.iter().flat_map(|p| &p.complaints).collect();
    out.push_str(&format!(
        "\nWarnings and errors in the server's logs over all runs: {}\n",
        if complaints.is_empty() {
            "none.".to_string()
        } else {
            let mut lines = String::from("\n\n```\n");
            for c in complaints.iter().take(20) {
                lines.push_str(c);
                lines.push('\n');
            }
            if complaints.len() > 20 {
                lines.push_str(&format!("… and {} more\n", complaints.len() - 20));
            }
            lines.push_str("```\n");
            lines
        }
    ));
    out
}
