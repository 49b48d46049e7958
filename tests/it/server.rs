//! The real server binary as a child process against a test database.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{scratch_dir, wait_for, TestDb};

pub struct Server {
    pub port: u16,
    pub dir: PathBuf,
    child: Child,
    /// Whether dropping this server removes `dir` (not for a successor
    /// sharing it, nor after `stop_keeping_storage`).
    owns_dir: bool,
    /// How it was started, for restarts.
    db_url: String,
    stream_id: String,
    env: Vec<(String, String)>,
}

impl Server {
    /// Starts `shapeshard` on `db` with two unpinned shards (tests share
    /// the cores) and waits until health reports active. `env` adds to or
    /// overrides the defaults (insecure, integration-testing deletes on).
    pub fn start(db: &TestDb, env: &[(&str, &str)]) -> Server {
        let dir = scratch_dir("server");
        let port = shapeshard::devpg::free_port().unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let child = spawn(&db.url, &db.stream_id(), &dir, port, &env);
        let mut server = Server {
            port,
            dir,
            child,
            owns_dir: true,
            db_url: db.url.clone(),
            stream_id: db.stream_id(),
            env,
        };
        server.wait_active();
        server
    }

    /// Starts a second instance on this one's storage directory (a rolling
    /// deploy) on its own port, without waiting for it to be active.
    pub fn spawn_successor(&self) -> Server {
        let port = shapeshard::devpg::free_port().unwrap();
        Server {
            port,
            dir: self.dir.clone(),
            owns_dir: false,
            child: self.spawn_on(port),
            db_url: self.db_url.clone(),
            stream_id: self.stream_id.clone(),
            env: self.env.clone(),
        }
    }

    /// Waits until health reports active.
    pub fn wait_until_active(&mut self) {
        self.wait_active();
    }

    /// SIGTERM (clean shutdown), then start again on the same storage
    /// directory and port.
    pub fn graceful_restart(&mut self) {
        self.terminate();
        self.child = self.spawn_on(self.port);
        self.wait_active();
    }

    /// Another process of this server's configuration, on `port`.
    fn spawn_on(&self, port: u16) -> Child {
        spawn(&self.db_url, &self.stream_id, &self.dir, port, &self.env)
    }

    /// A rolling deploy: a new instance starts on the same storage
    /// directory (and a new port) while this one runs, then this one is
    /// stopped and the new one takes over.
    pub fn rolling_restart(&mut self) {
        let port = shapeshard::devpg::free_port().unwrap();
        let successor = self.spawn_on(port);
        // Let it reach the lock before the old one goes.
        std::thread::sleep(Duration::from_millis(200));
        self.terminate();
        self.child = successor;
        self.port = port;
        self.wait_active();
    }

    /// SIGKILL (no clean shutdown), then start again on the same storage
    /// directory and port.
    pub fn crash_and_restart(&mut self) {
        self.kill();
        self.restart();
    }

    /// SIGKILL and wait for the exit; the storage directory stays (for
    /// `restart`).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again (after `kill`) on the same storage
    /// directory and port, and waits until it is active.
    pub fn restart(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            panic!("restart of a server that is still running");
        }
        self.child = self.spawn_on(self.port);
        self.wait_active();
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM without waiting for the exit.
    pub fn signal_stop(&self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM and wait; `restart` starts it again.
    pub fn stop_process(&mut self) {
        self.terminate();
    }

    /// Starts the server (after a stop) expecting it to refuse: waits for
    /// the exit and returns its status.
    pub fn start_expecting_exit(&mut self) -> std::process::ExitStatus {
        self.child = self.spawn_on(self.port);
        let child = &mut self.child;
        wait_for("the server to exit", Duration::from_secs(30), || {
            child.try_wait().unwrap()
        })
    }

    /// Runs `shapeshard <args>` on this server's storage directory (a
    /// command such as `rehome`); returns its status, stdout and stderr.
    pub fn command(&self, args: &[&str]) -> (std::process::ExitStatus, String, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_shapeshard"))
            .args(args)
            .env("ELECTRIC_STORAGE_DIR", &self.dir)
            .output()
            .unwrap();
        (
            output.status,
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Sets an environment variable for the next (re)starts.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    fn wait_active(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!("server exited early ({exit}): {}", self.log_tail());
            }
            let active = ureq::get(&self.url("/v1/health"))
                .timeout(Duration::from_secs(2))
                .call()
                .is_ok_and(|response| response.status() == 200);
            if active {
                return;
            }
            if std::time::Instant::now() > deadline {
                // A start that hangs is almost always Postgres waiting on
                // something another test left behind (slot creation waits
                // for every transaction with an xid, cluster-wide): say what.
                panic!(
                    "timed out after 60 s waiting for the server to be active\n\
                     server log:\n{}\ncluster:\n{}\nserver threads:\n{}",
                    self.log_tail(),
                    crate::harness::cluster_activity(),
                    thread_stacks(self.child.id())
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's whole log, over every (re)start on this storage
    /// directory.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// The end of the server's log (stderr goes to a file in its storage
    /// directory, so a chatty server never blocks on a full pipe).
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let start = log.len().saturating_sub(8000);
        let start = (start..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(0);
        log[start..].to_string()
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://127.0.0.1:{}{path_and_query}", self.port)
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A GET that returns (status, headers, body) for every status.
    pub fn get(&self, path_and_query: &str) -> Reply {
        self.try_get(path_and_query)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A GET whose network failure is an error (with the server's log)
    /// rather than a panic.
    pub fn try_get(&self, path_and_query: &str) -> Result<Reply, String> {
        match ureq::get(&self.url(path_and_query))
            .timeout(Duration::from_secs(60))
            .call()
        {
            Err(ureq::Error::Transport(e)) => Err(format!(
                "GET {path_and_query}: {e}\nserver log:\n{}",
                self.log_tail()
            )),
            result => Ok(Reply::from(result)),
        }
    }

    /// A series from `/metrics`, summed over its labels (per-shard series
    /// give the server's total).
    pub fn metric(&self, name: &str) -> u64 {
        let text = self.get("/metrics").body;
        let values: Vec<u64> = text
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(name)?;
                let value = match rest.strip_prefix('{') {
                    Some(labelled) => labelled.split_once("} ")?.1,
                    None => rest.strip_prefix(' ')?,
                };
                value.trim().parse().ok()
            })
            .collect();
        assert!(!values.is_empty(), "no {name} in {text}");
        values.iter().sum()
    }

    pub fn request(&self, method: &str, path_and_query: &str) -> Reply {
        Reply::from(
            ureq::request(method, &self.url(path_and_query))
                .timeout(Duration::from_secs(60))
                .call(),
        )
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(mut self) {
        self.terminate();
    }

    /// SIGTERM; how long the process took to exit.
    pub fn stop_timed(mut self) -> Duration {
        let started = std::time::Instant::now();
        self.terminate();
        started.elapsed()
    }

    /// SIGTERM and wait, leaving the storage directory for a next run.
    pub fn stop_keeping_storage(mut self) {
        self.terminate();
        self.owns_dir = false;
    }

    fn terminate(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe {
                libc::kill(self.child.id() as i32, libc::SIGTERM);
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.terminate();
        if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

impl From<Result<ureq::Response, ureq::Error>> for Reply {
    fn from(result: Result<ureq::Response, ureq::Error>) -> Reply {
        let response = match result {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => response,
            Err(e) => panic!("request failed: {e}"),
        };
        let status = response.status();
        let headers = response
            .headers_names()
            .into_iter()
            .map(|name| {
                let value = response.header(&name).unwrap_or_default().to_string();
                (name, value)
            })
            .collect();
        let body = response.into_string().unwrap();
        Reply {
            status,
            headers,
            body,
        }
    }
}

fn spawn(
    db_url: &str,
    stream_id: &str,
    dir: &std::path::Path,
    port: u16,
    env: &[(String, String)],
) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shapeshard"));
    command
        .env("DATABASE_URL", db_url)
        .env("ELECTRIC_STORAGE_DIR", dir)
        .env("ELECTRIC_PORT", port.to_string())
        .env("ELECTRIC_REPLICATION_STREAM_ID", stream_id)
        .env("ELECTRIC_INSECURE", "true")
        .env("ELECTRIC_ENABLE_INTEGRATION_TESTING", "true")
        .env("SHAPESHARD_PLACEMENT", "unbound")
        .env("SHAPESHARD_SHARDS", "2")
        .env("ELECTRIC_LOG_LEVEL", "warning")
        .env_remove("ELECTRIC_SECRET")
        .stdout(Stdio::null());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .unwrap();
    command.stderr(Stdio::from(log));
    for (key, value) in env {
        command.env(key, value);
    }
    command.spawn().unwrap()
}

/// Every thread's stack of a process that hangs, by gdb when the machine
/// has it (a start that never becomes active says where it waits).
fn thread_stacks(pid: u32) -> String {
    let output = Command::new("timeout")
        .args([
            "30",
            "gdb",
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt 30",
        ])
        .stdin(Stdio::null())
        .output();
    match output {
        Ok(output) => {
            let text = String::from_utf8_lossy(&output.stdout);
            // Frames only: gdb's chatter about symbols is not the point.
            let frames: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("Thread ") || l.starts_with('#'))
                .collect();
            let all = frames.join("\n");
            all.chars().take(30_000).collect()
        }
        Err(e) => format!("(no gdb: {e})"),
    }
}
