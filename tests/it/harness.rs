//! Test harness: a private Postgres cluster started once per test binary
//! (the same embedded-Postgres code dev mode uses), a fresh database per
//! test, and helpers to run async code on a glommio executor.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use shapeshard::devpg::{DevPgOptions, DevPostgres};
use shapeshard::pg::connstr::ConnConfig;

pub struct Cluster {
    pub port: u16,
    pub dir: PathBuf,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// The cluster for this test binary, started on first use. Postgres runs
/// under a thread that lives as long as the process, so its parent-death
/// signal fires only when the test process exits.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        let base = std::env::temp_dir();
        remove_stale_clusters(&base);
        let dir = base.join(format!("shapeshard-it-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (tx, rx) = std::sync::mpsc::channel();
        let thread_dir = dir.clone();
        std::thread::Builder::new()
            .name("test-postgres".into())
            .spawn(move || {
                let mut options = DevPgOptions::default();
                // Tests check our durability, not Postgres'.
                options.settings.push(("fsync".into(), "off".into()));
                options
                    .settings
                    .push(("synchronous_commit".into(), "off".into()));
                options
                    .settings
                    .push(("max_wal_senders".into(), "64".into()));
                options
                    .settings
                    .push(("max_replication_slots".into(), "64".into()));
                let pg = DevPostgres::start(&thread_dir, &options);
                match pg {
                    Ok(pg) => {
                        tx.send(Ok(pg.port())).unwrap();
                        // Keep the cluster (and this thread) alive until exit.
                        let _pg = pg;
                        loop {
                            std::thread::park();
                        }
                    }
                    Err(e) => tx.send(Err(e.to_string())).unwrap(),
                }
            })
            .unwrap();
        let port = rx
            .recv()
            .unwrap()
            .unwrap_or_else(|e| panic!("test Postgres failed to start: {e}"));
        Cluster { port, dir }
    })
}

/// Clusters of earlier runs whose process is gone.
fn remove_stale_clusters(base: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(pid) = name.strip_prefix("shapeshard-it-") {
            if let Ok(pid) = pid.parse::<i32>() {
                if unsafe { libc::kill(pid, 0) } != 0 {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }
}

pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url))
    }

    pub fn conn_config(&self) -> ConnConfig {
        self.url.parse().unwrap()
    }

    /// A replication stream id unique to this database.
    pub fn stream_id(&self) -> String {
        self.name.clone()
    }
}

/// A test's database goes with it, and first its replication slots: the
/// cluster has a fixed number of slots (`max_replication_slots`) shared by
/// every test of the binary, and a slot left behind by each finished test
/// made the last servers of a full run wait forever for a free one.
impl Drop for TestDb {
    fn drop(&mut self) {
        // Only databases of the shared cluster (some tests run their own).
        let Some(cluster) = CLUSTER.get() else {
            return;
        };
        if !self.url.contains(&format!(":{}/", cluster.port)) {
            return;
        }
        let Ok(mut admin) = postgres::Client::connect(&admin_url(), postgres::NoTls) else {
            return;
        };
        // A killed server's walsender may still hold its slot for a moment.
        let _ = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&self.name],
        );
        for _ in 0..50 {
            let dropped = admin.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE database = $1 AND NOT active",
                &[&self.name],
            );
            let left = admin
                .query_one(
                    "SELECT count(*) FROM pg_replication_slots WHERE database = $1",
                    &[&self.name],
                )
                .map(|row| row.get::<_, i64>(0));
            if dropped.is_ok() && matches!(left, Ok(0)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = admin.batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

fn admin_url() -> String {
    format!(
        "postgresql://postgres@127.0.0.1:{}/postgres?sslmode=disable",
        cluster().port
    )
}

/// A fresh database named after the test.
pub fn database(prefix: &str) -> TestDb {
    let cluster = cluster();
    let name = format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    );
    let mut admin = postgres::Client::connect(&admin_url(), postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    TestDb {
        url: format!(
            "postgresql://postgres@127.0.0.1:{}/{name}?sslmode=disable",
            cluster.port
        ),
        name,
    }
}

/// What the cluster is doing: every backend, the locks nobody has been
/// granted yet and who holds them, and the replication slots (for a
/// test that timed out waiting on Postgres).
pub fn cluster_activity() -> String {
    let admin_url = format!(
        "postgresql://postgres@127.0.0.1:{}/postgres?sslmode=disable&connect_timeout=5",
        cluster().port
    );
    let mut admin = match postgres::Client::connect(&admin_url, postgres::NoTls) {
        Ok(admin) => admin,
        Err(e) => return format!("(cannot connect to the cluster: {e})"),
    };
    let queries = [
        "SELECT pid::text, coalesce(datname, '-'), coalesce(backend_type, '-'), \
         coalesce(state, '-'), coalesce(backend_xid::text, '-'), \
         coalesce(backend_xmin::text, '-'), coalesce(wait_event_type || ':' || wait_event, '-'), \
         coalesce(now() - xact_start, '0')::text, left(coalesce(query, ''), 120) \
         FROM pg_stat_activity WHERE pid <> pg_backend_pid() ORDER BY xact_start NULLS LAST",
        "SELECT l.pid::text, l.locktype, l.mode, coalesce(l.relation::regclass::text, '-'), \
         l.granted::text, coalesce(l.transactionid::text, '-'), coalesce(l.virtualxid, '-'), '', '' \
         FROM pg_locks l WHERE NOT l.granted OR l.locktype IN ('transactionid') ORDER BY l.pid",
        "SELECT slot_name::text, coalesce(database, '-'), active::text, coalesce(active_pid::text, '-'), \
         coalesce(xmin::text, '-'), coalesce(catalog_xmin::text, '-'), coalesce(restart_lsn::text, '-'), '', '' \
         FROM pg_replication_slots",
    ];
    let mut out = String::new();
    for query in queries {
        match admin.query(query, &[]) {
            Ok(rows) => {
                for row in rows {
                    let cells: Vec<String> = (0..9).map(|i| row.get::<_, String>(i)).collect();
                    out.push_str(&cells.join(" | "));
                    out.push('\n');
                }
            }
            Err(e) => out.push_str(&format!("({e})\n")),
        }
        out.push_str("--\n");
    }
    out
}

/// Runs `make()` on a fresh glommio executor thread and returns its output.
pub fn block_on<G, F, T>(make: G) -> T
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    shards::runtime::spawn_thread("test-executor", make)
        .unwrap()
        .join()
        .unwrap()
        .unwrap()
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A scratch directory under the system temp dir (reachable by the
/// `postgres` user when tests run as root).
pub fn scratch_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "shapeshard-{prefix}-{}-{}",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The first column of every row of `query`, sorted (an oracle's view).
pub fn sorted_texts(
    client: &mut postgres::Client,
    query: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> Vec<String> {
    let mut texts: Vec<String> = client
        .query(query, params)
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect();
    texts.sort();
    texts
}

/// A numeric knob of a seeded test from the environment (a long run sets
/// it), else `default` (the CI run).
pub fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A text knob of a seeded test from the environment, else `default`.
pub fn knob_text(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// `text` as a query-string value: every byte but letters, digits and
/// `-_.` percent-encoded.
pub fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
