//! What the read-side workloads share: a throwaway Postgres, the release
//! server on it with the harness' flags, and how the run is sized.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use shapeshard::devpg::{free_port, DevPgOptions, DevPostgres};

use crate::server::{server_binary, Server, ServerConfig};

/// How big a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// `--quick`: all workloads in under 10 minutes on 2 cores.
    Quick,
    Full,
}

impl Size {
    pub fn pick<T>(self, quick: T, full: T) -> T {
        match self {
            Size::Quick => quick,
            Size::Full => full,
        }
    }
}

/// The flags every read-side workload gives the server (beside
/// `--database-url`, `--port`, `--storage-dir`, `--insecure`): admission
/// budgets raised so 2,000+ concurrent clients are served rather than
/// told to retry, long-polls and SSE streams held longer than a workload.
pub const SERVER_FLAGS: &[&str] = &[
    "--max-concurrent-requests",
    r#"{"initial": 100000, "existing": 100000}"#,
    "--long-poll-timeout",
    "40000",
    "--sse-timeout",
    "600000",
];

/// The server's flags as a report states them.
pub fn flags_note(extra: &[String]) -> String {
    let mut all: Vec<String> = SERVER_FLAGS.iter().map(|s| s.to_string()).collect();
    all.extend(extra.iter().cloned());
    let mut out = String::new();
    let mut it = all.iter().peekable();
    while let Some(flag) = it.next() {
        out.push_str(&format!("`{flag}"));
        if it.peek().is_some_and(|v| !v.starts_with("--")) {
            out.push_str(&format!(" {}", it.next().unwrap()));
        }
        out.push_str("` ");
    }
    format!(
        "release server ({}), {} shards (one per core), defaults otherwise plus {}",
        crate::server::workspace_version(&crate::server::workspace()),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        out.trim_end()
    )
}

pub struct Bench {
    pub dir: PathBuf,
    pub pg: Option<DevPostgres>,
    pub url: String,
    pub server: Server,
    pub config: ServerConfig,
    pub addr: SocketAddr,
    /// The server's flags, for the report.
    pub flags: String,
}

impl Bench {
    /// Starts Postgres (with `settings`), runs `setup` on it (tables),
    /// then the server (with [`SERVER_FLAGS`] and `extra` flags), and waits
    /// until it streams.
    pub fn start(
        name: &str,
        settings: &[(&str, &str)],
        extra: &[String],
        setup: impl FnOnce(&str),
    ) -> Bench {
        crate::loadgen::raise_fd_limit();
        let (bin, _) = server_binary(None, None);
        let dir = std::env::temp_dir().join(format!("shapeshard-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut options = DevPgOptions::default();
        for (k, v) in settings {
            options.settings.retain(|(n, _)| n != k);
            options.settings.push((k.to_string(), v.to_string()));
        }
        let pg = DevPostgres::start(&dir.join("pg"), &options).expect("start Postgres");
        let url = pg.url("postgres");
        setup(&url);
        // Run a copy: a rebuild during the run must not change what is
        // measured.
        let copy = dir.join("shapeshard");
        std::fs::copy(&bin, &copy).expect("copy the server binary");
        let port = free_port().expect("a free port");
        let config = ServerConfig::new(&copy, &url, port, &dir.join("server"))
            .args(SERVER_FLAGS.iter().copied())
            .args(extra.iter().cloned());
        let server = Server::start(&config, &dir.join("server.log"));
        // Start-up and set-up are not the workload.
        server.reset_latency();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        Bench {
            dir,
            pg: Some(pg),
            url,
            server,
            config,
            addr,
            flags: flags_note(extra),
        }
    }

    /// The server's own latency histograms since the last reset (or its
    /// start) into the report under `label`, then empties them: what the
    /// server saw of one phase of a workload.
    pub fn server_latency(&self, label: &str) {
        crate::report::server_latency(label, &self.server.metrics());
        self.server.reset_latency();
    }

    /// Stops the server and Postgres, removes the directory; the server's
    /// latency since the last `server_latency` goes to the report first.
    pub fn stop(mut self) {
        self.server_latency("rest of the run");
        self.server.stop();
        drop(self.pg.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Cores the server process used over `window`.
    pub fn server_cores(&self, window: Duration) -> f64 {
        self.server.cores_over(window)
    }
}

/// A blocking Postgres client (the writer of a workload).
pub fn client(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).expect("connect to Postgres")
}

/// `a`..`b` as shape URLs' query: `table` and an optional where clause,
/// percent-encoded.
pub fn shape_query(table: &str, where_sql: Option<&str>) -> String {
    let mut q = format!("/v1/shape?table={table}");
    if let Some(w) = where_sql {
        q.push_str("&where=");
        q.push_str(&encode(w));
    }
    q
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_clauses_are_encoded() {
        assert_eq!(
            shape_query("t", Some("note ILIKE '%<7>%'")),
            "/v1/shape?table=t&where=note%20ILIKE%20%27%25%3C7%3E%25%27"
        );
        assert_eq!(shape_query("t", None), "/v1/shape?table=t");
    }

    #[test]
    fn flags_are_listed_with_their_values() {
        let note = flags_note(&["--shards".into(), "1".into(), "--insecure".into()]);
        assert!(note.contains("`--shards 1`"), "{note}");
        assert!(note.contains("`--insecure`"), "{note}");
        assert!(note.contains("`--long-poll-timeout 40000`"), "{note}");
    }
}
