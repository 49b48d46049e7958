//! End-to-end write throughput into many `g = <const>` shapes (workload 7
//! of BENCHMARKS.md): a throwaway Postgres, the real release server binary,
//! shapes created over HTTP, a WAL load written by Postgres, timed until the
//! server has made all of it durable — the replication slot's
//! `confirmed_flush_lsn`, which the server only ever moves to its
//! persisted-offset fence. Beside it, in the same run, `pg_recvlogical`
//! drains the same WAL from a twin pgoutput slot: the limit.
//!
//! For each shape count (shapes are added to one server, in increasing
//! order):
//! - live: paced transactions (LIVE_RATE per second) with everything
//!   running; each one's commit → durable latency into an HDR histogram.
//!   Also the warm-up for the drains.
//! - drain: the server's walsender is paused (SIGSTOP) while Postgres writes
//!   CHANGES inserts in transactions of ROWS_PER_TXN, `g` spread evenly over
//!   every constant; resume → durable is the server's throughput on that
//!   WAL. `pg_recvlogical` then drains the twin slot to the same end.
//!   RUNS repetitions, median and range.
//!
//! fdatasyncs are counted by the kernel for the server process only
//! (`perf stat`: io_uring fsync submissions, which is how glommio
//! fdatasyncs, plus fdatasync/fsync system calls); the disk's own flush
//! count is beside them. CPU used by processes that are not part of the
//! run (a compiler, say) is reported per window, as cores.
//!
//! ```sh
//! cargo build --release --bin shapeshard
//! cargo run --release -p shapeshard-perf --bin e2e-write-bench
//! E2E_SHAPES=1000,10000,100000 cargo run --release -p shapeshard-perf --bin e2e-write-bench
//! ```
//! Knobs: `--help` (each flag has an `E2E_*` variable).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::psql::{create_bench_table, psql};
use crate::report::{Machine, Spread};
use crate::server::{server_binary, signal, Server, ServerConfig};
use crate::shapes::{agent, create_shapes_where, get, where_read_url, where_url, Creation};
use clap::Parser;
use hdrhistogram::Histogram;
use shapeshard::devpg::{free_port, DevPgOptions, DevPostgres};

const SLOT: &str = "electric_slot_default";
const PUBLICATION: &str = "electric_publication_default";
const TWIN_SLOT: &str = "e2e_recvlogical";
/// The server's default group-commit tick (`--flush-interval-ms`).
const FLUSH_INTERVAL_MS: u64 = 5;

#[derive(Parser, Debug)]
#[command(about = "End-to-end write throughput into many `g = const` shapes")]
pub struct Args {
    /// Shape counts, increasing; shapes are added to one server.
    #[arg(
        long,
        env = "E2E_SHAPES",
        value_delimiter = ',',
        default_value = "1000,10000"
    )]
    shapes: Vec<usize>,
    /// Shapes `note ILIKE '%<k>%'` (each evaluated per change) instead of
    /// `g = k` (found through the index); rows' `note` is `<g> change i`.
    #[arg(long, env = "E2E_ILIKE")]
    ilike: bool,
    /// Changes (inserted rows) per drain run.
    #[arg(long, env = "E2E_CHANGES", default_value_t = 200_000)]
    changes: usize,
    /// Rows per transaction, drain and live.
    #[arg(long, env = "E2E_ROWS_PER_TXN", default_value_t = 100)]
    rows_per_txn: usize,
    /// Drain runs per shape count (median and range reported).
    #[arg(long, env = "E2E_RUNS", default_value_t = 3)]
    runs: usize,
    /// Transactions in the live (latency) phase; 0 skips it.
    #[arg(long, env = "E2E_LIVE_TXNS", default_value_t = 1000)]
    live_txns: usize,
    /// Live transactions per second (paced; 0 = as fast as one writer goes).
    #[arg(long, env = "E2E_LIVE_RATE", default_value_t = 200.0)]
    live_rate: f64,
    /// Concurrent shape-creation requests.
    #[arg(long, env = "E2E_CREATE_CONCURRENCY", default_value_t = 16)]
    create_concurrency: usize,
    /// The server's standby-status interval: how soon `confirmed_flush_lsn`
    /// follows its durable fence (the server's default is 1000).
    #[arg(long, env = "E2E_STATUS_INTERVAL_MS", default_value_t = 1)]
    status_interval_ms: u64,
    /// `--shards` for the server (default: its own, one per core).
    #[arg(long, env = "E2E_SERVER_SHARDS")]
    server_shards: Option<usize>,
    /// If set, `perf record -g` the server during each live phase and drain
    /// into this directory (`live-<shapes>-<n>.data`, `drain-…`), for
    /// flamegraphs.
    #[arg(long, env = "E2E_PERF_RECORD")]
    perf_record: Option<PathBuf>,
    /// The server binary (default: target/release/shapeshard here).
    #[arg(long, env = "E2E_SERVER_BIN")]
    server_bin: Option<PathBuf>,
    /// What the server binary was built from, for the report (default:
    /// this workspace's HEAD, when the binary is the workspace's).
    #[arg(long, env = "E2E_SERVER_VERSION")]
    server_version: Option<String>,
}

/// What every phase needs.
struct Ctx {
    args: Args,
    url: String,
    server: Server,
    /// Cores the server uses with nothing to do (timers, status updates).
    idle_cores: f64,
    /// The throwaway Postgres' postmaster (its processes are ours).
    postmaster: i32,
    storage: PathBuf,
    next_id: i64,
}

pub fn run(args: Args) -> String {
    assert!(
        !args.shapes.is_empty() && args.shapes.windows(2).all(|w| w[0] < w[1]),
        "E2E_SHAPES must be increasing"
    );
    let (bin, version) = server_binary(args.server_bin.clone(), args.server_version.clone());

    let dir = std::env::temp_dir().join(format!("shapeshard-e2e-write-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut options = DevPgOptions::default();
    for (k, v) in [
        // Postgres is the load generator here, not the system under test;
        // no autovacuum also means no WAL but ours.
        ("fsync", "off"),
        ("autovacuum", "off"),
        // The server's walsender is paused while a drain's WAL is written.
        ("wal_sender_timeout", "0"),
        ("max_wal_size", "16GB"),
        ("checkpoint_timeout", "1h"),
    ] {
        options.settings.push((k.into(), v.into()));
    }
    let pg = DevPostgres::start(&dir.join("pg"), &options).expect("start Postgres");
    let url = pg.url("postgres");
    let postmaster: i32 = std::fs::read_to_string(pg.data_dir().join("postmaster.pid"))
        .expect("postmaster.pid")
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("postmaster pid");
    create_bench_table(&url);

    let port = free_port().expect("a free port");
    let storage = dir.join("server");
    let server = start_server(&bin, &url, port, &storage, &args);
    let idle_cores = server.cores_over(Duration::from_secs(2));
    eprintln!("server {} up on port {port}", bin.display());
    let shards = args
        .server_shards
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));

    let mut ctx = Ctx {
        args,
        url,
        server,
        idle_cores,
        postmaster,
        storage,
        next_id: 1,
    };
    let mut points = Vec::new();
    let mut created = 0;
    for shapes in ctx.args.shapes.clone() {
        let ilike = ctx.args.ilike;
        let creation = create_shapes_where(
            &ctx.server.base,
            created..shapes,
            ctx.args.create_concurrency,
            &|k| where_of(ilike, k),
        );
        created = shapes;
        let rss_kib = ctx.server.rss_kib();
        ctx.server.reset_latency();
        let live = (ctx.args.live_txns > 0).then(|| {
            eprintln!(
                "[{shapes} shapes] live: {} transactions of {} at {}/s",
                ctx.args.live_txns, ctx.args.rows_per_txn, ctx.args.live_rate
            );
            let live = live(&mut ctx, shapes);
            crate::report::server_latency(
                &format!("{shapes} shapes, live transactions"),
                &ctx.server.metrics(),
            );
            ctx.server.reset_latency();
            live
        });
        let drains = (0..ctx.args.runs)
            .map(|run| {
                eprintln!(
                    "[{shapes} shapes] drain {}/{}: {} changes",
                    run + 1,
                    ctx.args.runs,
                    ctx.args.changes
                );
                drain(&mut ctx, shapes)
            })
            .collect();
        crate::report::server_latency(&format!("{shapes} shapes, drains"), &ctx.server.metrics());
        let check = check_shape(&ctx.url, &ctx.server.base, shapes - 1, ctx.args.ilike);
        points.push(Point {
            shapes,
            creation,
            rss_kib,
            drains,
            live,
            check,
        });
    }
    let metrics = ctx.server.metrics();
    ctx.server.stop();
    drop(pg);
    let _ = std::fs::remove_dir_all(&dir);

    let report = render(
        &ctx.args,
        shards,
        ctx.idle_cores,
        &version,
        &points,
        &metrics,
    );
    emit(&ctx.args, &points);
    report
}

/// `.hgrm` files, plots and headlines.
fn emit(args: &Args, points: &[Point]) {
    let (workload, kind, target) = if args.ilike {
        (
            "ilike-write",
            "ILIKE",
            "≤ 0.5 ms per change at 2,000 (≥ 2,000 changes/s; Electric ~14 ms)",
        )
    } else {
        (
            "write-throughput",
            "`g = k`",
            "≥ 100k changes/s; ≥ 0.8× pg_recvlogical",
        )
    };
    let changes = args.changes as f64;
    let mut ours = Vec::new();
    let mut limit = Vec::new();
    for p in points {
        let server = Spread::of(
            p.drains
                .iter()
                .map(|r| changes / r.server_seconds)
                .collect(),
        )
        .median;
        let recv = Spread::of(
            p.drains
                .iter()
                .map(|r| changes / r.recvlogical_seconds)
                .collect(),
        )
        .median;
        ours.push((p.shapes as f64, server));
        limit.push((p.shapes as f64, recv));
        crate::report::histogram(&format!("creation-{}", p.shapes), &p.creation.latency);
        if let Some(l) = &p.live {
            crate::report::histogram(&format!("live-durable-{}", p.shapes), &l.durable);
            crate::report::histogram(&format!("live-commit-{}", p.shapes), &l.commit);
            crate::report::percentile_plot(
                &format!("live-{}", p.shapes),
                &format!(
                    "{kind}, {} shapes: COMMIT returned → durable in the server",
                    p.shapes
                ),
                &[
                    ("ours: commit → durable", &l.durable),
                    ("Postgres INSERT+COMMIT", &l.commit),
                ],
            );
        }
        if p.shapes == points.last().unwrap().shapes {
            crate::report::headline(crate::report::Headline::rate(
                workload,
                &format!("{} {kind} shapes, changes/s until durable", p.shapes),
                server,
                "changes/s",
                Some(("pg_recvlogical", recv)),
                target,
            ));
        }
    }
    crate::report::xy_plot(
        "throughput-vs-shapes",
        &format!("{kind} shapes: changes/s until durable"),
        "shapes",
        "changes/s",
        &[
            ("ours (durable)".to_string(), ours),
            ("pg_recvlogical (limit)".to_string(), limit),
        ],
    );
}

// ---------------------------------------------------------------- server

fn start_server(bin: &Path, url: &str, port: u16, storage: &Path, args: &Args) -> Server {
    let mut config = ServerConfig::new(bin, url, port, storage).args([
        "--flush-interval-ms".to_string(),
        FLUSH_INTERVAL_MS.to_string(),
        "--status-interval-ms".to_string(),
        args.status_interval_ms.to_string(),
        "--max-concurrent-requests".to_string(),
        r#"{"initial": 100000, "existing": 100000}"#.to_string(),
    ]);
    if let Some(n) = args.server_shards {
        config = config.args(["--shards".to_string(), n.to_string()]);
    }
    let server = Server::start(&config, &storage.with_extension("log"));
    std::thread::sleep(Duration::from_millis(500));
    server
}

/// Waits (up to 60 s) until the server is back to its idle CPU use (plus
/// 5% of a core), so background work left from one phase does not land in
/// the next. Returns how long that took.
fn settle(ctx: &Ctx) -> f64 {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60)
        && ctx.server.cores_over(Duration::from_millis(500)) > ctx.idle_cores + 0.05
    {}
    started.elapsed().as_secs_f64()
}

// ---------------------------------------------------------------- shapes

/// Reads shape `g = k` from the start to up-to-date and counts its rows
/// against Postgres': the server applied the changes, not only confirmed
/// them.
/// The where clause of shape `k`.
fn where_of(ilike: bool, k: usize) -> String {
    if ilike {
        format!("note ILIKE '%<{k}>%'")
    } else {
        format!("g = {k}")
    }
}

/// The `note` of inserted row `i` (SQL): `<g> change i`, so the ILIKE
/// shape `<k>` holds exactly the rows with `g = k`.
fn note_sql(shapes: usize) -> String {
    format!("'<' || (i % {shapes}) || '> change ' || i")
}

fn check_shape(url: &str, base: &str, k: usize, ilike: bool) -> (usize, usize) {
    let expected: usize = psql(url, &format!("SELECT count(*) FROM bench WHERE g = {k}"))
        .parse()
        .unwrap();
    let agent = agent();
    let where_sql = where_of(ilike, k);
    let mut request = where_url(base, &where_sql);
    let mut rows = 0;
    loop {
        let reply = get(&agent, &request).expect("shape read");
        assert_eq!(reply.status, 200, "shape read: {}", reply.body);
        rows += reply.body.matches(r#""operation":"insert""#).count();
        if reply.up_to_date {
            return (rows, expected);
        }
        request = where_read_url(
            base,
            &where_sql,
            &reply.at.expect("electric-handle and -offset"),
        );
    }
}

// ---------------------------------------------------------------- counters

/// Kernel counts of the server's syncs over a window, and the disk's
/// flushes: io_uring fsync submissions (glommio's fdatasync of the segment
/// log), fdatasync/fsync system calls, and syncfs (checkpoints).
struct SyncCounter {
    perf: Option<(Child, PathBuf)>,
    device: Option<(PathBuf, u64)>,
}

#[derive(Clone, Copy)]
struct SyncCount {
    /// fdatasyncs and fsyncs, through io_uring or not.
    server: Option<u64>,
    syncfs: Option<u64>,
    device: Option<u64>,
}

impl SyncCounter {
    fn start(pid: i32, storage: &Path) -> SyncCounter {
        let out = storage.with_extension(format!("perf-stat-{}", unique()));
        let perf = Command::new("perf")
            .args(["stat", "-x", ",", "-o"])
            .arg(&out)
            .args([
                "-e",
                "io_uring:io_uring_submit_req",
                "--filter",
                "opcode == 3",
            ])
            .args(["-e", "syscalls:sys_enter_fdatasync"])
            .args(["-e", "syscalls:sys_enter_fsync"])
            .args(["-e", "syscalls:sys_enter_syncfs"])
            .args(["-p", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()
            .map(|c| (c, out));
        if perf.is_some() {
            // perf needs a moment to attach to every thread.
            std::thread::sleep(Duration::from_millis(300));
        }
        let device = device_stat(storage).and_then(|p| {
            let n = device_flushes(&p)?;
            Some((p, n))
        });
        SyncCounter { perf, device }
    }

    fn stop(self) -> SyncCount {
        let device = self
            .device
            .and_then(|(p, before)| Some(device_flushes(&p)? - before));
        let counts = self.perf.and_then(|(mut child, out)| {
            signal(child.id() as i32, libc::SIGINT);
            let _ = child.wait();
            let text = std::fs::read_to_string(&out).ok()?;
            let _ = std::fs::remove_file(&out);
            let counts: Vec<u64> = text
                .lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .filter_map(|l| l.split(',').next()?.parse().ok())
                .collect();
            (counts.len() == 4).then_some(counts)
        });
        SyncCount {
            server: counts.as_ref().map(|c| c[..3].iter().sum()),
            syncfs: counts.as_ref().map(|c| c[3]),
            device,
        }
    }
}

/// `perf record -g` of the server into E2E_PERF_RECORD/`name`-n.data.
fn record(ctx: &Ctx, name: &str) -> Option<Child> {
    let dir = ctx.args.perf_record.as_ref()?;
    let _ = std::fs::create_dir_all(dir);
    let child = Command::new("perf")
        .args(["record", "-F", "499", "-g", "-o"])
        .arg(dir.join(format!("{name}-{}.data", unique())))
        .args(["-p", &ctx.server.pid().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("perf record");
    std::thread::sleep(Duration::from_millis(300));
    Some(child)
}

fn stop_recording(recording: Option<Child>) {
    if let Some(mut child) = recording {
        signal(child.id() as i32, libc::SIGINT);
        let _ = child.wait();
    }
}

fn unique() -> usize {
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// `/sys/dev/block/M:m/stat` of the device holding `path`.
fn device_stat(path: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let p = PathBuf::from(format!(
        "/sys/dev/block/{}:{}/stat",
        libc::major(dev),
        libc::minor(dev)
    ));
    p.exists().then_some(p)
}

/// Completed flush requests (field 16 of the block stat).
fn device_flushes(stat: &Path) -> Option<u64> {
    std::fs::read_to_string(stat)
        .ok()?
        .split_whitespace()
        .nth(15)?
        .parse()
        .ok()
}

/// CPU time of the whole machine and of this run's own processes (the
/// bench and its children, the server, the throwaway Postgres), in clock
/// ticks. What the machine spent beyond ours went to someone else.
#[derive(Clone, Copy)]
struct CpuMark {
    busy: u64,
    ours: u64,
    at: Instant,
}

impl CpuMark {
    fn take(ctx: &Ctx) -> CpuMark {
        let busy = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                let line = s.lines().next()?;
                let v: Vec<u64> = line
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|x| x.parse().ok())
                    .collect();
                // user nice system idle iowait irq softirq steal
                Some(v[0] + v[1] + v[2] + v[5] + v[6] + v.get(7).copied().unwrap_or(0))
            })
            .unwrap_or(0);
        let me = std::process::id() as i32;
        let roots = [me, ctx.server.pid(), ctx.postmaster];
        let mut ours = 0;
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // Fields after the command: state ppid ... utime(14) stime
            // cutime cstime.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ppid: i32 = f[1].parse().unwrap_or(0);
            if roots.contains(&pid) || ppid == me || ppid == ctx.postmaster {
                ours += f[11..15]
                    .iter()
                    .filter_map(|x| x.parse::<u64>().ok())
                    .sum::<u64>();
            }
        }
        CpuMark {
            busy,
            ours,
            at: Instant::now(),
        }
    }

    /// Cores used by processes that are not part of this run since `self`.
    fn others_since(self, now: CpuMark) -> f64 {
        let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let others = (now.busy - self.busy).saturating_sub(now.ours.saturating_sub(self.ours));
        others as f64 / tick / (now.at - self.at).as_secs_f64()
    }
}

// ---------------------------------------------------------------- Postgres

fn connect(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).expect("connect to Postgres")
}

/// `pg_lsn - pg_lsn` is numeric; as text it has no fraction.
fn parse_lsn_bytes(s: &str) -> u64 {
    s.split('.')
        .next()
        .unwrap()
        .parse()
        .expect("an LSN byte count")
}

/// The server's durable fence as Postgres has it (bytes since 0/0).
fn confirmed(client: &mut postgres::Client) -> u64 {
    let row = client
        .query_one(
            "SELECT COALESCE(confirmed_flush_lsn - '0/0'::pg_lsn, 0)::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&SLOT],
        )
        .expect("slot position");
    parse_lsn_bytes(row.get(0))
}

/// Where the next WAL record goes: right after a commit (and with no
/// autovacuum), the end of its record, which is what the server confirms.
fn insert_lsn(client: &mut postgres::Client) -> (String, u64) {
    let row = client
        .query_one(
            "SELECT l::text, (l - '0/0'::pg_lsn)::text FROM pg_current_wal_insert_lsn() l",
            &[],
        )
        .expect("insert position");
    (row.get(0), parse_lsn_bytes(row.get(1)))
}

// ---------------------------------------------------------------- live

struct Live {
    txns: usize,
    seconds: f64,
    commit: Histogram<u64>,
    durable: Histogram<u64>,
    poll: Histogram<u64>,
    syncs: SyncCount,
    others: f64,
}

fn live(ctx: &mut Ctx, shapes: usize) -> Live {
    settle(ctx);
    let pending: Arc<Mutex<VecDeque<(u64, Instant)>>> = Default::default();
    let writing = Arc::new(AtomicBool::new(true));
    let counter = SyncCounter::start(ctx.server.pid(), &ctx.storage);
    let recording = record(ctx, &format!("live-{shapes}"));
    let cpu = CpuMark::take(ctx);
    let poller = {
        let (pending, writing, url) = (pending.clone(), writing.clone(), ctx.url.clone());
        std::thread::spawn(move || {
            let mut client = connect(&url);
            let mut durable = Histogram::<u64>::new(3).unwrap();
            let mut poll = Histogram::<u64>::new(3).unwrap();
            let mut last_seen = Instant::now();
            loop {
                let asked = Instant::now();
                let confirmed = confirmed(&mut client);
                let now = Instant::now();
                poll.record((now - asked).as_micros() as u64).unwrap();
                let mut queue = pending.lock().unwrap();
                while queue.front().is_some_and(|&(lsn, _)| lsn <= confirmed) {
                    let (_, committed) = queue.pop_front().unwrap();
                    let waited = now.saturating_duration_since(committed);
                    durable.record(waited.as_micros() as u64).unwrap();
                    last_seen = now;
                }
                let idle = queue.is_empty();
                drop(queue);
                if idle && !writing.load(Ordering::Acquire) {
                    return (durable, poll, last_seen);
                }
                assert!(
                    last_seen.elapsed() < Duration::from_secs(120),
                    "nothing became durable for 120 s (confirmed {confirmed})"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let mut writer = connect(&ctx.url);
    let (rows, rate) = (ctx.args.rows_per_txn, ctx.args.live_rate);
    let mut commit = Histogram::<u64>::new(3).unwrap();
    let started = Instant::now();
    for t in 0..ctx.args.live_txns {
        if rate > 0.0 {
            let due = started + Duration::from_secs_f64(t as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let first = ctx.next_id;
        ctx.next_id += rows as i64;
        let asked = Instant::now();
        let mut txn = writer.transaction().expect("BEGIN");
        txn.batch_execute(&format!(
            "INSERT INTO bench SELECT i, i % {shapes}, {} FROM generate_series({first}, {}) i",
            note_sql(shapes),
            ctx.next_id - 1
        ))
        .expect("INSERT");
        txn.commit().expect("COMMIT");
        let committed = Instant::now();
        commit
            .record((committed - asked).as_micros() as u64)
            .unwrap();
        let (_, lsn) = insert_lsn(&mut writer);
        pending.lock().unwrap().push_back((lsn, committed));
    }
    writing.store(false, Ordering::Release);
    let (durable, poll, last_durable) = poller.join().unwrap();
    let others = cpu.others_since(CpuMark::take(ctx));
    let syncs = counter.stop();
    stop_recording(recording);
    Live {
        txns: ctx.args.live_txns,
        seconds: (last_durable - started).as_secs_f64(),
        commit,
        durable,
        poll,
        syncs,
        others,
    }
}

// ---------------------------------------------------------------- drain

struct Drain {
    wal_bytes: u64,
    write_seconds: f64,
    server_seconds: f64,
    recvlogical_seconds: f64,
    /// How long the server stayed busy after confirming (checkpoints).
    busy_after_seconds: f64,
    syncs: SyncCount,
    others: f64,
}

fn drain(ctx: &mut Ctx, shapes: usize) -> Drain {
    ctx.server.assert_alive();
    settle(ctx);
    let url = ctx.url.clone();
    let mut client = connect(&url);
    client
        .execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&TWIN_SLOT],
        )
        .expect("twin slot");
    let (_, start_lsn) = insert_lsn(&mut client);
    // Pause the server's walsender, not the server: a paused server would
    // find much of the stream already decoded into its socket buffers. So
    // both consumers start from the same undecoded WAL.
    let walsender: i32 = client
        .query_one(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
            &[&SLOT],
        )
        .expect("the server's walsender")
        .get(0);
    signal(walsender, libc::SIGSTOP);
    let (changes, rpt) = (ctx.args.changes as i64, ctx.args.rows_per_txn as i64);
    let first = ctx.next_id;
    ctx.next_id += changes;
    let written = Instant::now();
    // One statement, many transactions: the DO block commits per batch.
    client
        .batch_execute(&format!(
            "DO $$ BEGIN FOR b IN 0..{} LOOP
               INSERT INTO bench SELECT i, i % {shapes}, {note}
                 FROM generate_series({first} + b * {rpt}, LEAST({first} + (b + 1) * {rpt}, {end}) - 1) i;
               COMMIT;
             END LOOP; END $$",
            (changes + rpt - 1) / rpt - 1,
            end = first + changes,
            note = note_sql(shapes),
        ))
        .expect("write the WAL");
    let write_seconds = written.elapsed().as_secs_f64();
    let (end_text, end_lsn) = insert_lsn(&mut client);

    let counter = SyncCounter::start(ctx.server.pid(), &ctx.storage);
    let recording = record(ctx, &format!("drain-{shapes}"));
    let cpu = CpuMark::take(ctx);
    let started = Instant::now();
    signal(walsender, libc::SIGCONT);
    loop {
        let confirmed = confirmed(&mut client);
        if confirmed >= end_lsn {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            ctx.server.assert_alive();
            panic!("not durable after 600 s: confirmed {confirmed}, end {end_lsn}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let server_seconds = started.elapsed().as_secs_f64();
    let others = cpu.others_since(CpuMark::take(ctx));
    let syncs = counter.stop();
    stop_recording(recording);

    // The server keeps working after it confirmed (checkpoints move the
    // tails to serving files): the limit is measured on quiet cores.
    let busy_after_seconds = settle(ctx);
    let started = Instant::now();
    let status = Command::new("pg_recvlogical")
        .args(["-d", &url, "--slot", TWIN_SLOT, "--start", "--no-loop"])
        .args(["-f", "/dev/null", "--endpos", &end_text])
        .args(["-o", "proto_version=1"])
        .args(["-o", &format!("publication_names={PUBLICATION}")])
        .status()
        .expect("pg_recvlogical on PATH");
    let recvlogical_seconds = started.elapsed().as_secs_f64();
    assert!(status.success(), "pg_recvlogical failed");
    client
        .execute("SELECT pg_drop_replication_slot($1)", &[&TWIN_SLOT])
        .expect("drop the twin slot");
    eprintln!(
        "  server {:.0} changes/s ({server_seconds:.2} s, then busy {busy_after_seconds:.1} s), pg_recvlogical {:.0} changes/s ({recvlogical_seconds:.2} s); others used {others:.2} cores",
        changes as f64 / server_seconds,
        changes as f64 / recvlogical_seconds
    );
    Drain {
        wal_bytes: end_lsn - start_lsn,
        write_seconds,
        server_seconds,
        recvlogical_seconds,
        busy_after_seconds,
        syncs,
        others,
    }
}

// ---------------------------------------------------------------- report

struct Point {
    shapes: usize,
    creation: Creation,
    rss_kib: u64,
    drains: Vec<Drain>,
    live: Option<Live>,
    check: (usize, usize),
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn per_s(count: Option<u64>, seconds: f64, per: usize) -> String {
    count.map_or("n/a".into(), |n| {
        format!("{:.0}", n as f64 / seconds / per as f64)
    })
}

fn spread(values: impl Iterator<Item = f64>, digits: usize) -> String {
    let s = Spread::of(values.collect());
    if s.min == s.max {
        format!("{:.*}", digits, s.median)
    } else {
        format!(
            "{:.*} ({:.*}–{:.*})",
            digits, s.median, digits, s.min, digits, s.max
        )
    }
}

fn render(
    args: &Args,
    shards: usize,
    idle_cores: f64,
    version: &str,
    points: &[Point],
    metrics: &str,
) -> String {
    let mut out = format!(
        "# End to end: write throughput into {} shapes, durable\n\n{}\n\n\
         Server: {version}, {shards} shards, group commit every {FLUSH_INTERVAL_MS} ms, standby status every {} ms. \
         Postgres 15 on the same cores as the load generator (fsync off, autovacuum off). \
         Table `bench (id int8 primary key, g int4, note text)`, shapes {}, inserts with `g = id % S`{}.\n\n",
        if args.ilike { "`note ILIKE '%<k>%'`" } else { "`g = const`" },
        Machine::describe(),
        args.status_interval_ms,
        if args.ilike { "`note ILIKE '%<0>%'` … `note ILIKE '%<S-1>%'` (no index: every shape's clause is evaluated for each change)" } else { "`g = 0` … `g = S-1`" },
        if args.ilike { " and `note = '<g> change <id>'`" } else { "" },
    );
    out.push_str(&format!(
        "## Drain: {} inserts per run, {} per transaction\n\n\
         The server's walsender is paused while Postgres writes the WAL, then resumed; timed from resume until the slot's \
         `confirmed_flush_lsn` (the server's durable fence: every shard has journaled and fdatasynced everything before it) \
         reaches the end of that WAL. Then `pg_recvlogical` drains the same WAL from a twin pgoutput slot to `/dev/null` \
         (the limit: the walsender's decoding plus the wire, nothing stored). Both pipelines include the walsender on \
         the same two cores. Median of {} runs (min–max). fdatasyncs (io_uring or system call) and syncfs calls are the server's, counted by the kernel; \
         disk flushes are the whole disk's. \
         \"busy after\": how long the server kept working once it had confirmed (checkpoints), until back to its idle CPU \
         ({:.2} cores).\n\n\
         | shapes | server changes/s | pg_recvlogical changes/s | server / pg_recvlogical | fdatasyncs/s per shard | syncfs/s | disk flushes/s | busy after (s) | others' CPU (cores) | WAL MB per run |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        args.changes, args.rows_per_txn, args.runs, idle_cores
    ));
    let changes = args.changes as f64;
    for p in points {
        let d = &p.drains;
        let sync_rate =
            |n: Option<u64>, s: f64, per: usize| n.map_or(f64::NAN, |n| n as f64 / s / per as f64);
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} |\n",
            p.shapes,
            spread(d.iter().map(|r| changes / r.server_seconds), 0),
            spread(d.iter().map(|r| changes / r.recvlogical_seconds), 0),
            spread(
                d.iter().map(|r| r.recvlogical_seconds / r.server_seconds),
                2
            ),
            spread(
                d.iter()
                    .map(|r| sync_rate(r.syncs.server, r.server_seconds, shards)),
                0
            ),
            spread(
                d.iter()
                    .map(|r| sync_rate(r.syncs.syncfs, r.server_seconds, 1)),
                1
            ),
            spread(
                d.iter()
                    .map(|r| sync_rate(r.syncs.device, r.server_seconds, 1)),
                0
            ),
            spread(d.iter().map(|r| r.busy_after_seconds), 1),
            spread(d.iter().map(|r| r.others), 2),
            d.iter().map(|r| r.wal_bytes).sum::<u64>() as f64 / d.len() as f64 / 1e6,
        ));
    }
    out.push_str(&format!(
        "\nPostgres wrote each run's WAL in {} s (median over all runs).\n",
        spread(
            points
                .iter()
                .flat_map(|p| p.drains.iter().map(|r| r.write_seconds)),
            2
        )
    ));
    if points.iter().any(|p| p.live.is_some()) {
        out.push_str(&format!(
            "\n## Live: {} transactions of {} inserts, paced at {}/s, before the drains\n\n\
             commit = the writer's `BEGIN`, `INSERT`, `COMMIT` round trips; durable = from `COMMIT` returning until \
             `confirmed_flush_lsn` reaches `pg_current_wal_insert_lsn()` read right after it. That includes, beside the \
             server's own work (decode, route, apply, the group-commit tick, write + fdatasync), up to one status interval \
             and the 1 ms poll (a poll query takes the p50 shown). HDR histograms, ms.\n\n\
             | shapes | changes/s | commit p50 | commit p99 | durable p50 | p90 | p99 | p99.9 | max | fdatasyncs/s per shard | syncfs/s | disk flushes/s | others' CPU (cores) | poll p50 |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
            args.live_txns, args.rows_per_txn, args.live_rate
        ));
        for p in points {
            let Some(l) = &p.live else { continue };
            let q = |q: f64| ms(l.durable.value_at_quantile(q));
            out.push_str(&format!(
                "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} |\n",
                p.shapes,
                (l.txns * args.rows_per_txn) as f64 / l.seconds,
                ms(l.commit.value_at_quantile(0.5)),
                ms(l.commit.value_at_quantile(0.99)),
                q(0.5),
                q(0.9),
                q(0.99),
                q(0.999),
                ms(l.durable.max()),
                per_s(l.syncs.server, l.seconds, shards),
                l.syncs
                    .syncfs
                    .map_or("n/a".into(), |n| format!("{:.1}", n as f64 / l.seconds)),
                per_s(l.syncs.device, l.seconds, 1),
                l.others,
                ms(l.poll.value_at_quantile(0.5)),
            ));
        }
    }
    out.push_str(&format!(
        "\n## Shape creation over HTTP ({} concurrent `offset=-1` requests, empty snapshots)\n\n\
         | shapes | new | seconds | creations/s | p50 ms | p99 ms | max ms | server RSS MiB after | shape `g = S-1` rows at the end: server / Postgres |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        args.create_concurrency
    ));
    for p in points {
        let c = &p.creation;
        out.push_str(&format!(
            "| {} | {} | {:.1} | {:.0} | {} | {} | {} | {:.0} | {} / {} |\n",
            p.shapes,
            c.new_shapes,
            c.seconds,
            c.new_shapes as f64 / c.seconds,
            ms(c.latency.value_at_quantile(0.5)),
            ms(c.latency.value_at_quantile(0.99)),
            ms(c.latency.max()),
            p.rss_kib as f64 / 1024.0,
            p.check.0,
            p.check.1,
        ));
    }
    let metric = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
            .map_or("?".into(), |v| v.to_string())
    };
    out.push_str(&format!(
        "\nServer counters at the end: creations started {}, failed {}, evicted {}.\n",
        metric("shapeshard_shape_creations_started_total "),
        metric("shapeshard_shape_creations_failed_total "),
        metric("shapeshard_shapes_evicted_total "),
    ));
    out
}
