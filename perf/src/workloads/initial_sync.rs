//! Workload 1 (Electric's `concurrent_shape_creation`): N concurrent
//! clients each do the initial sync of a 500-row shape (`offset=-1`, then
//! on to up-to-date), for N = 100, 1,000, 2,000. First the whole crowd on a
//! shape that does not exist yet (one creation, every client joins it),
//! then for a fixed time every client syncs again and again (the shape
//! exists). The limit: nginx serving the identical response bytes as
//! static files to the same load generator at the same concurrency.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bench::{shape_query, Bench, Size};
use crate::loadgen::{check_shape, runtime, sync, Conn, Expect, Timings};
use crate::psql::psql;
use crate::report::{self, number, Headline, QUANTILE_HEADER};

const ROWS: usize = 500;
const WORKLOAD: &str = "initial-sync";

pub struct Args {
    pub clients: Vec<usize>,
    /// Seconds of repeated syncs per client count and server.
    pub seconds: f64,
    /// Load generator threads.
    pub threads: usize,
}

impl Args {
    pub fn sized(size: Size) -> Args {
        Args {
            clients: vec![100, 1000, 2000],
            seconds: size.pick(3.0, 10.0),
            threads: 2,
        }
    }
}

/// What one side (ours or nginx) did at one client count.
struct Side {
    timings: Timings,
    syncs: u64,
    seconds: f64,
}

/// The requests of one sync: the shape's, or the static copies'.
#[derive(Clone)]
enum Plan {
    Shape(String),
    Static(Vec<String>),
}

async fn sync_once(conn: &mut Conn, plan: &Plan) -> Result<(), String> {
    match plan {
        Plan::Shape(query) => {
            let (_, inserts, _) = sync(conn, query, false).await?;
            if inserts != ROWS {
                return Err(format!("{inserts} rows synced (expected {ROWS})"));
            }
            Ok(())
        }
        Plan::Static(paths) => {
            let mut inserts = 0;
            let mut up_to_date = false;
            for (i, path) in paths.iter().enumerate() {
                let response = conn.get(path).await.map_err(|e| e.to_string())?;
                let expect = Expect {
                    status: 200,
                    inserts: None,
                    electric_headers: false,
                };
                let reply = check_shape(&response, expect)?;
                inserts += reply.inserts;
                up_to_date |= reply.up_to_date && i == paths.len() - 1;
            }
            if inserts != ROWS || !up_to_date {
                return Err(format!(
                    "{inserts} rows, up to date {up_to_date} (expected {ROWS}, true)"
                ));
            }
            Ok(())
        }
    }
}

/// `clients` connections; every client syncs once at the same moment
/// (`once`), or again and again for `seconds`.
fn drive(
    addr: SocketAddr,
    plan: &Plan,
    clients: usize,
    once: bool,
    seconds: f64,
    threads: usize,
) -> Side {
    let rt = runtime(threads);
    rt.block_on(async {
        let mut conns = Vec::with_capacity(clients);
        for _ in 0..clients {
            conns.push(Conn::connect(addr).await.expect("connect"));
        }
        let start = Arc::new(tokio::sync::Barrier::new(clients + 1));
        let mut tasks = Vec::with_capacity(clients);
        for mut conn in conns {
            let (start, plan) = (start.clone(), plan.clone());
            tasks.push(tokio::spawn(async move {
                let mut t = Timings::default();
                let mut syncs = 0u64;
                start.wait().await;
                let began = Instant::now();
                let deadline = began + Duration::from_secs_f64(seconds);
                loop {
                    let asked = Instant::now();
                    match sync_once(&mut conn, &plan).await {
                        Ok(()) => {
                            t.ok(asked.elapsed());
                            syncs += 1;
                        }
                        Err(e) => {
                            t.error(e);
                            // A broken connection is replaced, not reused.
                            match Conn::connect(addr).await {
                                Ok(c) => conn = c,
                                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                            }
                        }
                    }
                    if once || Instant::now() >= deadline {
                        return (t, syncs, began.elapsed());
                    }
                }
            }));
        }
        start.wait().await;
        let began = Instant::now();
        let mut side = Side {
            timings: Timings::default(),
            syncs: 0,
            seconds: 0.0,
        };
        for task in tasks {
            let (t, syncs, _) = task.await.expect("client task");
            side.timings.add(&t);
            side.syncs += syncs;
        }
        side.seconds = began.elapsed().as_secs_f64();
        side
    })
}

pub fn run(args: Args) -> String {
    let tables: Vec<String> = args.clients.iter().map(|n| format!("sync_{n}")).collect();
    let bench = Bench::start(WORKLOAD, &[("max_connections", "300")], &[], |url| {
        for t in &tables {
            psql(
                url,
                &format!(
                    "CREATE TABLE {t} (id int8 PRIMARY KEY, title text NOT NULL, amount numeric, at timestamptz, done bool);
                     INSERT INTO {t} SELECT i, 'item number ' || i || ' of the list', i * 1.25, '2026-01-01'::timestamptz + i * interval '1 minute', i % 2 = 0
                       FROM generate_series(1, {ROWS}) i"
                ),
            );
        }
    });

    let nginx = Nginx::find();
    let mut rows = Vec::new();
    for (n, table) in args.clients.iter().copied().zip(&tables) {
        let query = shape_query(table, None);
        let plan = Plan::Shape(query.clone());
        eprintln!("[{n} clients] creation crowd on {table}");
        let crowd = drive(bench.addr, &plan, n, true, 0.0, args.threads);
        bench.server_latency(&format!("{n} clients, creation crowd"));
        eprintln!("[{n} clients] repeated syncs for {} s", args.seconds);
        let ours = drive(bench.addr, &plan, n, false, args.seconds, args.threads);
        bench.server_latency(&format!("{n} clients, repeated syncs"));
        // The bytes nginx serves: one sync's responses, as the server sent them.
        let bodies = runtime(1).block_on(async {
            let mut conn = Conn::connect(bench.addr).await.expect("connect");
            sync(&mut conn, &query, true).await.expect("a sync").2
        });
        let limit = match &nginx {
            Ok(bin) => match Nginx::start(bin, &bench.dir.join(format!("nginx-{n}")), &bodies) {
                Ok(mut server) => {
                    let paths = (0..bodies.len()).map(|i| format!("/s/{i}.json")).collect();
                    let side = drive(
                        server.addr,
                        &Plan::Static(paths),
                        n,
                        false,
                        args.seconds,
                        args.threads,
                    );
                    server.stop();
                    Some(side)
                }
                Err(e) => {
                    report::note(format!(
                        "nginx did not start ({e}): limit skipped at {n} clients"
                    ));
                    None
                }
            },
            Err(_) => None,
        };
        let bytes: usize = bodies.iter().map(|b| b.len()).sum();
        rows.push((n, crowd, ours, limit, bytes, bodies.len()));
    }
    if let Err(e) = &nginx {
        report::note(e.clone());
    }
    let flags = bench.flags.clone();
    bench.stop();
    render(&args, &flags, &rows)
}

type Row = (usize, Side, Side, Option<Side>, usize, usize);

fn render(args: &Args, flags: &str, rows: &[Row]) -> String {
    let mut out = format!(
        "# 1. Initial sync of a {ROWS}-row shape by many concurrent clients, beside nginx\n\n\
         Server: {flags}. Load generator: ours (Rust, tokio, {} threads, keep-alive HTTP/1.1, every response checked: \
         status, Electric headers, a JSON array, {ROWS} inserts in all, up to date at the end). \
         A sync is `offset=-1` (the {ROWS} rows and `snapshot-end`) and then the request at its offset (up to date): \
         two requests. nginx serves the very bytes of those two responses as static files (`/s/0.json`, `/s/1.json`) \
         to the same load generator with the same connections count; each of its syncs is the same two requests, checked the same way \
         (no Electric headers). *Crowd*: every client's first sync at the same moment, on a shape that does not exist yet \
         (Electric's `concurrent_shape_creation`). *Repeated*: every client syncs again and again for {} s.\n\n",
        args.threads, args.seconds
    );
    out.push_str(&format!(
        "| clients | what | syncs/s | requests/s | {QUANTILE_HEADER} | errors |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    ));
    let mut lat_ours = Vec::new();
    let mut lat_nginx = Vec::new();
    let mut tput_ours = Vec::new();
    let mut tput_nginx = Vec::new();
    for (n, crowd, ours, limit, bytes, requests) in rows {
        let line = |what: &str, s: &Side| {
            format!(
                "| {n} | {what} | {} | {} | {} | {} |\n",
                number(s.syncs as f64 / s.seconds),
                number(s.syncs as f64 * *requests as f64 / s.seconds),
                report::quantile_cells(&s.timings.latency),
                s.timings.errors
            )
        };
        out.push_str(&line("crowd on a new shape (ours)", crowd));
        out.push_str(&line("repeated (ours)", ours));
        if let Some(l) = limit {
            out.push_str(&line("repeated (nginx, limit)", l));
        } else {
            out.push_str(&format!("| {n} | nginx | skipped | | | | | | | | |\n"));
        }
        report::histogram(&format!("crowd-{n}"), &crowd.timings.latency);
        report::histogram(&format!("ours-{n}"), &ours.timings.latency);
        let rate = ours.syncs as f64 / ours.seconds;
        lat_ours.push((
            *n as f64,
            ours.timings.latency.value_at_quantile(0.99) as f64 / 1000.0,
        ));
        tput_ours.push((*n as f64, rate));
        let mut curves = vec![
            ("ours, repeated", &ours.timings.latency),
            ("ours, crowd on a new shape", &crowd.timings.latency),
        ];
        if let Some(l) = limit {
            report::histogram(&format!("nginx-{n}"), &l.timings.latency);
            curves.push(("nginx (limit)", &l.timings.latency));
            lat_nginx.push((
                *n as f64,
                l.timings.latency.value_at_quantile(0.99) as f64 / 1000.0,
            ));
            tput_nginx.push((*n as f64, l.syncs as f64 / l.seconds));
        }
        report::percentile_plot(
            &format!("latency-{n}"),
            &format!("initial sync, {n} clients ({bytes} bytes in {requests} responses)"),
            &curves,
        );
        report::headline(
            Headline::rate(
                WORKLOAD,
                &format!("{n} clients, syncs/s"),
                rate,
                "syncs/s",
                limit
                    .as_ref()
                    .map(|l| ("nginx", l.syncs as f64 / l.seconds)),
                "≥ 0.8× nginx",
            )
            .with_errors(ours.timings.errors),
        );
        if *n == *rows.iter().map(|r| &r.0).max().unwrap() {
            report::headline(
                Headline::latency(
                    WORKLOAD,
                    &format!("{n} clients on a new shape, last client synced"),
                    crowd.timings.latency.max(),
                    limit.as_ref().map(|l| {
                        (
                            "nginx p99 at the same concurrency",
                            l.timings.latency.value_at_quantile(0.99),
                        )
                    }),
                    "≤ 2 s (Electric ~26 s)",
                )
                .with_errors(crowd.timings.errors),
            );
        }
        for s in [crowd, ours].into_iter().chain(limit.iter()) {
            if s.timings.errors > 0 {
                out.push_str(&format!("\n{n} clients: {}\n", s.timings.error_note()));
            }
        }
    }
    let mut series = vec![("ours p99".to_string(), lat_ours)];
    if !lat_nginx.is_empty() {
        series.push(("nginx p99".to_string(), lat_nginx));
    }
    report::xy_plot(
        "latency-vs-clients",
        "initial sync p99 vs concurrent clients",
        "clients",
        "p99 sync latency (ms)",
        &series,
    );
    let mut series = vec![("ours".to_string(), tput_ours)];
    if !tput_nginx.is_empty() {
        series.push(("nginx".to_string(), tput_nginx));
    }
    report::xy_plot(
        "throughput-vs-clients",
        "initial syncs per second vs concurrent clients",
        "clients",
        "syncs/s",
        &series,
    );
    out
}

// ---------------------------------------------------------------- nginx

pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
}

impl Nginx {
    /// The nginx binary, or what to install.
    pub fn find() -> Result<PathBuf, String> {
        for dir in std::env::var("PATH").unwrap_or_default().split(':').chain([
            "/usr/sbin",
            "/usr/local/sbin",
            "/sbin",
        ]) {
            let p = Path::new(dir).join("nginx");
            if p.is_file() {
                return Ok(p);
            }
        }
        Err("nginx not found: install the Debian package `nginx-light` (`apt-get install nginx-light`) for the nginx limit; skipped".into())
    }

    /// nginx in `dir` serving `bodies` as `/s/<i>.json`.
    pub fn start(bin: &Path, dir: &Path, bodies: &[Vec<u8>]) -> Result<Nginx, String> {
        let www = dir.join("www/s");
        std::fs::create_dir_all(&www).map_err(|e| e.to_string())?;
        for (i, b) in bodies.iter().enumerate() {
            std::fs::write(www.join(format!("{i}.json")), b).map_err(|e| e.to_string())?;
        }
        // Workers may run as nobody: everything readable.
        let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(dir).status();
        let port = shapeshard::devpg::free_port().map_err(|e| e.to_string())?;
        let d = dir.display();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let conf = format!(
            "worker_processes {cores};
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 10000; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_temp_path {d}/body;
  types {{ application/json json; }}
  default_type application/json;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    root {d}/www;
    location / {{ }}
  }}
}}
"
        );
        std::fs::write(dir.join("nginx.conf"), conf).map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut nginx = Nginx {
            child,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                return Err(format!("nginx exited ({status}): {}", log.trim()));
            }
            if std::net::TcpStream::connect(nginx.addr).is_ok() {
                return Ok(nginx);
            }
            if Instant::now() > deadline {
                nginx.stop();
                return Err("nginx did not listen in 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            crate::server::signal(self.child.id() as i32, libc::SIGQUIT);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}
