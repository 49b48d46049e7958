//! `perf`: the shapeshard perf harness, one command.
//!
//! ```sh
//! cargo run -p perf --release -- run all --quick
//! cargo run -p perf --release -- run fanout --flamegraph --out /tmp/fanout
//! cargo run -p perf --release -- list
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Parser, Subcommand};
use shapeshard_perf::bench::Size;
use shapeshard_perf::report::{self, Section};
use shapeshard_perf::workloads::*;
use shapeshard_perf::{flame, server};

#[derive(Parser)]
#[command(
    name = "perf",
    about = "shapeshard perf harness: every workload beside its limit, one report directory"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a workload, several (comma-separated) or `all`; each starts its
    /// own Postgres and release server and tears them down.
    Run {
        /// A workload name (see `list`), a comma-separated list, or `all`.
        workload: String,
        /// Smaller sizes: `all` in under 10 minutes on 2 cores.
        #[arg(long)]
        quick: bool,
        /// The report directory (default: perf/reports/<time>-<commit>-<mode>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Record the server with `perf record -e cpu-clock -g` and render
        /// flamegraphs/<workload>-<commit>.svg: for every workload run, or
        /// (`--flamegraph=a,b`) for those only.
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "all")]
        flamegraph: Option<String>,
        /// Run each workload this many times (its sections `<name>-run<k>`,
        /// a flamegraph of the first run only) and add the median of the
        /// runs to the summary.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=9))]
        repeat: u32,
    },
    /// List the workloads.
    List,
}

struct Workload {
    name: &'static str,
    about: &'static str,
    run: fn(Size) -> String,
}

fn parse<A: clap::Parser>(args: &[&str]) -> A {
    A::parse_from(std::iter::once("perf").chain(args.iter().copied()))
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "initial-sync",
        about: "1. initial sync of a 500-row shape by 100/1,000/2,000 concurrent clients, beside nginx serving the same bytes",
        run: |size| initial_sync::run(initial_sync::Args::sized(size)),
    },
    Workload {
        name: "large-shape",
        about: "2. one client syncing 100k- and 1M-row shapes to up-to-date, beside COPY (SELECT …) TO STDOUT",
        run: |size| large_shape::run(large_shape::Args::sized(size)),
    },
    Workload {
        name: "write-latency",
        about: "3. COMMIT → client received, with many `col = const` and ILIKE shapes, beside the commit latency",
        run: |size| write_latency::run(write_latency::Args::sized(size)),
    },
    Workload {
        name: "fanout",
        about: "4. one shape, 10/100/1,000 long-poll and SSE clients, one write → every client, beside a loopback broadcast",
        run: |size| fanout::run(fanout::Args::one_shape(size)),
    },
    Workload {
        name: "diverse-fanout",
        about: "5. 750 overlapping shapes, a long-poll client each, one write → every client",
        run: |size| fanout::run(fanout::Args::diverse(size)),
    },
    Workload {
        name: "many-shapes-one-client",
        about: "6. one client long-polling 1,500 overlapping shapes, one write → all of them",
        run: |size| fanout::run(fanout::Args::one_client(size)),
    },
    Workload {
        name: "write-throughput",
        about: "7. WAL into 1k–100k `g = const` shapes until durable, beside pg_recvlogical (was e2e-write-bench)",
        run: |size| {
            e2e_write::run(parse(size.pick(
                &["--shapes", "1000,10000", "--changes", "50000", "--runs", "1", "--live-txns", "200"],
                &["--shapes", "1000,10000,100000", "--changes", "200000", "--runs", "3", "--live-txns", "1000"],
            )))
        },
    },
    Workload {
        name: "ilike-write",
        about: "8. WAL into up to 2,000 `note ILIKE '%…%'` shapes until durable, beside pg_recvlogical",
        run: |size| {
            e2e_write::run(parse(size.pick(
                &["--ilike", "--shapes", "500,2000", "--changes", "20000", "--runs", "1", "--live-txns", "50", "--live-rate", "10"],
                &["--ilike", "--shapes", "500,1000,2000", "--changes", "50000", "--runs", "3", "--live-txns", "200", "--live-rate", "10"],
            )))
        },
    },
    Workload {
        name: "idle",
        about: "idle cost: server CPU with 0/10k/100k idle shapes and 1,000/10,000 parked long-polls; memory per idle shape",
        run: |size| idle::run(idle::Args::sized(size)),
    },
    Workload {
        name: "herd",
        about: "1,000 concurrent first requests for one new shape vs a lone creation (was herd-bench)",
        run: |size| herd::run(1000, size.pick(2, 5)),
    },
    Workload {
        name: "shutdown",
        about: "clean shutdown and restart with 10k/100k idle shapes (was shutdown-bench)",
        run: |size| {
            shutdown::run(parse(size.pick(
                &["2000", "--cold-restarts", "2", "--built-restarts", "1", "--live-restarts", "1"],
                &["10000", "100000", "--cold-restarts", "3", "--built-restarts", "2", "--live-restarts", "1"],
            )))
        },
    },
    Workload {
        name: "subquery",
        about: "2k/10k membership subquery shapes: move-in/move-out latency, writes until durable, RSS per shape and per dependency value",
        run: |size| subquery::run(subquery::Args::sized(size)),
    },
    Workload {
        name: "restore",
        about: "one shard restoring idle shapes from LMDB; heap per idle shape (was restore-bench)",
        run: |size| restore::run(size.pick(10_000, 100_000)),
    },
    Workload {
        name: "shard-write",
        about: "one shard's durable write path into 1k/10k/100k shapes, no Postgres (was shard-write-bench; knobs SHARD_WRITE_SHAPES=a,b SHARD_WRITE_CHANGES=n)",
        run: |size| {
            let counts: Vec<usize> = std::env::var("SHARD_WRITE_SHAPES")
                .ok()
                .map(|v| v.split(',').map(|c| c.trim().parse().expect("SHARD_WRITE_SHAPES")).collect())
                .unwrap_or_else(|| size.pick(vec![1_000, 10_000], vec![1_000, 10_000, 100_000]));
            let changes = std::env::var("SHARD_WRITE_CHANGES")
                .ok()
                .map(|v| v.parse().expect("SHARD_WRITE_CHANGES"))
                .unwrap_or(size.pick(100_000, 500_000));
            shard_write::run(changes, &counts)
        },
    },
    Workload {
        name: "decode",
        about: "pgoutput decode throughput beside pg_recvlogical (was decode-bench)",
        run: |size| decode::run(size.pick(100_000, 500_000)),
    },
];

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::List => {
            for w in WORKLOADS {
                println!("{:<24} {}", w.name, w.about);
            }
        }
        Command::Run {
            workload,
            quick,
            out,
            flamegraph,
            repeat,
        } => std::process::exit(run(&workload, quick, out, flamegraph, repeat)),
    }
}

fn sh(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn run(
    which: &str,
    quick: bool,
    out: Option<PathBuf>,
    flamegraph: Option<String>,
    repeat: u32,
) -> i32 {
    let size = if quick { Size::Quick } else { Size::Full };
    let selected: Vec<&Workload> = if which == "all" {
        WORKLOADS.iter().collect()
    } else {
        let mut v = Vec::new();
        for name in which.split(',') {
            let name = if name == "e2e-write" {
                "write-throughput"
            } else {
                name
            };
            match WORKLOADS.iter().find(|w| w.name == name) {
                Some(w) => v.push(w),
                None => {
                    eprintln!("unknown workload {name:?}; `perf list` lists them");
                    return 2;
                }
            }
        }
        v
    };
    let workspace = server::workspace();
    let commit = sh(
        "git",
        &[
            "-C",
            workspace.to_str().unwrap(),
            "rev-parse",
            "--short",
            "HEAD",
        ],
    );
    let mode = if quick { "quick" } else { "full" };
    let dir = out.unwrap_or_else(|| {
        let stamp = sh("date", &["-u", "+%Y%m%d-%H%M%S"]);
        let what = if which == "all" {
            "all".to_string()
        } else {
            which.replace(',', "+")
        };
        workspace.join(format!("perf/reports/{stamp}-{commit}-{mode}-{what}"))
    });
    std::fs::create_dir_all(&dir).expect("the report directory");
    // Every workload runs the release server of this checkout: build it
    // (a no-op when it is current), so one command works on a fresh clone.
    if let Err(e) = server::build_release(&workspace) {
        eprintln!("{e}");
        return 2;
    }
    let _ = server::server_binary(None, None);
    // Which workloads get a flamegraph.
    let flamed = |name: &str| {
        flamegraph.as_deref().is_some_and(|f| {
            f == "all"
                || f.split(',')
                    .any(|n| n == name || (n == "e2e-write" && name == "write-throughput"))
        })
    };
    let flame = if flamegraph.is_some() {
        match flame::available() {
            Ok(()) => true,
            Err(e) => {
                eprintln!("{e}");
                false
            }
        }
    } else {
        false
    };
    // What the run is of, taken once at its start (HEAD may move while
    // it runs).
    let version = server::workspace_version(&workspace);
    let started = started_at();
    let info = |seconds: f64| report::RunInfo {
        title: format!("shapeshard perf report: {which} ({mode})"),
        command: format!(
            "cargo run -p perf --release -- run {which}{}{}{}",
            if quick { " --quick" } else { "" },
            if repeat > 1 {
                format!(" --repeat {repeat}")
            } else {
                String::new()
            },
            match flamegraph.as_deref() {
                None => String::new(),
                Some("all") => " --flamegraph".into(),
                Some(list) => format!(" --flamegraph={list}"),
            }
        ),
        machine: report::Machine::describe(),
        disk: report::disk(),
        commit: format!("{version}; load generator, Postgres 15 and the server share the cores"),
        started: started.clone(),
        seconds,
        mode: mode.into(),
    };
    let began = Instant::now();
    let mut sections: Vec<Section> = Vec::new();
    let runs = selected
        .iter()
        .flat_map(|w| (1..=repeat).map(move |k| (*w, k)));
    for (w, k) in runs {
        let name = match repeat {
            1 => w.name.to_string(),
            _ => format!("{}-run{k}", w.name),
        };
        eprintln!("=== {name} ({mode}): {}", w.about);
        report::begin(&dir, &name);
        if flamed(w.name) && !flame {
            report::note(
                "flamegraph skipped: `perf` not found (install the Debian package `linux-perf`)"
                    .into(),
            );
        }
        let recorder = (flame && flamed(w.name) && k == 1)
            .then(|| flame::Recorder::start(&dir.join(&name).join("perf-data")));
        let t = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (w.run)(size)));
        let markdown = match result {
            Ok(md) => md,
            Err(panic) => {
                let text = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                report::failure(format!("{}: {text}", w.name));
                format!("# {}\n\n**The workload failed**: {text}\n", w.name)
            }
        };
        let mut section = report::end(markdown);
        section.seconds = t.elapsed().as_secs_f64();
        if let Some(recorder) = recorder {
            let svg = workspace.join(format!("flamegraphs/{}-{commit}.svg", w.name));
            match recorder.finish(
                &format!("shapeshard server: {} ({mode}) at {commit}", w.name),
                &svg,
            ) {
                Ok(summary) => {
                    let copy = dir.join(&name).join("flamegraph.svg");
                    let _ = std::fs::copy(&svg, &copy);
                    section
                        .markdown
                        .push_str(&summary.markdown(&format!("{name}/flamegraph.svg")));
                    section
                        .notes
                        .push(format!("flamegraph: flamegraphs/{}-{commit}.svg", w.name));
                }
                Err(e) => section.notes.push(format!("flamegraph: {e}")),
            }
            let _ = std::fs::remove_dir_all(dir.join(&name).join("perf-data"));
        }
        eprintln!("=== {name} done in {:.0} s", section.seconds);
        sections.push(section);
        // The report so far, so an interrupted run leaves one.
        write_report(&dir, &info(began.elapsed().as_secs_f64()), &sections);
    }
    let path = write_report(&dir, &info(began.elapsed().as_secs_f64()), &sections);
    eprintln!("report: {}", path.display());
    let failures: usize = sections.iter().map(|s| s.failures.len()).sum();
    if failures > 0 {
        eprintln!("{failures} failures (listed in the report)");
        1
    } else {
        0
    }
}

fn started_at() -> String {
    static STARTED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    STARTED
        .get_or_init(|| sh("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]))
        .clone()
}

fn write_report(dir: &Path, info: &report::RunInfo, sections: &[Section]) -> PathBuf {
    let path = dir.join("report.md");
    std::fs::write(&path, report::render_run(info, sections)).expect("write the report");
    path
}
