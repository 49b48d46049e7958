//! The embedded throwaway Postgres of dev mode (and of the test harness):
//! `initdb` on first use, `postgres` with `wal_level=logical` on a free
//! localhost port, stopped when we stop. As root it runs as the `postgres`
//! user, because Postgres refuses to run as root.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for a fresh cluster to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for a fast shutdown before escalating.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct DevPgError(pub String);

impl std::fmt::Display for DevPgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DevPgError {}

fn err(message: impl Into<String>) -> DevPgError {
    DevPgError(message.into())
}

/// Options for the embedded cluster.
#[derive(Clone, Debug)]
pub struct DevPgOptions {
    /// Extra `-c name=value` settings.
    pub settings: Vec<(String, String)>,
    /// The port to listen on; a free one when None (a restart that must
    /// keep its clients' URL passes the previous one).
    pub port: Option<u16>,
}

impl Default for DevPgOptions {
    fn default() -> Self {
        DevPgOptions {
            settings: vec![
                ("max_wal_senders".into(), "32".into()),
                ("max_replication_slots".into(), "32".into()),
                ("max_connections".into(), "200".into()),
            ],
            port: None,
        }
    }
}

/// A running embedded Postgres. Stopped on `stop()` or drop.
pub struct DevPostgres {
    data_dir: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

struct Binaries {
    initdb: PathBuf,
    postgres: PathBuf,
}

/// The run-as user when we are root.
struct RunAs {
    uid: u32,
    gid: u32,
}

impl DevPostgres {
    /// Starts a cluster whose data lives in `dir` (created and initdb'd if
    /// needed).
    pub fn start(dir: &Path, options: &DevPgOptions) -> Result<DevPostgres, DevPgError> {
        let binaries = find_binaries()?;
        let run_as = run_as_user()?;
        let dir = absolute(dir)?;
        let data_dir = dir.join("pgdata");
        let socket_dir = dir.join("socket");
        fs::create_dir_all(&dir)
            .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
        for d in [&data_dir, &socket_dir] {
            fs::create_dir_all(d)
                .map_err(|e| err(format!("cannot create {}: {e}", d.display())))?;
        }
        if let Some(user) = &run_as {
            check_reachable(&dir)?;
            for d in [&dir, &data_dir, &socket_dir] {
                chown(d, user)?;
            }
        }
        fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| err(format!("cannot chmod {}: {e}", data_dir.display())))?;

        if !data_dir.join("PG_VERSION").exists() {
            let output = command(&binaries.initdb, &run_as)
                .args(["-D"])
                .arg(&data_dir)
                .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
                .stdin(Stdio::null())
                .output()
                .map_err(|e| err(format!("cannot run initdb: {e}")))?;
            if !output.status.success() {
                return Err(err(format!(
                    "initdb failed: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                )));
            }
        }
        remove_stale_pid_file(&data_dir);

        let port = match options.port {
            Some(port) => port,
            None => free_port()?,
        };
        let log_path = dir.join("postgres.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| err(format!("cannot open {}: {e}", log_path.display())))?;
        let log_err = log.try_clone().map_err(|e| err(e.to_string()))?;
        if let Some(user) = &run_as {
            // Postgres appends to its own log after dropping to its user.
            chown(&log_path, user)?;
        }
        let mut cmd = command(&binaries.postgres, &run_as);
        cmd.arg("-D")
            .arg(&data_dir)
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", socket_dir.display()))
            .args(["-c", "wal_level=logical"]);
        for (name, value) in &options.settings {
            cmd.arg("-c").arg(format!("{name}={value}"));
        }
        cmd.stdin(Stdio::null()).stdout(log).stderr(log_err);
        // If we die without stopping it (SIGKILL), the kernel asks Postgres
        // for a fast shutdown: no orphan cluster holding the port.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| err(format!("cannot start postgres: {e}")))?;
        let mut pg = DevPostgres {
            data_dir,
            socket_dir,
            port,
            child: Some(child),
        };
        pg.wait_ready(&log_path)?;
        Ok(pg)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// Connection URL for database `dbname` as the `postgres` superuser.
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "postgresql://postgres@127.0.0.1:{}/{dbname}?sslmode=disable",
            self.port
        )
    }

    fn wait_ready(&mut self, log_path: &Path) -> Result<(), DevPgError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let pid_file = self.data_dir.join("postmaster.pid");
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    let log = fs::read_to_string(log_path).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(5).collect();
                    return Err(err(format!(
                        "postgres exited ({status}) during start-up; last log lines: {}",
                        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    )));
                }
            }
            // Line 8 of postmaster.pid is the postmaster status; "ready"
            // means it accepts connections (what pg_ctl waits for).
            if let Ok(contents) = fs::read_to_string(&pid_file) {
                if contents.lines().nth(7).is_some_and(|l| l.trim() == "ready") {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(err(format!(
                    "postgres did not become ready in {}s; see {}",
                    START_TIMEOUT.as_secs(),
                    log_path.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Fast shutdown; waits for the postmaster to exit.
    pub fn stop(&mut self) {
        self.stop_with(libc::SIGINT);
    }

    /// Immediate shutdown (SIGQUIT: no checkpoint, crash recovery at the
    /// next start); waits for the postmaster to exit.
    pub fn stop_immediately(&mut self) {
        self.stop_with(libc::SIGQUIT);
    }

    fn stop_with(&mut self, signal: libc::c_int) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as libc::pid_t;
        unsafe { libc::kill(pid, signal) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() > deadline => {
                    tracing::warn!("postgres did not stop in time; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

impl Drop for DevPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn command(program: &Path, run_as: &Option<RunAs>) -> Command {
    let mut cmd = Command::new(program);
    if let Some(user) = run_as {
        cmd.uid(user.uid).gid(user.gid);
        cmd.env("HOME", "/tmp");
    }
    cmd.env_remove("PGDATA");
    cmd
}

fn find_binaries() -> Result<Binaries, DevPgError> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    // Debian/Ubuntu keep server binaries off PATH.
    if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = entries.flatten().map(|e| e.path().join("bin")).collect();
        versions.sort();
        dirs.extend(versions.into_iter().rev());
    }
    let find = |name: &str| dirs.iter().map(|d| d.join(name)).find(|p| p.is_file());
    match (find("initdb"), find("postgres")) {
        (Some(initdb), Some(postgres)) => Ok(Binaries { initdb, postgres }),
        _ => Err(err(
            "PostgreSQL server binaries (initdb, postgres) not found on PATH: install PostgreSQL 14 or newer (Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql@15) or set DATABASE_URL to an existing database with wal_level=logical",
        )),
    }
}

fn run_as_user() -> Result<Option<RunAs>, DevPgError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = CString::new("postgres").expect("static name");
    // SAFETY: getpwnam returns a pointer to static storage or null; we copy
    // out the ids immediately.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(err(
            "running as root, and Postgres refuses to run as root, but there is no `postgres` user: create one (useradd -r postgres) or run shapeshard as a normal user",
        ));
    }
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some(RunAs { uid, gid }))
}

fn chown(path: &Path, user: &RunAs) -> Result<(), DevPgError> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
        .map_err(|e| err(format!("cannot chown {} to postgres: {e}", path.display())))
}

/// The postgres user must be able to traverse every ancestor directory.
fn check_reachable(dir: &Path) -> Result<(), DevPgError> {
    for ancestor in dir.ancestors().skip(1) {
        let Ok(meta) = fs::metadata(ancestor) else {
            continue;
        };
        if meta.permissions().mode() & 0o001 == 0 {
            return Err(err(format!(
                "the embedded Postgres runs as user postgres, which cannot enter {}: choose a storage directory under a world-traversable path (e.g. ELECTRIC_STORAGE_DIR=/var/lib/shapeshard) or chmod o+x {}",
                ancestor.display(),
                ancestor.display()
            )));
        }
    }
    Ok(())
}

fn absolute(dir: &Path) -> Result<PathBuf, DevPgError> {
    if dir.is_absolute() {
        Ok(dir.to_path_buf())
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(dir))
            .map_err(|e| err(format!("cannot resolve {}: {e}", dir.display())))
    }
}

/// A postmaster.pid left by a killed cluster whose process is gone would stop
/// Postgres from starting.
fn remove_stale_pid_file(data_dir: &Path) {
    let pid_file = data_dir.join("postmaster.pid");
    let Ok(contents) = fs::read_to_string(&pid_file) else {
        return;
    };
    let alive = contents
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<libc::pid_t>().ok())
        .is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0);
    if !alive {
        let _ = fs::remove_file(pid_file);
    }
}

/// A port that was free a moment ago. The kernel hands out ephemeral ports
/// in sequence, so a just-released one is unlikely to be reused at once.
pub fn free_port() -> Result<u16, DevPgError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| err(format!("cannot find a free port: {e}")))
}
