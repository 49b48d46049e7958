//! The release server binary as a child process of a bench: started with
//! flags only (none of the caller's Electric variables leak in), its log
//! copied to a file with each line's arrival time kept, stopped with
//! SIGTERM and timed, killed if a bench panics.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What to start: the binary, its database, port and storage, log level
/// and any further flags.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub bin: PathBuf,
    pub database_url: String,
    pub port: u16,
    pub storage: PathBuf,
    /// `--log-level` (`ELECTRIC_LOG_LEVEL`).
    pub log_level: String,
    /// Further flags, as given.
    pub args: Vec<String>,
}

impl ServerConfig {
    pub fn new(bin: &Path, database_url: &str, port: u16, storage: &Path) -> ServerConfig {
        ServerConfig {
            bin: bin.to_path_buf(),
            database_url: database_url.into(),
            port,
            storage: storage.to_path_buf(),
            log_level: "warning".into(),
            args: Vec::new(),
        }
    }

    /// Adds flags.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> ServerConfig {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn log_level(mut self, level: &str) -> ServerConfig {
        self.log_level = level.into();
        self
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A log line and when the bench read it.
#[derive(Clone, Debug)]
pub struct LogLine {
    pub at: Instant,
    pub text: String,
}

/// How a stop went: SIGTERM to the process' exit, as `waitpid` saw it
/// (polled every 0.2 ms).
#[derive(Clone, Debug)]
pub struct Stopped {
    pub signalled: Instant,
    pub took: Duration,
    /// None if it had to be killed.
    pub status: Option<ExitStatus>,
}

pub struct Server {
    child: Child,
    pub base: String,
    pub log: PathBuf,
    /// Just before the process was spawned.
    pub spawned: Instant,
    /// The same moment on the wall clock (what the server's log lines are
    /// stamped with).
    pub spawned_wall: std::time::SystemTime,
    lines: Arc<Mutex<Vec<LogLine>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Spawns the server, its output (stdout and stderr) going to `log`,
    /// and returns at once.
    pub fn spawn(config: &ServerConfig, log: &Path) -> Server {
        std::fs::create_dir_all(&config.storage).unwrap();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let mut command = Command::new(&config.bin);
        for (k, _) in std::env::vars() {
            if k == "DATABASE_URL" || k.starts_with("ELECTRIC_") || k.starts_with("SHAPESHARD_") {
                command.env_remove(k);
            }
        }
        command
            .args(["--database-url", &config.database_url, "--insecure"])
            .args(["--port", &config.port.to_string()])
            .arg("--storage-dir")
            .arg(&config.storage)
            .args(["--log-level", &config.log_level])
            .args(&config.args)
            .stdout(file.try_clone().unwrap())
            .stderr(Stdio::piped());
        let spawned_wall = std::time::SystemTime::now();
        let spawned = Instant::now();
        let mut child = command.spawn().expect("start the server");
        CURRENT.store(child.id() as i32, std::sync::atomic::Ordering::Relaxed);
        let lines: Arc<Mutex<Vec<LogLine>>> = Arc::default();
        let reader = {
            let (stderr, lines, mut file) = (child.stderr.take().unwrap(), lines.clone(), file);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(text) = line else { return };
                    let at = Instant::now();
                    let _ = writeln!(file, "{text}");
                    lines.lock().unwrap().push(LogLine { at, text });
                }
            })
        };
        Server {
            child,
            base: config.base(),
            log: log.to_path_buf(),
            spawned,
            spawned_wall,
            lines,
            reader: Some(reader),
        }
    }

    /// Spawns the server and waits (up to 60 s) until `/v1/health` answers
    /// 200 (replication streaming).
    pub fn start(config: &ServerConfig, log: &Path) -> Server {
        let mut server = Server::spawn(config, log);
        server.wait_active(Duration::from_secs(60));
        server
    }

    /// Waits until `/v1/health` answers 200; returns when it did.
    pub fn wait_active(&mut self, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        let url = format!("{}/v1/health", self.base);
        loop {
            self.assert_alive();
            if ureq::get(&url).call().map(|r| r.status()).ok() == Some(200) {
                return Instant::now();
            }
            assert!(Instant::now() < deadline, "server never became active");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The log so far.
    pub fn lines(&self) -> Vec<LogLine> {
        self.lines.lock().unwrap().clone()
    }

    /// Panics with the log's tail if the server has exited.
    pub fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("server exited ({status}):\n{}", self.tail(20));
        }
    }

    /// The last `n` lines of the log.
    pub fn tail(&self, n: usize) -> String {
        let lines = self.lines.lock().unwrap();
        let start = lines.len().saturating_sub(n);
        lines[start..]
            .iter()
            .map(|l| l.text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
                line.split_whitespace().nth(1)?.parse().ok()
            })
            .unwrap_or(0)
    }

    /// Cores the server used over the next `window`.
    pub fn cores_over(&self, window: Duration) -> f64 {
        let ticks = || -> u64 {
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
                .ok()
                .and_then(|s| {
                    let (_, rest) = s.rsplit_once(')')?;
                    let f: Vec<&str> = rest.split_whitespace().collect();
                    Some(f[11].parse::<u64>().ok()? + f[12].parse::<u64>().ok()?)
                })
                .unwrap_or(0)
        };
        let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let before = ticks();
        std::thread::sleep(window);
        (ticks() - before) as f64 / tick / window.as_secs_f64()
    }

    /// `GET /metrics` (empty if it fails).
    pub fn metrics(&self) -> String {
        ureq::get(&format!("{}/metrics", self.base))
            .call()
            .ok()
            .and_then(|r| r.into_string().ok())
            .unwrap_or_default()
    }

    /// `POST /metrics/reset`: empties the server's latency histograms.
    pub fn reset_latency(&self) {
        let _ = ureq::post(&format!("{}/metrics/reset", self.base)).call();
    }

    /// SIGTERM, then waits for the exit (killing it after `timeout`).
    pub fn stop_within(&mut self, timeout: Duration) -> Stopped {
        let signalled = Instant::now();
        signal(self.pid(), libc::SIGTERM);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("waitpid") {
                break Some(status);
            }
            if signalled.elapsed() > timeout {
                eprintln!("server did not stop in {timeout:?}; killing it");
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        let took = signalled.elapsed();
        self.exited();
        Stopped {
            signalled,
            took,
            status,
        }
    }

    /// SIGKILL (a crash), and waits for the exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.exited();
    }

    /// The process is gone: it is no longer the current one, and its
    /// output is all read.
    fn exited(&mut self) {
        let _ = CURRENT.compare_exchange(
            self.pid(),
            0,
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
        );
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }

    /// SIGTERM, waiting up to 60 s.
    pub fn stop(&mut self) -> Stopped {
        self.stop_within(Duration::from_secs(60))
    }
}

impl Drop for Server {
    /// A bench that panics leaves no server behind.
    fn drop(&mut self) {
        let _ = CURRENT.compare_exchange(
            self.pid(),
            0,
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
        );
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The server process most recently started and not yet stopped (0: none):
/// what a flamegraph records.
static CURRENT: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

pub fn current_pid() -> i32 {
    CURRENT.load(std::sync::atomic::Ordering::Relaxed)
}

/// Signals one process this bench started (the server, a `perf`, or a
/// backend of its own throwaway Postgres).
pub fn signal(pid: i32, signal: i32) {
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill {pid}");
}

/// How long after `since` a log line's RFC 3339 UTC timestamp
/// (`2026-11-23T14:50:40.123456Z`, tracing's) is; None if it does not parse.
/// Only the time of day is read (a line within 12 h of `since`).
pub fn stamped_after(timestamp: &str, since: std::time::SystemTime) -> Option<Duration> {
    let time = timestamp.split_once('T')?.1.trim_end_matches('Z');
    let mut parts = time.split(':');
    let (h, m, s): (f64, f64, f64) = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    let of_day = h * 3600.0 + m * 60.0 + s;
    let since = since
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64()
        % 86_400.0;
    let after = (of_day - since).rem_euclid(86_400.0);
    (after < 43_200.0).then(|| Duration::from_secs_f64(after))
}

/// The values of a Prometheus series in `/metrics` text, one per label set
/// (`name{shard="0"} 5`, or `name 5` unlabelled), in order.
pub fn series(metrics: &str, name: &str) -> Vec<u64> {
    metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let rest = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once('}')?.1,
                None => rest,
            };
            rest.strip_prefix(' ')?.trim().parse().ok()
        })
        .collect()
}

/// The workspace's HEAD, and whether src/ or shards/ differ from it.
pub fn workspace_version(workspace: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(workspace)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let head = git(&["rev-parse", "--short", "HEAD"]);
    let dirty = git(&["status", "--porcelain", "--", "src", "shards"]);
    let built = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC", "-r"])
        .arg(workspace.join("target/release/shapeshard"))
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "`target/release/shapeshard` (built {built}) with HEAD at {head}{}",
        if dirty.is_empty() {
            ""
        } else {
            " (src/ or shards/ had uncommitted changes)"
        }
    )
}

/// This workspace's root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `cargo build --release --bin shapeshard` in `workspace`, with the cargo
/// that runs the harness.
pub fn build_release(workspace: &Path) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building the release server (cargo build --release --bin shapeshard)");
    let status = Command::new(&cargo)
        .args(["build", "--release", "--bin", "shapeshard"])
        .current_dir(workspace)
        .status()
        .map_err(|e| format!("could not run {}: {e}", cargo.to_string_lossy()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("building the release server failed ({status})"))
    }
}

/// The server binary to run (`explicit`, or target/release/shapeshard here,
/// which must exist) and what it was built from, for a report.
pub fn server_binary(explicit: Option<PathBuf>, version: Option<String>) -> (PathBuf, String) {
    let workspace = workspace();
    let default_bin = workspace.join("target/release/shapeshard");
    let bin = explicit.unwrap_or(default_bin.clone());
    assert!(
        bin.exists(),
        "{} not found: run `cargo build --release --bin shapeshard` first",
        bin.display()
    );
    let version = version.unwrap_or_else(|| {
        if bin == default_bin {
            workspace_version(&workspace)
        } else {
            format!("`{}`", bin.display())
        }
    });
    (bin, version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_read_as_time_of_day() {
        let since = std::time::UNIX_EPOCH + Duration::from_secs(86_400 * 20_000 + 3_600);
        let after = stamped_after("2024-10-04T01:00:00.250000Z", since).unwrap();
        assert_eq!(after.as_micros(), 250_000);
        let midnight = std::time::UNIX_EPOCH + Duration::from_secs_f64(86_400.0 * 3.0 - 0.5);
        let after = stamped_after("1970-01-04T00:00:00.5Z", midnight).unwrap();
        assert_eq!(after.as_millis(), 1000);
        assert!(stamped_after("not a time", since).is_none());
    }

    #[test]
    fn series_reads_labelled_and_plain_values() {
        let text = "# HELP a x\na{shard=\"0\"} 3\na{shard=\"1\"} 4\nab 9\na 7\n";
        assert_eq!(series(text, "a"), vec![3, 4, 7]);
        assert_eq!(series(text, "ab"), vec![9]);
    }
}
